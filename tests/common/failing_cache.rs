//! The memory cache behind a switch: while it is down, every call fails
//! as an unreachable Redis would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stepgate::cache::{Bound, Cache, CacheError, CacheEvent, Counter, Counters, Invalidation, MemoryCache, OneTimeValues, Refusal};
use stepgate::clock::Clock;
use tokio::sync::broadcast;

pub struct FailingCache {
    inner: MemoryCache,
    down: Arc<AtomicBool>,
}

impl FailingCache {
    /// The cache and its switch.
    pub fn new(clock: Arc<dyn Clock>) -> (Self, Arc<AtomicBool>) {
        let down = Arc::new(AtomicBool::new(false));
        (Self { inner: MemoryCache::new(clock), down: down.clone() }, down)
    }

    fn up(&self) -> Result<(), CacheError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(CacheError::Unavailable("switched off by the test".into())),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl Cache for FailingCache {
    async fn publish(&self, message: &Invalidation) -> Result<(), CacheError> {
        self.up()?;
        self.inner.publish(message).await
    }

    fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.inner.subscribe()
    }

    fn is_listening(&self) -> bool {
        self.up().is_ok()
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.up()
    }
}

#[async_trait]
impl Counters for FailingCache {
    async fn count_all(&self, counters: &[Counter], window: i64) -> Result<Result<(), Refusal>, CacheError> {
        self.up()?;
        self.inner.count_all(counters, window).await
    }

    async fn reset(&self, counter: &Counter) -> Result<(), CacheError> {
        self.up()?;
        self.inner.reset(counter).await
    }

    async fn counted(&self, counter: &Counter) -> Result<u32, CacheError> {
        self.up()?;
        self.inner.counted(counter).await
    }

    async fn keys_in(&self, bucket: &'static str) -> Result<usize, CacheError> {
        self.up()?;
        self.inner.keys_in(bucket).await
    }
}

#[async_trait]
impl OneTimeValues for FailingCache {
    async fn put(&self, key: &str, value: Vec<u8>, ttl: i64) -> Result<(), CacheError> {
        self.up()?;
        self.inner.put(key, value, ttl).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.up()?;
        self.inner.get(key).await
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.up()?;
        self.inner.take(key).await
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        self.up()?;
        self.inner.remove(key).await
    }

    async fn put_bounded(&self, key: &str, value: Vec<u8>, ttl: i64, bound: &Bound<'_>) -> Result<bool, CacheError> {
        self.up()?;
        self.inner.put_bounded(key, value, ttl, bound).await
    }

    async fn take_bounded(&self, key: &str, pool: &'static str) -> Result<Option<Vec<u8>>, CacheError> {
        self.up()?;
        self.inner.take_bounded(key, pool).await
    }
}
