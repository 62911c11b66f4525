//! Delivery of a code: the channels, the trait every provider implements,
//! and the texts sent.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::methods::Method;
use crate::session::Factor;

/// How a code reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Voice,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Sms, Channel::Voice, Channel::Email];

    pub fn name(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }
    }

    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The kind of destination it reaches, as the store names it.
    pub fn destination_kind(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms | Channel::Voice => "phone",
        }
    }

    pub fn method(self) -> Method {
        match self {
            Channel::Email => Method::Email,
            Channel::Sms => Method::Sms,
            Channel::Voice => Method::Voice,
        }
    }

    pub fn factor(self) -> Factor {
        match self {
            Channel::Email => Factor::Email,
            Channel::Sms => Factor::Sms,
            Channel::Voice => Factor::Voice,
        }
    }
}

/// One code on its way to one destination.
pub struct Message {
    pub channel: Channel,
    /// E.164 for SMS and voice, an address for email.
    pub to: String,
    pub code: Zeroizing<String>,
    /// The host the user is on, for the origin-bound SMS line.
    pub host: String,
    /// The product name the pages show.
    pub product: String,
    /// Minutes the code stays valid.
    pub minutes: i64,
}

impl Message {
    /// The SMS text: the code first (phones offer to fill it in), then the
    /// origin-bound line WebOTP reads (`@host #code`).
    pub fn sms_text(&self) -> String {
        format!("{code} is your {product} code.\n\n@{host} #{code}", code = *self.code, product = self.product, host = self.host)
    }

    /// What the call says: the code digit by digit, twice.
    pub fn spoken_text(&self) -> String {
        let digits = spaced_digits(&self.code);
        format!("Your {} verification code is: {digits}. Again, your code is: {digits}.", self.product)
    }
}

/// `741952` as `7, 4, 1, 9, 5, 2`, so a speech engine reads digits, not a number.
pub fn spaced_digits(code: &str) -> String {
    code.chars().map(String::from).collect::<Vec<_>>().join(", ")
}

/// Why a code could not be sent. Never holds a credential or the code.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The provider refused the request (a 4xx): a bad number, say.
    #[error("the provider refused the message ({0})")]
    Refused(String),
    /// The provider failed or could not be reached in time.
    #[error("the provider could not be reached or failed: {0}")]
    Unavailable(String),
}

/// A way to deliver codes of one channel.
#[async_trait]
pub trait Deliver: Send + Sync {
    async fn deliver(&self, message: &Message) -> Result<(), DeliveryError>;
}

/// A provider's HTTP answer as a delivery result; its body is logged only
/// in part, since providers echo what they were sent.
pub(super) async fn answer_of(response: Result<reqwest::Response, reqwest::Error>) -> Result<(), DeliveryError> {
    let response = response.map_err(|e| DeliveryError::Unavailable(without_url(e).to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let error_code = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v.get("code").map(|c| c.to_string()));
    let detail = match error_code {
        Some(code) => format!("HTTP {}, error {code}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(DeliveryError::Refused(detail))
    } else {
        Err(DeliveryError::Unavailable(detail))
    }
}

/// A request error without its URL, which may carry an account id.
fn without_url(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_carry_the_code_where_phones_look_for_it() {
        let message = Message {
            channel: Channel::Sms,
            to: "+41446681867".into(),
            code: Zeroizing::new("741952".into()),
            host: "app.example.com".into(),
            product: "Example".into(),
            minutes: 5,
        };
        assert_eq!(message.sms_text(), "741952 is your Example code.\n\n@app.example.com #741952");
        assert!(message.spoken_text().contains("7, 4, 1, 9, 5, 2. Again"));
    }

    /// Providers echo what they were sent; the error (which is logged)
    /// keeps only the status and the provider's error code.
    #[tokio::test]
    async fn provider_errors_keep_no_body() {
        let echo = r#"{"code": 21211, "message": "Invalid 'To' 741952", "more_info": "token=secret"}"#;
        let response = http::Response::builder().status(400).body(echo).unwrap();
        let error = answer_of(Ok(reqwest::Response::from(response))).await.unwrap_err();
        assert_eq!(error.to_string(), "the provider refused the message (HTTP 400, error 21211)");
        for status in [429, 500, 503] {
            let response = http::Response::builder().status(status).body("741952").unwrap();
            let error = answer_of(Ok(reqwest::Response::from(response))).await.unwrap_err();
            assert!(matches!(error, DeliveryError::Unavailable(ref detail) if detail == &format!("HTTP {status}")), "{error}");
        }
    }
}
