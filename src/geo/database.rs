//! One database file: read, checked and ready for lookups.

use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use maxminddb::{geoip2, MaxMindDbError, Reader, WithinOptions};
use serde::Deserialize;

use super::error::{GeoError, Kind, Slot};
use super::facts::GeoFacts;
use super::records::{self, PlaceRecord, TraitsRecord};
use super::sources::DataSet;
use crate::config::GeoData;

/// Every MaxMind database ends with its metadata, introduced by this marker.
const METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
/// The metadata section is at most this long, so the marker is this close to the end.
const METADATA_MAX_BYTES: usize = 128 * 1024;
/// Records decoded at open time, in tree order, to catch a damaged data section.
pub(super) const PROBE_RECORDS: usize = 32;

/// An opened database that passed its checks.
pub(super) struct Database {
    kind: Kind,
    path: PathBuf,
    reader: Reader<Vec<u8>>,
    ipv4_only: bool,
}

impl Database {
    /// Reads `path` into memory and checks that it is a sound database of
    /// the kind `slot` needs.
    pub(super) fn open(slot: Slot, path: &Path) -> Result<Self, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| read_error(slot, path, source))?;
        Self::from_bytes(slot, path, bytes)
    }

    /// Checks the bytes of a database file; `path` names it in errors.
    pub(super) fn from_bytes(slot: Slot, path: &Path, bytes: Vec<u8>) -> Result<Self, GeoError> {
        let damaged = |reason: String| GeoError::Damaged { slot, path: path.to_owned(), reason };
        if bytes.is_empty() {
            return Err(GeoError::Empty { slot, path: path.to_owned() });
        }
        if !has_metadata_marker(&bytes) {
            return Err(GeoError::NotMaxMind { slot, path: path.to_owned() });
        }
        let reader = Reader::from_source(bytes).map_err(|e| damaged(e.to_string()))?;
        let found = &reader.metadata().database_type;
        let wrong_type = || GeoError::WrongType { slot, path: path.to_owned(), found: found.clone() };
        let kind = Kind::of(found).ok_or_else(wrong_type)?;
        let database = Self { kind, path: path.to_owned(), ipv4_only: reader.metadata().ip_version == 4, reader };
        database.admit(slot)?;
        probe(kind, &database.reader).map_err(|e| damaged(format!("a sample record does not decode: {e}")))?;
        Ok(database)
    }

    /// Checks that the database carries what `slot` needs.
    pub(super) fn admit(&self, slot: Slot) -> Result<(), GeoError> {
        if self.kind.carries(slot.data()) {
            return Ok(());
        }
        let found = self.database_type().to_owned();
        Err(GeoError::WrongType { slot, path: self.path.clone(), found })
    }

    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    pub(super) fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Copies into `facts` what the record for `ip` says of the kinds of
    /// data in `serves`. No record, an address the database cannot hold
    /// (IPv6 in an IPv4 database) and a damaged record leave them empty;
    /// the last is logged at debug level.
    pub(super) fn fill(&self, ip: IpAddr, serves: DataSet, facts: &mut GeoFacts) {
        if self.ipv4_only && ip.is_ipv6() {
            return;
        }
        let found = match self.reader.lookup(ip) {
            Ok(found) => found,
            Err(error) => return self.log_failure(&error),
        };
        if serves.contains(GeoData::Place) {
            if let Some(place) = self.decode::<PlaceRecord>(&found) {
                place.fill(facts);
            }
        }
        if serves.has_network_data() {
            if let Some(network) = self.decode::<TraitsRecord>(&found) {
                network.fill(serves, facts);
            }
        }
        if serves.contains(GeoData::Anonymous) {
            if let Some(flags) = self.decode::<geoip2::AnonymousIp>(&found) {
                records::fill_anonymous(&flags, facts);
            }
        }
    }

    fn decode<'a, T: Deserialize<'a>>(&self, found: &maxminddb::LookupResult<'a, Vec<u8>>) -> Option<T> {
        found.decode::<T>().unwrap_or_else(|error| {
            self.log_failure(&error);
            None
        })
    }

    fn log_failure(&self, error: &MaxMindDbError) {
        tracing::debug!(database = %self.path.display(), %error, "geo lookup failed; the address counts as unknown");
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .field("build_epoch", &self.reader.metadata().build_epoch)
            .finish_non_exhaustive()
    }
}

fn read_error(slot: Slot, path: &Path, source: std::io::Error) -> GeoError {
    match source.kind() {
        ErrorKind::NotFound => GeoError::Missing { slot, path: path.to_owned() },
        _ => GeoError::Unreadable { slot, path: path.to_owned(), source },
    }
}

fn has_metadata_marker(bytes: &[u8]) -> bool {
    let tail_start = bytes.len().saturating_sub(METADATA_MAX_BYTES + METADATA_MARKER.len());
    bytes[tail_start..].windows(METADATA_MARKER.len()).any(|window| window == METADATA_MARKER)
}

/// Decodes the first records in tree order and the records of addresses
/// spread over the address space, as lookups will.
fn probe(kind: Kind, reader: &Reader<Vec<u8>>) -> Result<(), MaxMindDbError> {
    for found in reader.networks(WithinOptions::default())?.take(PROBE_RECORDS) {
        decode_as(kind, &found?)?;
    }
    let ipv6 = reader.metadata().ip_version == 6;
    for ip in probe_addresses().filter(|ip| ipv6 || ip.is_ipv4()) {
        decode_as(kind, &reader.lookup(ip)?)?;
    }
    Ok(())
}

/// One address in every sixth IPv4 /8, and a few IPv6 ones from the
/// regional registries' blocks.
fn probe_addresses() -> impl Iterator<Item = IpAddr> {
    let ipv4 = (1..=223u8).step_by(6).map(|first| IpAddr::V4(Ipv4Addr::new(first, 1, 2, 3)));
    let ipv6 = [0x2001, 0x2400, 0x2600, 0x2800, 0x2a00, 0x2c00]
        .into_iter()
        .map(|first| IpAddr::V6(Ipv6Addr::new(first, 0x0200, 0, 0, 0, 0, 0, 1)));
    ipv4.chain(ipv6)
}

fn decode_as(kind: Kind, found: &maxminddb::LookupResult<'_, Vec<u8>>) -> Result<(), MaxMindDbError> {
    if kind.carries(GeoData::Place) {
        found.decode::<PlaceRecord>()?;
    }
    if kind != Kind::Place && kind != Kind::AnonymousIp {
        found.decode::<TraitsRecord>()?;
    }
    if kind == Kind::AnonymousIp {
        found.decode::<geoip2::AnonymousIp>()?;
    }
    Ok(())
}
