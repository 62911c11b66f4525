//! A GeoIP2 Enterprise database built in the test, in the record layout
//! MaxMind documents (MaxMind's test databases include no Enterprise one).

use serde::Serialize;
use serde_json::json;

/// Where one network is.
pub struct Place {
    pub country: &'static str,
    pub city: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy_km: u16,
}

/// An Enterprise record's `traits`, with MaxMind's types (the ASN a uint32).
#[derive(Serialize, Clone)]
pub struct Traits {
    pub autonomous_system_number: u32,
    pub autonomous_system_organization: &'static str,
    pub connection_type: &'static str,
    pub domain: &'static str,
    pub isp: &'static str,
    pub organization: &'static str,
    pub user_type: &'static str,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    /// A uint16, as MaxMind writes it.
    accuracy_radius: u16,
}

#[derive(Serialize)]
struct Record {
    country: serde_json::Value,
    city: serde_json::Value,
    location: Location,
    traits: Traits,
}

/// A `GeoIP2-Enterprise` database with these networks.
pub fn enterprise_database(networks: &[(&str, Place, Traits)]) -> Vec<u8> {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-Enterprise");
    for (net, place, traits) in networks {
        let record = Record {
            country: json!({ "iso_code": place.country, "confidence": 99 }),
            city: json!({ "names": { "en": place.city }, "confidence": 80 }),
            location: Location { latitude: place.latitude, longitude: place.longitude, accuracy_radius: place.accuracy_km },
            traits: traits.clone(),
        };
        writer.insert(net.parse::<ipnet::IpNet>().unwrap(), &record).unwrap();
    }
    writer.to_bytes().unwrap()
}
