//! The configuration file: its format, defaults and validation.
//!
//! Everything is checked while the file is parsed, so every error carries the
//! file, the line and what is wrong. The rest of the gateway only ever sees
//! the typed structs below.

mod admin;
mod backends;
mod directory;
mod edge;
mod factors;
mod forward_auth;
mod geo;
mod index;
mod oob;
mod pattern;
mod rules;
mod server;
mod upstreams;
mod values;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use admin::{AdminConfig, AdminTls, AuditConfig};
pub use backends::{CacheBackend, CacheConfig, DuringOutage, InlineUrl, StoreBackend, StoreConfig, UrlSource};
pub use directory::{DirectoryConfig, DirectoryKind, LdapAttributes, LdapConfig, LdapGroups, OidcClaims, OidcConfig};
pub use edge::{HeaderUnderscores, MethodOverride, PathMatching, WatchedQuery};
pub use factors::{AppWebauthn, Attestation, RecoveryCodesConfig, SecurityPageConfig, UserVerification, WebauthnConfig};
pub use forward_auth::AppMode;
pub use geo::{ConnectionType, GeoData, GeoIpConfig, GeoNeed, UserType};
pub use index::RuleIndex;
pub use oob::{read_secret, CodesConfig, EmailConfig, PhoneChannelConfig, SendLimit, SmtpTls, TwilioConfig, WebhookConfig};
pub use pattern::{fold_case, PathPattern};
pub use rules::{Anonymity, Conditions, GeoFence, HourRange, Policy, Rule};
pub use server::{ServerConfig, TlsConfig};
pub use upstreams::{HealthCheck, HealthPath, PassiveHealth, UpstreamTimeouts, UpstreamTls};
pub use values::duration::parse as parse_duration;
pub use values::{Method, Upstream};

/// The longest an assertion may live: apps rely on it being short.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: String, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Other { path: String, message: String },
}

impl ConfigError {
    /// Places a TOML parse error at its line and column.
    pub(crate) fn from_toml(text: &str, path: &str, error: toml::de::Error) -> Self {
        let (line, column) = error.span().map(|s| line_and_column(text, s.start)).unwrap_or((1, 1));
        ConfigError::Invalid { path: path.to_string(), line, column, message: error.message().to_string() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    /// The users file, relative to the directory of this file; not needed
    /// when users live in an LDAP directory (`[directory]`).
    pub users_file: Option<PathBuf>,
    #[serde(default)]
    pub directory: DirectoryConfig,
    #[serde(default)]
    pub secrets: SecretsConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub totp: TotpConfig,
    #[serde(default)]
    pub webauthn: WebauthnConfig,
    #[serde(default)]
    pub recovery_codes: RecoveryCodesConfig,
    #[serde(default)]
    pub security_page: SecurityPageConfig,
    /// One-time codes sent by email, SMS or voice.
    #[serde(default)]
    pub codes: CodesConfig,
    /// Codes by email; off when absent.
    pub email: Option<EmailConfig>,
    /// Codes by text message; off when absent.
    pub sms: Option<PhoneChannelConfig>,
    /// Codes read out in a phone call; off when absent.
    pub voice: Option<PhoneChannelConfig>,
    #[serde(default)]
    pub assertion: AssertionConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub geoip: GeoIpConfig,
    /// Named lists of networks that rules refer to, e.g. `office`, `vpn`.
    #[serde(default)]
    pub networks: std::collections::BTreeMap<String, Vec<ipnet::IpNet>>,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub risk: RiskConfig,
    #[serde(default)]
    pub branding: Branding,
    #[serde(default)]
    pub logging: LoggingConfig,
    /// The management API; off when absent.
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// A file holding the base64 of 32 random bytes. The environment
    /// variable `STEPGATE_ENCRYPTION_KEY` takes precedence.
    pub encryption_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub cookie_name: values::CookieName,
    /// Share the session with sibling subdomains, e.g. `example.com`.
    pub cookie_domain: Option<String>,
    /// One host that serves the sign-in and second-factor pages for every
    /// app under `cookie_domain`, e.g. `https://auth.example.com`: the
    /// central portal. Unset: each app's own host serves them.
    pub portal_url: Option<String>,
    #[serde(with = "values::duration")]
    pub inactivity: i64,
    #[serde(with = "values::duration")]
    pub absolute: i64,
    /// What requests of signed-in users get while the store or the shared
    /// cache is unreachable.
    pub during_outage: DuringOutage,
    /// With `during_outage = "serve_cached"`: how long after an outage
    /// began cached sessions are still served.
    #[serde(with = "values::duration")]
    pub outage_grace: i64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: values::CookieName("stepgate_session".into()),
            cookie_domain: None,
            portal_url: None,
            inactivity: 30 * 60,
            absolute: 12 * 3600,
            during_outage: DuringOutage::Refuse,
            outage_grace: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TotpAlgorithm {
    SHA1,
    SHA256,
    SHA512,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    pub algorithm: TotpAlgorithm,
    pub digits: values::TotpDigits,
    pub period: values::TotpPeriod,
    /// Steps accepted either side of the current one.
    pub skew: values::TotpSkew,
    /// Let a user without a second factor enrol one right after the password.
    /// When false they are told to contact the administrator.
    pub self_enrollment: bool,
}

impl Default for TotpConfig {
    fn default() -> Self {
        Self {
            algorithm: TotpAlgorithm::SHA1,
            digits: values::TotpDigits(6),
            period: values::TotpPeriod(30),
            skew: values::TotpSkew(1),
            self_enrollment: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssertionConfig {
    /// The `iss` claim.
    pub issuer: String,
    #[serde(with = "values::assertion_lifetime")]
    pub lifetime: i64,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        Self { issuer: "stepgate".into(), lifetime: MAX_ASSERTION_LIFETIME_SECS }
    }
}

/// Settings that every app's rules share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The time zone of `hours` and `days` conditions, e.g. `Europe/Zurich`.
    pub time_zone: values::TimeZone,
    /// Adaptive rules skip the second factor only at this confidence or above.
    pub adaptive_minimum: Confidence,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self { time_zone: values::TimeZone(chrono_tz::UTC), adaptive_minimum: Confidence::High }
    }
}

/// The risk signals adaptive rules listen to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// Faster than this between two sign-ins is impossible travel.
    pub max_travel_speed_kmh: f64,
    /// Named networks (from [networks]) whose addresses are untrusted.
    pub untrusted_networks: Vec<String>,
    /// Addresses the Anonymous-IP database flags (VPN, Tor, hosting,
    /// proxies) are untrusted.
    pub anonymous_ip_untrusted: bool,
    /// Users may ask to skip adaptive second factors on a browser for up to
    /// this many days; 0 turns the offer off.
    pub trust_browser_days: u16,
    /// A low-confidence sign-in on a trusted browser ends its trust (the
    /// second factor is asked for either way).
    pub low_confidence_ends_trust: bool,
    /// The long-lived cookie that recognises a browser.
    pub device_cookie_name: values::CookieName,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            max_travel_speed_kmh: 1000.0,
            untrusted_networks: Vec::new(),
            anonymous_ip_untrusted: true,
            trust_browser_days: 30,
            low_confidence_ends_trust: true,
            device_cookie_name: values::CookieName("stepgate_device".into()),
        }
    }
}

/// How sure the gateway is that a sign-in is the real user, from the risk
/// signals (new device, new country, impossible travel, untrusted network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// How many wrong guesses are allowed before the gateway stops listening.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Wrong passwords per user name, and (three times as many) per client IP.
    pub password_failures: values::FailureLimit,
    /// Wrong second-factor codes per user.
    pub code_failures: values::FailureLimit,
    /// The window the failures are counted in, and how long a block lasts.
    #[serde(with = "values::duration")]
    pub window: i64,
    /// Password hashes run at once; 0 means one per CPU core.
    pub password_hashes: values::HashWorkers,
    /// Password checks that may wait for a turn; more are refused with 503.
    pub password_queue: values::HashQueue,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            password_failures: values::FailureLimit(10),
            code_failures: values::FailureLimit(10),
            window: 300,
            password_hashes: values::HashWorkers(0),
            password_queue: values::HashQueue(16),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Branding {
    pub product_name: String,
    pub logo_url: Option<values::HttpsUrl>,
    pub accent_color: values::CssColor,
}

impl Default for Branding {
    fn default() -> Self {
        Self { product_name: "stepgate".into(), logo_url: None, accent_color: values::CssColor("#2f5bea".into()) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `stepgate=debug`.
    pub level: values::LogLevel,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: values::LogLevel("info".into()) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: Spanned<values::AppId>,
    pub hosts: Vec<Spanned<values::HostName>>,
    /// `inline` (default), `forward_auth` or `both`.
    #[serde(default)]
    pub mode: AppMode,
    /// Where the gateway proxies the app's requests; none for an app in
    /// `forward_auth` mode, which the proxy in front reaches itself.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    #[serde(default = "default_assertion_header")]
    pub assertion_header: values::HeaderName,
    /// Also send the unsigned `Remote-User`, `Remote-Email`, `Remote-Groups`
    /// and `Remote-Name` headers, for software that only reads headers.
    #[serde(default)]
    pub legacy_headers: bool,
    /// Countries (ISO codes) allowed to reach this app at all, before
    /// sign-in; empty allows every country.
    #[serde(default)]
    pub countries_allow: Vec<values::CountryCode>,
    /// Countries refused before sign-in.
    #[serde(default)]
    pub countries_deny: Vec<values::CountryCode>,
    /// What applies when no rule matches.
    #[serde(default = "default_app_policy")]
    pub default_policy: Policy,
    /// The WebAuthn relying party of this app's hosts.
    #[serde(default)]
    pub webauthn: AppWebauthn,
    /// How long the gateway waits for the app's upstreams.
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    /// Active checks of the upstreams; none by default.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// What failed connections do to an upstream.
    #[serde(default)]
    pub passive_health: PassiveHealth,
    /// How `https://` upstreams are verified.
    #[serde(default)]
    pub upstream_tls: UpstreamTls,
    /// How the app's server compares paths: `exact`, `case_insensitive`
    /// or `windows`.
    #[serde(default)]
    pub path_matching: PathMatching,
    /// `strip` or `honour` the method-override headers of clients.
    #[serde(default)]
    pub method_override: MethodOverride,
    /// `refuse`, `drop` or `allow` header names with an underscore.
    #[serde(default)]
    pub header_underscores: HeaderUnderscores,
    /// The address users reach the app at, e.g. `https://wiki.example.com`,
    /// when a TLS-terminating proxy in front does not say the scheme.
    #[serde(default)]
    pub public_url: Option<String>,
    /// As written; checked into `rules` once parsed, so that a mistake in a
    /// rule is reported at that rule's line.
    #[serde(default, rename = "rules")]
    raw_rules: Vec<Spanned<rules::RawRule>>,
    #[serde(skip)]
    pub rules: Vec<Rule>,
    /// Which rules may match a path, so a request does not try them all.
    #[serde(skip)]
    pub index: RuleIndex,
    /// `countries_allow` and `countries_deny`, together.
    #[serde(skip)]
    pub fence: GeoFence,
    /// The query parameters the rules read.
    #[serde(skip)]
    pub watched_query: WatchedQuery,
}

impl AppConfig {
    pub fn id(&self) -> &str {
        &self.id.get_ref().0
    }

    /// Whether users reach the app over https, when `public_url` says.
    pub fn public_https(&self) -> Option<bool> {
        let url = url::Url::parse(self.public_url.as_deref()?).ok()?;
        Some(url.scheme() == "https")
    }

    /// The WebAuthn relying party id for one of the app's hosts: the
    /// configured one when it covers the host, or the host itself.
    pub fn rp_id<'a>(&'a self, host: &'a str) -> Option<&'a str> {
        match self.webauthn.rp_id.as_deref() {
            None => Some(host),
            Some(rp_id) => (host == rp_id || host.ends_with(&format!(".{rp_id}"))).then_some(rp_id),
        }
    }
}

/// Upstreams one app may have: a request remembers which it tried in 64 bits.
const MAX_UPSTREAMS: usize = 64;

fn default_app_policy() -> Policy {
    Policy::Deny
}

fn default_assertion_header() -> values::HeaderName {
    values::HeaderName("x-stepgate-assertion".into())
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` names it in errors and anchors the
    /// relative paths inside it.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::from_toml(text, &shown, e))?;
        config.build_rules(text, &shown)?;
        config.check_apps(text, &shown)?;
        config.check_risk(&shown)?;
        config.check_webauthn(&shown)?;
        config.check_portal(&shown)?;
        config.check_files(&shown)?;
        config.server.check_listeners(&shown)?;
        let directory = config.directory.check(config.users_file.as_deref(), config.webauthn.passwordless);
        directory.map_err(|message| ConfigError::Other { path: shown.clone(), message })?;
        oob::check(&config.codes, config.email.as_ref(), config.sms.as_ref(), config.voice.as_ref(), &shown)?;
        if let Some(admin) = &config.admin {
            admin.check(&config.server, &shown)?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    fn build_rules(&mut self, text: &str, shown: &str) -> Result<(), ConfigError> {
        for app in &mut self.apps {
            app.fence = GeoFence { allow: app.countries_allow.clone(), deny: app.countries_deny.clone() };
            for raw in std::mem::take(&mut app.raw_rules) {
                let start = raw.span().start;
                let (line, _) = line_and_column(text, start);
                let fold = app.path_matching.folds_case();
                let rule = raw.into_inner().build(&self.networks, fold, line, text).map_err(|error| {
                    let (line, column) = line_and_column(text, error.offset.unwrap_or(start));
                    ConfigError::Invalid { path: shown.to_string(), line, column, message: error.message }
                })?;
                app.rules.push(rule);
            }
            app.watched_query = WatchedQuery::of(&app.rules);
            app.index = RuleIndex::build(&app.rules, app.path_matching.folds_case()).map_err(|message| {
                let (line, column) = line_and_column(text, app.id.span().start);
                ConfigError::Invalid { path: shown.to_string(), line, column, message }
            })?;
        }
        Ok(())
    }

    /// The networks `risk.untrusted_networks` names, resolved.
    pub fn untrusted_networks(&self) -> Vec<ipnet::IpNet> {
        self.risk.untrusted_networks.iter().filter_map(|name| self.networks.get(name)).flatten().copied().collect()
    }

    /// An app's relying party id must cover its origins, or browsers refuse
    /// every ceremony. (Hosts it does not cover just offer no WebAuthn.)
    /// The central portal: an http(s) origin, on a host an app serves,
    /// under the cookie's domain (or the session would not reach the apps).
    fn check_portal(&self, shown: &str) -> Result<(), ConfigError> {
        let Some(portal) = &self.session.portal_url else { return Ok(()) };
        let other = |message: String| ConfigError::Other { path: shown.to_string(), message };
        let Some(domain) = &self.session.cookie_domain else {
            return Err(other("session.portal_url needs session.cookie_domain: the session must reach the apps' hosts".into()));
        };
        let url = url::Url::parse(portal).map_err(|e| other(format!("session.portal_url `{portal}`: {e}")))?;
        let origin_only = matches!(url.scheme(), "http" | "https")
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none();
        if !origin_only {
            return Err(other(format!("session.portal_url `{portal}` must be an http(s) origin such as https://auth.example.com")));
        }
        let host = url.host_str().unwrap_or_default();
        if !domain_matches(host, domain) {
            return Err(other(format!("session.portal_url: host `{host}` is not under session.cookie_domain `{domain}`")));
        }
        if !self.apps.iter().any(|app| app.hosts.iter().any(|h| h.get_ref().0 == host)) {
            return Err(other(format!(
                "session.portal_url: no app serves host `{host}`; give it an app (mode = \"forward_auth\" will do)"
            )));
        }
        Ok(())
    }

    fn check_webauthn(&self, shown: &str) -> Result<(), ConfigError> {
        let other = |message: String| ConfigError::Other { path: shown.to_string(), message };
        for app in &self.apps {
            let Some(rp_id) = app.webauthn.rp_id.as_deref() else {
                if !app.webauthn.origins.is_empty() {
                    return Err(other(format!("app `{}`: webauthn.origins needs webauthn.rp_id", app.id())));
                }
                continue;
            };
            let covered = |host: &str| host == rp_id || host.ends_with(&format!(".{rp_id}"));
            for origin in &app.webauthn.origins {
                let fine = matches!(origin.scheme(), "https" | "http") && origin.host_str().is_some_and(covered);
                if !fine {
                    return Err(other(format!("app `{}`: webauthn origin `{origin}` is not an http(s) origin under `{rp_id}`", app.id())));
                }
            }
        }
        Ok(())
    }

    fn check_risk(&self, shown: &str) -> Result<(), ConfigError> {
        let other = |message: String| ConfigError::Other { path: shown.to_string(), message };
        if let Some(name) = self.risk.untrusted_networks.iter().find(|n| !self.networks.contains_key(*n)) {
            return Err(other(format!("risk.untrusted_networks: unknown network `{name}`: define it under [networks]")));
        }
        if self.risk.max_travel_speed_kmh.is_nan() || self.risk.max_travel_speed_kmh <= 0.0 {
            return Err(other("risk.max_travel_speed_kmh must be above 0".into()));
        }
        if self.risk.trust_browser_days > 365 {
            return Err(other("risk.trust_browser_days must be at most 365".into()));
        }
        Ok(())
    }

    fn check_apps(&self, text: &str, shown: &str) -> Result<(), ConfigError> {
        let invalid = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_and_column(text, span.start);
            ConfigError::Invalid { path: shown.to_string(), line, column, message }
        };
        let mut ids = HashSet::new();
        let mut hosts = HashSet::new();
        for app in &self.apps {
            if !ids.insert(app.id()) {
                return Err(invalid(app.id.span(), format!("duplicate app id `{}`", app.id())));
            }
            if app.hosts.is_empty() {
                return Err(invalid(app.id.span(), format!("app `{}` has no hosts", app.id())));
            }
            if let Some(url) = &app.public_url {
                let scheme = url::Url::parse(url).map(|u| u.scheme().to_string());
                if !matches!(scheme.as_deref(), Ok("http" | "https")) {
                    return Err(invalid(app.id.span(), format!("app `{}`: public_url `{url}` is not an http(s) URL", app.id())));
                }
            }
            match (app.mode.inline(), app.upstreams.is_empty()) {
                (true, true) => return Err(invalid(app.id.span(), format!("app `{}` has no upstreams", app.id()))),
                (false, false) => {
                    let message = format!("app `{}`: mode `forward_auth` takes no upstreams: the proxy in front reaches the app", app.id());
                    return Err(invalid(app.id.span(), message));
                }
                _ => {}
            }
            if app.upstreams.len() > MAX_UPSTREAMS {
                return Err(invalid(app.id.span(), format!("app `{}` has more than {MAX_UPSTREAMS} upstreams", app.id())));
            }
            app.upstream_tls.check(app.id()).map_err(|message| invalid(app.id.span(), message))?;
            for host in &app.hosts {
                if !hosts.insert(host.get_ref().0.as_str()) {
                    let message = format!("host `{}` is served by two apps", host.get_ref().0);
                    return Err(invalid(host.span(), message));
                }
            }
        }
        Ok(())
    }

    fn check_files(&self, shown: &str) -> Result<(), ConfigError> {
        let other = |message: String| ConfigError::Other { path: shown.to_string(), message };
        if self.apps.is_empty() {
            return Err(other("no [[apps]] configured".into()));
        }
        self.store.check("store").map_err(other)?;
        self.cache.check("cache").map_err(other)?;
        if self.session.outage_grace > 3600 {
            return Err(other("session.outage_grace must be at most 1h".into()));
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(file) = &mut self.users_file {
            resolve(file);
        }
        self.directory.resolve_paths(base);
        resolve(&mut self.server.data_dir);
        self.store.resolve_paths(base);
        self.cache.resolve_paths(base);
        if let Some(tls) = &mut self.server.tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
        }
        for app in &mut self.apps {
            app.upstream_tls.resolve_paths(base);
        }
        if let Some(file) = &mut self.secrets.encryption_key_file {
            resolve(file);
        }
        if let Some(admin) = &mut self.admin {
            admin.resolve_paths(base);
        }
        for file in self.geoip.files_mut() {
            resolve(file);
        }
        oob::resolve_paths(self.email.as_mut(), [self.sms.as_mut(), self.voice.as_mut()], base);
    }
}

/// Whether a cookie with `Domain=domain` reaches `host` (RFC 6265 5.1.3).
pub fn domain_matches(host: &str, domain: &str) -> bool {
    let domain = domain.trim_start_matches('.');
    host.eq_ignore_ascii_case(domain)
        || (host.len() > domain.len()
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain))
}

/// 1-based line and column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
