//! `[admin]` (the management API's listener) and `[audit]` (the audit log).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{values, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens; never the public listener.
    pub listen: SocketAddr,
    pub tls: Option<AdminTls>,
    /// Serve a non-loopback address without TLS. Tokens would cross the
    /// network in clear text: only behind a TLS-terminating proxy on the
    /// same host, say.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// A second listener serving `/metrics` without a token, for a
    /// Prometheus on the same host: loopback addresses only.
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AdminConfig {
    pub(super) fn check(&self, server: &super::ServerConfig, shown: &str) -> Result<(), ConfigError> {
        let other = |message: String| ConfigError::Other { path: shown.to_string(), message };
        let gateway_listeners = server.public_listeners().chain(server.authz_listen);
        if gateway_listeners.into_iter().any(|address| same_socket(address, self.listen)) {
            return Err(other(format!("admin.listen {} is a gateway listener: the admin API needs a listener of its own", self.listen)));
        }
        if let Some(metrics) = self.metrics_listen {
            if !metrics.ip().is_loopback() {
                return Err(other(format!("admin.metrics_listen {metrics} must be a loopback address: it asks for no token")));
            }
        }
        if !self.listen.ip().is_loopback() && self.tls.is_none() && !self.allow_plaintext {
            return Err(other(format!(
                "admin.listen {} is not a loopback address: give [admin.tls] a cert and key (or set admin.allow_plaintext = true)",
                self.listen
            )));
        }
        Ok(())
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(tls) = &mut self.tls {
            for path in [&mut tls.cert, &mut tls.key] {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
    }
}

/// Whether two listening addresses on one port would take the same socket.
/// Whether listeners on `a` and `b` would take the same connections.
pub(super) fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How long security events are kept.
    #[serde(with = "values::duration")]
    pub retention: i64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention: 90 * 24 * 3600 }
    }
}
