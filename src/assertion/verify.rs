//! How an app checks an assertion: against the gateway's JWKS, for its own
//! audience. The demo app uses this; other apps do the same in their language.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

use super::Claims;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the token has no key id")]
    NoKeyId,
    #[error("no key `{0}` in the JWKS")]
    UnknownKey(String),
    #[error("invalid assertion: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

pub fn verify(token: &str, jwks: &JwkSet, issuer: &str, audience: &str) -> Result<Claims, VerifyError> {
    let header = decode_header(token)?;
    let kid = header.kid.ok_or(VerifyError::NoKeyId)?;
    let jwk = jwks.find(&kid).ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "iat"]);
    validation.leeway = 5;
    Ok(decode::<Claims>(token, &key, &validation)?.claims)
}
