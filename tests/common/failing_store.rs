//! A store that fails on demand: a real SQLite store behind switches. While
//! a switch is on, every call it covers fails with a `StoreError`, as a
//! database that went away would.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stepgate::store::*;

/// One switch per store trait, so a test can fail one kind of call and
/// keep the rest (a signed-in user's session, say) working.
#[derive(Clone, Default)]
pub struct Switches {
    /// How many times a session was read from the store.
    pub session_reads: Arc<AtomicUsize>,
    pub sessions: Arc<AtomicBool>,
    pub totp: Arc<AtomicBool>,
    pub webauthn: Arc<AtomicBool>,
    pub recovery: Arc<AtomicBool>,
    pub factors: Arc<AtomicBool>,
    pub risk: Arc<AtomicBool>,
    /// Signing keys and snapshots.
    pub keys: Arc<AtomicBool>,
    /// Admin tokens and the audit log.
    pub admin: Arc<AtomicBool>,
}

impl Switches {
    /// Takes the whole store down (true) or brings it back (false).
    pub fn set_all(&self, down: bool) {
        for switch in [&self.sessions, &self.totp, &self.webauthn, &self.recovery, &self.factors, &self.risk, &self.keys, &self.admin] {
            switch.store(down, Ordering::SeqCst);
        }
    }
}

pub struct FailingStore {
    inner: SqliteStore,
    switches: Switches,
}

impl FailingStore {
    /// The store, and the switches that take its parts down.
    pub fn new(inner: SqliteStore) -> (Self, Switches) {
        let switches = Switches::default();
        (Self { inner, switches: switches.clone() }, switches)
    }
}

fn check(switch: &AtomicBool) -> Result<(), StoreError> {
    match switch.load(Ordering::SeqCst) {
        true => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
        false => Ok(()),
    }
}

/// Implements a store trait by checking the switch, then calling the real store.
macro_rules! delegate {
    ($trait:ident, $switch:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* }) => {
        #[async_trait]
        impl $trait for FailingStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    if stringify!($name) == "get_session" {
                        self.switches.session_reads.fetch_add(1, Ordering::SeqCst);
                    }
                    check(&self.switches.$switch)?;
                    self.inner.$name($($arg),*).await
                }
            )*
        }
    };
}

delegate!(SessionStore, sessions {
    fn insert_session(&self, row: &SessionRow) -> ();
    fn update_session(&self, key: &[u8; 32], change: SessionChange<'_>) -> Option<SessionRow>;
    fn renew_session(&self, old: &[u8; 32], new: &SessionRow) -> bool;
    fn get_session(&self, key: &[u8; 32]) -> Option<SessionRow>;
    fn touch_session(&self, key: &[u8; 32], last_seen: i64) -> ();
    fn delete_session(&self, key: &[u8; 32]) -> ();
    fn delete_expired_sessions(&self, idle_before: i64, created_before: i64) -> u64;
    fn sessions_of(&self, username: &str) -> Vec<SessionRow>;
});

delegate!(Reachable, sessions {
    fn ping(&self) -> ();
});

delegate!(TotpStore, totp {
    fn get_totp(&self, username: &str) -> Option<TotpRow>;
    fn insert_totp(&self, row: &TotpRow) -> bool;
    fn claim_totp_step(&self, username: &str, step: i64, now: i64) -> bool;
    fn rename_totp(&self, username: &str, name: &str) -> bool;
});

delegate!(WebauthnStore, webauthn {
    fn webauthn_credentials(&self, username: &str) -> Vec<WebauthnRow>;
    fn webauthn_credential(&self, credential_id: &[u8]) -> Option<WebauthnRow>;
    fn insert_webauthn(&self, row: &WebauthnRow) -> bool;
    fn claim_webauthn_use(&self, id: i64, counter: i64, credential: &str, now: i64) -> bool;
    fn flag_possible_clone(&self, id: i64, now: i64) -> ();
    fn rename_webauthn(&self, username: &str, id: i64, name: &str) -> bool;
    fn delete_webauthn(&self, username: &str, id: i64) -> bool;
});

delegate!(RecoveryStore, recovery {
    fn replace_recovery_codes(&self, username: &str, hashes: &[[u8; 32]], now: i64) -> ();
    fn use_recovery_code(&self, username: &str, hash: &[u8; 32], now: i64) -> bool;
    fn recovery_codes_left(&self, username: &str) -> (u32, Option<i64>);
});

delegate!(OobStore, factors {
    fn oob_factors(&self, username: &str) -> Vec<OobRow>;
    fn insert_oob(&self, row: &OobRow) -> Option<i64>;
    fn rename_oob(&self, username: &str, id: i64, name: &str) -> bool;
    fn touch_oob(&self, id: i64, now: i64) -> ();
});

delegate!(FactorStore, factors {
    fn remove_factor(&self, username: &str, factor: FactorRef, usable_kinds: &[&str], keep_one: bool) -> Removal;
});

delegate!(RiskStore, risk {
    fn is_known_device(&self, username: &str, device_id: &str) -> bool;
    fn device_trusted_until(&self, username: &str, device_id: &str) -> Option<i64>;
    fn remember_device(&self, username: &str, device_id: &str, now: i64, trusted_until: Option<i64>) -> ();
    fn record_sign_in(&self, row: &SignInRow) -> ();
    fn last_sign_in(&self, username: &str) -> Option<SignInRow>;
    fn has_signed_in_from(&self, username: &str, country: &str) -> bool;
    fn trusted_devices(&self, username: &str, now: i64) -> Vec<DeviceRow>;
    fn untrust_device(&self, username: &str, device_id: &str) -> ();
    fn forget_sign_ins_before(&self, before: i64) -> u64;
});

delegate!(KeyStore, keys {
    fn signing_keys(&self) -> Option<StoredSigningKeys>;
    fn signing_keys_version(&self) -> Option<i64>;
    fn save_signing_keys(&self, expected_version: Option<i64>, json: &str) -> bool;
});

delegate!(SnapshotStore, keys {
    fn export_snapshot(&self) -> Snapshot;
    fn import_snapshot(&self, snapshot: &Snapshot, overwrite: bool) -> bool;
});

delegate!(AdminStore, admin {
    fn insert_admin_token(&self, row: &AdminTokenRow) -> bool;
    fn admin_token(&self, hash: &[u8; 32]) -> Option<AdminTokenRow>;
    fn admin_tokens(&self) -> Vec<AdminTokenRow>;
    fn revoke_admin_token(&self, name: &str) -> bool;
    fn touch_admin_token(&self, name: &str, now: i64) -> ();
    fn reset_mfa(&self, username: &str) -> MfaReset;
    fn delete_sessions_of(&self, username: &str) -> u64;
    fn count_sessions(&self, seen_since: i64) -> u64;
    fn insert_ticket(&self, row: &TicketRow) -> i64;
    fn claim_ticket(&self, hash: &[u8; 32], username: &str, now: i64) -> bool;
    fn tickets_of(&self, username: &str) -> Vec<TicketRow>;
    fn revoke_ticket(&self, username: &str, id: i64) -> bool;
});

delegate!(AuditStore, admin {
    fn record_audit(&self, row: &AuditRow) -> i64;
    fn audit_events(&self, query: &AuditQuery) -> Vec<AuditRow>;
    fn forget_audit_before(&self, before: i64) -> u64;
});
