//! What is known about a client address: MaxMind readers for City,
//! Country, Enterprise, ISP, ASN, Connection-Type, Domain and Anonymous-IP
//! databases, swappable while the gateway runs.
//!
//! Files are read into memory and checked when opened (type, metadata and a
//! sample of records), so a bad file is refused with an error naming it;
//! lookups never fail and never panic, an unknown address just gives empty
//! [`GeoFacts`]. Each kind of data ([`GeoData`]) comes from one file: the
//! one its own setting names, else any configured file that carries it.

mod database;
mod error;
mod facts;
mod records;
mod sources;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::{Config, GeoData, GeoIpConfig, GeoNeed};
use database::Database;
use sources::DataSet;

use error::Kind;
pub use error::{GeoError, Slot};
pub use facts::{distance_km, gap_km, AnonymousFlags, GeoFacts, Location};

/// The open databases. Immutable once opened; [`Geo`] swaps in a new set
/// on reload.
#[derive(Debug, Default)]
pub struct GeoDatabases {
    files: Vec<OpenFile>,
}

/// A file and what it answers for.
#[derive(Debug)]
struct OpenFile {
    database: Database,
    /// The settings that name it.
    slots: Vec<Slot>,
    serves: DataSet,
}

/// What one database file is used for, for `check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUse {
    pub path: PathBuf,
    pub database_type: String,
    pub settings: Vec<Slot>,
    pub serves: Vec<GeoData>,
    /// When MaxMind built the file (Unix seconds).
    pub build_epoch: u64,
}

impl fmt::Display for FileUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = self.settings.iter().map(|slot| slot.setting()).collect::<Vec<_>>().join(", ");
        let serves = self.serves.iter().map(|data| data.name()).collect::<Vec<_>>().join(", ");
        write!(f, "{} ({}), as {settings}: {serves}", self.path.display(), self.database_type)
    }
}

impl GeoDatabases {
    /// Opens and checks the databases the configuration names, each file
    /// once however many settings name it. Any file that is missing,
    /// unreadable, damaged or of the wrong type for a setting is an error.
    pub fn open(config: &GeoIpConfig) -> Result<Self, GeoError> {
        let mut files: Vec<(Database, Vec<Slot>)> = Vec::new();
        for slot in Slot::ALL {
            let Some(path) = setting(config, slot) else { continue };
            match files.iter_mut().find(|(database, _)| database.path() == path) {
                Some((database, slots)) => {
                    database.admit(slot)?;
                    slots.push(slot);
                }
                None => files.push((Database::open(slot, path)?, vec![slot])),
            }
        }
        Ok(Self::assemble(files))
    }

    /// Opens the databases of `config` and checks that they carry every
    /// kind of data its rules read.
    pub fn open_for(config: &Config) -> Result<Self, GeoError> {
        let databases = Self::open(&config.geoip)?;
        databases.check_needs(&config.geo_needs())?;
        Ok(databases)
    }

    fn assemble(files: Vec<(Database, Vec<Slot>)>) -> Self {
        let kinds: Vec<(Kind, &[Slot])> = files.iter().map(|(database, slots)| (database.kind(), slots.as_slice())).collect();
        let serves = sources::assign(&kinds);
        let files = files.into_iter().zip(serves).map(|((database, slots), serves)| OpenFile { database, slots, serves }).collect();
        Self { files }
    }

    /// No databases: every lookup gives empty facts.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether no database is open.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether some open file carries `data`.
    pub fn provides(&self, data: GeoData) -> bool {
        self.source(data).is_some()
    }

    /// The file `data` comes from, if any carries it.
    pub fn source(&self, data: GeoData) -> Option<&Path> {
        self.files.iter().find(|file| file.serves.contains(data)).map(|file| file.database.path())
    }

    /// The first need that no open file carries, as an error.
    pub fn check_needs(&self, needs: &[GeoNeed]) -> Result<(), GeoError> {
        match needs.iter().find(|need| !self.provides(need.data)) {
            Some(need) => Err(GeoError::NoData(need.clone())),
            None => Ok(()),
        }
    }

    /// What each open file is used for.
    pub fn uses(&self) -> Vec<FileUse> {
        let usage = |file: &OpenFile| FileUse {
            path: file.database.path().to_owned(),
            database_type: file.database.database_type().to_owned(),
            settings: file.slots.clone(),
            serves: file.serves.iter().collect(),
            build_epoch: file.database.build_epoch(),
        };
        self.files.iter().map(usage).collect()
    }

    /// What the databases know about `ip`. An IPv4-mapped IPv6 address is
    /// looked up as its IPv4 address. Never fails: no record, or a record
    /// that does not decode, leaves the fields empty.
    pub fn lookup(&self, ip: IpAddr) -> GeoFacts {
        let ip = unmap_ipv4(ip);
        let mut facts = GeoFacts::default();
        for file in &self.files {
            file.database.fill(ip, file.serves, &mut facts);
        }
        facts
    }
}

/// The file a setting names.
fn setting(config: &GeoIpConfig, slot: Slot) -> Option<&Path> {
    let path = match slot {
        Slot::City => &config.city,
        Slot::Asn => &config.asn,
        Slot::AnonymousIp => &config.anonymous_ip,
        Slot::ConnectionType => &config.connection_type,
        Slot::Domain => &config.domain,
    };
    path.as_deref()
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
    /// checks and carry what its rules read, puts them in use. On error the
    /// databases in use stay.
    pub fn reload(&self, config: &Config) -> Result<(), GeoError> {
        let databases = GeoDatabases::open_for(config)?;
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
