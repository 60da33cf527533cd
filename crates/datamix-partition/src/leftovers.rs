//! Temporary files and directories of killed runs: named so that their owner can be told,
//! and removed on the next run.
//!
//! A temporary name made by [`temp_prefix`] reads `<prefix><host>-<pid>-` followed by
//! `tempfile`'s random suffix (so do the `.tmp-…` files of every atomic write,
//! [`datamix_io::AtomicFile`], and the staging directories of [`datamix_io::StagingDir`]). [`clean`] removes an entry with that prefix when
//!
//! - it was made on this host (same host name) by a process that no longer exists
//!   (`/proc/<pid>` is absent; checked only where `/proc/self` exists), or
//! - its newest modification time (of the entry and, for a directory, of the files directly
//!   inside it) is older than `max_age` — for names without host and pid (older versions),
//!   names from another host, and systems without `/proc`.
//!
//! A live writer's entry is therefore never removed on its own host unless it has not been
//! touched for `max_age` (pass a generous one: hours). A reused pid keeps a dead run's
//! leftovers until they age out: the safe direction.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{PartitionError, Result};

/// Leftovers untouched for this long are removed whoever made them (a day).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

// The names themselves are made by `datamix_io`, which every crate's atomic writes use.
pub use datamix_io::{host_name, temp_prefix};

/// The host and pid encoded in `name` after `prefix` by [`temp_prefix`], if any.
fn owner(name: &str, prefix: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix(prefix)?;
    let mut parts = rest.rsplitn(3, '-');
    let _random = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    let host = parts.next()?;
    (!host.is_empty()).then(|| (host.to_string(), pid))
}

/// Whether process `pid` of this host is known to be gone (`None`: cannot tell).
fn process_gone(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    if pid == std::process::id() {
        return Some(false);
    }
    // A zombie (killed, not yet reaped: an orphan whose new parent is slow to reap, as in a
    // container without an init) has closed its files and will never write again.
    match std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) {
        Err(_) => Some(true),
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            Some(matches!(state, Some('Z' | 'X')))
        }
    }
}

/// Newest modification time of `path` and (for a directory) of its direct entries.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mut newest = meta.modified().ok()?;
    if meta.is_dir()
        && let Ok(rd) = std::fs::read_dir(path)
    {
        for e in rd.flatten() {
            if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                newest = newest.max(t);
            }
        }
    }
    Some(newest)
}

/// Removes the leftovers named `<prefix>…` directly inside `dir` (see the module docs);
/// returns what it removed. A missing `dir` has none. Entries that vanish meanwhile (a
/// concurrent cleaner) are not errors.
pub fn clean(dir: &Path, prefix: &str, max_age: Duration) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PartitionError::io(dir, e)),
    };
    let host = host_name();
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for e in rd {
        let e = e.map_err(|e| PartitionError::io(dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(prefix) {
            continue;
        }
        let path = e.path();
        let dead_owner = owner(name, prefix)
            .filter(|(h, _)| *h == host)
            .and_then(|(_, pid)| process_gone(pid))
            .unwrap_or(false);
        let stale = newest_mtime(&path)
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > max_age);
        if !(dead_owner || stale) {
            continue;
        }
        let res = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match res {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a leftover of an interrupted run");
                removed.push(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PartitionError::io(&path, e)),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid that is not running here (the highest pid Linux allows is below 2^22).
    const DEAD_PID: u32 = 4_194_304 + 17;

    #[test]
    fn owner_is_parsed_from_the_name() {
        let p = temp_prefix(".tmp-");
        let name = format!("{p}Ab3xYz");
        let (h, pid) = owner(&name, ".tmp-").unwrap();
        assert_eq!(h, host_name());
        assert_eq!(pid, std::process::id());
        assert_eq!(
            owner(".tmp-Ab3xYz", ".tmp-"),
            None,
            "old-style names have no owner"
        );
        assert_eq!(owner(".tmp-a-b-c", ".tmp-"), None);
    }

    #[test]
    fn only_dead_owners_and_stale_entries_are_removed() {
        if !Path::new("/proc/self").exists() {
            return; // no way to tell a live pid here: only the age rule applies
        }
        let dir = tempfile::tempdir().unwrap();
        let host = host_name();
        let live = dir.path().join(format!("{}abc", temp_prefix(".tmp-")));
        let dead = dir.path().join(format!(".tmp-{host}-{DEAD_PID}-abc"));
        let dead_file = dir.path().join(format!(".tmp-{host}-{DEAD_PID}-def"));
        let other_host = dir.path().join(format!(".tmp-elsewhere-{DEAD_PID}-abc"));
        let old_style = dir.path().join(".tmp-Xy12ab");
        let unrelated = dir.path().join(format!("keep-{host}-{DEAD_PID}-abc"));
        for d in [&live, &dead, &other_host, &old_style, &unrelated] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("f"), b"x").unwrap();
        }
        std::fs::write(&dead_file, b"x").unwrap();
        let mut removed = clean(dir.path(), ".tmp-", DEFAULT_MAX_AGE).unwrap();
        removed.sort();
        let mut want = vec![dead.clone(), dead_file.clone()];
        want.sort();
        assert_eq!(removed, want);
        for d in [&live, &other_host, &old_style, &unrelated] {
            assert!(d.exists(), "{} must survive", d.display());
        }
        // With a tiny max_age every matching entry is stale, a live owner's included.
        std::thread::sleep(Duration::from_millis(20));
        let removed = clean(dir.path(), ".tmp-", Duration::from_millis(1)).unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(unrelated.exists());
        assert!(
            clean(&dir.path().join("missing"), ".tmp-", DEFAULT_MAX_AGE)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn temporaries_of_atomic_writes_are_recognised() {
        // The names `datamix_io` really produces parse to this process, so `clean` keeps
        // them while we live and removes them once we are gone.
        let dir = tempfile::tempdir().unwrap();
        let file = datamix_io::AtomicFile::create(&dir.path().join("out.bin")).unwrap();
        let staging =
            datamix_io::StagingDir::create_in(dir.path(), datamix_io::TMP_PREFIX).unwrap();
        for p in [file.temp_path(), staging.path()] {
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                owner(name, datamix_io::TMP_PREFIX),
                Some((host_name(), std::process::id())),
                "{name}"
            );
        }
        assert!(
            clean(dir.path(), datamix_io::TMP_PREFIX, DEFAULT_MAX_AGE)
                .unwrap()
                .is_empty()
        );
        assert!(file.temp_path().exists() && staging.path().exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_zombie_owner_is_gone() {
        // A child that exits and is not reaped stays a zombie of this process.
        let Ok(mut child) = std::process::Command::new("sh")
            .args(["-c", "exit 0"])
            .spawn()
        else {
            return; // no shell
        };
        let pid = child.id();
        let t0 = std::time::Instant::now();
        while process_gone(pid) != Some(true) {
            assert!(
                t0.elapsed().as_secs() < 10,
                "pid {pid} never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(stat.contains(") Z"), "{stat}");
        child.wait().unwrap();
        assert_eq!(process_gone(std::process::id()), Some(false));
    }
}
