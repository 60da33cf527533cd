//! Tests of the MDE losses: the batched kernels (scalar, portable, AVX2, AVX-512: each
//! one this CPU has) against the exact f64 loss and each other, underflow, padding and
//! ordering of mixtures, every k the SIMD kernels take, and random tables (proptest).

use super::*;
use crate::table::ExpertTableBuilder;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random table with hard cases: per-token difficulty plus per-expert noise, and on
/// ~3% of the tokens each expert independently gives p ~ e^-40..e^-90 (scaled values
/// from ~1e-18 down to 0 in f32), so mixtures that weight those experts see tiny and
/// underflowing mixture probabilities.
fn hard_table(k: usize, t: usize, seed: u64) -> ExpertTable {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let base: Vec<f32> = (0..t)
        .map(|_| 2.0 * rng.random_range(1e-4f32..1.0).ln())
        .collect();
    let mut b = ExpertTableBuilder::new("dom", "tok");
    for i in 0..k {
        let row: Vec<f32> = base
            .iter()
            .map(|&x| {
                if rng.random_bool(0.03) {
                    x - rng.random_range(40.0f32..90.0)
                } else {
                    (x + rng.random_range(-2.0f32..2.0)).min(0.0)
                }
            })
            .collect();
        b.add_expert(format!("e{i}"), format!("h{i}"), &row)
            .unwrap();
    }
    b.build().unwrap()
}

/// Random mixtures, about a third of their entries exactly zero, plus the one-hots.
fn mixtures(k: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = (0..n)
        .map(|_| {
            let mut w: Vec<f64> = (0..k)
                .map(|_| {
                    if rng.random_bool(0.33) {
                        0.0
                    } else {
                        -rng.random_range(1e-9f64..1.0).ln()
                    }
                })
                .collect();
            if w.iter().all(|&x| x == 0.0) {
                w[0] = 1.0;
            }
            let s: f64 = w.iter().sum();
            w.into_iter().map(|x| x / s).collect()
        })
        .collect();
    out.extend((0..k).map(|i| (0..k).map(|j| f64::from(u8::from(i == j))).collect()));
    out
}

/// The kernels this CPU can run for `k` experts.
fn kernels(k: usize) -> Vec<kernel::Choice> {
    ["scalar", "portable", "avx2", "avx512"]
        .iter()
        .filter_map(|name| kernel::by_name(name, k))
        .collect()
}

#[test]
fn every_kernel_agrees_with_the_exact_f64_loss() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut worst = std::collections::HashMap::new();
    // Token counts with and without a tail after the 16-token blocks, shorter and
    // longer than a 512-token block and a 1024-token task; k = 1..16 (SIMD) and 17.
    for (k, t) in [
        (1, 600),
        (2, 5003),
        (3, 1040),
        (5, 2100),
        (8, 20_000),
        (13, 777),
        (16, 3000),
        (17, 500),
    ] {
        let table = hard_table(k, t, k as u64 + 100);
        // Counts that are not multiples of MB: the last block is padded.
        let mixtures = mixtures(k, 4 * 9 + 3 - k % 4, &mut rng);
        let exact: Vec<f64> = mixtures.iter().map(|m| table.loss(m).unwrap()).collect();
        for choice in kernels(k) {
            let got = table.losses_with(&mixtures, choice);
            assert_eq!(got.len(), mixtures.len());
            for ((g, e), m) in got.iter().zip(&exact).zip(&mixtures) {
                let err = (g - e).abs();
                let w = worst.entry(choice.name).or_insert(0.0f64);
                *w = w.max(err / e.abs().max(1.0));
                assert!(
                    err <= 1e-6 * e.abs().max(1.0),
                    "{} k={k} T={t} λ={m:?}: {g} vs exact {e}",
                    choice.name
                );
            }
        }
    }
    println!("max |batched - exact| / max(1, loss) per kernel: {worst:?}");
}

#[test]
fn every_kernel_takes_every_k_up_to_16() {
    // Each k is its own monomorphised SIMD kernel: all of them against the exact loss,
    // on tables with tiny and underflowing probabilities (fallback blocks) and a tail
    // after the 16-token blocks, with zero weights and one-hots.
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for k in 1..=16 {
        let t = 1100 + 37 * k;
        let table = hard_table(k, t, 200 + k as u64);
        let mixtures = mixtures(k, 10, &mut rng);
        let exact: Vec<f64> = mixtures.iter().map(|m| table.loss(m).unwrap()).collect();
        let found = kernels(k);
        assert!(found.iter().any(|c| c.name == "portable"), "k={k}");
        for choice in found {
            let got = table.losses_with(&mixtures, choice);
            for ((g, e), m) in got.iter().zip(&exact).zip(&mixtures) {
                assert!(
                    (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                    "{} k={k} T={t} λ={m:?}: {g} vs exact {e}",
                    choice.name
                );
            }
        }
    }
    assert!(kernel::by_name("portable", 17).is_none());
    assert!(kernel::by_name("portable", 0).is_none());
}

#[test]
fn kernel_names_and_the_default() {
    assert_eq!(kernel::by_name("scalar", 3).unwrap().name, "scalar");
    assert_eq!(kernel::by_name("portable", 3).unwrap().name, "portable");
    assert!(kernel::by_name("neon", 3).is_none());
    // On every CPU, the default for k <= 16 is a SIMD kernel; scalar only beyond.
    let (name, per_ln) = batched_kernel(8);
    assert_ne!(name, "scalar");
    assert_eq!(per_ln, 64);
    #[cfg(not(target_arch = "x86_64"))]
    assert_eq!(name, "portable");
    assert_eq!(batched_kernel(17), ("scalar", 1));
}

#[test]
fn simd_kernels_agree_with_each_other() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for k in [4, 8, 11] {
        let table = hard_table(k, 4099, k as u64);
        let mixtures = mixtures(k, 30, &mut rng);
        let all: Vec<Vec<f64>> = kernels(k)
            .iter()
            .map(|c| table.losses_with(&mixtures, *c))
            .collect();
        for pair in all.windows(2) {
            for (a, b) in pair[0].iter().zip(&pair[1]) {
                assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
}

#[test]
fn grouped_ln_keeps_underflow_blocks_exact() {
    // Expert 0 sure, expert 1 e^-40 (s ~ 4e-18: fast path, large exponents), expert 2
    // e^-300 (0 in f32: careful path), interleaved so both paths meet in one task.
    let t = 3000;
    let row = |p: f32, q: f32| -> Vec<f32> {
        (0..t)
            .map(|i| if (i / 700) % 2 == 0 { p } else { q })
            .collect()
    };
    let mut b = ExpertTableBuilder::new("dom", "tok");
    b.add_expert("sure", "h0", &vec![-0.01f32; t]).unwrap();
    b.add_expert("small", "h1", &row(-40.0, -0.5)).unwrap();
    b.add_expert("tiny", "h2", &row(-300.0, -1.0)).unwrap();
    let table = b.build().unwrap();
    let cases = [
        vec![0.0, 1.0, 0.0],
        vec![0.0, 0.0, 1.0],
        vec![0.0, 0.5, 0.5],
        vec![0.2, 0.3, 0.5],
    ];
    for choice in kernels(3) {
        let got = table.losses_with(&cases, choice);
        for (m, g) in cases.iter().zip(got) {
            let e = table.loss(m).unwrap();
            assert!(
                (g - e).abs() <= 1e-6 * e.max(1.0),
                "{} {m:?}: {g} vs {e}",
                choice.name
            );
        }
    }
}

#[test]
fn mixed_reference_experts_in_shuffled_order_match_one_at_a_time() {
    // Mixtures with every expert as the largest weight, in shuffled order (so blocks
    // of MB mix reference experts and take the plain form, and sorted runs take the
    // reference-expert form), near-uniform ones whose largest weight wins by 1e-7,
    // and sums off 1 by up to 5e-7 (inside SUM_TOLERANCE): each batched result must
    // match the same mixture alone (a block of MB copies: reference form) and the
    // exact f64 loss.
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for k in [2, 5, 8, 12] {
        let table = hard_table(k, 2077, 40 + k as u64);
        let mut all = mixtures(k, 6 * k, &mut rng);
        for r in 0..k {
            let mut w = vec![1.0 / k as f64 - 1e-7 / k as f64; k];
            w[r] += 1e-7;
            all.push(w);
        }
        for (j, m) in all.iter_mut().enumerate() {
            let scale = 1.0 + 5e-7 * ((j % 3) as f64 - 1.0);
            m.iter_mut().for_each(|x| *x *= scale);
        }
        for j in (1..all.len()).rev() {
            all.swap(j, rng.random_range(0..=j));
        }
        for choice in kernels(k) {
            let got = table.losses_with(&all, choice);
            for (m, g) in all.iter().zip(&got) {
                let alone = table.losses_with(std::slice::from_ref(m), choice)[0];
                let e = table.loss(m).unwrap();
                let tol = 1e-6 * e.abs().max(1.0);
                assert!(
                    (g - alone).abs() <= tol,
                    "{} k={k} {m:?}: {g} vs alone {alone}",
                    choice.name
                );
                assert!(
                    (g - e).abs() <= tol,
                    "{} k={k} {m:?}: {g} vs exact {e}",
                    choice.name
                );
            }
        }
    }
}

#[test]
fn reference_expert_is_the_first_largest_weight() {
    assert_eq!(reference_expert(&[0.2, 0.5, 0.3]), 1);
    assert_eq!(reference_expert(&[0.4, 0.2, 0.4]), 0);
    assert_eq!(reference_expert(&[1.0]), 0);
    assert_eq!(reference_expert(&[0.0, 0.0, 1.0]), 2);
}

#[test]
fn no_mixtures_no_losses() {
    let table = hard_table(3, 100, 1);
    let none: Vec<Vec<f64>> = Vec::new();
    assert!(table.losses(&none).unwrap().is_empty());
    assert!(table.losses_with_kernel(&none, "nonsense").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Every kernel against the exact loss on random tables (k = 1..=16, T from 1 to
    /// ~3000 tokens: empty 16-token main part, tails, several 1024-token chunks), with
    /// a random share of tokens far below the best expert (tiny and underflowing s)
    /// and random mixtures with zero weights.
    #[test]
    fn kernels_match_the_exact_loss_on_random_tables(
        k in 1usize..=16,
        t in 1usize..3000,
        seed in any::<u64>(),
        far in 0.0f64..0.2,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut b = ExpertTableBuilder::new("dom", "tok");
        for i in 0..k {
            let row: Vec<f32> = (0..t)
                .map(|_| {
                    if rng.random_bool(far) {
                        -rng.random_range(30.0f32..120.0)
                    } else {
                        -rng.random_range(0.0f32..12.0)
                    }
                })
                .collect();
            b.add_expert(format!("e{i}"), format!("h{i}"), &row).unwrap();
        }
        let table = b.build().unwrap();
        let mixtures = mixtures(k, 5, &mut rng);
        for choice in kernels(k) {
            let got = table.losses_with(&mixtures, choice);
            for (m, g) in mixtures.iter().zip(&got) {
                let e = table.loss(m).unwrap();
                prop_assert!(
                    (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                    "{} k={k} T={t} λ={m:?}: {g} vs exact {e}", choice.name
                );
            }
        }
    }
}
