//! Enrolment tickets: a one-time, expiring link an administrator makes for
//! one user (Auth0's "enrollment tickets"). Opened by that user after the
//! password, it lets the session enrol a factor as a first one (which also
//! passes the second factor) even though self-enrolment is off or an
//! earlier factor is lost: the help desk's way back in after an MFA reset.
//!
//! The link carries a 256-bit secret in its query (never in the path,
//! which the access log records); the store keeps its SHA-256. Spending
//! it is one conditional write, so it works once. What it grants is kept
//! in the shared cache for a few minutes, for the session that spent it.

use std::sync::Arc;

use crate::cache::{Cache, CacheError};
use crate::clock::Clock;
use crate::crypto::{random_token, sha256};
use crate::store::{Store, StoreError, TicketRow};

/// Where a ticket is opened, on any app's host.
pub const TICKET_PATH: &str = "/.stepgate/ticket";
/// How long a ticket is valid unless the administrator says otherwise.
pub const DEFAULT_LIFETIME_SECS: i64 = 24 * 3600;
/// The longest a ticket may be valid.
pub const MAX_LIFETIME_SECS: i64 = 30 * 24 * 3600;
/// How long a spent ticket's grant lasts for its session.
const GRANT_SECS: i64 = 15 * 60;

#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A ticket just made: shown once.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub id: i64,
    /// The path and query of the link, secret included.
    pub link: String,
    pub expires: i64,
}

pub struct Tickets {
    store: Arc<dyn Store>,
    cache: Arc<dyn Cache>,
    clock: Arc<dyn Clock>,
}

impl Tickets {
    pub fn new(store: Arc<dyn Store>, cache: Arc<dyn Cache>, clock: Arc<dyn Clock>) -> Self {
        Self { store, cache, clock }
    }

    /// A ticket for `username`, valid for `lifetime` seconds.
    pub async fn create(&self, username: &str, lifetime: i64, created_by: &str) -> Result<NewTicket, TicketError> {
        let secret = random_token();
        let now = self.clock.now();
        let row = TicketRow {
            id: 0,
            username: username.into(),
            hash: sha256(secret.as_bytes()),
            created: now,
            expires: now + lifetime,
            used_at: None,
            created_by: created_by.into(),
        };
        let id = self.store.insert_ticket(&row).await?;
        Ok(NewTicket { id, link: format!("{TICKET_PATH}?t={secret}"), expires: row.expires })
    }

    /// Spends the ticket whose secret is `secret` for the signed-in
    /// `username`'s session `session`; false when it is not theirs, used,
    /// revoked or expired.
    pub async fn redeem(&self, secret: &str, username: &str, session: &[u8; 32]) -> Result<bool, TicketError> {
        let claimed = self.store.claim_ticket(&sha256(secret.as_bytes()), username, self.clock.now()).await?;
        if claimed {
            self.cache.put(&grant_key(username), session.to_vec(), GRANT_SECS).await?;
        }
        Ok(claimed)
    }

    /// Whether this session of the user holds a spent ticket's grant.
    pub async fn granted(&self, username: &str, session: &[u8; 32]) -> Result<bool, CacheError> {
        Ok(self.cache.get(&grant_key(username)).await?.is_some_and(|holder| holder == session))
    }

    /// Ends the grant once a factor has been enrolled with it.
    pub async fn end_grant(&self, username: &str) -> Result<(), CacheError> {
        self.cache.remove(&grant_key(username)).await
    }
}

fn grant_key(username: &str) -> String {
    format!("enrolment-grant:{username}")
}
