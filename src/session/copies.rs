//! This instance's copies of sessions: what a signed-in request is answered
//! from, how old a copy may be, and how it is read again without sending
//! the store one read per waiting request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use super::{Read, Session, SessionKey, Sessions, REVALIDATE_SECS};
use crate::clock::UnixTime;
use crate::config::DuringOutage;
use crate::store::StoreError;

/// A cached copy this old is read again by the one request that claims it,
/// while the others are still served the copy: an instance with many
/// requests on one session reads it once a refresh, not once for every
/// request that arrives while a read is under way (which, on a busy store,
/// piles reads up until they time out).
const REFRESH_AHEAD_SECS: i64 = REVALIDATE_SECS / 2;

/// Sessions as last read from the store. Only reads fill it, and every
/// write empties the session's entry and counts one more write: a read
/// that a write overtook does not fill it, so no cached copy is older than
/// the store, and a deleted session is never cached again.
#[derive(Default)]
pub(super) struct SessionCache {
    pub(super) sessions: crate::FastMap<SessionKey, CachedCopy>,
    pub(super) writes: u64,
}

/// A session as read from the store, and when.
pub(super) struct CachedCopy {
    pub(super) session: Arc<Session>,
    pub(super) read_at: UnixTime,
    /// A request has claimed reading it again ahead of the bound.
    refreshing: AtomicBool,
    /// Held while the session is read again: a request that finds the copy
    /// too old waits for the read under way and takes what it found.
    reading: Arc<tokio::sync::Mutex<()>>,
}

/// What a request found in the cache.
pub(super) struct Found {
    pub(super) session: Arc<Session>,
    pub(super) read_at: UnixTime,
    /// This request is the one to read the session again, ahead of the bound.
    pub(super) refresh: bool,
    /// The copy's line of reads, when this request may have to join it
    /// (not cloned for a copy that is served as it is).
    pub(super) reading: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl CachedCopy {
    fn new(session: Arc<Session>, read_at: UnixTime) -> Self {
        Self { session, read_at, refreshing: AtomicBool::new(false), reading: Arc::default() }
    }

    /// Whether the caller is the one to read the session again ahead of the
    /// bound: true once per copy, when it is old enough.
    fn claim_refresh(&self, now: UnixTime) -> bool {
        now - self.read_at >= REFRESH_AHEAD_SECS && !self.refreshing.swap(true, Ordering::Relaxed)
    }
}

impl Sessions {
    /// The cached copy, when it was read, and whether this request is to
    /// read it again now, ahead of the bound.
    pub(super) fn cached(&self, key: &SessionKey, now: UnixTime) -> Option<Found> {
        let cache = self.cache.read().ok()?;
        let copy = cache.sessions.get(key)?;
        let refresh = copy.claim_refresh(now);
        let reading = (refresh || now - copy.read_at >= REVALIDATE_SECS).then(|| copy.reading.clone());
        Some(Found { session: copy.session.clone(), read_at: copy.read_at, refresh, reading })
    }

    /// Reads a cached session again; None when it has ended. While the
    /// cache is current, one request at a time reads a session: the others
    /// wait for it and take the copy it read. (When it is not, every
    /// request reads for itself, as the fail-safe rule says.)
    pub(super) async fn read_again(
        &self,
        key: &SessionKey,
        found: Found,
        read: Read,
        now: UnixTime,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let turn = match (&found.reading, read == Read::Cached && self.cache_is_current()) {
            (Some(reading), true) => Some(reading.clone().lock_owned().await),
            _ => None,
        };
        if turn.is_some() {
            let newer = self.cached(key, now).filter(|newer| !Arc::ptr_eq(&newer.session, &found.session) && !newer.refresh);
            if let Some(newer) = newer.filter(|newer| self.may_serve(&newer.session, newer.read_at, now)) {
                return Ok(Some(newer.session));
            }
        }
        // An outage found meanwhile: read without waiting in line, so that
        // reads that time out do not time out one after the other.
        let _turn = turn.filter(|_| self.cache_is_current());
        match self.load(key).await {
            Ok(Some(loaded)) => Ok(Some(loaded.seen_no_earlier_than(&found.session))),
            Ok(None) => {
                self.evict(|session| session.key == *key);
                Ok(None)
            }
            Err(e) => self.during_outage(found.session, now, e).map(Some),
        }
    }

    /// Whether a cached copy may be served without asking the store.
    pub(super) fn may_serve(&self, session: &Session, read_at: UnixTime, now: UnixTime) -> bool {
        now - read_at < REVALIDATE_SECS && self.cache_is_current() && !self.is_expired(session, now)
    }

    /// Whether cached sessions are as the store has them: the store
    /// answers, and every change made elsewhere reaches this instance.
    pub(super) fn cache_is_current(&self) -> bool {
        self.shared.is_listening() && self.reachability.store.since().is_none() && self.reachability.cache.since().is_none()
    }

    /// A cached session while the store cannot be read: served only when
    /// `session.during_outage` says so, and only for `outage_grace`.
    pub(super) fn during_outage(&self, cached: Arc<Session>, now: UnixTime, error: StoreError) -> Result<Arc<Session>, StoreError> {
        let since = [self.reachability.store.since(), self.reachability.cache.since()].into_iter().flatten().min().unwrap_or(now);
        match self.config.during_outage {
            DuringOutage::ServeCached if now - since <= self.config.outage_grace => Ok(cached),
            _ => Err(error),
        }
    }

    pub(super) fn writes_so_far(&self) -> u64 {
        self.cache.read().unwrap_or_else(PoisonError::into_inner).writes
    }

    /// Caches a session read from the store, unless a write to the store
    /// finished since the read began.
    pub(super) fn cache_fill(&self, session: Arc<Session>, writes_before: u64, now: UnixTime) {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        match cache.writes == writes_before {
            true => cache.sessions.insert(session.key, CachedCopy::new(session, now)),
            // A write overtook the read: neither copy is known to be current.
            false => cache.sessions.remove(&session.key),
        };
    }

    /// Drops this instance's cached sessions that `matches`.
    pub(super) fn evict(&self, matches: impl Fn(&Session) -> bool) {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.writes += 1;
        cache.sessions.retain(|_, copy| !matches(&copy.session));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{new_session, SessionParts, SignInContext};

    fn copy_read_at(read_at: UnixTime) -> CachedCopy {
        let parts = SessionParts {
            username: "alice".into(),
            factors: Vec::new(),
            created: read_at,
            pending_totp: None,
            context: SignInContext::default(),
        };
        CachedCopy::new(new_session(parts, read_at).1, read_at)
    }

    #[test]
    fn one_request_refreshes_a_copy_ahead_of_the_bound_and_the_others_are_served_it() {
        let copy = copy_read_at(100);
        assert!(!copy.claim_refresh(100), "a fresh copy is served as it is");
        let claims = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| copy.claim_refresh(100 + REFRESH_AHEAD_SECS))).collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).filter(|claimed| *claimed).count()
        });
        assert_eq!(claims, 1, "one read of the store, however many requests arrive meanwhile");
        assert!(!copy.claim_refresh(100 + REVALIDATE_SECS), "claimed once a copy: a copy past the bound is read by every request");
    }
}
