//! Slows down guessing: counts attempts per key (a user name, a client
//! address, a browser) within a window and refuses attempts past a limit.
//!
//! An attempt is counted when it is reserved, before the password, code or
//! authenticator answer is checked, so parallel requests cannot all pass a
//! check before any of them is counted: with a limit of N, at most N
//! attempts per key and window are ever checked. A success may reset a key.
//!
//! Memory stays bounded whatever clients send: keys are kept as keyed
//! hashes of a fixed size, expired keys are dropped oldest first as time
//! passes (the cost is the number dropped, not the number kept), and each
//! scope holds at most `capacity` keys. When a scope is full, attempts that
//! need a new key in it are refused until its oldest key expires: the
//! throttle fails closed, never open.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::{Clock, UnixTime};

/// Keys a scope holds at most. Each costs under 100 bytes, so a full scope
/// takes about 10 MB.
pub const KEYS_PER_SCOPE: usize = 100_000;

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

const SCOPES: [Scope; 4] = [Scope::User, Scope::UserOnBrowser, Scope::Address, Scope::SecondFactor];

/// A counted key: a keyed hash of what it names, so neither its size nor
/// its content is up to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    scope: Scope,
    digest: Digest,
}

type Digest = [u8; 16];

/// Why an attempt was not allowed, and in how many seconds to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A key is at its limit.
    Limit { retry_after: i64 },
    /// A scope has no room for a new key.
    Full { retry_after: i64 },
}

pub struct Throttle {
    clock: Arc<dyn Clock>,
    window: i64,
    hash_key: [u8; 32],
    scopes: Mutex<Vec<Counts>>,
}

/// The counts of one scope.
struct Counts {
    limit: u32,
    capacity: usize,
    by_key: HashMap<Digest, Count>,
    /// Keys in the order they expire: every key's window is equally long
    /// and starts when the key is added, so this is the order of adding.
    expiry: VecDeque<(UnixTime, Digest)>,
}

struct Count {
    expires: UnixTime,
    attempts: u32,
}

impl Throttle {
    /// `limit_of` gives each scope's limit per `window` seconds.
    pub fn new(clock: Arc<dyn Clock>, window: i64, capacity: usize, limit_of: impl Fn(Scope) -> u32) -> Self {
        let scopes = SCOPES.iter().map(|scope| Counts::new(limit_of(*scope), capacity)).collect();
        Self { clock, window, hash_key: crate::crypto::random_bytes(), scopes: Mutex::new(scopes) }
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
        let mut digest = Digest::default();
        let len = digest.len();
        digest.copy_from_slice(&mac.finalize().into_bytes()[..len]);
        Key { scope, digest }
    }

    /// Counts one attempt against every key, if all of them allow it;
    /// otherwise counts nothing and says why. Call it before checking what
    /// the attempt presents.
    pub fn reserve(&self, keys: &[Key]) -> Result<(), Refusal> {
        let now = self.clock.now();
        let mut scopes = self.scopes();
        for counts in scopes.iter_mut() {
            counts.drop_expired(now);
        }
        for key in keys {
            scopes[key.scope as usize].check(&key.digest, now)?;
        }
        for key in keys {
            scopes[key.scope as usize].count(key.digest, now + self.window);
        }
        Ok(())
    }

    /// Forgets the attempts of `key` after a success. The key keeps its
    /// place until its window ends, so the expiry order stays true.
    pub fn reset(&self, key: &Key) {
        if let Some(count) = self.scopes()[key.scope as usize].by_key.get_mut(&key.digest) {
            count.attempts = 0;
        }
    }

    /// How many keys a scope holds now.
    pub fn keys_in(&self, scope: Scope) -> usize {
        self.scopes()[scope as usize].by_key.len()
    }

    fn scopes(&self) -> MutexGuard<'_, Vec<Counts>> {
        // Every update leaves the counts whole, so a panic elsewhere while
        // the lock was held leaves nothing half done.
        self.scopes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Counts {
    fn new(limit: u32, capacity: usize) -> Self {
        Self { limit, capacity, by_key: HashMap::new(), expiry: VecDeque::new() }
    }

    fn drop_expired(&mut self, now: UnixTime) {
        while let Some((expires, digest)) = self.expiry.front().copied() {
            if expires > now {
                break;
            }
            self.by_key.remove(&digest);
            self.expiry.pop_front();
        }
    }

    fn check(&self, digest: &Digest, now: UnixTime) -> Result<(), Refusal> {
        match self.by_key.get(digest) {
            Some(count) if count.attempts >= self.limit => Err(Refusal::Limit { retry_after: count.expires - now }),
            Some(_) => Ok(()),
            None if self.by_key.len() >= self.capacity => {
                let oldest = self.expiry.front().map_or(now + 1, |(expires, _)| *expires);
                Err(Refusal::Full { retry_after: oldest - now })
            }
            None => Ok(()),
        }
    }

    fn count(&mut self, digest: Digest, expires: UnixTime) {
        let count = self.by_key.entry(digest).or_insert_with(|| {
            self.expiry.push_back((expires, digest));
            Count { expires, attempts: 0 }
        });
        count.attempts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn throttle(clock: &ManualClock, capacity: usize, limit: u32) -> Throttle {
        Throttle::new(Arc::new(clock.clone()), 300, capacity, |_| limit)
    }

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let clock = ManualClock::at(1_000);
        let throttle = throttle(&clock, 100, 3);
        let (alice, address) = (throttle.key(Scope::User, &["alice"]), throttle.key(Scope::Address, &["192.0.2.1"]));
        for _ in 0..3 {
            assert_eq!(throttle.reserve(&[alice, address]), Ok(()));
        }
        assert_eq!(throttle.reserve(&[alice]), Err(Refusal::Limit { retry_after: 300 }));
        let bob = throttle.key(Scope::User, &["bob"]);
        assert_eq!(throttle.reserve(&[bob, address]), Err(Refusal::Limit { retry_after: 300 }));
        assert_eq!(throttle.reserve(&[bob]), Ok(()), "the refusal above counted nothing for bob");
        clock.advance(299);
        assert_eq!(throttle.reserve(&[alice]), Err(Refusal::Limit { retry_after: 1 }));
        clock.advance(1);
        assert_eq!(throttle.reserve(&[alice]), Ok(()));
    }

    #[test]
    fn a_reset_forgets_the_attempts() {
        let throttle = throttle(&ManualClock::at(0), 100, 2);
        let alice = throttle.key(Scope::User, &["alice"]);
        throttle.reserve(&[alice]).unwrap();
        throttle.reserve(&[alice]).unwrap();
        throttle.reset(&alice);
        assert_eq!(throttle.reserve(&[alice]), Ok(()));
        assert_eq!(throttle.reserve(&[alice]), Ok(()));
        assert!(throttle.reserve(&[alice]).is_err());
    }

    #[test]
    fn scopes_and_parts_make_distinct_keys() {
        let throttle = throttle(&ManualClock::at(0), 100, 1);
        throttle.reserve(&[throttle.key(Scope::User, &["ab", "c"])]).unwrap();
        assert_eq!(throttle.reserve(&[throttle.key(Scope::User, &["a", "bc"])]), Ok(()));
        assert_eq!(throttle.reserve(&[throttle.key(Scope::SecondFactor, &["ab", "c"])]), Ok(()));
        assert!(throttle.reserve(&[throttle.key(Scope::User, &["ab", "c"])]).is_err());
    }

    #[test]
    fn a_full_scope_refuses_new_keys_until_old_ones_expire() {
        let clock = ManualClock::at(0);
        let throttle = throttle(&clock, 3, 10);
        for name in ["a", "b", "c"] {
            throttle.reserve(&[throttle.key(Scope::User, &[name])]).unwrap();
            clock.advance(10);
        }
        let newcomer = throttle.key(Scope::User, &["d"]);
        assert_eq!(throttle.reserve(&[newcomer]), Err(Refusal::Full { retry_after: 270 }));
        assert_eq!(throttle.reserve(&[throttle.key(Scope::User, &["a"])]), Ok(()), "known keys still count");
        assert_eq!(throttle.reserve(&[throttle.key(Scope::Address, &["d"])]), Ok(()), "other scopes have room");
        clock.advance(270);
        assert_eq!(throttle.reserve(&[newcomer]), Ok(()), "the oldest key expired and made room");
        assert_eq!(throttle.keys_in(Scope::User), 3);
    }

    #[test]
    fn expired_keys_are_dropped_and_huge_names_cost_no_more() {
        let clock = ManualClock::at(0);
        let throttle = throttle(&clock, 1_000, 10);
        let long_name = "x".repeat(64 * 1024);
        for i in 0..500 {
            throttle.reserve(&[throttle.key(Scope::User, &[&format!("{long_name}{i}")])]).unwrap();
        }
        assert_eq!(throttle.keys_in(Scope::User), 500);
        clock.advance(300);
        throttle.reserve(&[throttle.key(Scope::Address, &["192.0.2.1"])]).unwrap();
        assert_eq!(throttle.keys_in(Scope::User), 0);
        assert_eq!(throttle.keys_in(Scope::Address), 1);
    }

    #[test]
    fn parallel_reservations_never_pass_the_limit() {
        let throttle = Arc::new(throttle(&ManualClock::at(0), 100, 10));
        let key = throttle.key(Scope::User, &["alice"]);
        let start = Arc::new(std::sync::Barrier::new(8));
        let allowed: usize = (0..8)
            .map(|_| {
                let (throttle, start) = (throttle.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    (0..20).filter(|_| throttle.reserve(&[key]).is_ok()).count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(allowed, 10);
    }
}
