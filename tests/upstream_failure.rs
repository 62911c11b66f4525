//! A request the gateway lets through but cannot deliver gets the
//! gateway's own answer: the branded page for browsers, a problem document
//! for API clients, with `Retry-After`, and never pingora's bare page or
//! its `Server` header.

mod common;

use common::*;

/// An app whose only upstream listens nowhere.
async fn start_with_dead_upstream() -> TestGateway {
    TestGateway::start_with(Setup { apps: apps_with_dead_upstream(), ..Setup::default() }).await
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_branded_502() {
    let gw = start_with_dead_upstream().await;

    let page = gw.browser().get(gw.app("/public/x")).send().await.unwrap();
    assert_eq!(page.status(), 502);
    assert!(page.headers().get("server").is_none(), "no Server header: {:?}", page.headers());
    assert_eq!(page.headers()["retry-after"], "5");
    assert!(page.text().await.unwrap().contains(r#"<span class="product">stepgate</span>"#), "the branded page");

    let problem = gw.api_client().get(gw.app("/public/x")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(problem.status(), 502);
    assert!(problem.headers().get("server").is_none());
    assert_eq!(problem.headers()["content-type"], "application/problem+json");
    let id = problem.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = problem.json().await.unwrap();
    assert_eq!((body["status"].as_u64(), body["title"].as_str()), (Some(502), Some("Bad Gateway")));
    assert_eq!(body["request_id"], id, "the problem names the request");

    let next = gw.browser().get(gw.app("/public/y")).send().await.unwrap();
    assert_eq!(next.status(), 502, "and again: the gateway keeps answering");
}

/// An upstream slower than `timeouts.read` is a 504, not a wait.
#[tokio::test]
async fn an_upstream_slower_than_its_read_timeout_is_a_branded_504() {
    let apps = DEFAULT_APPS.replacen(
        "hosts = [\"app.test\"]\nupstreams = [\"http://{upstream}\"]\n",
        "hosts = [\"app.test\"]\nupstreams = [\"http://{upstream}\"]\ntimeouts = { read = \"1s\" }\n",
        1,
    );
    let gw = TestGateway::start_with(Setup { apps, ..Setup::default() }).await;
    let page = gw.browser().get(gw.app("/public/slow")).send().await.unwrap();
    assert_eq!(page.status(), 504);
    assert!(page.headers().get("server").is_none());
    assert!(page.text().await.unwrap().contains("did not answer in time"));
    assert_eq!(gw.browser().get(gw.app("/public/fast")).send().await.unwrap().status(), 200, "other requests go through");
}

/// `server.server_header` names the gateway on every response: its own
/// pages and the app's answers alike.
#[tokio::test]
async fn a_configured_server_header_is_on_every_response() {
    let server_extra = "server_header = \"gateway\"".to_string();
    let gw = TestGateway::start_with(Setup { server_extra, ..Setup::default() }).await;
    let client = gw.browser();
    let proxied = client.get(gw.app("/public/x")).send().await.unwrap();
    assert_eq!((proxied.status().as_u16(), proxied.headers().get("server").map(|v| v.to_str().unwrap())), (200, Some("gateway")));
    let portal = client.get(gw.app("/.stepgate/signin")).send().await.unwrap();
    assert_eq!(portal.headers().get("server").map(|v| v.to_str().unwrap()), Some("gateway"));
    let challenge = client.get(gw.app("/admin/")).send().await.unwrap();
    assert_eq!((challenge.status().as_u16(), challenge.headers().get("server").map(|v| v.to_str().unwrap())), (302, Some("gateway")));
}
