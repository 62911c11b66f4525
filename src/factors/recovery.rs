//! Single-use recovery codes: the way back in when a device is lost.
//!
//! Codes are random letters from an alphabet without look-alikes, grouped
//! with dashes for reading. Only a keyed hash of each is stored; with 50
//! or more bits per code and throttled guesses, a fast hash is enough.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cache::{Cache, CacheError};
use crate::clock::Clock;
use crate::config::RecoveryCodesConfig;
use crate::crypto::{random_bytes, sha256, Secrets};
use crate::store::{Store, StoreError};

/// Crockford's base32 alphabet (no i, l, o, u): 5 bits a character.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const GROUP: usize = 5;
/// New codes can be shown this long to the session they were made for,
/// until the user says they saved them.
const REVEAL_SECS: i64 = 600;

/// A new set waiting to be shown: to which session, and the codes. Kept in
/// the shared cache (sealed there), so that every instance can show it.
#[derive(Serialize, Deserialize)]
struct Reveal {
    session: [u8; 32],
    codes: Vec<String>,
}

impl Drop for Reveal {
    fn drop(&mut self) {
        self.codes.iter_mut().for_each(zeroize::Zeroize::zeroize);
    }
}

pub struct RecoveryCodes {
    store: Arc<dyn Store>,
    secrets: Arc<Secrets>,
    clock: Arc<dyn Clock>,
    config: RecoveryCodesConfig,
    /// The reveals, by user name: a new set makes the user's older one
    /// worthless, so only the newest waits, and there are never more than
    /// users.
    cache: Arc<dyn Cache>,
}

impl RecoveryCodes {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        secrets: Arc<Secrets>,
        clock: Arc<dyn Clock>,
        config: RecoveryCodesConfig,
    ) -> Self {
        Self { store, secrets, clock, config, cache }
    }

    /// Keeps the user's new set for the session (by key) to be shown.
    pub async fn hold_for_reveal(&self, session: [u8; 32], username: &str, codes: Vec<String>) -> Result<(), CacheError> {
        let reveal = Reveal { session, codes };
        let value = serde_json::to_vec(&reveal).map_err(|e| CacheError::Corrupt(e.to_string()))?;
        self.cache.put(&self.reveal_key(username), value, REVEAL_SECS).await
    }

    /// The user's new set, if it waits to be shown to this session. Showing
    /// it spends nothing: it stays until [`Self::dismiss_reveal`] or expiry.
    pub async fn reveal(&self, session: [u8; 32], username: &str) -> Result<Option<Vec<Zeroizing<String>>>, CacheError> {
        let reveal = self.waiting(username).await?.filter(|reveal| reveal.session == session);
        Ok(reveal.map(|reveal| reveal.codes.iter().map(|code| Zeroizing::new(code.clone())).collect()))
    }

    /// Forgets the set shown to this session: the user saved it.
    pub async fn dismiss_reveal(&self, session: [u8; 32], username: &str) -> Result<(), CacheError> {
        if self.waiting(username).await?.is_some_and(|reveal| reveal.session == session) {
            self.cache.remove(&self.reveal_key(username)).await?;
        }
        Ok(())
    }

    async fn waiting(&self, username: &str) -> Result<Option<Reveal>, CacheError> {
        let Some(value) = self.cache.get(&self.reveal_key(username)).await? else {
            return Ok(None);
        };
        let value = Zeroizing::new(value);
        serde_json::from_slice(&value).map(Some).map_err(|e| CacheError::Corrupt(format!("a recovery-code reveal: {e}")))
    }

    /// The cache key of a user's reveal: a keyed hash, so that user names
    /// never appear in the shared cache.
    fn reveal_key(&self, username: &str) -> String {
        let digest = sha256(self.secrets.mac("recovery-code reveal", username).as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("recovery-reveal:{hex}")
    }

    /// A new set for the user, replacing (and so invalidating) any old
    /// one. The codes are returned once, to be shown; only hashes are kept.
    pub async fn generate(&self, username: &str) -> Result<Vec<String>, StoreError> {
        let codes: Vec<String> = (0..self.config.count.0).map(|_| new_code(self.config.length.0)).collect();
        let hashes: Vec<[u8; 32]> = codes.iter().map(|code| self.hash(username, code)).collect();
        self.store.replace_recovery_codes(username, &hashes, self.clock.now()).await?;
        Ok(codes)
    }

    /// Spends one of the user's codes; false when it is not an unused one.
    pub async fn redeem(&self, username: &str, code: &str) -> Result<bool, StoreError> {
        let normalized = normalize(code);
        if normalized.len() != self.config.length.0 {
            return Ok(false);
        }
        self.store.use_recovery_code(username, &self.hash(username, &normalized), self.clock.now()).await
    }

    /// How many unused codes the user has.
    pub async fn left(&self, username: &str) -> Result<u32, StoreError> {
        Ok(self.store.recovery_codes_left(username).await?.0)
    }

    /// Whether the user was ever given a set (used up or not).
    pub async fn has_set(&self, username: &str) -> Result<bool, StoreError> {
        Ok(self.store.recovery_codes_left(username).await?.1.is_some())
    }

    fn hash(&self, username: &str, code: &str) -> [u8; 32] {
        let mac = self.secrets.mac("recovery-code", &format!("{username}\n{}", normalize(code)));
        sha256(mac.as_bytes())
    }
}

/// A code as typed: any case, with or without dashes and spaces, and with
/// the letters that look like digits read as those digits.
fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\t'))
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        })
        .collect()
}

fn new_code(length: usize) -> String {
    let letters: Vec<char> = random_letters(length);
    letters.chunks(GROUP).map(|group| group.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

fn random_letters(length: usize) -> Vec<char> {
    let mut letters = Vec::with_capacity(length);
    while letters.len() < length {
        // 32 letters: each random byte's low five bits pick one, without bias.
        for byte in random_bytes::<32>() {
            if letters.len() == length {
                break;
            }
            letters.push(ALPHABET[usize::from(byte & 31)] as char);
        }
    }
    letters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_and_normalize_back() {
        let code = new_code(10);
        assert_eq!(code.len(), 11, "{code}");
        assert_eq!(code.as_bytes()[5], b'-');
        assert!(normalize(&code).bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(normalize(" ABCDE-fghjk "), "abcdefghjk");
        assert_eq!(normalize("oil"), "011");
    }

    async fn recovery_codes(dir: &std::path::Path) -> RecoveryCodes {
        let store = crate::store::SqliteStore::open(dir).await.unwrap();
        let secrets = Arc::new(Secrets::from_master(&[1; 32]));
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::ManualClock::new());
        let cache = Arc::new(crate::cache::MemoryCache::new(clock.clone()));
        RecoveryCodes::new(Arc::new(store), cache, secrets, clock, RecoveryCodesConfig::default())
    }

    #[tokio::test]
    async fn a_reveal_is_never_crowded_out() {
        let dir = tempfile::tempdir().unwrap();
        let recovery = recovery_codes(dir.path()).await;
        // More users than the old fixed limit, each with a set waiting.
        for n in 0..10_001u32 {
            recovery.hold_for_reveal([0; 32], &format!("user{n}"), vec![format!("code{n}")]).await.unwrap();
        }
        let shown = recovery.reveal([0; 32], "user10000").await.unwrap().expect("the newest set is shown");
        assert_eq!(shown[0].as_str(), "code10000");
        // One user's sets replace each other: only the newest is worth showing.
        recovery.hold_for_reveal([1; 32], "alice", vec!["old".into()]).await.unwrap();
        recovery.hold_for_reveal([2; 32], "alice", vec!["new".into()]).await.unwrap();
        assert!(recovery.reveal([1; 32], "alice").await.unwrap().is_none());
        assert_eq!(recovery.reveal([2; 32], "alice").await.unwrap().unwrap()[0].as_str(), "new");
        assert!(recovery.reveal([2; 32], "bob").await.unwrap().is_none(), "only to the user it was made for");
        recovery.dismiss_reveal([1; 32], "alice").await.unwrap();
        assert!(recovery.reveal([2; 32], "alice").await.unwrap().is_some(), "another session cannot dismiss it");
        recovery.dismiss_reveal([2; 32], "alice").await.unwrap();
        assert!(recovery.reveal([2; 32], "alice").await.unwrap().is_none());
    }

    #[test]
    fn codes_differ() {
        assert_ne!(new_code(10), new_code(10));
    }
}
