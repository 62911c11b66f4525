//! CSRF tokens: an HMAC of the session (or, before sign-in, of a
//! pre-session cookie), checked on every POST.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::crypto::random_token;
use crate::gateway::Gateway;
use crate::session::Session;

/// What a form's token is bound to.
pub enum Binding<'a> {
    Session(&'a Session),
    PreSession(&'a str),
}

impl Binding<'_> {
    fn value(&self) -> String {
        match self {
            Binding::Session(s) => format!("session:{}", URL_SAFE_NO_PAD.encode(s.key)),
            Binding::PreSession(id) => format!("pre:{id}"),
        }
    }
}

const PURPOSE: &str = "csrf";

pub fn token(gateway: &Gateway, binding: Binding<'_>) -> String {
    gateway.secrets.mac(PURPOSE, &binding.value())
}

pub fn is_valid(gateway: &Gateway, binding: Binding<'_>, token: &str) -> bool {
    !token.is_empty() && gateway.secrets.mac_is_valid(PURPOSE, &binding.value(), token)
}

fn pre_session_cookie_name(gateway: &Gateway) -> String {
    format!("{}_pre", gateway.sessions.cookie_name())
}

/// The pre-session id from the cookie, if it looks like one we issued.
pub fn pre_session(gateway: &Gateway, jar: &CookieJar) -> Option<String> {
    jar.get(&pre_session_cookie_name(gateway))
        .map(|c| c.value().to_string())
        .filter(|v| v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// The pre-session id, issuing a cookie for a new one when needed.
pub fn ensure_pre_session(gateway: &Gateway, jar: CookieJar, tls: bool) -> (CookieJar, String) {
    if let Some(id) = pre_session(gateway, &jar) {
        return (jar, id);
    }
    let id = random_token();
    let cookie = Cookie::build((pre_session_cookie_name(gateway), id.clone()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(tls)
        .path("/.stepgate/")
        .build();
    (jar.add(cookie), id)
}
