//! Atomic file output for this crate: [`datamix_io`]'s durable writes (temporary file
//! beside the target, fsync, rename, directory fsync, `0644` under the umask), with its
//! errors as [`PartitionError`]s.

use crate::error::{PartitionError, Result};
use std::path::Path;

/// Writes `bytes` to `path` atomically (no partial file is ever visible at `path`).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(datamix_io::write_file(path, bytes)?)
}

/// A temporary file beside `path`, to be [`persist`]ed there.
pub fn create(path: &Path) -> Result<datamix_io::AtomicFile> {
    Ok(datamix_io::AtomicFile::create(path)?)
}

/// Fsyncs and renames a temporary file to its target (and fsyncs the directory).
pub fn persist(f: datamix_io::AtomicFile) -> Result<()> {
    Ok(f.commit()?)
}

impl From<datamix_io::Error> for PartitionError {
    fn from(e: datamix_io::Error) -> Self {
        let (path, source) = e.into_parts();
        Self::Io { path, source }
    }
}
