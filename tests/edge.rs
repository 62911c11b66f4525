//! A request means one thing to the gateway and to the app: however a
//! client spells the method, the headers, the Host, the query or the
//! path, the app behind (here one that reads requests as WSGI and CGI
//! servers do) never acts on something the rules did not see.

mod common;

use common::wsgi::WsgiUpstream;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APPS: &str = r#"
[[apps]]
id = "wsgi"
hosts = ["app.test"]
upstreams = ["http://{wsgi}"]
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
policy = "never"

[[apps.rules]]
path = "/reports/"
policy = "always"

[[apps.rules]]
path = "/"
policy = "never"

[[apps]]
id = "lenient"
hosts = ["lenient.test"]
upstreams = ["http://{wsgi}"]
method_override = "honour"
header_underscores = "allow"

[[apps.rules]]
path = "/orders/"
methods = ["POST", "PUT", "PATCH", "DELETE"]
policy = "always"

[[apps.rules]]
path = "/"
policy = "never"

[[apps]]
id = "dropping"
hosts = ["dropping.test"]
upstreams = ["http://{wsgi}"]
header_underscores = "drop"

[[apps.rules]]
path = "/"
policy = "never"
"#;

/// Apps alike but for how their servers compare paths.
fn path_apps(wsgi: &WsgiUpstream) -> String {
    ["exact", "case_insensitive", "windows"]
        .iter()
        .map(|mode| {
            format!(
                "[[apps]]\nid = \"{mode}\"\nhosts = [\"{}.test\"]\nupstreams = [\"http://{}\"]\npath_matching = \"{mode}\"\n\
                 [[apps.rules]]\npath = \"/admin/\"\npolicy = \"always\"\n[[apps.rules]]\npath = \"/\"\npolicy = \"never\"\n",
                mode.replace('_', "-"),
                wsgi.addr
            )
        })
        .collect()
}

struct Edge {
    gw: TestGateway,
    wsgi: WsgiUpstream,
    /// `stepgate_session=...` of alice, signed in with her password only.
    cookie: String,
}

async fn start() -> Edge {
    start_with(Setup::default()).await
}

async fn start_with(setup: Setup) -> Edge {
    let wsgi = WsgiUpstream::start().await;
    let apps = APPS.replace("{wsgi}", &wsgi.addr.to_string()) + &path_apps(&wsgi);
    let gw = TestGateway::start_with(Setup { apps, ..setup }).await;
    let response = sign_in(&gw, &gw.browser(), ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(response.status(), 303);
    let cookie = session_cookie(&response);
    Edge { gw, wsgi, cookie }
}

impl Edge {
    /// Sends `head` (request line and headers, without the blank line)
    /// as written, with alice's session; returns the status.
    async fn raw(&self, head: &str) -> u16 {
        let request = format!("{head}\r\nCookie: {}\r\nConnection: close\r\n\r\n", self.cookie);
        raw_status(&self.gw, &request).await
    }

    fn requests_seen(&self) -> usize {
        self.wsgi.seen().len()
    }
}

/// Sends bytes as they are; returns the response's status code.
async fn raw_status(gw: &TestGateway, request: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test]
async fn methods_are_read_as_the_app_reads_them() {
    let edge = start().await;
    assert_eq!(edge.raw("DELETE /orders/42 HTTP/1.1\r\nHost: app.test").await, 401, "DELETE needs a second factor");
    for spelling in ["delete", "Delete", "dElEtE"] {
        let before = edge.requests_seen();
        assert_eq!(edge.raw(&format!("{spelling} /orders/42 HTTP/1.1\r\nHost: app.test")).await, 400, "{spelling}");
        assert_eq!(edge.requests_seen(), before, "{spelling} must not reach the app");
    }

    // Overrides are stripped by default: the app runs the GET the rules saw.
    for header in ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"] {
        assert_eq!(edge.raw(&format!("GET /orders/42 HTTP/1.1\r\nHost: app.test\r\n{header}: DELETE")).await, 200);
        let seen = edge.wsgi.last();
        assert_eq!(seen.method, "GET");
        assert!(seen.vars.keys().all(|k| !k.contains("METHOD")), "{header} reached the app: {:?}", seen.vars);
    }

    // An app that honours them: the request must pass as both methods.
    let lenient = |head: &str| head.replace("HOST", "Host: lenient.test");
    assert_eq!(edge.raw(&lenient("GET /orders/42 HTTP/1.1\r\nHOST\r\nX-HTTP-Method-Override: DELETE")).await, 401);
    assert_eq!(edge.raw(&lenient("POST /orders/42 HTTP/1.1\r\nHOST\r\nContent-Length: 0\r\nX-HTTP-Method-Override: GET")).await, 401);
    assert_eq!(edge.raw(&lenient("GET /orders/42 HTTP/1.1\r\nHOST\r\nX-HTTP-Method-Override: delete")).await, 400);
    assert_eq!(edge.raw(&lenient("GET /orders/42 HTTP/1.1\r\nHOST\r\nX-HTTP-Method: PUT\r\nX-Method-Override: GET")).await, 400);
    assert_eq!(edge.raw(&lenient("GET /orders/42 HTTP/1.1\r\nHOST\r\nX-HTTP-Method-Override: GET")).await, 200);
    assert_eq!(edge.wsgi.last().get("HTTP_X_HTTP_METHOD_OVERRIDE"), Some("GET"), "forwarded to an app that honours it");
}

#[tokio::test]
async fn identity_headers_in_any_spelling_never_reach_the_app() {
    let edge = start().await;
    let before = edge.requests_seen();
    for header in ["Remote_User: admin", "X_Stepgate_Assertion: forged", "Remote_Groups: admins", "X_Anything: x"] {
        assert_eq!(edge.raw(&format!("GET / HTTP/1.1\r\nHost: app.test\r\n{header}")).await, 400, "{header}");
    }
    assert_eq!(edge.requests_seen(), before, "refused before the app");

    assert_eq!(edge.raw("GET / HTTP/1.1\r\nHost: app.test\r\nRemote-User: admin\r\nREMOTE-GROUPS: admins").await, 200);
    let seen = edge.wsgi.last();
    assert_eq!(seen.get("HTTP_REMOTE_USER"), Some(ALICE), "the gateway's own header, not the client's");
    assert_eq!(seen.get("HTTP_REMOTE_GROUPS"), Some("staff,admins"));

    // Where underscores are allowed, the ones that read as ours are still removed.
    let forged =
        "Remote_User: admin\r\nX_Stepgate_Assertion: forged\r\nX_Forwarded_For: 203.0.113.9\r\nX_Real_IP: 203.0.113.9\r\nX_Custom: kept";
    assert_eq!(edge.raw(&format!("GET / HTTP/1.1\r\nHost: lenient.test\r\n{forged}")).await, 200);
    let seen = edge.wsgi.last();
    assert_eq!(seen.get("HTTP_REMOTE_USER"), None);
    assert_eq!(seen.get("HTTP_X_CUSTOM"), Some("kept"));
    assert_eq!(seen.get("HTTP_X_FORWARDED_FOR"), Some("127.0.0.1"));
    assert_eq!(seen.get("HTTP_X_REAL_IP"), Some("127.0.0.1"));
    assert!(seen.get("HTTP_X_STEPGATE_ASSERTION").is_some_and(|jwt| jwt != "forged"));

    // Or they are all dropped.
    assert_eq!(edge.raw("GET / HTTP/1.1\r\nHost: dropping.test\r\nX_Custom: dropped\r\nRemote_User: admin").await, 200);
    let seen = edge.wsgi.last();
    assert_eq!((seen.get("HTTP_X_CUSTOM"), seen.get("HTTP_REMOTE_USER")), (None, None));
}

#[tokio::test]
async fn forwarding_headers_from_clients_are_replaced() {
    let edge = start().await;
    let forged: Vec<String> = stepgate::edge::FORWARDING_HEADERS
        .iter()
        .chain(&["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"])
        .map(|name| format!("{name}: evil.example"))
        .collect();
    assert_eq!(edge.raw(&format!("GET /public/x HTTP/1.1\r\nHost: app.test\r\n{}", forged.join("\r\n"))).await, 200);
    let seen = edge.wsgi.last();
    let leaked: Vec<_> = seen.vars.iter().filter(|(_, value)| value.contains("evil")).collect();
    assert!(leaked.is_empty(), "reached the app: {leaked:?}");
    assert_eq!(seen.get("HTTP_X_REAL_IP"), Some("127.0.0.1"));
    assert_eq!(seen.get("HTTP_X_FORWARDED_PROTO"), Some("http"));
}

#[tokio::test]
async fn malformed_hosts_are_refused() {
    let edge = start().await;
    let before = edge.requests_seen();
    for host in ["app.test:80:x", "app.test:", "app.test:99999", "app.test@evil.test", "app test", "[::1", "app.test/x"] {
        assert_eq!(edge.raw(&format!("GET /public/x HTTP/1.1\r\nHost: {host}")).await, 400, "{host}");
    }
    assert_eq!(edge.raw("GET /public/x HTTP/1.1\r\nHost: app.test\r\nHost: other.test").await, 400, "two Hosts");
    assert_eq!(edge.raw("GET http://other.test/public/x HTTP/1.1\r\nHost: app.test").await, 400, "Host and target differ");
    assert_eq!(edge.requests_seen(), before);
    assert_eq!(edge.raw("GET /public/x HTTP/1.1\r\nHost: APP.test:80").await, 200);
    assert_eq!(edge.raw("GET /public/x HTTP/1.1\r\nHost: unknown.test").await, 404);
}

#[tokio::test]
async fn a_condition_on_a_query_parameter_reads_its_only_value() {
    let edge = start().await;
    assert_eq!(edge.raw("GET /reports/q1?view=summary HTTP/1.1\r\nHost: app.test").await, 200);
    assert_eq!(edge.raw("GET /reports/q1?view=full HTTP/1.1\r\nHost: app.test").await, 401);
    for query in ["view=summary&view=full", "view=full&view=summary", "view=summary&vie%77=full", "view=summary&view=summary"] {
        let status = edge.raw(&format!("GET /reports/q1?{query} HTTP/1.1\r\nHost: app.test")).await;
        assert_eq!(status, 400, "{query}");
    }
    assert_eq!(edge.raw("GET /public/x?tag=a&tag=b HTTP/1.1\r\nHost: app.test").await, 200, "parameters no rule reads may repeat");
}

#[tokio::test]
async fn a_regex_rule_covers_every_path_it_matches() {
    let edge = start().await;
    let before = edge.requests_seen();
    for path in ["/admin", "/admin/", "/admin.php", "/adminpanel/users", "/admin-old/", "/admin%2ephp"] {
        assert_eq!(edge.raw(&format!("GET {path} HTTP/1.1\r\nHost: app.test")).await, 401, "{path}");
    }
    assert_eq!(edge.requests_seen(), before, "a password alone reaches none of them");
}

#[tokio::test]
async fn paths_are_matched_as_each_server_reads_them() {
    let edge = start().await;
    // 401: the /admin/ rule's second factor is asked for; 400: refused as
    // ambiguous; 200: a resource other than /admin/ on that server.
    let cases: &[(&str, [u16; 3])] = &[
        ("/admin", [401, 401, 401]),
        ("/admin/", [401, 401, 401]),
        ("/ADMIN/", [200, 401, 401]),
        ("/Admin/x", [200, 401, 401]),
        ("/adm%C4%B1n/", [200, 401, 401]),
        ("/%41dmin/", [200, 401, 401]),
        ("/admin./", [200, 200, 400]),
        ("/admin%2e/", [200, 200, 400]),
        ("/admin%20", [200, 200, 400]),
        ("/admin::$DATA/", [200, 200, 400]),
        ("/ADMINI~1/", [200, 200, 400]),
        ("/admin;x=1/", [401, 401, 401]),
        ("//admin//", [401, 401, 401]),
        ("/x/../admin/", [400, 400, 400]),
        ("/x/%2e%2e/admin/", [400, 400, 400]),
        ("/other/", [200, 200, 200]),
    ];
    let mut wrong = Vec::new();
    for (path, expected) in cases {
        for (mode, expected) in ["exact", "case-insensitive", "windows"].iter().zip(expected) {
            let status = edge.raw(&format!("GET {path} HTTP/1.1\r\nHost: {mode}.test")).await;
            if status != *expected {
                wrong.push(format!("{mode} {path}: {status}, expected {expected}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn the_gateways_cookies_never_reach_the_app() {
    for (setup, session, device) in [
        (String::new(), "stepgate_session", "stepgate_device"),
        ("[session]\ncookie_name = \"sg\"\n[risk]\ndevice_cookie_name = \"dev\"\n".to_string(), "sg", "dev"),
    ] {
        let wsgi = WsgiUpstream::start().await;
        let gw =
            TestGateway::start_with(Setup { extra: setup, apps: APPS.replace("{wsgi}", &wsgi.addr.to_string()), ..Setup::default() }).await;
        let ours = [
            session.to_string(),
            format!("{session}_pre"),
            format!("__Host-{session}"),
            session.to_ascii_uppercase(),
            device.to_string(),
            format!("__Host-{device}"),
            format!("{device}_users"),
            "stepgate_method".to_string(),
        ];
        let cookies: Vec<String> = ours.iter().map(|name| format!("{name}=secret")).collect();
        let request = format!(
            "GET /public/x HTTP/1.1\r\nHost: app.test\r\nCookie: a=1; {}\r\nCookie: b=2\r\nConnection: close\r\n\r\n",
            cookies.join("; ")
        );
        assert_eq!(raw_status(&gw, &request).await, 200);
        assert_eq!(wsgi.last().get("HTTP_COOKIE"), Some("a=1; b=2"), "{session}");
    }
}

#[tokio::test]
async fn behind_a_tls_terminating_proxy_cookies_are_secure_and_links_https() {
    let edge = start_with(Setup { server_extra: "trusted_proxies = [\"127.0.0.0/8\"]".into(), ..Setup::default() }).await;
    let client = edge.gw.browser();
    let page = client.get(edge.gw.app("/.stepgate/signin")).header("x-forwarded-proto", "https").send().await.unwrap();
    assert!(set_cookie(&page, "stepgate_session_pre").contains("Secure"));
    let challenge = client.get(edge.gw.app("/admin/")).header("x-forwarded-proto", "https").send().await.unwrap();
    let location = challenge.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("rd=https%3A%2F%2Fapp.test"), "returns over https: {location}");

    // Over plain http, as the demo runs, cookies work without Secure.
    let page = gw_get(&edge.gw, "/.stepgate/signin").await;
    assert!(!set_cookie(&page, "stepgate_session_pre").contains("Secure"));
}

async fn gw_get(gw: &TestGateway, path: &str) -> reqwest::Response {
    gw.browser().get(gw.app(path)).send().await.unwrap()
}

#[tokio::test]
async fn portal_pages_carry_the_security_headers() {
    let gw = TestGateway::start_with(Setup { tls: true, ..Setup::default() }).await;
    let plain = gw.browser().get(gw.app("/.stepgate/signin")).send().await.unwrap();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(plain.headers()[name], value, "{name}");
    }
    assert!(plain.headers()["permissions-policy"].to_str().unwrap().contains("publickey-credentials-get=(self)"));
    assert!(plain.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(plain.headers().get("strict-transport-security").is_none(), "not over plain http");

    let tls = gw.client_builder().danger_accept_invalid_certs(true).resolve("app.test", gw.tls_addr.unwrap()).build().unwrap();
    let secure = tls.get(format!("https://app.test:{}/.stepgate/signin", gw.tls_addr.unwrap().port())).send().await.unwrap();
    assert_eq!(secure.status(), 200);
    assert_eq!(secure.headers()["strict-transport-security"], "max-age=31536000");
    let refusal = gw.browser().get(gw.app("/blocked/")).send().await.unwrap();
    assert_eq!(refusal.status(), 403);
    assert_eq!(refusal.headers()["x-content-type-options"], "nosniff", "the proxy's own pages too");
}

#[tokio::test]
async fn over_https_the_session_cookie_is_bound_to_its_host() {
    let gw = TestGateway::start_with(Setup { tls: true, ..Setup::default() }).await;
    let port = gw.tls_addr.unwrap().port();
    let https = |client: &reqwest::Client, path: &str| client.get(format!("https://app.test:{port}{path}")).send();
    let browser = || gw.client_builder().danger_accept_invalid_certs(true).resolve("app.test", gw.tls_addr.unwrap()).build().unwrap();

    let alice = browser();
    let page = https(&alice, "/.stepgate/signin").await.unwrap().text().await.unwrap();
    let signed_in = alice
        .post(format!("https://app.test:{port}/.stepgate/signin"))
        .form(&[("csrf", form_value(&page, "csrf").as_str()), ("username", ALICE), ("password", ALICE_PASSWORD), ("rd", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = set_cookie(&signed_in, "__Host-stepgate_session");
    assert!(cookie.contains("Secure") && cookie.contains("Path=/") && !cookie.contains("Domain"), "{cookie}");
    assert_eq!(https(&alice, "/").await.unwrap().status(), 200, "the __Host- cookie signs in");
    assert_eq!(https(&alice, "/.stepgate/settings").await.unwrap().status(), 200, "the portal reads it too");

    // The same session id under the plain name, as a sibling host could
    // plant it, is not a session over https, for the proxy or the portal.
    let id = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
    let planted = browser();
    let as_planted =
        |path: &str| planted.get(format!("https://app.test:{port}{path}")).header("cookie", format!("stepgate_session={id}")).send();
    assert_eq!(as_planted("/").await.unwrap().status(), 401);
    let settings = as_planted("/.stepgate/settings").await.unwrap();
    assert_eq!(settings.status(), 303);
    assert!(settings.headers()["location"].to_str().unwrap().starts_with("/.stepgate/signin"), "asked to sign in");
}

#[tokio::test]
async fn the_proxy_and_the_portal_read_the_same_session_cookie() {
    let gw = TestGateway::start().await;
    let alice = session_cookie(&sign_in(&gw, &gw.browser(), ALICE, ALICE_PASSWORD, "/").await);
    let bob = session_cookie(&sign_in(&gw, &gw.browser(), BOB, BOB_PASSWORD, "/").await);
    let bob_id = bob.split_once('=').unwrap().1;
    for cookies in
        [format!("{alice}; {bob}"), format!("{alice}; stepgate%5Fsession={bob_id}"), format!("{alice}; stepgate%5fsession={bob_id}")]
    {
        let client = gw.browser();
        let settings = client.get(gw.app("/.stepgate/settings")).header("cookie", &cookies).send().await.unwrap();
        let page = settings.text().await.unwrap();
        assert!(
            page.contains("<strong>alice</strong>") && !page.contains("<strong>bob</strong>"),
            "{cookies}: the portal acted for another user"
        );
        let app = client.get(gw.app("/")).header("cookie", &cookies).send().await.unwrap();
        assert_eq!(app.status(), 200);
        let claims = gw.upstream.last().headers["x-stepgate-assertion"].to_str().unwrap().split('.').nth(1).unwrap().to_string();
        let claims = String::from_utf8(data_encoding::BASE64URL_NOPAD.decode(claims.as_bytes()).unwrap()).unwrap();
        assert!(claims.contains("\"sub\":\"alice\""), "the app was told {claims}");
    }
}
