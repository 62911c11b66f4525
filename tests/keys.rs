//! Signing keys: rotation keeps earlier assertions verifiable, and the
//! gateway refuses to start without an encryption key.

mod common;

use common::*;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use stepgate::crypto::Secrets;

async fn assertion_for(gw: &TestGateway, client: &reqwest::Client) -> String {
    assert_eq!(client.get(gw.app("/")).send().await.unwrap().status(), 200);
    gw.upstream.last().headers["x-stepgate-assertion"].to_str().unwrap().to_string()
}

fn verifies(token: &str, jwks: &jsonwebtoken::jwk::JwkSet) -> bool {
    let Some(jwk) = decode_header(token).ok().and_then(|h| h.kid).and_then(|kid| jwks.find(&kid).cloned()) else {
        return false;
    };
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["app"]);
    decode::<serde_json::Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation).is_ok()
}

#[tokio::test]
async fn rotation_keeps_live_assertions_verifiable() {
    let gw = TestGateway::start().await;
    let client = gw.browser();
    sign_in(&gw, &client, ALICE, ALICE_PASSWORD, "/").await;
    let old_token = assertion_for(&gw, &client).await;
    assert_eq!(fetch_jwks(&gw).await.keys.len(), 1);

    let secrets = Secrets::from_master(&MASTER_KEY);
    let store = stepgate::store::key_store(gw.gateway().store.clone());
    let new_kid = stepgate::assertion::rotate_keys(store.as_ref(), &secrets, gw.now(), 300).await.unwrap();
    assert!(gw.gateway().assertions.reload_keys().await.unwrap(), "the gateway sees the new key");
    let jwks = fetch_jwks(&gw).await;
    assert_eq!(jwks.keys.len(), 2, "old and new key are published");
    assert!(verifies(&old_token, &jwks), "a token signed before the rotation still verifies");

    // Once the cached token is near its end, a new one is signed with the new key.
    gw.clock.advance(250);
    let new_token = assertion_for(&gw, &client).await;
    assert_eq!(decode_header(&new_token).unwrap().kid.as_deref(), Some(new_kid.as_str()));
    assert!(verifies(&new_token, &fetch_jwks(&gw).await));

    // When no token of the old key can be alive, the old key leaves the JWKS.
    gw.clock.advance(300);
    let jwks = fetch_jwks(&gw).await;
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].common.key_id.as_deref(), Some(new_kid.as_str()));
}

#[tokio::test]
async fn keys_survive_a_restart_and_are_sealed_at_rest() {
    let gw = TestGateway::start().await;
    let jwks = fetch_jwks(&gw).await;
    let stored = std::fs::read_to_string(gw.data_dir().join("signing-keys.json")).unwrap();
    assert!(!stored.contains("PRIVATE KEY"), "the private key is not stored in the clear");
    let store = stepgate::store::key_store(gw.gateway().store.clone());
    let ring = stepgate::assertion::KeyRing::load_or_create(store.as_ref(), &Secrets::from_master(&MASTER_KEY), gw.now()).await.unwrap();
    assert_eq!(ring.jwks(gw.now(), 300)["keys"][0]["kid"], jwks.keys[0].common.key_id.clone().unwrap().as_str());
    let wrong_key = stepgate::assertion::KeyRing::load_or_create(store.as_ref(), &Secrets::from_master(&[1; 32]), gw.now()).await;
    let error = wrong_key.err().expect("another master key cannot open the keys").to_string();
    assert!(error.contains("damaged") || error.contains("another key"), "{error}");
}

#[tokio::test]
async fn serve_refuses_to_start_without_an_encryption_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let config = format!(
        "users_file = \"users.toml\"\n[server]\nlisten = \"{}\"\ndata_dir = \"data\"\n[[apps]]\nid = \"a\"\nhosts = [\"a.test\"]\nupstreams = [\"http://127.0.0.1:9\"]\n",
        free_port()
    );
    let path = dir.path().join("stepgate.toml");
    std::fs::write(&path, config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove(stepgate::crypto::ENCRYPTION_KEY_ENV)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no encryption key"), "{stderr}");
    assert!(!dir.path().join("data").join("stepgate.db").exists(), "nothing was started");
}
