//! Upstreams a test can take away and bring back: each runs on a tokio
//! runtime of its own, so killing it closes its listener and every open
//! connection at once, as a crashed process would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::routing::any;

/// An app that answers `from NAME`, counting the requests it sees by method.
pub struct KillableUpstream {
    pub addr: SocketAddr,
    name: &'static str,
    runtime: Option<tokio::runtime::Runtime>,
    /// A dead upstream's socket: bound (so no other server takes the
    /// port), not listening (so connections are refused) until revived.
    held: Option<tokio::net::TcpSocket>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    gets: AtomicUsize,
    posts: AtomicUsize,
}

impl KillableUpstream {
    pub fn start(name: &'static str) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut upstream = Self { addr, name, runtime: None, held: None, counts: Arc::default() };
        upstream.serve();
        upstream
    }

    /// An address where nothing listens until `revive`.
    pub fn dead(name: &'static str) -> Self {
        let held = bound_socket(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = held.local_addr().expect("address");
        Self { addr, name, runtime: None, held: Some(held), counts: Arc::default() }
    }

    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Listens again on the same address.
    pub fn revive(&mut self) {
        if self.runtime.is_none() {
            self.serve();
        }
    }

    /// Requests other than health checks that reached this upstream.
    pub fn requests(&self) -> usize {
        self.counts.gets.load(Ordering::SeqCst) + self.counts.posts.load(Ordering::SeqCst)
    }

    pub fn posts(&self) -> usize {
        self.counts.posts.load(Ordering::SeqCst)
    }

    fn serve(&mut self) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let listener = {
            let _inside = runtime.enter();
            let socket = self.held.take().unwrap_or_else(|| bound_socket(self.addr));
            socket.listen(1024).expect("listen")
        };
        self.addr = listener.local_addr().expect("address");
        let router = axum::Router::new()
            .route("/health", any(|| async { "ok\n" }))
            .fallback(any(answer))
            .with_state((self.name, self.counts.clone()));
        runtime.spawn(async move { axum::serve(listener, router).await });
        self.runtime = Some(runtime);
    }
}

/// A socket bound to `addr`, not listening yet. SO_REUSEADDR: the address
/// of a killed upstream may still have connections in TIME_WAIT.
fn bound_socket(addr: SocketAddr) -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind");
    socket
}

async fn answer(State((name, counts)): State<(&'static str, Arc<Counts>)>, method: Method) -> String {
    let count = if method == Method::POST { &counts.posts } else { &counts.gets };
    count.fetch_add(1, Ordering::SeqCst);
    format!("from {name}")
}

impl Drop for KillableUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An upstream that takes each connection and request, then hangs up
/// without answering; it counts the requests by method.
pub struct HangingUpUpstream {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
}

impl HangingUpUpstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let counts: Arc<Counts> = Arc::default();
        let seen = counts.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let head = read_request_head(&mut stream).await.unwrap_or_default();
                let count = if head.starts_with(b"POST ") { &seen.posts } else { &seen.gets };
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self { addr, counts }
    }

    pub fn gets(&self) -> usize {
        self.counts.gets.load(Ordering::SeqCst)
    }

    pub fn posts(&self) -> usize {
        self.counts.posts.load(Ordering::SeqCst)
    }
}

/// A request's head (up to its blank line), or None when the connection
/// ends before it does.
pub async fn read_request_head(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    Some(head)
}

/// An upstream that answers the first request of each connection, keeps the
/// connection open, and hangs up on the next request without answering: as
/// an app does that closes an idle keep-alive connection just as the
/// gateway sends on it. It counts the requests it answered.
pub struct ClosesIdleUpstream {
    pub addr: SocketAddr,
    answered: Arc<AtomicUsize>,
}

impl ClosesIdleUpstream {
    pub async fn start() -> Self {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    if read_request_head(&mut stream).await.is_none() {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nfresh\n";
                    if stream.write_all(answer).await.is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = read_request_head(&mut stream).await;
                });
            }
        });
        Self { addr, answered }
    }

    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}
