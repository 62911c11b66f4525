//! The `[geoip]` section, the kinds of data its databases carry, the
//! values of the network conditions, and which data each rule reads.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::Rule;

/// MaxMind databases (GeoIP2/GeoLite2 `.mmdb` files), each optional;
/// paths are relative to this file. One file may be named for several
/// settings (it is read once), and a file also serves every kind of data
/// it carries that no setting of its own names: an Enterprise database as
/// `city` answers for ASN, ISP, connection type, user type and domain too.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpConfig {
    /// A City, Country or Enterprise database: country, continent, city,
    /// coordinates and their accuracy radius.
    pub city: Option<PathBuf>,
    /// An ASN, ISP or Enterprise database: autonomous system number and
    /// organisation (and, from ISP or Enterprise, the ISP and organisation).
    pub asn: Option<PathBuf>,
    /// An Anonymous-IP database: VPN, Tor exit, hosting, public proxy.
    pub anonymous_ip: Option<PathBuf>,
    /// A Connection-Type or Enterprise database: cellular, corporate, ...
    pub connection_type: Option<PathBuf>,
    /// A Domain or Enterprise database: the second-level domain of the
    /// address's reverse DNS name.
    pub domain: Option<PathBuf>,
}

impl GeoIpConfig {
    /// The files, for resolving relative paths.
    pub(super) fn files_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        [&mut self.city, &mut self.asn, &mut self.anonymous_ip, &mut self.connection_type, &mut self.domain].into_iter().flatten()
    }
}

/// A kind of data about an address that some MaxMind databases carry and
/// rules may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GeoData {
    /// Country, continent, city, coordinates and accuracy radius.
    Place,
    /// Autonomous system number and organisation.
    Network,
    /// ISP and organisation names.
    Isp,
    /// `Cable/DSL`, `Cellular`, `Corporate`, ...
    ConnectionType,
    /// `business`, `residential`, `hosting`, ...
    UserType,
    /// The second-level domain of the reverse DNS name.
    Domain,
    /// The Anonymous-IP flags.
    Anonymous,
}

impl GeoData {
    pub const ALL: [GeoData; 7] =
        [GeoData::Place, GeoData::Network, GeoData::Isp, GeoData::ConnectionType, GeoData::UserType, GeoData::Domain, GeoData::Anonymous];

    /// The data in words.
    pub fn name(self) -> &'static str {
        match self {
            GeoData::Place => "the country and place",
            GeoData::Network => "the autonomous system (ASN)",
            GeoData::Isp => "the ISP and organisation",
            GeoData::ConnectionType => "the connection type",
            GeoData::UserType => "the user type",
            GeoData::Domain => "the domain",
            GeoData::Anonymous => "the anonymous-IP flags",
        }
    }

    /// How to configure a database that carries the data.
    pub fn remedy(self) -> &'static str {
        match self {
            GeoData::Place => "set geoip.city to a City, Country or Enterprise database",
            GeoData::Network => "set geoip.asn to an ASN, ISP or Enterprise database (or geoip.city to an Enterprise one)",
            GeoData::Isp => "set geoip.asn to an ISP or Enterprise database (or geoip.city to an Enterprise one)",
            GeoData::ConnectionType => {
                "set geoip.connection_type to a Connection-Type or Enterprise database (or geoip.city to an Enterprise one)"
            }
            GeoData::UserType => "set geoip.city to an Enterprise database: only GeoIP2 Enterprise carries user types",
            GeoData::Domain => "set geoip.domain to a Domain or Enterprise database (or geoip.city to an Enterprise one)",
            GeoData::Anonymous => "set geoip.anonymous_ip to an Anonymous-IP database",
        }
    }
}

/// A MaxMind connection type, as the Connection-Type and Enterprise
/// databases spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionType(pub &'static str);

const CONNECTION_TYPES: [&str; 5] = ["Cable/DSL", "Cellular", "Corporate", "Dialup", "Satellite"];

impl<'de> Deserialize<'de> for ConnectionType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        one_of(&raw, &CONNECTION_TYPES)
            .map(ConnectionType)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown connection type `{raw}`: use {}", CONNECTION_TYPES.join(", "))))
    }
}

impl AsRef<str> for ConnectionType {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// A MaxMind user type, as the Enterprise database spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserType(pub &'static str);

const USER_TYPES: [&str; 16] = [
    "business",
    "cafe",
    "cellular",
    "college",
    "consumer_privacy_network",
    "content_delivery_network",
    "dialup",
    "government",
    "hosting",
    "library",
    "military",
    "residential",
    "router",
    "school",
    "search_engine_spider",
    "traveler",
];

impl<'de> Deserialize<'de> for UserType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        one_of(&raw, &USER_TYPES)
            .map(UserType)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown user type `{raw}`: use {}", USER_TYPES.join(", "))))
    }
}

impl AsRef<str> for UserType {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// The canonical spelling of `raw` among `known`, ignoring case, so that a
/// typo is an error at load rather than a condition that never holds.
fn one_of(raw: &str, known: &[&'static str]) -> Option<&'static str> {
    known.iter().copied().find(|k| k.eq_ignore_ascii_case(raw.trim()))
}

/// Something in the configuration that reads geo data: which data, and
/// who reads it, in words for an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoNeed {
    pub data: GeoData,
    pub reader: String,
}

impl super::Config {
    /// Every piece of geo data the rules and country fences read. The
    /// gateway refuses a configuration whose databases lack one, rather
    /// than let a condition silently never (or always) hold.
    pub fn geo_needs(&self) -> Vec<GeoNeed> {
        let mut needs = Vec::new();
        for app in &self.apps {
            if !app.fence.allow.is_empty() || !app.fence.deny.is_empty() {
                needs.push(GeoNeed { data: GeoData::Place, reader: format!("app `{}`: its country fence", app.id()) });
            }
            for (index, rule) in app.rules.iter().enumerate() {
                for (data, what) in rule_reads(rule) {
                    let reader = format!("app `{}`, rule {} (line {}): {what}", app.id(), index + 1, rule.line);
                    needs.push(GeoNeed { data, reader });
                }
            }
        }
        needs
    }
}

/// The geo data a rule reads, and through which of its settings.
fn rule_reads(rule: &Rule) -> Vec<(GeoData, String)> {
    let c = &rule.conditions;
    let mut reads = Vec::new();
    let mut read = |used: bool, data: GeoData, setting: &str| {
        if used {
            reads.push((data, format!("`{setting}`")));
        }
    };
    read(!c.countries.is_empty(), GeoData::Place, "countries");
    read(!c.continents.is_empty(), GeoData::Place, "continents");
    read(!c.cities.is_empty(), GeoData::Place, "cities");
    read(!rule.fence.allow.is_empty() || !rule.fence.deny.is_empty(), GeoData::Place, "countries_allow/countries_deny");
    read(!c.asns.is_empty(), GeoData::Network, "asns");
    read(!c.isps.is_empty(), GeoData::Isp, "isps");
    read(!c.connection_types.is_empty(), GeoData::ConnectionType, "connection_types");
    read(!c.user_types.is_empty(), GeoData::UserType, "user_types");
    read(!c.domains.is_empty(), GeoData::Domain, "domains");
    read(!c.anonymous.is_empty(), GeoData::Anonymous, "anonymous");
    if let Some(when) = &c.when {
        for (data, field) in when.geo_reads() {
            reads.push((data, format!("`when` reads request.geo.{field}")));
        }
    }
    reads
}
