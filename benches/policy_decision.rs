//! One policy decision on an app with 1,000 rules, with and without the
//! geo lookup that precedes it; and a bypass route behind one rule, behind
//! 10,000 path rules and behind 1,000 regex rules, to show that rules stay
//! cheap as they grow. The country database is a realistic,
//! multi-megabyte one when `STEPGATE_COUNTRY_MMDB` names it
//! (`scripts/bench-policy` fetches one); otherwise a small one is built
//! here so the benchmark still runs.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use stepgate::config::{Confidence, Config, GeoIpConfig};
use stepgate::geo::GeoDatabases;
use stepgate::policy::{decide, Request, Subject};

const RULES: usize = 1000;

/// 1,000 rules of every kind; the request below matches one near the end.
fn config() -> Config {
    let mut text = String::from(
        "users_file = \"u.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\n\
         [networks]\noffice = [\"192.0.2.0/24\"]\n\
         [[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://127.0.0.1:9\"]\n",
    );
    for i in 0..RULES - 1 {
        let rule = match i % 10 {
            0 => format!("glob = \"/files{i}/**/*.pdf\"\npolicy = \"always\""),
            1 => format!("regex = \"^/api{i}/v[0-9]+/\"\nmethods = [\"POST\"]\npolicy = \"deny\""),
            2 => format!("path = \"/intranet{i}/\"\nnetworks = [\"office\"]\npolicy = \"bypass\""),
            3 => format!("path = \"/eu{i}/\"\ncountries = [\"CH\", \"DE\", \"FR\"]\npolicy = \"never\""),
            4 => format!("path = \"/admin{i}/\"\ngroups = [\"admins\"]\npolicy = \"always\"\nmax_age = \"5m\""),
            _ => format!("path = \"/app{i}/\"\npolicy = \"adaptive\""),
        };
        text.push_str(&format!("[[apps.rules]]\n{rule}\n"));
    }
    text.push_str("[[apps.rules]]\npath = \"/\"\npolicy = \"never\"\n");
    Config::parse(&text, std::path::Path::new("bench.toml")).expect("benchmark config")
}

/// An app whose last rule lets `/static/` through, behind `before` rules
/// written by `rule(i)`.
fn bypass_behind(before: usize, rule: fn(usize) -> String) -> Config {
    let mut text = String::from(
        "users_file = \"u.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\n\
         [[apps]]\nid = \"app\"\nhosts = [\"app.test\"]\nupstreams = [\"http://127.0.0.1:9\"]\n",
    );
    for i in 0..before {
        text.push_str(&format!("[[apps.rules]]\n{}\npolicy = \"always\"\n", rule(i)));
    }
    text.push_str("[[apps.rules]]\npath = \"/static/\"\npolicy = \"bypass\"\n");
    Config::parse(&text, std::path::Path::new("bench.toml")).expect("benchmark config")
}

fn rule_growth(c: &mut Criterion) {
    let configs = [
        ("one rule", bypass_behind(0, |_| String::new())),
        ("10000 path rules", bypass_behind(10_000, |i| format!("path = \"/app{i}/\""))),
        ("1000 regex rules", bypass_behind(1_000, |i| format!("regex = \"^/api{i}/v[0-9]+/(users|orders)\""))),
    ];
    let (headers, method, geo) = (http::HeaderMap::new(), http::Method::GET, stepgate::geo::GeoFacts::default());
    let ip: IpAddr = "192.0.2.1".parse().expect("ip");
    for (name, config) in &configs {
        c.bench_function(&format!("bypass route behind {name}"), |b| {
            b.iter(|| {
                let request = Request {
                    method: &method,
                    method_override: None,
                    path: black_box("/static/app.js"),
                    query: None,
                    headers: &headers,
                    ip,
                    geo: &geo,
                    now: 60,
                };
                decide(&config.apps[0], &config.policy, &request, None)
            })
        });
    }
}

fn country_database() -> (GeoDatabases, String) {
    if let Some(path) = std::env::var_os("STEPGATE_COUNTRY_MMDB").map(PathBuf::from) {
        let config = GeoIpConfig { city: Some(path.clone()), ..GeoIpConfig::default() };
        let databases = GeoDatabases::open(&config).expect("STEPGATE_COUNTRY_MMDB must be a country database");
        return (databases, path.display().to_string());
    }
    let mut writer = mmdb_writer::Writer::new("GeoIP2-Country");
    for a in 1u8..=223 {
        for b in (0u8..=255).step_by(16) {
            let net: ipnet::IpNet = format!("{a}.{b}.0.0/12").parse().expect("network");
            let record = serde_json::json!({ "country": { "iso_code": if a % 2 == 0 { "GB" } else { "DE" } } });
            let _ = writer.insert(net, &record);
        }
    }
    let dir = std::env::temp_dir().join(format!("stepgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("country.mmdb");
    std::fs::write(&path, writer.to_bytes().expect("database")).expect("write database");
    let config = GeoIpConfig { city: Some(path), ..GeoIpConfig::default() };
    (GeoDatabases::open(&config).expect("built database"), "a small built-in one".into())
}

fn benchmarks(c: &mut Criterion) {
    let config = config();
    let app = &config.apps[0];
    let (databases, source) = country_database();
    eprintln!("country database: {source}");
    let ip: IpAddr = "81.2.69.142".parse().expect("ip");
    let headers = http::HeaderMap::new();
    let method = http::Method::GET;
    let groups = vec!["staff".to_string()];
    let subject = Subject {
        username: "alice",
        groups: &groups,
        second_factors: stepgate::methods::MethodTimes::totp_at(Some(0)),
        trusted_browser: false,
        confidence: Confidence::Medium,
    };
    let path = "/app997/orders/42";

    c.bench_function("geo lookup (country database)", |b| b.iter(|| databases.lookup(black_box(ip))));

    let no_geo = stepgate::geo::GeoFacts::default();
    c.bench_function("decide, 1000 rules", |b| {
        b.iter(|| {
            let request = Request {
                method: &method,
                method_override: None,
                path: black_box(path),
                query: None,
                headers: &headers,
                ip,
                geo: &no_geo,
                now: 60,
            };
            decide(app, &config.policy, &request, Some(&subject))
        })
    });

    c.bench_function("decide, 1000 rules, with geo lookup", |b| {
        b.iter(|| {
            let geo = databases.lookup(black_box(ip));
            let request = Request {
                method: &method,
                method_override: None,
                path: black_box(path),
                query: None,
                headers: &headers,
                ip,
                geo: &geo,
                now: 60,
            };
            decide(app, &config.policy, &request, Some(&subject))
        })
    });
}

criterion_group!(benches, benchmarks, rule_growth);
criterion_main!(benches);
