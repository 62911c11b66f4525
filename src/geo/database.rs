//! One database file: read, checked and ready for lookups.

use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use maxminddb::{geoip2, MaxMindDbError, Reader, WithinOptions};
use serde::Deserialize;

use super::error::{GeoError, Slot};
use super::records::{NetworkRecord, PlaceRecord};

/// Every MaxMind database ends with its metadata, introduced by this marker.
const METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
/// The metadata section is at most this long, so the marker is this close to the end.
const METADATA_MAX_BYTES: usize = 128 * 1024;
/// Records decoded at open time, in tree order, to catch a damaged data section.
pub(super) const PROBE_RECORDS: usize = 32;

/// An opened database that passed its checks.
pub(super) struct Database {
    slot: Slot,
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
        if !slot.accepts(found) {
            return Err(GeoError::WrongType { slot, path: path.to_owned(), found: found.clone() });
        }
        probe(slot, &reader).map_err(|e| damaged(format!("a sample record does not decode: {e}")))?;
        let ipv4_only = reader.metadata().ip_version == 4;
        Ok(Self { slot, path: path.to_owned(), reader, ipv4_only })
    }

    /// Whether this is a GeoIP2 Enterprise database: a City database that
    /// also carries the network (ASN, ISP) of each address.
    pub(super) fn is_enterprise(&self) -> bool {
        self.reader.metadata().database_type.to_ascii_lowercase().contains("enterprise")
    }

    /// The record for `ip`, decoded as `T`. No record, an address the
    /// database cannot hold (IPv6 in an IPv4 database) and a damaged record
    /// all give None; the last is logged at debug level.
    pub(super) fn find<'a, T: Deserialize<'a>>(&'a self, ip: IpAddr) -> Option<T> {
        if self.ipv4_only && ip.is_ipv6() {
            return None;
        }
        match self.reader.lookup(ip).and_then(|found| found.decode::<T>()) {
            Ok(record) => record,
            Err(error) => {
                tracing::debug!(database = %self.slot, %error, "geo lookup failed; the address counts as unknown");
                None
            }
        }
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
/// spread over the address space, as the slot's lookups will.
fn probe(slot: Slot, reader: &Reader<Vec<u8>>) -> Result<(), MaxMindDbError> {
    for found in reader.networks(WithinOptions::default())?.take(PROBE_RECORDS) {
        decode_as(slot, &found?)?;
    }
    let ipv6 = reader.metadata().ip_version == 6;
    for ip in probe_addresses().filter(|ip| ipv6 || ip.is_ipv4()) {
        decode_as(slot, &reader.lookup(ip)?)?;
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

fn decode_as(slot: Slot, found: &maxminddb::LookupResult<'_, Vec<u8>>) -> Result<(), MaxMindDbError> {
    match slot {
        Slot::City => found.decode::<PlaceRecord>().map(drop),
        Slot::Asn => found.decode::<NetworkRecord>().map(drop),
        Slot::AnonymousIp => found.decode::<geoip2::AnonymousIp>().map(drop),
    }
}
