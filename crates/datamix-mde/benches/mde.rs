//! MDE throughput: mixtures/s of the batched loss (the kernel `losses` picks, and the AVX2
//! kernel for comparison where it is not that one), and the `ln` throughput bound (`ln`
//! over T·m values with the best SIMD path, and with AVX2).
//!
//! `cargo bench -p datamix-mde --bench mde -- [--tokens T] [--experts K] [--mixtures M]
//! [--check M2] [--reps R] [--out DIR]` writes `DIR/table.safetensors`, `DIR/mixtures.f64` (row-major
//! M x K) and `DIR/rust_losses.f64` (losses of the first M2 mixtures) for the numpy
//! reference (benches/reference/mde_numpy.py), and prints one `key=value` line per figure.
//!
//! With `--kernels NAME,NAME,...` (`scalar`, `portable`, `avx2`, `avx512`) it compares
//! those kernels instead, on the same data: R rounds (`--reps`), each timing every kernel
//! once over all M mixtures (the order rotated by one per round, so that no kernel always
//! runs first), then each kernel's median mixtures/s, the ratios of the medians, and each
//! kernel's largest difference from the exact f64 loss on the first mixtures.

use std::time::Instant;

use datamix_mde::{ExpertTable, ExpertTableBuilder, batched_kernel, fastln};
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
    if let Some(i) = args.iter().position(|a| a == "--kernels") {
        let names: Vec<&str> = args
            .get(i + 1)
            .expect("--kernels NAME,NAME,...")
            .split(',')
            .collect();
        println!("tokens={t} experts={k} mixtures={m} threads={threads}");
        compare_kernels(&table, &mixtures, &names, reps);
        return;
    }

    // Bound: ln over as many values as the MDE run, from an L1-resident buffer, on the
    // same rayon pool (values in the range the kernel sees).
    let buf: Vec<f32> = (0..4096)
        .map(|i| 0.05 + 0.9 * (i as f32 / 4096.0))
        .collect();
    let reps_ln = (t as u64 * m as u64).div_ceil(buf.len() as u64);
    let bound = |f: fn(&[f32]) -> f64| {
        use rayon::prelude::*;
        let start = Instant::now();
        let s: f64 = (0..reps_ln)
            .into_par_iter()
            .map(|_| f(std::hint::black_box(&buf)))
            .sum();
        std::hint::black_box(s);
        start.elapsed().as_secs_f64()
    };
    let (kernel, tokens_per_ln) = batched_kernel(k);
    // The AVX2 kernel too, when it is not the one `losses` picked and the CPU has it.
    let compare_avx2 = kernel != "avx2"
        && table
            .losses_with_kernel(&mixtures[..m.min(4)], "avx2")
            .is_ok();

    // Warm-up, then interleaved timed runs; the best of `reps` counts (shared machine).
    table.losses(&mixtures[..m.min(16)]).expect("losses");
    let (mut mde_s, mut bound_s) = (f64::INFINITY, f64::INFINITY);
    let (mut avx2_s, mut bound_avx2_s) = (f64::INFINITY, f64::INFINITY);
    let mut losses = Vec::new();
    let mut avx2_diff = 0.0f64;
    for _ in 0..reps {
        let start = Instant::now();
        losses = table.losses(&mixtures).expect("losses");
        mde_s = mde_s.min(start.elapsed().as_secs_f64());
        bound_s = bound_s.min(bound(fastln::sum_ln));
        if compare_avx2 {
            let start = Instant::now();
            let l2 = table.losses_with_kernel(&mixtures, "avx2").expect("losses");
            avx2_s = avx2_s.min(start.elapsed().as_secs_f64());
            avx2_diff = l2
                .iter()
                .zip(&losses)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            bound_avx2_s = bound_avx2_s.min(bound(fastln::sum_ln_avx2));
        }
    }
    std::fs::write(
        format!("{out}/rust_losses.f64"),
        bytemuck::cast_slice(&losses[..check]),
    )
    .expect("write losses");
    // The exact f64 path (one `ln` per token in f64) on the first mixtures.
    let n_exact = m.min(20);
    let exact_diff = (0..n_exact)
        .map(|j| (losses[j] - table.loss(&mixtures[j]).expect("loss")).abs())
        .fold(0.0, f64::max);

    let values = t as f64 * m as f64;
    println!("tokens={t} experts={k} mixtures={m} threads={threads}");
    println!("table_build_s={build_s:.3}");
    println!("kernel={kernel} tokens_per_ln={tokens_per_ln}");
    println!(
        "ln_calls_per_token_mixture={:.4}",
        1.0 / tokens_per_ln as f64
    );
    println!("rust_mde_s={mde_s:.3}");
    println!("rust_mixtures_per_s={:.1}", m as f64 / mde_s);
    println!("rust_ns_per_token_mixture={:.4}", mde_s * 1e9 / values);
    let ln_values = reps_ln as f64 * buf.len() as f64;
    println!("reps={reps} (best of)");
    println!("bound_path={}", fastln::sum_ln_path());
    println!("bound_ln_s={bound_s:.3}");
    println!("bound_ns_per_ln={:.4}", bound_s * 1e9 / ln_values);
    println!(
        "rust_over_bound={:.2}",
        mde_s / (bound_s * values / ln_values)
    );
    if compare_avx2 {
        println!("rust_avx2_mde_s={avx2_s:.3}");
        println!("rust_avx2_mixtures_per_s={:.1}", m as f64 / avx2_s);
        println!(
            "rust_avx2_ns_per_token_mixture={:.4}",
            avx2_s * 1e9 / values
        );
        println!("max_abs_diff_avx2_vs_{kernel}={avx2_diff:.3e}");
        println!("bound_avx2_ln_s={bound_avx2_s:.3}");
        println!("bound_avx2_ns_per_ln={:.4}", bound_avx2_s * 1e9 / ln_values);
    }
    println!("max_abs_diff_batched_vs_exact_f64={exact_diff:.3e} (over {n_exact} mixtures)");
}

/// The `--kernels` mode: every named kernel on all mixtures, `rounds` times, alternating.
fn compare_kernels(table: &ExpertTable, mixtures: &[Vec<f64>], names: &[&str], rounds: usize) {
    let (t, m) = (table.n_tokens(), mixtures.len());
    for name in names {
        if let Err(e) = table.losses_with_kernel(&mixtures[..m.min(16)], name) {
            panic!("kernel {name}: {e}");
        }
    }
    let mut secs = vec![Vec::new(); names.len()];
    let mut losses = vec![Vec::new(); names.len()];
    for r in 0..rounds {
        let mut line = format!("round={}", r + 1);
        for i in (0..names.len()).map(|i| (i + r) % names.len()) {
            let start = Instant::now();
            losses[i] = table
                .losses_with_kernel(mixtures, names[i])
                .expect("losses");
            let s = start.elapsed().as_secs_f64();
            secs[i].push(s);
            line += &format!(" {}_mixtures_per_s={:.1}", names[i], m as f64 / s);
        }
        println!("{line}");
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let h = v.len() / 2;
        if v.len() % 2 == 1 {
            v[h]
        } else {
            0.5 * (v[h - 1] + v[h])
        }
    };
    let rate: Vec<f64> = secs.iter().map(|s| m as f64 / median(s)).collect();
    let n_exact = m.min(20);
    let exact: Vec<f64> = mixtures[..n_exact]
        .iter()
        .map(|x| table.loss(x).expect("loss"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        println!("kernel_{name}_median_mixtures_per_s={:.1}", rate[i]);
        println!(
            "kernel_{name}_median_ns_per_token_mixture={:.4}",
            1e9 / (rate[i] * t as f64)
        );
        let diff = exact
            .iter()
            .zip(&losses[i])
            .map(|(e, g)| (e - g).abs())
            .fold(0.0, f64::max);
        println!("kernel_{name}_max_abs_diff_vs_exact_f64={diff:.3e} (over {n_exact} mixtures)");
    }
    for (i, a) in names.iter().enumerate() {
        for (j, b) in names.iter().enumerate() {
            if i != j {
                println!("ratio_{a}_over_{b}={:.3}", rate[i] / rate[j]);
            }
        }
    }
}
