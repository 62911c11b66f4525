//! The gateway's shared state, built once from a configuration and shared
//! by the proxy and the portal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::assertion::{Assertions, KeyError};
use crate::clock::Clock;
use crate::config::{AppConfig, Config, ConfigError, Upstream};
use crate::crypto::{CryptoError, Secrets};
use crate::factors::totp::TotpFactor;
use crate::geo::{Geo, GeoDatabases, GeoError, GeoFacts};
use crate::session::Sessions;
use crate::store::{SqliteStore, Store, StoreError};
use crate::throttle::Throttle;
use crate::users::Directory;

/// Identity headers the gateway sets; whatever a client sends under these
/// names is removed before a request reaches an app.
pub const LEGACY_IDENTITY_HEADERS: [&str; 4] = ["remote-user", "remote-email", "remote-groups", "remote-name"];

/// How long sign-ins are remembered for the new-country and travel signals.
const SIGN_IN_HISTORY_SECS: i64 = 180 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Geo(#[from] GeoError),
    #[error("{0}")]
    Io(String),
}

/// One protected app.
pub struct App {
    pub id: Arc<str>,
    pub config: AppConfig,
    next_upstream: AtomicUsize,
}

impl App {
    /// The next upstream, round-robin.
    pub fn upstream(&self) -> &Upstream {
        let n = self.next_upstream.fetch_add(1, Ordering::Relaxed);
        &self.config.upstreams[n % self.config.upstreams.len()]
    }
}

pub struct Gateway {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub secrets: Arc<Secrets>,
    pub users: Directory,
    pub sessions: Sessions,
    pub totp: TotpFactor,
    pub assertions: Assertions,
    pub store: Arc<dyn Store>,
    pub geo: Geo,
    /// `risk.untrusted_networks`, resolved.
    untrusted_networks: Vec<IpNet>,
    /// Wrong passwords, by user name.
    pub password_throttle: Throttle,
    /// Wrong passwords, by client IP, whatever the user name.
    pub address_throttle: Throttle,
    /// Wrong second-factor codes, by user name.
    pub code_throttle: Throttle,
    apps_by_host: HashMap<String, Arc<App>>,
    /// Every header name an assertion may travel under, lower case.
    pub identity_headers: Vec<http::HeaderName>,
}

impl Gateway {
    /// Opens the store and keys and assembles the gateway. `secrets` comes
    /// from the configuration unless given (the demo makes its own).
    pub async fn build(config: Config, clock: Arc<dyn Clock>, secrets: Option<Secrets>) -> Result<Arc<Self>, StartError> {
        let secrets = Arc::new(match secrets {
            Some(s) => s,
            None => Secrets::load(config.secrets.encryption_key_file.as_deref())?,
        });
        check_tls_files(&config)?;
        let users = Directory::load(&config.users_file)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.server.data_dir).await?);
        let geo = Geo::new(GeoDatabases::open(&config.geoip)?);
        let sessions = Sessions::new(store.clone(), clock.clone(), config.session.clone());
        let totp = TotpFactor::new(
            store.clone(),
            secrets.clone(),
            clock.clone(),
            config.totp.clone(),
            config.branding.product_name.clone(),
        );
        let assertions = Assertions::new(
            config.server.data_dir.clone(),
            secrets.clone(),
            clock.clone(),
            config.assertion.issuer.clone(),
            config.assertion.lifetime,
        )?;
        let mut apps_by_host = HashMap::new();
        let mut identity_headers: Vec<http::HeaderName> =
            LEGACY_IDENTITY_HEADERS.iter().map(|h| http::HeaderName::from_static(h)).collect();
        identity_headers.push(http::HeaderName::from_static("x-stepgate-assertion"));
        for app_config in &config.apps {
            let app = Arc::new(App {
                id: app_config.id().into(),
                config: app_config.clone(),
                next_upstream: AtomicUsize::new(0),
            });
            for host in &app_config.hosts {
                apps_by_host.insert(host.get_ref().0.clone(), app.clone());
            }
            // Validated as a header name when the configuration loaded.
            if let Ok(name) = http::HeaderName::from_bytes(app_config.assertion_header.0.as_bytes()) {
                if !identity_headers.contains(&name) {
                    identity_headers.push(name);
                }
            }
        }
        let limits = &config.limits;
        let password_throttle = Throttle::new(clock.clone(), limits.password_failures.0, limits.window);
        let address_throttle = Throttle::new(clock.clone(), limits.password_failures.0 * 3, limits.window);
        let code_throttle = Throttle::new(clock.clone(), limits.code_failures.0, limits.window);
        let untrusted_networks = config.untrusted_networks();
        Ok(Arc::new(Self {
            store,
            geo,
            untrusted_networks,
            password_throttle,
            address_throttle,
            code_throttle,
            config,
            clock,
            secrets,
            users,
            sessions,
            totp,
            assertions,
            apps_by_host,
            identity_headers,
        }))
    }

    /// The app serving a host name (given without port, any case).
    pub fn app_for_host(&self, host: &str) -> Option<&Arc<App>> {
        self.apps_by_host.get(host).or_else(|| self.apps_by_host.get(&host.to_ascii_lowercase()))
    }

    pub fn is_known_host(&self, host: &str) -> bool {
        self.app_for_host(host).is_some()
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.config.server.trusted_proxies.iter().any(|net: &IpNet| net.contains(&ip))
    }

    /// Whether an address is in an untrusted network or, when configured
    /// so, flagged by the Anonymous-IP database.
    pub fn is_untrusted_ip(&self, ip: IpAddr, geo: &GeoFacts) -> bool {
        let anonymous_untrusted = self.config.risk.anonymous_ip_untrusted;
        crate::policy::risk::is_untrusted_ip(&self.untrusted_networks, anonymous_untrusted, canonical_ip(ip), geo)
    }

    /// Periodic upkeep: picks up rotated signing keys and drops expired
    /// sessions and cached assertions. Runs until the runtime stops.
    pub async fn maintain(self: Arc<Self>) {
        let mut ticks: u64 = 0;
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        loop {
            interval.tick().await;
            ticks += 1;
            match self.assertions.reload_keys() {
                Ok(true) => tracing::info!("signing keys reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot reload signing keys; keeping the current ones"),
            }
            if ticks % 12 == 0 {
                self.assertions.sweep();
                if let Err(e) = self.sessions.sweep().await {
                    tracing::warn!(error = %e, "session sweep failed");
                }
                let history_start = self.clock.now() - SIGN_IN_HISTORY_SECS;
                if let Err(e) = self.store.forget_sign_ins_before(history_start).await {
                    tracing::warn!(error = %e, "sign-in history sweep failed");
                }
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Pingora's TLS setup panics on unreadable files, so they are checked here
/// first and reported properly.
fn check_tls_files(config: &Config) -> Result<(), StartError> {
    let Some(tls) = &config.server.tls else {
        return Ok(());
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StartError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let cert = read(&tls.cert)?;
    let key = read(&tls.key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert.as_slice()).collect::<Result<_, _>>()
        .map_err(|e| StartError::Tls(format!("{}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!("{} holds no PEM certificate", tls.cert.display())));
    }
    match rustls_pemfile::private_key(&mut key.as_slice()) {
        Ok(Some(_)) => Ok(()),
        _ => Err(StartError::Tls(format!("{} holds no PEM private key", tls.key.display()))),
    }
}
