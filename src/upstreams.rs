//! An app's upstreams, and which of them may take a request.
//!
//! Two things take an upstream out of rotation. Active health checks (when
//! the app has `health_check`) probe every upstream at an interval; failed
//! checks in a row mark it down, passed checks in a row mark it up. Passive
//! marking counts failed connections: `max_fails` in a row rest the
//! upstream for `fail_timeout`, after which it is tried again.
//!
//! Health is kept per app and upstream across configuration reloads, so a
//! reload neither forgets a dead upstream nor doubts a healthy one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use pingora::connectors::http::Connector as HttpConnector;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;

use crate::clock::Clock;
use crate::config::{AppConfig, HealthCheck, PassiveHealth, Upstream};

mod tls;

pub use tls::{PeerTls, TlsFileError};

/// Beyond any threshold (at most 100): a streak stops counting here.
const MAX_STREAK: i32 = 1000;

/// How healthy one upstream is; shared by the pools of successive reloads.
#[derive(Debug, Default)]
struct Health {
    /// The active checks' verdict.
    checked_down: AtomicBool,
    /// Passed (positive) or failed (negative) checks in a row.
    check_streak: AtomicI32,
    /// Failed connections in a row.
    failures: AtomicU32,
    /// Until when (Unix seconds) passive marking rests the upstream.
    resting_until: AtomicI64,
}

/// Where an upstream stands, as the selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    /// Out of rotation after failed connections, until the time given.
    Resting,
    /// Marked down by the health checks.
    Down,
}

/// The health of every app's upstreams, outliving reloads.
#[derive(Default)]
pub struct HealthRegistry {
    entries: Mutex<HashMap<(String, Upstream), Weak<Health>>>,
}

impl HealthRegistry {
    fn health_of(&self, app: &str, upstream: &Upstream) -> Arc<Health> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Upstreams gone from the configuration leave nothing behind.
        entries.retain(|_, health| health.strong_count() > 0);
        let key = (app.to_string(), upstream.clone());
        if let Some(health) = entries.get(&key).and_then(Weak::upgrade) {
            return health;
        }
        let health = Arc::new(Health::default());
        entries.insert(key, Arc::downgrade(&health));
        health
    }
}

/// The upstreams a request has tried, by index (an app has at most 64).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried(u64);

impl Tried {
    pub fn add(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    /// Lets the upstream be picked again.
    pub fn remove(&mut self, index: usize) {
        self.0 &= !(1 << index);
    }

    fn has(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What the selection offers a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    Upstream(usize),
    /// The health checks say every upstream is down.
    AllDown,
    /// Every upstream has been tried.
    NoneLeft,
}

/// One app's upstreams with their health, and how to reach them.
pub struct UpstreamPool {
    app: String,
    upstreams: Vec<Upstream>,
    health: Vec<Arc<Health>>,
    next: AtomicUsize,
    passive: PassiveHealth,
    peer_template: HttpPeer,
    clock: Arc<dyn Clock>,
}

impl UpstreamPool {
    pub fn new(config: &AppConfig, registry: &HealthRegistry, clock: Arc<dyn Clock>) -> Result<Arc<Self>, TlsFileError> {
        let app = config.id().to_string();
        let health = config.upstreams.iter().map(|upstream| registry.health_of(&app, upstream)).collect();
        let tls = PeerTls::load(&config.upstream_tls)?;
        if config.upstream_tls.insecure_skip_verify && config.upstreams.iter().any(|u| u.tls) {
            tracing::warn!(app = %app, "upstream_tls.insecure_skip_verify: the app's https upstreams are not verified");
        }
        let pool = Arc::new(Self {
            peer_template: peer_template(config, &tls),
            app,
            upstreams: config.upstreams.clone(),
            health,
            next: AtomicUsize::new(0),
            passive: config.passive_health.clone(),
            clock,
        });
        if let Some(check) = &config.health_check {
            pool.spawn_checks(check.clone(), config.hosts[0].get_ref().0.clone());
        }
        Ok(pool)
    }

    pub fn len(&self) -> usize {
        self.upstreams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// The next upstream in rotation that this request has not tried. When
    /// only resting ones are left, the one back soonest: a guess from a
    /// failed connection is no reason to fail without trying.
    pub fn pick(&self, tried: Tried) -> Pick {
        let count = self.upstreams.len();
        let now = self.clock.now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut resting: Option<(i64, usize)> = None;
        for index in (0..count).map(|offset| (start + offset) % count) {
            let health = &self.health[index];
            if tried.has(index) || health.checked_down.load(Ordering::Relaxed) {
                continue;
            }
            let until = health.resting_until.load(Ordering::Relaxed);
            if until <= now {
                return Pick::Upstream(index);
            }
            if resting.is_none_or(|(soonest, _)| until < soonest) {
                resting = Some((until, index));
            }
        }
        match resting {
            Some((_, index)) => Pick::Upstream(index),
            None if tried.is_empty() => Pick::AllDown,
            None => Pick::NoneLeft,
        }
    }

    /// Whether an upstream the request has not tried is left to try.
    pub fn has_untried(&self, tried: Tried) -> bool {
        (0..self.upstreams.len()).any(|i| !tried.has(i) && !self.health[i].checked_down.load(Ordering::Relaxed))
    }

    /// How to reach one upstream: its address, TLS and the app's timeouts.
    pub fn peer(&self, index: usize) -> HttpPeer {
        let upstream = &self.upstreams[index];
        let mut peer = self.peer_template.clone();
        peer._address = pingora::protocols::l4::socket::SocketAddr::Inet(upstream.addr);
        peer.scheme = match upstream.tls {
            true => pingora::upstreams::peer::Scheme::HTTPS,
            false => pingora::upstreams::peer::Scheme::HTTP,
        };
        if peer.sni.is_empty() {
            peer.sni = upstream.host.clone();
        }
        peer
    }

    pub fn address(&self, index: usize) -> SocketAddr {
        self.upstreams[index].addr
    }

    /// A connection to the upstream failed (refused, timed out, TLS).
    pub fn connection_failed(&self, index: usize) {
        if self.passive.max_fails == 0 {
            return;
        }
        let health = &self.health[index];
        if health.failures.fetch_add(1, Ordering::Relaxed) + 1 < self.passive.max_fails {
            return;
        }
        health.failures.store(0, Ordering::Relaxed);
        let now = self.clock.now();
        let until = now + self.passive.fail_timeout.as_secs() as i64;
        if health.resting_until.swap(until, Ordering::Relaxed) <= now {
            let rest = humantime::format_duration(self.passive.fail_timeout);
            tracing::warn!(app = %self.app, upstream = %self.upstreams[index].addr, rest = %rest, "upstream out of rotation after failed connections");
        }
    }

    /// A connection to the upstream was made.
    pub fn connected(&self, index: usize) {
        let health = &self.health[index];
        health.failures.store(0, Ordering::Relaxed);
        if health.resting_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!(app = %self.app, upstream = %self.upstreams[index].addr, "upstream back in rotation");
        }
    }

    /// Where each upstream stands now.
    pub fn states(&self) -> Vec<(SocketAddr, State)> {
        let now = self.clock.now();
        let state = |health: &Health| match (health.checked_down.load(Ordering::Relaxed), health.resting_until.load(Ordering::Relaxed)) {
            (true, _) => State::Down,
            (false, until) if until > now => State::Resting,
            _ => State::Up,
        };
        self.upstreams.iter().zip(&self.health).map(|(upstream, health)| (upstream.addr, state(health))).collect()
    }

    /// Checks every upstream at the interval for as long as this pool is
    /// in use (a reload replaces it, and its checks, with a new one).
    fn spawn_checks(self: &Arc<Self>, check: HealthCheck, host: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(app = %self.app, "no runtime: the upstreams' health checks are not running");
            return;
        };
        let pool: Weak<Self> = Arc::downgrade(self);
        let checker = Checker::new(check, host);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(checker.check.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let results = futures_util::future::join_all((0..pool.len()).map(|i| checker.probe(pool.peer(i)))).await;
                for (index, result) in results.into_iter().enumerate() {
                    pool.record_check(index, result, &checker.check);
                }
            }
        });
    }

    fn record_check(&self, index: usize, result: Result<(), String>, check: &HealthCheck) {
        let health = &self.health[index];
        // Only this pool's checker writes the streak (a reload's new one
        // may overlap it for a tick, which at worst counts a check twice).
        let before = health.check_streak.load(Ordering::Relaxed);
        let streak = match &result {
            Ok(()) => before.max(0).saturating_add(1).min(MAX_STREAK),
            Err(_) => before.min(0).saturating_sub(1).max(-MAX_STREAK),
        };
        health.check_streak.store(streak, Ordering::Relaxed);
        let upstream = self.upstreams[index].addr;
        let down = health.checked_down.load(Ordering::Relaxed);
        match result {
            Err(why) if !down && -streak >= check.unhealthy_threshold.0 as i32 => {
                health.checked_down.store(true, Ordering::Relaxed);
                tracing::warn!(app = %self.app, upstream = %upstream, reason = %why, "upstream marked down by its health check");
            }
            Ok(()) if down && streak >= check.healthy_threshold.0 as i32 => {
                health.checked_down.store(false, Ordering::Relaxed);
                health.resting_until.store(0, Ordering::Relaxed);
                tracing::info!(app = %self.app, upstream = %upstream, "upstream marked up by its health check");
            }
            _ => {}
        }
    }
}

/// The peer every request to the app starts from: timeouts and TLS.
fn peer_template(config: &AppConfig, tls: &PeerTls) -> HttpPeer {
    let mut peer = HttpPeer::new("0.0.0.0:1", false, String::new());
    let timeouts = &config.timeouts;
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.read_timeout = Some(timeouts.read);
    peer.options.write_timeout = Some(timeouts.write);
    peer.options.idle_timeout = Some(timeouts.idle);
    tls.apply(&mut peer);
    peer
}

/// One app's health check: how to probe an upstream.
struct Checker {
    check: HealthCheck,
    host: String,
    http: HttpConnector,
    transport: TransportConnector,
}

impl Checker {
    fn new(check: HealthCheck, host: String) -> Self {
        Self { check, host, http: HttpConnector::new(None), transport: TransportConnector::new(None) }
    }

    /// Ok when the upstream answers in time: a 2xx or 3xx to the HTTP
    /// check, or a connection (and TLS handshake) for the TCP one.
    async fn probe(&self, mut peer: HttpPeer) -> Result<(), String> {
        let timeout = self.check.timeout;
        peer.options.connection_timeout = Some(timeout);
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        let probe = async {
            match &self.check.path {
                Some(path) => self.http_check(&peer, &path.0).await,
                None => self.transport.new_stream(&peer).await.map(drop).map_err(|e| e.to_string()),
            }
        };
        tokio::time::timeout(timeout + Duration::from_millis(100), probe).await.map_err(|_| "timed out".to_string())?
    }

    async fn http_check(&self, peer: &HttpPeer, path: &str) -> Result<(), String> {
        let (mut session, _) = self.http.get_http_session(peer).await.map_err(|e| e.to_string())?;
        let mut request = RequestHeader::build("GET", path.as_bytes(), None).map_err(|e| e.to_string())?;
        request.insert_header(http::header::HOST, &self.host).map_err(|e| e.to_string())?;
        request.insert_header(http::header::USER_AGENT, "stepgate-health-check").map_err(|e| e.to_string())?;
        session.write_request_header(Box::new(request)).await.map_err(|e| e.to_string())?;
        session.finish_request_body().await.map_err(|e| e.to_string())?;
        session.read_response_header().await.map_err(|e| e.to_string())?;
        let status = session.response_header().map(|r| r.status.as_u16()).unwrap_or(0);
        match status {
            200..=399 => Ok(()),
            status => Err(format!("answered {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn pool(upstreams: &[&str], clock: ManualClock) -> Arc<UpstreamPool> {
        let list = upstreams.iter().map(|u| format!("\"http://{u}\"")).collect::<Vec<_>>().join(", ");
        let text = format!("id = \"app\"\nhosts = [\"app.test\"]\nupstreams = [{list}]\n");
        let config: AppConfig = toml::from_str(&text).expect("app config");
        UpstreamPool::new(&config, &HealthRegistry::default(), Arc::new(clock)).expect("pool")
    }

    #[test]
    fn round_robin_skips_resting_upstreams_until_their_rest_ends() {
        let clock = ManualClock::at(1_000);
        let pool = pool(&["127.0.0.1:1001", "127.0.0.1:1002"], clock.clone());
        pool.connection_failed(0);
        assert_eq!(pool.states()[0].1, State::Resting);
        for _ in 0..4 {
            assert_eq!(pool.pick(Tried::default()), Pick::Upstream(1));
        }
        clock.advance(10);
        let picks: Vec<_> = (0..4).map(|_| pool.pick(Tried::default())).collect();
        assert!(picks.contains(&Pick::Upstream(0)), "back after fail_timeout: {picks:?}");
    }

    #[test]
    fn a_request_tries_each_upstream_once_and_a_resting_one_when_nothing_else_is_left() {
        let pool = pool(&["127.0.0.1:1001", "127.0.0.1:1002"], ManualClock::at(1_000));
        pool.connection_failed(1);
        let mut tried = Tried::default();
        assert_eq!(pool.pick(tried), Pick::Upstream(0));
        tried.add(0);
        assert!(pool.has_untried(tried));
        assert_eq!(pool.pick(tried), Pick::Upstream(1), "resting, but the only one left");
        tried.add(1);
        assert!(!pool.has_untried(tried));
        assert_eq!(pool.pick(tried), Pick::NoneLeft);
    }

    #[test]
    fn health_checks_mark_down_and_up_after_their_thresholds() {
        let pool = pool(&["127.0.0.1:1001"], ManualClock::at(1_000));
        let check: HealthCheck = toml::from_str("unhealthy_threshold = 2\nhealthy_threshold = 2").expect("check");
        pool.record_check(0, Err("refused".into()), &check);
        assert_eq!(pool.states()[0].1, State::Up, "one failure is not enough");
        pool.record_check(0, Err("refused".into()), &check);
        assert_eq!(pool.states()[0].1, State::Down);
        assert_eq!(pool.pick(Tried::default()), Pick::AllDown);
        pool.record_check(0, Ok(()), &check);
        assert_eq!(pool.states()[0].1, State::Down, "one success is not enough");
        pool.record_check(0, Ok(()), &check);
        assert_eq!(pool.states()[0].1, State::Up);
    }

    #[test]
    fn health_outlives_a_reload() {
        let registry = HealthRegistry::default();
        let config: AppConfig = toml::from_str("id = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://127.0.0.1:1001\"]\n").unwrap();
        let clock = Arc::new(ManualClock::at(1_000));
        let first = UpstreamPool::new(&config, &registry, clock.clone()).unwrap();
        first.connection_failed(0);
        let second = UpstreamPool::new(&config, &registry, clock).unwrap();
        assert_eq!(second.states()[0].1, State::Resting);
    }
}
