//! Access rules: which requests a rule covers (path, method and
//! conditions) and what it demands of them (its policy).

use std::collections::BTreeMap;
use std::ops::Range;

use ipnet::IpNet;
use serde::Deserialize;

use super::geo::{ConnectionType, UserType};
use super::values::{self, CountryCode, Method};
use super::PathPattern;
use crate::policy::Expression;

/// What a matching rule demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Anyone, signed in or not.
    Bypass,
    /// A password: no second factor.
    #[serde(alias = "one_factor")]
    Never,
    /// A password, and a second factor when the risk signals call for it.
    Adaptive,
    /// A password and a second factor.
    #[serde(alias = "two_factor")]
    Always,
    Deny,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Bypass => "bypass",
            Policy::Never => "never",
            Policy::Adaptive => "adaptive",
            Policy::Always => "always",
            Policy::Deny => "deny",
        }
    }
}

/// Anonymous-IP categories from MaxMind's Anonymous-IP database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anonymity {
    /// Any of the categories below.
    Any,
    Vpn,
    Tor,
    Hosting,
    PublicProxy,
    ResidentialProxy,
}

/// Minutes after midnight, `start` inclusive, `end` exclusive; a range
/// whose end is before its start wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRange {
    pub start: u16,
    pub end: u16,
}

impl HourRange {
    pub fn contains(self, minute_of_day: u16) -> bool {
        if self.start <= self.end {
            (self.start..self.end).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start || minute_of_day < self.end
        }
    }
}

/// Everything besides path and method a rule can require; all given
/// conditions must hold (an empty list is no condition).
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Named networks, resolved to their CIDRs.
    pub networks: Vec<(String, Vec<IpNet>)>,
    pub countries: Vec<CountryCode>,
    pub continents: Vec<String>,
    pub cities: Vec<String>,
    pub asns: Vec<u32>,
    /// ISP or organisation names, compared without regard to case.
    pub isps: Vec<String>,
    pub connection_types: Vec<ConnectionType>,
    pub user_types: Vec<UserType>,
    /// Second-level domains, lower case.
    pub domains: Vec<String>,
    /// Matches when the client IP is in any of these categories.
    pub anonymous: Vec<Anonymity>,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// Query parameters that must be present with these values.
    pub query: Vec<(String, String)>,
    /// Request headers that must be present with these values.
    pub headers: Vec<(http::HeaderName, String)>,
    pub hours: Option<HourRange>,
    pub days: Vec<chrono::Weekday>,
    /// A CEL expression that must be true, checked after all of the above
    /// (see `policy::expression` for its variables).
    pub when: Option<Expression>,
}

impl Conditions {
    /// Whether the rule can only be decided once the user is known because
    /// it names users or groups. (A `when` expression that reads `user` may
    /// need the user too; that shows when it is evaluated.)
    pub fn needs_identity(&self) -> bool {
        !self.users.is_empty() || !self.groups.is_empty()
    }
}

/// Countries allowed or refused before anything else, sign-in included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoFence {
    pub allow: Vec<CountryCode>,
    pub deny: Vec<CountryCode>,
}

impl GeoFence {
    /// Whether a client from `country` (None: unknown) may pass. With an
    /// allow list, an unknown country does not pass.
    pub fn admits(&self, country: Option<&str>) -> bool {
        let listed = |list: &[CountryCode]| country.is_some_and(|c| list.iter().any(|l| l.0 == c));
        !listed(&self.deny) && (self.allow.is_empty() || listed(&self.allow))
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// None: every path.
    pub pattern: Option<PathPattern>,
    /// Empty means every method.
    pub methods: Vec<Method>,
    pub conditions: Conditions,
    pub fence: GeoFence,
    pub policy: Policy,
    /// The last second factor must be at most this old (seconds): step-up.
    pub max_age: Option<i64>,
    /// Which second factors count here; `ANY` unless the rule names some.
    pub factors: crate::methods::MethodSet,
    /// Where the rule starts in the configuration file, for explanations.
    pub line: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    path: Option<String>,
    glob: Option<String>,
    regex: Option<String>,
    #[serde(default)]
    methods: Vec<Method>,
    policy: Policy,
    #[serde(default, with = "values::optional_duration")]
    max_age: Option<i64>,
    #[serde(default)]
    factors: Vec<String>,
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    countries: Vec<CountryCode>,
    #[serde(default)]
    continents: Vec<values::ContinentCode>,
    #[serde(default)]
    cities: Vec<String>,
    #[serde(default)]
    asns: Vec<u32>,
    #[serde(default)]
    isps: Vec<String>,
    #[serde(default)]
    connection_types: Vec<ConnectionType>,
    #[serde(default)]
    user_types: Vec<UserType>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    anonymous: Vec<Anonymity>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<values::HeaderName, String>,
    hours: Option<values::Hours>,
    #[serde(default)]
    days: Vec<values::Day>,
    #[serde(default)]
    countries_allow: Vec<CountryCode>,
    #[serde(default)]
    countries_deny: Vec<CountryCode>,
    /// A CEL expression, compiled here; where it is in the file, for errors.
    when: Option<toml::Spanned<String>>,
}

/// Why a rule is refused, and where in the file.
#[derive(Debug)]
pub(super) struct RuleError {
    pub message: String,
    /// The byte offset in the file the error is about; None: the rule's start.
    pub offset: Option<usize>,
}

impl From<String> for RuleError {
    fn from(message: String) -> Self {
        RuleError { message, offset: None }
    }
}

impl RawRule {
    /// Checks the rule and resolves its named networks. `text` is the file,
    /// for the place of an error in the `when` expression.
    pub(super) fn build(mut self, networks: &BTreeMap<String, Vec<IpNet>>, fold: bool, line: usize, text: &str) -> Result<Rule, RuleError> {
        let when = match self.when.take() {
            None => None,
            Some(when) => Some(self.compile_when(&when, text)?),
        };
        self.build_with(when, networks, fold, line).map_err(RuleError::from)
    }

    /// The `when` expression, or an error at its place in the file: where
    /// inside the expression the problem is, else the expression's start.
    fn compile_when(&self, when: &toml::Spanned<String>, text: &str) -> Result<Expression, RuleError> {
        let source = when.get_ref();
        Expression::compile(source).map_err(|error| RuleError {
            message: format!("{}: invalid `when` expression `{source}`: {error}", self.describe()),
            offset: Some(place_in_file(text, when.span(), source, error.offset())),
        })
    }

    fn build_with(
        self,
        when: Option<Expression>,
        networks: &BTreeMap<String, Vec<IpNet>>,
        fold: bool,
        line: usize,
    ) -> Result<Rule, String> {
        let pattern = match (self.path, self.glob, self.regex) {
            (None, None, None) => None,
            (Some(prefix), None, None) => Some(PathPattern::prefix(prefix, fold)?),
            (None, Some(glob), None) => Some(PathPattern::glob(&glob, fold)?),
            (None, None, Some(regex)) => Some(PathPattern::regex(&regex, fold)?),
            _ => return Err("a rule takes at most one of `path`, `glob` or `regex`".into()),
        };
        let networks = self
            .networks
            .into_iter()
            .map(|name| match networks.get(&name) {
                Some(nets) => Ok((name, nets.clone())),
                None => Err(format!("unknown network `{name}`: define it under [networks]")),
            })
            .collect::<Result<_, _>>()?;
        if self.max_age.is_some() && !matches!(self.policy, Policy::Always | Policy::Adaptive) {
            return Err("`max_age` needs policy `always` or `adaptive`".into());
        }
        if self.isps.iter().chain(&self.domains).any(|name| name.trim().is_empty()) {
            return Err("an empty name in `isps` or `domains` would never match".into());
        }
        let factors = required_factors(&self.factors)?;
        if !factors.is_any() && !matches!(self.policy, Policy::Always | Policy::Adaptive) {
            return Err("`factors` needs policy `always` or `adaptive`".into());
        }
        let conditions = Conditions {
            networks,
            countries: self.countries,
            continents: self.continents.into_iter().map(|c| c.0).collect(),
            cities: self.cities,
            asns: self.asns,
            isps: self.isps,
            connection_types: self.connection_types,
            user_types: self.user_types,
            domains: self.domains.iter().map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase()).collect(),
            anonymous: self.anonymous,
            users: self.users,
            groups: self.groups,
            query: self.query.into_iter().collect(),
            headers: self
                .headers
                .into_iter()
                .filter_map(|(name, value)| http::HeaderName::from_bytes(name.0.as_bytes()).ok().map(|n| (n, value)))
                .collect(),
            hours: self.hours.map(|h| h.0),
            days: self.days.into_iter().map(|d| d.0).collect(),
            when,
        };
        Ok(Rule {
            pattern,
            methods: self.methods,
            conditions,
            fence: GeoFence { allow: self.countries_allow, deny: self.countries_deny },
            policy: self.policy,
            max_age: self.max_age,
            factors,
            line,
        })
    }

    /// The rule as errors name it: by its pattern.
    fn describe(&self) -> String {
        match (&self.path, &self.glob, &self.regex) {
            (Some(path), _, _) => format!("the rule for path `{path}`"),
            (_, Some(glob), _) => format!("the rule for glob `{glob}`"),
            (_, _, Some(regex)) => format!("the rule for regex `{regex}`"),
            _ => "the rule for every path".into(),
        }
    }
}

/// Where the byte at `offset` of a `when` expression is in the file, given
/// the span of its TOML string: exact when the string holds the expression
/// as written (a literal string, or a basic one without escapes), else the
/// string's opening quote, which is on the `when` line all the same.
fn place_in_file(text: &str, value: Range<usize>, expression: &str, offset: Option<usize>) -> usize {
    let written = text.get(value.clone()).unwrap_or_default();
    match (written.find(expression), offset) {
        (Some(start), Some(offset)) => value.start + start + offset,
        _ => value.start,
    }
}

/// A rule's `factors`: the union of the named methods, or any second
/// factor when none are named.
fn required_factors(names: &[String]) -> Result<crate::methods::MethodSet, String> {
    use crate::methods::MethodSet;
    if names.is_empty() {
        return Ok(MethodSet::ANY);
    }
    names.iter().try_fold(MethodSet::default(), |set, name| match MethodSet::parse_name(name) {
        Some(named) => Ok(set.union(named)),
        None => Err(format!(
            "unknown factor `{name}` in `factors`: use `webauthn`, `security_key`, `platform`, `totp`, `sms`, `voice`, `phone` or `email`"
        )),
    })
}
