//! Whether the store and the shared cache answer: probed once a second,
//! so that an outage is noticed even by requests that would not reach
//! them (a signed-in request served from the session cache), reported to
//! load balancers at `/.stepgate/readyz`, and logged once when a backend
//! goes away and once when it is back, never once a request.
//!
//! Requests that meet a failure or a success record it at once (so cached
//! sessions stop being trusted without waiting for the probe); only the
//! probe logs, so every outage is told once, from one place.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::cache::Cache;
use crate::clock::{Clock, UnixTime};
use crate::store::Store;

/// How often the backends are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a probe may take. An error counts at once; a slow answer
/// (this limit, or the backend client's own timeout, running out) only
/// when the probe before was slow too, since on a saturated machine the
/// probe itself may wait its turn for a second or two.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Since when a backend is unreachable, if it is.
#[derive(Default)]
pub struct Outage {
    /// Unix time of the first failure seen; 0 while the backend answers.
    since: AtomicI64,
    /// Whether the log says the backend is away.
    announced: AtomicBool,
    /// Whether the last probe went unanswered in time.
    last_probe_slow: AtomicBool,
    /// What the probe that found the backend away was told.
    last_error: std::sync::Mutex<Option<String>>,
}

impl Outage {
    pub fn since(&self) -> Option<UnixTime> {
        Some(self.since.load(Ordering::Relaxed)).filter(|since| *since != 0)
    }

    /// Records a failure; true when it starts an outage.
    pub fn failed(&self, now: UnixTime) -> bool {
        self.since.compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Records a success; true when it ends an outage.
    pub fn answered(&self) -> bool {
        self.since.swap(0, Ordering::Relaxed) != 0
    }

    /// Whether the log must now say the backend went away (`Some(true)`)
    /// or is back (`Some(false)`); each is said once.
    fn news(&self) -> Option<bool> {
        let down = self.since().is_some();
        (self.announced.swap(down, Ordering::Relaxed) != down).then_some(down)
    }
}

/// The reachability of the gateway's two backends.
pub struct Reachability {
    pub store: Outage,
    pub cache: Outage,
    clock: Arc<dyn Clock>,
}

/// What `/.stepgate/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    pub store: bool,
    pub cache: bool,
}

impl Reachability {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self { store: Outage::default(), cache: Outage::default(), clock })
    }

    pub fn readiness(&self) -> Readiness {
        Readiness { store: self.store.since().is_none(), cache: self.cache.since().is_none() }
    }

    /// Records what a request found out about the store.
    pub fn store_failed(&self) {
        self.store.failed(self.clock.now());
    }

    pub fn store_answered(&self) {
        self.store.answered();
    }

    /// Probes both backends every [`PROBE_INTERVAL`] until `self` is dropped.
    pub fn spawn_probe(self: &Arc<Self>, store: Arc<dyn Store>, cache: Arc<dyn Cache>) {
        let this: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PROBE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(reachability) = this.upgrade() else { return };
                reachability.probe(store.as_ref(), cache.as_ref()).await;
            }
        });
    }

    async fn probe(&self, store: &dyn Store, cache: &dyn Cache) {
        // Side by side, so that a hanging one does not delay the other.
        let (store_answer, cache_answer) =
            tokio::join!(tokio::time::timeout(PROBE_TIMEOUT, store.ping()), tokio::time::timeout(PROBE_TIMEOUT, cache.ping()));
        let store_answer = ProbeAnswer::of(store_answer, crate::store::StoreError::is_timeout);
        let cache_answer = ProbeAnswer::of(cache_answer, crate::cache::CacheError::is_timeout);
        let now = self.clock.now();
        self.store.record_probe(now, store_answer);
        announce("the store", &self.store);
        self.cache.record_probe(now, cache_answer);
        announce("the shared cache", &self.cache);
    }
}

/// What a probe got.
#[derive(Debug)]
enum ProbeAnswer {
    Answered,
    Failed(String),
    /// Nothing in time: the probe's own limit, or the backend client's
    /// (a command timeout, no pooled connection free) ran out first.
    Slow,
}

impl ProbeAnswer {
    fn of<E: std::fmt::Display>(answer: Result<Result<(), E>, tokio::time::error::Elapsed>, is_timeout: impl Fn(&E) -> bool) -> Self {
        match answer {
            Ok(Ok(())) => ProbeAnswer::Answered,
            Ok(Err(error)) if is_timeout(&error) => ProbeAnswer::Slow,
            Ok(Err(error)) => ProbeAnswer::Failed(error.to_string()),
            Err(_) => ProbeAnswer::Slow,
        }
    }
}

impl Outage {
    fn record_probe(&self, now: UnixTime, answer: ProbeAnswer) {
        let slow = matches!(answer, ProbeAnswer::Slow);
        let slow_before = self.last_probe_slow.swap(slow, Ordering::Relaxed);
        match answer {
            ProbeAnswer::Answered => {
                self.answered();
            }
            ProbeAnswer::Failed(error) => self.failed_with(now, error),
            ProbeAnswer::Slow if slow_before => self.failed_with(now, "no answer in time, twice".into()),
            ProbeAnswer::Slow => {}
        }
    }

    fn failed_with(&self, now: UnixTime, error: String) {
        self.failed(now);
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }
}

/// Logs a change in a backend's reachability, once.
fn announce(name: &str, outage: &Outage) {
    match outage.news() {
        Some(true) => {
            let error = outage.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            tracing::error!(error = error.as_deref().unwrap_or("-"), "{name} is unreachable: refusing what needs it until it is back")
        }
        Some(false) => tracing::info!("{name} is reachable again"),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheError;
    use crate::store::StoreError;

    #[test]
    fn an_outage_starts_once_and_ends_once() {
        let outage = Outage::default();
        assert_eq!(outage.since(), None);
        assert!(outage.failed(100));
        assert!(!outage.failed(105), "a second failure does not start another outage");
        assert_eq!(outage.since(), Some(100));
        assert_eq!(outage.news(), Some(true), "the log says it went away");
        assert_eq!(outage.news(), None, "once");
        assert!(outage.answered());
        assert!(!outage.answered());
        assert_eq!(outage.since(), None);
        assert_eq!(outage.news(), Some(false), "the log says it is back");
        assert_eq!(outage.news(), None, "once");
    }

    async fn no_answer() -> ProbeAnswer {
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending()).await;
        ProbeAnswer::of(elapsed, |_: &String| false)
    }

    #[tokio::test]
    async fn one_slow_probe_is_not_an_outage_but_two_are() {
        let outage = Outage::default();
        outage.record_probe(100, no_answer().await);
        assert_eq!(outage.since(), None, "a saturated machine may delay one probe");
        outage.record_probe(101, ProbeAnswer::Answered);
        outage.record_probe(102, no_answer().await);
        assert_eq!(outage.since(), None, "slow probes must follow each other");
        outage.record_probe(103, no_answer().await);
        assert_eq!(outage.since(), Some(103));
    }

    #[test]
    fn a_backend_client_timing_out_is_a_slow_probe_not_an_error() {
        let outage = Outage::default();
        let timed_out = || ProbeAnswer::of(Ok(Err(CacheError::NoAnswer(Duration::from_millis(500)))), CacheError::is_timeout);
        outage.record_probe(100, timed_out());
        assert_eq!(outage.since(), None, "a busy machine may keep the answer past the client's timeout once");
        outage.record_probe(101, timed_out());
        assert_eq!(outage.since(), Some(101));
        let pool_full = ProbeAnswer::of(Ok(Err(StoreError::Database(sqlx::Error::PoolTimedOut))), StoreError::is_timeout);
        assert!(matches!(pool_full, ProbeAnswer::Slow), "{pool_full:?}");
        let refused = ProbeAnswer::of(Ok(Err(CacheError::Unavailable("connection refused".into()))), CacheError::is_timeout);
        assert!(matches!(refused, ProbeAnswer::Failed(_)), "{refused:?}");
    }

    #[test]
    fn an_error_is_an_outage_at_once() {
        let outage = Outage::default();
        outage.record_probe(100, ProbeAnswer::Failed("connection refused".into()));
        assert_eq!(outage.since(), Some(100));
        outage.record_probe(101, ProbeAnswer::Answered);
        assert_eq!(outage.since(), None);
    }

    #[test]
    fn an_outage_over_before_the_probe_looked_is_not_told() {
        let outage = Outage::default();
        outage.failed(100);
        outage.answered();
        assert_eq!(outage.news(), None);
    }
}
