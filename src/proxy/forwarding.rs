//! What the proxy reads from a client request and what it changes before
//! the request reaches an app: client address, scheme, cookies, identity
//! and forwarding headers.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::config::{HeaderUnderscores, MethodOverride};
use crate::edge;
use crate::gateway::{canonical_ip, App, Gateway};
use crate::users::User;

pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The size of the request line and headers, roughly as sent.
pub fn header_bytes(session: &Session) -> usize {
    let header = session.req_header();
    head_bytes(header.raw_path().len(), &header.headers)
}

/// [`header_bytes`] of a request target's length and header lines.
pub fn head_bytes(target_len: usize, headers: &HeaderMap) -> usize {
    let fields: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    target_len + fields
}

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the right-most address in `X-Forwarded-For` that is not a trusted proxy.
pub fn client_ip(session: &Session, gateway: &Gateway) -> IpAddr {
    let forwarded = session.req_header().headers.get_all("x-forwarded-for");
    forwarded_client(peer_ip(session), forwarded, |ip| gateway.is_trusted_proxy(ip))
}

/// The address of the connection's other end (canonical: see [`canonical_ip`]).
pub fn peer_ip(session: &Session) -> IpAddr {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| canonical_ip(a.ip())).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// [`client_ip`] from the peer's address (canonical: see [`canonical_ip`])
/// and the `X-Forwarded-For` lines.
pub fn forwarded_client<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a HeaderValue>,
    is_trusted_proxy: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    if !is_trusted_proxy(peer) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<&str> = forwarded_for.into_iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = canonical_ip(ip);
        if !is_trusted_proxy(client) {
            break;
        }
    }
    client
}

/// The host and port as the client wrote them, for building URLs back to it.
pub fn request_authority(session: &Session) -> Option<String> {
    let header = session.req_header();
    authority_value(&header.headers, &header.uri).and_then(|value| value.to_str().ok().map(str::to_string))
}

/// The value of the first cookie called `name` in the `Cookie` lines,
/// borrowed from the line it is in. Read as the `cookie` crate splits a
/// `Cookie` header (pairs split at `;`, name and value trimmed), without
/// building a cookie per pair: this runs on every request.
pub fn find_cookie<'a>(cookie_lines: impl IntoIterator<Item = &'a HeaderValue>, name: &str) -> Option<&'a str> {
    cookie_lines.into_iter().filter_map(|v| v.to_str().ok()).flat_map(|line| line.split(';')).find_map(|pair| {
        let (found, value) = pair.split_once('=')?;
        (found.trim() == name).then(|| value.trim())
    })
}

/// Whether users reach this request's app over https: the connection is
/// TLS, a trusted proxy in front says so in `X-Forwarded-Proto`, or the
/// app's `public_url` does. Cookies are `Secure` and links `https` then.
pub fn is_public_https(session: &Session, gateway: &Gateway, app: &App) -> bool {
    if is_tls(session) || app.config.public_https() == Some(true) {
        return true;
    }
    let header = session.req_header();
    is_from_trusted_proxy(session, gateway)
        && header
            .headers
            .get_all("x-forwarded-proto")
            .iter()
            .next_back()
            .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn is_from_trusted_proxy(session: &Session, gateway: &Gateway) -> bool {
    let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| canonical_ip(a.ip()));
    peer.is_some_and(|peer| gateway.is_trusted_proxy(peer))
}

/// Removes what a client may not say to an app: the headers the gateway
/// sets (identity, `X-Forwarded-*`, `X-Real-IP`) under any spelling a
/// server could read as them (`Remote_User`), the other forwarding
/// headers (`Forwarded`, `True-Client-IP`, `X-Original-URL`...), method
/// overrides unless the app honours them, and, when the app says so,
/// every header name with an underscore.
pub fn strip_client_headers(request: &mut RequestHeader, gateway: &Gateway, app: &App) {
    let config = &app.config;
    let ours = |name: &str| {
        gateway.identity_headers.iter().any(|h| edge::reads_as(name, h.as_str()))
            || GATEWAY_SET_HEADERS.iter().chain(edge::FORWARDING_HEADERS.iter()).any(|h| edge::reads_as(name, h))
    };
    let override_header = |name: &str| edge::METHOD_OVERRIDE_HEADERS.iter().any(|h| edge::reads_as(name, h));
    let refused: Vec<http::HeaderName> = request
        .headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            ours(name)
                || (config.method_override == MethodOverride::Strip && override_header(name))
                || (config.header_underscores != HeaderUnderscores::Allow && name.contains('_'))
        })
        .cloned()
        .collect();
    for name in refused {
        request.remove_header(&name);
    }
}

/// Headers the gateway sets on every request it forwards.
const GATEWAY_SET_HEADERS: [&str; 4] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"];

/// Whether a cookie name is one the gateway sets (with or without the
/// `__Host-` prefix): the session cookie, its `_pre` sibling, or one of
/// `others`; compared without case, as some servers do.
fn is_gateway_cookie(name: &[u8], session: &str, others: &[&str]) -> bool {
    let name = name.strip_prefix(b"__Host-").unwrap_or(name);
    let session = session.as_bytes();
    std::iter::once(session).chain(others.iter().map(|other| other.as_bytes())).any(|ours| name.eq_ignore_ascii_case(ours))
        || name.len() == session.len() + 4 && {
            let (base, suffix) = name.split_at(session.len());
            base.eq_ignore_ascii_case(session) && suffix.eq_ignore_ascii_case(b"_pre")
        }
}

/// Keeps the gateway's own cookies (session, pre-session, device,
/// returning-browser and method cookies) away from apps: an app that leaked them would leak
/// sessions and trusted browsers.
pub fn strip_gateway_cookies(request: &mut RequestHeader, gateway: &Gateway) -> Result<()> {
    let Some(kept) = app_cookies(&request.headers, gateway) else {
        return Ok(());
    };
    request.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        request.insert_header(http::header::COOKIE, kept)?;
    }
    Ok(())
}

/// The request's cookies without the gateway's, as one `Cookie` line; None
/// when it holds none of the gateway's (the lines may go on as they are).
pub fn app_cookies(headers: &http::HeaderMap, gateway: &Gateway) -> Option<HeaderValue> {
    let session = gateway.sessions.cookie_name();
    let device = gateway.config.risk.device_cookie_name.0.as_str();
    let others = [device, gateway.returning_cookie_name.as_str(), crate::portal::METHOD_COOKIE];
    without_gateway_cookies(headers, session, &others)
}

/// [`strip_gateway_cookies`] on the `Cookie` lines: None when they hold
/// none of the gateway's cookies, else the other cookies as one line
/// (empty when there are none), their bytes as they were.
pub fn without_gateway_cookies(headers: &http::HeaderMap, session: &str, others: &[&str]) -> Option<HeaderValue> {
    let cookie_lines = || headers.get_all(http::header::COOKIE);
    let ours = |pair: &&[u8]| {
        let name = pair.split(|byte| *byte == b'=').next().unwrap_or_default();
        is_gateway_cookie(name.trim_ascii(), session, others)
    };
    // Looked for first: a request without the gateway's cookies allocates
    // nothing here.
    if !cookie_lines().iter().flat_map(cookie_pairs).any(|pair| ours(&pair)) {
        return None;
    }
    let mut kept = Vec::new();
    for pair in cookie_lines().iter().flat_map(cookie_pairs).filter(|pair| !ours(pair)) {
        if !kept.is_empty() {
            kept.extend_from_slice(b"; ");
        }
        kept.extend_from_slice(pair.trim_ascii());
    }
    // Made of header values' bytes and "; ": a valid value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)).ok()
}

/// The `name=value` pairs of a `Cookie` line, untrimmed.
fn cookie_pairs(line: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    line.as_bytes().split(|byte| *byte == b';')
}

/// `X-Forwarded-For/-Host`: what a trusted proxy said is kept and
/// extended; from anyone else it is replaced. `X-Forwarded-Proto` is the
/// public scheme and `X-Real-IP` the client address as the gateway found
/// them.
pub fn set_forwarded(session: &Session, request: &mut RequestHeader, gateway: &Gateway, client: IpAddr, https: bool) -> Result<()> {
    let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| canonical_ip(a.ip())).unwrap_or(client);
    let trusted = gateway.is_trusted_proxy(peer);
    let sent = &session.req_header().headers;
    let existing = |name: &'static str| trusted.then(|| edge::joined_header(sent, &http::HeaderName::from_static(name))).flatten();
    let peer_value = header_value(ip_text(peer))?;
    let forwarded_for = match existing("x-forwarded-for") {
        Some(chain) => header_value(format!("{chain}, {peer}"))?,
        None => peer_value.clone(),
    };
    let real_ip = match client == peer {
        true => peer_value,
        false => header_value(ip_text(client))?,
    };
    let host = match existing("x-forwarded-host") {
        Some(forwarded) => Some(header_value(forwarded)?),
        None => authority_value(sent, &session.req_header().uri),
    };
    request.insert_header("x-forwarded-for", forwarded_for)?;
    request.insert_header("x-real-ip", real_ip)?;
    request.insert_header("x-forwarded-proto", HeaderValue::from_static(if https { "https" } else { "http" }))?;
    match host {
        Some(host) => request.insert_header("x-forwarded-host", host)?,
        None => {
            request.remove_header("x-forwarded-host");
        }
    }
    Ok(())
}

/// An address as text. IPv4 is written out here: `Ipv4Addr`'s `Display`,
/// which supports padding, costs as much as inserting the header.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// A header value made of text the gateway composed, without copying it.
fn header_value(text: String) -> Result<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).or_err(InvalidHTTPHeader, "not a header value")
}

/// The Host the client sent, as it is (its bytes shared, not copied), or
/// the authority of an absolute-form or HTTP/2 request.
fn authority_value(headers: &http::HeaderMap, uri: &http::Uri) -> Option<HeaderValue> {
    match headers.get(http::header::HOST) {
        Some(host) => host.to_str().is_ok().then(|| host.clone()),
        None => uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

/// The assertion, and for apps that asked for them the plain identity headers.
pub fn add_identity(request: &mut RequestHeader, app: &App, user: &User, token: &HeaderValue) -> Result<()> {
    for (name, value) in identity_headers(app, user, token) {
        request.insert_header(name, value)?;
    }
    Ok(())
}

/// The headers that tell an app who the user is: the assertion, and the
/// plain `Remote-*` ones when the app asked for them. A value that cannot
/// be a header (a name with a line break) is left out, with a warning.
pub fn identity_headers(app: &App, user: &User, token: &HeaderValue) -> Vec<(http::HeaderName, HeaderValue)> {
    let mut headers = vec![(app.assertion_header.clone(), token.clone())];
    if app.config.legacy_headers {
        let groups = user.groups.join(",");
        let values = [user.username.as_str(), user.email.as_str(), groups.as_str(), user.display_name.as_str()];
        for (name, value) in PLAIN_IDENTITY_HEADERS.into_iter().zip(values) {
            match HeaderValue::from_bytes(value.as_bytes()) {
                Ok(value) => headers.push((http::HeaderName::from_static(name), value)),
                Err(_) => tracing::warn!(header = name, user = %user.username, "value cannot be sent as a header"),
            }
        }
    }
    headers
}

/// The unsigned identity headers, for apps that set `legacy_headers`: the
/// user name, email, groups (comma-separated) and display name.
pub const PLAIN_IDENTITY_HEADERS: [&str; 4] = ["remote-user", "remote-email", "remote-groups", "remote-name"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_their_display_form() {
        for octet in 0..=255u8 {
            for ip in [[octet, 0, 0, 1], [10, octet, 255, octet], [255, 255, octet, 9]] {
                let ip = IpAddr::from(ip);
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_text(v6), "2001:db8::1");
    }

    #[test]
    fn a_cookie_is_found_as_the_cookie_crate_reads_it() {
        let lines = [
            "sid=abc",
            "a=1; sid=abc; b=2",
            " sid = abc ;x=y",
            "sidx=1; xsid=2; sid=third",
            "a=1;sid=",
            "sid; a=b",
            "sid=a=b; sid=second",
            "=sid; sid=abc",
            "a=\"q\"; sid=\"quoted\"",
            "nothing here",
            ";;; ; sid=last",
        ];
        for line in lines {
            let value = HeaderValue::from_static(line);
            let by_crate = cookie::Cookie::split_parse(line).filter_map(Result::ok).find(|c| c.name() == "sid").and_then(|c| c.value_raw());
            assert_eq!(find_cookie([&value], "sid"), by_crate, "{line}");
        }
        let two = [HeaderValue::from_static("a=1"), HeaderValue::from_static("sid=in-the-second")];
        assert_eq!(find_cookie(&two, "sid"), Some("in-the-second"));
    }

    proptest::proptest! {
        #[test]
        fn any_cookie_line_reads_as_the_cookie_crate_reads_it(line in "[sid=; \t\"x]{0,24}") {
            let value = HeaderValue::from_str(&line).unwrap();
            let by_crate = cookie::Cookie::split_parse(line.as_str()).filter_map(Result::ok).find(|c| c.name() == "sid").and_then(|c| c.value_raw());
            proptest::prop_assert_eq!(find_cookie([&value], "sid"), by_crate);
        }
    }

    #[test]
    fn the_gateways_cookies_are_taken_out_and_the_rest_kept_byte_for_byte() {
        let others = ["sg_device", "sg_method"];
        let strip = |lines: &[&[u8]]| {
            let mut headers = http::HeaderMap::new();
            for line in lines {
                headers.append(http::header::COOKIE, HeaderValue::from_bytes(line).unwrap());
            }
            without_gateway_cookies(&headers, "sg", &others).map(|kept| kept.as_bytes().to_vec())
        };
        assert_eq!(strip(&[b"theme=dark; lang=en"]), None, "nothing of the gateway's: the lines go on as they are");
        assert_eq!(strip(&[b"theme=dark; sg=s3cret; lang=en"]), Some(b"theme=dark; lang=en".to_vec()));
        assert_eq!(strip(&[b"__Host-SG=1;sg_pre=2", b"SG_DEVICE=3; sg_method=4"]), Some(Vec::new()));
        assert_eq!(strip(&[b"sgx=1; sg_prex=2; xsg=3; sg=4"]), Some(b"sgx=1; sg_prex=2; xsg=3".to_vec()));
        assert_eq!(strip(&[b"name=caf\xc3\xa9\xff", b" sg =1"]), Some(b"name=caf\xc3\xa9\xff".to_vec()), "bytes kept as sent");
    }
}
