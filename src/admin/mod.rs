//! The management API, for help desks (B2E) and customers' own
//! administrators (B2B): users and their MFA state, factor removal, MFA
//! reset, recovery codes, sessions, throttles and the audit log. JSON,
//! errors as RFC 9457 problem details, an OpenAPI 3.1 document generated
//! from the handlers at `/openapi.json`.
//!
//! It has a listener of its own (`[admin] listen`), never the public one:
//! apps' users cannot reach it even by name. Every call but the document
//! needs a token (see [`auth`]); the `stepgate admin` commands are a client
//! of this API ([`client`]).

pub mod api;
pub mod auth;
pub mod client;
pub mod commands;
mod events;
mod listener;
mod metrics;
mod problem;
mod text;
mod tickets;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{create_token, NewToken, Scope, TokenError};
pub use problem::Problem;

use crate::config::AdminConfig;
use crate::gateway::StartError;
use crate::live::LiveGateway;

/// Connections waiting to be accepted on an admin listener.
const LISTEN_BACKLOG: u32 = 128;
/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct AdminState {
    live: Arc<LiveGateway>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "stepgate admin API", description = "Users' MFA state, factors, sessions, throttles and the audit log."),
    modifiers(&BearerToken),
    components(schemas(api::ProblemDocument, crate::audit::Kind)),
    tags((name = "users"), (name = "audit"), (name = "metrics"))
)]
struct ApiDoc;

/// Declares the bearer token every operation needs.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("token", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The API's routes with the document that describes them.
fn router(state: AdminState) -> Router {
    let (routes, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(users::list))
        .routes(routes!(users::show))
        .routes(routes!(users::delete_factor))
        .routes(routes!(users::reset_mfa))
        .routes(routes!(users::regenerate_recovery_codes))
        .routes(routes!(users::end_sessions))
        .routes(routes!(users::end_session))
        .routes(routes!(users::lift_user_throttle))
        .routes(routes!(users::lift_address_throttle))
        .routes(routes!(tickets::create, tickets::list))
        .routes(routes!(tickets::revoke))
        .routes(routes!(events::list))
        .routes(routes!(metrics::with_token))
        .split_for_parts();
    let document: Arc<str> = document.to_pretty_json().unwrap_or_default().into();
    routes
        .route("/openapi.json", get(move || openapi_json(document.clone())))
        .fallback(|| async { Problem::not_found("There is nothing here.") })
        .method_not_allowed_fallback(|| async { Problem::new(StatusCode::METHOD_NOT_ALLOWED, "That method is not allowed here.") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(problem::rejections_as_problems))
        .layer(axum::middleware::from_fn(no_store))
        .with_state(state)
}

async fn openapi_json(document: Arc<str>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document.to_string()).into_response()
}

/// Answers hold user data and one-time secrets: no cache keeps them.
async fn no_store(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Only the metrics, without a token: for a Prometheus on the same host.
fn metrics_router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::without_token))
        .fallback(|| async { Problem::not_found("Only /metrics is served here.") })
        .with_state(state)
}

/// The admin listener (and the metrics listener, when configured),
/// serving until dropped.
pub struct AdminServer {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds the admin listener, when `[admin]` configures one, and serves it
/// on the current tokio runtime.
pub fn start(live: Arc<LiveGateway>) -> Result<Option<AdminServer>, StartError> {
    let Some(config) = live.current().config.admin.clone() else {
        return Ok(None);
    };
    let state = AdminState { live };
    let (listener, addr) = bind(config.listen, "admin.listen")?;
    let mut tasks = vec![spawn_server(&config, listener, router(state.clone()))?];
    tracing::info!(%addr, tls = config.tls.is_some(), "admin API listening");
    let mut metrics_addr = None;
    if let Some(listen) = config.metrics_listen {
        let (listener, addr) = bind(listen, "admin.metrics_listen")?;
        let app = metrics_router(state);
        tasks.push(tokio::spawn(async move { log_stop(axum::serve(listener, app).await) }));
        tracing::info!(%addr, "metrics listening");
        metrics_addr = Some(addr);
    }
    Ok(Some(AdminServer { addr, metrics_addr, tasks }))
}

/// A listening socket with `SO_REUSEPORT`: during an upgrade the new
/// process binds the admin port while the old one still serves it, and the
/// kernel hands connections to both until the old one exits. (Linux lets
/// only the same user share a port so.)
fn bind(address: SocketAddr, setting: &str) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let failed = |e: std::io::Error| StartError::Io(format!("{setting} {address}: {e}"));
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(failed)?;
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.set_reuseport(true).map_err(failed)?;
    socket.bind(address).map_err(failed)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}

fn log_stop(served: std::io::Result<()>) {
    if let Err(e) = served {
        tracing::error!(error = %e, "the admin API stopped");
    }
}

fn spawn_server(config: &AdminConfig, listener: tokio::net::TcpListener, app: Router) -> Result<tokio::task::JoinHandle<()>, StartError> {
    Ok(match &config.tls {
        None => tokio::spawn(async move { log_stop(axum::serve(listener, app).await) }),
        Some(tls) => {
            let listener = listener::TlsListener::new(listener, tls)?;
            tokio::spawn(async move { log_stop(axum::serve(listener, app).await) })
        }
    })
}
