//! Storage: the traits the gateway needs and their backends.
//!
//! The rest of the gateway holds an `Arc<dyn Store>` and never sees a
//! backend type, so PostgreSQL or Redis can follow SQLite without touching
//! the proxy or the policy.

mod sqlite;

pub use sqlite::SqliteStore;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
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
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Inserts or replaces the session with the row's key.
    async fn put_session(&self, row: &SessionRow) -> Result<(), StoreError>;
    async fn get_session(&self, key: &[u8; 32]) -> Result<Option<SessionRow>, StoreError>;
    async fn touch_session(&self, key: &[u8; 32], last_seen: i64) -> Result<(), StoreError>;
    async fn delete_session(&self, key: &[u8; 32]) -> Result<(), StoreError>;
    /// Deletes sessions idle since before `idle_before` or created before
    /// `created_before`; returns how many.
    async fn delete_expired_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait TotpStore: Send + Sync {
    async fn get_totp(&self, username: &str) -> Result<Option<TotpRow>, StoreError>;
    /// Stores a new enrolment; false when the user already has one.
    async fn insert_totp(&self, row: &TotpRow) -> Result<bool, StoreError>;
    /// Records `step` as used if it is later than every step used before;
    /// false means the code was already spent (a replay).
    async fn claim_totp_step(&self, username: &str, step: i64) -> Result<bool, StoreError>;
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

pub trait Store: SessionStore + TotpStore + RiskStore {}

impl<T: SessionStore + TotpStore + RiskStore> Store for T {}
