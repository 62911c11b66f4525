//! TOTP codes computed here from RFC 6238 directly, independent of the
//! gateway's implementation.

use hmac::{Hmac, Mac};
use sha1::Sha1;

pub fn code(secret_base32: &str, unix_time: i64) -> String {
    let key = data_encoding::BASE32_NOPAD.decode(secret_base32.trim_end_matches('=').as_bytes()).expect("base32 secret");
    let counter = (unix_time / 30) as u64;
    let mut mac = Hmac::<Sha1>::new_from_slice(&key).unwrap();
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let binary = u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    format!("{:06}", binary % 1_000_000)
}

#[test]
fn rfc6238_vector() {
    // RFC 6238 appendix B, SHA-1, T = 59 -> 94287082 (8 digits); 6 digits is the tail.
    let secret = data_encoding::BASE32_NOPAD.encode(b"12345678901234567890");
    assert_eq!(code(&secret, 59), "287082");
}
