//! Derived data is keyed by content: a changed corpus is never silently reused.

use std::fmt::Write as _;
use std::path::Path;

use datamix::study::StudyConfig;
use datamix::study::data::{TOKENIZER_KEY_SUFFIX, prepare};

/// Three domains, one JSONL file each (40 documents), words drawn with `seed`.
fn write_corpus(dir: &Path, seed: u64, docs: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let words: [&[&str]; 3] = [
        &["alpha", "beta", "gamma", "delta", "omega", "sigma"],
        &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "="],
        &["fn", "let", "mut", "{", "}", "(", ")", ";", "->", "impl"],
    ];
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for (d, name) in ["greek", "digits", "code"].iter().enumerate() {
        let mut f = String::new();
        for doc in 0..docs {
            let text: Vec<&str> = (0..60).map(|_| words[d][next() % words[d].len()]).collect();
            let _ = writeln!(
                f,
                "{}",
                serde_json::json!({"id": format!("{name}-{doc}"), "text": text.join(" "), "metadata": {"domain": name}})
            );
        }
        std::fs::write(dir.join(format!("{name}.jsonl")), f).unwrap();
    }
}

fn config(out: &Path, corpus: &Path) -> StudyConfig {
    let text = format!(
        r#"
out_dir = "{out}"
[data]
corpus = "{corpus}"
vocab_size = 300
seq_len = 16
unit_tokens = 256
heldout_fraction = 0.2
eval_tokens = 256
[model]
preset = "tiny"
d_model = 32
[seed_model]
steps = 2
batch_size = 2
lr = 1e-3
[continued]
steps = 2
batch_size = 2
lr = 1e-3
[mixtures]
count = 4
"#,
        out = out.display(),
        corpus = corpus.display(),
    );
    StudyConfig::from_toml(&text, Path::new("integrity.toml")).unwrap()
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn a_changed_source_with_the_same_file_count_rebuilds_corpus_and_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    let out = dir.path().join("out");
    write_corpus(&corpus, 1, 40);
    let cfg = config(&out, &corpus);
    let tok = out.join("tokenizer-bpe300.json");
    let tok_key = out.join(format!("tokenizer-bpe300.json{TOKENIZER_KEY_SUFFIX}"));
    let manifest = out.join("corpus").join("manifest.json");

    let first = prepare(&cfg).unwrap();
    assert!(
        tok_key.is_file(),
        "the tokenizer records what it was trained from"
    );
    let (tok_t, man_t) = (mtime(&tok), mtime(&manifest));

    // Unchanged: both reused as they are.
    let again = prepare(&cfg).unwrap();
    assert_eq!(again.corpus_id, first.corpus_id);
    assert_eq!(mtime(&tok), tok_t, "tokenizer retrained without a change");
    assert_eq!(mtime(&manifest), man_t, "corpus repacked without a change");
    drop(again);

    // Cut one domain to 10 documents: same number of files, other content.
    let digits = corpus.join("digits.jsonl");
    let text = std::fs::read_to_string(&digits).unwrap();
    let cut: String = text.lines().take(10).map(|l| format!("{l}\n")).collect();
    std::fs::write(&digits, cut).unwrap();
    let edited = prepare(&cfg).unwrap();
    assert_ne!(edited.corpus_id, first.corpus_id, "stale corpus reused");
    let m = edited.corpus.manifest();
    let d = m.domains.iter().find(|d| d.name == "digits").unwrap();
    let total = d.documents + d.heldout_documents + d.contaminated_documents;
    assert!(total <= 10, "old documents still there: {d:?}");
    let old = first.corpus.manifest();
    let hash = |m: &datamix::partition::Manifest| {
        m.sources
            .iter()
            .find(|s| s.path.ends_with("digits.jsonl"))
            .unwrap()
            .content_hash
            .clone()
    };
    assert_ne!(hash(m), hash(old));
    assert_ne!(
        mtime(&tok),
        tok_t,
        "tokenizer not retrained on the edited corpus"
    );
}

#[test]
fn another_folder_with_as_many_files_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let out = dir.path().join("out");
    write_corpus(&a, 1, 40);
    write_corpus(&b, 2, 40);
    let first = prepare(&config(&out, &a)).unwrap();
    let other = prepare(&config(&out, &b)).unwrap();
    assert_ne!(other.corpus_id, first.corpus_id, "stale corpus reused");
    assert!(
        other
            .corpus
            .manifest()
            .sources
            .iter()
            .all(|s| s.path.starts_with(&b.display().to_string())),
        "{:?}",
        other.corpus.manifest().sources
    );
    // Back to the first folder: rebuilt from it again.
    let back = prepare(&config(&out, &a)).unwrap();
    assert!(
        back.corpus
            .manifest()
            .sources
            .iter()
            .all(|s| s.path.starts_with(&a.display().to_string()))
    );
}

#[test]
fn a_tokenizer_without_its_key_file_is_retrained() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    let out = dir.path().join("out");
    write_corpus(&corpus, 3, 40);
    let cfg = config(&out, &corpus);
    prepare(&cfg).unwrap();
    let tok = out.join("tokenizer-bpe300.json");
    let key = out.join(format!("tokenizer-bpe300.json{TOKENIZER_KEY_SUFFIX}"));
    // A tokenizer left by an older version (or another corpus), without a key.
    std::fs::remove_file(&key).unwrap();
    let t = mtime(&tok);
    prepare(&cfg).unwrap();
    assert!(key.is_file());
    assert_ne!(mtime(&tok), t);
}

/// A complete (tiny) study over `corpus` into `out`.
fn study_config(out: &Path, corpus: &Path) -> StudyConfig {
    let text = format!(
        r#"
out_dir = "{out}"
[data]
corpus = "{corpus}"
vocab_size = 300
seq_len = 16
unit_tokens = 512
heldout_fraction = 0.2
eval_tokens = 256
[model]
preset = "tiny"
d_model = 32
[seed_model]
steps = 6
batch_size = 2
lr = 5e-3
[continued]
steps = 3
batch_size = 2
lr = 3e-3
[mixtures]
count = 4
[analysis]
family = "ridge"
[search]
validate = false
"#,
        out = out.display(),
        corpus = corpus.display(),
    );
    StudyConfig::from_toml(&text, Path::new("integrity.toml")).unwrap()
}

/// BLAKE3 of every file under `dir`, by relative path.
fn hashes(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(
                    rel,
                    blake3::hash(&std::fs::read(&p).unwrap())
                        .to_hex()
                        .to_string(),
                );
            }
        }
    }
    out
}

#[test]
fn two_identical_runs_write_byte_identical_pools_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    write_corpus(&corpus, 7, 40);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    datamix::study::run(&study_config(&a, &corpus)).unwrap();
    datamix::study::run(&study_config(&b, &corpus)).unwrap();
    for sub in ["pool", "tables"] {
        let (ha, hb) = (hashes(&a.join(sub)), hashes(&b.join(sub)));
        assert!(!ha.is_empty());
        assert_eq!(ha, hb, "{sub} differs between two identical runs");
    }
}

#[test]
fn a_damaged_pool_entry_is_retrained_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    write_corpus(&corpus, 8, 40);
    let out = dir.path().join("out");
    let cfg = study_config(&out, &corpus);
    let first = datamix::study::run(&cfg).unwrap();
    let pool = out.join("pool");
    let before = hashes(&pool);
    // Truncate one model's weights, remove another entry's spec.json, and leave the temp
    // dir of a killed run (a dead pid on this host).
    let mut entries: Vec<_> = std::fs::read_dir(&pool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let weights = entries[0].join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap();
    f.set_len(len / 2).unwrap();
    std::fs::remove_file(entries[1].join("spec.json")).unwrap();
    let host = datamix::partition::leftovers::host_name();
    let stray = pool.join(format!(".tmp-{host}-4194321-xyz"));
    std::fs::create_dir(&stray).unwrap();

    let again = datamix::study::run(&cfg).unwrap();
    assert_eq!(again.true_loss, first.true_loss);
    assert_eq!(again.mde_loss, first.mde_loss);
    assert_eq!(again.merged_loss, first.merged_loss);
    let damaged = std::fs::read_dir(&pool)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".damaged-")
        })
        .count();
    assert_eq!(damaged, 2, "both damaged entries moved aside");
    if Path::new("/proc/self").exists() {
        assert!(!stray.exists(), "the killed run's temp dir is removed");
    }
    let after: std::collections::BTreeMap<_, _> = hashes(&pool)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(".damaged-"))
        .collect();
    assert_eq!(
        after, before,
        "repaired entries are identical to the originals"
    );
}
