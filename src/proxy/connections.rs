//! Client connections: how many may be open, how long one may wait for its
//! next request, and how long a request head may take to arrive.
//!
//! pingora 0.9 on its own keeps an HTTP/1.1 connection open forever once it
//! has served a request (it waits for the next one without a timeout),
//! bounds a request head only per read (a client sending one byte every
//! few seconds holds the connection as long as it likes), and spends about
//! 60 KiB on each idle connection. So the listeners do not run pingora's
//! HTTP service directly but [`GuardedProxy`] around it, which
//!
//! - counts the open connections and, past `server.max_connections`, closes
//!   the one that has waited longest for a request to make room for a new
//!   one, or refuses the new one when every connection is busy;
//! - waits for each HTTP/1 request itself, in a small task (a few KiB per
//!   idle connection), and closes the connection when
//!   `server.keepalive_timeout` passes first (checked by one sweeper for
//!   all connections, every [`DEADLINE_TICK`]);
//! - runs pingora's request processing on what arrived, under a total
//!   deadline for the request head (`server.header_timeout`);
//! - hands HTTP/2 connections to pingora, holding them to the header
//!   timeout until their first request; after that pingora's idle timeout
//!   for them, set to the keep-alive timeout in [`crate::server`], applies.
//!
//! A connection is *waiting* from the moment it opens, or sends the last
//! byte of a response, until the proxy's first phase has the request head
//! ([`Connections::request_started`], from `early_request_filter`). Only a
//! waiting connection has a deadline, and only a waiting one is closed to
//! make room; a busy one is bounded by pingora's read and write timeouts.
//!
//! The HTTP/1 loop in [`GuardedProxy::serve`] follows pingora's own
//! (`pingora-core` `apps/mod.rs`, `impl ServerApp for HttpServerApp`),
//! which is why `Cargo.toml` pins pingora to the exact version.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream, ALPN};
use pingora::proxy::{HttpProxy, Session};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};

use super::GatewayProxy;

/// A response write that makes no progress for this long ends the
/// connection (nginx's `send_timeout`); pingora sets none.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a cleartext HTTP/2 connection starts with (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The size pingora gives a new request-head buffer, and of the first read
/// of a request.
const HEAD_BUFFER: usize = 4096;

/// How often one task checks the deadlines of every connection: a
/// connection is closed at most this long after its deadline. A timer per
/// connection would be armed again at each of its requests, and arming a
/// tokio timer earlier than the runtime's next wake-up wakes the runtime's
/// driver with a system call: twice per request, about a tenth of a
/// proxied request's cost.
const DEADLINE_TICK: Duration = Duration::from_millis(250);

/// Once the server is shutting down, how long a connection waiting for a
/// request may still bring one, which is answered with `Connection: close`.
/// A client that had a keep-alive response just before may have sent its
/// next request already: closing the connection at once would lose it.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// The `[server]` settings that bound client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub keepalive_timeout: Duration,
    pub header_timeout: Duration,
}

/// How many client connections are open, and how many of them wait for a
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub open: usize,
    pub waiting: usize,
}

tokio::task_local! {
    /// The HTTP/1 connection whose request the current task is serving.
    static CONNECTION: Arc<Connection>;
}

/// Every open client connection, and the waiting ones in the order they
/// started waiting.
pub struct Connections {
    limits: Limits,
    table: Mutex<Table>,
    /// Whether the deadline sweeper runs; it starts with the first connection.
    sweeping: std::sync::Once,
}

struct Table {
    open: usize,
    /// Waiting connections by ticket; the first is the one to close when
    /// room is needed.
    waiting: BTreeMap<u64, Weak<Connection>>,
    next_ticket: u64,
    /// Connections with a deadline, by deadline (and id, to tell apart
    /// equal ones).
    deadlines: BTreeMap<(Instant, u64), Weak<Connection>>,
    next_id: u64,
    /// HTTP/2 connections that have not had a request yet, by socket.
    http2_first: HashMap<usize, Weak<Connection>>,
}

/// One client connection. Its place in the table is given back when it is
/// dropped, however its task ends.
pub(super) struct Connection {
    connections: Arc<Connections>,
    /// Its key in `Table::deadlines`, with its deadline.
    id: u64,
    state: Mutex<State>,
    /// Closed to make room for a newer connection, or past its deadline.
    closed: AtomicBool,
    /// Wakes the connection's own task, the only one that waits for
    /// [`Connection::closing`]: cheaper than a `Notify` for one waiter,
    /// and raced against every request.
    close_waker: AtomicWaker,
}

#[derive(Default)]
struct State {
    /// Its key in `Table::waiting` while it waits for a request.
    ticket: Option<u64>,
    /// Its key in `Table::http2_first`.
    http2_socket: Option<usize>,
    /// When a waiting connection is closed.
    deadline: Option<Instant>,
}

/// Locks without caring about poisoning: nothing panics while holding these.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Self> {
        let table = Table {
            open: 0,
            waiting: BTreeMap::new(),
            next_ticket: 0,
            deadlines: BTreeMap::new(),
            next_id: 0,
            http2_first: HashMap::new(),
        };
        Arc::new(Self { limits, table: Mutex::new(table), sweeping: std::sync::Once::new() })
    }

    /// Closes the connections whose deadline has passed, every
    /// [`DEADLINE_TICK`], until the server is gone.
    fn start_sweeping(self: &Arc<Self>) {
        self.sweeping.call_once(|| {
            let connections = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(DEADLINE_TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(connections) = connections.upgrade() else { return };
                    connections.close_overdue(Instant::now());
                }
            });
        });
    }

    fn close_overdue(&self, now: Instant) {
        let mut overdue = Vec::new();
        let mut table = lock(&self.table);
        while let Some(entry) = table.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            overdue.extend(entry.remove().upgrade());
        }
        drop(table);
        for connection in &overdue {
            connection.close();
        }
        // Dropped outside the lock, which their `Drop` takes.
        drop(overdue);
    }

    pub fn counts(&self) -> Counts {
        let table = lock(&self.table);
        Counts { open: table.open, waiting: table.waiting.len() }
    }

    /// Called by the proxy's first phase, once a request head has been
    /// read: its connection stops waiting (no deadline, not to be closed
    /// for room), and the response gets a write timeout.
    pub fn request_started(&self, session: &mut Session) {
        session.set_write_timeout(Some(WRITE_TIMEOUT));
        if session.is_http2() {
            // HTTP/2 requests run on tasks of their own, so the connection
            // is found by its socket, whose digest pingora shares between
            // a connection and its requests.
            if let Some(socket) = session.digest().and_then(socket_key) {
                self.first_http2_request(socket);
            }
            return;
        }
        let _ = CONNECTION.try_with(|connection| {
            connection.busy();
            // Reading a request head, pingora turns keep-alive on with no
            // timeout (unless the client said `Connection: close`, or spoke
            // HTTP/1.0 without keep-alive). Give it ours, so that its reads
            // of the next request head time out too.
            if session.get_keepalive().is_some() {
                session.set_keepalive(Some(self.limits.keepalive_timeout.as_secs()));
            }
        });
    }

    fn first_http2_request(&self, socket: usize) {
        let mut table = lock(&self.table);
        if table.http2_first.is_empty() {
            return;
        }
        let connection = table.http2_first.remove(&socket).and_then(|connection| connection.upgrade());
        drop(table);
        if let Some(connection) = connection {
            lock(&connection.state).http2_socket = None;
            connection.busy();
        }
    }

    /// Admits a new connection, closing the longest-waiting one when the
    /// limit is reached; `None` when every open connection is busy. The new
    /// one waits for its first request head, due within the header timeout.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Arc<Connection>> {
        let mut table = lock(&self.table);
        // Evicted connections count until their tasks have closed them, so
        // each admission past the limit evicts exactly one.
        let evicted = if table.open >= self.limits.max_connections {
            match table.evict_oldest() {
                Some(evicted) => Some(evicted),
                None => {
                    drop(table);
                    tracing::debug!("connection refused: all {} connections are busy", self.limits.max_connections);
                    return None;
                }
            }
        } else {
            None
        };
        table.open += 1;
        let id = table.next_id;
        table.next_id += 1;
        let connection = Arc::new(Connection {
            connections: self.clone(),
            id,
            state: Mutex::default(),
            closed: AtomicBool::new(false),
            close_waker: AtomicWaker::new(),
        });
        let mut state = lock(&connection.state);
        state.ticket = Some(table.enqueue(&connection));
        table.set_deadline(&connection, &mut state, Some(Instant::now() + self.limits.header_timeout));
        drop(state);
        drop(table);
        self.start_sweeping();
        if evicted.is_some() {
            tracing::debug!("closed the longest-waiting connection to admit a new one");
        }
        // Dropped outside the lock, which its `Drop` takes.
        drop(evicted);
        Some(connection)
    }
}

impl Table {
    fn enqueue(&mut self, connection: &Arc<Connection>) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.insert(ticket, Arc::downgrade(connection));
        ticket
    }

    /// Takes the longest-waiting connection out of the queue and tells it to
    /// close. The caller drops it after unlocking the table.
    fn evict_oldest(&mut self) -> Option<Arc<Connection>> {
        while let Some((_, waiting)) = self.waiting.pop_first() {
            // A connection being dropped right now cannot be upgraded; its
            // `Drop` is about to free its place anyway.
            if let Some(connection) = waiting.upgrade() {
                let mut state = lock(&connection.state);
                state.ticket = None;
                self.set_deadline(&connection, &mut state, None);
                drop(state);
                connection.close();
                return Some(connection);
            }
        }
        None
    }

    /// Moves a connection to its new deadline (none: it has no deadline).
    fn set_deadline(&mut self, connection: &Arc<Connection>, state: &mut State, deadline: Option<Instant>) {
        if let Some(old) = state.deadline {
            self.deadlines.remove(&(old, connection.id));
        }
        if let Some(new) = deadline {
            self.deadlines.insert((new, connection.id), Arc::downgrade(connection));
        }
        state.deadline = deadline;
    }
}

/// A connection's socket, as pingora's digests of it know it.
fn socket_key(digest: &Digest) -> Option<usize> {
    digest.socket_digest.as_ref().map(|socket| Arc::as_ptr(socket) as usize)
}

impl Connection {
    /// An HTTP/2 connection waits, under the header timeout it got when
    /// admitted, until a request arrives on it. `false` when its socket
    /// cannot be told from its requests, which then cannot end the wait.
    fn wait_for_http2_request(self: &Arc<Self>, stream: &Stream) -> bool {
        let Some(socket) = stream.get_socket_digest().map(|socket| Arc::as_ptr(&socket) as usize) else {
            return false;
        };
        let mut table = lock(&self.connections.table);
        table.http2_first.insert(socket, Arc::downgrade(self));
        lock(&self.state).http2_socket = Some(socket);
        true
    }

    /// A request head has been read: no deadline, not to be evicted.
    pub(super) fn busy(self: &Arc<Self>) {
        let mut table = lock(&self.connections.table);
        let mut state = lock(&self.state);
        if let Some(ticket) = state.ticket.take() {
            table.waiting.remove(&ticket);
        }
        table.set_deadline(self, &mut state, None);
    }

    /// A response has been sent: wait for the next request, at the end of
    /// the queue, until the keep-alive timeout.
    pub(super) fn wait_for_next_request(self: &Arc<Self>) {
        let mut table = lock(&self.connections.table);
        let mut state = lock(&self.state);
        if let Some(ticket) = state.ticket.take() {
            table.waiting.remove(&ticket);
        }
        if !self.is_closed() {
            state.ticket = Some(table.enqueue(self));
            table.set_deadline(self, &mut state, Some(Instant::now() + self.connections.limits.keepalive_timeout));
        }
    }

    /// The next request's first bytes have arrived: the rest of its head
    /// is due within the header timeout. It keeps its place in the queue.
    pub(super) fn head_started(self: &Arc<Self>) {
        let mut table = lock(&self.connections.table);
        let mut state = lock(&self.state);
        if !self.is_closed() {
            table.set_deadline(self, &mut state, Some(Instant::now() + self.connections.limits.header_timeout));
        }
    }

    /// Tells the connection's task to close it.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close_waker.wake();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves when the connection must be closed: it was evicted, or its
    /// deadline passed. Awaited by the connection's own task only.
    pub(super) fn closing(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.is_closed() {
                return Poll::Ready(());
            }
            self.close_waker.register(cx.waker());
            // Again: a close between the first look and the registration
            // woke nobody.
            match self.is_closed() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let (ticket, http2_socket, deadline) = (state.ticket.take(), state.http2_socket.take(), state.deadline.take());
        let mut table = lock(&self.connections.table);
        if let Some(ticket) = ticket {
            table.waiting.remove(&ticket);
        }
        if let Some(deadline) = deadline {
            table.deadlines.remove(&(deadline, self.id));
        }
        // A new connection may have the closed socket's key already.
        if let Some(socket) = http2_socket {
            if table.http2_first.get(&socket).is_some_and(|entry| std::ptr::eq(entry.as_ptr(), self)) {
                table.http2_first.remove(&socket);
            }
        }
        table.open -= 1;
    }
}

/// pingora's HTTP proxy behind connection limits and deadlines; the
/// listeners' application.
pub struct GuardedProxy {
    proxy: Arc<HttpProxy<GatewayProxy>>,
    connections: Arc<Connections>,
}

impl GuardedProxy {
    /// `connections` must be the proxy's own, which its first phase tells
    /// when a request has arrived.
    pub fn new(proxy: HttpProxy<GatewayProxy>, connections: Arc<Connections>) -> Self {
        Self { proxy: Arc::new(proxy), connections }
    }

    /// Serves an HTTP/2 connection in pingora's server until it closes, or
    /// until its deadline when no request has come by then.
    async fn serve_http2(&self, connection: Arc<Connection>, stream: Stream, shutdown: &ShutdownWatch) {
        if !connection.wait_for_http2_request(&stream) {
            connection.busy();
        }
        tokio::select! {
            _ = self.proxy.process_new(stream, shutdown) => {}
            () = connection.closing() => {}
        }
    }

    fn h2c(&self) -> bool {
        self.proxy.server_options.as_ref().is_some_and(|options| options.h2c)
    }

    /// Serves an HTTP/1 connection (or a cleartext one that turns out to be
    /// HTTP/2) until it closes, waiting for each request itself.
    async fn serve(self: Arc<Self>, connection: Arc<Connection>, mut stream: Stream, shutdown: ShutdownWatch) {
        let mut maybe_h2c = self.h2c() && stream.get_ssl_digest().is_none();
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let start = if maybe_h2c {
                maybe_h2c = false;
                match starts_with_h2_preface(&connection, &mut stream).await {
                    Some(true) => return self.serve_http2(connection, stream, &shutdown).await,
                    // The peeked bytes are still to be read.
                    Some(false) => None,
                    None => return,
                }
            } else {
                match next_request(&connection, &mut stream, &shutdown).await {
                    Some(start) => Some(start),
                    None => return,
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    session.set_keepalive(Some(self.connections.limits.keepalive_timeout.as_secs()));
                    let request_limit = self.proxy.server_options.as_ref().and_then(|o| o.keepalive_request_limit);
                    session.set_keepalive_reuses_remaining(request_limit);
                }
            }
            // pingora hands a reused connection back with the bytes it read
            // past a request only when pipelining is on, which it is not
            // here: the next request starts with the bytes just read.
            if let Some(start) = start {
                session.set_pipelined_prefix(start);
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            // The first request's head is due within the header timeout of
            // the connection's opening, a later one's of its first bytes.
            if !first {
                connection.head_started();
            }
            let served = CONNECTION.scope(connection.clone(), self.proxy.process_new_http(session, &shutdown));
            let reused = tokio::select! {
                reused = served => reused,
                () = connection.closing() => None,
            };
            let Some((reused, next_settings)) = reused.map(ReusedHttpStream::consume) else {
                return;
            };
            stream = reused;
            settings = next_settings;
            first = false;
            connection.wait_for_next_request();
        }
    }
}

/// Waits for the start of the next request, without pingora's per-request
/// state; `None` when the connection is to close first. The read buffer is
/// on the stack only while the read is polled, so a waiting connection
/// holds none; what arrives (usually the whole request head) is copied into
/// the head buffer pingora parses, which then needs no read of its own.
pub(super) async fn next_request(connection: &Connection, stream: &mut Stream, shutdown: &ShutdownWatch) -> Option<BytesMut> {
    let read = std::future::poll_fn(|cx| {
        // Uninitialised: zeroing 4 KiB on every poll costs more than the
        // rest of the wait.
        let mut buffer = [MaybeUninit::<u8>::uninit(); HEAD_BUFFER];
        let mut read = ReadBuf::uninit(&mut buffer);
        match Pin::new(&mut *stream).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                let mut start = BytesMut::with_capacity(HEAD_BUFFER);
                start.extend_from_slice(read.filled());
                Poll::Ready(Some(start))
            }
            // The client closed the connection, or it broke.
            Poll::Ready(_) => Poll::Ready(None),
        }
    });
    tokio::select! {
        start = read => start,
        () = connection.closing() => None,
        () = lingered_after_shutdown(shutdown.clone()) => None,
    }
}

/// Resolves [`SHUTDOWN_LINGER`] after the server began shutting down.
async fn lingered_after_shutdown(mut shutdown: ShutdownWatch) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
    tokio::time::sleep(SHUTDOWN_LINGER).await;
}

/// Whether a new cleartext connection starts with the HTTP/2 preface,
/// peeked so that it stays to be read; `None` when the connection is to
/// close first. Only a start of `PRI ` is peeked further: a short HTTP/1
/// request must not wait for 24 bytes that never come.
async fn starts_with_h2_preface(connection: &Connection, stream: &mut Stream) -> Option<bool> {
    let peek = async {
        let mut start = [0u8; 4];
        if !stream.try_peek(&mut start).await.ok()? || start != H2_PREFACE[..4] {
            return Some(false);
        }
        let mut preface = [0u8; H2_PREFACE.len()];
        Some(stream.try_peek(&mut preface).await.ok()? && preface == *H2_PREFACE)
    };
    tokio::select! {
        peeked = peek => peeked,
        () = connection.closing() => None,
    }
}

#[async_trait]
impl ServerApp for GuardedProxy {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let connection = self.connections.admit()?;
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            self.serve_http2(connection, stream, shutdown).await;
            return None;
        }
        // The connection lives on in a task of its own: ending this one
        // gives back the larger one pingora spawned for the connection.
        tokio::spawn(self.clone().serve(connection, stream, shutdown.clone()));
        None
    }

    async fn cleanup(&self) {
        // Wakes requests pingora is waiting for, so that shutdown is quick.
        ServerApp::cleanup(&*self.proxy).await
    }
}
