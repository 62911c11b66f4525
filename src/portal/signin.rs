//! The first factor: user name and password.

use axum::extract::rejection::FormRejection;
use axum::extract::Extension;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Form;
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::assess::assess_sign_in;
use super::csrf::{self, Binding};
use super::device;
use super::pages::{html, SigninPage};
use super::redirect::{rd_param, safe_return_to};
use super::{bad_form, csrf_refused, current_session, see_other, too_many_attempts, Failure, PortalRequest, PortalState};
use crate::session::Factor;

/// Longer inputs are refused before the (deliberately slow) hash runs.
const MAX_USERNAME: usize = 128;
const MAX_PASSWORD: usize = 1024;

#[derive(Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
    #[serde(default)]
    rd: String,
}

pub async fn show(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    uri: Uri,
) -> Result<Response, Failure> {
    let rd = safe_return_to(&gateway, rd_param(&uri).as_deref());
    if current_session(&gateway, &jar).await.map_err(|e| Failure(gateway.clone(), e))?.is_some() {
        return Ok(see_other(&rd));
    }
    let (jar, pre) = csrf::ensure_pre_session(&gateway, jar, request.tls);
    let page = SigninPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(&gateway, Binding::PreSession(&pre)),
        rd,
        username: String::new(),
        error: None,
        passwordless: gateway.webauthn.passwordless_offered(),
    };
    Ok((jar, html(StatusCode::OK, &page)).into_response())
}

pub async fn submit(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<SigninForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let Ok(Form(form)) = form else {
        return Ok(bad_form(&gateway));
    };
    let Some(pre) = csrf::pre_session(&gateway, &jar) else {
        return Ok(csrf_refused(&gateway));
    };
    if !csrf::is_valid(&gateway, Binding::PreSession(&pre), &form.csrf) {
        return Ok(csrf_refused(&gateway));
    }
    let rd = safe_return_to(&gateway, Some(&form.rd));
    let username = form.username.trim().to_string();
    let (user_key, address_key) = (format!("user:{username}"), format!("ip:{}", request.client_ip));
    let blocked = gateway.password_throttle.retry_after(&[&user_key]).or(gateway.address_throttle.retry_after(&[&address_key]));
    if let Some(retry_after) = blocked {
        tracing::warn!(event = "password", outcome = "throttled", user = %username, ip = %request.client_ip, "authentication");
        return Ok(too_many_attempts(&gateway, retry_after));
    }
    let user = if username.len() > MAX_USERNAME || form.password.len() > MAX_PASSWORD {
        None
    } else {
        let checker = gateway.clone();
        let (name, password) = (username.clone(), form.password);
        tokio::task::spawn_blocking(move || checker.users.authenticate(&name, &password)).await.map_err(|e| fail(e.into()))?
    };
    let Some(user) = user else {
        gateway.password_throttle.record_failure(&[&user_key]);
        gateway.address_throttle.record_failure(&[&address_key]);
        tracing::info!(event = "password", outcome = "failure", user = %username, ip = %request.client_ip, "authentication");
        let page = SigninPage {
            brand: &gateway.config.branding,
            csrf: csrf::token(&gateway, Binding::PreSession(&pre)),
            rd,
            username,
            error: Some("Wrong user name or password."),
            passwordless: gateway.webauthn.passwordless_offered(),
        };
        return Ok(html(StatusCode::UNAUTHORIZED, &page));
    };
    if let Some(previous) = current_session(&gateway, &jar).await.map_err(fail)? {
        gateway.sessions.delete(&previous.key).await.map_err(|e| fail(e.into()))?;
    }
    gateway.password_throttle.reset(&user_key);
    let (jar, device) = device::ensure_device(&gateway, jar, request.tls);
    let context = assess_sign_in(&gateway, &user.username, request.client_ip, &device).await.map_err(|e| fail(e.into()))?;
    tracing::info!(
        event = "password",
        outcome = "success",
        user = %user.username,
        ip = %request.client_ip,
        country = context.country.as_deref().unwrap_or("-"),
        confidence = ?context.assessment.confidence,
        signals = ?context.assessment.signals,
        "authentication"
    );
    let (id, _) = gateway.sessions.create(&user.username, Factor::Pwd, context).await.map_err(|e| fail(e.into()))?;
    let jar = jar.add(gateway.sessions.cookie(id, request.tls));
    Ok((jar, see_other(&rd)).into_response())
}
