//! A generic webhook: a signed JSON POST that any gateway or in-house
//! service can turn into an SMS or a call.
//!
//! The body is `{"channel", "to", "code", "text"}`; `X-Stepgate-Timestamp`
//! holds the Unix time and `X-Stepgate-Signature` is `v1=` and the hex
//! HMAC-SHA256, keyed with the shared secret, of `{timestamp}.{body}`. A
//! receiver recomputes it, compares in constant time and refuses
//! timestamps more than a few minutes away from its clock.

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::delivery::{answer_of, Channel, Deliver, DeliveryError, Message};
use super::twilio::http_client;
use crate::clock::Clock;
use crate::config::{read_secret, WebhookConfig};
use crate::crypto::hex;

pub const TIMESTAMP_HEADER: &str = "x-stepgate-timestamp";
pub const SIGNATURE_HEADER: &str = "x-stepgate-signature";

pub struct Webhook {
    client: reqwest::Client,
    url: url::Url,
    secret: Zeroizing<String>,
    clock: Arc<dyn Clock>,
}

impl Webhook {
    pub fn new(config: &WebhookConfig, channel: Channel, timeout: i64, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let key = format!("{}.webhook.secret", channel.name());
        let secret = read_secret(&key, config.secret_env.as_deref(), config.secret_file.as_deref())?;
        Ok(Self { client: http_client(timeout)?, url: config.url.clone(), secret: Zeroizing::new(secret), clock })
    }
}

/// The signature header's value for a body sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex(&mac.finalize().into_bytes()))
}

#[async_trait]
impl Deliver for Webhook {
    async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        let text = match message.channel {
            Channel::Voice => message.spoken_text(),
            _ => message.sms_text(),
        };
        let body = serde_json::json!({
            "channel": message.channel.name(),
            "to": message.to,
            "code": *message.code,
            "text": text,
        });
        let body = Zeroizing::new(body.to_string().into_bytes());
        let timestamp = self.clock.now();
        let request = self
            .client
            .post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp)
            .header(SIGNATURE_HEADER, signature(self.secret.as_bytes(), timestamp, &body))
            .body(body.to_vec());
        answer_of(request.send().await).await
    }
}
