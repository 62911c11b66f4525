//! The risk assessment at sign-in: gathers the evidence (device, country
//! history, travel, network), lets the policy weigh it, and records the
//! sign-in for the next assessment.

use std::net::IpAddr;

use crate::gateway::Gateway;
use crate::geo::{distance_km, Location};
use crate::policy::risk::{self, Evidence};
use crate::session::SignInContext;
use crate::store::{SignInRow, StoreError};

pub async fn assess_sign_in(gateway: &Gateway, username: &str, ip: IpAddr, device_id: &str) -> Result<SignInContext, StoreError> {
    let store = &gateway.store;
    let now = gateway.clock.now();
    let geo = gateway.geo.current().lookup(ip);
    let last = store.last_sign_in(username).await?;
    let country_seen_before = match (&geo.country, &last) {
        (Some(country), Some(_)) => Some(store.has_signed_in_from(username, country).await?),
        _ => None,
    };
    let last_place = last.as_ref().and_then(|l| Some((Location { latitude: l.latitude?, longitude: l.longitude? }, l.at)));
    let travel_speed_kmh = match (last_place, geo.location) {
        (Some((from, at)), Some(to)) => Some(risk::travel_speed(distance_km(from, to), now - at)),
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
            confidence: format!("{:?}", assessment.confidence).to_lowercase(),
            signals: serde_json::to_string(&assessment.signals).unwrap_or_else(|_| "[]".into()),
        })
        .await?;
    let trusted_until = store.device_trusted_until(username, device_id).await?.filter(|until| *until > now);
    let password_fingerprint = gateway.users.get(username).map(|user| user.password_fingerprint(&gateway.secrets));
    Ok(SignInContext { assessment, country: geo.country, device_id: Some(device_id.to_string()), trusted_until, password_fingerprint })
}

