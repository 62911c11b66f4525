//! Admin API tokens: created on the command line, shown once, stored as
//! their SHA-256, each with its scopes and, for a customer's own
//! administrators (B2B), the groups whose users it may see.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use super::AdminState;
use crate::crypto::{random_token, sha256};
use crate::store::{AdminTokenRow, Store, StoreError};
use crate::users::{Current, User};

/// Every token starts so, which makes one easy to spot in a leak scan.
pub const TOKEN_PREFIX: &str = "sgat_";
const MAX_NAME_BYTES: usize = 64;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    UsersRead,
    FactorsWrite,
    SessionsWrite,
    ThrottlesWrite,
    TicketsWrite,
    AuditRead,
    MetricsRead,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::UsersRead,
        Scope::FactorsWrite,
        Scope::SessionsWrite,
        Scope::ThrottlesWrite,
        Scope::TicketsWrite,
        Scope::AuditRead,
        Scope::MetricsRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::UsersRead => "users:read",
            Scope::FactorsWrite => "factors:write",
            Scope::SessionsWrite => "sessions:write",
            Scope::ThrottlesWrite => "throttles:write",
            Scope::TicketsWrite => "tickets:write",
            Scope::AuditRead => "audit:read",
            Scope::MetricsRead => "metrics:read",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token name is 1 to 64 letters, digits, `.`, `_` or `-`")]
    BadName,
    #[error("unknown scope `{0}`; the scopes are {1}")]
    UnknownScope(String, String),
    #[error("a token needs at least one scope")]
    NoScope,
    #[error("a group name may not be empty")]
    EmptyGroup,
    #[error("a token named `{0}` exists; revoke it first or choose another name")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub scopes: Vec<String>,
    /// Limits the token to users of these groups; empty for every user.
    pub groups: Vec<String>,
    /// Seconds from now; None for a token that does not expire.
    pub lifetime: Option<i64>,
}

/// Stores a new token and returns it: the only time it is ever seen.
pub async fn create_token(store: &dyn Store, now: i64, new: &NewToken) -> Result<String, TokenError> {
    let name_ok = !new.name.is_empty()
        && new.name.len() <= MAX_NAME_BYTES
        && new.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        return Err(TokenError::BadName);
    }
    if new.scopes.is_empty() {
        return Err(TokenError::NoScope);
    }
    let mut scopes = Vec::new();
    for scope in &new.scopes {
        let Some(scope) = Scope::parse(scope) else {
            let known: Vec<&str> = Scope::ALL.iter().map(|s| s.name()).collect();
            return Err(TokenError::UnknownScope(scope.clone(), known.join(", ")));
        };
        scopes.push(scope.name().to_string());
    }
    if new.groups.iter().any(|group| group.trim().is_empty()) {
        return Err(TokenError::EmptyGroup);
    }
    let token = format!("{TOKEN_PREFIX}{}", random_token());
    let row = AdminTokenRow {
        name: new.name.clone(),
        hash: sha256(token.as_bytes()),
        scopes,
        groups: new.groups.clone(),
        created: now,
        expires: new.lifetime.map(|lifetime| now + lifetime),
        last_used: None,
    };
    match store.insert_admin_token(&row).await? {
        true => Ok(token),
        false => Err(TokenError::Exists(new.name.clone())),
    }
}

/// The holder of a valid token, as the request's handler sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name: the actor of what it does in the audit log.
    pub name: String,
    scopes: Vec<Scope>,
    groups: Vec<String>,
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        match self.scopes.contains(&scope) {
            true => Ok(()),
            false => Err(Problem::new(StatusCode::FORBIDDEN, format!("This token lacks the scope `{}`.", scope.name()))),
        }
    }

    /// Whether the token is limited to some groups (a customer's admin).
    pub fn is_limited(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Whether the token may see and change this user.
    pub fn sees(&self, user: &User) -> bool {
        !self.is_limited() || user.groups.iter().any(|group| self.groups.contains(group))
    }

    /// The user of that name, if the token may see them; 404 otherwise,
    /// so that a limited token cannot learn who exists outside its groups.
    /// A directory's user is read from it (they may not have signed in yet).
    pub async fn user(&self, users: &crate::users::Directory, name: &str) -> Result<Arc<User>, Problem> {
        match users.current(name).await {
            Current::User(user) if self.sees(&user) => Ok(user),
            Current::User(_) | Current::Gone => Err(Problem::no_such_user()),
            // A provider's users are known once they signed in here; there is nothing to ask.
            Current::Unknown if users.oidc_provider().is_some() => Err(Problem::no_such_user()),
            Current::Unknown => Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the user directory cannot be reached")),
        }
    }
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Problem> {
        let token = bearer_token(parts).ok_or_else(Problem::unauthenticated)?;
        let gateway = state.live.current();
        let hash = sha256(token.as_bytes());
        let row = gateway.store.admin_token(&hash).await?.ok_or_else(Problem::unauthenticated)?;
        let now = gateway.clock.now();
        let valid = bool::from(row.hash.ct_eq(&hash)) && row.expires.is_none_or(|expires| now < expires);
        if !valid {
            return Err(Problem::unauthenticated());
        }
        gateway.store.touch_admin_token(&row.name, now).await?;
        Ok(Caller { name: row.name, scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(), groups: row.groups })
    }
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && token.starts_with(TOKEN_PREFIX)).then_some(token)
}
