//! The parts of a MaxMind record the gateway reads, borrowed from the
//! database. Decoding only these fields skips the rest of the record (other
//! languages, subdivisions, postal codes), which makes a City lookup about
//! twice as fast as decoding the full `geoip2::City`.

use maxminddb::geoip2;
use serde::Deserialize;

use super::facts::{AnonymousFlags, GeoFacts, Location};
use super::sources::DataSet;
use crate::config::GeoData;

/// The fields of a City or Country record the gateway uses. Besides
/// MaxMind's layout, the flat `country_code` of the free ip-location-db and
/// similar country databases is read too.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PlaceRecord<'a> {
    #[serde(borrow, default)]
    country: CountryRecord<'a>,
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    continent: ContinentRecord<'a>,
    #[serde(borrow, default)]
    city: CityRecord<'a>,
    #[serde(default)]
    location: LocationRecord,
}

#[derive(Debug, Default, Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Debug, Default, Deserialize)]
struct ContinentRecord<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(Debug, Default, Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow, default)]
    names: EnglishName<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct EnglishName<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

#[derive(Debug, Default, Deserialize)]
struct LocationRecord {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(default)]
    accuracy_radius: Option<u16>,
}

impl PlaceRecord<'_> {
    /// Copies the place into `facts`.
    pub(super) fn fill(&self, facts: &mut GeoFacts) {
        facts.country = self.country.iso_code.or(self.country_code).map(str::to_owned);
        facts.continent = self.continent.code.map(str::to_owned);
        facts.city = self.city.names.en.map(str::to_owned);
        facts.location = self.location.as_location();
    }
}

impl LocationRecord {
    /// Both coordinates, when present and on the globe.
    fn as_location(&self) -> Option<Location> {
        let (latitude, longitude) = (self.latitude?, self.longitude?);
        let on_globe = (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude);
        on_globe.then_some(Location { latitude, longitude, accuracy_km: self.accuracy_radius })
    }
}

/// What an address's network is: at the top of an ASN, ISP,
/// Connection-Type or Domain record, under `traits` in an Enterprise one.
/// (Not `#[serde(flatten)]`: that would buffer every other field of an
/// Enterprise record.)
#[derive(Debug, Default, Deserialize)]
pub(super) struct TraitsRecord<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
    #[serde(borrow, default)]
    isp: Option<&'a str>,
    #[serde(borrow, default)]
    organization: Option<&'a str>,
    #[serde(borrow, default)]
    connection_type: Option<&'a str>,
    #[serde(borrow, default)]
    domain: Option<&'a str>,
    #[serde(borrow, default)]
    traits: Traits<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct Traits<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
    #[serde(borrow, default)]
    isp: Option<&'a str>,
    #[serde(borrow, default)]
    organization: Option<&'a str>,
    #[serde(borrow, default)]
    connection_type: Option<&'a str>,
    #[serde(borrow, default)]
    user_type: Option<&'a str>,
    #[serde(borrow, default)]
    domain: Option<&'a str>,
}

impl TraitsRecord<'_> {
    /// Copies into `facts` the kinds of data in `serves`.
    pub(super) fn fill(&self, serves: DataSet, facts: &mut GeoFacts) {
        let traits = &self.traits;
        let text = |top: Option<&str>, traits: Option<&str>| top.or(traits).map(str::to_owned);
        if serves.contains(GeoData::Network) {
            facts.asn = self.autonomous_system_number.or(traits.autonomous_system_number);
            facts.as_org = text(self.autonomous_system_organization, traits.autonomous_system_organization);
        }
        if serves.contains(GeoData::Isp) {
            facts.isp = text(self.isp, traits.isp);
            facts.organization = text(self.organization, traits.organization);
        }
        if serves.contains(GeoData::ConnectionType) {
            facts.connection_type = text(self.connection_type, traits.connection_type);
        }
        if serves.contains(GeoData::UserType) {
            facts.user_type = traits.user_type.map(str::to_owned);
        }
        if serves.contains(GeoData::Domain) {
            facts.domain = text(self.domain, traits.domain);
        }
    }
}

/// Copies an Anonymous-IP record into `facts`.
pub(super) fn fill_anonymous(record: &geoip2::AnonymousIp, facts: &mut GeoFacts) {
    let flag = |value: Option<bool>| value.unwrap_or(false);
    facts.anonymous = AnonymousFlags {
        is_anonymous: flag(record.is_anonymous),
        is_anonymous_vpn: flag(record.is_anonymous_vpn),
        is_tor_exit_node: flag(record.is_tor_exit_node),
        is_hosting_provider: flag(record.is_hosting_provider),
        is_public_proxy: flag(record.is_public_proxy),
        is_residential_proxy: flag(record.is_residential_proxy),
    };
}
