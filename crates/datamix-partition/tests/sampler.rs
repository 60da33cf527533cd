//! The mixture sampler: proportions, determinism, resumption, unit inclusion.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use common::*;
use datamix_partition::*;
use proptest::prelude::*;

fn corpus() -> Arc<PackedCorpus> {
    static C: OnceLock<(tempfile::TempDir, Arc<PackedCorpus>)> = OnceLock::new();
    C.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d.jsonl");
        write_jsonl(&data, &records());
        let out = dir.path().join("out");
        Partitioner::new(config(), tokenizer())
            .unwrap()
            .run(&CorpusSource::discover(&data).unwrap(), &out)
            .unwrap();
        let c = Arc::new(PackedCorpus::open(&out).unwrap());
        (dir, c)
    })
    .1
    .clone()
}

/// Counts per stream at every prefix, checking the stated tolerance: at most one sequence
/// per stream away from the exact share.
fn check_proportions(s: &mut MixtureSampler) -> Vec<u64> {
    let total = s.total_sequences();
    let targets: Vec<u64> = s.plan().iter().map(|p| p.target_sequences).collect();
    let mut counts = vec![0u64; targets.len()];
    let mut t = 0u64;
    while let Some((i, seq)) = s.next_seq() {
        assert_eq!(seq.len(), 32);
        counts[i] += 1;
        t += 1;
        for (c, n) in counts.iter().zip(&targets) {
            let exact = *n as f64 * t as f64 / total as f64;
            assert!(
                (*c as f64 - exact).abs() <= 1.0 + 1e-9,
                "step {t}: {c} vs {exact}"
            );
        }
    }
    assert_eq!(t, total);
    assert_eq!(counts, targets);
    counts
}

#[test]
fn domain_mixture_proportions_and_epochs() {
    let c = corpus();
    let mix = Mixture::from_weights(&c, &[0.5, 0.3, 0.2]).unwrap();
    let budget = 32 * 1000;
    let mut s = MixtureSampler::new(c.clone(), &mix, budget, 7).unwrap();
    assert_eq!(s.total_sequences(), 1000);
    let counts = check_proportions(&mut s);
    assert_eq!(counts, [500, 300, 200]);
    for (p, d) in s.plan().iter().zip(&c.manifest().domains) {
        assert_eq!(p.available_sequences, d.train_sequences);
        assert!((p.epochs - p.target_sequences as f64 / d.train_sequences as f64).abs() < 1e-12);
        assert!(
            p.epochs > 1.0,
            "fixture domains are smaller than the budget: upsampled"
        );
    }
}

#[test]
fn every_sequence_is_served_once_per_epoch() {
    let c = corpus();
    let n = c.manifest().domains[2].train_sequences;
    let mix = Mixture::Domains([("legal".to_string(), 1.0)].into());
    let seqs: Vec<Vec<u32>> = MixtureSampler::new(c.clone(), &mix, 32 * 2 * n, 1)
        .unwrap()
        .collect();
    let shard: HashSet<Vec<u32>> = c.train_shard(2).iter().map(|s| s.to_vec()).collect();
    let first: HashSet<Vec<u32>> = seqs[..n as usize].iter().cloned().collect();
    assert_eq!(first, shard, "epoch 1 is a permutation of the domain");
    let second: HashSet<Vec<u32>> = seqs[n as usize..].iter().cloned().collect();
    assert_eq!(second, shard);
    assert_ne!(
        seqs[..n as usize],
        seqs[n as usize..],
        "reshuffled each epoch"
    );
}

#[test]
fn resumes_from_a_serialised_cursor() {
    let c = corpus();
    let mix = Mixture::from_weights(&c, &[0.2, 0.2, 0.6]).unwrap();
    let full: Vec<Vec<u32>> = MixtureSampler::new(c.clone(), &mix, 32 * 300, 3)
        .unwrap()
        .collect();
    let mut a = MixtureSampler::new(c.clone(), &mix, 32 * 300, 3).unwrap();
    let head: Vec<Vec<u32>> = a.by_ref().take(137).collect();
    let json = serde_json::to_string(&a.cursor()).unwrap();
    let mut b = MixtureSampler::new(c.clone(), &mix, 32 * 300, 3).unwrap();
    b.resume(&serde_json::from_str(&json).unwrap()).unwrap();
    let tail: Vec<Vec<u32>> = b.collect();
    assert_eq!([head, tail].concat(), full);
    let mut other_seed = MixtureSampler::new(c.clone(), &mix, 32 * 300, 4).unwrap();
    assert!(matches!(
        other_seed.resume(&serde_json::from_str(&json).unwrap()),
        Err(PartitionError::Cursor(_))
    ));
}

#[test]
fn unit_inclusion_draws_only_included_units() {
    let c = corpus();
    let m = c.manifest();
    let ids: Vec<&str> = m
        .units
        .iter()
        .filter(|u| u.domain == "animals")
        .take(2)
        .map(|u| u.id.as_str())
        .collect();
    assert_eq!(ids.len(), 2);
    let mix = Mixture::from_unit_ids(&c, &ids).unwrap();
    let allowed: HashSet<Vec<u32>> = m
        .units
        .iter()
        .filter(|u| ids.contains(&u.id.as_str()))
        .flat_map(|u| {
            c.unit_sequences(u)
                .unwrap()
                .map(|s| s.to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut s = MixtureSampler::new(c.clone(), &mix, 32 * 100, 0).unwrap();
    assert_eq!(
        s.plan()
            .iter()
            .map(|p| p.target_sequences)
            .collect::<Vec<_>>(),
        [50, 50]
    );
    assert_eq!(s.plan()[0].epochs, 50.0 / 20.0);
    let counts = check_proportions(&mut s);
    assert_eq!(counts, [50, 50]);
    for seq in MixtureSampler::new(c.clone(), &mix, 32 * 100, 0).unwrap() {
        assert!(allowed.contains(&seq));
    }
    assert!(Mixture::from_unit_ids(&c, &["nope/0"]).is_err());
    assert!(
        MixtureSampler::new(
            c.clone(),
            &Mixture::Units(vec![false; m.units.len()]),
            3200,
            0
        )
        .is_err()
    );
    assert!(
        MixtureSampler::new(
            c,
            &Mixture::Domains([("x".to_string(), 1.0)].into()),
            3200,
            0
        )
        .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn proportions_hold_for_any_weights(w in proptest::collection::vec(0.01f64..1.0, 3), n in 1u64..400) {
        let c = corpus();
        let mut s = MixtureSampler::new(c.clone(), &Mixture::from_weights(&c, &w).unwrap(), 32 * n, 0).unwrap();
        let sum: f64 = w.iter().sum();
        let counts = check_proportions(&mut s);
        for (k, wi) in counts.iter().zip(&w) {
            prop_assert!((*k as f64 - wi / sum * n as f64).abs() <= 1.0);
        }
    }
}
