//! WebAuthn ceremonies through the real gateway with a software security
//! key (webauthn-authenticator-rs), for tests outside `tests/webauthn.rs`.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use webauthn_authenticator_rs::error::WebauthnCError;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::{AuthenticatorBackend, AuthenticatorBackendHashedClientData, WebauthnAuthenticator};
use webauthn_rs_proto::{
    CreationChallengeResponse, PublicKeyCredential, PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions,
    RegisterPublicKeyCredential, RequestChallengeResponse,
};

use super::{sign_in, Setup, TestGateway, ALICE, ALICE_PASSWORD, DEFAULT_APPS};

pub const ORIGIN: &str = "https://app.test";

/// The default apps with the relying party fixed to the origin the
/// software authenticators present.
pub fn setup(extra: &str) -> Setup {
    let apps = DEFAULT_APPS.replacen(
        "hosts = [\"app.test\"]\nupstreams = [\"http://{upstream}\"]\n",
        "hosts = [\"app.test\"]\nupstreams = [\"http://{upstream}\"]\nwebauthn = { rp_id = \"app.test\", origins = [\"https://app.test\"] }\n",
        1,
    );
    Setup { apps, extra: extra.to_string(), ..Setup::default() }
}

pub fn origin() -> url::Url {
    url::Url::parse(ORIGIN).unwrap()
}

/// The CSRF token a page hands its WebAuthn script.
pub fn data_csrf(page: &str) -> String {
    regex::Regex::new(r#"data-csrf="([^"]+)""#).unwrap().captures(page).unwrap_or_else(|| panic!("no data-csrf in:\n{page}"))[1].to_string()
}

pub async fn page(gw: &TestGateway, client: &reqwest::Client, path: &str) -> String {
    client.get(gw.app(path)).send().await.unwrap().text().await.unwrap()
}

pub async fn post_json(gw: &TestGateway, client: &reqwest::Client, path: &str, csrf: &str, body: &Value) -> reqwest::Response {
    client.post(gw.app(path)).header("x-csrf-token", csrf).json(body).send().await.unwrap()
}

/// Signs in Alice with her password; the session has no second factor.
pub async fn password_session(gw: &TestGateway) -> reqwest::Client {
    let client = gw.browser();
    assert_eq!(sign_in(gw, &client, ALICE, ALICE_PASSWORD, "/").await.status(), 303);
    client
}

/// Registers a security key right after the password, as Alice's first factor.
pub async fn enrol_key<T: AuthenticatorBackend>(gw: &TestGateway, key: &mut WebauthnAuthenticator<T>) {
    let client = password_session(gw).await;
    let csrf = data_csrf(&page(gw, &client, "/.stepgate/second-factor").await);
    let body = json!({ "kind": "security_key", "name": "Test key" });
    let start = post_json(gw, &client, "/.stepgate/webauthn/register/start", &csrf, &body).await;
    assert_eq!(start.status(), 200, "{}", start.text().await.unwrap());
    let options: CreationChallengeResponse = start.json().await.unwrap();
    let credential = key.do_registration(origin(), options).expect("software authenticator registers");
    let finish = post_json(gw, &client, "/.stepgate/webauthn/register/finish", &csrf, &json!({ "credential": credential })).await;
    assert_eq!(finish.status(), 200, "{}", finish.text().await.unwrap());
}

/// Starts an authentication from the second-factor page; returns the
/// options and the page's CSRF token.
pub async fn start_authentication(gw: &TestGateway, client: &reqwest::Client) -> (RequestChallengeResponse, String) {
    let csrf = data_csrf(&page(gw, client, "/.stepgate/second-factor?method=webauthn").await);
    let start = post_json(gw, client, "/.stepgate/webauthn/authenticate/start", &csrf, &json!({})).await;
    assert_eq!(start.status(), 200, "{}", start.text().await.unwrap());
    (start.json().await.unwrap(), csrf)
}

pub async fn finish_authentication(
    gw: &TestGateway,
    client: &reqwest::Client,
    csrf: &str,
    credential: &PublicKeyCredential,
) -> reqwest::Response {
    post_json(gw, client, "/.stepgate/webauthn/authenticate/finish", csrf, &json!({ "credential": credential, "rd": "/" })).await
}

/// A software key whose state the test can copy (to make a clone).
#[derive(Clone)]
pub struct SharedToken(pub Arc<Mutex<SoftToken>>);

impl SharedToken {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(SoftToken::new(false).unwrap().0)))
    }

    /// A second key with this one's state as it is now.
    pub fn copy(&self) -> SoftToken {
        SoftToken::from_cbor(&self.0.lock().unwrap().to_cbor().unwrap()).unwrap()
    }
}

impl AuthenticatorBackendHashedClientData for SharedToken {
    fn perform_register(
        &mut self,
        client_data_hash: Vec<u8>,
        options: PublicKeyCredentialCreationOptions,
        timeout_ms: u32,
    ) -> Result<RegisterPublicKeyCredential, WebauthnCError> {
        AuthenticatorBackendHashedClientData::perform_register(&mut *self.0.lock().unwrap(), client_data_hash, options, timeout_ms)
    }

    fn perform_auth(
        &mut self,
        client_data_hash: Vec<u8>,
        options: PublicKeyCredentialRequestOptions,
        timeout_ms: u32,
    ) -> Result<PublicKeyCredential, WebauthnCError> {
        AuthenticatorBackendHashedClientData::perform_auth(&mut *self.0.lock().unwrap(), client_data_hash, options, timeout_ms)
    }
}
