//! Whether a rule covers a request: path, method and conditions.

use chrono::{Datelike, TimeZone, Timelike};

use super::expression::Failure;
use super::{Request, Subject};
use crate::config::{Anonymity, Conditions, Policy, PolicyConfig, Rule};
use crate::geo::GeoFacts;

/// The first thing about a request that a rule does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Method,
    Path,
    Network,
    Country,
    Continent,
    City,
    Asn,
    Isp,
    ConnectionType,
    UserType,
    Domain,
    Anonymous,
    Query,
    Header,
    Hours,
    Day,
    User,
    Group,
    /// The `when` expression is false.
    Expression,
    /// The `when` expression failed to evaluate (or is not a bool), on a
    /// rule that does not fail closed: it counts as no match.
    ExpressionFailed,
    /// Every other condition holds, but the rule names users or groups, or
    /// its `when` expression needs the user, and nobody is signed in.
    NeedsIdentity,
}

/// How a rule covers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Match {
    /// Every condition holds.
    Holds,
    /// Every other condition holds, and the `when` expression failed to
    /// evaluate on a rule that fails closed.
    FailedClosed,
}

pub(super) fn check(rule: &Rule, settings: &PolicyConfig, request: &Request, subject: Option<&Subject>) -> Result<Match, Mismatch> {
    require(rule.methods.is_empty() || rule.methods.iter().any(|m| m.0 == *request.method), Mismatch::Method)?;
    require(rule.pattern.as_ref().is_none_or(|p| p.matches(request.path)), Mismatch::Path)?;
    let c = &rule.conditions;
    require(c.networks.is_empty() || c.networks.iter().any(|(_, nets)| nets.iter().any(|n| n.contains(&request.ip))), Mismatch::Network)?;
    check_geo(c, request.geo)?;
    require(c.query.iter().all(|(name, value)| query_has(request.query, name, value)), Mismatch::Query)?;
    require(c.headers.iter().all(|(name, value)| header_is(request.headers, name, value)), Mismatch::Header)?;
    check_time(c, settings, request.now)?;
    let identity = check_subject(c, subject);
    match identity {
        Ok(()) | Err(Mismatch::NeedsIdentity) => {}
        Err(why) => return Err(why),
    }
    // Last, as the most expensive. For a visitor not signed in, it may still
    // show the rule cannot match whoever they are.
    let matched = match &c.when {
        Some(when) => verdict(when.evaluate(request, settings, subject), rule)?,
        None => Match::Holds,
    };
    identity.map(|()| matched)
}

/// Whether a rule whose `when` expression fails to evaluate counts as
/// matched: one that refuses or demands more (`deny`, `always`), so that a
/// typo or a missing header never waives it. Any other rule lets more
/// through than the rules after it may, so it counts as no match.
fn fails_closed(policy: Policy) -> bool {
    matches!(policy, Policy::Deny | Policy::Always)
}

/// What the result of a rule's `when` expression makes of the rule; why it
/// failed goes to the debug log, without the values involved.
fn verdict(result: Result<bool, Failure>, rule: &Rule) -> Result<Match, Mismatch> {
    match result {
        Ok(true) => Ok(Match::Holds),
        Ok(false) => Err(Mismatch::Expression),
        Err(Failure::NeedsIdentity) => Err(Mismatch::NeedsIdentity),
        Err(Failure::Error(why)) if fails_closed(rule.policy) => {
            tracing::debug!(rule_line = rule.line, %why, "a rule's `when` expression failed; counted as matched (fail closed)");
            Ok(Match::FailedClosed)
        }
        Err(Failure::Error(why)) => {
            tracing::debug!(rule_line = rule.line, %why, "a rule's `when` expression failed; counted as no match");
            Err(Mismatch::ExpressionFailed)
        }
    }
}

fn require(holds: bool, otherwise: Mismatch) -> Result<(), Mismatch> {
    if holds {
        Ok(())
    } else {
        Err(otherwise)
    }
}

/// Whether `value` is in `list`; an empty list is no condition.
fn listed<T: PartialEq + ?Sized>(list: &[impl AsRef<T>], value: Option<&T>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|item| item.as_ref() == v))
}

fn check_geo(c: &Conditions, geo: &GeoFacts) -> Result<(), Mismatch> {
    require(c.countries.is_empty() || geo.country.as_deref().is_some_and(|g| c.countries.iter().any(|cc| cc.0 == g)), Mismatch::Country)?;
    require(listed::<str>(&c.continents, geo.continent.as_deref()), Mismatch::Continent)?;
    require(listed::<str>(&c.cities, geo.city.as_deref()), Mismatch::City)?;
    require(c.asns.is_empty() || geo.asn.is_some_and(|asn| c.asns.contains(&asn)), Mismatch::Asn)?;
    require(c.isps.is_empty() || [&geo.isp, &geo.organization].into_iter().any(|name| named(&c.isps, name)), Mismatch::Isp)?;
    require(listed::<str>(&c.connection_types, geo.connection_type.as_deref()), Mismatch::ConnectionType)?;
    require(listed::<str>(&c.user_types, geo.user_type.as_deref()), Mismatch::UserType)?;
    require(c.domains.is_empty() || named(&c.domains, &geo.domain), Mismatch::Domain)?;
    require(c.anonymous.is_empty() || c.anonymous.iter().any(|kind| is_anonymous(geo, *kind)), Mismatch::Anonymous)
}

/// Whether `value` is one of `names`, without regard to ASCII case.
fn named(names: &[String], value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|value| names.iter().any(|name| name.eq_ignore_ascii_case(value)))
}

/// Whether the Anonymous-IP facts put the address in `kind`.
pub fn is_anonymous(geo: &GeoFacts, kind: Anonymity) -> bool {
    let flags = &geo.anonymous;
    match kind {
        Anonymity::Any => {
            flags.is_anonymous
                || flags.is_anonymous_vpn
                || flags.is_tor_exit_node
                || flags.is_hosting_provider
                || flags.is_public_proxy
                || flags.is_residential_proxy
        }
        Anonymity::Vpn => flags.is_anonymous_vpn,
        Anonymity::Tor => flags.is_tor_exit_node,
        Anonymity::Hosting => flags.is_hosting_provider,
        Anonymity::PublicProxy => flags.is_public_proxy,
        Anonymity::ResidentialProxy => flags.is_residential_proxy,
    }
}

/// Whether the parameter is present and every one of its values is
/// `value`: apps disagree on which of repeated values counts (PHP takes
/// the last, most others the first), so none may differ. (The edge also
/// refuses such requests; see `crate::edge`.)
fn query_has(query: Option<&str>, name: &str, value: &str) -> bool {
    let mut values = url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).filter(|(k, _)| k == name).peekable();
    values.peek().is_some() && values.all(|(_, v)| v == value)
}

/// Whether the header's value is `value`. Repeated header lines count as
/// one value joined with commas, as HTTP defines them, so a second line
/// cannot make a condition hold that the first alone would not.
fn header_is(headers: &http::HeaderMap, name: &http::HeaderName, value: &str) -> bool {
    let mut lines = headers.get_all(name).iter();
    match (lines.next(), lines.next()) {
        (Some(only), None) => only.as_bytes() == value.as_bytes(),
        (Some(_), Some(_)) => crate::edge::joined_header(headers, name).is_some_and(|joined| joined == value),
        (None, _) => false,
    }
}

fn check_time(c: &Conditions, settings: &PolicyConfig, now: i64) -> Result<(), Mismatch> {
    if c.hours.is_none() && c.days.is_empty() {
        return Ok(());
    }
    let Some(local) = settings.time_zone.0.timestamp_opt(now, 0).single() else {
        return Err(Mismatch::Hours);
    };
    let minute = (local.hour() * 60 + local.minute()) as u16;
    require(c.hours.is_none_or(|h| h.contains(minute)), Mismatch::Hours)?;
    require(c.days.is_empty() || c.days.contains(&local.weekday()), Mismatch::Day)
}

fn check_subject(c: &Conditions, subject: Option<&Subject>) -> Result<(), Mismatch> {
    if !c.needs_identity() {
        return Ok(());
    }
    let Some(subject) = subject else {
        return Err(Mismatch::NeedsIdentity);
    };
    require(c.users.is_empty() || c.users.iter().any(|u| u == subject.username), Mismatch::User)?;
    require(c.groups.is_empty() || c.groups.iter().any(|g| subject.groups.contains(g)), Mismatch::Group)
}
