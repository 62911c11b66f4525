//! Codes sent by email, SMS or voice: sending one and checking it at the
//! second factor, and adding a phone number or an email address (which
//! counts only once a code sent to it came back).

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::Extension;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Form;
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::csrf::{self, Binding};
use super::pages::{html, EnrollCodePage};
use super::redirect::{rd_param, safe_return_to};
use super::second_factor::{
    checked_form, form_done, may_enrol, render_challenge, reserve_attempt, retry_page, ChallengeView, Choice, CodeForm, Enrolled,
    Enrolment, SignedForm,
};
use super::{
    audit, bad_form, current_session, error_page, see_other, with_retry_after, with_return_to, Failure, PortalError, PortalRequest,
    PortalState,
};
use crate::audit::{Event, Kind, Outcome};
use crate::factors::oob::destination::{email_address, mask_email, mask_phone, PhoneError};
use crate::factors::oob::{Channel, CodeVerdict, Purpose, Requester, SendOutcome};
use crate::gateway::Gateway;
use crate::methods::MethodSet;
use crate::session::{Proof, Session};

const SECOND_FACTOR: &str = "/.stepgate/second-factor";
/// Phone numbers and addresses a user may have, so that nobody can grow
/// their rows without bound.
const MAX_PER_USER: usize = 10;

#[derive(Deserialize)]
pub struct SendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rd: String,
    /// The choice, e.g. `sms:12`.
    method: String,
}

#[derive(Deserialize)]
pub struct DestinationForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rd: String,
    channel: String,
    #[serde(default)]
    destination: String,
}

impl SignedForm for SendForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }

    fn rd(&self) -> &str {
        &self.rd
    }
}

impl SignedForm for DestinationForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }

    fn rd(&self) -> &str {
        &self.rd
    }
}

/// Sends a code to one of the user's phone numbers or addresses, then asks
/// for it.
pub async fn send(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<SendForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form, rd) = match checked_form(&gateway, &jar, form).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    let enrolled = Enrolled::of(&gateway, &session.username).await.map_err(fail)?;
    let choice = Choice::from_name(&form.method).filter(|c| enrolled.choices(MethodSet::ANY).contains(c));
    let Some(Choice::Sent { factor, channel }) = choice else {
        let message = "That way to confirm it's you is not available. Go back and choose another.";
        return Ok(error_page(&gateway, StatusCode::BAD_REQUEST, "Not available", message));
    };
    let rows = gateway.oob.factors(&session.username).await.map_err(|e| fail(e.into()))?;
    let Some(row) = rows.into_iter().find(|row| row.id == factor) else {
        return Ok(see_other(&with_return_to(SECOND_FACTOR, &rd)));
    };
    let purpose = Purpose { channel, destination: row.destination, factor: Some(factor) };
    let outcome = send_code(&gateway, &request, &session, purpose.clone()).await.map_err(fail)?;
    // Too soon: the code sent moments ago may still be typed.
    let pending = gateway.oob.pending_purpose(&session.key).await.map_err(|e| fail(e.into()))?;
    let code_sent = outcome == SendOutcome::Sent || pending.as_ref() == Some(&purpose);
    let choice = Choice::Sent { factor, channel };
    let view = ChallengeView::new(&enrolled, choice, &rd, None, code_sent);
    let (status, error) = outcome_page(&outcome);
    let view = ChallengeView { error: error.as_deref(), ..view };
    Ok(with_retry(render_challenge(&gateway, &session, rd, view, status), &outcome))
}

/// Checks a code sent for the second factor.
pub async fn verify(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form, rd) = match checked_form(&gateway, &jar, form).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    let pending = gateway.oob.pending_purpose(&session.key).await.map_err(|e| fail(e.into()))?;
    let Some(Purpose { factor: Some(factor), channel, .. }) = pending else {
        return no_code_page(&gateway, &session, rd).await;
    };
    if let Err(refused) = reserve_attempt(&gateway, &session.username, &request).await.map_err(fail)? {
        return Ok(refused.page(&gateway));
    }
    let choice = Choice::Sent { factor, channel };
    let verdict = gateway.oob.check(&session.key, &form.code).await.map_err(|e| fail(e.into()))?;
    record(&gateway, &request, &session.username, channel, &verdict, false).await;
    match verdict {
        CodeVerdict::Accepted(purpose) if purpose.factor == Some(factor) => {
            // The number or address may have been removed since the code was sent.
            let rows = gateway.oob.factors(&session.username).await.map_err(|e| fail(e.into()))?;
            if !rows.iter().any(|row| row.id == factor) {
                return no_code_page(&gateway, &session, rd).await;
            }
            super::second_factor::forget_attempts(&gateway, &session.username).await;
            gateway.oob.record_use(factor).await.map_err(|e| fail(e.into()))?;
            let proof = Proof { factor: channel.factor(), credential: Some(factor) };
            form_done(&gateway, &session, &request, jar, form.passed(proof, None), &rd).await
        }
        CodeVerdict::Accepted(_) | CodeVerdict::NoCode => no_code_page(&gateway, &session, rd).await,
        CodeVerdict::Wrong { left } => retry_page(&gateway, &session, choice, rd, &wrong_code(left)).await,
        CodeVerdict::Exhausted => {
            let enrolled = Enrolled::of(&gateway, &session.username).await.map_err(fail)?;
            let view = ChallengeView::new(&enrolled, choice, &rd, None, false);
            let view = ChallengeView { error: Some("That was the last try for that code. Send a new one."), ..view };
            Ok(render_challenge(&gateway, &session, rd, view, StatusCode::UNAUTHORIZED))
        }
    }
}

/// The page to add a phone number (`/.stepgate/enrol/phone`).
pub async fn add_phone(Extension(gateway): Extension<PortalState>, jar: CookieJar, uri: Uri) -> Result<Response, Failure> {
    add_page(gateway, jar, uri, Adding::Phone).await
}

/// The page to add an email address (`/.stepgate/enrol/email`).
pub async fn add_email(Extension(gateway): Extension<PortalState>, jar: CookieJar, uri: Uri) -> Result<Response, Failure> {
    add_page(gateway, jar, uri, Adding::Email).await
}

/// What is being added.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Adding {
    Phone,
    Email,
}

impl Adding {
    fn path(self) -> &'static str {
        match self {
            Adding::Phone => "/.stepgate/enrol/phone",
            Adding::Email => "/.stepgate/enrol/email",
        }
    }

    fn of(channel: Channel) -> Self {
        if channel == Channel::Email {
            Adding::Email
        } else {
            Adding::Phone
        }
    }
}

async fn add_page(gateway: PortalState, jar: CookieJar, uri: Uri, kind: Adding) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let rd = safe_return_to(&gateway, rd_param(&uri).as_deref());
    let Some(session) = current_session(&gateway, &jar).await.map_err(fail)? else {
        return Ok(see_other(&with_return_to("/.stepgate/signin", &rd)));
    };
    let Some(enrolment) = may_enrol(&gateway, &session).await.map_err(fail)? else {
        // Prove a factor the user has, then come back.
        return Ok(see_other(&with_return_to(SECOND_FACTOR, &with_return_to(kind.path(), &rd))));
    };
    let form = EnrolForm::blank(&gateway, &session, kind);
    if let Some(refusal) = refusal_to_add(&gateway, kind, enrolment) {
        return Ok(form.page(&gateway, &session, rd, None, Some(refusal), StatusCode::FORBIDDEN));
    }
    Ok(form.page(&gateway, &session, rd, None, None, StatusCode::OK))
}

/// Why this kind cannot be added now, if it cannot.
fn refusal_to_add(gateway: &Gateway, kind: Adding, enrolment: Enrolment) -> Option<&'static str> {
    let offered = match kind {
        Adding::Phone => gateway.oob.offers(Channel::Sms) || gateway.oob.offers(Channel::Voice),
        Adding::Email => gateway.oob.offers(Channel::Email),
    };
    match () {
        _ if !offered => Some("This kind of factor is not available here."),
        _ if kind == Adding::Email && enrolment == Enrolment::First && !gateway.oob.email_alone() => {
            Some("Email can only be added beside another factor. Set up an authenticator app, a security key or a phone first.")
        }
        _ => None,
    }
}

/// Sends a code to a phone number or an address the user wants to add.
pub async fn enrol_send(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<DestinationForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form, rd) = match checked_form(&gateway, &jar, form).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    let Some(channel) = Channel::from_name(&form.channel).filter(|c| gateway.oob.offers(*c)) else {
        return Ok(bad_form(&gateway));
    };
    let kind = Adding::of(channel);
    let Some(enrolment) = may_enrol(&gateway, &session).await.map_err(fail)? else {
        return Ok(see_other(&with_return_to(SECOND_FACTOR, &with_return_to(kind.path(), &rd))));
    };
    let mut page = EnrolForm::blank(&gateway, &session, kind);
    if let Some(refusal) = refusal_to_add(&gateway, kind, enrolment) {
        return Ok(page.page(&gateway, &session, rd, None, Some(refusal), StatusCode::FORBIDDEN));
    }
    if gateway.oob.factors(&session.username).await.map_err(|e| fail(e.into()))?.len() >= MAX_PER_USER {
        let message = "You have as many phone numbers and addresses as allowed. Remove one first.";
        return Ok(page.page(&gateway, &session, rd, None, Some(message), StatusCode::CONFLICT));
    }
    let destination = match destination_of(&gateway, &session, channel, &form.destination) {
        Ok(destination) => destination,
        Err(message) => {
            page.destination = form.destination.chars().take(64).collect();
            return Ok(page.page(&gateway, &session, rd, None, Some(message), StatusCode::BAD_REQUEST));
        }
    };
    let purpose = Purpose { channel, destination: destination.clone(), factor: None };
    let outcome = send_code(&gateway, &request, &session, purpose).await.map_err(fail)?;
    let masked = if channel == Channel::Email { mask_email(&destination) } else { mask_phone(&destination) };
    let (status, error) = outcome_page(&outcome);
    let sent_to = (outcome == SendOutcome::Sent).then_some((channel, masked));
    Ok(with_retry(page.page(&gateway, &session, rd, sent_to, error.as_deref(), status), &outcome))
}

/// Checks the code sent to a new phone number or address and, when it is
/// right, adds it.
pub async fn enrol_confirm(
    Extension(gateway): Extension<PortalState>,
    Extension(request): Extension<PortalRequest>,
    jar: CookieJar,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let (session, form, rd) = match checked_form(&gateway, &jar, form).await.map_err(fail)? {
        Ok(valid) => valid,
        Err(refusal) => return Ok(refusal),
    };
    let pending = gateway.oob.pending_purpose(&session.key).await.map_err(|e| fail(e.into()))?;
    let Some(Purpose { factor: None, channel, destination }) = pending else {
        return Ok(see_other(&with_return_to(SECOND_FACTOR, &rd)));
    };
    let Some(enrolment) = may_enrol(&gateway, &session).await.map_err(fail)? else {
        return Ok(see_other(&with_return_to(SECOND_FACTOR, &rd)));
    };
    let page = EnrolForm::blank(&gateway, &session, Adding::of(channel));
    if let Some(refusal) = refusal_to_add(&gateway, Adding::of(channel), enrolment) {
        return Ok(page.page(&gateway, &session, rd, None, Some(refusal), StatusCode::FORBIDDEN));
    }
    if let Err(refused) = reserve_attempt(&gateway, &session.username, &request).await.map_err(fail)? {
        return Ok(refused.page(&gateway));
    }
    let verdict = gateway.oob.check(&session.key, &form.code).await.map_err(|e| fail(e.into()))?;
    record(&gateway, &request, &session.username, channel, &verdict, true).await;
    let masked = if channel == Channel::Email { mask_email(&destination) } else { mask_phone(&destination) };
    let purpose = match verdict {
        CodeVerdict::Accepted(purpose) if purpose.factor.is_none() => purpose,
        CodeVerdict::Wrong { left } => {
            let sent_to = Some((channel, masked));
            return Ok(page.page(&gateway, &session, rd, sent_to, Some(&wrong_code(left)), StatusCode::UNAUTHORIZED));
        }
        _ => {
            let message = "That code has expired or was already used. Send a new one.";
            return Ok(page.page(&gateway, &session, rd, None, Some(message), StatusCode::UNAUTHORIZED));
        }
    };
    super::second_factor::forget_attempts(&gateway, &session.username).await;
    let Some(id) = gateway.oob.enrol(&session.username, &purpose).await.map_err(|e| fail(e.into()))? else {
        let message = "You already have this one.";
        return Ok(page.page(&gateway, &session, rd, None, Some(message), StatusCode::CONFLICT));
    };
    tracing::info!(event = "factor_added", method = channel.name(), user = %session.username, "security");
    let event = Event::new(Kind::FactorEnrolled, Outcome::Success).by_user(&session.username).detail("method", channel.name());
    audit(&gateway, &request, event).await;
    let proof = Proof { factor: channel.factor(), credential: Some(id) };
    form_done(&gateway, &session, &request, jar, form.passed(proof, Some(enrolment)), &rd).await
}

/// The destination a user may add on `channel`: a number of an allowed
/// country, or their directory address (any address, when allowed).
fn destination_of(gateway: &Gateway, session: &Session, channel: Channel, typed: &str) -> Result<String, &'static str> {
    if channel != Channel::Email {
        return gateway.oob.phone_number(typed, channel).map_err(|e| match e {
            PhoneError::Invalid => "That is not a phone number we can use. Type it with its country code, e.g. +41 44 668 18 00.",
            PhoneError::CountryNotAllowed => "Numbers of that country cannot get codes here.",
            PhoneError::Premium => "That kind of number cannot get codes.",
        });
    }
    let directory = gateway.users.get(&session.username).map(|u| u.email.clone()).unwrap_or_default();
    let wanted = if gateway.oob.enter_address() { typed } else { directory.as_str() };
    email_address(wanted).ok_or("That is not an email address we can use.")
}

/// Counts and sends a code, logging and auditing what the limits refused.
async fn send_code(gateway: &Gateway, request: &PortalRequest, session: &Session, purpose: Purpose) -> Result<SendOutcome, PortalError> {
    let requester = Requester { session_key: &session.key, username: &session.username, client_ip: request.client_ip, host: &request.host };
    let channel = purpose.channel;
    let outcome = gateway.oob.send(&requester, purpose).await.map_err(PortalError::from)?;
    let reason = match outcome {
        SendOutcome::Sent => {
            tracing::info!(event = "code_sent", channel = channel.name(), user = %session.username, "authentication");
            return Ok(outcome);
        }
        SendOutcome::TooSoon { .. } => "resend_too_soon",
        SendOutcome::Limited { .. } => "send_limit",
        SendOutcome::Failed => "send_failed",
    };
    let event = Event::new(Kind::SecondFactor, Outcome::Refused).by_user(&session.username).detail("method", channel.name());
    audit(gateway, request, event.detail("reason", reason)).await;
    Ok(outcome)
}

/// The status and message of a send's outcome.
fn outcome_page(outcome: &SendOutcome) -> (StatusCode, Option<String>) {
    match outcome {
        SendOutcome::Sent => (StatusCode::OK, None),
        SendOutcome::TooSoon { retry_after } => {
            (StatusCode::TOO_MANY_REQUESTS, Some(format!("A code is on its way. Wait {retry_after} seconds before asking for another.")))
        }
        SendOutcome::Limited { retry_after } => {
            let minutes = (retry_after + 59) / 60;
            (StatusCode::TOO_MANY_REQUESTS, Some(format!("Too many codes were sent. Try again in {minutes} minutes, or try another way.")))
        }
        SendOutcome::Failed => {
            (StatusCode::SERVICE_UNAVAILABLE, Some("We could not send the code. Try another way, or try again in a moment.".into()))
        }
    }
}

fn with_retry(page: Response, outcome: &SendOutcome) -> Response {
    match outcome {
        SendOutcome::TooSoon { retry_after } | SendOutcome::Limited { retry_after } => with_retry_after(page, *retry_after),
        _ => page,
    }
}

fn wrong_code(left: u32) -> String {
    format!("That code is not right. {left} {} left.", if left == 1 { "try" } else { "tries" })
}

/// The answer to a code typed when the session has none pending.
async fn no_code_page(gateway: &Arc<Gateway>, session: &Session, rd: String) -> Result<Response, Failure> {
    let enrolled = Enrolled::of(gateway, &session.username).await.map_err(|e| Failure(gateway.clone(), e))?;
    let choices = enrolled.choices(MethodSet::ANY);
    let Some(choice) = choices.iter().find(|c| matches!(c, Choice::Sent { .. })).or(choices.first()).copied() else {
        return Ok(see_other(&with_return_to(SECOND_FACTOR, &rd)));
    };
    let view = ChallengeView::new(&enrolled, choice, &rd, None, false);
    let view = ChallengeView { error: Some("That code has expired or was already used. Send a new one."), ..view };
    Ok(render_challenge(gateway, session, rd, view, StatusCode::UNAUTHORIZED))
}

/// Logs and audits a typed code's verdict; a code's digits never are.
async fn record(gateway: &Gateway, request: &PortalRequest, username: &str, channel: Channel, verdict: &CodeVerdict, enrolling: bool) {
    let (outcome, reason) = match verdict {
        CodeVerdict::Accepted(_) => (Outcome::Success, None),
        CodeVerdict::Wrong { .. } => (Outcome::Failure, Some("wrong_code")),
        CodeVerdict::NoCode => (Outcome::Failure, Some("no_code")),
        CodeVerdict::Exhausted => (Outcome::Failure, Some("code_exhausted")),
    };
    tracing::info!(event = channel.name(), outcome = outcome.name(), user = %username, ip = %request.client_ip, "authentication");
    if enrolling && outcome == Outcome::Success {
        return; // The enrolment itself is recorded once the factor is stored.
    }
    let kind = if enrolling { Kind::FactorEnrolled } else { Kind::SecondFactor };
    let event = Event::new(kind, outcome).by_user(username).detail("method", channel.name());
    audit(gateway, request, reason.map_or(event.clone(), |reason| event.detail("reason", reason))).await;
}

/// The form to add a phone number or an email address.
struct EnrolForm {
    kind: Adding,
    /// The channels the user may choose between (SMS, voice).
    channels: Vec<Channel>,
    destination: String,
    /// The address is the directory's and cannot be changed.
    fixed: bool,
}

impl EnrolForm {
    fn blank(gateway: &Gateway, session: &Session, kind: Adding) -> Self {
        match kind {
            Adding::Phone => EnrolForm {
                kind,
                channels: [Channel::Sms, Channel::Voice].into_iter().filter(|c| gateway.oob.offers(*c)).collect(),
                destination: gateway.users.get(&session.username).and_then(|u| u.phone.clone()).unwrap_or_default(),
                fixed: false,
            },
            Adding::Email => EnrolForm {
                kind,
                channels: vec![Channel::Email],
                destination: gateway.users.get(&session.username).map(|u| u.email.clone()).unwrap_or_default(),
                fixed: !gateway.oob.enter_address(),
            },
        }
    }

    fn page(
        &self,
        gateway: &Gateway,
        session: &Session,
        rd: String,
        sent_to: Option<(Channel, String)>,
        error: Option<&str>,
        status: StatusCode,
    ) -> Response {
        let page = EnrollCodePage {
            brand: &gateway.config.branding,
            csrf: csrf::token(gateway, Binding::Session(session)),
            rd,
            phone: self.kind == Adding::Phone,
            channels: self.channels.iter().map(|c| c.name()).collect(),
            destination: &self.destination,
            fixed: self.fixed,
            sent_channel: sent_to.as_ref().map(|(c, _)| c.name()),
            sent_to: sent_to.as_ref().map(|(_, masked)| masked.as_str()),
            minutes: gateway.oob.lifetime_minutes(),
            error,
            trust_days: gateway.config.risk.trust_browser_days,
        };
        html(status, &page)
    }
}
