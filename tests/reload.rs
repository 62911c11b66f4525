//! Live changes: the configuration and users file are reloaded (on demand,
//! on SIGHUP, or when the files change) without dropping sessions or
//! connections, and a broken file keeps the running configuration.

mod common;

use std::time::Duration;

use common::*;

fn rewrite_config(gw: &TestGateway, from: &str, to: &str) {
    let path = gw.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "the test config has {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

const BLOCKED_RULE: &str = "path = \"/blocked/\"\npolicy = \"deny\"";
const OPENED_RULE: &str = "path = \"/blocked/\"\npolicy = \"bypass\"";

#[tokio::test]
async fn a_reload_changes_the_rules_and_keeps_sessions_and_connections() {
    let gw = TestGateway::start().await;
    let alice = gw.browser();
    sign_in(&gw, &alice, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(alice.get(gw.app("/blocked/x")).send().await.unwrap().status(), 403);

    rewrite_config(&gw, BLOCKED_RULE, OPENED_RULE);
    gw.running.live.reload().expect("the new configuration loads");
    // Same client, same pooled keep-alive connection, same session.
    assert_eq!(alice.get(gw.app("/blocked/x")).send().await.unwrap().status(), 200);
    assert_eq!(alice.get(gw.app("/")).send().await.unwrap().status(), 200, "still signed in");
    assert!(gw.upstream.last().headers.contains_key("x-stepgate-assertion"));
}

#[tokio::test]
async fn a_broken_configuration_keeps_the_running_one() {
    let gw = TestGateway::start().await;
    let client = gw.api_client();
    rewrite_config(&gw, BLOCKED_RULE, "regex = \"^/blocked/(\"\npolicy = \"bypass\"");
    let error = gw.running.live.reload().expect_err("a bad regex is refused").to_string();
    assert!(error.contains("stepgate.toml:") && error.contains("invalid regex"), "{error}");
    assert_eq!(client.get(gw.app("/blocked/x")).send().await.unwrap().status(), 403, "the old rules still apply");

    std::fs::write(gw.config_path(), "[server\n").unwrap();
    assert!(gw.running.live.reload().is_err());
    assert_eq!(client.get(gw.app("/public/x")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_changed_users_file_is_picked_up_when_it_changes() {
    let gw = TestGateway::start().await;
    let users = gw.dir.path().join("users.toml");
    let carol = format!(
        "\n[[users]]\nusername = \"carol\"\ndisplay_name = \"Carol\"\nemail = \"carol@example.com\"\npassword = \"{}\"\n",
        stepgate::users::hash_password("carol's password")
    );
    let client = gw.browser();
    assert_eq!(sign_in(&gw, &client, "carol", "carol's password", "/").await.status(), 401);
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&carol);
    std::fs::write(&users, text).unwrap();
    // The watcher checks the files every two seconds. Waiting on the
    // gateway rather than retrying sign-ins keeps the password throttle out.
    for _ in 0..100 {
        if gw.gateway().users.get("carol").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = sign_in(&gw, &gw.browser(), "carol", "carol's password", "/").await.status();
    assert_eq!(status, 303, "carol can sign in once the file is reloaded");
}

#[tokio::test]
async fn start_up_settings_keep_their_running_values() {
    let gw = TestGateway::start().await;
    let listen = gw.gateway().config.server.listen;
    rewrite_config(&gw, &format!("listen = \"{listen}\""), "listen = \"127.0.0.1:1\"");
    gw.running.live.reload().unwrap();
    assert_eq!(gw.gateway().config.server.listen, listen, "the listener cannot move without a restart");
    assert_eq!(gw.api_client().get(gw.app("/public/x")).send().await.unwrap().status(), 200);
}

/// The running `stepgate serve` process, killed when dropped.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_a_serving_process() {
    let gw = TestGateway::start().await;
    let dir = gw.dir.path();
    let listen = free_port();
    let config = std::fs::read_to_string(gw.config_path())
        .unwrap()
        .replace(&format!("listen = \"{}\"", gw.addr), &format!("listen = \"{listen}\""))
        .replace("data_dir = \"data\"", "data_dir = \"serve-data\"");
    let path = dir.join("serve.toml");
    std::fs::write(&path, &config).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env(stepgate::crypto::ENCRYPTION_KEY_ENV, stepgate::crypto::generate_master_key())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let serve = Serve(child);
    let client = reqwest::Client::builder().resolve("app.test", listen).build().unwrap();
    let url = format!("http://app.test:{}/blocked/x", listen.port());
    let mut status = 0;
    for _ in 0..200 {
        if let Ok(response) = client.get(&url).send().await {
            status = response.status().as_u16();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 403);

    // Same length and the old modification time: only the signal can tell.
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, config.replacen("path = \"/blocked/\"", "path = \"/blockex/\"", 1)).unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(modified).unwrap();
    let sent = std::process::Command::new("kill").args(["-HUP", &serve.0.id().to_string()]).status().unwrap();
    assert!(sent.success());
    for _ in 0..100 {
        status = client.get(&url).send().await.unwrap().status().as_u16();
        if status != 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 401, "after SIGHUP /blocked/ falls to the sign-in rule");
}
