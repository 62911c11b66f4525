use std::borrow::Cow;
use std::path::Path;

use http::Method;

use super::*;
use crate::config::{Config, Rule};

/// What a session has proven, for the tables below.
#[derive(Debug, Clone, Copy)]
struct Proof {
    signed_in: bool,
    second_factor: bool,
}

/// Ten days after the epoch: a fixed "now" for the tables.
const NOW: i64 = 864_000;

/// `decide` for a plain request from a documentation address with no geo
/// facts, by a user who is in no group.
fn decide(app: &AppConfig, method: &Method, path: &str, proof: Proof) -> Outcome {
    let (geo, headers) = (GeoFacts::default(), http::HeaderMap::new());
    let request = Request {
        method,
        method_override: None,
        path,
        query: None,
        headers: &headers,
        ip: "192.0.2.10".parse().unwrap(),
        geo: &geo,
        now: NOW,
    };
    let subject = proof.signed_in.then(|| Subject {
        username: "alice",
        groups: &[],
        second_factors: crate::methods::MethodTimes::totp_at(proof.second_factor.then_some(NOW - 60)),
        trusted_browser: false,
        confidence: Confidence::High,
    });
    super::decide(app, &PolicyConfig::default(), &request, subject.as_ref())
}

/// The first rule whose method and path match, ignoring other conditions.
fn match_rule<'a>(rules: &'a [Rule], method: &Method, path: &str) -> Option<(usize, &'a Rule)> {
    rules.iter().enumerate().find(|(_, rule)| {
        (rule.methods.is_empty() || rule.methods.iter().any(|m| m.0 == *method)) && rule.pattern.as_ref().is_none_or(|p| p.matches(path))
    })
}

/// An app whose `rules = [...]` line is `rules`, built the way the gateway
/// builds it: by parsing a configuration.
fn app(rules: &str) -> AppConfig {
    let text = format!(
        "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"data\"\n\
         [[apps]]\nid = \"app\"\nhosts = [\"app.example.com\"]\nupstreams = [\"http://127.0.0.1:3000\"]\n{rules}\n"
    );
    let mut config = Config::parse(&text, Path::new("/etc/stepgate/test.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.apps.remove(0)
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).unwrap()
}

const ANONYMOUS: Proof = Proof { signed_in: false, second_factor: false };
const PASSWORD: Proof = Proof { signed_in: true, second_factor: false };
const BOTH: Proof = Proof { signed_in: true, second_factor: true };
/// Not a state a session can be in; it must count as not signed in.
const SECOND_ONLY: Proof = Proof { signed_in: false, second_factor: true };

const ALLOW_ANONYMOUS: Decision = Decision::Allow { with_identity: false };
const ALLOW_USER: Decision = Decision::Allow { with_identity: true };
const DENY_RULE: Decision = Decision::Deny(DenyReason::Rule);
const DENY_NO_RULE: Decision = Decision::Deny(DenyReason::NoRule);

/// Indices into the rules below.
const PUBLIC: usize = 0;
const HEALTH: usize = 1;
const API_DELETE: usize = 2;
const PDF: usize = 3;
const FILES: usize = 4;
const ADMIN: usize = 5;
const ADMIN_SHADOWED: usize = 6;
const API: usize = 7;
const PHP: usize = 8;
const OLD: usize = 9;
const DAV: usize = 10;

const RULES: &str = r#"rules = [
  { path = "/public/", policy = "bypass" },
  { regex = "^/api/v[0-9]+/health$", methods = ["GET", "HEAD"], policy = "bypass" },
  { path = "/api/", methods = ["DELETE"], policy = "deny" },
  { glob = "/files/**/*.pdf", policy = "two_factor" },
  { glob = "/files/*", policy = "one_factor" },
  { path = "/admin/", policy = "two_factor" },
  { path = "/admin/", policy = "deny" },
  { path = "/api/", policy = "one_factor" },
  { regex = '\.php$', policy = "deny" },
  { path = "/old", methods = ["get", "post"], policy = "deny" },
  { path = "/dav/", methods = ["PROPFIND"], policy = "one_factor" },
]"#;

#[test]
fn match_rule_takes_the_first_match() {
    let app = app(RULES);
    assert_eq!(app.rules.len(), 11);
    let cases: &[(&str, &str, Option<usize>)] = &[
        // Prefixes.
        ("GET", "/public/", Some(PUBLIC)),
        ("GET", "/public/css/site.css", Some(PUBLIC)),
        ("POST", "/public/form", Some(PUBLIC)),
        // A path without its trailing slash is covered too.
        ("GET", "/public", Some(PUBLIC)),
        ("GET", "/publicity", None),
        ("GET", "/admin/", Some(ADMIN)),
        ("GET", "/admin/users", Some(ADMIN)),
        ("GET", "/admin", Some(ADMIN)),
        ("GET", "/administrator", None),
        // A prefix without a trailing slash matches longer names too.
        ("GET", "/old", Some(OLD)),
        ("GET", "/older/page", Some(OLD)),
        // Matching is case-sensitive.
        ("GET", "/Public/", None),
        ("GET", "/ADMIN/", None),
        // Regex: anchored by the expression itself.
        ("GET", "/api/v1/health", Some(HEALTH)),
        ("HEAD", "/api/v22/health", Some(HEALTH)),
        ("GET", "/api/v1/health/", Some(API)),
        ("GET", "/api/vX/health", Some(API)),
        ("GET", "/x/api/v1/health", None),
        // Regex: unanchored at the start when the expression says nothing.
        ("GET", "/index.php", Some(PHP)),
        ("GET", "/deep/down/index.php", Some(PHP)),
        ("GET", "/index.php/more", None),
        // Globs: `*` stays within a segment, `**` crosses segments.
        ("GET", "/files/report.pdf", Some(PDF)),
        ("GET", "/files/2024/q1/report.pdf", Some(PDF)),
        ("GET", "/files/notes.txt", Some(FILES)),
        ("GET", "/files/2024/notes.txt", None),
        ("GET", "/files/", Some(FILES)),
        ("GET", "/files", Some(FILES)),
        // Methods filter: the DELETE rule is skipped for other methods.
        ("DELETE", "/api/v1/users/7", Some(API_DELETE)),
        ("GET", "/api/v1/users/7", Some(API)),
        ("POST", "/api/v1/health", Some(API)),
        ("DELETE", "/api/v1/health", Some(API_DELETE)),
        // Methods written in lower case in the file match.
        ("GET", "/old/x", Some(OLD)),
        ("POST", "/old/x", Some(OLD)),
        ("PUT", "/old/x", None),
        // Extension methods.
        ("PROPFIND", "/dav/a", Some(DAV)),
        ("GET", "/dav/a", None),
        // No rule.
        ("GET", "/", None),
        ("GET", "/elsewhere", None),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(m, path, expected)| {
            let got = match_rule(&app.rules, &method(m), path).map(|(index, _)| index);
            (got != expected).then(|| format!("{m} {path}: expected rule {expected:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn match_rule_returns_the_rule_with_its_index() {
    let app = app(RULES);
    let (index, rule) = match_rule(&app.rules, &Method::DELETE, "/api/x").unwrap();
    assert_eq!(index, API_DELETE);
    assert!(std::ptr::eq(rule, &app.rules[API_DELETE]));
    assert_eq!(rule.policy, Policy::Deny);
    // The second `/admin/` rule can never match: the first one wins.
    for m in ["GET", "POST", "DELETE", "OPTIONS"] {
        let (index, _) = match_rule(&app.rules, &method(m), "/admin/x").unwrap();
        assert_eq!(index, ADMIN, "{m}");
        assert_ne!(index, ADMIN_SHADOWED);
    }
}

#[test]
fn match_rule_with_no_rules_matches_nothing() {
    let app = app("");
    assert!(app.rules.is_empty());
    assert!(match_rule(&app.rules, &Method::GET, "/").is_none());
    assert_eq!(decide(&app, &Method::GET, "/", BOTH), Outcome { rule: None, decision: DENY_NO_RULE, condition_failed: false });
}

#[test]
fn decide_applies_the_policy_of_the_first_match() {
    let app = app(RULES);
    let cases: &[(&str, &str, Proof, Option<usize>, Decision)] = &[
        // bypass: allowed to anyone; the identity goes along when there is one.
        ("GET", "/public/a", ANONYMOUS, Some(PUBLIC), ALLOW_ANONYMOUS),
        ("GET", "/public/a", SECOND_ONLY, Some(PUBLIC), ALLOW_ANONYMOUS),
        ("GET", "/public/a", PASSWORD, Some(PUBLIC), ALLOW_USER),
        ("GET", "/public/a", BOTH, Some(PUBLIC), ALLOW_USER),
        ("HEAD", "/api/v1/health", ANONYMOUS, Some(HEALTH), ALLOW_ANONYMOUS),
        ("HEAD", "/api/v1/health", PASSWORD, Some(HEALTH), ALLOW_USER),
        // one_factor.
        ("GET", "/api/v1/users", ANONYMOUS, Some(API), Decision::SignIn),
        ("GET", "/api/v1/users", SECOND_ONLY, Some(API), Decision::SignIn),
        ("GET", "/api/v1/users", PASSWORD, Some(API), ALLOW_USER),
        ("GET", "/api/v1/users", BOTH, Some(API), ALLOW_USER),
        ("GET", "/files/a.txt", PASSWORD, Some(FILES), ALLOW_USER),
        ("PROPFIND", "/dav/a", PASSWORD, Some(DAV), ALLOW_USER),
        // two_factor.
        ("GET", "/admin/", ANONYMOUS, Some(ADMIN), Decision::SignIn),
        ("GET", "/admin/", SECOND_ONLY, Some(ADMIN), Decision::SignIn),
        ("GET", "/admin/", PASSWORD, Some(ADMIN), Decision::SecondFactor(StepUp::Required)),
        ("GET", "/admin/", BOTH, Some(ADMIN), ALLOW_USER),
        ("GET", "/files/a/b.pdf", ANONYMOUS, Some(PDF), Decision::SignIn),
        ("GET", "/files/a/b.pdf", PASSWORD, Some(PDF), Decision::SecondFactor(StepUp::Required)),
        ("GET", "/files/a/b.pdf", BOTH, Some(PDF), ALLOW_USER),
        // deny: whatever the session has proven.
        ("DELETE", "/api/v1/users", ANONYMOUS, Some(API_DELETE), DENY_RULE),
        ("DELETE", "/api/v1/users", PASSWORD, Some(API_DELETE), DENY_RULE),
        ("DELETE", "/api/v1/users", BOTH, Some(API_DELETE), DENY_RULE),
        ("GET", "/x.php", BOTH, Some(PHP), DENY_RULE),
        ("GET", "/old", ANONYMOUS, Some(OLD), DENY_RULE),
        // No match: denied, whatever the session has proven.
        ("GET", "/", ANONYMOUS, None, DENY_NO_RULE),
        ("GET", "/", PASSWORD, None, DENY_NO_RULE),
        ("GET", "/", BOTH, None, DENY_NO_RULE),
        ("PUT", "/old", BOTH, None, DENY_NO_RULE),
        ("GET", "/dav/a", BOTH, None, DENY_NO_RULE),
        ("GET", "/admin", PASSWORD, Some(ADMIN), Decision::SecondFactor(StepUp::Required)),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(m, path, proof, rule, decision)| {
            let expected = Outcome { rule, decision, condition_failed: false };
            let got = decide(&app, &method(m), path, proof);
            (got != expected).then(|| format!("{m} {path} {proof:?}: expected {expected:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_policy_with_each_proof() {
    let expected: [(&str, [Decision; 4]); 4] = [
        // ANONYMOUS, SECOND_ONLY, PASSWORD, BOTH
        ("bypass", [ALLOW_ANONYMOUS, ALLOW_ANONYMOUS, ALLOW_USER, ALLOW_USER]),
        ("one_factor", [Decision::SignIn, Decision::SignIn, ALLOW_USER, ALLOW_USER]),
        ("two_factor", [Decision::SignIn, Decision::SignIn, Decision::SecondFactor(StepUp::Required), ALLOW_USER]),
        ("deny", [DENY_RULE, DENY_RULE, DENY_RULE, DENY_RULE]),
    ];
    for (policy, decisions) in expected {
        let app = app(&format!("rules = [{{ path = \"/\", policy = \"{policy}\" }}]"));
        for (proof, decision) in [ANONYMOUS, SECOND_ONLY, PASSWORD, BOTH].into_iter().zip(decisions) {
            let got = decide(&app, &Method::GET, "/anything", proof);
            assert_eq!(got, Outcome { rule: Some(0), decision, condition_failed: false }, "{policy} with {proof:?}");
        }
    }
}

#[test]
fn a_catch_all_rule_ends_the_default_deny() {
    let last = app(r#"rules = [
  { path = "/admin/", policy = "two_factor" },
  { path = "/", policy = "one_factor" },
]"#);
    assert_eq!(
        decide(&last, &Method::GET, "/anything", PASSWORD),
        Outcome { rule: Some(1), decision: ALLOW_USER, condition_failed: false }
    );
    assert_eq!(
        decide(&last, &Method::GET, "/admin/x", PASSWORD),
        Outcome { rule: Some(0), decision: Decision::SecondFactor(StepUp::Required), condition_failed: false }
    );
    // A catch-all placed first shadows everything after it.
    let first = app(r#"rules = [
  { path = "/", policy = "one_factor" },
  { path = "/admin/", policy = "two_factor" },
]"#);
    assert_eq!(
        decide(&first, &Method::GET, "/admin/x", PASSWORD),
        Outcome { rule: Some(0), decision: ALLOW_USER, condition_failed: false }
    );
}

#[test]
fn decisions_have_labels() {
    assert_eq!(ALLOW_ANONYMOUS.label(), "allow");
    assert_eq!(ALLOW_USER.label(), "allow");
    assert_eq!(Decision::SignIn.label(), "sign_in");
    assert_eq!(Decision::SecondFactor(StepUp::Required).label(), "second_factor");
    assert_eq!(DENY_RULE.label(), "deny");
    assert_eq!(DENY_NO_RULE.label(), "deny_no_rule");
}

#[test]
fn normalize_path_accepts_and_normalizes() {
    let cases: &[(&str, &str)] = &[
        ("/", "/"),
        ("/a/b/c", "/a/b/c"),
        ("/a/b/", "/a/b/"),
        // Percent-escapes are decoded, in either case.
        ("/a%20b", "/a b"),
        ("/%61dmin/", "/admin/"),
        ("/%41%42", "/AB"),
        ("/caf%C3%A9", "/café"),
        ("/caf%c3%a9", "/café"),
        ("/café", "/café"),
        ("/100%25", "/100%"),
        ("/%2541", "/%41"),
        ("/a%2Fb", "/a/b"),
        // Repeated slashes collapse, before or after decoding.
        ("//admin", "/admin"),
        ("//admin/", "/admin/"),
        ("/a//b///c", "/a/b/c"),
        ("/a/", "/a/"),
        ("/a//", "/a/"),
        ("/%2fadmin", "/admin"),
        ("/%2F/admin", "/admin"),
        // Dots that are not whole `.` or `..` segments are names.
        ("/.well-known/acme", "/.well-known/acme"),
        ("/a/.hidden", "/a/.hidden"),
        ("/a/...", "/a/..."),
        ("/a..b/c.", "/a..b/c."),
        ("/a/%2e%2e%2e", "/a/..."),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(raw, expected)| match normalize_path(raw) {
            Ok(got) if got == expected => None,
            other => Some(format!("{raw:?}: expected Ok({expected:?}), got {other:?}")),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn normalize_path_borrows_when_nothing_changes() {
    assert!(matches!(normalize_path("/a/b"), Ok(Cow::Borrowed("/a/b"))));
    assert!(matches!(normalize_path("//a"), Ok(Cow::Owned(_))));
    assert!(matches!(normalize_path("/%61"), Ok(Cow::Owned(_))));
}

#[test]
fn normalize_path_refuses() {
    use PathError::*;
    let cases: &[(&str, PathError)] = &[
        // Not absolute.
        ("", NotAbsolute),
        ("admin", NotAbsolute),
        ("*", NotAbsolute),
        ("%2fadmin", NotAbsolute),
        ("http://example.com/", NotAbsolute),
        // Dot segments, plain or encoded, anywhere.
        ("/..", DotSegment),
        ("/.", DotSegment),
        ("/./", DotSegment),
        ("/a/../b", DotSegment),
        ("/public/../admin/", DotSegment),
        ("/a/./b", DotSegment),
        ("/a/..", DotSegment),
        ("/a/.", DotSegment),
        ("//../admin", DotSegment),
        ("/%2e%2e/admin", DotSegment),
        ("/public/%2e%2e/admin", DotSegment),
        ("/public/%2E%2E/admin", DotSegment),
        ("/public/.%2e/admin", DotSegment),
        ("/public/%2e./admin", DotSegment),
        ("/public/%2e/admin", DotSegment),
        ("/public%2f..%2fadmin", DotSegment),
        ("/public/..%2fadmin", DotSegment),
        // Backslashes, plain or encoded.
        ("/a\\b", Backslash),
        ("/public\\..\\admin", Backslash),
        ("/a%5cb", Backslash),
        ("/public/..%5Cadmin", Backslash),
        // Malformed escapes.
        ("/%zz", BadEscape),
        ("/%4", BadEscape),
        ("/a%4", BadEscape),
        ("/%", BadEscape),
        ("/a%", BadEscape),
        ("/%g0", BadEscape),
        ("/%0g", BadEscape),
        ("/% 1", BadEscape),
        ("/%-1", BadEscape),
        ("/%é", BadEscape),
        ("/%aé", BadEscape),
        ("/%%41", BadEscape),
        // Not UTF-8 once decoded.
        ("/%ff", NotUtf8),
        ("/%c3", NotUtf8),
        ("/a%c3/b", NotUtf8),
        ("/%c0%af", NotUtf8),
        ("/%c0%ae%c0%ae/admin", NotUtf8),
        ("/%ed%a0%80", NotUtf8),
        ("/%80", NotUtf8),
        // Control characters, plain or encoded.
        ("/a%00b", Control),
        ("/%00", Control),
        ("/a%0a", Control),
        ("/a%0d%0aSet-Cookie:%20x", Control),
        ("/a%09b", Control),
        ("/%1b[31m", Control),
        ("/%7f", Control),
        ("/%c2%85", Control),
        ("/a\tb", Control),
        ("/a\nb", Control),
        ("/a\u{0}b", Control),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(raw, ref expected)| match normalize_path(raw) {
            Err(got) if got == *expected => None,
            other => Some(format!("{raw:?}: expected Err({expected:?}), got {other:?}")),
        })
        .collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// A `%` must be followed by exactly two hex digits. `u8::from_str_radix`
/// also takes a leading `+`, which must not make `%+1` an escape.
#[test]
fn normalize_path_refuses_a_plus_sign_in_an_escape() {
    for raw in ["/%+1", "/%+a", "/a%+F/b"] {
        assert_eq!(normalize_path(raw), Err(PathError::BadEscape), "{raw:?}");
    }
}

/// Tomcat and other servlet containers drop `;parameters` from each
/// segment, so for them `..;` is `..` and `/public/..;/admin/` is
/// `/admin/`. Such a path would match a `/public/` bypass rule here.
#[test]
fn normalize_path_refuses_dot_segments_with_parameters() {
    for raw in ["/public/..;/admin/", "/public/..;x=1/admin/", "/public/.;/x", "/public/%2e%2e;/admin/"] {
        assert_eq!(normalize_path(raw), Err(PathError::DotSegment), "{raw:?}");
    }
}

#[test]
fn normalized_paths_are_what_rules_see() {
    let app = app(RULES);
    let decide_raw = |raw: &str, proof: Proof| normalize_path(raw).map(|path| decide(&app, &Method::GET, &path, proof));
    // An encoded name matches the rule for the plain name.
    assert_eq!(
        decide_raw("/%61dmin/", PASSWORD),
        Ok(Outcome { rule: Some(ADMIN), decision: Decision::SecondFactor(StepUp::Required), condition_failed: false })
    );
    // A doubled slash does not slip past a prefix rule.
    assert_eq!(
        decide_raw("//admin/", PASSWORD),
        Ok(Outcome { rule: Some(ADMIN), decision: Decision::SecondFactor(StepUp::Required), condition_failed: false })
    );
    // A way out of a bypass rule is refused before any rule is consulted.
    assert_eq!(decide_raw("/public/%2e%2e/admin/", ANONYMOUS), Err(PathError::DotSegment));
    assert_eq!(decide_raw("/public/..%5cadmin/", ANONYMOUS), Err(PathError::Backslash));
}

#[test]
fn path_parameters_are_dropped_for_matching() {
    for (raw, expected) in [("/admin;x/", "/admin/"), ("/admin;jsessionid=1/panel", "/admin/panel"), ("/a;b", "/a"), ("/;x", "/")] {
        assert_eq!(normalize_path(raw).unwrap(), expected, "{raw}");
    }
}

// `when` expressions (CEL).

/// A configuration whose `[policy]` table is `policy` and whose one app
/// has the rules `rules`.
fn configured(policy: &str, rules: &str) -> Config {
    let text = format!(
        "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"data\"\n{policy}\n\
         [[apps]]\nid = \"app\"\nhosts = [\"app.example.com\"]\nupstreams = [\"http://127.0.0.1:3000\"]\n{rules}\n"
    );
    Config::parse(&text, Path::new("/etc/stepgate/test.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Who is asking, for the `when` tables.
#[derive(Debug, Clone, Copy)]
enum Who {
    Anonymous,
    /// Signed in with a password only, in no group.
    Bob,
    /// In `finance`, with a second factor a minute ago.
    Fin,
}

/// Everything about a request a `when` expression can see.
#[derive(Debug, Clone, Copy)]
struct Visit<'a> {
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a [(&'a str, &'a str)],
    country: Option<&'a str>,
    asn: Option<u32>,
    tor: bool,
    now: i64,
    who: Who,
}

const VISIT: Visit = Visit { path: "/", query: None, headers: &[], country: None, asn: None, tor: false, now: NOW, who: Who::Anonymous };

fn geo_of(visit: &Visit) -> GeoFacts {
    let mut geo = GeoFacts { country: visit.country.map(str::to_string), asn: visit.asn, ..GeoFacts::default() };
    geo.anonymous.is_tor_exit_node = visit.tor;
    geo
}

fn headers_of(visit: &Visit) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for (name, value) in visit.headers {
        headers.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    headers
}

fn visit(config: &Config, visit: Visit) -> Outcome {
    let (geo, headers) = (geo_of(&visit), headers_of(&visit));
    let request = Request {
        method: &Method::GET,
        method_override: None,
        path: visit.path,
        query: visit.query,
        headers: &headers,
        ip: "192.0.2.10".parse().unwrap(),
        geo: &geo,
        now: visit.now,
    };
    let finance = ["finance".to_string()];
    let subject = |groups: &'static [String], second_factor_at| Subject {
        username: "someone",
        groups,
        second_factors: crate::methods::MethodTimes::totp_at(second_factor_at),
        trusted_browser: false,
        confidence: Confidence::High,
    };
    let subject = match visit.who {
        Who::Anonymous => None,
        Who::Bob => Some(subject(&[], None)),
        Who::Fin => Some(Subject { groups: &finance, ..subject(&[], Some(visit.now - 60)) }),
    };
    super::decide(&config.apps[0], &config.policy, &request, subject.as_ref())
}

const WHEN_RULES: &str = r#"rules = [
  { path = "/geo/", when = 'request.geo.country != "CH" && !("finance" in user.groups)', policy = "deny" },
  { path = "/geo/", policy = "never" },
  { path = "/hdr/", when = '"x-env" in request.headers && request.headers["x-env"] == "prod"', policy = "always" },
  { path = "/hdr/", policy = "never" },
  { path = "/q/", when = '"debug" in request.query && request.query.debug == "1"', policy = "deny" },
  { path = "/q/", policy = "bypass" },
  { path = "/time/", when = 'request.time.weekday >= 1 && request.time.weekday <= 5 && request.time.hour >= 8 && request.time.hour < 18', policy = "never" },
  { path = "/time/", policy = "deny" },
  { path = "/anon/", when = 'request.geo.anonymous || request.geo.asn == 64496', policy = "deny" },
  { path = "/anon/", policy = "bypass" },
  { path = "/fresh/", when = 'user.second_factor_age >= 0 && user.second_factor_age < 300', policy = "never" },
  { path = "/fresh/", policy = "deny" },
  { path = "/odd/", when = 'request.path', policy = "bypass" },
  { path = "/odd/", when = 'size(request.headers["x-missing"]) > 0', policy = "bypass" },
  { path = "/odd/", when = 'request.query.missing == "1"', policy = "bypass" },
  { path = "/odd/", when = 'request.method == "GET" && request.path.startsWith("/odd/") && request.ip == "192.0.2.10"', policy = "never" },
]"#;

/// Monday 12 January 1970, 09:30 in Zurich (CET, UTC+1).
const MONDAY_MORNING: i64 = NOW + 86_400 + 8 * 3600 + 1800;
/// The same Monday, 19:00 in Zurich.
const MONDAY_EVENING: i64 = NOW + 86_400 + 18 * 3600;
/// Sunday 11 January 1970, 10:00 in Zurich.
const SUNDAY_MORNING: i64 = NOW + 9 * 3600;

#[test]
fn when_expressions_decide_with_the_request_and_the_user() {
    use Who::*;
    let config = configured("[policy]\ntime_zone = \"Europe/Zurich\"", WHEN_RULES);
    let (sign_in, second_factor) = (Decision::SignIn, Decision::SecondFactor(StepUp::Required));
    let cases: &[(&str, Visit, usize, Decision)] = &[
        // Geo and groups: outside Switzerland, only the finance group.
        ("CH, anonymous: false without the user", Visit { path: "/geo/", country: Some("CH"), ..VISIT }, 1, sign_in),
        ("US, anonymous: needs the user", Visit { path: "/geo/", country: Some("US"), ..VISIT }, 0, sign_in),
        ("US, bob", Visit { path: "/geo/", country: Some("US"), who: Bob, ..VISIT }, 0, DENY_RULE),
        ("US, finance", Visit { path: "/geo/", country: Some("US"), who: Fin, ..VISIT }, 1, ALLOW_USER),
        ("CH, bob", Visit { path: "/geo/", country: Some("CH"), who: Bob, ..VISIT }, 1, ALLOW_USER),
        ("unknown country is \"\"", Visit { path: "/geo/", who: Bob, ..VISIT }, 0, DENY_RULE),
        // Headers: lower-case names, the first value wins.
        ("x-env prod", Visit { path: "/hdr/", headers: &[("X-Env", "prod")], who: Bob, ..VISIT }, 2, second_factor),
        ("x-env prod, finance", Visit { path: "/hdr/", headers: &[("x-env", "prod")], who: Fin, ..VISIT }, 2, ALLOW_USER),
        ("x-env dev then prod", Visit { path: "/hdr/", headers: &[("x-env", "dev"), ("x-env", "prod")], who: Bob, ..VISIT }, 3, ALLOW_USER),
        ("no x-env", Visit { path: "/hdr/", who: Bob, ..VISIT }, 3, ALLOW_USER),
        // Query: decoded, the first value wins; a missing one is tested for.
        ("debug=1", Visit { path: "/q/", query: Some("debug=1"), ..VISIT }, 4, DENY_RULE),
        ("encoded name", Visit { path: "/q/", query: Some("a=2&de%62ug=1"), ..VISIT }, 4, DENY_RULE),
        ("debug=1 first", Visit { path: "/q/", query: Some("debug=1&debug=0"), ..VISIT }, 4, DENY_RULE),
        ("debug=0 first", Visit { path: "/q/", query: Some("debug=0&debug=1"), ..VISIT }, 5, ALLOW_ANONYMOUS),
        ("no query", Visit { path: "/q/", ..VISIT }, 5, ALLOW_ANONYMOUS),
        // Time, in the policy's time zone; weekday 0 is Sunday.
        ("Monday 09:30", Visit { path: "/time/", now: MONDAY_MORNING, who: Bob, ..VISIT }, 6, ALLOW_USER),
        ("Monday 19:00", Visit { path: "/time/", now: MONDAY_EVENING, who: Bob, ..VISIT }, 7, DENY_RULE),
        ("Sunday 10:00", Visit { path: "/time/", now: SUNDAY_MORNING, who: Bob, ..VISIT }, 7, DENY_RULE),
        // Anonymous-IP flags and the ASN.
        ("Tor", Visit { path: "/anon/", tor: true, ..VISIT }, 8, DENY_RULE),
        ("ASN", Visit { path: "/anon/", asn: Some(64496), ..VISIT }, 8, DENY_RULE),
        ("neither", Visit { path: "/anon/", asn: Some(3303), ..VISIT }, 9, ALLOW_ANONYMOUS),
        // The second factor's age; -1 without one.
        ("fresh second factor", Visit { path: "/fresh/", who: Fin, ..VISIT }, 10, ALLOW_USER),
        ("no second factor", Visit { path: "/fresh/", who: Bob, ..VISIT }, 11, DENY_RULE),
        ("nobody signed in", Visit { path: "/fresh/", ..VISIT }, 10, sign_in),
        // Not a bool, or an evaluation error, on a `bypass` rule: no match,
        // whoever asks.
        ("odd, bob", Visit { path: "/odd/", who: Bob, ..VISIT }, 15, ALLOW_USER),
        ("odd, anonymous", Visit { path: "/odd/", ..VISIT }, 15, sign_in),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(name, v, rule, decision)| {
            let expected = Outcome { rule: Some(*rule), decision: *decision, condition_failed: false };
            let got = visit(&config, *v);
            (got != expected).then(|| format!("{name}: expected {expected:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn an_expression_on_the_user_asks_an_anonymous_visitor_to_sign_in() {
    let config = configured(
        "",
        r#"rules = [
  { path = "/admin/", when = '"admins" in user.groups', policy = "always" },
  { path = "/", policy = "bypass" },
]"#,
    );
    assert_eq!(
        visit(&config, Visit { path: "/admin/x", ..VISIT }),
        Outcome { rule: Some(0), decision: Decision::SignIn, condition_failed: false }
    );
    assert_eq!(
        visit(&config, Visit { path: "/admin/x", who: Who::Bob, ..VISIT }),
        Outcome { rule: Some(1), decision: ALLOW_USER, condition_failed: false }
    );
    assert_eq!(
        visit(&config, Visit { path: "/other", ..VISIT }),
        Outcome { rule: Some(1), decision: ALLOW_ANONYMOUS, condition_failed: false }
    );

    // With a `groups` condition too, an expression false for anyone spares
    // the sign-in.
    let config = configured(
        "",
        r#"rules = [
  { path = "/", groups = ["finance"], when = 'request.geo.country == "CH"', policy = "never" },
  { path = "/", policy = "bypass" },
]"#,
    );
    assert_eq!(
        visit(&config, Visit { country: Some("US"), ..VISIT }),
        Outcome { rule: Some(1), decision: ALLOW_ANONYMOUS, condition_failed: false }
    );
    assert_eq!(
        visit(&config, Visit { country: Some("CH"), ..VISIT }),
        Outcome { rule: Some(0), decision: Decision::SignIn, condition_failed: false }
    );
    assert_eq!(
        visit(&config, Visit { country: Some("CH"), who: Who::Bob, ..VISIT }),
        Outcome { rule: Some(1), decision: ALLOW_USER, condition_failed: false }
    );
    assert_eq!(
        visit(&config, Visit { country: Some("CH"), who: Who::Fin, ..VISIT }),
        Outcome { rule: Some(0), decision: ALLOW_USER, condition_failed: false }
    );
}

/// A `bypass` rule whose expression fails (not a bool, or an evaluation
/// error) does not match, and explain says why.
#[test]
fn a_bypass_rule_whose_expression_fails_never_matches() {
    let expressions = [
        "request.path",
        "1",
        "request.headers",
        "null",
        "[true]",
        "request.geo.asn",
        "user.groups",
        r#"request.query["debug"]"#,
        "1 / 0 == 1",
        r#"request.headers["authorization"].exists(c, true)"#,
    ];
    for expression in expressions {
        let rule = format!("rules = [{{ path = \"/\", when = '{expression}', policy = \"bypass\" }}]");
        let text = format!(
            "users_file = \"users.toml\"\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"data\"\n\
             [[apps]]\nid = \"app\"\nhosts = [\"app.example.com\"]\nupstreams = [\"http://127.0.0.1:3000\"]\n{rule}\n"
        );
        let config = match Config::parse(&text, Path::new("/etc/stepgate/test.toml")) {
            Ok(config) => config,
            // Refused at load is fine too: it can never match either.
            Err(e) => {
                assert!(e.to_string().contains("macros such as `exists`"), "{expression}: {e}");
                continue;
            }
        };
        let query = Some("debug=1");
        let uses_user = expression.contains("user");
        for who in [Who::Anonymous, Who::Bob, Who::Fin] {
            let headers = &[("authorization", "Bearer secret")];
            let got = visit(&config, Visit { query, headers, who, ..VISIT });
            let expected = match who {
                // Whether it matches depends on the user: sign in first.
                Who::Anonymous if uses_user => Outcome { rule: Some(0), decision: Decision::SignIn, condition_failed: false },
                _ => Outcome { rule: None, decision: DENY_NO_RULE, condition_failed: false },
            };
            assert_eq!(got, expected, "{expression} for {who:?}");
        }
        let (geo, headers) = (GeoFacts::default(), http::HeaderMap::new());
        let request = Request {
            method: &Method::GET,
            method_override: None,
            path: "/",
            query,
            headers: &headers,
            ip: "192.0.2.10".parse().unwrap(),
            geo: &geo,
            now: NOW,
        };
        let subject = Subject {
            username: "bob",
            groups: &[],
            second_factors: crate::methods::MethodTimes::default(),
            trusted_browser: false,
            confidence: Confidence::High,
        };
        let explanation = explain(&config.apps[0], &config.policy, &request, Some(&subject));
        assert_eq!(explanation.skipped, [RuleTrace { index: 0, why_not: Mismatch::ExpressionFailed }], "{expression}");
        let rendered = explanation.render(&config.apps[0]);
        assert!(rendered.contains("no match, its `when` expression failed to evaluate: counted as no match"), "{expression}: {rendered}");
    }
}

/// The same condition, failing for want of a header, on each policy: a
/// `deny` rule still refuses and an `always` one still demands a second
/// factor (they fail closed); the others do not match.
#[test]
fn a_failing_expression_fails_closed_on_deny_and_always_rules() {
    let config = configured(
        "",
        r#"rules = [
  { path = "/deny/", when = 'request.headers["x-env"] == "prod"', policy = "deny" },
  { path = "/always/", when = 'request.headers["x-env"] == "prod"', policy = "always" },
  { path = "/never/", when = 'request.headers["x-env"] == "prod"', policy = "never" },
  { path = "/adaptive/", when = 'request.headers["x-env"] == "prod"', policy = "adaptive" },
  { path = "/bypass/", when = 'request.headers["x-env"] == "prod"', policy = "bypass" },
  { path = "/", policy = "never" },
]"#,
    );
    let (failed, held) = (true, false);
    let second_factor = Decision::SecondFactor(StepUp::Required);
    // Path, headers, who asks; the rule that decides, how, and whether its
    // condition failed.
    type Case = (&'static str, &'static [(&'static str, &'static str)], Who, usize, Decision, bool);
    let cases: &[Case] = &[
        ("/deny/", &[], Who::Anonymous, 0, DENY_RULE, failed),
        ("/deny/", &[], Who::Fin, 0, DENY_RULE, failed),
        ("/deny/", &[("x-env", "prod")], Who::Fin, 0, DENY_RULE, held),
        ("/deny/", &[("x-env", "dev")], Who::Fin, 5, ALLOW_USER, held),
        ("/always/", &[], Who::Anonymous, 1, Decision::SignIn, failed),
        ("/always/", &[], Who::Bob, 1, second_factor, failed),
        ("/always/", &[], Who::Fin, 1, ALLOW_USER, failed),
        ("/always/", &[("x-env", "dev")], Who::Bob, 5, ALLOW_USER, held),
        ("/never/", &[], Who::Bob, 5, ALLOW_USER, held),
        ("/never/", &[("x-env", "prod")], Who::Bob, 2, ALLOW_USER, held),
        ("/adaptive/", &[], Who::Bob, 5, ALLOW_USER, held),
        ("/bypass/", &[], Who::Anonymous, 5, Decision::SignIn, held),
    ];
    for &(path, headers, who, rule, decision, condition_failed) in cases {
        let got = visit(&config, Visit { path, headers, who, ..VISIT });
        assert_eq!(got, Outcome { rule: Some(rule), decision, condition_failed }, "{path} {headers:?} for {who:?}");
    }

    let (geo, headers) = (GeoFacts::default(), http::HeaderMap::new());
    let explained = |path| {
        let request = Request {
            method: &Method::GET,
            method_override: None,
            path,
            query: None,
            headers: &headers,
            ip: "192.0.2.10".parse().unwrap(),
            geo: &geo,
            now: NOW,
        };
        explain(&config.apps[0], &config.policy, &request, None).render(&config.apps[0])
    };
    let deny = explained("/deny/");
    assert!(
        deny.contains("rule 1 (line 11): matches, policy deny: its `when` expression failed to evaluate: counted as matched (fail closed)"),
        "{deny}"
    );
    let never = explained("/never/");
    assert!(never.contains("rule 3 (line 13): no match, its `when` expression failed to evaluate: counted as no match"), "{never}");
}

/// Not a benchmark: prints the rough cost of a decision through a rule with
/// a `when` expression, next to one without (`cargo test --lib
/// when_expression_cost -- --nocapture`).
#[test]
fn when_expression_cost() {
    let with = configured(
        "",
        r#"rules = [{ path = "/", when = 'request.geo.country != "CH" && !("finance" in user.groups)', policy = "never" }]"#,
    );
    let with_headers = configured(
        "",
        r#"rules = [{ path = "/", when = 'request.headers["x-env"] == "prod" && request.time.hour >= 8', policy = "never" }]"#,
    );
    let without = configured("", r#"rules = [{ path = "/", countries = ["US"], policy = "never" }]"#);
    let headers: &[(&str, &str)] = &[("accept", "text/html"), ("user-agent", "Mozilla/5.0"), ("cookie", "a=b"), ("x-env", "prod")];
    let v = Visit { path: "/x", country: Some("US"), headers, who: Who::Bob, ..VISIT };
    let rounds = 20_000;
    for (name, config) in [("no when", &without), ("geo + groups", &with), ("headers + time", &with_headers)] {
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(visit(config, v));
        }
        println!("{name}: {:?} per decision (including the test's request setup)", start.elapsed() / rounds);
    }
}

/// The rule index only skips rules that cannot match: for generated rules
/// (prefixes, globs and regexes, some of which match more than their first
/// segment suggests) and paths, deciding through the index gives what a
/// plain ordered scan of every rule gives.
mod index_is_a_superset {
    use proptest::prelude::*;

    use super::*;

    const SEGMENTS: [&str; 6] = ["admin", "Admin", "admin.php", "adminpanel", "api", "x"];

    fn pattern() -> impl Strategy<Value = String> {
        let segment = proptest::sample::select(SEGMENTS.to_vec());
        prop_oneof![
            segment.clone().prop_map(|s| format!("path = '/{s}/'")),
            segment.clone().prop_map(|s| format!("path = '/{s}'")),
            Just("path = '/'".to_string()),
            segment.clone().prop_map(|s| format!("glob = '/{s}/**'")),
            segment.clone().prop_map(|s| format!("glob = '**/{s}'")),
            segment.clone().prop_map(|s| format!("glob = '/{s}/*'")),
            segment.clone().prop_map(|s| format!("regex = '^/{s}/?'")),
            segment.clone().prop_map(|s| format!("regex = '^/{s}/'")),
            segment.clone().prop_map(|s| format!("regex = '^/{s}$'")),
            segment.clone().prop_map(|s| format!("regex = '{s}'")),
            Just(r"regex = '\.php$'".to_string()),
            Just("regex = '^/(api|x)/'".to_string()),
        ]
    }

    fn rules() -> impl Strategy<Value = Vec<(String, &'static str)>> {
        let policy = proptest::sample::select(vec!["bypass", "never", "always", "deny"]);
        proptest::collection::vec((pattern(), policy), 1..12)
    }

    fn path() -> impl Strategy<Value = String> {
        let segment = proptest::sample::select(SEGMENTS.to_vec());
        (proptest::collection::vec(segment, 0..4), any::<bool>()).prop_map(|(segments, slash)| {
            let path = format!("/{}", segments.join("/"));
            if slash && path != "/" {
                format!("{path}/")
            } else {
                path
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        #[test]
        fn decide_equals_an_ordered_scan(rules in rules(), paths in proptest::collection::vec(path(), 1..8), fold in any::<bool>()) {
            let mut text = String::new();
            if fold {
                text.push_str("path_matching = 'case_insensitive'\n");
            }
            for (pattern, policy) in &rules {
                text.push_str(&format!("[[apps.rules]]\n{pattern}\npolicy = '{policy}'\n"));
            }
            let app = app(&text);
            let (geo, headers) = (GeoFacts::default(), http::HeaderMap::new());
            for raw in &paths {
                let path = canonical_path(raw, app.path_matching).unwrap();
                let request = Request { method: &Method::GET, method_override: None, path: &path, query: None, headers: &headers, ip: "192.0.2.10".parse().unwrap(), geo: &geo, now: NOW };
                let scanned = app.rules.iter().position(|rule| rule.pattern.as_ref().is_none_or(|p| p.matches(&path)));
                let fast = super::super::decide(&app, &PolicyConfig::default(), &request, None);
                let full = explain(&app, &PolicyConfig::default(), &request, None).outcome;
                prop_assert_eq!(fast, full, "{} with rules {:?}", path, rules);
                prop_assert_eq!(fast.rule, scanned, "{} with rules {:?}", path, rules);
            }
        }
    }
}

/// An adaptive rule asks for a second factor only when the risk calls for
/// it (or `max_age` does); `factors` then says which ones count. A session
/// that did a weaker factor is never stopped where one that did none passes,
/// and a trusted browser does not skip the factor for a Low sign-in.
#[test]
fn adaptive_rules_weigh_risk_first_and_factors_when_one_is_demanded() {
    let app = app("[[apps.rules]]\npath = \"/\"\npolicy = \"adaptive\"\nfactors = [\"webauthn\"]\n");
    let (geo, headers) = (GeoFacts::default(), http::HeaderMap::new());
    let request = Request {
        method: &Method::GET,
        method_override: None,
        path: "/",
        query: None,
        headers: &headers,
        ip: "192.0.2.10".parse().unwrap(),
        geo: &geo,
        now: NOW,
    };
    let mut key = crate::methods::MethodTimes::default();
    key.record(crate::methods::Method::SecurityKey, NOW - 60);
    let totp = crate::methods::MethodTimes::totp_at(Some(NOW - 60));
    let none = crate::methods::MethodTimes::default();
    let webauthn_needed = Decision::SecondFactor(StepUp::Stronger(crate::methods::MethodSet::parse_name("webauthn").unwrap()));
    let allow = Decision::Allow { with_identity: true };
    let cases = [
        (none, Confidence::High, false, allow),
        (totp, Confidence::High, false, allow),
        (none, Confidence::Medium, true, allow),
        (none, Confidence::Medium, false, webauthn_needed),
        (totp, Confidence::Medium, false, webauthn_needed),
        (key, Confidence::Low, false, allow),
        (none, Confidence::Low, true, webauthn_needed),
        (totp, Confidence::Low, true, webauthn_needed),
    ];
    for (second_factors, confidence, trusted_browser, expected) in cases {
        let subject = Subject { username: "alice", groups: &[], second_factors, trusted_browser, confidence };
        let got = super::decide(&app, &PolicyConfig::default(), &request, Some(&subject)).decision;
        assert_eq!(got, expected, "{second_factors:?} {confidence:?} trusted: {trusted_browser}");
    }
}
