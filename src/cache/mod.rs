//! Shared short-lived state: what every gateway instance must see at once
//! but may expire. Throttle counts, WebAuthn ceremonies in flight, the
//! one-time recovery-code reveals, and the messages that tell every
//! instance a session or a user's state changed.
//!
//! The embedded default keeps it in this process (`memory`); several
//! instances share it in Redis (`redis`). The rest of the gateway holds an
//! `Arc<dyn Cache>` and never sees a backend type.

mod memory;

pub use memory::MemoryCache;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the shared cache is unreachable: {0}")]
    Unavailable(String),
    #[error("the shared cache holds a value this gateway cannot read: {0}")]
    Corrupt(String),
}

/// A change every instance must hear of, so that none keeps serving a
/// copy that is no longer true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Invalidation {
    /// A session (by the SHA-256 of its id) ended or changed.
    Session([u8; 32]),
    /// Every session of a user may have changed (a factor removed, a
    /// browser no longer trusted).
    User(String),
}

/// What a subscriber hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    Invalidated(Invalidation),
    /// Messages may have been missed (the connection to the shared cache
    /// dropped, or this subscriber lagged): forget every cached copy.
    MaybeMissed,
}

/// The invalidation channel. Counters and one-time values are the
/// concern of the backends' other traits.
#[async_trait]
pub trait Cache: Send + Sync {
    /// Tells every instance, this one included.
    async fn publish(&self, message: &Invalidation) -> Result<(), CacheError>;
    /// A receiver of every message published from now on.
    fn subscribe(&self) -> broadcast::Receiver<CacheEvent>;
    /// Whether the messages published now reach every instance: false
    /// while the subscription is down.
    fn is_listening(&self) -> bool;
    /// A round trip to the backend.
    async fn ping(&self) -> Result<(), CacheError>;
}
