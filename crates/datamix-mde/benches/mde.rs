//! MDE throughput: mixtures/s of the batched loss, and the `ln` throughput bound.
//!
//! `cargo bench -p datamix-mde --bench mde -- [--tokens T] [--experts K] [--mixtures M]
//! [--check M2] [--reps R] [--out DIR]` writes `DIR/table.safetensors`, `DIR/mixtures.f64` (row-major
//! M x K) and `DIR/rust_losses.f64` (losses of the first M2 mixtures) for the numpy
//! reference (benches/reference/mde_numpy.py), and prints one `key=value` line per figure.

use std::time::Instant;

use datamix_mde::{ExpertTableBuilder, fastln};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("numeric argument"))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let t = arg(&args, "--tokens", 1_000_000);
    let k = arg(&args, "--experts", 8);
    let m = arg(&args, "--mixtures", 10_000);
    let check = arg(&args, "--check", 200).min(m);
    let reps = arg(&args, "--reps", 3).max(1);
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| {
            std::env::temp_dir()
                .join("datamix-mde-bench")
                .display()
                .to_string()
        });
    std::fs::create_dir_all(&out).expect("create output folder");
    let threads = rayon::current_num_threads();

    // Same synthetic data for Rust and numpy: a per-token difficulty shared by all experts
    // (mean -3 nats) plus per-expert noise.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let base: Vec<f32> = (0..t)
        .map(|_| 3.0 * rng.random_range(1e-6f32..1.0).ln())
        .collect();
    let mut builder = ExpertTableBuilder::new("bench", "tok-bench");
    for i in 0..k {
        let row: Vec<f32> = base
            .iter()
            .map(|&b| (b + rng.random_range(-1.0f32..1.0)).min(0.0))
            .collect();
        builder
            .add_expert(format!("e{i}"), format!("ckpt{i}"), &row)
            .expect("valid row");
    }
    let start = Instant::now();
    let table = builder.build().expect("table");
    let build_s = start.elapsed().as_secs_f64();
    table
        .save(format!("{out}/table.safetensors"))
        .expect("save table");
    let mixtures: Vec<Vec<f64>> = (0..m)
        .map(|_| {
            let w: Vec<f64> = (0..k)
                .map(|_| -rng.random_range(1e-12f64..1.0).ln())
                .collect();
            let s: f64 = w.iter().sum();
            w.iter().map(|x| x / s).collect()
        })
        .collect();
    let flat: Vec<f64> = mixtures.iter().flatten().copied().collect();
    std::fs::write(format!("{out}/mixtures.f64"), bytemuck::cast_slice(&flat))
        .expect("write mixtures");

    // Bound: ln over as many values as the MDE run, from an L1-resident buffer, on the
    // same rayon pool (values in the range the kernel sees).
    let buf: Vec<f32> = (0..4096)
        .map(|i| 0.05 + 0.9 * (i as f32 / 4096.0))
        .collect();
    let reps_ln = (t as u64 * m as u64).div_ceil(buf.len() as u64);
    let bound = || {
        use rayon::prelude::*;
        let start = Instant::now();
        let s: f64 = (0..reps_ln)
            .into_par_iter()
            .map(|_| fastln::sum_ln(std::hint::black_box(&buf)))
            .sum();
        std::hint::black_box(s);
        start.elapsed().as_secs_f64()
    };

    // Warm-up, then interleaved timed runs; the best of `reps` counts (shared machine).
    table.losses(&mixtures[..m.min(16)]).expect("losses");
    let (mut mde_s, mut bound_s) = (f64::INFINITY, f64::INFINITY);
    let mut losses = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        losses = table.losses(&mixtures).expect("losses");
        mde_s = mde_s.min(start.elapsed().as_secs_f64());
        bound_s = bound_s.min(bound());
    }
    std::fs::write(
        format!("{out}/rust_losses.f64"),
        bytemuck::cast_slice(&losses[..check]),
    )
    .expect("write losses");
    let exact = table.loss(&mixtures[0]).expect("loss");

    let values = t as f64 * m as f64;
    println!("tokens={t} experts={k} mixtures={m} threads={threads}");
    println!("table_build_s={build_s:.3}");
    println!("rust_mde_s={mde_s:.3}");
    println!("rust_mixtures_per_s={:.1}", m as f64 / mde_s);
    println!("rust_ns_per_token_mixture={:.4}", mde_s * 1e9 / values);
    let ln_values = reps_ln as f64 * buf.len() as f64;
    println!("reps={reps} (best of)");
    println!("bound_ln_s={bound_s:.3}");
    println!("bound_ns_per_ln={:.4}", bound_s * 1e9 / ln_values);
    println!(
        "rust_over_bound={:.2}",
        mde_s / (bound_s * values / ln_values)
    );
    println!(
        "batched_vs_exact_mixture0={:.3e}",
        (losses[0] - exact).abs()
    );
}
