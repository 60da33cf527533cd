//! Proof that the decoder learns, and that checkpoints are exact.

mod common;

use common::*;
use datamix_decoder::checkpoint::{save_weights, to_host};
use datamix_decoder::{EvalConfig, Packer, Trainer, evaluate};

#[test]
fn tiny_model_learns_well_below_unigram_entropy() {
    let train = grammar_text(3000, 1);
    let held_out = grammar_text(150, 2);
    let h1 = unigram_entropy(&held_out);
    let device = Default::default();
    let mut trainer = Trainer::<B>::new(tiny(), train_cfg(150), &device).unwrap();
    let mut packer = Packer::new(chunks(&train, 100).cycle(), 8, 64);
    let stats = trainer.fit(&mut packer, 150, |_| {}).unwrap();
    assert_eq!(stats.len(), 150);
    let eval = evaluate(
        &trainer.inference_model(),
        &held_out,
        &EvalConfig::new(64),
        &device,
    )
    .unwrap();
    assert_eq!(eval.logprobs.len(), held_out.len() - 1);
    // A model that ignores context can at best reach the unigram entropy
    // (~2.9 nats here). The grammar's words are nearly deterministic given a
    // few previous characters, so a model that uses context must go far below:
    // we ask for less than 40% of the unigram entropy.
    assert!(
        eval.mean_ce < 0.4 * h1,
        "held-out CE {:.3} nats vs unigram entropy {:.3}",
        eval.mean_ce,
        h1
    );
    assert!((eval.perplexity - eval.mean_ce.exp()).abs() < 1e-9);
    assert!(stats.last().unwrap().loss < stats[0].loss);
}

#[test]
fn save_then_load_gives_bit_identical_evaluation() {
    let tokens = grammar_text(200, 3);
    let device = Default::default();
    let mut trainer = Trainer::<B>::new(tiny(), train_cfg(5), &device).unwrap();
    let mut packer = Packer::new(chunks(&tokens, 64).cycle(), 4, 64);
    trainer.fit(&mut packer, 5, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let model = trainer.inference_model();
    save_weights(&model, trainer.config(), &path).unwrap();
    let loaded = trainer
        .config()
        .load_weights::<Inner>(&path, &device)
        .unwrap();
    assert_eq!(to_host(&model), to_host(&loaded));
    let cfg = EvalConfig {
        window: 32,
        stride: 16,
        batch_size: 3,
    };
    let a = evaluate(&model, &tokens, &cfg, &device).unwrap();
    let b = evaluate(&loaded, &tokens, &cfg, &device).unwrap();
    assert_eq!(a.logprobs, b.logprobs);
}

#[test]
fn resume_equals_uninterrupted_training() {
    let tokens = grammar_text(400, 4);
    let device = Default::default();
    let source = || chunks(&tokens, 37); // uneven items exercise the cursor
    let cfg = train_cfg(8);

    let mut straight = Trainer::<B>::new(tiny(), cfg.clone(), &device).unwrap();
    let mut p = Packer::new(source(), 4, 64);
    let full = straight.fit(&mut p, 6, |_| {}).unwrap();

    let mut first = Trainer::<B>::new(tiny(), cfg, &device).unwrap();
    let mut p = Packer::new(source(), 4, 64);
    let head = first.fit(&mut p, 3, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    first.save(dir.path()).unwrap();
    drop(first);

    let mut resumed = Trainer::<B>::resume(dir.path(), &device).unwrap();
    assert_eq!(resumed.step(), 3);
    let mut p = Packer::resume(source(), 4, 64, resumed.cursor().clone());
    let tail = resumed.fit(&mut p, 3, |_| {}).unwrap();

    let losses: Vec<f32> = head.iter().chain(&tail).map(|s| s.loss).collect();
    let expected: Vec<f32> = full.iter().map(|s| s.loss).collect();
    assert_eq!(losses, expected);
    assert_eq!(
        to_host(&straight.inference_model()),
        to_host(&resumed.inference_model())
    );
}

#[test]
fn continued_pretraining_rewarms_and_keeps_optimizer_state() {
    let tokens = grammar_text(300, 5);
    let device = Default::default();
    let mut seed = Trainer::<B>::new(tiny(), train_cfg(4), &device).unwrap();
    let mut p = Packer::new(chunks(&tokens, 64).cycle(), 4, 64);
    seed.fit(&mut p, 4, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    seed.save(dir.path()).unwrap();

    let cont = train_cfg(20);
    let mut branch = Trainer::<B>::from_seed(dir.path(), cont.clone(), &device).unwrap();
    assert_eq!(branch.step(), 4, "step count continues from the seed");
    assert_eq!(branch.current_lr(), cont.lr_at(0), "the schedule restarts");
    assert!(branch.cursor().items == 0, "fresh data cursor");
    assert_eq!(
        to_host(&branch.inference_model()),
        to_host(&seed.inference_model())
    );
    // Keeping the moments: the first branch step differs from a step with fresh moments.
    let batch = Packer::new(chunks(&tokens, 64), 4, 64).next().unwrap();
    let with_state = branch.step_on(std::slice::from_ref(&batch)).unwrap();
    assert_eq!(with_state.step, 5);
    std::fs::remove_file(dir.path().join("optimizer.safetensors")).unwrap();
    assert!(Trainer::<B>::from_seed(dir.path(), cont, &device).is_err());
}
