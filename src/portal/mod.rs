//! The reserved `/.stepgate/` routes on every protected host: sign-in,
//! second factor, sign-out, JWKS, health and static files. An axum router
//! called in-process by the proxy; it never proxies traffic itself.

mod assess;
mod assets;
mod csrf;
mod device;
mod oidc;
mod oob;
mod pages;
mod redirect;
mod returning;
mod second_factor;
mod settings;
mod signin;
mod signout;
mod ticket;
mod webauthn;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Extension;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub use pages::{continue_html, error_html, error_page};
pub use redirect::safe_return_to;
pub use returning::cookie_name as returning_cookie_name;
pub use second_factor::{usable_kinds as usable_factor_kinds, METHOD_COOKIE};

use crate::audit::Event;
use crate::gateway::{App, Gateway};
use crate::throttle::Refusal;

/// The request bodies the portal's handlers extract, named for the fuzz
/// targets, which feed them arbitrary bytes.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::second_factor::CodeForm;
    pub use super::settings::{CsrfForm, FactorForm, RevokeForm, SessionForm};
    pub use super::signin::SigninForm;
    pub use super::signout::SignoutForm;
    pub use super::ticket::TicketForm;
    pub use super::webauthn::{AuthenticateFinish, Empty, RegisterFinish, RegisterStart};
}

/// Everything under this prefix belongs to the gateway, never to an app.
pub const PREFIX: &str = "/.stepgate/";
/// Largest request body a portal form may have.
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// When to try again after the gateway could not serve a request.
const UNAVAILABLE_RETRY_AFTER: i64 = 5;

/// What the proxy knows about a request, handed to portal handlers.
#[derive(Clone)]
pub struct PortalRequest {
    pub app: Arc<App>,
    /// The host the request was for, without port.
    pub host: String,
    /// Users reach the app over https (TLS here, or at a trusted proxy in
    /// front): cookies are `Secure`.
    pub tls: bool,
    pub client_ip: IpAddr,
}

/// The gateway current when the request arrived, put in the request's
/// extensions by the proxy.
pub type PortalState = Arc<Gateway>;

pub fn router() -> Router {
    Router::new()
        .route("/.stepgate/healthz", get(healthz))
        .route("/.stepgate/readyz", get(readyz))
        .route("/.stepgate/jwks.json", get(jwks))
        .route("/.stepgate/static/{name}", get(assets::serve))
        .route("/.stepgate/signin", get(signin::show).post(signin::submit))
        .route("/.stepgate/oidc/callback", get(oidc::callback))
        .route("/.stepgate/oidc/step-up", get(oidc::step_up))
        .route("/.stepgate/second-factor", get(second_factor::show))
        .route("/.stepgate/second-factor/totp", post(second_factor::verify_totp))
        .route("/.stepgate/second-factor/totp/enroll", post(second_factor::enroll_totp))
        .route("/.stepgate/second-factor/recovery", post(second_factor::verify_recovery))
        .route("/.stepgate/second-factor/send", post(oob::send))
        .route("/.stepgate/second-factor/code", post(oob::verify))
        .route("/.stepgate/enrol/phone", get(oob::add_phone))
        .route("/.stepgate/enrol/email", get(oob::add_email))
        .route("/.stepgate/enrol/send", post(oob::enrol_send))
        .route("/.stepgate/enrol/confirm", post(oob::enrol_confirm))
        .route("/.stepgate/webauthn/register/start", post(webauthn::register_start))
        .route("/.stepgate/webauthn/register/finish", post(webauthn::register_finish))
        .route("/.stepgate/webauthn/authenticate/start", post(webauthn::authenticate_start))
        .route("/.stepgate/webauthn/authenticate/finish", post(webauthn::authenticate_finish))
        .route("/.stepgate/webauthn/passwordless/start", post(webauthn::passwordless_start))
        .route("/.stepgate/webauthn/passwordless/finish", post(webauthn::passwordless_finish))
        .route("/.stepgate/recovery-codes", get(settings::recovery_codes).post(settings::recovery_codes_saved))
        .route("/.stepgate/signout", get(signout::show).post(signout::submit))
        .route("/.stepgate/ticket", get(ticket::show).post(ticket::spend))
        .route("/.stepgate/settings", get(settings::show))
        .route("/.stepgate/settings/add-totp", get(settings::add_totp))
        .route("/.stepgate/settings/factors/rename", post(settings::rename))
        .route("/.stepgate/settings/factors/remove", post(settings::remove))
        .route("/.stepgate/settings/recovery-codes/regenerate", post(settings::regenerate_codes))
        .route("/.stepgate/settings/sessions/revoke", post(settings::revoke_session))
        .route("/.stepgate/settings/trusted-browsers/revoke", post(settings::revoke))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(problems_for_api_clients))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness, for load balancers: 200 while the store and the shared cache
/// answer, 503 (with which one does not) while either is unreachable.
async fn readyz(Extension(gateway): Extension<PortalState>) -> Response {
    let readiness = gateway.reachability.readiness();
    let status = match readiness.store && readiness.cache {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(readiness)).into_response()
}

/// An error page becomes an RFC 9457 problem for a client that asked for
/// JSON and not for HTML (a script, the WebAuthn pages' fetches).
async fn problems_for_api_clients(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let wants_json = accepts(request.headers(), "application/json") && !accepts(request.headers(), "text/html");
    let response = next.run(request).await;
    let is_page = response.headers().get(header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
    if !wants_json || !is_page || !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let status = parts.status;
    let problem = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
    });
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(problem.to_string()))
}

fn accepts(headers: &http::HeaderMap, media_type: &str) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains(media_type)))
}

async fn jwks(Extension(gateway): Extension<PortalState>) -> Response {
    let mut response = Json(gateway.assertions.jwks()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    response
}

async fn not_found(Extension(gateway): Extension<PortalState>) -> Response {
    error_page(&gateway, StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

/// Headers every portal response carries; pages are never cached unless a
/// handler said otherwise.
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let https = request.extensions().get::<PortalRequest>().is_some_and(|r| r.tls);
    let hsts = request.extensions().get::<PortalState>().is_some_and(|gateway| gateway.config.server.hsts);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    for (name, value) in COMMON_SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if https && hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Headers on every response the gateway writes itself, portal or not.
pub const COMMON_SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (
        header::HeaderName::from_static("permissions-policy"),
        "publickey-credentials-get=(self), publickey-credentials-create=(self), camera=(), microphone=(), geolocation=()",
    ),
];

/// `server.hsts`: a year, this host only (subdomains may not all be ready).
pub const HSTS: &str = "max-age=31536000";

/// A failure inside a portal handler that is not the client's doing.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Totp(#[from] crate::factors::totp::TotpError),
    #[error(transparent)]
    Webauthn(#[from] crate::factors::webauthn::WebauthnFailure),
    #[error("password check did not complete: {0}")]
    Hashing(#[from] crate::hash_gate::Stopped),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

impl From<crate::factors::oob::OobError> for PortalError {
    fn from(error: crate::factors::oob::OobError) -> Self {
        match error {
            crate::factors::oob::OobError::Store(e) => PortalError::Store(e),
            crate::factors::oob::OobError::Cache(e) => PortalError::Cache(e),
        }
    }
}

impl From<crate::tickets::TicketError> for PortalError {
    fn from(error: crate::tickets::TicketError) -> Self {
        match error {
            crate::tickets::TicketError::Store(e) => PortalError::Store(e),
            crate::tickets::TicketError::Cache(e) => PortalError::Cache(e),
        }
    }
}

/// Carries the gateway so the error can be rendered with its branding.
pub struct Failure(pub Arc<Gateway>, pub PortalError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        self.1.log("portal request failed");
        let page = error_page(
            &self.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The sign-in service could not complete this request. Please try again shortly.",
        );
        with_retry_after(page, UNAVAILABLE_RETRY_AFTER)
    }
}

impl PortalError {
    /// Whether the failure is a backend being unreachable.
    pub fn is_outage(&self) -> bool {
        match self {
            PortalError::Store(e) => e.is_outage(),
            PortalError::Cache(e) => e.is_outage(),
            PortalError::Webauthn(e) => e.is_outage(),
            _ => false,
        }
    }

    /// Logs the failure; an outage only at debug level, since the backend
    /// probe logs it once when it begins and once when it ends.
    pub fn log(&self, what: &str) {
        match self.is_outage() {
            true => tracing::debug!(error = %self, "{what}"),
            false => tracing::error!(error = %self, "{what}"),
        }
    }
}

/// The live session named by the request's cookie, if any.
async fn current_session(
    gateway: &Gateway,
    jar: &axum_extra::extract::CookieJar,
) -> Result<Option<Arc<crate::session::Session>>, PortalError> {
    match jar.get(gateway.sessions.cookie_name()) {
        Some(cookie) => Ok(gateway.sessions.lookup_fresh(cookie.value()).await?),
        None => Ok(None),
    }
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, HeaderValue::from_static("/"))]).into_response(),
    }
}

/// A portal path with the return target attached.
pub fn with_return_to(path: &str, rd: &str) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("rd", rd).finish();
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{query}")
}

fn bad_form(gateway: &Gateway) -> Response {
    error_page(gateway, StatusCode::BAD_REQUEST, "Bad request", "The form was incomplete or malformed.")
}

fn csrf_refused(gateway: &Gateway) -> Response {
    error_page(gateway, StatusCode::FORBIDDEN, "Form expired", "This form is no longer valid. Go back, reload the page and try again.")
}

/// An attempt refused before it was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many attempts for this user, browser or address: 429.
    TooManyAttempts { retry_after: i64 },
    /// No room to count or check the attempt now: 503.
    Busy { retry_after: i64 },
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Limit { retry_after } => Refused::TooManyAttempts { retry_after },
            // A full table refuses new keys: the gateway is busy, not the
            // client at fault.
            Refusal::Full { retry_after } => Refused::Busy { retry_after },
        }
    }
}

impl Refused {
    pub fn status(self) -> StatusCode {
        match self {
            Refused::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refused::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn retry_after(self) -> i64 {
        match self {
            Refused::TooManyAttempts { retry_after } | Refused::Busy { retry_after } => retry_after.max(1),
        }
    }

    /// What the client is told.
    pub fn message(self) -> String {
        match self {
            Refused::TooManyAttempts { .. } => {
                let minutes = (self.retry_after() + 59) / 60;
                format!("Too many attempts. Try again in {minutes} minute{}.", if minutes == 1 { "" } else { "s" })
            }
            Refused::Busy { .. } => "The sign-in service is busy. Try again in a moment.".to_string(),
        }
    }

    /// The `outcome` of the log line.
    pub fn outcome(self) -> &'static str {
        match self {
            Refused::TooManyAttempts { .. } => "throttled",
            Refused::Busy { .. } => "busy",
        }
    }

    /// The branded page, with `Retry-After`.
    pub fn page(self, gateway: &Gateway) -> Response {
        let title = match self {
            Refused::TooManyAttempts { .. } => "Too many attempts",
            Refused::Busy { .. } => "Busy",
        };
        with_retry_after(error_page(gateway, self.status(), title, &self.message()), self.retry_after())
    }
}

fn with_retry_after(mut response: Response, seconds: i64) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// Records a security event about a request to the portal, with the
/// client's address, its country and the app.
async fn audit(gateway: &Gateway, request: &PortalRequest, event: Event) {
    let country = gateway.geo.current().lookup(request.client_ip).country;
    gateway.audit.record(event.from_client(request.client_ip, country, Some(&request.app.id))).await;
}

/// A user name as logged: a known user's as it is; anything else (a typo,
/// a password typed into the wrong field, an attack) only as a short keyed
/// hash, which links attempts with the same name without showing it.
fn logged_user(gateway: &Gateway, name: &str) -> String {
    if gateway.users.get(name).is_some() {
        return name.to_string();
    }
    let tag: String = gateway.secrets.mac("logged user name", name).chars().take(12).collect();
    format!("unknown:{tag}")
}
