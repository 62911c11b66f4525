//! End-to-end flows in headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from `tests/browser`), with virtual WebAuthn
//! authenticators, through the real gateway to a real upstream.
//! `scripts/setup` installs both; screenshots land in
//! `target/browser-artifacts/<flow>/`.

mod common;

use common::browser::run_browser_flow;
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
