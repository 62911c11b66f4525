//! Rule conditions and `when` expressions as the file gives them.

use super::*;

#[test]
fn rule_conditions_are_read_and_checked() {
    let conditions = "[[apps.rules]]\npath = \"/x/\"\nnetworks = [\"office\"]\ncountries = [\"ch\"]\ncontinents = [\"eu\"]\n\
                      asns = [3303]\nanonymous = [\"tor\", \"vpn\"]\ngroups = [\"admins\"]\nquery = { debug = \"1\" }\n\
                      headers = { \"X-Env\" = \"prod\" }\nhours = \"22:00-06:00\"\ndays = [\"mon\", \"friday\"]\n\
                      countries_deny = [\"KP\"]\npolicy = \"adaptive\"\nmax_age = \"5m\"\n";
    let text = config_with(
        "[networks]\noffice = [\"192.0.2.0/24\"]\n[policy]\ntime_zone = \"Europe/Zurich\"\nadaptive_minimum = \"medium\"\n",
        "",
        conditions,
    );
    let config = Config::parse(&text, Path::new("/etc/stepgate/test.toml")).unwrap_or_else(|e| panic!("{e}"));
    let rule = &config.apps[0].rules[0];
    let c = &rule.conditions;
    assert_eq!(c.networks[0].0, "office");
    assert_eq!(c.countries[0].0, "CH", "country codes are stored upper case");
    assert_eq!(c.continents, ["EU"]);
    assert_eq!(c.anonymous, [Anonymity::Tor, Anonymity::Vpn]);
    assert_eq!(c.headers[0].0.as_str(), "x-env");
    assert!(c.hours.unwrap().contains(23 * 60) && c.hours.unwrap().contains(60) && !c.hours.unwrap().contains(12 * 60));
    assert_eq!(c.days, [chrono::Weekday::Mon, chrono::Weekday::Fri]);
    assert_eq!(rule.max_age, Some(300));
    assert!(!rule.fence.admits(Some("KP")) && rule.fence.admits(Some("CH")) && rule.fence.admits(None));
    assert_eq!(config.policy.adaptive_minimum, Confidence::Medium);
}

#[test]
fn bad_condition_values_are_refused_with_file_and_line() {
    let bad = |value: &str| config_with("", "", &format!("[[apps.rules]]\npath = \"/x/\"\n{value} {MARK}\npolicy = \"never\"\n"));
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("country", bad("countries = [\"Switzerland\"]"), &["invalid country code"]),
        ("continent", bad("continents = [\"XX\"]"), &["invalid continent code"]),
        ("hours", bad("hours = \"8-18\""), &["invalid hours"]),
        ("hours out of range", bad("hours = \"08:00-25:00\""), &["invalid hours"]),
        ("day", bad("days = [\"someday\"]"), &["invalid day"]),
        ("anonymous kind", bad("anonymous = [\"onion\"]"), &["onion"]),
        ("asn", bad("asns = [\"AS3303\"]"), &["invalid type"]),
        ("connection type", bad("connection_types = [\"Wifi\"]"), &["unknown connection type `Wifi`", "Cable/DSL, Cellular"]),
        ("user type", bad("user_types = [\"home\"]"), &["unknown user type `home`", "residential"]),
        ("time zone", config_with(&format!("[policy]\ntime_zone = \"Mars/Olympus\" {MARK}\n"), "", ""), &["unknown time zone"]),
        ("confidence", config_with(&format!("[policy]\nadaptive_minimum = \"certain\" {MARK}\n"), "", ""), &["certain"]),
        ("app fence", config_with("", "", &format!("countries_allow = [\"C\"] {MARK}\n")), &["invalid country code"]),
    ];
    assert_all_refused_at_mark(&cases);
    let unknown = config_with("[risk]\nuntrusted_networks = [\"tor\"]\n", "", "");
    let error = Config::parse(&unknown, Path::new("/etc/stepgate/test.toml")).unwrap_err().to_string();
    assert!(error.contains("unknown network `tor`"), "{error}");
}

#[test]
fn a_when_expression_is_compiled_with_the_rule() {
    let rule = "[[apps.rules]]\npath = \"/finance/\"\nwhen = '''\nrequest.geo.country != \"CH\" &&\n  !(\"finance\" in user.groups)'''\npolicy = \"deny\"\n";
    let config = parse(&config_with("", "", rule)).unwrap_or_else(|e| panic!("{e}"));
    let when = config.apps[0].rules[0].conditions.when.as_ref().expect("the rule has its expression");
    assert_eq!(when.source(), "request.geo.country != \"CH\" &&\n  !(\"finance\" in user.groups)");
    assert!(when.uses_user());
    assert!(config.apps[0].rules[1].conditions.when.is_none(), "a rule without `when` has none");
}

/// A bad expression is reported at its `when` line (at the place of the
/// problem when the expression is written as is), naming the rule, quoting
/// the expression and saying where inside it the problem is.
#[test]
fn bad_when_expressions_are_refused_with_file_line_and_position() {
    let rule = |when: &str| config_with("", "", &format!("[[apps.rules]]\npath = \"/x/\"\nwhen = '{when}' {MARK}\npolicy = \"deny\"\n"));
    let escaped = config_with(
        "",
        "",
        &format!("[[apps.rules]]\npath = \"/x/\"\nwhen = \"request.path == \\\"/\\\" && nope(1)\" {MARK}\npolicy = \"deny\"\n"),
    );
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "syntax error",
            rule(r#"request.geo.country = "CH""#),
            &["the rule for path `/x/`", r#"invalid `when` expression `request.geo.country = "CH"`"#, "syntax error at line 1, column 21"],
        ),
        ("incomplete", rule("request.path == "), &["`request.path == `", "syntax error at line 1, column 17"]),
        ("unknown variable", rule(r#"req.path == "/""#), &["at line 1, column 1: unknown variable `req`"]),
        ("unknown field", rule(r#"request.geo.contry == "CH""#), &["column 13: `request.geo` has no field `contry`"]),
        ("unknown field as a key", rule(r#"request["geo"]["contry"] == "CH""#), &["column 16: `request[\"geo\"]` has no field `contry`"]),
        ("unknown function", rule(r#"request.path.beginsWith("/x")"#), &["unknown function `beginsWith`"]),
        ("with escapes", escaped.clone(), &["column 24: unknown function `nope`"]),
        (
            "not a string",
            config_with("", "", &format!("[[apps.rules]]\npath = \"/x/\"\nwhen = true {MARK}\npolicy = \"deny\"\n")),
            &["invalid type"],
        ),
    ];
    assert_all_refused_at_mark(&cases);

    // The column in the file is the problem's: `when = '` then 20 characters.
    let text = rule(r#"request.geo.country = "CH""#);
    let error = parse(&text).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{PATH}:{}:29:", marked_line(&text))), "{error}");
    // A string with escapes does not hold the expression as written: the
    // error points at its opening quote.
    let error = parse(&escaped).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{PATH}:{}:8:", marked_line(&escaped))), "{error}");

    // On the second line of a multi-line expression, in an inline rule:
    // the line and column of the problem in the file.
    let text = config_with(
        "",
        "",
        &format!(
            "rules = [\n  {{ path = \"/y/\", when = \"\"\"\nrequest.path == '/y/' &&\n  user.name ==\"\"\", policy = \"never\" }}, {MARK}\n]\n"
        ),
    )
    .replace("[[apps.rules]]\npath = \"/\"\npolicy = \"one_factor\"\n", "");
    let error = parse(&text).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{PATH}:{}:15:", marked_line(&text))), "{error}\n{text}");
    assert!(error.contains("syntax error at line 2, column 15"), "{error}");
}

#[test]
fn network_conditions_are_read_in_their_canonical_spelling() {
    let rule = "[[apps.rules]]\npath = \"/x/\"\nisps = [\"Telstra Internet\"]\nconnection_types = [\"cable/dsl\", \"CELLULAR\"]\n\
                user_types = [\"Hosting\"]\ndomains = [\"Example.COM.\"]\npolicy = \"always\"\n";
    let config = Config::parse(&config_with("", "", rule), Path::new("/etc/stepgate/test.toml")).unwrap_or_else(|e| panic!("{e}"));
    let c = &config.apps[0].rules[0].conditions;
    assert_eq!(c.isps, ["Telstra Internet"]);
    assert_eq!(c.connection_types.iter().map(|t| t.0).collect::<Vec<_>>(), ["Cable/DSL", "Cellular"]);
    assert_eq!(c.user_types.iter().map(|t| t.0).collect::<Vec<_>>(), ["hosting"]);
    assert_eq!(c.domains, ["example.com"]);

    let empty = config_with("", "", "[[apps.rules]]\npath = \"/x/\"\nisps = [\" \"]\npolicy = \"deny\"\n");
    let error = Config::parse(&empty, Path::new("/etc/stepgate/test.toml")).unwrap_err().to_string();
    assert!(error.contains("an empty name in `isps` or `domains` would never match"), "{error}");
}
