//! Who must prove what: route matching, conditions and the decision. Pure
//! functions of their inputs, with no IO, so every case is a table test.

mod conditions;
mod explain;
mod expression;
mod path;
pub mod risk;

use std::net::IpAddr;

pub use conditions::{is_anonymous, Mismatch};
pub use explain::{explain, Explanation, RuleTrace};
pub use expression::{CompileError, Expression};
pub use path::{canonical_path, normalize_path, PathError};

use crate::clock::UnixTime;
use crate::config::{AppConfig, Confidence, Policy, PolicyConfig, Rule};
use crate::geo::GeoFacts;
use crate::methods::{MethodSet, MethodTimes};

/// The request as the policy sees it.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a http::Method,
    /// The method a client's `X-HTTP-Method-Override` (or kin) names, for
    /// apps that honour it: the request passes only if the rules allow
    /// both methods.
    pub method_override: Option<&'a http::Method>,
    /// In canonical form (see [`canonical_path`]).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub ip: IpAddr,
    pub geo: &'a GeoFacts,
    pub now: UnixTime,
}

/// The signed-in user as the policy sees them.
pub struct Subject<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
    /// When the session last did each kind of second factor.
    pub second_factors: MethodTimes,
    /// The user asked to trust this browser after a second factor.
    pub trusted_browser: bool,
    pub confidence: Confidence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Pass to the app; `with_identity` when there is a user to assert.
    Allow {
        with_identity: bool,
    },
    /// Sign in first.
    SignIn,
    /// Signed in, but a (fresh) second factor is needed.
    SecondFactor(StepUp),
    Deny(DenyReason),
}

/// Why a second factor is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepUp {
    /// The rule always wants one.
    Required,
    /// The last one (of `factors`) is older than the rule's `max_age` (seconds).
    Stale { max_age: i64, factors: MethodSet },
    /// An adaptive rule, and the confidence is below the minimum.
    Risk,
    /// The rule wants one of these factors, which the session has not done
    /// (recently enough).
    Stronger(MethodSet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A rule says `deny`.
    Rule,
    /// No rule matched and the app's default is to deny.
    NoRule,
    /// The client's country is fenced out.
    Geo,
}

/// The decision and the rule it came from (its index in the app's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub rule: Option<usize>,
    pub decision: Decision,
    /// The rule matched only because its `when` expression failed to
    /// evaluate: a `deny` or `always` rule fails closed.
    pub condition_failed: bool,
}

/// Receives the rules that did not match, for explanations.
pub(crate) trait Trace {
    /// Try every rule, not only the index's candidates, so that each one
    /// passed over is reported.
    const EVERY_RULE: bool;

    fn skipped(&mut self, index: usize, why: Mismatch);
}

struct NoTrace;

impl Trace for NoTrace {
    const EVERY_RULE: bool = false;

    #[inline]
    fn skipped(&mut self, _: usize, _: Mismatch) {}
}

pub fn decide(app: &AppConfig, settings: &PolicyConfig, request: &Request, subject: Option<&Subject>) -> Outcome {
    evaluate(app, settings, request, subject, &mut NoTrace)
}

/// The outcome for the request's method and, when it names another one
/// in an override header, the stricter of the two.
pub(crate) fn evaluate<T: Trace>(
    app: &AppConfig,
    settings: &PolicyConfig,
    request: &Request,
    subject: Option<&Subject>,
    trace: &mut T,
) -> Outcome {
    let outcome = evaluate_method(app, settings, request, subject, trace);
    match request.method_override {
        Some(named) if named != request.method => {
            let as_named = Request { method: named, method_override: None, ..*request };
            stricter(outcome, evaluate_method(app, settings, &as_named, subject, trace))
        }
        _ => outcome,
    }
}

/// Of two outcomes, the one that lets less through: a refusal over a
/// sign-in over a second factor over a pass.
fn stricter(a: Outcome, b: Outcome) -> Outcome {
    let rank = |outcome: &Outcome| match outcome.decision {
        Decision::Allow { .. } => 0,
        Decision::SecondFactor(_) => 1,
        Decision::SignIn => 2,
        Decision::Deny(_) => 3,
    };
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}

fn evaluate_method<T: Trace>(
    app: &AppConfig,
    settings: &PolicyConfig,
    request: &Request,
    subject: Option<&Subject>,
    trace: &mut T,
) -> Outcome {
    if !app.fence.admits(request.geo.country.as_deref()) {
        return Outcome { rule: None, decision: Decision::Deny(DenyReason::Geo), condition_failed: false };
    }
    let matched = if T::EVERY_RULE {
        first_match(app, 0..app.rules.len(), settings, request, subject, trace)
    } else {
        first_match(app, app.index.candidates(request.path), settings, request, subject, trace)
    };
    if let Some(outcome) = matched {
        return outcome;
    }
    let decision = match app.default_policy {
        Policy::Deny => Decision::Deny(DenyReason::NoRule),
        policy => demand(policy, Freshness { max_age: None, factors: MethodSet::ANY }, settings, request.now, subject),
    };
    Outcome { rule: None, decision, condition_failed: false }
}

/// The outcome of the first of `candidates` that covers the request.
fn first_match(
    app: &AppConfig,
    candidates: impl Iterator<Item = usize>,
    settings: &PolicyConfig,
    request: &Request,
    subject: Option<&Subject>,
    trace: &mut impl Trace,
) -> Option<Outcome> {
    for index in candidates {
        let rule = &app.rules[index];
        match conditions::check(rule, settings, request, subject) {
            Ok(matched) => {
                let decision = apply(rule, settings, request, subject);
                let condition_failed = matched == conditions::Match::FailedClosed;
                return Some(Outcome { rule: Some(index), decision, condition_failed });
            }
            // Everything but the user matched: find out who it is first.
            Err(Mismatch::NeedsIdentity) => {
                return Some(Outcome { rule: Some(index), decision: Decision::SignIn, condition_failed: false })
            }
            Err(why) => trace.skipped(index, why),
        }
    }
    None
}

fn apply(rule: &Rule, settings: &PolicyConfig, request: &Request, subject: Option<&Subject>) -> Decision {
    if !rule.fence.admits(request.geo.country.as_deref()) {
        return Decision::Deny(DenyReason::Geo);
    }
    demand(rule.policy, Freshness { max_age: rule.max_age, factors: rule.factors }, settings, request.now, subject)
}

/// Which second factors count, and how old they may be.
#[derive(Clone, Copy)]
struct Freshness {
    max_age: Option<i64>,
    factors: MethodSet,
}

/// What a policy demands of this subject.
fn demand(policy: Policy, wanted: Freshness, settings: &PolicyConfig, now: UnixTime, subject: Option<&Subject>) -> Decision {
    let allow = Decision::Allow { with_identity: true };
    match (policy, subject) {
        (Policy::Bypass, subject) => Decision::Allow { with_identity: subject.is_some() },
        (Policy::Deny, _) => Decision::Deny(DenyReason::Rule),
        (_, None) => Decision::SignIn,
        (Policy::Never, Some(_)) => allow,
        (Policy::Always, Some(subject)) => second_factor(subject, wanted, now).map_or(allow, Decision::SecondFactor),
        (Policy::Adaptive, Some(subject)) => {
            if wanted.max_age.is_none() && risk_is_acceptable(subject, settings) {
                return allow;
            }
            // A second factor is demanded: `factors` says which ones count,
            // whatever else the session did.
            match second_factor(subject, wanted, now) {
                None => allow,
                Some(StepUp::Required) if wanted.max_age.is_none() => Decision::SecondFactor(StepUp::Risk),
                Some(missing) => Decision::SecondFactor(missing),
            }
        }
    }
}

/// Whether an adaptive rule may skip the second factor for this sign-in:
/// its confidence reaches the minimum, or it was done on a browser the
/// user trusts. Trust never outranks risk: a sign-in assessed `Low`
/// (impossible travel, an untrusted or anonymous address) is not skipped
/// on a trusted browser either, since the device cookie is what an
/// attacker would lift.
fn risk_is_acceptable(subject: &Subject, settings: &PolicyConfig) -> bool {
    subject.confidence >= settings.adaptive_minimum || (subject.trusted_browser && subject.confidence > Confidence::Low)
}

/// What is missing for a second factor that is fresh enough, if anything.
fn second_factor(subject: &Subject, wanted: Freshness, now: UnixTime) -> Option<StepUp> {
    let any = subject.second_factors.latest(MethodSet::ANY);
    let strong_enough = subject.second_factors.latest(wanted.factors);
    match (any, strong_enough, wanted.max_age) {
        (None, _, _) if wanted.factors.is_any() => Some(StepUp::Required),
        (_, None, _) => Some(StepUp::Stronger(wanted.factors)),
        (_, Some(at), Some(max_age)) if now - at > max_age => Some(StepUp::Stale { max_age, factors: wanted.factors }),
        (_, Some(_), _) => None,
    }
}

/// Whether any rule (or app default) this user could reach asks for a
/// second factor: `always`, or `adaptive`, which may. A rule that names
/// users or groups counts only when it names this user or one of their
/// groups; other conditions (network, place, time) are assumed to match.
pub fn may_require_second_factor(apps: &[AppConfig], username: &str, groups: &[String]) -> bool {
    let demands = |policy: Policy| matches!(policy, Policy::Always | Policy::Adaptive);
    apps.iter().any(|app| {
        demands(app.default_policy)
            || app.rules.iter().any(|rule| {
                let c = &rule.conditions;
                let names_someone = !c.users.is_empty() || !c.groups.is_empty();
                let names_user = c.users.iter().any(|u| u == username) || c.groups.iter().any(|g| groups.contains(g));
                demands(rule.policy) && (!names_someone || names_user)
            })
    })
}

impl StepUp {
    /// The second factors that would satisfy the rule.
    pub fn factors(self) -> MethodSet {
        match self {
            StepUp::Required | StepUp::Risk => MethodSet::ANY,
            StepUp::Stale { factors, .. } | StepUp::Stronger(factors) => factors,
        }
    }
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::SignIn => "sign_in",
            Decision::SecondFactor(StepUp::Required) => "second_factor",
            Decision::SecondFactor(StepUp::Stale { .. }) => "step_up",
            Decision::SecondFactor(StepUp::Risk) => "second_factor_risk",
            Decision::SecondFactor(StepUp::Stronger(_)) => "stronger_factor",
            Decision::Deny(DenyReason::Rule) => "deny",
            Decision::Deny(DenyReason::NoRule) => "deny_no_rule",
            Decision::Deny(DenyReason::Geo) => "deny_geo",
        }
    }
}

#[cfg(test)]
mod tests;
