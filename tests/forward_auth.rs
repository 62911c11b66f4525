//! The gateway as the authorizer of a proxy in front, spoken to exactly as
//! Traefik's `forwardAuth`, Caddy's `forward_auth`, nginx's `auth_request`
//! and Envoy's `ext_authz` speak (the headers their documentation names):
//! it decides every request as the inline proxy decides the same request,
//! answers in each dialect, and refuses questions it cannot trust or read,
//! on the main listener and on the authorizer's own (`authz_listen`) alike.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APPS: &str = r#"
[[apps]]
id = "both"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]
mode = "both"
legacy_headers = true

[[apps.rules]]
path = "/public/"
policy = "bypass"

[[apps.rules]]
regex = "^/admin/?"
policy = "always"

[[apps.rules]]
path = "/orders/"
methods = ["POST", "PUT", "PATCH", "DELETE"]
policy = "always"

[[apps.rules]]
path = "/reports/"
query = { view = "summary" }
policy = "bypass"

[[apps.rules]]
path = "/deny/"
policy = "deny"

[[apps.rules]]
path = "/"
policy = "never"

[[apps]]
id = "outside"
hosts = ["outside.test"]
mode = "forward_auth"

[[apps.rules]]
path = "/"
policy = "never"

[[apps]]
id = "inline"
hosts = ["inline.test"]
upstreams = ["http://{upstream}"]

[[apps.rules]]
path = "/"
policy = "never"
"#;

async fn start() -> TestGateway {
    start_trusting("127.0.0.0/8").await
}

/// A gateway with the authorizer's own listener, trusting `proxies`.
async fn start_trusting(proxies: &str) -> TestGateway {
    let server_extra = format!("trusted_proxies = [\"{proxies}\"]\nauthz_listen = \"{}\"", free_port());
    let gw = TestGateway::start_with(Setup { apps: APPS.into(), server_extra, ..Setup::default() }).await;
    wait_for_port(authz(&gw)).await;
    gw
}

/// The authorizer's own listener.
fn authz(gw: &TestGateway) -> std::net::SocketAddr {
    gw.gateway().config.server.authz_listen.expect("authz_listen is set")
}

/// The status and `Location` of a response to bytes sent as they are.
async fn raw(gw: &TestGateway, request: &str) -> (u16, Option<String>) {
    raw_at(gw.addr, request).await
}

/// [`raw`] to a given listener.
async fn raw_at(address: std::net::SocketAddr, request: &str) -> (u16, Option<String>) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    let location = text
        .lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| line.strip_prefix("location: ").or_else(|| line.strip_prefix("Location: ")))
        .map(str::to_string);
    (status, location)
}

/// One request of the table: method, request target, extra header lines.
struct Case {
    method: &'static str,
    target: &'static str,
    headers: &'static str,
}

const fn case(method: &'static str, target: &'static str) -> Case {
    Case { method, target, headers: "" }
}

/// Paths, methods and headers spelt every way the edge reads one way only
/// (or refuses), with a browser's `Accept`.
const TABLE: [Case; 22] = [
    case("GET", "/"),
    case("GET", "/public/page"),
    case("GET", "/admin/users"),
    case("GET", "/admin"),
    case("GET", "/ADMIN/users"),
    case("GET", "/public/../admin/users"),
    case("GET", "/public/%2e%2e/admin/users"),
    case("GET", "/public/..%2fadmin/users"),
    case("GET", "/public/%2E%2E%2Fadmin"),
    case("GET", "//admin/users"),
    case("GET", "/admin;x=1/users"),
    case("GET", "/public/x/..\\..\\admin"),
    case("GET", "/deny/x"),
    case("GET", "/reports/q?view=summary"),
    case("GET", "/reports/q?view=summary&view=full"),
    case("GET", "/reports/q?view=full"),
    case("POST", "/orders/1"),
    case("delete", "/orders/1"),
    case("GET", "/orders/1"),
    Case { method: "POST", target: "/orders/1", headers: "X-HTTP-Method-Override: DELETE\r\n" },
    Case { method: "GET", target: "/public/x", headers: "Remote_User: admin\r\n" },
    case("GET", "/%00admin"),
];

fn inline_request(case: &Case, cookie: &str) -> String {
    format!(
        "{} {} HTTP/1.1\r\nHost: app.test\r\nAccept: text/html\r\n{}{cookie}Connection: close\r\n\r\n",
        case.method, case.target, case.headers
    )
}

/// The same request as Traefik, Caddy and HAProxy ask about it.
fn forward_question(case: &Case, cookie: &str) -> String {
    format!(
        "GET /.stepgate/authz/forward HTTP/1.1\r\nHost: stepgate.internal\r\nX-Forwarded-Method: {}\r\n\
         X-Forwarded-Proto: http\r\nX-Forwarded-Host: app.test\r\nX-Forwarded-Uri: {}\r\nX-Forwarded-For: 192.0.2.7\r\n\
         Accept: text/html\r\n{}{cookie}Connection: close\r\n\r\n",
        case.method, case.target, case.headers
    )
}

/// As Envoy's `ext_authz` asks: the original method, path and Host.
fn envoy_question(case: &Case, cookie: &str) -> String {
    format!(
        "{} /.stepgate/authz/envoy{} HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-Proto: http\r\nAccept: text/html\r\n{}{cookie}\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        case.method, case.target, case.headers
    )
}

/// As nginx's `auth_request` asks, with `X-Original-URL`.
fn nginx_question(case: &Case, cookie: &str) -> String {
    format!(
        "GET /.stepgate/authz/nginx HTTP/1.1\r\nHost: stepgate.internal\r\nX-Original-URL: http://app.test{}\r\n\
         X-Original-Method: {}\r\nAccept: text/html\r\n{}{cookie}Connection: close\r\n\r\n",
        case.target, case.method, case.headers
    )
}

/// The answer to a question asked on the main listener, checked to be
/// the authorizer's own listener's answer too.
async fn ask_both(gw: &TestGateway, question: &str) -> (u16, Option<String>) {
    let answer = raw(gw, question).await;
    assert_eq!(raw_at(authz(gw), question).await, answer, "the two listeners answer {question:?} alike");
    answer
}

#[tokio::test]
async fn the_authorizer_decides_every_request_as_the_inline_proxy_does() {
    let gw = start().await;
    let signed_in = session_cookie(&sign_in(&gw, &gw.browser(), ALICE, ALICE_PASSWORD, "/").await);
    for cookie in [String::new(), format!("Cookie: {signed_in}\r\n")] {
        for case in &TABLE {
            let inline = raw(&gw, &inline_request(case, &cookie)).await;
            let described = format!("{} {} {:?} signed in: {}", case.method, case.target, case.headers, !cookie.is_empty());
            let forward = ask_both(&gw, &forward_question(case, &cookie)).await;
            assert_eq!(forward, inline, "forward: {described}");
            // Envoy sends the path itself: the edge refuses what it refuses inline.
            if case.method != "delete" {
                assert_eq!(ask_both(&gw, &envoy_question(case, &cookie)).await, inline, "envoy: {described}");
            }
            // nginx makes the redirect itself, from the 401's Location,
            // for a form's POST too (inline, a page explains and leads on).
            let nginx = ask_both(&gw, &nginx_question(case, &cookie)).await;
            match inline {
                (302, location) => assert_eq!(nginx, (401, location.map(|l| format!("http://app.test{l}"))), "nginx: {described}"),
                (401, None) => assert!(nginx.0 == 401 && nginx.1.is_some(), "nginx: {described}: {nginx:?}"),
                other => assert_eq!(nginx, other, "nginx: {described}"),
            }
        }
    }
}

/// A question asked through a reqwest client, as from the proxy.
fn forward_headers(method: &str, uri: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in
        [("x-forwarded-method", method), ("x-forwarded-proto", "https"), ("x-forwarded-host", "app.test"), ("x-forwarded-uri", uri)]
    {
        headers.insert(name, value.parse().unwrap());
    }
    headers
}

#[tokio::test]
async fn an_allowed_request_carries_the_identity_and_no_cookie() {
    let gw = start().await;
    let cookie = session_cookie(&sign_in(&gw, &gw.browser(), ALICE, ALICE_PASSWORD, "/").await);
    let mut headers = forward_headers("GET", "/home");
    headers.insert("x-forwarded-proto", "http".parse().unwrap());
    headers.insert("cookie", cookie.parse().unwrap());
    let response =
        gw.api_client().get(gw.url("stepgate.internal", "/.stepgate/authz/forward")).headers(headers.clone()).send().await.unwrap();
    let own = gw.api_client().get(format!("http://{}/.stepgate/authz/forward", authz(&gw))).headers(headers).send().await.unwrap();
    let identity = |response: &reqwest::Response| {
        let mut lines: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "date" | "connection" | "keep-alive"))
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(identity(&own), identity(&response), "the same answer on both listeners");
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["remote-user"], ALICE);
    assert_eq!(headers["remote-groups"], "staff,admins");
    assert_eq!(headers["remote-email"], "alice@example.com");
    assert!(headers.get("set-cookie").is_none(), "never a gateway cookie");
    let token = headers["x-stepgate-assertion"].to_str().unwrap().to_string();
    let claims = verify_assertion(&token, &fetch_jwks(&gw).await, "both");
    assert_eq!((claims["sub"].as_str(), claims["amr"].clone()), (Some(ALICE), serde_json::json!(["pwd"])));
}

#[tokio::test]
async fn api_clients_get_json_and_browsers_are_sent_to_the_portal() {
    let gw = start().await;
    let ask = |uri: &'static str, accept: &'static str| {
        let mut headers = forward_headers("GET", uri);
        headers.insert("accept", accept.parse().unwrap());
        gw.api_client().get(gw.url("stepgate.internal", "/.stepgate/authz/forward")).headers(headers).send()
    };
    let browser = ask("/home?x=1", "text/html").await.unwrap();
    assert_eq!(browser.status(), 302);
    assert_eq!(browser.headers()["location"], "/.stepgate/signin?rd=https%3A%2F%2Fapp.test%2Fhome%3Fx%3D1");

    let api = ask("/home", "application/json").await.unwrap();
    assert_eq!(api.status(), 401);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"], "sign_in_required");
    assert_eq!(body["location"], "/.stepgate/signin?rd=https%3A%2F%2Fapp.test%2Fhome");

    let denied = ask("/deny/x", "application/json").await.unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    let denied_page = ask("/deny/x", "text/html").await.unwrap();
    assert_eq!(denied_page.status(), 403);
    assert!(denied_page.text().await.unwrap().contains("Access denied"));
}

#[tokio::test]
async fn questions_it_cannot_read_or_trust_are_refused_never_allowed() {
    let gw = start().await;
    let question =
        |extra: &str| format!("GET /.stepgate/authz/forward HTTP/1.1\r\nHost: stepgate.internal\r\n{extra}Connection: close\r\n\r\n");
    let full = "X-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: app.test\r\nX-Forwarded-Uri: /public/x\r\n";
    assert_eq!(ask_both(&gw, &question(full)).await.0, 200, "the well-formed question, to compare with");
    let bad = [
        ("no forwarded headers", String::new(), 400),
        ("two hosts", format!("{full}X-Forwarded-Host: other.test\r\n"), 400),
        ("two hosts in one line", full.replace("app.test", "app.test, inline.test"), 400),
        ("two URIs", format!("{full}X-Forwarded-Uri: /admin/\r\n"), 400),
        ("an absolute URI", full.replace("/public/x", "http://app.test/public/x"), 400),
        ("a path the edge refuses", full.replace("/public/x", "/public/%00"), 400),
        ("a lower-case method", full.replace("Method: GET", "Method: get"), 400),
        ("an underscore header", format!("{full}Remote_User: admin\r\n"), 400),
        ("an unknown host", full.replace("app.test", "nowhere.test"), 403),
        ("an app that is inline only", full.replace("app.test", "inline.test"), 403),
    ];
    for (what, headers, status) in bad {
        assert_eq!(ask_both(&gw, &question(&headers)).await.0, status, "{what}");
    }
    assert_eq!(ask_both(&gw, "GET /.stepgate/authz/unknown HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").await.0, 404);
}

#[tokio::test]
async fn a_question_from_an_untrusted_address_is_refused() {
    let gw = start_trusting("10.0.0.0/8").await;
    let headers = forward_headers("GET", "/public/x");
    let response =
        gw.api_client().get(gw.url("stepgate.internal", "/.stepgate/authz/forward")).headers(headers.clone()).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let own = format!("http://{}/.stepgate/authz/forward", authz(&gw));
    assert_eq!(gw.api_client().get(own).headers(headers).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn a_forward_auth_app_has_the_portal_but_no_inline_traffic() {
    let gw = start().await;
    let client = gw.browser();
    assert_eq!(client.get(gw.url("outside.test", "/anything")).send().await.unwrap().status(), 404);
    let signin = client.get(gw.url("outside.test", "/.stepgate/signin")).send().await.unwrap();
    assert_eq!(signin.status(), 200);
    let response = sign_in_at(&gw, "outside.test", &client, ALICE, ALICE_PASSWORD, "http://outside.test/docs").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "http://outside.test/docs");
    let cookie = session_cookie(&response);
    let mut headers = forward_headers("GET", "/docs");
    headers.insert("x-forwarded-host", "outside.test".parse().unwrap());
    headers.insert("x-forwarded-proto", "http".parse().unwrap());
    headers.insert("cookie", cookie.parse().unwrap());
    let answer = gw.api_client().get(gw.url("stepgate.internal", "/.stepgate/authz/forward")).headers(headers).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-stepgate-assertion"));
}

const CENTRAL_APPS: &str = r#"
[[apps]]
id = "portal"
hosts = ["auth.example.test"]
mode = "forward_auth"

[[apps]]
id = "wiki"
hosts = ["app.example.test"]
mode = "forward_auth"

[[apps.rules]]
path = "/"
policy = "never"

[[apps]]
id = "elsewhere"
hosts = ["evil.test"]
mode = "forward_auth"
"#;

/// The `Cookie` header a browser would send for the `Set-Cookie` lines of
/// `response` (name and value of each).
fn cookies_set_by(response: &reqwest::Response) -> String {
    let pairs: Vec<&str> =
        response.headers().get_all("set-cookie").iter().filter_map(|value| value.to_str().ok()?.split(';').next()).collect();
    pairs.join("; ")
}

#[tokio::test]
async fn a_central_portal_signs_in_once_for_every_app_under_its_domain() {
    let extra = "[session]\ncookie_domain = \"example.test\"\nportal_url = \"http://auth.example.test:{port}\"\n";
    let setup = Setup {
        apps: CENTRAL_APPS.into(),
        extra: extra.into(),
        server_extra: "trusted_proxies = [\"127.0.0.0/8\"]".into(),
        ..Setup::default()
    };
    let gw = TestGateway::start_with(setup).await;
    let portal = gw.url("auth.example.test", "");
    let ask = |cookie: String| {
        gw.api_client()
            .get(gw.url("stepgate.internal", "/.stepgate/authz/forward"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", "app.example.test")
            .header("x-forwarded-uri", "/page?x=1")
            .header("accept", "text/html")
            .header("cookie", cookie)
            .send()
    };

    // To the central portal, with the way back to the app.
    let challenge = ask(String::new()).await.unwrap();
    assert_eq!(challenge.status(), 302);
    let to_portal = challenge.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to_portal, format!("{portal}/.stepgate/signin?rd=http%3A%2F%2Fapp.example.test%2Fpage%3Fx%3D1"));

    // Signed in there: the cookie is for the whole domain, and the browser goes back.
    let browser = gw.browser();
    let response = sign_in_at(&gw, "auth.example.test", &browser, ALICE, ALICE_PASSWORD, "http://app.example.test/page?x=1").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "http://app.example.test/page?x=1");
    let set_cookie = set_cookie(&response, "stepgate_session");
    assert!(set_cookie.to_ascii_lowercase().contains("domain=example.test"), "{set_cookie}");
    let allowed = ask(cookies_set_by(&response)).await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers().get("x-stepgate-assertion").map(|v| v.is_empty()), Some(false));

    // The way back goes only to apps under the domain: never elsewhere.
    for rd in ["http://evil.test/", "http://outside.example/", "//app.example.test/", "https://app.example.test@evil.test/"] {
        let response = sign_in_at(&gw, "auth.example.test", &gw.browser(), ALICE, ALICE_PASSWORD, rd).await;
        assert_eq!(response.headers()["location"], "/", "{rd}");
    }
}
