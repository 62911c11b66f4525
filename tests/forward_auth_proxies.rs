//! Forward-auth behind real proxies: nginx (`auth_request`), Caddy
//! (`forward_auth`) and HAProxy (a Lua action), started here on loopback from the very snippets the
//! README shows (`config/forward-auth/`), in front of a real app: sign-in,
//! TOTP, step-up, deny and sign-out through the proxy, the identity at the
//! app, and a client's own identity headers stripped.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::browser::run_browser_flow;
use common::upstream::Upstream;
use common::*;

const APPS: &str = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
mode = "forward_auth"
legacy_headers = true

[[apps.rules]]
path = "/public/"
policy = "bypass"

[[apps.rules]]
path = "/admin/"
policy = "always"
max_age = "5m"

[[apps.rules]]
path = "/deny/"
policy = "deny"

[[apps.rules]]
path = "/"
policy = "never"
"#;

/// A proxy process in front of the app; stopped when dropped.
struct Front {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Front {
    fn url(&self, path: &str) -> String {
        format!("http://app.test:{}{path}", self.addr.port())
    }

    /// A browser whose `app.test` is this proxy.
    fn browser(&self) -> reqwest::Client {
        self.client(browser_headers())
    }

    fn api_client(&self) -> reqwest::Client {
        self.client(reqwest::header::HeaderMap::new())
    }

    fn client(&self, headers: reqwest::header::HeaderMap) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve("app.test", self.addr)
            .default_headers(headers)
            .build()
            .unwrap()
    }
}

/// A snippet of `config/forward-auth/`, with the addresses of this test:
/// the gateway's main listener and its authorizer's own, and the app's.
fn snippet(name: &str, gw: &TestGateway, app: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/forward-auth").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    text.replace("127.0.0.1:9000", &gw.addr.to_string())
        .replace("127.0.0.1:9001", &authz(gw).to_string())
        .replace("127.0.0.1:8081", &app.to_string())
}

fn authz(gw: &TestGateway) -> SocketAddr {
    gw.gateway().config.server.authz_listen.expect("authz_listen is set")
}

/// The command that runs `program`: on the PATH, or where Debian puts it.
fn installed(program: &str) -> String {
    let candidates = [program.to_string(), format!("/usr/sbin/{program}"), format!("/usr/bin/{program}")];
    let runs = |command: &String| Command::new(command).arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    candidates.into_iter().find(runs).unwrap_or_else(|| panic!("{program} is not installed: scripts/setup installs it"))
}

async fn nginx(gw: &TestGateway, app: SocketAddr) -> Front {
    nginx_for("app.test", gw, app).await
}

/// nginx from the README's snippet, serving `host`.
async fn nginx_for(host: &str, gw: &TestGateway, app: SocketAddr) -> Front {
    let nginx = installed("nginx");
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let site = snippet("nginx.conf", gw, app)
        .replace("listen 80;", &format!("listen {addr};"))
        .replace("server_name app.example.com;", &format!("server_name {host};"));
    std::fs::write(dir.path().join("site.conf"), site).unwrap();
    let d = dir.path().display();
    let main = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
    let child = Command::new(nginx).arg("-p").arg(dir.path()).arg("-c").arg(dir.path().join("nginx.conf")).spawn().unwrap();
    started(Front { addr, child, _dir: dir }).await
}

async fn caddy(gw: &TestGateway, app: SocketAddr) -> Front {
    let caddy = installed("caddy");
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let site = snippet("Caddyfile", gw, app).replace("app.example.com {", &format!("http://app.test:{} {{", addr.port()));
    let global = "{\n\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}\n";
    std::fs::write(dir.path().join("Caddyfile"), format!("{global}{site}")).unwrap();
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.path().join("Caddyfile"))
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    started(Front { addr, child, _dir: dir }).await
}

/// HAProxy from the README's snippet and its Lua script.
async fn haproxy(gw: &TestGateway, app: SocketAddr) -> Front {
    let haproxy = installed("haproxy");
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let script = dir.path().join("stepgate-auth.lua");
    std::fs::write(&script, snippet("stepgate-auth.lua", gw, app)).unwrap();
    let config = snippet("haproxy.cfg", gw, app)
        .replace("lua-load /etc/haproxy/stepgate-auth.lua", &format!("lua-load {}", script.display()))
        .replace("bind :80", &format!("bind {addr}"));
    std::fs::write(dir.path().join("haproxy.cfg"), config).unwrap();
    let child = Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(dir.path().join("haproxy.cfg"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    started(Front { addr, child, _dir: dir }).await
}

/// The proxy once it accepts connections.
async fn started(mut front: Front) -> Front {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(front.addr).await.is_ok() {
            return front;
        }
        if let Some(status) = front.child.try_wait().unwrap() {
            panic!("the proxy exited: {status}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the proxy did not start listening on {}", front.addr);
}

async fn start() -> (TestGateway, Upstream) {
    start_for("app.test").await
}

/// The gateway, with the app at `host`, and the app itself.
async fn start_for(host: &str) -> (TestGateway, Upstream) {
    let app = Upstream::start().await;
    let server_extra = format!("trusted_proxies = [\"127.0.0.0/8\"]\nauthz_listen = \"{}\"", free_port());
    let setup = Setup { apps: APPS.replace("app.test", host), server_extra, ..Setup::default() };
    let gw = TestGateway::start_with(setup).await;
    wait_for_port(authz(&gw)).await;
    (gw, app)
}

/// The portal page `location` names, fetched through the proxy.
async fn portal_page(front: &Front, client: &reqwest::Client, location: &str) -> String {
    let url = match location.starts_with('/') {
        true => front.url(location),
        false => location.to_string(),
    };
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{location}");
    response.text().await.unwrap()
}

fn location(response: &reqwest::Response) -> String {
    let Some(location) = response.headers().get("location") else { panic!("no location: {response:?}") };
    location.to_str().unwrap().to_string()
}

/// What one proxy must get right, whichever it is.
async fn walk(gw: &TestGateway, app: &Upstream, front: &Front) {
    let browser = front.browser();
    let private = front.url("/private/x?y=1");

    // Nobody signed in: to the portal, on the app's own host.
    let response = browser.get(&private).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let to_signin = location(&response);
    assert!(to_signin.contains("/.stepgate/signin?rd="), "{to_signin}");
    let page = portal_page(front, &browser, &to_signin).await;
    let form = [
        ("csrf", form_value(&page, "csrf")),
        ("username", ALICE.into()),
        ("password", ALICE_PASSWORD.into()),
        ("rd", form_value(&page, "rd")),
    ];
    let response = browser.post(front.url("/.stepgate/signin")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), private, "back where the user was going");

    // Signed in: the app sees who, and can verify it.
    let seen_before = app.count();
    assert_eq!(browser.get(&private).send().await.unwrap().status(), 200);
    assert_eq!(app.count(), seen_before + 1);
    let headers = app.last().headers;
    assert_eq!(headers["remote-user"], ALICE);
    assert_eq!(headers["remote-groups"], "staff,admins");
    let jwks: jsonwebtoken::jwk::JwkSet = browser.get(front.url("/.stepgate/jwks.json")).send().await.unwrap().json().await.unwrap();
    let claims = verify_assertion(headers["x-stepgate-assertion"].to_str().unwrap(), &jwks, "app");
    assert_eq!(claims["sub"], ALICE);

    // A stranger's own identity headers never reach the app.
    let stranger = front.browser();
    let forged = stranger
        .get(front.url("/public/page"))
        .header("remote-user", "mallory")
        .header("remote-groups", "admins")
        .header("x-stepgate-assertion", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 200);
    for dialect in ["nginx", "forward", "envoy/admin/panel"] {
        let asked = stranger.get(front.url(&format!("/.stepgate/authz/{dialect}"))).header("x-forwarded-uri", "/admin/panel");
        assert_eq!(asked.send().await.unwrap().status(), 404, "the authorizer is the proxy's to ask, not the client's");
    }
    let headers = app.last().headers;
    for name in ["remote-user", "remote-groups", "x-stepgate-assertion"] {
        assert!(headers.get(name).is_none_or(|value| value.is_empty()), "{name} reached the app: {headers:?}");
    }

    // A second factor, enrolled through the proxy, then asked again when stale.
    let admin = front.url("/admin/panel");
    let response = browser.get(&admin).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let page = portal_page(front, &browser, &location(&response)).await;
    let secret = regex::Regex::new(r#"id="secret">([A-Z2-7=]+)<"#).unwrap().captures(&page).expect("an enrolment page")[1].to_string();
    let code = totp::code(&secret, gw.now());
    let form = [("csrf", form_value(&page, "csrf")), ("code", code), ("rd", form_value(&page, "rd"))];
    let response = browser.post(front.url("/.stepgate/second-factor/totp/enroll")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(browser.get(&admin).send().await.unwrap().status(), 200);
    let claims = verify_assertion(app.last().headers["x-stepgate-assertion"].to_str().unwrap(), &jwks, "app");
    assert!(claims["amr"].as_array().unwrap().contains(&serde_json::json!("otp")), "{claims}");

    gw.clock.advance(600);
    let response = browser.get(&admin).send().await.unwrap();
    assert_eq!(response.status(), 302, "a stale second factor steps up");
    let to_second_factor = location(&response);
    assert!(to_second_factor.contains("/.stepgate/second-factor?rd="), "{to_second_factor}");
    let page = portal_page(front, &browser, &to_second_factor).await;
    let form = [("csrf", form_value(&page, "csrf")), ("code", totp::code(&secret, gw.now())), ("rd", form_value(&page, "rd"))];
    let response = browser.post(front.url("/.stepgate/second-factor/totp")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), admin);
    assert_eq!(browser.get(&admin).send().await.unwrap().status(), 200);

    // Denied, whoever asks.
    let seen_before = app.count();
    assert_eq!(browser.get(front.url("/deny/x")).send().await.unwrap().status(), 403);
    assert_eq!(app.count(), seen_before, "a denied request never reaches the app");

    // Sign-out through the proxy ends the session for every app behind it.
    let page = portal_page(front, &browser, "/.stepgate/signout").await;
    let response = browser.post(front.url("/.stepgate/signout")).form(&[("csrf", form_value(&page, "csrf"))]).send().await.unwrap();
    assert!(response.status().is_redirection() || response.status().is_success(), "{}", response.status());
    assert_eq!(browser.get(&private).send().await.unwrap().status(), 302, "signed out");
}

/// Behind a proxy that puts `X-Stepgate-Cookie` in place of the browser's
/// `Cookie`, the app gets the browser's other cookies and never a session.
async fn the_app_never_holds_a_session(front: &Front, app: &Upstream) {
    let browser = front.browser();
    let page = portal_page(front, &browser, "/.stepgate/signin").await;
    let form = [("csrf", form_value(&page, "csrf")), ("username", ALICE.into()), ("password", ALICE_PASSWORD.into())];
    let response = browser.post(front.url("/.stepgate/signin")).form(&form).send().await.unwrap();
    let session = session_cookie(&response);
    let plain = reqwest::Client::builder().resolve("app.test", front.addr).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookies = format!("theme=dark; {session}; lang=en");
    assert_eq!(plain.get(front.url("/private/x")).header("cookie", cookies).send().await.unwrap().status(), 200);
    assert_eq!(app.last().headers["cookie"], "theme=dark; lang=en");
    assert_eq!(plain.get(front.url("/private/x")).header("cookie", session).send().await.unwrap().status(), 200);
    assert!(app.last().headers.get("cookie").is_none(), "no cookie is left: {:?}", app.last().headers);
}

#[tokio::test]
async fn nginx_auth_request_walk() {
    let (gw, app) = start().await;
    let front = nginx(&gw, app.addr).await;
    walk(&gw, &app, &front).await;
    the_app_never_holds_a_session(&front, &app).await;
    // nginx makes every 401 a redirect, for API clients too.
    let api = front.api_client().get(front.url("/private/x")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(api.status(), 302);
}

#[tokio::test]
async fn caddy_forward_auth_walk() {
    let (gw, app) = start().await;
    let front = caddy(&gw, app.addr).await;
    walk(&gw, &app, &front).await;
    // Caddy passes stepgate's answer on: JSON for an API client.
    let api = front.api_client().get(front.url("/private/x")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(api.status(), 401);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"], "sign_in_required");
}

#[tokio::test]
async fn haproxy_lua_walk() {
    let (gw, app) = start().await;
    let front = haproxy(&gw, app.addr).await;
    walk(&gw, &app, &front).await;
    the_app_never_holds_a_session(&front, &app).await;
    // HAProxy passes stepgate's answer on: JSON for an API client.
    let api = front.api_client().get(front.url("/private/x")).header("accept", "application/json").send().await.unwrap();
    assert_eq!(api.status(), 401);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"], "sign_in_required");
}

/// `app.localhost` resolves to loopback in Chromium by itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_signs_in_through_nginx_in_chromium() {
    let (gw, app) = start_for("app.localhost").await;
    let front = nginx_for("app.localhost", &gw, app.addr).await;
    let url = format!("http://app.localhost:{}", front.addr.port());
    tokio::task::block_in_place(|| run_browser_flow(&url, gw.now(), "forward-auth.mjs"));
}

#[test]
fn the_readme_shows_the_snippets_as_they_are() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for name in ["nginx.conf", "Caddyfile", "haproxy.cfg", "stepgate-auth.lua", "traefik.yml", "envoy.yaml"] {
        let text = std::fs::read_to_string(root.join("config/forward-auth").join(name)).unwrap();
        assert!(readme.contains(text.trim_end()), "README.md does not show config/forward-auth/{name} as it is");
    }
}
