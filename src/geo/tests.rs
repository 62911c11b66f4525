//! Databases built here with known answers, and damaged copies of them.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use super::database::{Database, PROBE_RECORDS};
use super::*;

const LONDON_LATITUDE: f64 = 51.5142;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn place(country: &str, continent: &str, city: &str, latitude: f64, longitude: f64) -> Value {
    json!({
        "country": { "iso_code": country, "names": { "en": country, "de": country } },
        "continent": { "code": continent },
        "city": { "names": { "en": city } },
        "location": { "latitude": latitude, "longitude": longitude, "time_zone": "Europe/London" },
        "subdivisions": [{ "iso_code": "ENG" }]
    })
}

fn city_bytes() -> Vec<u8> {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-City");
    writer.insert(net("81.2.69.0/24"), &place("GB", "EU", "London", LONDON_LATITUDE, -0.0931)).unwrap();
    writer.insert(net("2001:db8::/32"), &place("DE", "EU", "Berlin", 52.52, 13.40)).unwrap();
    writer.insert(net("192.0.2.0/24"), &json!({ "country": { "iso_code": "CH" } })).unwrap();
    writer.to_bytes().unwrap()
}

#[derive(Serialize)]
struct AsnRow {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

fn asn_bytes() -> Vec<u8> {
    let mut writer = mmdb_writer::Writer::new("GeoLite2-ASN");
    let row = AsnRow { autonomous_system_number: 64_500, autonomous_system_organization: "Example Net" };
    writer.insert(net("81.2.69.0/24"), &row).unwrap();
    writer.to_bytes().unwrap()
}

fn anonymous_bytes() -> Vec<u8> {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-Anonymous-IP");
    writer.insert(net("81.2.69.128/25"), &json!({ "is_anonymous": true, "is_tor_exit_node": true })).unwrap();
    writer.to_bytes().unwrap()
}

fn database(slot: Slot, bytes: Vec<u8>) -> Database {
    Database::from_bytes(slot, Path::new("test.mmdb"), bytes).unwrap()
}

/// A configuration with these extra lines.
fn config(extra: &str) -> Config {
    let text = format!(
        "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"data\"\n\
         [[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://127.0.0.1:1\"]\n{extra}"
    );
    Config::parse(&text, Path::new("/etc/stepgate/stepgate.toml")).unwrap()
}

/// The databases, each named by the one setting given.
fn set_of(files: Vec<(Slot, Vec<u8>)>) -> GeoDatabases {
    GeoDatabases::assemble(files.into_iter().map(|(slot, bytes)| (database(slot, bytes), vec![slot])).collect())
}

fn only(slot: Slot, bytes: Vec<u8>) -> GeoDatabases {
    set_of(vec![(slot, bytes)])
}

fn all_three() -> GeoDatabases {
    set_of(vec![(Slot::City, city_bytes()), (Slot::Asn, asn_bytes()), (Slot::AnonymousIp, anonymous_bytes())])
}

fn refusal(slot: Slot, bytes: Vec<u8>) -> GeoError {
    Database::from_bytes(slot, Path::new("/data/geo.mmdb"), bytes).unwrap_err()
}

/// The control byte of an 8-byte double followed by `value`, as stored.
fn encoded_double(value: f64) -> Vec<u8> {
    let mut encoded = vec![0x68];
    encoded.extend_from_slice(&value.to_be_bytes());
    encoded
}

/// Makes the stored double `value` claim a size of 7 bytes, as in MaxMind's
/// `GeoIP2-City-Test-Broken-Double-Format.mmdb`.
fn break_double(bytes: &mut [u8], value: f64) {
    let encoded = encoded_double(value);
    let mut places = bytes.windows(encoded.len()).enumerate().filter(|(_, w)| *w == encoded.as_slice());
    let (at, _) = places.next().expect("the double is in the file");
    assert!(places.next().is_none(), "the double is stored once");
    bytes[at] = 0x67;
}

#[test]
fn finds_the_place_country_continent_city_and_location() {
    let facts = all_three().lookup(ip("81.2.69.10"));
    assert_eq!(facts.country.as_deref(), Some("GB"));
    assert_eq!(facts.continent.as_deref(), Some("EU"));
    assert_eq!(facts.city.as_deref(), Some("London"));
    assert_eq!(facts.location, Some(Location { latitude: LONDON_LATITUDE, longitude: -0.0931, accuracy_km: None }));
}

#[test]
fn finds_the_asn_and_the_anonymous_flags() {
    let facts = all_three().lookup(ip("81.2.69.200"));
    assert_eq!((facts.asn, facts.as_org.as_deref()), (Some(64_500), Some("Example Net")));
    let expected = AnonymousFlags { is_anonymous: true, is_tor_exit_node: true, ..AnonymousFlags::default() };
    assert_eq!(facts.anonymous, expected);
    assert_eq!(all_three().lookup(ip("81.2.69.10")).anonymous, AnonymousFlags::default());
}

#[test]
fn finds_an_ipv6_network() {
    let facts = all_three().lookup(ip("2001:db8:1::7"));
    assert_eq!((facts.country.as_deref(), facts.city.as_deref()), (Some("DE"), Some("Berlin")));
}

#[test]
fn looks_up_an_ipv4_mapped_address_as_ipv4() {
    let databases = all_three();
    assert_eq!(databases.lookup(ip("::ffff:81.2.69.200")), databases.lookup(ip("81.2.69.200")));
    assert_eq!(databases.lookup(ip("::ffff:81.2.69.200")).country.as_deref(), Some("GB"));
}

#[test]
fn a_country_only_record_leaves_city_and_location_empty() {
    let facts = all_three().lookup(ip("192.0.2.1"));
    assert_eq!(facts.country.as_deref(), Some("CH"));
    assert_eq!((facts.city, facts.location, facts.asn), (None, None, None));
}

#[test]
fn an_address_without_a_record_gives_empty_facts() {
    let databases = all_three();
    for address in ["8.8.8.8", "127.0.0.1", "2001:4860::8888", "::"] {
        assert_eq!(databases.lookup(ip(address)), GeoFacts::default(), "{address}");
    }
}

#[test]
fn no_databases_give_empty_facts() {
    let databases = GeoDatabases::empty();
    assert!(databases.is_empty());
    assert!(!all_three().is_empty());
    assert_eq!(databases.lookup(ip("81.2.69.10")), GeoFacts::default());
}

#[test]
fn an_ipv6_address_in_an_ipv4_database_has_no_record() {
    let mut writer = mmdb_writer::Writer::builder("GeoIP2-Country").ip_version(mmdb_writer::IpVersion::V4).build();
    writer.insert(net("81.2.69.0/24"), &json!({ "country": { "iso_code": "GB" } })).unwrap();
    let databases = only(Slot::City, writer.to_bytes().unwrap());
    assert_eq!(databases.lookup(ip("::ffff:81.2.69.1")).country.as_deref(), Some("GB"));
    assert_eq!(databases.lookup(ip("2001:db8::1")), GeoFacts::default());
}

#[test]
fn coordinates_off_the_globe_are_dropped() {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-City");
    writer.insert(net("192.0.2.0/24"), &place("XX", "EU", "Nowhere", 123.0, 8.0)).unwrap();
    let databases = only(Slot::City, writer.to_bytes().unwrap());
    let facts = databases.lookup(ip("192.0.2.1"));
    assert_eq!((facts.city.as_deref(), facts.location), (Some("Nowhere"), None));
}

/// The `traits` of a GeoIP2 Enterprise record, with MaxMind's types (the
/// ASN is a uint32, as in the ASN database).
#[derive(Serialize)]
struct EnterpriseTraits {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
    connection_type: &'static str,
    domain: &'static str,
    isp: &'static str,
    organization: &'static str,
    user_type: &'static str,
}

/// MaxMind's `location`, with the radius as the uint16 it is.
#[derive(Serialize)]
struct EnterpriseLocation {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

#[derive(Serialize)]
struct EnterpriseRecord {
    country: Value,
    continent: Value,
    city: Value,
    location: EnterpriseLocation,
    traits: EnterpriseTraits,
}

/// A GeoIP2 Enterprise database in MaxMind's documented record layout:
/// a City record whose `traits` carry the network.
fn enterprise_bytes() -> Vec<u8> {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-Enterprise");
    let traits = EnterpriseTraits {
        autonomous_system_number: 64_501,
        autonomous_system_organization: "Enterprise Net",
        connection_type: "Corporate",
        domain: "example.com",
        isp: "Example ISP",
        organization: "Example Org",
        user_type: "business",
    };
    let record = EnterpriseRecord {
        country: json!({ "iso_code": "GB", "confidence": 99 }),
        continent: json!({ "code": "EU" }),
        city: json!({ "names": { "en": "London" } }),
        location: EnterpriseLocation { latitude: LONDON_LATITUDE, longitude: -0.0931, accuracy_radius: 5 },
        traits,
    };
    writer.insert(net("81.2.69.0/24"), &record).unwrap();
    writer.to_bytes().unwrap()
}

#[test]
fn an_enterprise_database_gives_the_place_and_the_network() {
    let databases = only(Slot::City, enterprise_bytes());
    let facts = databases.lookup(ip("81.2.69.10"));
    assert_eq!((facts.country.as_deref(), facts.city.as_deref()), (Some("GB"), Some("London")));
    assert_eq!((facts.asn, facts.as_org.as_deref()), (Some(64_501), Some("Enterprise Net")), "no asn file: from Enterprise");

    let with_asn_file = set_of(vec![(Slot::City, enterprise_bytes()), (Slot::Asn, asn_bytes())]);
    assert_eq!(with_asn_file.lookup(ip("81.2.69.10")).asn, Some(64_500), "the asn file, when given, is the source");

    let as_asn = only(Slot::Asn, enterprise_bytes()).lookup(ip("81.2.69.10"));
    assert_eq!((as_asn.asn, as_asn.country.as_deref()), (Some(64_501), Some("GB")), "as asn, and as city when no file is");
}

#[test]
fn an_enterprise_database_gives_every_trait_and_the_accuracy() {
    let facts = only(Slot::City, enterprise_bytes()).lookup(ip("81.2.69.10"));
    assert_eq!(facts.isp.as_deref(), Some("Example ISP"));
    assert_eq!(facts.organization.as_deref(), Some("Example Org"));
    assert_eq!(facts.connection_type.as_deref(), Some("Corporate"));
    assert_eq!(facts.user_type.as_deref(), Some("business"));
    assert_eq!(facts.domain.as_deref(), Some("example.com"));
    assert_eq!(facts.location.and_then(|l| l.accuracy_km), Some(5));
}

#[test]
fn a_database_of_the_wrong_type_is_refused() {
    let error = refusal(Slot::City, asn_bytes());
    assert!(matches!(&error, GeoError::WrongType { found, .. } if found == "GeoLite2-ASN"), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("geoip.city") && message.contains("/data/geo.mmdb"), "{message}");
    assert!(message.contains("GeoLite2-ASN") && message.contains("City, Country or Enterprise"), "{message}");
    assert!(matches!(refusal(Slot::Asn, city_bytes()), GeoError::WrongType { .. }));
    assert!(matches!(refusal(Slot::AnonymousIp, asn_bytes()), GeoError::WrongType { .. }));
    assert!(matches!(refusal(Slot::AnonymousIp, enterprise_bytes()), GeoError::WrongType { .. }));
}

#[test]
fn slots_accept_their_kinds_of_database() {
    for kind in ["GeoIP2-City", "GeoLite2-City", "GeoIP2-Country", "GeoLite2-Country", "DBIP-City-Lite"] {
        assert!(Slot::City.accepts(kind), "{kind}");
    }
    assert!(Slot::Asn.accepts("GeoLite2-ASN"));
    assert!(Slot::AnonymousIp.accepts("GeoIP2-Anonymous-IP"));
    assert!(!Slot::City.accepts("GeoLite2-ASN") && !Slot::Asn.accepts("GeoIP2-City"));
}

#[test]
fn an_empty_file_is_refused() {
    let error = refusal(Slot::City, Vec::new());
    assert!(matches!(error, GeoError::Empty { .. }), "{error:?}");
    assert!(error.to_string().contains("empty"), "{error}");
}

#[test]
fn random_bytes_are_not_a_maxmind_database() {
    let mut noise = vec![0u8; 4096];
    StdRng::seed_from_u64(7).fill(noise.as_mut_slice());
    let error = refusal(Slot::Asn, noise);
    assert!(matches!(error, GeoError::NotMaxMind { .. }), "{error:?}");
    assert!(error.to_string().contains("not a MaxMind database"), "{error}");
}

#[test]
fn a_truncated_database_is_refused() {
    let bytes = city_bytes();
    let mut truncated = bytes[bytes.len() / 3..].to_vec();
    truncated.truncate(truncated.len() - 10);
    assert!(matches!(refusal(Slot::City, truncated), GeoError::Damaged { .. } | GeoError::NotMaxMind { .. }));
    let without_tree = bytes[bytes.len() - 300..].to_vec();
    let error = refusal(Slot::City, without_tree);
    assert!(matches!(error, GeoError::Damaged { .. }), "{error:?}");
}

#[test]
fn a_damaged_record_is_refused_at_open() {
    let mut bytes = city_bytes();
    break_double(&mut bytes, LONDON_LATITUDE);
    let error = refusal(Slot::City, bytes);
    assert!(matches!(error, GeoError::Damaged { .. }), "{error:?}");
    assert!(error.to_string().contains("double"), "{error}");
}

#[test]
fn a_damaged_record_the_probe_misses_fails_its_lookups_cleanly() {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-City");
    for n in 0..(PROBE_RECORDS as u8 + 8) {
        let record = place("GB", "EU", &format!("Town {n}"), 50.0 + f64::from(n) / 100.0, 0.0);
        writer.insert(net(&format!("10.0.{n}.0/24")), &record).unwrap();
    }
    // 203/8 is not among the probed addresses.
    writer.insert(net("203.0.113.0/24"), &place("AU", "OC", "Broken", -12.345678, 130.0)).unwrap();
    let mut bytes = writer.to_bytes().unwrap();
    break_double(&mut bytes, -12.345678);
    let databases = only(Slot::City, bytes);
    assert_eq!(databases.lookup(ip("203.0.113.5")), GeoFacts::default());
    assert_eq!(databases.lookup(ip("10.0.3.1")).city.as_deref(), Some("Town 3"));
}

/// A copy of `original` with a few bytes overwritten and sometimes cut short.
fn mangle(original: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let at = rng.gen_range(0..bytes.len());
        bytes[at] = rng.gen();
    }
    if rng.gen_ratio(1, 10) {
        bytes.truncate(rng.gen_range(0..bytes.len()));
    }
    bytes
}

#[test]
fn mangled_databases_never_panic() {
    let originals = [(Slot::City, city_bytes()), (Slot::Asn, asn_bytes()), (Slot::AnonymousIp, anonymous_bytes())];
    let addresses = ["81.2.69.10", "81.2.69.200", "192.0.2.1", "2001:db8::1", "8.8.8.8", "::ffff:1.2.3.4"].map(ip);
    let mut rng = StdRng::seed_from_u64(2024);
    let mut opened = 0;
    for round in 0..3000 {
        let (slot, original) = &originals[round % originals.len()];
        let bytes = mangle(original, &mut rng);
        if let Ok(database) = Database::from_bytes(*slot, Path::new("mangled.mmdb"), bytes) {
            opened += 1;
            let databases = GeoDatabases::assemble(vec![(database, vec![*slot])]);
            addresses.iter().for_each(|address| drop(databases.lookup(*address)));
        }
    }
    assert!(opened > 100, "only {opened} mangled copies opened; the lookups were hardly exercised");
}

#[test]
fn replace_swaps_and_earlier_holders_keep_their_set() {
    let geo = Geo::new(GeoDatabases::empty());
    let before = geo.current();
    geo.replace(all_three());
    assert!(before.is_empty());
    assert_eq!(geo.current().lookup(ip("81.2.69.10")).city.as_deref(), Some("London"));
}

#[test]
fn a_failed_reload_keeps_the_databases_in_use() {
    let geo = Geo::new(all_three());
    let error = geo.reload(&config("[geoip]\ncity = \"/nonexistent/geo/city.mmdb\"\n")).unwrap_err();
    assert!(matches!(error, GeoError::Missing { slot: Slot::City, .. }), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/geo/city.mmdb"), "{error}");
    assert_eq!(geo.current().lookup(ip("81.2.69.10")).city.as_deref(), Some("London"));
}

#[test]
fn reloading_an_empty_configuration_empties_the_set() {
    let geo = Geo::new(all_three());
    geo.reload(&config("")).unwrap();
    assert!(geo.current().is_empty());
}

#[test]
fn a_flat_country_code_database_is_read_too() {
    // The layout of the free ip-location-db country databases.
    let mut writer = mmdb_writer::Writer::new("country ipvAll");
    writer.insert(net("203.0.113.0/24"), &json!({ "country_code": "NZ" })).unwrap();
    let bytes = writer.to_bytes().unwrap();
    assert!(Slot::City.accepts("country ipvAll"));
    let facts = only(Slot::City, bytes).lookup(ip("203.0.113.9"));
    assert_eq!(facts.country.as_deref(), Some("NZ"));
    assert_eq!(facts.continent, None);
}

#[test]
fn one_file_named_for_several_settings_is_read_once_and_serves_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enterprise.mmdb");
    std::fs::write(&path, enterprise_bytes()).unwrap();
    let named = |path: &Path| GeoIpConfig {
        city: Some(path.to_owned()),
        asn: Some(path.to_owned()),
        connection_type: Some(path.to_owned()),
        domain: Some(path.to_owned()),
        anonymous_ip: None,
    };
    let databases = GeoDatabases::open(&named(&path)).unwrap();
    let uses = databases.uses();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0].settings, [Slot::City, Slot::Asn, Slot::ConnectionType, Slot::Domain]);
    assert_eq!(uses[0].serves.len(), 6, "every kind but the anonymous flags: {uses:?}");
    let shown = uses[0].to_string();
    assert!(shown.contains("(GeoIP2-Enterprise), as geoip.city, geoip.asn, geoip.connection_type, geoip.domain"), "{shown}");
    assert_eq!(databases.lookup(ip("81.2.69.10")).domain.as_deref(), Some("example.com"));

    let as_anonymous = GeoIpConfig { anonymous_ip: Some(path.clone()), ..named(&path) };
    let error = GeoDatabases::open(&as_anonymous).unwrap_err();
    assert!(matches!(error, GeoError::WrongType { slot: Slot::AnonymousIp, .. }), "{error:?}");
}
