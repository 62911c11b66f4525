//! Two gateway instances on one PostgreSQL and one Redis behave as one
//! gateway: a browser that a load balancer sends to either instance,
//! request by request, sees one sign-in, one set of factors, one
//! throttle, and a sign-out or a revoked trust that holds on both.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (see
//! `tests/common/backends.rs`); each test keeps to a schema and a key
//! prefix of its own, removed at its end.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backends::SharedBackends;
use common::*;
use serde_json::json;
use stepgate::clock::ManualClock;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs_proto::CreationChallengeResponse;

/// How long a change made on one instance may take to reach the other.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

struct Cluster {
    a: TestGateway,
    b: TestGateway,
    backends: SharedBackends,
}

impl Cluster {
    async fn start() -> Self {
        Self::start_with("").await
    }

    async fn start_with(extra: &str) -> Self {
        let backends = SharedBackends::new().await;
        let clock = ManualClock::new();
        let users = users_file();
        let setup = || {
            let mut setup = common::webauthn::setup(&format!("{}\n{extra}", backends.config()));
            setup.users = Some(users.clone());
            setup.apps = setup.apps.replace("path = \"/admin/\"\npolicy = \"two_factor\"", STEP_UP_RULES);
            setup
        };
        let a = TestGateway::start_on_backends(setup(), clock.clone()).await;
        let b = TestGateway::start_on_backends(setup(), clock).await;
        Self { a, b, backends }
    }

    /// A browser: one cookie jar, and a client for each instance, so a
    /// test says which instance each request reaches.
    fn browser(&self) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = |gw: &TestGateway| {
            let builder = gw.client_builder().cookie_provider(jar.clone()).default_headers(browser_headers());
            builder.build().expect("client")
        };
        Browser { a: client(&self.a), b: client(&self.b) }
    }

    /// Stops both instances before their backends are removed.
    async fn stop(self) {
        drop(self.a);
        drop(self.b);
        drop(self.backends);
    }
}

/// `/admin/` needs a second factor; `/payments/` one done in the last
/// five minutes.
const STEP_UP_RULES: &str =
    "path = \"/admin/\"\npolicy = \"two_factor\"\n\n[[apps.rules]]\npath = \"/payments/\"\npolicy = \"two_factor\"\nmax_age = \"5m\"";

struct Browser {
    a: reqwest::Client,
    b: reqwest::Client,
}

async fn status(gw: &TestGateway, client: &reqwest::Client, path: &str) -> u16 {
    client.get(gw.app(path)).send().await.unwrap().status().as_u16()
}

async fn page(gw: &TestGateway, client: &reqwest::Client, path: &str) -> String {
    client.get(gw.app(path)).send().await.unwrap().text().await.unwrap()
}

/// The sign-in form fetched from one instance and sent to the other.
async fn sign_in_across(from: (&TestGateway, &reqwest::Client), to: (&TestGateway, &reqwest::Client), password: &str) -> u16 {
    let csrf = form_value(&page(from.0, from.1, "/.stepgate/signin").await, "csrf");
    let form = [("csrf", csrf.as_str()), ("username", ALICE), ("password", password), ("rd", "/")];
    to.1.post(to.0.app("/.stepgate/signin")).form(&form).send().await.unwrap().status().as_u16()
}

/// A TOTP code posted on the challenge page of `gw`.
async fn post_code(gw: &TestGateway, client: &reqwest::Client, code: &str, remember: bool) -> u16 {
    let csrf = form_value(&page(gw, client, "/.stepgate/second-factor?method=totp").await, "csrf");
    let mut form = vec![("csrf", csrf.as_str()), ("code", code), ("rd", "/")];
    if remember {
        form.push(("remember", "1"));
    }
    client.post(gw.app("/.stepgate/second-factor/totp")).form(&form).send().await.unwrap().status().as_u16()
}

/// A recovery code posted on the challenge page of `gw`.
async fn post_recovery(gw: &TestGateway, client: &reqwest::Client, code: &str) -> u16 {
    let csrf = form_value(&page(gw, client, "/.stepgate/second-factor?method=recovery").await, "csrf");
    let form = [("csrf", csrf.as_str()), ("code", code), ("rd", "/")];
    client.post(gw.app("/.stepgate/second-factor/recovery")).form(&form).send().await.unwrap().status().as_u16()
}

/// Waits until `gw` answers `path` with `expected`, for at most the
/// propagation bound; returns the last status seen.
async fn status_within_bound(gw: &TestGateway, client: &reqwest::Client, path: &str, expected: u16) -> u16 {
    let deadline = Instant::now() + PROPAGATION_BOUND;
    loop {
        let seen = status(gw, client, path).await;
        if seen == expected || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Password on A, TOTP enrolment begun on B and finished on A, a security
/// key registration begun on A and finished on B, a step-up, the security
/// page, then sign-out on A, which B honours.
#[tokio::test]
async fn one_browser_moves_between_instances_request_by_request() {
    let cluster = Cluster::start().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let browser = cluster.browser();

    assert_eq!(sign_in_across((a, &browser.a), (b, &browser.b), ALICE_PASSWORD).await, 303);
    for _ in 0..2 {
        assert_eq!(status(a, &browser.a, "/").await, 200, "the session made on B holds on A");
    }
    assert_eq!(status(b, &browser.b, "/admin/").await, 302, "a second factor is needed");

    // TOTP enrolment: the secret shown by B, confirmed on A.
    let enrolment = page(b, &browser.b, "/.stepgate/second-factor").await;
    let secret = regex::Regex::new(r#"id="secret">([A-Z2-7=]+)<"#).unwrap().captures(&enrolment).expect("an enrolment page")[1].to_string();
    let code = totp::code(&secret, a.now());
    let form = [("csrf", form_value(&enrolment, "csrf")), ("code", code), ("rd", "/admin/".into())];
    let enrolled = browser.a.post(a.app("/.stepgate/second-factor/totp/enroll")).form(&form).send().await.unwrap();
    assert_eq!(enrolled.status(), 303, "A finishes the enrolment B began");
    assert_eq!(status(b, &browser.b, "/admin/").await, 200, "B sees the second factor done on A");

    // A security key: registration begun on A, finished on B.
    let csrf = common::webauthn::data_csrf(&page(a, &browser.a, "/.stepgate/settings").await);
    let body = json!({ "kind": "security_key", "name": "Desk key" });
    let start = browser.a.post(a.app("/.stepgate/webauthn/register/start")).header("x-csrf-token", &csrf).json(&body).send().await.unwrap();
    assert_eq!(start.status(), 200);
    let options: CreationChallengeResponse = start.json().await.unwrap();
    let mut key = WebauthnAuthenticator::new(SoftToken::new(false).unwrap().0);
    let credential = key.do_registration(common::webauthn::origin(), options).expect("the software key registers");
    let finish = browser
        .b
        .post(b.app("/.stepgate/webauthn/register/finish"))
        .header("x-csrf-token", &csrf)
        .json(&json!({ "credential": credential }))
        .send()
        .await
        .unwrap();
    assert_eq!(finish.status(), 200, "B finishes the ceremony A began: {}", finish.text().await.unwrap());
    let settings = page(a, &browser.a, "/.stepgate/settings").await;
    assert!(settings.contains("Desk key") && settings.contains("Authenticator app"), "A's security page lists both:\n{settings}");

    // Step-up: after six minutes, /payments/ asks again, on either instance.
    assert_eq!(status(a, &browser.a, "/payments/").await, 200);
    a.clock.advance(6 * 60);
    assert_eq!(status(b, &browser.b, "/payments/").await, 302, "the second factor is too old");
    assert_eq!(post_code(b, &browser.b, &totp::code(&secret, b.now()), false).await, 303);
    assert_eq!(status(a, &browser.a, "/payments/").await, 200, "the fresh factor done on B counts on A");

    // Sign-out on A holds on B, which has been serving the session from
    // its cache.
    assert_eq!(status(b, &browser.b, "/").await, 200);
    let csrf = form_value(&page(a, &browser.a, "/.stepgate/signout").await, "csrf");
    assert_eq!(browser.a.post(a.app("/.stepgate/signout")).form(&[("csrf", csrf)]).send().await.unwrap().status(), 200);
    assert_eq!(status_within_bound(b, &browser.b, "/", 302).await, 302, "B refuses the session ended on A");
    cluster.stop().await;
}

#[tokio::test]
async fn a_code_spent_on_one_instance_is_refused_on_the_other() {
    let cluster = Cluster::start().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let owner = cluster.browser();
    assert_eq!(sign_in_across((a, &owner.a), (a, &owner.a), ALICE_PASSWORD).await, 303);
    let secret = enroll_totp(a, &owner.a).await;
    a.clock.advance(30);

    let (first, second) = (cluster.browser(), cluster.browser());
    for browser in [&first, &second] {
        assert_eq!(sign_in_across((a, &browser.a), (b, &browser.b), ALICE_PASSWORD).await, 303);
    }
    let code = totp::code(&secret, a.now());
    assert_eq!(post_code(a, &first.a, &code, false).await, 303, "the code works once, on A");
    assert_eq!(post_code(b, &second.b, &code, false).await, 401, "and is spent on B too");
    assert_eq!(status(b, &second.b, "/admin/").await, 302);

    // Recovery codes: one spent on B is refused on A.
    let codes = b.gateway().recovery.generate(ALICE).await.unwrap();
    assert_eq!(post_recovery(b, &second.b, &codes[0]).await, 303, "the recovery code works once, on B");
    let third = cluster.browser();
    assert_eq!(sign_in_across((a, &third.a), (a, &third.a), ALICE_PASSWORD).await, 303);
    assert_eq!(post_recovery(a, &third.a, &codes[0]).await, 401, "and is spent on A too");
    cluster.stop().await;
}

/// Five wrong passwords, alternating between the instances, use up one
/// budget: the sixth attempt is refused on either.
#[tokio::test]
async fn the_password_throttle_counts_attempts_on_both_instances() {
    let cluster = Cluster::start_with("[limits]\npassword_failures = 5\n").await;
    let (a, b) = (&cluster.a, &cluster.b);
    let browser = cluster.browser();
    for attempt in 0..5 {
        let (gw, client) = if attempt % 2 == 0 { (a, &browser.a) } else { (b, &browser.b) };
        assert_eq!(sign_in_across((gw, client), (gw, client), "wrong password").await, 401, "attempt {attempt} is checked");
    }
    assert_eq!(sign_in_across((a, &browser.a), (b, &browser.b), ALICE_PASSWORD).await, 429, "B counted A's attempts");
    assert_eq!(sign_in_across((b, &browser.b), (a, &browser.a), ALICE_PASSWORD).await, 429, "and A counted B's");
    cluster.stop().await;
}

/// A browser trusted on A needs only its password on B; untrusting it on
/// A takes the trust away on B within a second.
#[tokio::test]
async fn revoking_a_trusted_browser_on_one_instance_holds_on_the_other() {
    let cluster = Cluster::start().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let trusted = cluster.browser();
    assert_eq!(sign_in_across((a, &trusted.a), (a, &trusted.a), ALICE_PASSWORD).await, 303);
    let secret = enroll_totp(a, &trusted.a).await;
    a.clock.advance(30);
    assert_eq!(post_code(a, &trusted.a, &totp::code(&secret, a.now()), true).await, 303, "trust this browser");
    let csrf = form_value(&page(b, &trusted.b, "/.stepgate/signout").await, "csrf");
    assert_eq!(trusted.b.post(b.app("/.stepgate/signout")).form(&[("csrf", csrf)]).send().await.unwrap().status(), 200);
    assert_eq!(sign_in_across((b, &trusted.b), (b, &trusted.b), ALICE_PASSWORD).await, 303);
    assert_eq!(status(b, &trusted.b, "/.stepgate/settings").await, 200, "the password is enough on a trusted browser, on B too");

    let settings = page(a, &trusted.a, "/.stepgate/settings").await;
    let form = [("csrf", form_value(&settings, "csrf")), ("device", form_value(&settings, "device"))];
    let revoked = trusted.a.post(a.app("/.stepgate/settings/trusted-browsers/revoke")).form(&form).send().await.unwrap();
    assert!(revoked.text().await.unwrap().contains("no longer trusted"));
    assert_eq!(status_within_bound(b, &trusted.b, "/.stepgate/settings", 303).await, 303, "B asks for the second factor again");
    cluster.stop().await;
}

/// Even when the announcement of a session's end is lost, no instance
/// serves its cached copy for longer than the revalidation bound.
#[tokio::test]
async fn a_lost_announcement_is_caught_by_the_revalidation_bound() {
    let cluster = Cluster::start().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let browser = cluster.browser();
    assert_eq!(sign_in_across((a, &browser.a), (b, &browser.b), ALICE_PASSWORD).await, 303);
    assert_eq!(status(b, &browser.b, "/").await, 200);
    assert_eq!(status(b, &browser.b, "/").await, 200, "served from B's cache");

    cluster.backends.delete_sessions_unannounced().await;
    assert_eq!(status(b, &browser.b, "/").await, 200, "within the bound, B's copy stands: nothing told B");
    a.clock.advance(stepgate::session::REVALIDATE_SECS);
    assert_eq!(status(b, &browser.b, "/").await, 302, "B read the session again and found it gone");
    cluster.stop().await;
}
