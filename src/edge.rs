//! One meaning for a request at the edge. Most gateway bypasses are a
//! request that means one thing to the gateway and another to the app: a
//! lower-case method the app upper-cases, a `Remote_User` header a CGI or
//! WSGI server reads as `REMOTE_USER`, a repeated query parameter of which
//! the app reads another value than the rule did, a Host with junk after
//! the port. Here a request is read once, into the form every later step
//! (matching, `policy explain`, logging, forwarding) uses, and what cannot
//! be read one way only is refused with a 400.

use http::{HeaderMap, HeaderName, Method, Uri};

use crate::config::{AppConfig, HeaderUnderscores, MethodOverride};
use crate::policy::{canonical_path, PathError};

/// Headers through which clients ask apps to treat a request as another
/// method (Rails, Express' method-override, Symfony, ASP.NET...).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// Headers that tell an app where a request came from or what it asked
/// for before a proxy rewrote it. From a client that is not a trusted
/// proxy they are removed: the gateway sets `X-Forwarded-For/-Proto/-Host`
/// and `X-Real-IP` itself.
pub const FORWARDING_HEADERS: [&str; 20] = [
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-forwarded",
    "forwarded-for",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
];

/// Why a request is refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    #[error("the method is not an upper-case token")]
    Method,
    #[error("the method override names a method that is not an upper-case token, or several")]
    MethodOverride,
    #[error("the Host is malformed, repeated or differs from the request's authority")]
    Host,
    #[error("a header name holds an underscore")]
    UnderscoreHeader,
    #[error("a query parameter that a rule reads is repeated")]
    RepeatedQuery,
    #[error(transparent)]
    Path(#[from] PathError),
}

impl EdgeError {
    /// The access log's name for the refusal.
    pub fn label(&self) -> &'static str {
        match self {
            EdgeError::Method => "bad_method",
            EdgeError::MethodOverride => "bad_method_override",
            EdgeError::Host => "bad_host",
            EdgeError::UnderscoreHeader => "bad_header_name",
            EdgeError::RepeatedQuery => "repeated_query",
            EdgeError::Path(_) => "bad_path",
        }
    }
}

/// The request as rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// Normalized, and folded for apps that ignore case.
    pub path: String,
    /// The method an override header names, for apps that honour them.
    pub method_override: Option<Method>,
}

/// Reads a request for `app`, or says why it cannot be read one way only.
pub fn canonicalise(method: &Method, uri: &Uri, headers: &HeaderMap, app: &AppConfig) -> Result<Canonical, EdgeError> {
    check_method(method)?;
    if app.header_underscores == HeaderUnderscores::Refuse && headers.keys().any(|name| name.as_str().contains('_')) {
        return Err(EdgeError::UnderscoreHeader);
    }
    let method_override = match app.method_override {
        MethodOverride::Strip => None,
        MethodOverride::Honour => named_override(headers)?,
    };
    check_query(uri.query(), app)?;
    Ok(Canonical { path: canonical_path(uri.path(), app.path_matching)?, method_override })
}

/// Methods are case-sensitive tokens, and every standard one is upper
/// case; servers that upper-case what they get (werkzeug) would run
/// `delete` as the DELETE a rule did not see.
fn check_method(method: &Method) -> Result<(), EdgeError> {
    let canonical = |b: &u8| b.is_ascii_uppercase() || *b == b'-' || *b == b'_';
    match method.as_str().as_bytes().iter().all(canonical) {
        true => Ok(()),
        false => Err(EdgeError::Method),
    }
}

/// The one method the override headers name, if any.
fn named_override(headers: &HeaderMap) -> Result<Option<Method>, EdgeError> {
    let mut named: Option<Method> = None;
    for value in METHOD_OVERRIDE_HEADERS.iter().flat_map(|name| headers.get_all(*name)) {
        let method = Method::from_bytes(value.as_bytes()).map_err(|_| EdgeError::MethodOverride)?;
        check_method(&method).map_err(|_| EdgeError::MethodOverride)?;
        if named.as_ref().is_some_and(|earlier| *earlier != method) {
            return Err(EdgeError::MethodOverride);
        }
        named = Some(method);
    }
    Ok(named)
}

/// Apps disagree on which of a repeated parameter's values counts, so a
/// parameter a condition reads may appear once only.
fn check_query(query: Option<&str>, app: &AppConfig) -> Result<(), EdgeError> {
    let (Some(query), watched) = (query, &app.watched_query) else {
        return Ok(());
    };
    if !watched.every_name && watched.names.is_empty() {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in url::form_urlencoded::parse(query.as_bytes()) {
        let read = watched.every_name || watched.names.iter().any(|n| *n == name);
        if read && !seen.insert(name) {
            return Err(EdgeError::RepeatedQuery);
        }
    }
    Ok(())
}

/// The host a request is for, lower case and without its port: from the
/// Host header, or the authority of an HTTP/2 or absolute-form request.
/// None when neither names one. A malformed Host, several Host headers,
/// or a Host that differs from the authority are refused: the app might
/// read the other.
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Result<Option<String>, EdgeError> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(EdgeError::Host),
        (Some(value), None) => Some(value.to_str().map_err(|_| EdgeError::Host)?),
        (None, None) => None,
    };
    let authority = uri.authority().map(|a| a.as_str());
    let raw = match (header, authority) {
        (Some(header), Some(authority)) if !header.eq_ignore_ascii_case(authority) => return Err(EdgeError::Host),
        (Some(raw), _) | (None, Some(raw)) => raw,
        (None, None) => return Ok(None),
    };
    parse_host(raw).map(|host| Some(host.to_ascii_lowercase())).ok_or(EdgeError::Host)
}

/// `host[:port]`: a DNS name or IPv4 address, or a bracketed IPv6
/// address, and a port of digits. The host part, or None when malformed.
fn parse_host(raw: &str) -> Option<&str> {
    let (host, port) = match raw.strip_prefix('[') {
        Some(rest) => {
            let (address, after) = rest.split_once(']')?;
            address.parse::<std::net::Ipv6Addr>().ok()?;
            (&raw[..address.len() + 2], after)
        }
        None => match raw.find(':') {
            Some(colon) => (&raw[..colon], &raw[colon..]),
            None => (raw, ""),
        },
    };
    let name_ok =
        |h: &str| !h.is_empty() && h.len() <= 253 && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => !digits.is_empty() && digits.len() <= 5 && digits.parse::<u16>().is_ok(),
    };
    ((host.starts_with('[') || name_ok(host)) && port_ok).then_some(host)
}

/// Whether a client header name would reach an app as `ours`: header
/// names are compared without case, and CGI-style servers read `_` as `-`.
pub fn reads_as(name: &str, ours: &str) -> bool {
    name.len() == ours.len()
        && name.bytes().zip(ours.bytes()).all(|(a, b)| {
            let a = if a == b'_' { b'-' } else { a.to_ascii_lowercase() };
            a == b.to_ascii_lowercase()
        })
}

/// A header's lines joined with `, `, as HTTP defines repeated fields;
/// None when absent or not text.
pub fn joined_header(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().map(|v| v.to_str().ok()).collect::<Option<_>>()?;
    (!values.is_empty()).then(|| values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_upper_case_method_tokens_pass() {
        for good in ["GET", "DELETE", "PROPFIND", "M-SEARCH"] {
            assert_eq!(check_method(&Method::from_bytes(good.as_bytes()).unwrap()), Ok(()), "{good}");
        }
        for bad in ["delete", "Get", "GET1", "P.OST"] {
            assert_eq!(check_method(&Method::from_bytes(bad.as_bytes()).unwrap()), Err(EdgeError::Method), "{bad}");
        }
    }

    #[test]
    fn hosts_are_read_one_way() {
        let host = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::HOST, value.parse().unwrap());
            request_host(&Uri::from_static("/x"), &headers)
        };
        assert_eq!(host("App.Test:8080"), Ok(Some("app.test".into())));
        assert_eq!(host("[::1]:80"), Ok(Some("[::1]".into())));
        assert_eq!(host("192.0.2.1"), Ok(Some("192.0.2.1".into())));
        for bad in ["app.test:80:x", "app.test:", "app.test:99999", "app test", "app.test/x", "[::1", "[zz]:1", "@app.test", ""] {
            assert_eq!(host(bad), Err(EdgeError::Host), "{bad:?}");
        }
        let mut two = HeaderMap::new();
        two.append(http::header::HOST, "a.test".parse().unwrap());
        two.append(http::header::HOST, "b.test".parse().unwrap());
        assert_eq!(request_host(&Uri::from_static("/"), &two), Err(EdgeError::Host));
        let mut one = HeaderMap::new();
        one.insert(http::header::HOST, "a.test".parse().unwrap());
        assert_eq!(request_host(&Uri::from_static("http://b.test/"), &one), Err(EdgeError::Host));
        assert_eq!(request_host(&Uri::from_static("http://A.test/"), &one), Ok(Some("a.test".into())));
    }

    #[test]
    fn underscores_read_as_dashes() {
        assert!(reads_as("Remote_User", "remote-user"));
        assert!(reads_as("X_STEPGATE_ASSERTION", "x-stepgate-assertion"));
        assert!(!reads_as("Remote_Users", "remote-user"));
    }

    #[test]
    fn an_override_names_one_upper_case_method() {
        let with = |pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
            named_override(&headers)
        };
        assert_eq!(with(&[]), Ok(None));
        assert_eq!(with(&[("x-http-method-override", "DELETE")]), Ok(Some(Method::DELETE)));
        assert_eq!(with(&[("x-http-method", "PUT"), ("x-method-override", "PUT")]), Ok(Some(Method::PUT)));
        assert_eq!(with(&[("x-http-method", "PUT"), ("x-method-override", "DELETE")]), Err(EdgeError::MethodOverride));
        assert_eq!(with(&[("x-http-method-override", "delete")]), Err(EdgeError::MethodOverride));
    }
}
