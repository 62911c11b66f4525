//! Signing keys: created on first start, sealed at rest in the store,
//! rotated on demand. The store keeps them as opaque JSON with a version;
//! which backend holds them (a file beside SQLite, a PostgreSQL row) is
//! none of this module's business.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::EncodingKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::UnixTime;
use crate::crypto::{sha256, Secrets};
use crate::store::{KeyStore, StoreError, StoredSigningKeys};

const SEAL_CONTEXT: &[u8] = b"assertion signing key";
/// Extra time a retired key stays published, for clocks that drift.
const RETIRED_GRACE_SECS: i64 = 60;
/// Compare-and-swap attempts before giving up on a store that keeps
/// changing under us (another instance rotating in a loop, say).
const WRITE_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing keys: {0}")]
    Store(#[from] StoreError),
    #[error("the signing keys are damaged: {0}")]
    Corrupt(String),
    #[error("the signing keys are gone from the store")]
    Missing,
    #[error("the signing keys kept changing while being written; try again")]
    Contended,
    #[error("no signing key is active")]
    NoActiveKey,
    #[error("signing failed: {0}")]
    Sign(jsonwebtoken::errors::Error),
    #[error("the signed token cannot be sent as a header")]
    NotAHeader,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created: UnixTime,
    retired_at: Option<UnixTime>,
    /// PKCS#8 DER, sealed, in base64.
    sealed_pkcs8: String,
}

#[derive(Serialize, Deserialize, Default)]
struct KeysFile {
    keys: Vec<StoredKey>,
}

impl KeysFile {
    fn parse(json: &str) -> Result<Self, KeyError> {
        serde_json::from_str(json).map_err(|e| KeyError::Corrupt(e.to_string()))
    }

    fn to_json(&self) -> Result<String, KeyError> {
        serde_json::to_string_pretty(self).map_err(|e| KeyError::Corrupt(e.to_string()))
    }
}

pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    retired_at: Option<UnixTime>,
    x: String,
    y: String,
}

pub struct KeyRing {
    /// The active key first, then retired ones.
    keys: Vec<SigningKey>,
    /// The store's version of what this ring was read from.
    version: i64,
}

impl KeyRing {
    /// The stored keys, after creating a first one if there are none.
    pub async fn load_or_create(store: &dyn KeyStore, secrets: &Secrets, now: UnixTime) -> Result<Self, KeyError> {
        let stored = stored_or_created(store, secrets, now).await?;
        Self::open(&stored, secrets)
    }

    /// The keys again if their version in the store changed: one cheap
    /// read when nothing did.
    pub async fn reload_if_changed(store: &dyn KeyStore, secrets: &Secrets, current: &KeyRing) -> Result<Option<Self>, KeyError> {
        if store.signing_keys_version().await? == Some(current.version) {
            return Ok(None);
        }
        let stored = store.signing_keys().await?.ok_or(KeyError::Missing)?;
        Self::open(&stored, secrets).map(Some)
    }

    /// Adds a key and retires the others, with a compare-and-swap so that
    /// a concurrent rotation is not lost. Returns the new key id.
    pub async fn rotate(store: &dyn KeyStore, secrets: &Secrets, now: UnixTime, lifetime: i64) -> Result<String, KeyError> {
        for _ in 0..WRITE_ATTEMPTS {
            let stored = stored_or_created(store, secrets, now).await?;
            let mut file = KeysFile::parse(&stored.json)?;
            // Keys retired long enough ago that no token they signed is alive go.
            file.keys.retain(|k| k.retired_at.is_none_or(|at| now - at <= lifetime + RETIRED_GRACE_SECS));
            for key in &mut file.keys {
                key.retired_at.get_or_insert(now);
            }
            let fresh = new_key(secrets, now);
            let kid = fresh.kid.clone();
            file.keys.insert(0, fresh);
            if store.save_signing_keys(Some(stored.version), &file.to_json()?).await? {
                return Ok(kid);
            }
        }
        Err(KeyError::Contended)
    }

    fn open(stored: &StoredSigningKeys, secrets: &Secrets) -> Result<Self, KeyError> {
        let file = KeysFile::parse(&stored.json)?;
        let keys = file.keys.iter().map(|k| open_key(k, secrets).map_err(KeyError::Corrupt)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys, version: stored.version })
    }
    pub fn signing_key(&self) -> Result<&SigningKey, KeyError> {
        self.keys.iter().find(|k| k.retired_at.is_none()).ok_or(KeyError::NoActiveKey)
    }

    pub fn jwks(&self, now: UnixTime, lifetime: i64) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .filter(|k| k.retired_at.is_none_or(|at| now - at <= lifetime + RETIRED_GRACE_SECS))
            .map(|k| json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": k.kid, "x": k.x, "y": k.y}))
            .collect();
        json!({ "keys": keys })
    }
}

/// The stored keys; when there are none, a first key is created with a
/// compare-and-swap, so of two instances starting at once one key wins and
/// both use it.
async fn stored_or_created(store: &dyn KeyStore, secrets: &Secrets, now: UnixTime) -> Result<StoredSigningKeys, KeyError> {
    for _ in 0..WRITE_ATTEMPTS {
        if let Some(stored) = store.signing_keys().await? {
            return Ok(stored);
        }
        let first = KeysFile { keys: vec![new_key(secrets, now)] };
        store.save_signing_keys(None, &first.to_json()?).await?;
    }
    Err(KeyError::Contended)
}

fn new_key(secrets: &Secrets, now: UnixTime) -> StoredKey {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = secret.to_pkcs8_der().expect("a fresh P-256 key encodes as PKCS#8");
    let point = secret.public_key().to_encoded_point(false);
    StoredKey {
        kid: URL_SAFE_NO_PAD.encode(&sha256(point.as_bytes())[..12]),
        created: now,
        retired_at: None,
        sealed_pkcs8: STANDARD.encode(secrets.seal(SEAL_CONTEXT, der.as_bytes())),
    }
}

fn open_key(stored: &StoredKey, secrets: &Secrets) -> Result<SigningKey, String> {
    let sealed = STANDARD.decode(&stored.sealed_pkcs8).map_err(|e| format!("key {}: {e}", stored.kid))?;
    let der = secrets.open(SEAL_CONTEXT, &sealed).map_err(|e| format!("key {}: {e}", stored.kid))?;
    let secret = p256::SecretKey::from_pkcs8_der(&der).map_err(|e| format!("key {}: {e}", stored.kid))?;
    let point = secret.public_key().to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(format!("key {}: not an uncompressed point", stored.kid));
    };
    Ok(SigningKey {
        kid: stored.kid.clone(),
        encoding: EncodingKey::from_ec_der(&der),
        retired_at: stored.retired_at,
        x: URL_SAFE_NO_PAD.encode(x),
        y: URL_SAFE_NO_PAD.encode(y),
    })
}
