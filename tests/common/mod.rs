//! A real gateway on an ephemeral port in front of a real HTTP upstream,
//! driven by a real HTTP client with a cookie jar.
#![allow(dead_code)]

pub mod backends;
pub mod browser;
pub mod captured_logs;
pub mod failing_cache;
pub mod failing_store;
pub mod geo;
pub mod killable;
pub mod ldap;
pub mod oidc;
pub mod postgres;
pub mod redis;
pub mod servers;
pub mod sms_provider;
pub mod smtp;
pub mod totp;
pub mod upstream;
pub mod webauthn;
pub mod wsgi;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stepgate::cache::{Cache, MemoryCache};
use stepgate::clock::{Clock, ManualClock};
use stepgate::config::Config;
use stepgate::crypto::Secrets;
use stepgate::gateway::Gateway;
use stepgate::live::LiveGateway;
use stepgate::server::RunningGateway;
use stepgate::store::{SqliteStore, Store};

pub use upstream::Upstream;

pub const ALICE: &str = "alice";
pub const ALICE_PASSWORD: &str = "correct horse battery staple";
pub const BOB: &str = "bob";
pub const BOB_PASSWORD: &str = "bob's own password";
pub const MASTER_KEY: [u8; 32] = [42; 32];

/// The rules every test gateway starts with; `{upstream}` is filled in.
pub const DEFAULT_APPS: &str = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]

[[apps.rules]]
path = "/public/"
policy = "bypass"

[[apps.rules]]
regex = "^/v[0-9]+/status$"
policy = "bypass"

[[apps.rules]]
path = "/admin/"
policy = "two_factor"

[[apps.rules]]
glob = "/files/**/*.pdf"
policy = "two_factor"

[[apps.rules]]
path = "/blocked/"
policy = "deny"

[[apps.rules]]
path = "/api/"
methods = ["GET"]
policy = "one_factor"

[[apps.rules]]
path = "/api/"
policy = "deny"

[[apps.rules]]
path = "/"
policy = "one_factor"

[[apps]]
id = "legacy"
hosts = ["legacy.test"]
upstreams = ["http://{upstream}"]
assertion_header = "X-Auth-Token"
legacy_headers = true

[[apps.rules]]
path = "/"
policy = "one_factor"

[[apps]]
id = "strict"
hosts = ["strict.test"]
upstreams = ["http://{upstream}"]

[[apps.rules]]
path = "/open/"
policy = "bypass"
"#;

pub struct TestGateway {
    pub running: RunningGateway,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub clock: ManualClock,
    pub upstream: Upstream,
    pub dir: tempfile::TempDir,
}

/// How a test wants its gateway.
pub struct Setup {
    /// Extra top-level TOML (sections such as `[totp]`).
    pub extra: String,
    /// Extra lines inside `[server]`.
    pub server_extra: String,
    pub apps: String,
    pub tls: bool,
    /// The users file, when it must be this one (several instances share
    /// it: a session lives only under the password it was made with).
    pub users: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self { extra: String::new(), server_extra: String::new(), apps: DEFAULT_APPS.into(), tls: false, users: None }
    }
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> Self {
        Self::start_with_store(setup, |sqlite| Arc::new(sqlite)).await
    }

    /// A gateway on a store made from the SQLite one opened in its data
    /// directory (to wrap it, for example).
    pub async fn start_with_store(setup: Setup, store: impl FnOnce(SqliteStore) -> Arc<dyn Store>) -> Self {
        Self::start_with_backends(setup, store, |clock| Arc::new(MemoryCache::new(clock))).await
    }

    /// A gateway on a store as above and a cache made with its clock.
    pub async fn start_with_backends(
        setup: Setup,
        store: impl FnOnce(SqliteStore) -> Arc<dyn Store>,
        cache: impl FnOnce(Arc<dyn Clock>) -> Arc<dyn Cache>,
    ) -> Self {
        let prepared = Prepared::new(setup).await;
        let clock = ManualClock::new();
        let sqlite = SqliteStore::open(&prepared.config.server.data_dir).await.unwrap_or_else(|e| panic!("store: {e}"));
        let cache = cache(Arc::new(clock.clone()));
        let secrets = Some(Secrets::from_master(&MASTER_KEY));
        let gateway = Gateway::build_with_backends(prepared.config.clone(), Arc::new(clock.clone()), secrets, store(sqlite), cache)
            .await
            .unwrap_or_else(|e| panic!("gateway: {e}"));
        prepared.launch(gateway, clock).await
    }

    /// A gateway on the backends its configuration names (`[store]` and
    /// `[cache]` in `setup.extra`), on a clock it may share with others.
    pub async fn start_on_backends(setup: Setup, clock: ManualClock) -> Self {
        let prepared = Prepared::new(setup).await;
        let secrets = Some(Secrets::from_master(&MASTER_KEY));
        let gateway =
            Gateway::build(prepared.config.clone(), Arc::new(clock.clone()), secrets).await.unwrap_or_else(|e| panic!("gateway: {e}"));
        prepared.launch(gateway, clock).await
    }

    /// The gateway serving requests now.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.running.live.current()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("stepgate.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// `http://HOST:PORT/path`; the client resolves every test host to the gateway.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.addr.port())
    }

    pub fn app(&self, path: &str) -> String {
        self.url("app.test", path)
    }

    /// A browser-like client: cookie jar, no automatic redirects, HTML accepted.
    pub fn browser(&self) -> reqwest::Client {
        self.client_builder().default_headers(browser_headers()).build().expect("client")
    }

    /// A non-browser client (no `Accept: text/html`), with a cookie jar.
    pub fn api_client(&self) -> reqwest::Client {
        self.client_builder().build().expect("client")
    }

    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut builder =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(30));
        for host in [
            "app.test",
            "legacy.test",
            "strict.test",
            "unknown.test",
            "outside.test",
            "inline.test",
            "stepgate.internal",
            "auth.example.test",
            "app.example.test",
            "evil.test",
        ] {
            builder = builder.resolve(host, self.addr);
        }
        builder
    }
}

/// A test gateway's upstream, directory and configuration, before start.
struct Prepared {
    upstream: Upstream,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    config_path: PathBuf,
    config: Config,
}

impl Prepared {
    async fn new(setup: Setup) -> Self {
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let users = setup.users.clone().unwrap_or_else(users_file);
        std::fs::write(dir.path().join("users.toml"), users).expect("write users");
        let addr = free_port();
        let tls_addr = setup.tls.then(free_port);
        let tls_section = match tls_addr {
            Some(tls) => {
                write_certificate(dir.path());
                format!("[server.tls]\nlisten = \"{tls}\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n")
            }
            None => String::new(),
        };
        let text = format!(
            "users_file = \"users.toml\"\n{extra}\n[server]\nlisten = \"{addr}\"\ndata_dir = \"data\"\nthreads = 2\n{server_extra}\n{tls_section}\n{apps}",
            extra = setup.extra.replace("{port}", &addr.port().to_string()),
            server_extra = setup.server_extra,
            apps = setup.apps.replace("{upstream}", &upstream.addr.to_string()).replace("{port}", &addr.port().to_string()),
        );
        let config_path = dir.path().join("stepgate.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("test config: {e}"));
        if std::env::var_os("RUST_LOG").is_some() {
            // Logs of a failing test are worth more than the last few lines.
            std::mem::forget(stepgate::logging::init(&config.logging));
        }
        Self { upstream, dir, addr, tls_addr, config_path, config }
    }

    async fn launch(self, gateway: Arc<Gateway>, clock: ManualClock) -> TestGateway {
        let live = LiveGateway::new(gateway, Some(self.config_path.clone()));
        let running = RunningGateway::start(live).expect("start");
        wait_for_port(self.addr).await;
        if let Some(tls) = self.tls_addr {
            wait_for_port(tls).await;
        }
        TestGateway { running, addr: self.addr, tls_addr: self.tls_addr, clock, upstream: self.upstream, dir: self.dir }
    }
}

pub fn browser_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8".parse().unwrap());
    headers
}

/// One app whose only upstream listens nowhere, with `/public/` open.
pub fn apps_with_dead_upstream() -> String {
    let dead = refusing_address();
    format!(
        "[[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://{dead}\"]\n\n\
         [[apps.rules]]\npath = \"/public/\"\npolicy = \"bypass\"\n"
    )
}

/// A users file with Alice and Bob.
pub fn users_file() -> String {
    let user = |name: &str, display: &str, groups: &str, password: &str| {
        format!(
            "[[users]]\nusername = \"{name}\"\ndisplay_name = \"{display}\"\nemail = \"{name}@example.com\"\ngroups = [{groups}]\npassword = \"{}\"\n\n",
            stepgate::users::hash_password(password)
        )
    };
    user(ALICE, "Alice Liddell", "\"staff\", \"admins\"", ALICE_PASSWORD) + &user(BOB, "Bob", "", BOB_PASSWORD)
}

fn write_certificate(dir: &std::path::Path) {
    let cert = rcgen::generate_simple_self_signed(vec!["app.test".into()]).expect("certificate");
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).expect("write key");
}

/// An address that refuses connections for as long as the test process
/// runs: a socket bound to it, never listening, is held (leaked) for the
/// process's life, so no other test's server can take the port and receive
/// traffic meant for nobody.
pub fn refusing_address() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = socket.local_addr().expect("address");
    std::mem::forget(socket);
    addr
}

pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway did not start listening on {addr}");
}

/// The value of `<input ... name="NAME" value="...">` in a page.
pub fn form_value(html: &str, name: &str) -> String {
    let pattern = format!(r#"name="{name}" value="([^"]*)""#);
    regex::Regex::new(&pattern)
        .unwrap()
        .captures(html)
        .map(|c| c[1].to_string())
        .unwrap_or_else(|| panic!("no {name} field in page:\n{html}"))
}

/// Signs in through the real pages; returns the POST's response.
pub async fn sign_in(gw: &TestGateway, client: &reqwest::Client, user: &str, password: &str, rd: &str) -> reqwest::Response {
    sign_in_at(gw, "app.test", client, user, password, rd).await
}

/// Signs in on a given host (session cookies are scoped to the host).
pub async fn sign_in_at(gw: &TestGateway, host: &str, client: &reqwest::Client, user: &str, password: &str, rd: &str) -> reqwest::Response {
    let page = client.get(gw.url(host, "/.stepgate/signin")).send().await.unwrap().text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    client
        .post(gw.url(host, "/.stepgate/signin"))
        .form(&[("csrf", csrf.as_str()), ("username", user), ("password", password), ("rd", rd)])
        .send()
        .await
        .unwrap()
}

/// The whole `Set-Cookie` value a response sets for cookie `name`.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
        .to_string()
}

/// `name=value` of the session cookie a response sets.
pub fn session_cookie(response: &reqwest::Response) -> String {
    set_cookie(response, "stepgate_session").split(';').next().unwrap().to_string()
}

/// Enrols TOTP through the real pages at the gateway's current time;
/// returns the base32 secret.
pub async fn enroll_totp(gw: &TestGateway, client: &reqwest::Client) -> String {
    let page = client.get(gw.app("/.stepgate/second-factor")).send().await.unwrap().text().await.unwrap();
    let secret = regex::Regex::new(r#"id="secret">([A-Z2-7=]+)<"#)
        .unwrap()
        .captures(&page)
        .unwrap_or_else(|| panic!("no secret on enrolment page:\n{page}"))[1]
        .to_string();
    let csrf = form_value(&page, "csrf");
    let code = totp::code(&secret, gw.now());
    let response = client
        .post(gw.app("/.stepgate/second-factor/totp/enroll"))
        .form(&[("csrf", csrf.as_str()), ("code", code.as_str()), ("rd", "/admin/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "enrolment must succeed");
    secret
}

/// Posts a TOTP code on the challenge page; returns the response.
pub async fn submit_totp(gw: &TestGateway, client: &reqwest::Client, code: &str) -> reqwest::Response {
    let page = client.get(gw.app("/.stepgate/second-factor")).send().await.unwrap().text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    client
        .post(gw.app("/.stepgate/second-factor/totp"))
        .form(&[("csrf", csrf.as_str()), ("code", code), ("rd", "/admin/")])
        .send()
        .await
        .unwrap()
}

/// The claims of the assertion the app last received (not verified: the
/// tests of the assertion itself do that).
pub fn last_assertion_claims(gw: &TestGateway) -> serde_json::Value {
    use base64::Engine;
    let token = gw.upstream.last().headers["x-stepgate-assertion"].to_str().unwrap().to_string();
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The gateway's JWKS, fetched over HTTP as an app would.
pub async fn fetch_jwks(gw: &TestGateway) -> jsonwebtoken::jwk::JwkSet {
    let response = gw.api_client().get(gw.app("/.stepgate/jwks.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The claims of an assertion for `audience`, verified against the JWKS.
pub fn verify_assertion(token: &str, jwks: &jsonwebtoken::jwk::JwkSet, audience: &str) -> serde_json::Value {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let kid = decode_header(token).unwrap().kid.expect("kid");
    let jwk = jwks.find(&kid).expect("kid in JWKS");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["stepgate"]);
    decode::<serde_json::Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims
}
