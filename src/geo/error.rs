//! Why a database file was refused.

use std::fmt;
use std::path::PathBuf;

use crate::config::{GeoData, GeoNeed};

/// Which setting under `[geoip]` a database file was given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `geoip.city`: a City, Country or Enterprise database.
    City,
    /// `geoip.asn`: an ASN, ISP or Enterprise database.
    Asn,
    /// `geoip.anonymous_ip`: an Anonymous-IP database.
    AnonymousIp,
    /// `geoip.connection_type`: a Connection-Type or Enterprise database.
    ConnectionType,
    /// `geoip.domain`: a Domain or Enterprise database.
    Domain,
}

impl Slot {
    /// Every setting, in the order a kind of data without a setting of its
    /// own looks for a file that carries it.
    pub const ALL: [Slot; 5] = [Slot::City, Slot::Asn, Slot::ConnectionType, Slot::Domain, Slot::AnonymousIp];

    /// The setting's name in the configuration file.
    pub fn setting(self) -> &'static str {
        match self {
            Slot::City => "geoip.city",
            Slot::Asn => "geoip.asn",
            Slot::AnonymousIp => "geoip.anonymous_ip",
            Slot::ConnectionType => "geoip.connection_type",
            Slot::Domain => "geoip.domain",
        }
    }

    /// The data a file in this setting must carry.
    pub fn data(self) -> GeoData {
        match self {
            Slot::City => GeoData::Place,
            Slot::Asn => GeoData::Network,
            Slot::AnonymousIp => GeoData::Anonymous,
            Slot::ConnectionType => GeoData::ConnectionType,
            Slot::Domain => GeoData::Domain,
        }
    }

    /// The databases the setting takes, in words.
    pub fn expected_types(self) -> &'static str {
        match self {
            Slot::City => "a City, Country or Enterprise database (e.g. GeoLite2-City, GeoIP2-Country, GeoIP2-Enterprise)",
            Slot::Asn => "an ASN, ISP or Enterprise database (e.g. GeoLite2-ASN, GeoIP2-ISP)",
            Slot::AnonymousIp => "an Anonymous-IP database (GeoIP2-Anonymous-IP)",
            Slot::ConnectionType => "a Connection-Type or Enterprise database (GeoIP2-Connection-Type, GeoIP2-Enterprise)",
            Slot::Domain => "a Domain or Enterprise database (GeoIP2-Domain, GeoIP2-Enterprise)",
        }
    }

    /// Whether a database of `database_type` (from its metadata) belongs in
    /// this setting.
    pub fn accepts(self, database_type: &str) -> bool {
        Kind::of(database_type).is_some_and(|kind| kind.carries(self.data()))
    }
}

/// What a database file is, by its metadata's `database_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// City or Country, MaxMind's or a vendor's in the same layout.
    Place,
    Enterprise,
    Isp,
    Asn,
    ConnectionType,
    Domain,
    AnonymousIp,
}

impl Kind {
    /// The kind of a `database_type`, compared without regard to case
    /// (vendors write `GeoIP2-City`, `DBIP-ASN-Lite`, `country ipvAll`);
    /// None for a kind the gateway cannot use.
    pub fn of(database_type: &str) -> Option<Kind> {
        let name = database_type.to_ascii_lowercase();
        let has = |part: &str| name.contains(part);
        let kind = if has("enterprise") {
            Kind::Enterprise
        } else if has("anonymous-ip") {
            Kind::AnonymousIp
        } else if has("connection-type") {
            Kind::ConnectionType
        } else if has("domain") {
            Kind::Domain
        } else if has("isp") {
            Kind::Isp
        } else if has("asn") {
            Kind::Asn
        } else if has("city") || has("country") {
            Kind::Place
        } else {
            return None;
        };
        Some(kind)
    }

    /// Whether a database of this kind carries `data`.
    pub fn carries(self, data: GeoData) -> bool {
        use GeoData::*;
        match self {
            Kind::Place => data == Place,
            Kind::Enterprise => matches!(data, Place | Network | Isp | ConnectionType | UserType | Domain),
            Kind::Isp => matches!(data, Network | Isp),
            Kind::Asn => data == Network,
            Kind::ConnectionType => data == ConnectionType,
            Kind::Domain => data == Domain,
            Kind::AnonymousIp => data == Anonymous,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.setting())
    }
}

/// A geo database that cannot be used. Each names the setting, the file and
/// what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file does not exist.
    #[error("{slot} = {}: no such file", .path.display())]
    Missing { slot: Slot, path: PathBuf },
    /// The file exists but cannot be read (permissions, a directory, ...).
    #[error("{slot} = {}: cannot read: {source}", .path.display())]
    Unreadable { slot: Slot, path: PathBuf, source: std::io::Error },
    /// The file is empty.
    #[error("{slot} = {}: the file is empty, not a MaxMind database", .path.display())]
    Empty { slot: Slot, path: PathBuf },
    /// The file has no MaxMind metadata: not an `.mmdb` file at all.
    #[error("{slot} = {}: not a MaxMind database (.mmdb): it has no MaxMind metadata", .path.display())]
    NotMaxMind { slot: Slot, path: PathBuf },
    /// A MaxMind file whose metadata, search tree or sample records are broken.
    #[error("{slot} = {}: damaged MaxMind database: {reason}", .path.display())]
    Damaged { slot: Slot, path: PathBuf, reason: String },
    /// A sound database of a kind the setting cannot use.
    #[error("{slot} = {}: this is a `{found}` database; {slot} needs {}", .path.display(), .slot.expected_types())]
    WrongType { slot: Slot, path: PathBuf, found: String },
    /// The configuration reads data that none of its databases carries.
    #[error("{} needs {}, which no configured database carries: {}", .0.reader, .0.data.name(), .0.data.remedy())]
    NoData(GeoNeed),
}

impl GeoError {
    /// The setting the refused file was given for; None when no file is
    /// at fault.
    pub fn slot(&self) -> Option<Slot> {
        match self {
            GeoError::Missing { slot, .. }
            | GeoError::Unreadable { slot, .. }
            | GeoError::Empty { slot, .. }
            | GeoError::NotMaxMind { slot, .. }
            | GeoError::Damaged { slot, .. }
            | GeoError::WrongType { slot, .. } => Some(*slot),
            GeoError::NoData(_) => None,
        }
    }
}
