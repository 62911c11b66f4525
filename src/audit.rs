//! The audit log: every security event, kept through the store (so every
//! instance writes to one log, queried over the admin API and swept after
//! `audit.retention`) and written as one log line under the
//! `stepgate::audit` target (JSON when `logging.format = "json"`).
//!
//! Recording never fails a request: when the store cannot take an event,
//! the log line still stands and an error says the event is not stored.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::store::{AuditRow, Store, StoreError};

/// The log target of the audit lines.
pub const TARGET: &str = "stepgate::audit";
/// The actor of events the gateway causes by itself.
pub const GATEWAY_ACTOR: &str = "stepgate";
/// The actor of a client that named no known user.
pub const ANONYMOUS_ACTOR: &str = "anonymous";

macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident = $name:literal,)*) => {
        /// What happened.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum Kind {
            $($(#[$doc])* $kind,)*
        }

        impl Kind {
            pub const ALL: &[Kind] = &[$(Kind::$kind,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$kind => $name,)*
                }
            }

            pub fn from_name(name: &str) -> Option<Kind> {
                Kind::ALL.iter().copied().find(|kind| kind.name() == name)
            }
        }
    };
}

kinds! {
    /// A password (or a passkey standing for both factors) was checked.
    SignIn = "sign_in",
    /// A second factor was checked.
    SecondFactor = "second_factor",
    /// A recovery code was spent.
    RecoveryCodeUsed = "recovery_code_used",
    FactorEnrolled = "factor_enrolled",
    FactorRenamed = "factor_renamed",
    FactorRemoved = "factor_removed",
    RecoveryCodesRegenerated = "recovery_codes_regenerated",
    /// The user asked a browser to skip adaptive second factors for a while.
    TrustedBrowserAdded = "trusted_browser_added",
    TrustedBrowserRevoked = "trusted_browser_revoked",
    SessionEnded = "session_ended",
    SignOut = "sign_out",
    /// An administrator removed all of a user's factors.
    MfaReset = "mfa_reset",
    ThrottleLifted = "throttle_lifted",
    TicketCreated = "ticket_created",
    /// A user spent an enrolment ticket (or tried one that was refused).
    TicketUsed = "ticket_used",
    TicketRevoked = "ticket_revoked",
    AdminTokenCreated = "admin_token_created",
    AdminTokenRevoked = "admin_token_revoked",
    ConfigReloaded = "config_reloaded",
    /// A request was denied by a rule, for want of one, or by a geo fence.
    AccessDenied = "access_denied",
    /// A signed-in user was asked for a fresher or stronger second factor.
    StepUpDemanded = "step_up_demanded",
}

/// What an event was, as its user reads it on their security page.
pub fn describe(kind: Kind, failed: bool) -> &'static str {
    match (kind, failed) {
        (Kind::SignIn, false) => "Signed in",
        (Kind::SignIn, true) => "Sign-in refused (wrong password, or too many attempts)",
        (Kind::SecondFactor, false) => "Confirmed with a second factor",
        (Kind::SecondFactor, true) => "Second factor refused",
        (Kind::RecoveryCodeUsed, _) => "Used a recovery code",
        (Kind::FactorEnrolled, false) => "Added a second factor",
        (Kind::FactorEnrolled, true) => "Could not add a second factor",
        (Kind::FactorRenamed, _) => "Renamed a second factor",
        (Kind::FactorRemoved, _) => "Removed a second factor",
        (Kind::RecoveryCodesRegenerated, _) => "New recovery codes",
        (Kind::TrustedBrowserAdded, _) => "Trusted a browser",
        (Kind::TrustedBrowserRevoked, _) => "Stopped trusting a browser",
        (Kind::SessionEnded, _) => "Signed out a session",
        (Kind::SignOut, _) => "Signed out",
        (Kind::MfaReset, _) => "All second factors were reset",
        (Kind::ThrottleLifted, _) => "Failed attempts were forgiven",
        (Kind::TicketCreated, _) => "An enrolment link was made for you",
        (Kind::TicketUsed, false) => "Used an enrolment link",
        (Kind::TicketUsed, true) => "An enrolment link was refused",
        (Kind::TicketRevoked, _) => "An enrolment link was withdrawn",
        (Kind::AccessDenied, _) => "A page was refused to you",
        (Kind::StepUpDemanded, _) => "Asked to confirm it's you again",
        (Kind::AdminTokenCreated | Kind::AdminTokenRevoked | Kind::ConfigReloaded, _) => "Gateway administration",
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    /// Refused before anything was checked (throttled, busy).
    Refused,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Refused => "refused",
        }
    }
}

/// One security event, before it is recorded.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub outcome: Outcome,
    /// The user it is about.
    pub user: Option<String>,
    /// Who did it: the user, an admin token's name, or [`GATEWAY_ACTOR`].
    pub actor: String,
    pub ip: Option<IpAddr>,
    pub country: Option<String>,
    pub app: Option<String>,
    /// More about it, never a secret.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// An event the gateway causes; name the user and actor with the builders.
    pub fn new(kind: Kind, outcome: Outcome) -> Self {
        Event {
            kind,
            outcome,
            user: None,
            actor: GATEWAY_ACTOR.into(),
            ip: None,
            country: None,
            app: None,
            details: serde_json::Map::new(),
        }
    }

    /// About `user`, done by that user.
    pub fn by_user(self, user: &str) -> Self {
        Event { user: Some(user.into()), actor: user.into(), ..self }
    }

    /// About `user`, done by someone else (an admin token).
    pub fn about(self, user: &str, actor: &str) -> Self {
        Event { user: Some(user.into()), actor: actor.into(), ..self }
    }

    pub fn from_client(self, ip: IpAddr, country: Option<String>, app: Option<&str>) -> Self {
        Event { ip: Some(ip), country, app: app.map(str::to_string), ..self }
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// Events recorded per second at most from the request path (denials,
/// step-up demands), which any client can cause: past it they are
/// counted in `stepgate_audit_events_dropped_total` and not recorded.
pub const REQUEST_EVENTS_PER_SECOND: u32 = 50;

pub struct AuditLog {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    budget: Budget,
}

/// A per-second budget, kept with atomics: the request path takes no lock.
#[derive(Default)]
struct Budget {
    second: AtomicI64,
    used: AtomicU32,
}

impl Budget {
    /// Whether one more event fits in this second's budget. Two requests
    /// crossing into a new second at once may both count in it; the bound
    /// holds within that slack.
    fn take(&self, now: i64) -> bool {
        let second = self.second.load(Ordering::Relaxed);
        if second != now && self.second.compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < REQUEST_EVENTS_PER_SECOND
    }
}

impl AuditLog {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock, budget: Budget::default() }
    }

    /// Records an event the request path saw, without holding up the
    /// request, within [`REQUEST_EVENTS_PER_SECOND`].
    pub fn record_from_request(self: &Arc<Self>, event: Event) {
        if !self.budget.take(self.clock.now()) {
            crate::metrics::global().audit_events_dropped.inc();
            return;
        }
        let log = self.clone();
        tokio::spawn(async move { log.record(event).await });
    }

    /// Writes the event's log line and stores it.
    pub async fn record(&self, event: Event) {
        let detail = |key: &str| event.details.get(key).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let (method, reason) = (detail("method"), detail("reason"));
        crate::metrics::global().security_event(event.kind.name(), event.outcome.name(), &method, &reason);
        let row = self.row(event);
        tracing::info!(
            target: TARGET,
            kind = %row.kind,
            outcome = %row.outcome,
            user = row.username.as_deref().unwrap_or("-"),
            actor = %row.actor,
            ip = row.ip.as_deref().unwrap_or("-"),
            country = row.country.as_deref().unwrap_or("-"),
            app = row.app.as_deref().unwrap_or("-"),
            details = %row.details,
            "audit"
        );
        if let Err(e) = self.store.record_audit(&row).await {
            tracing::error!(error = %e, kind = %row.kind, "a security event could not be stored in the audit log");
        }
    }

    /// Forgets events older than `retention` seconds.
    pub async fn sweep(&self, retention: i64) -> Result<u64, StoreError> {
        self.store.forget_audit_before(self.clock.now() - retention).await
    }

    fn row(&self, event: Event) -> AuditRow {
        AuditRow {
            id: 0,
            at: self.clock.now(),
            kind: event.kind.name().into(),
            username: event.user,
            actor: event.actor,
            ip: event.ip.map(|ip| crate::gateway::canonical_ip(ip).to_string()),
            country: event.country,
            app: event.app,
            outcome: event.outcome.name().into(),
            details: serde_json::Value::Object(event.details).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_budget_holds_per_second() {
        let budget = Budget::default();
        let taken = (0..REQUEST_EVENTS_PER_SECOND + 10).filter(|_| budget.take(100)).count();
        assert_eq!(taken, REQUEST_EVENTS_PER_SECOND as usize);
        assert!(budget.take(101), "a new second, a new budget");
    }

    #[test]
    fn kinds_are_named_one_way() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(*kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
    }
}
