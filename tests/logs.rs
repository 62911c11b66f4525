//! What the gateway logs, read back from its own log output: no secrets even
//! at debug, no line a client can forge, no unknown user name in clear, and
//! the warning alerting relies on.
//!
//! The tests of this file share one logging set-up (a process has one), at
//! debug, writing into memory.

mod common;

use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::webauthn::{enrol_key, finish_authentication, origin, password_session, start_authentication, SharedToken};
use common::*;
use stepgate::config::LogFormat;
use tracing_subscriber::fmt::MakeWriter;
use webauthn_authenticator_rs::WebauthnAuthenticator;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// The log of this test process, at debug, as a gateway configured with
/// `[logging] level = "debug"` writes it; only the tests' own HTTP client
/// (which logs the cookies it stores) is left out.
fn captured() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    const LEVEL: &str = "debug,cookie_store=info,reqwest=info,hyper_util=info";
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        stepgate::logging::install(LogFormat::Text, LEVEL, capture.clone()).expect("nothing else set up logging");
        capture
    })
}

/// The log, once it holds `count` lines with all of `parts` (access lines
/// are written after the response, so they may come a moment later).
async fn log_with(count: usize, parts: &[&str]) -> String {
    for _ in 0..400 {
        let log = captured().text();
        if log.lines().filter(|line| parts.iter().all(|part| line.contains(part))).count() >= count {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {count} log lines with {parts:?}:\n{}", captured().text());
}

fn cookie_value(response: &reqwest::Response, name: &str) -> String {
    let pair = set_cookie(response, name);
    pair.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

#[tokio::test]
async fn debug_logs_of_a_signed_in_request_hold_no_cookie_or_assertion() {
    captured();
    let gw = TestGateway::start().await;
    let client = gw.browser();
    let signed_in = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(signed_in.status(), 303);
    let mut secrets: Vec<String> =
        ["stepgate_session", "stepgate_device", "stepgate_device_users"].iter().map(|name| cookie_value(&signed_in, name)).collect();
    let response = client.get(gw.app("/debug-log-check")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let assertion = gw.upstream.last().headers["x-stepgate-assertion"].to_str().unwrap().to_string();
    secrets.extend(assertion.split('.').skip(1).map(str::to_string));
    secrets.extend([assertion, ALICE_PASSWORD.to_string()]);

    let log = log_with(1, &["stepgate::access", "/debug-log-check", "status=200"]).await;
    assert!(log.contains("DEBUG"), "the log is at debug:\n{log}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "{secret} is in the log:\n{log}");
    }
}

#[tokio::test]
async fn client_text_cannot_forge_log_lines_and_unknown_names_are_hashed() {
    captured();
    let gw = TestGateway::start().await;
    let client = gw.browser();
    let forged = "mallory\n2026-01-01T00:00:00.000000Z  INFO stepgate::access: request app=\"app\" status=200 user=alice forged";
    // The same name twice, then a password typed into the name field.
    for name in [forged, forged, ALICE_PASSWORD] {
        assert_eq!(sign_in(&gw, &client, name, "guess", "/").await.status(), 401);
    }
    let failures = ["event=\"password\"", "outcome=\"failure\""];
    let log = log_with(3, &failures).await;
    assert!(!log.contains("forged") && !log.contains("mallory"), "{log}");
    assert!(!log.contains(ALICE_PASSWORD), "{log}");
    let users: Vec<&str> = log
        .lines()
        .filter(|line| failures.iter().all(|part| line.contains(part)))
        .filter_map(|line| line.split_whitespace().find(|field| field.starts_with("user=")))
        .collect();
    assert_eq!(users.len(), 3, "{log}");
    assert!(users.iter().all(|user| user.starts_with("user=unknown:")), "{users:?}");
    assert_eq!(users[0], users[1], "the same name has the same tag");
    assert_ne!(users[1], users[2]);

    // Whatever a field holds, a line break in it is written as an escape.
    tracing::info!(note = %"first\nsecond-line-of-a-field", "escaping check");
    let log = log_with(1, &["escaping check"]).await;
    assert!(log.contains("first\\nsecond-line-of-a-field"), "{log}");
    assert!(!log.lines().any(|line| line.starts_with("second-line-of-a-field")), "{log}");
}

#[tokio::test]
async fn a_possibly_cloned_authenticator_is_a_warning_with_a_stable_event_name() {
    captured();
    let gw = TestGateway::start_with(common::webauthn::setup("")).await;
    let token = SharedToken::new();
    let mut key = WebauthnAuthenticator::new(token.clone());
    enrol_key(&gw, &mut key).await;
    let mut clone = WebauthnAuthenticator::new(token.copy());
    for _ in 0..2 {
        let client = password_session(&gw).await;
        let (options, csrf) = start_authentication(&gw, &client).await;
        let answer = key.do_authentication(origin(), options).unwrap();
        assert_eq!(finish_authentication(&gw, &client, &csrf, &answer).await.status(), 200);
    }
    let client = password_session(&gw).await;
    let (options, csrf) = start_authentication(&gw, &client).await;
    let answer = clone.do_authentication(origin(), options).unwrap();
    assert_eq!(finish_authentication(&gw, &client, &csrf, &answer).await.status(), 403);
    log_with(1, &["WARN", "event=\"webauthn_possible_clone\"", "user=alice"]).await;
}

/// The id on the gateway's error page is the one in the access log line,
/// so a user's report leads to the request.
#[tokio::test]
async fn the_request_id_on_an_error_page_stands_in_the_access_log() {
    captured();
    let gw = TestGateway::start_with(Setup { apps: apps_with_dead_upstream(), ..Setup::default() }).await;
    let page = gw.browser().get(gw.app("/public/report")).send().await.unwrap();
    assert_eq!(page.status(), 502);
    let id = page.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert!(page.text().await.unwrap().contains(&format!("Reference: {id}.")), "the page shows it");
    log_with(1, &[&format!("request_id={id}"), "status=502", "/public/report"]).await;
}

#[tokio::test]
async fn a_forward_auth_question_is_logged_as_the_request_it_is_about() {
    captured();
    let apps = DEFAULT_APPS.replacen("hosts = [\"app.test\"]", "hosts = [\"app.test\"]\nmode = \"both\"", 1);
    let setup = Setup { apps, server_extra: "trusted_proxies = [\"127.0.0.0/8\"]".into(), ..Setup::default() };
    let gw = TestGateway::start_with(setup).await;
    let cookie = session_cookie(&sign_in(&gw, &gw.browser(), ALICE, ALICE_PASSWORD, "/").await);
    let response = gw
        .api_client()
        .get(gw.app("/.stepgate/authz/forward"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "app.test")
        .header("x-forwarded-uri", "/asked/about/this?q=1")
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    log_with(1, &["stepgate::access", "path=\"/asked/about/this\"", "forward_auth=true", "user=\"alice\"", "status=200"]).await;
}

/// pingora's routine error about a pooled upstream connection (see
/// `stepgate::logging`) is left out; its other messages are written.
#[tokio::test]
async fn pingoras_routine_pool_error_is_left_out() {
    captured();
    tracing::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
    tracing::error!(target: "pingora_core::connectors::http", "routine-filter check: another module's error");
    tracing::warn!(target: "pingora_core::connectors", "routine-filter check: a warning");
    let log = log_with(2, &["routine-filter check"]).await;
    assert!(!log.contains("failed to acquire reusable stream"), "{log}");
}
