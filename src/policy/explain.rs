//! Why a decision came out as it did: the rules that did not match and
//! what about the request they did not cover. For `stepgate policy
//! explain` and the debug log.

use std::fmt::Write;

use super::{evaluate, Decision, DenyReason, Mismatch, Outcome, Request, StepUp, Subject, Trace};
use crate::config::{AppConfig, PolicyConfig};

/// A rule passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub index: usize,
    pub why_not: Mismatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub outcome: Outcome,
    pub skipped: Vec<RuleTrace>,
}

impl Trace for Vec<RuleTrace> {
    const EVERY_RULE: bool = true;

    fn skipped(&mut self, index: usize, why_not: Mismatch) {
        self.push(RuleTrace { index, why_not });
    }
}

pub fn explain(app: &AppConfig, settings: &PolicyConfig, request: &Request, subject: Option<&Subject>) -> Explanation {
    let mut skipped = Vec::new();
    let outcome = evaluate(app, settings, request, subject, &mut skipped);
    Explanation { outcome, skipped }
}

impl Explanation {
    /// The explanation as lines of text.
    pub fn render(&self, app: &AppConfig) -> String {
        let mut out = String::new();
        for trace in &self.skipped {
            let line = app.rules.get(trace.index).map(|r| r.line).unwrap_or(0);
            let _ = writeln!(out, "rule {} (line {line}): no match, {}", trace.index + 1, describe(trace.why_not));
        }
        match self.outcome.rule.and_then(|i| app.rules.get(i).map(|r| (i, r))) {
            Some((i, rule)) => {
                let _ = write!(out, "rule {} (line {}): matches, policy {}", i + 1, rule.line, rule.policy.name());
                if self.outcome.condition_failed {
                    let _ = write!(out, ": its `when` expression failed to evaluate: counted as matched (fail closed)");
                }
                let _ = writeln!(out);
            }
            None if self.outcome.decision == Decision::Deny(DenyReason::Geo) => {
                let _ = writeln!(out, "app {}: the client's country is fenced out", app.id());
            }
            None => {
                let _ = writeln!(out, "no rule matches: the app's default policy {} applies", app.default_policy.name());
            }
        }
        let _ = writeln!(out, "decision: {}", describe_decision(self.outcome.decision));
        out
    }
}

fn describe(why: Mismatch) -> &'static str {
    match why {
        Mismatch::Method => "the method is not listed",
        Mismatch::Path => "the path does not match",
        Mismatch::Network => "the client IP is in none of its networks",
        Mismatch::Country => "the client's country is not listed",
        Mismatch::Continent => "the client's continent is not listed",
        Mismatch::City => "the client's city is not listed",
        Mismatch::Asn => "the client's network (ASN) is not listed",
        Mismatch::Isp => "the client's ISP or organisation is not listed",
        Mismatch::ConnectionType => "the client's connection type is not listed",
        Mismatch::UserType => "the client's user type is not listed",
        Mismatch::Domain => "the client's domain is not listed",
        Mismatch::Anonymous => "the client IP is not an anonymous one of the listed kinds",
        Mismatch::Query => "a query parameter is missing or different",
        Mismatch::Header => "a request header is missing or different",
        Mismatch::Hours => "outside its hours",
        Mismatch::Day => "not on one of its days",
        Mismatch::User => "the user is not listed",
        Mismatch::Group => "the user is in none of its groups",
        Mismatch::Expression => "its `when` expression is false",
        Mismatch::ExpressionFailed => "its `when` expression failed to evaluate: counted as no match",
        Mismatch::NeedsIdentity => "it names users or groups, or its `when` expression needs the user, and nobody is signed in",
    }
}

fn describe_decision(decision: Decision) -> String {
    match decision {
        Decision::Allow { with_identity: true } => "allow, with the user's assertion".into(),
        Decision::Allow { with_identity: false } => "allow, anonymously".into(),
        Decision::SignIn => "sign in first".into(),
        Decision::SecondFactor(StepUp::Required) => "a second factor is needed".into(),
        Decision::SecondFactor(StepUp::Stale { max_age, .. }) => {
            format!("step up: the last second factor is older than {max_age} s")
        }
        Decision::SecondFactor(StepUp::Risk) => "a second factor is needed: the risk signals lower the confidence".into(),
        Decision::SecondFactor(StepUp::Stronger(factors)) => {
            format!("a stronger second factor is needed: one of {}", factors.to_query().replace(',', ", "))
        }
        Decision::Deny(DenyReason::Rule) => "deny: the rule says so".into(),
        Decision::Deny(DenyReason::NoRule) => "deny: no rule matches".into(),
        Decision::Deny(DenyReason::Geo) => "deny: the client's country is not allowed".into(),
    }
}
