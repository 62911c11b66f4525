//! Second-factor methods, the vocabulary shared by rules (`factors = [...]`),
//! sessions and the portal.

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

/// A kind of second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// An authenticator app.
    Totp,
    /// A roaming WebAuthn authenticator (a security key).
    SecurityKey,
    /// The device's own authenticator with user verification (biometrics).
    Platform,
    /// A single-use recovery code.
    Recovery,
    /// A code sent by text message.
    Sms,
    /// A code read out in a phone call.
    Voice,
    /// A code sent by email.
    Email,
    /// A second factor the OpenID provider did (trusted by configuration).
    Provider,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::SecurityKey,
        Method::Platform,
        Method::Totp,
        Method::Sms,
        Method::Voice,
        Method::Email,
        Method::Recovery,
        Method::Provider,
    ];

    fn index(self) -> usize {
        match self {
            Method::Totp => 0,
            Method::SecurityKey => 1,
            Method::Platform => 2,
            Method::Recovery => 3,
            Method::Sms => 4,
            Method::Voice => 5,
            Method::Email => 6,
            Method::Provider => 7,
        }
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }

    pub fn is_webauthn(self) -> bool {
        matches!(self, Method::SecurityKey | Method::Platform)
    }

    /// Whether it is a code sent to the user (email, SMS, voice).
    pub fn is_sent_code(self) -> bool {
        matches!(self, Method::Sms | Method::Voice | Method::Email)
    }
}

/// A set of methods, as a rule's `factors` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodSet(u8);

impl MethodSet {
    /// Any second factor at all, recovery codes included.
    pub const ANY: MethodSet = MethodSet(255);
    pub const WEBAUTHN: MethodSet = MethodSet(2 | 4);

    pub fn of(methods: &[Method]) -> Self {
        MethodSet(methods.iter().fold(0, |bits, m| bits | m.bit()))
    }

    pub fn contains(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    pub fn is_any(self) -> bool {
        self == Self::ANY
    }

    pub fn union(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 | other.0)
    }

    /// Parses a rule's `factors` entry: `totp`, `webauthn`, `security_key`,
    /// `platform`, `sms`, `voice`, `phone` (either), `email` or `provider`
    /// (a second factor done at the OpenID provider).
    pub fn parse_name(name: &str) -> Option<MethodSet> {
        Some(match name {
            "totp" => Self::of(&[Method::Totp]),
            "webauthn" => Self::WEBAUTHN,
            "security_key" => Self::of(&[Method::SecurityKey]),
            "platform" => Self::of(&[Method::Platform]),
            "sms" => Self::of(&[Method::Sms]),
            "voice" => Self::of(&[Method::Voice]),
            "phone" => Self::of(&[Method::Sms, Method::Voice]),
            "email" => Self::of(&[Method::Email]),
            "provider" => Self::of(&[Method::Provider]),
            _ => return None,
        })
    }

    /// The value of a `need` query parameter naming this set.
    pub fn to_query(self) -> String {
        Method::ALL.iter().filter(|m| self.contains(**m)).map(|m| m.name()).collect::<Vec<_>>().join(",")
    }

    /// The set a `need` query parameter names; anything unreadable means any.
    pub fn from_query(value: &str) -> MethodSet {
        let methods: Vec<Method> = value.split(',').filter_map(Method::from_name).collect();
        if methods.is_empty() {
            Self::ANY
        } else {
            Self::of(&methods)
        }
    }
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Totp => "totp",
            Method::SecurityKey => "security_key",
            Method::Platform => "platform",
            Method::Recovery => "recovery",
            Method::Sms => "sms",
            Method::Voice => "voice",
            Method::Email => "email",
            Method::Provider => "provider",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// When a session last did each method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodTimes([Option<UnixTime>; Method::ALL.len()]);

impl MethodTimes {
    /// Times with one authenticator-app code at `at`, if any: what tools
    /// that only know "a second factor, that long ago" describe.
    pub fn totp_at(at: Option<UnixTime>) -> Self {
        let mut times = Self::default();
        if let Some(at) = at {
            times.record(Method::Totp, at);
        }
        times
    }

    pub fn record(&mut self, method: Method, at: UnixTime) {
        let slot = &mut self.0[method.index()];
        *slot = Some(slot.map_or(at, |old| old.max(at)));
    }

    /// The latest time any method of `set` was done.
    pub fn latest(&self, set: MethodSet) -> Option<UnixTime> {
        Method::ALL.iter().filter(|m| set.contains(**m)).filter_map(|m| self.0[m.index()]).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_parse_and_round_trip_through_queries() {
        assert_eq!(MethodSet::parse_name("webauthn"), Some(MethodSet::WEBAUTHN));
        assert_eq!(MethodSet::parse_name("sms"), Some(MethodSet::of(&[Method::Sms])));
        assert_eq!(MethodSet::parse_name("fax"), None);
        assert!(!MethodSet::WEBAUTHN.contains(Method::Sms) && MethodSet::ANY.contains(Method::Email));
        let set = MethodSet::of(&[Method::Totp, Method::Platform]);
        assert_eq!(MethodSet::from_query(&set.to_query()), set);
        assert_eq!(MethodSet::from_query("nonsense"), MethodSet::ANY);
    }

    #[test]
    fn latest_time_is_per_set() {
        let mut times = MethodTimes::default();
        times.record(Method::Totp, 100);
        times.record(Method::SecurityKey, 50);
        assert_eq!(times.latest(MethodSet::ANY), Some(100));
        assert_eq!(times.latest(MethodSet::WEBAUTHN), Some(50));
        assert_eq!(times.latest(MethodSet::of(&[Method::Platform])), None);
    }
}
