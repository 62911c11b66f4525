//! Twilio: its Messages API for SMS, its Calls API with TwiML for voice.

use std::time::Duration;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::delivery::{answer_of, spaced_digits, Channel, Deliver, DeliveryError, Message};
use crate::config::{read_secret, TwilioConfig};

pub struct Twilio {
    client: reqwest::Client,
    /// `.../2010-04-01/Accounts/{sid}/Messages.json` or `.../Calls.json`.
    endpoint: url::Url,
    account_sid: String,
    auth_token: Zeroizing<String>,
    from: String,
}

impl Twilio {
    pub fn new(config: &TwilioConfig, channel: Channel, timeout: i64) -> Result<Self, String> {
        let section = channel.name();
        let auth_token =
            read_secret(&format!("{section}.twilio.auth_token"), config.auth_token_env.as_deref(), config.auth_token_file.as_deref())?;
        let resource = if channel == Channel::Voice { "Calls.json" } else { "Messages.json" };
        let path = format!("2010-04-01/Accounts/{}/{resource}", config.account_sid);
        let endpoint = config.api_url.join(&path).map_err(|e| format!("[{section}.twilio] api_url: {e}"))?;
        Ok(Self {
            client: http_client(timeout)?,
            endpoint,
            account_sid: config.account_sid.clone(),
            auth_token: Zeroizing::new(auth_token),
            from: config.from.clone(),
        })
    }

    /// The form fields Twilio takes for `message`.
    fn form(&self, message: &Message) -> Vec<(&'static str, String)> {
        // A Messaging Service picks the sender itself.
        let from = if self.from.starts_with("MG") { "MessagingServiceSid" } else { "From" };
        let content = match message.channel {
            Channel::Voice => ("Twiml", twiml(message)),
            _ => ("Body", message.sms_text()),
        };
        vec![("To", message.to.clone()), (from, self.from.clone()), content]
    }
}

#[async_trait]
impl Deliver for Twilio {
    async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        let request =
            self.client.post(self.endpoint.clone()).basic_auth(&self.account_sid, Some(&*self.auth_token)).form(&self.form(message));
        answer_of(request.send().await).await
    }
}

/// The call's script: the code digit by digit, twice.
pub fn twiml(message: &Message) -> String {
    let digits = spaced_digits(&message.code);
    let product = xml_escape(&message.product);
    format!(
        "<Response><Say>Your {product} verification code is: {digits}.</Say><Pause length=\"1\"/><Say>Again, your code is: {digits}.</Say></Response>"
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// A client for a provider's API: its own timeout, no redirects followed
/// (a redirect would carry the credentials elsewhere).
pub fn http_client(timeout: i64) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout as u64))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}
