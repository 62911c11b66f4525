//! The first factor: user name and password.
//!
//! A user name that cannot be one (too long) is refused before anything is
//! counted or hashed. Then the attempt needs a place at the hash gate (else
//! 503) and is counted against the throttle (else 429), and only then is
//! the password checked.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::Extension;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Form;
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::assess::assess_sign_in;
use super::csrf::{self, Binding};
use super::pages::{html, SigninPage};
use super::redirect::{rd_param, safe_return_to};
use super::{
    audit, bad_form, csrf_refused, current_session, device, logged_user, returning, see_other, Failure, PortalError, PortalRequest,
    PortalState, Refused,
};
use crate::audit::{Event, Kind, Outcome, ANONYMOUS_ACTOR};
use crate::directory::ldap::Verdict;
use crate::gateway::Gateway;
use crate::hash_gate::Admission;
use crate::session::Factor;
use crate::throttle::{Key, Scope, ThrottleError};
use crate::users::{User, MAX_USERNAME_BYTES};

/// A longer password is wrong without the (deliberately slow) hash.
const MAX_PASSWORD: usize = 1024;
/// When to try again after the hash gate was full.
const BUSY_RETRY_AFTER: i64 = 2;

#[derive(Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
    #[serde(default)]
    rd: String,
}

pub async fn show(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    uri: Uri,
) -> Result<Response, Failure> {
    let rd = safe_return_to(&gateway, rd_param(&uri).as_deref());
    if current_session(&gateway, &jar).await.map_err(|e| Failure(gateway.clone(), e))?.is_some() {
        return Ok(see_other(&rd));
    }
    // Users sign in at the OpenID provider: the page is theirs.
    if let Some(provider) = gateway.users.oidc_provider() {
        return Ok(super::oidc::start(&gateway, provider, &request, jar, rd).await);
    }
    let (jar, pre) = csrf::ensure_pre_session(&gateway, jar, request.tls);
    Ok((jar, signin_page(&gateway, &pre, rd, String::new(), None, StatusCode::OK)).into_response())
}

fn signin_page(gateway: &Gateway, pre: &str, rd: String, username: String, error: Option<&str>, status: StatusCode) -> Response {
    let page = SigninPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(gateway, Binding::PreSession(pre)),
        rd,
        username,
        error,
        passwordless: gateway.webauthn.passwordless_offered(),
    };
    html(status, &page)
}

pub async fn submit(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<SigninForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let Ok(Form(form)) = form else {
        return Ok(bad_form(&gateway));
    };
    if gateway.users.oidc_provider().is_some() {
        let message = "Passwords are not checked here: sign in at your organisation's identity provider.";
        return Ok(super::error_page(&gateway, StatusCode::NOT_FOUND, "Not found", message));
    }
    let Some(pre) = csrf::pre_session(&gateway, &jar) else {
        return Ok(csrf_refused(&gateway));
    };
    if !csrf::is_valid(&gateway, Binding::PreSession(&pre), &form.csrf) {
        return Ok(csrf_refused(&gateway));
    }
    let rd = safe_return_to(&gateway, Some(&form.rd));
    let username = form.username.trim();
    if username.len() > MAX_USERNAME_BYTES {
        return Ok(signin_page(&gateway, &pre, rd, String::new(), Some("That user name is too long."), StatusCode::BAD_REQUEST));
    }
    let attempt = match begin_attempt(&gateway, &jar, &request, username).await.map_err(fail)? {
        Ok(attempt) => attempt,
        Err(refused) => {
            let user = logged_user(&gateway, username);
            tracing::warn!(event = "password", outcome = refused.outcome(), user = %user, ip = %request.client_ip, "authentication");
            let event = Event::new(Kind::SignIn, Outcome::Refused).detail("reason", refused.outcome());
            audit(&gateway, &request, about_typed_name(&gateway, event, username)).await;
            return Ok(refused.page(&gateway));
        }
    };
    let user = match check_password(&gateway, attempt.admission, username, form.password).await.map_err(fail)? {
        PasswordCheck::Accepted(user) => user,
        refused => {
            let (reason, status, message) = refused.answer();
            let user = logged_user(&gateway, username);
            tracing::info!(event = "password", outcome = "failure", reason, user = %user, ip = %request.client_ip, "authentication");
            let event = Event::new(Kind::SignIn, Outcome::Failure).detail("reason", reason);
            audit(&gateway, &request, about_typed_name(&gateway, event, username)).await;
            return Ok(signin_page(&gateway, &pre, rd, username.to_string(), Some(message), status));
        }
    };
    if let Err(e) = gateway.attempts.reset(&attempt.counted_for_user).await {
        tracing::warn!(error = %e, "could not forget the password attempts after a success");
    }
    signed_in(&gateway, &request, jar, &user, &rd, FirstFactor::PASSWORD).await.map_err(fail)
}

/// An event about a typed user name: the user's own when the name is
/// theirs; otherwise only the name's keyed tag, since what was typed may
/// be a password.
fn about_typed_name(gateway: &Gateway, event: Event, typed: &str) -> Event {
    match gateway.users.get(typed) {
        Some(user) => event.by_user(&user.username),
        None => Event { actor: ANONYMOUS_ACTOR.into(), ..event }.detail("typed_name", logged_user(gateway, typed)),
    }
}

/// A password attempt allowed to go ahead: its place at the hash gate,
/// and the key it was counted under for the user (reset on success).
struct Attempt {
    admission: Admission,
    counted_for_user: Key,
}

/// Refused when the gateway or the user's budget says no; an error when the
/// attempts cannot be counted (so the attempt is not made either).
async fn begin_attempt(
    gateway: &Gateway,
    jar: &CookieJar,
    request: &PortalRequest,
    username: &str,
) -> Result<Result<Attempt, Refused>, PortalError> {
    let Some(admission) = gateway.password_hashing.try_admit() else {
        return Ok(Err(Refused::Busy { retry_after: BUSY_RETRY_AFTER }));
    };
    let (for_user, for_address) = attempt_keys(gateway, jar, request, username);
    let keys: Vec<Key> = std::iter::once(for_user).chain(for_address).collect();
    match gateway.attempts.reserve(&keys).await {
        Ok(()) => Ok(Ok(Attempt { admission, counted_for_user: for_user })),
        Err(ThrottleError::Refusal(refusal)) => Ok(Err(refusal.into())),
        Err(ThrottleError::Cache(e)) => Err(e.into()),
    }
}

/// What a password attempt counts against: the browser's own budget when
/// the user has signed in on it before, else the user name's and the
/// client address's.
fn attempt_keys(gateway: &Gateway, jar: &CookieJar, request: &PortalRequest, username: &str) -> (Key, Option<Key>) {
    match returning::device_of(gateway, jar, username) {
        Some(device) => (gateway.attempts.key(Scope::UserOnBrowser, &[username, &device]), None),
        None => (gateway.attempts.key(Scope::User, &[username]), Some(gateway.attempts.address_key(request.client_ip))),
    }
}

/// What became of a user name and password.
enum PasswordCheck {
    Accepted(Arc<User>),
    /// Unknown user or wrong password: one answer for both.
    Wrong,
    /// The directory says the account is locked or disabled.
    Locked,
    /// The directory says the password expired or must be changed.
    Expired,
    /// The directory did not answer: nobody signs in (fail closed).
    Unavailable,
}

impl PasswordCheck {
    /// The audit reason, the status and what the page says.
    fn answer(&self) -> (&'static str, StatusCode, &'static str) {
        match self {
            PasswordCheck::Accepted(_) | PasswordCheck::Wrong => {
                ("wrong_user_or_password", StatusCode::UNAUTHORIZED, "Wrong user name or password.")
            }
            PasswordCheck::Locked => {
                ("account_locked", StatusCode::FORBIDDEN, "This account is locked or disabled. Contact your administrator.")
            }
            PasswordCheck::Expired => (
                "password_expired",
                StatusCode::FORBIDDEN,
                "Your password has expired. Change it with your organisation's password tool, then sign in again.",
            ),
            PasswordCheck::Unavailable => {
                ("directory_unavailable", StatusCode::SERVICE_UNAVAILABLE, "The user directory cannot be reached. Try again in a moment.")
            }
        }
    }
}

/// Checks the password: against the users file when the hash gate gives
/// it a turn, or against the LDAP directory (holding a place at the gate,
/// which also bounds the binds in flight).
async fn check_password(
    gateway: &Arc<Gateway>,
    admission: Admission,
    username: &str,
    password: String,
) -> Result<PasswordCheck, PortalError> {
    if password.len() > MAX_PASSWORD {
        return Ok(PasswordCheck::Wrong);
    }
    if let Some(ldap) = gateway.users.ldap_directory() {
        let verdict = ldap.authenticate(username, &password).await;
        drop(admission);
        return Ok(match verdict {
            Ok(Verdict::Accepted(user)) => PasswordCheck::Accepted(gateway.users.learn(user)),
            Ok(Verdict::Wrong) => PasswordCheck::Wrong,
            Ok(Verdict::Locked) => PasswordCheck::Locked,
            Ok(Verdict::Expired) => PasswordCheck::Expired,
            Err(e) => {
                tracing::warn!(error = %e, "a sign-in could not reach the directory");
                ldap.drop_connections().await;
                PasswordCheck::Unavailable
            }
        });
    }
    let (checker, username) = (gateway.clone(), username.to_string());
    let user = admission.run(move || checker.users.authenticate(&username, &password)).await?;
    Ok(user.map_or(PasswordCheck::Wrong, PasswordCheck::Accepted))
}

/// How a user passed the first factor.
pub struct FirstFactor {
    /// As the log and the audit name it: `password`, `oidc`.
    pub method: &'static str,
    /// The OpenID provider also did a second factor, and it is trusted.
    pub provider_mfa: bool,
}

impl FirstFactor {
    pub const PASSWORD: FirstFactor = FirstFactor { method: "password", provider_mfa: false };
}

/// Starts the session of a user who passed the first factor.
pub async fn signed_in(
    gateway: &Gateway,
    request: &PortalRequest,
    jar: CookieJar,
    user: &User,
    rd: &str,
    first: FirstFactor,
) -> Result<Response, PortalError> {
    if let Some(previous) = current_session(gateway, &jar).await? {
        gateway.sessions.delete(&previous.key).await?;
    }
    let (jar, device) = device::ensure_device(gateway, jar, request.tls);
    let jar = returning::remember(gateway, jar, &device, &user.username, request.tls);
    let context = assess_sign_in(gateway, &user.username, request.client_ip, &device).await?;
    tracing::info!(
        event = first.method,
        outcome = "success",
        user = %user.username,
        ip = %request.client_ip,
        country = context.country.as_deref().unwrap_or("-"),
        confidence = ?context.assessment.confidence,
        signals = ?context.assessment.signals,
        "authentication"
    );
    let country = context.country.clone();
    let (mut id, session) = gateway.sessions.create(&user.username, Factor::Pwd, context).await?;
    if first.provider_mfa {
        // A new id again with the second factor: a session is never renewed in place.
        if let Some((renewed, _)) = gateway.sessions.add_factor(&session, Factor::Provider, None).await? {
            id = renewed;
        }
    }
    let event = Event::new(Kind::SignIn, Outcome::Success).by_user(&user.username).detail("method", first.method);
    gateway.audit.record(event.from_client(request.client_ip, country, Some(&request.app.id))).await;
    let jar = jar.add(gateway.sessions.cookie(id, request.tls));
    Ok((jar, see_other(rd)).into_response())
}
