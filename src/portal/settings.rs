//! The security page: the user's second factors (add, rename, remove),
//! recovery codes, sessions and trusted browsers.
//!
//! Adding or removing a factor and regenerating codes need a second factor
//! done within `security_page.reauthenticate_after`; otherwise the user is
//! sent to confirm first.

use axum::extract::rejection::FormRejection;
use axum::extract::Extension;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Form;
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::csrf::{self, Binding};
use super::pages::{
    html, ActivityEntry, FactorEntry, RecoveryCodesPage, SessionEntry, SettingsPage, TotpEnrollPage, TotpView, TrustedBrowser,
};
use super::redirect::{query_param, rd_param, safe_return_to};
use super::second_factor::{may_change_factors, pending_totp, usable_kinds, webauthn_kinds, Enrolled};
use super::{
    audit, bad_form, csrf_refused, current_session, device, see_other, with_return_to, Failure, PortalError, PortalRequest, PortalState,
};
use crate::audit::{Event, Kind, Outcome};
use crate::crypto::hex;
use crate::factors::oob::Channel;
use crate::factors::webauthn::clean_name;
use crate::gateway::Gateway;
use crate::methods::{Method, MethodSet};
use crate::session::{FactorUse, Session, SignInContext};
use crate::store::{AuditQuery, FactorRef, Removal};

const PAGE: &str = "/.stepgate/settings";
/// How many of the user's security events the page lists.
const RECENT_EVENTS: u32 = 20;

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    device: String,
}

#[derive(Deserialize)]
pub struct FactorForm {
    #[serde(default)]
    csrf: String,
    factor: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
pub struct SessionForm {
    #[serde(default)]
    csrf: String,
    session: String,
}

#[derive(Deserialize)]
pub struct SavedForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rd: String,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// What a page shows beside the settings: a notice, an error, a way on.
#[derive(Default)]
struct Message {
    notice: Option<String>,
    error: Option<String>,
    continue_to: Option<String>,
}

impl Message {
    fn notice(text: &str) -> Self {
        Message { notice: Some(text.to_string()), ..Default::default() }
    }

    fn error(text: &str) -> Self {
        Message { error: Some(text.to_string()), ..Default::default() }
    }
}

pub async fn show(Extension(gateway): Extension<PortalState>, jar: CookieJar, uri: Uri) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let Some(session) = current_session(&gateway, &jar).await.map_err(fail)? else {
        return Ok(sign_in_first());
    };
    if let Some(confirm) = second_factor_first(&gateway, &session).await.map_err(fail)? {
        return Ok(confirm);
    }
    let mut message = Message::default();
    if query_param(&uri, "used").as_deref() == Some("recovery") {
        let left = gateway.recovery.left(&session.username).await.map_err(|e| fail(e.into()))?;
        message.notice = Some(format!(
            "You signed in with a recovery code. You have {left} left. If you lost your device, remove it below and add a new one."
        ));
        message.continue_to = rd_param(&uri).map(|rd| safe_return_to(&gateway, Some(&rd)));
    }
    render(&gateway, &session, &jar, message).await.map_err(fail)
}

/// The recovery codes made at a first enrolment or a regeneration, shown
/// (as often as the page is loaded) until the user says they saved them.
pub async fn recovery_codes(Extension(gateway): Extension<PortalState>, jar: CookieJar, uri: Uri) -> Result<Response, Failure> {
    let Some(session) = current_session(&gateway, &jar).await.map_err(|e| Failure(gateway.clone(), e))? else {
        return Ok(sign_in_first());
    };
    let rd = safe_return_to(&gateway, rd_param(&uri).as_deref());
    let revealed = gateway.recovery.reveal(session.key, &session.username).await.map_err(|e| Failure(gateway.clone(), e.into()))?;
    let Some(codes) = revealed else {
        return Ok(see_other(&rd));
    };
    let page = RecoveryCodesPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(&gateway, Binding::Session(&session)),
        codes: codes.iter().map(|c| c.as_str()).collect(),
        rd: &rd,
    };
    Ok(html(StatusCode::OK, &page))
}

/// The user saved their new recovery codes: they are not shown again.
pub async fn recovery_codes_saved(
    Extension(gateway): Extension<PortalState>,
    jar: CookieJar,
    form: Result<Form<SavedForm>, FormRejection>,
) -> Result<Response, Failure> {
    let Ok(Form(form)) = form else {
        return Ok(bad_form(&gateway));
    };
    let Some(session) = current_session(&gateway, &jar).await.map_err(|e| Failure(gateway.clone(), e))? else {
        return Ok(sign_in_first());
    };
    if !csrf::is_valid(&gateway, Binding::Session(&session), &form.csrf) {
        return Ok(csrf_refused(&gateway));
    }
    gateway.recovery.dismiss_reveal(session.key, &session.username).await.map_err(|e| Failure(gateway.clone(), e.into()))?;
    Ok(see_other(&safe_return_to(&gateway, Some(&form.rd))))
}

pub async fn add_totp(Extension(gateway): Extension<PortalState>, jar: CookieJar) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let Some(session) = current_session(&gateway, &jar).await.map_err(fail)? else {
        return Ok(sign_in_first());
    };
    if !gateway.totp.self_enrollment() {
        return render(&gateway, &session, &jar, Message::error("Ask your administrator to add a factor.")).await.map_err(fail);
    }
    if let Some(step_up) = step_up(&gateway, &session, "/.stepgate/settings/add-totp").await.map_err(fail)? {
        return Ok(step_up);
    }
    if gateway.totp.is_enrolled(&session.username).await.map_err(|e| fail(e.into()))? {
        return render(&gateway, &session, &jar, Message::error("You already have an authenticator app. Remove it first to add another."))
            .await
            .map_err(fail);
    }
    let Some(session) = pending_totp(&gateway, &session).await.map_err(fail)? else {
        return Ok(sign_in_first());
    };
    let pending = session.pending_totp.as_deref().unwrap_or_default();
    let view = gateway.totp.enrollment_view(&session.username, pending).map_err(|e| fail(e.into()))?;
    let page = TotpEnrollPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(&gateway, Binding::Session(&session)),
        rd: PAGE.to_string(),
        error: None,
        trust_days: 0,
        totp: Some(TotpView { secret: view.secret_base32, otpauth_uri: view.otpauth_uri, qr_svg: view.qr_svg }),
        webauthn_kinds: Vec::new(),
        phone: false,
        email: false,
    };
    Ok(html(StatusCode::OK, &page))
}

pub async fn rename(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<FactorForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form) = match checked(&gateway, &jar, form, |f: &FactorForm| &f.csrf).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    let renamed = match FactorRef::parse(&form.factor) {
        Some(FactorRef::Totp) => {
            gateway.store.rename_totp(&session.username, &clean_name(&form.name, Method::Totp)).await.map_err(|e| fail(e.into()))?
        }
        Some(FactorRef::Webauthn(id)) => gateway
            .store
            .rename_webauthn(&session.username, id, &clean_name(&form.name, Method::SecurityKey))
            .await
            .map_err(|e| fail(e.into()))?,
        Some(FactorRef::Oob(id)) => {
            gateway.store.rename_oob(&session.username, id, &clean_name(&form.name, Method::Sms)).await.map_err(|e| fail(e.into()))?
        }
        None => false,
    };
    if renamed {
        let event = Event::new(Kind::FactorRenamed, Outcome::Success).by_user(&session.username).detail("factor", form.factor.as_str());
        audit(&gateway, &request, event).await;
    }
    let message = if renamed { Message::notice("Renamed.") } else { Message::error("There is no such factor.") };
    render(&gateway, &session, &jar, message).await.map_err(fail)
}

pub async fn remove(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<FactorForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form) = match checked(&gateway, &jar, form, |f: &FactorForm| &f.csrf).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    if let Some(step_up) = step_up(&gateway, &session, PAGE).await.map_err(fail)? {
        return Ok(step_up);
    }
    let Some(factor) = FactorRef::parse(&form.factor) else {
        return render(&gateway, &session, &jar, Message::error("There is no such factor.")).await.map_err(fail);
    };
    let keep_one = user_needs_two_factors(&gateway, &session.username);
    let usable_kinds = usable_kinds(&gateway);
    let removal = gateway.store.remove_factor(&session.username, factor, &usable_kinds, keep_one).await.map_err(|e| fail(e.into()))?;
    if let Some(refusal) = refusal_of(removal) {
        return render(&gateway, &session, &jar, Message::error(refusal)).await.map_err(fail);
    }
    tracing::info!(event = "factor_removed", factor = %form.factor, user = %session.username, "security");
    let event = Event::new(Kind::FactorRemoved, Outcome::Success).by_user(&session.username).detail("factor", factor.handle());
    audit(&gateway, &request, event).await;
    // The sessions that did it end; this one forgets it, and proves a factor again where one is needed.
    let ended = gateway.sessions.forget_factor(&session.username, |used| used.done_with(factor), Some(&session.key));
    let Some(session) = ended.await.map_err(|e| fail(e.into()))? else {
        return Ok(sign_in_first());
    };
    render(&gateway, &session, &jar, Message::notice("Removed.")).await.map_err(fail)
}

/// Why a removal did not happen, if it did not.
fn refusal_of(removal: Removal) -> Option<&'static str> {
    match removal {
        Removal::Removed => None,
        Removal::NotFound => Some("There is no such factor."),
        Removal::LastFactor => {
            Some("This is your last second factor, and some of your applications require one. Add another before removing it.")
        }
    }
}

pub async fn regenerate_codes(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, _) = match checked(&gateway, &jar, form, |f: &CsrfForm| &f.csrf).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    if let Some(step_up) = step_up(&gateway, &session, PAGE).await.map_err(fail)? {
        return Ok(step_up);
    }
    if Enrolled::of(&gateway, &session.username).await.map_err(fail)?.factor_count() == 0 {
        return render(&gateway, &session, &jar, Message::error("Set up a second factor first.")).await.map_err(fail);
    }
    let codes = gateway.recovery.generate(&session.username).await.map_err(|e| fail(e.into()))?;
    tracing::info!(event = "recovery_codes_regenerated", user = %session.username, "security");
    audit(&gateway, &request, Event::new(Kind::RecoveryCodesRegenerated, Outcome::Success).by_user(&session.username)).await;
    gateway.recovery.hold_for_reveal(session.key, &session.username, codes).await.map_err(|e| fail(e.into()))?;
    Ok(see_other(&with_return_to("/.stepgate/recovery-codes", PAGE)))
}

pub async fn revoke_session(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<SessionForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form) = match checked(&gateway, &jar, form, |f: &SessionForm| &f.csrf).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    let rows = gateway.store.sessions_of(&session.username).await.map_err(|e| fail(e.into()))?;
    let Some(row) = rows.iter().find(|row| hex(&row.key) == form.session && row.key != session.key) else {
        return render(&gateway, &session, &jar, Message::error("There is no such session.")).await.map_err(fail);
    };
    gateway.sessions.delete(&row.key).await.map_err(|e| fail(e.into()))?;
    tracing::info!(event = "session_revoked", user = %session.username, "security");
    audit(&gateway, &request, Event::new(Kind::SessionEnded, Outcome::Success).by_user(&session.username).detail("sessions", 1)).await;
    render(&gateway, &session, &jar, Message::notice("That session is signed out.")).await.map_err(fail)
}

pub async fn revoke(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form) = match checked(&gateway, &jar, form, |f: &RevokeForm| &f.csrf).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    gateway.store.untrust_device(&session.username, &form.device).await.map_err(|e| fail(e.into()))?;
    gateway.sessions.end_device_trust(&session.username, &form.device).await.map_err(|e| fail(e.into()))?;
    tracing::info!(event = "untrust_browser", user = %session.username, "authentication");
    audit(&gateway, &request, Event::new(Kind::TrustedBrowserRevoked, Outcome::Success).by_user(&session.username)).await;
    // This session may have been one of that browser's, or have ended meanwhile.
    let Some(session) = gateway.sessions.reread(&session).await.map_err(|e| fail(e.into()))? else {
        return Ok(sign_in_first());
    };
    render(&gateway, &session, &jar, Message::notice("That browser is no longer trusted.")).await.map_err(fail)
}

/// The session and form of a settings POST, or the response refusing it.
async fn checked<F>(
    gateway: &Gateway,
    jar: &CookieJar,
    form: Result<Form<F>, FormRejection>,
    csrf_of: impl Fn(&F) -> &String,
) -> Result<Result<(std::sync::Arc<Session>, F), Response>, PortalError> {
    let Ok(Form(form)) = form else {
        return Ok(Err(bad_form(gateway)));
    };
    let Some(session) = current_session(gateway, jar).await? else {
        return Ok(Err(sign_in_first()));
    };
    if !csrf::is_valid(gateway, Binding::Session(&session), csrf_of(&form)) {
        return Ok(Err(csrf_refused(gateway)));
    }
    if let Some(confirm) = second_factor_first(gateway, &session).await? {
        return Ok(Err(confirm));
    }
    Ok(Ok((session, form)))
}

/// The answer to a request whose session has ended.
fn sign_in_first() -> Response {
    see_other(&with_return_to("/.stepgate/signin", PAGE))
}

/// The page (factors, sessions, places) is for sessions that passed a
/// second factor, or come from a browser the user trusts (at more than low
/// confidence), when the user has one: a password alone shows nothing.
async fn second_factor_first(gateway: &Gateway, session: &Session) -> Result<Option<Response>, PortalError> {
    let trusted = session.trusts_browser(gateway.clock.now());
    if session.second_factor_at().is_some() || trusted || Enrolled::of(gateway, &session.username).await?.has_none() {
        return Ok(None);
    }
    Ok(Some(see_other(&with_return_to("/.stepgate/second-factor", PAGE))))
}

/// Sends the user to confirm it's them when their last second factor is
/// too old to change factors, then back to `back`.
async fn step_up(gateway: &Gateway, session: &Session, back: &str) -> Result<Option<Response>, PortalError> {
    let enrolled = Enrolled::of(gateway, &session.username).await?;
    Ok((!may_change_factors(gateway, session, &enrolled)).then(|| see_other(&with_return_to("/.stepgate/second-factor", back))))
}

/// Whether any rule the user can reach asks for a second factor (always,
/// or adaptive), so they must keep one.
fn user_needs_two_factors(gateway: &Gateway, username: &str) -> bool {
    let groups = gateway.users.get(username).map(|u| u.groups.clone()).unwrap_or_default();
    crate::policy::may_require_second_factor(&gateway.config.apps, username, &groups)
}

async fn render(gateway: &PortalState, session: &Session, jar: &CookieJar, message: Message) -> Result<Response, PortalError> {
    let now = gateway.clock.now();
    let username = &session.username;
    let enrolled = Enrolled::of(gateway, username).await?;
    let mut factors = Vec::new();
    if let Some(totp) = gateway.store.get_totp(username).await? {
        factors.push(FactorEntry {
            handle: FactorRef::Totp.handle(),
            kind: "authenticator app",
            name: totp.name,
            added: date(gateway, totp.created),
            last_used: totp.last_used.map_or("never".into(), |at| date(gateway, at)),
            clone_warning: None,
        });
    }
    for credential in gateway.webauthn.credentials(username).await? {
        factors.push(FactorEntry {
            handle: FactorRef::Webauthn(credential.id).handle(),
            kind: if credential.kind == Method::Platform.name() { "this device's biometrics" } else { "security key" },
            name: credential.name,
            added: date(gateway, credential.created),
            last_used: credential.last_used.map_or("never".into(), |at| date(gateway, at)),
            clone_warning: credential.possible_clone_at.map(|at| date(gateway, at)),
        });
    }
    for row in gateway.oob.factors(username).await? {
        let is_email = row.channel == Channel::Email.destination_kind();
        factors.push(FactorEntry {
            handle: FactorRef::Oob(row.id).handle(),
            kind: if is_email { "email address" } else { "phone number" },
            name: row.name,
            added: date(gateway, row.created),
            last_used: row.last_used.map_or("never".into(), |at| date(gateway, at)),
            clone_warning: None,
        });
    }
    let has_recovery_set = gateway.recovery.has_set(username).await?;
    let self_enrollment = gateway.totp.self_enrollment();
    let page = SettingsPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(gateway, Binding::Session(session)),
        username,
        factors,
        can_add_totp: !enrolled.totp && self_enrollment,
        can_add_phone: self_enrollment && (gateway.oob.offers(Channel::Sms) || gateway.oob.offers(Channel::Voice)),
        can_add_email: self_enrollment && gateway.oob.offers(Channel::Email),
        webauthn_kinds: if self_enrollment { webauthn_kinds(gateway, MethodSet::ANY) } else { Vec::new() },
        recovery_left: enrolled.recovery_left,
        has_recovery_set,
        sessions: sessions(gateway, session).await?,
        browsers: browsers(gateway, jar, username, now).await?,
        activity: activity(gateway, username).await?,
        changes_need_step_up: !may_change_factors(gateway, session, &enrolled),
        notice: message.notice,
        error: message.error,
        continue_to: message.continue_to,
    };
    Ok(html(StatusCode::OK, &page))
}

async fn sessions(gateway: &Gateway, current: &Session) -> Result<Vec<SessionEntry>, PortalError> {
    let rows = gateway.store.sessions_of(&current.username).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let context: SignInContext = serde_json::from_str(&row.context).unwrap_or_default();
            let factors: Vec<FactorUse> = serde_json::from_str(&row.factors).unwrap_or_default();
            let mut methods: Vec<&str> = Vec::new();
            for method in factors.iter().flat_map(|f| f.factor.amr().iter().copied()) {
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
            SessionEntry {
                handle: hex(&row.key),
                current: row.key == current.key,
                started: date(gateway, row.created),
                last_seen: date(gateway, row.last_seen),
                country: context.country.unwrap_or_else(|| "unknown place".into()),
                methods: methods.join(", "),
            }
        })
        .collect())
}

async fn browsers(gateway: &Gateway, jar: &CookieJar, username: &str, now: i64) -> Result<Vec<TrustedBrowser>, PortalError> {
    let devices = gateway.store.trusted_devices(username, now).await?;
    let current = device::device_id(gateway, jar);
    Ok(devices
        .into_iter()
        .map(|d| TrustedBrowser {
            current: current.as_deref() == Some(d.device_id.as_str()),
            short_id: d.device_id.chars().take(8).collect(),
            first_seen: date(gateway, d.first_seen),
            last_seen: date(gateway, d.last_seen),
            trusted_until: date(gateway, d.trusted_until.unwrap_or(now)),
            device_id: d.device_id,
        })
        .collect())
}

/// A date as users read it, in the policy's time zone.
/// The user's latest security events: a sign-in they did not make shows here.
async fn activity(gateway: &Gateway, username: &str) -> Result<Vec<ActivityEntry>, PortalError> {
    let query = AuditQuery { user: Some(username.to_string()), limit: RECENT_EVENTS, ..AuditQuery::default() };
    let rows = gateway.store.audit_events(&query).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let failed = row.outcome != Outcome::Success.name();
            let place = [row.ip.as_deref(), row.country.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" · ");
            ActivityEntry {
                when: date(gateway, row.at),
                what: Kind::from_name(&row.kind).map_or(row.kind.clone(), |kind| crate::audit::describe(kind, failed).to_string()),
                place,
                by: (row.actor != username && row.actor != crate::audit::GATEWAY_ACTOR).then(|| format!("by {}", row.actor)),
                failed,
            }
        })
        .collect())
}

fn date(gateway: &Gateway, at: i64) -> String {
    use chrono::TimeZone;
    gateway.config.policy.time_zone.0.timestamp_opt(at, 0).single().map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string()).unwrap_or_default()
}
