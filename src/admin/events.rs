//! The audit log, newest first, filtered and paged.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;

use super::api::{AuditEvent, AuditFilter, AuditPage};
use super::auth::{Caller, Scope};
use super::problem::{Problem, Problems};
use super::AdminState;
use crate::store::{AuditQuery, AuditRow};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;

/// Security events. A token limited to groups sees the events about its
/// groups' users only.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditFilter),
    responses((status = 200, body = AuditPage), Problems), security(("token" = ["audit:read"])))]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    filter: Result<Query<AuditFilter>, QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    caller.require(Scope::AuditRead)?;
    let Query(filter) = filter?;
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!("limit is 1 to {MAX_PAGE}")));
    }
    let gateway = state.live.current();
    let within_users =
        caller.is_limited().then(|| gateway.users.all().filter(|user| caller.sees(user)).map(|user| user.username.clone()).collect());
    let query = AuditQuery {
        user: filter.user,
        actor: filter.actor,
        kind: filter.kind.map(|kind| kind.name().to_string()),
        since: filter.since,
        until: filter.until,
        before_id: filter.cursor,
        after_id: filter.after,
        within_users,
        // One more than asked, to know whether another page follows.
        limit: limit + 1,
    };
    let mut rows = gateway.store.audit_events(&query).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more.then(|| rows.last().map(|row| row.id)).flatten();
    Ok(Json(AuditPage { events: rows.into_iter().map(event).collect(), next_cursor }))
}

fn event(row: AuditRow) -> AuditEvent {
    AuditEvent {
        id: row.id,
        at: row.at,
        kind: row.kind,
        outcome: row.outcome,
        user: row.username,
        actor: row.actor,
        ip: row.ip,
        country: row.country,
        app: row.app,
        details: serde_json::from_str(&row.details).unwrap_or_default(),
    }
}
