//! Who may sign in, and their first factor: the users file, or an LDAP
//! directory whose users are learned as they sign in and read again at an
//! interval.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use argon2::password_hash::{self, Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, UnixTime};
use crate::config::Config;
use crate::config::ConfigError;
use crate::config::DirectoryKind;
use crate::crypto::Secrets;
use crate::directory::ldap::LdapDirectory;
use crate::directory::oidc::OidcDirectory;

/// No user name is longer, so a longer one can be refused before it is
/// counted or hashed.
pub const MAX_USERNAME_BYTES: usize = 128;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    pub display_name: String,
    pub email: String,
    /// A phone number the page to add a phone offers first (it is still
    /// verified with a code).
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// An argon2id PHC string from `stepgate hash-password`.
    pub password: String,
}

impl User {
    /// A keyed hash of the stored password hash: it changes when the
    /// password does, and tells nothing about the hash without the key.
    pub fn password_fingerprint(&self, secrets: &Secrets) -> String {
        secrets.mac("password-fingerprint", &self.password)
    }
}

/// What a session keeps of an LDAP or OpenID user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalUser {
    pub display_name: String,
    pub email: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl ExternalUser {
    pub fn of(user: &User) -> Self {
        Self { display_name: user.display_name.clone(), email: user.email.clone(), groups: user.groups.clone() }
    }

    pub fn to_user(&self, username: &str) -> User {
        User {
            username: username.to_string(),
            display_name: self.display_name.clone(),
            email: self.email.clone(),
            phone: None,
            groups: self.groups.clone(),
            password: String::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<User>,
}

/// The users, by user name.
#[derive(Default)]
pub struct Directory {
    users: crate::FastMap<String, Arc<User>>,
    /// Verified against when the user name is unknown, so that a wrong name
    /// costs the same time as a wrong password.
    decoy_hash: String,
    /// The LDAP directory or OpenID provider, when users live there instead.
    external: Option<External>,
}

/// Where users live instead of the users file.
enum Source {
    Ldap(Arc<LdapDirectory>),
    /// Users are known from their ID tokens only: there is nothing to ask again.
    Oidc(Arc<OidcDirectory>),
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("users", &self.users.len()).field("external", &self.external.is_some()).finish()
    }
}

/// An external directory and the users learned from it.
struct External {
    source: Source,
    clock: Arc<dyn Clock>,
    /// How long a learned user is served before it is read again.
    recheck: i64,
    learned: RwLock<HashMap<String, Learned>>,
}

/// A user as the directory last described them; None: no longer a user
/// who may sign in (gone, locked or disabled).
struct Learned {
    user: Option<Arc<User>>,
    checked: UnixTime,
}

/// A signed-in user as the directory has them now.
pub enum Current {
    User(Arc<User>),
    /// No longer a user who may sign in: not listed, locked or disabled.
    Gone,
    /// Never seen here, and the directory does not answer.
    Unknown,
}

/// After the directory failed to answer a re-check, the next try waits this long.
const RECHECK_RETRY_SECS: i64 = 30;

impl Directory {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let file: UsersFile = toml::from_str(text).map_err(|e| ConfigError::from_toml(text, &shown, e))?;
        let mut users = crate::FastMap::default();
        for user in file.users {
            check_user(&user).map_err(|message| ConfigError::Other { path: shown.clone(), message })?;
            let name = user.username.clone();
            if users.insert(name.clone(), Arc::new(user)).is_some() {
                return Err(ConfigError::Other { path: shown, message: format!("user `{name}` is listed twice") });
            }
        }
        Ok(Self { users, decoy_hash: hash_password(&crate::crypto::random_token()), external: None })
    }

    /// The directory the configuration names: the users file, or LDAP.
    pub fn for_config(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        let other = |message: String| ConfigError::Other { path: "[directory]".into(), message };
        let directory = &config.directory;
        match (directory.kind, &directory.ldap, &directory.oidc, &config.users_file) {
            (DirectoryKind::Ldap, Some(ldap), _, _) => {
                let source = Source::Ldap(Arc::new(LdapDirectory::new(ldap).map_err(other)?));
                Ok(Self::external(source, clock, ldap.recheck))
            }
            (DirectoryKind::Oidc, _, Some(oidc), _) => {
                let source = Source::Oidc(Arc::new(OidcDirectory::new(oidc, clock.clone()).map_err(other)?));
                Ok(Self::external(source, clock, i64::MAX))
            }
            (DirectoryKind::File, _, _, Some(file)) => Self::load(file),
            _ => Err(other("the directory's settings are incomplete".into())),
        }
    }

    /// A directory of the LDAP server's or the provider's users, who are
    /// learned as they sign in.
    fn external(source: Source, clock: Arc<dyn Clock>, recheck: i64) -> Self {
        let external = External { source, clock, recheck, learned: RwLock::new(HashMap::new()) };
        Self { users: crate::FastMap::default(), decoy_hash: String::new(), external: Some(external) }
    }

    /// The LDAP directory, when users live there.
    pub fn ldap_directory(&self) -> Option<&Arc<LdapDirectory>> {
        match &self.external.as_ref()?.source {
            Source::Ldap(directory) => Some(directory),
            Source::Oidc(_) => None,
        }
    }

    /// The OpenID provider, when users sign in there.
    pub fn oidc_provider(&self) -> Option<&Arc<OidcDirectory>> {
        match &self.external.as_ref()?.source {
            Source::Oidc(provider) => Some(provider),
            Source::Ldap(_) => None,
        }
    }

    /// A user of the users file, or one learned from the directory.
    pub fn get(&self, username: &str) -> Option<Arc<User>> {
        if let Some(user) = self.users.get(username) {
            return Some(user.clone());
        }
        let ldap = self.external.as_ref()?;
        let learned = ldap.learned.read().unwrap_or_else(PoisonError::into_inner);
        learned.get(username).and_then(|learned| learned.user.clone())
    }

    /// A user as [`Directory::get`], with a directory's user read again
    /// once their entry is older than the re-check interval (or unknown
    /// here, signed in on another instance). While the directory does not
    /// answer, what was learned stands.
    pub async fn current(&self, username: &str) -> Current {
        let Some(ldap) = &self.external else {
            return self.users.get(username).cloned().map_or(Current::Gone, Current::User);
        };
        let Source::Ldap(directory) = &ldap.source else {
            let learned = ldap.learned.read().unwrap_or_else(PoisonError::into_inner);
            return learned.get(username).and_then(|entry| entry.user.clone()).map_or(Current::Unknown, Current::User);
        };
        let now = ldap.clock.now();
        {
            let learned = ldap.learned.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = learned.get(username).filter(|entry| now - entry.checked < ldap.recheck) {
                return entry.user.clone().map_or(Current::Gone, Current::User);
            }
        }
        let stale = {
            let mut learned = ldap.learned.write().unwrap_or_else(PoisonError::into_inner);
            match learned.get_mut(username) {
                Some(entry) if now - entry.checked < ldap.recheck => return entry.user.clone().map_or(Current::Gone, Current::User),
                // Claimed for this request: the others serve what was learned meanwhile.
                Some(entry) => {
                    entry.checked = now;
                    Some(entry.user.clone())
                }
                None => None,
            }
        };
        match directory.lookup(username).await {
            Ok(found) => {
                let user = found.filter(|found| !found.locked).map(|found| Arc::new(found.user));
                self.learn_as(username, user.clone(), now);
                user.map_or(Current::Gone, Current::User)
            }
            Err(e) => {
                tracing::warn!(error = %e, user = %username, "could not read a user from the directory again");
                directory.drop_connections().await;
                let retry = now - ldap.recheck + RECHECK_RETRY_SECS;
                match stale {
                    Some(user) => {
                        self.learn_as(username, user.clone(), retry);
                        user.map_or(Current::Gone, Current::User)
                    }
                    None => Current::Unknown,
                }
            }
        }
    }

    /// Remembers a user the directory just described (at sign-in).
    pub fn learn(&self, user: User) -> Arc<User> {
        let user = Arc::new(user);
        if let Some(ldap) = &self.external {
            self.learn_as(&user.username.clone(), Some(user.clone()), ldap.clock.now());
        }
        user
    }

    fn learn_as(&self, username: &str, user: Option<Arc<User>>, checked: UnixTime) {
        if let Some(ldap) = &self.external {
            let mut learned = ldap.learned.write().unwrap_or_else(PoisonError::into_inner);
            learned.insert(username.to_string(), Learned { user, checked });
        }
    }

    /// The fingerprint a new session of `username` keeps: for users of the
    /// users file only (a directory's users are re-checked instead).
    pub fn password_fingerprint(&self, username: &str, secrets: &Secrets) -> Option<String> {
        self.users.get(username).map(|user| user.password_fingerprint(secrets))
    }

    /// Whether sessions without a password fingerprint may live: those of
    /// a directory's users.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// Every user, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<User>> {
        self.users.values()
    }

    /// Every user's [`User::password_fingerprint`], by user name.
    pub fn password_fingerprints(&self, secrets: &Secrets) -> crate::FastMap<String, String> {
        self.users.iter().map(|(name, user)| (name.clone(), user.password_fingerprint(secrets))).collect()
    }

    pub fn from_users(users: Vec<User>) -> Self {
        Self {
            users: users.into_iter().map(|u| (u.username.clone(), Arc::new(u))).collect(),
            decoy_hash: hash_password(&crate::crypto::random_token()),
            external: None,
        }
    }

    /// Checks a user name and password. Slow on purpose (argon2id): call it
    /// from a blocking thread.
    pub fn authenticate(&self, username: &str, password: &str) -> Option<Arc<User>> {
        match self.users.get(username) {
            Some(user) if verify_password(&user.password, password) => Some(user.clone()),
            Some(_) => None,
            None => {
                verify_password(&self.decoy_hash, password);
                None
            }
        }
    }
}

fn check_user(user: &User) -> Result<(), String> {
    let name = &user.username;
    let name_ok = !name.is_empty() && name.len() <= MAX_USERNAME_BYTES && name.chars().all(|c| c.is_alphanumeric() || "._-@+".contains(c));
    if !name_ok {
        return Err(format!("invalid user name `{name}`: use letters, digits and . _ - @ +"));
    }
    match PasswordHash::new(&user.password) {
        Ok(hash) if hash.algorithm.as_str() == "argon2id" => Ok(()),
        _ => Err(format!("user `{name}`: password must be an argon2id PHC string (see `stepgate hash-password`)")),
    }
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&crate::crypto::random_bytes::<16>()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .expect("argon2 with default parameters hashes any password")
}

thread_local! {
    /// The memory argon2 works in (19 MiB with the default parameters), kept
    /// by each thread that checks passwords. Taking it from the allocator
    /// and handing it back at every check fragments the heap: under a burst
    /// of sign-ins the process grew by hundreds of MiB it never gave back.
    static WORK_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Whether `password` matches an argon2 PHC string, as argon2's own
/// verifier decides, but hashing in this thread's kept memory.
fn verify_password(phc: &str, password: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let (Ok(argon2), Ok(salt)) = (hasher_for(&hash), salt.decode_b64(&mut salt_bytes)) else {
        return false;
    };
    let computed = Output::init_with(expected.len(), |out| {
        WORK_MEMORY.with_borrow_mut(|memory| {
            memory.resize(argon2.params().block_count(), Block::default());
            Ok(argon2.hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..])?)
        })
    });
    // `Output` compares in constant time.
    computed.is_ok_and(|computed| computed == expected)
}

/// The argon2 instance a PHC string names: algorithm, version, parameters.
fn hasher_for(hash: &PasswordHash<'_>) -> password_hash::Result<Argon2<'static>> {
    let algorithm = Algorithm::try_from(hash.algorithm)?;
    let version = hash.version.map(Version::try_from).transpose()?.unwrap_or_default();
    Ok(Argon2::new(algorithm, version, Params::try_from(hash)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str) -> User {
        User {
            username: name.into(),
            display_name: name.into(),
            email: format!("{name}@example.com"),
            phone: None,
            groups: vec![],
            password: hash_password(password),
        }
    }

    #[test]
    fn authenticates_only_the_right_password() {
        let dir = Directory::from_users(vec![user("alice", "correct horse")]);
        assert!(dir.authenticate("alice", "correct horse").is_some());
        assert!(dir.authenticate("alice", "wrong").is_none());
        assert!(dir.authenticate("mallory", "correct horse").is_none());
    }

    #[test]
    fn verifies_as_argon2_does_whatever_the_parameters() {
        use argon2::password_hash::PasswordVerifier;
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(1024, 2, 1, Some(24)).unwrap());
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        for phc in [hash_password("correct horse"), small.hash_password(b"correct horse", &salt).unwrap().to_string()] {
            let parsed = PasswordHash::new(&phc).unwrap();
            assert!(verify_password(&phc, "correct horse"));
            assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
            assert!(!verify_password(&phc, "correct horsf"));
        }
        assert!(!verify_password("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$", "x"), "no hash part");
        assert!(!verify_password("not a phc string", "x"));
    }

    #[test]
    fn rejects_plain_passwords_and_unknown_keys() {
        let plain = "[[users]]\nusername='a'\ndisplay_name='A'\nemail='a@x'\npassword='hunter2'\n";
        let err = Directory::parse(plain, Path::new("users.toml")).unwrap_err().to_string();
        assert!(err.contains("argon2id"), "{err}");
        let unknown = "[[users]]\nusername='a'\nadmin=true\n";
        let err = Directory::parse(unknown, Path::new("users.toml")).unwrap_err().to_string();
        assert!(err.contains("users.toml:3"), "{err}");
    }
}
