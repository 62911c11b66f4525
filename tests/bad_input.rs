//! Hostile and broken input: a clear 4xx or error message, never a panic,
//! a 500 or a request that slips past the rules.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes and returns the status code of the answer (0 when the
/// connection closed without one).
async fn raw_status(gw: &TestGateway, request: &[u8]) -> u16 {
    status_while_sending(gw, vec![request.to_vec()]).await
}

const SIGNIN_POST: &str = "POST /.stepgate/signin HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/x-www-form-urlencoded\r\n";

/// Sends a request in parts from a task while the answer is read. The
/// gateway may answer (and close) before the request is through: the writer
/// then meets a broken pipe or a reset, which is expected, while the answer
/// already sent stays readable. Returns the status of the answer (0 when the
/// connection ended without one).
async fn status_while_sending(gw: &TestGateway, parts: Vec<Vec<u8>>) -> u16 {
    let (mut reader, mut writer) = tokio::net::TcpStream::connect(gw.addr).await.unwrap().into_split();
    // The task hands the writer back so that the request is not ended
    // (half-closed) before the answer has been read.
    let sending = tokio::spawn(async move {
        for part in parts {
            writer.write_all(&part).await?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await.expect("an answer within 10 s") {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&buf[..read]),
        }
    }
    sending.abort();
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn get(path: impl AsRef<[u8]>, extra: impl AsRef<[u8]>) -> Vec<u8> {
    [b"GET ", path.as_ref(), b" HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n", extra.as_ref(), b"\r\n"].concat()
}

#[tokio::test]
async fn malformed_cookies_are_treated_as_no_session() {
    let gw = TestGateway::start().await;
    let client = gw.api_client();
    for cookie in [
        "stepgate_session=",
        "stepgate_session=%%%%",
        "stepgate_session=\"quoted\"",
        "stepgate_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ";;;=;stepgate_session;==",
        "stepgate_session=ä",
        &format!("stepgate_session={}", "A".repeat(5000)),
    ] {
        let response = client.get(gw.app("/")).header("cookie", cookie).send().await.unwrap();
        assert_eq!(response.status(), 401, "cookie {cookie:?}");
    }
    let status = raw_status(&gw, &get("/", b"Cookie: stepgate_session=\xff\xfe\r\n")).await;
    assert_eq!(status, 401, "non-UTF-8 cookie bytes");
}

#[tokio::test]
async fn paths_that_servers_read_differently_are_refused() {
    let gw = TestGateway::start().await;
    for path in [
        "/public/../admin/",
        "/public/%2e%2e/admin/",
        "/public/.%2E/admin/",
        "/public/./x",
        "/public\\..\\admin/",
        "/caf%ff",
        "/x%zz",
        "/x%0a",
    ] {
        assert_eq!(raw_status(&gw, &get(path, "")).await, 400, "{path}");
    }
    assert_eq!(raw_status(&gw, &get(b"/caf\xc3\xa9\xff", "")).await, 400, "raw invalid UTF-8");
    assert_eq!(gw.upstream.count(), 0, "none of them reached the app");
    // Encoded letters and doubled slashes still meet the rule they spell.
    assert_eq!(raw_status(&gw, &get("/%61dmin/", "")).await, 401, "/admin/ needs sign-in");
    assert_eq!(raw_status(&gw, &get("//public//x", "")).await, 200, "collapsed to /public/x");
}

#[tokio::test]
async fn oversized_headers_and_forms_are_refused() {
    let gw = TestGateway::start().await;
    let huge_header = format!("X-Padding: {}\r\n", "a".repeat(200 * 1024));
    assert_eq!(raw_status(&gw, &get("/public/x", &huge_header)).await, 431);
    let many_cookies: String = (0..200).map(|i| format!("Cookie: c{i}={}\r\n", "v".repeat(200))).collect();
    assert_eq!(raw_status(&gw, &get("/public/x", &many_cookies)).await, 431);
    let too_many: String = (0..2000).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    assert_eq!(raw_status(&gw, &get("/public/x", &too_many)).await, 400, "refused by the HTTP parser");
    let beyond_parser = format!("X-Padding: {}\r\n", "a".repeat(2 * 1024 * 1024));
    let status = raw_status(&gw, &get("/public/x", &beyond_parser)).await;
    assert!(status == 0 || (400..500).contains(&status), "2 MiB of headers: {status}");
    assert_eq!(gw.upstream.count(), 0);

    // Over the form limit, declared in Content-Length or not (chunked).
    let form = format!("username=alice&password={}", "p".repeat(100 * 1024));
    let declared = format!("{SIGNIN_POST}Content-Length: {}\r\n\r\n", form.len());
    assert_eq!(status_while_sending(&gw, vec![declared.into_bytes(), form.into_bytes()]).await, 413);
    let chunk = [b"400\r\n".as_slice(), &[b'a'; 1024], b"\r\n"].concat();
    let head = format!("{SIGNIN_POST}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
    let chunked: Vec<Vec<u8>> = [vec![head], vec![chunk; 100], vec![b"0\r\n\r\n".to_vec()]].concat();
    assert_eq!(status_while_sending(&gw, chunked).await, 413);
    let client = gw.browser();
    // A long password inside the limit is simply wrong, not slow.
    let response = sign_in(&gw, &client, ALICE, &"p".repeat(20_000), "/").await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn broken_forms_get_a_clear_4xx() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    let page = client.get(gw.app("/.stepgate/signin")).send().await.unwrap().text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    let post = |body: Vec<u8>, content_type: &'static str| {
        client.post(gw.app("/.stepgate/signin")).header("content-type", content_type).body(body).send()
    };
    let missing_password = format!("csrf={csrf}&username=alice").into_bytes();
    assert_eq!(post(missing_password, "application/x-www-form-urlencoded").await.unwrap().status(), 400);
    let json = format!("{{\"csrf\":\"{csrf}\",\"username\":\"alice\",\"password\":\"x\"}}").into_bytes();
    assert_eq!(post(json, "application/json").await.unwrap().status(), 400);
    let mut not_utf8 = format!("csrf={csrf}&username=").into_bytes();
    not_utf8.extend_from_slice(b"\xff\xfe&password=%ff%fe");
    let status = post(not_utf8, "application/x-www-form-urlencoded").await.unwrap().status().as_u16();
    assert!((400..500).contains(&status), "invalid UTF-8: {status}");

    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let page = client.get(gw.app("/.stepgate/second-factor")).send().await.unwrap().text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    for code in ["", "abcdef", "12345", "1234567", &"9".repeat(10_000), "١٢٣٤٥٦"] {
        let response = client
            .post(gw.app("/.stepgate/second-factor/totp/enroll"))
            .form(&[("csrf", csrf.as_str()), ("code", code)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "code {code:?}");
    }
    assert!(!gw.gateway().totp.is_enrolled(ALICE).await.unwrap(), "nothing was stored");
}

#[tokio::test]
async fn a_portal_post_without_a_session_is_refused() {
    let gw = TestGateway::start().await;
    let response =
        gw.browser().post(gw.app("/.stepgate/second-factor/totp")).form(&[("csrf", "x"), ("code", "123456")]).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let response = gw.browser().get(gw.app("/.stepgate/no-such-page")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

fn stepgate(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_stepgate")).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn check_config_names_the_file_and_line_of_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let config = "users_file = \"users.toml\"\n\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"data\"\n\n[[apps]]\nid = \"a\"\nhosts = [\"a.test\"]\nupstreams = [\"http://127.0.0.1:9\"]\n\n[[apps.rules]]\nregex = \"^/admin/(\"\npolicy = \"two_factor\"\n";
    std::fs::write(dir.path().join("bad.toml"), config).unwrap();
    let output = stepgate(&["check-config", "bad.toml"], dir.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml:12:") && stderr.contains("invalid regex"), "{stderr}");

    std::fs::write(dir.path().join("typo.toml"), config.replace("policy = \"two_factor\"", "polcy = \"two_factor\"")).unwrap();
    let stderr = String::from_utf8_lossy(&stepgate(&["check-config", "typo.toml"], dir.path()).stderr).to_string();
    assert!(stderr.contains("typo.toml:") && stderr.contains("unknown field `polcy`"), "{stderr}");

    std::fs::write(dir.path().join("broken.toml"), "[server\nlisten = 1").unwrap();
    let stderr = String::from_utf8_lossy(&stepgate(&["check-config", "broken.toml"], dir.path()).stderr).to_string();
    assert!(stderr.contains("broken.toml:1:"), "{stderr}");

    std::fs::write(dir.path().join("binary.toml"), b"\xff\xfe\x00garbage").unwrap();
    let output = stepgate(&["check-config", "binary.toml"], dir.path());
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("binary.toml"));

    let missing_users = config.replace("regex = \"^/admin/(\"", "path = \"/admin/\"");
    std::fs::write(dir.path().join("ok.toml"), missing_users).unwrap();
    let stderr = String::from_utf8_lossy(&stepgate(&["check-config", "ok.toml"], dir.path()).stderr).to_string();
    assert!(stderr.contains("users.toml") && stderr.contains("cannot read"), "{stderr}");
    std::fs::write(dir.path().join("users.toml"), "[[users]]\nusername = \"x\"\npassword = \"plain\"\n").unwrap();
    let stderr = String::from_utf8_lossy(&stepgate(&["check-config", "ok.toml"], dir.path()).stderr).to_string();
    assert!(stderr.contains("users.toml:"), "{stderr}");
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let output = stepgate(&["check-config", "ok.toml"], dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn hash_password_reads_stdin_and_prints_an_argon2id_hash() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let output = child.wait_with_output().unwrap();
    let hash = String::from_utf8(output.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));
}

#[tokio::test]
async fn a_corrupt_database_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/stepgate.db"), vec![7u8; 8192]).unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let config = format!(
        "users_file = \"users.toml\"\n[server]\nlisten = \"{}\"\ndata_dir = \"data\"\n[[apps]]\nid = \"a\"\nhosts = [\"a.test\"]\nupstreams = [\"http://127.0.0.1:9\"]\n",
        free_port()
    );
    std::fs::write(dir.path().join("stepgate.toml"), config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["serve", "--config", "stepgate.toml"])
        .current_dir(dir.path())
        .env(stepgate::crypto::ENCRYPTION_KEY_ENV, stepgate::crypto::generate_master_key())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a database"), "{stderr}");
    assert_eq!(std::fs::read(dir.path().join("data/stepgate.db")).unwrap(), vec![7u8; 8192], "the file is left as it was");
}
