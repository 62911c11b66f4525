//! The shared backend: PostgreSQL, for several gateway instances that must
//! see the same enrolments, spent codes, sessions and signing keys.
//!
//! Every method keeps the meaning the SQLite backend documents; where
//! SQLite's single writer made a sequence atomic, here a conditional UPDATE,
//! a row lock (`FOR UPDATE`) or a transaction does.
//!
//! TLS: sqlx is built with rustls (ring, webpki roots), so the URL's
//! `sslmode=require` or `sslmode=verify-full` and `sslrootcert=PATH` work as
//! they do for libpq.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};

use super::{
    DeviceRow, FactorRef, FactorStore, KeyStore, KnownDeviceRow, Reachable, RecoveryCodeRow, RecoveryStore, Removal, RiskStore,
    SessionChange, SessionRow, SessionStore, SignInRow, Snapshot, SnapshotStore, StoreError, StoredSigningKeys, TotpRow, TotpStore,
    WebauthnRow, WebauthnStore,
};

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...]`. It
    /// may hold a password, so it never appears in an error or a log line.
    pub url: String,
    pub pool_size: u32,
    /// How long to wait for a connection, new or from the pool.
    pub connect_timeout: Duration,
    /// When set, every connection works in this schema (created if
    /// missing): how tests isolate themselves and how an operator shares
    /// one database between deployments. Lower-case letters, digits and `_`.
    pub schema: Option<String>,
}

impl PostgresOptions {
    /// The URL with a small pool and a ten-second timeout, in the default schema.
    pub fn new(url: &str) -> Self {
        Self { url: url.to_string(), pool_size: 4, connect_timeout: Duration::from_secs(10), schema: None }
    }
}

/// Shows everything but the URL, which may hold a password.
impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"(redacted)")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("schema", &self.schema)
            .finish()
    }
}

pub struct PostgresStore {
    pub(super) pool: PgPool,
}

/// The longest one statement may run.
const STATEMENT_TIMEOUT: &str = "10s";

impl PostgresStore {
    /// Connects and runs the migrations. The pool tests a connection before
    /// handing it out, so after a PostgreSQL restart the dead connections
    /// are dropped and the pool recovers by itself.
    pub async fn connect(options: &PostgresOptions) -> Result<Self, StoreError> {
        let schema = options.schema.as_deref().map(checked_schema).transpose()?;
        let mut connect = PgConnectOptions::from_str(&options.url).map_err(|e| unavailable(&options.url, &e))?;
        // A query that hangs (a lock, a server that stopped answering on an
        // open connection) fails rather than holding its request forever.
        connect = connect.options([("statement_timeout", STATEMENT_TIMEOUT)]);
        if let Some(schema) = schema {
            connect = connect.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .min_connections(0)
            .acquire_timeout(options.connect_timeout)
            .test_before_acquire(true)
            .connect_with(connect)
            .await
            .map_err(|e| unavailable(&options.url, &e))?;
        if let Some(schema) = schema {
            create_schema(&pool, schema).await.map_err(|e| unavailable(&options.url, &e))?;
        }
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Brings the schema up to date; already-applied migrations are skipped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("src/store/migrations/postgres").run(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl Reachable for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// A schema name safe to put in `search_path` and in SQL unquoted.
fn checked_schema(schema: &str) -> Result<&str, StoreError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    match valid {
        true => Ok(schema),
        false => Err(StoreError::Config(format!("schema {schema:?}: use lower-case letters, digits and _"))),
    }
}

async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    // Two instances creating it at once: the loser sees a unique violation
    // on the catalogue, and the schema exists all the same.
    match sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(pool).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// An error about reaching the database, with the URL and its password cut out.
fn unavailable(url: &str, error: &dyn std::fmt::Display) -> StoreError {
    StoreError::Unavailable(redact(&error.to_string(), url))
}

/// Removes the URL and its password (as written and decoded) from a message.
pub(crate) fn redact(message: &str, url: &str) -> String {
    let mut redacted = message.replace(url, "(database URL)");
    let password = url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_string));
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        let decoded = url::form_urlencoded::parse(format!("p={password}").as_bytes()).next().map(|(_, v)| v.into_owned());
        redacted = redacted.replace(&password, "***");
        if let Some(decoded) = decoded.filter(|d| !d.is_empty()) {
            redacted = redacted.replace(&decoded, "***");
        }
    }
    redacted
}

const SESSION_COLUMNS: &str = "key, username, factors, created, last_seen, pending_totp, context";

/// A session row read with [`SESSION_COLUMNS`]; None if its key is not 32 bytes.
fn session_row(r: &PgRow) -> Option<SessionRow> {
    let key: Vec<u8> = r.get(0);
    Some(SessionRow {
        key: key.try_into().ok()?,
        username: r.get(1),
        factors: r.get(2),
        created: r.get(3),
        last_seen: r.get(4),
        pending_totp: r.get(5),
        context: r.get(6),
    })
}

async fn insert_session<'c>(executor: impl sqlx::PgExecutor<'c>, row: &SessionRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (key, username, factors, created, last_seen, pending_totp, context) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&row.key[..])
    .bind(&row.username)
    .bind(&row.factors)
    .bind(row.created)
    .bind(row.last_seen)
    .bind(row.pending_totp.as_deref())
    .bind(&row.context)
    .execute(executor)
    .await?;
    Ok(())
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn insert_session(&self, row: &SessionRow) -> Result<(), StoreError> {
        insert_session(&self.pool, row).await
    }

    async fn update_session(&self, key: &[u8; 32], change: SessionChange<'_>) -> Result<Option<SessionRow>, StoreError> {
        let set = match change {
            SessionChange::Context(_) => "context = $1",
            SessionChange::PendingTotp(_) => "pending_totp = $1",
            SessionChange::Factors(_) => "factors = $1",
        };
        let query = format!("UPDATE sessions SET {set} WHERE key = $2 RETURNING {SESSION_COLUMNS}");
        let query = match change {
            SessionChange::Context(json) | SessionChange::Factors(json) => sqlx::query(&query).bind(json),
            SessionChange::PendingTotp(sealed) => sqlx::query(&query).bind(sealed),
        };
        let row = query.bind(&key[..]).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().and_then(session_row))
    }

    async fn renew_session(&self, old: &[u8; 32], new: &SessionRow) -> Result<bool, StoreError> {
        // The delete locks `old`'s row: a concurrent delete either came
        // first (nothing is stored) or waits for the commit.
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM sessions WHERE key = $1").bind(&old[..]).execute(&mut *tx).await?;
        if deleted.rows_affected() == 0 {
            return Ok(false);
        }
        insert_session(&mut *tx, new).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_session(&self, key: &[u8; 32]) -> Result<Option<SessionRow>, StoreError> {
        let query = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE key = $1");
        let row = sqlx::query(&query).bind(&key[..]).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().and_then(session_row))
    }

    async fn sessions_of(&self, username: &str) -> Result<Vec<SessionRow>, StoreError> {
        let query = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE username = $1 ORDER BY last_seen DESC");
        let rows = sqlx::query(&query).bind(username).fetch_all(&self.pool).await?;
        Ok(rows.iter().filter_map(session_row).collect())
    }

    async fn touch_session(&self, key: &[u8; 32], last_seen: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seen = GREATEST(last_seen, $1) WHERE key = $2")
            .bind(last_seen)
            .bind(&key[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_session(&self, key: &[u8; 32]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE key = $1").bind(&key[..]).execute(&self.pool).await?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE last_seen < $1 OR created < $2")
            .bind(idle_before)
            .bind(created_before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

const TOTP_COLUMNS: &str = "username, sealed_secret, algorithm, digits, period, created, last_step, name, last_used";

fn totp_row(r: &PgRow) -> TotpRow {
    TotpRow {
        username: r.get(0),
        sealed_secret: r.get(1),
        algorithm: r.get(2),
        digits: r.get(3),
        period: r.get(4),
        created: r.get(5),
        last_step: r.get(6),
        name: r.get(7),
        last_used: r.get(8),
    }
}

#[async_trait]
impl TotpStore for PostgresStore {
    async fn get_totp(&self, username: &str) -> Result<Option<TotpRow>, StoreError> {
        let query = format!("SELECT {TOTP_COLUMNS} FROM totp_credentials WHERE username = $1");
        let row = sqlx::query(&query).bind(username).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(totp_row))
    }

    async fn insert_totp(&self, row: &TotpRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO totp_credentials (username, sealed_secret, algorithm, digits, period, created, last_step, name)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&row.username)
        .bind(&row.sealed_secret)
        .bind(&row.algorithm)
        .bind(row.digits)
        .bind(row.period)
        .bind(row.created)
        .bind(row.last_step)
        .bind(&row.name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_totp_step(&self, username: &str, step: i64, now: i64) -> Result<bool, StoreError> {
        // One conditional UPDATE: the second of two concurrent claims waits
        // for the first's row lock, re-reads last_step and matches nothing.
        let done = sqlx::query("UPDATE totp_credentials SET last_step = $1, last_used = $2 WHERE username = $3 AND last_step < $1")
            .bind(step)
            .bind(now)
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn rename_totp(&self, username: &str, name: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE totp_credentials SET name = $1 WHERE username = $2").bind(name).bind(username).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}

const WEBAUTHN_COLUMNS: &str = "id, username, credential_id, kind, name, credential, counter, aaguid, discoverable, \
                                created, last_used, possible_clone_at";

fn webauthn_row(r: &PgRow) -> WebauthnRow {
    WebauthnRow {
        id: r.get(0),
        username: r.get(1),
        credential_id: r.get(2),
        kind: r.get(3),
        name: r.get(4),
        credential: r.get(5),
        counter: r.get(6),
        aaguid: r.get(7),
        discoverable: r.get(8),
        created: r.get(9),
        last_used: r.get(10),
        possible_clone_at: r.get(11),
    }
}

#[async_trait]
impl WebauthnStore for PostgresStore {
    async fn webauthn_credentials(&self, username: &str) -> Result<Vec<WebauthnRow>, StoreError> {
        let query = format!("SELECT {WEBAUTHN_COLUMNS} FROM webauthn_credentials WHERE username = $1 ORDER BY id");
        let rows = sqlx::query(&query).bind(username).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(webauthn_row).collect())
    }

    async fn webauthn_credential(&self, credential_id: &[u8]) -> Result<Option<WebauthnRow>, StoreError> {
        let query = format!("SELECT {WEBAUTHN_COLUMNS} FROM webauthn_credentials WHERE credential_id = $1");
        let row = sqlx::query(&query).bind(credential_id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(webauthn_row))
    }

    async fn insert_webauthn(&self, row: &WebauthnRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO webauthn_credentials
             (username, credential_id, kind, name, credential, counter, aaguid, discoverable, created, last_used)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(&row.username)
        .bind(&row.credential_id)
        .bind(&row.kind)
        .bind(&row.name)
        .bind(&row.credential)
        .bind(row.counter)
        .bind(&row.aaguid)
        .bind(row.discoverable)
        .bind(row.created)
        .bind(row.last_used)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_webauthn_use(&self, id: i64, counter: i64, credential: &str, now: i64) -> Result<bool, StoreError> {
        // Authenticators without a counter always report 0; they can only
        // be claimed as "not above", which `<=` allows for 0 alone.
        let done = sqlx::query(
            "UPDATE webauthn_credentials SET counter = $1, credential = $2, last_used = $3
             WHERE id = $4 AND (counter < $1 OR (counter = 0 AND $1 = 0))",
        )
        .bind(counter)
        .bind(credential)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn flag_possible_clone(&self, id: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE webauthn_credentials SET possible_clone_at = $1 WHERE id = $2").bind(now).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn rename_webauthn(&self, username: &str, id: i64, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE webauthn_credentials SET name = $1 WHERE username = $2 AND id = $3")
            .bind(name)
            .bind(username)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_webauthn(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webauthn_credentials WHERE username = $1 AND id = $2")
            .bind(username)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl RecoveryStore for PostgresStore {
    async fn replace_recovery_codes(&self, username: &str, hashes: &[[u8; 32]], now: i64) -> Result<(), StoreError> {
        // One transaction: the old set stops working exactly when the new one starts.
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM recovery_codes WHERE username = $1").bind(username).execute(&mut *tx).await?;
        for hash in hashes {
            sqlx::query("INSERT INTO recovery_codes (username, hash, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(username)
                .bind(&hash[..])
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn use_recovery_code(&self, username: &str, hash: &[u8; 32], now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE username = $2 AND hash = $3 AND used_at IS NULL")
            .bind(now)
            .bind(username)
            .bind(&hash[..])
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn recovery_codes_left(&self, username: &str) -> Result<(u32, Option<i64>), StoreError> {
        let row = sqlx::query("SELECT count(*) FILTER (WHERE used_at IS NULL), max(created) FROM recovery_codes WHERE username = $1")
            .bind(username)
            .fetch_one(&self.pool)
            .await?;
        let left: i64 = row.get(0);
        Ok((u32::try_from(left).unwrap_or(0), row.get(1)))
    }
}

#[async_trait]
impl FactorStore for PostgresStore {
    async fn remove_factor(&self, username: &str, factor: FactorRef, usable_kinds: &[&str], keep_one: bool) -> Result<Removal, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_factors(&mut tx, username).await?;
        let deleted = match factor {
            FactorRef::Totp => sqlx::query("DELETE FROM totp_credentials WHERE username = $1").bind(username),
            FactorRef::Webauthn(id) => {
                sqlx::query("DELETE FROM webauthn_credentials WHERE username = $1 AND id = $2").bind(username).bind(id)
            }
            FactorRef::Oob(id) => sqlx::query("DELETE FROM oob_factors WHERE username = $1 AND id = $2").bind(username).bind(id),
        }
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Ok(Removal::NotFound);
        }
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM totp_credentials WHERE username = $1)
                  + (SELECT count(*) FROM webauthn_credentials WHERE username = $1 AND kind = ANY($2))
                  + (SELECT count(*) FROM oob_factors WHERE username = $1 AND channel = ANY($2))",
        )
        .bind(username)
        .bind(usable_kinds)
        .fetch_one(&mut *tx)
        .await?;
        if left == 0 && keep_one {
            return Ok(Removal::LastFactor);
        }
        if left == 0 {
            // Recovery codes stand in for a factor; with none left they would be one.
            sqlx::query("DELETE FROM recovery_codes WHERE username = $1").bind(username).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Removal::Removed)
    }
}

/// Locks every factor of the user, always in the same order, so that a
/// second removal waits for this transaction and then counts what it left
/// (READ COMMITTED takes a fresh snapshot for each statement).
async fn lock_factors(tx: &mut PgConnection, username: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM totp_credentials WHERE username = $1 FOR UPDATE").bind(username).fetch_all(&mut *tx).await?;
    sqlx::query("SELECT 1 FROM webauthn_credentials WHERE username = $1 ORDER BY id FOR UPDATE").bind(username).fetch_all(&mut *tx).await?;
    sqlx::query("SELECT 1 FROM oob_factors WHERE username = $1 ORDER BY id FOR UPDATE").bind(username).fetch_all(&mut *tx).await?;
    Ok(())
}

fn sign_in_row(r: &PgRow) -> SignInRow {
    SignInRow {
        username: r.get(0),
        at: r.get(1),
        ip: r.get(2),
        country: r.get(3),
        latitude: r.get(4),
        longitude: r.get(5),
        confidence: r.get(6),
        signals: r.get(7),
        accuracy_km: r.get(8),
    }
}

const SIGN_IN_COLUMNS: &str = "username, at, ip, country, latitude, longitude, confidence, signals, accuracy_km";

#[async_trait]
impl RiskStore for PostgresStore {
    async fn is_known_device(&self, username: &str, device_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM known_devices WHERE username = $1 AND device_id = $2")
            .bind(username)
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn device_trusted_until(&self, username: &str, device_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT trusted_until FROM known_devices WHERE username = $1 AND device_id = $2")
            .bind(username)
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    async fn remember_device(&self, username: &str, device_id: &str, now: i64, trusted_until: Option<i64>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO known_devices (username, device_id, first_seen, last_seen, trusted_until) VALUES ($1, $2, $3, $3, $4)
             ON CONFLICT (username, device_id) DO UPDATE SET last_seen = excluded.last_seen,
             trusted_until = coalesce(excluded.trusted_until, known_devices.trusted_until)",
        )
        .bind(username)
        .bind(device_id)
        .bind(now)
        .bind(trusted_until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_sign_in(&self, row: &SignInRow) -> Result<(), StoreError> {
        insert_sign_in(&self.pool, row).await
    }

    async fn last_sign_in(&self, username: &str) -> Result<Option<SignInRow>, StoreError> {
        let query = format!("SELECT {SIGN_IN_COLUMNS} FROM sign_ins WHERE username = $1 ORDER BY at DESC, id DESC LIMIT 1");
        let row = sqlx::query(&query).bind(username).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(sign_in_row))
    }

    async fn has_signed_in_from(&self, username: &str, country: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM sign_ins WHERE username = $1 AND country = $2 LIMIT 1")
            .bind(username)
            .bind(country)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn trusted_devices(&self, username: &str, now: i64) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, first_seen, last_seen, trusted_until FROM known_devices
             WHERE username = $1 AND trusted_until > $2 ORDER BY last_seen DESC",
        )
        .bind(username)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeviceRow { device_id: r.get(0), first_seen: r.get(1), last_seen: r.get(2), trusted_until: r.get(3) })
            .collect())
    }

    async fn untrust_device(&self, username: &str, device_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE known_devices SET trusted_until = NULL WHERE username = $1 AND device_id = $2")
            .bind(username)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn forget_sign_ins_before(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sign_ins WHERE at < $1").bind(before).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

async fn insert_sign_in<'c>(executor: impl sqlx::PgExecutor<'c>, row: &SignInRow) -> Result<(), StoreError> {
    sqlx::query(&format!("INSERT INTO sign_ins ({SIGN_IN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
        .bind(&row.username)
        .bind(row.at)
        .bind(&row.ip)
        .bind(&row.country)
        .bind(row.latitude)
        .bind(row.longitude)
        .bind(&row.confidence)
        .bind(&row.signals)
        .bind(row.accuracy_km)
        .execute(executor)
        .await?;
    Ok(())
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn signing_keys(&self) -> Result<Option<StoredSigningKeys>, StoreError> {
        let row = sqlx::query("SELECT keys, version FROM signing_keys WHERE id = 1").fetch_optional(&self.pool).await?;
        Ok(row.map(|r| StoredSigningKeys { json: r.get(0), version: r.get(1) }))
    }

    async fn signing_keys_version(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT version FROM signing_keys WHERE id = 1").fetch_optional(&self.pool).await?)
    }

    async fn save_signing_keys(&self, expected_version: Option<i64>, json: &str) -> Result<bool, StoreError> {
        let done = match expected_version {
            None => sqlx::query("INSERT INTO signing_keys (id, keys, version) VALUES (1, $1, 1) ON CONFLICT DO NOTHING").bind(json),
            Some(version) => sqlx::query("UPDATE signing_keys SET keys = $1, version = version + 1 WHERE id = 1 AND version = $2")
                .bind(json)
                .bind(version),
        }
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The tables a snapshot holds.
const SNAPSHOT_TABLES: [&str; 5] = ["totp_credentials", "webauthn_credentials", "recovery_codes", "known_devices", "sign_ins"];

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn export_snapshot(&self) -> Result<Snapshot, StoreError> {
        // One REPEATABLE READ transaction, so the parts agree with each other.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        let totp = fetch_all(&mut tx, &format!("SELECT {TOTP_COLUMNS} FROM totp_credentials ORDER BY username"), totp_row).await?;
        let webauthn =
            fetch_all(&mut tx, &format!("SELECT {WEBAUTHN_COLUMNS} FROM webauthn_credentials ORDER BY id"), webauthn_row).await?;
        let recovery_codes =
            fetch_all(&mut tx, "SELECT username, hash, created, used_at FROM recovery_codes ORDER BY username, hash", |r| {
                RecoveryCodeRow { username: r.get(0), hash: r.get(1), created: r.get(2), used_at: r.get(3) }
            })
            .await?;
        let devices = fetch_all(
            &mut tx,
            "SELECT username, device_id, first_seen, last_seen, trusted_until FROM known_devices ORDER BY username, device_id",
            |r| KnownDeviceRow {
                username: r.get(0),
                device: DeviceRow { device_id: r.get(1), first_seen: r.get(2), last_seen: r.get(3), trusted_until: r.get(4) },
            },
        )
        .await?;
        let sign_ins = fetch_all(&mut tx, &format!("SELECT {SIGN_IN_COLUMNS} FROM sign_ins ORDER BY id"), sign_in_row).await?;
        let signing_keys = sqlx::query_scalar("SELECT keys FROM signing_keys WHERE id = 1").fetch_optional(&mut *tx).await?;
        let (admin_tokens, tickets, audit, oob) = super::postgres_admin::export_admin(&mut tx).await?;
        tx.commit().await?;
        Ok(Snapshot { totp, webauthn, oob, recovery_codes, devices, sign_ins, signing_keys, admin_tokens, tickets, audit })
    }

    async fn import_snapshot(&self, snapshot: &Snapshot, overwrite: bool) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Lock the tables first, so nothing is written between the check and the import.
        let tables = [&SNAPSHOT_TABLES[..], &super::admin::SNAPSHOT_TABLES[..]].concat().join(", ");
        sqlx::query(&format!("LOCK TABLE {tables}, signing_keys, sessions IN EXCLUSIVE MODE")).execute(&mut *tx).await?;
        if !overwrite && holds_data(&mut tx).await? {
            return Ok(false);
        }
        // Sessions go too: nobody stays signed in on data that was replaced.
        sqlx::query(&format!("TRUNCATE {tables}, sessions")).execute(&mut *tx).await?;
        import_rows(&mut tx, snapshot).await?;
        super::postgres_admin::import_admin(&mut tx, snapshot).await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn fetch_all<T>(tx: &mut PgConnection, query: &str, row: impl Fn(&PgRow) -> T) -> Result<Vec<T>, StoreError> {
    Ok(sqlx::query(query).fetch_all(&mut *tx).await?.iter().map(row).collect())
}

async fn holds_data(tx: &mut PgConnection) -> Result<bool, StoreError> {
    for table in SNAPSHOT_TABLES.iter().chain(&super::admin::SNAPSHOT_TABLES).chain(&["signing_keys"]) {
        if sqlx::query(&format!("SELECT 1 FROM {table} LIMIT 1")).fetch_optional(&mut *tx).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn import_rows(tx: &mut PgConnection, snapshot: &Snapshot) -> Result<(), StoreError> {
    for row in &snapshot.totp {
        sqlx::query(&format!("INSERT INTO totp_credentials ({TOTP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(&row.username)
            .bind(&row.sealed_secret)
            .bind(&row.algorithm)
            .bind(row.digits)
            .bind(row.period)
            .bind(row.created)
            .bind(row.last_step)
            .bind(&row.name)
            .bind(row.last_used)
            .execute(&mut *tx)
            .await?;
    }
    import_webauthn(tx, &snapshot.webauthn).await?;
    for row in &snapshot.recovery_codes {
        sqlx::query("INSERT INTO recovery_codes (username, hash, created, used_at) VALUES ($1, $2, $3, $4)")
            .bind(&row.username)
            .bind(&row.hash)
            .bind(row.created)
            .bind(row.used_at)
            .execute(&mut *tx)
            .await?;
    }
    for row in &snapshot.devices {
        let device = &row.device;
        sqlx::query("INSERT INTO known_devices (username, device_id, first_seen, last_seen, trusted_until) VALUES ($1, $2, $3, $4, $5)")
            .bind(&row.username)
            .bind(&device.device_id)
            .bind(device.first_seen)
            .bind(device.last_seen)
            .bind(device.trusted_until)
            .execute(&mut *tx)
            .await?;
    }
    for row in &snapshot.sign_ins {
        insert_sign_in(&mut *tx, row).await?;
    }
    if let Some(json) = &snapshot.signing_keys {
        // A new version, so running instances pick the copied keys up.
        sqlx::query(
            "INSERT INTO signing_keys (id, keys, version) VALUES (1, $1, 1)
             ON CONFLICT (id) DO UPDATE SET keys = excluded.keys, version = signing_keys.version + 1",
        )
        .bind(json)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Inserts credentials with their ids, then moves the id sequence past
/// them so that the next enrolment does not collide.
async fn import_webauthn(tx: &mut PgConnection, rows: &[WebauthnRow]) -> Result<(), StoreError> {
    for row in rows {
        sqlx::query(&format!(
            "INSERT INTO webauthn_credentials ({WEBAUTHN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(row.id)
        .bind(&row.username)
        .bind(&row.credential_id)
        .bind(&row.kind)
        .bind(&row.name)
        .bind(&row.credential)
        .bind(row.counter)
        .bind(&row.aaguid)
        .bind(row.discoverable)
        .bind(row.created)
        .bind(row.last_used)
        .bind(row.possible_clone_at)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('webauthn_credentials', 'id'), coalesce(max(id), 0) + 1, false) FROM webauthn_credentials",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_the_url_and_the_password_as_written_and_decoded() {
        let url = "postgres://app:p%40ss@db.example/stepgate";
        let shown = redact(&format!("bad {url}; password p%40ss or p@ss"), url);
        assert_eq!(shown, "bad (database URL); password *** or ***");
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(checked_schema("stepgate_1").is_ok());
        for bad in ["", "Public", "a b", "x;drop", "1abc", &"a".repeat(64)] {
            assert!(checked_schema(bad).is_err(), "{bad}");
        }
    }
}
