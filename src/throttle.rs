//! Slows down guessing: counts attempts per key (a user name, a client
//! address, a browser) within a window and refuses attempts past a limit.
//!
//! An attempt is counted when it is reserved, before the password, code or
//! authenticator answer is checked, so parallel requests cannot all pass a
//! check before any of them is counted: with a limit of N, at most N
//! attempts per key and window are ever checked. A success may reset a key.
//!
//! The counts live in the shared cache, so that every gateway instance
//! sees them: five wrong passwords spread over three instances count as
//! five. The memory backend stays bounded whatever clients send (see
//! `cache::memory`): keys are keyed hashes of a fixed size, and a full
//! scope refuses attempts that need a new key: the throttle fails closed,
//! never open. So does a cache that cannot be reached: the attempt is
//! refused with the error.

use std::net::IpAddr;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::cache::{Cache, CacheError, Counter};
use crate::crypto::{sha256, Secrets};

pub use crate::cache::Refusal;

/// Keys a scope holds at most in the memory backend.
pub const KEYS_PER_SCOPE: usize = crate::cache::memory::KEYS_PER_BUCKET;

/// What is counted; each scope has its own limit and its own share of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Password attempts for a user name.
    User,
    /// Password attempts for a user name from a browser it signed in on
    /// before: a budget of its own, so that guessing elsewhere cannot lock
    /// the user out at their own browser.
    UserOnBrowser,
    /// Password attempts from a client address, whatever the user name.
    Address,
    /// Second-factor attempts of a user: codes and WebAuthn answers.
    SecondFactor,
}

impl Scope {
    /// The scope's name in the cache.
    fn bucket(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::UserOnBrowser => "user-on-browser",
            Scope::Address => "address",
            Scope::SecondFactor => "second-factor",
        }
    }
}

/// A counted key: a keyed hash of what it names, so neither its size nor
/// its content is up to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    scope: Scope,
    digest: [u8; 16],
}

/// Why an attempt may not go ahead now.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error("too many attempts or no room to count them: {0:?}")]
    Refusal(Refusal),
    /// The counts cannot be read: the attempt is refused, not let through.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A client address as limits count it: an IPv6 client by its /64.
pub fn subscriber(ip: IpAddr) -> String {
    match crate::gateway::canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        v4 => v4.to_string(),
    }
}

pub struct Throttle {
    cache: Arc<dyn Cache>,
    window: i64,
    hash_key: [u8; 32],
    limits: [u32; 4],
}

impl Throttle {
    /// `limit_of` gives each scope's limit per `window` seconds. The key
    /// hashes come from the gateway's secrets, the same on every instance.
    pub fn new(cache: Arc<dyn Cache>, secrets: &Secrets, window: i64, limit_of: impl Fn(Scope) -> u32) -> Self {
        let hash_key = sha256(secrets.mac("throttle key digests", "").as_bytes());
        let limits = [Scope::User, Scope::UserOnBrowser, Scope::Address, Scope::SecondFactor].map(limit_of);
        Self { cache, window, hash_key, limits }
    }

    /// The key for `parts` (e.g. a user name and a device id) in `scope`.
    pub fn key(&self, scope: Scope, parts: &[&str]) -> Key {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hash_key).expect("HMAC takes any key length");
        mac.update(&[scope as u8]);
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        let mut digest = [0u8; 16];
        let len = digest.len();
        digest.copy_from_slice(&mac.finalize().into_bytes()[..len]);
        Key { scope, digest }
    }

    /// The key of a client address. An IPv6 client counts by its /64, the
    /// block one subscriber usually holds, so that it cannot take a fresh
    /// budget with every address.
    pub fn address_key(&self, ip: IpAddr) -> Key {
        self.key(Scope::Address, &[&subscriber(ip)])
    }

    /// Counts one attempt against every key, if all of them allow it;
    /// otherwise counts nothing and says why. Call it before checking what
    /// the attempt presents.
    pub async fn reserve(&self, keys: &[Key]) -> Result<(), ThrottleError> {
        let counters: Vec<Counter> = keys.iter().map(|key| self.counter(key)).collect();
        self.cache.count_all(&counters, self.window).await?.map_err(ThrottleError::Refusal)
    }

    /// Forgets the attempts of `key` after a success.
    pub async fn reset(&self, key: &Key) -> Result<(), CacheError> {
        self.cache.reset(&self.counter(key)).await
    }

    /// Whether `key` has reached its limit in its current window.
    pub async fn is_limited(&self, key: &Key) -> Result<bool, CacheError> {
        let counter = self.counter(key);
        Ok(self.cache.counted(&counter).await? >= counter.limit)
    }

    /// How many keys a scope holds now.
    pub async fn keys_in(&self, scope: Scope) -> Result<usize, CacheError> {
        self.cache.keys_in(scope.bucket()).await
    }

    fn counter(&self, key: &Key) -> Counter {
        Counter { bucket: key.scope.bucket(), digest: key.digest, limit: self.limits[key.scope as usize] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MemoryCache;
    use crate::clock::ManualClock;

    fn throttle(clock: &ManualClock, capacity: usize, limit: u32) -> Throttle {
        let cache = Arc::new(MemoryCache::with_keys_per_bucket(Arc::new(clock.clone()), capacity));
        Throttle::new(cache, &Secrets::from_master(&[3; 32]), 300, |_| limit)
    }

    /// The outcome of a reservation, without the cache error (there is none
    /// in memory).
    async fn reserve(throttle: &Throttle, keys: &[Key]) -> Result<(), Refusal> {
        match throttle.reserve(keys).await {
            Ok(()) => Ok(()),
            Err(ThrottleError::Refusal(refusal)) => Err(refusal),
            Err(ThrottleError::Cache(e)) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn blocks_after_the_limit_until_the_window_ends() {
        let clock = ManualClock::at(1_000);
        let throttle = throttle(&clock, 100, 3);
        let (alice, address) = (throttle.key(Scope::User, &["alice"]), throttle.key(Scope::Address, &["192.0.2.1"]));
        for _ in 0..3 {
            assert_eq!(reserve(&throttle, &[alice, address]).await, Ok(()));
        }
        assert_eq!(reserve(&throttle, &[alice]).await, Err(Refusal::Limit { retry_after: 300 }));
        let bob = throttle.key(Scope::User, &["bob"]);
        assert_eq!(reserve(&throttle, &[bob, address]).await, Err(Refusal::Limit { retry_after: 300 }));
        assert_eq!(reserve(&throttle, &[bob]).await, Ok(()), "the refusal above counted nothing for bob");
        clock.advance(299);
        assert_eq!(reserve(&throttle, &[alice]).await, Err(Refusal::Limit { retry_after: 1 }));
        clock.advance(1);
        assert_eq!(reserve(&throttle, &[alice]).await, Ok(()));
    }

    #[tokio::test]
    async fn a_reset_forgets_the_attempts() {
        let throttle = throttle(&ManualClock::at(0), 100, 2);
        let alice = throttle.key(Scope::User, &["alice"]);
        reserve(&throttle, &[alice]).await.unwrap();
        reserve(&throttle, &[alice]).await.unwrap();
        throttle.reset(&alice).await.unwrap();
        assert_eq!(reserve(&throttle, &[alice]).await, Ok(()));
        assert_eq!(reserve(&throttle, &[alice]).await, Ok(()));
        assert!(reserve(&throttle, &[alice]).await.is_err());
    }

    #[tokio::test]
    async fn scopes_and_parts_make_distinct_keys() {
        let throttle = throttle(&ManualClock::at(0), 100, 1);
        reserve(&throttle, &[throttle.key(Scope::User, &["ab", "c"])]).await.unwrap();
        assert_eq!(reserve(&throttle, &[throttle.key(Scope::User, &["a", "bc"])]).await, Ok(()));
        assert_eq!(reserve(&throttle, &[throttle.key(Scope::SecondFactor, &["ab", "c"])]).await, Ok(()));
        assert!(reserve(&throttle, &[throttle.key(Scope::User, &["ab", "c"])]).await.is_err());
    }

    #[test]
    fn keys_are_the_same_on_every_instance_with_the_same_secrets() {
        let clock = ManualClock::at(0);
        let (one, two) = (throttle(&clock, 10, 1), throttle(&clock, 10, 1));
        assert_eq!(one.key(Scope::User, &["alice"]), two.key(Scope::User, &["alice"]));
    }

    #[tokio::test]
    async fn a_full_scope_refuses_new_keys_until_old_ones_expire() {
        let clock = ManualClock::at(0);
        let throttle = throttle(&clock, 3, 10);
        for name in ["a", "b", "c"] {
            reserve(&throttle, &[throttle.key(Scope::User, &[name])]).await.unwrap();
            clock.advance(10);
        }
        let newcomer = throttle.key(Scope::User, &["d"]);
        assert_eq!(reserve(&throttle, &[newcomer]).await, Err(Refusal::Full { retry_after: 270 }));
        assert_eq!(reserve(&throttle, &[throttle.key(Scope::User, &["a"])]).await, Ok(()), "known keys still count");
        assert_eq!(reserve(&throttle, &[throttle.key(Scope::Address, &["d"])]).await, Ok(()), "other scopes have room");
        clock.advance(270);
        assert_eq!(reserve(&throttle, &[newcomer]).await, Ok(()), "the oldest key expired and made room");
        assert_eq!(throttle.keys_in(Scope::User).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn expired_keys_are_dropped_and_huge_names_cost_no_more() {
        let clock = ManualClock::at(0);
        let throttle = throttle(&clock, 1_000, 10);
        let long_name = "x".repeat(64 * 1024);
        for i in 0..500 {
            reserve(&throttle, &[throttle.key(Scope::User, &[&format!("{long_name}{i}")])]).await.unwrap();
        }
        assert_eq!(throttle.keys_in(Scope::User).await.unwrap(), 500);
        clock.advance(300);
        reserve(&throttle, &[throttle.key(Scope::Address, &["192.0.2.1"])]).await.unwrap();
        assert_eq!(throttle.keys_in(Scope::User).await.unwrap(), 0);
        assert_eq!(throttle.keys_in(Scope::Address).await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_reservations_never_pass_the_limit() {
        let throttle = Arc::new(throttle(&ManualClock::at(0), 100, 10));
        let key = throttle.key(Scope::User, &["alice"]);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let throttle = throttle.clone();
                tokio::spawn(async move {
                    let mut allowed = 0;
                    for _ in 0..20 {
                        allowed += usize::from(throttle.reserve(&[key]).await.is_ok());
                    }
                    allowed
                })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            allowed += task.await.unwrap();
        }
        assert_eq!(allowed, 10);
    }
}
