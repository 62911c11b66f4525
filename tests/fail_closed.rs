//! Every failure on the request path ends in a refusal or a branded error
//! page, never in a pass and never in a panic: through the real proxy, on
//! a store that fails on demand. Each test ends by checking that the
//! gateway still answers once the store is back.
//!
//! A configuration that fails to reload keeps the running one: see
//! `a_broken_configuration_keeps_the_running_one` in `tests/reload.rs`.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::failing_store::{FailingStore, Switches};
use common::*;
use serde_json::json;

async fn start_with(setup: Setup) -> (TestGateway, Switches) {
    let mut switches = None;
    let gw = TestGateway::start_with_store(setup, |sqlite| {
        let (store, made) = FailingStore::new(sqlite);
        switches = Some(made);
        Arc::new(store)
    })
    .await;
    (gw, switches.expect("the store was made"))
}

async fn start() -> (TestGateway, Switches) {
    start_with(Setup::default()).await
}

/// Asserts a refusal: an error status and the gateway's own page.
async fn assert_branded_refusal(response: reqwest::Response, status: u16) {
    assert_eq!(response.status(), status);
    assert!(response.headers().get("set-cookie").is_none_or(|c| !c.to_str().unwrap().starts_with("stepgate_session=")));
    let body = response.text().await.unwrap();
    assert!(body.contains(r#"<span class="product">stepgate</span>"#), "not the branded page:\n{body}");
}

/// The gateway still answers, so nothing panicked on the way.
async fn assert_still_answers(gw: &TestGateway) {
    let response = gw.api_client().get(gw.app("/.stepgate/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

async fn page(gw: &TestGateway, client: &reqwest::Client, path: &str) -> String {
    client.get(gw.app(path)).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_session_that_cannot_be_looked_up_is_refused() {
    let (gw, switches) = start().await;
    let client = gw.browser();
    let signed_in = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(signed_in.status(), 303);

    switches.set_all(true);
    let response = client.get(gw.app("/")).send().await.unwrap();
    assert_branded_refusal(response, 503).await;
    assert_eq!(gw.upstream.count(), 0, "the app saw nothing");
    assert_still_answers(&gw).await;

    switches.set_all(false);
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200, "the session is intact");
    assert_eq!(gw.upstream.count(), 1);
}

#[tokio::test]
async fn a_sign_in_the_store_cannot_record_creates_no_session() {
    let (gw, switches) = start().await;
    let client = gw.browser();
    let form = page(&gw, &client, "/.stepgate/signin").await;
    let csrf = form_value(&form, "csrf");

    switches.set_all(true);
    let response = client
        .post(gw.app("/.stepgate/signin"))
        .form(&[("csrf", csrf.as_str()), ("username", ALICE), ("password", ALICE_PASSWORD), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_branded_refusal(response, 503).await;
    assert_still_answers(&gw).await;

    switches.set_all(false);
    assert!(gw.gateway().store.sessions_of(ALICE).await.unwrap().is_empty(), "no session was created");
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 302, "not signed in");
    assert_eq!(gw.upstream.count(), 0);

    let signed_in = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(signed_in.status(), 303, "signing in works again");
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200);
}

/// Alice with an authenticator app, signed in again in a new browser and
/// at its code page: the browser, the page's CSRF token and a valid code.
async fn totp_challenge(gw: &TestGateway) -> (reqwest::Client, String, String) {
    let enroller = gw.browser();
    sign_in(gw, &enroller, ALICE, ALICE_PASSWORD, "/").await;
    let secret = enroll_totp(gw, &enroller).await;
    let client = gw.browser();
    sign_in(gw, &client, ALICE, ALICE_PASSWORD, "/admin/").await;
    gw.clock.advance(30);
    let csrf = form_value(&page(gw, &client, "/.stepgate/second-factor?method=totp").await, "csrf");
    let code = totp::code(&secret, gw.now());
    (client, csrf, code)
}

#[tokio::test]
async fn a_code_the_store_cannot_check_does_not_pass() {
    let (gw, switches) = start().await;
    let (client, csrf, code) = totp_challenge(&gw).await;
    let submit = || {
        client
            .post(gw.app("/.stepgate/second-factor/totp"))
            .form(&[("csrf", csrf.as_str()), ("code", code.as_str()), ("rd", "/admin/")])
            .send()
    };

    switches.totp.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_branded_refusal(submit().await.unwrap(), 503).await;
    let admin = client.get(gw.app("/admin/")).send().await.unwrap();
    assert_eq!(admin.status(), 302, "the second factor is still asked for");
    assert_eq!(gw.upstream.count(), 0, "the app saw nothing");
    assert_still_answers(&gw).await;

    switches.set_all(false);
    assert_eq!(submit().await.unwrap().status(), 303, "the same code passes once the store is back");
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_security_page_and_a_removal_fail_closed() {
    let (gw, switches) = start().await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    enroll_totp(&gw, &client).await;
    let settings = page(&gw, &client, "/.stepgate/settings").await;
    let csrf = form_value(&settings, "csrf");
    let remove = || client.post(gw.app("/.stepgate/settings/factors/remove")).form(&[("csrf", csrf.as_str()), ("factor", "totp")]).send();

    for switch in [&switches.risk, &switches.totp, &switches.recovery, &switches.webauthn] {
        switch.store(true, std::sync::atomic::Ordering::SeqCst);
        let response = client.get(gw.app("/.stepgate/settings")).send().await.unwrap();
        assert_branded_refusal(response, 503).await;
        switches.set_all(false);
    }

    switches.factors.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_branded_refusal(remove().await.unwrap(), 503).await;
    switches.set_all(true);
    let response = remove().await.unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    assert_still_answers(&gw).await;

    switches.set_all(false);
    assert!(gw.gateway().store.get_totp(ALICE).await.unwrap().is_some(), "the authenticator app is still enrolled");
    let settings = page(&gw, &client, "/.stepgate/settings").await;
    assert!(!settings.contains("Add an authenticator app"), "{settings}");
}

/// A City database that knows 192.0.2.0/24 (CH) and nothing else. (One
/// with a record that does not decode is refused when it opens.)
fn write_city_database(dir: &Path) -> std::path::PathBuf {
    let mut cities = mmdb_writer::Writer::new("GeoIP2-City");
    let zurich = json!({
        "country": { "iso_code": "CH", "names": { "en": "CH" } },
        "continent": { "code": "EU" },
        "city": { "names": { "en": "Zurich" } },
        "location": { "latitude": 47.37, "longitude": 8.54 }
    });
    cities.insert("192.0.2.0/24".parse::<ipnet::IpNet>().unwrap(), &zurich).unwrap();
    let path = dir.join("city.mmdb");
    std::fs::write(&path, cities.to_bytes().unwrap()).unwrap();
    path
}

#[tokio::test]
async fn an_address_of_no_known_country_is_outside_an_allow_list() {
    let databases = tempfile::tempdir().unwrap();
    let city = write_city_database(databases.path());
    let apps = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]
countries_allow = ["CH"]

[[apps.rules]]
path = "/"
policy = "bypass"
"#;
    let (gw, _switches) = start_with(Setup {
        extra: format!("[geoip]\ncity = \"{}\"\n", city.display()),
        server_extra: "trusted_proxies = [\"127.0.0.0/8\"]".into(),
        apps: apps.into(),
        ..Setup::default()
    })
    .await;
    let client = gw.browser();
    let from = |ip: &'static str| client.get(gw.app("/")).header("x-forwarded-for", ip).send();

    assert_eq!(from("192.0.2.10").await.unwrap().status(), 200, "inside the fence");
    assert_eq!(gw.upstream.count(), 1);
    // Not in the database, private, and IPv6.
    for unknown in ["198.51.100.10", "10.1.2.3", "2001:db8::1"] {
        assert_branded_refusal(from(unknown).await.unwrap(), 403).await;
    }
    assert_eq!(gw.upstream.count(), 1, "the app saw no one from outside");
    // The fence covers the gateway's own pages too, so ask from inside.
    assert_eq!(from("192.0.2.10").await.unwrap().status(), 200, "the gateway still answers");
}

#[tokio::test]
async fn a_request_whose_assertion_cannot_be_signed_is_refused() {
    let (gw, _switches) = start().await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;

    // Every signing key retired behind the gateway's back: nothing can sign.
    let path = gw.data_dir().join("signing-keys.json");
    let mut keys: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in keys["keys"].as_array_mut().unwrap() {
        key["retired_at"] = json!(gw.now());
    }
    std::fs::write(&path, keys.to_string()).unwrap();
    assert!(gw.gateway().assertions.reload_keys().await.unwrap());

    assert_branded_refusal(client.get(gw.app("/")).send().await.unwrap(), 503).await;
    assert_eq!(gw.upstream.count(), 0, "the app saw no request without its assertion");
    assert_still_answers(&gw).await;
}

/// A gateway whose shared cache (throttle counts, ceremonies, reveals) can
/// be switched off.
async fn start_with_cache() -> (TestGateway, Arc<std::sync::atomic::AtomicBool>) {
    let mut switch = None;
    let gw = TestGateway::start_with_backends(
        Setup::default(),
        |sqlite| Arc::new(sqlite),
        |clock| {
            let (cache, down) = common::failing_cache::FailingCache::new(clock);
            switch = Some(down);
            Arc::new(cache)
        },
    )
    .await;
    (gw, switch.expect("the cache was made"))
}

#[tokio::test]
async fn a_password_the_throttle_cannot_count_is_not_checked() {
    let (gw, cache_down) = start_with_cache().await;
    let client = gw.browser();
    let form = page(&gw, &client, "/.stepgate/signin").await;
    let csrf = form_value(&form, "csrf");

    cache_down.store(true, std::sync::atomic::Ordering::SeqCst);
    let response = client
        .post(gw.app("/.stepgate/signin"))
        .form(&[("csrf", csrf.as_str()), ("username", ALICE), ("password", ALICE_PASSWORD), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_branded_refusal(response, 503).await;
    assert_eq!(gw.gateway().password_hashing.started(), 0, "the password was not even hashed");
    assert_still_answers(&gw).await;

    cache_down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await.status(), 303, "signing in works again");
}

#[tokio::test]
async fn a_code_the_throttle_cannot_count_does_not_pass() {
    let (gw, cache_down) = start_with_cache().await;
    let (client, csrf, code) = totp_challenge(&gw).await;
    let submit = || {
        client
            .post(gw.app("/.stepgate/second-factor/totp"))
            .form(&[("csrf", csrf.as_str()), ("code", code.as_str()), ("rd", "/admin/")])
            .send()
    };

    cache_down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_branded_refusal(submit().await.unwrap(), 503).await;
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 302, "the second factor is still asked for");
    assert_eq!(gw.upstream.count(), 0, "the app saw nothing");

    cache_down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(submit().await.unwrap().status(), 303, "the same code passes once the cache is back");
}
