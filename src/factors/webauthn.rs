//! WebAuthn (webauthn-rs): security keys and the device's own biometrics.
//!
//! A ceremony (registration or authentication) starts with a challenge
//! kept server side, in the shared cache so that any instance can take the
//! answer, under the session (or pre-session) that asked for it. Finishing takes it out, so each challenge is answered at most
//! once, only by the session it was issued to, and only before it expires.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticatorAttachment, CreationChallengeResponse, Credential, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, SecurityKey,
    SecurityKeyAuthentication, SecurityKeyRegistration, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};
use webauthn_rs_proto::{AttestationConveyancePreference, ResidentKeyRequirement, UserVerificationPolicy};

use crate::cache::{Bound, Cache, CacheError};
use crate::clock::{Clock, UnixTime};
use crate::config::{Attestation, UserVerification, WebauthnConfig};
use crate::crypto::{sha256, Secrets};
use crate::methods::Method;
use crate::session::{Factor, FactorUse, Proof, Sessions};
use crate::store::{Store, StoreError, WebauthnRow};

/// Challenges of signed-in users waiting for an answer, at most (each
/// session holds at most one per purpose); past it, expired ones are
/// dropped and then new ceremonies refused until some finish.
const MAX_PENDING_SIGNED_IN: usize = 10_000;
/// Passwordless challenges, which anyone may ask for, at most: a pool of
/// their own, so that a flood of them never refuses a signed-in user's
/// ceremony.
const MAX_PENDING_ANONYMOUS: usize = 10_000;
/// Passwordless challenges pending per client address (an IPv6 client
/// counts by its /64), so that one client cannot fill the pool.
const MAX_PENDING_PER_ADDRESS: usize = 8;
/// A credential's name, as the user gives it, at most this long.
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum WebauthnFailure {
    #[error("There is no security-key request in progress. It may have expired or been used already: try again.")]
    NoCeremony,
    #[error("This kind of authenticator is not enabled.")]
    KindDisabled,
    #[error("You have no security key or biometric sign-in set up.")]
    NoCredentials,
    #[error("This security key or device is not registered to your account.")]
    UnknownCredential,
    #[error("The authenticator's answer was not valid for this site.")]
    Rejected(#[source] WebauthnError),
    #[error("The authenticator did not verify you (with a PIN or biometrics), which is required here.")]
    NotVerified,
    #[error("This authenticator is already registered.")]
    AlreadyRegistered,
    #[error("This model of authenticator is not allowed here.")]
    ModelNotAllowed,
    #[error("This authenticator reported a signature counter that went backwards, a sign that it may have been cloned. It was refused; contact your administrator.")]
    PossibleClone,
    #[error("Too many sign-in requests are in progress. Try again shortly.")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl WebauthnFailure {
    /// A short name of the failure, for the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            WebauthnFailure::NoCeremony => "no_ceremony",
            WebauthnFailure::KindDisabled => "kind_disabled",
            WebauthnFailure::NoCredentials => "no_credentials",
            WebauthnFailure::UnknownCredential => "unknown_credential",
            WebauthnFailure::Rejected(_) => "rejected",
            WebauthnFailure::NotVerified => "not_verified",
            WebauthnFailure::AlreadyRegistered => "already_registered",
            WebauthnFailure::ModelNotAllowed => "model_not_allowed",
            WebauthnFailure::PossibleClone => "possible_clone",
            WebauthnFailure::Busy => "busy",
            WebauthnFailure::Store(_) => "store",
            WebauthnFailure::Cache(_) => "cache",
        }
    }

    /// Whether the failure is the gateway's, not the client's.
    pub fn is_server_error(&self) -> bool {
        matches!(self, WebauthnFailure::Store(_) | WebauthnFailure::Cache(_) | WebauthnFailure::Busy)
    }

    /// Whether the failure is a backend being unreachable.
    pub fn is_outage(&self) -> bool {
        match self {
            WebauthnFailure::Store(e) => e.is_outage(),
            WebauthnFailure::Cache(e) => e.is_outage(),
            _ => false,
        }
    }
}

/// The site credentials are bound to: an RP id and the origins its pages
/// run on.
pub struct RelyingParty {
    pub id: String,
    webauthn: Webauthn,
}

impl RelyingParty {
    /// With no origins given, `https://<host>` on any port.
    pub fn new(rp_id: &str, host: &str, origins: &[Url], rp_name: &str, timeout_secs: i64) -> Result<Self, WebauthnError> {
        let default_origin = Url::parse(&format!("https://{host}")).map_err(|_| WebauthnError::Configuration)?;
        let (first, rest) = match origins.split_first() {
            Some((first, rest)) => (first, rest),
            None => (&default_origin, &[][..]),
        };
        let mut builder = WebauthnBuilder::new(rp_id, first)?
            .rp_name(rp_name)
            .timeout(Duration::from_secs(timeout_secs.max(1) as u64))
            .allow_any_port(origins.is_empty());
        for origin in rest {
            builder = builder.append_allowed_origin(origin);
        }
        Ok(Self { id: rp_id.to_string(), webauthn: builder.build()? })
    }
}

/// What a finished registration stored.
pub struct Registered {
    pub kind: Method,
    pub name: String,
    /// The registration also proved the factor: what the session did.
    pub proof: Proof,
}

/// What a finished authentication proved.
pub struct Authenticated {
    pub username: String,
    pub proof: Proof,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Purpose {
    Register,
    Authenticate,
    Passwordless,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::Authenticate => "authenticate",
            Purpose::Passwordless => "passwordless",
        }
    }

    /// The pool its ceremonies count in: passwordless ones, which anyone
    /// may start, apart, so that a flood of them never refuses a signed-in
    /// user's ceremony.
    fn pool(self) -> &'static str {
        match self {
            Purpose::Passwordless => "webauthn-anonymous",
            Purpose::Register | Purpose::Authenticate => "webauthn-signed-in",
        }
    }

    fn capacity(self) -> usize {
        match self {
            Purpose::Passwordless => MAX_PENDING_ANONYMOUS,
            Purpose::Register | Purpose::Authenticate => MAX_PENDING_SIGNED_IN,
        }
    }
}

/// A ceremony's state, as webauthn-rs gives it: kept in the shared cache
/// (sealed there) between the challenge and the answer.
#[derive(Serialize, Deserialize)]
enum State {
    RegisterSecurityKey(SecurityKeyRegistration),
    RegisterPlatform(PasskeyRegistration),
    Authenticate(SecurityKeyAuthentication),
    Passwordless(DiscoverableAuthentication),
}

#[derive(Serialize, Deserialize)]
struct Pending {
    state: State,
    /// The client that asked, for passwordless ceremonies.
    address: Option<AddressKey>,
    rp_id: String,
    /// The user the ceremony is for; none for passwordless sign-in.
    username: Option<String>,
    /// The name the user gave a credential being registered.
    name: String,
    expires: UnixTime,
}

/// Who a ceremony belongs to: the key of a session, or of a pre-session.
pub type Owner = [u8; 32];

pub struct WebauthnFactor {
    store: Arc<dyn Store>,
    /// The ceremonies in flight, bounded in all and per client address.
    cache: Arc<dyn Cache>,
    sessions: Arc<Sessions>,
    secrets: Arc<Secrets>,
    clock: Arc<dyn Clock>,
    config: WebauthnConfig,
}

/// A client address as the per-address limit counts it.
type AddressKey = IpAddr;

/// IPv6 clients usually hold a whole /64: count them by it.
fn address_key(ip: IpAddr) -> AddressKey {
    match crate::gateway::canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
        v4 => v4,
    }
}

impl WebauthnFactor {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        sessions: Arc<Sessions>,
        secrets: Arc<Secrets>,
        clock: Arc<dyn Clock>,
        config: WebauthnConfig,
    ) -> Self {
        Self { store, cache, sessions, secrets, clock, config }
    }

    pub fn config(&self) -> &WebauthnConfig {
        &self.config
    }

    /// Whether the sign-in page offers a passkey instead of a password.
    pub fn passwordless_offered(&self) -> bool {
        self.config.passwordless && self.config.enabled()
    }

    pub fn allows(&self, kind: Method) -> bool {
        match kind {
            Method::SecurityKey => self.config.security_keys,
            Method::Platform => self.config.platform,
            _ => false,
        }
    }

    /// The credential kinds the configuration allows: those that count as
    /// a usable factor.
    pub fn usable_kinds(&self) -> Vec<&'static str> {
        [Method::SecurityKey, Method::Platform].into_iter().filter(|kind| self.allows(*kind)).map(Method::name).collect()
    }

    pub async fn credentials(&self, username: &str) -> Result<Vec<WebauthnRow>, StoreError> {
        self.store.webauthn_credentials(username).await
    }

    /// The challenge for registering a new authenticator of `kind`.
    pub async fn start_registration(
        &self,
        rp: &RelyingParty,
        owner: Owner,
        username: &str,
        kind: Method,
        name: &str,
    ) -> Result<CreationChallengeResponse, WebauthnFailure> {
        if !self.allows(kind) {
            return Err(WebauthnFailure::KindDisabled);
        }
        let existing = self.store.webauthn_credentials(username).await?;
        let exclude = Some(existing.iter().map(|row| row.credential_id.clone().into()).collect());
        let user_id = self.user_handle(username);
        let (mut options, state) = match kind {
            Method::Platform => {
                let (options, state) =
                    rp.webauthn.start_passkey_registration(user_id, username, username, exclude).map_err(WebauthnFailure::Rejected)?;
                (options, State::RegisterPlatform(state))
            }
            _ => {
                let attachment = Some(AuthenticatorAttachment::CrossPlatform);
                let (options, state) = rp
                    .webauthn
                    .start_securitykey_registration(user_id, username, username, exclude, None, attachment)
                    .map_err(WebauthnFailure::Rejected)?;
                (options, State::RegisterSecurityKey(state))
            }
        };
        self.shape_registration(&mut options, kind);
        let name = clean_name(name, kind);
        self.keep(
            owner,
            Purpose::Register,
            Pending { state, address: None, rp_id: rp.id.clone(), username: Some(username.into()), name, expires: 0 },
        )
        .await?;
        Ok(options)
    }

    /// Adjusts webauthn-rs's options to the configuration: the attachment
    /// that tells a platform authenticator from a roaming one, attestation,
    /// user verification, and discoverable credentials for passwordless
    /// sign-in. What the browser gets only; every answer is checked after.
    fn shape_registration(&self, options: &mut CreationChallengeResponse, kind: Method) {
        let public_key = &mut options.public_key;
        public_key.attestation = Some(match self.config.effective_attestation() {
            Attestation::None => AttestationConveyancePreference::None,
            Attestation::Indirect => AttestationConveyancePreference::Indirect,
            Attestation::Direct => AttestationConveyancePreference::Direct,
        });
        let selection = public_key.authenticator_selection.get_or_insert_with(Default::default);
        if kind == Method::Platform {
            selection.authenticator_attachment = Some(AuthenticatorAttachment::Platform);
            public_key.hints = None;
        }
        if kind == Method::SecurityKey && self.config.user_verification == UserVerification::Required {
            selection.user_verification = UserVerificationPolicy::Required;
        }
        if self.config.passwordless {
            selection.resident_key = Some(ResidentKeyRequirement::Required);
            selection.require_resident_key = true;
        }
        // Chromium refuses a request for credential protection "user
        // verification required" that does not itself require verification.
        if selection.user_verification != UserVerificationPolicy::Required {
            if let Some(extensions) = public_key.extensions.as_mut() {
                extensions.cred_protect = None;
            }
        }
    }

    /// Checks the browser's answer and stores the new credential.
    pub async fn finish_registration(
        &self,
        rp: &RelyingParty,
        owner: Owner,
        username: &str,
        answer: &RegisterPublicKeyCredential,
    ) -> Result<Registered, WebauthnFailure> {
        let pending = self.take(owner, Purpose::Register, rp, Some(username)).await?;
        let (kind, credential): (Method, Credential) = match &pending.state {
            State::RegisterPlatform(state) => {
                let passkey = rp.webauthn.finish_passkey_registration(answer, state).map_err(WebauthnFailure::Rejected)?;
                (Method::Platform, passkey.into())
            }
            State::RegisterSecurityKey(state) => {
                let key = rp.webauthn.finish_securitykey_registration(answer, state).map_err(WebauthnFailure::Rejected)?;
                (Method::SecurityKey, key.into())
            }
            State::Authenticate(_) | State::Passwordless(_) => return Err(WebauthnFailure::NoCeremony),
        };
        if self.must_verify(kind) && !credential.user_verified {
            return Err(WebauthnFailure::NotVerified);
        }
        let aaguid = aaguid(answer.response.attestation_object.as_ref());
        if !self.config.aaguids.is_empty() && !self.config.aaguids.iter().any(|allowed| Some(&allowed.0) == aaguid.as_ref()) {
            return Err(WebauthnFailure::ModelNotAllowed);
        }
        let discoverable = credential.user_verified && answer.extensions.cred_props.as_ref().and_then(|p| p.rk).unwrap_or(false);
        let row = WebauthnRow {
            id: 0,
            username: username.to_string(),
            credential_id: credential.cred_id.to_vec(),
            kind: kind.name().to_string(),
            name: pending.name.clone(),
            credential: serde_json::to_string(&credential).map_err(|_| WebauthnFailure::UnknownCredential)?,
            counter: i64::from(credential.counter),
            aaguid,
            discoverable,
            created: self.clock.now(),
            last_used: Some(self.clock.now()),
            possible_clone_at: None,
        };
        if !self.store.insert_webauthn(&row).await? {
            return Err(WebauthnFailure::AlreadyRegistered);
        }
        let stored = self.store.webauthn_credential(&row.credential_id).await?.ok_or(WebauthnFailure::UnknownCredential)?;
        let proof = Proof { factor: factor(kind, credential.user_verified), credential: Some(stored.id) };
        Ok(Registered { kind, name: pending.name, proof })
    }

    /// The challenge for proving one of the user's authenticators.
    pub async fn start_authentication(
        &self,
        rp: &RelyingParty,
        owner: Owner,
        username: &str,
    ) -> Result<RequestChallengeResponse, WebauthnFailure> {
        let keys: Vec<SecurityKey> = self
            .store
            .webauthn_credentials(username)
            .await?
            .iter()
            .filter(|row| Method::from_name(&row.kind).is_some_and(|kind| self.allows(kind)))
            // A credential flagged as possibly cloned stays refused.
            .filter(|row| row.possible_clone_at.is_none())
            .filter_map(|row| serde_json::from_str::<Credential>(&row.credential).ok())
            .map(SecurityKey::from)
            .collect();
        if keys.is_empty() {
            return Err(WebauthnFailure::NoCredentials);
        }
        // One ceremony for both kinds: webauthn-rs's security-key ceremony
        // prefers user verification; what each kind must have is checked
        // when the answer comes back.
        let (mut options, state) = rp.webauthn.start_securitykey_authentication(&keys).map_err(WebauthnFailure::Rejected)?;
        options.public_key.hints = None;
        let pending = Pending {
            state: State::Authenticate(state),
            address: None,
            rp_id: rp.id.clone(),
            username: Some(username.into()),
            name: String::new(),
            expires: 0,
        };
        self.keep(owner, Purpose::Authenticate, pending).await?;
        Ok(options)
    }

    pub async fn finish_authentication(
        &self,
        rp: &RelyingParty,
        owner: Owner,
        username: &str,
        answer: &PublicKeyCredential,
    ) -> Result<Authenticated, WebauthnFailure> {
        let pending = self.take(owner, Purpose::Authenticate, rp, Some(username)).await?;
        let State::Authenticate(state) = &pending.state else {
            return Err(WebauthnFailure::NoCeremony);
        };
        let row = self.store.webauthn_credential(answer.get_credential_id()).await?;
        let row = row.filter(|row| row.username == username).ok_or(WebauthnFailure::UnknownCredential)?;
        let result = rp.webauthn.finish_securitykey_authentication(answer, state);
        self.record_use(row, result).await
    }

    /// A challenge any discoverable credential of this site may answer.
    pub async fn start_passwordless(
        &self,
        rp: &RelyingParty,
        owner: Owner,
        client: IpAddr,
    ) -> Result<RequestChallengeResponse, WebauthnFailure> {
        if !self.passwordless_offered() {
            return Err(WebauthnFailure::KindDisabled);
        }
        let (mut options, state) = rp.webauthn.start_discoverable_authentication().map_err(WebauthnFailure::Rejected)?;
        // A button starts it, not the browser's autofill.
        options.mediation = None;
        let pending = Pending {
            state: State::Passwordless(state),
            address: Some(address_key(client)),
            rp_id: rp.id.clone(),
            username: None,
            name: String::new(),
            expires: 0,
        };
        self.keep(owner, Purpose::Passwordless, pending).await?;
        Ok(options)
    }

    /// Signs in with a discoverable credential; it must have verified the
    /// user, so it stands for both factors.
    pub async fn finish_passwordless(
        &self,
        rp: &RelyingParty,
        owner: Owner,
        answer: &PublicKeyCredential,
    ) -> Result<Authenticated, WebauthnFailure> {
        let pending = self.take(owner, Purpose::Passwordless, rp, None).await?;
        let State::Passwordless(state) = pending.state else {
            return Err(WebauthnFailure::NoCeremony);
        };
        let (handle, credential_id) = rp.webauthn.identify_discoverable_authentication(answer).map_err(WebauthnFailure::Rejected)?;
        let row = self.store.webauthn_credential(credential_id).await?;
        let row =
            row.filter(|row| row.discoverable && self.user_handle(&row.username) == handle).ok_or(WebauthnFailure::UnknownCredential)?;
        let credential: Credential = serde_json::from_str(&row.credential).map_err(|_| WebauthnFailure::UnknownCredential)?;
        let key = DiscoverableKey::from(Passkey::from(credential));
        let result = rp.webauthn.finish_discoverable_authentication(answer, state, &[key]);
        let authenticated = self.record_use(row, result).await?;
        if !authenticated.proof.factor.proves_user() {
            return Err(WebauthnFailure::NotVerified);
        }
        Ok(authenticated)
    }

    /// Checks what the ceremony found and records the use: the new
    /// counter, claimed so that two answers cannot both spend one value.
    async fn record_use(
        &self,
        row: WebauthnRow,
        result: Result<webauthn_rs::prelude::AuthenticationResult, WebauthnError>,
    ) -> Result<Authenticated, WebauthnFailure> {
        let now = self.clock.now();
        if row.possible_clone_at.is_some() {
            return Err(WebauthnFailure::PossibleClone);
        }
        let result = match result {
            Ok(result) => result,
            Err(WebauthnError::CredentialPossibleCompromise) => return Err(self.possible_clone(&row, now).await),
            Err(e) => return Err(WebauthnFailure::Rejected(e)),
        };
        let kind = Method::from_name(&row.kind).filter(|kind| self.allows(*kind)).ok_or(WebauthnFailure::KindDisabled)?;
        if self.must_verify(kind) && !result.user_verified() {
            return Err(WebauthnFailure::NotVerified);
        }
        let mut key =
            SecurityKey::from(serde_json::from_str::<Credential>(&row.credential).map_err(|_| WebauthnFailure::UnknownCredential)?);
        key.update_credential(&result);
        let updated = serde_json::to_string(&Credential::from(key)).map_err(|_| WebauthnFailure::UnknownCredential)?;
        if !self.store.claim_webauthn_use(row.id, i64::from(result.counter()), &updated, now).await? {
            return Err(self.possible_clone(&row, now).await);
        }
        let proof = Proof { factor: factor(kind, result.user_verified()), credential: Some(row.id) };
        Ok(Authenticated { username: row.username, proof })
    }

    /// Flags the credential and ends the sessions that used it: whoever
    /// holds the copy may have made some of them.
    async fn possible_clone(&self, row: &WebauthnRow, now: UnixTime) -> WebauthnFailure {
        tracing::warn!(event = "webauthn_possible_clone", user = %row.username, credential = row.id, "authentication");
        let flagged = self.store.flag_possible_clone(row.id, now).await;
        let ended = match flagged {
            Ok(()) => self.sessions.forget_factor(&row.username, |used| used_credential(used, row.id), None).await,
            Err(e) => Err(e),
        };
        match ended {
            Ok(_) => WebauthnFailure::PossibleClone,
            Err(e) => WebauthnFailure::Store(e),
        }
    }

    fn must_verify(&self, kind: Method) -> bool {
        kind == Method::Platform || self.config.user_verification == UserVerification::Required
    }

    /// The WebAuthn user handle: stable per user name, and meaningless
    /// without the gateway's key.
    fn user_handle(&self, username: &str) -> Uuid {
        let digest = sha256(self.secrets.mac("webauthn-user", username).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Uuid::from_bytes(bytes)
    }

    /// Keeps the ceremony for its answer, replacing the owner's earlier one
    /// of this purpose; busy when its pool, or its client's share of it, is
    /// full.
    async fn keep(&self, owner: Owner, purpose: Purpose, mut pending: Pending) -> Result<(), WebauthnFailure> {
        pending.expires = self.clock.now() + self.config.timeout;
        let value = serde_json::to_vec(&pending).map_err(|e| CacheError::Corrupt(format!("a WebAuthn ceremony: {e}")))?;
        let group = pending.address.map(|address| address.to_string());
        let group = group.as_deref().map(|address| (address, MAX_PENDING_PER_ADDRESS));
        let bound = Bound { pool: purpose.pool(), capacity: purpose.capacity(), group };
        match self.cache.put_bounded(&ceremony_key(owner, purpose), value, self.config.timeout, &bound).await? {
            true => Ok(()),
            false => Err(WebauthnFailure::Busy),
        }
    }

    /// The owner's pending ceremony, taken out (on every instance at once)
    /// so it cannot be answered again, if it is unexpired, for this site
    /// and for this user.
    async fn take(&self, owner: Owner, purpose: Purpose, rp: &RelyingParty, username: Option<&str>) -> Result<Pending, WebauthnFailure> {
        let value = self.cache.take_bounded(&ceremony_key(owner, purpose), purpose.pool()).await?;
        let value = zeroize::Zeroizing::new(value.ok_or(WebauthnFailure::NoCeremony)?);
        let pending: Pending = serde_json::from_slice(&value).map_err(|e| CacheError::Corrupt(format!("a WebAuthn ceremony: {e}")))?;
        Some(pending)
            .filter(|p| p.expires > self.clock.now() && p.rp_id == rp.id && p.username.as_deref() == username)
            .ok_or(WebauthnFailure::NoCeremony)
    }
}

/// Where a ceremony is kept: by purpose and owner (a hash already).
fn ceremony_key(owner: Owner, purpose: Purpose) -> String {
    let hex: String = owner.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("webauthn:{}:{hex}", purpose.name())
}

/// Whether a session's factor was done with the credential `id`. Sessions
/// from before credentials were recorded count if they did any WebAuthn.
pub fn used_credential(used: &FactorUse, id: i64) -> bool {
    match used.credential {
        Some(credential) => credential == id,
        None => used.factor.method().is_some_and(Method::is_webauthn),
    }
}

fn factor(kind: Method, user_verified: bool) -> Factor {
    match (kind, user_verified) {
        (Method::Platform, _) => Factor::Platform,
        (_, true) => Factor::SecurityKeyVerified,
        (_, false) => Factor::SecurityKey,
    }
}

/// A name for a credential: the user's, cleaned, or the kind's.
pub fn clean_name(name: &str, kind: Method) -> String {
    let cleaned: String = name.chars().filter(|c| !c.is_control()).take(MAX_NAME_CHARS).collect();
    match cleaned.trim() {
        "" if kind == Method::Platform => "This device".into(),
        "" if kind.is_sent_code() => "Phone or email".into(),
        "" => "Security key".into(),
        trimmed => trimmed.to_string(),
    }
}

/// The authenticator model's AAGUID, from the attestation object's
/// authenticator data (rpIdHash 32, flags 1, counter 4, then the AAGUID).
/// Browsers zero it unless attestation was requested.
#[doc(hidden)]
pub fn aaguid(attestation_object: &[u8]) -> Option<String> {
    let value: serde_cbor_2::Value = serde_cbor_2::from_slice(attestation_object).ok()?;
    let serde_cbor_2::Value::Map(map) = value else {
        return None;
    };
    let auth_data = map.iter().find_map(|(key, value)| match (key, value) {
        (serde_cbor_2::Value::Text(key), serde_cbor_2::Value::Bytes(data)) if key == "authData" => Some(data),
        _ => None,
    })?;
    let bytes: [u8; 16] = auth_data.get(37..53)?.try_into().ok()?;
    Some(Uuid::from_bytes(bytes).hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_defaulted() {
        assert_eq!(clean_name("  ", Method::Platform), "This device");
        assert_eq!(clean_name("", Method::SecurityKey), "Security key");
        assert_eq!(clean_name("Yubi\u{7}Key 5", Method::SecurityKey), "YubiKey 5");
        assert_eq!(clean_name(&"x".repeat(500), Method::SecurityKey).len(), MAX_NAME_CHARS);
    }

    #[test]
    fn aaguid_is_read_from_authenticator_data() {
        let mut auth_data = vec![0u8; 37];
        auth_data.extend_from_slice(&[0xcb, 0x69, 0x48, 0x1e, 0x8f, 0xf7, 0x40, 0x39, 0x93, 0xec, 0x0a, 0x27, 0x29, 0xa1, 0x54, 0xa8]);
        let object = serde_cbor_2::Value::Map(
            [
                (serde_cbor_2::Value::Text("fmt".into()), serde_cbor_2::Value::Text("none".into())),
                (serde_cbor_2::Value::Text("authData".into()), serde_cbor_2::Value::Bytes(auth_data)),
            ]
            .into_iter()
            .collect(),
        );
        let bytes = serde_cbor_2::to_vec(&object).unwrap();
        assert_eq!(aaguid(&bytes).as_deref(), Some("cb69481e-8ff7-4039-93ec-0a2729a154a8"));
        assert_eq!(aaguid(b"not cbor"), None);
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    #[test]
    fn address_keys_group_an_ipv6_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key("192.0.2.1".parse().unwrap()), address_key("192.0.2.2".parse().unwrap()));
        assert_eq!(address_key("::ffff:192.0.2.1".parse().unwrap()), address_key("192.0.2.1".parse().unwrap()));
    }
}
