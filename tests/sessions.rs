//! Sessions end and stay ended, factor changes are atomic, and pages that
//! show something change nothing: through the real proxy, with concurrent
//! requests released together by a barrier where a race is the point.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::Value;
use stepgate::store::{TotpRow, WebauthnRow};

/// Sends the requests at the same moment; their responses, in order.
async fn at_once(requests: Vec<reqwest::RequestBuilder>) -> Vec<reqwest::Response> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                request.send().await.unwrap()
            })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap());
    }
    responses
}

async fn page(gw: &TestGateway, client: &reqwest::Client, path: &str) -> String {
    client.get(gw.app(path)).send().await.unwrap().text().await.unwrap()
}

async fn status(gw: &TestGateway, client: &reqwest::Client, path: &str) -> u16 {
    client.get(gw.app(path)).send().await.unwrap().status().as_u16()
}

/// `name=value` of a session cookie to the session id it carries.
fn session_id(cookie: &str) -> &str {
    cookie.split_once('=').unwrap().1
}

/// What the gateway makes of a session cookie alone: the status of `/`.
async fn status_with_cookie(gw: &TestGateway, cookie: &str) -> u16 {
    let client = gw.client_builder().cookie_store(false).default_headers(browser_headers()).build().unwrap();
    client.get(gw.app("/")).header("cookie", cookie).send().await.unwrap().status().as_u16()
}

async fn is_stored(gw: &TestGateway, cookie: &str) -> bool {
    let key = stepgate::crypto::sha256(session_id(cookie).as_bytes());
    gw.gateway().store.get_session(&key).await.unwrap().is_some()
}

/// Posts a TOTP code from the challenge page, ticking "trust this
/// browser" when `remember`; returns the response.
async fn pass_totp(gw: &TestGateway, client: &reqwest::Client, secret: &str, remember: bool) -> reqwest::Response {
    gw.clock.advance(30);
    let csrf = form_value(&page(gw, client, "/.stepgate/second-factor?method=totp").await, "csrf");
    let code = totp::code(secret, gw.now());
    let mut form = vec![("csrf", csrf.as_str()), ("code", code.as_str()), ("rd", "/")];
    if remember {
        form.push(("remember", "1"));
    }
    let response = client.post(gw.app("/.stepgate/second-factor/totp")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 303, "the code is accepted");
    response
}

/// Passes the second factor with a recovery code from a set made here.
async fn pass_recovery(gw: &TestGateway, client: &reqwest::Client) {
    let codes = gw.gateway().recovery.generate(ALICE).await.unwrap();
    let csrf = form_value(&page(gw, client, "/.stepgate/second-factor?method=recovery").await, "csrf");
    let response = client
        .post(gw.app("/.stepgate/second-factor/recovery"))
        .form(&[("csrf", csrf.as_str()), ("code", codes[0].as_str()), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "the recovery code is accepted");
}

/// A browser whose user has an authenticator app and trusts it; returns
/// the browser and the app's secret.
async fn trusted_browser(gw: &TestGateway) -> (reqwest::Client, String) {
    let browser = gw.browser();
    sign_in(gw, &browser, ALICE, ALICE_PASSWORD, "/").await;
    let secret = enroll_totp(gw, &browser).await;
    pass_totp(gw, &browser, &secret, true).await;
    (browser, secret)
}

/// The sign-out form of the browser's session, ready to send.
async fn sign_out_request(gw: &TestGateway, client: &reqwest::Client) -> reqwest::RequestBuilder {
    let csrf = form_value(&page(gw, client, "/.stepgate/signout").await, "csrf");
    client.post(gw.app("/.stepgate/signout")).form(&[("csrf", csrf)])
}

/// Signs the browser's session out, if it has one.
async fn sign_out(gw: &TestGateway, client: &reqwest::Client) {
    if page(gw, client, "/.stepgate/signout").await.contains("name=\"csrf\"") {
        assert_eq!(sign_out_request(gw, client).await.send().await.unwrap().status(), 200);
    }
}

/// The security page's form that stops trusting `client`'s own browser.
async fn untrust_request(gw: &TestGateway, client: &reqwest::Client) -> reqwest::RequestBuilder {
    let settings = page(gw, client, "/.stepgate/settings").await;
    let (csrf, device) = (form_value(&settings, "csrf"), form_value(&settings, "device"));
    client.post(gw.app("/.stepgate/settings/trusted-browsers/revoke")).form(&[("csrf", csrf), ("device", device)])
}

const ROUNDS: usize = 4;

#[tokio::test]
async fn a_signed_out_session_stays_signed_out_while_it_writes() {
    let gw = TestGateway::start().await;
    let (browser, secret) = trusted_browser(&gw).await;
    for round in 0..ROUNDS {
        sign_out(&gw, &browser).await;
        sign_in(&gw, &browser, ALICE, ALICE_PASSWORD, "/").await;
        let cookie = session_cookie(&pass_totp(&gw, &browser, &secret, true).await);
        let requests = vec![sign_out_request(&gw, &browser).await, untrust_request(&gw, &browser).await];
        at_once(requests).await;
        assert_eq!(status_with_cookie(&gw, &cookie).await, 302, "round {round}: the session stays signed out");
        assert!(!is_stored(&gw, &cookie).await, "round {round}: and is not stored again");
    }
}

#[tokio::test]
async fn a_session_revoked_elsewhere_stays_revoked_while_it_writes() {
    let gw = TestGateway::start().await;
    let (browser, secret) = trusted_browser(&gw).await;
    let other = gw.browser();
    sign_in(&gw, &other, ALICE, ALICE_PASSWORD, "/").await;
    pass_totp(&gw, &other, &secret, false).await;
    for round in 0..ROUNDS {
        sign_out(&gw, &browser).await;
        sign_in(&gw, &browser, ALICE, ALICE_PASSWORD, "/").await;
        let cookie = session_cookie(&pass_totp(&gw, &browser, &secret, true).await);
        let handle: String = stepgate::crypto::sha256(session_id(&cookie).as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let csrf = form_value(&page(&gw, &other, "/.stepgate/settings").await, "csrf");
        let revoke = other.post(gw.app("/.stepgate/settings/sessions/revoke")).form(&[("csrf", csrf), ("session", handle)]);
        // Several writes of the session's own, so that some land after the revocation.
        let mut requests = vec![revoke];
        for _ in 0..3 {
            requests.push(untrust_request(&gw, &browser).await);
        }
        at_once(requests).await;
        assert_eq!(status_with_cookie(&gw, &cookie).await, 302, "round {round}: the session stays revoked");
        assert!(!is_stored(&gw, &cookie).await, "round {round}: and is not stored again");
    }
}

#[tokio::test]
async fn a_session_replaced_by_a_second_factor_stays_replaced_while_it_writes() {
    let gw = TestGateway::start().await;
    let (browser, secret) = trusted_browser(&gw).await;
    for round in 0..ROUNDS {
        sign_out(&gw, &browser).await;
        sign_in(&gw, &browser, ALICE, ALICE_PASSWORD, "/").await;
        pass_totp(&gw, &browser, &secret, true).await;
        sign_out(&gw, &browser).await;
        // Signed in again with the password alone: the trusted browser opens the security page.
        let cookie = session_cookie(&sign_in(&gw, &browser, ALICE, ALICE_PASSWORD, "/").await);
        let untrust = untrust_request(&gw, &browser).await;
        gw.clock.advance(30);
        let csrf = form_value(&page(&gw, &browser, "/.stepgate/second-factor?method=totp").await, "csrf");
        let code = totp::code(&secret, gw.now());
        let second_factor = browser.post(gw.app("/.stepgate/second-factor/totp")).form(&[("csrf", csrf.as_str()), ("code", code.as_str())]);
        at_once(vec![second_factor, untrust]).await;
        assert_eq!(status_with_cookie(&gw, &cookie).await, 302, "round {round}: the replaced id stays dead");
        assert!(!is_stored(&gw, &cookie).await, "round {round}: and is not stored again");
    }
}

#[tokio::test]
async fn a_changed_password_ends_the_users_sessions() {
    let gw = TestGateway::start().await;
    let (alice, bob) = (gw.browser(), gw.browser());
    sign_in(&gw, &alice, ALICE, ALICE_PASSWORD, "/").await;
    sign_in(&gw, &bob, BOB, BOB_PASSWORD, "/").await;
    assert_eq!(status(&gw, &alice, "/").await, 200);

    let users = gw.dir.path().join("users.toml");
    let text = std::fs::read_to_string(&users).unwrap();
    let old_hash = regex::Regex::new(r#"password = "([^"]+)""#).unwrap().captures(&text).unwrap()[1].to_string();
    std::fs::write(&users, text.replacen(&old_hash, &stepgate::users::hash_password("a new password"), 1)).unwrap();
    gw.running.live.reload().expect("the new users file loads");

    assert_eq!(status(&gw, &alice, "/").await, 302, "alice's session ended with her old password");
    assert_eq!(status(&gw, &bob, "/").await, 200, "bob's password did not change");
    assert_eq!(sign_in(&gw, &gw.browser(), ALICE, ALICE_PASSWORD, "/").await.status(), 401);
    let fresh = gw.browser();
    assert_eq!(sign_in(&gw, &fresh, ALICE, "a new password", "/").await.status(), 303);
    assert_eq!(status(&gw, &fresh, "/").await, 200, "a session made with the new password lives");
}

#[tokio::test]
async fn untrusting_a_browser_ends_the_trust_of_its_live_session() {
    let gw = TestGateway::start().await;
    let (trusted, secret) = trusted_browser(&gw).await;
    sign_out(&gw, &trusted).await;
    sign_in(&gw, &trusted, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(status(&gw, &trusted, "/.stepgate/settings").await, 200, "the password is enough on a trusted browser");

    let other = gw.browser();
    sign_in(&gw, &other, ALICE, ALICE_PASSWORD, "/").await;
    pass_totp(&gw, &other, &secret, false).await;
    let settings = page(&gw, &other, "/.stepgate/settings").await;
    let (csrf, device) = (form_value(&settings, "csrf"), form_value(&settings, "device"));
    let response =
        other.post(gw.app("/.stepgate/settings/trusted-browsers/revoke")).form(&[("csrf", csrf), ("device", device)]).send().await.unwrap();
    assert!(response.text().await.unwrap().contains("no longer trusted"));
    let response = trusted.get(gw.app("/.stepgate/settings")).send().await.unwrap();
    assert_eq!(response.status(), 303, "the browser's live session lost the trust");
    assert!(response.headers()["location"].to_str().unwrap().starts_with("/.stepgate/second-factor"));
}

/// The claims of an assertion (not verified here: other tests do).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&data_encoding::BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap()).unwrap()
}

#[tokio::test]
async fn after_a_reload_the_assertion_agrees_with_the_identity_headers() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    sign_in_at(&gw, "legacy.test", &client, ALICE, ALICE_PASSWORD, "/").await;
    let received = |gw: &TestGateway| {
        let headers = gw.upstream.last().headers;
        let groups = headers["remote-groups"].to_str().unwrap().to_string();
        (groups, claims(headers["x-auth-token"].to_str().unwrap())["groups"].clone())
    };
    assert_eq!(client.get(gw.url("legacy.test", "/")).send().await.unwrap().status(), 200);
    assert_eq!(received(&gw), ("staff,admins".to_string(), serde_json::json!(["staff", "admins"])));

    let users = gw.dir.path().join("users.toml");
    let text = std::fs::read_to_string(&users).unwrap();
    std::fs::write(&users, text.replacen("groups = [\"staff\", \"admins\"]", "groups = [\"staff\"]", 1)).unwrap();
    gw.running.live.reload().expect("the new users file loads");
    gw.clock.advance(1);

    assert_eq!(client.get(gw.url("legacy.test", "/")).send().await.unwrap().status(), 200);
    assert_eq!(received(&gw), ("staff".to_string(), serde_json::json!(["staff"])), "no assertion with the old groups");
}

/// A security key on record for alice, as if registered earlier.
async fn add_key_row(gw: &TestGateway, credential_id: u8) -> i64 {
    let row = WebauthnRow {
        id: 0,
        username: ALICE.into(),
        credential_id: vec![credential_id; 16],
        kind: "security_key".into(),
        name: "Key".into(),
        credential: "{}".into(),
        counter: 0,
        aaguid: None,
        discoverable: false,
        created: gw.now(),
        last_used: None,
        possible_clone_at: None,
    };
    let store = gw.gateway().store.clone();
    assert!(store.insert_webauthn(&row).await.unwrap());
    store.webauthn_credential(&row.credential_id).await.unwrap().unwrap().id
}

/// An authenticator app on record for alice, as if enrolled earlier.
async fn add_totp_row(gw: &TestGateway) {
    let row = TotpRow {
        username: ALICE.into(),
        sealed_secret: vec![0; 32],
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        created: gw.now(),
        last_step: 0,
        name: "Phone".into(),
        last_used: None,
    };
    assert!(gw.gateway().store.insert_totp(&row).await.unwrap());
}

async fn factor_count(gw: &TestGateway) -> usize {
    let store = gw.gateway().store.clone();
    store.webauthn_credentials(ALICE).await.unwrap().len() + usize::from(store.get_totp(ALICE).await.unwrap().is_some())
}

#[tokio::test]
async fn two_removals_at_once_leave_a_factor_where_two_are_needed() {
    let gw = TestGateway::start().await;
    add_totp_row(&gw).await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    pass_recovery(&gw, &client).await;
    for round in 0..ROUNDS {
        let key = add_key_row(&gw, round as u8).await;
        let csrf = form_value(&page(&gw, &client, "/.stepgate/settings").await, "csrf");
        let remove =
            |factor: String| client.post(gw.app("/.stepgate/settings/factors/remove")).form(&[("csrf", csrf.clone()), ("factor", factor)]);
        let responses = at_once(vec![remove("totp".into()), remove(format!("webauthn:{key}"))]).await;
        let mut removed = 0;
        for response in responses {
            removed += usize::from(response.text().await.unwrap().contains("Removed."));
        }
        assert_eq!(removed, 1, "round {round}: exactly one removal passes");
        assert_eq!(factor_count(&gw).await, 1, "round {round}: one factor is left");
        // The next round starts again from the app and one key.
        if gw.gateway().store.get_totp(ALICE).await.unwrap().is_none() {
            add_totp_row(&gw).await;
        }
        gw.gateway().store.delete_webauthn(ALICE, key).await.unwrap();
    }
}

#[tokio::test]
async fn removing_a_factor_ends_the_sessions_that_used_it() {
    let apps = DEFAULT_APPS.replacen(
        "[[apps.rules]]\npath = \"/blocked/\"",
        "[[apps.rules]]\npath = \"/code-only/\"\npolicy = \"always\"\nfactors = [\"totp\"]\n\n[[apps.rules]]\npath = \"/blocked/\"",
        1,
    );
    let gw = TestGateway::start_with(Setup { apps, ..Setup::default() }).await;
    let used_it = gw.browser();
    sign_in(&gw, &used_it, ALICE, ALICE_PASSWORD, "/").await;
    let secret = enroll_totp(&gw, &used_it).await;
    add_key_row(&gw, 1).await;
    let did_not = gw.browser();
    sign_in(&gw, &did_not, ALICE, ALICE_PASSWORD, "/").await;
    pass_recovery(&gw, &did_not).await;
    let remover = gw.browser();
    sign_in(&gw, &remover, ALICE, ALICE_PASSWORD, "/").await;
    pass_totp(&gw, &remover, &secret, false).await;
    pass_recovery(&gw, &remover).await;
    assert_eq!(status(&gw, &remover, "/code-only/").await, 200);

    let csrf = form_value(&page(&gw, &remover, "/.stepgate/settings").await, "csrf");
    let removed = remover
        .post(gw.app("/.stepgate/settings/factors/remove"))
        .form(&[("csrf", csrf.as_str()), ("factor", "totp")])
        .send()
        .await
        .unwrap();
    assert!(removed.text().await.unwrap().contains("Removed."));

    assert_eq!(status(&gw, &used_it, "/").await, 302, "a session that used the app is signed out");
    assert_eq!(status(&gw, &did_not, "/").await, 200, "one that did not stays");
    assert_eq!(status(&gw, &remover, "/").await, 200, "the session that removed it stays");
    assert_eq!(status(&gw, &remover, "/code-only/").await, 302, "but no longer counts as having used it");
}

#[tokio::test]
async fn loading_the_enrolment_page_again_shows_the_same_secret() {
    let gw = TestGateway::start().await;
    add_key_row(&gw, 1).await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    pass_recovery(&gw, &client).await;
    let secret_on = |page: &str| regex::Regex::new(r#"id="secret">([A-Z2-7=]+)<"#).unwrap().captures(page).unwrap()[1].to_string();
    let first = page(&gw, &client, "/.stepgate/settings/add-totp").await;
    let again = page(&gw, &client, "/.stepgate/settings/add-totp").await;
    assert_eq!(secret_on(&first), secret_on(&again), "a GET does not replace the secret being enrolled");

    let (csrf, code) = (form_value(&again, "csrf"), totp::code(&secret_on(&again), gw.now()));
    let enrolled = client
        .post(gw.app("/.stepgate/second-factor/totp/enroll"))
        .form(&[("csrf", csrf.as_str()), ("code", code.as_str()), ("rd", "/.stepgate/settings")])
        .send()
        .await
        .unwrap();
    assert_eq!(enrolled.status(), 303);
    let csrf = form_value(&page(&gw, &client, "/.stepgate/settings").await, "csrf");
    let removed = client
        .post(gw.app("/.stepgate/settings/factors/remove"))
        .form(&[("csrf", csrf.as_str()), ("factor", "totp")])
        .send()
        .await
        .unwrap();
    assert!(removed.text().await.unwrap().contains("Removed."));
    let next = page(&gw, &client, "/.stepgate/settings/add-totp").await;
    assert_ne!(secret_on(&next), secret_on(&first), "an enrolled secret is never offered again");
}

#[tokio::test]
async fn new_recovery_codes_are_shown_until_the_user_has_saved_them() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    enroll_totp(&gw, &client).await;
    let codes_on = |page: &str| {
        regex::Regex::new(r"<li><code>([0-9a-z-]+)</code></li>").unwrap().captures_iter(page).map(|c| c[1].to_string()).collect::<Vec<_>>()
    };
    let first = page(&gw, &client, "/.stepgate/recovery-codes?rd=/").await;
    let again = page(&gw, &client, "/.stepgate/recovery-codes?rd=/").await;
    assert_eq!(codes_on(&first).len(), 10, "{first}");
    assert_eq!(codes_on(&first), codes_on(&again), "a GET spends nothing");

    let saved = client
        .post(gw.app("/.stepgate/recovery-codes"))
        .form(&[("csrf", form_value(&again, "csrf").as_str()), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 303);
    assert_eq!(saved.headers()["location"], "/");
    assert_eq!(status(&gw, &client, "/.stepgate/recovery-codes?rd=/").await, 303, "saved codes are not shown again");
    let forged = client.post(gw.app("/.stepgate/recovery-codes")).form(&[("csrf", "forged"), ("rd", "/")]).send().await.unwrap();
    assert_eq!(forged.status(), 403);
}

/// The hot path: once a session is cached, requests proxied to the app do
/// not reach the store at all (the cache is kept current by the change
/// announcements), while the portal's pages read it fresh every time.
#[tokio::test]
async fn a_signed_in_request_makes_no_store_round_trip() {
    let mut switches = None;
    let gw = TestGateway::start_with_store(Setup::default(), |sqlite| {
        let (store, made) = common::failing_store::FailingStore::new(sqlite);
        switches = Some(made);
        Arc::new(store)
    })
    .await;
    let reads = switches.expect("the store was made").session_reads;
    let reads = || reads.load(std::sync::atomic::Ordering::SeqCst);
    let browser = gw.browser();
    assert_eq!(sign_in(&gw, &browser, ALICE, ALICE_PASSWORD, "/").await.status(), 303);
    assert_eq!(status(&gw, &browser, "/").await, 200, "the first request reads the session once");

    let before = reads();
    for _ in 0..20 {
        assert_eq!(status(&gw, &browser, "/").await, 200);
    }
    assert_eq!(reads(), before, "twenty signed-in requests, no session read from the store");
    assert_eq!(status(&gw, &browser, "/.stepgate/settings").await, 200);
    assert_eq!(reads(), before + 1, "a portal page reads the session fresh");
}
