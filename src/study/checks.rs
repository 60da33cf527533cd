//! Checks over the whole study config before any work starts (called by
//! [`StudyConfig::validate`]), and the checks that need the data, run as soon as it is known
//! (before any model trains).
//!
//! Every message names the full key (`continued.min_lr_ratio`) and the allowed range.
//! Arithmetic on user numbers is checked: nothing here overflows, wraps or allocates.
//!
//! **Upper bounds.** Fixed ones, far above any sensible study:
//! `data.vocab_size <= 2^20` (for a trained BPE), `mixtures.count <= 10 000` (each is a
//! trained model), `mixtures.alpha` in `[1e-3, 1e6]` (outside, Dirichlet draws underflow or
//! overflow and never finish), and token counts (`steps × batch_size × seq_len`) that fit in `u64`.
//! Machine-fitting ones: a *lower bound* of the peak memory of one training step,
//! [`memory_estimate`], must not exceed the machine's memory (`MemTotal` of
//! `/proc/meminfo`; not checked where that is unknown). The estimate counts the f32
//! parameters with their gradients and two AdamW moments (16 bytes per parameter), the
//! logits of one batch (`batch_size × seq_len × vocab × 4` bytes, at least 16 windows: the
//! evaluation batch) and one activation per layer (`batch_size × seq_len × d_model × 4 ×
//! n_layers`); real use is higher, so a config it rejects can never fit, and one it
//! accepts may still run out of memory.

use datamix_decoder::DecoderError;
use datamix_optimizer::{SearchSpace, TokenLimits};

use super::config::{RunConfig, StudyConfig};
use crate::error::Error;

/// Largest `data.vocab_size` for a BPE trained on the corpus.
pub const MAX_VOCAB: usize = 1 << 20;
/// Largest `mixtures.count`.
pub const MAX_MIXTURES: usize = 10_000;
/// Smallest `mixtures.alpha`.
pub const MIN_ALPHA: f64 = 1e-3;
/// Largest `mixtures.alpha`.
pub const MAX_ALPHA: f64 = 1e6;

/// Every check that needs only the config (see the module docs).
pub(super) fn check(cfg: &StudyConfig) -> Result<(), String> {
    if cfg.out_dir.as_os_str().is_empty() {
        return Err("out_dir = \"\" (expected a directory path)".into());
    }
    if cfg.data.corpus.as_os_str().is_empty() {
        return Err("data.corpus = \"\" (expected a file or folder)".into());
    }
    if !cfg.backend.is_available() {
        let avail: Vec<String> = datamix_decoder::BackendKind::available()
            .iter()
            .map(|b| b.to_string())
            .collect();
        return Err(format!(
            "backend = {:?}: not compiled into this build (available: {})",
            cfg.backend.to_string(),
            avail.join(", ")
        ));
    }
    let d = &cfg.data;
    if d.tokenizer.is_none() && d.vocab_size > MAX_VOCAB {
        return Err(format!(
            "data.vocab_size = {} (expected in [260, {MAX_VOCAB}])",
            d.vocab_size
        ));
    }
    for (name, r) in [
        ("seed_model", &cfg.seed_model),
        ("continued", &cfg.continued),
    ] {
        run(name, r, d.seq_len)?;
    }
    if cfg.mixtures.count > MAX_MIXTURES {
        return Err(format!(
            "mixtures.count = {} (expected in [2, {MAX_MIXTURES}]: each mixture is a trained model)",
            cfg.mixtures.count
        ));
    }
    // Dirichlet draws: below this alpha every Gamma sample underflows to 0 (above the upper
    // bound their sum overflows), and drawing a mixture would never finish.
    let alpha = cfg.mixtures.alpha;
    if !(MIN_ALPHA..=MAX_ALPHA).contains(&alpha) {
        return Err(format!(
            "mixtures.alpha = {alpha} (expected in [{MIN_ALPHA}, {MAX_ALPHA}])"
        ));
    }
    // Search feasibility needs the domains' token counts: `search_bounds`, after partitioning.
    // The architecture: preset name and head arithmetic, before any data is read. The
    // vocabulary of a given tokenizer file is not known yet: a stand-in is enough for
    // these checks, and `memory` runs again with the real one.
    let vocab = if d.tokenizer.is_none() {
        d.vocab_size
    } else {
        4096
    };
    model(cfg, vocab)?;
    if d.tokenizer.is_none() {
        memory(cfg, vocab)?;
    }
    Ok(())
}

/// Checks one run's schedule (`name` is its section).
fn run(name: &str, r: &RunConfig, seq_len: usize) -> Result<(), String> {
    if !(r.min_lr_ratio >= 0.0 && r.min_lr_ratio <= 1.0) {
        return Err(format!(
            "{name}.min_lr_ratio = {} (expected in [0, 1])",
            r.min_lr_ratio
        ));
    }
    if (r.batch_size as u64)
        .checked_mul(seq_len as u64)
        .and_then(|t| t.checked_mul(r.steps))
        // The sampler's budget adds one sequence.
        .and_then(|t| t.checked_add(seq_len as u64))
        .is_none()
    {
        return Err(format!(
            "{name}.steps × {name}.batch_size × data.seq_len = {} × {} × {} tokens does not fit \
             in 64 bits (expected at most {})",
            r.steps,
            r.batch_size,
            seq_len,
            u64::MAX
        ));
    }
    Ok(())
}

/// The decoder config the study will build, with errors named by their key.
fn model(cfg: &StudyConfig, vocab: usize) -> Result<datamix_decoder::DecoderConfig, String> {
    cfg.model
        .decoder(vocab, cfg.data.seq_len)
        .map_err(|e| match e {
            Error::Decoder(DecoderError::InvalidConfig { field, reason }) => {
                format!("model.{field} (preset {:?}): {reason}", cfg.model.preset)
            }
            other => format!("model.preset = {:?}: {other}", cfg.model.preset),
        })
}

/// A lower bound of the peak memory of one training step, in bytes (see the module docs).
pub fn memory_estimate(cfg: &StudyConfig, m: &datamix_decoder::DecoderConfig) -> f64 {
    let (v, d, l) = (m.vocab_size as f64, m.d_model as f64, m.n_layers as f64);
    let kv = (m.n_kv_heads * (m.d_model / m.n_heads.max(1))) as f64;
    let hidden = (m.mlp_ratio * d).ceil();
    let embed = v * d * if m.tied_embeddings { 1.0 } else { 2.0 };
    let params = embed + l * (2.0 * d * d + 2.0 * d * kv + 3.0 * d * hidden);
    let batch = cfg
        .seed_model
        .batch_size
        .max(cfg.continued.batch_size)
        .max(16) as f64;
    let s = cfg.data.seq_len as f64;
    16.0 * params + batch * s * v * 4.0 + batch * s * d * 4.0 * l
}

/// The machine's memory in bytes (`MemTotal`), if known.
fn machine_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Rejects a config whose [`memory_estimate`] with vocabulary `vocab` exceeds `limit` bytes.
fn memory_within(cfg: &StudyConfig, vocab: usize, limit: f64) -> Result<(), String> {
    let m = model(cfg, vocab)?;
    let need = memory_estimate(cfg, &m);
    if need > limit {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        return Err(format!(
            "the model and batch need at least {:.1} GiB for one training step, more than \
             this machine's {:.1} GiB: lower data.vocab_size (now {vocab}), \
             seed_model.batch_size / continued.batch_size (now {} / {}), data.seq_len (now {}) \
             or the model size (model.d_model = {}, model.n_layers = {})",
            gib(need),
            gib(limit),
            cfg.seed_model.batch_size,
            cfg.continued.batch_size,
            cfg.data.seq_len,
            m.d_model,
            m.n_layers
        ));
    }
    Ok(())
}

/// The memory check with a known vocabulary (a given tokenizer's, once loaded).
pub fn memory(cfg: &StudyConfig, vocab: usize) -> Result<(), String> {
    match machine_memory() {
        Some(limit) => memory_within(cfg, vocab, limit),
        None => Ok(()),
    }
}

/// Whether `search.min_weight` and `search.max_epochs` leave any mixture over the
/// domains, given each domain's training tokens: checked once the corpus is partitioned,
/// before any model trains (the same space the search builds at the end).
pub fn search_bounds(
    cfg: &StudyConfig,
    domains: &[String],
    domain_tokens: &[u64],
) -> Result<(), String> {
    let k = domains.len();
    let s = &cfg.search;
    if s.min_weight * k as f64 > 1.0 + 1e-12 {
        return Err(format!(
            "search.min_weight = {} with {k} domains: {k} × {} > 1, no mixture is possible \
             (expected in [0, {}])",
            s.min_weight,
            s.min_weight,
            1.0 / k as f64
        ));
    }
    let mut b = SearchSpace::builder_named(domains.to_vec()).lower(vec![s.min_weight; k]);
    if let Some(e) = s.max_epochs {
        b = b.token_limits(TokenLimits {
            budget: cfg.continued.tokens(cfg.data.seq_len) as f64,
            tokens: domain_tokens.iter().map(|&t| t as f64).collect(),
            max_epochs: vec![e; k],
        });
    }
    b.build().map(|_| ()).map_err(|e| {
        format!(
            "search.min_weight = {} / search.max_epochs = {:?}: no feasible mixture for these \
             domains at the continued budget of {} tokens: {e}",
            s.min_weight,
            s.max_epochs,
            cfg.continued.tokens(cfg.data.seq_len)
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SMALL: &str = include_str!("../../configs/study-small.toml");

    fn with(replace: &[(&str, &str)]) -> Result<StudyConfig, String> {
        let mut text = SMALL.to_string();
        for (a, b) in replace {
            assert!(text.contains(a), "{a}");
            text = text.replacen(a, b, 1);
        }
        StudyConfig::from_toml(&text, Path::new("s.toml")).map_err(|e| e.to_string())
    }

    fn err(replace: &[(&str, &str)]) -> String {
        with(replace).expect_err("must be rejected")
    }

    #[test]
    fn the_shipped_config_passes() {
        with(&[]).unwrap();
    }

    #[test]
    fn huge_step_counts_are_errors_not_overflows() {
        let e = err(&[("steps = 300", "steps = 18446744073709551615")]);
        assert!(
            e.contains("seed_model.steps") && e.contains("64 bits"),
            "{e}"
        );
        let e = err(&[("steps = 60", "steps = 100000000000000000")]);
        assert!(e.contains("continued.steps"), "{e}");
        let e = err(&[("batch_size = 8", "batch_size = 1152921504606846976")]);
        assert!(e.contains("seed_model.batch_size"), "{e}");
        // Saturating, not wrapping, where a caller computes it anyway.
        let r = RunConfig {
            steps: u64::MAX,
            batch_size: 8,
            lr: 1e-3,
            warmup_steps: 0,
            min_lr_ratio: 0.1,
            checkpoint_every: 0,
        };
        assert_eq!(r.tokens(128), u64::MAX);
    }

    #[test]
    fn min_lr_ratio_must_be_in_0_1() {
        for bad in ["-0.1", "1.5", "nan"] {
            let e = err(&[("lr = 1e-3", &format!("lr = 1e-3\nmin_lr_ratio = {bad}"))]);
            assert!(
                e.contains("continued.min_lr_ratio") && e.contains("[0, 1]"),
                "{e}"
            );
        }
        with(&[("lr = 1e-3", "lr = 1e-3\nmin_lr_ratio = 1.0")]).unwrap();
    }

    #[test]
    fn huge_vocab_mixtures_and_batches_are_rejected_up_front() {
        let e = err(&[("vocab_size = 2048", "vocab_size = 1000000000")]);
        assert!(
            e.contains("data.vocab_size") && e.contains("1048576"),
            "{e}"
        );
        let e = err(&[("count = 16", "count = 100000000000")]);
        assert!(e.contains("mixtures.count") && e.contains("10000"), "{e}");
        // 1e5 sequences of 128 tokens over a 2048 vocabulary: ~100 GB of logits.
        let cfg = with(&[]).unwrap();
        let mut big = cfg.clone();
        big.seed_model.batch_size = 100_000;
        let e = memory_within(&big, 2048, 64.0 * (1u64 << 30) as f64).unwrap_err();
        assert!(e.contains("GiB") && e.contains("batch_size"), "{e}");
        memory_within(&cfg, 2048, 64.0 * (1u64 << 30) as f64).unwrap();
        let m = model(&cfg, 2048).unwrap();
        assert!(memory_estimate(&cfg, &m) < 1e9);
    }

    #[test]
    fn extreme_dirichlet_alpha_is_rejected() {
        for bad in ["1e-300", "1e300"] {
            let e = err(&[("alpha = 1.0", &format!("alpha = {bad}"))]);
            assert!(e.contains("mixtures.alpha") && e.contains("0.001"), "{e}");
        }
        // The bounds themselves draw mixtures in finite time.
        for alpha in [MIN_ALPHA, MAX_ALPHA] {
            let m = super::super::draw_mixtures(8, 50, alpha, 3);
            assert_eq!(m.len(), 50);
        }
    }

    #[test]
    fn a_backend_not_compiled_in_is_named() {
        let missing = datamix_decoder::BackendKind::ALL
            .into_iter()
            .find(|b| !b.is_available());
        if let Some(b) = missing {
            let e = err(&[("backend = \"cpu\"", &format!("backend = \"{b}\""))]);
            assert!(e.contains("backend") && e.contains("not compiled"), "{e}");
        }
    }

    #[test]
    fn empty_out_dir_and_bad_architecture_are_named() {
        let e = err(&[("out_dir = \"runs/study-small\"", "out_dir = \"\"")]);
        assert!(e.contains("out_dir"), "{e}");
        let e = err(&[("preset = \"tiny\"", "preset = \"huge\"")]);
        assert!(e.contains("model.preset"), "{e}");
        let e = err(&[("preset = \"tiny\"", "preset = \"tiny\"\nn_heads = 7")]);
        assert!(e.contains("model."), "{e}");
    }

    #[test]
    fn infeasible_search_bounds_are_found_from_the_domains() {
        let mut cfg = with(&[]).unwrap();
        let names: Vec<String> = (0..8).map(|i| format!("d{i}")).collect();
        let tokens = vec![1_000_000u64; 8];
        search_bounds(&cfg, &names, &tokens).unwrap();
        cfg.search.min_weight = 0.5;
        let e = search_bounds(&cfg, &names, &tokens).unwrap_err();
        assert!(
            e.contains("search.min_weight") && e.contains("8 domains"),
            "{e}"
        );
        cfg.search.min_weight = 0.125;
        search_bounds(&cfg, &names, &tokens).unwrap();
        // Too few tokens for the budget at one epoch per domain.
        cfg.search.min_weight = 0.0;
        cfg.search.max_epochs = Some(1.0);
        let budget = cfg.continued.tokens(cfg.data.seq_len);
        let e = search_bounds(&cfg, &names, &[budget / 100; 8]).unwrap_err();
        assert!(e.contains("search.max_epochs"), "{e}");
        search_bounds(&cfg, &names, &[budget; 8]).unwrap();
    }
}
