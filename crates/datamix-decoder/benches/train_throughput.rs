//! Training throughput (forward + backward + AdamW step) of a decoder preset (default
//! `small` at sequence length 256, batch 8), on each compiled CPU backend, or on the
//! backends named in `DATAMIX_BENCH_BACKENDS` (e.g. `cuda,wgpu` on a GPU).
//!
//! `cargo bench -p datamix-decoder --features ndarray --bench train_throughput -- [steps] [vocab] [layers]`
//! prints one JSON line per backend (and, with `DATAMIX_BENCH_COMPOSITES=1`, one more per
//! backend with the fused ops off: Burn's composites), then the sgemm peak of the gemm crate
//! behind `flex` and the fused ops; `benches/decoder.sh` runs it beside the PyTorch twin
//! (`benches/reference/decoder_torch.py`, which measures torch's sgemm peak).
//! `DATAMIX_BENCH_PRESET`, `DATAMIX_BENCH_BATCH` and `DATAMIX_BENCH_SEQ` change the model
//! and batch (`benches/decoder-gpu.sh` runs `m130` at 8 x 1024); `layers` defaults to the
//! preset's.

use std::time::Instant;

mod common;

// Like the `datamix` binary: Burn allocates and frees large buffers every step.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::tensor::backend::AutodiffBackend;
use datamix_decoder::{
    BackendKind, BackendTask, DecoderConfig, Packer, TrainConfig, Trainer, without_fused_ops,
};

struct Bench {
    /// The preset's name and its config (at `vocab`).
    preset: (String, DecoderConfig),
    steps: usize,
    vocab: usize,
    layers: usize,
    batch: usize,
    seq: usize,
}

impl BackendTask for &Bench {
    type Output = (f64, usize);
    fn run<B: AutodiffBackend>(self, device: B::Device) -> (f64, usize) {
        let config = DecoderConfig {
            n_layers: self.layers,
            ..self.preset.1.clone()
        }
        .with_max_seq_len(self.seq);
        let params = config.num_params();
        let train = TrainConfig {
            batch_size: self.batch,
            seq_len: self.seq,
            total_steps: 1000,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::<B>::new(config, train, &device).unwrap();
        // Deterministic pseudo-random tokens: throughput does not depend on content.
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let vocab = self.vocab as u64;
        let tokens = std::iter::repeat_with(move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            vec![(s % vocab) as u32; 1]
        });
        let mut packer = Packer::new(tokens, self.batch, self.seq);
        trainer.fit(&mut packer, 2, |_| {}).unwrap(); // warm-up
        let t = Instant::now();
        trainer.fit(&mut packer, self.steps as u64, |_| {}).unwrap();
        let secs = t.elapsed().as_secs_f64();
        ((self.steps * self.batch * self.seq) as f64 / secs, params)
    }
}

/// GFLOP/s of the gemm crate on a 2048³ `f32` product over rayon's pool (best of 5), the
/// twin of the torch peak `decoder_torch.py` measures.
fn gemm_peak() -> f64 {
    let n = 2048;
    let (best, c) = common::best_gemm((n, n, n), (false, false), 5, gemm::Parallelism::Rayon(0));
    assert_eq!(c[n * n - 1], n as f32 * 0.5, "the product is wrong");
    2.0 * (n * n * n) as f64 / best / 1e9
}

fn main() {
    // As the `datamix` binary does: keep freed pages instead of purging them to the OS
    // (mimalloc's `mi_option_purge_delay`, index 15, set to "never"); see
    // crates/datamix-cli/src/main.rs.
    // SAFETY: sets one process-wide integer option, before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let env = |name: &str, d: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let name = std::env::var("DATAMIX_BENCH_PRESET").unwrap_or_else(|_| "small".into());
    let vocab = arg(1, 4096);
    let base = match DecoderConfig::preset(&name, vocab) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("DATAMIX_BENCH_PRESET: {e}");
            std::process::exit(2);
        }
    };
    let bench = Bench {
        steps: arg(0, 10),
        vocab,
        layers: arg(2, base.n_layers),
        batch: env("DATAMIX_BENCH_BATCH", 8),
        seq: env("DATAMIX_BENCH_SEQ", 256),
        preset: (name, base),
    };
    let only = std::env::var("DATAMIX_BENCH_BACKENDS").ok();
    let composites = std::env::var_os("DATAMIX_BENCH_COMPOSITES").is_some();
    for kind in BackendKind::available() {
        if matches!(kind, BackendKind::Wgpu | BackendKind::Cuda) && only.is_none() {
            continue;
        }
        if let Some(o) = &only
            && !o.split(',').any(|b| b == kind.to_string())
        {
            continue;
        }
        let row = |name: String, (tok_s, params): (f64, usize)| {
            println!(
                "{{\"impl\":\"{name}\",\"preset\":\"{}\",\"d_model\":{},\"params\":{params},\"batch\":{},\"seq\":{},\"layers\":{},\"vocab\":{},\"steps\":{},\"tokens_per_s\":{tok_s:.1}}}",
                bench.preset.0,
                bench.preset.1.d_model,
                bench.batch,
                bench.seq,
                bench.layers,
                bench.vocab,
                bench.steps
            )
        };
        row(format!("burn-{kind}"), kind.run(&bench).unwrap());
        // The ablation: the same step on Burn's composites, for the backends with fused ops.
        if composites && matches!(kind, BackendKind::Cpu | BackendKind::Tch) {
            let r = without_fused_ops(|| kind.run(&bench)).unwrap();
            row(format!("burn-{kind}-composites"), r);
        }
    }
    println!(
        "{{\"impl\":\"sgemm-peak-gemm\",\"threads\":{},\"gflops\":{:.1}}}",
        rayon::current_num_threads(),
        gemm_peak()
    );
}
