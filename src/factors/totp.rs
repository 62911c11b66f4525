//! TOTP authenticator apps (RFC 6238).

use std::sync::Arc;

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::{TotpAlgorithm, TotpConfig};
use crate::crypto::{random_bytes, CryptoError, Secrets};
use crate::store::{Store, StoreError, TotpRow};

/// 160 bits, the size RFC 4226 recommends.
const SECRET_LEN: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("stored TOTP parameters are invalid")]
    BadParameters,
}

/// What became of a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Not a code of this length, or not the right code.
    Wrong,
    /// The right code, but it (or a later one) was already used.
    Replayed,
    NotEnrolled,
}

/// What a user needs to add the gateway to an authenticator app.
pub struct EnrollmentView {
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub qr_svg: String,
}

pub struct TotpFactor {
    store: Arc<dyn Store>,
    secrets: Arc<Secrets>,
    clock: Arc<dyn Clock>,
    config: TotpConfig,
    issuer: String,
}

impl TotpFactor {
    pub fn new(store: Arc<dyn Store>, secrets: Arc<Secrets>, clock: Arc<dyn Clock>, config: TotpConfig, issuer: String) -> Self {
        // The otpauth URI format uses `:` to separate issuer and account.
        let issuer = issuer.replace(':', " ");
        Self { store, secrets, clock, config, issuer }
    }

    pub fn self_enrollment(&self) -> bool {
        self.config.self_enrollment
    }

    pub async fn is_enrolled(&self, username: &str) -> Result<bool, TotpError> {
        Ok(self.store.get_totp(username).await?.is_some())
    }

    /// A fresh secret, sealed for keeping in the session while the user enrols.
    pub fn new_pending_secret(&self, username: &str) -> Vec<u8> {
        let secret = Zeroizing::new(random_bytes::<SECRET_LEN>());
        self.secrets.seal(&pending_context(username), secret.as_ref())
    }

    pub fn enrollment_view(&self, username: &str, sealed_pending: &[u8]) -> Result<EnrollmentView, TotpError> {
        let secret = self.secrets.open(&pending_context(username), sealed_pending)?;
        let totp = self.totp(algorithm(self.config.algorithm), self.config.digits.0, self.config.period.0, &secret, username)?;
        let otpauth_uri = totp.get_url();
        let qr_svg = qrcode::QrCode::new(otpauth_uri.as_bytes())
            .map(|qr| qr.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).build())
            .map_err(|_| TotpError::BadParameters)?;
        Ok(EnrollmentView { secret_base32: totp.get_secret_base32(), otpauth_uri, qr_svg })
    }

    /// Finishes enrolment when `code` proves the app holds the pending secret.
    pub async fn confirm_enrollment(&self, username: &str, sealed_pending: &[u8], code: &str) -> Result<Verdict, TotpError> {
        let secret = self.secrets.open(&pending_context(username), sealed_pending)?;
        let (digits, period) = (self.config.digits.0, self.config.period.0);
        let totp = self.totp(algorithm(self.config.algorithm), digits, period, &secret, username)?;
        let Some(step) = self.matching_step(&totp, period, code) else {
            return Ok(Verdict::Wrong);
        };
        let row = TotpRow {
            username: username.to_string(),
            sealed_secret: self.secrets.seal(&credential_context(username), &secret),
            algorithm: format!("{:?}", self.config.algorithm),
            digits: digits as i64,
            period: period as i64,
            created: self.clock.now(),
            last_step: step,
            name: "Authenticator app".into(),
            last_used: Some(self.clock.now()),
        };
        Ok(if self.store.insert_totp(&row).await? { Verdict::Accepted } else { Verdict::Replayed })
    }

    /// Checks a code against the user's enrolled app; a code is accepted at
    /// most once.
    pub async fn verify(&self, username: &str, code: &str) -> Result<Verdict, TotpError> {
        let Some(row) = self.store.get_totp(username).await? else {
            return Ok(Verdict::NotEnrolled);
        };
        let secret = self.secrets.open(&credential_context(username), &row.sealed_secret)?;
        let algorithm = match row.algorithm.as_str() {
            "SHA256" => Algorithm::SHA256,
            "SHA512" => Algorithm::SHA512,
            _ => Algorithm::SHA1,
        };
        let (digits, period) = (row.digits as usize, row.period as u64);
        let totp = self.totp(algorithm, digits, period, &secret, username)?;
        let Some(step) = self.matching_step(&totp, period, code) else {
            return Ok(Verdict::Wrong);
        };
        if step <= row.last_step || !self.store.claim_totp_step(username, step, self.clock.now()).await? {
            return Ok(Verdict::Replayed);
        }
        Ok(Verdict::Accepted)
    }

    /// The time step whose code equals `code`, within the allowed skew.
    fn matching_step(&self, totp: &TOTP, period: u64, code: &str) -> Option<i64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != totp.digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = self.clock.now().max(0) as u64 / period;
        let skew = self.config.skew.0 as u64;
        let mut found = None;
        // Every candidate is compared, so the time taken does not tell which matched.
        for step in current.saturating_sub(skew)..=current + skew {
            let expected = totp.generate(step * period);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                found = Some(step as i64);
            }
        }
        found
    }

    fn totp(&self, algorithm: Algorithm, digits: usize, period: u64, secret: &[u8], username: &str) -> Result<TOTP, TotpError> {
        TOTP::new(algorithm, digits, 0, period, secret.to_vec(), Some(self.issuer.clone()), username.to_string())
            .map_err(|_| TotpError::BadParameters)
    }
}

fn algorithm(algorithm: TotpAlgorithm) -> Algorithm {
    match algorithm {
        TotpAlgorithm::SHA1 => Algorithm::SHA1,
        TotpAlgorithm::SHA256 => Algorithm::SHA256,
        TotpAlgorithm::SHA512 => Algorithm::SHA512,
    }
}

fn pending_context(username: &str) -> Vec<u8> {
    format!("totp-pending:{username}").into_bytes()
}

fn credential_context(username: &str) -> Vec<u8> {
    format!("totp:{username}").into_bytes()
}
