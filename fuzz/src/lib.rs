//! What the fuzz targets check, one function a target, each taking the raw
//! input. Every function must return normally for any input: a panic is a
//! defect, either in the gateway or in a property stated here.
//!
//! `tests/fuzz_regressions.rs` includes this file and feeds the inputs that
//! once failed through the same functions, so it uses only crates the
//! gateway itself depends on.

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use axum::extract::FromRequest;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde::de::DeserializeOwned;
use stepgate::config::{fold_case, AppConfig, Confidence, Config, PathMatching, PathPattern, PolicyConfig};
use stepgate::edge;
use stepgate::geo::GeoFacts;
use stepgate::methods::{Method as Factor, MethodTimes};
use stepgate::policy::{self, canonical_path, Expression, Request, Subject};
use stepgate::portal::fuzzing as bodies;
use stepgate::proxy::forwarding;

/// A configuration around `apps` (TOML for `[[apps]]` tables).
fn config_with(apps: &str) -> Config {
    let text = format!(
        "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:1\"\ndata_dir = \"data\"\n\
         trusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]\n[networks]\noffice = [\"192.0.2.0/24\"]\n{apps}"
    );
    Config::parse(&text, Path::new("fuzz.toml")).expect("the fuzz targets' configuration is valid")
}

/// Rules of every kind, in an order where the index matters: regexes the
/// index cannot file, prefixes with and without a slash, globs filed under
/// their first segment or not, and patterns with letters that fold.
const RULES: &str = r#"
[[apps.rules]]
regex = "^/admin/?"
policy = "always"
[[apps.rules]]
path = "/admin"
policy = "deny"
[[apps.rules]]
glob = "/files/**/*.pdf"
policy = "always"
[[apps.rules]]
regex = "^/api/v[0-9]+/"
methods = ["POST"]
policy = "deny"
[[apps.rules]]
regex = '\.php$'
policy = "deny"
[[apps.rules]]
path = "/Admin/"
policy = "always"
[[apps.rules]]
glob = "**/secret"
policy = "deny"
[[apps.rules]]
path = "/public/"
policy = "bypass"
[[apps.rules]]
path = "/Stra\u00dfe/"
policy = "deny"
[[apps.rules]]
glob = "/K\u212aey/*"
policy = "deny"
[[apps.rules]]
path = "/office/"
networks = ["office"]
policy = "never"
[[apps.rules]]
path = "/q/"
query = { debug = "1" }
policy = "deny"
[[apps.rules]]
path = "/team/"
groups = ["admins"]
policy = "always"
max_age = "5m"
[[apps.rules]]
regex = "^/api/"
policy = "never"
"#;

/// The same rules under each way of matching paths, and each way of
/// reading method overrides and header names.
static APPS: LazyLock<Config> = LazyLock::new(|| {
    let app = |id: &str, matching: &str, overrides: &str, underscores: &str| {
        format!(
            "[[apps]]\nid = \"{id}\"\nhosts = [\"{id}.test\"]\nupstreams = [\"http://127.0.0.1:9\"]\ndefault_policy = \"never\"\n\
             path_matching = \"{matching}\"\nmethod_override = \"{overrides}\"\nheader_underscores = \"{underscores}\"\n{RULES}"
        )
    };
    config_with(
        &[
            app("exact", "exact", "strip", "refuse"),
            app("folded", "case_insensitive", "honour", "drop"),
            app("windows", "windows", "honour", "allow"),
        ]
        .concat(),
    )
});

static GEO: LazyLock<GeoFacts> = LazyLock::new(|| GeoFacts {
    country: Some("CH".into()),
    continent: Some("EU".into()),
    city: Some("Zurich".into()),
    asn: Some(64496),
    ..GeoFacts::default()
});

static GROUPS: LazyLock<Vec<String>> = LazyLock::new(|| vec!["admins".into(), "finance".into()]);

/// A signed-in user who did a security key a while before [`NOW`].
fn subject() -> Subject<'static> {
    let mut second_factors = MethodTimes::default();
    second_factors.record(Factor::SecurityKey, NOW - 600);
    Subject { username: "alice", groups: &GROUPS, second_factors, trusted_browser: false, confidence: Confidence::Medium }
}

/// A Tuesday, 14:13 UTC.
const NOW: i64 = 1_700_000_000;

/// The index in front of the rules must never change a decision: deciding
/// through it equals trying every rule in order, as `explain` does.
fn assert_index_agrees(app: &AppConfig, settings: &PolicyConfig, request: &Request) {
    let subject = subject();
    for subject in [None, Some(&subject)] {
        let fast = policy::decide(app, settings, request, subject);
        let full = policy::explain(app, settings, request, subject).outcome;
        assert_eq!(fast, full, "app {}: {} {:?}, signed in: {}", app.id(), request.method, request.path, subject.is_some());
    }
}

fn request<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> Request<'a> {
    Request { method, method_override: None, path, query: Some("debug=1"), headers, ip: IpAddr::from([192, 0, 2, 7]), geo: &GEO, now: NOW }
}

/// What every canonical path is: absolute, without doubled slashes, dot
/// segments, path parameters, backslashes or control characters; folded
/// for apps that ignore case; without names Windows reads as others.
fn assert_canonical(path: &str, matching: PathMatching) {
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.contains("//"), "{path:?}");
    assert!(!path.contains(['\\', ';']) && !path.chars().any(char::is_control), "{path:?}");
    assert!(path.split('/').all(|segment| segment != "." && segment != ".."), "{path:?}");
    if matching.folds_case() {
        assert_eq!(fold_case(path), path, "folding twice differs");
    }
    if matching == PathMatching::Windows {
        let ambiguous = |s: &str| s.ends_with(['.', ' ']) || s.contains([':', '*', '?', '<', '>', '"', '|']);
        assert!(!path.split('/').any(ambiguous), "{path:?}");
    }
}

/// `canonical_path` in each mode, and the rules matched on its result.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let settings = PolicyConfig::default();
    let headers = HeaderMap::new();
    for app in &APPS.apps {
        let matching = app.path_matching;
        let canonical = canonical_path(raw, matching);
        if matching.folds_case() {
            let lower = canonical_path(&raw.to_ascii_lowercase(), matching);
            assert_eq!(canonical_path(&raw.to_ascii_uppercase(), matching), lower, "{matching:?}: ASCII case changed the path");
        }
        let Ok(path) = canonical else {
            continue;
        };
        assert_canonical(&path, matching);
        for method in [Method::GET, Method::POST] {
            assert_index_agrees(app, &settings, &request(&method, &path, &headers));
        }
    }
}

/// The gateway's cookies: the session cookie first.
const SESSION_COOKIE: &str = "stepgate_session";
const OTHER_COOKIES: [&str; 2] = ["stepgate_device", "stepgate_method"];

/// `Cookie` lines, one a line, after a first line naming a cookie to find.
pub fn cookie(data: &[u8]) {
    let mut lines = data.split(|b| *b == b'\n');
    let Some(Ok(name)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let values: Vec<HeaderValue> = lines.filter_map(|line| HeaderValue::from_bytes(line).ok()).collect();
    for line in values.iter().filter_map(|v| v.to_str().ok()) {
        for cookie in cookie::Cookie::split_parse(line).filter_map(Result::ok) {
            assert!(!cookie.name().is_empty() && !cookie.name().contains([';', '=']), "{:?}", cookie.name());
            assert!(!cookie.value().contains(';'), "{:?}", cookie.value());
            assert_eq!(cookie.name().trim(), cookie.name());
        }
    }
    let found = forwarding::find_cookie(&values, name);
    if !name.is_empty() {
        let by_crate = values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(cookie::Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|c| c.name() == name)
            .and_then(|c| c.value_raw());
        assert_eq!(found, by_crate, "the gateway and the cookie crate read {name:?} differently");
    }
    if let Some(value) = found {
        assert!(!value.contains(';'), "{value:?}");
        let sent = |v: &&HeaderValue| v.to_str().is_ok_and(|line| line.contains(name) && line.contains(value));
        assert!(values.iter().any(|v| sent(&v)), "{name:?}={value:?} is in no line");
    }
    // What reaches an app holds none of the gateway's cookies, under any
    // spelling the gateway would read or set.
    let signed_in = forwarding::find_cookie(&values, SESSION_COOKIE).is_some();
    let mut headers = http::HeaderMap::new();
    for value in &values {
        headers.append(http::header::COOKIE, value.clone());
    }
    match forwarding::without_gateway_cookies(&headers, SESSION_COOKIE, &OTHER_COOKIES) {
        None => assert!(!signed_in, "the session cookie was not stripped"),
        Some(kept) => {
            let pre_session = format!("{SESSION_COOKIE}_pre");
            for ours in OTHER_COOKIES.into_iter().chain([SESSION_COOKIE, &pre_session]) {
                for spelling in [ours.to_string(), ours.to_ascii_uppercase(), format!("__Host-{ours}")] {
                    assert_eq!(forwarding::find_cookie([&kept], &spelling), None, "{spelling} reaches the app");
                }
            }
        }
    }
}

/// Whether a (canonical) address belongs to the trusted proxies
/// `10.0.0.0/8` and `fd00::/8`.
fn trusted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.octets()[0] == 0xfd,
    }
}

/// A peer chosen by the first byte, then `X-Forwarded-For` lines.
pub fn forwarded_for(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let peers: [IpAddr; 4] = [[10, 0, 0, 1].into(), "fd00::1".parse().unwrap(), [203, 0, 113, 9].into(), "2001:db8::9".parse().unwrap()];
    let peer = peers[usize::from(*first) % peers.len()];
    let lines: Vec<HeaderValue> = rest.split(|b| *b == b'\n').filter_map(|line| HeaderValue::from_bytes(line).ok()).collect();
    let client = forwarding::forwarded_client(peer, &lines, trusted);
    if !trusted(peer) {
        assert_eq!(client, peer);
        return;
    }
    assert_eq!(client, stepgate::gateway::canonical_ip(client), "not canonical");
    // Right to left: the client is the first hop that is not a trusted
    // proxy, and every hop after it was read and trusted.
    let hops: Vec<&str> = lines.iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    let mut after_client = true;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        let ip = stepgate::gateway::canonical_ip(ip);
        if after_client && !trusted(ip) {
            assert_eq!(client, ip);
            after_client = false;
        }
    }
    if after_client {
        assert!(trusted(client), "{client} is not a trusted proxy, yet no hop names it");
    }
}

/// Polls a future that needs nothing but memory once, to its end.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("a body held in memory is read at once"),
    }
}

/// The body as a handler's `Form<T>` or `Json<T>` extractor reads it.
fn extract<E: FromRequest<()>>(content_type: &str, data: &[u8]) -> bool {
    let request = http::Request::post("/.stepgate/x")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(data.to_vec()))
        .expect("a valid request");
    ready(E::from_request(request, &())).is_ok()
}

fn form<T: DeserializeOwned + Send>(data: &[u8]) -> bool {
    extract::<axum::Form<T>>("application/x-www-form-urlencoded", data)
}

fn json<T: DeserializeOwned + Send>(data: &[u8]) -> bool {
    extract::<axum::Json<T>>("application/json", data)
}

/// The portal's forms: sign-in, codes, sign-out and the settings page.
pub fn forms(data: &[u8]) {
    form::<bodies::SigninForm>(data);
    form::<bodies::CodeForm>(data);
    form::<bodies::SignoutForm>(data);
    form::<bodies::CsrfForm>(data);
    form::<bodies::FactorForm>(data);
    form::<bodies::RevokeForm>(data);
    form::<bodies::SessionForm>(data);
    // A credential's new name comes from a form too.
    if let Ok(name) = std::str::from_utf8(data) {
        for kind in [Factor::SecurityKey, Factor::Platform] {
            let cleaned = stepgate::factors::webauthn::clean_name(name, kind);
            assert!(!cleaned.is_empty() && cleaned.trim() == cleaned, "{cleaned:?}");
            assert!(!cleaned.chars().any(char::is_control), "{cleaned:?}");
        }
    }
}

/// The WebAuthn ceremonies' JSON bodies, and the AAGUID read from a new
/// credential's attestation object.
pub fn webauthn_json(data: &[u8]) {
    json::<bodies::RegisterStart>(data);
    json::<bodies::Empty>(data);
    json::<bodies::AuthenticateFinish>(data);
    if json::<bodies::RegisterFinish>(data) {
        // The credential as the handler hands it on. (Not through
        // `serde_json::Value`, which also checks the ignored fields' text.)
        #[derive(serde::Deserialize)]
        struct Registered {
            credential: webauthn_rs_proto::RegisterPublicKeyCredential,
        }
        let body: Registered = serde_json::from_slice(data).expect("it was a registration a moment ago");
        aaguid(body.credential.response.attestation_object.as_ref());
    }
    aaguid(data);
}

fn aaguid(attestation_object: &[u8]) {
    if let Some(aaguid) = stepgate::factors::webauthn::aaguid(attestation_object) {
        assert!(uuid_shaped(&aaguid), "{aaguid:?}");
    }
}

fn uuid_shaped(s: &str) -> bool {
    s.len() == 36 && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// A configuration file: it loads or is refused, and when it loads, the
/// index of each app's rules agrees with trying them all, on the paths the
/// rules themselves name.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    let headers = HeaderMap::new();
    for app in &config.apps {
        let mut paths = vec!["/".to_string(), "/admin".into(), "/admin/x".into(), "/x.php".into()];
        for rule in &app.rules {
            let literal = match &rule.pattern {
                Some(PathPattern::Prefix(prefix)) => prefix.clone(),
                Some(PathPattern::Glob(glob)) => glob.glob().glob().to_string(),
                Some(PathPattern::Regex(regex)) => regex.as_str().trim_start_matches('^').to_string(),
                None => continue,
            };
            paths.push(literal.trim_end_matches('/').to_string());
            paths.push(literal);
        }
        for raw in &paths {
            let Ok(path) = canonical_path(raw, app.path_matching) else {
                continue;
            };
            for method in [Method::GET, Method::POST] {
                assert_index_agrees(app, &config.policy, &request(&method, &path, &headers));
            }
        }
    }
}

/// One app whose first rule's `when` the CEL target replaces.
static CEL_APP: LazyLock<AppConfig> = LazyLock::new(|| {
    let config = config_with(
        "[[apps]]\nid = \"cel\"\nhosts = [\"cel.test\"]\nupstreams = [\"http://127.0.0.1:9\"]\ndefault_policy = \"never\"\n\
         [[apps.rules]]\npath = \"/\"\nwhen = 'true'\npolicy = \"deny\"\n[[apps.rules]]\npath = \"/\"\npolicy = \"always\"\n",
    );
    config.apps[0].clone()
});

/// A `when` expression: compiled, then evaluated for a request that fills
/// every variable, signed in and not.
pub fn cel(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expression) = Expression::compile(source) else {
        return;
    };
    assert_eq!(expression.source(), source);
    let mut app = CEL_APP.clone();
    app.rules[0].conditions.when = Some(expression);
    let mut headers = HeaderMap::new();
    headers.insert("x-env", HeaderValue::from_static("prod"));
    headers.append("accept", HeaderValue::from_static("text/html"));
    headers.append("accept", HeaderValue::from_static("*/*"));
    for method in [Method::GET, Method::DELETE] {
        let request = Request { query: Some("debug=1&q=%C3%A9"), ..request(&method, "/admin/x", &headers) };
        assert_index_agrees(&app, &PolicyConfig::default(), &request);
    }
}

/// A request as text: the method on the first line, the URI on the
/// second, then `name: value` header lines. Lines that `http` refuses are
/// left out, as no such request reaches the gateway.
pub fn edge(data: &[u8]) {
    let mut lines = data.split(|b| *b == b'\n');
    let (Some(method), Some(uri)) = (lines.next(), lines.next()) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(uri)) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    if let Ok(Some(host)) = edge::request_host(&uri, &headers) {
        assert!(!host.is_empty() && host == host.to_ascii_lowercase(), "{host:?}");
        assert!(host.starts_with('[') || !host.contains(':'), "{host:?} keeps its port");
    }
    let settings = PolicyConfig::default();
    for app in &APPS.apps {
        let Ok(canonical) = edge::canonicalise(&method, &uri, &headers, app) else {
            continue;
        };
        assert_eq!(Ok(&canonical.path), canonical_path(uri.path(), app.path_matching).as_ref());
        assert_canonical(&canonical.path, app.path_matching);
        let request = Request {
            method_override: canonical.method_override.as_ref(),
            query: uri.query(),
            headers: &headers,
            ..request(&method, &canonical.path, &headers)
        };
        assert_index_agrees(app, &settings, &request);
    }
}
