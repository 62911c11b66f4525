//! What the proxy reads from a client request and what it changes before
//! the request reaches an app: client address, host, cookies, identity and
//! `X-Forwarded-*` headers.

use std::net::IpAddr;

use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::gateway::{canonical_ip, App, Gateway};
use crate::users::User;

pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The size of the request line and headers, roughly as sent.
pub fn header_bytes(session: &Session) -> usize {
    let header = session.req_header();
    let fields: usize = header.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    header.raw_path().len() + fields
}

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the right-most address in `X-Forwarded-For` that is not a trusted proxy.
pub fn client_ip(session: &Session, gateway: &Gateway) -> IpAddr {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| canonical_ip(a.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if !gateway.is_trusted_proxy(peer) {
        return peer;
    }
    let mut client = peer;
    let forwarded = session.req_header().headers.get_all("x-forwarded-for");
    let hops: Vec<&str> = forwarded.iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = canonical_ip(ip);
        if !gateway.is_trusted_proxy(client) {
            break;
        }
    }
    client
}

/// The host the client asked for (Host header, or the HTTP/2 authority),
/// lower case and without the port.
pub fn request_host(session: &Session) -> Option<String> {
    let header = session.req_header();
    let raw = match header.headers.get(http::header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => header.uri.authority()?.as_str(),
    };
    Some(strip_port(raw).to_ascii_lowercase())
}

/// The host and port as the client wrote them, for building URLs back to it.
pub fn request_authority(session: &Session) -> Option<String> {
    let header = session.req_header();
    match header.headers.get(http::header::HOST) {
        Some(value) => value.to_str().ok().map(str::to_string),
        None => header.uri.authority().map(|a| a.to_string()),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

/// The value of a cookie in the request, from any `Cookie` header.
pub fn cookie_value(session: &Session, name: &str) -> Option<String> {
    session
        .req_header()
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// Removes every header the gateway itself sets to carry identity, so a
/// client can never pose as a user, on any route.
pub fn strip_identity(request: &mut RequestHeader, gateway: &Gateway) {
    for name in &gateway.identity_headers {
        request.remove_header(name);
    }
}

/// Keeps the gateway's own cookies away from apps: an app that leaked them
/// would leak sessions.
pub fn strip_gateway_cookies(request: &mut RequestHeader, gateway: &Gateway) -> Result<()> {
    let session_cookie = gateway.sessions.cookie_name();
    let pre_session_cookie = format!("{session_cookie}_pre");
    let ours = |pair: &&str| {
        let name = pair.split('=').next().unwrap_or("").trim();
        name == session_cookie || name == pre_session_cookie
    };
    let values: Vec<String> = request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    if !values.iter().any(|v| v.split(';').any(|pair| ours(&pair))) {
        return Ok(());
    }
    let kept: Vec<&str> = values.iter().flat_map(|v| v.split(';')).filter(|pair| !ours(pair)).map(str::trim).collect();
    request.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        request.insert_header(http::header::COOKIE, kept.join("; "))?;
    }
    Ok(())
}

/// `X-Forwarded-For/-Proto/-Host`: what a trusted proxy said is kept and
/// extended; from anyone else it is replaced.
pub fn set_forwarded(session: &Session, request: &mut RequestHeader, gateway: &Gateway, client: IpAddr, tls: bool) -> Result<()> {
    let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| canonical_ip(a.ip())).unwrap_or(client);
    let trusted = gateway.is_trusted_proxy(peer);
    let existing = |name: &str| {
        let values: Vec<&str> = request.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let forwarded_for = match existing("x-forwarded-for").filter(|_| trusted) {
        Some(chain) => format!("{chain}, {peer}"),
        None => peer.to_string(),
    };
    let proto = existing("x-forwarded-proto")
        .filter(|p| trusted && (p == "http" || p == "https"))
        .unwrap_or_else(|| if tls { "https" } else { "http" }.to_string());
    let host = existing("x-forwarded-host").filter(|_| trusted).or_else(|| request_authority(session));
    request.insert_header("x-forwarded-for", forwarded_for)?;
    request.insert_header("x-forwarded-proto", proto)?;
    match host {
        Some(host) => request.insert_header("x-forwarded-host", host)?,
        None => {
            request.remove_header("x-forwarded-host");
        }
    }
    Ok(())
}

/// The assertion, and for apps that asked for them the plain identity headers.
pub fn add_identity(request: &mut RequestHeader, app: &App, user: &User, token: &str) -> Result<()> {
    request.insert_header(app.config.assertion_header.0.clone(), token)?;
    if app.config.legacy_headers {
        let groups = user.groups.join(",");
        for (name, value) in [
            ("remote-user", user.username.as_str()),
            ("remote-email", user.email.as_str()),
            ("remote-groups", groups.as_str()),
            ("remote-name", user.display_name.as_str()),
        ] {
            match http::HeaderValue::from_bytes(value.as_bytes()) {
                Ok(value) => request.insert_header(name, value)?,
                Err(_) => tracing::warn!(header = name, user = %user.username, "value cannot be sent as a header"),
            }
        }
    }
    Ok(())
}
