//! Adaptive, geo/IP and step-up policy through the real proxy. Clients in
//! different places are simulated by a trusted proxy's X-Forwarded-For, and
//! the MaxMind databases are built here with known answers.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

const ZURICH: &str = "192.0.2.10";
const ZURICH_OFFICE: &str = "192.0.2.200";
const NEW_YORK: &str = "198.51.100.10";
const TOR_EXIT: &str = "198.51.100.200";
const PYONGYANG: &str = "203.0.113.10";
const BERLIN_V6: &str = "2001:db8::10";

fn city(country: &str, continent: &str, name: &str, latitude: f64, longitude: f64) -> Value {
    json!({
        "country": { "iso_code": country, "names": { "en": country } },
        "continent": { "code": continent },
        "city": { "names": { "en": name } },
        "location": { "latitude": latitude, "longitude": longitude }
    })
}

/// A City and an Anonymous-IP database with known answers, in `dir`.
fn write_databases(dir: &Path) -> (PathBuf, PathBuf) {
    let mut cities = mmdb_writer::Writer::new("GeoIP2-City");
    let places = [
        ("192.0.2.0/24", city("CH", "EU", "Zurich", 47.37, 8.54)),
        ("198.51.100.0/24", city("US", "NA", "New York", 40.71, -74.0)),
        ("203.0.113.0/24", city("KP", "AS", "Pyongyang", 39.03, 125.75)),
        ("2001:db8::/32", city("DE", "EU", "Berlin", 52.52, 13.40)),
    ];
    for (net, record) in places {
        cities.insert(net.parse::<ipnet::IpNet>().unwrap(), &record).unwrap();
    }
    let mut anonymous = mmdb_writer::Writer::new("GeoIP2-Anonymous-IP");
    anonymous
        .insert("198.51.100.128/25".parse::<ipnet::IpNet>().unwrap(), &json!({ "is_anonymous": true, "is_tor_exit_node": true }))
        .unwrap();
    let city_path = dir.join("city.mmdb");
    let anonymous_path = dir.join("anonymous.mmdb");
    std::fs::write(&city_path, cities.to_bytes().unwrap()).unwrap();
    std::fs::write(&anonymous_path, anonymous.to_bytes().unwrap()).unwrap();
    (city_path, anonymous_path)
}

const APPS: &str = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]
countries_deny = ["KP"]

[[apps.rules]]
path = "/intranet/"
networks = ["office"]
policy = "bypass"

[[apps.rules]]
path = "/intranet/"
policy = "always"

[[apps.rules]]
path = "/eu-only/"
countries_allow = ["CH", "DE"]
policy = "never"

[[apps.rules]]
path = "/admin/delete"
policy = "always"
max_age = "5m"

[[apps.rules]]
path = "/admin/"
groups = ["admins"]
policy = "always"

[[apps.rules]]
path = "/admin/"
policy = "deny"

[[apps.rules]]
path = "/"
policy = "adaptive"
"#;

struct GeoGateway {
    gw: TestGateway,
    _databases: tempfile::TempDir,
}

async fn start() -> GeoGateway {
    let databases = tempfile::tempdir().unwrap();
    let (city, anonymous) = write_databases(databases.path());
    let extra = format!(
        "[geoip]\ncity = \"{}\"\nanonymous_ip = \"{}\"\n\n[networks]\noffice = [\"192.0.2.128/25\"]\n",
        city.display(),
        anonymous.display()
    );
    let gw = TestGateway::start_with(Setup {
        extra,
        server_extra: "trusted_proxies = [\"127.0.0.0/8\"]".into(),
        apps: APPS.into(),
        ..Setup::default()
    })
    .await;
    GeoGateway { gw, _databases: databases }
}

/// A GET as if from `ip`, through the trusted local proxy.
async fn get_from(gw: &TestGateway, client: &reqwest::Client, ip: &str, path: &str) -> reqwest::Response {
    client.get(gw.app(path)).header("x-forwarded-for", ip).send().await.unwrap()
}

/// Signs in with a password from `ip`; returns the sign-in POST's response.
async fn sign_in_from(gw: &TestGateway, client: &reqwest::Client, ip: &str, user: &str, password: &str) -> reqwest::Response {
    let page = get_from(gw, client, ip, "/.stepgate/signin").await.text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    client
        .post(gw.app("/.stepgate/signin"))
        .header("x-forwarded-for", ip)
        .form(&[("csrf", csrf.as_str()), ("username", user), ("password", password), ("rd", "/")])
        .send()
        .await
        .unwrap()
}

/// The claims of the assertion the upstream last received (not verified
/// here: other tests verify signatures).
fn last_claims(gw: &TestGateway) -> Value {
    let token = gw.upstream.last().headers["x-stepgate-assertion"].to_str().unwrap().to_string();
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&data_encoding::BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap()).unwrap()
}

#[tokio::test]
async fn a_fenced_out_country_never_sees_the_sign_in_page() {
    let GeoGateway { gw, .. } = start().await;
    let client = gw.browser();
    let response = get_from(&gw, &client, PYONGYANG, "/").await;
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("not available from your location"));
    assert_eq!(get_from(&gw, &client, ZURICH, "/").await.status(), 302, "others are asked to sign in");
    // The fence covers the whole app, its sign-in pages included.
    for page in ["/.stepgate/signin", "/.stepgate/second-factor", "/.stepgate/settings"] {
        assert_eq!(get_from(&gw, &client, PYONGYANG, page).await.status(), 403, "{page}");
    }
    let page = get_from(&gw, &client, ZURICH, "/.stepgate/signin").await.text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    let fenced_sign_in = client
        .post(gw.app("/.stepgate/signin"))
        .header("x-forwarded-for", PYONGYANG)
        .form(&[("csrf", csrf.as_str()), ("username", ALICE), ("password", ALICE_PASSWORD), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(fenced_sign_in.status(), 403);
    assert!(fenced_sign_in.headers().get("set-cookie").is_none(), "no session is created");

    // A rule's own fence: only CH and DE (IPv6 included) reach /eu-only/.
    let alice = gw.browser();
    sign_in_from(&gw, &alice, ZURICH, ALICE, ALICE_PASSWORD).await;
    assert_eq!(get_from(&gw, &alice, ZURICH, "/eu-only/").await.status(), 200);
    assert_eq!(get_from(&gw, &alice, BERLIN_V6, "/eu-only/").await.status(), 200);
    assert_eq!(get_from(&gw, &alice, &format!("::ffff:{ZURICH}"), "/eu-only/").await.status(), 200, "IPv4-mapped");
    assert_eq!(get_from(&gw, &alice, NEW_YORK, "/eu-only/").await.status(), 403);
    assert_eq!(get_from(&gw, &alice, "127.0.0.1", "/eu-only/").await.status(), 403, "an unknown country is not allowed");
}

#[tokio::test]
async fn the_office_network_bypasses_and_everyone_else_needs_two_factors() {
    let GeoGateway { gw, .. } = start().await;
    let client = gw.api_client();
    assert_eq!(get_from(&gw, &client, ZURICH_OFFICE, "/intranet/wiki").await.status(), 200);
    assert_eq!(get_from(&gw, &client, ZURICH, "/intranet/wiki").await.status(), 401);
    // A spoofed X-Forwarded-For from an untrusted peer is ignored: the
    // trusted peer here is 127.0.0.1, so use a client that claims the office
    // through a second, untrusted hop.
    let spoofed =
        client.get(gw.app("/intranet/wiki")).header("x-forwarded-for", format!("{ZURICH_OFFICE}, {NEW_YORK}")).send().await.unwrap();
    assert_eq!(spoofed.status(), 401, "only the hop the trusted proxy saw counts");
}

#[tokio::test]
async fn group_rules_ask_who_you_are_first() {
    let GeoGateway { gw, .. } = start().await;
    let anonymous = gw.api_client();
    let response = get_from(&gw, &anonymous, ZURICH, "/admin/users").await;
    assert_eq!(response.status(), 401);
    let bob = gw.browser();
    sign_in_from(&gw, &bob, ZURICH, BOB, BOB_PASSWORD).await;
    assert_eq!(get_from(&gw, &bob, ZURICH, "/admin/users").await.status(), 403, "bob is not an admin");
    let alice = gw.browser();
    sign_in_from(&gw, &alice, ZURICH, ALICE, ALICE_PASSWORD).await;
    let response = get_from(&gw, &alice, ZURICH, "/admin/users").await;
    assert_eq!(response.status(), 302, "an admin is asked for a second factor");
}

#[tokio::test]
async fn adaptive_asks_a_new_device_and_trusts_a_remembered_one() {
    let GeoGateway { gw, .. } = start().await;
    let browser = gw.browser();
    sign_in_from(&gw, &browser, ZURICH, ALICE, ALICE_PASSWORD).await;
    let response = get_from(&gw, &browser, ZURICH, "/reports").await;
    assert_eq!(response.status(), 302, "a new device lowers the confidence");
    assert!(response.headers()["location"].to_str().unwrap().starts_with("/.stepgate/second-factor"));

    // Enrol, ticking "trust this browser".
    let page = get_from(&gw, &browser, ZURICH, "/.stepgate/second-factor").await.text().await.unwrap();
    assert!(page.contains("Trust this browser for 30 days"));
    enroll_totp_from(&gw, &browser, ZURICH, true).await;
    assert_eq!(get_from(&gw, &browser, ZURICH, "/reports").await.status(), 200);
    let claims = last_claims(&gw);
    assert_eq!(claims["risk"], json!({ "confidence": "medium", "signals": ["new_device"] }));
    assert_eq!(claims["country"], "CH");

    // Signed out and in again on the same browser: known and trusted.
    let page = get_from(&gw, &browser, ZURICH, "/.stepgate/signout").await.text().await.unwrap();
    browser.post(gw.app("/.stepgate/signout")).form(&[("csrf", form_value(&page, "csrf"))]).send().await.unwrap();
    gw.clock.advance(3600);
    sign_in_from(&gw, &browser, ZURICH, ALICE, ALICE_PASSWORD).await;
    assert_eq!(get_from(&gw, &browser, ZURICH, "/reports").await.status(), 200, "no second factor needed");
    let claims = last_claims(&gw);
    assert_eq!(claims["risk"], json!({ "confidence": "high", "signals": [] }));
    assert_eq!(claims["amr"], json!(["pwd"]), "the assertion says what was actually done");

    // `always` rules still want the second factor on a trusted browser.
    assert_eq!(get_from(&gw, &browser, ZURICH, "/admin/users").await.status(), 302);
}

#[tokio::test]
async fn impossible_travel_and_anonymous_ips_lower_the_confidence() {
    let GeoGateway { gw, .. } = start().await;
    let first = gw.browser();
    sign_in_from(&gw, &first, ZURICH, ALICE, ALICE_PASSWORD).await;
    gw.clock.advance(600);
    // Ten minutes later, from New York.
    let second = gw.browser();
    sign_in_from(&gw, &second, NEW_YORK, ALICE, ALICE_PASSWORD).await;
    let secret = enroll_totp_from(&gw, &second, NEW_YORK, false).await;
    assert_eq!(get_from(&gw, &second, NEW_YORK, "/reports").await.status(), 200);
    let signals = last_claims(&gw)["risk"]["signals"].clone();
    assert_eq!(signals, json!(["new_device", "new_country", "impossible_travel"]));
    assert_eq!(last_claims(&gw)["risk"]["confidence"], "low");

    gw.clock.advance(24 * 3600);
    let third = gw.browser();
    sign_in_from(&gw, &third, TOR_EXIT, ALICE, ALICE_PASSWORD).await;
    let response = get_from(&gw, &third, TOR_EXIT, "/reports").await;
    assert_eq!(response.status(), 302, "a Tor exit is untrusted");
    let page = get_from(&gw, &third, TOR_EXIT, "/.stepgate/second-factor").await.text().await.unwrap();
    let response = third
        .post(gw.app("/.stepgate/second-factor/totp"))
        .header("x-forwarded-for", TOR_EXIT)
        .form(&[("csrf", form_value(&page, "csrf").as_str()), ("code", totp::code(&secret, gw.now()).as_str()), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    get_from(&gw, &third, TOR_EXIT, "/reports").await;
    assert!(last_claims(&gw)["risk"]["signals"].as_array().unwrap().contains(&json!("untrusted_ip")));
}

/// Enrols TOTP from `ip`, ticking "trust this browser" when `remember`;
/// returns the secret.
async fn enroll_totp_from(gw: &TestGateway, client: &reqwest::Client, ip: &str, remember: bool) -> String {
    let page = get_from(gw, client, ip, "/.stepgate/second-factor").await.text().await.unwrap();
    let secret = regex::Regex::new(r#"id="secret">([A-Z2-7=]+)<"#).unwrap().captures(&page).unwrap()[1].to_string();
    let (csrf, code) = (form_value(&page, "csrf"), totp::code(&secret, gw.now()));
    let mut form = vec![("csrf", csrf.as_str()), ("code", code.as_str()), ("rd", "/")];
    if remember {
        form.push(("remember", "1"));
    }
    let response =
        client.post(gw.app("/.stepgate/second-factor/totp/enroll")).header("x-forwarded-for", ip).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 303);
    secret
}

#[tokio::test]
async fn max_age_steps_up_without_signing_in_again() {
    let GeoGateway { gw, .. } = start().await;
    let alice = gw.browser();
    sign_in_from(&gw, &alice, ZURICH, ALICE, ALICE_PASSWORD).await;
    let secret = enroll_totp_from(&gw, &alice, ZURICH, false).await;
    assert_eq!(get_from(&gw, &alice, ZURICH, "/admin/delete").await.status(), 200);
    let first_auth_time = last_claims(&gw)["auth_time"].as_i64().unwrap();

    gw.clock.advance(6 * 60);
    let response = gw.api_client().get(gw.app("/admin/delete")).header("x-forwarded-for", ZURICH).send().await.unwrap();
    assert_eq!(response.status(), 401, "no session at all");
    let response = get_from(&gw, &alice, ZURICH, "/admin/delete?id=7").await;
    assert_eq!(response.status(), 302, "the second factor is older than five minutes");
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/.stepgate/second-factor?rd="), "{location}");
    assert!(location.contains("admin%2Fdelete%3Fid%3D7"), "back to the same request: {location}");
    assert_eq!(get_from(&gw, &alice, ZURICH, "/admin/users").await.status(), 200, "other admin pages need no step-up");

    // A form POST that needs the step-up gets a page that leads back.
    let response = alice
        .post(gw.app("/admin/delete"))
        .header("x-forwarded-for", ZURICH)
        .header("referer", gw.app("/admin/items"))
        .form(&[("id", "7")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let page = response.text().await.unwrap();
    assert!(page.contains("submit it again"), "{page}");
    assert!(page.contains("admin%2Fitems"), "returns to the page the form was on: {page}");

    let page = get_from(&gw, &alice, ZURICH, "/.stepgate/second-factor").await.text().await.unwrap();
    let response = alice
        .post(gw.app("/.stepgate/second-factor/totp"))
        .header("x-forwarded-for", ZURICH)
        .form(&[
            ("csrf", form_value(&page, "csrf").as_str()),
            ("code", totp::code(&secret, gw.now()).as_str()),
            ("rd", "/admin/delete?id=7"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/admin/delete?id=7");
    assert_eq!(get_from(&gw, &alice, ZURICH, "/admin/delete?id=7").await.status(), 200);
    let claims = last_claims(&gw);
    assert!(claims["auth_time"].as_i64().unwrap() >= first_auth_time + 360, "auth_time is the fresh factor");
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
}

fn explain(config: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["policy", "explain", "--config"])
        .arg(config)
        .args(["--host", "app.test"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn policy_explain_names_the_rule_and_why_the_earlier_ones_did_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let (city, anonymous) = write_databases(dir.path());
    std::fs::write(
        dir.path().join("users.toml"),
        format!(
            "[[users]]\nusername = \"alice\"\ndisplay_name = \"Alice\"\nemail = \"a@example.com\"\ngroups = [\"admins\"]\npassword = \"{}\"\n",
            stepgate::users::hash_password("x")
        ),
    )
    .unwrap();
    let config = dir.path().join("stepgate.toml");
    let text = format!(
        "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"data\"\n[geoip]\ncity = \"{}\"\nanonymous_ip = \"{}\"\n[networks]\noffice = [\"192.0.2.128/25\"]\n{}",
        city.display(),
        anonymous.display(),
        APPS.replace("{upstream}", "127.0.0.1:9")
    );
    std::fs::write(&config, &text).unwrap();
    let rule = |n: usize| {
        let line = text.lines().enumerate().filter(|(_, l)| *l == "[[apps.rules]]").nth(n - 1).unwrap().0 + 1;
        format!("rule {n} (line {line})")
    };

    let fenced = explain(&config, &["--path", "/", "--ip", PYONGYANG]);
    assert!(fenced.contains("country KP,"), "{fenced}");
    assert!(fenced.contains("decision: deny: the client's country is not allowed"), "{fenced}");

    let office = explain(&config, &["--path", "/intranet/x", "--ip", ZURICH_OFFICE]);
    assert!(office.contains(&format!("{}: matches, policy bypass", rule(1))), "{office}");

    let outside = explain(&config, &["--path", "/intranet/x", "--ip", ZURICH]);
    assert!(outside.contains(&format!("{}: no match, the client IP is in none of its networks", rule(1))), "{outside}");
    assert!(outside.contains(&format!("{}: matches, policy always", rule(2))), "{outside}");
    assert!(outside.contains("decision: sign in first"), "{outside}");

    let stale = explain(&config, &["--path", "/admin/delete", "--ip", ZURICH, "--user", "alice", "--second-factor-age", "600"]);
    assert!(stale.contains(&format!("{}: no match, the path does not match", rule(3))), "{stale}");
    assert!(stale.contains("step up: the last second factor is older than 300 s"), "{stale}");

    let tor = explain(&config, &["--path", "/reports", "--ip", TOR_EXIT, "--user", "alice"]);
    assert!(tor.contains("risk: untrusted_ip; confidence Low"), "{tor}");
    assert!(tor.contains("a second factor is needed: the risk signals lower the confidence"), "{tor}");
}

#[tokio::test]
async fn a_trusted_browser_is_listed_and_can_be_revoked() {
    let GeoGateway { gw, .. } = start().await;
    let browser = gw.browser();
    sign_in_from(&gw, &browser, ZURICH, ALICE, ALICE_PASSWORD).await;
    enroll_totp_from(&gw, &browser, ZURICH, true).await;
    let page = get_from(&gw, &browser, ZURICH, "/.stepgate/signout").await.text().await.unwrap();
    browser.post(gw.app("/.stepgate/signout")).form(&[("csrf", form_value(&page, "csrf"))]).send().await.unwrap();

    // A day later from a new country: medium confidence, but the browser is trusted.
    gw.clock.advance(24 * 3600);
    sign_in_from(&gw, &browser, BERLIN_V6, ALICE, ALICE_PASSWORD).await;
    assert_eq!(get_from(&gw, &browser, BERLIN_V6, "/reports").await.status(), 200);

    let settings = get_from(&gw, &browser, BERLIN_V6, "/.stepgate/settings").await.text().await.unwrap();
    assert!(settings.contains("This browser"), "{settings}");
    let device = form_value(&settings, "device");
    let response = browser
        .post(gw.app("/.stepgate/settings/trusted-browsers/revoke"))
        .header("x-forwarded-for", BERLIN_V6)
        .form(&[("csrf", form_value(&settings, "csrf").as_str()), ("device", device.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("no longer trusted") && page.contains("No browser skips"), "{page}");
    assert_eq!(get_from(&gw, &browser, BERLIN_V6, "/reports").await.status(), 302, "the new country now needs a second factor");

    // Revoking needs the session's CSRF token.
    let forged = browser
        .post(gw.app("/.stepgate/settings/trusted-browsers/revoke"))
        .form(&[("csrf", "forged"), ("device", device.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let anonymous = gw.browser().get(gw.app("/.stepgate/settings")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303, "signed-out visitors are sent to sign in");
}

/// A rule with a CEL `when` expression: outside Switzerland, /finance/ is
/// refused to everyone but admins.
#[tokio::test]
async fn a_when_expression_decides_on_the_country_and_the_groups() {
    let databases = tempfile::tempdir().unwrap();
    let (city, anonymous) = write_databases(databases.path());
    let apps = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]

[[apps.rules]]
path = "/finance/"
when = 'request.geo.country != "CH" && !("admins" in user.groups)'
policy = "deny"

[[apps.rules]]
path = "/"
policy = "never"
"#;
    let gw = TestGateway::start_with(Setup {
        extra: format!("[geoip]\ncity = \"{}\"\nanonymous_ip = \"{}\"\n", city.display(), anonymous.display()),
        server_extra: "trusted_proxies = [\"127.0.0.0/8\"]".into(),
        apps: apps.into(),
        ..Setup::default()
    })
    .await;

    // Nobody signed in: from Zurich the expression is false whoever it is,
    // so the next rule asks for a password; from New York it depends on
    // the user, so they sign in first too.
    let anonymous = gw.api_client();
    assert_eq!(get_from(&gw, &anonymous, ZURICH, "/finance/report").await.status(), 401);
    assert_eq!(get_from(&gw, &anonymous, NEW_YORK, "/finance/report").await.status(), 401);

    let bob = gw.browser();
    sign_in_from(&gw, &bob, ZURICH, BOB, BOB_PASSWORD).await;
    assert_eq!(get_from(&gw, &bob, ZURICH, "/finance/report").await.status(), 200);
    assert_eq!(get_from(&gw, &bob, NEW_YORK, "/finance/report").await.status(), 403, "bob abroad");
    assert_eq!(get_from(&gw, &bob, NEW_YORK, "/elsewhere").await.status(), 200, "only /finance/ is fenced");

    let alice = gw.browser();
    sign_in_from(&gw, &alice, NEW_YORK, ALICE, ALICE_PASSWORD).await;
    assert_eq!(get_from(&gw, &alice, NEW_YORK, "/finance/report").await.status(), 200, "admins pass from anywhere");
    assert_eq!(get_from(&gw, &alice, ZURICH, "/finance/report").await.status(), 200);
    drop(databases);
}

/// A `deny` rule whose `when` expression fails (here for want of a
/// header) still refuses, through the gateway and in `policy explain`; a
/// `never` rule with the same condition does not match.
#[tokio::test]
async fn a_failing_when_expression_fails_closed_on_a_deny_rule() {
    let apps = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]

[[apps.rules]]
path = "/admin/"
when = 'request.headers["x-env"] == "prod"'
policy = "deny"

[[apps.rules]]
path = "/open/"
when = 'request.headers["x-env"] == "prod"'
policy = "never"

[[apps.rules]]
path = "/"
policy = "bypass"
"#;
    let gw = TestGateway::start_with(Setup { apps: apps.into(), ..Setup::default() }).await;
    let client = gw.api_client();
    let status = |path: &str, env: Option<&str>| {
        let request = client.get(gw.app(path));
        let request = match env {
            Some(env) => request.header("x-env", env),
            None => request,
        };
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status("/admin/x", None).await, 403, "no header: the deny rule fails closed");
    assert_eq!(status("/admin/x", Some("dev")).await, 200);
    assert_eq!(status("/admin/x", Some("prod")).await, 403);
    assert_eq!(status("/open/x", None).await, 200, "the `never` rule does not match: the bypass rule does");
    assert_eq!(status("/open/x", Some("prod")).await, 401);

    let explained = explain(&gw.config_path(), &["--path", "/admin/x"]);
    let failed_closed = "matches, policy deny: its `when` expression failed to evaluate: counted as matched (fail closed)";
    assert!(explained.contains(failed_closed), "{explained}");
}
