//! ID tokens no honest provider issues: a token for another audience, an
//! expired one, another issuer's, a wrong nonce, an HMAC or unsigned token,
//! a signature by a key the provider does not publish. A real provider
//! (tests/oidc.rs) cannot be made to issue them, so a small one here
//! serves discovery, its key and a token endpoint answering with the token
//! the test crafted; the gateway must refuse each.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePrivateKey;
use serde_json::{json, Value};

const SECRET: &str = "crafted client secret";

#[derive(Clone)]
struct Fake {
    base: String,
    key: Arc<SigningKey>,
    /// The ID token the token endpoint answers with next.
    next: Arc<Mutex<String>>,
}

async fn start_fake() -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake = Fake { base, key: Arc::new(SigningKey::random(&mut rand::rngs::OsRng)), next: Arc::default() };
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", post(token))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    fake
}

async fn discovery(State(fake): State<Fake>) -> Json<Value> {
    let base = &fake.base;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/auth"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State(fake): State<Fake>) -> Json<Value> {
    let point = fake.key.verifying_key().to_encoded_point(false);
    let (x, y) = (URL_SAFE_NO_PAD.encode(point.x().unwrap()), URL_SAFE_NO_PAD.encode(point.y().unwrap()));
    Json(json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "k1", "use": "sig", "alg": "ES256" }] }))
}

async fn token(State(fake): State<Fake>) -> Json<Value> {
    let id_token = fake.next.lock().unwrap().clone();
    Json(json!({ "access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": id_token }))
}

fn es256(key: &SigningKey, claims: &Value) -> String {
    let pem = key.to_pkcs8_pem(Default::default()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap()).unwrap()
}

/// Starts a sign-in; returns its state and nonce (the browser would now go
/// to the provider).
async fn begin(gw: &TestGateway, client: &reqwest::Client) -> (String, String) {
    let signin = client.get(gw.app("/.stepgate/signin?rd=/")).send().await.unwrap();
    assert_eq!(signin.status(), 303, "{}", signin.text().await.unwrap());
    let authorize = url::Url::parse(signin.headers()["location"].to_str().unwrap()).unwrap();
    let param = |name: &str| authorize.query_pairs().find(|(k, _)| k == name).unwrap().1.to_string();
    (param("state"), param("nonce"))
}

#[tokio::test]
async fn tokens_no_honest_provider_issues_are_refused() {
    let fake = start_fake().await;
    std::env::set_var("STEPGATE_TEST_CRAFTED_SECRET", SECRET);
    let extra = format!(
        "[directory]\nkind = \"oidc\"\n[directory.oidc]\nissuer = \"{}\"\nclient_id = \"stepgate\"\nclient_secret_env = \"STEPGATE_TEST_CRAFTED_SECRET\"\n\
         redirect_uri = \"http://app.test/.stepgate/oidc/callback\"\n",
        fake.base
    );
    let gw = TestGateway::start_with(Setup { extra, ..Setup::default() }).await;
    let now = gw.now();
    let claims = |nonce: &str| json!({ "iss": fake.base, "aud": "stepgate", "sub": "alice", "preferred_username": "alice", "iat": now, "exp": now + 60, "nonce": nonce });
    let with = |mut claims: Value, name: &str, value: Value| {
        claims[name] = value;
        claims
    };
    let other_key = SigningKey::random(&mut rand::rngs::OsRng);
    type Craft<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let cases: Vec<(&str, Craft<'_>)> = vec![
        ("another audience", Box::new(|n| es256(&fake.key, &with(claims(n), "aud", json!("other"))))),
        ("expired", Box::new(|n| es256(&fake.key, &with(with(claims(n), "iat", json!(now - 600)), "exp", json!(now - 300))))),
        ("another issuer", Box::new(|n| es256(&fake.key, &with(claims(n), "iss", json!("https://evil.test"))))),
        ("another nonce", Box::new(|n| es256(&fake.key, &with(claims(n), "nonce", json!(format!("{n}x")))))),
        (
            "no nonce",
            Box::new(|n| {
                es256(&fake.key, &{
                    let mut c = claims(n);
                    c.as_object_mut().unwrap().remove("nonce");
                    c
                })
            }),
        ),
        ("signed by another key", Box::new(|n| es256(&other_key, &claims(n)))),
        (
            "HMAC under the client secret",
            Box::new(|n| {
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(n), &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
            }),
        ),
        (
            "unsigned",
            Box::new(|n| {
                let body = URL_SAFE_NO_PAD.encode(claims(n).to_string());
                format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#))
            }),
        ),
    ];
    for (what, craft) in cases {
        let client = gw.browser();
        let (state, nonce) = begin(&gw, &client).await;
        *fake.next.lock().unwrap() = craft(&nonce);
        let callback = client.get(gw.app(&format!("/.stepgate/oidc/callback?code=c&state={state}"))).send().await.unwrap();
        assert_eq!(callback.status(), 403, "{what}");
        assert_eq!(client.get(gw.app("/dashboard")).send().await.unwrap().status(), 302, "{what}: not signed in");
    }

    // The same flow with an honest token signs in: the refusals above are the tokens'.
    let client = gw.browser();
    let (state, nonce) = begin(&gw, &client).await;
    *fake.next.lock().unwrap() = es256(&fake.key, &claims(&nonce));
    let callback = client.get(gw.app(&format!("/.stepgate/oidc/callback?code=c&state={state}"))).send().await.unwrap();
    assert_eq!(callback.status(), 303);
    assert_eq!(client.get(gw.app("/dashboard")).send().await.unwrap().status(), 200);
}
