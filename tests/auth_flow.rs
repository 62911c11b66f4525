//! Signing in with a password and an authenticator app, through the real
//! proxy and pages, and what the app receives afterwards.

mod common;

use common::*;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

#[tokio::test]
async fn unauthenticated_browser_is_sent_to_sign_in_and_api_gets_401() {
    let gw = TestGateway::start().await;
    let response = gw.browser().get(gw.app("/reports?year=2026")).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap();
    let expected_rd = format!("rd=http%3A%2F%2Fapp.test%3A{}%2Freports%3Fyear%3D2026", gw.addr.port());
    assert!(location.starts_with("/.stepgate/signin?"), "{location}");
    assert!(location.contains(&expected_rd), "{location}");

    let response = gw.api_client().get(gw.app("/reports")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "sign_in_required");
    assert_eq!(gw.upstream.count(), 0, "nothing may reach the app");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    let wrong_password = sign_in(&gw, &client, ALICE, "not her password", "/").await;
    assert_eq!(wrong_password.status(), 401);
    let wrong_password = wrong_password.text().await.unwrap();
    let unknown_user = sign_in(&gw, &client, "mallory", "not her password", "/").await;
    assert_eq!(unknown_user.status(), 401);
    let unknown_user = unknown_user.text().await.unwrap();
    assert!(wrong_password.contains("Wrong user name or password."));
    let strip_csrf_and_name = |page: &str| regex::Regex::new(r#"value="[^"]*""#).unwrap().replace_all(page, "").to_string();
    assert_eq!(strip_csrf_and_name(&wrong_password), strip_csrf_and_name(&unknown_user));
    let response = client.get(gw.app("/")).send().await.unwrap();
    assert_eq!(response.status(), 302, "still not signed in");
}

#[tokio::test]
async fn password_then_totp_enrolment_then_totp_sign_in() {
    let gw = TestGateway::start().await;
    let client = gw.browser();

    let response = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, &gw.app("/admin/panel")).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], gw.app("/admin/panel").as_str());
    let cookie = set_cookie(&response, "stepgate_session");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "no Secure flag over plain HTTP: {cookie}");

    // One factor is enough for `/`, not for `/admin/`.
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200);
    let response = client.get(gw.app("/admin/panel")).send().await.unwrap();
    assert_eq!(response.status(), 302);
    assert!(response.headers()["location"].to_str().unwrap().starts_with("/.stepgate/second-factor?rd="));

    // Enrolment right after the password: QR code, secret and URI are shown.
    let page = client.get(gw.app("/.stepgate/second-factor")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<svg"), "QR code as SVG");
    assert!(page.contains("otpauth://totp/"), "otpauth URI");
    let secret = enroll_totp(&gw, &client).await;
    assert_eq!(client.get(gw.app("/admin/panel")).send().await.unwrap().status(), 200);

    // A new browser signs in with the password and a code from the app.
    let second = gw.browser();
    sign_in(&gw, &second, ALICE, ALICE_PASSWORD, "/").await;
    gw.clock.advance(30);
    let response = submit_totp(&gw, &second, "000000").await;
    assert_eq!(response.status(), 401, "a wrong code is refused");
    let response = submit_totp(&gw, &second, &totp::code(&secret, gw.now())).await;
    assert_eq!(response.status(), 303);
    assert_eq!(second.get(gw.app("/admin/panel")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn codes_match_oathtool() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let secret = enroll_totp(&gw, &client).await;
    gw.clock.advance(60);
    let now = gw.now();
    let output = std::process::Command::new("oathtool")
        .args(["--totp", "-b", "--now", &format!("@{now}"), &secret])
        .env("TZ", "UTC")
        .output()
        .expect("oathtool must be installed (scripts/setup installs it)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let oathtool_code = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(oathtool_code, totp::code(&secret, now));

    let second = gw.browser();
    sign_in(&gw, &second, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(submit_totp(&gw, &second, &oathtool_code).await.status(), 303);
}

#[tokio::test]
async fn a_totp_code_is_accepted_only_once() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let secret = enroll_totp(&gw, &client).await;
    gw.clock.advance(30);
    let code = totp::code(&secret, gw.now());

    let first = gw.browser();
    sign_in(&gw, &first, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(submit_totp(&gw, &first, &code).await.status(), 303);

    let second = gw.browser();
    sign_in(&gw, &second, ALICE, ALICE_PASSWORD, "/").await;
    let replay = submit_totp(&gw, &second, &code).await;
    assert_eq!(replay.status(), 401);
    assert!(replay.text().await.unwrap().contains("already used"));
    // The code of the previous step is inside the skew window but older than the spent one.
    let older = totp::code(&secret, gw.now() - 30);
    assert_eq!(submit_totp(&gw, &second, &older).await.status(), 401);
    gw.clock.advance(30);
    assert_eq!(submit_totp(&gw, &second, &totp::code(&secret, gw.now())).await.status(), 303);
}

#[tokio::test]
async fn the_app_receives_an_assertion_that_verifies_against_the_jwks() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(client.get(gw.app("/dashboard")).send().await.unwrap().status(), 200);
    let token = gw.upstream.last().headers["x-stepgate-assertion"].to_str().unwrap().to_string();
    let jwks = fetch_jwks(&gw).await;

    let header = decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("kid in JWKS");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["app"]);
    validation.set_issuer(&["stepgate"]);
    let claims = decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["groups"], serde_json::json!(["staff", "admins"]));
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    assert_eq!(claims["acr"], "urn:stepgate:acr:1fa");
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert!(exp > iat && exp - iat <= 300, "lifetime at most five minutes");
    assert!(claims["auth_time"].as_i64().unwrap() <= iat);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 20));

    // The same token is reused (no signing per request) ...
    client.get(gw.app("/dashboard")).send().await.unwrap();
    assert_eq!(gw.upstream.last().headers["x-stepgate-assertion"], token.as_str());

    // ... and after a second factor the claims say so.
    enroll_totp(&gw, &client).await;
    client.get(gw.app("/admin/")).send().await.unwrap();
    let token = gw.upstream.last().headers["x-stepgate-assertion"].to_str().unwrap().to_string();
    let claims = decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap().claims;
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["acr"], "urn:stepgate:acr:2fa");

    // An app must not accept a token minted for another app.
    let mut other_audience = Validation::new(Algorithm::ES256);
    other_audience.set_audience(&["legacy"]);
    assert!(decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &other_audience).is_err());
}

#[tokio::test]
async fn sessions_end_after_inactivity_and_at_the_absolute_limit() {
    let gw =
        TestGateway::start_with(Setup { extra: "[session]\ninactivity = \"10m\"\nabsolute = \"1h\"\n".into(), ..Setup::default() }).await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    gw.clock.advance(9 * 60);
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200, "still active");
    gw.clock.advance(9 * 60);
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200, "activity renewed it");
    gw.clock.advance(10 * 60 + 1);
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 302, "idle too long");

    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    for _ in 0..6 {
        gw.clock.advance(9 * 60);
        assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200);
    }
    gw.clock.advance(9 * 60);
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 302, "past the absolute limit");
}

#[tokio::test]
async fn sign_out_ends_the_session_for_good() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    let response = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let session_cookie = session_cookie(&response);
    let page = client.get(gw.app("/.stepgate/signout")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("alice"));
    let csrf = form_value(&page, "csrf");
    let response = client.post(gw.app("/.stepgate/signout")).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(set_cookie(&response, "stepgate_session").contains("Max-Age=0"));
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 302);

    // The old cookie, replayed by hand, no longer works.
    let stale = gw.api_client().get(gw.app("/")).header("cookie", session_cookie).send().await.unwrap();
    assert_eq!(stale.status(), 401);
}

#[tokio::test]
async fn each_factor_gives_a_new_session_id() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    let response = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let first = session_cookie(&response);
    enroll_totp(&gw, &client).await;
    let stale = gw.api_client().get(gw.app("/")).header("cookie", &first).send().await.unwrap();
    assert_eq!(stale.status(), 401, "the pre-TOTP session id must stop working");
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn without_self_enrolment_a_user_with_no_factor_is_told_to_ask_the_administrator() {
    let gw = TestGateway::start_with(Setup { extra: "[totp]\nself_enrollment = false\n".into(), ..Setup::default() }).await;
    let client = gw.browser();
    sign_in(&gw, &client, BOB, BOB_PASSWORD, "/").await;
    let response = client.get(gw.app("/.stepgate/second-factor")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("Contact your administrator"));
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 302);
}

#[tokio::test]
async fn totp_parameters_follow_the_configuration() {
    let gw =
        TestGateway::start_with(Setup { extra: "[totp]\nalgorithm = \"SHA256\"\ndigits = 8\nperiod = 60\n".into(), ..Setup::default() })
            .await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let page = client.get(gw.app("/.stepgate/second-factor")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("algorithm=SHA256") && page.contains("digits=8") && page.contains("period=60"), "{page}");
}

#[tokio::test]
async fn password_guessing_is_throttled() {
    let gw =
        TestGateway::start_with(Setup { extra: "[limits]\npassword_failures = 3\nwindow = \"5m\"\n".into(), ..Setup::default() }).await;
    let client = gw.browser();
    for _ in 0..3 {
        assert_eq!(sign_in(&gw, &client, ALICE, "guess", "/").await.status(), 401);
    }
    let blocked = sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    assert_eq!(blocked.status(), 429, "even the right password waits");
    assert_eq!(blocked.headers()["retry-after"], "300");
    assert_eq!(sign_in(&gw, &gw.browser(), BOB, BOB_PASSWORD, "/").await.status(), 303, "other users are not locked out");
    gw.clock.advance(300);
    assert_eq!(sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await.status(), 303);
}

#[tokio::test]
async fn code_guessing_is_throttled() {
    let gw = TestGateway::start_with(Setup { extra: "[limits]\ncode_failures = 3\n".into(), ..Setup::default() }).await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let secret = enroll_totp(&gw, &client).await;
    let second = gw.browser();
    sign_in(&gw, &second, ALICE, ALICE_PASSWORD, "/").await;
    gw.clock.advance(30);
    for guess in ["111111", "222222", "333333"] {
        assert_eq!(submit_totp(&gw, &second, guess).await.status(), 401);
    }
    let right = totp::code(&secret, gw.now());
    assert_eq!(submit_totp(&gw, &second, &right).await.status(), 429);
    gw.clock.advance(300);
    assert_eq!(submit_totp(&gw, &second, &totp::code(&secret, gw.now())).await.status(), 303);
}

#[tokio::test]
async fn a_cookie_domain_shares_the_session_with_sibling_hosts() {
    let gw = TestGateway::start_with(Setup {
        extra: "[session]\ncookie_name = \"corp_sso\"\ncookie_domain = \"app.test\"\n".into(),
        ..Setup::default()
    })
    .await;
    let response = sign_in(&gw, &gw.browser(), ALICE, ALICE_PASSWORD, "/").await;
    let cookie = set_cookie(&response, "corp_sso");
    assert!(cookie.starts_with("corp_sso=") && cookie.contains("Domain=app.test"), "{cookie}");
}
