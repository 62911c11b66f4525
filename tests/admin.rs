//! The admin API and the `stepgate admin` commands, as a help desk (B2E)
//! and a customer's own administrator (B2B) use them: a real gateway, its
//! admin listener, the real binary as the client.

mod common;

use std::path::PathBuf;

use common::webauthn::{data_csrf, origin, page, post_json, SharedToken};
use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use stepgate::admin::{create_token, NewToken};
use webauthn_authenticator_rs::WebauthnAuthenticator;

const CAROL: &str = "carol";
const CAROL_PASSWORD: &str = "carol's passphrase";
const ALL_SCOPES: [&str; 6] = ["users:read", "factors:write", "sessions:write", "throttles:write", "tickets:write", "audit:read"];

/// Alice (staff) and Bob and Carol, who work for the customer Acme.
fn users() -> String {
    let user = |name: &str, groups: &str, password: &str| {
        format!(
            "[[users]]\nusername = \"{name}\"\ndisplay_name = \"{name}\"\nemail = \"{name}@example.com\"\ngroups = [{groups}]\npassword = \"{}\"\n\n",
            stepgate::users::hash_password(password)
        )
    };
    user(ALICE, "\"staff\"", ALICE_PASSWORD) + &user(BOB, "\"acme\"", BOB_PASSWORD) + &user(CAROL, "\"acme\"", CAROL_PASSWORD)
}

struct Admin {
    gw: TestGateway,
    url: String,
}

impl Admin {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// With `extra` sections in the configuration.
    async fn start_with(extra: &str) -> Self {
        Self::start_on(Setup { extra: extra.into(), ..Setup::default() }, "").await
    }

    /// With `admin` lines in the `[admin]` section.
    async fn start_with_admin(admin: &str) -> Self {
        Self::start_on(Setup::default(), admin).await
    }

    /// `setup` with the test's users and `admin` lines in an `[admin]` section.
    async fn start_on(setup: Setup, admin: &str) -> Self {
        let listen = free_port();
        let extra = format!("{}\n[admin]\nlisten = \"{listen}\"\n{admin}", setup.extra);
        let setup = Setup { extra, users: Some(users()), ..setup };
        let gw = TestGateway::start_with(setup).await;
        let addr = gw.running.admin.as_ref().expect("the admin listener runs").addr;
        Self { gw, url: format!("http://{addr}") }
    }

    async fn token(&self, name: &str, scopes: &[&str], groups: &[&str], lifetime: Option<i64>) -> String {
        let new = NewToken {
            name: name.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            lifetime,
        };
        create_token(self.gw.gateway().store.as_ref(), self.gw.now(), &new).await.expect("token")
    }

    fn request(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.url)).bearer_auth(token)
    }

    /// Runs `stepgate admin ARGS...` with this token; its standard output.
    async fn cli(&self, token: &str, args: &[&str]) -> String {
        let token_file = self.gw.dir.path().join(format!("token-{}", rand_suffix()));
        std::fs::write(&token_file, token).unwrap();
        let token_file = token_file.display().to_string();
        let mut all = vec!["admin", "--url", self.url.as_str(), "--token-file", token_file.as_str()];
        all.extend(args);
        run_stepgate(&all).await
    }
}

fn rand_suffix() -> String {
    stepgate::crypto::random_token()[..8].to_string()
}

/// Runs the binary without blocking the runtime the gateway serves on.
async fn run_stepgate(args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_stepgate")).args(args).output().await.expect("run stepgate");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "stepgate {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout
}

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}

/// Whether a browser's session still reaches the app (rather than being
/// sent to sign in).
async fn reaches(gw: &TestGateway, client: &reqwest::Client, path: &str) -> StatusCode {
    client.get(gw.app(path)).send().await.unwrap().status()
}

/// Adds a security key from the security page of a session that just
/// passed its second factor.
async fn add_security_key(gw: &TestGateway, client: &reqwest::Client, key: &mut WebauthnAuthenticator<SharedToken>) {
    let csrf = data_csrf(&page(gw, client, "/.stepgate/settings").await);
    let body = serde_json::json!({ "kind": "security_key", "name": "Desk key" });
    let start = post_json(gw, client, "/.stepgate/webauthn/register/start", &csrf, &body).await;
    assert_eq!(start.status(), 200, "{}", start.text().await.unwrap());
    let credential = key.do_registration(origin(), start.json().await.unwrap()).expect("software authenticator registers");
    let finish =
        post_json(gw, client, "/.stepgate/webauthn/register/finish", &csrf, &serde_json::json!({ "credential": credential })).await;
    assert_eq!(finish.status(), 200, "{}", finish.text().await.unwrap());
}

#[tokio::test]
async fn a_help_desk_resets_a_lost_phone_and_the_employee_enrols_again() {
    let admin = Admin::start_on(common::webauthn::setup(""), "").await;
    let gw = &admin.gw;
    let alice = gw.browser();
    assert_eq!(sign_in(gw, &alice, ALICE, ALICE_PASSWORD, "/admin/").await.status(), 303);
    enroll_totp(gw, &alice).await;
    add_security_key(gw, &alice, &mut WebauthnAuthenticator::new(SharedToken::new())).await;
    assert_eq!(reaches(gw, &alice, "/admin/").await, 200);
    let phone = stepgate::store::OobRow {
        id: 0,
        username: ALICE.into(),
        channel: "phone".into(),
        destination: "+41446681867".into(),
        name: "+41 •• ••• •• 67".into(),
        created: gw.now(),
        last_used: None,
    };
    gw.gateway().store.insert_oob(&phone).await.unwrap();

    let helpdesk = admin.token("helpdesk", &ALL_SCOPES, &[], None).await;
    let shown: Value = serde_json::from_str(&admin.cli(&helpdesk, &["--json", "users", "show", ALICE]).await).unwrap();
    let kinds: Vec<&str> = shown["factors"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["totp", "security_key", "phone"], "{shown}");
    assert!(!shown.to_string().contains("+41446681867"), "the number is shown masked only: {shown}");
    assert_eq!(shown["sessions"].as_array().unwrap().len(), 1, "{shown}");
    assert!(!shown.to_string().contains("secret"), "no secret is shown: {shown}");
    let table = admin.cli(&helpdesk, &["users", "list"]).await;
    assert!(table.starts_with("USER") && table.contains(ALICE) && table.contains(CAROL), "{table}");

    // The phone and the key are lost: the help desk resets Alice's MFA...
    let reset = admin.cli(&helpdesk, &["mfa", "reset", ALICE]).await;
    assert!(reset.contains("3 factors") && reset.contains("1 sessions ended"), "{reset}");
    assert!(gw.gateway().store.oob_factors(ALICE).await.unwrap().is_empty(), "the phone went with the rest");
    assert_eq!(reaches(gw, &alice, "/admin/").await, 302, "the live session is refused at once");
    // ...and sends her an enrolment ticket.
    let base = format!("http://app.test:{}", gw.addr.port());
    let ticket = admin.cli(&helpdesk, &["ticket", "create", ALICE, "--base-url", &base]).await;
    let link = ticket.lines().next().unwrap();

    // Alice signs in with her password, opens the link and enrols a new factor.
    assert_eq!(sign_in(gw, &alice, ALICE, ALICE_PASSWORD, "/admin/").await.status(), 303);
    assert_eq!(spend_ticket(&alice, link).await.status(), 303);
    enroll_totp(gw, &alice).await;
    assert_eq!(reaches(gw, &alice, "/admin/").await, 200);

    let events: Value = serde_json::from_str(&admin.cli(&helpdesk, &["--json", "audit", "list", "--user", ALICE]).await).unwrap();
    let steps: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["actor"].as_str().unwrap().to_string()))
        .collect();
    let expected = [
        ("sign_in", ALICE),
        ("factor_enrolled", ALICE),
        ("factor_enrolled", ALICE),
        ("mfa_reset", "helpdesk"),
        ("ticket_created", "helpdesk"),
        ("sign_in", ALICE),
        ("ticket_used", ALICE),
        ("factor_enrolled", ALICE),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(k, a)| (k.to_string(), a.to_string())).collect();
    assert_eq!(steps, expected, "{events}");
    assert_eq!(events[2]["details"]["method"], "security_key", "{events}");
    let first = &events[0];
    assert_eq!(first["ip"], "127.0.0.1");
    assert_eq!(first["app"], "app");
    assert_eq!(first["outcome"], "success");

    // Alice sees it all on her own security page.
    let page = alice.get(gw.app("/.stepgate/settings")).send().await.unwrap().text().await.unwrap();
    let activity = page.split("id=\"activity\"").nth(1).expect("a recent activity list");
    let lines = [
        "All second factors were reset <small>by helpdesk</small>",
        "An enrolment link was made for you <small>by helpdesk</small>",
        "Used an enrolment link",
        "Added a second factor",
        "Signed in",
        "127.0.0.1",
    ];
    for line in lines {
        assert!(activity.contains(line), "{line} in {activity}");
    }
}

/// Posts the ticket page's form for the link `url`; the response.
async fn spend_ticket(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let page = client.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200, "the link shows what it does");
    let page = page.text().await.unwrap();
    let (csrf, ticket) = (form_value(&page, "csrf"), form_value(&page, "t"));
    let action = url.split("/.stepgate/").next().unwrap().to_string() + "/.stepgate/ticket";
    client.post(action).form(&[("csrf", csrf.as_str()), ("t", ticket.as_str())]).send().await.unwrap()
}

#[tokio::test]
async fn an_enrolment_ticket_lets_an_employee_enrol_once_where_self_enrolment_is_off() {
    let admin = Admin::start_with("[totp]\nself_enrollment = false\n").await;
    let gw = &admin.gw;
    let alice = gw.browser();
    assert_eq!(sign_in(gw, &alice, ALICE, ALICE_PASSWORD, "/admin/").await.status(), 303);
    let no_factor = alice.get(gw.app("/.stepgate/second-factor")).send().await.unwrap();
    assert_eq!(no_factor.status(), 403, "without a ticket there is no way to enrol");

    let helpdesk = admin.token("helpdesk", &["tickets:write", "users:read", "audit:read"], &[], None).await;
    let base = format!("http://app.test:{}", gw.addr.port());
    let made = admin.cli(&helpdesk, &["ticket", "create", ALICE, "--base-url", &base]).await;
    let url = made.lines().next().unwrap().to_string();
    assert!(url.starts_with(&format!("{base}/.stepgate/ticket?t=")), "{made}");

    // Opening the link signed out asks for the password first, then comes back.
    let signed_out = gw.browser().get(&url).send().await.unwrap();
    assert_eq!(signed_out.status(), 303);
    assert!(signed_out.headers()["location"].to_str().unwrap().starts_with("/.stepgate/signin?rd=%2F.stepgate%2Fticket"));

    let spent = spend_ticket(&alice, &url).await;
    assert_eq!(spent.status(), 303);
    enroll_totp(gw, &alice).await;
    assert_eq!(reaches(gw, &alice, "/admin/").await, 200, "the enrolment passed the second factor");
    assert_eq!(spend_ticket(&alice, &url).await.status(), 410, "a ticket works once");

    // Another user's ticket, and an expired one, are refused too.
    let bobs = admin.token("other", &["tickets:write"], &[], None).await;
    let bobs = admin.cli(&bobs, &["ticket", "create", BOB, "--base-url", &base]).await;
    assert_eq!(spend_ticket(&alice, bobs.lines().next().unwrap()).await.status(), 410);
    let brief = admin.cli(&helpdesk, &["ticket", "create", ALICE, "--base-url", &base, "--expires", "1m"]).await;
    gw.clock.advance(61);
    assert_eq!(spend_ticket(&alice, brief.lines().next().unwrap()).await.status(), 410);
    let broken = alice.get(gw.app("/.stepgate/ticket?t=short")).send().await.unwrap();
    assert_eq!(broken.status(), 400);

    let listed: Value =
        admin.request(reqwest::Method::GET, "/v1/users/alice/tickets", &helpdesk).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(listed[1]["used_at"].is_i64() && listed[0]["used_at"].is_null(), "{listed}");
    assert!(!listed.to_string().contains(url.split("t=").nth(1).unwrap()), "the secret is never listed");
    let events: Value = serde_json::from_str(&admin.cli(&helpdesk, &["--json", "audit", "list", "--user", ALICE]).await).unwrap();
    let kinds: Vec<String> = events.as_array().unwrap().iter().map(|e| format!("{}:{}", e["kind"], e["outcome"])).collect();
    for expected in
        ["\"ticket_created\":\"success\"", "\"ticket_used\":\"success\"", "\"factor_enrolled\":\"success\"", "\"ticket_used\":\"failure\""]
    {
        assert!(kinds.iter().any(|k| k == expected), "{expected} in {kinds:?}");
    }
}

#[tokio::test]
async fn a_token_limited_to_a_group_sees_and_changes_only_that_group() {
    let admin = Admin::start().await;
    let gw = &admin.gw;
    for (user, password) in [(ALICE, ALICE_PASSWORD), (BOB, BOB_PASSWORD)] {
        assert_eq!(sign_in(gw, &gw.browser(), user, password, "/").await.status(), 303);
    }
    let acme = admin.token("acme-admin", &ALL_SCOPES, &["acme"], None).await;
    let page: Value = admin.request(reqwest::Method::GET, "/v1/users", &acme).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = page["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, [BOB, CAROL]);
    let reset = admin.request(reqwest::Method::POST, &format!("/v1/users/{BOB}/mfa/reset"), &acme).send().await.unwrap();
    assert_eq!(reset.status(), 200);

    use reqwest::Method;
    let outside = [
        (Method::GET, format!("/v1/users/{ALICE}"), None),
        (Method::DELETE, format!("/v1/users/{ALICE}/factors/totp"), None),
        (Method::POST, format!("/v1/users/{ALICE}/mfa/reset"), None),
        (Method::POST, format!("/v1/users/{ALICE}/recovery-codes"), None),
        (Method::DELETE, format!("/v1/users/{ALICE}/sessions"), None),
        (Method::DELETE, format!("/v1/users/{ALICE}/sessions/00"), None),
        (Method::DELETE, format!("/v1/users/{ALICE}/throttle"), None),
        (Method::GET, format!("/v1/users/{ALICE}/tickets"), None),
        (Method::POST, format!("/v1/users/{ALICE}/tickets"), Some(serde_json::json!({}))),
        (Method::DELETE, format!("/v1/users/{ALICE}/tickets/1"), None),
    ];
    for (method, path, body) in outside {
        let ask = |path: String| {
            let request = admin.request(method.clone(), &path, &acme);
            match &body {
                Some(body) => request.json(body),
                None => request,
            }
        };
        let answer = problem(ask(path.clone()).send().await.unwrap(), StatusCode::NOT_FOUND).await;
        // The same answer as for a user who does not exist.
        let nobody = problem(ask(path.replace(ALICE, "nobody")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
        assert_eq!(answer, nobody, "{method} {path}");
    }
    let address = admin.request(Method::DELETE, "/v1/addresses/192.0.2.7/throttle", &acme).send().await.unwrap();
    problem(address, StatusCode::FORBIDDEN).await;
    let alices_sessions = gw.gateway().store.sessions_of(ALICE).await.unwrap();
    assert_eq!(alices_sessions.len(), 1, "Alice was not touched");

    let events: Value = admin.request(Method::GET, "/v1/audit", &acme).send().await.unwrap().json().await.unwrap();
    let users: Vec<&str> = events["events"].as_array().unwrap().iter().filter_map(|e| e["user"].as_str()).collect();
    assert!(!users.is_empty() && users.iter().all(|user| *user == BOB || *user == CAROL), "{events}");
}

#[tokio::test]
async fn denials_reach_the_audit_log_with_who_and_where() {
    let admin = Admin::start().await;
    let gw = &admin.gw;
    let bob = gw.browser();
    assert_eq!(sign_in(gw, &bob, BOB, BOB_PASSWORD, "/").await.status(), 303);
    assert_eq!(reaches(gw, &bob, "/blocked/files").await, 403);
    assert_eq!(reaches(gw, &gw.browser(), "/blocked/anonymous").await, 403);
    let auditor = admin.token("auditor", &["audit:read"], &[], None).await;
    // Denials are recorded off the request path: wait for both.
    let mut denials = Vec::new();
    for _ in 0..200 {
        let page: Value =
            admin.request(reqwest::Method::GET, "/v1/audit?kind=access_denied", &auditor).send().await.unwrap().json().await.unwrap();
        denials = page["events"].as_array().unwrap().clone();
        if denials.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(denials.len(), 2, "{denials:?}");
    // Recorded off the request path, so in either order.
    let bobs = denials.iter().find(|e| e["user"] == BOB).expect("Bob's denial");
    let anonymous = denials.iter().find(|e| e["user"].is_null()).expect("the anonymous denial");
    assert_eq!(bobs["details"]["path"], "/blocked/files");
    assert_eq!(bobs["details"]["reason"], "deny");
    assert_eq!(bobs["outcome"], "refused");
    assert_eq!(anonymous["actor"], "anonymous");
    assert_eq!(anonymous["details"]["path"], "/blocked/anonymous");
    assert_eq!(anonymous["ip"], "127.0.0.1");
}

#[tokio::test]
async fn a_throttled_user_is_shown_and_lifted() {
    let admin = Admin::start_with("[limits]\npassword_failures = 3\n").await;
    let gw = &admin.gw;
    let carol = gw.browser();
    for _ in 0..3 {
        assert_eq!(sign_in(gw, &carol, CAROL, "guess", "/").await.status(), 401);
    }
    assert_eq!(sign_in(gw, &carol, CAROL, CAROL_PASSWORD, "/").await.status(), 429, "throttled, even with the right password");
    let desk = admin.token("desk", &["users:read", "throttles:write"], &[], None).await;
    let shown: Value = serde_json::from_str(&admin.cli(&desk, &["--json", "users", "show", CAROL]).await).unwrap();
    assert_eq!(shown["throttled"]["password"], true, "{shown}");
    assert_eq!(shown["throttled"]["second_factor"], false, "{shown}");
    admin.cli(&desk, &["throttle", "lift", CAROL]).await;
    admin.cli(&desk, &["throttle", "lift", "127.0.0.1"]).await;
    let shown: Value = serde_json::from_str(&admin.cli(&desk, &["--json", "users", "show", CAROL]).await).unwrap();
    assert_eq!(shown["throttled"]["password"], false, "{shown}");
    assert_eq!(sign_in(gw, &carol, CAROL, CAROL_PASSWORD, "/").await.status(), 303);
}

#[tokio::test]
async fn tokens_scopes_and_bodies_are_checked() {
    let admin = Admin::start().await;
    use reqwest::Method;
    let users = "/v1/users";
    let anonymous = reqwest::Client::new().get(format!("{}{users}", admin.url)).send().await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer realm=\"stepgate admin\"");
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let forged = format!("{}{}", stepgate::admin::auth::TOKEN_PREFIX, stepgate::crypto::random_token());
    for token in [forged.as_str(), "not a token", ""] {
        problem(admin.request(Method::GET, users, token).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    }

    let revoked = admin.token("revoked", &ALL_SCOPES, &[], None).await;
    assert!(admin.gw.gateway().store.revoke_admin_token("revoked").await.unwrap());
    problem(admin.request(Method::GET, users, &revoked).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let brief = admin.token("brief", &ALL_SCOPES, &[], Some(60)).await;
    assert_eq!(admin.request(Method::GET, users, &brief).send().await.unwrap().status(), 200);
    admin.gw.clock.advance(60);
    problem(admin.request(Method::GET, users, &brief).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;

    let reader = admin.token("reader", &["users:read"], &[], None).await;
    let body =
        problem(admin.request(Method::POST, "/v1/users/alice/mfa/reset", &reader).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    assert!(body["detail"].as_str().unwrap().contains("factors:write"), "{body}");
    problem(admin.request(Method::GET, "/v1/users/nobody", &reader).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    problem(admin.request(Method::GET, "/v1/users?limit=0", &reader).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    problem(admin.request(Method::GET, "/v1/users?limit=x", &reader).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    problem(admin.request(Method::GET, "/v1/nothing", &reader).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    problem(admin.request(Method::PUT, users, &reader).send().await.unwrap(), StatusCode::METHOD_NOT_ALLOWED).await;

    let desk = admin.token("desk", &["tickets:write", "throttles:write"], &[], None).await;
    let ticket = || admin.request(Method::POST, "/v1/users/alice/tickets", &desk).header("content-type", "application/json");
    problem(ticket().body("{\"lifetime\":").send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    problem(ticket().body("{\"lifetime\":\"a day\"}").send().await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    problem(ticket().body("{\"lifetime\":1}").send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    problem(ticket().body("{\"base_url\":\"https://evil.test\"}").send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let huge = format!("{{\"base_url\":\"{}\"}}", "a".repeat(64 * 1024));
    problem(ticket().body(huge).send().await.unwrap(), StatusCode::PAYLOAD_TOO_LARGE).await;
    let text = admin.request(Method::POST, "/v1/users/alice/tickets", &desk).body("{}").send().await.unwrap();
    problem(text, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(ticket().body("{}").send().await.unwrap().status(), 201);
    let overflow = admin.request(Method::DELETE, "/v1/users/alice/tickets/99999999999999999999", &desk).send().await.unwrap();
    problem(overflow, StatusCode::BAD_REQUEST).await;
    let address = |a: &str| admin.request(Method::DELETE, &format!("/v1/addresses/{a}/throttle"), &desk);
    assert_eq!(address("192.0.2.7").send().await.unwrap().status(), 204);
    assert_eq!(address("2001:db8::1").send().await.unwrap().status(), 204);
    problem(address("not-an-address").send().await.unwrap(), StatusCode::NOT_FOUND).await;
}

/// A sample's value in a scrape, parsed as Prometheus would; 0 when absent.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = scrape.lines().map(|line| Ok(line.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
    let value = parsed
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| s.value.clone());
    match value {
        Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v)) => v,
        Some(other) => panic!("{name}: unexpected {other:?}"),
        None => 0.0,
    }
}

#[tokio::test]
async fn metrics_are_scraped_and_move_with_sign_ins_and_requests() {
    let admin = Admin::start().await;
    let gw = &admin.gw;
    let token = admin.token("prometheus", &["metrics:read"], &[], None).await;
    let scrape = || async { admin.request(reqwest::Method::GET, "/metrics", &token).send().await.unwrap().text().await.unwrap() };
    let sign_ins =
        |text: &str| sample(text, "stepgate_security_events_total", &[("kind", "sign_in"), ("outcome", "success"), ("method", "password")]);
    let allowed = |text: &str| sample(text, "stepgate_requests_total", &[("app", "app"), ("decision", "allow"), ("status", "2xx")]);
    let before = scrape().await;
    let client = gw.browser();
    assert_eq!(sign_in(gw, &client, BOB, BOB_PASSWORD, "/").await.status(), 303);
    assert_eq!(reaches(gw, &client, "/hello").await, 200);
    let after = scrape().await;
    assert!(sign_ins(&after) >= sign_ins(&before) + 1.0, "{after}");
    assert!(allowed(&after) >= allowed(&before) + 1.0, "{after}");
    assert_eq!(sample(&after, "stepgate_active_sessions", &[]), 1.0, "this gateway's own sessions: {after}");
    assert_eq!(after.matches("# TYPE stepgate_active_sessions gauge").count(), 1, "{after}");
    assert!(sample(&after, "stepgate_request_duration_seconds_count", &[]) >= 2.0, "{after}");
    assert!(after.contains("stepgate_decision_duration_seconds_bucket"), "{after}");

    let other = admin.token("no-metrics", &["users:read"], &[], None).await;
    problem(admin.request(reqwest::Method::GET, "/metrics", &other).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    let limited = admin.token("acme-metrics", &["metrics:read"], &["acme"], None).await;
    problem(admin.request(reqwest::Method::GET, "/metrics", &limited).send().await.unwrap(), StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn the_geoip_build_time_is_scraped() {
    let city = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/geoip/GeoIP2-City-Test.mmdb");
    if !city.is_file() {
        println!("skipped: {} is not present", city.display());
        return;
    }
    let admin = Admin::start_with(&format!("[geoip]\ncity = \"{}\"\n", city.display())).await;
    let token = admin.token("prometheus", &["metrics:read"], &[], None).await;
    let scrape = admin.request(reqwest::Method::GET, "/metrics", &token).send().await.unwrap().text().await.unwrap();
    let built = sample(&scrape, "stepgate_geoip_build_timestamp_seconds", &[("database", "GeoIP2-City")]);
    assert!(built > 1_000_000_000.0, "{scrape}");
}

#[tokio::test]
async fn the_metrics_listener_needs_no_token_and_serves_nothing_else() {
    let metrics_listen = free_port();
    let admin = Admin::start_with_admin(&format!("metrics_listen = \"{metrics_listen}\"\n")).await;
    let port = admin.gw.running.admin.as_ref().unwrap().metrics_addr.unwrap().port();
    let scrape = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(scrape.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(scrape.text().await.unwrap().contains("stepgate_requests_total"));
    assert_eq!(reqwest::get(format!("http://127.0.0.1:{port}/v1/users")).await.unwrap().status(), 404);
}

#[tokio::test]
async fn the_openapi_document_describes_every_operation() {
    let admin = Admin::start().await;
    let document: Value = reqwest::get(format!("{}/openapi.json", admin.url)).await.unwrap().json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{document}");
    let paths = document["paths"].as_object().unwrap();
    for path in ["/v1/users", "/v1/users/{user}", "/v1/users/{user}/mfa/reset", "/v1/audit", "/v1/users/{user}/throttle", "/metrics"] {
        assert!(paths.contains_key(path), "{path} missing: {:?}", paths.keys());
    }
    assert_eq!(document["components"]["securitySchemes"]["token"]["scheme"], "bearer");
    let reset = &paths["/v1/users/{user}/mfa/reset"]["post"];
    assert_eq!(reset["security"][0]["token"][0], "factors:write");
    assert!(reset["responses"]["404"]["content"]["application/problem+json"].is_object(), "{reset}");
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_on_the_command_line() {
    let admin = Admin::start().await;
    let config = admin.gw.config_path().display().to_string();
    let created =
        run_stepgate(&["admin", "token", "create", "-c", &config, "--name", "desk", "--scope", "users:read", "--expires", "90d"]).await;
    let token = created.trim();
    assert!(token.starts_with("sgat_"), "{created}");
    let users = reqwest::Client::new().get(format!("{}/v1/users", admin.url)).bearer_auth(token).send().await.unwrap();
    assert_eq!(users.status(), 200);
    let listed = run_stepgate(&["admin", "token", "list", "-c", &config]).await;
    assert!(listed.contains("desk") && listed.contains("users:read") && !listed.contains(token), "{listed}");
    run_stepgate(&["admin", "token", "revoke", "-c", &config, "--name", "desk"]).await;
    let users = reqwest::Client::new().get(format!("{}/v1/users", admin.url)).bearer_auth(token).send().await.unwrap();
    assert_eq!(users.status(), 401, "a revoked token stops working at once");
    let audit = admin.gw.gateway().store.audit_events(&stepgate::store::AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
    let kinds: Vec<&str> = audit.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["admin_token_revoked", "admin_token_created"]);
    assert!(audit.iter().all(|e| !e.details.contains(token)), "the token never reaches the audit log");

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["admin", "token", "create", "-c", &config, "--name", "x", "--scope", "users:write"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown scope `users:write`"));
}

#[tokio::test]
async fn the_admin_api_serves_tls_with_its_own_certificate() {
    let listen = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_file, key_file): (PathBuf, PathBuf) = (dir.path().join("admin.pem"), dir.path().join("admin-key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let extra =
        format!("[admin]\nlisten = \"{listen}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n", cert_file.display(), key_file.display());
    let gw = TestGateway::start_with(Setup { extra, ..Setup::default() }).await;
    let port = gw.running.admin.as_ref().unwrap().addr.port();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", listen)
        .build()
        .unwrap();
    let document = client.get(format!("https://localhost:{port}/openapi.json")).send().await.unwrap();
    assert_eq!(document.status(), 200);
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/openapi.json")).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "no clear text on a TLS listener");
}

/// schemathesis (installed by scripts/setup) generates requests from the
/// OpenAPI document, valid and not, with a token holding every scope:
/// every answer must match the document and none may be a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_every_answer_in_the_document() {
    let schemathesis = concat!(env!("CARGO_MANIFEST_DIR"), "/target/tools/schemathesis/bin/schemathesis");
    assert!(std::path::Path::new(schemathesis).exists(), "run scripts/setup: it installs schemathesis");
    let admin = Admin::start().await;
    let token = admin.token("schemathesis", &[&ALL_SCOPES[..], &["metrics:read"]].concat(), &[], None).await;
    // Its crash cache goes to a directory of its own, not the checkout.
    let workdir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(schemathesis)
        .current_dir(workdir.path())
        .args(["run", &format!("{}/openapi.json", admin.url), "--checks", "all", "--max-examples", "25", "--workers", "1"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}\n{}", String::from_utf8_lossy(&output.stderr));
}
