//! Users in an LDAP directory: a real OpenLDAP server (Debian's slapd)
//! started by the test, through the real gateway and its sign-in page.

mod common;

use std::collections::HashSet;

use common::ldap::{group_dn, user_dn, Slapd, ALICE_MOBILE, DIRECTORY_PASSWORD, SERVICE_PASSWORD};
use common::*;
use ldap3::Mod;

const APPS: &str = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]

[[apps.rules]]
path = "/admin/"
groups = ["admins"]
policy = "never"

[[apps.rules]]
path = "/admin/"
policy = "deny"

[[apps.rules]]
path = "/"
policy = "never"
"#;

async fn gateway(slapd: &Slapd, url: &str, extra: &str) -> TestGateway {
    std::env::set_var("STEPGATE_TEST_LDAP_PASSWORD", SERVICE_PASSWORD);
    TestGateway::start_with(Setup { extra: slapd.config(url, extra), apps: APPS.into(), ..Setup::default() }).await
}

async fn body_of(response: reqwest::Response) -> (u16, String) {
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_directory_user_signs_in_with_their_groups() {
    let slapd = Slapd::start().await;
    let gw = gateway(&slapd, &slapd.url(), "").await;
    let client = gw.browser();
    let signed_in = sign_in(&gw, &client, "alice", DIRECTORY_PASSWORD, "/admin/").await;
    assert_eq!(signed_in.status(), 303, "{}", signed_in.text().await.unwrap());
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200, "alice is in admins");
    let claims = last_assertion_claims(&gw);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["name"], "Alice Liddell");
    let groups: HashSet<&str> = claims["groups"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    assert_eq!(groups, HashSet::from(["staff", "admins"]));

    let bob = gw.browser();
    assert_eq!(sign_in(&gw, &bob, "bob", DIRECTORY_PASSWORD, "/").await.status(), 303);
    assert_eq!(bob.get(gw.app("/admin/")).send().await.unwrap().status(), 403, "bob is not");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_look_the_same_and_filters_are_escaped() {
    let slapd = Slapd::start().await;
    let gw = gateway(&slapd, &slapd.url(), "").await;
    let (status, wrong) = body_of(sign_in(&gw, &gw.browser(), "alice", "not her password", "/").await).await;
    assert_eq!(status, 401);
    let (status, unknown) = body_of(sign_in(&gw, &gw.browser(), "nobody", "not her password", "/").await).await;
    assert_eq!(status, 401);
    let strip = |page: &str, name: &str| {
        regex::Regex::new(r#"name="csrf" value="[^"]*""#).unwrap().replace(&page.replace(name, "NAME"), "").into_owned()
    };
    assert_eq!(strip(&wrong, "alice"), strip(&unknown, "nobody"), "the same page for both");

    // Filter metacharacters are escaped: none of these finds anyone.
    for name in ["*", "alice)(uid=*", "*)(|(uid=*", "alice*", "(uid=alice)", "al\\2aice", "alice\0"] {
        let (status, _) = body_of(sign_in(&gw, &gw.browser(), name, DIRECTORY_PASSWORD, "/").await).await;
        assert_eq!(status, 401, "{name:?}");
    }
    // An empty password is never sent as an (unauthenticated) bind.
    let (status, _) = body_of(sign_in(&gw, &gw.browser(), "alice", "", "/").await).await;
    assert!(status == 400 || status == 401, "{status}");
}

#[tokio::test]
async fn locked_accounts_and_expired_passwords_get_clear_pages() {
    let slapd = Slapd::start().await;
    let gw = gateway(&slapd, &slapd.url(), "").await;
    let (status, page) = body_of(sign_in(&gw, &gw.browser(), "carol", DIRECTORY_PASSWORD, "/").await).await;
    assert_eq!(status, 403);
    assert!(page.contains("This account is locked or disabled. Contact your administrator."), "{page}");
    let (status, page) = body_of(sign_in(&gw, &gw.browser(), "dave", DIRECTORY_PASSWORD, "/").await).await;
    assert_eq!(status, 403);
    assert!(page.contains("Your password has expired"), "{page}");
    let (status, _) = body_of(sign_in(&gw, &gw.browser(), "dave", "wrong", "/").await).await;
    assert_eq!(status, 401, "a wrong password says nothing of the account");
}

#[tokio::test]
async fn group_changes_and_a_lock_are_seen_after_the_recheck_interval() {
    let slapd = Slapd::start().await;
    let gw = gateway(&slapd, &slapd.url(), "recheck = \"5m\"").await;
    let client = gw.browser();
    assert_eq!(sign_in(&gw, &client, "alice", DIRECTORY_PASSWORD, "/admin/").await.status(), 303);
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200);

    // Alice leaves admins (a group keeps at least one member: Dave joins).
    let dave = user_dn("dave");
    slapd.modify(&group_dn("admins"), Mod::Replace("member", HashSet::from([dave.as_str()]))).await;
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200, "not read again yet");
    gw.clock.advance(301);
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 403, "no longer in admins");
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200);

    slapd.modify(&user_dn("alice"), Mod::Replace("pwdAccountLockedTime", HashSet::from(["000001010000Z"]))).await;
    gw.clock.advance(301);
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 302, "a locked account's session ends");
    assert!(gw.gateway().store.sessions_of("alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stopped_directory_fails_closed_and_recovers() {
    let mut slapd = Slapd::start().await;
    let gw = gateway(&slapd, &slapd.url(), "connect_timeout = \"2s\"\ntimeout = \"2s\"").await;
    let client = gw.browser();
    assert_eq!(sign_in(&gw, &client, "alice", DIRECTORY_PASSWORD, "/").await.status(), 303);

    slapd.stop().await;
    let (status, page) = body_of(sign_in(&gw, &gw.browser(), "bob", DIRECTORY_PASSWORD, "/").await).await;
    assert_eq!(status, 503);
    assert!(page.contains("The user directory cannot be reached"), "{page}");
    // A session signed in before keeps working while the directory is away.
    gw.clock.advance(301);
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200);

    slapd.run().await;
    assert_eq!(sign_in(&gw, &gw.browser(), "bob", DIRECTORY_PASSWORD, "/").await.status(), 303, "back without a restart");
}

#[tokio::test]
async fn ldaps_and_starttls_check_the_servers_certificate() {
    let slapd = Slapd::start().await;
    let ldaps = format!("ldaps://localhost:{}", slapd.tls_addr.port());
    let gw = gateway(&slapd, &ldaps, "").await;
    assert_eq!(sign_in(&gw, &gw.browser(), "alice", DIRECTORY_PASSWORD, "/").await.status(), 303);

    let starttls = format!("ldap://localhost:{}", slapd.addr.port());
    let gw = gateway(&slapd, &starttls, "starttls = true").await;
    assert_eq!(sign_in(&gw, &gw.browser(), "bob", DIRECTORY_PASSWORD, "/").await.status(), 303);
}

#[tokio::test]
async fn the_directorys_mobile_number_is_offered_when_a_user_adds_a_phone() {
    let slapd = Slapd::start().await;
    let provider = common::sms_provider::Provider::start().await;
    std::env::set_var("STEPGATE_TEST_TWILIO_TOKEN", "token");
    let sms = format!(
        "[sms]\ncountries = [\"CH\"]\n[sms.twilio]\naccount_sid = \"AC1\"\nauth_token_env = \"STEPGATE_TEST_TWILIO_TOKEN\"\nfrom = \"+15005550006\"\napi_url = \"{}\"\n",
        provider.url()
    );
    let gw = gateway(&slapd, &slapd.url(), &format!("\n{sms}")).await;
    let client = gw.browser();
    assert_eq!(sign_in(&gw, &client, "alice", DIRECTORY_PASSWORD, "/").await.status(), 303);
    let page = client.get(gw.app("/.stepgate/enrol/phone")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("value=\"{ALICE_MOBILE}\"")), "{page}");
}
