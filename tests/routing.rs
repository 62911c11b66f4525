//! Which requests reach which app, and what the app is told: rules,
//! hosts, identity headers, forwarding headers, redirects and CSRF.

mod common;

use common::*;

#[tokio::test]
async fn rules_decide_bypass_one_factor_two_factor_and_deny() {
    let gw = TestGateway::start().await;
    let anonymous = gw.api_client();
    let status = |client: &reqwest::Client, url: String| {
        let request = client.get(url);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&anonymous, gw.app("/public/page")).await, 200, "bypass");
    assert_eq!(status(&anonymous, gw.app("/v2/status")).await, 200, "regex bypass");
    assert_eq!(status(&anonymous, gw.app("/v2/status/more")).await, 401, "anchored regex");
    assert_eq!(status(&anonymous, gw.app("/")).await, 401, "one_factor");
    assert_eq!(status(&anonymous, gw.app("/blocked/x")).await, 403, "deny");
    assert_eq!(status(&anonymous, gw.url("strict.test", "/open/x")).await, 200, "bypass on another app");
    assert_eq!(status(&anonymous, gw.url("strict.test", "/other")).await, 403, "no rule matches: deny");

    let alice = gw.browser();
    sign_in(&gw, &alice, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(status(&alice, gw.app("/")).await, 200);
    assert_eq!(status(&alice, gw.app("/api/items")).await, 200, "GET on /api/ is one_factor");
    let post = alice.post(gw.app("/api/items")).send().await.unwrap().status();
    assert_eq!(post, 403, "other methods on /api/ are denied");
    assert_eq!(status(&alice, gw.app("/admin/")).await, 302, "two_factor needs more");
    assert_eq!(status(&alice, gw.app("/files/a/b/report.pdf")).await, 302, "glob two_factor");
    assert_eq!(status(&alice, gw.app("/files/a/b/report.txt")).await, 200, "glob does not match: `/` rule");
    assert_eq!(status(&alice, gw.app("/blocked/x")).await, 403, "deny even when signed in");
}

#[tokio::test]
async fn unknown_hosts_get_a_plain_404() {
    let gw = TestGateway::start().await;
    let response = gw.api_client().get(gw.url("unknown.test", "/")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().contains("No application is served at this address."));
    assert_eq!(gw.upstream.count(), 0);
}

#[tokio::test]
async fn client_identity_headers_never_reach_the_app() {
    let gw = TestGateway::start().await;
    let forged = [
        ("x-stepgate-assertion", "forged.jwt.token"),
        ("x-auth-token", "forged"),
        ("remote-user", "admin"),
        ("remote-email", "admin@example.com"),
        ("remote-groups", "admins"),
        ("remote-name", "Administrator"),
    ];
    let with_forged = |builder: reqwest::RequestBuilder| forged.iter().fold(builder, |b, (name, value)| b.header(*name, *value));
    // On a bypass route, with nobody signed in: all removed.
    with_forged(gw.api_client().get(gw.app("/public/x"))).send().await.unwrap();
    let received = gw.upstream.last();
    for (name, _) in forged {
        assert!(received.headers.get(name).is_none(), "{name} reached the app");
    }

    // Signed in on the legacy app: only the gateway's own values arrive.
    let alice = gw.browser();
    sign_in_at(&gw, "legacy.test", &alice, ALICE, ALICE_PASSWORD, "/").await;
    let response = with_forged(alice.get(gw.url("legacy.test", "/"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let received = gw.upstream.last();
    let values = |name: &str| received.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(values("remote-user"), ["alice"]);
    assert_eq!(values("remote-email"), ["alice@example.com"]);
    assert_eq!(values("remote-groups"), ["staff,admins"]);
    assert_eq!(values("remote-name"), ["Alice Liddell"]);
    let token = values("x-auth-token");
    assert_eq!(token.len(), 1);
    assert_ne!(token[0], "forged");
    assert!(values("x-stepgate-assertion").is_empty());

    // The app that did not opt in gets no plain identity headers.
    sign_in(&gw, &alice, ALICE, ALICE_PASSWORD, "/").await;
    with_forged(alice.get(gw.app("/"))).send().await.unwrap();
    let received = gw.upstream.last();
    assert!(received.headers.get("remote-user").is_none());
    assert_ne!(received.headers["x-stepgate-assertion"], "forged.jwt.token");
}

#[tokio::test]
async fn the_gateway_cookies_stay_with_the_gateway() {
    let gw = TestGateway::start().await;
    let response = sign_in(&gw, &gw.browser(), ALICE, ALICE_PASSWORD, "/").await;
    let session = session_cookie(&response);
    let cookie_header = format!("theme=dark; {session}; stepgate_session_pre=abc; lang=en");
    let response = gw.api_client().get(gw.app("/")).header("cookie", cookie_header).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cookies: Vec<String> = gw.upstream.last().headers.get_all("cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let all = cookies.join("; ");
    assert_eq!(all, "theme=dark; lang=en", "the app's own cookies pass, the gateway's do not");
    assert!(!all.contains("stepgate_session"), "{all}");
    assert!(!all.contains("stepgate_session_pre"), "{all}");
}

#[tokio::test]
async fn forwarded_headers_are_set_and_spoofing_is_ignored() {
    let gw = TestGateway::start().await;
    gw.api_client()
        .get(gw.app("/public/x"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    let headers = gw.upstream.last().headers;
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "an untrusted peer's X-Forwarded-For is replaced");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], format!("app.test:{}", gw.addr.port()).as_str());
}

#[tokio::test]
async fn a_trusted_proxy_may_say_who_the_client_is() {
    let gw =
        TestGateway::start_with(Setup { server_extra: "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]".into(), ..Setup::default() })
            .await;
    gw.api_client()
        .get(gw.app("/public/x"))
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.1.2.3")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let headers = gw.upstream.last().headers;
    assert_eq!(headers["x-forwarded-for"], "198.51.100.1, 203.0.113.9, 10.1.2.3, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn upstreams_take_turns() {
    let second = Upstream::start().await;
    let first_apps = DEFAULT_APPS.replacen(
        "upstreams = [\"http://{upstream}\"]",
        &format!("upstreams = [\"http://{{upstream}}\", \"http://{}\"]", second.addr),
        1,
    );
    let gw = TestGateway::start_with(Setup { apps: first_apps, ..Setup::default() }).await;
    let client = gw.api_client();
    for _ in 0..4 {
        assert_eq!(client.get(gw.app("/public/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(gw.upstream.count(), 2);
    assert_eq!(second.count(), 2);
}

#[tokio::test]
async fn return_urls_only_lead_to_configured_hosts() {
    let gw = TestGateway::start().await;
    for evil in ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "http://user@evil.example/"] {
        let client = gw.browser();
        let response = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, evil).await;
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], "/", "rd={evil}");
    }
    let client = gw.browser();
    let page = client.get(gw.app("/.stepgate/signin?rd=https%3A%2F%2Fevil.example%2F")).send().await.unwrap().text().await.unwrap();
    assert_eq!(form_value(&page, "rd"), "/");
    let legacy = gw.url("legacy.test", "/reports");
    let response = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, &legacy).await;
    assert_eq!(response.headers()["location"], legacy.as_str(), "another configured host is fine");
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    client.get(gw.app("/.stepgate/signin")).send().await.unwrap();
    let attempts: [&[(&str, &str)]; 2] = [
        &[("username", ALICE), ("password", ALICE_PASSWORD)],
        &[("csrf", "forged-token"), ("username", ALICE), ("password", ALICE_PASSWORD)],
    ];
    for form in attempts {
        let response = client.post(gw.app("/.stepgate/signin")).form(form).send().await.unwrap();
        assert_eq!(response.status(), 403);
    }
    // A token from another browser's page does not fit this browser.
    let other = gw.browser();
    let page = other.get(gw.app("/.stepgate/signin")).send().await.unwrap().text().await.unwrap();
    let foreign = form_value(&page, "csrf");
    let response = client
        .post(gw.app("/.stepgate/signin"))
        .form(&[("csrf", foreign.as_str()), ("username", ALICE), ("password", ALICE_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // Sign-out and second-factor forms are bound to the session.
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let response = client.post(gw.app("/.stepgate/signout")).form(&[("csrf", foreign.as_str())]).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let response = client.post(gw.app("/.stepgate/second-factor/totp/enroll")).form(&[("code", "123456")]).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200, "still signed in");
}

#[tokio::test]
async fn portal_pages_carry_a_strict_policy_and_assets_are_cacheable() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    let page = client.get(gw.app("/.stepgate/signin")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");

    for asset in ["style.css", "stepgate.js", "theme.css"] {
        let response = client.get(gw.app(&format!("/.stepgate/static/{asset}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.headers()["cache-control"].to_str().unwrap().contains("max-age"));
        let etag = response.headers()["etag"].clone();
        let again = client.get(gw.app(&format!("/.stepgate/static/{asset}"))).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(again.status(), 304);
    }
    assert_eq!(client.get(gw.app("/.stepgate/static/secret.key")).send().await.unwrap().status(), 404);
    assert_eq!(client.get(gw.app("/.stepgate/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn branding_comes_from_the_configuration() {
    let gw = TestGateway::start_with(Setup {
        extra: "[branding]\nproduct_name = \"Acme Access\"\nlogo_url = \"https://cdn.acme.example/logo.svg\"\naccent_color = \"#aa0033\"\n"
            .into(),
        ..Setup::default()
    })
    .await;
    let client = gw.browser();
    let html = client.get(gw.app("/.stepgate/signin")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("Acme Access") && html.contains("https://cdn.acme.example/logo.svg"));
    let theme = client.get(gw.app("/.stepgate/static/theme.css")).send().await.unwrap().text().await.unwrap();
    assert!(theme.contains("#aa0033"));
}
