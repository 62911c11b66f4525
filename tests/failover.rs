//! An app with several upstreams keeps answering while some of them are
//! gone: health checks and failed connections take an upstream out of
//! rotation, a request that could not be delivered goes to the next one
//! when sending it again is safe, and an app whose upstreams are all down
//! gets the gateway's own 503.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::killable::{ClosesIdleUpstream, HangingUpUpstream, KillableUpstream};
use common::*;
use stepgate::upstreams::State;

/// One app in front of `upstreams`, everything under `/public/` open.
fn app_with(upstreams: &[SocketAddr], settings: &str) -> String {
    let list = upstreams.iter().map(|a| format!("\"http://{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [{list}]\n{settings}\n\n\
         [[apps.rules]]\npath = \"/public/\"\npolicy = \"bypass\"\n"
    )
}

const QUICK_CHECKS: &str =
    "health_check = { path = \"/health\", interval = \"1s\", timeout = \"1s\", unhealthy_threshold = 2, healthy_threshold = 1 }";

fn state_of(gw: &TestGateway, upstream: SocketAddr) -> State {
    let gateway = gw.gateway();
    let app = gateway.app_for_host("app.test").expect("app");
    app.upstreams.states().into_iter().find(|(addr, _)| *addr == upstream).map(|(_, state)| state).expect("a configured upstream")
}

/// Waits until `condition` holds, polling; panics with `what` after 20 s.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting: {what}");
}

/// A client sending one GET after another until told to stop.
struct SteadyStream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl SteadyStream {
    fn start(gw: &TestGateway) -> Self {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let client = gw.api_client();
        let url = gw.app("/public/stream");
        let (stopped, counter) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stopped.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {}
                    Ok(response) => failures.push(format!("{}: {}", response.status(), response.text().await.unwrap_or_default())),
                    Err(e) => failures.push(e.to_string()),
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
            failures
        });
        Self { stop, sent, task }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    async fn failures(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the client task")
    }
}

#[tokio::test]
async fn a_steady_stream_sees_no_failure_while_an_upstream_dies_and_comes_back() {
    let (mut first, second) = (KillableUpstream::start("first"), KillableUpstream::start("second"));
    let apps = app_with(&[first.addr, second.addr], QUICK_CHECKS);
    let gw = TestGateway::start_with(Setup { apps, ..Setup::default() }).await;
    let stream = SteadyStream::start(&gw);
    wait_until("both upstreams serve", || first.requests() >= 5 && second.requests() >= 5).await;

    first.kill();
    wait_until("the health check marks the dead upstream down", || state_of(&gw, first.addr) == State::Down).await;
    let sent_while_down = stream.sent();
    wait_until("more requests while it is down", || stream.sent() >= sent_while_down + 20).await;

    first.revive();
    wait_until("the health check marks it up", || state_of(&gw, first.addr) == State::Up).await;
    let before = first.requests();
    wait_until("it takes requests again", || first.requests() >= before + 5).await;

    let sent = stream.sent();
    let failures = stream.failures().await;
    assert!(failures.is_empty(), "{} of {sent} requests failed: {failures:?}", failures.len());
}

#[tokio::test]
async fn a_failed_connection_rests_the_upstream_until_fail_timeout() {
    let (mut dead, live) = (KillableUpstream::dead("dead"), KillableUpstream::start("live"));
    let apps = app_with(&[dead.addr, live.addr], "passive_health = { max_fails = 1, fail_timeout = \"10s\" }");
    let gw = TestGateway::start_with(Setup { apps, ..Setup::default() }).await;
    let client = gw.api_client();
    for _ in 0..2 {
        let response = client.get(gw.app("/public/x")).send().await.unwrap();
        assert_eq!(response.status(), 200, "the refused connection is retried on the other upstream");
        assert_eq!(response.text().await.unwrap(), "from live");
    }
    assert_eq!(state_of(&gw, dead.addr), State::Resting);

    dead.revive();
    for _ in 0..4 {
        assert_eq!(client.get(gw.app("/public/x")).send().await.unwrap().text().await.unwrap(), "from live");
    }
    assert_eq!(dead.requests(), 0, "resting: not tried while the other upstream is fine");

    gw.clock.advance(10);
    for _ in 0..4 {
        assert_eq!(client.get(gw.app("/public/x")).send().await.unwrap().status(), 200);
    }
    assert!(dead.requests() >= 1, "tried again after fail_timeout");
    assert_eq!(state_of(&gw, dead.addr), State::Up);
}

#[tokio::test]
async fn only_requests_without_effects_are_sent_again_after_reaching_an_upstream() {
    let hanging = HangingUpUpstream::start().await;
    let live = KillableUpstream::start("live");
    let apps = app_with(&[hanging.addr, live.addr], "passive_health = { max_fails = 0 }");
    let gw = TestGateway::start_with(Setup { apps, ..Setup::default() }).await;
    let client = gw.api_client();

    for _ in 0..4 {
        let response = client.get(gw.app("/public/read")).send().await.unwrap();
        assert_eq!(response.status(), 200, "a GET the first upstream dropped is answered by the next");
    }
    assert!(hanging.gets() >= 1, "some GETs went to the upstream that hangs up first");

    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = client.post(gw.app("/public/pay")).body("amount=10").send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    let failed = statuses.iter().filter(|s| **s == 502).count();
    assert!(failed >= 1, "a POST that reached the upstream that hangs up is not sent again: {statuses:?}");
    assert_eq!(failed, hanging.posts(), "each failed POST reached exactly one upstream");
    assert_eq!(hanging.posts() + live.posts(), 4, "no POST was sent twice");
}

#[tokio::test]
async fn an_app_whose_upstreams_are_all_down_gets_a_branded_503() {
    let dead = KillableUpstream::dead("dead");
    let checks = "health_check = { interval = \"1s\", timeout = \"1s\", unhealthy_threshold = 1, healthy_threshold = 1 }";
    let apps = app_with(&[dead.addr], checks);
    let gw = TestGateway::start_with(Setup { apps, ..Setup::default() }).await;
    wait_until("the TCP check marks the upstream down", || state_of(&gw, dead.addr) == State::Down).await;

    let page = gw.browser().get(gw.app("/public/x")).send().await.unwrap();
    assert_eq!(page.status(), 503);
    assert!(page.headers().get("server").is_none());
    assert_eq!(page.headers()["retry-after"], "5");
    let id = page.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = page.text().await.unwrap();
    assert!(body.contains("Application unavailable") && body.contains(&id), "branded, with the request id");

    let problem = gw.api_client().get(gw.app("/public/x")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(problem.status(), 503);
    assert_eq!(problem.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = problem.json().await.unwrap();
    assert_eq!(body["title"], "Service Unavailable");
}

/// A pooled connection the app closed is no sign of a dead app: the request
/// goes to the same (only) upstream again, on a fresh connection.
#[tokio::test]
async fn a_request_on_a_pooled_connection_the_app_closed_is_sent_again_on_a_fresh_one() {
    let upstream = ClosesIdleUpstream::start().await;
    let apps = app_with(&[upstream.addr], "");
    let gw = TestGateway::start_with(Setup { apps, ..Setup::default() }).await;
    let client = gw.api_client();
    for round in 1..=3 {
        let response = client.get(gw.app("/public/x")).send().await.unwrap();
        assert_eq!(response.status(), 200, "request {round}");
        assert_eq!(response.text().await.unwrap(), "fresh\n");
    }
    assert_eq!(upstream.answered(), 3);
    assert_eq!(state_of(&gw, upstream.addr), State::Up);
}
