//! The fused CPU ops (`flex`: attention, target log-probabilities, SwiGLU gate, RMSNorm,
//! RoPE) against Burn's portable composites they replace: the same weights give the same
//! loss, the same gradient for every weight, and the same per-token evaluation.
#![cfg(feature = "cpu")]

mod common;

use common::*;
use datamix_decoder::{EvalConfig, evaluate, without_fused_ops};

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
