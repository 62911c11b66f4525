//! `[server]`: the listeners, the connection limits and timeouts, and how
//! the gateway starts and stops.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{admin, values, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// A listener of its own for forward-auth questions (`/.stepgate/authz/*`
    /// only): cheaper per question than the main listener, which answers
    /// them too.
    #[serde(default)]
    pub authz_listen: Option<SocketAddr>,
    /// Accept cleartext HTTP/2 (h2c) on the plain listener.
    #[serde(default)]
    pub h2c: bool,
    pub tls: Option<TlsConfig>,
    /// Peers whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed.
    #[serde(default)]
    pub trusted_proxies: values::TrustedProxies,
    /// Where the database and the signing keys live, relative to this file.
    pub data_dir: PathBuf,
    /// Worker threads for the proxy; 0 means one per CPU but one (at least one).
    #[serde(default)]
    pub threads: usize,
    /// Whether idle worker threads take queued work from busy ones. Off,
    /// each thread runs its own connections: cheaper per request on a
    /// small machine, at the cost of balance when a few connections carry
    /// most of the load.
    #[serde(default)]
    pub work_stealing: bool,
    /// Requests whose header block (request line and headers) is larger
    /// than this get 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: values::MaxHeaderBytes,
    /// Send `Strict-Transport-Security` on the gateway's own responses
    /// over https.
    #[serde(default = "default_true")]
    pub hsts: bool,
    /// The `Server` header of every response; none by default.
    #[serde(default)]
    pub server_header: Option<values::ServerHeader>,
    /// How long a keep-alive connection may wait for its next request.
    #[serde(default = "default_keepalive_timeout", with = "values::connection_timeout")]
    pub keepalive_timeout: std::time::Duration,
    /// How long a client may take to send a whole request head (request
    /// line and headers); for a new connection, counted from its opening.
    #[serde(default = "default_header_timeout", with = "values::connection_timeout")]
    pub header_timeout: std::time::Duration,
    /// Client connections open at once. A new one past the limit closes
    /// the connection that has waited longest for a request, or is
    /// refused when every connection is busy.
    #[serde(default = "default_max_connections")]
    pub max_connections: values::MaxConnections,
    /// How long requests in flight may take to finish once the gateway
    /// stops (SIGTERM) or hands its listeners to a new process (SIGQUIT).
    #[serde(default = "default_shutdown_grace", deserialize_with = "shutdown_grace")]
    pub shutdown_grace: std::time::Duration,
    /// The Unix socket on which `serve --upgrade` receives the listening
    /// sockets of the running gateway. Absolute; whoever binds it first
    /// gets the listeners, so its directory must be the gateway user's own.
    #[serde(default = "default_upgrade_socket", deserialize_with = "upgrade_socket")]
    pub upgrade_socket: PathBuf,
}

impl ServerConfig {
    /// The public listeners: the plain one and the TLS one.
    pub fn public_listeners(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.listen).chain(self.tls.as_ref().map(|tls| tls.listen))
    }

    pub(super) fn check_listeners(&self, shown: &str) -> Result<(), ConfigError> {
        let Some(authz) = self.authz_listen else { return Ok(()) };
        if self.public_listeners().any(|address| admin::same_socket(address, authz)) {
            let message = format!("server.authz_listen {authz} is a public listener: forward-auth questions need a listener of its own");
            return Err(ConfigError::Other { path: shown.to_string(), message });
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}

fn default_max_header_bytes() -> values::MaxHeaderBytes {
    values::MaxHeaderBytes(32 * 1024)
}

// nginx's keepalive_timeout and client_header_timeout.
fn default_keepalive_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(75)
}

fn default_header_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

fn default_max_connections() -> values::MaxConnections {
    values::MaxConnections(10_000)
}

fn default_shutdown_grace() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

/// A grace of at most an hour: past that a stop is a hang.
fn shutdown_grace<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let raw = String::deserialize(d)?;
    let secs = values::duration::parse(&raw).map_err(serde::de::Error::custom)?;
    if secs > 3600 {
        return Err(serde::de::Error::custom(format!("server.shutdown_grace `{raw}` must be between 1s and 1h")));
    }
    Ok(std::time::Duration::from_secs(secs as u64))
}

fn default_upgrade_socket() -> PathBuf {
    PathBuf::from("/run/stepgate/upgrade.sock")
}

/// The longest path a Unix socket address holds (`sun_path` less its
/// terminating zero).
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// An absolute socket path: relative to which working directory would
/// the old and the new process meet?
fn upgrade_socket<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let raw = String::deserialize(d)?;
    let path = PathBuf::from(&raw);
    if !path.is_absolute() || path.parent().is_none() {
        return Err(serde::de::Error::custom(format!(
            "server.upgrade_socket `{raw}` must be an absolute path, such as /run/stepgate/upgrade.sock"
        )));
    }
    if raw.len() > MAX_SOCKET_PATH_BYTES {
        return Err(serde::de::Error::custom(format!(
            "server.upgrade_socket is longer than the {MAX_SOCKET_PATH_BYTES} bytes a socket path may have"
        )));
    }
    Ok(path)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}
