//! How the gateway talks to an app's upstreams: timeouts, health checks,
//! passive failure marking and TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values;

/// `[apps.timeouts]`: beyond them the request is answered 504.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeouts {
    /// Opening a connection (TCP and TLS).
    #[serde(with = "values::connection_timeout")]
    pub connect: Duration,
    /// Waiting for the response to start, and between two reads of it.
    #[serde(with = "values::connection_timeout")]
    pub read: Duration,
    /// Between two writes of the request.
    #[serde(with = "values::connection_timeout")]
    pub write: Duration,
    /// How long an unused upstream connection is kept for the next request.
    #[serde(with = "values::connection_timeout")]
    pub idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Self { connect: secs(5), read: secs(60), write: secs(60), idle: secs(60) }
    }
}

/// `[apps.health_check]`: an active check of every upstream of the app.
/// Without it, only passive marking takes an upstream out of rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// An HTTP `GET` of this path, which must answer 2xx or 3xx; without
    /// it the check is a TCP connection (and TLS handshake for https).
    #[serde(default)]
    pub path: Option<HealthPath>,
    #[serde(default = "default_check_interval", with = "values::connection_timeout")]
    pub interval: Duration,
    /// How long one check may take.
    #[serde(default = "default_check_timeout", with = "values::connection_timeout")]
    pub timeout: Duration,
    /// Failed checks in a row that mark an upstream down.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: values::CheckThreshold,
    /// Passed checks in a row that mark it up again.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: values::CheckThreshold,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_unhealthy_threshold() -> values::CheckThreshold {
    values::CheckThreshold(3)
}

fn default_healthy_threshold() -> values::CheckThreshold {
    values::CheckThreshold(2)
}

/// The path a health check requests: absolute, without a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPath(pub String);

impl<'de> Deserialize<'de> for HealthPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let valid = raw.starts_with('/') && !raw.contains('#') && raw.parse::<http::uri::PathAndQuery>().is_ok();
        match valid {
            true => Ok(Self(raw)),
            false => Err(serde::de::Error::custom(format!("health_check.path `{raw}` must be an absolute path such as /healthz"))),
        }
    }
}

/// `[apps.passive_health]`: what failed connections do to an upstream,
/// as nginx's `max_fails` and `fail_timeout`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealth {
    /// Failed connections in a row that take an upstream out of rotation;
    /// 0 turns passive marking off.
    pub max_fails: u32,
    /// How long it stays out before it is tried again.
    #[serde(with = "values::connection_timeout")]
    pub fail_timeout: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self { max_fails: 1, fail_timeout: Duration::from_secs(10) }
    }
}

/// `[apps.upstream_tls]`: how `https://` upstreams are verified. The
/// certificate is checked against the system's roots (or `ca_file`) and
/// the upstream's host name (or `server_name`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the certificate authorities to trust instead of the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and checked in the certificate, when it is not
    /// the host of the upstream's URL (an upstream given by address).
    pub server_name: Option<values::HostName>,
    /// A client certificate chain (PEM) for upstreams that ask for one.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Accept any certificate. Only for tests against a throwaway
    /// upstream: anyone on the path can then read and change the traffic.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl UpstreamTls {
    pub(super) fn check(&self, app: &str) -> Result<(), String> {
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(format!("app `{app}`: upstream_tls needs both client_cert and client_key, or neither"));
        }
        if self.insecure_skip_verify && (self.ca_file.is_some() || self.server_name.is_some()) {
            return Err(format!("app `{app}`: upstream_tls.insecure_skip_verify verifies nothing: drop ca_file and server_name, or it"));
        }
        Ok(())
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        for file in [&mut self.ca_file, &mut self.client_cert, &mut self.client_key].into_iter().flatten() {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
    }
}
