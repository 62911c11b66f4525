//! The authorizer's answers to a proxy in front (see `crate::forward_auth`):
//! the question read back into the request it is about, then the same edge,
//! fence and decision as a request the gateway proxies; the answer in the
//! proxy's dialect.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::prelude::*;

use super::answers::{self, Answer, Challenged};
use super::decision::{self, Asked, SignedIn};
use super::{forwarding, RequestCtx};
use crate::edge;
use crate::forward_auth::{self, Dialect, Original};
use crate::gateway::{App, Gateway};
use crate::policy::{Decision, DenyReason};

/// A forward-auth question as it arrived: from which address, and its
/// request line and headers.
pub struct Question<'a> {
    pub peer: IpAddr,
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a HeaderMap,
}

/// The answer to a forward-auth question, whichever listener it came on;
/// what was learned about it goes into `ctx`, for the access log.
pub async fn answer(gateway: &Gateway, question: &Question<'_>, dialect: Dialect, ctx: &mut RequestCtx) -> Result<Answer> {
    let peer = question.peer;
    if !gateway.is_trusted_proxy(peer) {
        tracing::warn!(%peer, "a forward-auth question from an address not in server.trusted_proxies: refused");
        return refuse(gateway, question, ctx, 403, "authz_untrusted_peer");
    }
    ctx.client_ip = forwarding::forwarded_client(peer, question.headers.get_all("x-forwarded-for"), |ip| gateway.is_trusted_proxy(ip));
    let original = match forward_auth::read(dialect, question.method, question.uri, question.headers) {
        Ok(original) => original,
        Err(error) => {
            tracing::info!(%peer, %error, "a forward-auth question that cannot be read: refused");
            return refuse(gateway, question, ctx, 400, error.label());
        }
    };
    let Some(app) = gateway.app_for_host(&original.host).cloned() else {
        return refuse(gateway, question, ctx, 403, "authz_unknown_host");
    };
    ctx.app = Some(app.clone());
    if !app.config.mode.forward_auth() {
        tracing::warn!(app = %app.id, "a forward-auth question about an app whose mode is `inline`: refused");
        return refuse(gateway, question, ctx, 403, "authz_inline_app");
    }
    ctx.tls = original.https;
    ctx.asked_about = Some(original.clone());
    decide_and_answer(gateway, question, ctx, &app, &original, dialect).await
}

/// The edge, the fence and the decision for the original request, as
/// `GatewayProxy::request_filter` and `apply_policy` take them inline.
async fn decide_and_answer(
    gateway: &Gateway,
    question: &Question<'_>,
    ctx: &mut RequestCtx,
    app: &Arc<App>,
    original: &Original,
    dialect: Dialect,
) -> Result<Answer> {
    let headers = forward_auth::original_headers(question.headers);
    let canonical = match edge::canonicalise(&original.method, &original.uri, &headers, &app.config) {
        Ok(canonical) => canonical,
        Err(refusal) => return refuse(gateway, question, ctx, 400, refusal.label()),
    };
    let geo = gateway.geo.current().lookup(ctx.client_ip);
    if !decision::within_fence(gateway, app, &original.method, &canonical, ctx.client_ip, &geo) {
        return deny(gateway, question, ctx, dialect, Decision::Deny(DenyReason::Geo));
    }
    // The portal's own pages are open to all; they check what they need.
    if canonical.path.starts_with(crate::portal::PREFIX) {
        ctx.decision = "portal";
        return allow(gateway, question, ctx, app, None);
    }
    let signed_in = match decision::signed_in_user(gateway, &headers, original.https).await {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(error = %e, "session store unavailable");
            ctx.decision = "store_unavailable";
            return answers::unavailable(gateway, question.headers, &ctx.id);
        }
    };
    let asked = Asked {
        method: &original.method,
        canonical: &canonical,
        query: original.uri.query(),
        headers: &headers,
        ip: ctx.client_ip,
        geo: &geo,
    };
    let outcome = decision::decide(gateway, app, &asked, signed_in.as_ref());
    ctx.rule = outcome.rule;
    ctx.decision = outcome.decision.label();
    ctx.condition_failed = outcome.condition_failed;
    match outcome.decision {
        Decision::Allow { with_identity } => {
            let identity = signed_in.filter(|_| with_identity);
            allow(gateway, question, ctx, app, identity.as_ref())
        }
        Decision::SignIn | Decision::SecondFactor(_) => {
            let challenged = Challenged { method: original.method.clone(), headers, url: original.url() };
            match dialect.redirects_itself() {
                true => answers::challenge_for_nginx(gateway, &challenged, outcome.decision, &original.origin()),
                false => answers::challenge(gateway, &challenged, outcome.decision),
            }
        }
        Decision::Deny(_) => deny(gateway, question, ctx, dialect, outcome.decision),
    }
}

/// The allow answer's `Cookie` line for the app: the request's cookies
/// without stepgate's, for a proxy that can put it in place of the
/// browser's (the nginx and HAProxy snippets do), so the app never holds a
/// session. Empty when no other cookie is left.
pub const APP_COOKIE_HEADER: &str = "x-stepgate-cookie";

fn app_cookie_line(headers: &http::HeaderMap, gateway: &Gateway) -> http::HeaderValue {
    forwarding::app_cookies(headers, gateway).unwrap_or_else(|| {
        let lines: Vec<&[u8]> = headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()).collect();
        // Made of the request's own header values: valid as one.
        http::HeaderValue::from_bytes(&lines.join(&b"; "[..])).unwrap_or_else(|_| http::HeaderValue::from_static(""))
    })
}

/// 200, with the user's assertion and (for apps that ask for them) the
/// plain identity headers for the proxy to pass on; never a cookie. Every
/// identity header is named, empty when it does not apply: a proxy that
/// copies them then always replaces the client's own (Caddy 2.6 would
/// pass its placeholder's text for a header the answer lacks).
fn allow(gateway: &Gateway, question: &Question<'_>, ctx: &mut RequestCtx, app: &App, signed_in: Option<&SignedIn>) -> Result<Answer> {
    let mut identity = Vec::new();
    if let Some((gw_session, user)) = signed_in {
        match gateway.assertions.token_for(gw_session, user, &app.id) {
            Ok(token) => {
                identity = forwarding::identity_headers(app, user, &token);
                ctx.identity = Some((user.clone(), token));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an assertion");
                ctx.decision = "assertion_unavailable";
                return answers::page(gateway, 503, "Temporarily unavailable", "Please try again shortly.");
            }
        }
    }
    let mut headers = Vec::with_capacity(8);
    headers.push((http::header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    let named = std::iter::once(app.assertion_header.clone()).chain(IDENTITY_HEADER_NAMES.iter().cloned());
    for name in named {
        let given = identity.iter().find(|(given, _)| *given == name).map(|(_, value)| value.clone());
        headers.push((name, given.unwrap_or_else(|| HeaderValue::from_static(""))));
    }
    headers.push((HeaderName::from_static(APP_COOKIE_HEADER), app_cookie_line(question.headers, gateway)));
    Answer::unrendered(200, headers, Bytes::new())
}

/// [`forwarding::PLAIN_IDENTITY_HEADERS`] as names, parsed once.
static IDENTITY_HEADER_NAMES: std::sync::LazyLock<Vec<HeaderName>> =
    std::sync::LazyLock::new(|| forwarding::PLAIN_IDENTITY_HEADERS.map(HeaderName::from_static).to_vec());

fn deny(gateway: &Gateway, question: &Question<'_>, ctx: &mut RequestCtx, dialect: Dialect, decision: Decision) -> Result<Answer> {
    ctx.decision = decision.label();
    let message = match decision {
        Decision::Deny(DenyReason::Geo) => "This application is not available from your location.",
        _ => "You are not allowed to open this page.",
    };
    match dialect {
        // nginx shows its own 403 page; the body would go nowhere.
        Dialect::Nginx => Answer::rendered(403, Vec::new(), Bytes::new()),
        Dialect::Forward | Dialect::Envoy => {
            answers::page_or_problem(gateway, question.headers, 403, "Access denied", message, None, &ctx.id)
        }
    }
}

/// A question the gateway will not answer: `status` with a problem
/// document, and why in the access log.
fn refuse(gateway: &Gateway, question: &Question<'_>, ctx: &mut RequestCtx, status: u16, why: &'static str) -> Result<Answer> {
    ctx.decision = why;
    let (title, message) = match status {
        400 => ("Bad request", "The forward-auth request is malformed."),
        _ => ("Access denied", "The gateway does not answer this forward-auth request."),
    };
    answers::page_or_problem(gateway, question.headers, status, title, message, None, &ctx.id)
}
