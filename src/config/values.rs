//! Small value types that validate themselves while the file is parsed, so
//! that a bad value is reported with its line.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Deserializer};

/// Declares a string newtype whose `Deserialize` runs a check.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                let check: fn(String) -> Result<String, String> = $check;
                check(raw).map($name).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// An app id: the `aud` of its assertions.
    AppId,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if ok { Ok(s) } else { Err(format!("invalid app id `{s}`: use 1-64 letters, digits, `-`, `_` or `.`")) }
    }
);

checked_string!(
    /// A host name the gateway answers for, without a port, lower case.
    HostName,
    |s| {
        let lower = s.to_ascii_lowercase();
        let ok = match lower.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => {
                !lower.is_empty()
                    && lower.len() <= 253
                    && lower.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            }
        };
        if ok { Ok(lower) } else { Err(format!("invalid host name `{s}` (give a name without scheme or port)")) }
    }
);

checked_string!(
    /// An HTTP header name, stored lower case.
    HeaderName,
    |s| match http::HeaderName::from_bytes(s.as_bytes()) {
        Ok(name) => Ok(name.as_str().to_string()),
        Err(_) => Err(format!("invalid header name `{s}`")),
    }
);

checked_string!(
    /// A `Server` header value: printable ASCII, at most 100 characters.
    ServerHeader,
    |s| {
        let ok = !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if ok { Ok(s) } else { Err(format!("invalid server_header `{s}`: use 1-100 printable ASCII characters")) }
    }
);

checked_string!(
    /// A cookie name (an RFC 6265 token).
    CookieName,
    |s| {
        let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        if ok { Ok(s) } else { Err(format!("invalid cookie name `{s}`")) }
    }
);

checked_string!(
    /// An absolute https URL, e.g. for a logo.
    HttpsUrl,
    |s| match url::Url::parse(&s) {
        Ok(u) if u.scheme() == "https" => Ok(u.to_string()),
        _ => Err(format!("`{s}` is not an absolute https URL")),
    }
);

checked_string!(
    /// A CSS colour as `#rgb` or `#rrggbb`; anything else could inject CSS.
    CssColor,
    |s| {
        let hex = s.strip_prefix('#').unwrap_or("");
        let ok = (hex.len() == 3 || hex.len() == 6) && hex.chars().all(|c| c.is_ascii_hexdigit());
        if ok { Ok(s) } else { Err(format!("invalid colour `{s}`: use #rgb or #rrggbb")) }
    }
);

checked_string!(
    /// A `tracing` filter directive such as `info` or `stepgate=debug,warn`.
    LogLevel,
    |s| match tracing_subscriber::EnvFilter::try_new(&s) {
        Ok(_) => Ok(s),
        Err(e) => Err(format!("invalid logging.level `{s}`: {e}")),
    }
);

/// The networks whose forwarding headers are believed. Trusting every
/// address (a /0) would let any client choose its own IP, so it is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let nets = Vec::<ipnet::IpNet>::deserialize(d)?;
        if let Some(all) = nets.iter().find(|net| net.prefix_len() == 0) {
            return Err(serde::de::Error::custom(format!("server.trusted_proxies must not trust every address ({all})")));
        }
        Ok(TrustedProxies(nets))
    }
}

impl std::ops::Deref for TrustedProxies {
    type Target = [ipnet::IpNet];

    fn deref(&self) -> &[ipnet::IpNet] {
        &self.0
    }
}

checked_string!(
    /// A two-letter ISO 3166 country code, stored upper case.
    CountryCode,
    |s| {
        let upper = s.to_ascii_uppercase();
        if upper.len() == 2 && upper.bytes().all(|b| b.is_ascii_uppercase()) { Ok(upper) } else { Err(format!("invalid country code `{s}`: use two letters such as CH")) }
    }
);

checked_string!(
    /// A continent code as MaxMind gives it: AF, AN, AS, EU, NA, OC or SA.
    ContinentCode,
    |s| {
        let upper = s.to_ascii_uppercase();
        if ["AF", "AN", "AS", "EU", "NA", "OC", "SA"].contains(&upper.as_str()) { Ok(upper) } else { Err(format!("invalid continent code `{s}`: use AF, AN, AS, EU, NA, OC or SA")) }
    }
);

/// A time of day range written `08:00-18:00` (end exclusive; `22:00-06:00` wraps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours(pub super::HourRange);

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        parse_hours(&raw)
            .map(Hours)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid hours `{raw}`: use HH:MM-HH:MM, e.g. 08:00-18:00")))
    }
}

fn parse_hours(raw: &str) -> Option<super::HourRange> {
    let minute = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    let (start, end) = raw.split_once('-')?;
    let range = super::HourRange { start: minute(start)?, end: minute(end)? };
    (range.start != range.end).then_some(range)
}

/// A day of the week: `mon` .. `sun` (or the full English name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day(pub chrono::Weekday);

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse::<chrono::Weekday>()
            .map(Day)
            .map_err(|_| serde::de::Error::custom(format!("invalid day `{raw}`: use mon, tue, wed, thu, fri, sat or sun")))
    }
}

/// An IANA time zone name such as `Europe/Zurich`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse::<chrono_tz::Tz>()
            .map(TimeZone)
            .map_err(|_| serde::de::Error::custom(format!("unknown time zone `{raw}` (use an IANA name such as Europe/Zurich)")))
    }
}

/// An HTTP method a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(pub http::Method);

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let upper = raw.to_ascii_uppercase();
        match http::Method::from_bytes(upper.as_bytes()) {
            Ok(m) if upper.chars().all(|c| c.is_ascii_uppercase()) => Ok(Method(m)),
            _ => Err(serde::de::Error::custom(format!("invalid HTTP method `{raw}`"))),
        }
    }
}

/// One upstream peer, resolved when the configuration loads so that the
/// request path never waits on DNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Server name for TLS and the peer's host name.
    pub host: String,
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        parse_upstream(&raw).map_err(serde::de::Error::custom)
    }
}

fn parse_upstream(raw: &str) -> Result<Upstream, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("invalid upstream `{raw}`: {e} (use http://host:port)"))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("invalid upstream `{raw}`: scheme `{other}` is not http or https")),
    };
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(format!("invalid upstream `{raw}`: give only scheme, host and port"));
    }
    let host = url.host_str().ok_or_else(|| format!("invalid upstream `{raw}`: no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (bare_host, port)
        .to_socket_addrs()
        .map_err(|e| format!("upstream `{raw}` does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("upstream `{raw}` does not resolve"))?;
    Ok(Upstream { addr, tls, host: bare_host.to_string() })
}

macro_rules! bounded_number {
    ($name:ident, $ty:ty, $min:expr, $max:expr, $what:expr) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub $ty);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = i64::deserialize(d)?;
                if !($min..=$max).contains(&n) {
                    return Err(serde::de::Error::custom(format!("{} must be between {} and {}, not {n}", $what, $min, $max)));
                }
                Ok($name(n as $ty))
            }
        }
    };
}

bounded_number!(MaxHeaderBytes, usize, 4096, 1024 * 1024, "server.max_header_bytes");
bounded_number!(MaxConnections, usize, 1, 1_000_000, "server.max_connections");
bounded_number!(CheckThreshold, u32, 1, 100, "health_check thresholds");
bounded_number!(FailureLimit, u32, 1, 1000, "limits (failures)");
bounded_number!(HashWorkers, usize, 0, 64, "limits.password_hashes");
bounded_number!(HashQueue, usize, 0, 1024, "limits.password_queue");
bounded_number!(TotpDigits, usize, 6, 8, "totp.digits");
bounded_number!(TotpPeriod, u64, 15, 120, "totp.period (seconds)");
bounded_number!(TotpSkew, u8, 0, 2, "totp.skew (steps)");
bounded_number!(RecoveryCodeCount, usize, 1, 50, "recovery_codes.count");
// Ten characters of a 32-letter alphabet are 50 bits: enough for a code
// that is stored as a fast keyed hash and whose guesses are throttled.
bounded_number!(RecoveryCodeLength, usize, 10, 32, "recovery_codes.length");

checked_string!(
    /// An authenticator model's AAGUID, as a lower-case UUID.
    Aaguid,
    |s| match uuid::Uuid::parse_str(&s) {
        Ok(id) => Ok(id.hyphenated().to_string()),
        Err(_) => Err(format!("invalid AAGUID `{s}`: give it as a UUID, e.g. `cb69481e-8ff7-4039-93ec-0a2729a154a8`")),
    }
);

/// Durations written as `90s`, `30m`, `12h` or `7d`, held as seconds.
pub mod duration {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let raw = String::deserialize(d)?;
        parse(&raw).map_err(serde::de::Error::custom)
    }

    pub fn parse(raw: &str) -> Result<i64, String> {
        let parsed = humantime::parse_duration(raw).map_err(|e| format!("invalid duration `{raw}`: {e} (examples: 90s, 30m, 12h)"))?;
        let secs = parsed.as_secs();
        if secs == 0 || secs > 366 * 24 * 3600 {
            return Err(format!("duration `{raw}` must be between 1s and 366d"));
        }
        Ok(secs as i64)
    }
}

/// An optional duration, for fields that may be left out.
pub mod optional_duration {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let raw = String::deserialize(d)?;
        super::duration::parse(&raw).map(Some).map_err(serde::de::Error::custom)
    }
}

/// A connection timeout (`server.keepalive_timeout`, `server.header_timeout`):
/// a duration of at most an hour, since a longer one is the resource hold
/// these timeouts exist to prevent.
pub mod connection_timeout {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let raw = String::deserialize(d)?;
        let secs = super::duration::parse(&raw).map_err(serde::de::Error::custom)?;
        if secs > 3600 {
            return Err(serde::de::Error::custom(format!("connection timeout `{raw}` must be between 1s and 1h")));
        }
        Ok(std::time::Duration::from_secs(secs as u64))
    }
}

/// The assertion lifetime: a duration of at most five minutes.
pub mod assertion_lifetime {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let raw = String::deserialize(d)?;
        let secs = super::duration::parse(&raw).map_err(serde::de::Error::custom)?;
        if !(30..=crate::config::MAX_ASSERTION_LIFETIME_SECS).contains(&secs) {
            return Err(serde::de::Error::custom(format!("assertion.lifetime `{raw}` must be between 30s and 5m")));
        }
        Ok(secs)
    }
}
