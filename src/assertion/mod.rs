//! The assertion: a short-lived ES256 JWT that tells an app who is calling
//! and how they proved it, verifiable against the gateway's JWKS.

mod keys;
mod verify;

use std::sync::{Arc, RwLock};

use http::HeaderValue;
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

pub use keys::{KeyError, KeyRing};
pub use verify::{verify, VerifyError};

use crate::clock::{Clock, UnixTime};
use crate::crypto::{random_token, Secrets};
use crate::policy::risk::Assessment;
use crate::session::{FactorUse, Session, SessionKey};
use crate::store::KeyStore;
use crate::users::User;

/// The claims an app receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub email: String,
    pub name: String,
    pub groups: Vec<String>,
    /// RFC 8176 authentication method references.
    pub amr: Vec<String>,
    pub acr: String,
    pub auth_time: UnixTime,
    /// The sign-in's risk assessment: confidence and the signals that lowered it.
    pub risk: Assessment,
    /// The client's country (ISO code) at sign-in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    pub iat: UnixTime,
    pub exp: UnixTime,
    pub jti: String,
}

/// `acr` when only a password was checked.
pub const ACR_ONE_FACTOR: &str = "urn:stepgate:acr:1fa";
/// `acr` when a second factor was done too.
pub const ACR_TWO_FACTOR: &str = "urn:stepgate:acr:2fa";

struct CachedToken {
    /// A header value already: a clone shares its bytes, so a request
    /// neither copies nor checks the token again.
    token: HeaderValue,
    exp: UnixTime,
    minted_from: MintedFrom,
}

/// What an assertion says about the user and how the session proved it.
/// A cached one is served only while the request's user and session still
/// say the same, so that the assertion always agrees with the identity
/// headers and the session: a reload may change a user's groups, and a
/// removed factor the session's factors.
struct MintedFrom {
    email: String,
    name: String,
    groups: Vec<String>,
    factors: Vec<FactorUse>,
}

impl MintedFrom {
    fn new(session: &Session, user: &User) -> Self {
        Self { email: user.email.clone(), name: user.display_name.clone(), groups: user.groups.clone(), factors: session.factors.clone() }
    }

    fn matches(&self, session: &Session, user: &User) -> bool {
        self.email == user.email && self.name == user.display_name && self.groups == user.groups && self.factors == session.factors
    }
}

/// Mints assertions and keeps one per session and app until it is close to
/// expiring, so that the request path does not sign.
pub struct Assertions {
    keys: RwLock<Arc<KeyRing>>,
    /// Where the keys live: shared by every instance on the same store.
    key_store: Arc<dyn KeyStore>,
    secrets: Arc<Secrets>,
    clock: Arc<dyn Clock>,
    issuer: String,
    lifetime: i64,
    cache: RwLock<crate::FastMap<(SessionKey, Arc<str>), CachedToken>>,
}

impl Assertions {
    /// Loads the signing keys from the store, creating a first one if it has none.
    pub async fn new(
        key_store: Arc<dyn KeyStore>,
        secrets: Arc<Secrets>,
        clock: Arc<dyn Clock>,
        issuer: String,
        lifetime: i64,
    ) -> Result<Self, KeyError> {
        let ring = KeyRing::load_or_create(key_store.as_ref(), &secrets, clock.now()).await?;
        Ok(Self {
            keys: RwLock::new(Arc::new(ring)),
            key_store,
            secrets,
            clock,
            issuer,
            lifetime,
            cache: RwLock::new(crate::FastMap::default()),
        })
    }

    /// The assertion for this session and app, minted only when there is no
    /// cached one that still says the same with at least a fifth of its
    /// lifetime left.
    pub fn token_for(&self, session: &Session, user: &User, app_id: &Arc<str>) -> Result<HeaderValue, KeyError> {
        let now = self.clock.now();
        let key = (session.key, app_id.clone());
        let refresh_margin = self.lifetime / 5;
        let usable = |t: &&CachedToken| t.exp - now > refresh_margin && t.minted_from.matches(session, user);
        if let Some(cached) = self.cache.read().ok().and_then(|c| c.get(&key).filter(usable).map(|t| t.token.clone())) {
            crate::metrics::global().assertion_cache_hits.inc();
            return Ok(cached);
        }
        crate::metrics::global().assertion_cache_misses.inc();
        let claims = self.claims(session, user, app_id, now);
        // A JWT is base64url and dots: always a valid header value.
        let token = HeaderValue::from_maybe_shared(bytes::Bytes::from(self.sign(&claims)?)).map_err(|_| KeyError::NotAHeader)?;
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(key, CachedToken { token: token.clone(), exp: claims.exp, minted_from: MintedFrom::new(session, user) });
        }
        Ok(token)
    }

    fn claims(&self, session: &Session, user: &User, app_id: &str, now: UnixTime) -> Claims {
        let mut amr: Vec<String> = Vec::new();
        for method in session.factors.iter().flat_map(|f| f.factor.amr()) {
            if !amr.iter().any(|m| m == method) {
                amr.push(method.to_string());
            }
        }
        let two_factor = session.second_factor_at().is_some();
        if two_factor {
            amr.push("mfa".into());
        }
        Claims {
            iss: self.issuer.clone(),
            aud: app_id.to_string(),
            sub: user.username.clone(),
            email: user.email.clone(),
            name: user.display_name.clone(),
            groups: user.groups.clone(),
            amr,
            acr: if two_factor { ACR_TWO_FACTOR } else { ACR_ONE_FACTOR }.to_string(),
            auth_time: session.last_factor_at(),
            risk: session.context.assessment.clone(),
            country: session.context.country.clone(),
            iat: now,
            exp: now + self.lifetime,
            jti: random_token(),
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let ring = self.current_ring();
        let signing = ring.signing_key()?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(signing.kid.clone());
        jsonwebtoken::encode(&header, claims, &signing.encoding).map_err(KeyError::Sign)
    }

    /// The public keys that verify every assertion still alive.
    pub fn jwks(&self) -> serde_json::Value {
        self.current_ring().jwks(self.clock.now(), self.lifetime)
    }

    /// Picks up keys rotated by `stepgate keys rotate` or by another
    /// instance; cached assertions stay valid because the old key stays in
    /// the JWKS. Cheap when nothing changed (one version read), so the
    /// upkeep loop calls it every few seconds.
    pub async fn reload_keys(&self) -> Result<bool, KeyError> {
        let current = self.current_ring();
        let Some(ring) = KeyRing::reload_if_changed(self.key_store.as_ref(), &self.secrets, &current).await? else {
            return Ok(false);
        };
        if let Ok(mut keys) = self.keys.write() {
            *keys = Arc::new(ring);
        }
        Ok(true)
    }

    /// Forgets cached assertions that have expired.
    pub fn sweep(&self) {
        let now = self.clock.now();
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, t| t.exp > now);
        }
    }

    fn current_ring(&self) -> Arc<KeyRing> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Adds a signing key and retires the current one (kept in the JWKS for one
/// assertion lifetime). Returns the new key id.
pub async fn rotate_keys(key_store: &dyn KeyStore, secrets: &Secrets, now: UnixTime, lifetime: i64) -> Result<String, KeyError> {
    KeyRing::rotate(key_store, secrets, now, lifetime).await
}
