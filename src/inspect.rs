//! `stepgate policy explain`: what the gateway would decide for a request,
//! and why, from the configuration and the geo databases alone.

use std::fmt::Write;
use std::net::IpAddr;

use crate::clock::UnixTime;
use crate::config::{Confidence, Config, GeoData};
use crate::gateway::canonical_ip;
use crate::geo::{GeoDatabases, GeoError, GeoFacts};
use crate::methods::MethodTimes;
use crate::policy::{self, Request, Subject};
use crate::users::Directory;

/// The request to explain.
pub struct Question {
    pub host: String,
    pub path: String,
    pub method: http::Method,
    pub ip: IpAddr,
    /// Explain as this user, signed in with a password; None: anonymous.
    pub user: Option<String>,
    /// Assume the user did a second factor this many seconds ago.
    pub second_factor_age: Option<i64>,
    /// Assume this sign-in confidence instead of the one the IP alone gives.
    pub confidence: Option<Confidence>,
    /// Assume the user signed in on a browser they trust.
    pub trusted_browser: bool,
    pub now: UnixTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no app serves host `{0}`")]
    UnknownHost(String),
    #[error("no user `{0}` in the users file")]
    UnknownUser(String),
    #[error("the path is refused before any rule: {0}")]
    BadPath(policy::PathError),
    #[error(transparent)]
    Geo(#[from] GeoError),
    #[error(transparent)]
    Users(#[from] crate::config::ConfigError),
}

pub fn explain(config: &Config, question: &Question) -> Result<String, ExplainError> {
    let host = question.host.to_ascii_lowercase();
    let app = config
        .apps
        .iter()
        .find(|app| app.hosts.iter().any(|h| h.get_ref().0 == host))
        .ok_or_else(|| ExplainError::UnknownHost(question.host.clone()))?;
    let (raw_path, query) = question.path.split_once('?').map_or((question.path.as_str(), None), |(p, q)| (p, Some(q)));
    let path = policy::canonical_path(raw_path, app.path_matching).map_err(ExplainError::BadPath)?;
    let ip = canonical_ip(question.ip);
    let databases = GeoDatabases::open_for(config)?;
    let geo = databases.lookup(ip);
    let untrusted = policy::risk::is_untrusted_ip(&config.untrusted_networks(), config.risk.anonymous_ip_untrusted, ip, &geo);
    let users = match (&question.user, &config.users_file) {
        (Some(_), Some(file)) => Some(Directory::load(file)?),
        (Some(name), None) => return Err(ExplainError::UnknownUser(name.clone())),
        (None, _) => None,
    };
    let user = match (&question.user, &users) {
        (Some(name), Some(users)) => Some(users.get(name).ok_or_else(|| ExplainError::UnknownUser(name.clone()))?),
        _ => None,
    };
    let confidence = question.confidence.unwrap_or(if untrusted { Confidence::Low } else { Confidence::High });
    let subject = user.as_ref().map(|user| Subject {
        username: &user.username,
        groups: &user.groups,
        second_factors: MethodTimes::totp_at(question.second_factor_age.map(|age| question.now - age)),
        trusted_browser: question.trusted_browser,
        confidence,
    });
    let headers = http::HeaderMap::new();
    let request = Request {
        method: &question.method,
        method_override: None,
        path: &path,
        query,
        headers: &headers,
        ip,
        geo: &geo,
        now: question.now,
    };
    let explanation = policy::explain(app, &config.policy, &request, subject.as_ref());

    let mut out = String::new();
    let _ = writeln!(out, "app: {} (host {host})", app.id());
    let _ = writeln!(out, "request: {} {path}{}", question.method, query.map(|q| format!("?{q}")).unwrap_or_default());
    let _ = writeln!(out, "client: {ip}");
    out.push_str(&render_geo(&geo, &databases));
    match &user {
        Some(user) => {
            let _ = writeln!(out, "user: {} (groups: {})", user.username, user.groups.join(", "));
        }
        None => {
            let _ = writeln!(out, "user: nobody signed in");
        }
    }
    let signals = if untrusted { "untrusted_ip" } else { "none from the IP" };
    let _ = writeln!(out, "risk: {signals}; confidence {confidence:?}");
    if question.trusted_browser {
        let _ = writeln!(out, "{}", trusted_browser_note(confidence, config.risk.low_confidence_ends_trust));
    }
    out.push_str(&explanation.render(app));
    Ok(out)
}

/// What a trusted browser counts for at this confidence.
fn trusted_browser_note(confidence: Confidence, low_confidence_ends_trust: bool) -> &'static str {
    match (confidence, low_confidence_ends_trust) {
        (Confidence::Low, true) => {
            "browser: trusted, but not at low confidence: adaptive rules ask for the second factor, and the sign-in ends the trust"
        }
        (Confidence::Low, false) => "browser: trusted, but not at low confidence: adaptive rules ask for the second factor",
        _ => "browser: trusted: adaptive rules skip the second factor",
    }
}

/// Every geo fact about the client, a line for each kind of data, with
/// the file it came from.
fn render_geo(geo: &GeoFacts, databases: &GeoDatabases) -> String {
    let mut out = String::from("geo:\n");
    for data in GeoData::ALL {
        let source = match databases.source(data) {
            Some(path) => format!("from {}", path.display()),
            None => "no database carries it".into(),
        };
        let _ = writeln!(out, "  {}: {} ({source})", geo_label(data), geo_value(geo, data));
    }
    out
}

fn geo_label(data: GeoData) -> &'static str {
    match data {
        GeoData::Place => "place",
        GeoData::Network => "asn",
        GeoData::Isp => "isp",
        GeoData::ConnectionType => "connection type",
        GeoData::UserType => "user type",
        GeoData::Domain => "domain",
        GeoData::Anonymous => "anonymous",
    }
}

fn geo_value(geo: &GeoFacts, data: GeoData) -> String {
    let known = |value: &Option<String>| value.clone().unwrap_or_else(|| "unknown".into());
    match data {
        GeoData::Place => {
            let location = geo.location.map_or("unknown".into(), |l| match l.accuracy_km {
                Some(km) => format!("{},{} within {km} km", l.latitude, l.longitude),
                None => format!("{},{}", l.latitude, l.longitude),
            });
            format!("country {}, continent {}, city {}, location {location}", known(&geo.country), known(&geo.continent), known(&geo.city))
        }
        GeoData::Network => match geo.asn {
            Some(asn) => format!("AS{asn} {}", geo.as_org.as_deref().unwrap_or("")).trim_end().to_string(),
            None => "unknown".into(),
        },
        GeoData::Isp => format!("{}, organization {}", known(&geo.isp), known(&geo.organization)),
        GeoData::ConnectionType => known(&geo.connection_type),
        GeoData::UserType => known(&geo.user_type),
        GeoData::Domain => known(&geo.domain),
        GeoData::Anonymous => anonymous_kinds(geo),
    }
}

/// The Anonymous-IP flags set, or `none`.
fn anonymous_kinds(geo: &GeoFacts) -> String {
    let flags = &geo.anonymous;
    let kinds = [
        (flags.is_anonymous_vpn, "vpn"),
        (flags.is_tor_exit_node, "tor"),
        (flags.is_hosting_provider, "hosting"),
        (flags.is_public_proxy, "public_proxy"),
        (flags.is_residential_proxy, "residential_proxy"),
    ];
    let set: Vec<&str> = kinds.iter().filter(|(set, _)| *set).map(|(_, name)| *name).collect();
    match (set.is_empty(), flags.is_anonymous) {
        (false, _) => set.join(", "),
        (true, true) => "anonymous".into(),
        (true, false) => "none".into(),
    }
}
