//! The first factor at an OpenID Connect provider: the authorization code
//! flow with PKCE, `state` and `nonce`, and a checked ID token (signature
//! against the provider's keys, issuer, audience, expiry, nonce). The
//! provider's discovery document is read on first use and again every
//! hour, or after it failed.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    ProviderMetadataWithLogout, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::clock::{Clock, UnixTime};
use crate::config::{read_secret, OidcConfig};
use crate::users::User;

/// ID token signatures accepted: the provider's published keys only (an
/// HMAC under the client secret, or `none`, is not).
const ASYMMETRIC_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];
/// A step-up's authentication must be this close to its token's issue.
const FRESH_SECS: i64 = 60;
/// The relying party as `openidconnect` types it: the authorization
/// endpoint set, the token and UserInfo endpoints as discovery found them.
type Client = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The discovery document is read again after this long.
const METADATA_TTL: i64 = 3600;
/// `amr` values that name a factor beyond a password (RFC 8176).
const SECOND_FACTOR_AMR: [&str; 8] = ["mfa", "otp", "hwk", "swk", "sms", "tel", "fpt", "face"];

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider cannot be reached, or answered something unusable.
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The answer is not acceptable: a refused code, a bad ID token.
    #[error("the identity provider's answer was refused: {0}")]
    Refused(String),
}

/// What a sign-in in flight keeps until the provider sends the browser back.
#[derive(Serialize, Deserialize)]
pub struct Pending {
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where the user was going.
    pub rd: String,
    /// A step-up of this user's session (the provider was asked to sign
    /// them in again), not a new sign-in.
    #[serde(default)]
    pub step_up_of: Option<String>,
}

/// A user the provider signed in.
pub struct SignedIn {
    pub user: User,
    /// The provider did a second factor (and the configuration trusts it).
    pub provider_mfa: bool,
    /// The user authenticated for this sign-in (not long before, on a
    /// session the provider kept): `auth_time` is about the token's `iat`.
    pub fresh: bool,
    /// The provider's `amr`, for the log.
    pub amr: Vec<String>,
}

pub struct OidcDirectory {
    config: OidcConfig,
    client_secret: Option<ClientSecret>,
    http: openidconnect::reqwest::Client,
    clock: Arc<dyn Clock>,
    metadata: RwLock<Option<(ProviderMetadataWithLogout, UnixTime)>>,
}

impl OidcDirectory {
    pub fn new(config: &OidcConfig, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let secret = match (&config.client_secret_env, &config.client_secret_file) {
            (None, None) => None,
            (env, file) => Some(ClientSecret::new(read_secret("directory.oidc.client_secret", env.as_deref(), file.as_deref())?)),
        };
        // Following redirects would open the client to SSRF.
        let http = openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.timeout as u64))
            .build()
            .map_err(|e| format!("directory.oidc HTTP client: {e}"))?;
        Ok(Self { config: config.clone(), client_secret: secret, http, clock, metadata: RwLock::new(None) })
    }

    /// Whether a rule's step-up sends the user back to the provider.
    pub fn steps_up(&self) -> bool {
        self.config.step_up_at_provider
    }

    /// The provider's authorization URL for a new sign-in (or, with
    /// `step_up_of`, a fresh one of that user), with its state, and what to
    /// keep until the browser comes back.
    pub async fn begin(&self, rd: &str, step_up_of: Option<&str>) -> Result<(url::Url, String, Pending), OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        if step_up_of.is_some() {
            request = request.set_max_age(Duration::ZERO).add_prompt(openidconnect::core::CoreAuthPrompt::Login);
        }
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let pending = Pending {
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            rd: rd.to_string(),
            step_up_of: step_up_of.map(str::to_string),
        };
        Ok((url, state.secret().clone(), pending))
    }

    /// Exchanges the code (with the PKCE verifier) and checks the ID token.
    pub async fn finish(&self, code: &str, pending: Pending) -> Result<SignedIn, OidcError> {
        let client = self.client().await?;
        let exchange = client.exchange_code(AuthorizationCode::new(code.to_string())).map_err(|e| OidcError::Unavailable(e.to_string()))?;
        let response = exchange
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Refused(format!("the code was not exchanged: {e}")))?;
        let id_token = response.id_token().ok_or_else(|| OidcError::Refused("no ID token".into()))?;
        let clock = self.clock.clone();
        let now = move || chrono::DateTime::from_timestamp(clock.now(), 0).unwrap_or_default();
        let verifier = client.id_token_verifier().set_allowed_algs(ASYMMETRIC_ALGS).set_time_fn(now);
        let claims = id_token.claims(&verifier, &Nonce::new(pending.nonce)).map_err(|e| OidcError::Refused(format!("ID token: {e}")))?;
        let amr: Vec<String> = claims.auth_method_refs().into_iter().flatten().map(|m| m.as_str().to_string()).collect();
        let acr = claims.auth_context_ref().map(|acr| acr.as_str().to_string());
        // Verified above: the payload's other claims can be read as they are.
        let mut payload = payload_of(&id_token.to_string()).ok_or_else(|| OidcError::Refused("ID token payload".into()))?;
        if self.config.userinfo {
            let info = self.userinfo(response.access_token().secret(), claims.subject().as_str()).await?;
            merge_userinfo(&mut payload, info);
        }
        let user = self.user_of(&payload, claims.subject().as_str())?;
        let by_amr = amr.iter().any(|m| SECOND_FACTOR_AMR.contains(&m.as_str()));
        let by_acr = acr.as_ref().is_some_and(|acr| self.config.mfa_acr_values.contains(acr));
        let fresh = claims.auth_time().is_some_and(|at| (claims.issue_time() - at).num_seconds() <= FRESH_SECS);
        Ok(SignedIn { user, provider_mfa: self.config.trust_provider_mfa && (by_amr || by_acr), fresh, amr })
    }

    /// The UserInfo endpoint's claims, which must be about `subject`.
    async fn userinfo(&self, access_token: &str, subject: &str) -> Result<serde_json::Value, OidcError> {
        let metadata = self.metadata().await?;
        let endpoint = metadata.userinfo_endpoint().ok_or_else(|| OidcError::Refused("the provider has no UserInfo endpoint".into()))?;
        let response = self
            .http
            .get(endpoint.url().clone())
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("UserInfo: {}", e.without_url())))?;
        if !response.status().is_success() {
            return Err(OidcError::Refused(format!("UserInfo answered {}", response.status().as_u16())));
        }
        let info: serde_json::Value = response.json().await.map_err(|_| OidcError::Refused("UserInfo is not JSON".into()))?;
        // OpenID Connect Core 5.3.2: the sub must be the ID token's.
        if info.get("sub").and_then(|s| s.as_str()) != Some(subject) {
            return Err(OidcError::Refused("UserInfo is about another subject".into()));
        }
        Ok(info)
    }

    /// Where to send the browser after signing out here, when the provider
    /// has an end-session endpoint and the configuration names a way back.
    pub async fn logout_url(&self) -> Option<url::Url> {
        let back = self.config.post_logout_redirect_uri.as_ref()?;
        let metadata = self.metadata().await.ok()?;
        let endpoint = metadata.additional_metadata().end_session_endpoint.as_ref()?;
        let mut url = endpoint.url().clone();
        url.query_pairs_mut().append_pair("client_id", &self.config.client_id).append_pair("post_logout_redirect_uri", back.as_str());
        Some(url)
    }

    fn user_of(&self, payload: &serde_json::Value, subject: &str) -> Result<User, OidcError> {
        let claims = &self.config.claims;
        let text = |name: &str| payload.get(name).and_then(|v| v.as_str()).map(str::to_string);
        let username = text(&claims.username).unwrap_or_else(|| subject.to_string());
        if username.is_empty() || username.len() > crate::users::MAX_USERNAME_BYTES {
            return Err(OidcError::Refused("the user name claim is empty or too long".into()));
        }
        let groups = match payload.get(&claims.groups) {
            Some(serde_json::Value::Array(values)) => values.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(User {
            display_name: text(&claims.display_name).unwrap_or_else(|| username.clone()),
            email: text(&claims.email).unwrap_or_default(),
            phone: None,
            groups,
            username,
            password: String::new(),
        })
    }

    async fn client(&self) -> Result<Client, OidcError> {
        let metadata = self.metadata().await?;
        let redirect = RedirectUrl::from_url(self.config.redirect_uri.clone());
        Ok(CoreClient::from_provider_metadata(metadata, ClientId::new(self.config.client_id.clone()), self.client_secret.clone())
            .set_redirect_uri(redirect))
    }

    async fn metadata(&self) -> Result<ProviderMetadataWithLogout, OidcError> {
        let now = self.clock.now();
        if let Some((metadata, read)) = self.metadata.read().await.as_ref() {
            if now - read < METADATA_TTL {
                return Ok(metadata.clone());
            }
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| OidcError::Unavailable(format!("issuer: {e}")))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Unavailable(format!("discovery: {e}")))?;
        *self.metadata.write().await = Some((metadata.clone(), now));
        Ok(metadata)
    }

    /// Forgets the discovery document, so the next sign-in reads it again
    /// (after the provider failed, or rotated its keys).
    pub async fn forget_metadata(&self) {
        *self.metadata.write().await = None;
    }
}

/// UserInfo's claims over the ID token's, but never those that say who
/// issued the token, for whom, or when.
fn merge_userinfo(payload: &mut serde_json::Value, info: serde_json::Value) {
    let (Some(payload), serde_json::Value::Object(info)) = (payload.as_object_mut(), info) else {
        return;
    };
    for (name, value) in info {
        if !["iss", "aud", "exp", "iat", "nonce", "sub", "amr", "acr", "auth_time", "azp"].contains(&name.as_str()) {
            payload.insert(name, value);
        }
    }
}

/// A JWT's payload as JSON.
fn payload_of(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}
