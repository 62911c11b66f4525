//! Browsers a user has signed in on before. After a successful sign-in the
//! browser keeps, beside its device cookie, a tag that binds the user name
//! to its device id (a MAC under the gateway's key). A browser with such a
//! tag for the user name it is signing in as gets a password budget of its
//! own, so that guessing elsewhere cannot lock the user out on it (OWASP's
//! device cookies). A tag names no user, and is worth nothing on another
//! browser or for another user.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use super::device;
use crate::config::Config;
use crate::gateway::Gateway;

const PURPOSE: &str = "returning browser";
/// Users remembered per browser: a shared computer has a few.
const MAX_USERS: usize = 4;
/// The length of a tag: a base64 SHA-256 MAC.
const TAG_LEN: usize = 43;
/// Browsers cap cookie lifetimes at 400 days.
const LIFETIME_DAYS: i64 = 400;

/// The device id, when this browser has signed in as `username` before.
pub fn device_of(gateway: &Gateway, jar: &CookieJar, username: &str) -> Option<String> {
    let device = device::device_id(gateway, jar)?;
    let data = tagged(&device, username);
    tags(gateway, jar).any(|tag| gateway.secrets.mac_is_valid(PURPOSE, &data, tag)).then_some(device)
}

/// Adds `username` to the users this browser has signed in as, in front;
/// the one used longest ago goes when there are too many.
pub fn remember(gateway: &Gateway, jar: CookieJar, device: &str, username: &str, tls: bool) -> CookieJar {
    let tag = gateway.secrets.mac(PURPOSE, &tagged(device, username));
    let others = tags(gateway, &jar).filter(|other| *other != tag).take(MAX_USERS - 1);
    let value = std::iter::once(tag.as_str()).chain(others).collect::<Vec<_>>().join(".");
    let cookie = Cookie::build((gateway.returning_cookie_name.clone(), value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(tls)
        // Only the portal reads it; apps never see it.
        .path(super::PREFIX)
        .max_age(cookie::time::Duration::days(LIFETIME_DAYS))
        .build();
    jar.add(cookie)
}

pub fn cookie_name(config: &Config) -> String {
    format!("{}_users", config.risk.device_cookie_name.0)
}

/// The device id is base64 without `:`, so this cannot be read two ways.
fn tagged(device: &str, username: &str) -> String {
    format!("{device}:{username}")
}

/// The well-formed tags the browser sent, at most `MAX_USERS`.
fn tags<'a>(gateway: &Gateway, jar: &'a CookieJar) -> impl Iterator<Item = &'a str> {
    jar.get(&gateway.returning_cookie_name)
        .map_or("", |cookie| cookie.value())
        .split('.')
        .filter(|tag| tag.len() == TAG_LEN && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .take(MAX_USERS)
}
