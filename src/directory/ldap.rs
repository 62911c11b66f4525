//! Users and passwords in an LDAP directory: a service account finds the
//! user (the typed name escaped into the filter), then the password is
//! checked by binding as the user on a connection of its own.
//!
//! The directory's answers are read for what they say about the account:
//! OpenLDAP's password policy (the ppolicy response control) and Active
//! Directory's bind diagnostics (`data 533` and so on) tell a locked or
//! disabled account and an expired password from a wrong one. An unknown
//! user costs a bind too (as a user that does not exist), so a wrong name
//! and a wrong password take the same path.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use tokio::sync::Mutex;

use crate::config::{read_secret, LdapConfig};
use crate::users::{User, MAX_USERNAME_BYTES};

/// The password policy control (draft-behera-ldap-password-policy).
const PPOLICY: &str = "1.3.6.1.4.1.42.2.27.8.5.1";
/// Active Directory's `userAccountControl` flag of a disabled account.
const AD_ACCOUNT_DISABLE: u64 = 0x2;
/// A bind as nobody, for names that match no user.
const DECOY_DN_RDN: &str = "cn=stepgate-no-such-user";

#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The directory cannot be reached or failed; the message names no secret.
    #[error("the directory is unavailable: {0}")]
    Unavailable(String),
}

/// What the directory said of a user name and password.
#[derive(Debug)]
pub enum Verdict {
    Accepted(User),
    /// Unknown user or wrong password: the same answer.
    Wrong,
    /// Locked (too many failures, or by an administrator) or disabled.
    Locked,
    /// The password is right but expired, or must be changed first.
    Expired,
}

/// A user as the service account reads them.
#[derive(Debug, Clone)]
pub struct Found {
    pub user: User,
    /// Locked or disabled, as the entry's attributes say.
    pub locked: bool,
}

pub struct LdapDirectory {
    config: LdapConfig,
    bind_password: zeroize::Zeroizing<String>,
    settings: LdapConnSettings,
    /// Service-account connections, bound, ready to search.
    pool: Mutex<Vec<Ldap>>,
}

impl LdapDirectory {
    pub fn new(config: &LdapConfig) -> Result<Self, String> {
        let password =
            read_secret("directory.ldap.bind_password", config.bind_password_env.as_deref(), config.bind_password_file.as_deref())?;
        let mut settings =
            LdapConnSettings::new().set_conn_timeout(Duration::from_secs(config.connect_timeout as u64)).set_starttls(config.starttls);
        if let Some(file) = &config.ca_file {
            settings = settings.set_config(Arc::new(tls_config(file)?));
        }
        Ok(Self { config: config.clone(), bind_password: zeroize::Zeroizing::new(password), settings, pool: Mutex::new(Vec::new()) })
    }

    /// Checks a user name and password against the directory.
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<Verdict, LdapError> {
        // An empty password would be an unauthenticated bind, which succeeds
        // (RFC 4513 5.1.2): it is never sent.
        if username.is_empty() || username.len() > MAX_USERNAME_BYTES || password.is_empty() {
            return Ok(Verdict::Wrong);
        }
        let found = self.find(username).await?;
        let dn = match &found {
            Some((dn, _)) => dn.clone(),
            None => format!("{DECOY_DN_RDN},{}", self.config.base_dn),
        };
        let verdict = self.bind_as(&dn, password).await?;
        let Some((dn, found)) = found else {
            return Ok(Verdict::Wrong);
        };
        Ok(match verdict {
            Bound::Yes if found.locked => Verdict::Locked,
            Bound::Yes => {
                let mut user = found.user;
                user.groups = self.groups_of(&dn, user.groups).await?;
                Verdict::Accepted(user)
            }
            Bound::No => Verdict::Wrong,
            Bound::Locked => Verdict::Locked,
            Bound::Expired => Verdict::Expired,
        })
    }

    /// The user named `username` as the directory holds them now, with
    /// their groups; None when there is no such user.
    pub async fn lookup(&self, username: &str) -> Result<Option<Found>, LdapError> {
        let Some((dn, mut found)) = self.find(username).await? else {
            return Ok(None);
        };
        found.user.groups = self.groups_of(&dn, found.user.groups).await?;
        Ok(Some(found))
    }

    /// The entry the filter finds for `username`: exactly one, or none.
    async fn find(&self, username: &str) -> Result<Option<(String, Found)>, LdapError> {
        let filter = self.config.user_filter.replace("{username}", &ldap_escape(username));
        let attributes = &self.config.attributes;
        let wanted = [
            attributes.username.as_str(),
            &attributes.display_name,
            &attributes.email,
            &attributes.phone,
            &self.config.groups.member_of,
            "pwdAccountLockedTime",
            "userAccountControl",
        ];
        let wanted: Vec<&str> = wanted.into_iter().filter(|a| !a.is_empty()).collect();
        let entries = self.with_service(|mut ldap, base| async move {
            let result = ldap.search(&base, Scope::Subtree, &filter, wanted).await;
            (ldap, result.and_then(|r| r.success()).map(|(entries, _)| entries))
        });
        let mut entries = entries.await?;
        if entries.len() != 1 {
            return Ok(None);
        }
        let entry = read_entry(entries.remove(0))?;
        let first = |name: &str| entry.attrs.get(name).and_then(|values| values.first()).cloned();
        // The name the directory holds, not the one typed (case, spaces).
        let Some(name) = first(&attributes.username) else {
            return Ok(None);
        };
        let member_of = entry.attrs.get(&self.config.groups.member_of).cloned().unwrap_or_default();
        let disabled = first("userAccountControl").and_then(|v| v.parse::<u64>().ok()).is_some_and(|flags| flags & AD_ACCOUNT_DISABLE != 0);
        let user = User {
            display_name: first(&attributes.display_name).unwrap_or_else(|| name.clone()),
            email: first(&attributes.email).unwrap_or_default(),
            phone: first(&attributes.phone),
            groups: member_of.iter().filter_map(|dn| group_name(dn)).collect(),
            username: name,
            password: String::new(),
        };
        Ok(Some((entry.dn.clone(), Found { user, locked: disabled || first("pwdAccountLockedTime").is_some() })))
    }

    /// The user's groups: those `memberOf` named, or a group search.
    async fn groups_of(&self, dn: &str, member_of: Vec<String>) -> Result<Vec<String>, LdapError> {
        let groups = &self.config.groups;
        let Some(base) = groups.base_dn.clone() else {
            return Ok(member_of);
        };
        let filter = if groups.nested {
            format!("(member:1.2.840.113556.1.4.1941:={})", ldap_escape(dn))
        } else {
            groups.filter.replace("{dn}", &ldap_escape(dn))
        };
        let entries = self
            .with_service(|mut ldap, _| async move {
                let result = ldap.search(&base, Scope::Subtree, &filter, vec!["cn"]).await;
                (ldap, result.and_then(|r| r.success()).map(|(entries, _)| entries))
            })
            .await?;
        let mut names: Vec<String> = member_of;
        for entry in entries {
            let entry = read_entry(entry)?;
            names.extend(entry.attrs.get("cn").and_then(|v| v.first()).cloned());
        }
        let mut seen = HashSet::new();
        names.retain(|name| seen.insert(name.clone()));
        Ok(names)
    }

    /// Binds as `dn` on a connection of its own, asking for the password
    /// policy's answer.
    async fn bind_as(&self, dn: &str, password: &str) -> Result<Bound, LdapError> {
        let mut ldap = self.connect().await?;
        let control = RawControl { ctype: PPOLICY.into(), crit: false, val: None };
        let result = ldap.with_controls(control).with_timeout(self.timeout()).simple_bind(dn, password).await;
        let _ = ldap.unbind().await;
        let result = result.map_err(unavailable)?;
        let policy_error = result.ctrls.iter().find(|c| c.1.ctype == PPOLICY).and_then(|c| c.1.val.as_deref()).and_then(ppolicy_error);
        Ok(match (result.rc, policy_error) {
            // changeAfterReset: the password is right, but must be changed first.
            (0, Some(2)) => Bound::Expired,
            (0, _) => Bound::Yes,
            (49, Some(0)) => Bound::Expired,
            (49, Some(1)) => Bound::Locked,
            (49, None) => ad_diagnostic(&result.text),
            (49 | 50 | 53, _) => Bound::No,
            (rc, _) => return Err(LdapError::Unavailable(format!("bind answered {rc}"))),
        })
    }

    /// Runs `op` on a pooled service-account connection (bound first when
    /// new); the connection goes back to the pool when `op` succeeded.
    async fn with_service<T, F, Fut>(&self, op: F) -> Result<T, LdapError>
    where
        F: FnOnce(Ldap, String) -> Fut,
        Fut: std::future::Future<Output = (Ldap, ldap3::result::Result<T>)>,
    {
        let pooled = self.pool.lock().await.pop();
        let mut ldap = match pooled {
            Some(ldap) => ldap,
            None => self.service_connection().await?,
        };
        ldap.with_timeout(self.timeout());
        let (ldap, result) = op(ldap, self.config.base_dn.clone()).await;
        let value = result.map_err(unavailable)?;
        let mut pool = self.pool.lock().await;
        if pool.len() < self.config.pool {
            pool.push(ldap);
        }
        Ok(value)
    }

    async fn service_connection(&self) -> Result<Ldap, LdapError> {
        let mut ldap = self.connect().await?;
        let bound = ldap.with_timeout(self.timeout()).simple_bind(&self.config.bind_dn, &self.bind_password).await.map_err(unavailable)?;
        if bound.rc != 0 {
            return Err(LdapError::Unavailable(format!("the service account's bind answered {}", bound.rc)));
        }
        Ok(ldap)
    }

    async fn connect(&self) -> Result<Ldap, LdapError> {
        let (connection, ldap) =
            LdapConnAsync::from_url_with_settings(self.settings.clone(), &self.config.url).await.map_err(unavailable)?;
        ldap3::drive!(connection);
        Ok(ldap)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout as u64)
    }

    /// Forgets the pooled connections (after the directory failed).
    pub async fn drop_connections(&self) {
        self.pool.lock().await.clear();
    }
}

/// What a bind told of the password and the account.
enum Bound {
    Yes,
    No,
    Locked,
    Expired,
}

/// An entry's attributes. ldap3 panics on an entry it cannot parse: a
/// broken (or hostile) directory's answer is an error instead.
fn read_entry(raw: ldap3::ResultEntry) -> Result<SearchEntry, LdapError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(raw)))
        .map_err(|_| LdapError::Unavailable("the directory sent an entry that cannot be read".into()))
}

fn unavailable(error: ldap3::LdapError) -> LdapError {
    LdapError::Unavailable(error.to_string())
}

/// Active Directory's reason in an invalidCredentials answer's text.
fn ad_diagnostic(text: &str) -> Bound {
    let code = text.split("data ").nth(1).map(|rest| rest.chars().take_while(char::is_ascii_hexdigit).collect::<String>());
    match code.as_deref() {
        // Expired password; must be reset.
        Some("532" | "773") => Bound::Expired,
        // Disabled; expired account; locked out.
        Some("533" | "701" | "775") => Bound::Locked,
        _ => Bound::No,
    }
}

/// The `error` of a password policy response control: `SEQUENCE {
/// warning [0] ... OPTIONAL, error [1] ENUMERATED OPTIONAL }`.
fn ppolicy_error(value: &[u8]) -> Option<u8> {
    let (&0x30, rest) = value.split_first()? else {
        return None;
    };
    let (length, mut inner) = ber_length(rest)?;
    inner = inner.get(..length)?;
    while let Some((&tag, rest)) = inner.split_first() {
        let (length, rest) = ber_length(rest)?;
        let content = rest.get(..length)?;
        if tag == 0x81 && length == 1 {
            return Some(content[0]);
        }
        inner = &rest[length..];
    }
    None
}

/// A BER length and what follows it.
fn ber_length(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    if first < 0x80 {
        return Some((first as usize, rest));
    }
    let count = (first & 0x7f) as usize;
    if count == 0 || count > 4 || rest.len() < count {
        return None;
    }
    let length = rest[..count].iter().fold(0usize, |n, b| (n << 8) | *b as usize);
    Some((length, &rest[count..]))
}

/// A group's name: the value of the first RDN of its DN (`cn=admins,...`).
fn group_name(dn: &str) -> Option<String> {
    let first = dn.split(',').next()?;
    let (_, value) = first.split_once('=')?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// A TLS client trusting the CA file's certificates.
fn tls_config(file: &std::path::Path) -> Result<tokio_rustls::rustls::ClientConfig, String> {
    let pem = std::fs::read(file).map_err(|e| format!("directory.ldap.ca_file {}: {e}", file.display()))?;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
        let certificate = certificate.map_err(|e| format!("directory.ldap.ca_file {}: {e}", file.display()))?;
        roots.add(certificate).map_err(|e| format!("directory.ldap.ca_file {}: {e}", file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("directory.ldap.ca_file {}: no certificate in it", file.display()));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("directory.ldap TLS: {e}"))
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_errors_are_read() {
        // error [1] = passwordExpired (0), accountLocked (1), changeAfterReset (2).
        assert_eq!(ppolicy_error(&[0x30, 0x03, 0x81, 0x01, 0x00]), Some(0));
        assert_eq!(ppolicy_error(&[0x30, 0x03, 0x81, 0x01, 0x01]), Some(1));
        // A warning first (timeBeforeExpiration), then the error.
        assert_eq!(ppolicy_error(&[0x30, 0x08, 0xa0, 0x03, 0x80, 0x01, 0x10, 0x81, 0x01, 0x02]), Some(2));
        assert_eq!(ppolicy_error(&[0x30, 0x05, 0xa0, 0x03, 0x80, 0x01, 0x10]), None);
        for broken in [&[][..], &[0x30], &[0x30, 0x09, 0x81], &[0x04, 0x00], &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]] {
            assert_eq!(ppolicy_error(broken), None, "{broken:?}");
        }
    }

    #[test]
    fn active_directory_reasons_are_read() {
        let text = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 533, v2580";
        assert!(matches!(ad_diagnostic(text), Bound::Locked));
        assert!(matches!(ad_diagnostic(&text.replace("533", "532")), Bound::Expired));
        assert!(matches!(ad_diagnostic(&text.replace("533", "52e")), Bound::No));
        assert!(matches!(ad_diagnostic("invalid credentials"), Bound::No));
    }

    #[test]
    fn group_names_are_the_first_rdn() {
        assert_eq!(group_name("cn=admins,ou=groups,dc=example,dc=com").as_deref(), Some("admins"));
        assert_eq!(group_name("CN=Domain Users,CN=Users,DC=corp,DC=example").as_deref(), Some("Domain Users"));
        assert_eq!(group_name("garbage"), None);
    }
}
