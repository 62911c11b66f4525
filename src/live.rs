//! The running gateway, swapped whole on reload. A reload is triggered by
//! SIGHUP or by a change to the configuration, users or MaxMind files; a
//! new configuration that does not load keeps the running one, and says why.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::audit::{Event, Kind, Outcome};
use crate::config::Config;
use crate::gateway::{Gateway, StartError};

/// How often watched files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Signing keys and expired sessions are looked at every this many checks.
const UPKEEP_EVERY: u64 = 3;
/// How long sign-ins are remembered for the new-country and travel signals.
const SIGN_IN_HISTORY_SECS: i64 = 180 * 24 * 3600;

pub struct LiveGateway {
    current: RwLock<Arc<Gateway>>,
    /// None when the gateway was not built from a file (the demo).
    config_path: Option<PathBuf>,
}

/// A file's identity for change detection: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

impl LiveGateway {
    pub fn new(gateway: Arc<Gateway>, config_path: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self { current: RwLock::new(gateway), config_path })
    }

    /// The gateway requests should use now.
    pub fn current(&self) -> Arc<Gateway> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads the configuration file again and swaps it in. On any error the
    /// running configuration stays.
    pub fn reload(&self) -> Result<(), StartError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let next = self.current().reconfigure(Config::load(path)?)?;
        match self.current.write() {
            Ok(mut current) => *current = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    async fn reload_and_log(&self, cause: &str) {
        let outcome = match self.reload() {
            Ok(()) => {
                tracing::info!(cause, "configuration reloaded");
                Outcome::Success
            }
            Err(e) => {
                tracing::error!(cause, error = %e, "configuration not reloaded; the running one stays");
                Outcome::Failure
            }
        };
        self.current().audit.record(Event::new(Kind::ConfigReloaded, outcome).detail("cause", cause)).await;
    }

    /// Upkeep until the runtime stops: reloads on SIGHUP and file changes,
    /// picks up rotated signing keys, drops expired sessions and old
    /// sign-in history.
    pub async fn maintain(self: Arc<Self>) {
        let mut hangup = self.config_path.as_ref().and_then(|_| {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .inspect_err(|e| tracing::warn!(error = %e, "SIGHUP will not reload the configuration"))
                .ok()
        });
        let mut seen = self.stamps();
        let mut interval = tokio::time::interval(WATCH_INTERVAL);
        let mut checks: u64 = 0;
        loop {
            let hung_up = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = interval.tick() => {}
                _ = hung_up => {
                    self.reload_and_log("SIGHUP").await;
                    seen = self.stamps();
                    continue;
                }
            }
            let stamps = self.stamps();
            if stamps != seen {
                seen = stamps;
                self.reload_and_log("a watched file changed").await;
            }
            checks += 1;
            if checks % UPKEEP_EVERY == 0 {
                upkeep(&self.current(), checks % (UPKEEP_EVERY * 10) == 0).await;
            }
        }
    }

    /// The stamps of the files a reload reads.
    fn stamps(&self) -> Vec<Stamp> {
        let Some(config_path) = &self.config_path else {
            return Vec::new();
        };
        let gateway = self.current();
        let geoip = &gateway.config.geoip;
        let files =
            [Some(config_path), gateway.config.users_file.as_ref(), geoip.city.as_ref(), geoip.asn.as_ref(), geoip.anonymous_ip.as_ref()];
        files.into_iter().flatten().map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
    }
}

/// Signing keys every time; sweeps of expired state when `sweep`.
async fn upkeep(gateway: &Gateway, sweep: bool) {
    match gateway.assertions.reload_keys().await {
        Ok(true) => tracing::info!("signing keys reloaded"),
        Ok(false) => {}
        // An outage is logged once, by the backend probe.
        Err(crate::assertion::KeyError::Store(e)) if e.is_outage() => tracing::debug!(error = %e, "cannot reload signing keys"),
        Err(e) => tracing::error!(error = %e, "cannot reload signing keys; keeping the current ones"),
    }
    if !sweep || gateway.reachability.readiness() != (crate::health::Readiness { store: true, cache: true }) {
        return;
    }
    gateway.assertions.sweep();
    if let Err(e) = gateway.sessions.sweep().await {
        tracing::warn!(error = %e, "session sweep failed");
    }
    if let Err(e) = gateway.store.forget_sign_ins_before(gateway.clock.now() - SIGN_IN_HISTORY_SECS).await {
        tracing::warn!(error = %e, "sign-in history sweep failed");
    }
    if let Err(e) = gateway.audit.sweep(gateway.config.audit.retention).await {
        tracing::warn!(error = %e, "audit log sweep failed");
    }
}
