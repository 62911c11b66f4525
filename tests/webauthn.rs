//! WebAuthn, recovery codes and the security page, through the real gateway
//! with software authenticators (webauthn-authenticator-rs) standing in for
//! a security key and a platform authenticator.

mod common;

use common::webauthn::{data_csrf, origin, page, password_session, post_json, start_authentication};
use common::*;
use serde_json::{json, Value};
use webauthn_authenticator_rs::error::WebauthnCError;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::{AuthenticatorBackend, AuthenticatorBackendHashedClientData, WebauthnAuthenticator};
use webauthn_rs_proto::{
    CreationChallengeResponse, PublicKeyCredential, PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions,
    RegisterPublicKeyCredential,
};

/// The default apps, with `/admin/` needing WebAuthn and the relying
/// party fixed to the origin the software authenticators present.
fn setup(extra: &str) -> Setup {
    let apps = DEFAULT_APPS
        .replacen(
            "hosts = [\"app.test\"]\nupstreams = [\"http://{upstream}\"]\n",
            "hosts = [\"app.test\"]\nupstreams = [\"http://{upstream}\"]\nwebauthn = { rp_id = \"app.test\", origins = [\"https://app.test\"] }\n",
            1,
        )
        .replacen("path = \"/admin/\"\npolicy = \"two_factor\"", "path = \"/admin/\"\npolicy = \"two_factor\"\nfactors = [\"webauthn\"]", 1);
    Setup { apps, extra: extra.to_string(), ..Setup::default() }
}

/// Registers an authenticator from a page showing the register buttons;
/// returns the finish response.
async fn register<T: AuthenticatorBackend>(
    gw: &TestGateway,
    client: &reqwest::Client,
    authenticator: &mut WebauthnAuthenticator<T>,
    csrf: &str,
    kind: &str,
) -> reqwest::Response {
    let start = post_json(gw, client, "/.stepgate/webauthn/register/start", csrf, &json!({ "kind": kind, "name": "Test key" })).await;
    assert_eq!(start.status(), 200, "{}", start.text().await.unwrap());
    let mut options: CreationChallengeResponse = start.json().await.unwrap();
    if kind == "platform" {
        // The software authenticator cannot claim to be built in; the
        // gateway checks what it answers, not what it was asked to be.
        let selection = options.public_key.authenticator_selection.as_mut().unwrap();
        selection.authenticator_attachment = None;
        selection.resident_key = None;
        selection.require_resident_key = false;
    }
    let credential = authenticator.do_registration(origin(), options).expect("software authenticator registers");
    post_json(gw, client, "/.stepgate/webauthn/register/finish", csrf, &json!({ "credential": credential, "rd": "/admin/" })).await
}

/// Answers the authentication challenge; the sign-in returns to `/admin/`.
async fn finish_authentication(
    gw: &TestGateway,
    client: &reqwest::Client,
    csrf: &str,
    credential: &impl serde::Serialize,
) -> reqwest::Response {
    post_json(gw, client, "/.stepgate/webauthn/authenticate/finish", csrf, &json!({ "credential": credential, "rd": "/admin/" })).await
}

/// A fresh password session that enrols a security key first thing.
async fn enrolled_with_key(gw: &TestGateway) -> (reqwest::Client, WebauthnAuthenticator<SoftToken>) {
    let client = password_session(gw).await;
    let csrf = data_csrf(&page(gw, &client, "/.stepgate/second-factor").await);
    let (token, _ca) = SoftToken::new(false).unwrap();
    let mut key = WebauthnAuthenticator::new(token);
    let finish = register(gw, &client, &mut key, &csrf, "security_key").await;
    assert_eq!(finish.status(), 200, "{}", finish.text().await.unwrap());
    (client, key)
}

async fn credential_count(gw: &TestGateway) -> usize {
    gw.gateway().store.webauthn_credentials(ALICE).await.unwrap().len()
}

#[tokio::test]
async fn a_security_key_enrols_then_signs_in_and_satisfies_a_webauthn_route() {
    let gw = TestGateway::start_with(setup("")).await;
    let (client, mut key) = enrolled_with_key(&gw).await;

    // The first factor ever enrolled brings recovery codes, shown until saved.
    let codes_page = page(&gw, &client, "/.stepgate/recovery-codes?rd=/admin/").await;
    let codes = regex::Regex::new(r"<li><code>([0-9a-z-]+)</code></li>").unwrap().captures_iter(&codes_page).count();
    assert_eq!(codes, 10, "{codes_page}");
    let saved = [("csrf", form_value(&codes_page, "csrf")), ("rd", "/admin/".into())];
    client.post(gw.app("/.stepgate/recovery-codes")).form(&saved).send().await.unwrap();
    let again = client.get(gw.app("/.stepgate/recovery-codes?rd=/admin/")).send().await.unwrap();
    assert_eq!(again.status(), 303, "saved codes are not shown again");

    let admin = client.get(gw.app("/admin/")).send().await.unwrap();
    assert_eq!(admin.status(), 200, "registration proved the key");
    let assertion = gw.upstream.last().headers.get("x-stepgate-assertion").cloned().expect("assertion");
    let claims = decode_claims(assertion.to_str().unwrap());
    let amr: Vec<&str> = claims["amr"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(amr.contains(&"pwd") && amr.contains(&"hwk") && amr.contains(&"mfa"), "{amr:?}");

    // A new browser: password, then the key.
    let client = password_session(&gw).await;
    let admin = client.get(gw.app("/admin/")).send().await.unwrap();
    assert_eq!(admin.status(), 302);
    let location = admin.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("/.stepgate/second-factor?need=security_key%2Cplatform&rd=")
            || location.contains("need=security_key,platform"),
        "{location}"
    );
    let second = page(&gw, &client, "/.stepgate/second-factor").await;
    assert!(second.contains("data-webauthn=\"authenticate\""), "WebAuthn is the default method:\n{second}");
    let (options, csrf) = start_authentication(&gw, &client).await;
    let credential = key.do_authentication(origin(), options).unwrap();
    let finish = finish_authentication(&gw, &client, &csrf, &credential).await;
    assert_eq!(finish.status(), 200, "{}", finish.text().await.unwrap());
    let body: Value = finish.json().await.unwrap();
    assert_eq!(body["redirect"], "/admin/");
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200);

    // The same answer again: its challenge is spent.
    let csrf = form_value(&page(&gw, &client, "/.stepgate/settings").await, "csrf");
    let replay = finish_authentication(&gw, &client, &csrf, &credential).await;
    assert_eq!(replay.status(), 400);
}

fn decode_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn a_totp_user_steps_up_to_webauthn_and_may_enrol_it_after_their_code() {
    let gw = TestGateway::start_with(setup("")).await;
    let client = password_session(&gw).await;
    let secret = enroll_totp(&gw, &client).await;
    // TOTP is done, but /admin/ wants WebAuthn: offered enrolment, since
    // the user just proved their current factor.
    let admin = client.get(gw.app("/admin/")).send().await.unwrap();
    assert_eq!(admin.status(), 302);
    let location = admin.headers()["location"].to_str().unwrap().to_string();
    let offer = page(&gw, &client, &location).await;
    assert!(offer.contains("data-webauthn=\"register\""), "{offer}");

    // Later (the TOTP code is no longer fresh) the user must confirm first.
    gw.clock.advance(600);
    let code = totp::code(&secret, gw.now());
    let confirm = page(&gw, &client, &location).await;
    assert!(confirm.contains("then add one"), "{confirm}");
    assert!(!confirm.contains("data-webauthn=\"register\""));
    let csrf = data_csrf_or_form(&confirm);
    let start = post_json(&gw, &client, "/.stepgate/webauthn/register/start", &csrf, &json!({ "kind": "security_key" })).await;
    assert_eq!(start.status(), 403, "no enrolment without a fresh factor");
    let response = submit_totp(&gw, &client, &code).await;
    assert_eq!(response.status(), 303);
    let offer = page(&gw, &client, &location).await;
    let csrf = data_csrf(&offer);
    let (token, _) = SoftToken::new(false).unwrap();
    let mut key = WebauthnAuthenticator::new(token);
    let finish = register(&gw, &client, &mut key, &csrf, "security_key").await;
    assert_eq!(finish.status(), 200, "{}", finish.text().await.unwrap());
    let body: Value = finish.json().await.unwrap();
    assert_eq!(body["redirect"], "/admin/", "recovery codes came with the first factor, not this one");
    // Adding a key after a code does not pass as the key: it must be used.
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 302);
    let (options, csrf) = start_authentication(&gw, &client).await;
    let credential = key.do_authentication(origin(), options).unwrap();
    assert_eq!(finish_authentication(&gw, &client, &csrf, &credential).await.status(), 200);
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_code_alone_cannot_add_a_key_to_an_account_that_has_one() {
    let gw = TestGateway::start_with(setup("")).await;
    let (_client, _key) = enrolled_with_key(&gw).await;
    let secret = enroll_totp_from_settings(&gw, &password_session(&gw).await).await;
    gw.clock.advance(600);
    // An attacker with the password and one phished app code.
    let attacker = password_session(&gw).await;
    let passed = submit_code(&gw, &attacker, "totp", &totp::code(&secret, gw.now())).await;
    assert_eq!(passed.status(), 303);
    let csrf = form_value(&page(&gw, &attacker, "/.stepgate/settings").await, "csrf");
    let start = post_json(&gw, &attacker, "/.stepgate/webauthn/register/start", &csrf, &json!({ "kind": "security_key" })).await;
    assert_eq!(start.status(), 403, "adding a key needs the key (or a recovery code)");
}

fn data_csrf_or_form(page: &str) -> String {
    regex::Regex::new(r#"data-csrf="([^"]+)""#)
        .unwrap()
        .captures(page)
        .map(|c| c[1].to_string())
        .unwrap_or_else(|| form_value(page, "csrf"))
}

#[tokio::test]
async fn a_platform_authenticator_must_verify_the_user() {
    let gw = TestGateway::start_with(setup("")).await;
    let client = password_session(&gw).await;
    let csrf = data_csrf(&page(&gw, &client, "/.stepgate/second-factor").await);
    // An authenticator that does not verify its user is refused as a platform one.
    let start = post_json(&gw, &client, "/.stepgate/webauthn/register/start", &csrf, &json!({ "kind": "platform" })).await;
    let mut options: CreationChallengeResponse = start.json().await.unwrap();
    let selection = options.public_key.authenticator_selection.as_mut().unwrap();
    assert_eq!(selection.authenticator_attachment, Some(webauthn_rs_proto::AuthenticatorAttachment::Platform));
    assert_eq!(selection.user_verification, webauthn_rs_proto::UserVerificationPolicy::Required);
    // An authenticator that skips verification anyway is refused.
    selection.authenticator_attachment = None;
    selection.user_verification = webauthn_rs_proto::UserVerificationPolicy::Discouraged_DO_NOT_USE;
    let mut unverified = WebauthnAuthenticator::new(SoftPasskey::new(false));
    let credential = unverified.do_registration(origin(), options).unwrap();
    let refused = post_json(&gw, &client, "/.stepgate/webauthn/register/finish", &csrf, &json!({ "credential": credential })).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(credential_count(&gw).await, 0);
    let mut verified = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let accepted = register(&gw, &client, &mut verified, &csrf, "platform").await;
    assert_eq!(accepted.status(), 200, "{}", accepted.text().await.unwrap());
    let rows = gw.gateway().store.webauthn_credentials(ALICE).await.unwrap();
    assert_eq!(rows[0].kind, "platform");
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
    let claims = decode_claims(gw.upstream.last().headers.get("x-stepgate-assertion").unwrap().to_str().unwrap());
    assert!(claims["amr"].as_array().unwrap().contains(&json!("user")), "{claims}");
}

#[tokio::test]
async fn wrong_origin_and_wrong_rp_id_are_refused() {
    let gw = TestGateway::start_with(setup("")).await;
    // Registration from another origin stores nothing.
    let client = password_session(&gw).await;
    let csrf = data_csrf(&page(&gw, &client, "/.stepgate/second-factor").await);
    let start = post_json(&gw, &client, "/.stepgate/webauthn/register/start", &csrf, &json!({ "kind": "security_key" })).await;
    let options: CreationChallengeResponse = start.json().await.unwrap();
    let mut key = WebauthnAuthenticator::new(SoftToken::new(false).unwrap().0);
    let evil = url::Url::parse("https://app.test.evil.example").unwrap();
    let mut options_for_evil = options.clone();
    options_for_evil.public_key.rp.id = "app.test.evil.example".into();
    let credential = key.do_registration(evil, options_for_evil).unwrap();
    let finish = post_json(&gw, &client, "/.stepgate/webauthn/register/finish", &csrf, &json!({ "credential": credential })).await;
    assert_eq!(finish.status(), 400);
    assert_eq!(credential_count(&gw).await, 0);

    let (client, mut key) = enrolled_with_key(&gw).await;
    drop(client);
    let client = password_session(&gw).await;
    // Right RP id, wrong origin.
    let (options, csrf) = start_authentication(&gw, &client).await;
    let wrong_origin = key.do_authentication(url::Url::parse("https://other.app.test").unwrap(), options).unwrap();
    assert_eq!(finish_authentication(&gw, &client, &csrf, &wrong_origin).await.status(), 400);
    // Another RP id: the authenticator signs for a different site.
    let (mut options, csrf) = start_authentication(&gw, &client).await;
    options.public_key.rp_id = "test".into();
    let wrong_rp = key.do_authentication(url::Url::parse("https://app.test").unwrap(), options);
    if let Ok(wrong_rp) = wrong_rp {
        assert_eq!(finish_authentication(&gw, &client, &csrf, &wrong_rp).await.status(), 400);
    }
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 302, "still not through");
}

#[tokio::test]
async fn a_counter_that_goes_backwards_is_refused_and_flagged() {
    let gw = TestGateway::start_with(setup("")).await;
    let client = password_session(&gw).await;
    let csrf = data_csrf(&page(&gw, &client, "/.stepgate/second-factor").await);
    let token = SharedToken(std::sync::Arc::new(std::sync::Mutex::new(SoftToken::new(false).unwrap().0)));
    let mut key = WebauthnAuthenticator::new(token.clone());
    assert_eq!(register(&gw, &client, &mut key, &csrf, "security_key").await.status(), 200);

    // Copy the key's state now, use the original twice, then the copy.
    let snapshot = token.0.lock().unwrap().to_cbor().unwrap();
    for _ in 0..2 {
        let client = password_session(&gw).await;
        let (options, csrf) = start_authentication(&gw, &client).await;
        let credential = key.do_authentication(origin(), options).unwrap();
        assert_eq!(finish_authentication(&gw, &client, &csrf, &credential).await.status(), 200);
    }
    let mut clone = WebauthnAuthenticator::new(SoftToken::from_cbor(&snapshot).unwrap());
    let client = password_session(&gw).await;
    let (options, csrf) = start_authentication(&gw, &client).await;
    let credential = clone.do_authentication(origin(), options).unwrap();
    let refused = finish_authentication(&gw, &client, &csrf, &credential).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("cloned"), "{body}");
    let rows = gw.gateway().store.webauthn_credentials(ALICE).await.unwrap();
    assert!(rows[0].possible_clone_at.is_some());
    // Flagged, the credential is refused whoever presents it.
    let client = password_session(&gw).await;
    let csrf = data_csrf(&page(&gw, &client, "/.stepgate/second-factor?method=webauthn").await);
    let start = post_json(&gw, &client, "/.stepgate/webauthn/authenticate/start", &csrf, &json!({})).await;
    assert_eq!(start.status(), 400, "no usable credential is offered");
    pass_with_recovery_code(&gw, &client).await;
    let settings = page(&gw, &client, "/.stepgate/settings").await;
    assert!(settings.contains("may have been copied"), "{settings}");
}

/// A software token the test can still reach after handing it to an
/// authenticator, to copy its state.
#[derive(Clone)]
struct SharedToken(std::sync::Arc<std::sync::Mutex<SoftToken>>);

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

#[tokio::test]
async fn a_removed_credential_no_longer_signs_in() {
    let gw = TestGateway::start_with(setup("")).await;
    let (_client, mut key) = enrolled_with_key(&gw).await;
    let client = password_session(&gw).await;
    let (options, csrf) = start_authentication(&gw, &client).await;
    let id = gw.gateway().store.webauthn_credentials(ALICE).await.unwrap()[0].id;
    assert!(gw.gateway().store.delete_webauthn(ALICE, id).await.unwrap());
    let credential = key.do_authentication(origin(), options).unwrap();
    let refused = finish_authentication(&gw, &client, &csrf, &credential).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("not registered"));
}

#[tokio::test]
async fn challenges_are_bound_to_their_session_and_expire() {
    let gw = TestGateway::start_with(setup("")).await;
    let (_client, mut key) = enrolled_with_key(&gw).await;
    // Another session's challenge.
    let victim = password_session(&gw).await;
    let (options, _) = start_authentication(&gw, &victim).await;
    let attacker = password_session(&gw).await;
    let attacker_csrf = data_csrf(&page(&gw, &attacker, "/.stepgate/second-factor?method=webauthn").await);
    let credential = key.do_authentication(origin(), options).unwrap();
    assert_eq!(finish_authentication(&gw, &attacker, &attacker_csrf, &credential).await.status(), 400);
    // An expired one.
    let (options, csrf) = start_authentication(&gw, &victim).await;
    gw.clock.advance(301);
    let credential = key.do_authentication(origin(), options).unwrap();
    let expired = finish_authentication(&gw, &victim, &csrf, &credential).await;
    assert_eq!(expired.status(), 400);
    assert!(expired.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn malformed_and_oversized_ceremony_requests_are_refused() {
    let gw = TestGateway::start_with(setup("")).await;
    let client = password_session(&gw).await;
    let csrf = data_csrf(&page(&gw, &client, "/.stepgate/second-factor").await);
    let path = "/.stepgate/webauthn/register/finish";
    for body in ["{", "[]", "{\"credential\": 5}", "{\"credential\": {\"id\": \"x\"}}", "null"] {
        let response = client
            .post(gw.app(path))
            .header("x-csrf-token", &csrf)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"].is_string());
    }
    let not_json = client.post(gw.app(path)).header("x-csrf-token", &csrf).body("credential=1").send().await.unwrap();
    assert_eq!(not_json.status(), 415);
    let huge = format!("{{\"credential\": \"{}\"}}", "a".repeat(200 * 1024));
    let oversized =
        client.post(gw.app(path)).header("x-csrf-token", &csrf).header("content-type", "application/json").body(huge).send().await.unwrap();
    assert_eq!(oversized.status(), 413);
    let no_csrf = client.post(gw.app("/.stepgate/webauthn/register/start")).json(&json!({ "kind": "security_key" })).send().await.unwrap();
    assert_eq!(no_csrf.status(), 403);
    let unknown_kind = post_json(&gw, &client, "/.stepgate/webauthn/register/start", &csrf, &json!({ "kind": "sms" })).await;
    assert_eq!(unknown_kind.status(), 400);
    // A finish with no ceremony started stores nothing.
    let mut key = WebauthnAuthenticator::new(SoftToken::new(false).unwrap().0);
    let start = post_json(&gw, &client, "/.stepgate/webauthn/register/start", &csrf, &json!({ "kind": "security_key" })).await;
    let options: CreationChallengeResponse = start.json().await.unwrap();
    let credential = key.do_registration(origin(), options).unwrap();
    let first = post_json(&gw, &client, path, &csrf, &json!({ "credential": credential })).await;
    assert_eq!(first.status(), 200);
    let csrf = data_csrf_or_form(&page(&gw, &client, "/.stepgate/settings").await);
    let twice = post_json(&gw, &client, path, &csrf, &json!({ "credential": credential })).await;
    assert_eq!(twice.status(), 400, "a challenge is used once");
    assert_eq!(credential_count(&gw).await, 1);
}

#[tokio::test]
async fn a_recovery_code_works_once_and_leads_to_the_security_page() {
    let gw = TestGateway::start_with(setup("")).await;
    let (client, _key) = enrolled_with_key(&gw).await;
    let codes_page = page(&gw, &client, "/.stepgate/recovery-codes?rd=/admin/").await;
    let code = regex::Regex::new(r"<li><code>([0-9a-z-]+)</code></li>").unwrap().captures(&codes_page).unwrap()[1].to_string();

    let client = password_session(&gw).await;
    let recovery = page(&gw, &client, "/.stepgate/second-factor?method=recovery&rd=/").await;
    assert!(recovery.contains("you have 10 left"), "{recovery}");
    let csrf = form_value(&recovery, "csrf");
    let typed = code.to_uppercase().replace('-', " ");
    let used = client
        .post(gw.app("/.stepgate/second-factor/recovery"))
        .form(&[("csrf", csrf.as_str()), ("code", typed.as_str()), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 303);
    let location = used.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/.stepgate/settings?used=recovery"), "{location}");
    let settings = page(&gw, &client, &location).await;
    assert!(settings.contains("You have 9 left"), "{settings}");
    // A recovery code is not WebAuthn: /admin/ still asks for the key.
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 302);
    assert_eq!(client.get(gw.app("/files/a.pdf")).send().await.unwrap().status(), 200);

    let client = password_session(&gw).await;
    let again = submit_code(&gw, &client, "recovery", &code).await;
    assert_eq!(again.status(), 401, "a code works once");
}

#[tokio::test]
async fn the_security_page_manages_factors_behind_a_fresh_second_factor() {
    let gw = TestGateway::start_with(setup("")).await;
    let (client, mut key) = enrolled_with_key(&gw).await;
    let settings = page(&gw, &client, "/.stepgate/settings").await;
    assert!(settings.contains("Test key") && settings.contains("security key"), "{settings}");
    let csrf = form_value(&settings, "csrf");
    let id = gw.gateway().store.webauthn_credentials(ALICE).await.unwrap()[0].id;
    let handle = format!("webauthn:{id}");

    let renamed = client
        .post(gw.app("/.stepgate/settings/factors/rename"))
        .form(&[("csrf", csrf.as_str()), ("factor", handle.as_str()), ("name", "Blue <key>")])
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    assert!(renamed.text().await.unwrap().contains("Blue &#60;key&#62;"));

    // The only factor, and /admin/ needs two: removal is refused.
    let remove = [("csrf", csrf.as_str()), ("factor", handle.as_str())];
    let refused = client.post(gw.app("/.stepgate/settings/factors/remove")).form(&remove).send().await.unwrap();
    assert!(refused.text().await.unwrap().contains("last second factor"));
    assert_eq!(credential_count(&gw).await, 1);

    // Regenerating codes after five minutes needs the key again.
    gw.clock.advance(301);
    let regenerate =
        client.post(gw.app("/.stepgate/settings/recovery-codes/regenerate")).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(regenerate.status(), 303);
    assert!(regenerate.headers()["location"].to_str().unwrap().starts_with("/.stepgate/second-factor?rd="));
    let (options, csrf) = start_authentication(&gw, &client).await;
    let credential = key.do_authentication(origin(), options).unwrap();
    assert_eq!(finish_authentication(&gw, &client, &csrf, &credential).await.status(), 200);
    let csrf = form_value(&page(&gw, &client, "/.stepgate/settings").await, "csrf");
    let regenerate =
        client.post(gw.app("/.stepgate/settings/recovery-codes/regenerate")).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(regenerate.headers()["location"], "/.stepgate/recovery-codes?rd=%2F.stepgate%2Fsettings");
    let codes = page(&gw, &client, "/.stepgate/recovery-codes?rd=/.stepgate/settings").await;
    assert!(codes.contains("Save your recovery codes"));

    // Sessions: another browser's session is listed and can be ended.
    let other = password_session(&gw).await;
    let settings = page(&gw, &client, "/.stepgate/settings").await;
    let handles: Vec<String> =
        regex::Regex::new(r#"name="session" value="([0-9a-f]{64})""#).unwrap().captures_iter(&settings).map(|c| c[1].to_string()).collect();
    assert!(!handles.is_empty(), "{settings}");
    let csrf = form_value(&settings, "csrf");
    for handle in &handles {
        let revoked = client
            .post(gw.app("/.stepgate/settings/sessions/revoke"))
            .form(&[("csrf", csrf.as_str()), ("session", handle.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);
    }
    assert_eq!(other.get(gw.app("/")).send().await.unwrap().status(), 302, "the other session is gone");
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200, "this one stays");
}

#[tokio::test]
async fn a_factor_can_be_removed_when_no_route_needs_two() {
    let apps = "[[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://{upstream}\"]\n\
                webauthn = { rp_id = \"app.test\", origins = [\"https://app.test\"] }\n\n\
                [[apps.rules]]\npath = \"/\"\npolicy = \"one_factor\"\n";
    let gw = TestGateway::start_with(Setup { apps: apps.into(), ..Setup::default() }).await;
    let (client, _key) = enrolled_with_key(&gw).await;
    let settings = page(&gw, &client, "/.stepgate/settings").await;
    let csrf = form_value(&settings, "csrf");
    let id = gw.gateway().store.webauthn_credentials(ALICE).await.unwrap()[0].id;
    let handle = format!("webauthn:{id}");
    let removed = client
        .post(gw.app("/.stepgate/settings/factors/remove"))
        .form(&[("csrf", csrf.as_str()), ("factor", handle.as_str())])
        .send()
        .await
        .unwrap();
    assert!(removed.text().await.unwrap().contains("Removed."));
    assert_eq!(credential_count(&gw).await, 0);
    assert_eq!(gw.gateway().recovery.left(ALICE).await.unwrap(), 0, "recovery codes go with the last factor");
}

#[tokio::test]
async fn passwordless_sign_in_is_off_by_default() {
    let gw = TestGateway::start_with(setup("")).await;
    let fresh = gw.browser();
    let signin = page(&gw, &fresh, "/.stepgate/signin").await;
    assert!(!signin.contains("passkey"));
    let csrf = form_value(&signin, "csrf");
    let start = post_json(&gw, &fresh, "/.stepgate/webauthn/passwordless/start", &csrf, &json!({})).await;
    assert_eq!(start.status(), 400);
}

#[tokio::test]
async fn an_aaguid_allow_list_admits_only_listed_models() {
    let soft_token_model = webauthn_authenticator_rs::softtoken::AAGUID.hyphenated().to_string();
    for (listed, expected) in [("cb69481e-8ff7-4039-93ec-0a2729a154a8", 400), (soft_token_model.as_str(), 200)] {
        let gw = TestGateway::start_with(setup(&format!("[webauthn]\naaguids = [\"{listed}\"]\n"))).await;
        let client = password_session(&gw).await;
        let csrf = data_csrf(&page(&gw, &client, "/.stepgate/second-factor").await);
        let mut key = WebauthnAuthenticator::new(SoftToken::new(false).unwrap().0);
        let finish = register(&gw, &client, &mut key, &csrf, "security_key").await;
        assert_eq!(finish.status(), expected, "{listed}");
        assert_eq!(credential_count(&gw).await, usize::from(expected == 200));
    }
}

#[tokio::test]
async fn new_recovery_codes_replace_the_old_ones_and_the_last_method_is_remembered() {
    let gw = TestGateway::start_with(setup("")).await;
    let (client, _key) = enrolled_with_key(&gw).await;
    let first = page(&gw, &client, "/.stepgate/recovery-codes?rd=/").await;
    let old_code = regex::Regex::new(r"<li><code>([0-9a-z-]+)</code></li>").unwrap().captures(&first).unwrap()[1].to_string();
    let csrf = form_value(&page(&gw, &client, "/.stepgate/settings").await, "csrf");
    let regenerate =
        client.post(gw.app("/.stepgate/settings/recovery-codes/regenerate")).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(regenerate.status(), 303);
    assert!(page(&gw, &client, "/.stepgate/recovery-codes?rd=/").await.contains("Save your recovery codes"));

    let client = password_session(&gw).await;
    let used = submit_code(&gw, &client, "recovery", &old_code).await;
    assert_eq!(used.status(), 401, "the old set no longer works");

    // A browser that last passed with the authenticator app is offered it first.
    let client = password_session(&gw).await;
    let secret = enroll_totp_from_settings(&gw, &client).await;
    gw.clock.advance(30);
    let client = password_session(&gw).await;
    assert!(page(&gw, &client, "/.stepgate/second-factor").await.contains("data-webauthn=\"authenticate\""), "the strongest by default");
    let passed = submit_code(&gw, &client, "totp", &totp::code(&secret, gw.now())).await;
    assert_eq!(passed.status(), 303);
    assert!(set_cookie(&passed, "stepgate_method").starts_with("stepgate_method=totp"));
    let again = page(&gw, &client, "/.stepgate/second-factor").await;
    assert!(again.contains("Enter your verification code"), "the app, as last time:\n{again}");
}

/// Adds an authenticator app from the security page (after the key, which
/// a fresh session must prove first); returns its secret.
async fn enroll_totp_from_settings(gw: &TestGateway, client: &reqwest::Client) -> String {
    let step_up = client.get(gw.app("/.stepgate/settings/add-totp")).send().await.unwrap();
    assert_eq!(step_up.status(), 303, "a password-only session confirms first");
    pass_with_recovery_code(gw, client).await;
    let enrol = page(gw, client, "/.stepgate/settings/add-totp").await;
    let secret = regex::Regex::new(r#"id="secret">([A-Z2-7=]+)<"#).unwrap().captures(&enrol).unwrap()[1].to_string();
    let csrf = form_value(&enrol, "csrf");
    let code = totp::code(&secret, gw.now());
    let done = client
        .post(gw.app("/.stepgate/second-factor/totp/enroll"))
        .form(&[("csrf", csrf.as_str()), ("code", code.as_str()), ("rd", "/.stepgate/settings")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/.stepgate/settings", "no new recovery codes for a second factor");
    secret
}

#[tokio::test]
async fn switching_a_kind_off_does_not_let_a_password_add_a_factor() {
    let gw = TestGateway::start_with(setup("[webauthn]\nsecurity_keys = false\n")).await;
    let row = stepgate::store::WebauthnRow {
        id: 0,
        username: ALICE.into(),
        credential_id: vec![1, 2, 3],
        kind: "security_key".into(),
        name: "Old key".into(),
        credential: "{}".into(),
        counter: 0,
        aaguid: None,
        discoverable: false,
        created: gw.now(),
        last_used: None,
        possible_clone_at: None,
    };
    // A token from the enrolment page, taken before the key is on record.
    let client = password_session(&gw).await;
    let csrf = data_csrf(&page(&gw, &client, "/.stepgate/second-factor").await);
    assert!(gw.gateway().store.insert_webauthn(&row).await.unwrap());
    let second = client.get(gw.app("/.stepgate/second-factor")).send().await.unwrap();
    assert_eq!(second.status(), 403, "no usable factor, and no enrolment either");
    let start = post_json(&gw, &client, "/.stepgate/webauthn/register/start", &csrf, &json!({ "kind": "platform" })).await;
    assert_eq!(start.status(), 403);
}

/// Passes the second factor with a recovery code from a set made here, so
/// that a test needs no authenticator for it.
async fn pass_with_recovery_code(gw: &TestGateway, client: &reqwest::Client) {
    let codes = gw.gateway().recovery.generate(ALICE).await.unwrap();
    let used = submit_code(gw, client, "recovery", &codes[0]).await;
    assert_eq!(used.status(), 303);
}

/// Posts a code (`totp` or `recovery`) from its challenge page, with the
/// page's CSRF token; returns the response.
async fn submit_code(gw: &TestGateway, client: &reqwest::Client, method: &str, code: &str) -> reqwest::Response {
    let challenge = page(gw, client, &format!("/.stepgate/second-factor?method={method}")).await;
    let csrf = form_value(&challenge, "csrf");
    client
        .post(gw.app(&format!("/.stepgate/second-factor/{method}")))
        .form(&[("csrf", csrf.as_str()), ("code", code), ("rd", "/")])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn removing_a_key_ends_the_sessions_that_used_that_key_only() {
    let gw = TestGateway::start_with(setup("")).await;
    let (first_key_session, _first_key) = enrolled_with_key(&gw).await;
    // A second key, added from the same session (which thereby did not use it).
    let csrf = data_csrf(&page(&gw, &first_key_session, "/.stepgate/settings").await);
    let mut second_key = WebauthnAuthenticator::new(SoftToken::new(false).unwrap().0);
    assert_eq!(register(&gw, &first_key_session, &mut second_key, &csrf, "security_key").await.status(), 200);
    let mut second_key_sessions = Vec::new();
    for _ in 0..2 {
        let client = password_session(&gw).await;
        let (options, csrf) = start_authentication(&gw, &client).await;
        let credential = second_key.do_authentication(origin(), options).unwrap();
        assert_eq!(finish_authentication(&gw, &client, &csrf, &credential).await.status(), 200);
        second_key_sessions.push(client);
    }
    let [remover, other] = &second_key_sessions[..] else { unreachable!() };

    let first_id = gw.gateway().store.webauthn_credentials(ALICE).await.unwrap()[0].id;
    let csrf = form_value(&page(&gw, remover, "/.stepgate/settings").await, "csrf");
    let handle = format!("webauthn:{first_id}");
    let removed = remover
        .post(gw.app("/.stepgate/settings/factors/remove"))
        .form(&[("csrf", csrf.as_str()), ("factor", handle.as_str())])
        .send()
        .await
        .unwrap();
    assert!(removed.text().await.unwrap().contains("Removed."));
    assert_eq!(first_key_session.get(gw.app("/")).send().await.unwrap().status(), 302, "the session that used the removed key ends");
    assert_eq!(other.get(gw.app("/admin/")).send().await.unwrap().status(), 200, "one that used the other key stays");
    assert_eq!(remover.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_key_flagged_as_cloned_ends_the_sessions_that_used_it() {
    let gw = TestGateway::start_with(setup("")).await;
    let registered_with_it = password_session(&gw).await;
    let csrf = data_csrf(&page(&gw, &registered_with_it, "/.stepgate/second-factor").await);
    let token = SharedToken(std::sync::Arc::new(std::sync::Mutex::new(SoftToken::new(false).unwrap().0)));
    let mut key = WebauthnAuthenticator::new(token.clone());
    assert_eq!(register(&gw, &registered_with_it, &mut key, &csrf, "security_key").await.status(), 200);
    let snapshot = token.0.lock().unwrap().to_cbor().unwrap();
    let signed_in_with_it = password_session(&gw).await;
    let (options, csrf) = start_authentication(&gw, &signed_in_with_it).await;
    let credential = key.do_authentication(origin(), options).unwrap();
    assert_eq!(finish_authentication(&gw, &signed_in_with_it, &csrf, &credential).await.status(), 200);
    let password_only = password_session(&gw).await;

    let mut clone = WebauthnAuthenticator::new(SoftToken::from_cbor(&snapshot).unwrap());
    let attacker = password_session(&gw).await;
    let (options, csrf) = start_authentication(&gw, &attacker).await;
    let credential = clone.do_authentication(origin(), options).unwrap();
    assert_eq!(finish_authentication(&gw, &attacker, &csrf, &credential).await.status(), 403);
    for (client, what) in [(&registered_with_it, "registered with it"), (&signed_in_with_it, "signed in with it")] {
        assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 302, "the session that {what} ends");
    }
    assert_eq!(password_only.get(gw.app("/")).send().await.unwrap().status(), 200, "one that never used it stays");
}

/// Anyone may ask for a passwordless challenge, so those are bounded per
/// client address and kept apart from signed-in users' ceremonies: a flood
/// of them is refused without refusing anyone else.
#[tokio::test]
async fn a_flood_of_passwordless_challenges_holds_no_one_else_up() {
    let gw = TestGateway::start_with(setup("[webauthn]\npasswordless = true\n")).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let anonymous = gw.browser();
        let csrf = form_value(&page(&gw, &anonymous, "/.stepgate/signin").await, "csrf");
        statuses.push(post_json(&gw, &anonymous, "/.stepgate/webauthn/passwordless/start", &csrf, &json!({})).await.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 8, "{statuses:?}");
    assert!(statuses[8..].iter().all(|s| *s == 503), "{statuses:?}");

    let client = password_session(&gw).await;
    let csrf = data_csrf(&page(&gw, &client, "/.stepgate/second-factor").await);
    let start =
        post_json(&gw, &client, "/.stepgate/webauthn/register/start", &csrf, &json!({ "kind": "security_key", "name": "Key" })).await;
    assert_eq!(start.status(), 200, "a signed-in user's ceremony still starts");
}
