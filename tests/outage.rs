//! PostgreSQL or Redis going away in the middle of traffic: the gateway
//! refuses what needs them with a branded 503 (a problem document for API
//! clients), never a pass, never a 500; `/.stepgate/readyz` tells the load
//! balancer; and when the server is back the gateway recovers by itself
//! within five seconds, with no restart.
//!
//! Each test runs its own PostgreSQL cluster and Redis server (see
//! `tests/common/servers.rs`) so it can stop and start them.

mod common;

use std::time::{Duration, Instant};

use common::captured_logs::{Capture, Logs};
use common::servers::{PrivatePostgres, PrivateRedis};
use common::*;
use stepgate::clock::ManualClock;

/// How long the gateway may take to notice an outage, or its end.
const NOTICE_BOUND: Duration = Duration::from_secs(5);

struct Outage {
    gw: TestGateway,
    postgres: PrivatePostgres,
    redis: PrivateRedis,
}

impl Outage {
    async fn start(extra: &str) -> Self {
        let (postgres, redis) = (PrivatePostgres::start(), PrivateRedis::start());
        let backends = format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nconnect_timeout = \"2s\"\n\n[cache]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"\n\n{extra}",
            postgres.url(),
            redis.url()
        );
        let gw = TestGateway::start_on_backends(Setup { extra: backends, ..Setup::default() }, ManualClock::new()).await;
        Self { gw, postgres, redis }
    }

    async fn signed_in_browser(&self) -> reqwest::Client {
        let browser = self.gw.browser();
        assert_eq!(sign_in(&self.gw, &browser, ALICE, ALICE_PASSWORD, "/").await.status(), 303);
        assert_eq!(self.status(&browser, "/").await, 200);
        browser
    }

    async fn status(&self, client: &reqwest::Client, path: &str) -> u16 {
        client.get(self.gw.app(path)).send().await.unwrap().status().as_u16()
    }

    /// Waits, at most [`NOTICE_BOUND`], for `path` to answer `expected`.
    async fn becomes(&self, client: &reqwest::Client, path: &str, expected: u16) -> u16 {
        let deadline = Instant::now() + NOTICE_BOUND;
        loop {
            let seen = self.status(client, path).await;
            if seen == expected || Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn readiness(&self) -> (u16, serde_json::Value) {
        let response = self.gw.api_client().get(self.gw.app("/.stepgate/readyz")).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Everything that needs the backends is refused the way it should be.
    async fn assert_refused(&self, browser: &reqwest::Client) {
        let page = browser.get(self.gw.app("/")).send().await.unwrap();
        assert_eq!(page.status(), 503);
        assert!(page.headers().contains_key("retry-after"));
        assert!(page.text().await.unwrap().contains(r#"<span class="product">stepgate</span>"#), "a branded page");

        // The same session, asked for by a script.
        let problem = browser.get(self.gw.app("/")).header("accept", "application/json").send().await.unwrap();
        assert_eq!(problem.status(), 503);
        assert_eq!(problem.headers()["content-type"], "application/problem+json");
        assert_eq!(problem.json::<serde_json::Value>().await.unwrap()["status"], 503);

        let newcomer = self.gw.browser();
        let signin = sign_in(&self.gw, &newcomer, BOB, BOB_PASSWORD, "/").await;
        assert_eq!(signin.status(), 503, "no new sign-in while a backend is down");
        assert!(signin.headers().get("set-cookie").is_none_or(|c| !c.to_str().unwrap().starts_with("stepgate_session=")));
    }

    async fn assert_recovered(&self, browser: &reqwest::Client) {
        assert_eq!(self.becomes(browser, "/", 200).await, 200, "the signed-in browser is served again");
        assert_eq!(self.readiness().await.0, 200);
        let newcomer = self.gw.browser();
        assert_eq!(sign_in(&self.gw, &newcomer, BOB, BOB_PASSWORD, "/").await.status(), 303, "sign-ins work again");
    }
}

/// The backend probe runs on the test's runtime, so its lines land here.
fn capture_logs() -> (Logs, Capture) {
    Logs::capture()
}

#[tokio::test]
async fn postgres_going_away_is_refused_and_recovered_from() {
    let (logs, _guard) = capture_logs();
    let outage = Outage::start("").await;
    let browser = outage.signed_in_browser().await;
    assert_eq!(outage.readiness().await.0, 200);

    outage.postgres.stop();
    assert_eq!(outage.becomes(&browser, "/", 503).await, 503, "the signed-in browser is refused (session.during_outage = refuse)");
    let (status, readiness) = outage.readiness().await;
    assert_eq!((status, readiness), (503, serde_json::json!({ "store": false, "cache": true })));
    outage.assert_refused(&browser).await;

    outage.postgres.resume();
    outage.assert_recovered(&browser).await;
    assert_eq!(logs.count("the store is unreachable"), 1, "said once, not once a request:\n{}", logs.text());
    assert_eq!(logs.count("the store is reachable again"), 1, "{}", logs.text());
}

#[tokio::test]
async fn redis_going_away_is_refused_and_recovered_from() {
    let (logs, _guard) = capture_logs();
    let outage = Outage::start("").await;
    let browser = outage.signed_in_browser().await;

    outage.redis.stop();
    assert_eq!(outage.becomes(&browser, "/", 503).await, 503, "the signed-in browser is refused (session.during_outage = refuse)");
    let (status, readiness) = outage.readiness().await;
    assert_eq!((status, readiness), (503, serde_json::json!({ "store": true, "cache": false })));
    outage.assert_refused(&browser).await;

    outage.redis.resume();
    outage.assert_recovered(&browser).await;
    assert_eq!(logs.count("the shared cache is unreachable"), 1, "said once, not once a request:\n{}", logs.text());
    assert_eq!(logs.count("the shared cache is reachable again"), 1, "{}", logs.text());
}

/// With `during_outage = "serve_cached"`, a signed-in browser keeps being
/// served from the session cache for `outage_grace`, and no longer.
#[tokio::test]
async fn serve_cached_serves_signed_in_browsers_for_the_grace_only() {
    let outage = Outage::start("[session]\nduring_outage = \"serve_cached\"\noutage_grace = \"60s\"\n").await;
    let browser = outage.signed_in_browser().await;

    outage.postgres.stop();
    let deadline = Instant::now() + NOTICE_BOUND;
    while outage.readiness().await.0 == 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(outage.readiness().await.1["store"], false, "the outage is noticed");
    assert_eq!(outage.status(&browser, "/").await, 200, "served from the cache within the grace");
    let newcomer = outage.gw.browser();
    assert_eq!(sign_in(&outage.gw, &newcomer, BOB, BOB_PASSWORD, "/").await.status(), 503, "but nobody new signs in");
    outage.gw.clock.advance(61);
    assert_eq!(outage.status(&browser, "/").await, 503, "and not after the grace");

    outage.postgres.resume();
    outage.assert_recovered(&browser).await;
}

/// An enrolment cut by an outage is not lost: the code the user typed is
/// refused with a 503, and the same form sent again once the store is back
/// completes it.
#[tokio::test]
async fn an_enrolment_interrupted_by_an_outage_completes_afterwards() {
    let outage = Outage::start("").await;
    let browser = outage.signed_in_browser().await;
    let page = browser.get(outage.gw.app("/.stepgate/second-factor")).send().await.unwrap().text().await.unwrap();
    let secret = regex::Regex::new(r#"id="secret">([A-Z2-7=]+)<"#).unwrap().captures(&page).expect("an enrolment page")[1].to_string();
    let form = [("csrf", form_value(&page, "csrf")), ("code", totp::code(&secret, outage.gw.now())), ("rd", "/admin/".to_string())];
    let enrol = || browser.post(outage.gw.app("/.stepgate/second-factor/totp/enroll")).form(&form);

    outage.postgres.stop();
    assert_eq!(enrol().send().await.unwrap().status(), 503);
    outage.postgres.resume();
    assert_eq!(outage.becomes(&browser, "/", 200).await, 200);
    assert_eq!(enrol().send().await.unwrap().status(), 303, "the enrolment completes");
    assert_eq!(outage.status(&browser, "/admin/").await, 200, "with its second factor done");
}
