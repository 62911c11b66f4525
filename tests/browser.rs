//! End-to-end flows in headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from `tests/browser`), with virtual WebAuthn
//! authenticators, through the real gateway to a real upstream.
//! `scripts/setup` installs both; screenshots land in
//! `target/browser-artifacts/<flow>/`.

mod common;

use std::path::Path;
use std::process::Command;

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

/// Runs one flow file against the gateway; fails with its output.
fn run_flow(gw: &TestGateway, flow: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Chromium and playwright-core: run scripts/setup"
    );
    let output = Command::new("node")
        .arg(root.join("tests/browser").join(flow))
        .env("STEPGATE_URL", format!("http://app.localhost:{}", gw.addr.port()))
        .env("STEPGATE_NOW", gw.now().to_string())
        .env("STEPGATE_USER", ALICE)
        .env("STEPGATE_PASSWORD", ALICE_PASSWORD)
        .env("STEPGATE_ARTIFACTS", root.join("target/browser-artifacts"))
        .output()
        .expect("node runs (install Node.js 20 or newer)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{text}");
    assert!(output.status.success(), "browser flow {flow} failed:\n{text}");
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
