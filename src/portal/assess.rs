//! The risk assessment at sign-in: gathers the evidence (device, country
//! history, travel, network), lets the policy weigh it, records the
//! sign-in for the next assessment, and ends a browser's trust when a
//! sign-in there is of low confidence.

use std::net::IpAddr;

use crate::config::Confidence;
use crate::gateway::Gateway;
use crate::geo::{gap_km, Location};
use crate::policy::risk::{self, Assessment, Evidence};
use crate::session::SignInContext;
use crate::store::{SignInRow, StoreError};
use crate::users::ExternalUser;

pub async fn assess_sign_in(gateway: &Gateway, username: &str, ip: IpAddr, device_id: &str) -> Result<SignInContext, StoreError> {
    let store = &gateway.store;
    let now = gateway.clock.now();
    let geo = gateway.geo.current().lookup(ip);
    let last = store.last_sign_in(username).await?;
    let country_seen_before = match (&geo.country, &last) {
        (Some(country), Some(_)) => Some(store.has_signed_in_from(username, country).await?),
        _ => None,
    };
    let last_place = last.as_ref().and_then(|l| {
        let accuracy_km = l.accuracy_km.and_then(|km| u16::try_from(km).ok());
        Some((Location { latitude: l.latitude?, longitude: l.longitude?, accuracy_km }, l.at))
    });
    let travel_speed_kmh = match (last_place, geo.location) {
        (Some((from, at)), Some(to)) => Some(risk::travel_speed(gap_km(from, to), now - at)),
        _ => None,
    };
    let evidence = Evidence {
        known_device: store.is_known_device(username, device_id).await?,
        country_seen_before,
        travel_speed_kmh,
        untrusted_ip: gateway.is_untrusted_ip(ip, &geo),
    };
    let assessment = risk::assess(&evidence, gateway.config.risk.max_travel_speed_kmh);
    store
        .record_sign_in(&SignInRow {
            username: username.to_string(),
            at: now,
            ip: ip.to_string(),
            country: geo.country.clone(),
            latitude: geo.location.map(|l| l.latitude),
            longitude: geo.location.map(|l| l.longitude),
            accuracy_km: geo.location.and_then(|l| l.accuracy_km).map(i32::from),
            confidence: format!("{:?}", assessment.confidence).to_lowercase(),
            signals: serde_json::to_string(&assessment.signals).unwrap_or_else(|_| "[]".into()),
        })
        .await?;
    let mut trusted_until = store.device_trusted_until(username, device_id).await?.filter(|until| *until > now);
    if trusted_until.is_some() && assessment.confidence == Confidence::Low && gateway.config.risk.low_confidence_ends_trust {
        end_trust(gateway, username, device_id, &assessment).await?;
        trusted_until = None;
    }
    let password_fingerprint = gateway.users.password_fingerprint(username, &gateway.secrets);
    // A directory's user (learned just before) travels with the session.
    let user = gateway.users.is_external().then(|| gateway.users.get(username)).flatten().map(|user| ExternalUser::of(&user));
    let device_id = Some(device_id.to_string());
    Ok(SignInContext { assessment, country: geo.country, device_id, trusted_until, password_fingerprint, user })
}

/// A risky sign-in on a trusted browser: whoever signs in there may not be
/// the user who trusted it, so it is no longer trusted, here or in the
/// browser's other sessions.
async fn end_trust(gateway: &Gateway, username: &str, device_id: &str, assessment: &Assessment) -> Result<(), StoreError> {
    gateway.store.untrust_device(username, device_id).await?;
    gateway.sessions.end_device_trust(username, device_id).await?;
    tracing::info!(
        event = "untrust_browser",
        reason = "low_confidence",
        user = %username,
        signals = ?assessment.signals,
        "authentication"
    );
    Ok(())
}
