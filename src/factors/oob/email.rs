//! Codes by email, over SMTP (STARTTLS or TLS, optional authentication).

use std::time::Duration;

use askama::Template;
use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::delivery::{Deliver, DeliveryError, Message};
use crate::config::{read_secret, Branding, EmailConfig, SmtpTls};

#[derive(Template)]
#[template(path = "email/code.txt")]
struct CodeText<'a> {
    code: &'a str,
    product: &'a str,
    minutes: i64,
}

#[derive(Template)]
#[template(path = "email/code.html")]
struct CodeHtml<'a> {
    code: &'a str,
    brand: &'a Branding,
    minutes: i64,
}

pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    sender: Mailbox,
    branding: Branding,
}

impl EmailSender {
    /// The transport the configuration describes; errors name the setting.
    pub fn new(config: &EmailConfig, branding: &Branding) -> Result<Self, String> {
        let sender = config.sender.parse().map_err(|e| format!("email.sender: {e}"))?;
        let mut parameters = TlsParameters::builder(config.server.clone());
        if let Some(file) = &config.ca_file {
            let pem = std::fs::read(file).map_err(|e| format!("email.ca_file {}: {e}", file.display()))?;
            let certificate = Certificate::from_pem(&pem).map_err(|e| format!("email.ca_file {}: {e}", file.display()))?;
            parameters = parameters.add_root_certificate(certificate);
        }
        let parameters = parameters.build().map_err(|e| format!("email TLS: {e}"))?;
        let tls = match config.tls {
            SmtpTls::Starttls => Tls::Required(parameters),
            SmtpTls::Tls => Tls::Wrapper(parameters),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.server)
            .port(config.port())
            .tls(tls)
            .timeout(Some(Duration::from_secs(config.timeout as u64)));
        if let Some(username) = &config.username {
            let password = read_secret("email.password", config.password_env.as_deref(), config.password_file.as_deref())?;
            builder = builder.credentials(Credentials::new(username.clone(), password));
        }
        Ok(Self { transport: builder.build(), sender, branding: branding.clone() })
    }

    fn mail(&self, message: &Message) -> Result<lettre::Message, DeliveryError> {
        let to: Mailbox = message.to.parse().map_err(|_| DeliveryError::Refused("not an email address".into()))?;
        let text = CodeText { code: &message.code, product: &message.product, minutes: message.minutes };
        let html = CodeHtml { code: &message.code, brand: &self.branding, minutes: message.minutes };
        let rendered = |e: askama::Error| DeliveryError::Unavailable(format!("email template: {e}"));
        lettre::Message::builder()
            .from(self.sender.clone())
            .to(to)
            // The code leads the subject, where phones offer to fill it in.
            .subject(format!("{} is your {} verification code", *message.code, message.product))
            .multipart(MultiPart::alternative_plain_html(text.render().map_err(rendered)?, html.render().map_err(rendered)?))
            .map_err(|e| DeliveryError::Unavailable(format!("email: {e}")))
    }
}

#[async_trait]
impl Deliver for EmailSender {
    async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        let mail = self.mail(message)?;
        match self.transport.send(mail).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(DeliveryError::Refused(format!("the SMTP server refused the message: {e}"))),
            Err(e) => Err(DeliveryError::Unavailable(format!("SMTP: {e}"))),
        }
    }
}
