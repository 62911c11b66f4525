use super::*;

const PATH: &str = "/etc/stepgate/test.toml";

/// Marks the line an error must point at.
const MARK: &str = "# <-- error here";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(PATH))
}

/// The smallest valid configuration, with `server`, `top` and `app` lines
/// spliced into the server table, before it, and into the one app.
fn config_with(top: &str, server: &str, app: &str) -> String {
    format!(
        "users_file = \"users.toml\"\n{top}\n\
         [server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"data\"\n{server}\n\
         [[apps]]\nid = \"app\"\nhosts = [\"app.example.com\"]\nupstreams = [\"http://127.0.0.1:3000\"]\n{app}\n\
         [[apps.rules]]\npath = \"/\"\npolicy = \"one_factor\"\n"
    )
}

/// The 1-based lines that carry the marker: where the error may point.
fn marked_lines(text: &str) -> Vec<usize> {
    let lines: Vec<usize> = text.lines().enumerate().filter(|(_, line)| line.contains(MARK)).map(|(i, _)| i + 1).collect();
    assert!(!lines.is_empty(), "no marker in:\n{text}");
    lines
}

/// The one marked line.
fn marked_line(text: &str) -> usize {
    let lines = marked_lines(text);
    assert_eq!(lines.len(), 1, "one marker expected in:\n{text}");
    lines[0]
}

/// Checks that `text` is refused with an error that starts with the file
/// and a marked line and that mentions every one of `needles`.
fn refused_at_mark(name: &str, text: &str, needles: &[&str]) -> Result<(), String> {
    let lines = marked_lines(text);
    let error = match parse(text) {
        Ok(_) => return Err(format!("{name}: accepted, but should be refused:\n{text}")),
        Err(e) => e.to_string(),
    };
    let prefixes: Vec<String> = lines.iter().map(|line| format!("{PATH}:{line}:")).collect();
    if !prefixes.iter().any(|prefix| error.starts_with(prefix)) {
        let expected = prefixes.join("` or `");
        return Err(format!("{name}: error should start with `{expected}`, got `{error}`\n{text}"));
    }
    for needle in needles {
        if !error.contains(needle) {
            return Err(format!("{name}: error should mention `{needle}`, got `{error}`"));
        }
    }
    Ok(())
}

/// Runs every case and reports all the failures at once.
fn assert_all_refused_at_mark(cases: &[(&str, String, &[&str])]) {
    let failures: Vec<String> = cases.iter().filter_map(|(name, text, needles)| refused_at_mark(name, text, needles).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

fn assert_refused_at_mark(name: &str, text: &str, needles: &[&str]) {
    if let Err(failure) = refused_at_mark(name, text, needles) {
        panic!("{failure}");
    }
}

#[test]
fn the_example_file_parses() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let text = std::fs::read_to_string(file).expect("config/example.toml is readable");
    let config = Config::parse(&text, Path::new(file)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.apps.is_empty());
    for app in &config.apps {
        assert!(!app.rules.is_empty(), "app `{}` in the example has no rules", app.id());
    }
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
    assert_eq!(config.users_file.as_deref(), Some(dir.join("users.example.toml").as_path()));
    assert!(config.users_file.as_ref().is_some_and(|f| f.is_file()), "the example's users_file should exist");
    assert!(config.server.tls.is_none(), "tls stays commented out in the example");
    assert!(config.secrets.encryption_key_file.is_none(), "encryption_key_file stays commented out in the example");
}

#[test]
fn the_example_file_mentions_every_option() {
    let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"));
    let options = [
        "[server]",
        "listen",
        "h2c",
        "[server.tls]",
        "cert",
        "key",
        "trusted_proxies",
        "data_dir",
        "threads",
        "work_stealing",
        "max_header_bytes",
        "keepalive_timeout",
        "header_timeout",
        "max_connections",
        "[limits]",
        "password_failures",
        "code_failures",
        "window",
        "password_hashes",
        "password_queue",
        "users_file",
        "[secrets]",
        "encryption_key_file",
        "STEPGATE_ENCRYPTION_KEY",
        "[store]",
        "[cache]",
        "url_env",
        "pool_size",
        "connect_timeout",
        "key_prefix",
        "during_outage",
        "outage_grace",
        "timeouts",
        "[session]",
        "cookie_name",
        "cookie_domain",
        "inactivity",
        "absolute",
        "[totp]",
        "algorithm",
        "digits",
        "period",
        "skew",
        "self_enrollment",
        "[assertion]",
        "issuer",
        "lifetime",
        "[branding]",
        "product_name",
        "logo_url",
        "accent_color",
        "[logging]",
        "format",
        "level",
        "[[apps]]",
        "id",
        "hosts",
        "upstreams",
        "round-robin",
        "assertion_header",
        "legacy_headers",
        "[[apps.rules]]",
        "path",
        "glob",
        "regex",
        "methods",
        "policy",
        "when",
        "request.geo.country",
        "user.groups",
        "bypass",
        "one_factor",
        "two_factor",
        "deny",
    ];
    for option in options {
        assert!(text.contains(option), "config/example.toml does not document `{option}`");
    }
}

#[test]
fn the_example_users_file_parses_and_its_password_is_changeme() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/users.example.toml");
    let directory = crate::users::Directory::load(Path::new(file)).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("changeme"), "the example users file should say its password");
    let user = directory.authenticate("alice", "changeme").expect("alice signs in with `changeme`");
    assert_eq!(user.username, "alice");
}

#[test]
fn the_minimal_configuration_parses_with_the_defaults() {
    let config = parse(&config_with("", "", "")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert!(!config.server.h2c);
    assert!(config.server.tls.is_none());
    assert!(config.server.trusted_proxies.is_empty());
    assert_eq!(config.server.threads, 0);
    assert!(!config.server.work_stealing, "each worker thread keeps its own connections by default");
    assert!(config.secrets.encryption_key_file.is_none());
    assert_eq!(config.session.cookie_name.0, "stepgate_session");
    assert_eq!(config.session.cookie_domain, None);
    assert_eq!(config.session.inactivity, 30 * 60);
    assert_eq!(config.session.absolute, 12 * 3600);
    assert_eq!(config.totp.algorithm, TotpAlgorithm::SHA1);
    assert_eq!(config.totp.digits.0, 6);
    assert_eq!(config.totp.period.0, 30);
    assert_eq!(config.totp.skew.0, 1);
    assert!(config.totp.self_enrollment);
    assert_eq!(config.assertion.issuer, "stepgate");
    assert_eq!(config.assertion.lifetime, MAX_ASSERTION_LIFETIME_SECS);
    assert_eq!(config.branding.product_name, "stepgate");
    assert!(config.branding.logo_url.is_none());
    assert_eq!(config.branding.accent_color.0, "#2f5bea");
    assert_eq!(config.logging.format, LogFormat::Text);
    assert_eq!(config.logging.level.0, "info");
    assert_eq!(config.server.max_header_bytes.0, 32 * 1024);
    assert_eq!(config.server.keepalive_timeout, std::time::Duration::from_secs(75));
    assert_eq!(config.server.header_timeout, std::time::Duration::from_secs(60));
    assert_eq!(config.server.max_connections.0, 10_000);
    assert_eq!(config.limits.password_failures.0, 10);
    assert_eq!(config.limits.code_failures.0, 10);
    assert_eq!(config.limits.window, 300);
    assert_eq!(config.limits.password_hashes.0, 0, "one per core");
    assert_eq!(config.limits.password_queue.0, 16);
    let app = &config.apps[0];
    assert_eq!(app.id(), "app");
    assert_eq!(app.hosts[0].get_ref().0, "app.example.com");
    assert_eq!(app.upstreams[0].addr, "127.0.0.1:3000".parse().unwrap());
    assert!(!app.upstreams[0].tls);
    assert_eq!(app.assertion_header.0, "x-stepgate-assertion");
    assert!(!app.legacy_headers);
    assert_eq!(app.rules.len(), 1);
}

#[test]
fn every_option_is_read() {
    let text = r##"
users_file = "/srv/users.toml"

[server]
listen = "0.0.0.0:80"
h2c = true
data_dir = "/var/lib/stepgate"
threads = 4
work_stealing = true
trusted_proxies = ["10.0.0.0/8", "::1/128"]
max_header_bytes = 8192
keepalive_timeout = "30s"
header_timeout = "10s"
max_connections = 500

[server.tls]
listen = "[::]:443"
cert = "/etc/tls/cert.pem"
key = "/etc/tls/key.pem"

[secrets]
encryption_key_file = "/etc/stepgate/key"

[session]
cookie_name = "sg"
cookie_domain = "example.com"
inactivity = "15m"
absolute = "1d"

[totp]
algorithm = "SHA256"
digits = 8
period = 60
skew = 0
self_enrollment = false

[assertion]
issuer = "https://sso.example.com"
lifetime = "90s"

[limits]
password_failures = 5
code_failures = 3
window = "15m"
password_hashes = 4
password_queue = 32

[branding]
product_name = "Example SSO"
logo_url = "https://example.com/logo.png"
accent_color = "#abc"

[logging]
format = "json"
level = "stepgate=debug,warn"

[[apps]]
id = "wiki"
hosts = ["Wiki.Example.COM", "[::1]"]
upstreams = ["https://127.0.0.1:8443", "http://[::1]"]
assertion_header = "X-Identity"
legacy_headers = true

[[apps.rules]]
glob = "/files/**/*.pdf"
methods = ["get", "HEAD"]
policy = "two_factor"

[[apps.rules]]
regex = "^/api/v[0-9]+/"
policy = "deny"

[[apps.rules]]
path = "/"
policy = "bypass"
"##;
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.server.h2c);
    assert_eq!(config.server.threads, 4);
    assert!(config.server.work_stealing);
    assert_eq!(config.server.trusted_proxies.len(), 2);
    let tls = config.server.tls.as_ref().unwrap();
    assert_eq!(tls.listen, "[::]:443".parse().unwrap());
    assert_eq!(tls.cert, Path::new("/etc/tls/cert.pem"));
    assert_eq!(config.session.cookie_name.0, "sg");
    assert_eq!(config.session.cookie_domain.as_deref(), Some("example.com"));
    assert_eq!(config.session.inactivity, 15 * 60);
    assert_eq!(config.session.absolute, 24 * 3600);
    assert_eq!(config.totp.algorithm, TotpAlgorithm::SHA256);
    assert_eq!(config.totp.digits.0, 8);
    assert_eq!(config.totp.period.0, 60);
    assert_eq!(config.totp.skew.0, 0);
    assert!(!config.totp.self_enrollment);
    assert_eq!(config.assertion.issuer, "https://sso.example.com");
    assert_eq!(config.assertion.lifetime, 90);
    assert_eq!(config.branding.product_name, "Example SSO");
    assert_eq!(config.branding.logo_url.as_ref().unwrap().0, "https://example.com/logo.png");
    assert_eq!(config.branding.accent_color.0, "#abc");
    assert_eq!(config.logging.format, LogFormat::Json);
    assert_eq!(config.logging.level.0, "stepgate=debug,warn");
    assert_eq!(config.server.max_header_bytes.0, 8192);
    assert_eq!(config.server.keepalive_timeout, std::time::Duration::from_secs(30));
    assert_eq!(config.server.header_timeout, std::time::Duration::from_secs(10));
    assert_eq!(config.server.max_connections.0, 500);
    assert_eq!(config.limits.password_failures.0, 5);
    assert_eq!(config.limits.code_failures.0, 3);
    assert_eq!(config.limits.window, 15 * 60);
    assert_eq!(config.limits.password_hashes.0, 4);
    assert_eq!(config.limits.password_queue.0, 32);
    let app = &config.apps[0];
    assert_eq!(app.id(), "wiki");
    let hosts: Vec<&str> = app.hosts.iter().map(|h| h.get_ref().0.as_str()).collect();
    assert_eq!(hosts, ["wiki.example.com", "[::1]"], "host names are stored lower case");
    assert_eq!(app.upstreams.len(), 2);
    assert!(app.upstreams[0].tls);
    assert_eq!(app.upstreams[0].addr, "127.0.0.1:8443".parse().unwrap());
    assert!(!app.upstreams[1].tls);
    assert_eq!(app.upstreams[1].addr, "[::1]:80".parse().unwrap());
    assert_eq!(app.assertion_header.0, "x-identity", "header names are stored lower case");
    assert!(app.legacy_headers);
    assert_eq!(app.rules.len(), 3);
    assert!(matches!(app.rules[0].pattern, Some(PathPattern::Glob(_))));
    assert_eq!(app.rules[0].methods, [Method(http::Method::GET), Method(http::Method::HEAD)]);
    assert_eq!(app.rules[0].policy, Policy::Always, "two_factor is an alias of always");
    assert!(matches!(app.rules[1].pattern, Some(PathPattern::Regex(_))));
    assert!(app.rules[1].methods.is_empty());
    assert_eq!(app.rules[1].policy, Policy::Deny);
    assert!(matches!(app.rules[2].pattern, Some(PathPattern::Prefix(ref p)) if p == "/"));
    assert_eq!(app.rules[2].policy, Policy::Bypass);
}

#[test]
fn relative_paths_are_resolved_against_the_directory_of_the_file() {
    let text = config_with(
        "[secrets]\nencryption_key_file = \"keys/master.key\"\n",
        "[server.tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"tls/cert.pem\"\nkey = \"../tls/key.pem\"\n",
        "",
    );
    // `[secrets]` spliced before `[server]` captures nothing else: the
    // users_file line comes first.
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let dir = Path::new("/etc/stepgate");
    assert_eq!(config.users_file.as_deref(), Some(dir.join("users.toml").as_path()));
    assert_eq!(config.server.data_dir, dir.join("data"));
    let tls = config.server.tls.as_ref().unwrap();
    assert_eq!(tls.cert, dir.join("tls/cert.pem"));
    assert_eq!(tls.key, dir.join("../tls/key.pem"));
    assert_eq!(config.secrets.encryption_key_file.as_deref(), Some(dir.join("keys/master.key").as_path()));
}

#[test]
fn absolute_paths_are_kept() {
    let text = "users_file = \"/srv/users.toml\"\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"/var/lib/stepgate\"\n\
                [[apps]]\nid = \"a\"\nhosts = [\"a\"]\nupstreams = [\"http://127.0.0.1:1\"]\n";
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.users_file.as_deref(), Some(Path::new("/srv/users.toml")));
    assert_eq!(config.server.data_dir, Path::new("/var/lib/stepgate"));
}

#[test]
fn a_file_in_the_working_directory_resolves_against_it() {
    let text = config_with("", "", "");
    let config = Config::parse(&text, Path::new("stepgate.toml")).unwrap_or_else(|e| panic!("{e}"));
    // `Path::new("stepgate.toml").parent()` is `""`: paths stay relative to
    // the working directory, which is the file's directory.
    assert_eq!(config.users_file.as_deref(), Some(Path::new("users.toml")));
    assert_eq!(config.server.data_dir, Path::new("data"));
}

/// Bad values, each refused with the file, the marked line and a message
/// that says what is wrong.
#[test]
fn bad_values_are_refused_with_file_and_line() {
    let cases: Vec<(&str, String, &[&str])> = vec![
        // Unknown keys, at every level.
        ("unknown top-level key", config_with(&format!("colour = \"red\" {MARK}"), "", ""), &["unknown field", "colour"]),
        ("unknown server key", config_with("", &format!("port = 80 {MARK}"), ""), &["unknown field", "port"]),
        ("unknown session key", config_with(&format!("[session]\ntimeout = \"5m\" {MARK}"), "", ""), &["unknown field", "timeout"]),
        ("unknown app key", config_with("", "", &format!("upstream = \"http://127.0.0.1:1\" {MARK}")), &["unknown field", "upstream"]),
        (
            "unknown tls key",
            config_with("", &format!("[server.tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"c\"\nkey = \"k\"\nchain = \"x\" {MARK}"), ""),
            &["unknown field", "chain"],
        ),
        // Server.
        (
            "bad listen address",
            config_with("", "", "").replace("listen = \"127.0.0.1:8080\"", &format!("listen = \"localhost\" {MARK}")),
            &["socket address"],
        ),
        ("bad CIDR", config_with("", &format!("trusted_proxies = [\"10.0.0.0/33\"] {MARK}"), ""), &["invalid IP address"]),
        ("not an address", config_with("", &format!("trusted_proxies = [\"proxy.local\"] {MARK}"), ""), &["invalid IP address"]),
        ("trust every IPv4 address", config_with("", &format!("trusted_proxies = [\"0.0.0.0/0\"] {MARK}"), ""), &["trusted_proxies", "/0"]),
        (
            "trust every IPv6 address",
            config_with("", &format!("trusted_proxies = [\"10.0.0.1/32\", \"::/0\"] {MARK}"), ""),
            &["trusted_proxies", "/0"],
        ),
        ("negative threads", config_with("", &format!("threads = -1 {MARK}"), ""), &["-1"]),
        // Session.
        (
            "bad duration",
            config_with(&format!("[session]\ninactivity = \"30 minutes please\" {MARK}"), "", ""),
            &["invalid duration", "30 minutes please"],
        ),
        ("duration without unit", config_with(&format!("[session]\nabsolute = \"12\" {MARK}"), "", ""), &["invalid duration", "`12`"]),
        ("zero duration", config_with(&format!("[session]\ninactivity = \"0s\" {MARK}"), "", ""), &["between 1s and 366d"]),
        ("duration over a year", config_with(&format!("[session]\nabsolute = \"400d\" {MARK}"), "", ""), &["between 1s and 366d"]),
        ("duration as a number", config_with(&format!("[session]\ninactivity = 1800 {MARK}"), "", ""), &["string"]),
        (
            "bad cookie name",
            config_with(&format!("[session]\ncookie_name = \"my session\" {MARK}"), "", ""),
            &["invalid cookie name", "my session"],
        ),
        // TOTP.
        ("TOTP digits 9", config_with(&format!("[totp]\ndigits = 9 {MARK}"), "", ""), &["totp.digits", "between 6 and 8", "not 9"]),
        ("TOTP digits 5", config_with(&format!("[totp]\ndigits = 5 {MARK}"), "", ""), &["totp.digits", "not 5"]),
        ("TOTP period 10", config_with(&format!("[totp]\nperiod = 10 {MARK}"), "", ""), &["totp.period", "not 10"]),
        ("TOTP skew 3", config_with(&format!("[totp]\nskew = 3 {MARK}"), "", ""), &["totp.skew", "not 3"]),
        ("TOTP algorithm", config_with(&format!("[totp]\nalgorithm = \"MD5\" {MARK}"), "", ""), &["MD5"]),
        // Assertion.
        (
            "lifetime over 5 minutes",
            config_with(&format!("[assertion]\nlifetime = \"6m\" {MARK}"), "", ""),
            &["assertion.lifetime", "6m", "5m"],
        ),
        ("lifetime of an hour", config_with(&format!("[assertion]\nlifetime = \"1h\" {MARK}"), "", ""), &["assertion.lifetime", "1h"]),
        (
            "lifetime under 30 seconds",
            config_with(&format!("[assertion]\nlifetime = \"10s\" {MARK}"), "", ""),
            &["assertion.lifetime", "30s"],
        ),
        // Branding and logging.
        ("colour name", config_with(&format!("[branding]\naccent_color = \"red\" {MARK}"), "", ""), &["invalid colour", "red"]),
        ("colour with CSS", config_with(&format!("[branding]\naccent_color = \"#fff;}}body{{x:y\" {MARK}"), "", ""), &["invalid colour"]),
        ("colour of 4 digits", config_with(&format!("[branding]\naccent_color = \"#abcd\" {MARK}"), "", ""), &["invalid colour"]),
        ("http logo", config_with(&format!("[branding]\nlogo_url = \"http://example.com/l.png\" {MARK}"), "", ""), &["https"]),
        ("relative logo", config_with(&format!("[branding]\nlogo_url = \"/logo.png\" {MARK}"), "", ""), &["https"]),
        ("log format", config_with(&format!("[logging]\nformat = \"xml\" {MARK}"), "", ""), &["xml"]),
        (
            "log level",
            config_with(&format!("[logging]\nlevel = \"stepgate=loud\" {MARK}"), "", ""),
            &["invalid logging.level", "stepgate=loud"],
        ),
        // Limits.
        (
            "header limit too small",
            config_with("", &format!("max_header_bytes = 1024 {MARK}"), ""),
            &["server.max_header_bytes", "not 1024"],
        ),
        ("header limit too large", config_with("", &format!("max_header_bytes = 2097152 {MARK}"), ""), &["server.max_header_bytes"]),
        ("keep-alive of a day", config_with("", &format!("keepalive_timeout = \"1d\" {MARK}"), ""), &["connection timeout", "1d", "1h"]),
        ("header timeout of zero", config_with("", &format!("header_timeout = \"0s\" {MARK}"), ""), &["0s", "1s"]),
        ("header timeout as a number", config_with("", &format!("header_timeout = 60 {MARK}"), ""), &["string"]),
        ("no connections", config_with("", &format!("max_connections = 0 {MARK}"), ""), &["server.max_connections", "not 0"]),
        ("no password failures allowed", config_with(&format!("[limits]\npassword_failures = 0 {MARK}"), "", ""), &["limits", "not 0"]),
        ("too many code failures allowed", config_with(&format!("[limits]\ncode_failures = 5000 {MARK}"), "", ""), &["limits", "not 5000"]),
        (
            "too many password hashes",
            config_with(&format!("[limits]\npassword_hashes = 65 {MARK}"), "", ""),
            &["limits.password_hashes", "not 65"],
        ),
        (
            "negative password queue",
            config_with(&format!("[limits]\npassword_queue = -1 {MARK}"), "", ""),
            &["limits.password_queue", "not -1"],
        ),
        ("bad limits window", config_with(&format!("[limits]\nwindow = \"soon\" {MARK}"), "", ""), &["invalid duration", "soon"]),
        ("unknown limits key", config_with(&format!("[limits]\nattempts = 3 {MARK}"), "", ""), &["unknown field", "attempts"]),
        // Apps.
        ("bad app id", config_with("", "", "").replace("id = \"app\"", &format!("id = \"my app\" {MARK}")), &["invalid app id", "my app"]),
        ("empty app id", config_with("", "", "").replace("id = \"app\"", &format!("id = \"\" {MARK}")), &["invalid app id"]),
        (
            "host with scheme",
            config_with("", "", "").replace("hosts = [\"app.example.com\"]", &format!("hosts = [\"https://app.example.com\"] {MARK}")),
            &["invalid host name"],
        ),
        (
            "host with port",
            config_with("", "", "").replace("hosts = [\"app.example.com\"]", &format!("hosts = [\"app.example.com:8080\"] {MARK}")),
            &["invalid host name"],
        ),
        (
            "no hosts",
            config_with("", "", "").replace("id = \"app\"", &format!("id = \"app\" {MARK}")).replace("[\"app.example.com\"]", "[]"),
            &["app", "no hosts"],
        ),
        (
            "no upstreams",
            config_with("", "", "").replace("id = \"app\"", &format!("id = \"app\" {MARK}")).replace("[\"http://127.0.0.1:3000\"]", "[]"),
            &["app", "no upstreams"],
        ),
        (
            "upstream with a path",
            config_with("", "", "")
                .replace("upstreams = [\"http://127.0.0.1:3000\"]", &format!("upstreams = [\"http://127.0.0.1:3000/app\"] {MARK}")),
            &["invalid upstream", "/app"],
        ),
        (
            "upstream with a query",
            config_with("", "", "")
                .replace("upstreams = [\"http://127.0.0.1:3000\"]", &format!("upstreams = [\"http://127.0.0.1:3000?x=1\"] {MARK}")),
            &["invalid upstream"],
        ),
        (
            "upstream with credentials",
            config_with("", "", "")
                .replace("upstreams = [\"http://127.0.0.1:3000\"]", &format!("upstreams = [\"http://u:p@127.0.0.1:3000\"] {MARK}")),
            &["invalid upstream"],
        ),
        (
            "upstream without scheme",
            config_with("", "", "").replace("upstreams = [\"http://127.0.0.1:3000\"]", &format!("upstreams = [\"127.0.0.1:3000\"] {MARK}")),
            &["upstream", "127.0.0.1:3000"],
        ),
        (
            "upstream with another scheme",
            config_with("", "", "")
                .replace("upstreams = [\"http://127.0.0.1:3000\"]", &format!("upstreams = [\"ftp://127.0.0.1:21\"] {MARK}")),
            &["invalid upstream", "ftp"],
        ),
        (
            "invalid header name",
            config_with("", "", &format!("assertion_header = \"X Assertion\" {MARK}")),
            &["invalid header name", "X Assertion"],
        ),
        ("header name with a colon", config_with("", "", &format!("assertion_header = \"x-assertion:\" {MARK}")), &["invalid header name"]),
        ("legacy_headers not a boolean", config_with("", "", &format!("legacy_headers = \"yes\" {MARK}")), &["yes"]),
    ];
    assert_all_refused_at_mark(&cases);
}

/// Rules: the offending value or the rule itself is reported.
#[test]
fn bad_rules_are_refused_with_file_and_line() {
    let app = "[[apps]]\nid = \"app\"\nhosts = [\"app.example.com\"]\nupstreams = [\"http://127.0.0.1:3000\"]\n";
    let head = format!("users_file = \"u.toml\"\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"d\"\n{app}");
    // The bad rule is the second one, so that an error placed at the start
    // of the rules (the first rule) is caught.
    let rule = |body: &str| format!("{head}\n[[apps.rules]]\npath = \"/ok/\"\npolicy = \"bypass\"\n\n[[apps.rules]]\n{body}\n");
    // For problems of a whole rule, or of its pattern, the rule's own
    // `[[apps.rules]]` line will do as well as the offending key's.
    let rule_or_header =
        |body: &str| format!("{head}\n[[apps.rules]]\npath = \"/ok/\"\npolicy = \"bypass\"\n\n[[apps.rules]] {MARK}\n{body}\n");
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("bad regex", rule_or_header(&format!("regex = \"^/api/(v1\" {MARK}\npolicy = \"deny\"")), &["invalid regex", "^/api/(v1"]),
        ("bad glob", rule_or_header(&format!("glob = \"/files/[a-\" {MARK}\npolicy = \"deny\"")), &["invalid glob"]),
        ("relative glob", rule_or_header(&format!("glob = \"files/*\" {MARK}\npolicy = \"deny\"")), &["glob", "must start with `/`"]),
        ("relative path", rule_or_header(&format!("path = \"admin/\" {MARK}\npolicy = \"deny\"")), &["path", "must start with `/`"]),
        (
            "bad method",
            rule(&format!("path = \"/\"\nmethods = [\"GET\", \"FETCH ME\"] {MARK}\npolicy = \"deny\"")),
            &["invalid HTTP method", "FETCH ME"],
        ),
        (
            "method with digits",
            rule(&format!("path = \"/\"\nmethods = [\"G3T\"] {MARK}\npolicy = \"deny\"")),
            &["invalid HTTP method", "G3T"],
        ),
        ("bad policy", rule(&format!("path = \"/\"\npolicy = \"allow\" {MARK}")), &["allow"]),
        ("unknown rule key", rule(&format!("path = \"/\"\npolicy = \"deny\"\nhost = \"x\" {MARK}")), &["host"]),
        (
            "path and regex",
            rule_or_header(&format!("path = \"/\" {MARK}\nregex = \"^/\"\npolicy = \"deny\"")),
            &["at most one of `path`, `glob` or `regex`"],
        ),
        (
            "path and glob",
            rule_or_header(&format!("path = \"/\" {MARK}\nglob = \"/*\"\npolicy = \"deny\"")),
            &["at most one of `path`, `glob` or `regex`"],
        ),
        ("unknown network", rule_or_header(&format!("networks = [\"nowhere\"] {MARK}\npolicy = \"deny\"")), &["unknown network `nowhere`"]),
        (
            "max_age without a second factor",
            rule_or_header(&format!("max_age = \"5m\" {MARK}\npolicy = \"never\"")),
            &["`max_age` needs policy"],
        ),
        ("no policy", rule_or_header("path = \"/\""), &["policy"]),
    ];
    assert_all_refused_at_mark(&cases);
}

#[test]
fn duplicates_are_refused_at_the_second_occurrence() {
    let head = "users_file = \"u.toml\"\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"d\"\n";
    let duplicate_id = format!(
        "{head}\n[[apps]]\nid = \"wiki\"\nhosts = [\"a.example.com\"]\nupstreams = [\"http://127.0.0.1:1\"]\n\
         \n[[apps]]\nid = \"wiki\" {MARK}\nhosts = [\"b.example.com\"]\nupstreams = [\"http://127.0.0.1:2\"]\n"
    );
    assert_refused_at_mark("duplicate app id", &duplicate_id, &["duplicate app id", "wiki"]);
    let duplicate_host = format!(
        "{head}\n[[apps]]\nid = \"a\"\nhosts = [\"a.example.com\"]\nupstreams = [\"http://127.0.0.1:1\"]\n\
         \n[[apps]]\nid = \"b\"\nhosts = [\"b.example.com\",\n  \"A.example.com\"] {MARK}\nupstreams = [\"http://127.0.0.1:2\"]\n"
    );
    assert_refused_at_mark("duplicate host across apps (case-insensitive)", &duplicate_host, &["a.example.com", "two apps"]);
    let same_app = format!(
        "{head}\n[[apps]]\nid = \"a\"\nhosts = [\"a.example.com\",\n \"a.example.com\"] {MARK}\nupstreams = [\"http://127.0.0.1:1\"]\n"
    );
    assert_refused_at_mark("duplicate host within an app", &same_app, &["a.example.com"]);
}

#[test]
fn missing_required_settings_are_refused() {
    let cases = [
        ("server", "users_file = \"u\"\n[[apps]]\nid = \"a\"\nhosts = [\"a\"]\nupstreams = [\"http://127.0.0.1:1\"]\n"),
        ("listen", "users_file = \"u\"\n[server]\ndata_dir = \"d\"\n[[apps]]\nid = \"a\"\nhosts = [\"a\"]\nupstreams = [\"http://127.0.0.1:1\"]\n"),
        ("data_dir", "users_file = \"u\"\n[server]\nlisten = \"127.0.0.1:8080\"\n[[apps]]\nid = \"a\"\nhosts = [\"a\"]\nupstreams = [\"http://127.0.0.1:1\"]\n"),
        ("cert", "users_file = \"u\"\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"d\"\n[server.tls]\nlisten = \"127.0.0.1:8443\"\nkey = \"k\"\n[[apps]]\nid = \"a\"\nhosts = [\"a\"]\nupstreams = [\"http://127.0.0.1:1\"]\n"),
    ];
    let no_users = "[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"d\"\n[[apps]]\nid = \"a\"\nhosts = [\"a\"]\nupstreams = [\"http://127.0.0.1:1\"]\n[[apps.rules]]\npath = \"/\"\npolicy = \"never\"\n";
    assert!(parse(no_users).unwrap_err().to_string().contains("users_file is required"));
    for (missing, text) in cases {
        let error = parse(text).err().unwrap_or_else(|| panic!("accepted without `{missing}`")).to_string();
        assert!(error.starts_with(PATH), "{error}");
        assert!(error.contains(&format!("missing field `{missing}`")), "without `{missing}`: {error}");
    }
}

#[test]
fn a_configuration_without_apps_is_refused() {
    let text = "users_file = \"u\"\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"d\"\n";
    let error = parse(text).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{PATH}:")), "{error}");
    assert!(error.contains("no [[apps]]"), "{error}");
}

#[test]
fn broken_toml_is_reported_with_its_line() {
    let cases = [
        // The parser notices the missing `]` where the next key starts.
        ("unclosed array", format!("{}\n[[apps.rules]]\nmethods = [\"GET\",\npolicy = \"deny\" {MARK}\n", config_with("", "", ""))),
        ("unclosed table header", format!("users_file = \"u\"\n[server {MARK}\nlisten = \"127.0.0.1:8080\"\n")),
        ("unclosed string", format!("users_file = \"u\"\n[server]\nlisten = \"127.0.0.1:8080 {MARK}\ndata_dir = \"d\"\n")),
        ("missing value", format!("users_file = \"u\"\n[server]\nlisten = {MARK}\n")),
        ("key defined twice", format!("users_file = \"u\"\n[server]\nlisten = \"127.0.0.1:8080\"\nlisten = \"127.0.0.1:8081\" {MARK}\n")),
        ("table defined twice", format!("{}[server] {MARK}\n", config_with("", "", ""))),
    ];
    for (name, text) in &cases {
        let line = marked_line(text);
        let error = parse(text).err().unwrap_or_else(|| panic!("{name}: accepted:\n{text}")).to_string();
        let prefix = format!("{PATH}:{line}:");
        assert!(error.starts_with(&prefix), "{name}: error should start with `{prefix}`, got `{error}`");
        assert!(error.len() > prefix.len() + 5, "{name}: error should say what is wrong: `{error}`");
    }
}

#[test]
fn errors_give_the_column_too() {
    let text = config_with("", "", "assertion_header = \"bad header\"");
    let error = parse(&text).unwrap_err();
    match error {
        ConfigError::Invalid { path, line, column, .. } => {
            assert_eq!(path, PATH);
            assert_eq!(line, marked_line(&text.replace("assertion_header", MARK)));
            assert_eq!(column, "assertion_header = ".len() + 1);
        }
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

#[test]
fn load_names_the_file_it_cannot_read() {
    let missing = Path::new("/nonexistent/stepgate/config.toml");
    let error = Config::load(missing).unwrap_err().to_string();
    assert!(error.starts_with("/nonexistent/stepgate/config.toml: cannot read"), "{error}");
}

#[test]
fn line_and_column_count_from_one() {
    let text = "ab\ncd\n\nef";
    assert_eq!(line_and_column(text, 0), (1, 1));
    assert_eq!(line_and_column(text, 1), (1, 2));
    assert_eq!(line_and_column(text, 3), (2, 1));
    assert_eq!(line_and_column(text, 6), (3, 1));
    assert_eq!(line_and_column(text, 8), (4, 2));
}

mod conditions;
mod sections;

#[test]
fn the_admin_listener_is_its_own_and_needs_tls_off_loopback() {
    let admin = |section: &str| parse(&config_with(&format!("[admin]\n{section}\n"), "", ""));
    let config = admin("listen = \"127.0.0.1:9443\"").unwrap();
    assert_eq!(config.admin.unwrap().listen.port(), 9443);
    assert!(parse(&config_with("", "", "")).unwrap().admin.is_none(), "off when absent");
    let refusals = [
        ("listen = \"127.0.0.1:8080\"", "gateway listener"),
        ("listen = \"0.0.0.0:8080\"", "gateway listener"),
        ("listen = \"192.0.2.1:9443\"", "not a loopback address"),
        ("listen = \"127.0.0.1:9443\"\nunknown = 1", "unknown field"),
        ("listen = \"127.0.0.1:9443\"\nmetrics_listen = \"0.0.0.0:9464\"", "must be a loopback address"),
    ];
    for (section, needle) in refusals {
        let error = admin(section).map(|_| ()).unwrap_err().to_string();
        assert!(error.contains(needle), "{section}: {error}");
    }
    let remote = admin("listen = \"192.0.2.1:9443\"\nallow_plaintext = true").unwrap();
    assert!(remote.admin.unwrap().allow_plaintext);
    let tls = admin("listen = \"192.0.2.1:9443\"\ntls = { cert = \"admin.pem\", key = \"admin-key.pem\" }").unwrap();
    assert_eq!(tls.admin.unwrap().tls.unwrap().cert, Path::new("/etc/stepgate/admin.pem"), "relative to the file");
}

#[test]
fn the_authorizers_listener_is_its_own() {
    let server = |line: &str| parse(&config_with("", line, ""));
    assert_eq!(server("authz_listen = \"127.0.0.1:8081\"").unwrap().server.authz_listen.map(|a| a.port()), Some(8081));
    assert!(server("").unwrap().server.authz_listen.is_none(), "none when absent");
    for taken in ["127.0.0.1:8080", "0.0.0.0:8080"] {
        let error = server(&format!("authz_listen = \"{taken}\"")).map(|_| ()).unwrap_err().to_string();
        assert!(error.contains("is a public listener"), "{taken}: {error}");
    }
    let admin_there = parse(&config_with("[admin]\nlisten = \"127.0.0.1:8081\"\n", "authz_listen = \"127.0.0.1:8081\"", ""));
    assert!(admin_there.map(|_| ()).unwrap_err().to_string().contains("gateway listener"));
}

#[test]
fn audit_retention_defaults_to_ninety_days() {
    assert_eq!(parse(&config_with("", "", "")).unwrap().audit.retention, 90 * 24 * 3600);
    assert_eq!(parse(&config_with("[audit]\nretention = \"30d\"\n", "", "")).unwrap().audit.retention, 30 * 24 * 3600);
}
