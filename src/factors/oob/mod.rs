//! One-time codes sent out of band: by email, SMS or a phone call.
//!
//! A phone number or an email address becomes a factor only once the user
//! typed a code sent to it. A code is 6 digits from the CSPRNG, kept in
//! the shared cache only as a keyed MAC, bound to the session that asked
//! for it, valid for `codes.lifetime`, spent by its first right answer and
//! dead after `codes.attempts` wrong ones. Sending is limited per user, per
//! destination and per client address (an hour and a day), with a
//! cool-down per destination; every send is counted before the provider
//! is called. All of it lives in the cache, so it holds across instances.

pub mod delivery;
pub mod destination;
mod email;
mod twilio;
pub mod webhook;

use std::net::IpAddr;
use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use delivery::{Channel, Deliver, DeliveryError, Message};
pub use twilio::twiml;

use crate::cache::{Cache, CacheError, Counter, Refusal};
use crate::clock::Clock;
use crate::config::{CodesConfig, Config, PhoneChannelConfig};
use crate::crypto::{hex, random_bytes, sha256, Secrets};
use crate::store::{OobRow, Store, StoreError};

const CODE_DIGITS: usize = 6;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum OobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// What a code is for, kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purpose {
    pub channel: Channel,
    /// E.164 or an email address.
    pub destination: String,
    /// The enrolled factor it signs in with; None while enrolling.
    pub factor: Option<i64>,
}

/// A sent code, as the cache keeps it (sealed).
#[derive(Serialize, Deserialize)]
struct Pending {
    /// Names the code's attempt counter.
    id: String,
    purpose: Purpose,
    /// MAC of the id and the code: the code itself is not kept.
    mac: String,
    expires: i64,
}

/// The outcome of asking for a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    /// The same destination got a code moments ago.
    TooSoon {
        retry_after: i64,
    },
    /// A limit per user, destination or address is reached.
    Limited {
        retry_after: i64,
    },
    /// The provider did not take it; nothing was kept.
    Failed,
}

/// What became of a typed code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeVerdict {
    Accepted(Purpose),
    Wrong {
        left: u32,
    },
    /// No unexpired code for this session: never sent, used, or expired.
    NoCode,
    /// The code took its last wrong try; a new one must be sent.
    Exhausted,
}

/// Who asks for a code, from where.
pub struct Requester<'a> {
    pub session_key: &'a [u8; 32],
    pub username: &'a str,
    pub client_ip: IpAddr,
    pub host: &'a str,
}

pub struct OobFactor {
    store: Arc<dyn Store>,
    cache: Arc<dyn Cache>,
    secrets: Arc<Secrets>,
    clock: Arc<dyn Clock>,
    config: CodesConfig,
    product: String,
    email: Option<Arc<dyn Deliver>>,
    sms: Option<Arc<dyn Deliver>>,
    voice: Option<Arc<dyn Deliver>>,
    email_alone: bool,
    enter_address: bool,
    sms_countries: Vec<phonenumber::country::Id>,
    voice_countries: Vec<phonenumber::country::Id>,
}

impl OobFactor {
    /// The channels the configuration switches on, with their providers;
    /// an error names a setting that cannot be used (a missing secret).
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        secrets: Arc<Secrets>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let email = match &config.email {
            Some(email) => Some(Arc::new(email::EmailSender::new(email, &config.branding)?) as Arc<dyn Deliver>),
            None => None,
        };
        let sms = phone_provider(config.sms.as_ref(), Channel::Sms, &clock)?;
        let voice = phone_provider(config.voice.as_ref(), Channel::Voice, &clock)?;
        let countries = |channel: Option<&PhoneChannelConfig>| channel.map(|c| destination::countries(&c.countries)).unwrap_or_default();
        Ok(Self {
            store,
            cache,
            secrets,
            clock,
            config: config.codes.clone(),
            product: config.branding.product_name.clone(),
            email,
            sms,
            voice,
            email_alone: config.email.as_ref().is_some_and(|e| e.alone),
            enter_address: config.email.as_ref().is_some_and(|e| e.enter_address),
            sms_countries: countries(config.sms.as_ref()),
            voice_countries: countries(config.voice.as_ref()),
        })
    }

    fn provider(&self, channel: Channel) -> Option<&Arc<dyn Deliver>> {
        match channel {
            Channel::Email => self.email.as_ref(),
            Channel::Sms => self.sms.as_ref(),
            Channel::Voice => self.voice.as_ref(),
        }
    }

    pub fn offers(&self, channel: Channel) -> bool {
        self.provider(channel).is_some()
    }

    /// Whether email may be a user's only factor.
    pub fn email_alone(&self) -> bool {
        self.email_alone
    }

    /// Whether users may type an address other than the directory's.
    pub fn enter_address(&self) -> bool {
        self.enter_address
    }

    pub fn lifetime_minutes(&self) -> i64 {
        (self.config.lifetime + 59) / 60
    }

    /// The user's phone numbers and email addresses.
    pub async fn factors(&self, username: &str) -> Result<Vec<OobRow>, StoreError> {
        self.store.oob_factors(username).await
    }

    /// The switched-on channels that reach a stored destination.
    pub fn channels_of(&self, row: &OobRow) -> Vec<Channel> {
        Channel::ALL.into_iter().filter(|c| c.destination_kind() == row.channel && self.offers(*c)).collect()
    }

    /// A typed number in E.164 form, if `channel` may call or text it.
    pub fn phone_number(&self, input: &str, channel: Channel) -> Result<String, destination::PhoneError> {
        let countries = if channel == Channel::Voice { &self.voice_countries } else { &self.sms_countries };
        destination::phone_number(input, countries)
    }

    /// Stores a verified destination; its id, or None if the user has it.
    pub async fn enrol(&self, username: &str, purpose: &Purpose) -> Result<Option<i64>, StoreError> {
        let name = match purpose.channel {
            Channel::Email => destination::mask_email(&purpose.destination),
            _ => destination::mask_phone(&purpose.destination),
        };
        let now = self.clock.now();
        let row = OobRow {
            id: 0,
            username: username.to_string(),
            channel: purpose.channel.destination_kind().to_string(),
            destination: purpose.destination.clone(),
            name,
            created: now,
            last_used: Some(now),
        };
        self.store.insert_oob(&row).await
    }

    pub async fn record_use(&self, factor: i64) -> Result<(), StoreError> {
        self.store.touch_oob(factor, self.clock.now()).await
    }

    /// Sends a new code for `purpose`, replacing the session's earlier one
    /// once it is sent. The limits are counted first; a provider failure
    /// keeps nothing, so the earlier code (if any) still works, and lifts
    /// the cool-down, so the user may ask again at once (the hourly and
    /// daily counts stand: failures must not be a way round them).
    pub async fn send(&self, requester: &Requester<'_>, purpose: Purpose) -> Result<SendOutcome, OobError> {
        let Some(provider) = self.provider(purpose.channel) else {
            return Ok(SendOutcome::Failed);
        };
        if let Some(refused) = self.count_send(requester, &purpose).await? {
            return Ok(refused);
        }
        let code = Zeroizing::new(new_code());
        let message = Message {
            channel: purpose.channel,
            to: purpose.destination.clone(),
            code: code.clone(),
            host: requester.host.to_string(),
            product: self.product.clone(),
            minutes: self.lifetime_minutes(),
        };
        if let Err(e) = provider.deliver(&message).await {
            tracing::warn!(channel = purpose.channel.name(), user = %requester.username, error = %e, "could not send a one-time code");
            self.cache.reset(&self.cooldown(requester, &purpose)).await?;
            return Ok(SendOutcome::Failed);
        }
        let id = hex(&random_bytes::<16>());
        let pending = Pending { mac: self.code_mac(&id, &code), id, purpose, expires: self.clock.now() + self.config.lifetime };
        let json = Zeroizing::new(serde_json::to_vec(&pending).map_err(|e| CacheError::Corrupt(format!("a sent code: {e}")))?);
        let key = pending_key(requester.session_key);
        self.cache.put(&key, self.secrets.seal(key.as_bytes(), &json), self.config.lifetime).await?;
        Ok(SendOutcome::Sent)
    }

    /// Checks a typed code against the session's pending one. Each try is
    /// counted before the comparison; a right one is taken out of the
    /// cache, so of two answers at once only one passes.
    pub async fn check(&self, session_key: &[u8; 32], typed: &str) -> Result<CodeVerdict, OobError> {
        let key = pending_key(session_key);
        let Some(pending) = self.pending(&key).await? else {
            return Ok(CodeVerdict::NoCode);
        };
        let counter = Counter { bucket: "oob-code-tries", digest: digest_of(&pending.id), limit: self.config.attempts };
        match self.cache.count_all(&[counter], self.config.lifetime).await? {
            Ok(()) => {}
            Err(Refusal::Limit { .. }) => {
                self.cache.remove(&key).await?;
                return Ok(CodeVerdict::Exhausted);
            }
            // No room to count: refuse the try rather than let it through uncounted.
            Err(Refusal::Full { .. }) => return Ok(CodeVerdict::Exhausted),
        }
        let typed: String = typed.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        let expected = pending.mac.as_bytes();
        let right = typed.len() == CODE_DIGITS && bool::from(self.code_mac(&pending.id, &typed).as_bytes().ct_eq(expected));
        if !right {
            let used = self.cache.counted(&counter).await?;
            let left = self.config.attempts.saturating_sub(used);
            if left == 0 {
                self.cache.remove(&key).await?;
                return Ok(CodeVerdict::Exhausted);
            }
            return Ok(CodeVerdict::Wrong { left });
        }
        // Taken, not read: a second answer with the same code finds nothing.
        match self.cache.take(&key).await? {
            Some(_) => Ok(CodeVerdict::Accepted(pending.purpose)),
            None => Ok(CodeVerdict::NoCode),
        }
    }

    /// What the session's pending code is for, if it has one.
    pub async fn pending_purpose(&self, session_key: &[u8; 32]) -> Result<Option<Purpose>, OobError> {
        Ok(self.pending(&pending_key(session_key)).await?.map(|p| p.purpose))
    }

    async fn pending(&self, key: &str) -> Result<Option<Pending>, OobError> {
        let Some(sealed) = self.cache.get(key).await? else {
            return Ok(None);
        };
        let json = self.secrets.open(key.as_bytes(), &sealed).map_err(|_| CacheError::Corrupt("a sent code that does not open".into()))?;
        let pending: Pending = serde_json::from_slice(&json).map_err(|e| CacheError::Corrupt(format!("a sent code: {e}")))?;
        Ok((pending.expires > self.clock.now()).then_some(pending))
    }

    /// Counts the send against the cool-down and every limit, or says which
    /// refused it.
    async fn count_send(&self, requester: &Requester<'_>, purpose: &Purpose) -> Result<Option<SendOutcome>, OobError> {
        let destination = purpose.destination.as_str();
        if let Err(refusal) = self.cache.count_all(&[self.cooldown(requester, purpose)], self.config.resend_after).await? {
            return Ok(Some(SendOutcome::TooSoon { retry_after: retry_after(refusal) }));
        }
        let address = crate::throttle::subscriber(requester.client_ip);
        let limits = &self.config;
        for (window, name, pick) in [(HOUR, "hour", 0), (DAY, "day", 1)] {
            let limit = |l: crate::config::SendLimit| if pick == 0 { l.hour } else { l.day };
            let counters = [
                self.counter("oob-sends", &[name, "user", requester.username], limit(limits.per_user)),
                self.counter("oob-sends", &[name, "destination", destination], limit(limits.per_destination)),
                self.counter("oob-sends", &[name, "address", &address], limit(limits.per_address)),
            ];
            if let Err(refusal) = self.cache.count_all(&counters, window).await? {
                tracing::warn!(event = "code_send_limited", window = name, user = %requester.username, ip = %requester.client_ip, "authentication");
                return Ok(Some(SendOutcome::Limited { retry_after: retry_after(refusal) }));
            }
        }
        Ok(None)
    }

    /// One send per user and destination within `resend_after`.
    fn cooldown(&self, requester: &Requester<'_>, purpose: &Purpose) -> Counter {
        self.counter("oob-cooldown", &["cooldown", requester.username, &purpose.destination], 1)
    }

    fn counter(&self, bucket: &'static str, parts: &[&str], limit: u32) -> Counter {
        let joined = parts.iter().map(|p| format!("{}:{p}", p.len())).collect::<String>();
        Counter { bucket, digest: digest_of(&self.secrets.mac("oob counters", &joined)), limit }
    }

    fn code_mac(&self, id: &str, code: &str) -> String {
        self.secrets.mac("oob code", &format!("{id}:{code}"))
    }
}

fn phone_provider(channel: Option<&PhoneChannelConfig>, kind: Channel, clock: &Arc<dyn Clock>) -> Result<Option<Arc<dyn Deliver>>, String> {
    let Some(channel) = channel else {
        return Ok(None);
    };
    let provider: Arc<dyn Deliver> = match (&channel.twilio, &channel.webhook) {
        (Some(twilio), _) => Arc::new(twilio::Twilio::new(twilio, kind, channel.timeout)?),
        (None, Some(webhook)) => Arc::new(webhook::Webhook::new(webhook, kind, channel.timeout, clock.clone())?),
        (None, None) => return Err(format!("[{}] has no provider", kind.name())),
    };
    Ok(Some(provider))
}

/// Six digits, uniform, from the operating system's CSPRNG.
fn new_code() -> String {
    let value = rand::rngs::OsRng.gen_range(0..1_000_000u32);
    format!("{value:06}")
}

fn pending_key(session_key: &[u8; 32]) -> String {
    format!("oob-code:{}", hex(session_key))
}

fn digest_of(text: &str) -> [u8; 16] {
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&sha256(text.as_bytes())[..16]);
    digest
}

fn retry_after(refusal: Refusal) -> i64 {
    match refusal {
        Refusal::Limit { retry_after } | Refusal::Full { retry_after } => retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let code = new_code();
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
