//! The JSON side of WebAuthn ceremonies, called by `static/webauthn.js`:
//! start (the options for `navigator.credentials`) and finish (the
//! browser's answer). Every call carries the page's CSRF token in the
//! `X-CSRF-Token` header; answers are `{"redirect": ...}` or `{"error": ...}`,
//! the latter with `Retry-After` when the answer is 429 or 503.
//!
//! An answer to a challenge is counted against the user's second-factor
//! attempts (or, signing in without a password, the client address's)
//! before it is checked, like a code.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::Extension;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::assess::assess_sign_in;
use super::csrf::{self, Binding};
use super::redirect::safe_return_to;
use super::second_factor::{complete, forget_attempts, may_enrol, reserve_attempt, Passed};
use super::{audit, current_session, device, returning, PortalError, PortalRequest, PortalState, Refused, UNAVAILABLE_RETRY_AFTER};
use crate::audit::{Event, Kind, Outcome, ANONYMOUS_ACTOR};
use crate::crypto::sha256;
use crate::factors::webauthn::{RelyingParty, WebauthnFailure};
use crate::gateway::Gateway;
use crate::methods::Method;
use crate::session::Session;
use crate::throttle::ThrottleError;
use crate::users::Current;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterStart {
    kind: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinish {
    credential: RegisterPublicKeyCredential,
    #[serde(default)]
    rd: String,
    #[serde(default)]
    remember: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticateFinish {
    credential: PublicKeyCredential,
    #[serde(default)]
    rd: String,
    #[serde(default)]
    remember: bool,
}

/// A refusal or failure, as JSON with its status.
pub struct Refusal {
    status: StatusCode,
    message: String,
    retry_after: Option<i64>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl Refusal {
    fn new(status: StatusCode, message: &str) -> Self {
        Refusal { status, message: message.to_string(), retry_after: None }
    }

    fn unavailable() -> Self {
        let message = "The sign-in service could not complete this request. Try again shortly.";
        Refusal { retry_after: Some(UNAVAILABLE_RETRY_AFTER), ..Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }

    fn from_failure(failure: WebauthnFailure, username: Option<&str>, request: &PortalRequest) -> Self {
        if failure.is_server_error() {
            PortalError::Webauthn(failure).log("WebAuthn request failed");
            return Refusal::unavailable();
        }
        tracing::info!(event = "webauthn", outcome = "failure", user = username.unwrap_or("-"), ip = %request.client_ip, reason = ?failure, "authentication");
        let status = match failure {
            WebauthnFailure::PossibleClone => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        Refusal::new(status, &failure.to_string())
    }
}

impl From<PortalError> for Refusal {
    fn from(error: PortalError) -> Self {
        error.log("WebAuthn request failed");
        Refusal::unavailable()
    }
}

impl From<Refused> for Refusal {
    fn from(refused: Refused) -> Self {
        Refusal { status: refused.status(), message: refused.message(), retry_after: Some(refused.retry_after()) }
    }
}

pub type Answer = Result<Response, Refusal>;

fn bad_json(rejection: JsonRejection) -> Refusal {
    let status = match rejection {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    Refusal::new(status, "The request was not the JSON this endpoint expects.")
}

/// The session behind a ceremony call, with its CSRF token checked.
async fn session_for(gateway: &Gateway, jar: &CookieJar, headers: &HeaderMap) -> Result<Arc<Session>, Refusal> {
    let Some(session) = current_session(gateway, jar).await? else {
        return Err(Refusal::new(StatusCode::UNAUTHORIZED, "Your session has ended. Sign in again."));
    };
    if !csrf::is_valid(gateway, Binding::Session(&session), csrf_header(headers)) {
        return Err(Refusal::new(StatusCode::FORBIDDEN, "This page has expired. Reload it and try again."));
    }
    Ok(session)
}

/// The refusal of an enrolment that needs a fresh second factor first.
fn confirm_first() -> Refusal {
    Refusal::new(StatusCode::FORBIDDEN, "Confirm it's you with your current second factor first.")
}

fn csrf_header(headers: &HeaderMap) -> &str {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn relying_party(request: &PortalRequest) -> Result<&Arc<RelyingParty>, Refusal> {
    request
        .app
        .relying_party(&request.host)
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "Security keys are not available on this site."))
}

pub async fn register_start(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Result<Json<RegisterStart>, JsonRejection>,
) -> Answer {
    let Json(body) = body.map_err(bad_json)?;
    let session = session_for(&gateway, &jar, &headers).await?;
    let rp = relying_party(&request)?;
    let Some(kind) = Method::from_name(&body.kind).filter(|m| m.is_webauthn()) else {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "Unknown kind of authenticator."));
    };
    if may_enrol(&gateway, &session).await?.is_none() {
        return Err(confirm_first());
    }
    let options = gateway
        .webauthn
        .start_registration(rp, session.key, &session.username, kind, &body.name)
        .await
        .map_err(|f| Refusal::from_failure(f, Some(&session.username), &request))?;
    Ok(Json(options).into_response())
}

pub async fn register_finish(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Result<Json<RegisterFinish>, JsonRejection>,
) -> Answer {
    let Json(body) = body.map_err(bad_json)?;
    let session = session_for(&gateway, &jar, &headers).await?;
    let rp = relying_party(&request)?;
    // Checked again: the session may have aged since the challenge.
    let Some(enrolment) = may_enrol(&gateway, &session).await? else {
        return Err(confirm_first());
    };
    let registered = gateway.webauthn.finish_registration(rp, session.key, &session.username, &body.credential).await;
    let registered = match registered {
        Ok(registered) => registered,
        Err(failure) => return Err(audited_refusal(&gateway, &request, Kind::FactorEnrolled, Some(&session.username), failure).await),
    };
    tracing::info!(event = "factor_added", method = registered.kind.name(), user = %session.username, name = ?registered.name, "security");
    let event = Event::new(Kind::FactorEnrolled, Outcome::Success).by_user(&session.username).detail("method", registered.kind.name());
    audit(&gateway, &request, event.detail("name", registered.name.as_str())).await;
    let rd = safe_return_to(&gateway, Some(&body.rd));
    let (jar, location) = complete(
        &gateway,
        &session,
        &request,
        jar,
        Passed { proof: registered.proof, remember: body.remember, enrolment: Some(enrolment) },
        &rd,
    )
    .await?;
    Ok((jar, Json(json!({ "redirect": location }))).into_response())
}

pub async fn authenticate_start(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Result<Json<Empty>, JsonRejection>,
) -> Answer {
    let _ = body.map_err(bad_json)?;
    let session = session_for(&gateway, &jar, &headers).await?;
    let rp = relying_party(&request)?;
    let options = gateway
        .webauthn
        .start_authentication(rp, session.key, &session.username)
        .await
        .map_err(|f| Refusal::from_failure(f, Some(&session.username), &request))?;
    Ok(Json(options).into_response())
}

pub async fn authenticate_finish(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Result<Json<AuthenticateFinish>, JsonRejection>,
) -> Answer {
    let Json(body) = body.map_err(bad_json)?;
    let session = session_for(&gateway, &jar, &headers).await?;
    let rp = relying_party(&request)?;
    reserve_attempt(&gateway, &session.username, &request).await??;
    let proved = match gateway.webauthn.finish_authentication(rp, session.key, &session.username, &body.credential).await {
        Ok(proved) => proved,
        Err(failure) => return Err(audited_refusal(&gateway, &request, Kind::SecondFactor, Some(&session.username), failure).await),
    };
    forget_attempts(&gateway, &session.username).await;
    tracing::info!(event = "webauthn", outcome = "success", user = %session.username, ip = %request.client_ip, "authentication");
    let event = Event::new(Kind::SecondFactor, Outcome::Success).by_user(&session.username);
    audit(&gateway, &request, event.detail("method", proved.proof.factor.method().map(|m| m.name()).unwrap_or("webauthn"))).await;
    let rd = safe_return_to(&gateway, Some(&body.rd));
    let (jar, location) =
        complete(&gateway, &session, &request, jar, Passed { proof: proved.proof, remember: body.remember, enrolment: None }, &rd).await?;
    Ok((jar, Json(json!({ "redirect": location }))).into_response())
}

/// The pre-session a passwordless ceremony belongs to, with its CSRF
/// token checked, as the key ceremonies are kept under.
fn pre_session_owner(gateway: &Gateway, jar: &CookieJar, headers: &HeaderMap) -> Result<[u8; 32], Refusal> {
    let pre = csrf::pre_session(gateway, jar).filter(|pre| csrf::is_valid(gateway, Binding::PreSession(pre), csrf_header(headers)));
    pre.map(|pre| sha256(pre.as_bytes()))
        .ok_or_else(|| Refusal::new(StatusCode::FORBIDDEN, "This page has expired. Reload it and try again."))
}

/// Records a ceremony the client failed (not one the gateway could not
/// complete) and answers it.
async fn audited_refusal(
    gateway: &Gateway,
    request: &PortalRequest,
    kind: Kind,
    username: Option<&str>,
    failure: WebauthnFailure,
) -> Refusal {
    if !failure.is_server_error() {
        let event = Event::new(kind, Outcome::Failure).detail("method", "webauthn").detail("reason", failure.reason());
        let event = match username {
            Some(username) => event.by_user(username),
            None => Event { actor: ANONYMOUS_ACTOR.into(), ..event },
        };
        audit(gateway, request, event).await;
    }
    Refusal::from_failure(failure, username, request)
}

pub async fn passwordless_start(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Result<Json<Empty>, JsonRejection>,
) -> Answer {
    let _ = body.map_err(bad_json)?;
    let owner = pre_session_owner(&gateway, &jar, &headers)?;
    let rp = relying_party(&request)?;
    let options =
        gateway.webauthn.start_passwordless(rp, owner, request.client_ip).await.map_err(|f| Refusal::from_failure(f, None, &request))?;
    Ok(Json(options).into_response())
}

/// Counts a passkey sign-in against the client address before it is
/// checked: whose credential it is shows only once it has been.
async fn reserve_passkey_attempt(gateway: &Gateway, request: &PortalRequest) -> Result<(), Refusal> {
    let refusal = match gateway.attempts.reserve(&[gateway.attempts.address_key(request.client_ip)]).await {
        Ok(()) => return Ok(()),
        Err(ThrottleError::Refusal(refusal)) => refusal,
        Err(ThrottleError::Cache(e)) => return Err(PortalError::from(e).into()),
    };
    let refused = Refused::from(refusal);
    tracing::warn!(event = "passkey", outcome = refused.outcome(), ip = %request.client_ip, "authentication");
    let event = Event::new(Kind::SignIn, Outcome::Refused).detail("method", "passkey").detail("reason", refused.outcome());
    audit(gateway, request, Event { actor: ANONYMOUS_ACTOR.into(), ..event }).await;
    Err(refused.into())
}

pub async fn passwordless_finish(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Result<Json<AuthenticateFinish>, JsonRejection>,
) -> Answer {
    let Json(body) = body.map_err(bad_json)?;
    let owner = pre_session_owner(&gateway, &jar, &headers)?;
    let rp = relying_party(&request)?;
    reserve_passkey_attempt(&gateway, &request).await?;
    let proved = match gateway.webauthn.finish_passwordless(rp, owner, &body.credential).await {
        Ok(proved) => proved,
        Err(failure) => return Err(audited_refusal(&gateway, &request, Kind::SignIn, None, failure).await),
    };
    // A directory's user is read again (or for the first time on this instance).
    let user = match gateway.users.current(&proved.username).await {
        Current::User(user) => user,
        Current::Gone => return Err(Refusal::new(StatusCode::FORBIDDEN, "This account can no longer sign in.")),
        Current::Unknown => {
            return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "The user directory cannot be reached. Try again in a moment."))
        }
    };
    if let Some(previous) = current_session(&gateway, &jar).await? {
        gateway.sessions.delete(&previous.key).await.map_err(PortalError::from)?;
    }
    let (jar, device) = device::ensure_device(&gateway, jar, request.tls);
    let jar = returning::remember(&gateway, jar, &device, &user.username, request.tls);
    let context = assess_sign_in(&gateway, &user.username, request.client_ip, &device).await.map_err(PortalError::from)?;
    tracing::info!(event = "passkey", outcome = "success", user = %user.username, ip = %request.client_ip, "authentication");
    let event = Event::new(Kind::SignIn, Outcome::Success).by_user(&user.username).detail("method", "passkey");
    gateway.audit.record(event.from_client(request.client_ip, context.country.clone(), Some(&request.app.id))).await;
    let now = gateway.clock.now();
    gateway.store.remember_device(&user.username, &device, now, None).await.map_err(PortalError::from)?;
    let (id, _) = gateway.sessions.create(&user.username, proved.proof, context).await.map_err(PortalError::from)?;
    let jar = jar.add(gateway.sessions.cookie(id, request.tls));
    let rd = safe_return_to(&gateway, Some(&body.rd));
    Ok((jar, Json(json!({ "redirect": rd }))).into_response())
}
