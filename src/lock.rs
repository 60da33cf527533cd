//! Advisory, exclusive file locks (`std::fs::File::lock`: `flock(2)` on Unix) between
//! processes, on one machine or on several that share a file system.
//!
//! A [`FileLock`] holds `flock(LOCK_EX)` on an open file; the kernel releases it when the
//! holder closes the file or dies (SIGKILL and OOM kills included), so a lock of a dead
//! process never has to be taken over by hand: the next [`FileLock::try_exclusive`] simply
//! gets it. The file itself stays (deleting a lock file while others wait on it would let
//! two holders in); the holder writes its host and pid into it, for people only.
//!
//! **Shared file systems.** On Linux, `flock` on NFS (v3 with `lockd`/`statd`, v4 natively)
//! is sent to the server as a whole-file POSIX lock, so it excludes processes on other
//! clients too. A client that dies keeps its locks until the server notices: at the end of
//! the NFSv4 lease (90 s by default) or when NLM's `statd` reports the reboot; a pool job
//! whose worker node vanished is therefore picked up after that delay, not at once. Mounts
//! with `nolock` or `local_lock=flock`/`all` make `flock` node-local: then two nodes can
//! train the same model (the pool stays correct, since entries appear atomically and an
//! intact entry is never replaced, but the work is done twice). Lustre needs the `flock`
//! mount option (`localflock` is node-local); BeeGFS and GPFS support `flock` across nodes.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An exclusive advisory lock, released on drop (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock on `path` (created with its parent directories if missing), or
    /// returns `None` at once if another process (or another open file of this one) holds it.
    pub fn try_exclusive(path: &Path) -> Result<Option<Self>> {
        Self::acquire(path, false)
    }

    /// Takes the lock on `path`, waiting as long as another holder keeps it.
    pub fn exclusive(path: &Path) -> Result<Self> {
        Ok(Self::acquire(path, true)?.expect("a blocking lock is always acquired"))
    }

    fn acquire(path: &Path, wait: bool) -> Result<Option<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if !flock(&file, wait).map_err(|e| Error::io(path, e))? {
            return Ok(None);
        }
        let mut lock = Self {
            file,
            path: path.to_path_buf(),
        };
        // Who holds it, for people looking at a stuck job (best effort).
        let _ = lock.file.set_len(0);
        let _ = writeln!(
            lock.file,
            "{} {}",
            datamix_io::host_name(),
            std::process::id()
        );
        Ok(Some(lock))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the exclusive lock: waits for it (`wait`), or returns `false` at once while another
/// open file holds it. `std`'s file locks are `flock(LOCK_EX)` on Unix and `LockFileEx`
/// on Windows.
fn flock(file: &File, wait: bool) -> std::io::Result<bool> {
    if wait {
        return file.lock().map(|()| true);
    }
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_excludes_others_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locks").join("k.lock");
        let a = FileLock::try_exclusive(&p).unwrap().expect("free");
        // flock locks belong to open files: a second open in this process conflicts too.
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        let holder = std::fs::read_to_string(&p).unwrap();
        assert!(holder.contains(&std::process::id().to_string()), "{holder}");
        drop(a);
        // Blocking, not `try_exclusive`: a test beside this one spawns a child, and between
        // fork and exec the child briefly shares every open file description, `a`'s included.
        let b = FileLock::exclusive(&p).unwrap();
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(b);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_lock_of_a_killed_process_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.lock");
        // A child takes the lock and is SIGKILLed while holding it.
        // `exec` keeps one process: the shell becomes `sleep`, the only holder of fd 9.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec 9>>\"$0\" && flock -x 9 && exec sleep 30"])
            .arg(&p)
            .spawn();
        let Ok(child) = child.as_mut() else {
            return; // no shell
        };
        let t0 = std::time::Instant::now();
        while FileLock::try_exclusive(&p).unwrap().is_some() {
            if child.try_wait().unwrap().is_some() {
                return; // no flock(1) here (util-linux)
            }
            assert!(t0.elapsed().as_secs() < 10, "the child never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
    }
}
