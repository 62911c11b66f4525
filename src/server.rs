//! Starting the gateway: pingora's server with the plain and TLS listeners.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;

use crate::gateway::StartError;
use crate::live::LiveGateway;
use crate::proxy::connections::{Connections, Counts, GuardedProxy, Limits};
use crate::proxy::GatewayProxy;

/// A pingora server carrying the gateway, ready to run.
pub fn build_server(live: Arc<LiveGateway>) -> Result<Server, StartError> {
    build(live).map(|(server, _)| server)
}

/// The server, and the client connections its listeners admit.
fn build(live: Arc<LiveGateway>) -> Result<(Server, Arc<Connections>), StartError> {
    let gateway = live.current();
    let server_config = &gateway.config.server;
    let conf = ServerConf {
        threads: match server_config.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            n => n,
        },
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let mut options = HttpServerOptions::default();
    options.h2c = server_config.h2c;
    options.h2_idle_timeout = Some(server_config.keepalive_timeout);
    let connections = Connections::new(Limits {
        max_connections: server_config.max_connections.0,
        keepalive_timeout: server_config.keepalive_timeout,
        header_timeout: server_config.header_timeout,
    });
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

/// Runs the server until `shutdown` says stop (or, by default, a signal).
pub fn run(server: Server, shutdown: Option<Box<dyn ShutdownSignalWatch + Send + Sync>>) {
    let args = match shutdown {
        Some(shutdown_signal) => RunArgs { shutdown_signal },
        None => RunArgs::default(),
    };
    server.run(args);
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
    connections: Arc<Connections>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningGateway {
    /// Starts pingora on a thread of its own. Upkeep (reloads, key reload,
    /// sweeps) runs on the caller's tokio runtime.
    pub fn start(live: Arc<LiveGateway>) -> Result<Self, StartError> {
        let (server, connections) = build(live.clone())?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("stepgate".into())
            .spawn(move || run(server, Some(Box::new(ShutdownOnDrop(stopped)))))
            .map_err(|e| StartError::Io(format!("cannot start the server thread: {e}")))?;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(live.clone().maintain());
        }
        Ok(Self { live, connections, stop, thread: Some(thread) })
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
