//! Packed token shards: a flat little-endian array of `u16` or `u32` token ids whose length
//! is a multiple of the sequence length (NumPy: `np.memmap(path, dtype="<u2").reshape(-1, L)`).
//! Read through a memory map; a sequence is a borrowed slice.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{PartitionError, Result};

/// Element type of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// 2 bytes per token: vocabularies of at most 65,536 ids.
    U16,
    /// 4 bytes per token.
    U32,
}

impl TokenDtype {
    /// The narrowest type holding every id below `vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            Self::U16
        } else {
            Self::U32
        }
    }

    /// Bytes per token.
    pub fn size(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }
}

/// One packed sequence, borrowed from a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seq<'a> {
    /// From a `u16` shard.
    U16(&'a [u16]),
    /// From a `u32` shard.
    U32(&'a [u32]),
}

impl Seq<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            Seq::U16(s) => s.len(),
            Seq::U32(s) => s.len(),
        }
    }

    /// Whether the sequence is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tokens as `u32`.
    pub fn to_vec(&self) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.len());
        self.extend_into(&mut v);
        v
    }

    /// Appends the tokens to `out` as `u32`.
    pub fn extend_into(&self, out: &mut Vec<u32>) {
        match self {
            Seq::U16(s) => out.extend(s.iter().map(|&t| u32::from(t))),
            Seq::U32(s) => out.extend_from_slice(s),
        }
    }
}

/// A read-only, memory-mapped shard of fixed-length sequences.
#[derive(Debug)]
pub struct TokenShard {
    path: PathBuf,
    map: Option<Mmap>,
    dtype: TokenDtype,
    seq_len: usize,
    sequences: usize,
}

impl TokenShard {
    /// Maps `path`; its size must be a whole number of `seq_len`-token sequences.
    pub fn open(path: &Path, dtype: TokenDtype, seq_len: usize) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(PartitionError::BadShard {
                path: path.into(),
                message: "shards are little-endian".into(),
            });
        }
        let file = File::open(path).map_err(|e| PartitionError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| PartitionError::io(path, e))?
            .len() as usize;
        let row = seq_len * dtype.size();
        if seq_len == 0 || !len.is_multiple_of(row) {
            return Err(PartitionError::BadShard {
                path: path.into(),
                message: format!(
                    "{len} bytes is not a whole number of {seq_len}-token {dtype:?} sequences"
                ),
            });
        }
        let map = if len == 0 {
            None
        } else {
            // SAFETY: shards are written once (atomically renamed into place) and never modified.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| PartitionError::io(path, e))?)
        };
        Ok(Self {
            path: path.into(),
            map,
            dtype,
            seq_len,
            sequences: len / row,
        })
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.sequences
    }

    /// Whether the shard holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.sequences == 0
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sequence `i` (panics if `i >= len()`, like slice indexing).
    pub fn get(&self, i: usize) -> Seq<'_> {
        assert!(
            i < self.sequences,
            "sequence {i} out of range ({} in {})",
            self.sequences,
            self.path.display()
        );
        let bytes = &self.map.as_ref().expect("non-empty shard is mapped")[..];
        let (a, b) = (i * self.seq_len, (i + 1) * self.seq_len);
        match self.dtype {
            TokenDtype::U16 => Seq::U16(&bytemuck::cast_slice(bytes)[a..b]),
            TokenDtype::U32 => Seq::U32(&bytemuck::cast_slice(bytes)[a..b]),
        }
    }

    /// Iterates over all sequences.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Seq<'_>> + '_ {
        (0..self.sequences).map(|i| self.get(i))
    }
}

/// Writes a token stream as a shard of fixed-length sequences (a trailing partial sequence
/// is dropped and counted). Output is atomic: nothing appears at `path` until [`finish`].
///
/// [`finish`]: ShardWriter::finish
pub(crate) struct ShardWriter {
    path: PathBuf,
    out: BufWriter<datamix_io::AtomicFile>,
    dtype: TokenDtype,
    seq_len: usize,
    pending: Vec<u32>,
    sequences: u64,
}

impl ShardWriter {
    pub(crate) fn create(path: &Path, dtype: TokenDtype, seq_len: usize) -> Result<Self> {
        let tmp = crate::atomic::create(path)?;
        Ok(Self {
            path: path.into(),
            out: BufWriter::with_capacity(1 << 20, tmp),
            dtype,
            seq_len,
            pending: Vec::with_capacity(seq_len),
            sequences: 0,
        })
    }

    /// Appends tokens; full sequences are written as they complete.
    pub(crate) fn push(&mut self, tokens: &[u32]) -> Result<()> {
        let mut rest = tokens;
        while !rest.is_empty() {
            let take = (self.seq_len - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.seq_len {
                let r = match self.dtype {
                    TokenDtype::U16 => {
                        let v: Vec<u16> = self.pending.iter().map(|&t| t as u16).collect();
                        self.out.write_all(bytemuck::cast_slice(&v))
                    }
                    TokenDtype::U32 => self.out.write_all(bytemuck::cast_slice(&self.pending)),
                };
                r.map_err(|e| PartitionError::io(&self.path, e))?;
                self.pending.clear();
                self.sequences += 1;
            }
        }
        Ok(())
    }

    /// Renames the shard into place; returns (sequences, dropped trailing tokens).
    pub(crate) fn finish(self) -> Result<(u64, u64)> {
        let dropped = self.pending.len() as u64;
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| PartitionError::io(&self.path, e.into_error()))?;
        crate::atomic::persist(tmp)?;
        Ok((self.sequences, dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_map_both_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [TokenDtype::U16, TokenDtype::U32] {
            let p = dir.path().join(format!("{dtype:?}.bin"));
            let mut w = ShardWriter::create(&p, dtype, 4).unwrap();
            w.push(&[1, 2, 3]).unwrap();
            w.push(&[4, 5, 6, 7, 8, 9, 65535]).unwrap();
            assert_eq!(w.finish().unwrap(), (2, 2));
            let s = TokenShard::open(&p, dtype, 4).unwrap();
            assert_eq!(s.len(), 2);
            assert_eq!(s.get(1).to_vec(), vec![5, 6, 7, 8]);
            assert!(TokenShard::open(&p, dtype, 3).is_err());
        }
        assert_eq!(TokenDtype::for_vocab(50257), TokenDtype::U16);
        assert_eq!(TokenDtype::for_vocab(70000), TokenDtype::U32);
    }
}
