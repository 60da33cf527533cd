//! Atomic, durable output of one file ([`write_file`], [`AtomicFile`]) or one directory
//! ([`StagingDir`]): temporary entry beside the target, fsync, rename, fsync of the parent.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::temp::{TMP_PREFIX, temp_prefix};

/// Mode of a published file before the umask (`rw-r--r--`, what `open` would give).
#[cfg(unix)]
const FILE_MODE: u32 = 0o644;
/// Mode of a published directory before the umask (`rwxr-xr-x`).
#[cfg(unix)]
const DIR_MODE: u32 = 0o755;

/// The directory that holds `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically and durably (see the crate docs). The directory
/// must exist; on error nothing is left behind and `path` is unchanged.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.commit()
}

/// Fsyncs directory `dir`, so that entries renamed into it survive a crash. File systems
/// that cannot sync a directory (`EINVAL`, as some network and FUSE file systems answer)
/// are not an error; elsewhere than Unix this does nothing.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| sync_entries(&d))
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A file being written: a temporary file beside its target, which appears at the target
/// only on [`commit`](AtomicFile::commit). Dropped without a commit, the temporary file is
/// removed and the target is untouched.
///
/// Writes go straight to the file; wrap it in a [`std::io::BufWriter`] for small writes.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file for target `path` in `path`'s directory, which must
    /// exist. Its name is `.tmp-<host>-<pid>-<random>` and its mode `0644` under the umask.
    pub fn create(path: &Path) -> Result<Self> {
        let dir = parent_dir(path);
        let prefix = temp_prefix(TMP_PREFIX);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        // Passed to `open`, so the kernel applies the umask as for any new file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(FILE_MODE));
        }
        let tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Self {
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file's path (beside the target).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// The open temporary file, mutably.
    pub fn file_mut(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Fsyncs the file, renames it over the target and fsyncs the directory. On error
    /// the temporary file is removed; if only the directory sync failed, the new content
    /// is already at the target.
    pub fn commit(self) -> Result<()> {
        let Self { tmp, path } = self;
        tmp.as_file().sync_all().map_err(|e| Error::io(&path, e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        sync_dir(parent_dir(&path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.as_file_mut().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.tmp.as_file_mut().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.as_file_mut().flush()
    }
}

/// A directory being built: a temporary directory, which appears at its destination only
/// on [`persist`](StagingDir::persist). Dropped without it, the directory and everything
/// in it are removed.
///
/// Files written inside should be written durably themselves (with [`write_file`] or
/// [`AtomicFile`]); `persist` syncs the directory's entries, not their contents.
#[derive(Debug)]
pub struct StagingDir {
    dir: tempfile::TempDir,
}

/// A failed [`StagingDir::persist`].
#[derive(Debug, thiserror::Error)]
pub enum PersistDirError {
    /// Syncing or renaming the staging directory failed: it is handed back, unchanged and
    /// still in place, for another try (or to be dropped).
    #[error("{}: {error}", staging.path().display())]
    Rename {
        /// The staging directory.
        staging: StagingDir,
        /// Why it could not be synced or renamed.
        error: std::io::Error,
    },
    /// The directory is in place at its destination, but syncing its parent failed.
    #[error(transparent)]
    Sync(Error),
}

impl StagingDir {
    /// Creates `<prefix><host>-<pid>-<random>` inside `parent` (which must exist), with
    /// mode `0755` under the umask (an ordinary folder, not tempfile's private `0700`).
    pub fn create_in(parent: &Path, prefix: &str) -> Result<Self> {
        let name = temp_prefix(prefix);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&name);
        // Passed to `mkdir`, so the kernel applies the umask as for any new directory.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(DIR_MODE));
        }
        let dir = builder
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?;
        Ok(Self { dir })
    }

    /// The staging directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fsyncs the staging directory, renames it to `dest` and fsyncs `dest`'s parent.
    /// The rename replaces nothing but an empty directory (on Unix); if `dest` is a
    /// non-empty directory, or the rename fails otherwise, the staging directory comes
    /// back in [`PersistDirError::Rename`].
    pub fn persist(self, dest: &Path) -> std::result::Result<(), PersistDirError> {
        #[cfg(unix)]
        if let Err(error) = File::open(self.path()).and_then(|d| sync_entries(&d)) {
            return Err(PersistDirError::Rename {
                staging: self,
                error,
            });
        }
        if let Err(error) = std::fs::rename(self.path(), dest) {
            return Err(PersistDirError::Rename {
                staging: self,
                error,
            });
        }
        // Renamed: forget the temporary path so that dropping removes nothing.
        let _ = self.dir.keep();
        sync_dir(parent_dir(dest)).map_err(PersistDirError::Sync)
    }
}

/// Fsyncs an open directory, tolerating file systems that cannot (see [`sync_dir`]).
#[cfg(unix)]
fn sync_entries(d: &File) -> std::io::Result<()> {
    match d.sync_all() {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names in `dir`, sorted.
    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// This process's umask, from `/proc/self/status` (Linux); `None` elsewhere.
    #[cfg(unix)]
    fn umask() -> Option<u32> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Umask:"))?;
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
    }

    #[test]
    fn writes_contents_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        write_file(&p, b"first version").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first version");
        write_file(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(entries(dir.path()), ["out.bin"], "no temporary file left");
    }

    #[cfg(unix)]
    #[test]
    fn files_get_0644_and_directories_0755_under_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Exactly 0644 / 0755 under the umask; without a readable umask, at least
        // nothing beyond them.
        let expect = |mode: u32, base: u32| match umask() {
            Some(m) => assert_eq!(mode, base & !m, "{mode:o}"),
            None => assert_eq!(mode & !base, 0, "{mode:o}"),
        };
        let p = dir.path().join("table.safetensors");
        write_file(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        expect(mode, 0o644);
        if umask().is_some_and(|m| m & 0o044 == 0) {
            assert_eq!(mode & 0o044, 0o044, "not tempfile's private 0600");
        }

        let staging = StagingDir::create_in(dir.path(), ".stage-").unwrap();
        write_file(&staging.path().join("a"), b"a").unwrap();
        let dest = dir.path().join("entry");
        staging.persist(&dest).unwrap();
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        expect(mode, 0o755);
    }

    #[test]
    fn temporary_names_carry_host_and_pid_and_vanish_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        let mut f = AtomicFile::create(&p).unwrap();
        f.write_all(b"partial").unwrap();
        let name = f
            .temp_path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(&temp_prefix(TMP_PREFIX)), "{name}");
        assert_eq!(f.temp_path().parent(), Some(dir.path()));
        assert!(!p.exists(), "nothing at the target before commit");
        drop(f); // an error path: the writer gives up
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }

    #[test]
    fn failed_commit_leaves_no_temporary_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: renaming a file over it fails.
        let target = dir.path().join("busy");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"keep").unwrap();
        let err = write_file(&target, b"new").unwrap_err();
        assert_eq!(err.path(), target);
        assert!(err.to_string().contains("busy"), "{err}");
        assert_eq!(entries(dir.path()), ["busy"]);
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"keep");

        // A missing directory: the error names it, nothing is created.
        let missing = dir.path().join("no/such/file");
        let err = write_file(&missing, b"x").unwrap_err();
        assert_eq!(err.path(), dir.path().join("no/such"));
        assert_eq!(entries(dir.path()), ["busy"]);
    }

    #[test]
    fn staging_dir_publishes_whole_or_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("entry");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("old"), b"old").unwrap();

        let staging = StagingDir::create_in(dir.path(), ".tmp-").unwrap();
        let name = staging
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(&temp_prefix(".tmp-")), "{name}");
        write_file(&staging.path().join("new"), b"new").unwrap();
        // A non-empty destination is not replaced: the staging directory comes back.
        let staging = match staging.persist(&dest) {
            Err(PersistDirError::Rename { staging, .. }) => staging,
            other => panic!("expected a refused rename, got {other:?}"),
        };
        assert!(staging.path().join("new").exists());
        assert_eq!(entries(&dest), ["old"]);

        std::fs::remove_dir_all(&dest).unwrap();
        let staged = staging.path().to_path_buf();
        staging.persist(&dest).unwrap();
        assert_eq!(entries(&dest), ["new"]);
        assert!(!staged.exists());
        assert_eq!(entries(dir.path()), ["entry"]);

        // Dropped without persisting: removed with its contents.
        let staging = StagingDir::create_in(dir.path(), ".tmp-").unwrap();
        write_file(&staging.path().join("x"), b"x").unwrap();
        drop(staging);
        assert_eq!(entries(dir.path()), ["entry"]);
    }
}
