//! Tokenizers: load a HF `tokenizer.json`, or train a byte-level BPE of a chosen vocabulary
//! size on the corpus. Either way the tokenizer is identified by the SHA-256 of its JSON.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{PartitionError, Result};

/// The end-of-text token of GPT-2 style tokenizers, used to join documents.
pub const DEFAULT_EOT: &str = "<|endoftext|>";

/// Words kept in the BPE merge cache (the `tokenizers` default is 10,000).
const BPE_CACHE_WORDS: usize = 1 << 18;

/// A tokenizer plus the facts the packer needs: end-of-text id, vocabulary size, hash.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    json: String,
    hash: String,
    eot_id: u32,
    origin: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("origin", &self.origin)
            .field("hash", &self.hash)
            .field("vocab_size", &self.vocab_size())
            .field("eot_id", &self.eot_id)
            .finish()
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> PartitionError {
    PartitionError::Tokenizer {
        path: path.into(),
        message: e.to_string(),
    }
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`; `eot` names the token that separates documents.
    pub fn from_file(path: &Path, eot: &str) -> Result<Self> {
        let json = std::fs::read_to_string(path).map_err(|e| tok_err(path, e))?;
        Self::from_json(json, eot, path)
    }

    /// Builds from the JSON text of a `tokenizer.json`; `origin` is used in messages.
    pub fn from_json(json: String, eot: &str, origin: &Path) -> Result<Self> {
        let mut inner: Tokenizer = json
            .parse()
            .map_err(|e| tok_err(origin, format!("invalid tokenizer.json: {e}")))?;
        inner
            .with_truncation(None)
            .map_err(|e| tok_err(origin, e))?;
        inner.with_padding(None);
        // The BPE word cache (10,000 words by default) stops growing once full; a corpus
        // with a long tail of words (code, many languages) then re-merges most words.
        let mut model = inner.get_model().clone();
        model.resize_cache(BPE_CACHE_WORDS);
        inner.with_model(model);
        let eot_id = inner.token_to_id(eot).ok_or_else(|| {
            tok_err(
                origin,
                format!("no end-of-text token `{eot}` in the vocabulary"),
            )
        })?;
        let hash = hex::encode(Sha256::digest(json.as_bytes()));
        Ok(Self {
            inner,
            json,
            hash,
            eot_id,
            origin: origin.into(),
        })
    }

    /// Trains a byte-level BPE (GPT-2 style pre-tokenisation, every byte in the initial
    /// alphabet, `eot` as the only special token) with `vocab_size` tokens in all.
    pub fn train_bpe<I, S>(texts: I, vocab_size: usize, eot: &str) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let origin = Path::new("<trained byte-level BPE>");
        if vocab_size < 257 {
            return Err(PartitionError::InvalidParam {
                name: "vocab_size",
                message: format!("{vocab_size} < 257 (256 bytes + end-of-text)"),
            });
        }
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(eot.to_string(), true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut tok = Tokenizer::new(BPE::default());
        tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tok.with_decoder(Some(ByteLevel::default()));
        tok.train(&mut trainer, texts)
            .map_err(|e| tok_err(origin, e))?;
        let json = tok.to_string(false).map_err(|e| tok_err(origin, e))?;
        Self::from_json(json, eot, origin)
    }

    /// Writes the tokenizer's JSON atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::atomic::write_file(path, self.json.as_bytes())
    }

    /// Token ids of `text` (no special tokens added, no offsets computed).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| tok_err(&self.origin, e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| tok_err(&self.origin, e))
    }

    /// Vocabulary size including added tokens (ids are `< vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The end-of-text id.
    pub fn eot_id(&self) -> u32 {
        self.eot_id
    }

    /// SHA-256 (hex) of the tokenizer JSON.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The tokenizer JSON.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_bpe_round_trips() {
        let texts = vec!["the cat sat on the mat. the dog sat on the log."; 50];
        let t = TextTokenizer::train_bpe(texts.into_iter(), 300, DEFAULT_EOT).unwrap();
        assert!(
            t.vocab_size() <= 300 && t.vocab_size() > 257,
            "{}",
            t.vocab_size()
        );
        let ids = t.encode("the cat sat on the log, émoji ✓").unwrap();
        assert_eq!(t.decode(&ids).unwrap(), "the cat sat on the log, émoji ✓");
        let mut with_eot = ids.clone();
        with_eot.push(t.eot_id());
        assert!(t.decode(&with_eot).unwrap().ends_with(DEFAULT_EOT));
        assert!(t.encode("the").unwrap().len() == 1, "merges were learned");
    }

    #[test]
    fn invalid_or_missing_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        assert!(matches!(
            TextTokenizer::from_file(&missing, DEFAULT_EOT),
            Err(PartitionError::Tokenizer { .. })
        ));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let e = TextTokenizer::from_file(&bad, DEFAULT_EOT).unwrap_err();
        assert!(e.to_string().contains("bad.json"), "{e}");
    }
}
