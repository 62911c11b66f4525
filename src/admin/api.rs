//! The admin API's request and response bodies, shared by the server and
//! the CLI (its client). Times are Unix seconds.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::Kind;

/// A user and the state of their MFA. Never holds a secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserMfa {
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub groups: Vec<String>,
    pub factors: Vec<FactorInfo>,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    pub sessions: Vec<SessionInfo>,
    pub trusted_browsers: Vec<BrowserInfo>,
    pub throttled: Throttled,
}

/// Which of the user's attempt limits are reached now (lift them with
/// `DELETE /v1/users/{user}/throttle`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Throttled {
    /// Passwords for this user name, from browsers it has not signed in on.
    pub password: bool,
    pub second_factor: bool,
}

/// An enrolled second factor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FactorInfo {
    /// `totp`, `webauthn:N` for a security key or device biometrics,
    /// `oob:N` for a phone number or an email address.
    pub id: String,
    /// `totp`, `security_key`, `platform`, `phone` or `email`.
    pub kind: String,
    pub name: String,
    pub created: i64,
    pub last_used: Option<i64>,
    /// An authenticator whose signature counter went backwards: it may
    /// have been cloned.
    pub possible_clone: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// Names the session in `DELETE /v1/users/{user}/sessions/{session}`.
    pub id: String,
    pub created: i64,
    pub last_seen: i64,
    /// The client's country at sign-in, when known.
    pub country: Option<String>,
    /// The factors done, as RFC 8176 `amr` values.
    pub amr: Vec<String>,
}

/// A browser the user asked to be trusted (it skips adaptive second factors).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BrowserInfo {
    pub first_seen: i64,
    pub last_seen: i64,
    pub trusted_until: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<UserMfa>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Part of the user name, display name or email, in any case.
    pub q: Option<String>,
    /// Only members of this group.
    pub group: Option<String>,
    /// From a page's `next_cursor`.
    pub cursor: Option<String>,
    /// Users per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// What an MFA reset removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MfaResetResult {
    pub factors: u64,
    pub recovery_codes: u64,
    pub browsers: u64,
    pub sessions: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionsEnded {
    pub sessions: u64,
}

/// New recovery codes: shown this once, never stored in clear.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecoveryCodes {
    pub codes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    /// An event kind (see the `kind` filter), kept as written: a newer
    /// gateway may have written kinds this one does not know.
    pub kind: String,
    pub user: Option<String>,
    /// The user, an admin token's name, or `stepgate`.
    pub actor: String,
    pub ip: Option<String>,
    pub country: Option<String>,
    pub app: Option<String>,
    /// `success`, `failure` or `refused`.
    pub outcome: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` for older events; absent on the last page.
    pub next_cursor: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    pub user: Option<String>,
    pub actor: Option<String>,
    pub kind: Option<Kind>,
    /// Events at or after this time.
    pub since: Option<i64>,
    /// Events at or before this time.
    pub until: Option<i64>,
    /// From a page's `next_cursor`: older events.
    pub cursor: Option<i64>,
    /// Only events newer than this id (to follow the log).
    pub after: Option<i64>,
    /// Events per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// An error, as RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProblemDocument {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

/// A ticket to make.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// Seconds the link stays valid (default a day, at most 30 days).
    pub lifetime: Option<i64>,
    /// The origin the link should point at, e.g. `https://intranet.example.com`:
    /// one of the apps' hosts. Without it, only the link's path is given.
    pub base_url: Option<String>,
}

/// A ticket just made: its link is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TicketCreated {
    pub id: i64,
    /// The path and query of the link, to be opened on any app's host.
    pub link: String,
    /// The whole link, when `base_url` was given.
    pub url: Option<String>,
    pub expires: i64,
}

/// A ticket as listed, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TicketInfo {
    pub id: i64,
    pub created: i64,
    pub expires: i64,
    pub used_at: Option<i64>,
    /// The admin token that made it.
    pub created_by: String,
}
