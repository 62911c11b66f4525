//! What the management plane keeps: its API tokens and the audit log, and
//! the changes an administrator makes to a user's MFA in one step.

use async_trait::async_trait;
use sqlx::{Database, QueryBuilder};

use super::StoreError;

/// An admin API token as stored: its SHA-256, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenRow {
    pub name: String,
    pub hash: [u8; 32],
    pub scopes: Vec<String>,
    /// The groups whose users the token may see; empty for every user.
    pub groups: Vec<String>,
    pub created: i64,
    pub expires: Option<i64>,
    pub last_used: Option<i64>,
}

/// What resetting a user's MFA removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MfaReset {
    pub factors: u64,
    pub recovery_codes: u64,
    pub browsers: u64,
    pub sessions: u64,
}

/// An enrolment ticket as stored: its SHA-256, never the link's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRow {
    /// Given by the store; ignored when inserting.
    pub id: i64,
    pub username: String,
    pub hash: [u8; 32],
    pub created: i64,
    pub expires: i64,
    pub used_at: Option<i64>,
    /// The admin token that made it.
    pub created_by: String,
}

#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Stores a new token; false when one of that name exists.
    async fn insert_admin_token(&self, row: &AdminTokenRow) -> Result<bool, StoreError>;
    async fn admin_token(&self, hash: &[u8; 32]) -> Result<Option<AdminTokenRow>, StoreError>;
    /// Every token, by name.
    async fn admin_tokens(&self) -> Result<Vec<AdminTokenRow>, StoreError>;
    /// Deletes a token; false when there is none of that name.
    async fn revoke_admin_token(&self, name: &str) -> Result<bool, StoreError>;
    async fn touch_admin_token(&self, name: &str, now: i64) -> Result<(), StoreError>;
    /// Removes, in one transaction, the user's authenticator app, WebAuthn
    /// credentials, recovery codes, known browsers and sessions: the next
    /// sign-in is that of a user who never enrolled.
    async fn reset_mfa(&self, username: &str) -> Result<MfaReset, StoreError>;
    /// Deletes every session of the user; returns how many.
    async fn delete_sessions_of(&self, username: &str) -> Result<u64, StoreError>;
    /// How many sessions were seen at or after `seen_since`.
    async fn count_sessions(&self, seen_since: i64) -> Result<u64, StoreError>;
    /// Stores a new ticket; returns its id.
    async fn insert_ticket(&self, row: &TicketRow) -> Result<i64, StoreError>;
    /// Spends the ticket if it is the user's, unused and not expired at
    /// `now`; false otherwise. One statement, so it is spent once.
    async fn claim_ticket(&self, hash: &[u8; 32], username: &str, now: i64) -> Result<bool, StoreError>;
    /// The user's tickets, newest first.
    async fn tickets_of(&self, username: &str) -> Result<Vec<TicketRow>, StoreError>;
    /// Deletes one of the user's tickets; false when there is no such one.
    async fn revoke_ticket(&self, username: &str, id: i64) -> Result<bool, StoreError>;
}

/// One security event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Given by the store; ignored when recording.
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub username: Option<String>,
    pub actor: String,
    pub ip: Option<String>,
    pub country: Option<String>,
    pub app: Option<String>,
    pub outcome: String,
    /// A JSON object.
    pub details: String,
}

/// Which events to read: all filters must hold. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub user: Option<String>,
    pub actor: Option<String>,
    pub kind: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only events older than this one (the cursor of the page before).
    pub before_id: Option<i64>,
    /// Only events newer than this one (to follow the log).
    pub after_id: Option<i64>,
    /// Only events about these users (a token limited to some groups).
    pub within_users: Option<Vec<String>>,
    pub limit: u32,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Records an event; returns its id.
    async fn record_audit(&self, row: &AuditRow) -> Result<i64, StoreError>;
    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRow>, StoreError>;
    /// Forgets events older than `before`; returns how many.
    async fn forget_audit_before(&self, before: i64) -> Result<u64, StoreError>;
}

/// The tables [`AdminStore::reset_mfa`] empties of a user, in the order of
/// its counts: the authenticator app, WebAuthn credentials, phone numbers
/// and email addresses, recovery
/// codes, known browsers, sessions.
pub(super) const MFA_TABLES: [&str; 6] =
    ["totp_credentials", "webauthn_credentials", "oob_factors", "recovery_codes", "known_devices", "sessions"];

/// The tables of [`super::admin_tables`] a snapshot holds.
pub(super) const SNAPSHOT_TABLES: [&str; 4] = ["admin_tokens", "enrolment_tickets", "audit_events", "oob_factors"];

pub(super) const AUDIT_COLUMNS: &str = "id, at, kind, username, actor, ip, country, app, outcome, details";

/// The SELECT for `query`, with its values bound, for either backend.
pub(super) fn audit_select<'q, DB: Database>(query: &'q AuditQuery) -> QueryBuilder<'q, DB>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut select = QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE TRUE"));
    let text_filters = [("username", &query.user), ("actor", &query.actor), ("kind", &query.kind)];
    for (column, value) in text_filters {
        if let Some(value) = value {
            select.push(format_args!(" AND {column} = ")).push_bind(value.as_str());
        }
    }
    let number_filters = [("at >= ", query.since), ("at <= ", query.until), ("id < ", query.before_id), ("id > ", query.after_id)];
    for (condition, value) in number_filters {
        if let Some(value) = value {
            select.push(format_args!(" AND {condition}")).push_bind(value);
        }
    }
    match &query.within_users {
        Some(users) if users.is_empty() => {
            select.push(" AND FALSE");
        }
        Some(users) => {
            select.push(" AND username IN (");
            let mut list = select.separated(", ");
            for user in users {
                list.push_bind(user.as_str());
            }
            select.push(")");
        }
        None => {}
    }
    select.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(query.limit));
    select
}

pub(super) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// A JSON list as written by [`json_list`]; empty if it is not one.
pub(super) fn parse_json_list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}
