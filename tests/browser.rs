//! End-to-end flows in headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from `tests/browser`), with virtual WebAuthn
//! authenticators, through the real gateway to a real upstream.
//! `scripts/setup` installs both; screenshots land in
//! `target/browser-artifacts/<flow>/`.

mod common;

use common::browser::{run_browser_flow, run_browser_flow_with};
use common::smtp::SmtpSink;
use common::*;

/// `app.localhost` is a secure context in Chromium and resolves to
/// loopback by itself, so WebAuthn works over plain HTTP in the test.
const APPS: &str = r#"
[[apps]]
id = "app"
hosts = ["app.localhost"]
upstreams = ["http://{upstream}"]
webauthn = { rp_id = "app.localhost", origins = ["http://app.localhost:{port}"] }

[[apps.rules]]
path = "/admin/"
policy = "two_factor"
factors = ["webauthn"]

[[apps.rules]]
path = "/"
policy = "two_factor"
"#;

/// Runs one flow file against the gateway.
fn run_flow(gw: &TestGateway, flow: &str) {
    run_browser_flow(&format!("http://app.localhost:{}", gw.addr.port()), gw.now(), flow);
}

#[tokio::test(flavor = "multi_thread")]
async fn factors_recovery_and_the_security_page_in_chromium() {
    let gw = TestGateway::start_with(Setup { apps: APPS.into(), ..Setup::default() }).await;
    tokio::task::block_in_place(|| run_flow(&gw, "security.mjs"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passkey_signs_in_without_a_password_in_chromium() {
    let setup = Setup { apps: APPS.into(), extra: "[webauthn]\npasswordless = true\n".into(), ..Setup::default() };
    let gw = TestGateway::start_with(setup).await;
    tokio::task::block_in_place(|| run_flow(&gw, "passkey.mjs"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_factor_is_added_and_signs_in_in_chromium() {
    let smtp = SmtpSink::start().await;
    std::env::set_var("STEPGATE_TEST_SMTP_PASSWORD", common::smtp::SMTP_PASSWORD);
    let gw = TestGateway::start_with(Setup { apps: APPS.into(), extra: smtp.email_section("alone = true"), ..Setup::default() }).await;
    // The flow moves the gateway's clock past the resend wait before it asks
    // for its second code (the first is moments old), by a POST here.
    let clock = gw.clock.clone();
    let advance = axum::Router::new().route(
        "/advance",
        axum::routing::post(move || {
            clock.advance(31);
            async {}
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock_url = format!("http://{}/advance", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, advance).await });
    let mail_dir = smtp.mail_dir();
    tokio::task::block_in_place(|| {
        run_browser_flow_with(
            &format!("http://app.localhost:{}", gw.addr.port()),
            gw.now(),
            "email.mjs",
            &[("STEPGATE_MAIL_DIR", mail_dir.as_os_str()), ("STEPGATE_ADVANCE_CLOCK", std::ffi::OsStr::new(&clock_url))],
        )
    });
    server.abort();
    smtp.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_at_an_openid_provider_in_chromium() {
    let provider = common::oidc::OidcProvider::start().await;
    provider.next_login("alice", &["pwd"], None).await;
    std::env::set_var("STEPGATE_TEST_OIDC_SECRET", common::oidc::CLIENT_SECRET);
    // `{port}` is the gateway's, filled in when it starts.
    let extra = format!(
        "[directory]\nkind = \"oidc\"\n[directory.oidc]\nissuer = \"{}\"\nclient_id = \"stepgate\"\nclient_secret_env = \"STEPGATE_TEST_OIDC_SECRET\"\n\
         redirect_uri = \"http://app.localhost:{{port}}/.stepgate/oidc/callback\"\npost_logout_redirect_uri = \"http://app.localhost:{{port}}/\"\n",
        provider.issuer()
    );
    let apps = "[[apps]]\nid = \"app\"\nhosts = [\"app.localhost\"]\nupstreams = [\"http://{upstream}\"]\n\n[[apps.rules]]\npath = \"/\"\npolicy = \"never\"\n";
    let gw = TestGateway::start_with(Setup { apps: apps.into(), extra, ..Setup::default() }).await;
    let base = format!("http://app.localhost:{}", gw.addr.port());
    let issuer = provider.issuer();
    tokio::task::block_in_place(|| {
        run_browser_flow_with(&base, gw.now(), "oidc.mjs", &[("STEPGATE_PROVIDER", std::ffi::OsStr::new(&issuer))]);
    });
}
