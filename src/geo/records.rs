//! The parts of a MaxMind record the gateway reads, borrowed from the
//! database. Decoding only these fields skips the rest of the record (other
//! languages, subdivisions, postal codes), which makes a City lookup about
//! twice as fast as decoding the full `geoip2::City`.

use maxminddb::geoip2;
use serde::Deserialize;

use super::facts::{AnonymousFlags, GeoFacts, Location};

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
        on_globe.then_some(Location { latitude, longitude })
    }
}

/// The network an address belongs to: at the top of an ASN or ISP record,
/// under `traits` in an Enterprise one.
#[derive(Debug, Default, Deserialize)]
pub(super) struct NetworkRecord<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
    #[serde(borrow, default)]
    traits: AutonomousSystem<'a>,
}

#[derive(Debug, Default, Deserialize)]
struct AutonomousSystem<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

impl NetworkRecord<'_> {
    /// Copies the network into `facts`.
    pub(super) fn fill(&self, facts: &mut GeoFacts) {
        facts.asn = self.autonomous_system_number.or(self.traits.autonomous_system_number);
        let organization = self.autonomous_system_organization.or(self.traits.autonomous_system_organization);
        facts.as_org = organization.map(str::to_owned);
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
