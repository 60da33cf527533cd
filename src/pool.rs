//! The model pool: a content-addressed directory of trained checkpoints.
//!
//! A model's key is the SHA-256 of a JSON description of everything that decides
//! its weights (architecture, training settings, the key of the checkpoint it
//! starts from, and the data it sees). Training a model that is already in the
//! pool is a no-op, so a study can be stopped and rerun, extended with new
//! partitions or mixtures, or share one pool with other studies: cost grows with
//! new data, not with the number of mixtures scored (Na et al.).
//!
//! An entry is a directory `<root>/<key>/` holding what
//! [`Trainer::save`](datamix_decoder::Trainer::save) writes plus `spec.json`.
//! Entries appear atomically: they are written to a temporary directory that is
//! renamed into place when complete.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// File holding an entry's description.
pub const SPEC_FILE: &str = "spec.json";
/// File holding an entry's weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// A content-addressed directory of checkpoints.
#[derive(Debug, Clone)]
pub struct Pool {
    root: PathBuf,
}

/// The key of a pool entry (hex SHA-256 of its description).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PoolKey(String);

impl PoolKey {
    /// The key of any serialisable description.
    pub fn of(spec: &impl Serialize) -> Self {
        let json = serde_json::to_vec(spec).expect("descriptions serialise");
        Self(hex::encode(Sha256::digest(&json)))
    }

    /// The full hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short prefix for logs and file names.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Pool {
    /// Opens (creating if needed) a pool rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        Ok(Self { root })
    }

    /// The pool's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the entry `key` lives (whether or not it exists yet).
    pub fn dir(&self, key: &PoolKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// The weights file of entry `key`.
    pub fn weights(&self, key: &PoolKey) -> PathBuf {
        self.dir(key).join(WEIGHTS_FILE)
    }

    /// Whether the entry is complete (it only appears once fully written).
    pub fn contains(&self, key: &PoolKey) -> bool {
        self.dir(key).join(SPEC_FILE).is_file()
    }

    /// Stores an entry: `write` fills a fresh temporary directory, which is then
    /// renamed to the entry's place with `spec` as its `spec.json`. Nothing is
    /// left behind if `write` fails.
    pub fn insert(
        &self,
        key: &PoolKey,
        spec: &impl Serialize,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.root)
            .map_err(|e| Error::io(&self.root, e))?;
        write(tmp.path())?;
        let spec_path = tmp.path().join(SPEC_FILE);
        let json = serde_json::to_vec_pretty(spec).expect("descriptions serialise");
        datamix_decoder::checkpoint::write_atomic(&spec_path, &json)?;
        let dest = self.dir(key);
        if dest.exists() {
            // A concurrent writer finished first; identical content by construction.
            return Ok(dest);
        }
        let tmp_path = tmp.keep();
        std::fs::rename(&tmp_path, &dest).map_err(|e| Error::io(&dest, e))?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_field() {
        let a = PoolKey::of(&serde_json::json!({"unit": "a/0", "steps": 10}));
        let b = PoolKey::of(&serde_json::json!({"unit": "a/0", "steps": 11}));
        assert_ne!(a, b);
        assert_eq!(
            a,
            PoolKey::of(&serde_json::json!({"unit": "a/0", "steps": 10}))
        );
        assert_eq!(a.as_str().len(), 64);
    }

    #[test]
    fn insert_is_atomic_and_failed_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(dir.path().join("pool")).unwrap();
        let key = PoolKey::of(&"x");
        let err = pool.insert(&key, &"x", |_| Err(Error::Invalid("boom".into())));
        assert!(err.is_err());
        assert!(!pool.contains(&key));
        assert_eq!(std::fs::read_dir(pool.root()).unwrap().count(), 0);
        let p = pool
            .insert(&key, &"x", |d| {
                std::fs::write(d.join(WEIGHTS_FILE), b"w").map_err(|e| Error::io(d, e))
            })
            .unwrap();
        assert!(pool.contains(&key));
        assert_eq!(std::fs::read(p.join(WEIGHTS_FILE)).unwrap(), b"w");
    }
}
