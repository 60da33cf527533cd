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
//! [`Trainer::save`](datamix_decoder::Trainer::save) writes plus `spec.json` and
//! `integrity.json` (length and BLAKE3 hash of every other file). Entries appear
//! atomically: they are written to a temporary directory (named after this host and
//! process, see [`datamix_partition::leftovers`]) that is renamed into place when complete;
//! temporary directories of killed runs are removed by [`Pool::open`].
//!
//! **Integrity.** [`Pool::contains`] verifies an entry before it is reused: `spec.json`
//! and `integrity.json` present, every recorded file present with its recorded length and
//! BLAKE3 hash, no recorded file missing. A damaged entry (missing files, truncated or
//! altered bytes, a directory left without `spec.json`) is reported with its path
//! (`tracing::warn`) and moved aside atomically to `<root>/.damaged-<key>-…` (kept for
//! inspection; delete it at will), so the model is retrained and [`Pool::insert`] can put
//! the fresh entry in its place. It is never used.
//!
//! *Cost:* the hashes are checked on every `contains`, i.e. once per model per run,
//! before anything else reads the entry. BLAKE3 hashes well over 1 GB/s on one core, so
//! this costs milliseconds for the small models of a study and about a second per GB
//! of checkpoint for big ones (weights and optimizer moments) — small next to loading
//! and evaluating them, so the pool does not offer a cheaper length-only check.
//!
//! Entries written before integrity records existed (no `integrity.json`, but
//! `spec.json` and the weights present) are adopted with a warning: their current
//! files' hashes are recorded from then on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::lock::FileLock;

/// File holding an entry's description.
pub const SPEC_FILE: &str = "spec.json";
/// File holding an entry's weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File recording the length and BLAKE3 hash of every other file of an entry.
pub const INTEGRITY_FILE: &str = "integrity.json";
/// Prefix of the pool's temporary directories (followed by host and pid).
const TMP_PREFIX: &str = datamix_io::TMP_PREFIX;
/// Prefix of damaged entries moved aside.
pub const DAMAGED_PREFIX: &str = ".damaged-";
const INTEGRITY_FORMAT: &str = "datamix-pool-integrity-v1";

/// Suffix of the pool's job directory, a sibling of the pool (`<root>.jobs/`): the per-key
/// lock files (`locks/`, [`Pool::try_lock`]) and the training records (`trainings/`,
/// [`Pool::record_training`]). Kept out of the pool so that the pool holds entries only
/// (byte-identical between identical runs, whoever trained them).
pub const JOBS_SUFFIX: &str = ".jobs";

/// One model trained into the pool: `<root>.jobs/trainings/<key>-<host>-<pid>-<nanos>.json`,
/// one file per training run (no shared file appended to: safe on NFS). A model trained
/// twice (by processes that did not share locks) has two records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// The entry's key.
    pub key: String,
    /// The spec's role (`seed`, `unit`, ...).
    pub role: String,
    /// The spec's name.
    pub name: String,
    /// Training tokens consumed.
    pub tokens: u64,
    /// Host and pid of the process that trained it.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// Wall-clock seconds of the training.
    pub seconds: f64,
}

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

/// One file's record in `integrity.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Length in bytes.
    pub len: u64,
    /// BLAKE3 hash, hex.
    pub blake3: String,
}

/// `integrity.json`: every file of an entry but itself, by relative path (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrity {
    /// `datamix-pool-integrity-v1`.
    pub format: String,
    /// Relative path (`/`-separated) -> record.
    pub files: BTreeMap<String, FileRecord>,
}

/// What [`Pool::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryState {
    /// No entry.
    Missing,
    /// Complete, every file as recorded.
    Valid,
    /// Written before integrity records existed: complete as far as can be told, hashes
    /// not yet recorded.
    Unrecorded,
    /// Incomplete or altered: why.
    Damaged(String),
}

/// The files of `dir` (recursively, relative `/`-separated paths) except `integrity.json`
/// and hidden entries (temporary files of an atomic write in progress: entries hold none).
fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let e = e.map_err(|e| Error::io(&d, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let t = e.file_type().map_err(|err| Error::io(&e.path(), err))?;
            if t.is_dir() {
                stack.push((e.path(), r));
            } else if r != INTEGRITY_FILE {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Length and BLAKE3 hash of a file, streamed.
pub(crate) fn hash_file(path: &Path) -> Result<FileRecord> {
    let mut h = blake3::Hasher::new();
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = std::io::copy(&mut std::io::BufReader::with_capacity(1 << 20, f), &mut h)
        .map_err(|e| Error::io(path, e))?;
    Ok(FileRecord {
        len,
        blake3: h.finalize().to_hex().to_string(),
    })
}

/// Records every file of `dir` in its `integrity.json` (atomically).
fn record_integrity(dir: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    for f in list_files(dir)? {
        files.insert(f.clone(), hash_file(&dir.join(&f))?);
    }
    let rec = Integrity {
        format: INTEGRITY_FORMAT.into(),
        files,
    };
    let json = serde_json::to_vec_pretty(&rec).expect("integrity record serialises");
    datamix_io::write_file(&dir.join(INTEGRITY_FILE), &json)?;
    Ok(())
}

/// Checks `dir` against its `integrity.json`.
fn check_dir(dir: &Path) -> Result<EntryState> {
    if !dir.exists() {
        return Ok(EntryState::Missing);
    }
    if !dir.is_dir() {
        return Ok(EntryState::Damaged("not a directory".into()));
    }
    if !dir.join(SPEC_FILE).is_file() {
        return Ok(EntryState::Damaged(format!(
            "no {SPEC_FILE} (an incomplete entry)"
        )));
    }
    let ipath = dir.join(INTEGRITY_FILE);
    let bytes = match std::fs::read(&ipath) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(if dir.join(WEIGHTS_FILE).is_file() {
                EntryState::Unrecorded
            } else {
                EntryState::Damaged(format!("no {WEIGHTS_FILE} and no {INTEGRITY_FILE}"))
            });
        }
        Err(e) => return Err(Error::io(&ipath, e)),
    };
    let rec: Integrity = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return Ok(EntryState::Damaged(format!(
                "{INTEGRITY_FILE} unreadable: {e}"
            )));
        }
    };
    if rec.format != INTEGRITY_FORMAT {
        return Ok(EntryState::Damaged(format!(
            "{INTEGRITY_FILE}: unknown format {:?}",
            rec.format
        )));
    }
    if !rec.files.contains_key(SPEC_FILE) || !rec.files.contains_key(WEIGHTS_FILE) {
        return Ok(EntryState::Damaged(format!(
            "{INTEGRITY_FILE} does not record {SPEC_FILE} and {WEIGHTS_FILE}"
        )));
    }
    let present = list_files(dir)?;
    if let Some(extra) = present.iter().find(|f| !rec.files.contains_key(*f)) {
        return Ok(EntryState::Damaged(format!("unrecorded file {extra}")));
    }
    for (name, want) in &rec.files {
        let path = dir.join(name);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(EntryState::Damaged(format!("{name} is missing")));
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        if meta.len() != want.len {
            return Ok(EntryState::Damaged(format!(
                "{name} is {} bytes, {} were recorded (truncated or replaced)",
                meta.len(),
                want.len
            )));
        }
        if hash_file(&path)?.blake3 != want.blake3 {
            return Ok(EntryState::Damaged(format!(
                "{name}: BLAKE3 hash differs from the recorded one (altered bytes)"
            )));
        }
    }
    Ok(EntryState::Valid)
}

impl Pool {
    /// Opens (creating if needed) a pool rooted at `root`, and removes temporary
    /// directories of interrupted runs (only those whose process is gone, or untouched
    /// for a day: see [`datamix_partition::leftovers`]).
    ///
    /// A pool that cannot be written to is refused here ([`Error::PoolUnwritable`]), before
    /// any training, not when the first model is done.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::PoolUnwritable {
            pool: root.clone(),
            source: e,
        })?;
        let probe = root.join(datamix_io::temp_prefix(TMP_PREFIX));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| Error::PoolUnwritable {
                pool: root.clone(),
                source: e,
            })?;
        let _ = std::fs::remove_file(&probe);
        datamix_partition::leftovers::clean(
            &root,
            TMP_PREFIX,
            datamix_partition::leftovers::DEFAULT_MAX_AGE,
        )?;
        let pool = Self { root };
        // And the half-written training records of killed runs (`<root>.jobs/trainings/`).
        datamix_partition::leftovers::clean(
            &pool.jobs_dir().join("trainings"),
            TMP_PREFIX,
            datamix_partition::leftovers::DEFAULT_MAX_AGE,
        )?;
        Ok(pool)
    }

    /// Checks that the pool's entries were described in `format` (the `format` field of
    /// their `spec.json`; a missing field reads as `"1"`): one intact entry is looked at,
    /// since a pool is written by one version. [`Error::PoolFormat`] otherwise. An empty
    /// pool passes.
    pub fn check_format(&self, format: &str) -> Result<()> {
        let rd = std::fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with(TMP_PREFIX) {
                continue;
            }
            let Ok(bytes) = std::fs::read(e.path().join(SPEC_FILE)) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let found = v
                .get("format")
                .and_then(|f| f.as_str())
                .unwrap_or("1")
                .to_string();
            if found != format {
                return Err(Error::PoolFormat {
                    pool: self.root.clone(),
                    entry: name,
                    found,
                    expected: format.to_string(),
                });
            }
            return Ok(());
        }
        Ok(())
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

    /// The pool's job directory (`<root>.jobs`, see [`JOBS_SUFFIX`]).
    pub fn jobs_dir(&self) -> PathBuf {
        let mut name = self
            .root
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "pool".into());
        name.push(JOBS_SUFFIX);
        self.root.with_file_name(name)
    }

    /// The scratch directory of entry `key`'s training (resumable checkpoints), in the
    /// job directory; removed once the entry is in the pool.
    pub fn scratch_dir(&self, key: &PoolKey) -> PathBuf {
        self.jobs_dir().join("scratch").join(key.as_str())
    }

    /// The lock file of entry `key` (whether or not anyone holds it).
    pub fn lock_path(&self, key: &PoolKey) -> PathBuf {
        self.jobs_dir()
            .join("locks")
            .join(format!("{}.lock", key.as_str()))
    }

    /// Takes the advisory lock of entry `key` (the right to train it), or `None` if another
    /// process holds it. Released on drop or when the holder dies ([`crate::lock`]).
    pub fn try_lock(&self, key: &PoolKey) -> Result<Option<FileLock>> {
        FileLock::try_exclusive(&self.lock_path(key))
    }

    /// Takes the lock of entry `key`, waiting while another process trains it.
    pub fn lock(&self, key: &PoolKey) -> Result<FileLock> {
        FileLock::exclusive(&self.lock_path(key))
    }

    /// Records that this process trained entry `key` (see [`TrainingRecord`]).
    pub fn record_training(&self, mut rec: TrainingRecord) -> Result<()> {
        let dir = self.jobs_dir().join("trainings");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        rec.host = datamix_io::host_name();
        rec.pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("{}-{}-{}-{nanos}.json", rec.key, rec.host, rec.pid));
        let json = serde_json::to_vec_pretty(&rec).expect("records serialise");
        datamix_io::write_file(&path, &json)?;
        Ok(())
    }

    /// Every training record of this pool (oldest first by file name within a key).
    pub fn trainings(&self) -> Result<Vec<TrainingRecord>> {
        let dir = self.jobs_dir().join("trainings");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut paths = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Error::io(&dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !name.starts_with('.') {
                paths.push(e.path());
            }
        }
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
            })
            .collect()
    }

    /// Checks entry `key` against its integrity record (reads and hashes every file);
    /// changes nothing. `Err` only when the entry cannot be read (permissions, I/O).
    pub fn verify(&self, key: &PoolKey) -> Result<EntryState> {
        check_dir(&self.dir(key))
    }

    /// Whether the entry is present and intact, repairing what can be: a damaged entry is
    /// reported and moved aside ([`Pool::quarantine`]) and `false` is returned, so that it
    /// is retrained; an entry without integrity record is adopted (see the module docs).
    /// An entry that cannot be read is reported and counts as absent (its later
    /// [`Pool::insert`] then fails with the cause rather than overwrite it).
    pub fn contains(&self, key: &PoolKey) -> bool {
        match self.check(key) {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(entry = %self.dir(key).display(), "cannot verify the pool entry: {e}");
                false
            }
        }
    }

    /// [`Pool::contains`] with I/O errors reported.
    pub fn check(&self, key: &PoolKey) -> Result<bool> {
        let dir = self.dir(key);
        match check_dir(&dir)? {
            EntryState::Missing => Ok(false),
            EntryState::Valid => Ok(true),
            EntryState::Unrecorded => {
                tracing::warn!(
                    entry = %dir.display(),
                    "pool entry has no {INTEGRITY_FILE} (written by an older datamix): \
                     recording its files' hashes now"
                );
                record_integrity(&dir)?;
                Ok(true)
            }
            EntryState::Damaged(why) => {
                let aside = self.quarantine(key)?;
                tracing::warn!(
                    entry = %dir.display(),
                    moved_to = %aside.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                    "damaged pool entry ({why}): moved aside, it will be retrained"
                );
                Ok(false)
            }
        }
    }

    /// Moves entry `key` aside (atomic rename to `<root>/.damaged-<key>-<host>-<pid>-<time>`);
    /// returns where, or `None` if it was already gone (a concurrent run moved it).
    pub fn quarantine(&self, key: &PoolKey) -> Result<Option<PathBuf>> {
        let dir = self.dir(key);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let aside = self.root.join(format!(
            "{DAMAGED_PREFIX}{}-{}{nanos}",
            key.as_str(),
            datamix_io::temp_prefix("")
        ));
        match std::fs::rename(&dir, &aside) {
            Ok(()) => Ok(Some(aside)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&dir, e)),
        }
    }

    /// Stores an entry: `write` fills a fresh temporary directory, which is then
    /// recorded in `integrity.json` and renamed to the entry's place with `spec` as its
    /// `spec.json`. Nothing is left behind if `write` fails. If an intact entry is
    /// already there (a concurrent writer finished first: identical content by
    /// construction) it is kept; a damaged or incomplete one is moved aside and replaced.
    pub fn insert(
        &self,
        key: &PoolKey,
        spec: &impl Serialize,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        // `<TMP_PREFIX><host>-<pid>-…`, an ordinary folder (0755 under the umask), removed
        // on any error below; `Pool::open` cleans those of killed runs.
        let mut tmp = datamix_io::StagingDir::create_in(&self.root, TMP_PREFIX)?;
        write(tmp.path())?;
        let spec_path = tmp.path().join(SPEC_FILE);
        let json = serde_json::to_vec_pretty(spec).expect("descriptions serialise");
        datamix_io::write_file(&spec_path, &json)?;
        record_integrity(tmp.path())?;
        let dest = self.dir(key);
        for _ in 0..3 {
            if self.check(key)? {
                return Ok(dest);
            }
            match tmp.persist(&dest) {
                Ok(()) => return Ok(dest),
                Err(datamix_io::PersistDirError::Sync(e)) => return Err(e.into()),
                // Another writer (or a damaged entry) appeared since the check: look again.
                Err(datamix_io::PersistDirError::Rename { staging, error })
                    if dest.exists()
                        || matches!(
                            error.kind(),
                            std::io::ErrorKind::DirectoryNotEmpty
                                | std::io::ErrorKind::AlreadyExists
                        ) =>
                {
                    tmp = staging;
                }
                Err(datamix_io::PersistDirError::Rename { error, .. }) => {
                    return Err(Error::io(&dest, error));
                }
            }
        }
        Err(Error::Invalid(format!(
            "pool entry {}: cannot replace it (another process keeps writing a damaged entry there)",
            dest.display()
        )))
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
    /// A pool with one entry `key` holding weights `w` and a second file.
    fn pool_with_entry(w: &[u8]) -> (tempfile::TempDir, Pool, PoolKey) {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(dir.path().join("pool")).unwrap();
        let key = PoolKey::of(&"m");
        pool.insert(&key, &"m", |d| {
            std::fs::write(d.join(WEIGHTS_FILE), w).map_err(|e| Error::io(d, e))?;
            std::fs::write(d.join("trainer.json"), b"{}").map_err(|e| Error::io(d, e))
        })
        .unwrap();
        assert_eq!(pool.verify(&key).unwrap(), EntryState::Valid);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(pool.dir(&key))
                .unwrap()
                .permissions()
                .mode();
            // 0755 under the umask (read from /proc where it can be).
            let umask = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Umask:"))
                        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
                })
                .unwrap_or(0o022);
            assert_eq!(mode & 0o777, 0o755 & !umask, "entries are ordinary folders");
        }
        (dir, pool, key)
    }

    /// The damaged entry is detected, moved aside (not deleted) and a fresh insert repairs it.
    fn assert_repaired(pool: &Pool, key: &PoolKey, what: &str) {
        assert!(
            matches!(pool.verify(key).unwrap(), EntryState::Damaged(_)),
            "{what}: not detected"
        );
        assert!(
            !pool.contains(key),
            "{what}: a damaged entry was reported present"
        );
        assert!(!pool.dir(key).exists(), "{what}: not moved aside");
        let aside: Vec<_> = std::fs::read_dir(pool.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(DAMAGED_PREFIX))
            .collect();
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        pool.insert(key, &"m", |d| {
            std::fs::write(d.join(WEIGHTS_FILE), b"fresh").map_err(|e| Error::io(d, e))
        })
        .unwrap();
        assert!(pool.contains(key), "{what}: not repaired");
        assert_eq!(std::fs::read(pool.weights(key)).unwrap(), b"fresh");
    }

    #[test]
    fn truncated_weights_are_detected_and_repaired() {
        let (_d, pool, key) = pool_with_entry(b"0123456789");
        std::fs::write(pool.weights(&key), b"01234").unwrap();
        assert_repaired(&pool, &key, "truncated");
    }

    #[test]
    fn an_altered_byte_is_detected_and_repaired() {
        let (_d, pool, key) = pool_with_entry(b"0123456789");
        std::fs::write(pool.weights(&key), b"0123456780").unwrap();
        assert_repaired(&pool, &key, "altered");
    }

    #[test]
    fn missing_weights_or_files_are_detected_and_repaired() {
        let (_d, pool, key) = pool_with_entry(b"w");
        std::fs::remove_file(pool.weights(&key)).unwrap();
        assert_repaired(&pool, &key, "missing weights");
        let (_d, pool, key) = pool_with_entry(b"w");
        std::fs::remove_file(pool.dir(&key).join("trainer.json")).unwrap();
        assert_repaired(&pool, &key, "missing trainer.json");
    }

    #[test]
    fn an_entry_without_spec_does_not_block_its_repair() {
        let (_d, pool, key) = pool_with_entry(b"w");
        std::fs::remove_file(pool.dir(&key).join(SPEC_FILE)).unwrap();
        assert_repaired(&pool, &key, "missing spec");
        // A bare directory (a crash of an older version) is replaced on insert too.
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open(dir.path().join("pool")).unwrap();
        std::fs::create_dir(pool.dir(&key)).unwrap();
        std::fs::write(pool.weights(&key), b"old").unwrap();
        pool.insert(&key, &"m", |d| {
            std::fs::write(d.join(WEIGHTS_FILE), b"fresh").map_err(|e| Error::io(d, e))
        })
        .unwrap();
        assert_eq!(std::fs::read(pool.weights(&key)).unwrap(), b"fresh");
        assert!(pool.contains(&key));
    }

    #[test]
    fn a_corrupt_integrity_record_or_extra_file_is_damage() {
        let (_d, pool, key) = pool_with_entry(b"w");
        std::fs::write(pool.dir(&key).join(INTEGRITY_FILE), b"{").unwrap();
        assert_repaired(&pool, &key, "corrupt integrity.json");
        let (_d, pool, key) = pool_with_entry(b"w");
        // A concurrent atomic write's temporary file is not part of the entry.
        std::fs::write(pool.dir(&key).join(".tmpAbC123"), b"x").unwrap();
        assert_eq!(pool.verify(&key).unwrap(), EntryState::Valid);
        std::fs::write(pool.dir(&key).join("stray.bin"), b"x").unwrap();
        assert_repaired(&pool, &key, "unrecorded file");
    }

    #[test]
    fn entries_of_older_versions_are_adopted_then_checked() {
        let (_d, pool, key) = pool_with_entry(b"w");
        std::fs::remove_file(pool.dir(&key).join(INTEGRITY_FILE)).unwrap();
        assert_eq!(pool.verify(&key).unwrap(), EntryState::Unrecorded);
        assert!(pool.contains(&key));
        assert_eq!(pool.verify(&key).unwrap(), EntryState::Valid);
        std::fs::write(pool.weights(&key), b"x").unwrap();
        assert!(!pool.contains(&key));
    }

    #[test]
    fn an_intact_entry_is_kept_on_a_second_insert() {
        let (_d, pool, key) = pool_with_entry(b"first");
        pool.insert(&key, &"m", |d| {
            std::fs::write(d.join(WEIGHTS_FILE), b"second").map_err(|e| Error::io(d, e))
        })
        .unwrap();
        assert_eq!(std::fs::read(pool.weights(&key)).unwrap(), b"first");
        let names: Vec<_> = std::fs::read_dir(pool.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "the losing temp dir is removed: {names:?}");
    }

    #[test]
    fn open_removes_temp_dirs_of_dead_runs_only() {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pool");
        std::fs::create_dir_all(&root).unwrap();
        let host = datamix_io::host_name();
        // Above Linux's highest pid (2^22): never a live process.
        let dead = root.join(format!(".tmp-{host}-4194321-abc"));
        let live = root.join(format!("{}abc", datamix_io::temp_prefix(".tmp-")));
        for d in [&dead, &live] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join(WEIGHTS_FILE), b"w").unwrap();
        }
        Pool::open(&root).unwrap();
        assert!(!dead.exists());
        assert!(live.exists(), "a live writer's temp dir is kept");
    }
}
