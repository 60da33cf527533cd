//! The LibTorch path (feature `tch`): the same weights give the same per-token
//! log-probabilities and the same gradients (through the fused flash-attention op) as
//! the default CPU backend, training learns, and a checkpoint written from LibTorch
//! evaluates identically after reloading.
#![cfg(feature = "tch")]

mod common;

use burn::backend::Autodiff;
use common::*;
use datamix_decoder::backend::Tch;
use datamix_decoder::checkpoint::to_host;
use datamix_decoder::{EvalConfig, Packer, Trainer, evaluate, without_fused_ops};

#[test]
fn tch_matches_cpu_evaluation() {
    let tokens = grammar_text(60, 9);
    let config = tiny().with_max_seq_len(32);
    let (cpu_model, tch_model) = seeded_with_copy::<Inner, Tch>(&config, 7);
    let device = Default::default();
    let cfg = EvalConfig::new(32);
    let a = evaluate(&cpu_model, &tokens, &cfg, &Default::default()).unwrap();
    let b = evaluate(&tch_model, &tokens, &cfg, &device).unwrap();
    let d = max_abs_diff(&a.logprobs, &b.logprobs);
    assert!(d < 1e-4, "max |cpu - tch| = {d}");
}

#[test]
fn tch_trains_and_round_trips_weights() {
    let train = grammar_text(600, 1);
    let held_out = grammar_text(60, 2);
    let device = Default::default();
    let mut trainer = Trainer::<Autodiff<Tch>>::new(tiny(), train_cfg(60), &device).unwrap();
    let mut packer = Packer::new(chunks(&train, 100).cycle(), 8, 64);
    let stats = trainer.fit(&mut packer, 60, |_| {}).unwrap();
    assert!(stats.iter().all(|s| s.loss.is_finite()));
    let first = stats[..5].iter().map(|s| s.loss).sum::<f32>() / 5.0;
    let last = stats[55..].iter().map(|s| s.loss).sum::<f32>() / 5.0;
    assert!(last < 0.8 * first, "loss {first} -> {last}");
    // Host weights from LibTorch load into the CPU backend and evaluate the same.
    let model = trainer.inference_model();
    let weights = to_host(&model);
    let cpu = tiny()
        .init_from_host::<Inner>(&weights, std::path::Path::new("<tch>"), &Default::default())
        .unwrap();
    let cfg = EvalConfig::new(64);
    let a = evaluate(&model, &held_out, &cfg, &device).unwrap();
    let b = evaluate(&cpu, &held_out, &cfg, &Default::default()).unwrap();
    let d = max_abs_diff(&a.logprobs, &b.logprobs);
    assert!(d < 1e-4, "max |tch - cpu| = {d}");
}

#[test]
fn tch_gradients_match_cpu() {
    let tokens = grammar_text(40, 5);
    let config = tiny().with_max_seq_len(32);
    let (cpu, tch) = seeded_with_copy::<B, Autodiff<Tch>>(&config, 3);
    // Against the portable composites (the CPU backend's own fused ops off).
    let (la, ga) = without_fused_ops(|| loss_and_grads(&cpu, &tokens, (4, 32)));
    let (lb, gb) = loss_and_grads(&tch, &tokens, (4, 32));
    assert!((la - lb).abs() < 1e-4, "loss cpu {la} vs tch {lb}");
    assert_grads_close(&ga, &gb, 1e-3);
}
