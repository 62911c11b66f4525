//! Risk signals at sign-in and the confidence they add up to.
//!
//! The rule, in order: impossible travel or an untrusted IP gives `low`;
//! a new device together with a new country gives `low`; any one of those
//! two alone gives `medium`; no signal gives `high`.

use serde::{Deserialize, Serialize};

use super::is_anonymous;
use crate::config::{Anonymity, Confidence};
use crate::geo::GeoFacts;

/// Something about a sign-in that makes it less certain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// This browser has never completed a second factor for the user.
    NewDevice,
    /// The user has signed in before, never from this country.
    NewCountry,
    /// Getting here from the last sign-in's place would need a faster trip
    /// than anyone makes.
    ImpossibleTravel,
    /// The IP is in an untrusted network or an anonymizing service.
    UntrustedIp,
}

/// What was observed at sign-in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    pub known_device: bool,
    /// None when the user has no earlier sign-in or the country is unknown.
    pub country_seen_before: Option<bool>,
    /// km/h from the last sign-in's place, when both places are known.
    pub travel_speed_kmh: Option<f64>,
    pub untrusted_ip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    pub confidence: Confidence,
    pub signals: Vec<Signal>,
}

impl Default for Assessment {
    /// Nothing was assessed: no reason for confidence.
    fn default() -> Self {
        Self { confidence: Confidence::Low, signals: Vec::new() }
    }
}

pub fn assess(evidence: &Evidence, max_speed_kmh: f64) -> Assessment {
    let mut signals = Vec::new();
    if !evidence.known_device {
        signals.push(Signal::NewDevice);
    }
    if evidence.country_seen_before == Some(false) {
        signals.push(Signal::NewCountry);
    }
    if evidence.travel_speed_kmh.is_some_and(|speed| speed > max_speed_kmh) {
        signals.push(Signal::ImpossibleTravel);
    }
    if evidence.untrusted_ip {
        signals.push(Signal::UntrustedIp);
    }
    let severe = signals.iter().any(|s| matches!(s, Signal::ImpossibleTravel | Signal::UntrustedIp));
    let confidence = match (severe, signals.len()) {
        (true, _) => Confidence::Low,
        (false, 0) => Confidence::High,
        (false, 1) => Confidence::Medium,
        (false, _) => Confidence::Low,
    };
    Assessment { confidence, signals }
}

/// Whether an address is in an untrusted network or, when
/// `anonymous_untrusted`, flagged by the Anonymous-IP database.
pub fn is_untrusted_ip(untrusted: &[ipnet::IpNet], anonymous_untrusted: bool, ip: std::net::IpAddr, geo: &GeoFacts) -> bool {
    untrusted.iter().any(|net| net.contains(&ip)) || (anonymous_untrusted && is_anonymous(geo, Anonymity::Any))
}

/// Speed in km/h to cover `distance_km` (the gap between the two places'
/// accuracy circles, see `geo::gap_km`) in `elapsed_secs`. Places closer
/// than a city's extent count as the same place, and at least a minute is
/// assumed to have passed.
pub fn travel_speed(distance_km: f64, elapsed_secs: i64) -> f64 {
    const SAME_PLACE_KM: f64 = 100.0;
    if distance_km < SAME_PLACE_KM {
        return 0.0;
    }
    distance_km / (elapsed_secs.max(60) as f64 / 3600.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(known_device: bool, seen: Option<bool>, speed: Option<f64>, untrusted: bool) -> Evidence {
        Evidence { known_device, country_seen_before: seen, travel_speed_kmh: speed, untrusted_ip: untrusted }
    }

    #[test]
    fn signals_combine_into_a_confidence() {
        use Confidence::*;
        let cases = [
            (evidence(true, Some(true), Some(10.0), false), High, vec![]),
            (evidence(true, None, None, false), High, vec![]),
            (evidence(false, Some(true), None, false), Medium, vec![Signal::NewDevice]),
            (evidence(true, Some(false), None, false), Medium, vec![Signal::NewCountry]),
            (evidence(false, Some(false), None, false), Low, vec![Signal::NewDevice, Signal::NewCountry]),
            (evidence(true, Some(true), Some(5000.0), false), Low, vec![Signal::ImpossibleTravel]),
            (evidence(true, Some(true), Some(999.0), false), High, vec![]),
            (evidence(true, Some(true), None, true), Low, vec![Signal::UntrustedIp]),
        ];
        for (evidence, confidence, signals) in cases {
            let assessment = assess(&evidence, 1000.0);
            assert_eq!(assessment.confidence, confidence, "{evidence:?}");
            assert_eq!(assessment.signals, signals, "{evidence:?}");
        }
    }

    #[test]
    fn travel_speed_ignores_short_hops_and_instant_trips() {
        assert_eq!(travel_speed(50.0, 1), 0.0);
        assert_eq!(travel_speed(1000.0, 3600), 1000.0);
        assert_eq!(travel_speed(1000.0, 0), 60_000.0);
    }
}
