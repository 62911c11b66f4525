//! Signing keys: created on first start, sealed at rest in the data
//! directory, rotated on demand.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::EncodingKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::UnixTime;
use crate::crypto::{sha256, Secrets};

const KEYS_FILE: &str = "signing-keys.json";
const SEAL_CONTEXT: &[u8] = b"assertion signing key";
/// Extra time a retired key stays published, for clocks that drift.
const RETIRED_GRACE_SECS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is damaged: {1}")]
    Corrupt(String, String),
    #[error("no signing key is active")]
    NoActiveKey,
    #[error("signing failed: {0}")]
    Sign(jsonwebtoken::errors::Error),
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
    modified: Option<SystemTime>,
}

impl KeyRing {
    pub fn load_or_create(dir: &Path, secrets: &Secrets, now: UnixTime) -> Result<Self, KeyError> {
        let path = dir.join(KEYS_FILE);
        if !path.exists() {
            std::fs::create_dir_all(dir).map_err(|e| KeyError::Io(dir.display().to_string(), e))?;
            let mut file = KeysFile::default();
            file.keys.push(new_key(secrets, now));
            write_file(&path, &file)?;
        }
        Self::read(&path, secrets)
    }

    pub fn reload_if_changed(dir: &Path, secrets: &Secrets, current: &KeyRing) -> Result<Option<Self>, KeyError> {
        let path = dir.join(KEYS_FILE);
        if modified(&path) == current.modified {
            return Ok(None);
        }
        Self::read(&path, secrets).map(Some)
    }

    pub fn rotate(dir: &Path, secrets: &Secrets, now: UnixTime, lifetime: i64) -> Result<String, KeyError> {
        let path = dir.join(KEYS_FILE);
        Self::load_or_create(dir, secrets, now)?;
        let mut file = read_file(&path)?;
        // Keys retired long enough ago that no token they signed is alive go.
        file.keys.retain(|k| k.retired_at.is_none_or(|at| now - at <= lifetime + RETIRED_GRACE_SECS));
        for key in &mut file.keys {
            key.retired_at.get_or_insert(now);
        }
        let fresh = new_key(secrets, now);
        let kid = fresh.kid.clone();
        file.keys.insert(0, fresh);
        write_file(&path, &file)?;
        Ok(kid)
    }

    fn read(path: &Path, secrets: &Secrets) -> Result<Self, KeyError> {
        let modified = modified(path);
        let file = read_file(path)?;
        let shown = path.display().to_string();
        let keys = file
            .keys
            .iter()
            .map(|stored| open_key(stored, secrets).map_err(|why| KeyError::Corrupt(shown.clone(), why)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys, modified })
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

fn read_file(path: &Path) -> Result<KeysFile, KeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io(shown.clone(), e))?;
    serde_json::from_str(&text).map_err(|e| KeyError::Corrupt(shown, e.to_string()))
}

/// Writes through a temporary file and a rename, so a crash never leaves
/// half a key file.
fn write_file(path: &Path, file: &KeysFile) -> Result<(), KeyError> {
    let shown = path.display().to_string();
    let tmp: PathBuf = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(file).map_err(|e| KeyError::Corrupt(shown.clone(), e.to_string()))?;
    write_private(&tmp, text.as_bytes()).map_err(|e| KeyError::Io(shown.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| KeyError::Io(shown, e))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
