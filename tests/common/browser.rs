//! Runs a flow of `tests/browser/` in headless Chromium (Debian's
//! `chromium`, driven by `playwright-core`); `scripts/setup` installs both.
//! Screenshots land in `target/browser-artifacts/<flow>/`.

use std::path::Path;
use std::process::Command;

use super::{ALICE, ALICE_PASSWORD};

/// Runs `flow` against `url` (`http://app.localhost:PORT`), with the
/// gateway's clock at `now`; fails with the flow's output.
pub fn run_browser_flow(url: &str, now: i64, flow: &str) {
    run_browser_flow_with(url, now, flow, &[]);
}

/// [`run_browser_flow`] with more environment for the flow.
pub fn run_browser_flow_with(url: &str, now: i64, flow: &str, env: &[(&str, &std::ffi::OsStr)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Chromium and playwright-core: run scripts/setup"
    );
    let output = Command::new("node")
        .arg(root.join("tests/browser").join(flow))
        .env("STEPGATE_URL", url)
        .env("STEPGATE_NOW", now.to_string())
        .env("STEPGATE_USER", ALICE)
        .env("STEPGATE_PASSWORD", ALICE_PASSWORD)
        .env("STEPGATE_ARTIFACTS", root.join("target/browser-artifacts"))
        .envs(env.iter().copied())
        .output()
        .expect("node runs (install Node.js 20 or newer)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{text}");
    assert!(output.status.success(), "browser flow {flow} failed:\n{text}");
}
