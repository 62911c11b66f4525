//! The second factor: a TOTP challenge for users who have an authenticator
//! app, enrolment right after the password for those who do not.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::Extension;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Form;
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::csrf::{self, Binding};
use super::pages::{html, NoFactorPage, TotpChallengePage, TotpEnrollPage};
use super::redirect::{rd_param, safe_return_to};
use super::{
    bad_form, csrf_refused, current_session, error_page, see_other, too_many_attempts, with_return_to, Failure, PortalRequest,
    PortalState,
};
use crate::factors::totp::Verdict;
use crate::gateway::Gateway;
use crate::session::{Factor, Session};

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    code: String,
    #[serde(default)]
    rd: String,
    /// "Trust this browser": present when ticked.
    #[serde(default)]
    remember: Option<String>,
}

pub async fn show(Extension(gateway): Extension<PortalState>, jar: CookieJar, uri: Uri) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let rd = safe_return_to(&gateway, rd_param(&uri).as_deref());
    let Some(session) = current_session(&gateway, &jar).await.map_err(fail)? else {
        return Ok(see_other(&with_return_to("/.stepgate/signin", &rd)));
    };
    // A session that already has a second factor is here for a fresher one
    // (step-up), so the challenge is shown again.
    if gateway.totp.is_enrolled(&session.username).await.map_err(|e| fail(e.into()))? {
        return Ok(challenge_page(&gateway, &session, rd, None, StatusCode::OK));
    }
    if !gateway.totp.self_enrollment() {
        return Ok(html(StatusCode::FORBIDDEN, &NoFactorPage { brand: &gateway.config.branding }));
    }
    let session = match &session.pending_totp {
        Some(_) => session,
        None => {
            let sealed = gateway.totp.new_pending_secret(&session.username);
            gateway.sessions.set_pending_totp(&session, sealed).await.map_err(|e| fail(e.into()))?
        }
    };
    enroll_page(&gateway, &session, rd, None, StatusCode::OK)
}

pub async fn verify_totp(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form, rd) = match checked_form(&gateway, &request, &jar, form).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    let verdict = gateway.totp.verify(&session.username, &form.code).await.map_err(|e| fail(e.into()))?;
    record_verdict("totp", &gateway, &session.username, &request, verdict);
    match verdict {
        Verdict::Accepted => complete(&gateway, &session, &request, jar, &form, &rd).await,
        Verdict::NotEnrolled => Ok(see_other(&with_return_to("/.stepgate/second-factor", &rd))),
        Verdict::Wrong => Ok(challenge_page(&gateway, &session, rd, Some("That code is not right. Try the current one."), StatusCode::UNAUTHORIZED)),
        Verdict::Replayed => Ok(challenge_page(&gateway, &session, rd, Some("That code was already used. Wait for the next one."), StatusCode::UNAUTHORIZED)),
    }
}

pub async fn enroll_totp(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form, rd) = match checked_form(&gateway, &request, &jar, form).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    let Some(pending) = session.pending_totp.as_deref().filter(|_| gateway.totp.self_enrollment()) else {
        return Ok(see_other(&with_return_to("/.stepgate/second-factor", &rd)));
    };
    let verdict = gateway.totp.confirm_enrollment(&session.username, pending, &form.code).await.map_err(|e| fail(e.into()))?;
    record_verdict("totp_enrollment", &gateway, &session.username, &request, verdict);
    match verdict {
        Verdict::Accepted => complete(&gateway, &session, &request, jar, &form, &rd).await,
        // Someone enrolled this user meanwhile: the new secret was not stored.
        Verdict::Replayed | Verdict::NotEnrolled => Ok(see_other(&with_return_to("/.stepgate/second-factor", &rd))),
        Verdict::Wrong => enroll_page(&gateway, &session, rd, Some("That code is not right. Check the app and try again."), StatusCode::UNAUTHORIZED),
    }
}

/// The session, form and return target of a second-factor POST, or the
/// response that refuses it (bad form, no session, CSRF, throttled).
async fn checked_form(
    gateway: &Gateway,
    request: &PortalRequest,
    jar: &CookieJar,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Result<Result<(Arc<Session>, CodeForm, String), Response>, super::PortalError> {
    let Ok(Form(form)) = form else {
        return Ok(Err(bad_form(gateway)));
    };
    let Some(session) = current_session(gateway, jar).await? else {
        let message = "Your session has ended. Sign in again.";
        return Ok(Err(error_page(gateway, StatusCode::FORBIDDEN, "Session ended", message)));
    };
    if !csrf::is_valid(gateway, Binding::Session(&session), &form.csrf) {
        return Ok(Err(csrf_refused(gateway)));
    }
    if let Some(refusal) = throttled(gateway, &session, request) {
        return Ok(Err(refusal));
    }
    let rd = safe_return_to(gateway, Some(&form.rd));
    Ok(Ok((session, form, rd)))
}

/// Records the second factor under a new session id, remembers the
/// browser (trusted for a while when the user asked), and returns the user
/// to where they were going.
async fn complete(
    gateway: &Arc<Gateway>,
    session: &Session,
    request: &PortalRequest,
    jar: CookieJar,
    form: &CodeForm,
    rd: &str,
) -> Result<Response, Failure> {
    let fail = |e: crate::store::StoreError| Failure(gateway.clone(), e.into());
    let now = gateway.clock.now();
    let trust_days = i64::from(gateway.config.risk.trust_browser_days);
    let trusted_until = (form.remember.is_some() && trust_days > 0).then(|| now + trust_days * 86_400);
    if let Some(device) = &session.context.device_id {
        gateway.store.remember_device(&session.username, device, now, trusted_until).await.map_err(fail)?;
    }
    let (id, _) = gateway.sessions.add_factor(session, Factor::Otp, trusted_until).await.map_err(fail)?;
    let jar = jar.add(gateway.sessions.cookie(id, request.tls));
    Ok((jar, see_other(rd)).into_response())
}

fn challenge_page(gateway: &Gateway, session: &Session, rd: String, error: Option<&str>, status: StatusCode) -> Response {
    let page = TotpChallengePage {
        brand: &gateway.config.branding,
        csrf: csrf::token(gateway, Binding::Session(session)),
        rd,
        error,
        trust_days: gateway.config.risk.trust_browser_days,
    };
    html(status, &page)
}

fn enroll_page(gateway: &Arc<Gateway>, session: &Session, rd: String, error: Option<&str>, status: StatusCode) -> Result<Response, Failure> {
    let Some(pending) = &session.pending_totp else {
        return Ok(see_other(&with_return_to("/.stepgate/second-factor", &rd)));
    };
    let view = gateway.totp.enrollment_view(&session.username, pending).map_err(|e| Failure(gateway.clone(), e.into()))?;
    let page = TotpEnrollPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(gateway, Binding::Session(session)),
        rd,
        error,
        trust_days: gateway.config.risk.trust_browser_days,
        secret: view.secret_base32,
        otpauth_uri: view.otpauth_uri,
        qr_svg: view.qr_svg,
    };
    Ok(html(status, &page))
}

/// The refusal while this user has guessed too many codes.
fn throttled(gateway: &Gateway, session: &Session, request: &PortalRequest) -> Option<Response> {
    let retry_after = gateway.code_throttle.retry_after(&[&code_key(&session.username)])?;
    tracing::warn!(event = "second_factor", outcome = "throttled", user = %session.username, ip = %request.client_ip, "authentication");
    Some(too_many_attempts(gateway, retry_after))
}

fn code_key(username: &str) -> String {
    format!("user:{username}")
}

/// Logs the verdict and counts wrong codes towards the throttle.
fn record_verdict(method: &str, gateway: &Gateway, username: &str, request: &PortalRequest, verdict: Verdict) {
    match verdict {
        Verdict::Wrong => gateway.code_throttle.record_failure(&[&code_key(username)]),
        Verdict::Accepted => gateway.code_throttle.reset(&code_key(username)),
        Verdict::Replayed | Verdict::NotEnrolled => {}
    }
    let outcome = match verdict {
        Verdict::Accepted => "success",
        Verdict::Wrong => "failure",
        Verdict::Replayed => "replay",
        Verdict::NotEnrolled => "not_enrolled",
    };
    tracing::info!(event = method, outcome, user = %username, ip = %request.client_ip, "authentication");
}
