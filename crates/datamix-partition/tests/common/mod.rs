//! Fixtures shared by the integration tests (all made on the fly).
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use datamix_partition::*;
use serde_json::json;

pub const WORDS: [&[&str]; 3] = [
    &[
        "cat", "dog", "mat", "sat", "purr", "fur", "tail", "paw", "meow", "bark",
    ],
    &[
        "fn", "let", "mut", "impl", "struct", "trait", "match", "enum", "loop", "return",
    ],
    &[
        "court",
        "law",
        "clause",
        "party",
        "hereby",
        "shall",
        "agreement",
        "license",
        "term",
        "notice",
    ],
];
pub const DOMAINS: [&str; 3] = ["animals", "code", "legal"];

/// Deterministic document `i` of domain `d`, `len` words, with a unique marker word.
pub fn doc_text(d: usize, i: usize, len: usize) -> String {
    let mut x = (d * 1_000_003 + i * 7919 + 17) as u64;
    let mut words = vec![format!("DOC{d}X{i}Z")];
    for _ in 0..len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        words.push(WORDS[d][(x >> 33) as usize % 10].to_string());
    }
    words.join(" ") + "."
}

/// Markers `(d, i)` found in a decoded text.
pub fn markers(text: &str) -> Vec<(usize, usize)> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| {
            let w = w.strip_prefix("DOC")?.strip_suffix('Z')?;
            let (d, i) = w.split_once('X')?;
            Some((d.parse().ok()?, i.parse().ok()?))
        })
        .collect()
}

/// Domain sizes used by most tests: one big, one medium, one small.
pub const SIZES: [usize; 3] = [120, 60, 12];

pub fn records() -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (d, &n) in SIZES.iter().enumerate() {
        for i in 0..n {
            out.push(
                json!({"id": format!("{d}-{i}"), "text": doc_text(d, i, 20 + i % 30),
                "metadata": {"domain": DOMAINS[d], "year": 1990 + (i % 30)}}),
            );
        }
    }
    out
}

pub fn write_jsonl(path: &Path, recs: &[serde_json::Value]) {
    let mut f = std::fs::File::create(path).unwrap();
    for r in recs {
        writeln!(f, "{r}").unwrap();
    }
}

/// A small byte-level BPE trained on the fixture vocabulary (once per test binary).
pub fn tokenizer() -> TextTokenizer {
    static TOK: OnceLock<TextTokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let texts: Vec<String> = (0..3)
            .flat_map(|d| (0..40).map(move |i| doc_text(d, i, 40)))
            .collect();
        TextTokenizer::train_bpe(texts.into_iter(), 400, DEFAULT_EOT).unwrap()
    })
    .clone()
}

pub fn config() -> PartitionConfig {
    PartitionConfig {
        seq_len: 32,
        unit_tokens: 640,
        heldout_fraction: 0.2,
        progress: false,
        threads: Some(2),
        ..Default::default()
    }
}

/// Every entry of `dir` (for checking that failed runs leave nothing behind).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
