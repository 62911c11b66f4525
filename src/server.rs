//! Starting the gateway: pingora's server with the plain and TLS listeners,
//! and the life of a `stepgate serve` process around it.
//!
//! pingora obeys three signals. SIGTERM stops accepting, waits out a
//! grace period and then ends its runtimes, dropping whatever request is
//! still running. SIGQUIT first sends the listening sockets to the process
//! waiting on the upgrade socket (`stepgate serve --upgrade`), accepts for
//! five more seconds alongside it, and then does what SIGTERM does.
//! SIGINT ends everything at once. pingora sleeps out the whole grace even
//! when nothing is left to finish, so [`serve`] counts the client
//! connections once shutdown has begun and returns as soon as none is open:
//! the process exits when its last request is answered, or when the grace
//! ends, whichever comes first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::sync::broadcast;

use crate::config::ServerConfig;
use crate::gateway::StartError;
use crate::live::LiveGateway;
use crate::proxy::authz_listener::AuthzListener;
use crate::proxy::connections::{Connections, Counts, GuardedProxy, Limits};
use crate::proxy::GatewayProxy;
use crate::systemd::Notifier;

/// Once the grace is over, how long pingora's runtimes get to end.
const RUNTIME_SHUTDOWN_SECS: u64 = 1;
/// How often the open connections are counted while they drain.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long the listeners may take to accept once the server runs.
const LISTEN_WAIT: Duration = Duration::from_secs(10);
/// How long a SIGQUIT waits for the new process to bind the upgrade
/// socket: `serve --upgrade` and the signal are often sent together.
const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// How the server stops once told to.
#[derive(Debug, Clone, Copy)]
enum Stopping {
    /// At once: the in-process tests and the demo.
    AtOnce,
    /// As `stepgate serve`: requests in flight get `server.shutdown_grace`.
    Gracefully { upgrade: bool },
}

/// Whether the server is the only one its process ever runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    /// `stepgate serve` and the demo: `server.work_stealing` applies.
    OneServer,
    /// One of several servers started and stopped in one process (the
    /// in-process tests). pingora's runtimes without work stealing keep
    /// each worker thread's runtime in a process-wide thread-local map
    /// that is never cleared, under thread ids the process reuses: a later
    /// server's thread can find a stopped server's runtime there and never
    /// start its listeners. Such servers always steal work.
    SeveralServers,
}

/// A pingora server carrying the gateway, ready to run; it stops at once
/// when told to (for embedding, as the demo does).
pub fn build_server(live: Arc<LiveGateway>) -> Result<Server, StartError> {
    build(live, Stopping::AtOnce, Process::OneServer).map(|(server, _)| server)
}

/// The server, and the client connections its listeners admit.
/// The proxy's worker threads: as configured, or for 0 one per CPU but
/// one, at least one. The CPU left over runs the kernel's network work and
/// what shares the machine (the app, a TLS terminator): on two cores with
/// the app beside it, one thread served more requests a second than two,
/// at a lower p99 and a quarter less CPU per request (see the README's
/// benchmarks); a machine that runs nothing else may set `threads`.
fn worker_threads(configured: usize, cpus: usize) -> usize {
    match configured {
        0 => cpus.saturating_sub(1).max(1),
        n => n,
    }
}

fn build(live: Arc<LiveGateway>, stopping: Stopping, process: Process) -> Result<(Server, Arc<Connections>), StartError> {
    let gateway = live.current();
    let server_config = &gateway.config.server;
    let grace = match stopping {
        Stopping::AtOnce => 0,
        Stopping::Gracefully { .. } => server_config.shutdown_grace.as_secs(),
    };
    let conf = ServerConf {
        threads: worker_threads(server_config.threads, std::thread::available_parallelism().map_or(2, |n| n.get())),
        work_stealing: server_config.work_stealing || process == Process::SeveralServers,
        upgrade_sock: server_config.upgrade_socket.display().to_string(),
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_SHUTDOWN_SECS),
        ..ServerConf::default()
    };
    let upgrade = matches!(stopping, Stopping::Gracefully { upgrade: true });
    let opt = upgrade.then(|| Opt { upgrade: true, ..Opt::default() });
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let mut options = HttpServerOptions::default();
    options.h2c = server_config.h2c;
    options.h2_idle_timeout = Some(server_config.keepalive_timeout);
    let connections = Connections::new(Limits {
        max_connections: server_config.max_connections.0,
        keepalive_timeout: server_config.keepalive_timeout,
        header_timeout: server_config.header_timeout,
    });
    if let Some(address) = server_config.authz_listen {
        let mut authz = Service::new("stepgate-authz".into(), AuthzListener::new(live.clone(), connections.clone()));
        authz.add_listener(listener(&address.to_string()));
        server.add_service(authz);
    }
    let mut proxy = HttpProxy::new(GatewayProxy::new(live, connections.clone()), server.configuration.clone());
    proxy.server_options = Some(options);
    proxy.handle_init_modules();
    let mut service = Service::new("stepgate".into(), GuardedProxy::new(proxy, connections.clone()));
    service.add_listener(listener(&server_config.listen.to_string()));
    if let Some(tls) = &server_config.tls {
        let (cert, key) = (tls.cert.display().to_string(), tls.key.display().to_string());
        let mut settings = TlsSettings::intermediate(&cert, &key).map_err(|e| StartError::Tls(e.to_string()))?;
        settings.enable_h2();
        service.add_listener(listener(&tls.listen.to_string()).tls(settings));
    }
    server.add_service(service);
    Ok((server, connections))
}

/// A TCP listener without pingora's 64 KiB read buffer per connection,
/// most of what an idle connection would cost: request heads are read
/// into buffers of their own, bodies in large reads.
fn listener(address: &str) -> ListenerConfig {
    ListenerConfig::tcp(address).l4_buffer(L4BufferSettings::default().read(0))
}

/// Runs the server until `shutdown` says stop (or, by default, a signal:
/// see [`Signals`]).
pub fn run(server: Server, shutdown: Option<Box<dyn ShutdownSignalWatch + Send + Sync>>) {
    let shutdown_signal = shutdown.unwrap_or_else(|| {
        let upgrade_socket = PathBuf::from(&server.configuration.upgrade_sock);
        Box::new(Signals { upgrade_socket })
    });
    server.run(RunArgs { shutdown_signal });
}

/// Checks, before anything starts, that `stepgate serve` will have its
/// listeners: addresses nobody holds; or with `upgrade`, a running gateway
/// to take them from and a safe directory to meet it in.
pub fn check_listeners(config: &ServerConfig, upgrade: bool) -> Result<(), StartError> {
    if upgrade {
        check_upgrade_directory(&config.upgrade_socket).map_err(StartError::Io)?;
        if TcpListener::bind(config.listen).is_ok() {
            let message = format!("--upgrade: nothing to take over, no process listens on {}; start without --upgrade", config.listen);
            return Err(StartError::Io(message));
        }
        return Ok(());
    }
    for address in config.public_listeners().chain(config.authz_listen) {
        TcpListener::bind(address).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => " (to take over from a running gateway, use --upgrade)",
                _ => "",
            };
            StartError::Io(format!("cannot listen on {address}: {e}{hint}"))
        })?;
    }
    Ok(())
}

/// Whoever binds the upgrade socket first receives the listening sockets
/// (and pingora lets anyone connect to it), so only the gateway's user, or
/// root, may be able to create files where it lives.
fn check_upgrade_directory(socket: &Path) -> Result<(), String> {
    let directory = socket.parent().unwrap_or(Path::new("/"));
    let shown = directory.display();
    let metadata = std::fs::metadata(directory).map_err(|e| format!("the upgrade socket's directory {shown}: {e}"))?;
    if !metadata.is_dir() {
        return Err(format!("the upgrade socket's directory {shown} is not a directory"));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "the upgrade socket's directory {shown} can be written by group or others (mode {mode:o}); whoever binds {} first \
             receives the listening sockets: use a directory only the gateway's user can write, such as systemd's \
             RuntimeDirectory with mode 0700",
            socket.display()
        ));
    }
    Ok(())
}

/// Runs `stepgate serve` until a signal ends it (see the module's notes).
/// With `upgrade`, first takes the listening sockets over from the running
/// gateway, which is to be sent SIGQUIT. Tells systemd, when it started
/// the process, once the listeners accept and when the gateway stops.
pub fn serve(live: Arc<LiveGateway>, upgrade: bool) -> Result<(), StartError> {
    let config = live.current().config.server.clone();
    let (mut server, connections) = build(live, Stopping::Gracefully { upgrade }, Process::OneServer)?;
    if upgrade {
        let socket = config.upgrade_socket.display();
        tracing::info!(
            "waiting on {socket} for the running gateway's listening sockets: send it SIGQUIT (this process gives up after a few seconds)"
        );
    }
    // With --upgrade, blocks until the sockets arrive; pingora gives up,
    // and ends the process, when none come within a few seconds.
    server.bootstrap();
    let phases = server.watch_execution_phase();
    let (finished, first_finished) = mpsc::channel();
    let server_finished = finished.clone();
    spawn("stepgate-server", move || {
        run(server, None);
        let _ = server_finished.send(Ok(()));
    })?;
    spawn("stepgate-lifecycle", move || {
        if let Some(outcome) = follow(phases, &connections, &config) {
            let _ = finished.send(outcome);
        }
    })?;
    // Nobody reports when the server thread panicked.
    first_finished.recv().unwrap_or_else(|_| Err("the server stopped unexpectedly".into())).map_err(StartError::Io)
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), StartError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map(drop)
        .map_err(|e| StartError::Io(format!("cannot start the {name} thread: {e}")))
}

/// Follows the server through its phases and tells systemd when it is
/// ready and when it stops. Returns once shutdown has begun and no client
/// connection is left, or when the listeners do not come up; `None` when
/// the server ended first.
fn follow(mut phases: broadcast::Receiver<ExecutionPhase>, connections: &Connections, config: &ServerConfig) -> Option<Result<(), String>> {
    let systemd = Notifier::from_env();
    let mut handing_over = false;
    loop {
        let phase = match phases.blocking_recv() {
            Ok(phase) => phase,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        match phase {
            ExecutionPhase::Running => {
                if let Err(e) = wait_until_listening(config.listen) {
                    return Some(Err(e));
                }
                tracing::info!("ready: serving on {}", config.listen);
                notify(&systemd, Notifier::ready);
            }
            ExecutionPhase::GracefulUpgradeTransferringFds => handing_over = true,
            ExecutionPhase::ShutdownStarted => {
                // After a hand-over the service lives on in the new process;
                // systemd hears every process of the unit (NotifyAccess=all),
                // and a STOPPING=1 from this one would stop the new one too.
                if !handing_over {
                    notify(&systemd, Notifier::stopping);
                }
                drain(connections, config.shutdown_grace);
                return Some(Ok(()));
            }
            _ => {}
        }
    }
}

fn notify(systemd: &Option<Notifier>, message: fn(&Notifier) -> std::io::Result<()>) {
    if let Some(Err(e)) = systemd.as_ref().map(message) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Waits until a connection to `listen` succeeds.
fn wait_until_listening(listen: SocketAddr) -> Result<(), String> {
    let target = reachable(listen);
    let deadline = Instant::now() + LISTEN_WAIT;
    while TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_err() {
        if Instant::now() >= deadline {
            return Err(format!("the listener on {listen} did not come up"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Where a listener on `address` is reached from this host: a wildcard
/// address through loopback.
fn reachable(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

/// Waits until no client connection is open. Each closes after its
/// current request; one waiting for a request closes after
/// [`crate::proxy::connections`]' short linger. pingora ends the runtimes
/// when the grace is over, whatever is left.
fn drain(connections: &Connections, grace: Duration) {
    let open = connections.counts().open;
    tracing::info!("stopped accepting; waiting for the requests in flight (connections open: {open}; at most {grace:?})");
    while connections.counts().open > 0 {
        std::thread::sleep(DRAIN_POLL);
    }
    tracing::info!("every connection is closed; exiting");
}

/// The signals `stepgate serve` obeys, as pingora's own watch does, but a
/// SIGQUIT with no new process safely waiting on the upgrade socket is
/// refused (and logged) rather than ending the gateway with nobody to take
/// over.
struct Signals {
    upgrade_socket: PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let watches = (signal(SignalKind::quit()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        let (Ok(mut quit), Ok(mut terminate), Ok(mut interrupt)) = watches else {
            tracing::error!("cannot watch for signals: the gateway stops only when killed");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = quit.recv() => match handover_ready(&self.upgrade_socket).await {
                    Ok(()) => return ShutdownSignal::GracefulUpgrade,
                    Err(why) => tracing::error!("SIGQUIT: not handing the listening sockets over: {why}; still serving"),
                },
                _ = terminate.recv() => return ShutdownSignal::GracefulTerminate,
                _ = interrupt.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

/// Whether a new process waits on the upgrade socket, in a directory
/// nobody else can write.
async fn handover_ready(socket: &Path) -> Result<(), String> {
    check_upgrade_directory(socket)?;
    let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
    while !std::fs::symlink_metadata(socket).is_ok_and(|metadata| metadata.file_type().is_socket()) {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no process waits on {} (start `stepgate serve --upgrade` first)", socket.display()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A shutdown trigger for embedding the gateway (tests, the demo).
pub struct ShutdownOnDrop(pub tokio::sync::watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for ShutdownOnDrop {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        // Fires when the sender says so or is dropped.
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::FastShutdown
    }
}

/// A gateway serving on its own threads until dropped.
pub struct RunningGateway {
    pub live: Arc<LiveGateway>,
    /// The admin API, when configured.
    pub admin: Option<crate::admin::AdminServer>,
    connections: Arc<Connections>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningGateway {
    /// Starts pingora on a thread of its own, with work stealing (see
    /// `Process::SeveralServers`). Upkeep (reloads, key reload, sweeps)
    /// runs on the caller's tokio runtime.
    pub fn start(live: Arc<LiveGateway>) -> Result<Self, StartError> {
        let (server, connections) = build(live.clone(), Stopping::AtOnce, Process::SeveralServers)?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("stepgate".into())
            .spawn(move || run(server, Some(Box::new(ShutdownOnDrop(stopped)))))
            .map_err(|e| StartError::Io(format!("cannot start the server thread: {e}")))?;
        let mut admin = None;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            admin = crate::admin::start(live.clone())?;
            handle.spawn(live.clone().maintain());
        }
        Ok(Self { live, admin, connections, stop, thread: Some(thread) })
    }

    /// The client connections open now.
    pub fn connections(&self) -> Counts {
        self.connections.counts()
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn by_default_one_cpu_is_left_to_the_rest_of_the_machine() {
        assert_eq!(worker_threads(0, 1), 1);
        assert_eq!(worker_threads(0, 2), 1);
        assert_eq!(worker_threads(0, 8), 7);
        assert_eq!(worker_threads(3, 2), 3, "a configured count is taken as it is");
    }
}
