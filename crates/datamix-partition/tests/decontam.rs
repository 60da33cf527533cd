//! Decontamination removes the planted duplicates and nothing else.

mod common;

use std::collections::HashSet;

use common::*;
use datamix_partition::*;
use serde_json::json;

#[test]
fn planted_eval_passages_are_dropped_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    // Evaluation set: passages from a fourth "vocabulary" (mixed words) none of the
    // training documents contain by chance.
    let eval_docs: Vec<String> = (0..5)
        .map(|i| format!("EVALPASSAGE{i} {}", doc_text(i % 3, 1000 + i, 40)))
        .collect();
    let eval = dir.path().join("eval.jsonl");
    write_jsonl(
        &eval,
        &eval_docs
            .iter()
            .map(|t| json!({"text": t, "metadata": {"domain": "eval"}}))
            .collect::<Vec<_>>(),
    );

    let mut recs = records();
    let planted = [(0usize, 3usize), (1, 10), (2, 4)];
    for &(d, i) in &planted {
        let idx = SIZES[..d].iter().sum::<usize>() + i;
        let passage: String = eval_docs[i % 5]
            .split(' ')
            .skip(5)
            .take(25)
            .collect::<Vec<_>>()
            .join(" ");
        let text = format!("{} {} {}", doc_text(d, i, 10), passage, "end.");
        recs[idx]["text"] = json!(text);
    }
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, &recs);

    let mut cfg = config();
    cfg.heldout_fraction = 0.0;
    let out = dir.path().join("out");
    let m = Partitioner::new(cfg, tokenizer())
        .unwrap()
        .with_eval_sets(CorpusSource::discover(&eval).unwrap())
        .run(&CorpusSource::discover(&data).unwrap(), &out)
        .unwrap();
    assert_eq!(m.dropped.contaminated, planted.len() as u64);
    assert!(m.dropped.eval_ngrams > 0);
    for (d, entry) in m.domains.iter().enumerate() {
        assert_eq!(entry.contaminated_documents, 1, "{}", entry.name);
        assert_eq!(entry.documents, SIZES[d] as u64 - 1);
    }
    // The planted documents are gone; every other document is present (the last one may
    // sit in the dropped partial sequence, so look at document counts and markers).
    let corpus = PackedCorpus::open(&out).unwrap();
    let tok = corpus.tokenizer().unwrap();
    for (d, &size) in SIZES.iter().enumerate() {
        let text = tok
            .decode(
                &corpus
                    .train_shard(d)
                    .iter()
                    .flat_map(|s| s.to_vec())
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let seen: HashSet<(usize, usize)> = markers(&text).into_iter().collect();
        for &(pd, pi) in &planted {
            assert!(!seen.contains(&(pd, pi)));
        }
        assert!(
            seen.len() + 2 >= size - 1,
            "domain {d}: {} of {} documents seen",
            seen.len(),
            size - 1
        );
        assert!(!text.contains("EVALPASSAGE"));
    }
}
