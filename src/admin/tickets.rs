//! Enrolment tickets over the API: made for one user, listed, withdrawn.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::api::{TicketCreated, TicketInfo, TicketRequest};
use super::auth::{Caller, Scope};
use super::problem::{Problem, Problems};
use super::AdminState;
use crate::audit::{Event, Kind, Outcome};
use crate::gateway::Gateway;
use crate::tickets::{DEFAULT_LIFETIME_SECS, MAX_LIFETIME_SECS};

/// A one-time link that lets the user, after the password, enrol a factor
/// that also passes the second factor, without a factor they lost.
#[utoipa::path(post, path = "/v1/users/{user}/tickets", tag = "users", params(("user" = String, Path)), request_body = TicketRequest,
    responses((status = 201, body = TicketCreated), Problems), security(("token" = ["tickets:write"])))]
pub async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<TicketRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TicketCreated>), Problem> {
    caller.require(Scope::TicketsWrite)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    let Json(request) = body?;
    let lifetime = request.lifetime.unwrap_or(DEFAULT_LIFETIME_SECS);
    if !(60..=MAX_LIFETIME_SECS).contains(&lifetime) {
        return Err(Problem::bad_request(format!("lifetime is 60 to {MAX_LIFETIME_SECS} seconds")));
    }
    let origin = request.base_url.as_deref().map(|base| app_origin(&gateway, base)).transpose()?;
    let ticket = gateway.tickets.create(&user.username, lifetime, &caller.name).await.map_err(|e| match e {
        crate::tickets::TicketError::Store(e) => Problem::from(e),
        crate::tickets::TicketError::Cache(e) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    })?;
    let event = Event::new(Kind::TicketCreated, Outcome::Success).about(&user.username, &caller.name);
    gateway.audit.record(event.detail("ticket", ticket.id).detail("expires", ticket.expires)).await;
    let url = origin.map(|origin| format!("{origin}{}", ticket.link));
    Ok((StatusCode::CREATED, Json(TicketCreated { id: ticket.id, link: ticket.link, url, expires: ticket.expires })))
}

/// `base` as an origin (scheme, host, port) of one of the apps' hosts.
fn app_origin(gateway: &Gateway, base: &str) -> Result<String, Problem> {
    let refused = || Problem::bad_request("base_url must be an http(s) origin of one of the apps' hosts, e.g. https://app.example.com");
    let url = url::Url::parse(base).map_err(|_| refused())?;
    let origin_only = matches!(url.scheme(), "http" | "https") && url.path() == "/" && url.query().is_none() && url.username().is_empty();
    match url.host_str() {
        Some(host) if origin_only && gateway.is_known_host(host) => Ok(url.origin().ascii_serialization()),
        _ => Err(refused()),
    }
}

/// The user's tickets, newest first.
#[utoipa::path(get, path = "/v1/users/{user}/tickets", tag = "users", params(("user" = String, Path)),
    responses((status = 200, body = Vec<TicketInfo>), Problems), security(("token" = ["users:read"])))]
pub async fn list(State(state): State<AdminState>, caller: Caller, Path(name): Path<String>) -> Result<Json<Vec<TicketInfo>>, Problem> {
    caller.require(Scope::UsersRead)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    let tickets = gateway.store.tickets_of(&user.username).await?;
    let listed = tickets
        .into_iter()
        .map(|t| TicketInfo { id: t.id, created: t.created, expires: t.expires, used_at: t.used_at, created_by: t.created_by })
        .collect();
    Ok(Json(listed))
}

/// Withdraws a ticket; its link stops working at once.
#[utoipa::path(delete, path = "/v1/users/{user}/tickets/{ticket}", tag = "users",
    params(("user" = String, Path), ("ticket" = i64, Path)),
    responses((status = 204, description = "Withdrawn"), Problems), security(("token" = ["tickets:write"])))]
pub async fn revoke(State(state): State<AdminState>, caller: Caller, Path((name, id)): Path<(String, i64)>) -> Result<StatusCode, Problem> {
    caller.require(Scope::TicketsWrite)?;
    let gateway = state.live.current();
    let user = caller.user(&gateway.users, &name).await?;
    if !gateway.store.revoke_ticket(&user.username, id).await? {
        return Err(Problem::not_found("The user has no such ticket."));
    }
    let event = Event::new(Kind::TicketRevoked, Outcome::Success).about(&user.username, &caller.name).detail("ticket", id);
    gateway.audit.record(event).await;
    Ok(StatusCode::NO_CONTENT)
}
