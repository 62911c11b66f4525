//! Sign-in at an OpenID Connect provider: the sign-in page sends the
//! browser there, and `/.stepgate/oidc/callback` takes it back.
//!
//! A sign-in in flight is kept in the shared cache, sealed, under its
//! `state` and the browser's pre-session cookie together (so a callback
//! carried to another browser, login CSRF, finds nothing and spends
//! nothing), for ten minutes and once. Anyone may start one, so they are bounded per client address
//! and in all.

use axum::extract::Extension;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;

use super::csrf;
use super::redirect::{query_param, safe_return_to};
use super::signin::{signed_in, FirstFactor};
use super::{audit, error_page, see_other, with_retry_after, Failure, PortalError, PortalRequest, PortalState};
use crate::audit::{Event, Kind, Outcome, ANONYMOUS_ACTOR};
use crate::cache::{Bound, CacheError};
use crate::crypto::{hex, sha256};
use crate::directory::oidc::{OidcDirectory, OidcError, Pending};
use crate::gateway::Gateway;

/// How long the provider may take to send the browser back.
const PENDING_SECS: i64 = 600;
const POOL: &str = "oidc-sign-ins";
const POOL_CAPACITY: usize = 10_000;
const PER_ADDRESS: usize = 16;

/// Sends the browser to the provider (the sign-in page's answer).
pub async fn start(gateway: &Gateway, provider: &OidcDirectory, request: &PortalRequest, jar: CookieJar, rd: String) -> Response {
    match begin(gateway, provider, request, jar, rd, None).await {
        Ok(response) => response,
        Err(answer) => answer,
    }
}

/// A step-up at the provider (`/.stepgate/oidc/step-up`): the signed-in
/// user signs in there again, with a second factor.
pub async fn step_up(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    uri: Uri,
) -> Result<Response, Failure> {
    let rd = safe_return_to(&gateway, super::redirect::rd_param(&uri).as_deref());
    let Some(provider) = gateway.users.oidc_provider().filter(|p| p.steps_up()).cloned() else {
        return Ok(error_page(&gateway, StatusCode::NOT_FOUND, "Not found", "There is no such page."));
    };
    let Some(session) = super::current_session(&gateway, &jar).await.map_err(|e| Failure(gateway.clone(), e))? else {
        return Ok(see_other(&super::with_return_to("/.stepgate/signin", &rd)));
    };
    Ok(match begin(&gateway, &provider, &request, jar, rd, Some(&session.username)).await {
        Ok(response) => response,
        Err(answer) => answer,
    })
}

async fn begin(
    gateway: &Gateway,
    provider: &OidcDirectory,
    request: &PortalRequest,
    jar: CookieJar,
    rd: String,
    step_up_of: Option<&str>,
) -> Result<Response, Response> {
    let (jar, pre) = csrf::ensure_pre_session(gateway, jar, request.tls);
    let (url, state, pending) = provider.begin(&rd, step_up_of).await.map_err(|e| unavailable(gateway, &e))?;
    let json = zeroize::Zeroizing::new(serde_json::to_vec(&pending).map_err(|_| busy(gateway))?);
    let key = pending_key(&state, &pre);
    let address = crate::throttle::subscriber(request.client_ip);
    let bound = Bound { pool: POOL, capacity: POOL_CAPACITY, group: Some((&address, PER_ADDRESS)) };
    let sealed = gateway.secrets.seal(key.as_bytes(), &json);
    match gateway.cache.put_bounded(&key, sealed, PENDING_SECS, &bound).await {
        Ok(true) => Ok((jar, see_other(url.as_str())).into_response()),
        Ok(false) => Err(busy(gateway)),
        Err(e) => Err(cache_failure(gateway, e)),
    }
}

/// The provider sends the browser back here with a code (or an error).
pub async fn callback(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    uri: Uri,
) -> Result<Response, Failure> {
    let Some(provider) = gateway.users.oidc_provider().cloned() else {
        return Ok(error_page(&gateway, StatusCode::NOT_FOUND, "Not found", "There is no such page."));
    };
    let state = query_param(&uri, "state").unwrap_or_default();
    let browser = csrf::pre_session(&gateway, &jar).unwrap_or_default();
    let kept = take(&gateway, &state, &browser).await.map_err(|e| Failure(gateway.clone(), e))?;
    // Unknown, spent or expired, or started in another browser.
    let Some(pending) = kept else {
        let message = "This sign-in has expired, was already used, or was started in another browser. Start again.";
        return Ok(refused(&gateway, &request, "unknown_state", StatusCode::BAD_REQUEST, message).await);
    };
    if let Some(error) = query_param(&uri, "error") {
        let shown: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        let message = format!("The identity provider did not sign you in ({shown}). Start again.");
        return Ok(refused(&gateway, &request, "provider_error", StatusCode::FORBIDDEN, &message).await);
    }
    let code = query_param(&uri, "code").unwrap_or_default();
    if code.is_empty() || code.len() > 4096 {
        return Ok(
            refused(&gateway, &request, "no_code", StatusCode::BAD_REQUEST, "The identity provider sent no code. Start again.").await
        );
    }
    let rd = safe_return_to(&gateway, Some(&pending.rd));
    let step_up_of = pending.step_up_of.clone();
    let signed = match provider.finish(&code, pending).await {
        Ok(signed) => signed,
        Err(OidcError::Refused(why)) => {
            tracing::warn!(event = "oidc", outcome = "refused", reason = %why, ip = %request.client_ip, "authentication");
            // The provider may have rotated its keys: the next sign-in reads them again.
            provider.forget_metadata().await;
            let message = "The identity provider's answer could not be accepted. Start again.";
            return Ok(refused(&gateway, &request, "token_refused", StatusCode::FORBIDDEN, message).await);
        }
        Err(e) => {
            provider.forget_metadata().await;
            return Ok(unavailable(&gateway, &e));
        }
    };
    tracing::info!(event = "oidc", outcome = "success", user = %signed.user.username, amr = ?signed.amr, provider_mfa = signed.provider_mfa, "authentication");
    if let Some(username) = step_up_of {
        return stepped_up(&gateway, &request, jar, &username, signed, &rd).await.map_err(|e| Failure(gateway.clone(), e));
    }
    let user = gateway.users.learn(signed.user);
    let first = FirstFactor { method: "oidc", provider_mfa: signed.provider_mfa };
    signed_in(&gateway, &request, jar, &user, &rd, first).await.map_err(|e| Failure(gateway.clone(), e))
}

/// Records a step-up done at the provider on the session that asked for it:
/// the same user, freshly authenticated, with a second factor.
async fn stepped_up(
    gateway: &Gateway,
    request: &PortalRequest,
    jar: CookieJar,
    username: &str,
    signed: crate::directory::oidc::SignedIn,
    rd: &str,
) -> Result<Response, PortalError> {
    let Some(session) = super::current_session(gateway, &jar).await?.filter(|s| s.username == username) else {
        return Ok(refused(gateway, request, "step_up_session", StatusCode::FORBIDDEN, "Your session has ended. Sign in again.").await);
    };
    if signed.user.username != username || !signed.fresh || !signed.provider_mfa {
        let message = "The identity provider did not confirm it's you with a second factor just now. Try again.";
        return Ok(refused(gateway, request, "step_up_refused", StatusCode::FORBIDDEN, message).await);
    }
    let Some((id, _)) = gateway.sessions.add_factor(&session, crate::session::Factor::Provider, None).await? else {
        return Ok(see_other(&super::with_return_to("/.stepgate/signin", rd)));
    };
    let event = Event::new(Kind::SecondFactor, Outcome::Success).by_user(username).detail("method", "provider");
    audit(gateway, request, event).await;
    Ok((jar.add(gateway.sessions.cookie(id, request.tls)), see_other(rd)).into_response())
}

/// The sign-in `state` this browser started, taken out (a second callback
/// finds nothing).
async fn take(gateway: &Gateway, state: &str, browser: &str) -> Result<Option<Pending>, PortalError> {
    if state.is_empty() || state.len() > 256 || browser.is_empty() {
        return Ok(None);
    }
    let key = pending_key(state, browser);
    let Some(sealed) = gateway.cache.take_bounded(&key, POOL).await? else {
        return Ok(None);
    };
    let Ok(json) = gateway.secrets.open(key.as_bytes(), &sealed) else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&json).ok())
}

/// The cache key of a state and the browser's pre-session id: a hash, so
/// neither its size nor its content is the client's.
fn pending_key(state: &str, browser: &str) -> String {
    let browser = sha256(browser.as_bytes());
    format!("oidc:{}", hex(&sha256(format!("{state}:{}", hex(&browser)).as_bytes())))
}

async fn refused(gateway: &Gateway, request: &PortalRequest, reason: &str, status: StatusCode, message: &str) -> Response {
    let event = Event { actor: ANONYMOUS_ACTOR.into(), ..Event::new(Kind::SignIn, Outcome::Failure) };
    audit(gateway, request, event.detail("method", "oidc").detail("reason", reason)).await;
    error_page(gateway, status, "Sign-in not completed", message)
}

fn unavailable(gateway: &Gateway, error: &OidcError) -> Response {
    tracing::warn!(error = %error, "a sign-in could not reach the identity provider");
    let page = error_page(
        gateway,
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The identity provider cannot be reached. Try again in a moment.",
    );
    with_retry_after(page, 5)
}

fn busy(gateway: &Gateway) -> Response {
    with_retry_after(
        error_page(gateway, StatusCode::SERVICE_UNAVAILABLE, "Busy", "Too many sign-ins are under way. Try again in a moment."),
        5,
    )
}

fn cache_failure(gateway: &Gateway, error: CacheError) -> Response {
    tracing::warn!(error = %error, "a sign-in could not be kept");
    busy(gateway)
}
