//! The network conditions (ISP, connection type, user type, domain) through
//! the real proxy, with MaxMind's test databases (skipped when they are not
//! beside the project) and an Enterprise database built here; rules that
//! read data no database carries, refused by the gateway and by
//! `check-config`; and the accuracy radius in impossible travel.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::geo::{enterprise_database, Place, Traits};
use common::*;

/// `../shared/geoip/<name>`, or None (after saying so) when absent.
fn official(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/geoip").join(name);
    if path.is_file() {
        Some(path)
    } else {
        println!("skipped: {} is not present", path.display());
        None
    }
}

async fn gateway(geoip: &str, rules: &str) -> TestGateway {
    let apps = format!("[[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://{{upstream}}\"]\n{rules}");
    TestGateway::start_with(Setup {
        extra: format!("[geoip]\n{geoip}"),
        server_extra: "trusted_proxies = [\"127.0.0.0/8\"]".into(),
        apps,
        ..Setup::default()
    })
    .await
}

/// The status of a GET of `path` from `ip`, through the trusted local proxy.
async fn status_from(gw: &TestGateway, ip: &str, path: &str) -> u16 {
    let response = gw.api_client().get(gw.app(path)).header("x-forwarded-for", ip).send().await.unwrap();
    response.status().as_u16()
}

const TELSTRA: &str = "1.128.0.1";
const CABLE: &str = "1.0.0.1";
const CELLULAR: &str = "1.0.1.1";
const SATELLITE: &str = "214.78.120.1";
const MAXMIND: &str = "1.2.0.1";

const OFFICIAL_RULES: &str = r#"
[[apps.rules]]
path = "/mobile/"
connection_types = ["Cellular"]
policy = "deny"

[[apps.rules]]
path = "/partners/"
isps = ["telstra internet"]
policy = "bypass"

[[apps.rules]]
path = "/corp/"
domains = ["MaxMind.com"]
policy = "bypass"

[[apps.rules]]
path = "/orbit/"
when = 'request.geo.connection_type == "Satellite"'
policy = "deny"

[[apps.rules]]
glob = "/{mobile,orbit}/**"
policy = "bypass"

[[apps.rules]]
policy = "deny"
"#;

#[tokio::test]
async fn isp_connection_type_and_domain_rules_with_maxminds_databases() {
    let (Some(isp), Some(connection_type), Some(domain)) =
        (official("GeoIP2-ISP-Test.mmdb"), official("GeoIP2-Connection-Type-Test.mmdb"), official("GeoIP2-Domain-Test.mmdb"))
    else {
        return;
    };
    let geoip =
        format!("asn = \"{}\"\nconnection_type = \"{}\"\ndomain = \"{}\"\n", isp.display(), connection_type.display(), domain.display());
    let gw = gateway(&geoip, OFFICIAL_RULES).await;

    assert_eq!(status_from(&gw, CELLULAR, "/mobile/app").await, 403, "cellular is refused");
    assert_eq!(status_from(&gw, CABLE, "/mobile/app").await, 200, "cable passes");
    assert_eq!(status_from(&gw, TELSTRA, "/partners/x").await, 200, "the ISP's name, in any case");
    assert_eq!(status_from(&gw, CABLE, "/partners/x").await, 403);
    assert_eq!(status_from(&gw, MAXMIND, "/corp/x").await, 200, "the domain, in any case");
    assert_eq!(status_from(&gw, TELSTRA, "/corp/x").await, 403);
    assert_eq!(status_from(&gw, SATELLITE, "/orbit/x").await, 403, "a `when` expression reads the connection type");
    assert_eq!(status_from(&gw, CELLULAR, "/orbit/x").await, 200);
    assert_eq!(status_from(&gw, "127.0.0.1", "/mobile/app").await, 200, "an address without a record is not cellular");
}

fn enterprise_traits(connection_type: &'static str, user_type: &'static str) -> Traits {
    Traits {
        autonomous_system_number: 64_496,
        autonomous_system_organization: "Documentation AS",
        connection_type,
        domain: "example.com",
        isp: "Example ISP",
        organization: "Example Org",
        user_type,
    }
}

fn zurich(accuracy_km: u16) -> Place {
    Place { country: "CH", city: "Zurich", latitude: 47.37, longitude: 8.54, accuracy_km }
}

fn madrid(accuracy_km: u16) -> Place {
    Place { country: "ES", city: "Madrid", latitude: 40.42, longitude: -3.70, accuracy_km }
}

/// Zurich (`192.0.2.0/24`, a business line, within 20 km) and two
/// addresses placed in Madrid: a hosting provider's known within 50 km,
/// and a cellular one known only within 1000 km.
fn write_enterprise(dir: &Path) -> PathBuf {
    let path = dir.join("enterprise.mmdb");
    let networks = [
        ("192.0.2.0/24", zurich(20), enterprise_traits("Corporate", "business")),
        ("198.51.100.0/25", madrid(50), enterprise_traits("Corporate", "hosting")),
        ("198.51.100.128/25", madrid(1000), enterprise_traits("Cellular", "cellular")),
    ];
    std::fs::write(&path, enterprise_database(&networks)).unwrap();
    path
}

const ZURICH: &str = "192.0.2.10";
const MADRID_HOSTING: &str = "198.51.100.10";
const MADRID_CELLULAR: &str = "198.51.100.200";

const ENTERPRISE_RULES: &str = r#"
[[apps.rules]]
user_types = ["hosting"]
policy = "deny"

[[apps.rules]]
path = "/office/"
connection_types = ["Corporate"]
countries = ["CH"]
policy = "bypass"

[[apps.rules]]
policy = "never"
"#;

#[tokio::test]
async fn an_enterprise_database_alone_answers_user_type_and_connection_type_rules() {
    let dir = tempfile::tempdir().unwrap();
    let enterprise = write_enterprise(dir.path());
    let gw = gateway(&format!("city = \"{}\"\n", enterprise.display()), ENTERPRISE_RULES).await;

    assert_eq!(status_from(&gw, MADRID_HOSTING, "/office/x").await, 403, "a hosting provider's address is refused");
    assert_eq!(status_from(&gw, ZURICH, "/office/x").await, 200, "a Swiss corporate line passes");
    assert_eq!(status_from(&gw, MADRID_CELLULAR, "/office/x").await, 401, "anyone else signs in");
}

/// The signals of alice's last sign-in, as the store recorded them.
async fn last_signals(gw: &TestGateway) -> String {
    gw.gateway().store.last_sign_in(ALICE).await.unwrap().unwrap().signals
}

async fn sign_in_from(gw: &TestGateway, ip: &str) {
    let client = gw.browser();
    let page = client.get(gw.app("/.stepgate/signin")).header("x-forwarded-for", ip).send().await.unwrap();
    let csrf = form_value(&page.text().await.unwrap(), "csrf");
    let form = [("csrf", csrf.as_str()), ("username", ALICE), ("password", ALICE_PASSWORD), ("rd", "/")];
    let response = client.post(gw.app("/.stepgate/signin")).header("x-forwarded-for", ip).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 303, "signed in from {ip}");
}

#[tokio::test]
async fn impossible_travel_measures_between_the_edges_of_the_accuracy_circles() {
    let dir = tempfile::tempdir().unwrap();
    let enterprise = write_enterprise(dir.path());
    let gw = gateway(&format!("city = \"{}\"\n", enterprise.display()), "[[apps.rules]]\npolicy = \"never\"\n").await;

    // Zurich to Madrid is about 1250 km: twenty minutes is far too fast...
    sign_in_from(&gw, ZURICH).await;
    gw.clock.advance(20 * 60);
    sign_in_from(&gw, MADRID_HOSTING).await;
    assert!(last_signals(&gw).await.contains("impossible_travel"), "{}", last_signals(&gw).await);
    let recorded = gw.gateway().store.last_sign_in(ALICE).await.unwrap().unwrap();
    assert_eq!(recorded.accuracy_km, Some(50));

    // ...unless one place is known so loosely that only about 230 km are left
    // between the circles' edges.
    gw.clock.advance(24 * 3600);
    sign_in_from(&gw, ZURICH).await;
    gw.clock.advance(20 * 60);
    sign_in_from(&gw, MADRID_CELLULAR).await;
    assert!(!last_signals(&gw).await.contains("impossible_travel"), "{}", last_signals(&gw).await);
}

// ---- refused configurations and what the commands print ----

fn stepgate(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stepgate")).args(args).arg(config).output().unwrap()
}

/// A configuration file in `dir` with these databases and rules, and the
/// users file beside it.
fn write_config(dir: &Path, geoip: &str, rules: &str) -> PathBuf {
    std::fs::write(dir.join("users.toml"), users_file()).unwrap();
    let text = format!(
        "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"data\"\n[geoip]\n{geoip}\n\
         [[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://127.0.0.1:1\"]\n{rules}"
    );
    let path = dir.join("stepgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_refuses_a_rule_whose_data_no_database_carries() {
    let dir = tempfile::tempdir().unwrap();
    let enterprise = write_enterprise(dir.path());
    let rules = "[[apps.rules]]\npath = \"/x/\"\nanonymous = [\"tor\"]\npolicy = \"deny\"\n";
    let config = write_config(dir.path(), &format!("city = \"{}\"", enterprise.display()), rules);
    let output = stepgate(&["check-config"], &config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("app `app`, rule 1 (line 11): `anonymous` needs the anonymous-IP flags, which no configured database carries"),
        "{stderr}"
    );
    assert!(stderr.contains("set geoip.anonymous_ip to an Anonymous-IP database"), "{stderr}");
}

#[test]
fn the_gateway_refuses_to_start_on_such_a_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", "[[apps.rules]]\nuser_types = [\"hosting\"]\npolicy = \"deny\"\n");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("STEPGATE_ENCRYPTION_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            serve.kill().unwrap();
            panic!("the gateway started on a rule no database can answer");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("`user_types` needs the user type"), "{stderr}");
    assert!(stderr.contains("only GeoIP2 Enterprise carries user types"), "{stderr}");
}

#[test]
fn check_config_says_what_each_file_serves() {
    let dir = tempfile::tempdir().unwrap();
    let enterprise = write_enterprise(dir.path());
    let shown = enterprise.display();
    let config = write_config(dir.path(), &format!("city = \"{shown}\"\nconnection_type = \"{shown}\""), "");
    let output = stepgate(&["check-config"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected = format!(
        "geoip: {shown} (GeoIP2-Enterprise), as geoip.city, geoip.connection_type: the country and place, \
         the autonomous system (ASN), the ISP and organisation, the connection type, the user type, the domain\n"
    );
    assert!(stdout.contains(&expected), "{stdout}");
}

#[test]
fn policy_explain_prints_every_fact_and_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let enterprise = write_enterprise(dir.path());
    let config = write_config(dir.path(), &format!("city = \"{}\"", enterprise.display()), ENTERPRISE_RULES);
    let output = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["policy", "explain", "--config"])
        .arg(&config)
        .args(["--host", "app.test", "--path", "/office/x", "--ip", MADRID_HOSTING])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let from = format!("(from {})", enterprise.display());
    let facts = [
        format!("  place: country ES, continent unknown, city Madrid, location 40.42,-3.7 within 50 km {from}"),
        format!("  asn: AS64496 Documentation AS {from}"),
        format!("  isp: Example ISP, organization Example Org {from}"),
        format!("  connection type: Corporate {from}"),
        format!("  user type: hosting {from}"),
        format!("  domain: example.com {from}"),
        "  anonymous: none (no database carries it)".to_string(),
    ];
    for fact in facts {
        assert!(stdout.contains(&fact), "{fact}\n{stdout}");
    }
    assert!(stdout.contains("rule 1 (line 12): matches, policy deny"), "{stdout}");
}
