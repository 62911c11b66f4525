//! Where the gateway keeps its state: `[store]` (durable: SQLite or
//! PostgreSQL) and `[cache]` (short-lived and shared: memory or Redis).
//!
//! Connection strings may hold passwords, so the file names where to read
//! one (`url_env`, `url_file`) rather than holding it, and a URL is never
//! part of an error message or a `Debug` print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// A database file in `server.data_dir`: one instance, no service.
    #[default]
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    /// In this process: one instance, no service.
    #[default]
    Memory,
    Redis,
}

/// A connection string written in the file. Its `Debug` print hides it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct InlineUrl(pub String);

impl std::fmt::Debug for InlineUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// Where a connection string comes from: the `url`, `url_env` and
/// `url_file` keys of a section. Exactly one may be given.
#[derive(Debug, Clone, Copy)]
pub struct UrlSource<'a> {
    /// The URL itself. Fine without a password (trust or certificate
    /// authentication); a password belongs in `url_env` or `url_file`.
    pub url: Option<&'a InlineUrl>,
    /// The name of an environment variable holding the URL.
    pub url_env: Option<&'a str>,
    /// A file holding the URL (trailing white space ignored).
    pub url_file: Option<&'a Path>,
}

impl UrlSource<'_> {
    fn is_given(&self) -> bool {
        self.url.is_some() || self.url_env.is_some() || self.url_file.is_some()
    }

    fn check(&self, section: &str) -> Result<(), String> {
        let given = [self.url.is_some(), self.url_env.is_some(), self.url_file.is_some()].into_iter().filter(|g| *g).count();
        match given {
            1 => Ok(()),
            0 => Err(format!("[{section}] needs a connection string: set url_env (recommended), url_file or url")),
            _ => Err(format!("[{section}]: give only one of url, url_env and url_file")),
        }
    }

    /// The connection string. Errors say where it was looked for, never
    /// what was found.
    pub fn resolve(&self, section: &str) -> Result<String, String> {
        if let Some(url) = self.url {
            return Ok(url.0.clone());
        }
        if let Some(var) = self.url_env {
            return match std::env::var(var) {
                Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_string()),
                _ => Err(format!("[{section}] url_env: the environment variable {var} is not set")),
            };
        }
        if let Some(file) = self.url_file {
            let text = std::fs::read_to_string(file).map_err(|e| format!("[{section}] url_file {}: {e}", file.display()))?;
            return match text.trim() {
                "" => Err(format!("[{section}] url_file {} is empty", file.display())),
                url => Ok(url.to_string()),
            };
        }
        Err(format!("[{section}] needs a connection string"))
    }
}

/// `[store]`: the durable state (factors, credentials, recovery codes,
/// sessions, known browsers, sign-in history, signing keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub url: Option<InlineUrl>,
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    /// PostgreSQL: the schema to keep the tables in (created when missing);
    /// the connection's default schema when absent.
    pub schema: Option<String>,
    /// PostgreSQL: connections per instance.
    pub pool_size: u32,
    /// PostgreSQL: how long to wait for a connection before refusing the
    /// request with a 503.
    #[serde(with = "super::values::connection_timeout")]
    pub connect_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::default(),
            url: None,
            url_env: None,
            url_file: None,
            schema: None,
            pool_size: 10,
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// `[cache]`: shared short-lived state (throttle counts, ceremonies in
/// flight, one-time reveals) and the channel that tells every instance a
/// session ended or changed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub backend: CacheBackend,
    pub url: Option<InlineUrl>,
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    /// Prepended to every Redis key and channel, so gateways of different
    /// deployments can share one Redis.
    pub key_prefix: String,
    /// Redis: connect and command timeout.
    #[serde(with = "super::values::connection_timeout")]
    pub timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            backend: CacheBackend::default(),
            url: None,
            url_env: None,
            url_file: None,
            key_prefix: "stepgate:".into(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// What a request of an already signed-in user gets while the store or
/// the cache is unreachable (`session.during_outage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuringOutage {
    /// A 503: nothing can tell whether the session was ended meanwhile.
    #[default]
    Refuse,
    /// Served from this instance's session cache for at most
    /// `session.outage_grace` after the outage began; a session ended
    /// elsewhere meanwhile may keep working that long.
    ServeCached,
}

impl StoreConfig {
    pub(super) fn check(&self, section: &str) -> Result<(), String> {
        match self.backend {
            StoreBackend::Sqlite if self.connection().is_given() || self.schema.is_some() => {
                Err(format!("[{section}]: url and schema are for backend = \"postgres\""))
            }
            StoreBackend::Sqlite => Ok(()),
            StoreBackend::Postgres => {
                if !(1..=1000).contains(&self.pool_size) {
                    return Err(format!("[{section}] pool_size must be between 1 and 1000"));
                }
                if let Some(schema) = &self.schema {
                    let plain = schema.len() <= 63 && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if !plain || schema.starts_with(|c: char| c.is_ascii_digit()) {
                        return Err(format!("[{section}] schema `{schema}`: use lower-case letters, digits and _ (at most 63)"));
                    }
                }
                self.connection().check(section)
            }
        }
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(file) = &mut self.url_file {
            *file = base.join(&*file);
        }
    }

    pub fn connection(&self) -> UrlSource<'_> {
        UrlSource { url: self.url.as_ref(), url_env: self.url_env.as_deref(), url_file: self.url_file.as_deref() }
    }
}

impl CacheConfig {
    pub(super) fn check(&self, section: &str) -> Result<(), String> {
        match self.backend {
            CacheBackend::Memory if self.connection().is_given() => Err(format!("[{section}]: url is for backend = \"redis\"")),
            CacheBackend::Memory => Ok(()),
            CacheBackend::Redis => {
                if self.key_prefix.is_empty() || self.key_prefix.len() > 64 || self.key_prefix.chars().any(|c| c.is_whitespace()) {
                    return Err(format!("[{section}] key_prefix must be 1 to 64 characters without spaces"));
                }
                self.connection().check(section)
            }
        }
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(file) = &mut self.url_file {
            *file = base.join(&*file);
        }
    }

    pub fn connection(&self) -> UrlSource<'_> {
        UrlSource { url: self.url.as_ref(), url_env: self.url_env.as_deref(), url_file: self.url_file.as_deref() }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(sections: &str) -> Result<Config, String> {
        let text = format!(
            "users_file = \"users.toml\"\n{sections}\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"data\"\n\
             [[apps]]\nid = \"app\"\nhosts = [\"app.example.com\"]\nupstreams = [\"http://127.0.0.1:3000\"]\n"
        );
        Config::parse(&text, Path::new("/etc/stepgate/test.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_embedded_backends_are_the_default() {
        let config = parse("").unwrap();
        assert_eq!((config.store.backend, config.cache.backend), (super::StoreBackend::Sqlite, super::CacheBackend::Memory));
    }

    #[test]
    fn a_connection_string_is_needed_once_and_only_where_it_is_used() {
        let cases = [
            ("[store]\nbackend = \"postgres\"", "needs a connection string"),
            ("[cache]\nbackend = \"redis\"", "needs a connection string"),
            ("[store]\nbackend = \"postgres\"\nurl = \"postgres://db/x\"\nurl_env = \"PG\"", "only one of"),
            ("[store]\nurl = \"postgres://db/x\"", "for backend = \"postgres\""),
            ("[cache]\nurl_env = \"REDIS\"", "for backend = \"redis\""),
            ("[store]\nbackend = \"postgres\"\nurl_env = \"PG\"\nschema = \"Bad-Name\"", "schema `Bad-Name`"),
            ("[store]\nbackend = \"postgres\"\nurl_env = \"PG\"\npool_size = 0", "pool_size"),
            ("[cache]\nbackend = \"redis\"\nurl_env = \"R\"\nkey_prefix = \"\"", "key_prefix"),
            ("[store]\nbackend = \"mysql\"", "unknown variant `mysql`"),
            ("[session]\nduring_outage = \"serve_cached\"\noutage_grace = \"2h\"", "outage_grace"),
        ];
        for (sections, expected) in cases {
            let error = parse(sections).expect_err(sections);
            assert!(error.contains(expected), "{sections}: `{error}` should mention `{expected}`");
        }
    }

    #[test]
    fn a_connection_string_never_shows_in_a_debug_print_or_an_error() {
        let config = parse("[store]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@db/x\"").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        let missing = parse("[cache]\nbackend = \"redis\"\nurl_env = \"STEPGATE_TEST_UNSET_VARIABLE\"").unwrap();
        let error = missing.cache.connection().resolve("cache").unwrap_err();
        assert!(error.contains("STEPGATE_TEST_UNSET_VARIABLE is not set"), "{error}");
    }

    #[test]
    fn a_url_file_is_read_relative_to_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg.url"), "postgres://u:secret@db/x\n").unwrap();
        let text = "users_file = \"users.toml\"\n[store]\nbackend = \"postgres\"\nurl_file = \"pg.url\"\n\
                    [server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"data\"\n\
                    [[apps]]\nid = \"app\"\nhosts = [\"a.example\"]\nupstreams = [\"http://127.0.0.1:3000\"]\n";
        let config = Config::parse(text, &dir.path().join("stepgate.toml")).unwrap();
        assert_eq!(config.store.connection().resolve("store").unwrap(), "postgres://u:secret@db/x");
    }
}
