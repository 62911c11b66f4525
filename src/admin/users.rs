//! Users and their MFA: read, remove a factor, reset, new recovery codes,
//! end sessions, lift throttles. Every change is audited with the token's
//! name as the actor, and a user outside a limited token's groups is 404.

use std::net::IpAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::api::{
    BrowserInfo, FactorInfo, MfaResetResult, RecoveryCodes, SessionInfo, SessionsEnded, Throttled, UserFilter, UserMfa, UserPage,
};
use super::auth::{Caller, Scope};
use super::problem::{Problem, Problems};
use super::AdminState;
use crate::audit::{Event, Kind, Outcome};
use crate::crypto::hex;
use crate::gateway::Gateway;
use crate::store::{FactorRef, Removal};
use crate::throttle::Scope as ThrottleScope;
use crate::users::User;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// The users the token may see, with their MFA state, by user name.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(UserFilter),
    responses((status = 200, body = UserPage), Problems), security(("token" = ["users:read"])))]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    filter: Result<Query<UserFilter>, QueryRejection>,
) -> Result<Json<UserPage>, Problem> {
    caller.require(Scope::UsersRead)?;
    let Query(filter) = filter?;
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!("limit is 1 to {MAX_PAGE}")));
    }
    let gateway = state.live.current();
    let mut matching: Vec<&User> = gateway
        .users
        .all()
        .map(|user| user.as_ref())
        .filter(|user| caller.sees(user) && matches(user, &filter))
        .filter(|user| filter.cursor.as_deref().is_none_or(|after| user.username.as_str() > after))
        .collect();
    matching.sort_by(|a, b| a.username.cmp(&b.username));
    let more = matching.len() > limit as usize;
    matching.truncate(limit as usize);
    let mut users = Vec::with_capacity(matching.len());
    for user in &matching {
        users.push(user_mfa(&gateway, user).await?);
    }
    let next_cursor = more.then(|| matching.last().map(|user| user.username.clone())).flatten();
    Ok(Json(UserPage { users, next_cursor }))
}

fn matches(user: &User, filter: &UserFilter) -> bool {
    let in_group = filter.group.as_ref().is_none_or(|group| user.groups.contains(group));
    let text = filter.q.as_deref().map(str::to_lowercase);
    let found =
        text.is_none_or(|text| [&user.username, &user.display_name, &user.email].iter().any(|field| field.to_lowercase().contains(&text)));
    in_group && found
}

/// One user with their MFA state.
#[utoipa::path(get, path = "/v1/users/{user}", tag = "users", params(("user" = String, Path)),
    responses((status = 200, body = UserMfa), Problems), security(("token" = ["users:read"])))]
pub async fn show(State(state): State<AdminState>, caller: Caller, Path(name): Path<String>) -> Result<Json<UserMfa>, Problem> {
    caller.require(Scope::UsersRead)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    Ok(Json(user_mfa(&gateway, &user).await?))
}

async fn user_mfa(gateway: &Gateway, user: &User) -> Result<UserMfa, Problem> {
    let name = &user.username;
    let mut factors = Vec::new();
    if let Some(totp) = gateway.store.get_totp(name).await? {
        factors.push(FactorInfo {
            id: FactorRef::Totp.handle(),
            kind: "totp".into(),
            name: totp.name,
            created: totp.created,
            last_used: totp.last_used,
            possible_clone: false,
        });
    }
    for credential in gateway.store.webauthn_credentials(name).await? {
        factors.push(FactorInfo {
            id: FactorRef::Webauthn(credential.id).handle(),
            kind: credential.kind,
            name: credential.name,
            created: credential.created,
            last_used: credential.last_used,
            possible_clone: credential.possible_clone_at.is_some(),
        });
    }
    for row in gateway.store.oob_factors(name).await? {
        factors.push(FactorInfo {
            id: FactorRef::Oob(row.id).handle(),
            kind: row.channel,
            name: row.name,
            created: row.created,
            last_used: row.last_used,
            possible_clone: false,
        });
    }
    let (recovery_codes_left, _) = gateway.store.recovery_codes_left(name).await?;
    let sessions = gateway.sessions.of_user(name).await?.into_iter().map(|session| SessionInfo {
        id: hex(&session.key),
        created: session.created,
        last_seen: session.last_seen(),
        country: session.context.country.clone(),
        amr: session.factors.iter().flat_map(|used| used.factor.amr()).map(|amr| amr.to_string()).collect(),
    });
    let limited = |scope| async move {
        let key = gateway.attempts.key(scope, &[name]);
        gateway.attempts.is_limited(&key).await.map_err(|e| Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
    };
    let throttled = Throttled { password: limited(ThrottleScope::User).await?, second_factor: limited(ThrottleScope::SecondFactor).await? };
    let browsers = gateway.store.trusted_devices(name, gateway.clock.now()).await?;
    let trusted_browsers = browsers
        .into_iter()
        .map(|device| BrowserInfo { first_seen: device.first_seen, last_seen: device.last_seen, trusted_until: device.trusted_until })
        .collect();
    Ok(UserMfa {
        username: name.clone(),
        display_name: user.display_name.clone(),
        email: user.email.clone(),
        groups: user.groups.clone(),
        factors,
        recovery_codes_left,
        sessions: sessions.collect(),
        trusted_browsers,
        throttled,
    })
}

/// Removes one factor; the sessions that used it end. Removing the last
/// one takes the recovery codes with it.
#[utoipa::path(delete, path = "/v1/users/{user}/factors/{factor}", tag = "users",
    params(("user" = String, Path), ("factor" = String, Path, description = "`totp` or `webauthn:ID`")),
    responses((status = 204, description = "Removed"), Problems), security(("token" = ["factors:write"])))]
pub async fn delete_factor(
    State(state): State<AdminState>,
    caller: Caller,
    Path((name, handle)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require(Scope::FactorsWrite)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    let factor = FactorRef::parse(&handle).ok_or_else(|| Problem::not_found("The user has no such factor."))?;
    let usable_kinds = crate::portal::usable_factor_kinds(&gateway);
    if gateway.store.remove_factor(&user.username, factor, &usable_kinds, false).await? == Removal::NotFound {
        return Err(Problem::not_found("The user has no such factor."));
    }
    gateway.sessions.forget_factor(&user.username, |used| used.done_with(factor), None).await?;
    let event = Event::new(Kind::FactorRemoved, Outcome::Success).about(&user.username, &caller.name).detail("factor", factor.handle());
    gateway.audit.record(event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes every factor, the recovery codes and known browsers, and ends
/// the user's sessions: the next sign-in enrols as a new user would.
#[utoipa::path(post, path = "/v1/users/{user}/mfa/reset", tag = "users", params(("user" = String, Path)),
    responses((status = 200, body = MfaResetResult), Problems), security(("token" = ["factors:write"])))]
pub async fn reset_mfa(State(state): State<AdminState>, caller: Caller, Path(name): Path<String>) -> Result<Json<MfaResetResult>, Problem> {
    caller.require(Scope::FactorsWrite)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    let reset = gateway.store.reset_mfa(&user.username).await?;
    gateway.sessions.forget_user_everywhere(&user.username).await;
    let result =
        MfaResetResult { factors: reset.factors, recovery_codes: reset.recovery_codes, browsers: reset.browsers, sessions: reset.sessions };
    let event = Event::new(Kind::MfaReset, Outcome::Success)
        .about(&user.username, &caller.name)
        .detail("factors", result.factors)
        .detail("sessions", result.sessions);
    gateway.audit.record(event).await;
    Ok(Json(result))
}

/// A new set of recovery codes, replacing the old: shown in this answer only.
#[utoipa::path(post, path = "/v1/users/{user}/recovery-codes", tag = "users", params(("user" = String, Path)),
    responses((status = 200, body = RecoveryCodes), Problems), security(("token" = ["factors:write"])))]
pub async fn regenerate_recovery_codes(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RecoveryCodes>, Problem> {
    caller.require(Scope::FactorsWrite)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    let has_factor =
        gateway.store.get_totp(&user.username).await?.is_some() || !gateway.store.webauthn_credentials(&user.username).await?.is_empty();
    if !has_factor {
        return Err(Problem::new(StatusCode::CONFLICT, "The user has no second factor; recovery codes would stand in for one."));
    }
    let codes = gateway.recovery.generate(&user.username).await?;
    gateway.audit.record(Event::new(Kind::RecoveryCodesRegenerated, Outcome::Success).about(&user.username, &caller.name)).await;
    Ok(Json(RecoveryCodes { codes }))
}

/// Ends every session of the user, on every instance.
#[utoipa::path(delete, path = "/v1/users/{user}/sessions", tag = "users", params(("user" = String, Path)),
    responses((status = 200, body = SessionsEnded), Problems), security(("token" = ["sessions:write"])))]
pub async fn end_sessions(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<SessionsEnded>, Problem> {
    caller.require(Scope::SessionsWrite)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    let sessions = gateway.sessions.end_all(&user.username).await?;
    let event = Event::new(Kind::SessionEnded, Outcome::Success).about(&user.username, &caller.name).detail("sessions", sessions);
    gateway.audit.record(event).await;
    Ok(Json(SessionsEnded { sessions }))
}

/// Ends one session of the user.
#[utoipa::path(delete, path = "/v1/users/{user}/sessions/{session}", tag = "users",
    params(("user" = String, Path), ("session" = String, Path, description = "A session's `id`")),
    responses((status = 204, description = "Ended"), Problems), security(("token" = ["sessions:write"])))]
pub async fn end_session(
    State(state): State<AdminState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require(Scope::SessionsWrite)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    let sessions = gateway.sessions.of_user(&user.username).await?;
    let session = sessions.iter().find(|session| hex(&session.key) == id).ok_or_else(|| Problem::not_found("There is no such session."))?;
    gateway.sessions.delete(&session.key).await?;
    gateway.audit.record(Event::new(Kind::SessionEnded, Outcome::Success).about(&user.username, &caller.name).detail("sessions", 1)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets the user's failed password and second-factor attempts.
/// (Attempts counted for a browser the user signed in on before have a
/// budget of their own and are not lifted.)
#[utoipa::path(delete, path = "/v1/users/{user}/throttle", tag = "users", params(("user" = String, Path)),
    responses((status = 204, description = "Lifted"), Problems), security(("token" = ["throttles:write"])))]
pub async fn lift_user_throttle(State(state): State<AdminState>, caller: Caller, Path(name): Path<String>) -> Result<StatusCode, Problem> {
    caller.require(Scope::ThrottlesWrite)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    let name = user.username.as_str();
    let keys = [ThrottleScope::User, ThrottleScope::SecondFactor].map(|scope| gateway.attempts.key(scope, &[name]));
    lift(&gateway, &keys).await?;
    gateway.audit.record(Event::new(Kind::ThrottleLifted, Outcome::Success).about(name, &caller.name)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets a client address's failed password attempts (an IPv6 address
/// counts with its /64). Not for a token limited to groups.
#[utoipa::path(delete, path = "/v1/addresses/{address}/throttle", tag = "users",
    params(("address" = String, Path, description = "An IPv4 or IPv6 address", format = "ip")),
    responses((status = 204, description = "Lifted"), Problems), security(("token" = ["throttles:write"])))]
pub async fn lift_address_throttle(
    State(state): State<AdminState>,
    caller: Caller,
    Path(address): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require(Scope::ThrottlesWrite)?;
    if caller.is_limited() {
        return Err(Problem::new(StatusCode::FORBIDDEN, "A token limited to groups cannot lift an address's throttle."));
    }
    let address: IpAddr = address.parse().map_err(|_| Problem::not_found("That is not an IP address."))?;
    let gateway = state.live.current();
    lift(&gateway, &[gateway.attempts.address_key(address)]).await?;
    let event = Event::new(Kind::ThrottleLifted, Outcome::Success).detail("address", address.to_string());
    gateway.audit.record(Event { actor: caller.name.clone(), ..event }).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn lift(gateway: &Gateway, keys: &[crate::throttle::Key]) -> Result<(), Problem> {
    for key in keys {
        gateway.attempts.reset(key).await.map_err(|e| Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    }
    Ok(())
}
