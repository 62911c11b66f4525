//! Client connections: idle and slow ones are closed on time, and past
//! `max_connections` the longest-waiting ones make room for new clients;
//! the authorizer's own listener (`authz_listen`) reads HTTP/1.1 strictly
//! and is held to the same limits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any wait here may take on a loaded machine; each wait ends
/// as soon as its condition holds.
const PATIENCE: Duration = Duration::from_secs(30);

/// A request head that is never finished, sent a byte at a time.
const ENDLESS_HEAD: &[u8] = b"GET /public/slow HTTP/1.1\r\nHost: app.test\r\nX-Slow: ";

/// How a cleartext HTTP/2 client starts: the preface, then empty SETTINGS.
const H2_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A bare HTTP/1.1 client on one connection.
struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Client {
    async fn connect(gw: &TestGateway) -> Self {
        Self::connect_to(gw.addr).await
    }

    async fn connect_to(address: std::net::SocketAddr) -> Self {
        Self { stream: TcpStream::connect(address).await.expect("connect"), buffer: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    async fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes()).await;
        self.response().await
    }

    /// A question about `uri` to the authorizer's listener.
    async fn get_question(&mut self, uri: &str) -> Response {
        self.send(question("GET", uri, "\r\n").as_bytes()).await;
        self.response().await
    }

    /// The head of the next response, which has no body (it answers HEAD).
    async fn send_and_read_head_only(&mut self) -> String {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(self.fill().await, "the connection closed before a response");
        };
        let head = String::from_utf8(self.buffer.drain(..head_end).collect()).expect("a text head");
        head
    }

    /// Reads more of the connection into the buffer; false at its end.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await.expect("the gateway answers in time").expect("read");
        self.buffer.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response, its body read by its Content-Length.
    async fn response(&mut self) -> Response {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(self.fill().await, "the connection closed before a response");
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).expect("a text head");
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map(|(_, value)| value.parse().expect("a length"))
            .expect("responses here carry a Content-Length");
        while self.buffer.len() < head_end + length {
            assert!(self.fill().await, "the connection closed inside a body");
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        Response { status, headers, body }
    }

    /// Waits until the gateway closes the connection, with nothing more said.
    async fn closed(&mut self) {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await {
            Err(_) => panic!("the connection is still open after {PATIENCE:?}"),
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => panic!("expected the connection to close, got {:?}", String::from_utf8_lossy(&chunk[..n])),
            // Closed while the client was still sending: a reset.
            Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }

    /// Sends `ENDLESS_HEAD` and then more of its last header, a byte every
    /// 100 ms, until the gateway closes the connection.
    async fn trickle_until_closed(self) {
        let (mut reader, mut writer) = self.stream.into_split();
        let trickle = tokio::spawn(async move {
            for byte in ENDLESS_HEAD.iter().chain(std::iter::repeat(&b'a')) {
                if writer.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(PATIENCE, reader.read(&mut chunk)).await;
        trickle.abort();
        match read {
            Err(_) => panic!("a request head trickling in is still read after {PATIENCE:?}"),
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => panic!("expected the connection to close, got {:?}", String::from_utf8_lossy(&chunk[..n])),
            Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

/// Waits until the gateway counts `open` client connections, `waiting` of
/// them for a request.
async fn wait_for_connections(gw: &TestGateway, open: usize, waiting: usize) {
    let give_up = Instant::now() + PATIENCE;
    loop {
        let counts = gw.running.connections();
        if (counts.open, counts.waiting) == (open, waiting) {
            return;
        }
        assert!(Instant::now() < give_up, "expected {open} open and {waiting} waiting, have {counts:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn gateway(server_extra: &str) -> TestGateway {
    gateway_with(Setup { server_extra: server_extra.into(), ..Setup::default() }).await
}

async fn gateway_with(setup: Setup) -> TestGateway {
    let gw = TestGateway::start_with(setup).await;
    // The start-up check's own connection is gone.
    wait_for_connections(&gw, 0, 0).await;
    gw
}

#[tokio::test]
async fn a_keep_alive_connection_serves_requests_in_a_row() {
    let gw = gateway("").await;
    let mut client = Client::connect(&gw).await;
    for i in 0..5 {
        let response = client.get(&format!("/public/{i}")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
        let echoed: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(echoed["path"], format!("/public/{i}"));
    }
    assert_eq!(gw.upstream.count(), 5);
    // A request head in two pieces, and a body in the same write as its head.
    client.send(b"GET /public/split HTT").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.send(b"P/1.1\r\nHost: app.test\r\n\r\n").await;
    assert_eq!(client.response().await.status, 200);
    assert_eq!(gw.upstream.last().path, "/public/split");
    client.send(b"POST /public/upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello").await;
    let response = client.response().await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&response.body).unwrap()["bytes"], 5);
    wait_for_connections(&gw, 1, 1).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_keepalive_timeout() {
    let gw = gateway("keepalive_timeout = \"1s\"\nh2c = true").await;
    let mut client = Client::connect(&gw).await;
    let response = client.get("/public/x").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("keep-alive"));
    client.closed().await;

    // An HTTP/2 connection with no request in flight too. What the gateway
    // says first (its SETTINGS and their acknowledgement) is set aside.
    let mut h2 = Client::connect(&gw).await;
    h2.send(H2_START).await;
    while h2.fill().await {}
    wait_for_connections(&gw, 0, 0).await;
}

#[tokio::test]
async fn a_request_head_trickling_in_is_cut_off_at_the_header_timeout() {
    let gw = gateway("header_timeout = \"2s\"").await;
    // From the start of a connection, and on one that has served a request.
    let fresh = Client::connect(&gw).await;
    let mut reused = Client::connect(&gw).await;
    assert_eq!(reused.get("/public/x").await.status, 200);
    tokio::join!(fresh.trickle_until_closed(), reused.trickle_until_closed());
    wait_for_connections(&gw, 0, 0).await;
}

#[tokio::test]
async fn an_http2_connection_is_held_to_the_header_timeout_until_its_first_request() {
    let setup = Setup { server_extra: "header_timeout = \"2s\"\nh2c = true".into(), tls: true, ..Setup::default() };
    let gw = gateway_with(setup).await;
    // Over TLS, a request ends the wait; pingora's idle timeout takes over.
    let cert = std::fs::read(gw.dir.path().join("cert.pem")).unwrap();
    let tls = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .resolve("app.test", gw.tls_addr.unwrap())
        .build()
        .unwrap();
    let response = tls.get(format!("https://app.test:{}/public/x", gw.tls_addr.unwrap().port())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    wait_for_connections(&gw, 1, 0).await;
    // In cleartext, silence after the preface: closed at the header
    // timeout, long before the keep-alive timeout.
    let mut h2 = Client::connect(&gw).await;
    h2.send(H2_START).await;
    while h2.fill().await {}
    wait_for_connections(&gw, 1, 0).await;
}

#[tokio::test]
async fn past_max_connections_the_longest_waiting_connections_make_room() {
    let gw = gateway("max_connections = 20").await;
    // The oldest connection is busy: half its upload is sent.
    let mut busy = Client::connect(&gw).await;
    busy.send(b"POST /public/upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nhello").await;
    wait_for_connections(&gw, 1, 0).await;
    // Nineteen more, each waiting after one request, oldest first.
    let mut idle = Vec::new();
    for i in 0..19 {
        let mut client = Client::connect(&gw).await;
        assert_eq!(client.get("/public/x").await.status, 200);
        wait_for_connections(&gw, i + 2, i + 1).await;
        idle.push(client);
    }
    // Each new client is served, and closes the longest-waiting one.
    let mut newcomers = Vec::new();
    for oldest in idle.iter_mut().take(5) {
        let mut client = Client::connect(&gw).await;
        assert_eq!(client.get("/public/x").await.status, 200);
        oldest.closed().await;
        newcomers.push(client);
    }
    wait_for_connections(&gw, 20, 19).await;
    // The others are still open, and the busy one finishes its upload.
    for client in idle[5..].iter_mut().chain(&mut newcomers) {
        assert_eq!(client.get("/public/x").await.status, 200);
    }
    busy.send(b"world").await;
    let response = busy.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&response.body).unwrap()["bytes"], 10);
    wait_for_connections(&gw, 20, 20).await;
}

#[tokio::test]
async fn a_new_connection_is_refused_when_every_connection_is_busy() {
    let gw = gateway("max_connections = 2").await;
    let mut uploads = Vec::new();
    for _ in 0..2 {
        let mut client = Client::connect(&gw).await;
        client.send(b"POST /public/upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\n!").await;
        uploads.push(client);
    }
    wait_for_connections(&gw, 2, 0).await;
    Client::connect(&gw).await.closed().await;
    for client in &mut uploads {
        client.send(b"!").await;
        assert_eq!(client.response().await.status, 200);
    }
    // With room again, a new client is served.
    assert_eq!(Client::connect(&gw).await.get("/public/x").await.status, 200);
}

/// A gateway whose app is also answered for by forward-auth, with the
/// authorizer's own listener; and that listener's address.
async fn authorizer(server_extra: &str) -> (TestGateway, std::net::SocketAddr) {
    let authz = free_port();
    let apps = DEFAULT_APPS.replacen("hosts = [\"app.test\"]", "hosts = [\"app.test\"]\nmode = \"both\"", 1);
    let server_extra = format!("trusted_proxies = [\"127.0.0.0/8\"]\nauthz_listen = \"{authz}\"\n{server_extra}");
    let gw = gateway_with(Setup { apps, server_extra, ..Setup::default() }).await;
    wait_for_port(authz).await;
    wait_for_connections(&gw, 0, 0).await;
    (gw, authz)
}

/// A Traefik-style question about `uri` on app.test, with `extra` header
/// lines (and what follows the head).
fn question(method: &str, uri: &str, extra: &str) -> String {
    format!(
        "{method} /.stepgate/authz/forward HTTP/1.1\r\nHost: stepgate.internal\r\nX-Forwarded-Method: GET\r\n\
         X-Forwarded-Proto: http\r\nX-Forwarded-Host: app.test\r\nX-Forwarded-Uri: {uri}\r\nAccept: text/html\r\n{extra}"
    )
}

#[tokio::test]
async fn the_authorizers_listener_answers_questions_in_a_row() {
    let (gw, authz) = authorizer("").await;
    let mut client = Client::connect_to(authz).await;
    // Three at once: allowed, challenged, denied (a page, with its body).
    let three = [question("GET", "/public/x", "\r\n"), question("GET", "/admin/", "\r\n"), question("GET", "/blocked/", "\r\n")];
    client.send(three.concat().as_bytes()).await;
    let answers = [client.response().await, client.response().await, client.response().await];
    assert_eq!(answers.each_ref().map(|a| a.status), [200, 302, 403]);
    assert!(String::from_utf8_lossy(&answers[2].body).contains("Access denied"));
    // A small body is read past; HEAD gets the head only.
    client.send(question("POST", "/public/x", "Content-Length: 5\r\n\r\nhello").as_bytes()).await;
    assert_eq!(client.response().await.status, 200);
    client.send(question("HEAD", "/blocked/", "\r\n").as_bytes()).await;
    let head = client.send_and_read_head_only().await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(client.get_question("/public/y").await.status, 200, "the next answer starts right after the HEAD's head");
    wait_for_connections(&gw, 1, 1).await;
    // HTTP/1.0, and `Connection: close`: answered, then closed.
    for last in ["GET /.stepgate/authz/forward HTTP/1.0\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: app.test\r\nX-Forwarded-Uri: /public/x\r\n\r\n".to_string(), question("GET", "/public/x", "Connection: close\r\n\r\n")] {
        let mut client = Client::connect_to(authz).await;
        client.send(last.as_bytes()).await;
        let response = client.response().await;
        assert_eq!((response.status, response.header("connection")), (200, Some("close")));
        client.closed().await;
    }
}

#[tokio::test]
async fn the_authorizers_listener_refuses_what_it_cannot_read_and_closes() {
    let (gw, authz) = authorizer("").await;
    let long_value = "a".repeat(40 * 1024);
    let many_lines: String = (0..300).map(|i| format!("X-Line-{i}: {i}\r\n")).collect();
    let refused = [
        ("a chunked body", question("POST", "/public/x", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), 400),
        ("two lengths", question("POST", "/public/x", "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"), 400),
        ("a length that is no number", question("POST", "/public/x", "Content-Length: +5\r\n\r\nhello"), 400),
        ("a body over the bound", question("POST", "/public/x", "Content-Length: 70000\r\n\r\n"), 413),
        ("a header line without a colon", question("GET", "/public/x", "Broken line\r\n\r\n"), 400),
        ("a request line without a version", "GET /.stepgate/authz/forward\r\n\r\n".to_string(), 400),
        ("a header over max_header_bytes", question("GET", "/public/x", &format!("X-Big: {long_value}\r\n\r\n")), 431),
        ("too many header lines", question("GET", "/public/x", &format!("{many_lines}\r\n")), 431),
    ];
    for (what, request, status) in refused {
        let mut client = Client::connect_to(authz).await;
        client.send(request.as_bytes()).await;
        let response = client.response().await;
        assert_eq!((response.status, response.header("connection")), (status, Some("close")), "{what}");
        client.closed().await;
    }
    // Not a question: a page, and the connection stays.
    let mut client = Client::connect_to(authz).await;
    assert_eq!(client.get("/public/x").await.status, 404);
    assert_eq!(client.get_question("/public/x").await.status, 200);
    wait_for_connections(&gw, 1, 1).await;
}

#[tokio::test]
async fn the_authorizers_listener_is_held_to_the_same_timeouts() {
    let (gw, authz) = authorizer("keepalive_timeout = \"1s\"\nheader_timeout = \"2s\"").await;
    let mut idle = Client::connect_to(authz).await;
    assert_eq!(idle.get_question("/public/x").await.status, 200);
    idle.closed().await;
    let fresh = Client::connect_to(authz).await;
    let mut reused = Client::connect_to(authz).await;
    assert_eq!(reused.get_question("/public/x").await.status, 200);
    tokio::join!(fresh.trickle_until_closed(), reused.trickle_until_closed());
    wait_for_connections(&gw, 0, 0).await;
}
