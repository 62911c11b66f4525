//! Forward-auth: a proxy in front of an app (nginx, Caddy, Traefik,
//! HAProxy, Envoy) asks the gateway about each request before forwarding
//! it. Here such a question is read back into the request it is about,
//! which then goes through the same edge (`crate::edge`) and the same
//! decision as a request the gateway proxies itself. What cannot be read
//! one way only (a missing, repeated or malformed header) is refused.

use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Uri};

use crate::edge;

/// Where the authorizer answers, a path a dialect under the portal's
/// reserved `/.stepgate/authz/`.
const NGINX: &str = "/.stepgate/authz/nginx";
const FORWARD: &str = "/.stepgate/authz/forward";
const ENVOY: &str = "/.stepgate/authz/envoy";

/// How a proxy asks, and what it does with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// nginx `auth_request`: the request in `X-Original-URL` and
    /// `X-Original-Method` (or the `X-Forwarded-*` below); nginx takes 2xx,
    /// 401 and 403 only, and turns a 401 into a redirect to its `Location`.
    Nginx,
    /// Traefik `forwardAuth`, Caddy `forward_auth`, HAProxy: the request in
    /// `X-Forwarded-Method`, `-Proto`, `-Host` and `-Uri`; any answer but a
    /// 2xx goes to the client as it is.
    Forward,
    /// Envoy `ext_authz` over HTTP: the original method, the original path
    /// after this dialect's path, the original Host, the scheme in
    /// `X-Forwarded-Proto`; any answer but a 2xx goes to the client.
    Envoy,
}

impl Dialect {
    /// The dialect of an authorizer path, or None for a path that is none.
    pub fn of(path: &str) -> Option<Dialect> {
        match path {
            NGINX => Some(Dialect::Nginx),
            FORWARD => Some(Dialect::Forward),
            _ if path == ENVOY || path.strip_prefix(ENVOY).is_some_and(|rest| rest.starts_with('/')) => Some(Dialect::Envoy),
            _ => None,
        }
    }

    /// Whether the proxy turns a 401 into the redirect itself (nginx), so
    /// the answer carries the portal's URL in `Location` rather than being
    /// a redirect.
    pub fn redirects_itself(self) -> bool {
        self == Dialect::Nginx
    }
}

/// The request a proxy asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub method: Method,
    pub https: bool,
    /// As the client wrote it (with a port, if any), for the return URL.
    pub authority: String,
    /// Lower case, without the port: which app it is for.
    pub host: String,
    /// The path and query, as the client sent them.
    pub uri: Uri,
}

impl Original {
    /// The URL the client asked for, to come back to after signing in.
    pub fn url(&self) -> String {
        format!("{}{}", self.origin(), self.uri)
    }

    /// `scheme://authority` of the original request.
    pub fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// Why a forward-auth question cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuestionError {
    #[error("the `{0}` header is missing")]
    Missing(&'static str),
    #[error("the `{0}` header is repeated or lists several values")]
    Repeated(&'static str),
    #[error("the `{0}` header is malformed")]
    Malformed(&'static str),
}

impl QuestionError {
    /// The access log's name for the refusal.
    pub fn label(&self) -> &'static str {
        match self {
            QuestionError::Missing(_) => "authz_missing_header",
            QuestionError::Repeated(_) => "authz_repeated_header",
            QuestionError::Malformed(_) => "authz_malformed_header",
        }
    }
}

/// The headers through which proxies describe the original request. They
/// are not the original request's own, so rules do not see them.
const QUESTION_HEADERS: [&str; 7] = [
    "x-original-url",
    "x-original-method",
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-uri",
    "x-forwarded-for",
];

/// Reads the original request from a question asked in `dialect`: the
/// authorizer request's method, URI and headers.
pub fn read(dialect: Dialect, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Original, QuestionError> {
    match dialect {
        Dialect::Nginx if headers.contains_key("x-original-url") => read_original_url(headers),
        Dialect::Nginx | Dialect::Forward => read_forwarded(headers),
        Dialect::Envoy => read_envoy(method, uri, headers),
    }
}

/// The original request's own headers: the question's, without those
/// that describe it.
pub fn original_headers(headers: &HeaderMap) -> HeaderMap {
    // Copied without them rather than cloned and removed from: a removal
    // costs a lookup even when the header is absent, as most are.
    let describes_it = |name: &http::HeaderName| name == http::header::CONTENT_LENGTH || QUESTION_HEADERS.contains(&name.as_str());
    let mut own = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter().filter(|(name, _)| !describes_it(name)) {
        own.append(name.clone(), value.clone());
    }
    own
}

/// nginx's `X-Original-URL` (`$scheme://$http_host$request_uri`) and
/// `X-Original-Method` (or `X-Forwarded-Method`).
fn read_original_url(headers: &HeaderMap) -> Result<Original, QuestionError> {
    const URL: &str = "x-original-url";
    let url = single(headers, URL)?.ok_or(QuestionError::Missing(URL))?;
    let url: Uri = url.parse().map_err(|_| QuestionError::Malformed(URL))?;
    let https = match url.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(QuestionError::Malformed(URL)),
    };
    let authority = url.authority().ok_or(QuestionError::Malformed(URL))?.as_str();
    let host = host_of(authority).ok_or(QuestionError::Malformed(URL))?;
    let path = url.path_and_query().map_or("/", PathAndQuery::as_str);
    let method = match single(headers, "x-original-method")? {
        Some(_) => method_in(headers, "x-original-method")?,
        None => method_in(headers, "x-forwarded-method")?,
    };
    Ok(Original { method, https, authority: authority.to_string(), host, uri: origin_form(path, URL)? })
}

/// `X-Forwarded-Method`, `-Proto`, `-Host` and `-Uri`, each once.
fn read_forwarded(headers: &HeaderMap) -> Result<Original, QuestionError> {
    const HOST: &str = "x-forwarded-host";
    const URI: &str = "x-forwarded-uri";
    let method = method_in(headers, "x-forwarded-method")?;
    let https = scheme_in(headers)?;
    let authority = listed_once(headers, HOST)?.ok_or(QuestionError::Missing(HOST))?;
    let host = host_of(authority).ok_or(QuestionError::Malformed(HOST))?;
    let uri = single(headers, URI)?.ok_or(QuestionError::Missing(URI))?;
    Ok(Original { method, https, authority: authority.to_string(), host, uri: origin_form(uri, URI)? })
}

/// Envoy: the question's own method and Host, and the path after the
/// dialect's path, with the question's query.
fn read_envoy(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Original, QuestionError> {
    const HOST: &str = "host";
    let https = scheme_in(headers)?;
    let authority = single(headers, HOST)?.ok_or(QuestionError::Missing(HOST))?;
    let host = host_of(authority).ok_or(QuestionError::Malformed(HOST))?;
    let path = uri.path().strip_prefix(ENVOY).filter(|rest| !rest.is_empty()).unwrap_or("/");
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    Ok(Original { method: method.clone(), https, authority: authority.to_string(), host, uri: origin_form(&path_and_query, "path")? })
}

/// The value of a header that must appear at most once.
fn single<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, QuestionError> {
    let mut lines = headers.get_all(name).iter();
    match (lines.next(), lines.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(QuestionError::Repeated(name)),
        (Some(value), None) => value.to_str().map(|v| Some(v.trim())).map_err(|_| QuestionError::Malformed(name)),
    }
}

/// A header that must appear once and name one value: proxies in a chain
/// join theirs with commas, and which of them counts is anyone's guess.
fn listed_once<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, QuestionError> {
    match single(headers, name)? {
        Some(value) if value.contains(',') => Err(QuestionError::Repeated(name)),
        Some("") => Err(QuestionError::Malformed(name)),
        other => Ok(other),
    }
}

fn method_in(headers: &HeaderMap, name: &'static str) -> Result<Method, QuestionError> {
    let value = listed_once(headers, name)?.ok_or(QuestionError::Missing(name))?;
    Method::from_bytes(value.as_bytes()).map_err(|_| QuestionError::Malformed(name))
}

/// `X-Forwarded-Proto`: whether the client used https.
fn scheme_in(headers: &HeaderMap) -> Result<bool, QuestionError> {
    const PROTO: &str = "x-forwarded-proto";
    match listed_once(headers, PROTO)? {
        Some("https") => Ok(true),
        Some("http") => Ok(false),
        Some(_) => Err(QuestionError::Malformed(PROTO)),
        None => Err(QuestionError::Missing(PROTO)),
    }
}

/// The host of an authority, as the edge reads a Host header: lower case,
/// without the port; None for one the edge would refuse.
fn host_of(authority: &str) -> Option<String> {
    let value = http::HeaderValue::from_str(authority).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, value);
    edge::request_host(&Uri::default(), &headers).ok().flatten()
}

/// A path and query in origin form (`/path?query`), as a URI.
fn origin_form(path_and_query: &str, header: &'static str) -> Result<Uri, QuestionError> {
    if !path_and_query.starts_with('/') {
        return Err(QuestionError::Malformed(header));
    }
    let parsed: PathAndQuery = path_and_query.parse().map_err(|_| QuestionError::Malformed(header))?;
    parsed.as_str().parse().map_err(|_| QuestionError::Malformed(header))
}

#[cfg(test)]
mod tests;
