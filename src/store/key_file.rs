//! The signing keys of the SQLite backend: `signing-keys.json` in the data
//! directory, as stepgate has always kept them, so single-node users and
//! `stepgate keys rotate` see no change. A version is the hash of the
//! file's content, so any change (a rotation by another process, an edit
//! by hand) is noticed, whatever the file system's time resolution.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{StoreError, StoredSigningKeys};
use crate::crypto::sha256;

pub const KEYS_FILE: &str = "signing-keys.json";

pub struct KeyFile {
    path: PathBuf,
    /// Makes compare-and-swap atomic within this process; across processes
    /// the file is replaced by a rename, so a reader never sees half of it.
    writing: Mutex<()>,
}

impl KeyFile {
    pub fn in_dir(data_dir: &Path) -> Self {
        Self { path: data_dir.join(KEYS_FILE), writing: Mutex::new(()) }
    }

    pub fn read(&self) -> Result<Option<StoredSigningKeys>, StoreError> {
        match std::fs::read_to_string(&self.path) {
            Ok(json) => Ok(Some(StoredSigningKeys { version: version_of(&json), json })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error(e)),
        }
    }

    pub fn save(&self, expected_version: Option<i64>, json: &str) -> Result<bool, StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.read()?.map(|keys| keys.version) != expected_version {
            return Ok(false);
        }
        self.write(json)?;
        Ok(true)
    }

    /// Writes through a temporary file and a rename, so a crash never
    /// leaves half a key file; readable by the owner alone.
    pub fn write(&self, json: &str) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("json.tmp");
        write_private(&tmp, json.as_bytes()).map_err(|e| self.io_error(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: std::io::Error) -> StoreError {
        StoreError::File(self.path.display().to_string(), e)
    }
}

fn version_of(json: &str) -> i64 {
    let digest = sha256(json.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
