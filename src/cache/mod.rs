//! Shared short-lived state: what every gateway instance must see at once
//! but may expire. Throttle counts, WebAuthn ceremonies in flight, the
//! one-time recovery-code reveals, and the messages that tell every
//! instance a session or a user's state changed.
//!
//! The embedded default keeps it in this process (`memory`); several
//! instances share it in Redis (`redis`). The rest of the gateway holds an
//! `Arc<dyn Cache>` and never sees a backend type.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use memory::MemoryCache;
pub use redis::{RedisCache, RedisOptions};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the shared cache is unreachable: {0}")]
    Unavailable(String),
    /// No answer in time: the cache may be down, or this machine too busy
    /// to hear it.
    #[error("the shared cache is unreachable: no answer within {} ms", .0.as_millis())]
    NoAnswer(std::time::Duration),
    #[error("the shared cache holds a value this gateway cannot read: {0}")]
    Corrupt(String),
}

impl CacheError {
    /// Whether the error is the cache being unreachable: an outage the
    /// probe logs once, not once a request.
    pub fn is_outage(&self) -> bool {
        matches!(self, CacheError::Unavailable(_) | CacheError::NoAnswer(_))
    }

    /// Whether the cache said nothing in time, rather than refused.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CacheError::NoAnswer(_))
    }
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

/// The invalidation channel, with the counters and one-time values every
/// backend also keeps.
#[async_trait]
pub trait Cache: Counters + OneTimeValues + Send + Sync {
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

/// A counted key: its bucket (keys of a bucket share the memory backend's
/// capacity), a fixed-size digest naming it, and the count it may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub bucket: &'static str,
    pub digest: [u8; 16],
    pub limit: u32,
}

/// Why a count was refused, and in how many seconds to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A key is at its limit.
    Limit { retry_after: i64 },
    /// A bucket has no room for a new key.
    Full { retry_after: i64 },
}

/// Counts within a window of seconds that starts at a key's first count.
#[async_trait]
pub trait Counters: Send + Sync {
    /// Counts one against every counter if all of them are under their
    /// limit, otherwise counts nothing and says why: all or nothing, and
    /// atomic, so that parallel callers (on any instance) never pass a
    /// limit together.
    async fn count_all(&self, counters: &[Counter], window: i64) -> Result<Result<(), Refusal>, CacheError>;
    /// Forgets a counter's counts.
    async fn reset(&self, counter: &Counter) -> Result<(), CacheError>;
    /// The counts in the counter's current window (0 when it has none).
    async fn counted(&self, counter: &Counter) -> Result<u32, CacheError>;
    /// How many keys a bucket holds now.
    async fn keys_in(&self, bucket: &'static str) -> Result<usize, CacheError>;
}

/// Where a bounded value counts: a pool with a capacity and, optionally, a
/// group within it (a client address) with a smaller one, so that neither
/// a burst nor one client can grow the cache without limit.
#[derive(Debug, Clone, Copy)]
pub struct Bound<'a> {
    pub pool: &'static str,
    pub capacity: usize,
    pub group: Option<(&'a str, usize)>,
}

/// Values that expire, by key. Callers seal what is secret before it gets
/// here: the cache may be another machine.
#[async_trait]
pub trait OneTimeValues: Send + Sync {
    /// Keeps `value` under `key` for `ttl` seconds, replacing any earlier one.
    async fn put(&self, key: &str, value: Vec<u8>, ttl: i64) -> Result<(), CacheError>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Removes and returns the value: of parallel takers, one gets it.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    async fn remove(&self, key: &str) -> Result<(), CacheError>;
    /// [`OneTimeValues::put`] counted in `bound`'s pool and group; false,
    /// with nothing kept, when either is full of unexpired values. A value
    /// replacing one of its key does not count twice.
    async fn put_bounded(&self, key: &str, value: Vec<u8>, ttl: i64, bound: &Bound<'_>) -> Result<bool, CacheError>;
    /// [`OneTimeValues::take`] for a value put with `put_bounded`: frees
    /// its place in the pool and group.
    async fn take_bounded(&self, key: &str, pool: &'static str) -> Result<Option<Vec<u8>>, CacheError>;
}
