//! Prometheus metrics, served by the admin listener's `/metrics`.
//!
//! Counting on the hot path takes no lock and allocates nothing: every
//! series a request touches is made when its app is set up (see
//! [`AppMetrics`]) and counting is an atomic add. The `prometheus` crate's
//! histograms observe with atomics too. Gauges of state (sessions, GeoIP
//! builds) are read when scraped.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::LazyLock;

/// The decisions requests are counted under; anything else is `other`.
const DECISIONS: [&str; 29] = [
    "allow",
    "sign_in",
    "second_factor",
    "step_up",
    "second_factor_risk",
    "stronger_factor",
    "deny",
    "deny_no_rule",
    "deny_geo",
    "portal",
    "forward_auth_only",
    "unknown_host",
    "headers_too_large",
    "store_unavailable",
    "assertion_unavailable",
    "bad_method",
    "bad_method_override",
    "bad_host",
    "bad_header_name",
    "repeated_query",
    "bad_path",
    "authz_inline_app",
    "authz_malformed_header",
    "authz_missing_header",
    "authz_repeated_header",
    "authz_unknown_host",
    "authz_untrusted_peer",
    "none",
    "other",
];
/// Status classes: `1xx` to `5xx`, and `none` when nothing was answered.
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];
/// Request and decision latency buckets, in seconds: 10 µs to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    upstream_errors: IntCounterVec,
    pub request_seconds: Histogram,
    pub decision_seconds: Histogram,
    security_events: IntCounterVec,
    pub assertion_cache_hits: IntCounter,
    pub assertion_cache_misses: IntCounter,
    /// Request-path audit events past the per-second budget.
    pub audit_events_dropped: IntCounter,
    /// Requests for no app (an unknown host, a malformed request).
    pub no_app: AppMetrics,
}

/// The process's metrics: one set however many gateways a process runs
/// (a reload builds a new gateway and keeps counting).
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("stepgate".into()), None).expect("a valid prefix");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(vec.clone())).expect("registered once");
            vec
        };
        let histogram = |name: &str, help: &str| {
            let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())).expect("valid metric");
            registry.register(Box::new(histogram.clone())).expect("registered once");
            histogram
        };
        let assertion_cache = counter_vec("assertion_cache_total", "Assertions served from the per-session cache, or signed.", &["result"]);
        let requests = counter_vec("requests_total", "Requests by app, decision and status class.", &["app", "decision", "status"]);
        let upstream_errors = counter_vec("upstream_errors_total", "Requests an app's upstream failed.", &["app"]);
        let audit_events_dropped = IntCounter::new(
            "audit_events_dropped_total",
            "Denials and step-up demands not recorded in the audit log: past its per-second budget.",
        )
        .expect("valid metric");
        registry.register(Box::new(audit_events_dropped.clone())).expect("registered once");
        Metrics {
            audit_events_dropped,
            no_app: app_metrics(&requests, &upstream_errors, "-"),
            requests,
            upstream_errors,
            request_seconds: histogram("request_duration_seconds", "Whole requests, from the first byte read to the log line."),
            decision_seconds: histogram("decision_duration_seconds", "The policy decision of a request."),
            security_events: counter_vec(
                "security_events_total",
                "Audited events (sign-ins, second factors, enrolments, refusals, reloads...) by kind, outcome, method and reason.",
                &["kind", "outcome", "method", "reason"],
            ),
            assertion_cache_hits: assertion_cache.with_label_values(&["hit"]),
            assertion_cache_misses: assertion_cache.with_label_values(&["miss"]),
            registry,
        }
    }

    /// The series of one app, made now so that counting never looks them up.
    pub fn for_app(&self, app: &str) -> AppMetrics {
        app_metrics(&self.requests, &self.upstream_errors, app)
    }

    /// Counts an audited event (off the hot path: a labelled lookup).
    pub fn security_event(&self, kind: &str, outcome: &str, method: &str, reason: &str) {
        self.security_events.with_label_values(&[kind, outcome, method, reason]).inc();
    }

    /// Everything, with a gateway's `state`, in Prometheus's text format.
    pub fn text(&self, state: &State) -> String {
        let families = [self.registry.gather(), state.registry.gather()].concat();
        prometheus::TextEncoder::new().encode_to_string(&families).unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

fn app_metrics(requests: &IntCounterVec, upstream_errors: &IntCounterVec, app: &str) -> AppMetrics {
    let requests =
        DECISIONS.iter().map(|decision| STATUS_CLASSES.map(|class| requests.with_label_values(&[app, decision, class]))).collect();
    AppMetrics { requests, upstream_errors: upstream_errors.with_label_values(&[app]) }
}

/// An app's request series, by decision and status class.
pub struct AppMetrics {
    requests: Vec<[IntCounter; STATUS_CLASSES.len()]>,
    pub upstream_errors: IntCounter,
}

impl AppMetrics {
    /// Counts a request: two short scans and an atomic add.
    pub fn count(&self, decision: &str, status: u16) {
        let row = DECISIONS.iter().position(|known| *known == decision).unwrap_or(DECISIONS.len() - 1);
        let class = match status {
            100..=599 => usize::from(status / 100),
            _ => 0,
        };
        self.requests[row][class].inc();
    }
}

/// Gauges of one gateway's state, read when it is scraped: apart from the
/// process's counters, so that two gateways in one process (the tests)
/// never report each other's.
pub struct State {
    registry: Registry,
}

impl State {
    /// `active_sessions` is None when the store could not count them: the
    /// gauge is left out rather than reported as 0.
    pub fn new(active_sessions: Option<u64>, geoip_builds: &[(String, u64)]) -> Self {
        let registry = Registry::new_custom(Some("stepgate".into()), None).expect("a valid prefix");
        if let Some(count) = active_sessions {
            let sessions = IntGauge::new("active_sessions", "Sessions in the store that are not idle past the inactivity limit.")
                .expect("valid metric");
            sessions.set(i64::try_from(count).unwrap_or(i64::MAX));
            registry.register(Box::new(sessions)).expect("registered once");
        }
        let builds = IntGaugeVec::new(Opts::new("geoip_build_timestamp_seconds", "When each GeoIP database was built."), &["database"])
            .expect("valid metric");
        for (database, built) in geoip_builds {
            builds.with_label_values(&[database]).set(i64::try_from(*built).unwrap_or(i64::MAX));
        }
        registry.register(Box::new(builds)).expect("registered once");
        State { registry }
    }
}
