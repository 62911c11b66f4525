//! Secrets at rest and the keys derived from the one master key.
//!
//! One 32-byte master key (from a file or `STEPGATE_ENCRYPTION_KEY`) is
//! expanded with HKDF into a key per purpose, so a key used to seal TOTP
//! seeds is never the one that signs CSRF tokens.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

pub const ENCRYPTION_KEY_ENV: &str = "STEPGATE_ENCRYPTION_KEY";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no encryption key: set {ENCRYPTION_KEY_ENV} or secrets.encryption_key_file (generate one with `stepgate generate-key`)")]
    MissingKey,
    #[error("the encryption key must be the base64 of 32 bytes")]
    BadKey,
    #[error("cannot read the encryption key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("sealed data is damaged or was sealed with another key")]
    Unseal,
}

/// The keys derived from the master key.
pub struct Secrets {
    sealing: Aes256Gcm,
    mac_key: Zeroizing<[u8; 32]>,
}

impl Secrets {
    pub fn from_master(master: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"stepgate"), master);
        let mut sealing = Zeroizing::new([0u8; 32]);
        let mut mac_key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
        let _ = hk.expand(b"seal secrets at rest", sealing.as_mut());
        let _ = hk.expand(b"message authentication", mac_key.as_mut());
        Self { sealing: Aes256Gcm::new(sealing.as_ref().into()), mac_key }
    }

    /// Reads the master key from the environment or the configured file.
    pub fn load(key_file: Option<&std::path::Path>) -> Result<Self, CryptoError> {
        let encoded = match std::env::var(ENCRYPTION_KEY_ENV) {
            Ok(value) if !value.trim().is_empty() => Zeroizing::new(value),
            _ => match key_file {
                Some(path) => {
                    Zeroizing::new(std::fs::read_to_string(path).map_err(|e| CryptoError::KeyFile(path.display().to_string(), e))?)
                }
                None => return Err(CryptoError::MissingKey),
            },
        };
        Ok(Self::from_master(&decode_master_key(encoded.trim())?))
    }

    /// Encrypts with AES-256-GCM; `context` is bound as associated data so a
    /// sealed value cannot be moved to another row or purpose.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let nonce = Nonce::from(nonce_bytes);
        let payload = aes_gcm::aead::Payload { msg: plaintext, aad: context };
        // Encryption only fails for inputs beyond 64 GiB.
        let sealed = self.sealing.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Unseal);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Unseal)?;
        let payload = aes_gcm::aead::Payload { msg: body, aad: context };
        self.sealing.decrypt(&Nonce::from(nonce), payload).map(Zeroizing::new).map_err(|_| CryptoError::Unseal)
    }

    /// A keyed MAC of `data` for one `purpose`, as URL-safe base64: CSRF
    /// tokens, signed device cookies.
    pub fn mac(&self, purpose: &str, data: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac_of(purpose, data).finalize().into_bytes())
    }

    /// Checks a MAC from [`Secrets::mac`] in constant time.
    pub fn mac_is_valid(&self, purpose: &str, data: &str, mac: &str) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(mac.as_bytes()) else {
            return false;
        };
        self.mac_of(purpose, data).verify_slice(&raw).is_ok()
    }

    fn mac_of(&self, purpose: &str, data: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.as_ref()).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data.as_bytes());
        mac
    }
}

pub fn decode_master_key(encoded: &str) -> Result<[u8; 32], CryptoError> {
    let raw = Zeroizing::new(STANDARD.decode(encoded).or_else(|_| URL_SAFE_NO_PAD.decode(encoded)).map_err(|_| CryptoError::BadKey)?);
    raw.as_slice().try_into().map_err(|_| CryptoError::BadKey)
}

/// A new master key, base64-encoded.
pub fn generate_master_key() -> String {
    STANDARD.encode(random_bytes::<32>())
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

/// 256 random bits as URL-safe base64: session ids and similar.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_in_its_context() {
        let secrets = Secrets::from_master(&[7; 32]);
        let sealed = secrets.seal(b"totp:alice", b"seed");
        assert_eq!(&*secrets.open(b"totp:alice", &sealed).unwrap(), b"seed");
        assert!(secrets.open(b"totp:bob", &sealed).is_err());
        assert!(secrets.open(b"totp:alice", &sealed[..5]).is_err());
        let other = Secrets::from_master(&[8; 32]);
        assert!(other.open(b"totp:alice", &sealed).is_err());
    }

    #[test]
    fn macs_are_bound_to_purpose_and_data() {
        let secrets = Secrets::from_master(&[1; 32]);
        let mac = secrets.mac("csrf", "session-a");
        assert!(secrets.mac_is_valid("csrf", "session-a", &mac));
        assert!(!secrets.mac_is_valid("csrf", "session-b", &mac));
        assert!(!secrets.mac_is_valid("device", "session-a", &mac));
        assert!(!secrets.mac_is_valid("csrf", "session-a", "not base64 !"));
    }

    #[test]
    fn master_keys_must_be_32_bytes() {
        assert!(decode_master_key(&generate_master_key()).is_ok());
        assert!(decode_master_key("c2hvcnQ=").is_err());
        assert!(decode_master_key("%%%").is_err());
    }
}
