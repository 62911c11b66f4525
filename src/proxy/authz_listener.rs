//! The authorizer's own listener (`server.authz_listen`): forward-auth
//! questions only, over HTTP/1.1, answered by the same function as on the
//! main listener ([`super::forward_auth::answer`]) but without pingora's
//! proxy machinery around it. Reading a request head into pingora's
//! request header and running the proxy's phases costs more than the
//! answer itself; here the head is parsed with `httparse` (the parser
//! pingora and hyper use) straight into `http`'s types.
//!
//! A connection is held to the same limits and deadlines as the main
//! listener's (the one [`Connections`] table counts both). A question
//! carries no body: one of up to [`MAX_SKIPPED_BODY`] bytes is read and
//! dropped, a longer or chunked one is refused and the connection closed.
//! What cannot be read one way only (a malformed head, two different
//! lengths) gets 400, a head over `server.max_header_bytes` 431, and the
//! connection is closed after the answer.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::answers::{self, Answer};
use super::connections::{self, Connection, Connections};
use super::forward_auth::{self, Question};
use super::{forwarding, RequestCtx};
use crate::forward_auth::Dialect;
use crate::gateway::{canonical_ip, Gateway};
use crate::live::LiveGateway;

/// The most header lines a question may have (pingora's own limit).
const MAX_HEADERS: usize = 256;

/// A body a question should not have, but may (a proxy that passes a
/// form's body on), is read and dropped up to this size.
pub const MAX_SKIPPED_BODY: usize = 64 * 1024;

/// The raw head may pass `server.max_header_bytes` by this much: the limit
/// counts the path and the header lines as the main listener does, without
/// the method, the version and the spaces around values.
const HEAD_SLACK: usize = 1024;

pub struct AuthzListener {
    live: Arc<LiveGateway>,
    connections: Arc<Connections>,
}

impl AuthzListener {
    /// `connections` is the main listener's table: both count against
    /// `server.max_connections`.
    pub fn new(live: Arc<LiveGateway>, connections: Arc<Connections>) -> Self {
        Self { live, connections }
    }

    /// Answers questions on one connection until it closes.
    async fn serve(self: Arc<Self>, connection: Arc<Connection>, mut stream: Stream, shutdown: ShutdownWatch) {
        let peer = stream.get_socket_digest().and_then(|socket| socket.peer_addr().and_then(|a| a.as_inet()).map(|a| canonical_ip(a.ip())));
        let Some(peer) = peer else { return };
        let mut buffer = BytesMut::new();
        let mut first = true;
        loop {
            if buffer.is_empty() {
                match connections::next_request(&connection, &mut stream, &shutdown).await {
                    Some(start) => buffer = start,
                    None => return,
                }
            }
            // The first question's head is due within the header timeout of
            // the connection's opening, a later one's of its first bytes.
            if !first {
                connection.head_started();
            }
            first = false;
            let gateway = self.live.current();
            let read = read_question(&connection, &mut stream, &mut buffer, &gateway).await;
            connection.busy();
            let keep_open = match read {
                Ok(Some(head)) => self.answer(&gateway, &mut stream, &head, peer, &shutdown).await,
                Err(Refusal { status, why }) => {
                    tracing::debug!(%peer, why, "a forward-auth question that cannot be read: refused");
                    let _ = write_answer(&mut stream, &gateway, refusal(&gateway, status), false, false).await;
                    linger(&mut stream).await;
                    false
                }
                Ok(None) => false,
            };
            if !keep_open || connection.is_closed() {
                return;
            }
            connection.wait_for_next_request();
        }
    }

    /// Answers one question; whether the connection stays open.
    async fn answer(
        &self,
        gateway: &Arc<Gateway>,
        stream: &mut Stream,
        head: &Head,
        peer: std::net::IpAddr,
        shutdown: &ShutdownWatch,
    ) -> bool {
        let mut ctx = RequestCtx::new();
        ctx.gateway = Some(gateway.clone());
        let keep_alive = head.keep_alive() && !*shutdown.borrow();
        let answer = match Dialect::of(head.uri.path()) {
            _ if forwarding::head_bytes(head.target_len, &head.headers) > gateway.config.server.max_header_bytes.0 => {
                ctx.decision = "headers_too_large";
                answers::page(gateway, 431, "Request too large", "The request's headers are too large.")
            }
            Some(dialect) => {
                let question = Question { peer, method: &head.method, uri: &head.uri, headers: &head.headers };
                forward_auth::answer(gateway, &question, dialect, &mut ctx).await
            }
            None => {
                ctx.decision = "not_authz";
                answers::page(gateway, 404, "Not found", "This listener answers forward-auth questions only.")
            }
        };
        let answer = answer.or_else(|e| {
            tracing::error!(error = %e, "could not build a forward-auth answer");
            ctx.decision = "answer_failed";
            refusal(gateway, 500)
        });
        let status = answer.as_ref().map_or(500, Answer::status);
        let written = write_answer(stream, gateway, answer, keep_alive, head.method == Method::HEAD).await;
        ctx.log(status, &head.method, head.uri.path(), written.as_ref().err().map(|e| e.to_string()));
        written.is_ok() && keep_alive
    }
}

#[async_trait]
impl ServerApp for AuthzListener {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let connection = self.connections.admit()?;
        tokio::spawn(self.clone().serve(connection, stream, shutdown.clone()));
        None
    }
}

/// A question's request line and headers.
struct Head {
    method: Method,
    /// The request target's length as sent, counted against
    /// `server.max_header_bytes`.
    target_len: usize,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    /// HTTP/1.1 without `Connection: close`; HTTP/1.0 closes.
    fn keep_alive(&self) -> bool {
        let close = self
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|value| value.to_str().is_ok_and(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("close"))));
        self.version == Version::HTTP_11 && !close
    }
}

/// A question refused before it could be read: answered with `status`,
/// then the connection is closed.
struct Refusal {
    status: u16,
    why: &'static str,
}

/// Reads a question's head (and skips a small body) from `buffer` and the
/// stream; what follows it stays in `buffer`. `None` when the connection
/// closed, broke or is to close first.
async fn read_question(
    connection: &Connection,
    stream: &mut Stream,
    buffer: &mut BytesMut,
    gateway: &Gateway,
) -> Result<Option<Head>, Refusal> {
    let limit = gateway.config.server.max_header_bytes.0 + HEAD_SLACK;
    let (head, head_len) = loop {
        match parse_head(buffer) {
            Ok(Some((_, head_len))) if head_len > limit => return Err(Refusal { status: 431, why: "head_too_large" }),
            Ok(Some(parsed)) => break parsed,
            Ok(None) if buffer.len() >= limit => return Err(Refusal { status: 431, why: "head_too_large" }),
            Ok(None) => {
                if !read_more(connection, stream, buffer).await {
                    return Ok(None);
                }
            }
            Err(refusal) => return Err(refusal),
        }
    };
    buffer.advance(head_len);
    let length = body_length(&head.headers).map_err(|why| Refusal { status: 400, why })?;
    if length > MAX_SKIPPED_BODY {
        return Err(Refusal { status: 413, why: "body_too_large" });
    }
    while buffer.len() < length {
        if !read_more(connection, stream, buffer).await {
            return Ok(None);
        }
    }
    buffer.advance(length);
    Ok(Some(head))
}

/// Reads more of the connection into `buffer`; false when it closed, broke
/// or must close.
async fn read_more(connection: &Connection, stream: &mut Stream, buffer: &mut BytesMut) -> bool {
    buffer.reserve(4096);
    tokio::select! {
        read = stream.read_buf(buffer) => matches!(read, Ok(n) if n > 0),
        () = connection.closing() => false,
    }
}

/// The head at the start of `buffer` and its length, `None` while it is
/// incomplete.
fn parse_head(buffer: &[u8]) -> Result<Option<(Head, usize)>, Refusal> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut lines);
    let head_len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal { status: 431, why: "too_many_headers" }),
        Err(_) => return Err(Refusal { status: 400, why: "malformed_head" }),
    };
    let malformed = |why| Refusal { status: 400, why };
    let method = request.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()).ok_or_else(|| malformed("malformed_method"))?;
    let target = request.path.unwrap_or_default();
    let uri = target.parse::<Uri>().map_err(|_| malformed("malformed_target"))?;
    let version = match request.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for line in request.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).map_err(|_| malformed("malformed_header"))?;
        let value = HeaderValue::from_bytes(line.value).map_err(|_| malformed("malformed_header"))?;
        headers.append(name, value);
    }
    Ok(Some((Head { method, target_len: target.len(), uri, version, headers }, head_len)))
}

/// The length of a question's body: none, or one `Content-Length` (lines
/// that agree count as one). A chunked body is not read.
fn body_length(headers: &HeaderMap) -> Result<usize, &'static str> {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Err("chunked_body");
    }
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| "malformed_content_length")?;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err("malformed_content_length");
            }
            let parsed = item.parse::<usize>().map_err(|_| "malformed_content_length")?;
            if length.is_some_and(|known| known != parsed) {
                return Err("conflicting_content_length");
            }
            length = Some(parsed);
        }
    }
    Ok(length.unwrap_or(0))
}

/// The page for a question refused before it could be read, or whose
/// answer could not be built.
fn refusal(gateway: &Gateway, status: u16) -> pingora::Result<Answer> {
    let (title, message) = match status {
        431 => ("Request too large", "The request's headers are too large."),
        413 => ("Too large", "A forward-auth request carries no body."),
        400..=499 => ("Bad request", "The forward-auth request is malformed."),
        _ => ("Something went wrong", "The gateway could not answer this request."),
    };
    answers::page(gateway, status, title, message)
}

/// What is written when not even a page can be built.
const LAST_RESORT: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Writes `answer` as an HTTP/1.1 response with its length and the
/// configured `Server` header, saying `Connection: close` unless
/// `keep_alive`; without the body when it answers a HEAD.
async fn write_answer(
    stream: &mut Stream,
    gateway: &Gateway,
    answer: pingora::Result<Answer>,
    keep_alive: bool,
    head: bool,
) -> std::io::Result<()> {
    let Ok(Answer { status, headers, body }) = answer else {
        return write_all(stream, LAST_RESORT).await;
    };
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        line(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    line(&mut out, b"content-length", HeaderValue::from(body.len()).as_bytes());
    if let Some(server) = &gateway.config.server.server_header {
        line(&mut out, b"server", server.0.as_bytes());
    }
    if !keep_alive {
        line(&mut out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(&body);
    }
    write_all(stream, &out).await
}

/// Writes `bytes` (pingora's stream buffers writes until flushed), giving
/// up when the client takes no more for
/// [`connections::WRITE_TIMEOUT`].
async fn write_all(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    let written = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(connections::WRITE_TIMEOUT, written).await {
        Ok(written) => written,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Ends a connection after a refusal: says it is done writing, then reads
/// what the client still sends for a while, so that closing on unread
/// bytes does not reset the connection before the answer is read.
async fn linger(stream: &mut Stream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(super::LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    /// Header lines, and the body length they give or why they are refused.
    type LengthCase = (&'static [(&'static str, &'static str)], Result<usize, &'static str>);

    #[test]
    fn a_body_has_one_length_or_is_refused() {
        let cases: [LengthCase; 10] = [
            (&[], Ok(0)),
            (&[("content-length", "5")], Ok(5)),
            (&[("content-length", "5, 5")], Ok(5)),
            (&[("content-length", "5"), ("content-length", "5")], Ok(5)),
            (&[("content-length", "5"), ("content-length", "6")], Err("conflicting_content_length")),
            (&[("content-length", "5,6")], Err("conflicting_content_length")),
            (&[("content-length", "+5")], Err("malformed_content_length")),
            (&[("content-length", "")], Err("malformed_content_length")),
            (&[("content-length", "99999999999999999999999")], Err("malformed_content_length")),
            (&[("transfer-encoding", "chunked"), ("content-length", "5")], Err("chunked_body")),
        ];
        for (lines, expected) in cases {
            assert_eq!(body_length(&headers(lines)), expected, "{lines:?}");
        }
    }

    #[test]
    fn a_head_is_read_whole_or_refused() {
        let complete = b"GET /.stepgate/authz/nginx?x=1 HTTP/1.1\r\nHost: a\r\nX-Original-URL: http://a/b\r\n\r\nnext";
        let (head, length) = parse_head(complete).ok().flatten().expect("complete");
        assert_eq!(length, complete.len() - 4, "what follows stays unread");
        assert_eq!((head.method, head.uri.path(), head.version), (Method::GET, "/.stepgate/authz/nginx", Version::HTTP_11));
        assert_eq!(head.target_len, "/.stepgate/authz/nginx?x=1".len());
        assert_eq!(head.headers["x-original-url"], "http://a/b");
        assert!(parse_head(&complete[..20]).ok().expect("not refused").is_none(), "incomplete: read more");
        let refused: [(&[u8], u16); 5] = [
            (b"GET /x HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nSpace : before colon\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nFolded: a\r\n b\r\n\r\n", 400),
            (b"GET /x HTTP/2.0\r\n\r\n", 400),
            (b"G\x01T /x HTTP/1.1\r\n\r\n", 400),
        ];
        for (bytes, status) in refused {
            let refusal = parse_head(bytes).err().map(|r| r.status);
            assert_eq!(refusal, Some(status), "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}
