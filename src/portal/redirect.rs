//! Where to send a user after sign-in: only ever a configured host.

use crate::gateway::Gateway;

const MAX_RETURN_URL: usize = 4096;

/// `rd` if it points at one of the gateway's own hosts (absolute http(s)
/// URL, or a path on the current host); otherwise `/`.
pub fn safe_return_to(gateway: &Gateway, rd: Option<&str>) -> String {
    rd.filter(|rd| rd.len() <= MAX_RETURN_URL && is_safe(gateway, rd)).map(str::to_string).unwrap_or_else(|| "/".to_string())
}

fn is_safe(gateway: &Gateway, rd: &str) -> bool {
    if rd.chars().any(|c| c.is_control() || c == '\\') {
        return false;
    }
    if rd.starts_with('/') {
        // `//evil.example` is a scheme-relative URL to another host.
        return !rd.starts_with("//");
    }
    let Ok(url) = url::Url::parse(rd) else {
        return false;
    };
    let shares_the_cookie =
        |host: &str| gateway.config.session.cookie_domain.as_deref().is_none_or(|domain| crate::config::domain_matches(host, domain));
    matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.host_str().is_some_and(|host| gateway.is_known_host(host) && shares_the_cookie(host))
}

/// The query parameter `rd`, if present.
pub fn rd_param(uri: &http::Uri) -> Option<String> {
    query_param(uri, "rd")
}

/// The first value of a query parameter.
pub fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}
