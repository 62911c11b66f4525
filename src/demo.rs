//! `stepgate demo`: the gateway in front of a built-in "legacy app", on
//! loopback, with no external service. The app verifies the assertion
//! against the gateway's JWKS exactly as a real app would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};

use crate::assertion::Claims;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::crypto::{random_token, Secrets};
use crate::gateway::{Gateway, StartError};
use crate::live::LiveGateway;

pub const DEMO_USER: &str = "demo";
const APP_ID: &str = "demo";

/// Everything the demo prints and runs.
pub struct Demo {
    pub config: Config,
    pub password: String,
    pub secrets: Secrets,
}

/// Writes a demo users file and configuration into `data_dir` for a
/// gateway on `listen` in front of an app on `app_addr`.
pub fn prepare(data_dir: &Path, listen: SocketAddr, app_addr: SocketAddr) -> Result<Demo, StartError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StartError::Io(format!("{}: {e}", data_dir.display())))?;
    let password = random_token()[..16].to_string();
    let users = format!(
        "[[users]]\nusername = \"{DEMO_USER}\"\ndisplay_name = \"Demo User\"\nemail = \"demo@example.com\"\n\
         groups = [\"staff\"]\npassword = \"{}\"\n",
        crate::users::hash_password(&password)
    );
    let users_path = data_dir.join("users.toml");
    std::fs::write(&users_path, users).map_err(|e| StartError::Io(format!("{}: {e}", users_path.display())))?;
    let port = listen.port();
    let config_text = format!(
        r#"users_file = "users.toml"

[server]
listen = "{listen}"
data_dir = "."

[branding]
product_name = "stepgate demo"

[[apps]]
id = "{APP_ID}"
hosts = ["localhost", "127.0.0.1"]
upstreams = ["http://{app_addr}"]
# Security keys and biometrics on http://localhost (browsers refuse them on
# a bare IP address).
webauthn = {{ rp_id = "localhost", origins = ["http://localhost:{port}"] }}
# The demo app answers every path, as a legacy app on Windows would answer
# /ADMIN/ and /admin./ for /admin/: match paths as such a server does.
path_matching = "windows"

[[apps.rules]]
path = "/public/"
policy = "bypass"

[[apps.rules]]
path = "/admin/"
policy = "always"

[[apps.rules]]
path = "/"
policy = "never"
"#
    );
    let config_path = data_dir.join("stepgate.toml");
    std::fs::write(&config_path, &config_text).map_err(|e| StartError::Io(format!("{}: {e}", config_path.display())))?;
    let config = Config::load(&config_path)?;
    let secrets = Secrets::from_master(&crate::crypto::random_bytes::<32>());
    Ok(Demo { config, password, secrets })
}

/// Runs the demo until interrupted.
pub fn run(listen: SocketAddr, data_dir: Option<PathBuf>) -> Result<(), StartError> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| StartError::Io(e.to_string()))?;
    let data_dir = data_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("stepgate-demo-{}", std::process::id())));
    let app_listener =
        runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).map_err(|e| StartError::Io(format!("demo app: {e}")))?;
    let app_addr = app_listener.local_addr().map_err(|e| StartError::Io(e.to_string()))?;
    let demo = prepare(&data_dir, listen, app_addr)?;
    let _log_writer = crate::logging::init(&demo.config.logging);
    let gateway = runtime.block_on(Gateway::build(demo.config, Arc::new(SystemClock), Some(demo.secrets)))?;
    runtime.spawn(serve_app(app_listener, listen));
    let live = LiveGateway::new(gateway, None);
    runtime.spawn(live.clone().maintain());
    print_welcome(listen, &demo.password, &data_dir);
    let server = crate::server::build_server(live)?;
    crate::server::run(server, None);
    Ok(())
}

fn print_welcome(listen: SocketAddr, password: &str, data_dir: &Path) {
    use std::io::Write;
    let base = format!("http://localhost:{}", listen.port());
    // Whoever reads our output may go away; the demo keeps running.
    let _ = writeln!(
        std::io::stdout().lock(),
        "\nstepgate demo is running (Ctrl-C to stop). Data in {data}.\n\n\
         Sign in as   user: {DEMO_USER}   password: {password}\n\n\
         Try:\n\
         \x20 {base}/public/   bypass: no sign-in needed\n\
         \x20 {base}/          never a second factor: the password\n\
         \x20 {base}/admin/    always a second factor: you set up an authenticator app (TOTP) once\n\
         \x20 {base}/.stepgate/jwks.json   the keys apps verify assertions with\n\
         \x20 {base}/.stepgate/signout\n",
        data = data_dir.display()
    );
}

#[derive(Template)]
#[template(path = "demo_app.html")]
struct DemoAppPage {
    path: String,
    verified: Option<Result<Claims, String>>,
    headers: Vec<(String, String)>,
}

struct DemoApp {
    jwks_url: String,
    http: reqwest::Client,
}

/// The demo's "legacy app": shows what it received and whether the
/// assertion verifies.
pub async fn serve_app(listener: tokio::net::TcpListener, gateway: SocketAddr) {
    let app =
        Arc::new(DemoApp { jwks_url: format!("http://127.0.0.1:{}/.stepgate/jwks.json", gateway.port()), http: reqwest::Client::new() });
    let router = axum::Router::new()
        .route("/public/demo.css", axum::routing::get(|| async { ([("content-type", "text/css")], DEMO_CSS) }))
        .fallback(app_page)
        .with_state(app);
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "demo app stopped");
    }
}

const DEMO_CSS: &str = "body{font:15px/1.5 system-ui,sans-serif;margin:2rem;max-width:60rem}\
th{text-align:left;padding-right:1rem;vertical-align:top}code{word-break:break-all}.ok{color:#166534}.bad{color:#b3261e}";

async fn app_page(State(app): State<Arc<DemoApp>>, uri: Uri, headers: HeaderMap) -> Response {
    let verified = match headers.get("x-stepgate-assertion").and_then(|v| v.to_str().ok()) {
        Some(token) => Some(app.verify(token).await),
        None => None,
    };
    let page = DemoAppPage {
        path: uri.path().to_string(),
        verified,
        headers: headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
    };
    match page.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

impl DemoApp {
    async fn verify(&self, token: &str) -> Result<Claims, String> {
        let jwks = self
            .http
            .get(&self.jwks_url)
            .header("host", "localhost")
            .send()
            .await
            .map_err(|e| format!("cannot fetch the JWKS: {e}"))?
            .json()
            .await
            .map_err(|e| format!("the JWKS is not valid: {e}"))?;
        crate::assertion::verify(token, &jwks, "stepgate", APP_ID).map_err(|e| e.to_string())
    }
}
