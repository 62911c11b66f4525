//! The device cookie: a long-lived, signed random id that lets the gateway
//! recognise a browser it has seen complete a second factor.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use crate::crypto::random_token;
use crate::gateway::Gateway;

const PURPOSE: &str = "device";
/// Browsers cap cookie lifetimes at 400 days.
const LIFETIME_DAYS: i64 = 400;

/// The device id from a validly signed cookie.
pub fn device_id(gateway: &Gateway, jar: &CookieJar) -> Option<String> {
    let cookie = jar.get(&gateway.config.risk.device_cookie_name.0)?;
    let (id, mac) = cookie.value().split_once('.')?;
    gateway.secrets.mac_is_valid(PURPOSE, id, mac).then(|| id.to_string())
}

/// The browser's device id, issuing a new signed cookie when it has none.
pub fn ensure_device(gateway: &Gateway, jar: CookieJar, tls: bool) -> (CookieJar, String) {
    if let Some(id) = device_id(gateway, &jar) {
        return (jar, id);
    }
    let id = random_token();
    let value = format!("{id}.{}", gateway.secrets.mac(PURPOSE, &id));
    let cookie = Cookie::build((gateway.config.risk.device_cookie_name.0.clone(), value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(tls)
        .path("/")
        .max_age(cookie::time::Duration::days(LIFETIME_DAYS))
        .build();
    (jar.add(cookie), id)
}
