//! `[codes]`, `[email]`, `[sms]` and `[voice]`: one-time codes sent to the
//! user. A channel is on when its section is present.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{values, ConfigError};

/// The codes themselves and the limits on sending them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodesConfig {
    /// How long a sent code may be typed.
    #[serde(with = "values::duration")]
    pub lifetime: i64,
    /// Wrong tries a code allows before a new one must be sent.
    pub attempts: u32,
    /// The wait before the same destination may get another code.
    #[serde(with = "values::duration")]
    pub resend_after: i64,
    /// Codes sent for one user.
    pub per_user: SendLimit,
    /// Codes sent to one phone number or email address.
    pub per_destination: SendLimit,
    /// Codes sent at the request of one client address (an IPv6 /64).
    pub per_address: SendLimit,
}

impl Default for CodesConfig {
    fn default() -> Self {
        Self {
            lifetime: 300,
            attempts: 5,
            resend_after: 30,
            per_user: SendLimit { hour: 10, day: 20 },
            per_destination: SendLimit { hour: 5, day: 10 },
            per_address: SendLimit { hour: 20, day: 100 },
        }
    }
}

/// At most this many codes an hour and a day.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendLimit {
    pub hour: u32,
    pub day: u32,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on this machine's loopback.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (checked against its certificate).
    pub server: String,
    /// Defaults to 587 (STARTTLS), 465 (TLS) or 25 (none).
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// CA certificates (PEM) the server's certificate may chain to, besides
    /// the public roots.
    pub ca_file: Option<PathBuf>,
    /// The From mailbox, e.g. `Example Security <security@example.com>`.
    pub sender: String,
    /// SMTP authentication; its password from `password_env` or `password_file`.
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_timeout", with = "values::duration")]
    pub timeout: i64,
    /// Whether email may be a user's only factor. Off (as at Auth0): a
    /// mailbox is often reachable with the same password, so email is
    /// offered only to users who also have another factor.
    #[serde(default)]
    pub alone: bool,
    /// Let users type an address to verify, instead of using the one the
    /// directory holds for them.
    #[serde(default)]
    pub enter_address: bool,
}

/// `[sms]` or `[voice]`: one provider, and the countries it may reach.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneChannelConfig {
    /// ISO 3166 country codes of the numbers that may be enrolled and
    /// called, so that nobody can make the gateway text premium or
    /// far-away numbers.
    pub countries: Vec<String>,
    pub twilio: Option<TwilioConfig>,
    pub webhook: Option<WebhookConfig>,
    #[serde(default = "default_timeout", with = "values::duration")]
    pub timeout: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token_env: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    /// The sending number (E.164) or a Messaging Service SID (`MG...`).
    pub from: String,
    #[serde(default = "twilio_api")]
    pub api_url: url::Url,
}

/// A JSON POST to any service that delivers, signed with HMAC-SHA256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
}

fn default_timeout() -> i64 {
    10
}

fn twilio_api() -> url::Url {
    url::Url::parse("https://api.twilio.com").expect("a valid URL")
}

/// Reads a secret from exactly one of an environment variable and a file.
/// Errors say where it was looked for, never what was found.
pub fn read_secret(key: &str, env: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    match (env, file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
            _ => Err(format!("{key}_env: the environment variable {var} is not set")),
        },
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{key}_file {}: {e}", file.display()))?;
            match text.trim() {
                "" => Err(format!("{key}_file {} is empty", file.display())),
                value => Ok(value.to_string()),
            }
        }
        (Some(_), Some(_)) => Err(format!("give only one of {key}_env and {key}_file")),
        (None, None) => Err(format!("set {key}_env or {key}_file")),
    }
}

impl CodesConfig {
    fn check(&self) -> Result<(), String> {
        if !(1..=10).contains(&self.attempts) {
            return Err("codes.attempts must be between 1 and 10".into());
        }
        if self.lifetime > 3600 {
            return Err("codes.lifetime must be at most 1h".into());
        }
        let limits = [("per_user", self.per_user), ("per_destination", self.per_destination), ("per_address", self.per_address)];
        for (name, limit) in limits {
            if limit.hour == 0 || limit.day < limit.hour {
                return Err(format!("codes.{name}: hour must be at least 1 and day at least hour"));
            }
        }
        Ok(())
    }
}

impl EmailConfig {
    fn check(&self) -> Result<(), String> {
        self.sender.parse::<lettre::message::Mailbox>().map_err(|e| format!("email.sender `{}`: {e}", self.sender))?;
        let loopback = matches!(self.server.as_str(), "localhost" | "127.0.0.1" | "::1" | "[::1]");
        if self.tls == SmtpTls::None && !loopback {
            return Err("email.tls = \"none\" is only for a relay on localhost: codes would cross the network in clear text".into());
        }
        match (&self.username, &self.password_env, &self.password_file) {
            (None, None, None) => Ok(()),
            (None, _, _) => Err("email: a password needs a username".into()),
            (Some(_), env, file) if env.is_some() == file.is_some() => Err("email: set password_env or password_file".into()),
            _ => Ok(()),
        }
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

impl PhoneChannelConfig {
    fn check(&self, section: &str) -> Result<(), String> {
        if self.countries.is_empty() {
            return Err(format!("[{section}] countries: list the countries whose numbers may get codes, e.g. [\"CH\", \"DE\"]"));
        }
        for country in &self.countries {
            if country.parse::<phonenumber::country::Id>().is_err() {
                return Err(format!("[{section}] countries: `{country}` is not an ISO 3166 country code"));
            }
        }
        match (&self.twilio, &self.webhook) {
            (Some(twilio), None) => {
                encrypted(&twilio.api_url, &format!("[{section}.twilio] api_url"))?;
                if twilio.auth_token_env.is_some() == twilio.auth_token_file.is_some() {
                    return Err(format!("[{section}.twilio]: set auth_token_env or auth_token_file"));
                }
                Ok(())
            }
            (None, Some(webhook)) => {
                encrypted(&webhook.url, &format!("[{section}.webhook] url"))?;
                if webhook.secret_env.is_some() == webhook.secret_file.is_some() {
                    return Err(format!("[{section}.webhook]: set secret_env or secret_file"));
                }
                Ok(())
            }
            _ => Err(format!("[{section}] needs one provider: [{section}.twilio] or [{section}.webhook]")),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let files =
            [self.twilio.as_mut().and_then(|t| t.auth_token_file.as_mut()), self.webhook.as_mut().and_then(|w| w.secret_file.as_mut())];
        for file in files.into_iter().flatten() {
            resolve(file, base);
        }
    }
}

/// Credentials and codes go over https, or over http only to this machine.
fn encrypted(url: &url::Url, key: &str) -> Result<(), String> {
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("{key} must be an https URL (http only to this machine): credentials and codes travel in it")),
    }
}

fn resolve(file: &mut PathBuf, base: &Path) {
    if file.is_relative() {
        *file = base.join(&*file);
    }
}

/// Checks the four sections together.
pub(super) fn check(
    codes: &CodesConfig,
    email: Option<&EmailConfig>,
    sms: Option<&PhoneChannelConfig>,
    voice: Option<&PhoneChannelConfig>,
    shown: &str,
) -> Result<(), ConfigError> {
    let other = |message: String| ConfigError::Other { path: shown.to_string(), message };
    codes.check().map_err(other)?;
    if let Some(email) = email {
        email.check().map_err(other)?;
    }
    for (section, channel) in [("sms", sms), ("voice", voice)] {
        if let Some(channel) = channel {
            channel.check(section).map_err(other)?;
        }
    }
    Ok(())
}

pub(super) fn resolve_paths(email: Option<&mut EmailConfig>, phones: [Option<&mut PhoneChannelConfig>; 2], base: &Path) {
    if let Some(email) = email {
        for file in [email.ca_file.as_mut(), email.password_file.as_mut()].into_iter().flatten() {
            resolve(file, base);
        }
    }
    for phone in phones.into_iter().flatten() {
        phone.resolve_paths(base);
    }
}
