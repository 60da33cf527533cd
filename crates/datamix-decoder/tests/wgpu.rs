//! The WGPU path (feature `wgpu`): same weights give the same per-token
//! log-probabilities as the CPU backend, and a training step runs. Runs on a
//! real GPU or, on CPU-only machines, on Mesa's lavapipe software Vulkan
//! driver. Kept tiny: WGPU compiles its kernels at run time.
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::Autodiff;
use common::*;
use datamix_decoder::backend::Wgpu;
use datamix_decoder::{EvalConfig, Packer, Trainer, evaluate};

#[test]
fn wgpu_matches_cpu_and_trains() {
    let tokens = grammar_text(40, 9);
    let config = tiny().with_max_seq_len(32);
    let (cpu_model, gpu_model) = seeded_with_copy::<Inner, Wgpu>(&config, 7);
    let device = Default::default();
    let cfg = EvalConfig::new(32);
    let a = evaluate(&cpu_model, &tokens, &cfg, &Default::default()).unwrap();
    let b = evaluate(&gpu_model, &tokens, &cfg, &device).unwrap();
    assert_eq!(a.logprobs.len(), b.logprobs.len());
    let max_diff = max_abs_diff(&a.logprobs, &b.logprobs);
    assert!(max_diff < 1e-3, "max |cpu - wgpu| = {max_diff}");

    let mut train = train_cfg(2);
    train.seq_len = 32;
    train.batch_size = 2;
    let mut trainer = Trainer::<Autodiff<Wgpu>>::new(config, train, &device).unwrap();
    let mut packer = Packer::new(chunks(&tokens, 40).cycle(), 2, 32);
    let stats = trainer.fit(&mut packer, 2, |_| {}).unwrap();
    assert_eq!(stats.len(), 2);
    assert!(stats.iter().all(|s| s.loss.is_finite()));
}
