//! Atomic file output: write a temporary file in the same directory, fsync, rename.

use std::io::Write;
use std::path::Path;

use crate::error::{PartitionError, Result};

/// Writes `bytes` to `path` atomically (no partial file is ever visible at `path`).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = create(path)?;
    f.write_all(bytes)
        .map_err(|e| PartitionError::io(path, e))?;
    persist(f, path)
}

/// A temporary file beside `path`, to be [`persist`]ed there.
pub fn create(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| PartitionError::io(dir, e))
}

/// Flushes, fsyncs and renames a temporary file to `path` (readable by all, `0644`, like a
/// file created the usual way; temporary files start private, `0600`).
pub fn persist(mut f: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    f.flush().map_err(|e| PartitionError::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| PartitionError::io(path, e))?;
    }
    f.as_file()
        .sync_all()
        .map_err(|e| PartitionError::io(path, e))?;
    f.persist(path)
        .map_err(|e| PartitionError::io(path, e.error))?;
    Ok(())
}
