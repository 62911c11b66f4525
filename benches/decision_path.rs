//! The per-request decision path of an authenticated request: route match,
//! session lookup (cache hit) and the cached assertion, alone and together.
//! Run with `cargo bench --bench decision_path`.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};

use stepgate::clock::{Clock, SystemClock};
use stepgate::config::Config;
use stepgate::crypto::Secrets;
use stepgate::demo::{prepare, DEMO_USER};
use stepgate::gateway::Gateway;
use stepgate::geo::GeoFacts;
use stepgate::policy::{self, Decision, Request, Subject};
use stepgate::session::{Factor, Session, SignInContext};
use stepgate::users::{Current, User};

/// The demo's app with a realistic handful of rules; the benchmarked
/// request falls through to the last.
const APP: &str = r#"
users_file = "users.toml"
[server]
listen = "127.0.0.1:0"
data_dir = "."
[[apps]]
id = "demo"
hosts = ["localhost"]
upstreams = ["http://127.0.0.1:9"]
[[apps.rules]]
path = "/public/"
policy = "bypass"
[[apps.rules]]
glob = "/static/**/*.{css,js,png,svg}"
policy = "bypass"
[[apps.rules]]
path = "/healthz"
methods = ["GET", "HEAD"]
policy = "bypass"
[[apps.rules]]
path = "/internal/"
policy = "deny"
[[apps.rules]]
regex = "^/api/v[0-9]+/admin/"
groups = ["admins"]
policy = "always"
max_age = "15m"
[[apps.rules]]
path = "/admin/"
groups = ["admins"]
policy = "always"
[[apps.rules]]
path = "/"
methods = ["DELETE"]
policy = "always"
[[apps.rules]]
path = "/"
policy = "always"
"#;

const PATH: &str = "/reports/2024/q3.html";
const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The policy's view of a signed-in user, as the proxy builds it.
fn subject<'a>(session: &Session, user: &'a User) -> Subject<'a> {
    Subject {
        username: &user.username,
        groups: &user.groups,
        second_factors: session.method_times(),
        trusted_browser: false,
        confidence: session.context.assessment.confidence,
    }
}

fn decision_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut demo = prepare(dir.path(), unused, unused).unwrap();
    demo.config.apps = Config::parse(APP, Path::new("app.toml")).unwrap().apps;
    let gateway = runtime.block_on(Gateway::build(demo.config, Arc::new(SystemClock), Some(Secrets::from_master(&[7; 32])))).unwrap();

    // A session with both factors, as after the TOTP step.
    let user = gateway.users.get(DEMO_USER).unwrap().clone();
    let context = SignInContext { password_fingerprint: Some(user.password_fingerprint(&gateway.secrets)), ..SignInContext::default() };
    let id = runtime.block_on(async {
        let (_, first) = gateway.sessions.create(DEMO_USER, Factor::Pwd, context).await.unwrap();
        gateway.sessions.add_factor(&first, Factor::Otp, None).await.unwrap().expect("a live session").0
    });
    let app = gateway.app_for_host("localhost").unwrap().clone();
    let session = runtime.block_on(gateway.sessions.lookup(&id)).unwrap().expect("a live session");
    gateway.assertions.token_for(&session, &user, &app.id).unwrap(); // fills the token cache

    let settings = &gateway.config.policy;
    let (headers, geo) = (HeaderMap::new(), GeoFacts::default());
    let request = Request {
        method: &Method::GET,
        method_override: None,
        path: PATH,
        query: None,
        headers: &headers,
        ip: CLIENT,
        geo: &geo,
        now: SystemClock.now(),
    };
    let outcome = policy::decide(&app.config, settings, &request, Some(&subject(&session, &user)));
    assert_eq!(outcome.decision, Decision::Allow { with_identity: true });

    let mut group = c.benchmark_group("decision_path");
    group.bench_function("policy_decide", |b| {
        let subject = subject(&session, &user);
        b.iter(|| policy::decide(&app.config, settings, black_box(&request), Some(&subject)))
    });
    group.bench_function("session_lookup_cached", |b| b.to_async(&runtime).iter(|| gateway.sessions.lookup(black_box(&id))));
    group.bench_function("assertion_cached", |b| b.iter(|| gateway.assertions.token_for(black_box(&session), &user, &app.id).unwrap()));
    // What the proxy does for an authenticated request, in its order.
    group.bench_function("all_three", |b| {
        b.to_async(&runtime).iter(|| async {
            let session = gateway.sessions.lookup(black_box(&id)).await.unwrap().unwrap();
            let Current::User(user) = gateway.users.current(&session.username).await else { unreachable!("the demo user") };
            let geo = gateway.geo.current().lookup(CLIENT);
            let request = Request { geo: &geo, now: gateway.clock.now(), ..request };
            let outcome = policy::decide(&app.config, settings, &request, Some(&subject(&session, &user)));
            (outcome, gateway.assertions.token_for(&session, &user, &app.id).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, decision_path);
criterion_main!(benches);
