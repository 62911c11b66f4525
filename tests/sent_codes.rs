//! Codes by SMS, voice and email, through the real gateway: a real SMTP
//! server on loopback (STARTTLS, authentication) and a local HTTP server
//! playing Twilio and a webhook receiver, whose requests are asserted
//! field by field.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::sms_provider::{Answer, Provider, Received};
use common::smtp::{code_in, SmtpSink, SMTP_USER};
use common::*;
use serde_json::Value;
use std::sync::Arc;

const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-token-3b9e";
const WEBHOOK_SECRET: &str = "webhook-secret-51c0";
const PHONE: &str = "+41 44 668 18 67";
const PHONE_E164: &str = "+41446681867";
const MASKED: &str = "+41 •• ••• •• 67";

fn set_secrets() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::env::set_var("STEPGATE_TEST_TWILIO_TOKEN", TWILIO_TOKEN);
        std::env::set_var("STEPGATE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET);
        std::env::set_var("STEPGATE_TEST_SMTP_PASSWORD", common::smtp::SMTP_PASSWORD);
    });
}

const APPS: &str = r#"
[[apps]]
id = "app"
hosts = ["app.test"]
upstreams = ["http://{upstream}"]

[[apps.rules]]
path = "/keys-only/"
policy = "always"
factors = ["webauthn"]

[[apps.rules]]
path = "/admin/"
policy = "always"

[[apps.rules]]
path = "/"
policy = "one_factor"
"#;

/// Which provider plays which phone channel.
enum Phones {
    /// SMS through Twilio's Messages API, voice through the webhook.
    TwilioSmsWebhookVoice,
    /// SMS through the webhook, voice through Twilio's Calls API.
    WebhookSmsTwilioVoice,
}

fn twilio(section: &str, provider: &Provider) -> String {
    format!(
        "[{section}]\ncountries = [\"CH\"]\ntimeout = \"2s\"\n[{section}.twilio]\naccount_sid = \"{TWILIO_SID}\"\n\
         auth_token_env = \"STEPGATE_TEST_TWILIO_TOKEN\"\nfrom = \"+15005550006\"\napi_url = \"{}\"\n",
        provider.url()
    )
}

fn webhook(section: &str, provider: &Provider) -> String {
    format!(
        "[{section}]\ncountries = [\"CH\"]\ntimeout = \"2s\"\n[{section}.webhook]\nurl = \"{}/hooks/{section}\"\nsecret_env = \"STEPGATE_TEST_WEBHOOK_SECRET\"\n",
        provider.url()
    )
}

async fn gateway(provider: &Provider, phones: Phones, extra: &str) -> TestGateway {
    set_secrets();
    let phones = match phones {
        Phones::TwilioSmsWebhookVoice => twilio("sms", provider) + &webhook("voice", provider),
        Phones::WebhookSmsTwilioVoice => webhook("sms", provider) + &twilio("voice", provider),
    };
    let extra = format!("[limits]\ncode_failures = 50\n{extra}\n{phones}");
    TestGateway::start_with(Setup { extra, apps: APPS.into(), ..Setup::default() }).await
}

async fn page(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

async fn post(client: &reqwest::Client, url: String, form: &[(&str, &str)]) -> reqwest::Response {
    client.post(url).form(form).send().await.unwrap()
}

/// Sends a code to `destination` to add it; returns the page that asks for it.
async fn start_enrolment(gw: &TestGateway, client: &reqwest::Client, kind: &str, channel: &str, destination: &str) -> reqwest::Response {
    let form = page(client, gw.app(&format!("/.stepgate/enrol/{kind}?rd=/admin/"))).await;
    let csrf = form_value(&form, "csrf");
    let fields = [("csrf", csrf.as_str()), ("rd", "/admin/"), ("channel", channel), ("destination", destination)];
    post(client, gw.app("/.stepgate/enrol/send"), &fields).await
}

async fn confirm_enrolment(gw: &TestGateway, client: &reqwest::Client, code_page: &str, code: &str) -> reqwest::Response {
    let csrf = form_value(code_page, "csrf");
    post(client, gw.app("/.stepgate/enrol/confirm"), &[("csrf", csrf.as_str()), ("rd", "/admin/"), ("code", code)]).await
}

/// Adds Alice's phone by SMS right after her password: her first factor.
async fn enrol_phone_by_sms(gw: &TestGateway, provider: &Provider, client: &reqwest::Client) {
    sign_in(gw, client, ALICE, ALICE_PASSWORD, "/admin/").await;
    let sent = start_enrolment(gw, client, "phone", "sms", PHONE).await;
    assert_eq!(sent.status(), 200);
    let code_page = sent.text().await.unwrap();
    let code = sms_code(&provider.last());
    let done = confirm_enrolment(gw, client, &code_page, &code).await;
    assert_eq!(done.status(), 303, "{}", done.text().await.unwrap());
}

/// The code in a Twilio SMS, or a webhook's JSON.
fn sms_code(received: &Received) -> String {
    let text = if received.path.starts_with("/hooks/") {
        serde_json::from_str::<Value>(&received.body).unwrap()["code"].as_str().unwrap().to_string()
    } else {
        received.field("Body")
    };
    regex::Regex::new(r"\d{6}").unwrap().find(&text).unwrap().as_str().to_string()
}

/// The id of Alice's phone or address, as the second-factor page names it (`sms:3`).
fn method_on(page: &str, channel: &str) -> String {
    let pattern = format!(r#"method=({channel}%3A\d+)|name="method" value="({channel}:\d+)""#);
    let captures = regex::Regex::new(&pattern).unwrap().captures(page).unwrap_or_else(|| panic!("no {channel} choice in:\n{page}"));
    captures.get(1).or(captures.get(2)).unwrap().as_str().replace("%3A", ":")
}

/// Asks for a code by `method` on the challenge page.
async fn send_code(gw: &TestGateway, client: &reqwest::Client, method: &str) -> reqwest::Response {
    let challenge = page(client, gw.app(&format!("/.stepgate/second-factor?method={method}&rd=/admin/"))).await;
    let csrf = form_value(&challenge, "csrf");
    post(client, gw.app("/.stepgate/second-factor/send"), &[("csrf", csrf.as_str()), ("rd", "/admin/"), ("method", method)]).await
}

async fn type_code(gw: &TestGateway, client: &reqwest::Client, code: &str) -> reqwest::Response {
    let challenge = page(client, gw.app("/.stepgate/second-factor?rd=/admin/")).await;
    let csrf = form_value(&challenge, "csrf");
    post(client, gw.app("/.stepgate/second-factor/code"), &[("csrf", csrf.as_str()), ("rd", "/admin/"), ("code", code)]).await
}

#[tokio::test]
async fn a_phone_is_verified_by_sms_then_signs_in_by_sms() {
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, "").await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/admin/").await;
    let first = page(&client, gw.app("/.stepgate/second-factor?rd=/admin/")).await;
    assert!(first.contains("/.stepgate/enrol/phone"), "a first factor may be a phone");
    assert!(!first.contains("/.stepgate/enrol/email"), "email is not offered alone");

    let sent = start_enrolment(&gw, &client, "phone", "sms", PHONE).await;
    assert_eq!(sent.status(), 200);
    let code_page = sent.text().await.unwrap();
    assert!(code_page.contains(&format!("We texted a code to {MASKED}")), "{code_page}");

    // Exactly what Twilio's Messages API takes.
    let request = provider.last();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"));
    assert_eq!(request.header("authorization"), format!("Basic {}", STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}"))));
    assert_eq!(request.header("content-type"), "application/x-www-form-urlencoded");
    let code = sms_code(&request);
    let expected = [
        ("To".to_string(), PHONE_E164.to_string()),
        ("From".to_string(), "+15005550006".to_string()),
        ("Body".to_string(), format!("{code} is your stepgate code.\n\n@app.test #{code}")),
    ];
    assert_eq!(request.form(), expected);
    assert!(!page(&client, gw.app("/.stepgate/settings")).await.contains("+41"), "not a factor before its code came back");

    // A wrong code first, then the right one: the phone is the first factor.
    let wrong = confirm_enrolment(&gw, &client, &code_page, if code == "000000" { "111111" } else { "000000" }).await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("4 tries left"));
    let done = confirm_enrolment(&gw, &client, &code_page, &code).await;
    assert_eq!(done.status(), 303);
    assert!(done.headers()["location"].to_str().unwrap().starts_with("/.stepgate/recovery-codes"), "a first factor brings recovery codes");
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
    assert_eq!(last_assertion_claims(&gw)["amr"], serde_json::json!(["pwd", "sms", "mfa"]));
    let settings = page(&client, gw.app("/.stepgate/settings")).await;
    assert!(settings.contains(MASKED) && settings.contains("phone number"), "{settings}");

    // Another browser signs in by SMS.
    let other = gw.browser();
    sign_in(&gw, &other, ALICE, ALICE_PASSWORD, "/admin/").await;
    let challenge = page(&other, gw.app("/.stepgate/second-factor?rd=/admin/")).await;
    let method = method_on(&challenge, "sms");
    assert!(challenge.contains(&format!("We will text a code to {MASKED}")), "{challenge}");
    assert!(challenge.contains("Call +41"), "try another way offers the call");
    gw.clock.advance(31);
    let sent = send_code(&gw, &other, &method).await;
    assert_eq!(sent.status(), 200);
    assert!(sent.text().await.unwrap().contains("We texted a code"));
    let code = sms_code(&provider.last());
    let passed = type_code(&gw, &other, &code).await;
    assert_eq!(passed.status(), 303);
    assert_eq!(passed.headers()["location"], "/admin/");
    assert_eq!(other.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
    assert_eq!(last_assertion_claims(&gw)["amr"], serde_json::json!(["pwd", "sms", "mfa"]));

    // The code is spent: typing it again finds nothing.
    let again = type_code(&gw, &other, &code).await;
    assert_eq!(again.status(), 401);
    assert!(again.text().await.unwrap().contains("expired or was already used"));
}

#[tokio::test]
async fn a_call_through_the_webhook_is_signed_and_signs_in() {
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, "").await;
    let client = gw.browser();
    enrol_phone_by_sms(&gw, &provider, &client).await;

    let caller = gw.browser();
    sign_in(&gw, &caller, ALICE, ALICE_PASSWORD, "/admin/").await;
    let challenge = page(&caller, gw.app("/.stepgate/second-factor?rd=/admin/")).await;
    let method = method_on(&challenge, "voice");
    gw.clock.advance(31);
    let sent = send_code(&gw, &caller, &method).await;
    assert_eq!(sent.status(), 200);
    assert!(sent.text().await.unwrap().contains(&format!("We are calling {MASKED}")));

    let request = provider.last();
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/hooks/voice"));
    assert_eq!(request.header("content-type"), "application/json");
    let timestamp = request.header("x-stepgate-timestamp");
    assert_eq!(timestamp, gw.now().to_string());
    let expected = stepgate::factors::oob::webhook::signature(WEBHOOK_SECRET.as_bytes(), gw.now(), request.body.as_bytes());
    assert_eq!(request.header("x-stepgate-signature"), expected);
    assert!(expected.starts_with("v1=") && expected.len() == 3 + 64);
    let body: Value = serde_json::from_str(&request.body).unwrap();
    let code = body["code"].as_str().unwrap().to_string();
    let digits = code.chars().map(String::from).collect::<Vec<_>>().join(", ");
    assert_eq!(
        body,
        serde_json::json!({
            "channel": "voice",
            "to": PHONE_E164,
            "code": code,
            "text": format!("Your stepgate verification code is: {digits}. Again, your code is: {digits}."),
        })
    );
    assert_eq!(type_code(&gw, &caller, &code).await.status(), 303);
    assert_eq!(caller.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
    assert_eq!(last_assertion_claims(&gw)["amr"], serde_json::json!(["pwd", "tel", "mfa"]));
}

#[tokio::test]
async fn twilio_calls_read_the_code_twice_and_provider_errors_show_a_clear_page() {
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::WebhookSmsTwilioVoice, "").await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/admin/").await;

    // Each failure: a clear page, nothing kept, and the user may ask again at once.
    for (answer, what) in [
        (Answer::Status(400, r#"{"code":21211,"message":"Invalid 'To' Phone Number"}"#), "invalid number"),
        (Answer::Status(429, r#"{"code":20429}"#), "rate limited"),
        (Answer::Status(500, "oops"), "server error"),
        (Answer::Hang, "timeout"),
    ] {
        provider.answer(answer);
        let failed = start_enrolment(&gw, &client, "phone", "voice", PHONE).await;
        assert_eq!(failed.status(), 503, "{what}");
        let text = failed.text().await.unwrap();
        assert!(text.contains("We could not send the code. Try another way"), "{what}: {text}");
        assert!(!text.contains("name=\"code\""), "{what}: no code form without a code");
    }
    assert_eq!(provider.received().len(), 4, "each failure was one request, not retried behind the user's back");

    provider.answer(Answer::Status(201, r#"{"sid":"CA01"}"#));
    let sent = start_enrolment(&gw, &client, "phone", "voice", PHONE).await;
    assert_eq!(sent.status(), 200);
    let code_page = sent.text().await.unwrap();
    let request = provider.last();
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"));
    assert_eq!(request.header("authorization"), format!("Basic {}", STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}"))));
    let twiml = request.field("Twiml");
    let code = regex::Regex::new(r"is: ((\d, ){5}\d)\.").unwrap().captures(&twiml).unwrap()[1].replace(", ", "");
    let digits = code.chars().map(String::from).collect::<Vec<_>>().join(", ");
    assert_eq!(request.field("To"), PHONE_E164);
    assert_eq!(request.field("From"), "+15005550006");
    assert_eq!(
        twiml,
        format!("<Response><Say>Your stepgate verification code is: {digits}.</Say><Pause length=\"1\"/><Say>Again, your code is: {digits}.</Say></Response>")
    );
    assert_eq!(confirm_enrolment(&gw, &client, &code_page, &code).await.status(), 303);
}

#[tokio::test]
async fn numbers_outside_the_allowed_countries_and_bad_numbers_are_refused() {
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, "").await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/admin/").await;
    for (number, message) in [
        ("+49 30 901820", "Numbers of that country cannot get codes here."),
        ("+41 900 123 456", "That kind of number cannot get codes."),
        ("044 668 18 67", "Type it with its country code"),
        ("+41 44 66<script>", "Type it with its country code"),
        ("", "Type it with its country code"),
    ] {
        let refused = start_enrolment(&gw, &client, "phone", "sms", number).await;
        assert_eq!(refused.status(), 400, "{number}");
        assert!(refused.text().await.unwrap().contains(message), "{number}");
    }
    assert!(provider.received().is_empty(), "nothing was sent");
    let unknown = start_enrolment(&gw, &client, "phone", "fax", PHONE).await;
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn codes_are_bound_to_their_session_expire_and_die_after_five_wrong_tries() {
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, "").await;
    enrol_phone_by_sms(&gw, &provider, &gw.browser()).await;
    let (first, second) = (gw.browser(), gw.browser());
    sign_in(&gw, &first, ALICE, ALICE_PASSWORD, "/admin/").await;
    sign_in(&gw, &second, ALICE, ALICE_PASSWORD, "/admin/").await;
    let method = method_on(&page(&first, gw.app("/.stepgate/second-factor")).await, "sms");

    // A code asked for by one session does not pass another.
    gw.clock.advance(31);
    assert_eq!(send_code(&gw, &first, &method).await.status(), 200);
    let code = sms_code(&provider.last());
    let elsewhere = type_code(&gw, &second, &code).await;
    assert_eq!(elsewhere.status(), 401);
    assert_eq!(second.get(gw.app("/admin/")).send().await.unwrap().status(), 302);

    // An expired code is refused.
    gw.clock.advance(301);
    let expired = type_code(&gw, &first, &code).await;
    assert_eq!(expired.status(), 401);
    assert!(expired.text().await.unwrap().contains("expired or was already used"));

    // Five wrong tries end a code; the sixth try, even the right code, finds none.
    assert_eq!(send_code(&gw, &first, &method).await.status(), 200);
    let code = sms_code(&provider.last());
    let wrong = if code == "123456" { "654321" } else { "123456" };
    for left in (1..=4).rev() {
        let response = type_code(&gw, &first, wrong).await;
        assert_eq!(response.status(), 401);
        let text = response.text().await.unwrap();
        assert!(text.contains(&format!("{left} tr")), "{left}: {text}");
    }
    let last = type_code(&gw, &first, wrong).await;
    assert!(last.text().await.unwrap().contains("That was the last try for that code"));
    let sixth = type_code(&gw, &first, &code).await;
    assert_eq!(sixth.status(), 401);
    assert_eq!(first.get(gw.app("/admin/")).send().await.unwrap().status(), 302, "still no second factor");
}

#[tokio::test]
async fn resends_wait_their_turn_and_the_hourly_limit_holds() {
    let provider = Provider::start().await;
    let limits = "[codes]\nper_destination = { hour = 3, day = 5 }\n";
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, limits).await;
    enrol_phone_by_sms(&gw, &provider, &gw.browser()).await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/admin/").await;
    let method = method_on(&page(&client, gw.app("/.stepgate/second-factor")).await, "sms");
    gw.clock.advance(31);
    assert_eq!(send_code(&gw, &client, &method).await.status(), 200);
    let too_soon = send_code(&gw, &client, &method).await;
    assert_eq!(too_soon.status(), 429);
    assert!(too_soon.headers().contains_key("retry-after"));
    let text = too_soon.text().await.unwrap();
    assert!(text.contains("A code is on its way. Wait 30 seconds"), "{text}");
    assert!(text.contains("name=\"code\""), "the code already sent can still be typed");

    // The enrolment's code and two more make three this hour for the number.
    gw.clock.advance(31);
    assert_eq!(send_code(&gw, &client, &method).await.status(), 200);
    gw.clock.advance(31);
    let limited = send_code(&gw, &client, &method).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.text().await.unwrap().contains("Too many codes were sent"));
    let sent = provider.received().len();
    assert_eq!(sent, 3);

    // The limit and the refusal are in the audit log.
    let events = gw.gateway().store.audit_events(&stepgate::store::AuditQuery { limit: 50, ..Default::default() }).await.unwrap();
    assert!(events.iter().any(|e| e.details.contains("send_limit")), "{events:?}");
    assert!(events.iter().any(|e| e.details.contains("resend_too_soon")));

    gw.clock.advance(3600);
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/admin/").await;
    assert_eq!(send_code(&gw, &client, &method).await.status(), 200, "a new hour, a new allowance");
}

#[tokio::test]
async fn a_security_key_route_refuses_a_user_who_has_only_a_phone() {
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, "").await;
    let client = gw.browser();
    enrol_phone_by_sms(&gw, &provider, &client).await;
    assert_eq!(client.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
    let reached = gw.upstream.count();
    let refused = client.get(gw.app("/keys-only/report")).send().await.unwrap();
    assert_eq!(refused.status(), 302);
    let location = refused.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/.stepgate/second-factor") && location.contains("need=security_key,platform"), "{location}");
    let offered = page(&client, gw.app(&location)).await;
    assert!(!offered.contains("sms:"), "an SMS cannot satisfy a security-key route");
    assert_eq!(gw.upstream.count(), reached, "the app never saw it");
}

#[tokio::test]
async fn email_codes_go_through_smtp_and_need_another_factor() {
    let smtp = SmtpSink::start().await;
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, &smtp.email_section("")).await;

    // Bob has no factor: email cannot be his first.
    let bob = gw.browser();
    sign_in(&gw, &bob, BOB, BOB_PASSWORD, "/admin/").await;
    let refused = bob.get(gw.app("/.stepgate/enrol/email?rd=/admin/")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("Email can only be added beside another factor"));
    let first = page(&bob, gw.app("/.stepgate/second-factor?rd=/admin/")).await;
    assert!(!first.contains("enrol-email"));

    // Alice adds her directory address after her phone.
    let client = gw.browser();
    enrol_phone_by_sms(&gw, &provider, &client).await;
    let form = page(&client, gw.app("/.stepgate/enrol/email?rd=/admin/")).await;
    assert!(form.contains("alice@example.com"), "{form}");
    // The typed address is ignored: only the directory's may be added.
    let sent = start_enrolment(&gw, &client, "email", "email", "mallory@evil.test").await;
    assert_eq!(sent.status(), 200);
    let code_page = sent.text().await.unwrap();
    assert!(code_page.contains("We emailed a code to a•••@example.com"), "{code_page}");
    let message = smtp.message(1).await;
    assert!(message.contains("X-Envelope-To: alice@example.com\r\n"), "{message}");
    assert!(message.contains(&format!("X-Authenticated-As: {SMTP_USER}\r\n")), "the gateway authenticated after STARTTLS");
    assert!(message.contains("From: \"Example Security\" <security@example.com>"), "{message}");
    assert!(message.contains("multipart/alternative"));
    let code = code_in(&message);
    assert_eq!(confirm_enrolment(&gw, &client, &code_page, &code).await.status(), 303);

    // A new browser signs in with the emailed code.
    let other = gw.browser();
    sign_in(&gw, &other, ALICE, ALICE_PASSWORD, "/admin/").await;
    let method = method_on(&page(&other, gw.app("/.stepgate/second-factor")).await, "email");
    gw.clock.advance(31);
    assert_eq!(send_code(&gw, &other, &method).await.status(), 200);
    let code = code_in(&smtp.message(2).await);
    assert_eq!(type_code(&gw, &other, &code).await.status(), 303);
    assert_eq!(other.get(gw.app("/admin/")).send().await.unwrap().status(), 200);
    assert_eq!(last_assertion_claims(&gw)["amr"], serde_json::json!(["pwd", "email", "mfa"]));
    smtp.stop().await;
}

#[tokio::test]
async fn a_stopped_smtp_server_shows_a_clear_page() {
    let smtp = SmtpSink::start().await;
    let provider = Provider::start().await;
    let section = smtp.email_section("alone = true");
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, &section).await;
    smtp.stop().await;
    let client = gw.browser();
    sign_in(&gw, &client, BOB, BOB_PASSWORD, "/admin/").await;
    assert!(page(&client, gw.app("/.stepgate/second-factor?rd=/admin/")).await.contains("enrol-email"), "alone: email may be first");
    let failed = start_enrolment(&gw, &client, "email", "email", "").await;
    assert_eq!(failed.status(), 503);
    assert!(failed.text().await.unwrap().contains("We could not send the code"));
}

#[tokio::test]
async fn the_security_page_renames_and_removes_a_phone_but_not_the_last_factor() {
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, "").await;
    let client = gw.browser();
    enrol_phone_by_sms(&gw, &provider, &client).await;
    let settings = page(&client, gw.app("/.stepgate/settings")).await;
    let handle = regex::Regex::new(r#"name="factor" value="(oob:\d+)""#).unwrap().captures(&settings).unwrap()[1].to_string();
    let csrf = form_value(&settings, "csrf");

    let renamed =
        post(&client, gw.app("/.stepgate/settings/factors/rename"), &[("csrf", &csrf), ("factor", &handle), ("name", "Work mobile")]).await;
    assert!(renamed.text().await.unwrap().contains("Work mobile"));

    // Every app rule here asks for a second factor: the only one stays.
    let remove = [("csrf", csrf.as_str()), ("factor", handle.as_str())];
    let refused = post(&client, gw.app("/.stepgate/settings/factors/remove"), &remove).await;
    assert!(refused.text().await.unwrap().contains("This is your last second factor"));

    // With an authenticator app beside it, the phone can go.
    let add = page(&client, gw.app("/.stepgate/settings/add-totp")).await;
    let secret = regex::Regex::new(r#"id="secret">([A-Z2-7=]+)<"#).unwrap().captures(&add).unwrap()[1].to_string();
    let code = totp::code(&secret, gw.now());
    let fields = [("csrf", form_value(&add, "csrf")), ("code", code), ("rd", "/.stepgate/settings".into())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(post(&client, gw.app("/.stepgate/second-factor/totp/enroll"), &fields).await.status(), 303);
    let removed = post(&client, gw.app("/.stepgate/settings/factors/remove"), &remove).await;
    let text = removed.text().await.unwrap();
    assert!(text.contains("Removed.") && !text.contains("Work mobile"), "{text}");
    assert!(gw.gateway().store.oob_factors(ALICE).await.unwrap().is_empty());
}

/// Two instances on one PostgreSQL and one Redis: a code sent by one is
/// typed on the other, and the cool-down counted on one holds on both.
/// Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379.
#[tokio::test]
async fn codes_and_their_limits_are_shared_by_every_instance() {
    set_secrets();
    let provider = Provider::start().await;
    let backends = common::backends::SharedBackends::new().await;
    let clock = stepgate::clock::ManualClock::new();
    let users = users_file();
    let setup = || Setup {
        extra: format!("{}\n[limits]\ncode_failures = 50\n{}", backends.config(), twilio("sms", &provider)),
        apps: APPS.into(),
        users: Some(users.clone()),
        ..Setup::default()
    };
    let a = TestGateway::start_on_backends(setup(), clock.clone()).await;
    let b = TestGateway::start_on_backends(setup(), clock.clone()).await;
    // A browser whose requests a load balancer sends to either instance.
    let browser = || {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client =
            |gw: &TestGateway| gw.client_builder().cookie_provider(jar.clone()).default_headers(browser_headers()).build().unwrap();
        (client(&a), client(&b))
    };

    // Alice's phone, as an earlier enrolment left it (the cache's windows run
    // on Redis's own clock, so this test sends no code it would have to wait out).
    let phone = stepgate::store::OobRow {
        id: 0,
        username: ALICE.into(),
        channel: "phone".into(),
        destination: PHONE_E164.into(),
        name: "Mobile".into(),
        created: a.now(),
        last_used: None,
    };
    a.gateway().store.insert_oob(&phone).await.unwrap().expect("a new phone");

    // The code is asked for on B, resent too soon on A, typed on A.
    let (on_a, on_b) = browser();
    sign_in(&b, &on_b, ALICE, ALICE_PASSWORD, "/admin/").await;
    let method = method_on(&page(&on_b, b.app("/.stepgate/second-factor")).await, "sms");
    assert_eq!(send_code(&b, &on_b, &method).await.status(), 200);
    let code = sms_code(&provider.last());
    assert_eq!(send_code(&a, &on_a, &method).await.status(), 429, "the cool-down is shared");
    assert_eq!(type_code(&a, &on_a, &code).await.status(), 303);
    assert_eq!(on_b.get(b.app("/admin/")).send().await.unwrap().status(), 200);
    drop((a, b));
}

#[tokio::test]
async fn a_phone_only_route_leads_a_user_with_an_app_to_add_a_phone() {
    let provider = Provider::start().await;
    let apps = APPS.replace(
        "path = \"/admin/\"",
        "path = \"/phone-only/\"\npolicy = \"always\"\nfactors = [\"phone\"]\n\n[[apps.rules]]\npath = \"/admin/\"",
    );
    set_secrets();
    let extra = format!("[limits]\ncode_failures = 50\n{}", twilio("sms", &provider));
    let gw = TestGateway::start_with(Setup { extra, apps, ..Setup::default() }).await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/admin/").await;
    enroll_totp(&gw, &client).await;
    let step_up = client.get(gw.app("/phone-only/")).send().await.unwrap();
    assert_eq!(step_up.status(), 302);
    let location = step_up.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("need=sms,voice"), "{location}");
    // Just after the app's code: the user may add a phone, and is sent to do so.
    let add = client.get(gw.app(&location)).send().await.unwrap();
    assert_eq!(add.status(), 303);
    assert!(add.headers()["location"].to_str().unwrap().starts_with("/.stepgate/enrol/phone?rd="));
    let sent = start_enrolment(&gw, &client, "phone", "sms", PHONE).await;
    let code_page = sent.text().await.unwrap();
    let added = confirm_enrolment(&gw, &client, &code_page, &sms_code(&provider.last())).await;
    assert_eq!(added.status(), 303);
    // An added factor passes nothing by itself: the route asks for a code by SMS.
    let again = client.get(gw.app("/phone-only/")).send().await.unwrap();
    assert_eq!(again.status(), 302);
    let challenge = page(&client, gw.app(again.headers()["location"].to_str().unwrap())).await;
    let method = method_on(&challenge, "sms");
    assert!(!challenge.contains("authenticator app"), "the app does not satisfy this route");
    gw.clock.advance(31);
    assert_eq!(send_code(&gw, &client, &method).await.status(), 200);
    assert_eq!(type_code(&gw, &client, &sms_code(&provider.last())).await.status(), 303);
    assert_eq!(client.get(gw.app("/phone-only/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn hostile_forms_get_a_clear_4xx_and_send_nothing() {
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, "").await;
    let endpoints = ["/.stepgate/second-factor/send", "/.stepgate/second-factor/code", "/.stepgate/enrol/send", "/.stepgate/enrol/confirm"];
    for path in endpoints {
        let anonymous = post(&gw.browser(), gw.app(path), &[("csrf", "x"), ("method", "sms:1"), ("code", "1"), ("channel", "sms")]).await;
        assert_eq!(anonymous.status(), 403, "{path} without a session");
    }
    let client = gw.browser();
    enrol_phone_by_sms(&gw, &provider, &client).await;
    let sent_before = provider.received().len();
    let csrf = form_value(&page(&client, gw.app("/.stepgate/settings")).await, "csrf");
    for path in endpoints {
        let forged = post(&client, gw.app(path), &[("csrf", "forged"), ("method", "sms:1"), ("code", "1"), ("channel", "sms")]).await;
        assert_eq!(forged.status(), 403, "{path} with a forged CSRF token");
        let empty = client.post(gw.app(path)).header("content-type", "application/x-www-form-urlencoded").body("").send().await.unwrap();
        assert_eq!(empty.status(), 400, "{path} with an empty form");
        let json = client.post(gw.app(path)).json(&serde_json::json!({"csrf": csrf, "code": "1"})).send().await.unwrap();
        assert_eq!(json.status(), 400, "{path} with JSON");
    }
    for method in ["sms", "sms:", "sms:x", "sms:99999999999999999999999", "fax:1", "sms:-1", "email:1", &"s".repeat(10_000)] {
        let refused = post(&client, gw.app("/.stepgate/second-factor/send"), &[("csrf", &csrf), ("method", method)]).await;
        assert_eq!(refused.status(), 400, "method {method:?}");
    }
    for code in ["", "abcdef", "12345", "1234567", &"9".repeat(10_000), "١٢٣٤٥٦", "12345\u{0}6"] {
        let refused = post(&client, gw.app("/.stepgate/second-factor/code"), &[("csrf", &csrf), ("code", code)]).await;
        assert_eq!(refused.status(), 401, "code {code:?}");
    }
    let long = "+41".to_string() + &"4".repeat(100_000);
    let refused = post(&client, gw.app("/.stepgate/enrol/send"), &[("csrf", &csrf), ("channel", "sms"), ("destination", &long)]).await;
    assert!(refused.status().is_client_error(), "a long number: {}", refused.status());
    assert_eq!(provider.received().len(), sent_before, "nothing was sent");
}

#[tokio::test]
async fn a_reload_changes_the_channels_and_a_missing_secret_keeps_the_running_ones() {
    let provider = Provider::start().await;
    let gw = gateway(&provider, Phones::TwilioSmsWebhookVoice, "").await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/admin/").await;
    let german = "+49 30 901820";
    assert_eq!(start_enrolment(&gw, &client, "phone", "sms", german).await.status(), 400);

    let rewrite = |from: &str, to: &str| {
        let text = std::fs::read_to_string(gw.config_path()).unwrap();
        assert!(text.contains(from), "the test config has {from:?}");
        std::fs::write(gw.config_path(), text.replacen(from, to, 1)).unwrap();
    };
    rewrite("countries = [\"CH\"]", "countries = [\"CH\", \"DE\"]");
    gw.running.live.reload().expect("the new channels load");
    assert_eq!(start_enrolment(&gw, &client, "phone", "sms", german).await.status(), 200, "Germany is allowed now");
    assert_eq!(provider.last().field("To"), "+4930901820");

    // A provider secret that cannot be read refuses the reload, not the channel.
    rewrite("STEPGATE_TEST_TWILIO_TOKEN", "STEPGATE_TEST_NO_SUCH_TOKEN");
    let refused = gw.running.live.reload().expect_err("a missing secret is refused").to_string();
    assert!(refused.contains("STEPGATE_TEST_NO_SUCH_TOKEN") && refused.contains("not set"), "{refused}");
    assert_eq!(start_enrolment(&gw, &client, "phone", "sms", PHONE).await.status(), 200, "the running channels still send");
    assert_eq!(provider.last().header("authorization"), format!("Basic {}", STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}"))));
}
