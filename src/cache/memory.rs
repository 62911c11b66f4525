//! The embedded cache: everything in this process, for a single instance.
//!
//! Memory stays bounded whatever clients send. Counters are kept by
//! fixed-size digests; expired ones are dropped oldest first as time passes
//! (the cost is the number dropped, not the number kept), and each bucket
//! holds at most `keys_per_bucket` keys: when one is full, counts that need
//! a new key in it are refused until its oldest key expires (fail closed,
//! never open). Bounded values live in pools with a capacity of their own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Bound, Cache, CacheError, CacheEvent, Counter, Counters, Invalidation, OneTimeValues, Refusal};
use crate::clock::{Clock, UnixTime};

/// Keys a counter bucket holds at most. Each costs under 100 bytes, so a
/// full bucket takes about 10 MB.
pub const KEYS_PER_BUCKET: usize = 100_000;
/// Messages a slow subscriber may fall behind by before it is told it
/// missed some.
pub(super) const CHANNEL_CAPACITY: usize = 1024;

pub struct MemoryCache {
    clock: Arc<dyn Clock>,
    keys_per_bucket: usize,
    counters: Mutex<HashMap<&'static str, Counts>>,
    values: Mutex<HashMap<String, Entry>>,
    pools: Mutex<HashMap<&'static str, Pool>>,
    events: broadcast::Sender<CacheEvent>,
}

impl MemoryCache {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_keys_per_bucket(clock, KEYS_PER_BUCKET)
    }

    /// With a smaller bound on counter keys (tests fill it).
    pub fn with_keys_per_bucket(clock: Arc<dyn Clock>, keys_per_bucket: usize) -> Self {
        let (events, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self { clock, keys_per_bucket, counters: Mutex::default(), values: Mutex::default(), pools: Mutex::default(), events }
    }
}

/// Every update leaves the maps whole, so a panic elsewhere while a lock
/// was held leaves nothing half done.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Cache for MemoryCache {
    async fn publish(&self, message: &Invalidation) -> Result<(), CacheError> {
        // No subscriber is no error: nobody holds a copy to forget.
        let _ = self.events.send(CacheEvent::Invalidated(message.clone()));
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.events.subscribe()
    }

    fn is_listening(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

#[async_trait]
impl Counters for MemoryCache {
    async fn count_all(&self, counters: &[Counter], window: i64) -> Result<Result<(), Refusal>, CacheError> {
        let now = self.clock.now();
        let mut buckets = lock(&self.counters);
        for counts in buckets.values_mut() {
            counts.drop_expired(now);
        }
        for counter in counters {
            if let Some(counts) = buckets.get(counter.bucket) {
                if let Err(refusal) = counts.check(counter, now, self.keys_per_bucket) {
                    return Ok(Err(refusal));
                }
            }
        }
        for counter in counters {
            buckets.entry(counter.bucket).or_default().count(counter.digest, now + window);
        }
        Ok(Ok(()))
    }

    /// The key keeps its place until its window ends, so the expiry order
    /// stays true.
    async fn reset(&self, counter: &Counter) -> Result<(), CacheError> {
        if let Some(count) = lock(&self.counters).get_mut(counter.bucket).and_then(|counts| counts.by_key.get_mut(&counter.digest)) {
            count.attempts = 0;
        }
        Ok(())
    }

    async fn counted(&self, counter: &Counter) -> Result<u32, CacheError> {
        let now = self.clock.now();
        let buckets = lock(&self.counters);
        let count = buckets.get(counter.bucket).and_then(|counts| counts.by_key.get(&counter.digest));
        Ok(count.filter(|count| count.expires > now).map_or(0, |count| count.attempts))
    }

    async fn keys_in(&self, bucket: &'static str) -> Result<usize, CacheError> {
        Ok(lock(&self.counters).get(bucket).map_or(0, |counts| counts.by_key.len()))
    }
}

/// The counts of one bucket.
#[derive(Default)]
struct Counts {
    by_key: HashMap<Digest, Count>,
    /// Keys in the order they expire: every key's window is equally long
    /// and starts when the key is added, so this is the order of adding.
    expiry: VecDeque<(UnixTime, Digest)>,
}

type Digest = [u8; 16];

struct Count {
    expires: UnixTime,
    attempts: u32,
}

impl Counts {
    fn drop_expired(&mut self, now: UnixTime) {
        while let Some((expires, digest)) = self.expiry.front().copied() {
            if expires > now {
                break;
            }
            self.by_key.remove(&digest);
            self.expiry.pop_front();
        }
    }

    fn check(&self, counter: &Counter, now: UnixTime, capacity: usize) -> Result<(), Refusal> {
        match self.by_key.get(&counter.digest) {
            Some(count) if count.attempts >= counter.limit => Err(Refusal::Limit { retry_after: count.expires - now }),
            Some(_) => Ok(()),
            None if self.by_key.len() >= capacity => {
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

struct Entry {
    value: Vec<u8>,
    expires: UnixTime,
}

#[async_trait]
impl OneTimeValues for MemoryCache {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: i64) -> Result<(), CacheError> {
        let now = self.clock.now();
        let mut values = lock(&self.values);
        values.retain(|_, entry| entry.expires > now);
        values.insert(key.to_string(), Entry { value, expires: now + ttl });
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let now = self.clock.now();
        Ok(lock(&self.values).get(key).filter(|entry| entry.expires > now).map(|entry| entry.value.clone()))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let now = self.clock.now();
        Ok(lock(&self.values).remove(key).filter(|entry| entry.expires > now).map(|entry| entry.value))
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        lock(&self.values).remove(key);
        Ok(())
    }

    async fn put_bounded(&self, key: &str, value: Vec<u8>, ttl: i64, bound: &Bound<'_>) -> Result<bool, CacheError> {
        let now = self.clock.now();
        let mut pools = lock(&self.pools);
        let pool = pools.entry(bound.pool).or_default();
        let entry = Pooled { value, expires: now + ttl, group: bound.group.map(|(group, _)| group.to_string()) };
        Ok(pool.insert(key, entry, bound, now))
    }

    async fn take_bounded(&self, key: &str, pool: &'static str) -> Result<Option<Vec<u8>>, CacheError> {
        let now = self.clock.now();
        let taken = lock(&self.pools).get_mut(pool).and_then(|pool| pool.remove(key));
        Ok(taken.filter(|entry| entry.expires > now).map(|entry| entry.value))
    }
}

/// Bounded values, counted in all and per group.
#[derive(Default)]
struct Pool {
    entries: HashMap<String, Pooled>,
    per_group: HashMap<String, usize>,
}

struct Pooled {
    value: Vec<u8>,
    expires: UnixTime,
    group: Option<String>,
}

impl Pool {
    fn insert(&mut self, key: &str, entry: Pooled, bound: &Bound<'_>, now: UnixTime) -> bool {
        // A new value replaces the key's earlier one.
        self.remove(key);
        if self.is_full(bound) {
            // Expired values count until swept: only sweep when it matters.
            self.sweep(now);
        }
        if self.is_full(bound) {
            return false;
        }
        if let Some(group) = &entry.group {
            *self.per_group.entry(group.clone()).or_default() += 1;
        }
        self.entries.insert(key.to_string(), entry);
        true
    }

    fn is_full(&self, bound: &Bound<'_>) -> bool {
        let group_full = bound.group.is_some_and(|(group, limit)| self.per_group.get(group).copied().unwrap_or(0) >= limit);
        self.entries.len() >= bound.capacity || group_full
    }

    fn remove(&mut self, key: &str) -> Option<Pooled> {
        let entry = self.entries.remove(key)?;
        if let Some(group) = &entry.group {
            if let Some(count) = self.per_group.get_mut(group) {
                *count -= 1;
                if *count == 0 {
                    self.per_group.remove(group);
                }
            }
        }
        Some(entry)
    }

    fn sweep(&mut self, now: UnixTime) {
        let expired: Vec<String> = self.entries.iter().filter(|(_, entry)| entry.expires <= now).map(|(key, _)| key.clone()).collect();
        for key in expired {
            self.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn bound(capacity: usize, group: Option<(&str, usize)>) -> Bound<'_> {
        Bound { pool: "test", capacity, group }
    }

    #[tokio::test]
    async fn bounded_values_are_refused_past_the_pool_or_group_capacity() {
        let clock = ManualClock::at(0);
        let cache = MemoryCache::new(Arc::new(clock.clone()));
        assert!(cache.put_bounded("a", b"1".to_vec(), 60, &bound(2, Some(("x", 1)))).await.unwrap());
        assert!(!cache.put_bounded("b", b"2".to_vec(), 60, &bound(2, Some(("x", 1)))).await.unwrap(), "group x is full");
        assert!(cache.put_bounded("a", b"3".to_vec(), 60, &bound(2, Some(("x", 1)))).await.unwrap(), "a replacement fits");
        assert!(cache.put_bounded("b", b"2".to_vec(), 60, &bound(2, None)).await.unwrap());
        assert!(!cache.put_bounded("c", b"4".to_vec(), 60, &bound(2, None)).await.unwrap(), "the pool is full");
        assert_eq!(cache.take_bounded("a", "test").await.unwrap(), Some(b"3".to_vec()));
        assert_eq!(cache.take_bounded("a", "test").await.unwrap(), None, "taken once");
        assert!(cache.put_bounded("c", b"4".to_vec(), 60, &bound(2, Some(("x", 1)))).await.unwrap(), "taking freed a place");
        clock.advance(60);
        assert_eq!(cache.take_bounded("b", "test").await.unwrap(), None, "expired");
        assert!(cache.put_bounded("d", b"5".to_vec(), 60, &bound(2, Some(("x", 1)))).await.unwrap(), "expired ones made room");
    }

    #[tokio::test]
    async fn values_expire_and_are_taken_once() {
        let clock = ManualClock::at(0);
        let cache = MemoryCache::new(Arc::new(clock.clone()));
        cache.put("k", b"v".to_vec(), 10).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(cache.take("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(cache.get("k").await.unwrap(), None);
        cache.put("k", b"v".to_vec(), 10).await.unwrap();
        clock.advance(10);
        assert_eq!(cache.get("k").await.unwrap(), None);
    }
}
