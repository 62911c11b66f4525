//! The README's first command: `stepgate demo` starts, prints a password,
//! and its app verifies the assertion it receives.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_runs_end_to_end() {
    let data = tempfile::tempdir().unwrap();
    let listen = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["demo", "--listen", &listen.to_string(), "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = KillOnDrop(child);
    let password = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let password = lines.find_map(|line| line.split("password: ").nth(1).map(|p| p.trim().to_string()));
        std::thread::spawn(move || lines.for_each(drop));
        password
    })
    .await
    .unwrap()
    .expect("the demo prints the password");

    let client = reqwest::Client::builder().cookie_store(true).default_headers(browser_headers()).build().unwrap();
    let base = format!("http://localhost:{}", listen.port());
    let mut ready = false;
    for _ in 0..200 {
        if client.get(format!("{base}/public/")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ready, "the demo listens");
    let public = client.get(format!("{base}/public/")).send().await.unwrap().text().await.unwrap();
    assert!(public.contains("No assertion"));

    // Following redirects like a browser: / leads to the sign-in page.
    let page = client.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    let rd = form_value(&page, "rd");
    let app_page = client
        .post(format!("{base}/.stepgate/signin"))
        .form(&[("csrf", csrf.as_str()), ("username", "demo"), ("password", password.as_str()), ("rd", rd.as_str())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        app_page.contains("Verified against the gateway&#x27;s JWKS") || app_page.contains("Verified against the gateway's JWKS"),
        "{app_page}"
    );
    assert!(app_page.contains("demo@example.com"));
    let admin = client.get(format!("{base}/admin/")).send().await.unwrap().text().await.unwrap();
    assert!(admin.contains("Set up a second factor") && admin.contains("Authenticator app"), "{admin}");
    // However /admin/ is spelled, a password alone does not reach the app.
    for spelling in ["/admin", "/ADMIN/", "/Admin/x", "/adm%C4%B1n/", "/admin./", "/admin%2e/", "/admin%20", "/ADMINI~1/"] {
        let page = client.get(format!("{base}{spelling}")).send().await.unwrap().text().await.unwrap();
        assert!(!page.contains("JWKS"), "{spelling} reached the app with one factor");
    }
}
