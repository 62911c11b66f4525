//! An app server that reads requests the way WSGI and CGI servers do
//! (werkzeug, gunicorn, PHP-CGI): the method upper-cased, and each header
//! as `HTTP_` + its name upper-cased with `-` read as `_`, so that
//! `Remote_User` and `Remote-User` are the same `HTTP_REMOTE_USER`. It
//! records each request's environment as such an app would see it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a WSGI app saw of one request.
#[derive(Debug, Clone)]
pub struct Environ {
    pub method: String,
    pub path: String,
    pub query: String,
    pub vars: BTreeMap<String, String>,
}

impl Environ {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

#[derive(Clone)]
pub struct WsgiUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Environ>>>,
}

impl WsgiUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, recorder.clone()));
            }
        });
        Self { addr, seen }
    }

    /// Every request the app has seen, oldest first.
    pub fn seen(&self) -> Vec<Environ> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Environ {
        self.seen().pop().expect("the app saw no request")
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Environ>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let Some(environ) = parse(&String::from_utf8_lossy(&head)) else {
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        return;
    };
    let length: usize = environ.get("CONTENT_LENGTH").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    if stream.read_exact(&mut body).await.is_err() {
        return;
    }
    seen.lock().unwrap().push(environ.clone());
    let json = serde_json::json!({ "method": environ.method, "path": environ.path, "environ": environ.vars }).to_string();
    let response =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}", json.len());
    let _ = stream.write_all(response.as_bytes()).await;
}

fn parse(head: &str) -> Option<Environ> {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target) = (request_line.next()?, request_line.next()?);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut vars = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let key = name.trim().to_ascii_uppercase().replace('-', "_");
        let key = match key.as_str() {
            "CONTENT_LENGTH" | "CONTENT_TYPE" => key,
            _ => format!("HTTP_{key}"),
        };
        let value = value.trim().to_string();
        vars.entry(key).and_modify(|v: &mut String| *v = format!("{v},{value}")).or_insert(value);
    }
    Some(Environ { method: method.to_ascii_uppercase(), path: path.to_string(), query: query.to_string(), vars })
}
