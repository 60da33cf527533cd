//! BLAKE3 of merge inputs: a running hash per input fed in file order while
//! batches are merged (so inputs are read once), and [`file_hash`] for a
//! file on its own. Knows mappings and byte ranges, not tensors, plans or
//! the scheduler.

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use memmap2::Mmap;

use crate::MergeError;

use super::pages::release;

/// Name of the hash recorded for every input:
/// [`InputRecord::hash`](super::InputRecord::hash) is `"blake3:<64 hex
/// digits>"` (BLAKE3 of the whole file, 256-bit output).
pub const HASH_ALGORITHM: &str = "blake3";
/// Input bytes hashed per step when hashing a file on its own ([`file_hash`]).
pub(super) const HASH_STEP: usize = 8 << 20;

/// `"blake3:<hex>"` of a whole file, as recorded in
/// [`InputRecord::hash`](super::InputRecord::hash) (for comparing a
/// checkpoint with a merge record).
pub fn file_hash(path: &Path) -> Result<String, MergeError> {
    let file = File::open(path).map_err(|e| MergeError::io(path, e))?;
    // SAFETY: read-only mapping; as for merge inputs, the file must not be
    // modified while it is hashed.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| MergeError::io(path, e))?;
    let mut state = HashState::default();
    state.advance(&map, map.len(), true);
    Ok(state.finish())
}

/// A running BLAKE3 hash of one input, fed in file order.
#[derive(Default)]
pub(super) struct HashState {
    hasher: blake3::Hasher,
    /// Bytes hashed so far (the file's first `done` bytes).
    done: usize,
}

impl HashState {
    /// Hashes the mapping's bytes from where it stopped up to `upto`, and
    /// returns that range; `release_now` drops its pages as it goes (else
    /// the caller releases them).
    pub(super) fn advance(&mut self, map: &Mmap, upto: usize, release_now: bool) -> Range<usize> {
        let (from, upto) = (self.done, upto.min(map.len()));
        while self.done < upto {
            let end = (self.done + HASH_STEP).min(upto);
            self.hasher.update(&map[self.done..end]);
            if release_now {
                release(map, self.done..end);
            }
            self.done = end;
        }
        from..self.done.max(from)
    }

    pub(super) fn finish(&self) -> String {
        format!("{HASH_ALGORITHM}:{}", self.hasher.finalize().to_hex())
    }
}
