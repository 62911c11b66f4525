//! The second factor: the challenge for users who have one (WebAuthn, an
//! authenticator app or a recovery code, with "try another way"), and
//! enrolment right after the password for those who do not.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::Extension;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::csrf::{self, Binding};
use super::pages::{html, NoFactorPage, OtherMethod, SecondFactorPage, SentView, TotpEnrollPage, TotpView, WebauthnKind};
use super::redirect::{query_param, rd_param, safe_return_to};
use super::{
    audit, bad_form, csrf_refused, current_session, error_page, see_other, with_return_to, Failure, PortalError, PortalRequest,
    PortalState, Refused,
};
use crate::audit::{Event, Kind, Outcome};
use crate::factors::oob::destination::{mask_email, mask_phone};
use crate::factors::oob::Channel;
use crate::factors::totp::Verdict;
use crate::gateway::Gateway;
use crate::methods::{Method, MethodSet};
use crate::session::{Factor, Proof, Session};
use crate::store::OobRow;
use crate::throttle::{Key, Scope, ThrottleError};

const PAGE: &str = "/.stepgate/second-factor";
/// Remembers the method that last worked in this browser.
/// Remembers the second factor that last worked in this browser.
pub const METHOD_COOKIE: &str = "stepgate_method";
const METHOD_COOKIE_DAYS: i64 = 400;

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    pub code: String,
    #[serde(default)]
    rd: String,
    /// "Trust this browser": present when ticked.
    #[serde(default)]
    remember: Option<String>,
}

impl CodeForm {
    pub fn passed(&self, proof: impl Into<Proof>, enrolment: Option<Enrolment>) -> Passed {
        let proof = proof.into();
        // A recovery code is a way back in, not a reason to trust a browser.
        let remember = self.remember.is_some() && proof.factor != Factor::Recovery;
        Passed { proof, remember, enrolment }
    }
}

/// A way to pass the second factor, as the page offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Webauthn,
    Totp,
    /// A code sent to one of the user's phone numbers or email addresses.
    Sent {
        factor: i64,
        channel: Channel,
    },
    Recovery,
}

impl Choice {
    /// How links and the method cookie name it: `totp`, `sms:12`.
    pub fn name(self) -> String {
        match self {
            Choice::Sent { factor, channel } => format!("{}:{factor}", channel.name()),
            _ => self.page().to_string(),
        }
    }

    /// Which form the challenge page shows for it.
    fn page(self) -> &'static str {
        match self {
            Choice::Webauthn => "webauthn",
            Choice::Totp => "totp",
            Choice::Sent { .. } => "sent",
            Choice::Recovery => "recovery",
        }
    }

    pub fn from_name(name: &str) -> Option<Choice> {
        match name.split_once(':') {
            Some((channel, factor)) => Some(Choice::Sent { factor: factor.parse().ok()?, channel: Channel::from_name(channel)? }),
            None => [Choice::Webauthn, Choice::Totp, Choice::Recovery].into_iter().find(|c| c.page() == name),
        }
    }

    /// The choice a proof belongs to.
    pub fn of(proof: Proof) -> Option<Choice> {
        let sent = |channel| proof.credential.map(|factor| Choice::Sent { factor, channel });
        match proof.factor.method()? {
            Method::SecurityKey | Method::Platform => Some(Choice::Webauthn),
            Method::Totp => Some(Choice::Totp),
            Method::Recovery => Some(Choice::Recovery),
            Method::Sms => sent(Channel::Sms),
            Method::Voice => sent(Channel::Voice),
            Method::Email => sent(Channel::Email),
            Method::Provider => None,
        }
    }

    fn satisfies(self, need: MethodSet) -> bool {
        match self {
            Choice::Webauthn => need.contains(Method::SecurityKey) || need.contains(Method::Platform),
            Choice::Totp => need.contains(Method::Totp),
            Choice::Sent { channel, .. } => need.contains(channel.method()),
            Choice::Recovery => need.contains(Method::Recovery),
        }
    }
}

/// A phone number or an email address the user has, as pages show it.
pub struct SentFactor {
    pub id: i64,
    /// The switched-on channels that reach it.
    pub channels: Vec<Channel>,
    pub masked: String,
    pub is_email: bool,
}

impl SentFactor {
    fn of(gateway: &Gateway, row: &OobRow) -> Self {
        let is_email = row.channel == Channel::Email.destination_kind();
        let masked = if is_email { mask_email(&row.destination) } else { mask_phone(&row.destination) };
        SentFactor { id: row.id, channels: gateway.oob.channels_of(row), masked, is_email }
    }
}

/// The second factors a user has set up.
pub struct Enrolled {
    pub totp: bool,
    pub security_keys: usize,
    pub platform: usize,
    pub recovery_left: u32,
    /// Phone numbers and email addresses.
    pub sent: Vec<SentFactor>,
    /// Email may be used alone; otherwise only beside another factor.
    email_alone: bool,
    /// WebAuthn credentials, phone numbers and addresses of kinds the
    /// configuration has switched off.
    pub disabled: usize,
}

impl Enrolled {
    pub async fn of(gateway: &Gateway, username: &str) -> Result<Self, PortalError> {
        let credentials = gateway.webauthn.credentials(username).await?;
        let usable =
            |kind: Method| credentials.iter().filter(|c| c.kind == kind.name()).count() * usize::from(gateway.webauthn.allows(kind));
        let sent: Vec<SentFactor> = gateway.oob.factors(username).await?.iter().map(|row| SentFactor::of(gateway, row)).collect();
        let sent_off = sent.iter().filter(|f| f.channels.is_empty()).count();
        Ok(Self {
            totp: gateway.totp.is_enrolled(username).await?,
            security_keys: usable(Method::SecurityKey),
            platform: usable(Method::Platform),
            recovery_left: gateway.recovery.left(username).await?,
            disabled: credentials.len().saturating_sub(usable(Method::SecurityKey) + usable(Method::Platform)) + sent_off,
            sent: sent.into_iter().filter(|f| !f.channels.is_empty()).collect(),
            email_alone: gateway.oob.email_alone(),
        })
    }

    pub fn has_webauthn(&self) -> bool {
        self.security_keys + self.platform + self.disabled > 0
    }

    /// Whether the user has never set up a factor (so their first may be
    /// added right after the password). Factors of switched-off kinds
    /// count: turning a kind off must not let a password alone add a factor.
    pub fn has_none(&self) -> bool {
        self.factor_count() == 0 && self.disabled == 0 && self.sent.is_empty()
    }

    /// How many factors (not counting recovery codes, nor email addresses
    /// that may not be used alone) the user has.
    pub fn factor_count(&self) -> usize {
        let emails = self.sent.iter().filter(|f| f.is_email).count();
        self.independent() + if self.email_alone { emails } else { 0 }
    }

    /// Factors that do not depend on the user's mailbox.
    fn independent(&self) -> usize {
        usize::from(self.totp) + self.security_keys + self.platform + self.sent.iter().filter(|f| !f.is_email).count()
    }

    /// The choices that satisfy `need`, strongest first.
    pub fn choices(&self, need: MethodSet) -> Vec<Choice> {
        let mut all = Vec::new();
        if (self.security_keys > 0 && need.contains(Method::SecurityKey)) || (self.platform > 0 && need.contains(Method::Platform)) {
            all.push(Choice::Webauthn);
        }
        if self.totp {
            all.push(Choice::Totp);
        }
        // Phones before email; email only beside another factor, unless allowed alone.
        let email_usable = self.email_alone || self.independent() > 0;
        for factor in self.sent.iter().filter(|f| !f.is_email).chain(self.sent.iter().filter(|f| f.is_email && email_usable)) {
            all.extend(factor.channels.iter().map(|channel| Choice::Sent { factor: factor.id, channel: *channel }));
        }
        if self.recovery_left > 0 {
            all.push(Choice::Recovery);
        }
        all.retain(|choice| choice.satisfies(need));
        all
    }

    /// How "try another way" names a choice.
    fn label(&self, choice: Choice) -> String {
        match choice {
            Choice::Webauthn => "Use a security key or this device".into(),
            Choice::Totp => "Use a code from your authenticator app".into(),
            Choice::Recovery => "Use a recovery code".into(),
            Choice::Sent { factor, channel } => {
                let masked = self.sent.iter().find(|f| f.id == factor).map_or("", |f| f.masked.as_str());
                match channel {
                    Channel::Sms => format!("Text a code to {masked}"),
                    Channel::Voice => format!("Call {masked} with a code"),
                    Channel::Email => format!("Email a code to {masked}"),
                }
            }
        }
    }
}

pub async fn show(Extension(gateway): Extension<PortalState>, jar: CookieJar, uri: Uri) -> Result<Response, Failure> {
    let fail = |e| Failure(gateway.clone(), e);
    let rd = safe_return_to(&gateway, rd_param(&uri).as_deref());
    let need = query_param(&uri, "need").map_or(MethodSet::ANY, |n| MethodSet::from_query(&n));
    let Some(session) = current_session(&gateway, &jar).await.map_err(fail)? else {
        return Ok(see_other(&with_return_to("/.stepgate/signin", &rd)));
    };
    // The OpenID provider does the step-ups: the user signs in there again.
    if need.contains(Method::Provider) && gateway.users.oidc_provider().is_some_and(|p| p.steps_up()) {
        return Ok(see_other(&with_return_to("/.stepgate/oidc/step-up", &rd)));
    }
    let enrolled = Enrolled::of(&gateway, &session.username).await.map_err(fail)?;
    let ticket = gateway.tickets.granted(&session.username, &session.key).await.map_err(|e| fail(e.into()))?;
    if enrolled.has_none() || ticket {
        return first_enrolment(&gateway, &session, rd, ticket).await;
    }
    let choices = enrolled.choices(need);
    if choices.is_empty() {
        // The page needs a factor the user has not set up. One they have
        // proves it is them first; then they may add the stronger one.
        if may_change_factors(&gateway, &session, &enrolled) {
            return Ok(add_needed_factor(&gateway, &session, rd, need));
        }
        let back = format!("{PAGE}?need={}&rd={}", need.to_query(), urlencode(&rd));
        let notice = if MethodSet::WEBAUTHN.union(need) == MethodSet::WEBAUTHN {
            "This page needs a security key or device biometrics. Confirm it's you first, then add one."
        } else {
            "This page needs a kind of second factor you have not set up. Confirm it's you first, then add one."
        };
        return Ok(challenge(&gateway, &session, &enrolled, MethodSet::ANY, &[], back, Some(notice)));
    }
    // The method asked for, else the one that last worked in this browser.
    let preferred: Vec<Choice> = [query_param(&uri, "method"), jar.get(METHOD_COOKIE).map(|c| c.value().to_string())]
        .into_iter()
        .flatten()
        .filter_map(|name| Choice::from_name(&name))
        .collect();
    Ok(challenge(&gateway, &session, &enrolled, need, &preferred, rd, None))
}

/// The challenge page for one of the user's choices that satisfy `need`:
/// the first usable of `preferred`, else the strongest.
fn challenge(
    gateway: &Gateway,
    session: &Session,
    enrolled: &Enrolled,
    need: MethodSet,
    preferred: &[Choice],
    rd: String,
    notice: Option<&str>,
) -> Response {
    let choices = enrolled.choices(need);
    let Some(method) = preferred.iter().find(|c| choices.contains(c)).or(choices.first()).copied() else {
        return error_page(gateway, StatusCode::FORBIDDEN, "No usable factor", "None of your second factors can be used here.");
    };
    // Links keep the page's `need`, so another choice offers the same set.
    let need = (!need.is_any()).then(|| need.to_query());
    let view = ChallengeView { notice, ..ChallengeView::new(enrolled, method, &rd, need.as_deref(), false) };
    render_challenge(gateway, session, rd, view, StatusCode::OK)
}

fn method_href(choice: Choice, rd: &str, need: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("method", &choice.name());
    if let Some(need) = need {
        query.append_pair("need", need);
    }
    query.append_pair("rd", rd);
    format!("{PAGE}?{}", query.finish())
}

/// What a challenge page shows besides the form.
pub struct ChallengeView<'a> {
    pub method: Choice,
    pub others: Vec<OtherMethod>,
    pub recovery_left: u32,
    /// For a code sent to a phone or an address.
    pub sent: Option<SentView>,
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl<'a> ChallengeView<'a> {
    /// The page for `method`, linking the user's other choices that satisfy
    /// `need` (a query value; None: any).
    pub fn new(enrolled: &Enrolled, method: Choice, rd: &str, need: Option<&str>, code_sent: bool) -> Self {
        let others = enrolled
            .choices(need.map_or(MethodSet::ANY, MethodSet::from_query))
            .into_iter()
            .filter(|c| *c != method)
            .map(|c| OtherMethod { label: enrolled.label(c), href: method_href(c, rd, need) })
            .collect();
        let sent = SentView::of(enrolled, method, code_sent);
        ChallengeView { method, others, recovery_left: enrolled.recovery_left, sent, notice: None, error: None }
    }
}

impl SentView {
    /// The view of a sent-code choice; `code_sent` once a code is on its way.
    pub fn of(enrolled: &Enrolled, choice: Choice, code_sent: bool) -> Option<SentView> {
        let Choice::Sent { factor, channel } = choice else {
            return None;
        };
        let masked = enrolled.sent.iter().find(|f| f.id == factor)?.masked.clone();
        Some(SentView { method: choice.name(), channel: channel.name(), masked, code_sent })
    }
}

pub fn render_challenge(gateway: &Gateway, session: &Session, rd: String, view: ChallengeView<'_>, status: StatusCode) -> Response {
    let page = SecondFactorPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(gateway, Binding::Session(session)),
        rd,
        method: view.method.page(),
        sent: view.sent,
        others: view.others,
        recovery_left: view.recovery_left,
        notice: view.notice,
        error: view.error,
        trust_days: gateway.config.risk.trust_browser_days,
    };
    html(status, &page)
}

/// A user with no second factor sets one up right after the password, as
/// does one who spent an enrolment ticket (`ticket`), whatever the
/// self-enrolment setting.
async fn first_enrolment(gateway: &Arc<Gateway>, session: &Arc<Session>, rd: String, ticket: bool) -> Result<Response, Failure> {
    if !gateway.totp.self_enrollment() && !ticket {
        return Ok(html(StatusCode::FORBIDDEN, &NoFactorPage { brand: &gateway.config.branding }));
    }
    let Some(session) = pending_totp(gateway, session).await.map_err(|e| Failure(gateway.clone(), e))? else {
        return Ok(see_other(&with_return_to("/.stepgate/signin", &rd)));
    };
    enroll_page(gateway, &session, rd, None, StatusCode::OK)
}

/// The session with a TOTP secret to enrol: the one it has, so that
/// showing the page again shows the same secret, or a new one. None when
/// the session has ended.
pub async fn pending_totp(gateway: &Gateway, session: &Arc<Session>) -> Result<Option<Arc<Session>>, PortalError> {
    if session.pending_totp.is_some() {
        return Ok(Some(session.clone()));
    }
    let sealed = gateway.totp.new_pending_secret(&session.username);
    Ok(gateway.sessions.set_pending_totp(session, Some(sealed)).await?)
}

/// Whether the session may add or remove factors now: it needs a recent
/// second factor, and when the user has WebAuthn, a recent WebAuthn one
/// (or a recovery code, the way back in after losing it), so that a
/// phished code cannot add an attacker's key.
pub fn may_change_factors(gateway: &Gateway, session: &Session, enrolled: &Enrolled) -> bool {
    let window = gateway.config.security_page.reauthenticate_after;
    let proofs = if enrolled.has_webauthn() { MethodSet::WEBAUTHN.union(MethodSet::of(&[Method::Recovery])) } else { MethodSet::ANY };
    session.method_times().latest(proofs).is_some_and(|at| gateway.clock.now() - at <= window)
}

/// Where a user adds a factor of `need`: WebAuthn when it is one, else a
/// phone number or an email address.
fn add_needed_factor(gateway: &Gateway, session: &Session, rd: String, need: MethodSet) -> Response {
    if !webauthn_kinds(gateway, need).is_empty() {
        return add_webauthn_page(gateway, session, rd, need);
    }
    let offered = |channel: Channel| need.contains(channel.method()) && gateway.oob.offers(channel);
    if offered(Channel::Sms) || offered(Channel::Voice) {
        return see_other(&with_return_to("/.stepgate/enrol/phone", &rd));
    }
    if offered(Channel::Email) {
        return see_other(&with_return_to("/.stepgate/enrol/email", &rd));
    }
    let message = "This page needs a kind of second factor that cannot be added here. Ask your administrator.";
    error_page(gateway, StatusCode::FORBIDDEN, "Not available", message)
}

fn add_webauthn_page(gateway: &Gateway, session: &Session, rd: String, need: MethodSet) -> Response {
    let kinds = webauthn_kinds(gateway, need);
    let page = TotpEnrollPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(gateway, Binding::Session(session)),
        rd,
        error: None,
        trust_days: 0,
        totp: None,
        webauthn_kinds: kinds,
        phone: false,
        email: false,
    };
    html(StatusCode::OK, &page)
}

/// The kinds of WebAuthn authenticator a user may register, of `need`.
pub fn webauthn_kinds(gateway: &Gateway, need: MethodSet) -> Vec<WebauthnKind> {
    [(Method::SecurityKey, "Add a security key"), (Method::Platform, "Use this device (fingerprint, face or screen lock)")]
        .into_iter()
        .filter(|(kind, _)| gateway.webauthn.allows(*kind) && need.contains(*kind))
        .map(|(kind, label)| WebauthnKind { kind: kind.name(), label })
        .collect()
}

pub async fn verify_totp(
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
    if let Err(refused) = reserve_attempt(&gateway, &session.username, &request).await.map_err(fail)? {
        return Ok(refused.page(&gateway));
    }
    let verdict = gateway.totp.verify(&session.username, &form.code).await.map_err(|e| fail(e.into()))?;
    record_verdict("totp", &gateway, &session.username, &request, verdict).await;
    let retry = |message| retry_page(&gateway, &session, Choice::Totp, rd.clone(), message);
    match verdict {
        Verdict::Accepted => form_done(&gateway, &session, &request, jar, form.passed(Factor::Otp, None), &rd).await,
        Verdict::NotEnrolled => Ok(see_other(&with_return_to(PAGE, &rd))),
        Verdict::Wrong => retry("That code is not right. Try the current one.").await,
        Verdict::Replayed => retry("That code was already used. Wait for the next one.").await,
    }
}

pub async fn verify_recovery(
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
    if let Err(refused) = reserve_attempt(&gateway, &session.username, &request).await.map_err(fail)? {
        return Ok(refused.page(&gateway));
    }
    let accepted = gateway.recovery.redeem(&session.username, &form.code).await.map_err(|e| fail(e.into()))?;
    let verdict = if accepted { Verdict::Accepted } else { Verdict::Wrong };
    record_verdict("recovery_code", &gateway, &session.username, &request, verdict).await;
    if !accepted {
        return retry_page(&gateway, &session, Choice::Recovery, rd, "That is not one of your unused recovery codes.").await;
    }
    form_done(&gateway, &session, &request, jar, form.passed(Factor::Recovery, None), &rd).await
}

pub async fn enroll_totp(
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
    let Some(pending) = session.pending_totp.as_deref() else {
        return Ok(see_other(&with_return_to(PAGE, &rd)));
    };
    let Some(enrolment) = may_enrol(&gateway, &session).await.map_err(fail)? else {
        return Ok(see_other(&with_return_to(PAGE, &rd)));
    };
    if let Err(refused) = reserve_attempt(&gateway, &session.username, &request).await.map_err(fail)? {
        return Ok(refused.page(&gateway));
    }
    let verdict = gateway.totp.confirm_enrollment(&session.username, pending, &form.code).await.map_err(|e| fail(e.into()))?;
    record_verdict("totp_enrollment", &gateway, &session.username, &request, verdict).await;
    match verdict {
        Verdict::Accepted => {
            tracing::info!(event = "factor_added", method = "totp", user = %session.username, "security");
            form_done(&gateway, &session, &request, jar, form.passed(Factor::Otp, Some(enrolment)), &rd).await
        }
        // Someone enrolled this user meanwhile: the new secret was not stored.
        Verdict::Replayed | Verdict::NotEnrolled => Ok(see_other(&with_return_to(PAGE, &rd))),
        Verdict::Wrong => {
            enroll_page(&gateway, &session, rd, Some("That code is not right. Check the app and try again."), StatusCode::UNAUTHORIZED)
        }
    }
}

/// Whether this session may enrol a factor now: the first one right after
/// the password (when self-enrolment is on), any other after a recent
/// second factor; with a spent enrolment ticket, one that counts as first.
pub async fn may_enrol(gateway: &Gateway, session: &Session) -> Result<Option<Enrolment>, PortalError> {
    if gateway.tickets.granted(&session.username, &session.key).await? {
        return Ok(Some(Enrolment::First));
    }
    let enrolled = Enrolled::of(gateway, &session.username).await?;
    Ok(match () {
        _ if !gateway.totp.self_enrollment() => None,
        _ if enrolled.has_none() => Some(Enrolment::First),
        _ if may_change_factors(gateway, session, &enrolled) => Some(Enrolment::Another),
        _ => None,
    })
}

/// The session, form and return target of a second-factor POST, or the
/// response that refuses it (bad form, no session, CSRF).
pub async fn checked_form<F: SignedForm>(
    gateway: &Gateway,
    jar: &CookieJar,
    form: Result<Form<F>, FormRejection>,
) -> Result<Result<(Arc<Session>, F, String), Response>, PortalError> {
    let Ok(Form(form)) = form else {
        return Ok(Err(bad_form(gateway)));
    };
    let Some(session) = current_session(gateway, jar).await? else {
        let message = "Your session has ended. Sign in again.";
        return Ok(Err(error_page(gateway, StatusCode::FORBIDDEN, "Session ended", message)));
    };
    if !csrf::is_valid(gateway, Binding::Session(&session), form.csrf()) {
        return Ok(Err(csrf_refused(gateway)));
    }
    let rd = safe_return_to(gateway, Some(form.rd()));
    Ok(Ok((session, form, rd)))
}

/// A second-factor form: its CSRF token and its return target.
pub trait SignedForm {
    fn csrf(&self) -> &str;
    fn rd(&self) -> &str;
}

impl SignedForm for CodeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }

    fn rd(&self) -> &str {
        &self.rd
    }
}

/// A second factor just passed, or added.
pub struct Passed {
    pub proof: Proof,
    /// The user asked to trust this browser.
    pub remember: bool,
    pub enrolment: Option<Enrolment>,
}

/// Why a factor was added.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Enrolment {
    /// The user's first: it also passes the second factor, and brings
    /// recovery codes.
    First,
    /// One more, after proving an existing one: it passes nothing, so that
    /// a weaker proof cannot turn into a stronger factor.
    Another,
}

pub async fn form_done(
    gateway: &Arc<Gateway>,
    session: &Session,
    request: &PortalRequest,
    jar: CookieJar,
    passed: Passed,
    rd: &str,
) -> Result<Response, Failure> {
    let (jar, location) = complete(gateway, session, request, jar, passed, rd).await.map_err(|e| Failure(gateway.clone(), e))?;
    Ok((jar, see_other(&location)).into_response())
}

/// Records a passed second factor under a new session id, remembers the
/// browser (trusted for a while when the user asked) and the method, and
/// says where to go next: the recovery codes after a first enrolment, the
/// security page after a recovery code, else where the user was going.
pub async fn complete(
    gateway: &Gateway,
    session: &Session,
    request: &PortalRequest,
    jar: CookieJar,
    passed: Passed,
    rd: &str,
) -> Result<(CookieJar, String), PortalError> {
    let Passed { proof, remember, enrolment } = passed;
    let factor = proof.factor;
    let choice = Choice::of(proof).filter(|c| *c != Choice::Recovery);
    if enrolment == Some(Enrolment::Another) {
        // An enrolled secret is not offered again by the enrolment page.
        if gateway.sessions.set_pending_totp(session, None).await?.is_none() {
            return Ok(signed_out(gateway, request, jar, rd));
        }
        // Not a pass, but the new factor is what this browser offers next.
        let jar = match choice {
            Some(choice) => jar.add(method_cookie(choice, request.tls)),
            None => jar,
        };
        return Ok((jar, rd.to_string()));
    }
    let now = gateway.clock.now();
    let trust_days = i64::from(gateway.config.risk.trust_browser_days);
    let trusted_until = (remember && trust_days > 0).then(|| now + trust_days * 86_400);
    if let Some(device) = &session.context.device_id {
        gateway.store.remember_device(&session.username, device, now, trusted_until).await?;
    }
    if let Some(until) = trusted_until {
        let event = Event::new(Kind::TrustedBrowserAdded, Outcome::Success).by_user(&session.username).detail("until", until);
        audit(gateway, request, event).await;
    }
    let Some((id, renewed)) = gateway.sessions.add_factor(session, proof, trusted_until).await? else {
        return Ok(signed_out(gateway, request, jar, rd));
    };
    if enrolment == Some(Enrolment::First) {
        // A ticket's grant is spent on the factor it was for.
        gateway.tickets.end_grant(&session.username).await?;
    }
    let mut jar = jar.add(gateway.sessions.cookie(id, request.tls));
    if let Some(choice) = choice {
        jar = jar.add(method_cookie(choice, request.tls));
    }
    if enrolment == Some(Enrolment::First) && !gateway.recovery.has_set(&session.username).await? {
        let codes = gateway.recovery.generate(&session.username).await?;
        gateway.recovery.hold_for_reveal(renewed.key, &session.username, codes).await?;
        return Ok((jar, with_return_to("/.stepgate/recovery-codes", rd)));
    }
    if factor == Factor::Recovery {
        return Ok((jar, with_return_to("/.stepgate/settings?used=recovery", rd)));
    }
    Ok((jar, rd.to_string()))
}

/// For a session that ended (signed out or revoked) while its request
/// ran: it stays ended, and the browser forgets it.
fn signed_out(gateway: &Gateway, request: &PortalRequest, jar: CookieJar, rd: &str) -> (CookieJar, String) {
    (jar.add(gateway.sessions.removal_cookie(request.tls)), with_return_to("/.stepgate/signin", rd))
}

fn method_cookie(choice: Choice, secure: bool) -> Cookie<'static> {
    Cookie::build((METHOD_COOKIE, choice.name()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path(PAGE)
        .max_age(cookie::time::Duration::days(METHOD_COOKIE_DAYS))
        .build()
}

/// The challenge page again after a wrong answer (a sent code's form, not
/// its send button).
pub async fn retry_page(gateway: &Gateway, session: &Session, method: Choice, rd: String, error: &str) -> Result<Response, Failure> {
    let view = match Enrolled::of(gateway, &session.username).await {
        Ok(enrolled) => ChallengeView::new(&enrolled, method, &rd, None, true),
        Err(_) => ChallengeView { method, others: Vec::new(), recovery_left: 0, sent: None, notice: None, error: None },
    };
    let view = ChallengeView { error: Some(error), ..view };
    Ok(render_challenge(gateway, session, rd, view, StatusCode::UNAUTHORIZED))
}

fn enroll_page(
    gateway: &Arc<Gateway>,
    session: &Session,
    rd: String,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, Failure> {
    let Some(pending) = &session.pending_totp else {
        return Ok(see_other(&with_return_to(PAGE, &rd)));
    };
    let view = gateway.totp.enrollment_view(&session.username, pending).map_err(|e| Failure(gateway.clone(), e.into()))?;
    let page = TotpEnrollPage {
        brand: &gateway.config.branding,
        csrf: csrf::token(gateway, Binding::Session(session)),
        rd,
        error,
        trust_days: gateway.config.risk.trust_browser_days,
        totp: Some(TotpView { secret: view.secret_base32, otpauth_uri: view.otpauth_uri, qr_svg: view.qr_svg }),
        webauthn_kinds: webauthn_kinds(gateway, MethodSet::ANY),
        phone: gateway.oob.offers(Channel::Sms) || gateway.oob.offers(Channel::Voice),
        email: gateway.oob.offers(Channel::Email) && gateway.oob.email_alone(),
    };
    Ok(html(status, &page))
}

/// The kinds of WebAuthn credential, phone and email factor that count as
/// usable (switched on, and email only when it may stand alone), for a
/// removal's "last factor" check.
pub fn usable_kinds(gateway: &Gateway) -> Vec<&'static str> {
    let mut kinds = gateway.webauthn.usable_kinds();
    if gateway.oob.offers(Channel::Sms) || gateway.oob.offers(Channel::Voice) {
        kinds.push(Channel::Sms.destination_kind());
    }
    if gateway.oob.offers(Channel::Email) && gateway.oob.email_alone() {
        kinds.push(Channel::Email.destination_kind());
    }
    kinds
}

/// Counts an attempt at the user's second factor (a code or a WebAuthn
/// answer) before it is checked, or says why it may not be made now.
/// An error when the attempts cannot be counted: the attempt is not made.
pub async fn reserve_attempt(gateway: &Gateway, username: &str, request: &PortalRequest) -> Result<Result<(), Refused>, PortalError> {
    let refusal = match gateway.attempts.reserve(&[attempts_key(gateway, username)]).await {
        Ok(()) => return Ok(Ok(())),
        Err(ThrottleError::Refusal(refusal)) => refusal,
        Err(ThrottleError::Cache(e)) => return Err(e.into()),
    };
    let refused = Refused::from(refusal);
    tracing::warn!(event = "second_factor", outcome = refused.outcome(), user = %username, ip = %request.client_ip, "authentication");
    let event = Event::new(Kind::SecondFactor, Outcome::Refused).by_user(username).detail("reason", refused.outcome());
    audit(gateway, request, event).await;
    Ok(Err(refused))
}

/// Forgets the user's second-factor attempts after one passed. Failing to
/// only leaves the earlier attempts counted until their window ends.
pub async fn forget_attempts(gateway: &Gateway, username: &str) {
    if let Err(e) = gateway.attempts.reset(&attempts_key(gateway, username)).await {
        tracing::warn!(error = %e, "could not forget the second-factor attempts after a success");
    }
}

fn attempts_key(gateway: &Gateway, username: &str) -> Key {
    gateway.attempts.key(Scope::SecondFactor, &[username])
}

/// Logs the verdict; a success forgets the attempts before it.
async fn record_verdict(method: &str, gateway: &Gateway, username: &str, request: &PortalRequest, verdict: Verdict) {
    if verdict == Verdict::Accepted {
        forget_attempts(gateway, username).await;
    }
    let outcome = match verdict {
        Verdict::Accepted => "success",
        Verdict::Wrong => "failure",
        Verdict::Replayed => "replay",
        Verdict::NotEnrolled => "not_enrolled",
    };
    tracing::info!(event = method, outcome, user = %username, ip = %request.client_ip, "authentication");
    audit(gateway, request, verdict_event(method, verdict).by_user(username)).await;
}

/// The audit event of a code's verdict.
fn verdict_event(method: &str, verdict: Verdict) -> Event {
    let accepted = verdict == Verdict::Accepted;
    let (kind, method) = match method {
        "totp_enrollment" => (Kind::FactorEnrolled, "totp"),
        "recovery_code" if accepted => (Kind::RecoveryCodeUsed, method),
        _ => (Kind::SecondFactor, method),
    };
    let event = Event::new(kind, if accepted { Outcome::Success } else { Outcome::Failure }).detail("method", method);
    match verdict {
        Verdict::Accepted => event,
        Verdict::Wrong => event.detail("reason", "wrong_code"),
        Verdict::Replayed => event.detail("reason", "replayed_code"),
        Verdict::NotEnrolled => event.detail("reason", "not_enrolled"),
    }
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
