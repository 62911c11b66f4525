//! The users file: who may sign in, and their first factor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::crypto::Secrets;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    pub display_name: String,
    pub email: String,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<User>,
}

/// The users, by user name.
#[derive(Debug, Default)]
pub struct Directory {
    users: HashMap<String, Arc<User>>,
    /// Verified against when the user name is unknown, so that a wrong name
    /// costs the same time as a wrong password.
    decoy_hash: String,
}

impl Directory {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let file: UsersFile = toml::from_str(text).map_err(|e| ConfigError::from_toml(text, &shown, e))?;
        let mut users = HashMap::new();
        for user in file.users {
            check_user(&user).map_err(|message| ConfigError::Other { path: shown.clone(), message })?;
            let name = user.username.clone();
            if users.insert(name.clone(), Arc::new(user)).is_some() {
                return Err(ConfigError::Other { path: shown, message: format!("user `{name}` is listed twice") });
            }
        }
        Ok(Self { users, decoy_hash: hash_password(&crate::crypto::random_token()) })
    }

    pub fn get(&self, username: &str) -> Option<&Arc<User>> {
        self.users.get(username)
    }

    /// Every user's [`User::password_fingerprint`], by user name.
    pub fn password_fingerprints(&self, secrets: &Secrets) -> HashMap<String, String> {
        self.users.iter().map(|(name, user)| (name.clone(), user.password_fingerprint(secrets))).collect()
    }

    pub fn from_users(users: Vec<User>) -> Self {
        Self {
            users: users.into_iter().map(|u| (u.username.clone(), Arc::new(u))).collect(),
            decoy_hash: hash_password(&crate::crypto::random_token()),
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
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_alphanumeric() || "._-@+".contains(c));
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

fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str) -> User {
        User {
            username: name.into(),
            display_name: name.into(),
            email: format!("{name}@example.com"),
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
    fn rejects_plain_passwords_and_unknown_keys() {
        let plain = "[[users]]\nusername='a'\ndisplay_name='A'\nemail='a@x'\npassword='hunter2'\n";
        let err = Directory::parse(plain, Path::new("users.toml")).unwrap_err().to_string();
        assert!(err.contains("argon2id"), "{err}");
        let unknown = "[[users]]\nusername='a'\nadmin=true\n";
        let err = Directory::parse(unknown, Path::new("users.toml")).unwrap_err().to_string();
        assert!(err.contains("users.toml:3"), "{err}");
    }
}
