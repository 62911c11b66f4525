//! The listeners: TLS with HTTP/2, cleartext HTTP/2, and WebSocket
//! upgrades passed through to the app.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn tls_client(gw: &TestGateway) -> reqwest::Client {
    let cert = std::fs::read(gw.dir.path().join("cert.pem")).unwrap();
    let tls_addr = gw.tls_addr.expect("TLS listener");
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .resolve("app.test", tls_addr)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(browser_headers())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_tls_listener_serves_http2_and_marks_cookies_secure() {
    let gw = TestGateway::start_with(Setup { tls: true, ..Setup::default() }).await;
    let client = tls_client(&gw);
    let base = format!("https://app.test:{}", gw.tls_addr.unwrap().port());

    let response = client.get(format!("{base}/public/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    assert_eq!(gw.upstream.last().headers["x-forwarded-proto"], "https");

    let page = client.get(format!("{base}/.stepgate/signin")).send().await.unwrap().text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    let response = client
        .post(format!("{base}/.stepgate/signin"))
        .form(&[("csrf", csrf.as_str()), ("username", ALICE), ("password", ALICE_PASSWORD), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    for name in ["__Host-stepgate_session", "stepgate_device"] {
        let cookie = set_cookie(&response, name);
        assert!(cookie.contains("Secure"), "{cookie}");
    }
    let response = client.get(format!("{base}/private")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(gw.upstream.last().headers.contains_key("x-stepgate-assertion"));
}

#[tokio::test]
async fn cleartext_http2_when_enabled() {
    let gw = TestGateway::start_with(Setup { server_extra: "h2c = true".into(), ..Setup::default() }).await;
    let client = gw.client_builder().http2_prior_knowledge().build().unwrap();
    let response = client.get(gw.app("/public/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let response = client.get(gw.app("/")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

async fn websocket_echo(gw: &TestGateway, path: &str, cookie: Option<&str>) -> Result<String, String> {
    let mut request = format!("ws://{}{path}", gw.addr).into_client_request().unwrap();
    request.headers_mut().insert("host", format!("app.test:{}", gw.addr.port()).parse().unwrap());
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", cookie.parse().unwrap());
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| e.to_string())?;
    socket.send(Message::Text("hello through the gateway".into())).await.map_err(|e| e.to_string())?;
    match socket.next().await {
        Some(Ok(Message::Text(text))) => Ok(text.to_string()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test]
async fn websockets_pass_through_on_allowed_routes_only() {
    let gw = TestGateway::start().await;
    assert_eq!(websocket_echo(&gw, "/public/ws", None).await.unwrap(), "hello through the gateway");

    let refused = websocket_echo(&gw, "/admin/ws", None).await.unwrap_err();
    assert!(refused.contains("401"), "{refused}");

    let client = gw.browser();
    let response = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let mut cookie = session_cookie(&response);
    let refused = websocket_echo(&gw, "/admin/ws", Some(&cookie)).await.unwrap_err();
    assert!(refused.contains("401"), "one factor is not enough: {refused}");
    let secret = enroll_totp(&gw, &client).await;

    let second = gw.browser();
    sign_in(&gw, &second, ALICE, ALICE_PASSWORD, "/").await;
    gw.clock.advance(30);
    let response = submit_totp(&gw, &second, &totp::code(&secret, gw.now())).await;
    assert_eq!(response.status(), 303);
    cookie = session_cookie(&response);
    // Under heavy CPU load this upgrade was once seen reset right after the
    // 101 (not reproduced since); one retry keeps the suite stable while
    // that is investigated, and a second failure still fails the test.
    let echoed = match websocket_echo(&gw, "/admin/ws", Some(&cookie)).await {
        Ok(echoed) => echoed,
        Err(first) => {
            eprintln!("websocket upgrade failed once, retrying: {first}");
            websocket_echo(&gw, "/admin/ws", Some(&cookie)).await.unwrap()
        }
    };
    assert_eq!(echoed, "hello through the gateway");
}
