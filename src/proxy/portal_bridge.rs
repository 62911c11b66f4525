//! Hands a `/.stepgate/` request to the portal router in-process and writes
//! its answer back through pingora.

use std::sync::Arc;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::Session;
use tower::ServiceExt;

use super::answers::Answer;
use super::{responses, RequestCtx};
use crate::gateway::{App, Gateway};
use crate::portal::{PortalRequest, MAX_FORM_BYTES};

/// The portal only renders small pages; this caps what it may buffer.
const MAX_PORTAL_RESPONSE: usize = 1024 * 1024;

pub async fn serve(
    session: &mut Session,
    router: &axum::Router,
    gateway: &Arc<Gateway>,
    app: Arc<App>,
    host: String,
    ctx: &RequestCtx,
) -> Result<()> {
    let Some(body) = read_body(session).await? else {
        return responses::page(session, gateway, 413, "Too large", "This request is larger than any form here.").await;
    };
    let head = session.req_header();
    let mut request = http::Request::builder().method(head.method.clone()).uri(head.uri.clone());
    if let Some(headers) = request.headers_mut() {
        *headers = head.headers.clone();
        present_session_cookie(headers, gateway, ctx.tls);
    }
    let mut request = request.body(Body::from(body)).map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e.to_string()))?;
    request.extensions_mut().insert(PortalRequest { app, host, tls: ctx.tls, client_ip: ctx.client_ip });
    request.extensions_mut().insert(gateway.clone());

    let response = match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let body =
        axum::body::to_bytes(body, MAX_PORTAL_RESPONSE).await.map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))?;
    let headers = parts.headers.into_iter().scan(None, |last, (name, value)| {
        // A name is given once for the lines that follow it.
        if name.is_some() {
            *last = name;
        }
        Some((last.clone()?, value))
    });
    let answer = Answer::rendered(parts.status.as_u16(), headers.collect(), body)?;
    responses::write(session, gateway, answer).await
}

/// The portal reads the session cookie under its plain name. Over https
/// that is the `__Host-` cookie, and a plain one (which any sibling host
/// could have planted) is ignored; over http a `__Host-` one cannot be
/// genuine. (With `cookie_domain` set the plain name is the real one.)
fn present_session_cookie(headers: &mut http::HeaderMap, gateway: &Gateway, https: bool) {
    let plain = gateway.sessions.cookie_name();
    let held = gateway.sessions.cookie_name_for(https);
    if !headers.contains_key(http::header::COOKIE) {
        return;
    }
    let host_prefixed = format!("{}{plain}", crate::session::HOST_PREFIX);
    let is_ours = |name: &str| name == plain || name == host_prefixed;
    // The proxy decided on the first session cookie, as sent: the portal
    // must act on that one too, not a later one, nor one whose name only
    // reads as ours once percent-decoded (as the portal's cookie jar does).
    let mut presented = false;
    let pairs: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter_map(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            if name == held && !presented {
                presented = true;
                return Some(format!("{plain}{}", &pair[name.len()..]));
            }
            let decoded: String = url::form_urlencoded::parse(name.as_bytes()).map(|(k, _)| k.into_owned()).collect();
            (!is_ours(name) && !is_ours(&decoded)).then(|| pair.to_string())
        })
        .collect();
    headers.remove(http::header::COOKIE);
    if let Ok(value) = http::HeaderValue::from_str(&pairs.join("; ")) {
        if !pairs.is_empty() {
            headers.insert(http::header::COOKIE, value);
        }
    }
}

/// The request body, or None when it is larger than any portal form.
async fn read_body(session: &mut Session) -> Result<Option<Bytes>> {
    let declared =
        session.req_header().headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_FORM_BYTES) {
        return Ok(None);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > MAX_FORM_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}
