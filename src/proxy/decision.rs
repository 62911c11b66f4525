//! The one path from a request to the policy's decision, for requests the
//! gateway proxies and for those a proxy in front asks about: the session
//! from the cookie, the request as the policy sees it, and the decision.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};

use super::forwarding;
use crate::audit::{Event, Kind, Outcome, ANONYMOUS_ACTOR};
use crate::edge::Canonical;
use crate::gateway::{App, Gateway};
use crate::geo::GeoFacts;
use crate::policy::{self, Decision, DenyReason, StepUp, Subject};
use crate::session::Session;
use crate::store::StoreError;
use crate::users::{Current, User};

/// A live session and its user.
pub type SignedIn = (Arc<Session>, Arc<User>);

/// A request as the edge read it, with where it came from.
pub struct Asked<'a> {
    pub method: &'a Method,
    pub canonical: &'a Canonical,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub ip: IpAddr,
    pub geo: &'a GeoFacts,
}

/// The session and its user, when the request's cookie names a live
/// session of a user who is still in the users file.
pub async fn signed_in_user(gateway: &Gateway, headers: &HeaderMap, https: bool) -> Result<Option<SignedIn>, StoreError> {
    let cookie_name = gateway.sessions.cookie_name_for(https);
    let Some(id) = forwarding::find_cookie(headers.get_all(http::header::COOKIE), cookie_name) else {
        return Ok(None);
    };
    let Some(session) = gateway.sessions.lookup(id).await? else {
        return Ok(None);
    };
    match gateway.users.current(&session.username).await {
        Current::User(user) => Ok(Some((session, user))),
        Current::Gone => {
            // Removed from the directory, locked or disabled: every session ends.
            if gateway.users.is_external() {
                let ended = gateway.sessions.end_all(&session.username).await?;
                tracing::info!(event = "sessions_ended", reason = "directory", user = %session.username, sessions = ended, "security");
            }
            Ok(None)
        }
        // Not learned here, and the directory cannot be asked (down, or a
        // provider): the user as the session was signed in.
        Current::Unknown => {
            let user = session.context.user.as_ref().map(|user| gateway.users.learn(user.to_user(&session.username)));
            Ok(user.map(|user| (session, user)))
        }
    }
}

/// The policy's decision for the request; the debug log explains it.
pub fn decide(gateway: &Gateway, app: &App, asked: &Asked, signed_in: Option<&SignedIn>) -> policy::Outcome {
    let now = gateway.clock.now();
    let request = policy::Request {
        method: asked.method,
        method_override: asked.canonical.method_override.as_ref(),
        path: &asked.canonical.path,
        query: asked.query,
        headers: asked.headers,
        ip: asked.ip,
        geo: asked.geo,
        now,
    };
    let subject = signed_in.map(|(session, user)| Subject {
        username: &user.username,
        groups: &user.groups,
        second_factors: session.method_times(),
        trusted_browser: session.trusts_browser(now),
        confidence: session.context.assessment.confidence,
    });
    let settings = &gateway.config.policy;
    let started = std::time::Instant::now();
    let outcome = policy::decide(&app.config, settings, &request, subject.as_ref());
    crate::metrics::global().decision_seconds.observe(started.elapsed().as_secs_f64());
    if tracing::enabled!(tracing::Level::DEBUG) {
        let why = policy::explain(&app.config, settings, &request, subject.as_ref()).render(&app.config);
        tracing::debug!(app = %app.id, ip = %asked.ip, geo = ?asked.geo, explanation = ?why.trim_end(), "decision");
    }
    if let Some(event) = audited(&outcome, app, asked, signed_in) {
        gateway.audit.record_from_request(event);
    }
    outcome
}

/// Whether the app's geo fence lets the client in (it holds before
/// anything else, the sign-in pages included); a refusal is audited.
pub fn within_fence(gateway: &Gateway, app: &App, method: &Method, canonical: &Canonical, ip: IpAddr, geo: &GeoFacts) -> bool {
    if app.config.fence.admits(geo.country.as_deref()) {
        return true;
    }
    let event = Event { actor: ANONYMOUS_ACTOR.into(), ..Event::new(Kind::AccessDenied, Outcome::Refused) };
    let event = event.from_client(ip, geo.country.clone(), Some(&app.id)).detail("reason", Decision::Deny(DenyReason::Geo).label());
    gateway.audit.record_from_request(event.detail("http_method", method.as_str()).detail("path", canonical.path.as_str()));
    false
}

/// The audit event of a denial, or of a signed-in user asked for a fresher
/// or stronger factor (step-up); None for the decisions of every day.
fn audited(outcome: &policy::Outcome, app: &App, asked: &Asked, signed_in: Option<&SignedIn>) -> Option<Event> {
    let kind = match outcome.decision {
        Decision::Deny(_) => Kind::AccessDenied,
        Decision::SecondFactor(StepUp::Stale { .. } | StepUp::Stronger(_) | StepUp::Risk) if signed_in.is_some() => Kind::StepUpDemanded,
        _ => return None,
    };
    let event = Event::new(kind, if kind == Kind::AccessDenied { Outcome::Refused } else { Outcome::Success });
    let event = match signed_in {
        Some((_, user)) => event.by_user(&user.username),
        None => Event { actor: ANONYMOUS_ACTOR.into(), ..event },
    };
    let event = event.from_client(asked.ip, asked.geo.country.clone(), Some(&app.id));
    let event = event
        .detail("reason", outcome.decision.label())
        .detail("http_method", asked.method.as_str())
        .detail("path", asked.canonical.path.as_str());
    Some(match outcome.rule {
        Some(rule) => event.detail("rule", rule),
        None => event,
    })
}
