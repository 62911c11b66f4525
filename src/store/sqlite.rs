//! The embedded default backend: one SQLite file in the data directory.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::key_file::KeyFile;
use super::{
    DeviceRow, FactorRef, FactorStore, KeyStore, KnownDeviceRow, Reachable, RecoveryCodeRow, RecoveryStore, Removal, RiskStore,
    SessionChange, SessionRow, SessionStore, SignInRow, Snapshot, SnapshotStore, StoreError, StoredSigningKeys, TotpRow, TotpStore,
    WebauthnRow, WebauthnStore,
};

/// The database's name in the data directory.
pub(super) const DATABASE_FILE: &str = "stepgate.db";

pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    keys: KeyFile,
}

#[async_trait]
impl Reachable for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `stepgate.db` in `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir(data_dir.display().to_string(), e))?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("src/store/migrations/sqlite").run(&pool).await?;
        Ok(Self { pool, keys: KeyFile::in_dir(data_dir) })
    }
}

const SESSION_COLUMNS: &str = "key, username, factors, created, last_seen, pending_totp, context";

/// A session row read with [`SESSION_COLUMNS`]; None if its key is not 32 bytes.
fn session_row(r: &sqlx::sqlite::SqliteRow) -> Option<SessionRow> {
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

async fn insert_session<'c>(executor: impl sqlx::SqliteExecutor<'c>, row: &SessionRow) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO sessions (key, username, factors, created, last_seen, pending_totp, context) VALUES (?, ?, ?, ?, ?, ?, ?)")
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
impl SessionStore for SqliteStore {
    async fn insert_session(&self, row: &SessionRow) -> Result<(), StoreError> {
        insert_session(&self.pool, row).await
    }

    async fn update_session(&self, key: &[u8; 32], change: SessionChange<'_>) -> Result<Option<SessionRow>, StoreError> {
        let set = match change {
            SessionChange::Context(_) => "context = ?",
            SessionChange::PendingTotp(_) => "pending_totp = ?",
            SessionChange::Factors(_) => "factors = ?",
        };
        let query = format!("UPDATE sessions SET {set} WHERE key = ? RETURNING {SESSION_COLUMNS}");
        let query = match change {
            SessionChange::Context(json) | SessionChange::Factors(json) => sqlx::query(&query).bind(json),
            SessionChange::PendingTotp(sealed) => sqlx::query(&query).bind(sealed),
        };
        let row = query.bind(&key[..]).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().and_then(session_row))
    }

    async fn renew_session(&self, old: &[u8; 32], new: &SessionRow) -> Result<bool, StoreError> {
        // The delete comes first, so the transaction holds the write lock
        // from its first statement and a concurrent delete of `old` either
        // happened before (nothing is stored) or waits for the commit.
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM sessions WHERE key = ?").bind(&old[..]).execute(&mut *tx).await?;
        if deleted.rows_affected() == 0 {
            return Ok(false);
        }
        insert_session(&mut *tx, new).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_session(&self, key: &[u8; 32]) -> Result<Option<SessionRow>, StoreError> {
        let query = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE key = ?");
        let row = sqlx::query(&query).bind(&key[..]).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().and_then(session_row))
    }

    async fn sessions_of(&self, username: &str) -> Result<Vec<SessionRow>, StoreError> {
        let query = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE username = ? ORDER BY last_seen DESC");
        let rows = sqlx::query(&query).bind(username).fetch_all(&self.pool).await?;
        Ok(rows.iter().filter_map(session_row).collect())
    }

    async fn touch_session(&self, key: &[u8; 32], last_seen: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seen = max(last_seen, ?) WHERE key = ?")
            .bind(last_seen)
            .bind(&key[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_session(&self, key: &[u8; 32]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE key = ?").bind(&key[..]).execute(&self.pool).await?;
        Ok(())
    }

    async fn delete_expired_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE last_seen < ? OR created < ?")
            .bind(idle_before)
            .bind(created_before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl TotpStore for SqliteStore {
    async fn get_totp(&self, username: &str) -> Result<Option<TotpRow>, StoreError> {
        let row = sqlx::query(
            "SELECT sealed_secret, algorithm, digits, period, created, last_step, name, last_used
             FROM totp_credentials WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| TotpRow {
            username: username.to_string(),
            sealed_secret: r.get(0),
            algorithm: r.get(1),
            digits: r.get(2),
            period: r.get(3),
            created: r.get(4),
            last_step: r.get(5),
            name: r.get(6),
            last_used: r.get(7),
        }))
    }

    async fn insert_totp(&self, row: &TotpRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO totp_credentials
             (username, sealed_secret, algorithm, digits, period, created, last_step, name)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        // One conditional UPDATE, so two concurrent uses of a code cannot both win.
        let done = sqlx::query("UPDATE totp_credentials SET last_step = ?, last_used = ? WHERE username = ? AND last_step < ?")
            .bind(step)
            .bind(now)
            .bind(username)
            .bind(step)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn rename_totp(&self, username: &str, name: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE totp_credentials SET name = ? WHERE username = ?").bind(name).bind(username).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}

const WEBAUTHN_COLUMNS: &str = "id, username, credential_id, kind, name, credential, counter, aaguid, discoverable, \
                                created, last_used, possible_clone_at";

fn webauthn_row(r: &sqlx::sqlite::SqliteRow) -> WebauthnRow {
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
impl WebauthnStore for SqliteStore {
    async fn webauthn_credentials(&self, username: &str) -> Result<Vec<WebauthnRow>, StoreError> {
        let query = format!("SELECT {WEBAUTHN_COLUMNS} FROM webauthn_credentials WHERE username = ? ORDER BY id");
        let rows = sqlx::query(&query).bind(username).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(webauthn_row).collect())
    }

    async fn webauthn_credential(&self, credential_id: &[u8]) -> Result<Option<WebauthnRow>, StoreError> {
        let query = format!("SELECT {WEBAUTHN_COLUMNS} FROM webauthn_credentials WHERE credential_id = ?");
        let row = sqlx::query(&query).bind(credential_id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(webauthn_row))
    }

    async fn insert_webauthn(&self, row: &WebauthnRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO webauthn_credentials
             (username, credential_id, kind, name, credential, counter, aaguid, discoverable, created, last_used)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "UPDATE webauthn_credentials SET counter = ?, credential = ?, last_used = ?
             WHERE id = ? AND (counter < ? OR (counter = 0 AND ? = 0))",
        )
        .bind(counter)
        .bind(credential)
        .bind(now)
        .bind(id)
        .bind(counter)
        .bind(counter)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn flag_possible_clone(&self, id: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE webauthn_credentials SET possible_clone_at = ? WHERE id = ?").bind(now).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn rename_webauthn(&self, username: &str, id: i64, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE webauthn_credentials SET name = ? WHERE username = ? AND id = ?")
            .bind(name)
            .bind(username)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_webauthn(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webauthn_credentials WHERE username = ? AND id = ?")
            .bind(username)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl RecoveryStore for SqliteStore {
    async fn replace_recovery_codes(&self, username: &str, hashes: &[[u8; 32]], now: i64) -> Result<(), StoreError> {
        // One transaction: the old set stops working exactly when the new one starts.
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM recovery_codes WHERE username = ?").bind(username).execute(&mut *tx).await?;
        for hash in hashes {
            sqlx::query("INSERT OR IGNORE INTO recovery_codes (username, hash, created) VALUES (?, ?, ?)")
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
        let done = sqlx::query("UPDATE recovery_codes SET used_at = ? WHERE username = ? AND hash = ? AND used_at IS NULL")
            .bind(now)
            .bind(username)
            .bind(&hash[..])
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn recovery_codes_left(&self, username: &str) -> Result<(u32, Option<i64>), StoreError> {
        let row = sqlx::query("SELECT count(*) FILTER (WHERE used_at IS NULL), max(created) FROM recovery_codes WHERE username = ?")
            .bind(username)
            .fetch_one(&self.pool)
            .await?;
        let left: i64 = row.get(0);
        Ok((u32::try_from(left).unwrap_or(0), row.get(1)))
    }
}

#[async_trait]
impl FactorStore for SqliteStore {
    async fn remove_factor(&self, username: &str, factor: FactorRef, usable_kinds: &[&str], keep_one: bool) -> Result<Removal, StoreError> {
        // The delete comes first, so the transaction holds the write lock
        // from its first statement: a second removal waits for this one's
        // commit and then counts what it left.
        let mut tx = self.pool.begin().await?;
        let deleted = match factor {
            FactorRef::Totp => sqlx::query("DELETE FROM totp_credentials WHERE username = ?").bind(username),
            FactorRef::Webauthn(id) => {
                sqlx::query("DELETE FROM webauthn_credentials WHERE username = ? AND id = ?").bind(username).bind(id)
            }
            FactorRef::Oob(id) => sqlx::query("DELETE FROM oob_factors WHERE username = ? AND id = ?").bind(username).bind(id),
        }
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Ok(Removal::NotFound);
        }
        let kinds = serde_json::to_string(usable_kinds).unwrap_or_else(|_| "[]".into());
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM totp_credentials WHERE username = ?1)
                  + (SELECT count(*) FROM webauthn_credentials WHERE username = ?1 AND kind IN (SELECT value FROM json_each(?2)))
                  + (SELECT count(*) FROM oob_factors WHERE username = ?1 AND channel IN (SELECT value FROM json_each(?2)))",
        )
        .bind(username)
        .bind(kinds)
        .fetch_one(&mut *tx)
        .await?;
        if left == 0 && keep_one {
            return Ok(Removal::LastFactor);
        }
        if left == 0 {
            // Recovery codes stand in for a factor; with none left they would be one.
            sqlx::query("DELETE FROM recovery_codes WHERE username = ?").bind(username).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Removal::Removed)
    }
}

#[async_trait]
impl RiskStore for SqliteStore {
    async fn is_known_device(&self, username: &str, device_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM known_devices WHERE username = ? AND device_id = ?")
            .bind(username)
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn device_trusted_until(&self, username: &str, device_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT trusted_until FROM known_devices WHERE username = ? AND device_id = ?")
            .bind(username)
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    async fn remember_device(&self, username: &str, device_id: &str, now: i64, trusted_until: Option<i64>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO known_devices (username, device_id, first_seen, last_seen, trusted_until) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (username, device_id) DO UPDATE SET last_seen = excluded.last_seen,
             trusted_until = coalesce(excluded.trusted_until, known_devices.trusted_until)",
        )
        .bind(username)
        .bind(device_id)
        .bind(now)
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
        let query = format!("SELECT {SIGN_IN_COLUMNS} FROM sign_ins WHERE username = ? ORDER BY at DESC, id DESC LIMIT 1");
        let row = sqlx::query(&query).bind(username).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(sign_in_row))
    }

    async fn has_signed_in_from(&self, username: &str, country: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM sign_ins WHERE username = ? AND country = ? LIMIT 1")
            .bind(username)
            .bind(country)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn trusted_devices(&self, username: &str, now: i64) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, first_seen, last_seen, trusted_until FROM known_devices
             WHERE username = ? AND trusted_until > ? ORDER BY last_seen DESC",
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
        sqlx::query("UPDATE known_devices SET trusted_until = NULL WHERE username = ? AND device_id = ?")
            .bind(username)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn forget_sign_ins_before(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sign_ins WHERE at < ?").bind(before).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> Result<Option<StoredSigningKeys>, StoreError> {
        self.keys.read()
    }

    async fn signing_keys_version(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.keys.read()?.map(|keys| keys.version))
    }

    async fn save_signing_keys(&self, expected_version: Option<i64>, json: &str) -> Result<bool, StoreError> {
        self.keys.save(expected_version, json)
    }
}

/// The tables a snapshot holds, in the order they are emptied.
const SNAPSHOT_TABLES: [&str; 5] = ["totp_credentials", "webauthn_credentials", "recovery_codes", "known_devices", "sign_ins"];

#[async_trait]
impl SnapshotStore for SqliteStore {
    async fn export_snapshot(&self) -> Result<Snapshot, StoreError> {
        let totp = sqlx::query("SELECT username, sealed_secret, algorithm, digits, period, created, last_step, name, last_used FROM totp_credentials ORDER BY username")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| TotpRow {
                username: r.get(0),
                sealed_secret: r.get(1),
                algorithm: r.get(2),
                digits: r.get(3),
                period: r.get(4),
                created: r.get(5),
                last_step: r.get(6),
                name: r.get(7),
                last_used: r.get(8),
            })
            .collect();
        let query = format!("SELECT {WEBAUTHN_COLUMNS} FROM webauthn_credentials ORDER BY id");
        let webauthn = sqlx::query(&query).fetch_all(&self.pool).await?.iter().map(webauthn_row).collect();
        let recovery_codes = sqlx::query("SELECT username, hash, created, used_at FROM recovery_codes ORDER BY username, hash")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| RecoveryCodeRow { username: r.get(0), hash: r.get(1), created: r.get(2), used_at: r.get(3) })
            .collect();
        let devices =
            sqlx::query("SELECT username, device_id, first_seen, last_seen, trusted_until FROM known_devices ORDER BY username, device_id")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| KnownDeviceRow {
                    username: r.get(0),
                    device: DeviceRow { device_id: r.get(1), first_seen: r.get(2), last_seen: r.get(3), trusted_until: r.get(4) },
                })
                .collect();
        let sign_ins = sqlx::query(&format!("SELECT {SIGN_IN_COLUMNS} FROM sign_ins ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(sign_in_row)
            .collect();
        let signing_keys = self.keys.read()?.map(|keys| keys.json);
        let (admin_tokens, tickets, audit, oob) = super::sqlite_admin::export_admin(&mut *self.pool.acquire().await?).await?;
        Ok(Snapshot { totp, webauthn, oob, recovery_codes, devices, sign_ins, signing_keys, admin_tokens, tickets, audit })
    }

    /// The rows are written in one transaction; the signing keys file is
    /// written after its commit (it is not in the database).
    async fn import_snapshot(&self, snapshot: &Snapshot, overwrite: bool) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !overwrite && (holds_data(&mut tx).await? || self.keys.read()?.is_some()) {
            return Ok(false);
        }
        // Sessions go too: nobody stays signed in on data that was replaced.
        for table in SNAPSHOT_TABLES.iter().chain(&super::admin::SNAPSHOT_TABLES).chain(&["sessions"]) {
            sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
        }
        import_rows(&mut tx, snapshot).await?;
        super::sqlite_admin::import_admin(&mut tx, snapshot).await?;
        tx.commit().await?;
        if let Some(json) = &snapshot.signing_keys {
            self.keys.write(json)?;
        }
        Ok(true)
    }
}

async fn holds_data(tx: &mut sqlx::SqliteConnection) -> Result<bool, StoreError> {
    for table in SNAPSHOT_TABLES.iter().chain(&super::admin::SNAPSHOT_TABLES) {
        if sqlx::query(&format!("SELECT 1 FROM {table} LIMIT 1")).fetch_optional(&mut *tx).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn import_rows(tx: &mut sqlx::SqliteConnection, snapshot: &Snapshot) -> Result<(), StoreError> {
    for row in &snapshot.totp {
        sqlx::query(
            "INSERT INTO totp_credentials (username, sealed_secret, algorithm, digits, period, created, last_step, name, last_used)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
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
    for row in &snapshot.webauthn {
        sqlx::query(&format!("INSERT INTO webauthn_credentials ({WEBAUTHN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
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
    for row in &snapshot.recovery_codes {
        sqlx::query("INSERT INTO recovery_codes (username, hash, created, used_at) VALUES (?, ?, ?, ?)")
            .bind(&row.username)
            .bind(&row.hash)
            .bind(row.created)
            .bind(row.used_at)
            .execute(&mut *tx)
            .await?;
    }
    for row in &snapshot.devices {
        let device = &row.device;
        sqlx::query("INSERT INTO known_devices (username, device_id, first_seen, last_seen, trusted_until) VALUES (?, ?, ?, ?, ?)")
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
    Ok(())
}

const SIGN_IN_COLUMNS: &str = "username, at, ip, country, latitude, longitude, confidence, signals, accuracy_km";

fn sign_in_row(r: &sqlx::sqlite::SqliteRow) -> SignInRow {
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

async fn insert_sign_in<'c>(executor: impl sqlx::SqliteExecutor<'c>, row: &SignInRow) -> Result<(), StoreError> {
    sqlx::query(&format!("INSERT INTO sign_ins ({SIGN_IN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"))
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

#[cfg(test)]
mod tests {
    //! The behaviour shared with PostgreSQL is tested on both backends in
    //! tests/store_backends.rs; here, what is SQLite's own.
    use super::*;

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stepgate.db"), vec![0x42; 4096]).unwrap();
        let err = SqliteStore::open(dir.path()).await.err().expect("must refuse").to_string();
        assert!(err.contains("not a database"), "{err}");
    }

    #[tokio::test]
    async fn signing_keys_stay_in_the_data_directory_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert!(store.save_signing_keys(None, "{\"keys\":[]}").await.unwrap());
        let on_disk = std::fs::read_to_string(dir.path().join("signing-keys.json")).unwrap();
        assert_eq!(on_disk, "{\"keys\":[]}");
        let version = store.signing_keys_version().await.unwrap();
        std::fs::write(dir.path().join("signing-keys.json"), "{\"keys\":[1]}").unwrap();
        assert_ne!(store.signing_keys_version().await.unwrap(), version, "an edit by hand is a new version");
    }
}
