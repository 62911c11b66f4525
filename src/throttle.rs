//! Slows down guessing: counts failed attempts per key (a user, an IP)
//! within a window and refuses further attempts once a limit is reached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::{Clock, UnixTime};

/// Past this many tracked keys, expired ones are dropped on the next failure.
const PRUNE_ABOVE: usize = 10_000;

struct Failures {
    window_start: UnixTime,
    count: u32,
}

pub struct Throttle {
    clock: Arc<dyn Clock>,
    limit: u32,
    window: i64,
    failures: Mutex<HashMap<String, Failures>>,
}

impl Throttle {
    pub fn new(clock: Arc<dyn Clock>, limit: u32, window: i64) -> Self {
        Self { clock, limit, window, failures: Mutex::new(HashMap::new()) }
    }

    /// Seconds until any of `keys` may try again, if one is blocked.
    pub fn retry_after(&self, keys: &[&str]) -> Option<i64> {
        let now = self.clock.now();
        let failures = self.failures.lock().ok()?;
        keys.iter()
            .filter_map(|key| failures.get(*key))
            .filter(|f| f.count >= self.limit && now - f.window_start < self.window)
            .map(|f| f.window_start + self.window - now)
            .max()
    }

    pub fn record_failure(&self, keys: &[&str]) {
        let now = self.clock.now();
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() > PRUNE_ABOVE {
            failures.retain(|_, f| now - f.window_start < self.window);
        }
        for key in keys {
            let entry = failures.entry(key.to_string()).or_insert(Failures { window_start: now, count: 0 });
            if now - entry.window_start >= self.window {
                *entry = Failures { window_start: now, count: 0 };
            }
            entry.count += 1;
        }
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let clock = ManualClock::at(1_000);
        let throttle = Throttle::new(Arc::new(clock.clone()), 3, 300);
        for _ in 0..3 {
            assert_eq!(throttle.retry_after(&["user:alice"]), None);
            throttle.record_failure(&["user:alice", "ip:192.0.2.1"]);
        }
        assert_eq!(throttle.retry_after(&["user:alice"]), Some(300));
        assert_eq!(throttle.retry_after(&["user:bob", "ip:192.0.2.1"]), Some(300));
        clock.advance(299);
        assert_eq!(throttle.retry_after(&["user:alice"]), Some(1));
        clock.advance(1);
        assert_eq!(throttle.retry_after(&["user:alice"]), None);
    }

    #[test]
    fn a_success_resets_the_count() {
        let throttle = Throttle::new(Arc::new(ManualClock::at(0)), 2, 300);
        throttle.record_failure(&["user:alice"]);
        throttle.reset("user:alice");
        throttle.record_failure(&["user:alice"]);
        assert_eq!(throttle.retry_after(&["user:alice"]), None);
    }
}
