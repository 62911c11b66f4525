//! `/metrics`: the Prometheus text format, on the admin listener with a
//! `metrics:read` token, or on `admin.metrics_listen` (loopback only)
//! without one.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::{Caller, Scope};
use super::problem::{Problem, Problems};
use super::AdminState;
use crate::gateway::Gateway;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of this instance.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), Problems),
    security(("token" = ["metrics:read"])))]
pub async fn with_token(State(state): State<AdminState>, caller: Caller) -> Result<Response, Problem> {
    caller.require(Scope::MetricsRead)?;
    if caller.is_limited() {
        return Err(Problem::new(StatusCode::FORBIDDEN, "Metrics cover every user: a token limited to groups cannot read them."));
    }
    Ok(scrape(&state.live.current()).await)
}

pub async fn without_token(State(state): State<AdminState>) -> Response {
    scrape(&state.live.current()).await
}

/// The metrics, with the gauges of state read now.
async fn scrape(gateway: &Gateway) -> Response {
    let seen_since = gateway.clock.now() - gateway.config.session.inactivity;
    let sessions = gateway
        .store
        .count_sessions(seen_since)
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "metrics: cannot count the sessions"))
        .ok();
    let builds: Vec<(String, u64)> = gateway.geo.current().uses().into_iter().map(|file| (file.database_type, file.build_epoch)).collect();
    let text = crate::metrics::global().text(&crate::metrics::State::new(sessions, &builds));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}
