//! Storage: the traits the gateway needs and their backends.
//!
//! The rest of the gateway holds an `Arc<dyn Store>` and never sees a
//! backend type, so PostgreSQL or Redis can follow SQLite without touching
//! the proxy or the policy.
//!
//! Two backends: SQLite, embedded, for a single instance; PostgreSQL for
//! several instances sharing their durable state. [`open`] picks one from a
//! [`StoreChoice`]; [`copy()`] moves the durable data from one to the other.

pub mod admin;
mod admin_tables;
pub mod copy;
mod key_file;
mod postgres;
mod postgres_admin;
mod sqlite;
mod sqlite_admin;

use std::path::PathBuf;
use std::sync::Arc;

pub use admin::{AdminStore, AdminTokenRow, AuditQuery, AuditRow, AuditStore, MfaReset, TicketRow};
pub use copy::{copy, copy_between, CopyError, CopyReport, KnownDeviceRow, RecoveryCodeRow, Snapshot};
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;

use async_trait::async_trait;

/// What went wrong in the store. No variant ever holds a database URL: it
/// may carry a password, and these messages reach logs and pages.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    /// Refused without trying: a backend the answer depends on is down.
    #[error("refused during an outage: {0}")]
    Outage(&'static str),
    /// The database cannot be reached or opened; the message is redacted.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The store's settings are unusable (a bad schema name, say).
    #[error("store settings: {0}")]
    Config(String),
    #[error("cannot read or write {0}: {1}")]
    File(String, std::io::Error),
}

impl StoreError {
    /// Whether the error says the database cannot be reached (rather than
    /// that it refused or could not answer one query).
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                )
            }
            _ => false,
        }
    }

    /// Whether the database said nothing in time (no connection of the pool
    /// came free, or a query went unanswered), rather than refused.
    pub fn is_timeout(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::PoolTimedOut) => true,
            StoreError::Database(sqlx::Error::Io(e)) => e.kind() == std::io::ErrorKind::TimedOut,
            _ => false,
        }
    }

    /// Whether the error is, or follows from, a backend being unreachable:
    /// an outage the probe logs once, not once a request.
    pub fn is_outage(&self) -> bool {
        self.is_unreachable() || matches!(self, StoreError::Outage(_))
    }
}

/// Which backend to open, and where.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// `stepgate.db` (and the signing keys file) in this directory.
    Sqlite {
        data_dir: PathBuf,
    },
    Postgres(PostgresOptions),
}

impl StoreChoice {
    /// Reads a store location as the command line gives it: `sqlite:DIR`
    /// (a data directory), or a PostgreSQL URL, bare (`postgres://...`,
    /// `postgresql://...`) or prefixed (`postgres:postgres://...`).
    pub fn parse_location(location: &str) -> Result<Self, StoreError> {
        if let Some(dir) = location.strip_prefix("sqlite:") {
            return Ok(Self::Sqlite { data_dir: PathBuf::from(dir) });
        }
        let url = location.strip_prefix("postgres:").filter(|rest| rest.contains("://")).unwrap_or(location);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(PostgresOptions::new(url)));
        }
        Err(StoreError::Config("a store location is sqlite:DIR or postgres://USER@HOST/DATABASE".into()))
    }
}

/// Brings the chosen store's schema up to date, as every start does; for
/// operators who migrate before rolling out a new version.
pub async fn migrate(choice: &StoreChoice) -> Result<(), StoreError> {
    open(choice).await.map(|_| ())
}

/// Opens (and migrates) the chosen backend.
pub async fn open(choice: &StoreChoice) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match choice {
        StoreChoice::Sqlite { data_dir } => Arc::new(SqliteStore::open(data_dir).await?),
        StoreChoice::Postgres(options) => Arc::new(PostgresStore::connect(options).await?),
    })
}

/// A session as stored. `key` is the SHA-256 of the session id, so a copy
/// of the database does not hand out live sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub key: [u8; 32],
    pub username: String,
    /// The factors done, as JSON owned by the session module.
    pub factors: String,
    pub created: i64,
    pub last_seen: i64,
    /// A TOTP secret being enrolled, sealed.
    pub pending_totp: Option<Vec<u8>>,
    /// What the sign-in's risk assessment found, as JSON owned by the
    /// session module.
    pub context: String,
}

/// An enrolled authenticator app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRow {
    pub username: String,
    /// The seed, sealed with the gateway's key.
    pub sealed_secret: Vec<u8>,
    pub algorithm: String,
    pub digits: i64,
    pub period: i64,
    pub created: i64,
    /// The last time step accepted; a code is never accepted twice.
    pub last_step: i64,
    /// The user's name for it.
    pub name: String,
    pub last_used: Option<i64>,
}

/// A change to a stored session that keeps its id.
#[derive(Debug, Clone, Copy)]
pub enum SessionChange<'a> {
    /// The sign-in context, as JSON owned by the session module.
    Context(&'a str),
    /// A sealed TOTP secret being enrolled, or none.
    PendingTotp(Option<&'a [u8]>),
    /// The factors done, as JSON owned by the session module.
    Factors(&'a str),
}

/// Sessions are written once with a new key and afterwards only changed in
/// place: no write can bring back a session that has been deleted.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a session under a new key.
    async fn insert_session(&self, row: &SessionRow) -> Result<(), StoreError>;
    /// Changes a stored session; the session as it is now, or None when it
    /// no longer exists (nothing is written then).
    async fn update_session(&self, key: &[u8; 32], change: SessionChange<'_>) -> Result<Option<SessionRow>, StoreError>;
    /// Replaces the session `old` with `new` in one step; false, and
    /// nothing stored, when `old` no longer exists.
    async fn renew_session(&self, old: &[u8; 32], new: &SessionRow) -> Result<bool, StoreError>;
    async fn get_session(&self, key: &[u8; 32]) -> Result<Option<SessionRow>, StoreError>;
    async fn touch_session(&self, key: &[u8; 32], last_seen: i64) -> Result<(), StoreError>;
    async fn delete_session(&self, key: &[u8; 32]) -> Result<(), StoreError>;
    /// Deletes sessions idle since before `idle_before` or created before
    /// `created_before`; returns how many.
    async fn delete_expired_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64, StoreError>;
    /// The user's sessions, most recently seen first.
    async fn sessions_of(&self, username: &str) -> Result<Vec<SessionRow>, StoreError>;
}

#[async_trait]
pub trait TotpStore: Send + Sync {
    async fn get_totp(&self, username: &str) -> Result<Option<TotpRow>, StoreError>;
    /// Stores a new enrolment; false when the user already has one.
    async fn insert_totp(&self, row: &TotpRow) -> Result<bool, StoreError>;
    /// Records `step` as used (at `now`) if it is later than every step
    /// used before; false means the code was already spent (a replay).
    async fn claim_totp_step(&self, username: &str, step: i64, now: i64) -> Result<bool, StoreError>;
    async fn rename_totp(&self, username: &str, name: &str) -> Result<bool, StoreError>;
}

/// A registered WebAuthn credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnRow {
    pub id: i64,
    pub username: String,
    pub credential_id: Vec<u8>,
    /// `security_key` or `platform`.
    pub kind: String,
    pub name: String,
    /// The credential as JSON owned by the WebAuthn factor.
    pub credential: String,
    pub counter: i64,
    pub aaguid: Option<String>,
    pub discoverable: bool,
    pub created: i64,
    pub last_used: Option<i64>,
    pub possible_clone_at: Option<i64>,
}

#[async_trait]
pub trait WebauthnStore: Send + Sync {
    async fn webauthn_credentials(&self, username: &str) -> Result<Vec<WebauthnRow>, StoreError>;
    async fn webauthn_credential(&self, credential_id: &[u8]) -> Result<Option<WebauthnRow>, StoreError>;
    /// Stores a new credential (its `id` is ignored); false when the
    /// credential id is already registered, to this user or another.
    async fn insert_webauthn(&self, row: &WebauthnRow) -> Result<bool, StoreError>;
    /// Records a use: the new counter and credential state, if the counter
    /// is still below `counter` (so two uses cannot both claim one value).
    async fn claim_webauthn_use(&self, id: i64, counter: i64, credential: &str, now: i64) -> Result<bool, StoreError>;
    async fn flag_possible_clone(&self, id: i64, now: i64) -> Result<(), StoreError>;
    async fn rename_webauthn(&self, username: &str, id: i64, name: &str) -> Result<bool, StoreError>;
    async fn delete_webauthn(&self, username: &str, id: i64) -> Result<bool, StoreError>;
}

/// A phone number or an email address one-time codes are sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OobRow {
    pub id: i64,
    pub username: String,
    /// `phone` or `email`.
    pub channel: String,
    /// A phone number in E.164 form, or an email address.
    pub destination: String,
    pub name: String,
    pub created: i64,
    pub last_used: Option<i64>,
}

#[async_trait]
pub trait OobStore: Send + Sync {
    /// The user's phone numbers and email addresses, oldest first.
    async fn oob_factors(&self, username: &str) -> Result<Vec<OobRow>, StoreError>;
    /// Stores a verified destination (its `id` is ignored); its new id, or
    /// None when the user already has it.
    async fn insert_oob(&self, row: &OobRow) -> Result<Option<i64>, StoreError>;
    async fn rename_oob(&self, username: &str, id: i64, name: &str) -> Result<bool, StoreError>;
    async fn touch_oob(&self, id: i64, now: i64) -> Result<(), StoreError>;
}

#[async_trait]
pub trait RecoveryStore: Send + Sync {
    /// Replaces the user's recovery codes (as hashes) with a new set.
    async fn replace_recovery_codes(&self, username: &str, hashes: &[[u8; 32]], now: i64) -> Result<(), StoreError>;
    /// Spends a code; false when it is not one of the user's unused codes.
    async fn use_recovery_code(&self, username: &str, hash: &[u8; 32], now: i64) -> Result<bool, StoreError>;
    /// How many unused codes the user has, and when the set was made.
    async fn recovery_codes_left(&self, username: &str) -> Result<(u32, Option<i64>), StoreError>;
}

/// One of a user's second factors, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorRef {
    /// The authenticator app (a user has at most one).
    Totp,
    /// A WebAuthn credential, by its id.
    Webauthn(i64),
    /// A phone number or an email address codes are sent to, by its id.
    Oob(i64),
}

impl FactorRef {
    /// How pages and the admin API name it: `totp`, `webauthn:ID`, `oob:ID`.
    pub fn handle(self) -> String {
        match self {
            FactorRef::Totp => "totp".into(),
            FactorRef::Webauthn(id) => format!("webauthn:{id}"),
            FactorRef::Oob(id) => format!("oob:{id}"),
        }
    }

    pub fn parse(handle: &str) -> Option<FactorRef> {
        match handle.split_once(':') {
            None if handle == "totp" => Some(FactorRef::Totp),
            Some(("webauthn", id)) => id.parse().ok().map(FactorRef::Webauthn),
            Some(("oob", id)) => id.parse().ok().map(FactorRef::Oob),
            _ => None,
        }
    }
}

/// What became of a factor's removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The user has no such factor.
    NotFound,
    /// Refused: no usable factor would be left.
    LastFactor,
}

#[async_trait]
pub trait FactorStore: Send + Sync {
    /// Removes a factor. Usable factors are the authenticator app, the
    /// WebAuthn credentials of the `usable_kinds` and the phone numbers and
    /// email addresses of the `usable_kinds` (`phone`, `email`); when none
    /// would be left,
    /// the removal is refused if `keep_one`, else the recovery codes go
    /// too. Counting and removing are one transaction, so two removals at
    /// once cannot both pass the count.
    async fn remove_factor(&self, username: &str, factor: FactorRef, usable_kinds: &[&str], keep_one: bool) -> Result<Removal, StoreError>;
}

/// A successful sign-in, as remembered for later risk assessments.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInRow {
    pub username: String,
    pub at: i64,
    pub ip: String,
    pub country: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// The location's accuracy radius in km, when the database gave one.
    pub accuracy_km: Option<i32>,
    pub confidence: String,
    /// JSON list of the signals that lowered the confidence.
    pub signals: String,
}

/// A browser a user completed a second factor on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub device_id: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub trusted_until: Option<i64>,
}

#[async_trait]
pub trait RiskStore: Send + Sync {
    async fn is_known_device(&self, username: &str, device_id: &str) -> Result<bool, StoreError>;
    /// Until when the user asked this browser to be trusted, if they did.
    async fn device_trusted_until(&self, username: &str, device_id: &str) -> Result<Option<i64>, StoreError>;
    /// Marks a device as known (after a second factor), optionally trusted until a time.
    async fn remember_device(&self, username: &str, device_id: &str, now: i64, trusted_until: Option<i64>) -> Result<(), StoreError>;
    async fn record_sign_in(&self, row: &SignInRow) -> Result<(), StoreError>;
    async fn last_sign_in(&self, username: &str) -> Result<Option<SignInRow>, StoreError>;
    async fn has_signed_in_from(&self, username: &str, country: &str) -> Result<bool, StoreError>;
    /// The user's browsers still trusted at `now`, most recently used first.
    async fn trusted_devices(&self, username: &str, now: i64) -> Result<Vec<DeviceRow>, StoreError>;
    /// Ends the trust in one of the user's browsers; it stays known.
    async fn untrust_device(&self, username: &str, device_id: &str) -> Result<(), StoreError>;
    /// Forgets sign-ins older than `before`; returns how many.
    async fn forget_sign_ins_before(&self, before: i64) -> Result<u64, StoreError>;
}

/// The assertion signing keys, sealed, as JSON the assertion module owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKeys {
    pub json: String,
    /// Changes with every write; equal versions mean equal keys.
    pub version: i64,
}

/// Where the signing keys live, so that every instance publishes the same
/// JWKS and a key rotated on one is used by all.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn signing_keys(&self) -> Result<Option<StoredSigningKeys>, StoreError>;
    /// The version of the stored keys alone: a cheap check before a reload.
    async fn signing_keys_version(&self) -> Result<Option<i64>, StoreError>;
    /// Writes the keys if the stored version is still `expected_version`
    /// (None: no keys stored yet); false, and nothing written, when another
    /// writer came first, so two instances starting at once cannot both
    /// create a first key.
    async fn save_signing_keys(&self, expected_version: Option<i64>, json: &str) -> Result<bool, StoreError>;
}

/// Bulk export and import of the durable data, for `stepgate store copy`.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Everything durable but sessions (see [`Snapshot`]).
    async fn export_snapshot(&self) -> Result<Snapshot, StoreError>;
    /// Writes a snapshot in one transaction. When the store already holds
    /// data, false and nothing written unless `overwrite`, which replaces it.
    async fn import_snapshot(&self, snapshot: &Snapshot, overwrite: bool) -> Result<bool, StoreError>;
}

/// Whether the database answers, for the backend probe.
#[async_trait]
pub trait Reachable: Send + Sync {
    /// One round trip that reads nothing.
    async fn ping(&self) -> Result<(), StoreError>;
}

pub trait Store:
    SessionStore
    + TotpStore
    + RiskStore
    + WebauthnStore
    + RecoveryStore
    + OobStore
    + FactorStore
    + KeyStore
    + SnapshotStore
    + AdminStore
    + AuditStore
    + Reachable
{
}

impl<
        T: SessionStore
            + TotpStore
            + RiskStore
            + WebauthnStore
            + RecoveryStore
            + OobStore
            + FactorStore
            + KeyStore
            + SnapshotStore
            + AdminStore
            + AuditStore
            + Reachable,
    > Store for T
{
}

/// A store's signing keys as a [`KeyStore`] of their own, for the
/// assertion module (an `Arc<dyn Store>` cannot become an `Arc<dyn
/// KeyStore>` by itself before Rust 1.86, and the crate supports 1.85).
pub fn key_store(store: Arc<dyn Store>) -> Arc<dyn KeyStore> {
    Arc::new(KeysOf(store))
}

struct KeysOf(Arc<dyn Store>);

#[async_trait]
impl KeyStore for KeysOf {
    async fn signing_keys(&self) -> Result<Option<StoredSigningKeys>, StoreError> {
        self.0.signing_keys().await
    }

    async fn signing_keys_version(&self) -> Result<Option<i64>, StoreError> {
        self.0.signing_keys_version().await
    }

    async fn save_signing_keys(&self, expected_version: Option<i64>, json: &str) -> Result<bool, StoreError> {
        self.0.save_signing_keys(expected_version, json).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_locations() {
        let sqlite = StoreChoice::parse_location("sqlite:/var/lib/stepgate").unwrap();
        assert!(matches!(sqlite, StoreChoice::Sqlite { data_dir } if data_dir == std::path::Path::new("/var/lib/stepgate")));
        for url in ["postgres://u@h/db", "postgresql://u@h/db", "postgres:postgres://u@h/db"] {
            let choice = StoreChoice::parse_location(url).unwrap();
            assert!(
                matches!(&choice, StoreChoice::Postgres(o) if o.url.ends_with("u@h/db") && !o.url.starts_with("postgres:postgres")),
                "{url}"
            );
        }
        assert!(StoreChoice::parse_location("mysql://u@h/db").is_err());
    }
}
