//! Durable file output: the one place where datamix writes a file or publishes a directory.
//!
//! Every output goes through a temporary entry in the target's own directory, so a reader
//! sees either the old content or the whole new one, never a partial file:
//!
//! 1. the temporary entry is named `<prefix><host>-<pid>-<random>` ([`temp_prefix`]), so
//!    the leftovers of a killed run can be told from a live writer's and removed later
//!    (`datamix_partition::leftovers::clean` parses these names);
//! 2. it is created with the ordinary permissions of a new file (`0644`) or directory
//!    (`0755`), reduced by the process umask like any `open`/`mkdir` — not the private
//!    `0600`/`0700` of a temporary file, which would make models and tables unreadable to
//!    other users;
//! 3. the content is written and the file fsynced;
//! 4. it is renamed over the target, and the directory holding it is fsynced so that the
//!    rename itself survives a crash (Unix only; elsewhere the rename is the last step).
//!
//! On any error the temporary entry is removed. [`write_file`] covers the common case,
//! [`AtomicFile`] streams into a file, [`StagingDir`] builds a directory and publishes it.
//! [`sorted_header`] makes safetensors files byte-reproducible.
//!
//! This crate depends on no other workspace crate.

mod error;
mod file;
mod safetensors_header;
mod temp;

pub use error::{Error, HeaderError, Result};
pub use file::{AtomicFile, PersistDirError, StagingDir, sync_dir, write_file};
pub use safetensors_header::sorted_header;
pub use temp::{TMP_PREFIX, host_name, temp_prefix};
