//! The geo databases through their public API: databases built here with
//! known answers, MaxMind's official test databases when they are present
//! beside the project, files that must be refused, and hot reload.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};
use stepgate::config::{Config, GeoData, GeoIpConfig};
use stepgate::geo::{distance_km, AnonymousFlags, Geo, GeoDatabases, GeoError, GeoFacts, Location, Slot};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn net(text: &str) -> ipnet::IpNet {
    text.parse().unwrap()
}

fn city_config(path: &Path) -> GeoIpConfig {
    GeoIpConfig { city: Some(path.to_owned()), ..GeoIpConfig::default() }
}

/// A whole configuration with these databases and these extra lines (apps).
fn config_with(geoip: GeoIpConfig, extra: &str) -> Config {
    let text = format!(
        "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"data\"\n\
         [[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://127.0.0.1:1\"]\n{extra}"
    );
    let mut config = Config::parse(&text, Path::new("/etc/stepgate/stepgate.toml")).unwrap();
    config.geoip = geoip;
    config
}

// ---- databases built here ----

fn place(country: &str, continent: &str, city: &str, latitude: f64, longitude: f64) -> Value {
    json!({
        "country": { "iso_code": country, "names": { "en": country } },
        "continent": { "code": continent },
        "city": { "names": { "en": city } },
        "location": { "latitude": latitude, "longitude": longitude }
    })
}

fn city_database(places: &[(&str, Value)]) -> Vec<u8> {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-City");
    for (network, record) in places {
        writer.insert(net(network), record).unwrap();
    }
    writer.to_bytes().unwrap()
}

fn zurich_and_tokyo() -> Vec<u8> {
    city_database(&[
        ("192.0.2.0/24", place("CH", "EU", "Zurich", 47.37, 8.54)),
        ("2001:db8:1::/48", place("JP", "AS", "Tokyo", 35.68, 139.75)),
    ])
}

#[derive(Serialize)]
struct AsnRow {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

fn asn_database() -> Vec<u8> {
    let mut writer = mmdb_writer::Writer::new("GeoLite2-ASN");
    let row = AsnRow { autonomous_system_number: 64_496, autonomous_system_organization: "Documentation AS" };
    writer.insert(net("192.0.2.0/24"), &row).unwrap();
    writer.insert(net("2001:db8::/32"), &row).unwrap();
    writer.to_bytes().unwrap()
}

fn anonymous_database() -> Vec<u8> {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-Anonymous-IP");
    let vpn = json!({ "is_anonymous": true, "is_anonymous_vpn": true, "is_hosting_provider": true });
    writer.insert(net("192.0.2.128/25"), &vpn).unwrap();
    writer.to_bytes().unwrap()
}

/// The three databases built here, written into `dir`.
fn write_all_three(dir: &Path) -> GeoIpConfig {
    let write = |name: &str, bytes: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        Some(path)
    };
    GeoIpConfig {
        city: write("city.mmdb", zurich_and_tokyo()),
        asn: write("asn.mmdb", asn_database()),
        anonymous_ip: write("anonymous.mmdb", anonymous_database()),
        ..GeoIpConfig::default()
    }
}

#[test]
fn built_databases_answer_ipv4_ipv6_and_mapped_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let databases = GeoDatabases::open(&write_all_three(dir.path())).unwrap();

    let zurich = databases.lookup(ip("192.0.2.10"));
    assert_eq!(zurich.country.as_deref(), Some("CH"));
    assert_eq!(zurich.continent.as_deref(), Some("EU"));
    assert_eq!(zurich.city.as_deref(), Some("Zurich"));
    assert_eq!(zurich.location, Some(Location { latitude: 47.37, longitude: 8.54, accuracy_km: None }));
    assert_eq!((zurich.asn, zurich.as_org.as_deref()), (Some(64_496), Some("Documentation AS")));
    assert_eq!(zurich.anonymous, AnonymousFlags::default());

    let tokyo = databases.lookup(ip("2001:db8:1:2::3"));
    assert_eq!((tokyo.country.as_deref(), tokyo.city.as_deref()), (Some("JP"), Some("Tokyo")));
    assert_eq!(tokyo.asn, Some(64_496));

    assert_eq!(databases.lookup(ip("::ffff:192.0.2.10")), zurich);
}

#[test]
fn built_anonymous_database_flags_its_network() {
    let dir = tempfile::tempdir().unwrap();
    let databases = GeoDatabases::open(&write_all_three(dir.path())).unwrap();
    let flags = databases.lookup(ip("::ffff:192.0.2.200")).anonymous;
    let expected = AnonymousFlags { is_anonymous: true, is_anonymous_vpn: true, is_hosting_provider: true, ..AnonymousFlags::default() };
    assert_eq!(flags, expected);
}

#[test]
fn an_address_without_a_record_gives_empty_facts() {
    let dir = tempfile::tempdir().unwrap();
    let databases = GeoDatabases::open(&write_all_three(dir.path())).unwrap();
    for address in ["198.51.100.1", "127.0.0.1", "::1", "2001:db9::1"] {
        assert_eq!(databases.lookup(ip(address)), GeoFacts::default(), "{address}");
    }
}

#[test]
fn no_configured_databases_open_as_empty() {
    let databases = GeoDatabases::open(&GeoIpConfig::default()).unwrap();
    assert!(databases.is_empty());
    assert_eq!(databases.lookup(ip("192.0.2.10")), GeoFacts::default());
    assert!(GeoDatabases::empty().is_empty());
}

// ---- MaxMind's official test databases, when present ----

/// `../shared/geoip/<name>` from the project root, or None (after saying so)
/// when the test databases are not there.
fn official(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/geoip").join(name);
    if path.is_file() {
        Some(path)
    } else {
        println!("skipped: {} is not present", path.display());
        None
    }
}

#[test]
fn official_city_database_gives_the_known_answers() {
    let Some(city) = official("GeoIP2-City-Test.mmdb") else { return };
    let databases = GeoDatabases::open(&city_config(&city)).unwrap();
    let place = |address: &str| {
        let facts = databases.lookup(ip(address));
        (facts.country, facts.city)
    };
    let some = |text: &str| Some(text.to_string());
    assert_eq!(place("81.2.69.142"), (some("GB"), some("London")));
    assert_eq!(place("2.125.160.216").0, some("GB"));
    assert_eq!(place("89.160.20.112"), (some("SE"), some("Linköping")));
    assert_eq!(place("216.160.83.56"), (some("US"), some("Milton")));
    assert_eq!(place("175.16.199.0").0, some("CN"));
    assert_eq!(place("2001:218::").0, some("JP"));
    assert_eq!(place("::ffff:81.2.69.142"), (some("GB"), some("London")));
    for nowhere in ["127.0.0.1", "8.8.8.8"] {
        assert_eq!(databases.lookup(ip(nowhere)), GeoFacts::default(), "{nowhere}");
    }
    let london = databases.lookup(ip("81.2.69.142"));
    assert_eq!(london.continent.as_deref(), Some("EU"));
    let linkoping = databases.lookup(ip("89.160.20.112"));
    let km = distance_km(london.location.unwrap(), linkoping.location.unwrap());
    assert!((1200.0..1400.0).contains(&km), "London to Linköping: {km} km");
}

#[test]
fn official_country_database_gives_countries_only() {
    let Some(country) = official("GeoIP2-Country-Test.mmdb") else { return };
    let databases = GeoDatabases::open(&city_config(&country)).unwrap();
    let facts = databases.lookup(ip("2.125.160.216"));
    assert_eq!((facts.country.as_deref(), facts.continent.as_deref()), (Some("GB"), Some("EU")));
    assert_eq!((facts.city, facts.location), (None, None));
    assert_eq!(databases.lookup(ip("2001:218::")).country.as_deref(), Some("JP"));
}

#[test]
fn official_asn_database_gives_the_known_answers() {
    let Some(asn) = official("GeoLite2-ASN-Test.mmdb") else { return };
    let config = GeoIpConfig { asn: Some(asn), ..GeoIpConfig::default() };
    let databases = GeoDatabases::open(&config).unwrap();
    for address in ["1.128.0.0", "::ffff:1.128.0.0"] {
        let facts = databases.lookup(ip(address));
        assert_eq!((facts.asn, facts.as_org.as_deref()), (Some(1221), Some("Telstra Pty Ltd")), "{address}");
    }
    assert_eq!(databases.lookup(ip("127.0.0.1")).asn, None);
}

#[test]
fn official_isp_database_serves_as_the_asn_database() {
    let Some(isp) = official("GeoIP2-ISP-Test.mmdb") else { return };
    let config = GeoIpConfig { asn: Some(isp), ..GeoIpConfig::default() };
    let databases = GeoDatabases::open(&config).unwrap();
    let facts = databases.lookup(ip("1.128.0.0"));
    assert_eq!((facts.asn, facts.as_org.as_deref()), (Some(1221), Some("Telstra Pty Ltd")));
    assert_eq!(databases.lookup(ip("1.0.128.1")).asn, None, "an ISP record without an ASN");
}

#[test]
fn official_isp_database_gives_the_isp_and_organisation() {
    let Some(isp) = official("GeoIP2-ISP-Test.mmdb") else { return };
    let databases = GeoDatabases::open(&GeoIpConfig { asn: Some(isp), ..GeoIpConfig::default() }).unwrap();
    let telstra = databases.lookup(ip("1.128.0.0"));
    assert_eq!((telstra.isp.as_deref(), telstra.organization.as_deref()), (Some("Telstra Internet"), Some("Telstra Internet")));
    let co_mo = databases.lookup(ip("8.33.16.1"));
    assert_eq!((co_mo.isp.as_deref(), co_mo.organization.as_deref()), (Some("Level 3 Communications"), Some("Co-Mo Connect")));
}

#[test]
fn official_connection_type_database_gives_the_known_answers() {
    let Some(path) = official("GeoIP2-Connection-Type-Test.mmdb") else { return };
    let databases = GeoDatabases::open(&GeoIpConfig { connection_type: Some(path), ..GeoIpConfig::default() }).unwrap();
    let kind = |address: &str| databases.lookup(ip(address)).connection_type;
    assert_eq!(kind("1.0.0.1").as_deref(), Some("Cable/DSL"));
    assert_eq!(kind("1.0.1.1").as_deref(), Some("Cellular"));
    assert_eq!(kind("201.243.200.1").as_deref(), Some("Corporate"));
    assert_eq!(kind("::ffff:214.78.120.1").as_deref(), Some("Satellite"));
    assert_eq!(kind("127.0.0.1"), None);
}

#[test]
fn official_domain_database_gives_the_known_answers() {
    let Some(path) = official("GeoIP2-Domain-Test.mmdb") else { return };
    let databases = GeoDatabases::open(&GeoIpConfig { domain: Some(path), ..GeoIpConfig::default() }).unwrap();
    let domain = |address: &str| databases.lookup(ip(address)).domain;
    assert_eq!(domain("1.2.0.1").as_deref(), Some("maxmind.com"));
    assert_eq!(domain("71.160.223.9").as_deref(), Some("verizon.net"));
    assert_eq!(domain("2a02:2770:3::1").as_deref(), Some("sgotti.org"));
    assert_eq!(domain("127.0.0.1"), None);
}

#[test]
fn official_databases_each_in_its_setting_serve_together() {
    let (Some(city), Some(isp), Some(connection_type), Some(domain)) = (
        official("GeoIP2-City-Test.mmdb"),
        official("GeoIP2-ISP-Test.mmdb"),
        official("GeoIP2-Connection-Type-Test.mmdb"),
        official("GeoIP2-Domain-Test.mmdb"),
    ) else {
        return;
    };
    let anonymous_ip = official("GeoIP2-Anonymous-IP-Test.mmdb");
    let config =
        GeoIpConfig { city: Some(city), asn: Some(isp), connection_type: Some(connection_type), domain: Some(domain), anonymous_ip };
    let databases = GeoDatabases::open(&config).unwrap();
    for data in [GeoData::Place, GeoData::Network, GeoData::Isp, GeoData::ConnectionType, GeoData::Domain] {
        assert!(databases.provides(data), "{data:?}");
    }
    assert!(!databases.provides(GeoData::UserType), "only Enterprise carries user types");
    let uses = databases.uses();
    assert_eq!(uses[1].settings, [Slot::Asn]);
    assert_eq!(uses[1].serves, [GeoData::Network, GeoData::Isp]);
}

#[test]
fn official_databases_of_other_kinds_are_refused_for_asn_with_the_file_named() {
    for name in ["GeoIP2-Domain-Test.mmdb", "GeoIP2-Connection-Type-Test.mmdb", "GeoIP2-City-Test.mmdb"] {
        let Some(path) = official(name) else { return };
        let config = GeoIpConfig { asn: Some(path), ..GeoIpConfig::default() };
        let message = GeoDatabases::open(&config).unwrap_err().to_string();
        assert!(message.contains("geoip.asn") && message.contains(name), "{message}");
    }
}

#[test]
fn official_anonymous_database_gives_the_known_answers() {
    let Some(anonymous) = official("GeoIP2-Anonymous-IP-Test.mmdb") else { return };
    let config = GeoIpConfig { anonymous_ip: Some(anonymous), ..GeoIpConfig::default() };
    let databases = GeoDatabases::open(&config).unwrap();
    let tor = databases.lookup(ip("1.124.213.1")).anonymous;
    let expected = AnonymousFlags { is_anonymous: true, is_anonymous_vpn: true, is_tor_exit_node: true, ..AnonymousFlags::default() };
    assert_eq!(tor, expected);
    let hosting = databases.lookup(ip("71.160.223.10")).anonymous;
    let expected = AnonymousFlags { is_anonymous: true, is_hosting_provider: true, ..AnonymousFlags::default() };
    assert_eq!(hosting, expected);
    assert_eq!(databases.lookup(ip("8.8.8.8")).anonymous, AnonymousFlags::default());
}

#[test]
fn official_database_with_a_bad_node_count_is_refused() {
    let Some(broken) = official("GeoIP2-City-Test-Invalid-Node-Count.mmdb") else { return };
    let error = GeoDatabases::open(&city_config(&broken)).unwrap_err();
    assert!(matches!(error, GeoError::Damaged { slot: Slot::City, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with("geoip.city = "), "{message}");
    assert!(message.contains("GeoIP2-City-Test-Invalid-Node-Count.mmdb"), "{message}");
    assert!(message.contains("damaged MaxMind database") && message.contains("search tree"), "{message}");
}

#[test]
fn official_database_with_broken_doubles_is_refused() {
    let Some(broken) = official("GeoIP2-City-Test-Broken-Double-Format.mmdb") else { return };
    let error = GeoDatabases::open(&city_config(&broken)).unwrap_err();
    assert!(matches!(error, GeoError::Damaged { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("GeoIP2-City-Test-Broken-Double-Format.mmdb"), "{message}");
    assert!(message.contains("double of size"), "{message}");
}

#[test]
fn official_databases_are_refused_in_the_settings_they_do_not_fit() {
    let cases = [
        ("GeoIP2-Domain-Test.mmdb", Slot::ConnectionType),
        ("GeoIP2-Connection-Type-Test.mmdb", Slot::Domain),
        ("GeoIP2-City-Test.mmdb", Slot::ConnectionType),
        ("GeoIP2-ISP-Test.mmdb", Slot::Domain),
        ("GeoIP2-Connection-Type-Test.mmdb", Slot::AnonymousIp),
    ];
    for (name, slot) in cases {
        let Some(path) = official(name) else { return };
        let error = GeoDatabases::open(&naming(slot, path)).unwrap_err();
        assert!(matches!(error, GeoError::WrongType { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.starts_with(slot.setting()) && message.contains(name), "{message}");
    }
}

/// A configuration that names `path` for `slot` only.
fn naming(slot: Slot, path: PathBuf) -> GeoIpConfig {
    let mut config = GeoIpConfig::default();
    let setting = match slot {
        Slot::City => &mut config.city,
        Slot::Asn => &mut config.asn,
        Slot::AnonymousIp => &mut config.anonymous_ip,
        Slot::ConnectionType => &mut config.connection_type,
        Slot::Domain => &mut config.domain,
    };
    *setting = Some(path);
    config
}

#[test]
fn official_asn_database_given_as_city_is_refused() {
    let Some(asn) = official("GeoLite2-ASN-Test.mmdb") else { return };
    let error = GeoDatabases::open(&city_config(&asn)).unwrap_err();
    assert!(matches!(&error, GeoError::WrongType { found, .. } if found == "GeoLite2-ASN"), "{error:?}");
}

// ---- files that must be refused ----

#[test]
fn a_database_in_the_wrong_setting_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let asn = dir.path().join("asn.mmdb");
    std::fs::write(&asn, asn_database()).unwrap();
    let error = GeoDatabases::open(&city_config(&asn)).unwrap_err();
    assert!(matches!(error, GeoError::WrongType { slot: Slot::City, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&asn.display().to_string()), "{message}");
    assert!(message.contains("`GeoLite2-ASN`") && message.contains("City, Country or Enterprise"), "{message}");

    let city = dir.path().join("city.mmdb");
    std::fs::write(&city, zurich_and_tokyo()).unwrap();
    let as_anonymous = GeoIpConfig { anonymous_ip: Some(city), ..GeoIpConfig::default() };
    let error = GeoDatabases::open(&as_anonymous).unwrap_err();
    assert!(matches!(error, GeoError::WrongType { slot: Slot::AnonymousIp, .. }), "{error:?}");
}

#[test]
fn a_missing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("GeoLite2-City.mmdb");
    let error = GeoDatabases::open(&city_config(&missing)).unwrap_err();
    assert!(matches!(error, GeoError::Missing { .. }), "{error:?}");
    assert_eq!(error.to_string(), format!("geoip.city = {}: no such file", missing.display()));
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = GeoDatabases::open(&city_config(dir.path())).unwrap_err();
    assert!(matches!(error, GeoError::Unreadable { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot read"), "{error}");
}

#[test]
fn random_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let noise = dir.path().join("noise.mmdb");
    let bytes: Vec<u8> = (0..10_000u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&noise, bytes).unwrap();
    let config = GeoIpConfig { asn: Some(noise.clone()), ..GeoIpConfig::default() };
    let error = GeoDatabases::open(&config).unwrap_err();
    assert!(matches!(error, GeoError::NotMaxMind { slot: Slot::Asn, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&noise.display().to_string()) && message.contains("not a MaxMind database"), "{message}");
}

#[test]
fn an_empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mmdb");
    std::fs::write(&empty, b"").unwrap();
    let error = GeoDatabases::open(&city_config(&empty)).unwrap_err();
    assert!(matches!(error, GeoError::Empty { .. }), "{error:?}");
    assert!(error.to_string().contains("empty"), "{error}");
}

#[test]
fn one_bad_file_refuses_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = write_all_three(dir.path());
    config.anonymous_ip = Some(dir.path().join("absent.mmdb"));
    let error = GeoDatabases::open(&config).unwrap_err();
    assert_eq!(error.slot(), Some(Slot::AnonymousIp));
}

// ---- hot reload ----

#[test]
fn reload_keeps_the_old_databases_when_the_new_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    std::fs::write(&path, zurich_and_tokyo()).unwrap();
    let geo = Geo::new(GeoDatabases::open(&city_config(&path)).unwrap());

    let good = zurich_and_tokyo();
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let error = geo.reload(&config_with(city_config(&path), "")).unwrap_err();
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
    assert_eq!(geo.current().lookup(ip("192.0.2.10")).city.as_deref(), Some("Zurich"));
}

#[test]
fn reload_swaps_in_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    std::fs::write(&path, zurich_and_tokyo()).unwrap();
    let geo = Geo::new(GeoDatabases::open(&city_config(&path)).unwrap());
    let before = geo.current();

    std::fs::write(&path, city_database(&[("192.0.2.0/24", place("AT", "EU", "Vienna", 48.21, 16.37))])).unwrap();
    geo.reload(&config_with(city_config(&path), "")).unwrap();

    assert_eq!(geo.current().lookup(ip("192.0.2.10")).city.as_deref(), Some("Vienna"));
    assert_eq!(before.lookup(ip("192.0.2.10")).city.as_deref(), Some("Zurich"), "a request keeps the set it took");
}

// ---- rules that read data no database carries ----

#[test]
fn a_rule_reading_data_no_database_carries_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let geoip = write_all_three(dir.path());
    let rules = "\n[[apps.rules]]\npath = \"/\"\nconnection_types = [\"cellular\"]\npolicy = \"always\"\n";
    let error = GeoDatabases::open_for(&config_with(geoip.clone(), rules)).unwrap_err();
    assert!(matches!(&error, GeoError::NoData(need) if need.data == GeoData::ConnectionType), "{error:?}");
    let message = error.to_string();
    assert!(message.starts_with("app `app`, rule 1 (line 10): `connection_types` needs the connection type"), "{message}");
    assert!(message.contains("set geoip.connection_type to a Connection-Type or Enterprise database"), "{message}");

    let needs = [
        ("isps = [\"Telstra Internet\"]", GeoData::Isp),
        ("user_types = [\"business\"]", GeoData::UserType),
        ("domains = [\"example.com\"]", GeoData::Domain),
        ("when = 'request.geo.domain.endsWith(\".example.com\")'", GeoData::Domain),
        ("when = 'request.geo[\"isp\"] == \"x\"'", GeoData::Isp),
        ("when = 'size(request.geo) > 0'", GeoData::Isp),
    ];
    for (condition, data) in needs {
        let rules = format!("\n[[apps.rules]]\npath = \"/\"\n{condition}\npolicy = \"deny\"\n");
        let error = GeoDatabases::open_for(&config_with(geoip.clone(), &rules)).unwrap_err();
        assert!(matches!(&error, GeoError::NoData(need) if need.data == data), "{condition}: {error:?}");
    }
}

#[test]
fn rules_reading_only_the_data_present_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "\n[[apps.rules]]\npath = \"/\"\ncountries = [\"CH\"]\nasns = [64496]\nanonymous = [\"vpn\"]\n\
                 when = 'request.geo.city == \"Zurich\" && request.geo.asn > 0'\npolicy = \"always\"\n";
    GeoDatabases::open_for(&config_with(write_all_three(dir.path()), rules)).unwrap();

    let fenced = "countries_deny = [\"KP\"]\n";
    let error = GeoDatabases::open_for(&config_with(GeoIpConfig::default(), fenced)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "app `app`: its country fence needs the country and place, which no configured database carries: \
         set geoip.city to a City, Country or Enterprise database"
    );
}
