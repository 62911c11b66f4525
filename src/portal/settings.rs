//! The security page: for now the browsers a user trusts to skip adaptive
//! second factors, each revocable.

use axum::extract::rejection::FormRejection;
use axum::extract::Extension;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::csrf::{self, Binding};
use super::pages::{html, SettingsPage, TrustedBrowser};
use super::{bad_form, csrf_refused, current_session, device, see_other, with_return_to, Failure, PortalState};
use crate::gateway::Gateway;
use crate::session::Session;

const PAGE: &str = "/.stepgate/settings";

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    device: String,
}

pub async fn show(Extension(gateway): Extension<PortalState>, jar: CookieJar) -> Result<Response, Failure> {
    let Some(session) = current_session(&gateway, &jar).await.map_err(|e| Failure(gateway.clone(), e))? else {
        return Ok(see_other(&with_return_to("/.stepgate/signin", PAGE)));
    };
    render(&gateway, &session, &jar, None).await
}

pub async fn revoke(
    Extension(gateway): Extension<PortalState>,
    jar: CookieJar,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e: crate::store::StoreError| Failure(gateway.clone(), e.into());
    let Ok(Form(form)) = form else {
        return Ok(bad_form(&gateway));
    };
    let Some(session) = current_session(&gateway, &jar).await.map_err(|e| Failure(gateway.clone(), e))? else {
        return Ok(see_other(&with_return_to("/.stepgate/signin", PAGE)));
    };
    if !csrf::is_valid(&gateway, Binding::Session(&session), &form.csrf) {
        return Ok(csrf_refused(&gateway));
    }
    gateway.store.untrust_device(&session.username, &form.device).await.map_err(fail)?;
    tracing::info!(event = "untrust_browser", user = %session.username, "authentication");
    let session = match device::device_id(&gateway, &jar) {
        Some(current) if current == form.device => gateway.sessions.clear_trust(&session).await.map_err(fail)?,
        _ => session,
    };
    render(&gateway, &session, &jar, Some("That browser is no longer trusted.")).await
}

async fn render(gateway: &PortalState, session: &Session, jar: &CookieJar, notice: Option<&str>) -> Result<Response, Failure> {
    let now = gateway.clock.now();
    let devices = gateway.store.trusted_devices(&session.username, now).await.map_err(|e| Failure(gateway.clone(), e.into()))?;
    let current = device::device_id(gateway, jar);
    let browsers = devices
        .into_iter()
        .map(|d| TrustedBrowser {
            current: current.as_deref() == Some(d.device_id.as_str()),
            short_id: d.device_id.chars().take(8).collect(),
            first_seen: date(gateway, d.first_seen),
            last_seen: date(gateway, d.last_seen),
            trusted_until: date(gateway, d.trusted_until.unwrap_or(now)),
            device_id: d.device_id,
        })
        .collect();
    let page = SettingsPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(gateway, Binding::Session(session)),
        username: &session.username,
        browsers,
        notice,
    };
    Ok(html(StatusCode::OK, &page))
}

/// A date as users read it, in the policy's time zone.
fn date(gateway: &Gateway, at: i64) -> String {
    use chrono::TimeZone;
    gateway
        .config
        .policy
        .time_zone
        .0
        .timestamp_opt(at, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_default()
}
