//! TLS for the admin listener. Handshakes run apart from the accept loop,
//! each with a deadline, so a client that stalls one holds up nobody else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::AdminTls;
use crate::gateway::StartError;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; further connections wait to be accepted.
const HANDSHAKES: usize = 64;

pub struct TlsListener {
    addr: SocketAddr,
    streams: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: &AdminTls) -> Result<Self, StartError> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(tls)?));
        let addr = listener.local_addr().map_err(|e| StartError::Io(e.to_string()))?;
        let (sender, streams) = mpsc::channel(HANDSHAKES);
        let accepting = tokio::spawn(accept_loop(listener, acceptor, sender));
        Ok(Self { addr, streams, accepting })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.recv().await {
            Some(stream) => stream,
            // The accept loop ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "admin API: cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, sender) = (acceptor.clone(), sender.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = sender.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "admin API: TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "admin API: TLS handshake timed out"),
            }
        });
    }
}

fn server_config(tls: &AdminTls) -> Result<rustls::ServerConfig, StartError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StartError::Tls(format!("admin.tls: cannot read {}: {e}", path.display())))
    };
    let cert_pem = read(&tls.cert)?;
    let key_pem = read(&tls.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Tls(format!("admin.tls.cert: {e}")))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!("admin.tls.cert: no certificate in {}", tls.cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| StartError::Tls(format!("admin.tls.key: {e}")))?
        .ok_or_else(|| StartError::Tls(format!("admin.tls.key: no private key in {}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(format!("admin.tls: {e}")))?;
    Ok(config)
}
