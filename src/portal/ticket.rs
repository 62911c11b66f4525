//! `/.stepgate/ticket?t=...`: an enrolment ticket, opened by its user.
//! Opening the link shows what it does; only the form's POST spends it, so
//! a mail scanner that follows links cannot use it up.

use axum::extract::rejection::FormRejection;
use axum::extract::Extension;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Form;
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::csrf::{self, Binding};
use super::pages::{html, TicketPage};
use super::redirect::query_param;
use super::{audit, bad_form, csrf_refused, current_session, error_page, see_other, with_return_to, Failure, PortalRequest, PortalState};
use crate::audit::{Event, Kind, Outcome};
use crate::gateway::Gateway;
use crate::tickets::TICKET_PATH;

/// A ticket's secret: 32 bytes in unpadded base64url.
const SECRET_LEN: usize = 43;

#[derive(Deserialize)]
pub struct TicketForm {
    #[serde(default)]
    csrf: String,
    t: String,
}

pub async fn show(Extension(gateway): Extension<PortalState>, jar: CookieJar, uri: Uri) -> Result<Response, Failure> {
    let Some(secret) = query_param(&uri, "t").filter(|t| is_well_formed(t)) else {
        return Ok(broken_link(&gateway));
    };
    let Some(session) = current_session(&gateway, &jar).await.map_err(|e| Failure(gateway.clone(), e))? else {
        // The password first; then back here.
        return Ok(see_other(&with_return_to("/.stepgate/signin", &format!("{TICKET_PATH}?t={secret}"))));
    };
    let page = TicketPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(&gateway, Binding::Session(&session)),
        username: &session.username,
        ticket: &secret,
    };
    Ok(html(StatusCode::OK, &page))
}

pub async fn spend(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<TicketForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let Ok(Form(form)) = form else {
        return Ok(bad_form(&gateway));
    };
    let Some(session) = current_session(&gateway, &jar).await.map_err(fail)? else {
        return Ok(see_other(&with_return_to("/.stepgate/signin", &format!("{TICKET_PATH}?t={}", form.t))));
    };
    if !csrf::is_valid(&gateway, Binding::Session(&session), &form.csrf) {
        return Ok(csrf_refused(&gateway));
    }
    let spent =
        is_well_formed(&form.t) && gateway.tickets.redeem(&form.t, &session.username, &session.key).await.map_err(|e| fail(e.into()))?;
    let outcome = if spent { Outcome::Success } else { Outcome::Failure };
    audit(&gateway, &request, Event::new(Kind::TicketUsed, outcome).by_user(&session.username)).await;
    if !spent {
        let message = "This link has been used, has expired, was withdrawn, or is not for this account. Ask your help desk for a new one.";
        return Ok(error_page(&gateway, StatusCode::GONE, "Link no longer valid", message));
    }
    Ok(see_other(&with_return_to("/.stepgate/second-factor", "/")))
}

fn is_well_formed(secret: &str) -> bool {
    secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn broken_link(gateway: &Gateway) -> Response {
    error_page(gateway, StatusCode::BAD_REQUEST, "Incomplete link", "This link is not complete. Open the whole link from your message.")
}
