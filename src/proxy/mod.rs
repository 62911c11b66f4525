//! The pingora glue: one `ProxyHttp` whose phases each do one thing. It
//! asks the policy what to do and carries the answer out; it decides nothing.

mod answers;
pub mod authz_listener;
pub mod connections;
mod decision;
mod forward_auth;
pub mod forwarding;
mod portal_bridge;
mod responses;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::edge::{self, Canonical, EdgeError};
use crate::gateway::{App, Gateway};
use crate::geo::GeoFacts;
use crate::live::LiveGateway;
use crate::policy::{self, Decision, DenyReason};
use crate::upstreams::{Pick, Tried};
use crate::users::User;

/// How long the rest of a refused or failed request is read before the
/// connection closes: closing on unread bytes resets it, which can destroy
/// the answer before the client reads it.
pub(super) const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The health checks say no upstream of the app can take a request.
const ALL_UPSTREAMS_DOWN: ErrorType = ErrorType::HTTPStatus(503);

pub struct GatewayProxy {
    live: Arc<LiveGateway>,
    portal: axum::Router,
    connections: Arc<connections::Connections>,
}

impl GatewayProxy {
    pub fn new(live: Arc<LiveGateway>, connections: Arc<connections::Connections>) -> Self {
        Self { live, portal: crate::portal::router(), connections }
    }
}

/// What one request has learned on its way through the phases.
pub struct RequestCtx {
    started: Instant,
    /// Names the request in the access log and on the gateway's error pages,
    /// so a user's report can be matched with its log line.
    id: answers::RequestId,
    /// The gateway as it was when the request arrived, for all its phases.
    gateway: Option<Arc<Gateway>>,
    app: Option<Arc<App>>,
    rule: Option<usize>,
    decision: &'static str,
    /// The rule matched because its `when` expression failed (fail closed).
    condition_failed: bool,
    client_ip: IpAddr,
    tls: bool,
    identity: Option<(Arc<User>, http::HeaderValue)>,
    /// The upstream this attempt goes to, and those tried before it.
    upstream: Option<usize>,
    tried: Tried,
    /// For a forward-auth question, the request it is about: what the
    /// access log shows.
    asked_about: Option<crate::forward_auth::Original>,
}

impl RequestCtx {
    fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            id: answers::RequestId::new(),
            gateway: None,
            app: None,
            rule: None,
            decision: "none",
            condition_failed: false,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            tls: false,
            identity: None,
            upstream: None,
            tried: Tried::default(),
            asked_about: None,
        }
    }

    /// Counts the request in the metrics and writes its access-log line;
    /// `method` and `path` are the request's own, shown unless it was a
    /// forward-auth question, whose original request is shown instead.
    fn log(&self, status: u16, method: &http::Method, path: &str, error: Option<String>) {
        let metrics = crate::metrics::global();
        self.app.as_ref().map_or(&metrics.no_app, |app| &app.metrics).count(self.decision, status);
        let took = self.started.elapsed();
        metrics.request_seconds.observe(took.as_secs_f64());
        let app = self.app.as_ref().map(|a| &*a.id).unwrap_or("-");
        let user = self.identity.as_ref().map(|(u, _)| u.username.as_str()).unwrap_or("-");
        let (method, path) = match &self.asked_about {
            Some(original) => (&original.method, original.uri.path()),
            None => (method, path),
        };
        tracing::info!(
            target: "stepgate::access",
            request_id = %self.id,
            app,
            rule = self.rule.map(|r| r as i64).unwrap_or(-1),
            decision = self.decision,
            condition_failed = self.condition_failed,
            status,
            duration_us = took.as_micros() as u64,
            method = %method,
            path,
            forward_auth = self.asked_about.is_some(),
            client = %self.client_ip,
            user,
            error,
            "request"
        );
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// The request head is in: its connection is busy until the response
    /// is sent, and gets the configured keep-alive timeout.
    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut RequestCtx) -> Result<()> {
        self.connections.request_started(session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let gateway = self.live.current();
        ctx.gateway = Some(gateway.clone());
        if forwarding::header_bytes(session) > gateway.config.server.max_header_bytes.0 {
            ctx.decision = "headers_too_large";
            responses::page(session, &gateway, 431, "Request too large", "The request's headers are too large.").await?;
            return Ok(true);
        }
        if let Some(dialect) = crate::forward_auth::Dialect::of(session.req_header().uri.path()) {
            let header = session.req_header();
            let question = forward_auth::Question {
                peer: forwarding::peer_ip(session),
                method: &header.method,
                uri: &header.uri,
                headers: &header.headers,
            };
            let answer = forward_auth::answer(&gateway, &question, dialect, ctx).await?;
            responses::write(session, &gateway, answer).await?;
            return Ok(true);
        }
        ctx.client_ip = forwarding::client_ip(session, &gateway);
        let header = session.req_header();
        let host = match edge::request_host(&header.uri, &header.headers) {
            Ok(host) => host,
            Err(refusal) => return refuse(session, ctx, &gateway, &refusal).await,
        };
        let Some(app) = host.as_deref().and_then(|host| gateway.app_for_host(host).cloned()) else {
            ctx.decision = "unknown_host";
            responses::page(session, &gateway, 404, "Not found", "No application is served at this address.").await?;
            return Ok(true);
        };
        ctx.app = Some(app.clone());
        ctx.tls = forwarding::is_public_https(session, &gateway, &app);
        let header = session.req_header();
        let canonical = match edge::canonicalise(&header.method, &header.uri, &header.headers, &app.config) {
            Ok(canonical) if header.raw_path_is_utf8() => canonical,
            Ok(_) => return refuse(session, ctx, &gateway, &EdgeError::Path(policy::PathError::NotUtf8)).await,
            Err(refusal) => return refuse(session, ctx, &gateway, &refusal).await,
        };
        let geo = gateway.geo.current().lookup(ctx.client_ip);
        if !decision::within_fence(&gateway, &app, &header.method, &canonical, ctx.client_ip, &geo) {
            ctx.decision = Decision::Deny(DenyReason::Geo).label();
            responses::page(session, &gateway, 403, "Access denied", "This application is not available from your location.").await?;
            return Ok(true);
        }
        if canonical.path.starts_with(crate::portal::PREFIX) {
            ctx.decision = "portal";
            let host = host.unwrap_or_default();
            portal_bridge::serve(session, &self.portal, &gateway, app, host, ctx).await?;
            return Ok(true);
        }
        if !app.config.mode.inline() {
            ctx.decision = "forward_auth_only";
            responses::page(session, &gateway, 404, "Not found", "This application is not served through the gateway.").await?;
            return Ok(true);
        }
        self.apply_policy(session, ctx, &gateway, &app, &canonical, &geo).await
    }

    /// The next healthy upstream this request has not tried yet.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let app = ctx.app.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no app chosen"))?;
        match app.upstreams.pick(ctx.tried) {
            Pick::Upstream(index) => {
                ctx.tried.add(index);
                ctx.upstream = Some(index);
                Ok(Box::new(app.upstreams.peer(index)))
            }
            Pick::AllDown => Error::e_explain(ALL_UPSTREAMS_DOWN, format!("every upstream of app `{}` is down", app.id)),
            Pick::NoneLeft => Error::e_explain(ErrorType::HTTPStatus(502), "every upstream has been tried"),
        }
    }

    /// A connection that could not be made counts against the upstream,
    /// and the request goes to the next one: nothing of it was sent yet.
    fn fail_to_connect(&self, _session: &mut Session, _peer: &HttpPeer, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        if let (Some(app), Some(index)) = (&ctx.app, ctx.upstream) {
            app.upstreams.connection_failed(index);
            e.set_retry(app.upstreams.has_untried(ctx.tried));
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(app), Some(index)) = (&ctx.app, ctx.upstream) {
            app.upstreams.connected(index);
        }
        Ok(())
    }

    /// A request that reached an upstream is sent again, to the next one,
    /// only when doing so cannot repeat an effect: a GET, HEAD or OPTIONS
    /// without a body, whose connection broke before any of the answer
    /// reached the client. A timed-out upstream is not asked twice.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let resendable = matches!(session.req_header().method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
            && session.as_mut().is_body_empty()
            && session.response_written().is_none()
            && !session.as_ref().retry_buffer_truncated();
        let broken = matches!(e.etype(), ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError);
        let untried = ctx.app.as_ref().is_some_and(|app| app.upstreams.has_untried(ctx.tried));
        match resendable {
            // pingora's own rule first: a pooled connection the upstream
            // had closed is tried again, with a fresh one. That says nothing
            // about the upstream, which may be asked again.
            true => {
                e.retry.decide_reuse(client_reused);
                if e.retry() {
                    if let Some(index) = ctx.upstream {
                        ctx.tried.remove(index);
                    }
                } else if broken && untried {
                    e.set_retry(true);
                }
            }
            false => e.set_retry(false),
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(gateway) = ctx.gateway.clone() else {
            return Error::e_explain(ErrorType::InternalError, "request without a gateway");
        };
        let Some(app) = ctx.app.clone() else {
            return Error::e_explain(ErrorType::InternalError, "request without an app");
        };
        forwarding::strip_client_headers(upstream_request, &gateway, &app);
        forwarding::strip_gateway_cookies(upstream_request, &gateway)?;
        forwarding::set_forwarded(session, upstream_request, &gateway, ctx.client_ip, ctx.tls)?;
        if let Some((user, token)) = &ctx.identity {
            forwarding::add_identity(upstream_request, &app, user, token)?;
        }
        Ok(())
    }

    /// With `server.server_header` set, the app's answers carry it too.
    async fn response_filter(&self, _session: &mut Session, response: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        if let Some(server) = ctx.gateway.as_ref().and_then(|g| g.config.server.server_header.as_ref()) {
            response.insert_header(http::header::SERVER, &server.0)?;
        }
        Ok(())
    }

    /// A client that hangs up mid-request is routine, not an error; the
    /// access line still records it.
    /// Every upstream being down is logged once, by its health check.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        let client_gone = *error.esource() == ErrorSource::Downstream
            && matches!(error.etype(), ErrorType::ConnectionClosed | ErrorType::ReadTimedout | ErrorType::WriteTimedout);
        client_gone || *error.etype() == ALL_UPSTREAMS_DOWN
    }

    /// A request that could not be proxied gets the gateway's own page (or
    /// problem document), never pingora's bare one with its `Server` header.
    /// pingora closes the client's connection after a failure, so the answer
    /// says `Connection: close`, and the rest of the request body is read
    /// before the close: closing on unread data resets the connection,
    /// which can destroy the answer before the client reads it.
    async fn fail_to_proxy(&self, session: &mut Session, error: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let status = responses::status_for_failure(error);
        if let Some(app) = &ctx.app {
            app.metrics.upstream_errors.inc();
        }
        if status > 0 && session.response_written().is_none() {
            session.set_keepalive(None);
            let gateway = ctx.gateway.clone().unwrap_or_else(|| self.live.current());
            if let Err(e) = responses::proxy_failure(session, &gateway, status, &ctx.id).await {
                tracing::debug!(error = %e, "could not answer a failed request");
            }
            if !session.as_mut().is_body_done() {
                let _ = tokio::time::timeout(LINGER, session.as_mut().drain_request_body()).await;
            }
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let header = session.req_header();
        ctx.log(status, &header.method, header.uri.path(), error.map(|e| e.to_string()));
    }
}

impl GatewayProxy {
    /// Looks up the session, asks the policy and answers for it; true means
    /// the response is written and the request ends here.
    async fn apply_policy(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        gateway: &Gateway,
        app: &Arc<App>,
        canonical: &Canonical,
        geo: &GeoFacts,
    ) -> Result<bool> {
        let header = session.req_header();
        let signed_in = match decision::signed_in_user(gateway, &header.headers, ctx.tls).await {
            Ok(found) => found,
            Err(e) => {
                // An outage is logged once, by the backend probe.
                match e.is_outage() {
                    true => tracing::debug!(error = %e, "session store unavailable"),
                    false => tracing::error!(error = %e, "session store unavailable"),
                }
                ctx.decision = "store_unavailable";
                responses::unavailable(session, gateway, &ctx.id).await?;
                return Ok(true);
            }
        };
        let header = session.req_header();
        let asked = decision::Asked {
            method: &header.method,
            canonical,
            query: header.uri.query(),
            headers: &header.headers,
            ip: ctx.client_ip,
            geo,
        };
        let outcome = decision::decide(gateway, app, &asked, signed_in.as_ref());
        ctx.rule = outcome.rule;
        ctx.decision = outcome.decision.label();
        ctx.condition_failed = outcome.condition_failed;
        match outcome.decision {
            Decision::Allow { with_identity } => {
                if let (true, Some((gw_session, user))) = (with_identity, signed_in) {
                    match gateway.assertions.token_for(&gw_session, &user, &app.id) {
                        Ok(token) => ctx.identity = Some((user, token)),
                        // Without its assertion the request would reach the
                        // app as nobody: refuse it instead.
                        Err(e) => {
                            tracing::error!(error = %e, "cannot sign an assertion");
                            ctx.decision = "assertion_unavailable";
                            responses::page(session, gateway, 503, "Temporarily unavailable", "Please try again shortly.").await?;
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            }
            Decision::SignIn | Decision::SecondFactor(_) => {
                let header = session.req_header();
                let challenged = answers::Challenged {
                    method: header.method.clone(),
                    headers: header.headers.clone(),
                    url: responses::original_url(session, ctx.tls),
                };
                responses::challenge(session, gateway, &challenged, outcome.decision).await?;
                Ok(true)
            }
            Decision::Deny(DenyReason::Geo) => {
                responses::page(session, gateway, 403, "Access denied", "This application is not available from your location.").await?;
                Ok(true)
            }
            Decision::Deny(_) => {
                responses::page(session, gateway, 403, "Access denied", "You are not allowed to open this page.").await?;
                Ok(true)
            }
        }
    }
}

/// Answers 400 for a request that cannot be read one way only, and says
/// why in the access log.
async fn refuse(session: &mut Session, ctx: &mut RequestCtx, gateway: &Gateway, refusal: &EdgeError) -> Result<bool> {
    ctx.decision = refusal.label();
    responses::page(session, gateway, 400, "Bad request", "This request is malformed.").await?;
    Ok(true)
}
