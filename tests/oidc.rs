//! Sign-in at an OpenID Connect provider: a real one (node-oidc-provider)
//! started by the test, the whole code flow through the gateway with an
//! HTTP client that follows each redirect itself.

mod common;

use common::oidc::{OidcProvider, CLIENT_SECRET};
use common::*;

const APPS: &str = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]

[[apps.rules]]
path = "/admin/"
groups = ["admins"]
policy = "always"

[[apps.rules]]
path = "/admin/"
policy = "deny"

[[apps.rules]]
path = "/payments/"
policy = "always"
max_age = "10s"

[[apps.rules]]
path = "/"
policy = "never"
"#;

struct Setup2 {
    provider: OidcProvider,
    gw: TestGateway,
}

/// A provider and a gateway that signs in there as `client_id`.
async fn start(client_id: &str, extra: &str) -> Setup2 {
    start_with(client_id, extra, false).await
}

async fn start_with(client_id: &str, extra: &str, conform: bool) -> Setup2 {
    let provider = OidcProvider::start_with(conform).await;
    // `{port}` is the gateway's, filled in when it starts.
    let redirect = "http://app.test:{port}/.stepgate/oidc/callback";
    std::env::set_var("STEPGATE_TEST_OIDC_SECRET", CLIENT_SECRET);
    let secret = if client_id == "stepgate" {
        "client_secret_env = \"STEPGATE_TEST_OIDC_SECRET\""
    } else {
        "client_secret_env = \"STEPGATE_TEST_OTHER_SECRET\""
    };
    std::env::set_var("STEPGATE_TEST_OTHER_SECRET", "other secret");
    let config = format!(
        "[directory]\nkind = \"oidc\"\n[directory.oidc]\nissuer = \"{}\"\nclient_id = \"{client_id}\"\n{secret}\nredirect_uri = \"{redirect}\"\n\
         post_logout_redirect_uri = \"http://app.test:{{port}}/\"\n{extra}\n",
        provider.issuer()
    );
    let gw = TestGateway::start_with(Setup { extra: config, apps: APPS.into(), ..Setup::default() }).await;
    Setup2 { provider, gw }
}

/// Follows redirects from `url` (the gateway's and the provider's) until
/// the browser is sent to the gateway's callback; returns that URL.
async fn to_callback(client: &reqwest::Client, gw: &TestGateway, url: String) -> String {
    walk_to_callback(client, gw, url).await.pop().unwrap()
}

/// Every URL the browser visits from `url` to the callback, in order.
async fn walk_to_callback(client: &reqwest::Client, gw: &TestGateway, url: String) -> Vec<String> {
    let mut visited = vec![url];
    for _ in 0..10 {
        let url = visited.last().unwrap().clone();
        if url.contains("/.stepgate/oidc/callback") {
            return visited;
        }
        let mut response = client.get(&url).send().await.unwrap();
        if response.status() == 200 {
            // The provider's self-submitting form (ending its session of
            // another account first): submitted as the browser would.
            response = submit_form(client, response).await;
        }
        assert!(response.status().is_redirection(), "{url}: {} {}", response.status(), response.text().await.unwrap());
        let location = response.headers()["location"].to_str().unwrap().to_string();
        visited.push(if location.starts_with('/') { base_of(&url) + &location } else { location });
    }
    panic!("no callback reached from {} ({visited:?})", gw.app("/"));
}

async fn submit_form(client: &reqwest::Client, page: reqwest::Response) -> reqwest::Response {
    let html = page.text().await.unwrap();
    let action = regex::Regex::new(r#"<form method="post" action="([^"]+)""#)
        .unwrap()
        .captures(&html)
        .unwrap_or_else(|| panic!("no form in {html}"))[1]
        .to_string();
    let fields: Vec<(String, String)> = regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)""#)
        .unwrap()
        .captures_iter(&html)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    client.post(action).form(&fields).send().await.unwrap()
}

fn base_of(url: &str) -> String {
    let parsed = url::Url::parse(url).unwrap();
    format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap()) + &parsed.port().map(|p| format!(":{p}")).unwrap_or_default()
}

/// Signs in through the provider, starting at `path`; returns the callback's answer.
async fn sign_in_at_provider(client: &reqwest::Client, gw: &TestGateway, path: &str) -> reqwest::Response {
    let callback = to_callback(client, gw, gw.app(path)).await;
    client.get(callback).send().await.unwrap()
}

#[tokio::test]
async fn the_code_flow_signs_in_and_the_gateway_asks_for_its_own_second_factor() {
    let Setup2 { provider, gw } = start("stepgate", "").await;
    provider.next_login("alice", &["pwd", "otp"], None).await;
    let client = gw.browser();
    let done = sign_in_at_provider(&client, &gw, "/").await;
    assert_eq!(done.status(), 303, "{}", done.text().await.unwrap());
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200);
    let claims = last_assertion_claims(&gw);
    assert_eq!(
        (claims["sub"].as_str(), claims["email"].as_str(), claims["name"].as_str()),
        (Some("alice"), Some("alice@example.com"), Some("Alice Liddell"))
    );
    assert_eq!(claims["groups"], serde_json::json!(["staff", "admins"]));
    // The provider's MFA is not trusted here: /admin/ asks for the gateway's own factor.
    let admin = client.get(gw.app("/admin/")).send().await.unwrap();
    assert_eq!(admin.status(), 302);
    assert!(admin.headers()["location"].to_str().unwrap().starts_with("/.stepgate/second-factor"));
}

#[tokio::test]
async fn a_trusted_provider_mfa_satisfies_always_and_the_assertion_says_so() {
    let Setup2 { provider, gw } = start("stepgate", "trust_provider_mfa = true").await;
    provider.next_login("alice", &["pwd", "otp"], None).await;
    let client = gw.browser();
    assert_eq!(sign_in_at_provider(&client, &gw, "/admin/").await.status(), 303);
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
    assert_eq!(last_assertion_claims(&gw)["amr"], serde_json::json!(["pwd", "idp", "mfa"]));

    // A password alone at the provider is not a second factor.
    provider.next_login("alice", &["pwd"], None).await;
    let other = gw.browser();
    assert_eq!(sign_in_at_provider(&other, &gw, "/admin/").await.status(), 303);
    assert_eq!(other.get(gw.app("/admin/")).send().await.unwrap().status(), 302);
}

#[tokio::test]
async fn forged_state_replayed_codes_and_expired_tokens_are_refused() {
    let Setup2 { provider, gw } = start("stepgate", "").await;
    provider.next_login("bob", &["pwd"], None).await;
    let client = gw.browser();

    let forged = client.get(gw.app("/.stepgate/oidc/callback?code=abc&state=forged")).send().await.unwrap();
    assert_eq!(forged.status(), 400);

    let callback = to_callback(&client, &gw, gw.app("/")).await;
    // The callback in another browser: its state is bound to this one.
    assert_eq!(gw.browser().get(&callback).send().await.unwrap().status(), 400);
    assert_eq!(client.get(&callback).send().await.unwrap().status(), 303);
    assert_eq!(client.get(&callback).send().await.unwrap().status(), 400, "a state works once");

    // The spent code with a fresh state of this browser: the provider refuses it.
    let fresh = gw.browser();
    let code = url::Url::parse(&callback).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
    let new_callback = to_callback(&fresh, &gw, gw.app("/")).await;
    let state = url::Url::parse(&new_callback).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.to_string();
    let replayed = fresh.get(gw.app(&format!("/.stepgate/oidc/callback?code={code}&state={state}"))).send().await.unwrap();
    assert_eq!(replayed.status(), 403);
    assert!(replayed.text().await.unwrap().contains("could not be accepted"));

    // An ID token past its expiry (60 s here) by the gateway's clock.
    let late = gw.browser();
    let callback = to_callback(&late, &gw, gw.app("/")).await;
    gw.clock.advance(120);
    assert_eq!(late.get(&callback).send().await.unwrap().status(), 403);
    assert_eq!(late.get(gw.app("/")).send().await.unwrap().status(), 302, "not signed in");
}

#[tokio::test]
async fn a_code_issued_to_another_client_is_refused() {
    // This gateway is the client `other`; the code it is handed was issued to `stepgate`.
    let Setup2 { provider, gw } = start("other", "").await;
    provider.next_login("alice", &["pwd"], None).await;
    let client = gw.browser();
    let callback = to_callback(&client, &gw, gw.app("/")).await;
    let state = url::Url::parse(&callback).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.to_string();
    let redirect = format!("{}/.stepgate/oidc/callback", gw.app("").trim_end_matches('/'));
    let authorize = format!(
        "{}/auth?client_id=stepgate&response_type=code&scope=openid&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state=x&nonce=y",
        provider.issuer(),
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let foreign = to_callback(&gw.browser(), &gw, authorize).await;
    let code = url::Url::parse(&foreign).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
    let refused = client.get(gw.app(&format!("/.stepgate/oidc/callback?code={code}&state={state}"))).send().await.unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn signing_out_signs_out_at_the_provider_too() {
    let Setup2 { provider, gw } = start("stepgate", "").await;
    provider.next_login("alice", &["pwd"], None).await;
    let client = gw.browser();
    assert_eq!(sign_in_at_provider(&client, &gw, "/").await.status(), 303);
    let page = client.get(gw.app("/.stepgate/signout")).send().await.unwrap().text().await.unwrap();
    let out = client.post(gw.app("/.stepgate/signout")).form(&[("csrf", form_value(&page, "csrf"))]).send().await.unwrap();
    assert_eq!(out.status(), 200);
    let page = out.text().await.unwrap();
    let location = regex::Regex::new(r#"id="provider-logout" href="([^"]+)""#).unwrap().captures(&page).unwrap()[1].replace("&amp;", "&");
    assert!(location.starts_with(&format!("{}/session/end?", provider.issuer())), "{location}");
    assert!(location.contains("client_id=stepgate") && location.contains("post_logout_redirect_uri="), "{location}");
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 302, "signed out here");
}

#[tokio::test]
async fn groups_only_at_the_userinfo_endpoint_are_read_there_when_configured() {
    for (userinfo, groups) in [(false, serde_json::json!([])), (true, serde_json::json!(["staff", "admins"]))] {
        let Setup2 { provider, gw } = start_with("stepgate", &format!("userinfo = {userinfo}"), true).await;
        provider.next_login("alice", &["pwd"], None).await;
        let client = gw.browser();
        assert_eq!(sign_in_at_provider(&client, &gw, "/").await.status(), 303);
        assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200);
        assert_eq!(last_assertion_claims(&gw)["groups"], groups, "userinfo = {userinfo}");
    }
}

#[tokio::test]
async fn a_step_up_can_send_the_user_back_to_the_provider() {
    let Setup2 { provider, gw } = start("stepgate", "trust_provider_mfa = true\nstep_up_at_provider = true").await;
    provider.next_login("alice", &["pwd", "otp"], None).await;
    let client = gw.browser();
    assert_eq!(sign_in_at_provider(&client, &gw, "/payments/").await.status(), 303);
    assert_eq!(client.get(gw.app("/payments/")).send().await.unwrap().status(), 200);

    // Later, the payments need a fresher second factor: done at the provider.
    // (Seconds, not minutes: the provider's ID tokens live 60 s by its clock.)
    gw.clock.advance(11);
    let mut visited = walk_to_callback(&client, &gw, gw.app("/payments/")).await;
    let callback = visited.pop().unwrap();
    let asked_again = visited.iter().any(|url| url.contains("prompt=login") && url.contains("max_age=0"));
    assert!(asked_again, "the provider was asked to sign the user in again: {visited:?}");
    assert_eq!(client.get(&callback).send().await.unwrap().status(), 303);
    assert_eq!(client.get(gw.app("/payments/")).send().await.unwrap().status(), 200);

    // A step-up where the provider did no second factor is refused.
    gw.clock.advance(11);
    provider.next_login("alice", &["pwd"], None).await;
    let callback = to_callback(&client, &gw, gw.app("/payments/")).await;
    assert_eq!(client.get(&callback).send().await.unwrap().status(), 403);
    assert_eq!(client.get(gw.app("/payments/")).send().await.unwrap().status(), 302);

    // Nor may another user step up this session.
    provider.next_login("bob", &["pwd", "otp"], None).await;
    let callback = to_callback(&client, &gw, gw.app("/payments/")).await;
    assert_eq!(client.get(&callback).send().await.unwrap().status(), 403);
}
