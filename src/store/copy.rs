//! Copying the durable data from one backend to another, for moving a
//! single SQLite instance to PostgreSQL (or back).
//!
//! Sessions are not copied: they are short-lived, and users simply sign in
//! again after the move. Everything else a user enrolled or earned is:
//! authenticator apps, WebAuthn credentials (with their ids), recovery codes
//! (hashes, used or not), known and trusted browsers, the sign-in history,
//! and the signing keys (so that assertions already handed out still
//! verify); and what the management plane keeps: admin tokens (as hashes),
//! enrolment tickets (as hashes, spent or not) and the audit log.

use std::fmt;

use super::{AdminTokenRow, AuditRow, DeviceRow, OobRow, SignInRow, Store, StoreError, TicketRow, TotpRow, WebauthnRow};

/// One recovery code, as stored: a keyed hash, never the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryCodeRow {
    pub username: String,
    pub hash: Vec<u8>,
    pub created: i64,
    pub used_at: Option<i64>,
}

/// A browser a user completed a second factor on, with its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDeviceRow {
    pub username: String,
    pub device: DeviceRow,
}

/// The durable data of a store, sessions aside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub totp: Vec<TotpRow>,
    /// Ordered by id; ids are kept on import.
    pub webauthn: Vec<WebauthnRow>,
    /// Phone numbers and email addresses; ordered by id, ids kept on import.
    pub oob: Vec<OobRow>,
    pub recovery_codes: Vec<RecoveryCodeRow>,
    pub devices: Vec<KnownDeviceRow>,
    /// Oldest first, so that the order of equal times survives an import.
    pub sign_ins: Vec<SignInRow>,
    /// The sealed signing keys as JSON; on import, None keeps the target's.
    pub signing_keys: Option<String>,
    pub admin_tokens: Vec<AdminTokenRow>,
    /// Ordered by id; ids are kept on import.
    pub tickets: Vec<TicketRow>,
    /// Ordered by id; ids are kept on import.
    pub audit: Vec<AuditRow>,
}

impl Snapshot {
    pub fn report(&self) -> CopyReport {
        CopyReport {
            totp: self.totp.len(),
            webauthn: self.webauthn.len(),
            oob: self.oob.len(),
            recovery_codes: self.recovery_codes.len(),
            devices: self.devices.len(),
            sign_ins: self.sign_ins.len(),
            signing_keys: self.signing_keys.is_some(),
            admin_tokens: self.admin_tokens.len(),
            tickets: self.tickets.len(),
            audit_events: self.audit.len(),
        }
    }
}

/// How much was copied, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub totp: usize,
    pub webauthn: usize,
    pub oob: usize,
    pub recovery_codes: usize,
    pub devices: usize,
    pub sign_ins: usize,
    pub signing_keys: bool,
    pub admin_tokens: usize,
    pub tickets: usize,
    pub audit_events: usize,
}

impl fmt::Display for CopyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "authenticator apps:   {}", self.totp)?;
        writeln!(f, "webauthn credentials: {}", self.webauthn)?;
        writeln!(f, "phone numbers and email addresses: {}", self.oob)?;
        writeln!(f, "recovery codes:       {}", self.recovery_codes)?;
        writeln!(f, "known browsers:       {}", self.devices)?;
        writeln!(f, "sign-ins:             {}", self.sign_ins)?;
        writeln!(f, "signing keys:         {}", if self.signing_keys { "copied" } else { "none in the source" })?;
        writeln!(f, "admin tokens:         {}", self.admin_tokens)?;
        writeln!(f, "enrolment tickets:    {}", self.tickets)?;
        write!(f, "audit events:         {}", self.audit_events)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot read the source store: {0}")]
    Source(StoreError),
    #[error("cannot write the target store: {0}")]
    Target(StoreError),
    #[error("the target store already holds data; nothing was copied (replace it with --overwrite)")]
    TargetNotEmpty,
}

/// Copies the durable data (see the module comment) from `from` to `to`,
/// in one transaction on the target. A target that holds data is refused
/// unless `overwrite`, in which case its data is replaced.
pub async fn copy(from: &dyn Store, to: &dyn Store, overwrite: bool) -> Result<CopyReport, CopyError> {
    let snapshot = from.export_snapshot().await.map_err(CopyError::Source)?;
    match to.import_snapshot(&snapshot, overwrite).await.map_err(CopyError::Target)? {
        true => Ok(snapshot.report()),
        false => Err(CopyError::TargetNotEmpty),
    }
}

/// Opens both stores (migrating them) and copies from one to the other:
/// what `stepgate store copy` does.
/// A SQLite source must exist: opening a mistyped directory would create
/// an empty store and copy nothing, successfully.
pub async fn copy_between(from: &super::StoreChoice, to: &super::StoreChoice, overwrite: bool) -> Result<CopyReport, CopyError> {
    if let super::StoreChoice::Sqlite { data_dir } = from {
        if !data_dir.join(super::sqlite::DATABASE_FILE).exists() {
            let missing = format!("there is no {} in {}", super::sqlite::DATABASE_FILE, data_dir.display());
            return Err(CopyError::Source(StoreError::Config(missing)));
        }
    }
    let source = super::open(from).await.map_err(CopyError::Source)?;
    let target = super::open(to).await.map_err(CopyError::Target)?;
    copy(source.as_ref(), target.as_ref(), overwrite).await
}
