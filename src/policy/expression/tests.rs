use proptest::prelude::*;

use super::check::{Shape, REQUEST, USER};
use super::*;
use crate::config::Confidence;
use crate::geo::GeoFacts;
use crate::methods::MethodTimes;

fn refused(source: &str) -> String {
    match Expression::compile(source) {
        Ok(_) => panic!("{:?}... was accepted", source.chars().take(40).collect::<String>()),
        Err(e) => e.to_string(),
    }
}

/// Evaluates `source` for a GET of `/x?debug=1` with `headers`, for a
/// signed-in `bob` (in `staff`) or for nobody.
fn evaluate(source: &str, headers: &[(&str, &str)], signed_in: bool) -> Result<bool, Failure> {
    let expression = Expression::compile(source).unwrap_or_else(|e| panic!("{source:?}: {e}"));
    let mut header_map = http::HeaderMap::new();
    for (name, value) in headers {
        header_map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    let geo = GeoFacts {
        country: Some("CH".into()),
        asn: Some(3303),
        isp: Some("Swisscom".into()),
        organization: Some("Example AG".into()),
        connection_type: Some("Corporate".into()),
        user_type: Some("business".into()),
        domain: Some("example.ch".into()),
        ..GeoFacts::default()
    };
    let request = Request {
        method: &http::Method::GET,
        method_override: None,
        path: "/x",
        query: Some("debug=1"),
        headers: &header_map,
        ip: "192.0.2.1".parse().unwrap(),
        geo: &geo,
        now: 86_400,
    };
    let groups = ["staff".to_string()];
    let subject = Subject {
        username: "bob",
        groups: &groups,
        second_factors: MethodTimes::default(),
        trusted_browser: false,
        confidence: Confidence::High,
    };
    expression.evaluate(&request, &PolicyConfig::default(), signed_in.then_some(&subject))
}

#[test]
fn expressions_are_send_sync_debug_and_clone() {
    fn check<T: Send + Sync + fmt::Debug + Clone + 'static>() {}
    check::<Expression>();
}

#[test]
fn checks_at_compile_time() {
    let cases: &[(&str, &str)] = &[
        ("request.geo.country ==", "syntax error at line 1, column 23: the expression ends too early"),
        ("foo == 1", "at line 1, column 1: unknown variable `foo`"),
        ("request.path == \"/\" &&\n  requst.method == \"GET\"", "at line 2, column 3: unknown variable `requst`"),
        ("request.geo.contry == \"CH\"", "at line 1, column 13: `request.geo` has no field `contry`"),
        ("request[\"geo\"][\"contry\"] == \"CH\"", "at line 1, column 16: `request[\"geo\"]` has no field `contry`"),
        ("request.geo[\"contry\"] == \"CH\"", "at line 1, column 13: `request.geo` has no field `contry`"),
        ("has(request.geo.contry)", "`request.geo` has no field `contry`"),
        ("request.paht == \"/\"", "`request` has no field `paht`: it has `method`, `path`, `query`"),
        ("user.group == []", "`user` has no field `group`"),
        ("user[\"nmae\"] == \"\"", "at line 1, column 6: `user` has no field `nmae`"),
        ("request.time.day == 1", "`request.time` has no field `day`"),
        ("request.path.size == 1", "`request.path` is a string: it has no fields"),
        ("request.headers[\"x-env\"].prod", "`request.headers[\"x-env\"]` is a string: it has no fields"),
        ("user.groups.admins", "`user.groups` is a list: it has no fields"),
        ("request.path.startswith(\"/\")", "at line 1, column 14: unknown function `startswith`"),
        ("nope(1)", "at line 1, column 1: unknown function `nope`"),
        ("user.groups.exists(g)", "`exists` takes a variable and an expression"),
        ("optional.of(1) == 1", "at line 1, column 10: unknown function `of`"),
        ("1 == 1 && Foo{a: 1} == 1", "at line 1, column 11: message literals"),
        ("request.path.exists(c, c == \"/\")", "at line 1, column 1: `request.path` is a string: macros such as `exists`"),
        ("request.headers[\"authorization\"].exists(c, true)", "`request.headers[\"authorization\"]` is a string"),
        ("request.geo.?country == \"CH\"", "syntax error at line 1, column 12"),
    ];
    for (source, needle) in cases {
        let error = refused(source);
        assert!(error.contains(needle), "{source:?}: {error}");
    }
    let fine = [
        "user.groups.exists(g, g.startsWith(\"adm\")) && request.headers.all(h, h != \"\")",
        "\"foo.bar\" == request.path && size(request.query) >= 0 && request.path.matches('^/')",
        "[1, 2].map(x, x * 2).filter(y, y > 2) == [4] || has(request.geo.city)",
        "{'a': 1}['a'] == 1 && request.headers['x-env'] == 'prod' && 'a' in {'a': 1}",
        "request.time.hour >= 8 && int(request.geo.asn) > 0 && !request.geo.anonymous",
        "request[\"geo\"][\"country\"] == \"CH\" && user[\"name\"] != \"\"",
        "max([1, 2]) == 2 && min(1, 2) == 1 && has(request.query.debug)",
        // A macro's variable may shadow one of the gateway's.
        "[1].exists(request, request == 1)",
    ];
    for source in fine {
        Expression::compile(source).unwrap_or_else(|e| panic!("{source:?}: {e}"));
    }
}

/// Incomplete expressions, on which the parser of cel-interpreter 0.10
/// panicked, are syntax errors at the right place.
#[test]
fn syntax_errors_give_their_position() {
    let cases: &[(&str, (usize, usize))] = &[
        ("a ==", (1, 5)),
        ("!", (1, 2)),
        ("(", (1, 2)),
        (")", (1, 1)),
        (".", (1, 2)),
        ("/", (1, 1)),
        ("{1:", (1, 4)),
        ("a ? b :", (1, 8)),
        ("x in", (1, 5)),
        ("'abc", (1, 1)),
        ("a ==\n b &&", (2, 6)),
        ("a = 1", (1, 3)),
        ("a b", (1, 3)),
        ("a[", (1, 3)),
        ("'é' == 'x' &&", (1, 14)),
        ("\"\\uD800\" == ''", (1, 1)),
        ("9223372036854775808 == 1", (1, 1)),
        ("", (1, 1)),
    ];
    for (source, (line, column)) in cases {
        let error = refused(source);
        let expected = format!("syntax error at line {line}, column {column}: ");
        assert!(error.starts_with(&expected), "{source:?}: {error}");
    }
    assert!(refused("a = 1").ends_with("`=` is not an operator: compare with `==`"));
    assert!(refused("'abc").ends_with("a string that is not closed, or has an invalid escape"));
    assert!(refused("a b").ends_with("unexpected `b`"));
}

/// Nothing a configuration can hold overflows the parser's or a request
/// thread's stack: what nests too deeply is refused.
#[test]
fn deep_or_long_expressions_are_refused_without_overflowing() {
    let repeat = |unit: &str, times: usize| unit.repeat(times);
    let nested = [
        format!("{}1{}", repeat("(", 1000), repeat(")", 1000)),
        format!("{}{}", repeat("[", 1000), repeat("]", 1000)),
        format!("{}1{}", repeat("size(", 500), repeat(")", 500)),
        format!("1{}", repeat(" + 1", 1000)),
        format!("[1]{}", repeat("[0]", 1300)),
        format!("request.path{}", repeat(".a", 2000)),
        format!("{}true{}", repeat("[1].all(x, ", 100), repeat(")", 100)),
        format!("{}1 == 1", repeat("1 == 1 ? true : ", 250)),
    ];
    for source in &nested {
        assert!(source.len() <= MAX_LENGTH, "{}", source.len());
        let error = refused(source);
        assert!(error.contains("levels deep") || error.contains("no field"), "{}...: {error}", &source[..20]);
    }
    assert!(refused(&format!("'{}'", "a".repeat(5000))).contains("longer than 4096 bytes"));
    // At the limit (`==`, 14 `+`, then the literals: 16 levels), evaluation
    // on an ordinary thread is fine.
    assert_eq!(evaluate(&format!("1{} == 15", repeat(" + 1", 14)), &[], false), Ok(true));
    assert!(refused(&format!("1{} == 16", repeat(" + 1", 15))).contains("nests more than 16 levels deep"));
}

#[test]
fn uses_user_and_reads_query_follow_the_tree() {
    let compiled = |source: &str| Expression::compile(source).unwrap_or_else(|e| panic!("{source:?}: {e}"));
    assert!(compiled("'admins' in user.groups").uses_user());
    assert!(!compiled("request.path == 'user.groups'").uses_user());
    assert!(!compiled("[1].exists(user, user > 0)").uses_user());
    for reads in ["request.query.debug == '1'", "request['query']['debug'] == '1'", "size(request) > 0"] {
        assert!(compiled(reads).reads_query(), "{reads}");
    }
    assert!(!compiled("request.path == 'query'").reads_query());
}

/// Every field the checks accept is there when evaluating, so no condition
/// fails for want of one.
#[test]
fn every_checked_field_is_filled_in() {
    fn leaves(prefix: String, shape: Shape, out: &mut Vec<String>) {
        match shape {
            Shape::Record(fields) => fields.iter().for_each(|(name, field)| leaves(format!("{prefix}.{name}"), *field, out)),
            _ => out.push(prefix),
        }
    }
    let mut paths = Vec::new();
    leaves("request".into(), REQUEST, &mut paths);
    leaves("user".into(), USER, &mut paths);
    assert!(paths.len() > 15, "{paths:?}");
    for path in paths {
        assert_eq!(evaluate(&format!("{path} == {path}"), &[], true), Ok(true), "{path}");
    }
}

#[test]
fn evaluation_sees_the_request_and_the_user() {
    let cases: &[(&str, bool)] = &[
        ("request.method == 'GET' && request.path == '/x' && request.ip == '192.0.2.1'", true),
        ("request.query.debug == '1' && request.headers['x-env'] == 'prod'", true),
        ("request.geo.country == 'CH' && request.geo.asn == 3303 && !request.geo.anonymous", true),
        ("request.time.weekday == 5 && request.time.hour == 0 && request.time.minute == 0", true),
        ("user.name == 'bob' && 'staff' in user.groups && user.second_factor_age == -1", true),
        ("size(request) == 7 && max([1, 3, 2]) == 3 && min(2, 1) == 1", true),
        ("user.groups.contains('staff') && request.headers.contains('x-env') && 'bob'.contains('o')", true),
        ("request.headers.exists(h, h == 'x-env')", true),
        ("request.geo.city != ''", false),
        ("request.geo.isp == 'Swisscom' && request.geo.organization == 'Example AG'", true),
        ("request.geo.connection_type == 'Corporate' && request.geo.user_type in ['business', 'government']", true),
        ("request.geo.domain.endsWith('.ch')", true),
    ];
    for (source, expected) in cases {
        assert_eq!(evaluate(source, &[("x-env", "prod")], true), Ok(*expected), "{source}");
    }
}

#[test]
fn failures_name_no_values() {
    let secret = [("authorization", "(secret")];
    let cases = [
        ("request.headers['x-missing'] == 'a'", "no such key `x-missing`"),
        ("int(request.headers['authorization']) > 0", "function `int` failed"),
        ("request.path.matches(request.headers['authorization'])", "function `matches` failed"),
        ("request.headers['authorization']", "the result is string, not a bool"),
        ("1 / 0 == 1", "division by zero"),
    ];
    for (source, expected) in cases {
        assert_eq!(evaluate(source, &secret, true), Err(Failure::Error(expected.into())), "{source}");
    }
}

#[test]
fn an_expression_needing_the_user_needs_identity() {
    assert_eq!(evaluate("'admins' in user.groups", &[], false), Err(Failure::NeedsIdentity));
    // Its value comes out without the user: it stands.
    assert_eq!(evaluate("request.geo.country == 'CH' || 'admins' in user.groups", &[], false), Ok(true));
}

/// Pieces of expressions for the property test: the gateway's fields,
/// literals of every type, and values that make functions fail.
const ATOMS: &[&str] = &[
    "request",
    "request.path",
    "request.headers",
    "request.query",
    "request.geo.country",
    "request.geo.asn",
    "request.time.hour",
    "request.headers['x-env']",
    "request.query['debug']",
    "user",
    "user.name",
    "user.groups",
    "user.second_factor_age",
    "x",
    "1",
    "-1",
    "0",
    "0u",
    "1.5",
    "9223372036854775807",
    "'a'",
    "''",
    "'('",
    "b'\\xff'",
    "true",
    "null",
    "[]",
    "{}",
    "{'a': 1}",
    "[1, 'a']",
];
const BINARY: &[&str] = &["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||", "in"];
const FUNCTIONS: &[&str] = &["size", "int", "uint", "double", "string", "bytes", "bool", "type", "dyn", "max", "min"];
const METHODS: &[&str] = &["size", "matches", "startsWith", "endsWith", "contains", "max"];
const MACROS: &[&str] = &["all", "exists", "exists_one", "map", "filter"];
const FIELDS: &[&str] = &["a", "size", "country", "x"];

/// Mostly well-formed expressions, so that many compile and are evaluated.
fn expression() -> impl Strategy<Value = String> {
    use proptest::collection::vec;
    use proptest::sample::select;
    let atom = select(ATOMS).prop_map(str::to_string);
    atom.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (inner.clone(), select(BINARY), inner.clone()).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (select(FUNCTIONS), vec(inner.clone(), 0..3)).prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (inner.clone(), select(METHODS), vec(inner.clone(), 0..3))
                .prop_map(|(target, m, args)| format!("{target}.{m}({})", args.join(", "))),
            (inner.clone(), select(MACROS), inner.clone()).prop_map(|(range, m, body)| format!("{range}.{m}(x, {body})")),
            (inner.clone(), inner.clone()).prop_map(|(target, key)| format!("{target}[{key}]")),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(", "))),
            (inner.clone(), select(FIELDS)).prop_map(|(target, field)| format!("{target}.{field}")),
            inner.prop_map(|e| format!("!{e}")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever a configuration holds (here: expressions, some cut short),
    /// compiling it gives an expression or an error, and evaluating what
    /// compiles gives a value or an error: never a panic.
    #[test]
    fn neither_compiling_nor_evaluating_panics(source in expression(), cut in any::<Option<prop::sample::Index>>()) {
        let source = match cut {
            Some(cut) => source.chars().take(cut.index(source.chars().count() + 1)).collect(),
            None => source,
        };
        if Expression::compile(&source).is_ok() {
            for signed_in in [false, true] {
                let _ = evaluate(&source, &[("x-env", "prod"), ("authorization", "Bearer x")], signed_in);
            }
        }
    }
}

#[test]
fn an_expression_says_which_geo_data_it_reads() {
    let reads = |source: &str| Expression::compile(source).unwrap().geo_reads();
    assert_eq!(reads("request.path == '/'"), []);
    assert_eq!(reads("request.geo.country == 'CH' || request.geo.asn == 1"), [(GeoData::Place, "country"), (GeoData::Network, "asn")]);
    assert_eq!(reads("request[\"geo\"][\"user_type\"] == 'hosting'"), [(GeoData::UserType, "user_type")]);
    assert_eq!(
        reads("request.geo.domain == '' && request.geo.organization != ''"),
        [(GeoData::Isp, "organization"), (GeoData::Domain, "domain")]
    );
    assert_eq!(reads("size(request.geo) == 10").len(), 10, "the whole record reads every field");
    assert_eq!(reads("size(request) == 7").len(), 10);
}
