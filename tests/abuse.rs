//! Guessing and flooding through the real proxy: every attempt is counted
//! before it is checked, so parallel bursts never get more checks than the
//! limit; password hashes are bounded; over-long names cost nothing; and a
//! browser the user signed in on keeps a budget of its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::webauthn::{enrol_key, finish_authentication, origin, password_session, start_authentication};
use common::*;
use serde_json::{json, Value};
use stepgate::throttle::Scope;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;

/// What one request of a burst got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    json: bool,
}

impl Answer {
    fn of(response: &reqwest::Response) -> Self {
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Answer {
            status: response.status().as_u16(),
            retry_after: header("retry-after"),
            json: header("content-type").is_some_and(|t| t.starts_with("application/json")),
        }
    }
}

/// Sends all `requests` at once: each waits at a barrier until every one
/// is ready to go.
async fn burst(requests: Vec<reqwest::RequestBuilder>) -> Vec<Answer> {
    let start = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let sent: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                Answer::of(&request.send().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for answer in sent {
        answers.push(answer.await.unwrap());
    }
    answers
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

fn assert_all_say_when(answers: &[Answer], status: u16) {
    for answer in answers.iter().filter(|a| a.status == status) {
        assert!(answer.retry_after.as_deref().is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)), "{answer:?}");
    }
}

fn with_limits(limits: &str) -> Setup {
    Setup { extra: format!("[limits]\n{limits}\n"), ..Setup::default() }
}

/// Room for every request of a burst to wait for a hash, so that only the
/// throttle refuses.
const ROOMY_QUEUE: &str = "password_queue = 1024";

async fn signin_csrf(gw: &TestGateway, client: &reqwest::Client) -> String {
    let page = client.get(gw.app("/.stepgate/signin")).send().await.unwrap().text().await.unwrap();
    form_value(&page, "csrf")
}

fn signin_post(gw: &TestGateway, client: &reqwest::Client, csrf: &str, user: &str, password: &str) -> reqwest::RequestBuilder {
    client.post(gw.app("/.stepgate/signin")).form(&[("csrf", csrf), ("username", user), ("password", password), ("rd", "/")])
}

#[tokio::test]
async fn parallel_wrong_passwords_for_one_user_are_checked_at_most_limit_times() {
    let gw = TestGateway::start_with(with_limits(ROOMY_QUEUE)).await;
    let client = gw.browser();
    let csrf = signin_csrf(&gw, &client).await;
    let answers = burst((0..60).map(|_| signin_post(&gw, &client, &csrf, ALICE, "not her password")).collect()).await;
    assert_eq!(count(&answers, 401), 10, "exactly the limit was checked: {answers:?}");
    assert_eq!(count(&answers, 429), 50);
    assert_all_say_when(&answers, 429);
    assert_eq!(gw.gateway().password_hashing.started(), 10, "one hash per checked attempt");
    let right = signin_post(&gw, &client, &csrf, ALICE, ALICE_PASSWORD).send().await.unwrap();
    assert_eq!(right.status(), 429, "even the right password waits");
}

#[tokio::test]
async fn parallel_guesses_at_unknown_users_are_checked_at_most_the_address_limit() {
    let gw = TestGateway::start_with(with_limits(ROOMY_QUEUE)).await;
    let client = gw.browser();
    let csrf = signin_csrf(&gw, &client).await;
    let guesses = (0..60).map(|i| signin_post(&gw, &client, &csrf, &format!("nobody{i}"), "guess")).collect();
    let answers = burst(guesses).await;
    assert_eq!(count(&answers, 401), 30, "three times the user limit per address: {answers:?}");
    assert_eq!(count(&answers, 429), 30);
    assert_all_say_when(&answers, 429);
    assert_eq!(gw.gateway().password_hashing.started(), 30);
}

/// A six-digit code that is not valid anywhere near `now`.
fn wrong_code(secret: &str, now: i64) -> String {
    let near: Vec<String> = (-3..=3).map(|step| totp::code(secret, now + step * 30)).collect();
    ["000000", "000001"].into_iter().find(|code| !near.iter().any(|n| n == code)).unwrap().to_string()
}

#[tokio::test]
async fn parallel_codes_are_checked_at_most_limit_times() {
    let gw = TestGateway::start().await;
    let first = gw.browser();
    sign_in(&gw, &first, ALICE, ALICE_PASSWORD, "/").await;
    let secret = enroll_totp(&gw, &first).await;
    let client = gw.browser();
    assert_eq!(sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await.status(), 303);
    let page = client.get(gw.app("/.stepgate/second-factor")).send().await.unwrap().text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    for (method, code) in [("totp", wrong_code(&secret, gw.now())), ("recovery", "abcde-fghij".to_string())] {
        let post = || {
            let form = [("csrf", csrf.as_str()), ("code", code.as_str()), ("rd", "/")];
            client.post(gw.app(&format!("/.stepgate/second-factor/{method}"))).form(&form)
        };
        let answers = burst((0..60).map(|_| post()).collect()).await;
        assert_eq!(count(&answers, 401), 10, "{method}: exactly the limit was checked: {answers:?}");
        assert_eq!(count(&answers, 429), 50, "{method}");
        assert_all_say_when(&answers, 429);
        gw.clock.advance(300);
    }
}

#[tokio::test]
async fn webauthn_answers_count_as_second_factor_attempts_and_refusals_are_json() {
    let gw = TestGateway::start_with(common::webauthn::setup("")).await;
    let mut key = WebauthnAuthenticator::new(SoftToken::new(false).unwrap().0);
    enrol_key(&gw, &mut key).await;
    let client = password_session(&gw).await;
    // An answer to a challenge that has been replaced since: wrong each time.
    let (options, csrf) = start_authentication(&gw, &client).await;
    let stale = key.do_authentication(origin(), options).unwrap();
    start_authentication(&gw, &client).await;
    let finish = || {
        let body = json!({ "credential": stale, "rd": "/" });
        client.post(gw.app("/.stepgate/webauthn/authenticate/finish")).header("x-csrf-token", &csrf).json(&body)
    };
    let answers = burst((0..30).map(|_| finish()).collect()).await;
    assert_eq!(count(&answers, 400), 10, "exactly the limit was checked: {answers:?}");
    assert_eq!(count(&answers, 429), 20);
    assert_all_say_when(&answers, 429);
    assert!(answers.iter().all(|a| a.json), "a JSON endpoint answers JSON: {answers:?}");

    // Now even a right answer waits, and so does a code: one budget.
    let (options, csrf) = start_authentication(&gw, &client).await;
    let right = key.do_authentication(origin(), options).unwrap();
    let refused = finish_authentication(&gw, &client, &csrf, &right).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "300");
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Too many attempts"), "{body}");
    let code = client.post(gw.app("/.stepgate/second-factor/recovery")).form(&[("csrf", csrf.as_str()), ("code", "abcde-fghij")]);
    assert_eq!(code.send().await.unwrap().status(), 429);

    gw.clock.advance(300);
    let (options, csrf) = start_authentication(&gw, &client).await;
    let right = key.do_authentication(origin(), options).unwrap();
    assert_eq!(finish_authentication(&gw, &client, &csrf, &right).await.status(), 200);
}

async fn next(received: &mut tokio::sync::mpsc::UnboundedReceiver<Answer>) -> Answer {
    tokio::time::timeout(Duration::from_secs(30), received.recv()).await.expect("an answer").expect("a sender")
}

#[tokio::test]
async fn password_checks_beyond_the_hash_gate_get_503_with_retry_after() {
    let gw = TestGateway::start_with(with_limits("password_hashes = 1\npassword_queue = 2\npassword_failures = 1000")).await;
    let gate = gw.gateway().password_hashing.clone();
    // Keep the one worker busy until the test says so.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (busy, mut worker_busy) = tokio::sync::mpsc::unbounded_channel();
    let held = gate.try_admit().unwrap().run(move || {
        let _ = busy.send(());
        let _ = released.recv();
    });
    let held = tokio::spawn(held);
    worker_busy.recv().await.expect("the worker took the job");
    let client = gw.browser();
    let csrf = signin_csrf(&gw, &client).await;

    // The one worker is busy: two sign-ins may wait, the rest are refused.
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let start = Arc::new(tokio::sync::Barrier::new(10));
    for i in 0..10 {
        let (request, start, sender) = (signin_post(&gw, &client, &csrf, &format!("user{i}"), "guess"), start.clone(), sender.clone());
        tokio::spawn(async move {
            start.wait().await;
            let _ = sender.send(Answer::of(&request.send().await.unwrap()));
        });
    }
    for _ in 0..8 {
        let refused = next(&mut received).await;
        assert_eq!(refused.status, 503, "{refused:?}");
        assert!(refused.retry_after.is_some() && !refused.json, "{refused:?}");
    }
    assert_eq!(gate.started(), 1, "only the held job has started");
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    for _ in 0..2 {
        assert_eq!(next(&mut received).await.status, 401);
    }
    assert_eq!((gate.started(), gate.peak()), (3, 1));

    // A burst: every sign-in is either hashed, one at a time, or refused.
    let answers = burst((0..40).map(|i| signin_post(&gw, &client, &csrf, &format!("other{i}"), "guess")).collect()).await;
    assert_eq!(count(&answers, 401) + count(&answers, 503), 40, "{answers:?}");
    assert_all_say_when(&answers, 503);
    assert_eq!(gate.started(), 3 + count(&answers, 401) as u64);
    assert_eq!(gate.peak(), 1);
}

#[tokio::test]
async fn over_long_user_names_are_refused_before_anything_is_counted_or_hashed() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    let csrf = signin_csrf(&gw, &client).await;
    let long_name = "n".repeat(63 * 1024);
    // More than the address's 30 attempts.
    for i in 0..40 {
        let refused = signin_post(&gw, &client, &csrf, &format!("{long_name}{i}"), "guess").send().await.unwrap();
        assert_eq!(refused.status(), 400);
    }
    let refused = signin_post(&gw, &client, &csrf, &"n".repeat(129), "guess").send().await.unwrap();
    assert_eq!(refused.status(), 400, "one byte over");
    let gateway = gw.gateway();
    assert_eq!(gateway.password_hashing.started(), 0);
    assert_eq!((gateway.attempts.keys_in(Scope::User).await.unwrap(), gateway.attempts.keys_in(Scope::Address).await.unwrap()), (0, 0));
    let longest = signin_post(&gw, &client, &csrf, &"n".repeat(128), "guess").send().await.unwrap();
    assert_eq!(longest.status(), 401, "the longest possible name is checked, the address not blocked");
}

fn cookie_pair(response: &reqwest::Response, name: &str) -> String {
    set_cookie(response, name).split(';').next().unwrap().to_string()
}

async fn sign_out(gw: &TestGateway, client: &reqwest::Client) {
    let page = client.get(gw.app("/.stepgate/signout")).send().await.unwrap().text().await.unwrap();
    let csrf = form_value(&page, "csrf");
    let response = client.post(gw.app("/.stepgate/signout")).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Signs in from a client with no cookie jar that sends `cookies`.
async fn sign_in_sending(gw: &TestGateway, cookies: &str, user: &str, password: &str) -> u16 {
    let client = gw.client_builder().cookie_store(false).default_headers(browser_headers()).build().unwrap();
    let page = client.get(gw.app("/.stepgate/signin")).header("cookie", cookies).send().await.unwrap();
    let pre_session = cookie_pair(&page, "stepgate_session_pre");
    let csrf = form_value(&page.text().await.unwrap(), "csrf");
    let form = [("csrf", csrf.as_str()), ("username", user), ("password", password), ("rd", "/")];
    let response = client.post(gw.app("/.stepgate/signin")).header("cookie", format!("{cookies}; {pre_session}")).form(&form);
    response.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_browser_the_user_signed_in_on_keeps_its_own_budget() {
    let gw = TestGateway::start().await;
    let home = gw.browser();
    let signed_in = sign_in(&gw, &home, ALICE, ALICE_PASSWORD, "/").await;
    let (home_device, home_tag) = (cookie_pair(&signed_in, "stepgate_device"), cookie_pair(&signed_in, "stepgate_device_users"));
    assert!(set_cookie(&signed_in, "stepgate_device_users").contains("Path=/.stepgate/"), "apps never see it");
    sign_out(&gw, &home).await;
    let bobs = sign_in(&gw, &gw.browser(), BOB, BOB_PASSWORD, "/").await;
    let bobs_device = cookie_pair(&bobs, "stepgate_device");

    // Someone elsewhere locks Alice's name...
    let attacker = gw.browser();
    for _ in 0..10 {
        assert_eq!(sign_in(&gw, &attacker, ALICE, "guess", "/").await.status(), 401);
    }
    assert_eq!(sign_in(&gw, &attacker, ALICE, ALICE_PASSWORD, "/").await.status(), 429);
    // ...but not at her own browser.
    assert_eq!(sign_in(&gw, &home, ALICE, ALICE_PASSWORD, "/").await.status(), 303);
    // The tag is bound to her browser's device id and to her name.
    assert_eq!(sign_in_sending(&gw, &format!("{home_device}; {home_tag}"), ALICE, ALICE_PASSWORD).await, 303);
    assert_eq!(sign_in_sending(&gw, &format!("{bobs_device}; {home_tag}"), ALICE, ALICE_PASSWORD).await, 429);
    assert_eq!(sign_in_sending(&gw, &home_device, ALICE, ALICE_PASSWORD).await, 429);
    assert_eq!(sign_in_sending(&gw, &format!("{home_device}; {home_tag}"), BOB, BOB_PASSWORD).await, 303, "bob is not throttled");

    // Her browser's budget is its own, and it is limited too.
    sign_out(&gw, &home).await;
    for _ in 0..10 {
        assert_eq!(sign_in(&gw, &home, ALICE, "typo", "/").await.status(), 401);
    }
    assert_eq!(sign_in(&gw, &home, ALICE, ALICE_PASSWORD, "/").await.status(), 429);
}

#[tokio::test]
async fn an_ipv6_client_is_counted_by_its_64() {
    let server_extra = "trusted_proxies = [\"127.0.0.1/32\"]".to_string();
    let gw = TestGateway::start_with(Setup { server_extra, ..with_limits(ROOMY_QUEUE) }).await;
    let client = gw.browser();
    let csrf = signin_csrf(&gw, &client).await;
    let from =
        |address: &str, i: usize| signin_post(&gw, &client, &csrf, &format!("nobody{i}"), "guess").header("x-forwarded-for", address);
    for i in 0..30 {
        let response = from(&format!("2001:db8:1:2::{i:x}"), i).send().await.unwrap();
        assert_eq!(response.status(), 401);
    }
    assert_eq!(from("2001:db8:1:2:ffff::1", 30).send().await.unwrap().status(), 429, "the same /64");
    assert_eq!(from("2001:db8:1:3::1", 31).send().await.unwrap().status(), 401, "the next /64");
}
