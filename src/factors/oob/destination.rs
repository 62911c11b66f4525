//! Phone numbers and email addresses: read, normalised and masked.

use phonenumber::country;
use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, Type};

/// Why a typed phone number cannot get codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("not a valid phone number")]
    Invalid,
    #[error("numbers of this country cannot get codes")]
    CountryNotAllowed,
    /// Premium-rate and shared-cost numbers cost the sender money.
    #[error("this kind of number cannot get codes")]
    Premium,
}

/// A number in international form (`+41 44 668 18 00`, `+1-202-555-0143`)
/// as E.164 (`+41446681800`), if it is valid and of an allowed country.
pub fn phone_number(input: &str, countries: &[country::Id]) -> Result<String, PhoneError> {
    let input = input.trim();
    if input.len() > 32 || !input.starts_with('+') {
        return Err(PhoneError::Invalid);
    }
    let number = phonenumber::parse(None, input).map_err(|_| PhoneError::Invalid)?;
    if !number.is_valid() {
        return Err(PhoneError::Invalid);
    }
    if !number.country().id().is_some_and(|id| countries.contains(&id)) {
        return Err(PhoneError::CountryNotAllowed);
    }
    if matches!(number.number_type(&DATABASE), Type::PremiumRate | Type::SharedCost) {
        return Err(PhoneError::Premium);
    }
    Ok(number.format().mode(Mode::E164).to_string())
}

/// The countries of a channel's configuration (checked at load).
pub fn countries(names: &[String]) -> Vec<country::Id> {
    names.iter().filter_map(|name| name.parse().ok()).collect()
}

/// An email address as typed, if it looks like one: one `@`, a dot in the
/// domain, no spaces or control characters; the domain lower-cased.
pub fn email_address(input: &str) -> Option<String> {
    let input = input.trim();
    let (local, domain) = input.rsplit_once('@')?;
    let plausible = input.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && input.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '<' && c != '>' && c != ',' && c != '"');
    (plausible && input.parse::<lettre::Address>().is_ok()).then(|| format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// A phone number with all but its country code and last two digits
/// hidden, grouped as the country writes it: `+41 •• ••• •• 67`.
pub fn mask_phone(e164: &str) -> String {
    let Ok(number) = phonenumber::parse(None, e164) else {
        return "a phone number".into();
    };
    let international = number.format().mode(Mode::International).to_string();
    let code_len = number.code().value().to_string().len() + 1;
    let digits_total = international.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    international
        .chars()
        .enumerate()
        .map(|(at, c)| {
            if !c.is_ascii_digit() || at < code_len {
                return c;
            }
            seen += 1;
            if seen + code_len - 1 > digits_total - 2 {
                c
            } else {
                '•'
            }
        })
        .collect()
}

/// An email address with its local part hidden but for its first
/// character: `a•••@example.com`.
pub fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{}•••@{domain}", local.chars().next().unwrap_or('•')),
        None => "an email address".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swiss() -> Vec<country::Id> {
        countries(&["CH".into(), "US".into()])
    }

    #[test]
    fn numbers_are_normalised_and_fenced() {
        assert_eq!(phone_number("+41 44 668 18 00", &swiss()), Ok("+41446681800".into()));
        assert_eq!(phone_number(" +1 (202) 555-0143 ", &swiss()), Ok("+12025550143".into()));
        assert_eq!(phone_number("+49 30 901820", &swiss()), Err(PhoneError::CountryNotAllowed));
        assert_eq!(phone_number("044 668 18 00", &swiss()), Err(PhoneError::Invalid));
        assert_eq!(phone_number("+41 12", &swiss()), Err(PhoneError::Invalid));
        assert_eq!(phone_number("+41 900 123 456", &swiss()), Err(PhoneError::Premium));
        assert_eq!(phone_number(&format!("+41{}", "1".repeat(40)), &swiss()), Err(PhoneError::Invalid));
    }

    #[test]
    fn destinations_are_masked() {
        assert_eq!(mask_phone("+41446681867"), "+41 •• ••• •• 67");
        assert_eq!(mask_email("alice@example.com"), "a•••@example.com");
    }

    #[test]
    fn email_addresses_are_checked() {
        assert_eq!(email_address(" alice@Example.COM "), Some("alice@example.com".into()));
        for bad in ["alice", "alice@", "@example.com", "a b@example.com", "alice@localhost", "a@b.com>, x@y.com", "a@b.com\r\nBcc: x@y.com"]
        {
            assert_eq!(email_address(bad), None, "{bad:?}");
        }
    }
}
