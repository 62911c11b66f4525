//! Which opened file answers for each kind of geo data.

use super::error::{Kind, Slot};
use crate::config::GeoData;

/// A set of kinds of geo data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DataSet(u8);

impl DataSet {
    pub(super) fn insert(&mut self, data: GeoData) {
        self.0 |= 1 << data as u8;
    }

    pub(super) fn contains(self, data: GeoData) -> bool {
        self.0 & (1 << data as u8) != 0
    }

    /// Whether any of the data a network record holds (ASN, ISP,
    /// connection type, user type, domain) is in the set.
    pub(super) fn has_network_data(self) -> bool {
        use GeoData::*;
        [Network, Isp, ConnectionType, UserType, Domain].into_iter().any(|data| self.contains(data))
    }

    pub(super) fn iter(self) -> impl Iterator<Item = GeoData> {
        GeoData::ALL.into_iter().filter(move |data| self.contains(*data))
    }
}

/// The setting whose file is the first choice for `data`.
fn home(data: GeoData) -> Slot {
    match data {
        GeoData::Place | GeoData::UserType => Slot::City,
        GeoData::Network | GeoData::Isp => Slot::Asn,
        GeoData::ConnectionType => Slot::ConnectionType,
        GeoData::Domain => Slot::Domain,
        GeoData::Anonymous => Slot::AnonymousIp,
    }
}

/// What each file answers for, given each file's kind and the settings
/// that name it: every kind of data goes to the file of its own setting
/// when that file carries it, else to the first file, in the order of
/// [`Slot::ALL`], that does; data no file carries goes nowhere.
pub(super) fn assign(files: &[(Kind, &[Slot])]) -> Vec<DataSet> {
    let mut serves = vec![DataSet::default(); files.len()];
    let named_for = |slot: Slot| files.iter().position(|(_, slots)| slots.contains(&slot));
    for data in GeoData::ALL {
        let carries = |index: &usize| files[*index].0.carries(data);
        let own = named_for(home(data)).filter(carries);
        let fallback = || Slot::ALL.into_iter().filter_map(named_for).find(carries);
        if let Some(index) = own.or_else(fallback) {
            serves[index].insert(data);
        }
    }
    serves
}

#[cfg(test)]
mod tests {
    use super::*;
    use GeoData::*;

    fn served(files: &[(Kind, &[Slot])]) -> Vec<Vec<GeoData>> {
        assign(files).into_iter().map(|set| set.iter().collect()).collect()
    }

    #[test]
    fn an_enterprise_city_file_answers_for_all_it_carries() {
        assert_eq!(served(&[(Kind::Enterprise, &[Slot::City])]), [vec![Place, Network, Isp, ConnectionType, UserType, Domain]]);
    }

    #[test]
    fn a_file_of_the_datas_own_setting_comes_first() {
        let files: [(Kind, &[Slot]); 3] =
            [(Kind::Enterprise, &[Slot::City]), (Kind::Asn, &[Slot::Asn]), (Kind::ConnectionType, &[Slot::ConnectionType])];
        assert_eq!(served(&files), [vec![Place, Isp, UserType, Domain], vec![Network], vec![ConnectionType]]);
    }

    #[test]
    fn an_isp_file_as_asn_answers_for_the_isp_before_an_enterprise_city() {
        let files: [(Kind, &[Slot]); 2] = [(Kind::Enterprise, &[Slot::City]), (Kind::Isp, &[Slot::Asn])];
        assert_eq!(served(&files), [vec![Place, ConnectionType, UserType, Domain], vec![Network, Isp]]);
    }

    #[test]
    fn data_no_file_carries_goes_nowhere() {
        let files: [(Kind, &[Slot]); 2] = [(Kind::Place, &[Slot::City]), (Kind::AnonymousIp, &[Slot::AnonymousIp])];
        assert_eq!(served(&files), [vec![Place], vec![Anonymous]]);
    }
}
