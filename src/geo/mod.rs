//! Where a client address is: MaxMind readers for a City or Country, an
//! ASN and an Anonymous-IP database, swappable while the gateway runs.
//!
//! Files are read into memory and checked when opened (type, metadata and a
//! sample of records), so a bad file is refused with an error naming it;
//! lookups never fail and never panic, an unknown address just gives empty
//! [`GeoFacts`].

mod database;
mod error;
mod facts;
mod records;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use maxminddb::geoip2;

use crate::config::GeoIpConfig;
use database::Database;

pub use error::{GeoError, Slot};
pub use facts::{distance_km, AnonymousFlags, GeoFacts, Location};

/// The open databases, each optional. Immutable once opened; [`Geo`] swaps
/// in a new set on reload.
#[derive(Debug, Default)]
pub struct GeoDatabases {
    city: Option<Database>,
    asn: Option<Database>,
    anonymous_ip: Option<Database>,
}

impl GeoDatabases {
    /// Opens and checks the databases the configuration names. Any file that
    /// is missing, unreadable, damaged or of the wrong type is an error.
    pub fn open(config: &GeoIpConfig) -> Result<Self, GeoError> {
        let open = |slot: Slot, path: &Option<PathBuf>| path.as_deref().map(|p| Database::open(slot, p)).transpose();
        Ok(Self {
            city: open(Slot::City, &config.city)?,
            asn: open(Slot::Asn, &config.asn)?,
            anonymous_ip: open(Slot::AnonymousIp, &config.anonymous_ip)?,
        })
    }

    /// No databases: every lookup gives empty facts.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether no database is open.
    pub fn is_empty(&self) -> bool {
        self.city.is_none() && self.asn.is_none() && self.anonymous_ip.is_none()
    }

    /// Where the ASN comes from: the ASN database, or else an Enterprise
    /// database in the city slot, which carries it too.
    fn network_source(&self) -> Option<&Database> {
        self.asn.as_ref().or(self.city.as_ref().filter(|city| city.is_enterprise()))
    }

    /// What the databases know about `ip`. An IPv4-mapped IPv6 address is
    /// looked up as its IPv4 address. Never fails: no record, or a record
    /// that does not decode, leaves the fields empty.
    pub fn lookup(&self, ip: IpAddr) -> GeoFacts {
        let ip = unmap_ipv4(ip);
        let mut facts = GeoFacts::default();
        if let Some(place) = self.city.as_ref().and_then(|db| db.find::<records::PlaceRecord>(ip)) {
            place.fill(&mut facts);
        }
        if let Some(network) = self.network_source().and_then(|db| db.find::<records::NetworkRecord>(ip)) {
            network.fill(&mut facts);
        }
        if let Some(flags) = self.anonymous_ip.as_ref().and_then(|db| db.find::<geoip2::AnonymousIp>(ip)) {
            records::fill_anonymous(&flags, &mut facts);
        }
        facts
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; other addresses unchanged.
fn unmap_ipv4(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The databases in use, replaceable while requests are looking them up.
#[derive(Debug)]
pub struct Geo {
    current: RwLock<Arc<GeoDatabases>>,
}

impl Geo {
    /// Starts with `databases` in use.
    pub fn new(databases: GeoDatabases) -> Self {
        Self { current: RwLock::new(Arc::new(databases)) }
    }

    /// The databases in use now. Cheap: a read lock and a reference count.
    /// Requests keep the set they took even if a reload swaps it meanwhile.
    pub fn current(&self) -> Arc<GeoDatabases> {
        // The lock only ever guards a pointer swap, so a poisoned lock still
        // holds a whole value.
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Opens the files `config` names and, only if all of them pass their
    /// checks, puts them in use. On error the databases in use stay.
    pub fn reload(&self, config: &GeoIpConfig) -> Result<(), GeoError> {
        let databases = GeoDatabases::open(config)?;
        tracing::info!(?databases, "geo databases reloaded");
        self.replace(databases);
        Ok(())
    }

    /// Puts already opened databases in use.
    pub fn replace(&self, databases: GeoDatabases) {
        let new = Arc::new(databases);
        let old = std::mem::replace(&mut *self.current.write().unwrap_or_else(PoisonError::into_inner), new);
        // Freed (if no request still holds it) after the lock is released.
        drop(old);
    }
}

#[cfg(test)]
mod tests;
