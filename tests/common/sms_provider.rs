//! A local HTTP server playing an SMS and voice provider (Twilio's API, or
//! a webhook receiver): it records every request exactly as received and
//! answers as the test tells it to.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;

/// A request as the provider received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    /// The form fields of a Twilio request.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }

    pub fn field(&self, name: &str) -> String {
        self.form().into_iter().find(|(k, _)| k == name).map(|(_, v)| v).unwrap_or_else(|| panic!("no {name} in {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    }
}

/// How the provider answers the next requests.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16, &'static str),
    /// Never answers within the gateway's timeout.
    Hang,
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Option<Answer>>>,
}

pub struct Provider {
    pub addr: SocketAddr,
    shared: Shared,
}

impl Provider {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let app = axum::Router::new().fallback(record).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn answer(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = Some(answer);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received().last().cloned().expect("the provider received no request")
    }
}

async fn record(State(shared): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let received = Received { method, path: uri.to_string(), headers, body: String::from_utf8_lossy(&body).into_owned() };
    shared.received.lock().unwrap().push(received);
    let answer = shared.answer.lock().unwrap().clone();
    match answer {
        None => (StatusCode::CREATED, r#"{"sid":"SM0123","status":"queued"}"#).into_response(),
        Some(Answer::Status(status, body)) => (StatusCode::from_u16(status).unwrap(), body).into_response(),
        Some(Answer::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}
