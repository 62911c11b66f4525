//! Why a database file was refused.

use std::fmt;
use std::path::PathBuf;

/// Which setting under `[geoip]` a database file was given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `geoip.city`: a City or Country database.
    City,
    /// `geoip.asn`: an ASN database.
    Asn,
    /// `geoip.anonymous_ip`: an Anonymous-IP database.
    AnonymousIp,
}

impl Slot {
    /// The setting's name in the configuration file.
    pub fn setting(self) -> &'static str {
        match self {
            Slot::City => "geoip.city",
            Slot::Asn => "geoip.asn",
            Slot::AnonymousIp => "geoip.anonymous_ip",
        }
    }

    /// What the metadata's `database_type` must contain, in words.
    pub fn expected_types(self) -> &'static str {
        match self {
            Slot::City => "a City, Country or Enterprise database (e.g. GeoLite2-City, GeoIP2-Country, GeoIP2-Enterprise)",
            Slot::Asn => "an ASN, ISP or Enterprise database (e.g. GeoLite2-ASN, GeoIP2-ISP)",
            Slot::AnonymousIp => "an Anonymous-IP database (GeoIP2-Anonymous-IP)",
        }
    }

    /// Whether a database of `database_type` (from its metadata, compared
    /// without regard to case: vendors write `GeoIP2-City`, `country ipvAll`)
    /// belongs in this slot.
    pub fn accepts(self, database_type: &str) -> bool {
        let kind = database_type.to_ascii_lowercase();
        match self {
            Slot::City => kind.contains("city") || kind.contains("country") || kind.contains("enterprise"),
            Slot::Asn => kind.contains("asn") || kind.contains("isp") || kind.contains("enterprise"),
            Slot::AnonymousIp => kind.contains("anonymous-ip"),
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
}

impl GeoError {
    /// The setting the refused file was given for.
    pub fn slot(&self) -> Slot {
        match self {
            GeoError::Missing { slot, .. }
            | GeoError::Unreadable { slot, .. }
            | GeoError::Empty { slot, .. }
            | GeoError::NotMaxMind { slot, .. }
            | GeoError::Damaged { slot, .. }
            | GeoError::WrongType { slot, .. } => *slot,
        }
    }
}
