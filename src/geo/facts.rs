//! What the databases say about one address, and distances between places.

use serde::Serialize;

/// Everything the geo databases know about one client address. Fields a
/// database does not cover, or has no record for, stay empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GeoFacts {
    /// ISO 3166-1 alpha-2 country code, e.g. `GB`.
    pub country: Option<String>,
    /// Continent code, e.g. `EU`.
    pub continent: Option<String>,
    /// The city's English name.
    pub city: Option<String>,
    /// Approximate coordinates.
    pub location: Option<Location>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// The organisation that holds the autonomous system.
    pub as_org: Option<String>,
    /// The ISP's name (ISP and Enterprise databases).
    pub isp: Option<String>,
    /// The organisation the address is assigned to (ISP and Enterprise).
    pub organization: Option<String>,
    /// `Cable/DSL`, `Cellular`, `Corporate`, `Dialup` or `Satellite`
    /// (Connection-Type and Enterprise).
    pub connection_type: Option<String>,
    /// `business`, `residential`, `hosting`, ... (Enterprise).
    pub user_type: Option<String>,
    /// The second-level domain of the address's reverse DNS name (Domain
    /// and Enterprise).
    pub domain: Option<String>,
    /// What the Anonymous-IP database flags; all false without one.
    pub anonymous: AnonymousFlags,
}

/// A point on the Earth, in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Location {
    /// Degrees north (negative: south), -90 to 90.
    pub latitude: f64,
    /// Degrees east (negative: west), -180 to 180.
    pub longitude: f64,
    /// The radius in km around the point within which the address most
    /// likely is (MaxMind's `accuracy_radius`), when the database says.
    pub accuracy_km: Option<u16>,
}

/// The Anonymous-IP database's flags for an address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AnonymousFlags {
    /// Any of the kinds below.
    pub is_anonymous: bool,
    /// Registered to an anonymous VPN provider.
    pub is_anonymous_vpn: bool,
    /// A Tor exit node.
    pub is_tor_exit_node: bool,
    /// A hosting or VPN provider's address.
    pub is_hosting_provider: bool,
    /// A public proxy.
    pub is_public_proxy: bool,
    /// A residential ISP's address used by an anonymizing network.
    pub is_residential_proxy: bool,
}

/// Mean radius of the Earth in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0;

/// Great-circle (haversine) distance between two places, in kilometres.
/// Accurate to about 0.5% (the Earth is not quite a sphere); a coordinate
/// that is NaN gives NaN.
pub fn distance_km(a: Location, b: Location) -> f64 {
    let (lat_a, lat_b) = (a.latitude.to_radians(), b.latitude.to_radians());
    let half_dlat = (lat_b - lat_a) / 2.0;
    let half_dlon = (b.longitude - a.longitude).to_radians() / 2.0;
    let h = half_dlat.sin().powi(2) + lat_a.cos() * lat_b.cos() * half_dlon.sin().powi(2);
    // Rounding can push h a hair above 1 for antipodal points.
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

/// The shortest trip between two places, given how accurately each is
/// known: the distance between the nearest edges of their accuracy
/// circles, 0 when the circles overlap. A place without a radius is a point.
pub fn gap_km(a: Location, b: Location) -> f64 {
    let radius = |place: Location| f64::from(place.accuracy_km.unwrap_or(0));
    (distance_km(a, b) - radius(a) - radius(b)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(latitude: f64, longitude: f64) -> Location {
        Location { latitude, longitude, accuracy_km: None }
    }

    #[test]
    fn same_place_is_zero_km() {
        assert_eq!(distance_km(at(51.5, -0.12), at(51.5, -0.12)), 0.0);
    }

    #[test]
    fn london_to_new_york_is_about_5570_km() {
        let km = distance_km(at(51.5074, -0.1278), at(40.7128, -74.0060));
        assert!((km - 5570.0).abs() < 10.0, "{km}");
    }

    #[test]
    fn distance_is_symmetric() {
        let (zurich, sydney) = (at(47.37, 8.54), at(-33.87, 151.21));
        assert_eq!(distance_km(zurich, sydney), distance_km(sydney, zurich));
    }

    #[test]
    fn crossing_the_date_line_takes_the_short_way() {
        let km = distance_km(at(0.0, 179.5), at(0.0, -179.5));
        assert!((km - 111.2).abs() < 0.5, "{km}");
    }

    #[test]
    fn antipodes_are_half_the_circumference_and_not_nan() {
        let km = distance_km(at(90.0, 0.0), at(-90.0, 0.0));
        assert!((km - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6, "{km}");
        let km = distance_km(at(0.0, 0.0), at(0.0, 180.0));
        assert!(km.is_finite());
    }

    #[test]
    fn the_gap_is_between_the_edges_of_the_accuracy_circles() {
        let (london, new_york) = (at(51.5074, -0.1278), at(40.7128, -74.0060));
        let exact = distance_km(london, new_york);
        assert_eq!(gap_km(london, new_york), exact, "points without a radius");
        let fuzzy = |place: Location, km| Location { accuracy_km: Some(km), ..place };
        let gap = gap_km(fuzzy(london, 100), fuzzy(new_york, 500));
        assert!((gap - (exact - 600.0)).abs() < 1e-9, "{gap}");
        assert_eq!(gap_km(fuzzy(london, 1000), fuzzy(new_york, 5000)), 0.0, "overlapping circles");
    }

    #[test]
    fn serializes_as_plain_json() {
        let facts = GeoFacts { country: Some("GB".into()), location: Some(at(1.0, 2.0)), ..GeoFacts::default() };
        let json = serde_json::to_value(&facts).unwrap();
        assert_eq!(json["country"], "GB");
        assert_eq!(json["location"]["longitude"], 2.0);
        assert_eq!(json["anonymous"]["is_tor_exit_node"], false);
    }
}
