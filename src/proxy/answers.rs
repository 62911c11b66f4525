//! Answers the gateway gives itself (pages for refusals, the challenge that
//! sends a browser to sign in, the authorizer's answers), built before they
//! are written: the proxy writes them through pingora
//! ([`super::responses::write`]), the authorizer's own listener
//! ([`super::authz_listener`]) on its socket, the same answer either way.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::prelude::*;

use crate::gateway::Gateway;
use crate::policy::{Decision, StepUp};

const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' https:; frame-ancestors 'none'";

/// A complete answer but for `Content-Length` and `Server`, which the
/// writer adds. Its header lines are a list, in order, written as they
/// are: each writer serialises them its own way.
pub struct Answer {
    pub status: http::StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Answer {
    /// An answer no browser renders (forward-auth's allow, which the proxy
    /// in front reads and drops), without the security headers.
    pub fn unrendered(status: u16, headers: Vec<(HeaderName, HeaderValue)>, body: Bytes) -> Result<Self> {
        let status = http::StatusCode::from_u16(status).or_err(ErrorType::InternalError, "an answer's status")?;
        Ok(Self { status, headers, body })
    }

    /// An answer a browser may render: with the security headers of every
    /// response the gateway writes itself (the portal's own are set
    /// already; these are the same).
    pub fn rendered(status: u16, mut headers: Vec<(HeaderName, HeaderValue)>, body: Bytes) -> Result<Self> {
        for (name, value) in crate::portal::COMMON_SECURITY_HEADERS {
            if !headers.iter().any(|(given, _)| *given == name) {
                headers.push((name, HeaderValue::from_static(value)));
            }
        }
        Self::unrendered(status, headers, body)
    }

    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }
}

/// A header value the gateway made of text: a value that cannot be one
/// (a control character in a URL) is an internal error, never sent.
fn value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).or_err(ErrorType::InternalError, "a header value the gateway made")
}

/// A branded HTML page with `status`.
pub fn page(gateway: &Gateway, status: u16, title: &str, message: &str) -> Result<Answer> {
    html(status, crate::portal::error_html(gateway, title, message))
}

/// 503 while something the request needs (the store, the shared cache) is
/// unreachable, with `Retry-After`.
pub fn unavailable(gateway: &Gateway, request: &http::HeaderMap, id: &RequestId) -> Result<Answer> {
    let retry_after = Some(5);
    page_or_problem(gateway, request, 503, "Temporarily unavailable", "Please try again shortly.", retry_after, id)
}

/// A request's id: 64 random bits, shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    pub fn new() -> Self {
        Self(rand::random())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An error answered by the gateway itself: the branded page for
/// browsers, a problem document (RFC 9457) for API clients (by the
/// `Accept` of the `request` headers).
pub fn page_or_problem(
    gateway: &Gateway,
    request: &http::HeaderMap,
    status: u16,
    title: &str,
    message: &str,
    retry_after: Option<u32>,
    id: &RequestId,
) -> Result<Answer> {
    let accepts = |media_type: &str| {
        let accept = request.get_all(header::ACCEPT);
        accept.iter().any(|v| v.to_str().is_ok_and(|v| v.contains(media_type)))
    };
    let (content_type, body) = match accepts("application/json") && !accepts("text/html") {
        true => {
            let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or(title);
            let problem = serde_json::json!({ "type": "about:blank", "title": reason, "status": status, "request_id": id.to_string() });
            ("application/problem+json", problem.to_string())
        }
        false => ("text/html; charset=utf-8", crate::portal::error_html(gateway, title, &format!("{message} Reference: {id}."))),
    };
    let mut headers = vec![
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (HeaderName::from_static("x-request-id"), value(&id.to_string())?),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)),
    ];
    if let Some(seconds) = retry_after {
        headers.push((header::RETRY_AFTER, HeaderValue::from(seconds)));
    }
    Answer::rendered(status, headers, Bytes::from(body))
}

/// The branded answer to a request that could not be proxied.
pub fn proxy_failure(gateway: &Gateway, request: &http::HeaderMap, status: u16, id: &RequestId) -> Result<Answer> {
    let (title, message) = match status {
        502 => ("Application unreachable", "The application behind this address could not be reached. Please try again shortly."),
        503 => ("Application unavailable", "The application behind this address is unavailable. Please try again shortly."),
        504 => ("Application too slow", "The application behind this address did not answer in time. Please try again shortly."),
        400..=499 => ("Bad request", "This request is malformed."),
        _ => ("Something went wrong", "The gateway could not complete this request. Please try again shortly."),
    };
    let retry_after = matches!(status, 502..=504).then_some(5);
    page_or_problem(gateway, request, status, title, message, retry_after, id)
}

fn html(status: u16, body: String) -> Result<Answer> {
    let headers = vec![
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)),
    ];
    Answer::rendered(status, headers, Bytes::from(body))
}

/// What a challenge needs of the request it answers: the request the user
/// made (for a proxy in front, the one it asks about) and its URL.
pub struct Challenged {
    pub method: http::Method,
    pub headers: http::HeaderMap,
    /// Where to come back to after the challenge.
    pub url: String,
}

impl Challenged {
    fn wants_html(&self) -> bool {
        self.headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")))
    }

    fn safe_method(&self) -> bool {
        matches!(self.method, http::Method::GET | http::Method::HEAD)
    }
}

/// The portal page a sign-in or second-factor decision sends the user to,
/// and the error name API clients get; None for other decisions.
fn challenge_target(decision: Decision) -> Option<(String, &'static str)> {
    match decision {
        Decision::SignIn => Some(("/.stepgate/signin".into(), "sign_in_required")),
        Decision::SecondFactor(step_up) => {
            let error = match step_up {
                StepUp::Stale { .. } => "step_up_required",
                StepUp::Stronger(_) => "stronger_factor_required",
                StepUp::Required | StepUp::Risk => "second_factor_required",
            };
            let target = match step_up.factors() {
                factors if factors.is_any() => "/.stepgate/second-factor".to_string(),
                factors => format!("/.stepgate/second-factor?need={}", factors.to_query()),
            };
            Some((target, error))
        }
        Decision::Allow { .. } | Decision::Deny(_) => None,
    }
}

/// The portal URL (relative to the app's host) that answers `decision`,
/// with the URL to come back to, and the error name for API clients. A
/// browser's form submission (not GET or HEAD) cannot be replayed after a
/// redirect, so it comes back to the page it came from.
pub fn challenge_location(gateway: &Gateway, challenged: &Challenged, decision: Decision) -> Option<(String, &'static str)> {
    let (target, error) = challenge_target(decision)?;
    let come_back_to = match challenged.safe_method() {
        true => challenged.url.clone(),
        false => challenged.headers.get(header::REFERER).and_then(|r| r.to_str().ok()).unwrap_or("/").to_string(),
    };
    let page = crate::portal::with_return_to(&target, &crate::portal::safe_return_to(gateway, Some(&come_back_to)));
    let location = match &gateway.config.session.portal_url {
        Some(portal) => format!("{}{page}", portal.trim_end_matches('/')),
        None => page,
    };
    Some((location, error))
}

/// Sends a browser to sign in or to a second factor with the URL to come
/// back to; anything else gets 401 and a small JSON body. A browser's form
/// submission gets a page that explains and leads on.
pub fn challenge(gateway: &Gateway, challenged: &Challenged, decision: Decision) -> Result<Answer> {
    let Some((location, error)) = challenge_location(gateway, challenged, decision) else {
        return Error::e_explain(ErrorType::InternalError, "a challenge for a decision that is none");
    };
    if challenged.wants_html() && challenged.safe_method() {
        let headers = vec![(header::LOCATION, value(&location)?), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
        return Answer::rendered(302, headers, Bytes::new());
    }
    if challenged.wants_html() {
        let message = "This action needs you to confirm who you are first. Nothing was sent: \
                       continue, then submit it again.";
        let body = crate::portal::continue_html(gateway, "Confirm it's you", message, "Continue", &location);
        return html(401, body);
    }
    unauthorized_json(error, &location)
}

/// 401 with the portal's URL in `Location`, where nginx's `auth_request`
/// finds it, and the same small JSON body as [`challenge`]'s. The URL is
/// absolute, on the central portal or else on `origin`
/// (`scheme://authority`): nginx's `error_page` redirects the browser to a
/// URL but serves a path itself, internally.
pub fn challenge_for_nginx(gateway: &Gateway, challenged: &Challenged, decision: Decision, origin: &str) -> Result<Answer> {
    let Some((location, error)) = challenge_location(gateway, challenged, decision) else {
        return Error::e_explain(ErrorType::InternalError, "a challenge for a decision that is none");
    };
    let location = match location.starts_with('/') {
        true => format!("{origin}{location}"),
        false => location,
    };
    unauthorized_json(error, &location)
}

fn unauthorized_json(error: &str, location: &str) -> Result<Answer> {
    let body = serde_json::json!({ "error": error, "location": location }).to_string();
    let headers = vec![
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::LOCATION, value(location)?),
    ];
    Answer::rendered(401, headers, Bytes::from(body))
}
