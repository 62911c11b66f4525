//! Who must prove what: route matching and the decision. Pure functions of
//! their inputs, with no IO, so every case is a table test.

mod path;

pub use path::{normalize_path, PathError};

use crate::config::{AppConfig, Policy, Rule};

/// What the session has proven, as far as the decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Proof {
    pub signed_in: bool,
    pub second_factor: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Pass to the app; `with_identity` when there is a user to assert.
    Allow { with_identity: bool },
    /// Sign in first.
    SignIn,
    /// Signed in, but the route needs a second factor.
    SecondFactor,
    Deny(DenyReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A rule says `deny`.
    Rule,
    /// No rule matched: the default is to deny.
    NoRule,
}

/// The decision and the rule it came from (its index in the app's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub rule: Option<usize>,
    pub decision: Decision,
}

/// The first rule that matches the method and (normalized) path.
pub fn match_rule<'a>(rules: &'a [Rule], method: &http::Method, path: &str) -> Option<(usize, &'a Rule)> {
    rules.iter().enumerate().find(|(_, rule)| {
        (rule.methods.is_empty() || rule.methods.iter().any(|m| m.0 == *method)) && rule.pattern.matches(path)
    })
}

pub fn decide(app: &AppConfig, method: &http::Method, path: &str, proof: Proof) -> Outcome {
    let Some((index, rule)) = match_rule(&app.rules, method, path) else {
        return Outcome { rule: None, decision: Decision::Deny(DenyReason::NoRule) };
    };
    let decision = match (rule.policy, proof) {
        (Policy::Deny, _) => Decision::Deny(DenyReason::Rule),
        (Policy::Bypass, proof) => Decision::Allow { with_identity: proof.signed_in },
        (_, Proof { signed_in: false, .. }) => Decision::SignIn,
        (Policy::OneFactor, _) => Decision::Allow { with_identity: true },
        (Policy::TwoFactor, Proof { second_factor: true, .. }) => Decision::Allow { with_identity: true },
        (Policy::TwoFactor, _) => Decision::SecondFactor,
    };
    Outcome { rule: Some(index), decision }
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::SignIn => "sign_in",
            Decision::SecondFactor => "second_factor",
            Decision::Deny(DenyReason::Rule) => "deny",
            Decision::Deny(DenyReason::NoRule) => "deny_no_rule",
        }
    }
}

#[cfg(test)]
mod tests;
