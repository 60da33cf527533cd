//! Bad input: typed errors naming what is wrong, and no partial output left behind.

mod common;

use std::path::Path;

use common::*;
use datamix_partition::*;

fn run(dir: &Path, data: &Path, cfg: PartitionConfig) -> Result<Manifest> {
    Partitioner::new(cfg, tokenizer())?.run(&CorpusSource::discover(data)?, &dir.join("out"))
}

fn assert_clean(dir: &Path, inputs: &[&str]) {
    let left = entries(dir);
    assert_eq!(left, inputs, "nothing but the inputs is left behind");
}

#[test]
fn malformed_line_fails_with_file_and_line_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    let mut lines: Vec<String> = records().iter().map(|r| r.to_string()).collect();
    lines.insert(5, "{\"id\": 1, \"text\": oops".into());
    lines.insert(9, "{\"id\": 2, \"metadata\": {}}".into());
    std::fs::write(&data, lines.join("\n")).unwrap();
    let e = run(dir.path(), &data, config()).unwrap_err();
    assert!(
        matches!(e, PartitionError::MalformedRecord { line: 6, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("d.jsonl:6"), "{e}");
    assert_clean(dir.path(), &["d.jsonl"]);

    let mut cfg = config();
    cfg.reader.bad_records = BadRecordPolicy::Skip;
    let m = run(dir.path(), &data, cfg).unwrap();
    assert_eq!(m.dropped.skipped_records, 2);
    assert_eq!(m.sources[0].documents, records().len() as u64);
}

#[test]
fn missing_text_field_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    std::fs::write(
        &data,
        "{\"id\":\"a\",\"text\":\"hello\"}\n{\"id\":\"b\",\"body\":\"x\"}\n",
    )
    .unwrap();
    let e = run(dir.path(), &data, config()).unwrap_err();
    assert!(
        matches!(&e, PartitionError::MissingText { line: 2, field, .. } if field == "text"),
        "{e:?}"
    );
    assert_clean(dir.path(), &["d.jsonl"]);
}

#[test]
fn rule_naming_unknown_key_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    write_jsonl(&data, &records());
    let mut cfg = config();
    cfg.rules.field = "field_of_study".into();
    cfg.rules.missing = Some("other".into());
    let e = run(dir.path(), &data, cfg).unwrap_err();
    assert!(
        matches!(&e, PartitionError::UnknownMetadataKey { key, .. } if key == "field_of_study"),
        "{e:?}"
    );
    let mut cfg = config();
    cfg.order_by = UnitOrder::Key("published".into());
    assert!(
        matches!(run(dir.path(), &data, cfg), Err(PartitionError::UnknownMetadataKey { key, .. }) if key == "published")
    );
    // Unknown keys in the TOML itself are named too.
    let e = PartitionConfig::from_toml_str("seq_len = 64\nheldout = 0.1\n", "partition.toml")
        .unwrap_err();
    assert!(
        e.to_string().contains("heldout") && e.to_string().contains("partition.toml"),
        "{e}"
    );
    assert_clean(dir.path(), &["d.jsonl"]);
}

#[test]
fn empty_domain_is_typed_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    write_jsonl(&data, &records());
    let mut cfg = config();
    cfg.rules.include = vec!["animals".into(), "ghost".into()];
    let e = run(dir.path(), &data, cfg).unwrap_err();
    assert!(
        matches!(&e, PartitionError::EmptyDomain { domain, tokens: 0, .. } if domain == "ghost"),
        "{e:?}"
    );
    assert_clean(dir.path(), &["d.jsonl"]);

    // A previous good output survives a failed re-run untouched.
    let good = run(dir.path(), &data, config()).unwrap();
    let before = std::fs::read(dir.path().join("out/manifest.json")).unwrap();
    let mut cfg = config();
    cfg.rules.include = vec!["ghost".into()];
    run(dir.path(), &data, cfg).unwrap_err();
    assert_eq!(
        std::fs::read(dir.path().join("out/manifest.json")).unwrap(),
        before
    );
    assert_eq!(good.domains.len(), 3);
    assert_clean(dir.path(), &["d.jsonl", "out"]);
}

#[test]
fn missing_or_invalid_tokenizer_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let e = TextTokenizer::from_file(&dir.path().join("tokenizer.json"), DEFAULT_EOT).unwrap_err();
    assert!(
        matches!(e, PartitionError::Tokenizer { .. }) && e.to_string().contains("tokenizer.json"),
        "{e}"
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"model\": 3}").unwrap();
    assert!(matches!(
        TextTokenizer::from_file(&bad, DEFAULT_EOT),
        Err(PartitionError::Tokenizer { .. })
    ));
    let good = dir.path().join("good.json");
    tokenizer().save(&good).unwrap();
    let e = TextTokenizer::from_file(&good, "<|eos|>").unwrap_err();
    assert!(e.to_string().contains("<|eos|>"), "{e}");
}

#[test]
fn bad_config_values_are_rejected() {
    for (cfg, name) in [
        (
            PartitionConfig {
                seq_len: 1,
                ..config()
            },
            "seq_len",
        ),
        (
            PartitionConfig {
                unit_tokens: 8,
                ..config()
            },
            "unit_tokens",
        ),
        (
            PartitionConfig {
                heldout_fraction: 1.0,
                ..config()
            },
            "heldout_fraction",
        ),
    ] {
        let e = Partitioner::new(cfg, tokenizer()).unwrap_err();
        assert!(
            matches!(e, PartitionError::InvalidParam { name: n, .. } if n == name),
            "{e:?}"
        );
    }
}

#[test]
fn empty_domain_folder_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus");
    std::fs::create_dir_all(data.join("books")).unwrap();
    std::fs::create_dir_all(data.join("empty")).unwrap();
    for i in 0..40 {
        std::fs::write(
            data.join("books").join(format!("{i}.txt")),
            doc_text(0, i, 30),
        )
        .unwrap();
    }
    let e = run(dir.path(), &data, config()).unwrap_err();
    assert!(
        matches!(&e, PartitionError::EmptyDomain { domain, .. } if domain == "empty"),
        "{e:?}"
    );
    assert_clean(dir.path(), &["corpus"]);
    std::fs::remove_dir(data.join("empty")).unwrap();
    let m = run(dir.path(), &data, config()).unwrap();
    assert_eq!(m.domains.len(), 1);
}

#[test]
fn invalid_utf8_text_is_named_as_such_not_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("notes.txt");
    std::fs::write(&data, b"a fine line\n\nbad \xff\xfe bytes\n").unwrap();
    let e = run(dir.path(), &data, config()).unwrap_err();
    assert!(
        matches!(e, PartitionError::InvalidUtf8 { line: 3, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("notes.txt:3") && msg.contains("UTF-8") && !msg.contains("JSON"),
        "{msg}"
    );
    assert_clean(dir.path(), &["notes.txt"]);
}

#[test]
fn an_eval_set_equal_to_a_training_domain_is_reported_as_contamination() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let recs = records();
    for d in DOMAINS {
        let mine: Vec<_> = recs
            .iter()
            .filter(|r| r["metadata"]["domain"] == d)
            .cloned()
            .collect();
        write_jsonl(&corpus.join(format!("{d}.jsonl")), &mine);
    }
    let eval = dir.path().join("copy.jsonl");
    std::fs::copy(corpus.join(format!("{}.jsonl", DOMAINS[0])), &eval).unwrap();
    let e = Partitioner::new(config(), tokenizer())
        .unwrap()
        .with_eval_sets(CorpusSource::discover(&eval).unwrap())
        .run(
            &CorpusSource::discover(&corpus).unwrap(),
            &dir.path().join("out"),
        )
        .unwrap_err();
    assert!(
        matches!(&e, PartitionError::Contaminated { domain, .. } if domain == DOMAINS[0]),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("copy.jsonl") && msg.contains("contaminated") && msg.contains(DOMAINS[0]),
        "{msg}"
    );
}
