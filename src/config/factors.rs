//! Settings of the WebAuthn factor, recovery codes and the security page.

use serde::Deserialize;

use super::values;

/// How strongly a security key must verify its user (platform
/// authenticators always must).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserVerification {
    /// Presence (a touch) is enough; verification is used when offered.
    Preferred,
    /// The key must check a PIN or its own biometrics.
    Required,
}

/// Whether authenticators are asked to say what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attestation {
    None,
    Indirect,
    Direct,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// Roaming authenticators (USB, NFC or Bluetooth security keys).
    pub security_keys: bool,
    /// The device's own authenticator: Touch ID, Windows Hello, Android.
    pub platform: bool,
    /// A discoverable credential with user verification signs in on its
    /// own, without a password.
    pub passwordless: bool,
    pub user_verification: UserVerification,
    pub attestation: Attestation,
    /// When not empty, only authenticators whose AAGUID is listed may
    /// register. Attestation is then requested as `direct`, since browsers
    /// hide the AAGUID otherwise.
    pub aaguids: Vec<values::Aaguid>,
    /// How long a browser has to answer a challenge.
    #[serde(with = "values::duration")]
    pub timeout: i64,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        Self {
            security_keys: true,
            platform: true,
            passwordless: false,
            user_verification: UserVerification::Preferred,
            attestation: Attestation::None,
            aaguids: Vec::new(),
            timeout: 300,
        }
    }
}

impl WebauthnConfig {
    pub fn enabled(&self) -> bool {
        self.security_keys || self.platform
    }

    pub fn effective_attestation(&self) -> Attestation {
        if self.aaguids.is_empty() {
            self.attestation
        } else {
            Attestation::Direct
        }
    }
}

/// An app's relying party: the domain credentials are bound to, and the
/// origins pages may run on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppWebauthn {
    /// Defaults to the app's first host name. May be a parent domain of
    /// the hosts, so that credentials work across several apps.
    pub rp_id: Option<String>,
    /// Defaults to `https://<host>` for every host, on any port.
    #[serde(default)]
    pub origins: Vec<url::Url>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryCodesConfig {
    pub count: values::RecoveryCodeCount,
    /// Characters per code, not counting the dashes that group them.
    pub length: values::RecoveryCodeLength,
}

impl Default for RecoveryCodesConfig {
    fn default() -> Self {
        Self { count: values::RecoveryCodeCount(10), length: values::RecoveryCodeLength(10) }
    }
}

/// The self-service security page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityPageConfig {
    /// Adding or removing a factor or regenerating recovery codes needs a
    /// second factor at most this old.
    #[serde(with = "values::duration")]
    pub reauthenticate_after: i64,
}

impl Default for SecurityPageConfig {
    fn default() -> Self {
        Self { reauthenticate_after: 300 }
    }
}
