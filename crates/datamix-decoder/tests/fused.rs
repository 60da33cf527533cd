//! The fused CPU ops (`flex`: attention, target log-probabilities, SwiGLU gate, RMSNorm,
//! RoPE, linear, the AdamW update and gradient norm) against Burn's portable composites
//! they replace: the same weights give the same loss, the same gradient for every weight,
//! and the same per-token evaluation, and training gives the same curve.
#![cfg(feature = "cpu")]

mod common;

use common::*;
use datamix_decoder::{EvalConfig, Packer, StepStats, Trainer, evaluate, without_fused_ops};

#[test]
fn fused_ops_match_the_composites_in_loss_and_every_gradient() {
    let tokens = grammar_text(200, 5);
    // Tied and untied heads: the logits' gradient flows into the embedding or the head.
    // Sequences of 32 are one attention block; of 150, two full blocks and a partial one.
    for (tied, batch) in [(true, (4, 32)), (false, (4, 32)), (true, (2, 150))] {
        let config = tiny().with_max_seq_len(batch.1).with_tied_embeddings(tied);
        let model = config.init_seeded::<B>(11, &Default::default()).unwrap();
        let (fused, fused_grads) = loss_and_grads(&model, &tokens, batch);
        let (plain, plain_grads) = without_fused_ops(|| loss_and_grads(&model, &tokens, batch));
        assert!(
            (fused - plain).abs() < 1e-5,
            "loss fused {fused} vs composite {plain} ({batch:?})"
        );
        assert_grads_close(&fused_grads, &plain_grads, 1e-4);
    }
}

#[test]
fn fused_evaluation_matches_the_composites() {
    let tokens = grammar_text(60, 9);
    let config = tiny().with_max_seq_len(32);
    let model = config.init_seeded::<Inner>(7, &Default::default()).unwrap();
    let cfg = EvalConfig::new(32);
    let device = Default::default();
    let fused = evaluate(&model, &tokens, &cfg, &device).unwrap();
    let plain = without_fused_ops(|| evaluate(&model, &tokens, &cfg, &device)).unwrap();
    let d = max_abs_diff(&fused.logprobs, &plain.logprobs);
    assert!(d < 1e-5, "max |fused - composite| = {d}");
}

/// Per-step stats of `steps` steps of `tiny` with gradient accumulation and a clipping
/// threshold low enough to clip every step, and the trained model's evaluation.
fn short_training(steps: u64) -> (Vec<StepStats>, Vec<f32>) {
    let tokens = grammar_text(200, 13);
    let train = datamix_decoder::TrainConfig {
        batch_size: 4,
        grad_accum: 2,
        grad_clip: Some(0.05),
        ..train_cfg(steps)
    };
    let mut trainer = Trainer::<B>::new(tiny(), train, &Default::default()).unwrap();
    let mut packer = Packer::new(chunks(&tokens, 64).cycle(), 4, 64);
    let stats = trainer.fit(&mut packer, steps, |_| {}).unwrap();
    let eval = evaluate(
        &trainer.inference_model(),
        &tokens,
        &EvalConfig::new(32),
        &Default::default(),
    )
    .unwrap();
    (stats, eval.logprobs)
}

#[test]
fn fused_training_follows_the_composite_curve() {
    let (fused, fused_eval) = short_training(6);
    let (plain, plain_eval) = without_fused_ops(|| short_training(6));
    assert_eq!(fused.len(), 6);
    for (f, p) in fused.iter().zip(&plain) {
        assert!(p.grad_norm > 0.05, "step {} did not clip", p.step);
        assert!(
            (f.loss - p.loss).abs() < 1e-4,
            "step {}: loss {} vs {}",
            f.step,
            f.loss,
            p.loss
        );
        let rel = (f.grad_norm - p.grad_norm).abs() / p.grad_norm;
        assert!(
            rel < 1e-3,
            "step {}: grad norm {} vs {}",
            f.step,
            f.grad_norm,
            p.grad_norm
        );
    }
    // The training moved the model: its evaluation differs from the first step's loss.
    let mean = |v: &[f32]| -v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    assert!(mean(&plain_eval) < plain[0].loss as f64 - 0.05);
    let d = max_abs_diff(&fused_eval, &plain_eval);
    assert!(
        d < 1e-3,
        "max |fused - composite| log-probability after training = {d}"
    );
}
