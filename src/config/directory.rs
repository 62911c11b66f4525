//! `[directory]`: where users and their first factor come from: the users
//! file (the default), an LDAP directory (OpenLDAP, Active Directory,
//! FreeIPA), or an OpenID Connect provider (Entra ID, Okta, Keycloak).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::values;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryKind {
    #[default]
    File,
    Ldap,
    Oidc,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    #[serde(default)]
    pub kind: DirectoryKind,
    pub ldap: Option<LdapConfig>,
    pub oidc: Option<OidcConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer; its discovery document is read from
    /// `{issuer}/.well-known/openid-configuration`. Kept as written: the
    /// ID token's `iss` must equal it exactly.
    pub issuer: String,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// Where the provider sends the browser back: this gateway's
    /// `/.stepgate/oidc/callback` on the host where sign-in completes,
    /// registered with the provider.
    pub redirect_uri: url::Url,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: OidcClaims,
    /// Also read the UserInfo endpoint (some providers put the groups, or
    /// every profile claim, only there); its claims win over the ID token's.
    #[serde(default)]
    pub userinfo: bool,
    /// A second factor the provider performed (its `amr` names one, or
    /// its `acr` is one of `mfa_acr_values`) counts as the gateway's own.
    #[serde(default)]
    pub trust_provider_mfa: bool,
    /// `acr` values that mean the provider did multi-factor authentication.
    #[serde(default)]
    pub mfa_acr_values: Vec<String>,
    /// A rule's step-up (`max_age`) is done at the provider: the user signs
    /// in there again (`prompt=login`, `max_age=0`), with a second factor.
    /// Needs `trust_provider_mfa`.
    #[serde(default)]
    pub step_up_at_provider: bool,
    /// After signing out here, send the browser to the provider's
    /// end-session endpoint (RP-initiated logout), which sends it back here.
    pub post_logout_redirect_uri: Option<url::Url>,
    #[serde(default = "default_timeout", with = "values::duration")]
    pub timeout: i64,
}

/// Which ID token claims hold what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcClaims {
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub groups: String,
}

impl Default for OidcClaims {
    fn default() -> Self {
        Self { username: "preferred_username".into(), display_name: "name".into(), email: "email".into(), groups: "groups".into() }
    }
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://host:636` or `ldap://host:389` (with `starttls = true`
    /// unless the server is on this machine).
    pub url: url::Url,
    #[serde(default)]
    pub starttls: bool,
    /// CA certificates (PEM) the server's certificate chains to, besides
    /// the system's.
    pub ca_file: Option<PathBuf>,
    /// The service account that searches for users.
    pub bind_dn: String,
    pub bind_password_env: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched for (the whole subtree).
    pub base_dn: String,
    /// The search filter; `{username}` is replaced by the typed name with
    /// every filter metacharacter escaped (RFC 4515).
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    #[serde(default)]
    pub attributes: LdapAttributes,
    #[serde(default)]
    pub groups: LdapGroups,
    #[serde(default = "default_connect_timeout", with = "values::duration")]
    pub connect_timeout: i64,
    /// Each search and bind.
    #[serde(default = "default_timeout", with = "values::duration")]
    pub timeout: i64,
    /// Service-account connections kept open.
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// How often a signed-in user's groups and account state are read again.
    #[serde(default = "default_recheck", with = "values::duration")]
    pub recheck: i64,
}

/// Which attributes hold what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapAttributes {
    /// The user name as stepgate knows it (and shows it to apps).
    pub username: String,
    pub display_name: String,
    pub email: String,
    /// Offered first when the user adds a phone (still verified by a code).
    pub phone: String,
}

impl Default for LdapAttributes {
    fn default() -> Self {
        Self { username: "uid".into(), display_name: "cn".into(), email: "mail".into(), phone: "mobile".into() }
    }
}

/// How a user's groups are found; a group is named by its `cn`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapGroups {
    /// The user's attribute that lists the DNs of their groups
    /// (`memberOf`); empty to search instead.
    pub member_of: String,
    /// Search here for groups, with `filter` (`{dn}` is the user's DN).
    pub base_dn: Option<String>,
    pub filter: String,
    /// Active Directory: groups within groups count
    /// (`LDAP_MATCHING_RULE_IN_CHAIN`).
    pub nested: bool,
}

impl Default for LdapGroups {
    fn default() -> Self {
        Self { member_of: "memberOf".into(), base_dn: None, filter: "(member={dn})".into(), nested: false }
    }
}

fn default_user_filter() -> String {
    "(uid={username})".into()
}

fn default_connect_timeout() -> i64 {
    5
}

fn default_timeout() -> i64 {
    5
}

fn default_pool() -> usize {
    4
}

fn default_recheck() -> i64 {
    300
}

impl DirectoryConfig {
    /// `passwordless`: whether `[webauthn] passwordless` is on.
    pub(super) fn check(&self, users_file: Option<&Path>, passwordless: bool) -> Result<(), String> {
        if self.kind == DirectoryKind::Oidc && passwordless {
            // A passkey alone would sign users in without the provider, which decides who may.
            return Err("webauthn.passwordless cannot be on with directory.kind = \"oidc\": users sign in at the provider".into());
        }
        if self.kind != DirectoryKind::Ldap && self.ldap.is_some() {
            return Err("[directory.ldap] is set but directory.kind is not \"ldap\"".into());
        }
        if self.kind != DirectoryKind::Oidc && self.oidc.is_some() {
            return Err("[directory.oidc] is set but directory.kind is not \"oidc\"".into());
        }
        match (self.kind, &self.ldap, &self.oidc) {
            (DirectoryKind::File, _, _) if users_file.is_none() => Err("users_file is required with the users file directory".into()),
            (DirectoryKind::File, _, _) => Ok(()),
            (DirectoryKind::Ldap, None, _) => Err("directory.kind = \"ldap\" needs [directory.ldap]".into()),
            (DirectoryKind::Ldap, Some(ldap), _) => ldap.check(),
            (DirectoryKind::Oidc, _, None) => Err("directory.kind = \"oidc\" needs [directory.oidc]".into()),
            (DirectoryKind::Oidc, _, Some(oidc)) => oidc.check(),
        }
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(file) = self.oidc.as_mut().and_then(|oidc| oidc.client_secret_file.as_mut()) {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        if let Some(ldap) = &mut self.ldap {
            for file in [ldap.ca_file.as_mut(), ldap.bind_password_file.as_mut()].into_iter().flatten() {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
    }
}

impl OidcConfig {
    fn check(&self) -> Result<(), String> {
        let issuer = url::Url::parse(&self.issuer).map_err(|e| format!("directory.oidc.issuer: {e}"))?;
        for (key, url) in [("issuer", &issuer), ("redirect_uri", &self.redirect_uri)] {
            let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if url.scheme() != "https" && !(url.scheme() == "http" && (loopback || key == "redirect_uri")) {
                return Err(format!("directory.oidc.{key} must be an https URL"));
            }
        }
        if self.redirect_uri.path() != "/.stepgate/oidc/callback" {
            return Err("directory.oidc.redirect_uri must end in /.stepgate/oidc/callback".into());
        }
        if !self.scopes.iter().any(|scope| scope == "openid") {
            return Err("directory.oidc.scopes must include openid".into());
        }
        if self.step_up_at_provider && !self.trust_provider_mfa {
            return Err("directory.oidc.step_up_at_provider needs trust_provider_mfa = true".into());
        }
        if self.client_secret_env.is_some() && self.client_secret_file.is_some() {
            return Err("directory.oidc: give only one of client_secret_env and client_secret_file".into());
        }
        Ok(())
    }
}

impl LdapConfig {
    fn check(&self) -> Result<(), String> {
        let loopback = matches!(self.url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        match self.url.scheme() {
            "ldaps" if !self.starttls => {}
            "ldaps" => return Err("directory.ldap: starttls is for ldap:// URLs; ldaps:// is TLS already".into()),
            "ldap" if self.starttls || loopback => {}
            "ldap" => return Err("directory.ldap: passwords would cross the network in clear text: use ldaps:// or starttls = true".into()),
            other => return Err(format!("directory.ldap.url: `{other}` is not ldap or ldaps")),
        }
        if !self.user_filter.contains("{username}") || !self.user_filter.starts_with('(') {
            return Err("directory.ldap.user_filter must be a filter in parentheses with {username}, e.g. (uid={username})".into());
        }
        if self.groups.member_of.is_empty() && self.groups.base_dn.is_none() {
            return Err("directory.ldap.groups: set member_of or base_dn".into());
        }
        if !self.groups.filter.contains("{dn}") {
            return Err("directory.ldap.groups.filter must contain {dn}".into());
        }
        if !(1..=32).contains(&self.pool) {
            return Err("directory.ldap.pool must be between 1 and 32".into());
        }
        if self.bind_password_env.is_some() == self.bind_password_file.is_some() {
            return Err("directory.ldap: set bind_password_env or bind_password_file".into());
        }
        Ok(())
    }
}
