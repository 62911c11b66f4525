//! The gateway's shared state, built once from a configuration and shared
//! by the proxy and the portal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::assertion::{Assertions, KeyError};
use crate::audit::AuditLog;
use crate::cache::{Cache, CacheError, MemoryCache, RedisCache, RedisOptions};
use crate::clock::Clock;
use crate::config::{AppConfig, CacheBackend, Config, ConfigError, StoreBackend};
use crate::crypto::{CryptoError, Secrets};
use crate::factors::oob::OobFactor;
use crate::factors::recovery::RecoveryCodes;
use crate::factors::totp::TotpFactor;
use crate::factors::webauthn::{RelyingParty, WebauthnFactor};
use crate::geo::{Geo, GeoDatabases, GeoError, GeoFacts};
use crate::hash_gate::HashGate;
use crate::health::Reachability;
use crate::session::Sessions;
use crate::store::{PostgresOptions, Store, StoreChoice, StoreError};
use crate::throttle::{Scope, Throttle};
use crate::tickets::Tickets;
use crate::upstreams::{HealthRegistry, TlsFileError, UpstreamPool};
use crate::users::Directory;

/// Identity headers the gateway sets; whatever a client sends under these
/// names is removed before a request reaches an app.
pub const LEGACY_IDENTITY_HEADERS: [&str; 4] = ["remote-user", "remote-email", "remote-groups", "remote-name"];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    UpstreamTls(#[from] TlsFileError),
    #[error(transparent)]
    Geo(#[from] GeoError),
    #[error("{0}")]
    Io(String),
    #[error("codes by email, SMS or voice: {0}")]
    Oob(String),
}

/// One protected app.
pub struct App {
    pub id: Arc<str>,
    pub config: AppConfig,
    /// Its upstreams, with their health.
    pub upstreams: Arc<UpstreamPool>,
    /// `assertion_header`, parsed once.
    pub assertion_header: http::HeaderName,
    /// The WebAuthn relying party of each host.
    relying_parties: HashMap<String, Arc<RelyingParty>>,
    /// Its request counters.
    pub metrics: crate::metrics::AppMetrics,
}

impl App {
    fn new(config: &AppConfig, settings: &Config, health: &HealthRegistry, clock: &Arc<dyn Clock>) -> Result<Self, StartError> {
        let mut relying_parties = HashMap::new();
        for host in &config.hosts {
            let host = &host.get_ref().0;
            let Some(rp_id) = config.rp_id(host) else {
                tracing::warn!(app = config.id(), host = %host, "webauthn.rp_id does not cover this host: no WebAuthn here");
                continue;
            };
            // Hosts share a relying party only when its origins are listed;
            // by default each host's own https origin is the one allowed.
            let shared = match config.webauthn.origins.is_empty() {
                true => None,
                false => relying_parties.values().find(|rp: &&Arc<RelyingParty>| rp.id == rp_id).cloned(),
            };
            let rp = match shared {
                Some(rp) => rp,
                None => {
                    let name = &settings.branding.product_name;
                    match RelyingParty::new(rp_id, host, &config.webauthn.origins, name, settings.webauthn.timeout) {
                        Ok(rp) => Arc::new(rp),
                        Err(e) => {
                            tracing::error!(app = config.id(), host = %host, error = %e, "WebAuthn is unavailable on this host");
                            continue;
                        }
                    }
                }
            };
            relying_parties.insert(host.clone(), rp);
        }
        let upstreams = UpstreamPool::new(config, health, clock.clone())?;
        // Checked when the configuration was read.
        let assertion_header = http::HeaderName::from_bytes(config.assertion_header.0.as_bytes())
            .map_err(|e| StartError::Io(format!("app `{}`: assertion_header: {e}", config.id())))?;
        let metrics = crate::metrics::global().for_app(config.id());
        Ok(Self { id: config.id().into(), config: config.clone(), upstreams, assertion_header, relying_parties, metrics })
    }

    /// The relying party for a host of this app (given without port).
    pub fn relying_party(&self, host: &str) -> Option<&Arc<RelyingParty>> {
        self.relying_parties.get(&host.to_ascii_lowercase())
    }
}

/// Everything a request needs. The parts read from the configuration file
/// are replaced as a whole on reload; the stateful parts (stores, sessions,
/// keys, throttles, geo readers) are shared from one gateway to the next.
pub struct Gateway {
    pub config: Config,
    pub users: Directory,
    apps_by_host: crate::FastMap<String, Arc<App>>,
    /// Every header name an assertion may travel under, lower case.
    pub identity_headers: Vec<http::HeaderName>,
    /// `risk.untrusted_networks`, resolved.
    untrusted_networks: Vec<IpNet>,
    /// The cookie that remembers who signed in on a browser, named once.
    pub returning_cookie_name: String,
    pub clock: Arc<dyn Clock>,
    pub secrets: Arc<Secrets>,
    pub store: Arc<dyn Store>,
    /// Shared short-lived state: throttle counts, ceremonies, reveals and
    /// invalidation messages.
    pub cache: Arc<dyn Cache>,
    /// Whether the store and the cache answer.
    pub reachability: Arc<Reachability>,
    pub sessions: Arc<Sessions>,
    pub totp: Arc<TotpFactor>,
    pub webauthn: Arc<WebauthnFactor>,
    pub recovery: Arc<RecoveryCodes>,
    /// Codes by email, SMS and voice.
    pub oob: Arc<OobFactor>,
    pub assertions: Arc<Assertions>,
    pub geo: Arc<Geo>,
    /// Password and second-factor attempts, counted before they are checked.
    pub attempts: Arc<Throttle>,
    /// The password hashes in flight.
    pub password_hashing: Arc<HashGate>,
    /// The health of every app's upstreams, kept across reloads.
    upstream_health: Arc<HealthRegistry>,
    pub audit: Arc<AuditLog>,
    pub tickets: Arc<Tickets>,
}

impl Gateway {
    /// Opens the store and keys and assembles the gateway. `secrets` comes
    /// from the configuration unless given (the demo makes its own).
    pub async fn build(config: Config, clock: Arc<dyn Clock>, secrets: Option<Secrets>) -> Result<Arc<Self>, StartError> {
        // Without a master key nothing is created, the database included.
        let secrets = match secrets {
            Some(secrets) => secrets,
            None => Secrets::load(config.secrets.encryption_key_file.as_deref())?,
        };
        let secrets = Arc::new(secrets);
        let store = crate::store::open(&store_choice(&config)?).await?;
        let cache = open_cache(&config, secrets.clone(), clock.clone()).await?;
        Self::assemble(config, clock, secrets, store, cache).await
    }

    /// Assembles the gateway around a store already open (one that fails
    /// on demand in tests), with the embedded cache.
    pub async fn build_with_store(
        config: Config,
        clock: Arc<dyn Clock>,
        secrets: Option<Secrets>,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, StartError> {
        let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(clock.clone()));
        Self::build_with_backends(config, clock, secrets, store, cache).await
    }

    /// Assembles the gateway around a store and a cache already open.
    pub async fn build_with_backends(
        config: Config,
        clock: Arc<dyn Clock>,
        secrets: Option<Secrets>,
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
    ) -> Result<Arc<Self>, StartError> {
        let secrets = Arc::new(match secrets {
            Some(s) => s,
            None => Secrets::load(config.secrets.encryption_key_file.as_deref())?,
        });
        Self::assemble(config, clock, secrets, store, cache).await
    }

    async fn assemble(
        config: Config,
        clock: Arc<dyn Clock>,
        secrets: Arc<Secrets>,
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
    ) -> Result<Arc<Self>, StartError> {
        check_tls_files(&config)?;
        let users = Directory::for_config(&config, clock.clone())?;
        let geo = Arc::new(Geo::new(GeoDatabases::open_for(&config)?));
        let reachability = Reachability::new(clock.clone());
        reachability.spawn_probe(store.clone(), cache.clone());
        let sessions = Arc::new(Sessions::new(store.clone(), cache.clone(), reachability.clone(), clock.clone(), config.session.clone()));
        sessions.listen();
        sessions.set_password_fingerprints(users.password_fingerprints(&secrets), users.is_external());
        let totp = Arc::new(TotpFactor::new(
            store.clone(),
            secrets.clone(),
            clock.clone(),
            config.totp.clone(),
            config.branding.product_name.clone(),
        ));
        let webauthn = Arc::new(WebauthnFactor::new(
            store.clone(),
            cache.clone(),
            sessions.clone(),
            secrets.clone(),
            clock.clone(),
            config.webauthn.clone(),
        ));
        let recovery =
            Arc::new(RecoveryCodes::new(store.clone(), cache.clone(), secrets.clone(), clock.clone(), config.recovery_codes.clone()));
        let assertions = Arc::new(
            Assertions::new(
                crate::store::key_store(store.clone()),
                secrets.clone(),
                clock.clone(),
                config.assertion.issuer.clone(),
                config.assertion.lifetime,
            )
            .await?,
        );
        let limits = &config.limits;
        let attempts = Arc::new(Throttle::new(cache.clone(), &secrets, limits.window, |scope| match scope {
            Scope::User | Scope::UserOnBrowser => limits.password_failures.0,
            Scope::Address => limits.password_failures.0 * 3,
            Scope::SecondFactor => limits.code_failures.0,
        }));
        let password_hashing = HashGate::new(limits.password_hashes.0, limits.password_queue.0)
            .map_err(|e| StartError::Io(format!("cannot start the password hashing threads: {e}")))?;
        let password_hashing = Arc::new(password_hashing);
        let upstream_health = Arc::new(HealthRegistry::default());
        let (apps_by_host, identity_headers) = route_apps(&config, &upstream_health, &clock)?;
        let audit = Arc::new(AuditLog::new(store.clone(), clock.clone()));
        let tickets = Arc::new(Tickets::new(store.clone(), cache.clone(), clock.clone()));
        let oob = OobFactor::new(&config, store.clone(), cache.clone(), secrets.clone(), clock.clone()).map_err(StartError::Oob)?;
        let oob = Arc::new(oob);
        Ok(Arc::new(Self {
            untrusted_networks: config.untrusted_networks(),
            returning_cookie_name: crate::portal::returning_cookie_name(&config),
            apps_by_host,
            identity_headers,
            config,
            users,
            clock,
            secrets,
            store,
            cache,
            reachability,
            sessions,
            totp,
            webauthn,
            recovery,
            oob,
            assertions,
            geo,
            attempts,
            password_hashing,
            upstream_health,
            audit,
            tickets,
        }))
    }

    /// The gateway with a new configuration and users file, sharing this
    /// one's state. Settings that only take effect at start (listeners,
    /// data directory, secrets, sessions, TOTP, assertions, limits) keep
    /// their running values, with a warning when the file changed them.
    pub fn reconfigure(&self, mut config: Config) -> Result<Arc<Self>, StartError> {
        keep_start_up_settings(&self.config, &mut config);
        let users = Directory::for_config(&config, self.clock.clone())?;
        let (apps_by_host, identity_headers) = route_apps(&config, &self.upstream_health, &self.clock)?;
        let oob = OobFactor::new(&config, self.store.clone(), self.cache.clone(), self.secrets.clone(), self.clock.clone());
        let oob = Arc::new(oob.map_err(StartError::Oob)?);
        // Last, because they swap shared state: nothing after them may fail.
        self.geo.reload(&config)?;
        self.sessions.set_password_fingerprints(users.password_fingerprints(&self.secrets), users.is_external());
        Ok(Arc::new(Self {
            untrusted_networks: config.untrusted_networks(),
            returning_cookie_name: crate::portal::returning_cookie_name(&config),
            apps_by_host,
            identity_headers,
            config,
            users,
            clock: self.clock.clone(),
            secrets: self.secrets.clone(),
            store: self.store.clone(),
            cache: self.cache.clone(),
            reachability: self.reachability.clone(),
            sessions: self.sessions.clone(),
            totp: self.totp.clone(),
            webauthn: self.webauthn.clone(),
            recovery: self.recovery.clone(),
            oob,
            assertions: self.assertions.clone(),
            geo: self.geo.clone(),
            attempts: self.attempts.clone(),
            password_hashing: self.password_hashing.clone(),
            upstream_health: self.upstream_health.clone(),
            audit: self.audit.clone(),
            tickets: self.tickets.clone(),
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
}

/// The store `[store]` names, with its connection string read.
pub fn store_choice(config: &Config) -> Result<StoreChoice, StartError> {
    let store = &config.store;
    Ok(match store.backend {
        StoreBackend::Sqlite => StoreChoice::Sqlite { data_dir: config.server.data_dir.clone() },
        StoreBackend::Postgres => StoreChoice::Postgres(PostgresOptions {
            url: store.connection().resolve("store").map_err(StartError::Io)?,
            pool_size: store.pool_size,
            connect_timeout: store.connect_timeout,
            schema: store.schema.clone(),
        }),
    })
}

/// The cache `[cache]` names, connected.
async fn open_cache(config: &Config, secrets: Arc<Secrets>, clock: Arc<dyn Clock>) -> Result<Arc<dyn Cache>, StartError> {
    let cache = &config.cache;
    Ok(match cache.backend {
        CacheBackend::Memory => Arc::new(MemoryCache::new(clock)),
        CacheBackend::Redis => {
            let options = RedisOptions {
                url: cache.connection().resolve("cache").map_err(StartError::Io)?,
                key_prefix: cache.key_prefix.clone(),
                timeout: cache.timeout,
            };
            Arc::new(RedisCache::connect(&options, secrets, clock).await?)
        }
    })
}

/// The apps by host name, and every header name an assertion may use.
/// The apps by host name, and the header names assertions may use.
type Routes = (crate::FastMap<String, Arc<App>>, Vec<http::HeaderName>);

/// Builds the apps from the configuration.
fn route_apps(config: &Config, health: &HealthRegistry, clock: &Arc<dyn Clock>) -> Result<Routes, StartError> {
    let mut apps_by_host = crate::FastMap::default();
    let mut identity_headers: Vec<http::HeaderName> = LEGACY_IDENTITY_HEADERS.iter().map(|h| http::HeaderName::from_static(h)).collect();
    identity_headers.push(http::HeaderName::from_static("x-stepgate-assertion"));
    for app_config in &config.apps {
        let app = Arc::new(App::new(app_config, config, health, clock)?);
        for host in &app_config.hosts {
            apps_by_host.insert(host.get_ref().0.clone(), app.clone());
        }
        if !identity_headers.contains(&app.assertion_header) {
            identity_headers.push(app.assertion_header.clone());
        }
    }
    Ok((apps_by_host, identity_headers))
}

/// Copies the settings that only apply at start from the running
/// configuration into a reloaded one, warning about each that differs.
fn keep_start_up_settings(running: &Config, reloaded: &mut Config) {
    macro_rules! keep {
        ($($field:ident).+) => {
            if format!("{:?}", running.$($field).+) != format!("{:?}", reloaded.$($field).+) {
                tracing::warn!(setting = stringify!($($field).+), "changed in the file; takes effect after a restart");
            }
            reloaded.$($field).+ = running.$($field).+.clone();
        };
    }
    keep!(server);
    keep!(secrets);
    keep!(store);
    keep!(cache);
    keep!(session);
    keep!(totp);
    keep!(webauthn);
    keep!(recovery_codes);
    keep!(assertion);
    keep!(limits);
    keep!(logging);
    keep!(admin);
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
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| StartError::Tls(format!("cannot read {}: {e}", path.display())));
    let cert = read(&tls.cert)?;
    let key = read(&tls.key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| StartError::Tls(format!("{}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!("{} holds no PEM certificate", tls.cert.display())));
    }
    match rustls_pemfile::private_key(&mut key.as_slice()) {
        Ok(Some(_)) => Ok(()),
        _ => Err(StartError::Tls(format!("{} holds no PEM private key", tls.key.display()))),
    }
}
