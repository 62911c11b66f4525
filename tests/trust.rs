//! Risk outranks a trusted browser: a sign-in of low confidence is asked
//! for the second factor on a browser the user trusts, and by default ends
//! that trust. Clients in different places come through a trusted proxy's
//! X-Forwarded-For, placed by a City database built here.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;

const LONDON: &str = "192.0.2.10";
/// In London too, but in a network the configuration distrusts.
const LONDON_BLOCKLISTED: &str = "192.0.2.200";
const SEATTLE: &str = "198.51.100.10";

fn write_city_database(dir: &Path) -> PathBuf {
    let mut cities = mmdb_writer::Writer::new("GeoIP2-City");
    let places = [
        ("192.0.2.0/24", json!({ "country": { "iso_code": "GB" }, "location": { "latitude": 51.51, "longitude": -0.13 } })),
        ("198.51.100.0/24", json!({ "country": { "iso_code": "US" }, "location": { "latitude": 47.61, "longitude": -122.33 } })),
    ];
    for (net, record) in places {
        cities.insert(net.parse::<ipnet::IpNet>().unwrap(), &record).unwrap();
    }
    let path = dir.join("city.mmdb");
    std::fs::write(&path, cities.to_bytes().unwrap()).unwrap();
    path
}

const APPS: &str = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]

[[apps.rules]]
path = "/"
policy = "adaptive"
"#;

/// The gateway, and the directory of its database, which lives as long.
struct GeoGateway {
    gw: TestGateway,
    _databases: tempfile::TempDir,
}

async fn start(risk: &str) -> GeoGateway {
    let databases = tempfile::tempdir().unwrap();
    let city = write_city_database(databases.path());
    let extra = format!(
        "[geoip]\ncity = \"{}\"\n\n[networks]\nblocklist = [\"192.0.2.128/25\"]\n\n[risk]\nuntrusted_networks = [\"blocklist\"]\n{risk}\n",
        city.display()
    );
    let server_extra = "trusted_proxies = [\"127.0.0.0/8\"]".into();
    let gw = TestGateway::start_with(Setup { extra, server_extra, apps: APPS.into(), ..Setup::default() }).await;
    GeoGateway { gw, _databases: databases }
}

async fn get_from(gw: &TestGateway, client: &reqwest::Client, ip: &str, path: &str) -> reqwest::Response {
    client.get(gw.app(path)).header("x-forwarded-for", ip).send().await.unwrap()
}

async fn sign_in_from(gw: &TestGateway, client: &reqwest::Client, ip: &str) {
    let page = get_from(gw, client, ip, "/.stepgate/signin").await.text().await.unwrap();
    let response = client
        .post(gw.app("/.stepgate/signin"))
        .header("x-forwarded-for", ip)
        .form(&[("csrf", form_value(&page, "csrf").as_str()), ("username", ALICE), ("password", ALICE_PASSWORD), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "the password is accepted");
}

async fn sign_out_from(gw: &TestGateway, client: &reqwest::Client, ip: &str) {
    let page = get_from(gw, client, ip, "/.stepgate/signout").await.text().await.unwrap();
    let response = client
        .post(gw.app("/.stepgate/signout"))
        .header("x-forwarded-for", ip)
        .form(&[("csrf", form_value(&page, "csrf"))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A browser signed in from London that enrolled an authenticator app and
/// asked to be trusted, then signed out.
async fn trusted_browser(gw: &TestGateway) -> reqwest::Client {
    let browser = gw.browser();
    sign_in_from(gw, &browser, LONDON).await;
    let page = get_from(gw, &browser, LONDON, "/.stepgate/second-factor").await.text().await.unwrap();
    let secret = regex::Regex::new(r#"id="secret">([A-Z2-7=]+)<"#).unwrap().captures(&page).unwrap()[1].to_string();
    let (csrf, code) = (form_value(&page, "csrf"), totp::code(&secret, gw.now()));
    let enrolled = browser
        .post(gw.app("/.stepgate/second-factor/totp/enroll"))
        .header("x-forwarded-for", LONDON)
        .form(&[("csrf", csrf.as_str()), ("code", code.as_str()), ("rd", "/"), ("remember", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(enrolled.status(), 303);
    sign_out_from(gw, &browser, LONDON).await;
    browser
}

async fn is_trusted(gw: &TestGateway) -> bool {
    !gw.gateway().store.trusted_devices(ALICE, gw.now()).await.unwrap().is_empty()
}

#[tokio::test]
async fn impossible_travel_asks_a_trusted_browser_for_the_second_factor_and_ends_its_trust() {
    let started = start("").await;
    let gw = &started.gw;
    let browser = trusted_browser(gw).await;
    gw.clock.advance(24 * 3600);
    sign_in_from(gw, &browser, LONDON).await;
    assert_eq!(get_from(gw, &browser, LONDON, "/reports").await.status(), 200, "home, on the trusted browser");
    sign_out_from(gw, &browser, LONDON).await;

    // A minute later, the trusted browser's cookies and the password, from Seattle.
    gw.clock.advance(60);
    sign_in_from(gw, &browser, SEATTLE).await;
    let response = get_from(gw, &browser, SEATTLE, "/reports").await;
    assert_eq!(response.status(), 302, "low confidence outranks the trust");
    assert!(response.headers()["location"].to_str().unwrap().starts_with("/.stepgate/second-factor"));
    assert!(!is_trusted(gw).await, "and ends it");
    let settings = get_from(gw, &browser, SEATTLE, "/.stepgate/settings").await;
    assert_eq!(settings.status(), 303, "the password alone does not open the security page either");
}

#[tokio::test]
async fn a_trust_that_outlives_a_risky_sign_in_still_does_not_count_at_low_confidence() {
    let started = start("low_confidence_ends_trust = false").await;
    let gw = &started.gw;
    let browser = trusted_browser(gw).await;
    gw.clock.advance(24 * 3600);
    sign_in_from(gw, &browser, LONDON_BLOCKLISTED).await;
    assert_eq!(get_from(gw, &browser, LONDON_BLOCKLISTED, "/reports").await.status(), 302, "an untrusted address is low confidence");
    assert!(is_trusted(gw).await, "the trust stays when configured so");
    sign_out_from(gw, &browser, LONDON_BLOCKLISTED).await;

    // A day later from a new country, a medium-confidence sign-in: the trust counts.
    gw.clock.advance(24 * 3600);
    sign_in_from(gw, &browser, SEATTLE).await;
    assert_eq!(get_from(gw, &browser, SEATTLE, "/reports").await.status(), 200);
}

fn explain(config: &Path, ip: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["policy", "explain", "--config"])
        .arg(config)
        .args(["--host", "app.test", "--path", "/reports", "--user", ALICE, "--trusted-browser", "--ip", ip])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn policy_explain_says_when_a_trusted_browser_does_not_count() {
    let started = start("").await;
    let gw = &started.gw;
    let risky = explain(&gw.config_path(), LONDON_BLOCKLISTED);
    assert!(risky.contains("browser: trusted, but not at low confidence"), "{risky}");
    assert!(risky.contains("the sign-in ends the trust"), "{risky}");
    assert!(risky.contains("decision: a second factor is needed"), "{risky}");
    let home = explain(&gw.config_path(), LONDON);
    assert!(home.contains("browser: trusted: adaptive rules skip the second factor"), "{home}");
    assert!(home.contains("decision: allow"), "{home}");
}

#[tokio::test]
async fn trusting_a_browser_is_audited() {
    let started = start("").await;
    let gw = &started.gw;
    trusted_browser(gw).await;
    let query = stepgate::store::AuditQuery { kind: Some("trusted_browser_added".into()), limit: 10, ..Default::default() };
    let events = gw.gateway().store.audit_events(&query).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].username.as_deref(), Some(ALICE));
    assert_eq!(events[0].ip.as_deref(), Some(LONDON));
    assert_eq!(events[0].country.as_deref(), Some("GB"));
    assert!(events[0].details.contains("\"until\""), "{events:?}");
}
