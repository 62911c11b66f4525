//! Sessions: the cookie, the server-side record and its lifetime.
//!
//! Records live in the store and in an in-memory cache in front of it, so
//! an authenticated request costs a hash and a map lookup, not a query.

mod copies;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};

use self::copies::SessionCache;
use crate::cache::{Cache, CacheEvent, Invalidation};
use crate::clock::{Clock, UnixTime};
use crate::config::{Confidence, DuringOutage, SessionConfig};
use crate::crypto::{random_token, sha256};
use crate::health::Reachability;
use crate::methods::{Method, MethodTimes};
use crate::policy::risk::Assessment;
use crate::store::{FactorRef, SessionChange, SessionRow, Store, StoreError};

/// Ids the store did not know are remembered this long, so a stale or
/// forged cookie costs a map lookup rather than a query per request.
const UNKNOWN_ID_MEMORY_SECS: i64 = 60;
/// At most this many unknown ids are remembered; past it the memory starts over.
const UNKNOWN_ID_MEMORY_MAX: usize = 10_000;

/// The cookie-name prefix that binds a cookie to its host, https and `/`.
pub const HOST_PREFIX: &str = "__Host-";

/// Last-seen times reach the store at most this often per session.
const TOUCH_INTERVAL_SECS: i64 = 60;

/// A cached session older than this is read again before it is served:
/// whatever happens to the announcements (a message lost, a channel that
/// died without closing), no instance serves a copy older than this.
pub const REVALIDATE_SECS: i64 = 2;
/// A session id is 32 random bytes in unpadded base64url.
const SESSION_ID_LEN: usize = 43;

/// A factor a session has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    Pwd,
    Otp,
    Recovery,
    /// A security key that only tested the user's presence.
    SecurityKey,
    /// A security key that verified the user (PIN or its own biometrics).
    SecurityKeyVerified,
    /// The device's own authenticator, which always verifies the user.
    Platform,
    /// A code sent by text message.
    Sms,
    /// A code read out in a phone call.
    Voice,
    /// A code sent by email.
    Email,
    /// A second factor the OpenID provider did: `idp` in the assertion.
    Provider,
}

impl Factor {
    /// The methods as RFC 8176 names them: `hwk` for a hardware-bound key,
    /// `pin` when a security key verified its user, `user` when the
    /// device did (by biometrics or its unlock PIN; it does not say which).
    /// A recovery code is a one-time password. RFC 8176 has no name for a
    /// code sent by email: it is `email`.
    pub fn amr(self) -> &'static [&'static str] {
        match self {
            Factor::Pwd => &["pwd"],
            Factor::Otp | Factor::Recovery => &["otp"],
            Factor::SecurityKey => &["hwk"],
            Factor::SecurityKeyVerified => &["hwk", "pin"],
            Factor::Platform => &["hwk", "user"],
            Factor::Sms => &["sms"],
            Factor::Voice => &["tel"],
            Factor::Email => &["email"],
            Factor::Provider => &["idp"],
        }
    }

    /// The second-factor method this factor is, if it is one.
    pub fn method(self) -> Option<Method> {
        match self {
            Factor::Pwd => None,
            Factor::Otp => Some(Method::Totp),
            Factor::Recovery => Some(Method::Recovery),
            Factor::SecurityKey | Factor::SecurityKeyVerified => Some(Method::SecurityKey),
            Factor::Platform => Some(Method::Platform),
            Factor::Sms => Some(Method::Sms),
            Factor::Voice => Some(Method::Voice),
            Factor::Email => Some(Method::Email),
            Factor::Provider => Some(Method::Provider),
        }
    }

    pub fn is_second_factor(self) -> bool {
        self.method().is_some()
    }

    /// Whether the authenticator verified the user itself, so that it
    /// stands for two factors (passwordless sign-in).
    pub fn proves_user(self) -> bool {
        matches!(self, Factor::Platform | Factor::SecurityKeyVerified)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactorUse {
    pub factor: Factor,
    pub at: UnixTime,
    /// The WebAuthn credential or the phone or email factor (its id in the
    /// store) it was done with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<i64>,
}

impl FactorUse {
    /// Whether it was done with this one of the user's factors.
    pub fn done_with(&self, factor: FactorRef) -> bool {
        match factor {
            FactorRef::Totp => self.factor == Factor::Otp,
            FactorRef::Webauthn(id) => crate::factors::webauthn::used_credential(self, id),
            FactorRef::Oob(id) => self.credential == Some(id) && self.factor.method().is_some_and(Method::is_sent_code),
        }
    }
}

/// A factor just done, and the WebAuthn credential or the phone or email
/// factor it was done with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    pub factor: Factor,
    pub credential: Option<i64>,
}

impl Proof {
    fn used_at(self, at: UnixTime) -> FactorUse {
        FactorUse { factor: self.factor, at, credential: self.credential }
    }
}

impl From<Factor> for Proof {
    fn from(factor: Factor) -> Self {
        Proof { factor, credential: None }
    }
}

/// What the gateway learned when the session signed in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignInContext {
    #[serde(default)]
    pub assessment: Assessment,
    /// The client's country at sign-in.
    pub country: Option<String>,
    /// The browser's device id (from its device cookie).
    pub device_id: Option<String>,
    /// Adaptive rules skip the second factor until then.
    pub trusted_until: Option<UnixTime>,
    /// A keyed hash of the user's password hash at sign-in: the session
    /// ends when the password changes.
    #[serde(default)]
    pub password_fingerprint: Option<String>,
    /// A directory's or provider's user as they were at sign-in, for an
    /// instance that has not learned them yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<crate::users::ExternalUser>,
}

/// The key a session is stored under: the SHA-256 of its id.
pub type SessionKey = [u8; 32];

#[derive(Debug)]
pub struct Session {
    pub key: SessionKey,
    pub username: String,
    pub factors: Vec<FactorUse>,
    pub created: UnixTime,
    /// A TOTP secret being enrolled, sealed.
    pub pending_totp: Option<Vec<u8>>,
    pub context: SignInContext,
    last_seen: AtomicI64,
    persisted_seen: AtomicI64,
}

impl Session {
    /// This copy, having been seen no earlier than `earlier`, a copy of
    /// the same session this instance served: the store records activity
    /// only once a minute, so its copy may lag.
    fn seen_no_earlier_than(self: Arc<Self>, earlier: &Session) -> Arc<Self> {
        self.last_seen.fetch_max(earlier.last_seen(), Ordering::Relaxed);
        self
    }

    pub fn last_seen(&self) -> UnixTime {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Whether the session comes from a browser the user trusts, and the
    /// sign-in was not of low confidence (risk outranks the trust).
    pub fn trusts_browser(&self, now: UnixTime) -> bool {
        let trusted = self.context.trusted_until.is_some_and(|until| until > now);
        trusted && self.context.assessment.confidence != Confidence::Low
    }

    /// When the most recent second factor was done.
    pub fn second_factor_at(&self) -> Option<UnixTime> {
        self.factors.iter().filter(|f| f.factor.is_second_factor()).map(|f| f.at).max()
    }

    /// When each second-factor method was last done.
    pub fn method_times(&self) -> MethodTimes {
        let mut times = MethodTimes::default();
        for used in &self.factors {
            if let Some(method) = used.factor.method() {
                times.record(method, used.at);
            }
        }
        times
    }

    /// When the most recent factor was done: the assertion's `auth_time`.
    pub fn last_factor_at(&self) -> UnixTime {
        self.factors.iter().map(|f| f.at).max().unwrap_or(self.created)
    }

    fn to_row(&self) -> SessionRow {
        SessionRow {
            key: self.key,
            username: self.username.clone(),
            factors: factors_json(&self.factors),
            created: self.created,
            last_seen: self.last_seen(),
            pending_totp: self.pending_totp.clone(),
            context: context_json(&self.context),
        }
    }

    fn from_row(row: SessionRow) -> Option<Self> {
        let factors = serde_json::from_str(&row.factors).ok()?;
        // An unreadable context means nothing is known about the sign-in.
        let context = serde_json::from_str(&row.context).unwrap_or_default();
        Some(Session {
            context,
            key: row.key,
            username: row.username,
            factors,
            created: row.created,
            pending_totp: row.pending_totp,
            last_seen: AtomicI64::new(row.last_seen),
            persisted_seen: AtomicI64::new(row.last_seen),
        })
    }
}

/// Creates, finds, renews and ends sessions.
///
/// A signed-in request is answered from this instance's cache, without a
/// round trip to the store, while that cache can be trusted: the store
/// answers and this instance hears every other instance's changes (see
/// [`Sessions::listen`]). Otherwise sessions are read from the store.
pub struct Sessions {
    store: Arc<dyn Store>,
    /// Where changes are announced to every instance.
    shared: Arc<dyn Cache>,
    reachability: Arc<Reachability>,
    clock: Arc<dyn Clock>,
    config: SessionConfig,
    /// The cookie's name over https: see [`Sessions::cookie_name_for`].
    secure_cookie_name: String,
    cache: RwLock<SessionCache>,
    /// Keys the store did not have, and when it said so.
    unknown: RwLock<HashMap<SessionKey, UnixTime>>,
    /// Each user's password fingerprint in the users file now in force.
    password_fingerprints: RwLock<crate::FastMap<String, String>>,
    /// Users live in an external directory (see [`Sessions::set_password_fingerprints`]).
    external_directory: std::sync::atomic::AtomicBool,
}

/// Whether a lookup may be answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Cached,
    Fresh,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        shared: Arc<dyn Cache>,
        reachability: Arc<Reachability>,
        clock: Arc<dyn Clock>,
        config: SessionConfig,
    ) -> Self {
        Self {
            store,
            shared,
            reachability,
            clock,
            secure_cookie_name: match config.cookie_domain {
                None => format!("{HOST_PREFIX}{}", config.cookie_name.0),
                Some(_) => config.cookie_name.0.clone(),
            },
            config,
            cache: RwLock::new(SessionCache::default()),
            unknown: RwLock::new(HashMap::new()),
            password_fingerprints: RwLock::new(crate::FastMap::default()),
            external_directory: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn cookie_name(&self) -> &str {
        &self.config.cookie_name.0
    }

    /// The session cookie's name as the browser holds it. Over https, and
    /// unless it is shared with sibling hosts (`cookie_domain`), it carries
    /// the `__Host-` prefix: browsers then keep it to this host, https and
    /// path `/`, so a sibling host cannot plant a session of its choosing.
    pub fn cookie_name_for(&self, secure: bool) -> &str {
        match secure {
            true => &self.secure_cookie_name,
            false => &self.config.cookie_name.0,
        }
    }

    /// Sets the users' password fingerprints (user name to fingerprint)
    /// of the users file in force: a session made under another password
    /// of its user, or of a user no longer listed, has ended.
    /// With `external` (an LDAP directory), a session without a fingerprint
    /// lives on: its user is re-checked in the directory instead.
    pub fn set_password_fingerprints(&self, fingerprints: crate::FastMap<String, String>, external: bool) {
        *self.password_fingerprints.write().unwrap_or_else(PoisonError::into_inner) = fingerprints;
        self.external_directory.store(external, Ordering::Relaxed);
    }

    /// The live session for a cookie value, or None when the value is
    /// malformed, unknown or expired, or its user's password changed.
    /// Marks the session as seen. Answered from the cache when it is
    /// current: for the requests proxied to apps.
    pub async fn lookup(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        self.find(id, Read::Cached).await
    }

    /// As [`Sessions::lookup`], always as the store has the session now:
    /// for the portal, whose pages act on the session's latest state even
    /// when the change that made it, on another instance, was announced a
    /// moment ago.
    pub async fn lookup_fresh(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        self.find(id, Read::Fresh).await
    }

    async fn find(&self, id: &str, read: Read) -> Result<Option<Arc<Session>>, StoreError> {
        if id.len() != SESSION_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Ok(None);
        }
        let key = sha256(id.as_bytes());
        let now = self.clock.now();
        let session = match self.cached(&key, now) {
            Some(found) if read == Read::Cached && !found.refresh && self.may_serve(&found.session, found.read_at, now) => found.session,
            // Another instance may have seen the session since, or ended it.
            Some(found) => match self.read_again(&key, found, read, now).await? {
                Some(session) => session,
                None => return Ok(None),
            },
            None if self.recently_unknown(&key, now) => return Ok(None),
            None => match self.load(&key).await? {
                Some(loaded) => loaded,
                None => {
                    self.remember_unknown(key, now);
                    return Ok(None);
                }
            },
        };
        if self.is_expired(&session, now) {
            self.delete(&session.key).await?;
            return Ok(None);
        }
        if !self.password_unchanged(&session) {
            // Not deleted: while a new users file rolls out, another
            // instance may still be right to accept the session.
            self.evict(|cached| cached.key == key);
            return Ok(None);
        }
        self.refuse_during_cache_outage(now)?;
        self.mark_seen(&session, now);
        Ok(Some(session))
    }

    /// While the shared cache is down, a session ended on another instance
    /// may not have been announced: signed-in requests are refused unless
    /// `session.during_outage` allows a grace.
    fn refuse_during_cache_outage(&self, now: UnixTime) -> Result<(), StoreError> {
        let Some(since) = self.reachability.cache.since() else { return Ok(()) };
        match self.config.during_outage {
            DuringOutage::ServeCached if now - since <= self.config.outage_grace => Ok(()),
            _ => Err(StoreError::Outage("the shared cache is unreachable")),
        }
    }

    /// The session as the store has it now (for a handler that wrote to
    /// it), or None when it has ended.
    pub async fn reread(&self, session: &Session) -> Result<Option<Arc<Session>>, StoreError> {
        self.load(&session.key).await
    }

    /// Reads a session from the store into the cache.
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        let writes_before = self.writes_so_far();
        let row = match self.store.get_session(key).await {
            Ok(row) => row,
            Err(e) => {
                if e.is_outage() {
                    self.reachability.store_failed();
                }
                return Err(e);
            }
        };
        self.reachability.store_answered();
        let Some(loaded) = row.and_then(Session::from_row) else {
            return Ok(None);
        };
        let loaded = Arc::new(loaded);
        self.cache_fill(loaded.clone(), writes_before, self.clock.now());
        Ok(Some(loaded))
    }

    fn recently_unknown(&self, key: &SessionKey, now: UnixTime) -> bool {
        let unknown = self.unknown.read().ok().and_then(|unknown| unknown.get(key).copied());
        unknown.is_some_and(|at| now - at < UNKNOWN_ID_MEMORY_SECS)
    }

    fn remember_unknown(&self, key: SessionKey, now: UnixTime) {
        if let Ok(mut unknown) = self.unknown.write() {
            if unknown.len() >= UNKNOWN_ID_MEMORY_MAX {
                unknown.clear();
            }
            unknown.insert(key, now);
        }
    }

    fn is_expired(&self, session: &Session, now: UnixTime) -> bool {
        now - session.last_seen() > self.config.inactivity || now - session.created > self.config.absolute
    }

    fn password_unchanged(&self, session: &Session) -> bool {
        if session.context.password_fingerprint.is_none() {
            return self.external_directory.load(Ordering::Relaxed);
        }
        let fingerprints = self.password_fingerprints.read().unwrap_or_else(PoisonError::into_inner);
        let current = fingerprints.get(&session.username);
        current.is_some() && current == session.context.password_fingerprint.as_ref()
    }

    fn mark_seen(&self, session: &Arc<Session>, now: UnixTime) {
        session.last_seen.fetch_max(now, Ordering::Relaxed);
        let persisted = session.persisted_seen.load(Ordering::Relaxed);
        if now - persisted >= TOUCH_INTERVAL_SECS
            && session.persisted_seen.compare_exchange(persisted, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let store = self.store.clone();
            let key = session.key;
            tokio::spawn(async move {
                if let Err(e) = store.touch_session(&key, now).await {
                    tracing::debug!(error = %e, "could not record session activity");
                }
            });
        }
    }

    /// Starts a session after the first factor. Returns the new id.
    pub async fn create(
        &self,
        username: &str,
        proof: impl Into<Proof>,
        context: SignInContext,
    ) -> Result<(String, Arc<Session>), StoreError> {
        let now = self.clock.now();
        let parts = SessionParts {
            username: username.to_string(),
            factors: vec![proof.into().used_at(now)],
            created: now,
            pending_totp: None,
            context,
        };
        let (id, session) = new_session(parts, now);
        self.store.insert_session(&session.to_row()).await?;
        Ok((id, session))
    }

    /// Records another factor (and, when the user asked, until when this
    /// browser is trusted). The session gets a new id (no fixation) and the
    /// old id stops working. None when the session ended meanwhile.
    pub async fn add_factor(
        &self,
        old: &Session,
        proof: impl Into<Proof>,
        trusted_until: Option<UnixTime>,
    ) -> Result<Option<(String, Arc<Session>)>, StoreError> {
        let now = self.clock.now();
        let proof = proof.into();
        let mut factors: Vec<FactorUse> = old.factors.iter().copied().filter(|f| f.factor != proof.factor).collect();
        factors.push(proof.used_at(now));
        let mut context = old.context.clone();
        context.trusted_until = trusted_until.or(context.trusted_until);
        let parts = SessionParts { username: old.username.clone(), factors, created: old.created, pending_totp: None, context };
        let (id, renewed) = new_session(parts, now);
        let still_live = self.store.renew_session(&old.key, &renewed.to_row()).await?;
        self.evict_everywhere(&old.key).await;
        if !still_live {
            return Ok(None);
        }
        // The trust was copied from the old session: if the browser was
        // untrusted meanwhile, the untrusting may have missed the new one.
        match self.keep_trust_only_if_current(renewed).await? {
            Some(renewed) => Ok(Some((id, renewed))),
            None => Ok(None),
        }
    }

    /// The session, without its browser trust when the store no longer
    /// trusts its browser; None when it has ended.
    async fn keep_trust_only_if_current(&self, session: Arc<Session>) -> Result<Option<Arc<Session>>, StoreError> {
        let (Some(_), Some(device)) = (session.context.trusted_until, &session.context.device_id) else {
            return Ok(Some(session));
        };
        let now = self.clock.now();
        let trusted = self.store.device_trusted_until(&session.username, device).await?.is_some_and(|until| until > now);
        if trusted {
            return Ok(Some(session));
        }
        let mut context = session.context.clone();
        context.trusted_until = None;
        self.change(&session.key, SessionChange::Context(&context_json(&context))).await
    }

    /// Ends the trust in a browser in every session of the user's that
    /// came from it, once the store no longer trusts it.
    pub async fn end_device_trust(&self, username: &str, device_id: &str) -> Result<(), StoreError> {
        for row in self.store.sessions_of(username).await? {
            let Some(session) = Session::from_row(row) else { continue };
            if session.context.device_id.as_deref() != Some(device_id) || session.context.trusted_until.is_none() {
                continue;
            }
            let mut context = session.context.clone();
            context.trusted_until = None;
            self.change(&session.key, SessionChange::Context(&context_json(&context))).await?;
        }
        Ok(())
    }

    /// Keeps a sealed TOTP secret with the session while the user enrols,
    /// or forgets it. None when the session has ended.
    pub async fn set_pending_totp(&self, session: &Session, sealed: Option<Vec<u8>>) -> Result<Option<Arc<Session>>, StoreError> {
        self.change(&session.key, SessionChange::PendingTotp(sealed.as_deref())).await
    }

    /// After a factor was removed (or found cloned): ends the user's
    /// sessions that did it, except `keep`, which forgets having done it and
    /// so must prove a factor again. Returns `keep` as it is now, or None
    /// when it has ended.
    pub async fn forget_factor(
        &self,
        username: &str,
        did: impl Fn(&FactorUse) -> bool,
        keep: Option<&SessionKey>,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let mut kept = None;
        for row in self.store.sessions_of(username).await? {
            let Some(session) = Session::from_row(row) else { continue };
            if Some(&session.key) == keep {
                let factors: Vec<FactorUse> = session.factors.iter().copied().filter(|f| !did(f)).collect();
                kept = self.change(&session.key, SessionChange::Factors(&factors_json(&factors))).await?;
            } else if session.factors.iter().any(&did) {
                self.delete(&session.key).await?;
            }
        }
        Ok(kept)
    }

    /// The user's sessions as stored, most recently seen first.
    pub async fn of_user(&self, username: &str) -> Result<Vec<Session>, StoreError> {
        Ok(self.store.sessions_of(username).await?.into_iter().filter_map(Session::from_row).collect())
    }

    /// Ends every session of the user, on every instance; how many there were.
    pub async fn end_all(&self, username: &str) -> Result<u64, StoreError> {
        let ended = self.store.delete_sessions_of(username).await?;
        self.forget_user_everywhere(username).await;
        Ok(ended)
    }

    /// Once the store has deleted a user's sessions (an MFA reset does so
    /// in its own transaction): no instance may serve them from its cache.
    pub async fn forget_user_everywhere(&self, username: &str) {
        self.evict(|cached| cached.username == username);
        if let Err(e) = self.shared.publish(&Invalidation::User(username.to_string())).await {
            tracing::debug!(error = %e, "could not announce that a user's sessions ended");
        }
    }

    /// Writes a change to a session that keeps its id; None when the
    /// session no longer exists.
    async fn change(&self, key: &SessionKey, change: SessionChange<'_>) -> Result<Option<Arc<Session>>, StoreError> {
        let row = self.store.update_session(key, change).await?;
        self.evict_everywhere(key).await;
        Ok(row.and_then(Session::from_row).map(Arc::new))
    }

    pub async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.store.delete_session(key).await?;
        self.evict_everywhere(key).await;
        Ok(())
    }

    /// Drops expired sessions from the cache and the store.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        // Activity reaches the store once a minute: a session another
        // instance served within that minute may look idle here.
        let idle_before = now - self.config.inactivity - TOUCH_INTERVAL_SECS;
        let swept = self.store.delete_expired_sessions(idle_before, now - self.config.absolute).await?;
        if let Ok(mut cache) = self.cache.write() {
            cache.writes += 1;
            cache.sessions.retain(|_, copy| !self.is_expired(&copy.session, now));
        }
        Ok(swept)
    }

    /// The session cookie; `Secure` (and `__Host-`, see
    /// [`Sessions::cookie_name_for`]) whenever users reach the app over https.
    pub fn cookie(&self, id: String, secure: bool) -> Cookie<'static> {
        let mut cookie =
            Cookie::build((self.cookie_name_for(secure).to_owned(), id)).http_only(true).same_site(SameSite::Lax).secure(secure).path("/");
        if let Some(domain) = &self.config.cookie_domain {
            cookie = cookie.domain(domain.clone());
        }
        cookie.build()
    }

    /// A cookie that makes the browser forget the session.
    pub fn removal_cookie(&self, secure: bool) -> Cookie<'static> {
        let mut cookie = self.cookie(String::new(), secure);
        cookie.make_removal();
        cookie
    }

    /// Called after every write to a stored session, once the write is
    /// done: no instance may keep serving its earlier copy.
    async fn evict_everywhere(&self, key: &SessionKey) {
        self.evict(|cached| cached.key == *key);
        // When the message cannot be sent, the other instances have lost
        // the channel too, and read sessions from the store meanwhile.
        if let Err(e) = self.shared.publish(&Invalidation::Session(*key)).await {
            tracing::debug!(error = %e, "could not announce a session change");
        }
    }

    /// Applies the changes every instance announces (this one's included)
    /// to this instance's cache, until the sessions are dropped.
    pub fn listen(self: &Arc<Self>) {
        let mut events = self.shared.subscribe();
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => CacheEvent::MaybeMissed,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(sessions) = this.upgrade() else { return };
                match event {
                    CacheEvent::Invalidated(Invalidation::Session(key)) => sessions.evict(|cached| cached.key == key),
                    CacheEvent::Invalidated(Invalidation::User(name)) => sessions.evict(|cached| cached.username == name),
                    CacheEvent::MaybeMissed => sessions.evict(|_| true),
                }
            }
        });
    }
}

fn new_session(parts: SessionParts, now: UnixTime) -> (String, Arc<Session>) {
    let id = random_token();
    let session = Session {
        key: sha256(id.as_bytes()),
        username: parts.username,
        factors: parts.factors,
        created: parts.created,
        pending_totp: parts.pending_totp,
        context: parts.context,
        last_seen: AtomicI64::new(now),
        persisted_seen: AtomicI64::new(now),
    };
    (id, Arc::new(session))
}

fn factors_json(factors: &[FactorUse]) -> String {
    serde_json::to_string(factors).unwrap_or_else(|_| "[]".into())
}

fn context_json(context: &SignInContext) -> String {
    serde_json::to_string(context).unwrap_or_else(|_| "{}".into())
}

struct SessionParts {
    username: String,
    factors: Vec<FactorUse>,
    created: UnixTime,
    pending_totp: Option<Vec<u8>>,
    context: SignInContext,
}
