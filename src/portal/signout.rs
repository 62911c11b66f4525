//! Sign-out: a confirmation page and a POST that ends the session.

use axum::extract::rejection::FormRejection;
use axum::extract::Extension;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::csrf::{self, Binding};
use super::pages::{html, SignedOutPage, SignoutPage};
use super::{audit, bad_form, csrf_refused, current_session, Failure, PortalRequest, PortalState};
use crate::audit::{Event, Kind, Outcome};

#[derive(Deserialize)]
pub struct SignoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn show(Extension(gateway): Extension<PortalState>, jar: CookieJar) -> Result<Response, Failure> {
    let brand = &gateway.config.branding;
    let session = current_session(&gateway, &jar).await.map_err(|e| Failure(gateway.clone(), e))?;
    Ok(match session {
        Some(session) => html(
            StatusCode::OK,
            &SignoutPage { brand, csrf: csrf::token(&gateway, Binding::Session(&session)), username: &session.username },
        ),
        None => html(StatusCode::OK, &SignedOutPage { brand, provider_logout: None }),
    })
}

pub async fn submit(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<SignoutForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let Ok(Form(form)) = form else {
        return Ok(bad_form(&gateway));
    };
    if let Some(session) = current_session(&gateway, &jar).await.map_err(fail)? {
        if !csrf::is_valid(&gateway, Binding::Session(&session), &form.csrf) {
            return Ok(csrf_refused(&gateway));
        }
        gateway.sessions.delete(&session.key).await.map_err(|e| fail(e.into()))?;
        tracing::info!(event = "signout", user = %session.username, ip = %request.client_ip, "authentication");
        audit(&gateway, &request, Event::new(Kind::SignOut, Outcome::Success).by_user(&session.username)).await;
    }
    let jar = jar.add(gateway.sessions.removal_cookie(request.tls));
    // Signed out at the OpenID provider too, which sends the browser back.
    let provider_logout = match gateway.users.oidc_provider() {
        Some(provider) => provider.logout_url().await.map(String::from),
        None => None,
    };
    Ok((jar, html(StatusCode::OK, &SignedOutPage { brand: &gateway.config.branding, provider_logout })).into_response())
}
