//! The webauthn and server sections.

use super::*;

#[test]
fn webauthn_relying_parties_are_checked() {
    let origins_alone = config_with("", "", "webauthn = { origins = [\"https://app.example.com\"] }");
    assert!(parse(&origins_alone).unwrap_err().to_string().contains("needs webauthn.rp_id"));
    let foreign = config_with("", "", "webauthn = { rp_id = \"example.com\", origins = [\"https://evil.test\"] }");
    assert!(parse(&foreign).unwrap_err().to_string().contains("not an http(s) origin under `example.com`"));
    let parent = config_with("", "", "webauthn = { rp_id = \"example.com\" }");
    let config = parse(&parent).unwrap();
    assert_eq!(config.apps[0].rp_id("app.example.com"), Some("example.com"));
    assert_eq!(config.apps[0].rp_id("other.test"), None);
    let bad_aaguid = config_with("[webauthn]\naaguids = [\"not-a-uuid\"]\n", "", "");
    assert!(parse(&bad_aaguid).unwrap_err().to_string().contains("invalid AAGUID"));
    let factors = config_with("", "", "").replace("policy = \"one_factor\"", "policy = \"one_factor\"\nfactors = [\"webauthn\"]");
    assert!(parse(&factors).unwrap_err().to_string().contains("`factors` needs policy"));
    let unknown = config_with("", "", "").replace("policy = \"one_factor\"", "policy = \"always\"\nfactors = [\"fax\"]");
    assert!(parse(&unknown).unwrap_err().to_string().contains("unknown factor `fax`"));
    let phone = config_with("", "", "").replace("policy = \"one_factor\"", "policy = \"always\"\nfactors = [\"phone\", \"email\"]");
    assert!(parse(&phone).is_ok(), "sent codes can be named in rules");
}

#[test]
fn shutdown_grace_and_upgrade_socket_have_defaults_and_bounds() {
    let config = parse(&config_with("", "", "")).unwrap();
    assert_eq!(config.server.shutdown_grace, std::time::Duration::from_secs(30));
    assert_eq!(config.server.upgrade_socket, Path::new("/run/stepgate/upgrade.sock"));

    let set = config_with("", "shutdown_grace = \"2m\"\nupgrade_socket = \"/run/gw/handover.sock\"", "");
    let config = parse(&set).unwrap();
    assert_eq!(config.server.shutdown_grace, std::time::Duration::from_secs(120));
    assert_eq!(config.server.upgrade_socket, Path::new("/run/gw/handover.sock"), "left as written, not under the config's directory");

    let long = format!("/run/{}/upgrade.sock", "x".repeat(100));
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("grace of a day", config_with("", &format!("shutdown_grace = \"1d\" {MARK}"), ""), &["server.shutdown_grace", "1d", "1h"]),
        ("grace of zero", config_with("", &format!("shutdown_grace = \"0s\" {MARK}"), ""), &["0s", "1s"]),
        (
            "relative socket",
            config_with("", &format!("upgrade_socket = \"run/upgrade.sock\" {MARK}"), ""),
            &["server.upgrade_socket", "absolute"],
        ),
        ("the root as socket", config_with("", &format!("upgrade_socket = \"/\" {MARK}"), ""), &["absolute"]),
        ("socket path too long", config_with("", &format!("upgrade_socket = \"{long}\" {MARK}"), ""), &["107 bytes"]),
    ];
    assert_all_refused_at_mark(&cases);
}

#[test]
fn the_example_file_documents_shutdown_and_upgrades() {
    let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"));
    for option in ["shutdown_grace = \"30s\"", "upgrade_socket = \"/run/stepgate/upgrade.sock\""] {
        assert!(text.contains(option), "config/example.toml should document {option}");
    }
}

#[test]
fn an_app_is_protected_inline_by_forward_auth_or_both() {
    let parse = |text: &str| Config::parse(text, Path::new("/etc/stepgate/test.toml"));
    let inline = parse(&config_with("", "", "")).unwrap();
    assert_eq!(inline.apps[0].mode, AppMode::Inline);
    assert!(inline.apps[0].mode.inline() && !inline.apps[0].mode.forward_auth());
    let both = parse(&config_with("", "", "mode = \"both\"")).unwrap();
    assert!(both.apps[0].mode.inline() && both.apps[0].mode.forward_auth());

    let without_upstreams = config_with("", "", "mode = \"forward_auth\"").replace("upstreams = [\"http://127.0.0.1:3000\"]\n", "");
    let forward_only = parse(&without_upstreams).unwrap();
    assert_eq!(forward_only.apps[0].mode, AppMode::ForwardAuth);
    assert!(forward_only.apps[0].upstreams.is_empty());

    let error = parse(&config_with("", "", "mode = \"forward_auth\"")).unwrap_err().to_string();
    assert!(error.contains("app `app`: mode `forward_auth` takes no upstreams"), "{error}");
    let error = parse(&config_with("", "", "").replace("upstreams = [\"http://127.0.0.1:3000\"]\n", "")).unwrap_err().to_string();
    assert!(error.contains("app `app` has no upstreams"), "{error}");
    let error = parse(&config_with("", "", "mode = \"sidecar\"")).unwrap_err().to_string();
    assert!(error.contains("unknown variant `sidecar`"), "{error}");
}

#[test]
fn a_central_portal_is_an_origin_an_app_serves_under_the_cookie_domain() {
    let parse = |session: &str| {
        let text =
            config_with(&format!("[session]\n{session}"), "", "").replace("app.example.com\"]", "app.example.com\", \"auth.example.com\"]");
        Config::parse(&text, Path::new("/etc/stepgate/test.toml")).map_err(|e| e.to_string())
    };
    let config = parse("cookie_domain = \"example.com\"\nportal_url = \"https://auth.example.com\"").unwrap();
    assert_eq!(config.session.portal_url.as_deref(), Some("https://auth.example.com"));
    let refused = [
        ("portal_url = \"https://auth.example.com\"", "needs session.cookie_domain"),
        ("cookie_domain = \"example.com\"\nportal_url = \"https://auth.example.com/login\"", "must be an http(s) origin"),
        ("cookie_domain = \"example.com\"\nportal_url = \"ftp://auth.example.com\"", "must be an http(s) origin"),
        ("cookie_domain = \"example.org\"\nportal_url = \"https://auth.example.com\"", "is not under session.cookie_domain"),
        ("cookie_domain = \"example.com\"\nportal_url = \"https://login.example.com\"", "no app serves host `login.example.com`"),
    ];
    for (session, expected) in refused {
        let error = parse(session).unwrap_err();
        assert!(error.contains(expected), "{session}: {error}");
    }
}

#[test]
fn cookie_domains_match_as_browsers_match_them() {
    for (host, domain, matches) in [
        ("example.com", "example.com", true),
        ("auth.example.com", "example.com", true),
        ("auth.example.com", ".example.com", true),
        ("AUTH.Example.com", "example.com", true),
        ("badexample.com", "example.com", false),
        ("example.com.evil", "example.com", false),
        ("com", "example.com", false),
    ] {
        assert_eq!(domain_matches(host, domain), matches, "{host} / {domain}");
    }
}

#[test]
fn sent_code_channels_are_checked() {
    let error = |top: &str| parse(&config_with(top, "", "")).unwrap_err().to_string();
    let webhook = "[sms.webhook]\nurl = \"https://sms.example.com/send\"\nsecret_env = \"SMS_SECRET\"\n";
    assert!(error(&format!("[sms]\ncountries = []\n{webhook}")).contains("list the countries"));
    assert!(error(&format!("[sms]\ncountries = [\"XX\"]\n{webhook}")).contains("`XX` is not an ISO 3166 country code"));
    assert!(error("[voice]\ncountries = [\"CH\"]\n").contains("[voice] needs one provider"));
    let both = format!(
        "[sms]\ncountries = [\"CH\"]\n{webhook}[sms.twilio]\naccount_sid = \"AC1\"\nauth_token_env = \"T\"\nfrom = \"+15005550006\"\n"
    );
    assert!(error(&both).contains("[sms] needs one provider"));
    let no_secret = "[sms]\ncountries = [\"CH\"]\n[sms.webhook]\nurl = \"https://sms.example.com/send\"\n";
    assert!(error(no_secret).contains("set secret_env or secret_file"));
    let plain = "[sms]\ncountries = [\"CH\"]\n[sms.webhook]\nurl = \"http://sms.example.com/send\"\nsecret_env = \"S\"\n";
    assert!(error(plain).contains("must be an https URL"));
    assert!(parse(&config_with(&plain.replace("sms.example.com", "127.0.0.1:9000"), "", "")).is_ok(), "http to this machine");
    let config = parse(&config_with(&format!("[sms]\ncountries = [\"CH\", \"DE\"]\n{webhook}"), "", "")).unwrap();
    assert_eq!(config.sms.unwrap().countries, ["CH", "DE"]);

    let email = |extra: &str| format!("[email]\nserver = \"smtp.example.com\"\nsender = \"Security <security@example.com>\"\n{extra}");
    assert!(error(&email("tls = \"none\"")).contains("only for a relay on localhost"));
    assert!(error(&email("username = \"gw\"")).contains("set password_env or password_file"));
    assert!(error(&email("password_env = \"P\"")).contains("a password needs a username"));
    let bad_sender = "[email]\nserver = \"smtp.example.com\"\nsender = \"not an address\"\n";
    assert!(error(bad_sender).contains("email.sender"));
    let config = parse(&config_with(&email(""), "", "")).unwrap();
    assert_eq!(config.email.as_ref().unwrap().port(), 587, "STARTTLS by default");
    assert!(!config.email.unwrap().alone, "email is not a factor alone by default");

    assert!(error("[codes]\nattempts = 0\n").contains("codes.attempts"));
    assert!(error("[codes]\nper_user = { hour = 5, day = 2 }\n").contains("codes.per_user"));
    assert!(error("[codes]\nlifetime = \"2h\"\n").contains("codes.lifetime"));
}

#[test]
fn an_ldap_directory_is_checked() {
    let ldap = |extra: &str| {
        format!(
            "[directory]\nkind = \"ldap\"\n[directory.ldap]\nurl = \"ldaps://ldap.example.com\"\nbind_dn = \"cn=svc,dc=example,dc=com\"\n\
             bind_password_env = \"LDAP_PASSWORD\"\nbase_dn = \"ou=people,dc=example,dc=com\"\n{extra}"
        )
    };
    let error = |top: &str| parse(&config_with(top, "", "")).unwrap_err().to_string();
    let config = parse(&config_with(&ldap(""), "", "")).unwrap();
    let directory = config.directory.ldap.unwrap();
    assert_eq!((directory.user_filter.as_str(), directory.recheck, directory.pool), ("(uid={username})", 300, 4));
    assert!(error(&ldap("").replace("ldaps://", "ldap://")).contains("clear text"));
    assert!(parse(&config_with(&ldap("starttls = true").replace("ldaps://", "ldap://"), "", "")).is_ok());
    assert!(error(&ldap("user_filter = \"uid={username}\"")).contains("user_filter"));
    assert!(error(&ldap("user_filter = \"(uid=alice)\"")).contains("user_filter"));
    assert!(error(&ldap("").replace("bind_password_env = \"LDAP_PASSWORD\"\n", "")).contains("bind_password_env"));
    assert!(error(&ldap("[directory.ldap.groups]\nmember_of = \"\"")).contains("member_of or base_dn"));
    assert!(error(&ldap("").replace("kind = \"ldap\"\n", "")).contains("directory.kind is not"));
    assert!(error("[directory]\nkind = \"ldap\"\n").contains("needs [directory.ldap]"));
}

#[test]
fn an_openid_provider_is_checked() {
    let oidc = |extra: &str| {
        format!(
            "[directory]\nkind = \"oidc\"\n[directory.oidc]\nissuer = \"https://login.example.com/tenant\"\nclient_id = \"stepgate\"\n\
             client_secret_env = \"OIDC_SECRET\"\nredirect_uri = \"https://app.example.com/.stepgate/oidc/callback\"\n{extra}"
        )
    };
    let error = |top: &str| parse(&config_with(top, "", "")).unwrap_err().to_string();
    let config = parse(&config_with(&oidc(""), "", "")).unwrap();
    let provider = config.directory.oidc.unwrap();
    assert_eq!(provider.issuer, "https://login.example.com/tenant", "kept as written: `iss` must equal it");
    assert_eq!(provider.scopes, ["openid", "profile", "email"]);
    assert!(!provider.trust_provider_mfa, "the gateway's own second factor by default");
    assert!(error(&oidc("").replace("https://login", "http://login")).contains("issuer must be an https URL"));
    assert!(error(&oidc("").replace("/.stepgate/oidc/callback", "/callback")).contains("redirect_uri must end in"));
    assert!(error(&oidc("scopes = [\"profile\"]")).contains("must include openid"));
    assert!(error(&oidc("client_secret_file = \"s\"")).contains("only one of client_secret_env"));
    assert!(error("[directory]\nkind = \"oidc\"\n").contains("needs [directory.oidc]"));
    assert!(error(&oidc("step_up_at_provider = true")).contains("needs trust_provider_mfa"));
    assert!(error(&format!("[webauthn]\npasswordless = true\n{}", oidc(""))).contains("users sign in at the provider"));
}
