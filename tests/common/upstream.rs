//! The app behind the gateway: records what it receives and answers with
//! the headers it saw, counts uploads, echoes WebSocket messages.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Json;
use futures_util::StreamExt;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route("/public/upload", post(upload))
            .route("/public/ws", any(websocket))
            .route("/public/slow", any(slow))
            .route("/admin/ws", any(websocket))
            .fallback(echo)
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, received }
    }

    /// The last request that reached the app.
    pub fn last(&self) -> Received {
        self.received.lock().unwrap().last().cloned().expect("the upstream received nothing")
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

async fn echo(State(received): State<Arc<Mutex<Vec<Received>>>>, uri: Uri, headers: HeaderMap) -> Response {
    received.lock().unwrap().push(Received { path: uri.path().to_string(), headers: headers.clone() });
    let seen: Vec<(String, String)> =
        headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    Json(serde_json::json!({ "path": uri.path(), "headers": seen })).into_response()
}

/// Answers after three seconds: longer than a test's read timeout.
async fn slow() -> &'static str {
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    "late\n"
}

async fn upload(body: Body) -> Json<serde_json::Value> {
    let mut stream = body.into_data_stream();
    let mut bytes: u64 = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => bytes += chunk.len() as u64,
            Err(_) => break,
        }
    }
    Json(serde_json::json!({ "bytes": bytes }))
}

async fn websocket(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo_messages)
}

async fn echo_messages(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Text(_) | Message::Binary(_) = message {
            if socket.send(message).await.is_err() {
                return;
            }
        }
    }
}
