//! Model configuration and named presets.

use burn::config::Config;

use crate::error::DecoderError;

/// Which normalisation the pre-norm and the final norm use.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// RMSNorm (scale only).
    Rms,
    /// LayerNorm without bias (PaLM).
    LayerNoBias,
}

/// Architecture of a PaLM-like decoder: parallel attention + SwiGLU MLP blocks
/// from one shared pre-norm, RoPE, causal multi-query (or grouped-query)
/// attention, no biases.
///
/// Build one from a preset ([`DecoderConfig::preset`]) or field by field, then
/// call [`DecoderConfig::validate`] (done by `init`).
#[derive(Config, Debug, PartialEq)]
pub struct DecoderConfig {
    /// Vocabulary size (rows of the embedding table).
    pub vocab_size: usize,
    /// Model width.
    pub d_model: usize,
    /// Number of parallel blocks.
    pub n_layers: usize,
    /// Number of query heads; `d_model` must be divisible by it.
    pub n_heads: usize,
    /// Number of key/value heads (1 = multi-query attention as in PaLM);
    /// `n_heads` must be divisible by it.
    #[config(default = 1)]
    pub n_kv_heads: usize,
    /// SwiGLU hidden width as a multiple of `d_model` (rounded up to a multiple of 8).
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Longest sequence the model is trained or evaluated on (RoPE table size).
    #[config(default = 256)]
    pub max_seq_len: usize,
    /// Normalisation kind.
    #[config(default = "NormKind::Rms")]
    pub norm: NormKind,
    /// Normalisation epsilon.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Share the input embedding with the output projection.
    #[config(default = true)]
    pub tied_embeddings: bool,
    /// RoPE base frequency.
    #[config(default = 10000.0)]
    pub rope_theta: f32,
    /// Standard deviation of the normal initialisation of weight matrices.
    #[config(default = 0.02)]
    pub init_std: f64,
}

/// Names accepted by [`DecoderConfig::preset`].
pub const PRESETS: [&str; 5] = ["tiny", "small", "m70", "m130", "m1b"];

impl DecoderConfig {
    /// A named preset for a given vocabulary size.
    ///
    /// | preset | d_model | layers | heads (kv) | mlp | seq | params (vocab 50,257) |
    /// |---|---|---|---|---|---|---|
    /// | `tiny` | 64 | 2 | 4 (1) | 4x | 128 | < 1M at vocab <= 4,096 (tests) |
    /// | `small` | 256 | 8 | 8 (1) | 4x | 256 | ~10M at vocab 8,192 (CPU studies) |
    /// | `m70` | 512 | 6 | 8 (1) | 4x | 1024 | ~70M, untied (GPU) |
    /// | `m130` | 768 | 12 | 12 (1) | 4x | 1024 | ~120M, tied (GPU) |
    /// | `m1b` | 2048 | 22 | 32 (4) | 2.75x | 2048 | ~1.1B (GPU) |
    pub fn preset(name: &str, vocab_size: usize) -> std::result::Result<Self, DecoderError> {
        let c = match name {
            "tiny" => Self::new(vocab_size, 64, 2, 4).with_max_seq_len(128),
            "small" => Self::new(vocab_size, 256, 8, 8),
            "m70" => Self::new(vocab_size, 512, 6, 8)
                .with_max_seq_len(1024)
                .with_tied_embeddings(false),
            "m130" => Self::new(vocab_size, 768, 12, 12).with_max_seq_len(1024),
            "m1b" => Self::new(vocab_size, 2048, 22, 32)
                .with_n_kv_heads(4)
                .with_mlp_ratio(2.75)
                .with_max_seq_len(2048)
                .with_tied_embeddings(false),
            other => return Err(DecoderError::UnknownPreset(other.to_string())),
        };
        Ok(c)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// SwiGLU hidden width.
    pub fn mlp_hidden(&self) -> usize {
        let h = (self.mlp_ratio * self.d_model as f64).ceil() as usize;
        h.div_ceil(8) * 8
    }

    /// Number of trainable parameters this config implies.
    pub fn num_params(&self) -> usize {
        let d = self.d_model;
        let kv = self.n_kv_heads * self.head_dim();
        let per_layer = d // norm
            + d * d * 2 // q, o
            + d * kv * 2 // k, v
            + d * self.mlp_hidden() * 3; // gate, up, down
        let embed = self.vocab_size * d;
        let head = if self.tied_embeddings { 0 } else { embed };
        embed + head + self.n_layers * per_layer + d
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> std::result::Result<(), DecoderError> {
        let bad = |field, reason: String| Err(DecoderError::InvalidConfig { field, reason });
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.vocab_size > u32::MAX as usize {
            return bad("vocab_size", "must fit in u32".into());
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(
                "d_model",
                format!(
                    "{} is not divisible by n_heads = {}",
                    self.d_model, self.n_heads
                ),
            );
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "n_kv_heads",
                format!(
                    "n_heads = {} is not divisible by n_kv_heads = {}",
                    self.n_heads, self.n_kv_heads
                ),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(
                "n_heads",
                format!("head dim {} must be even for RoPE", self.head_dim()),
            );
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) {
            return bad(
                "mlp_ratio",
                format!("{} is not a positive number", self.mlp_ratio),
            );
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return bad(
                "norm_eps",
                format!("{} is not a positive number", self.norm_eps),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad("rope_theta", format!("{} must be > 1", self.rope_theta));
        }
        if !(self.init_std.is_finite() && self.init_std > 0.0) {
            return bad(
                "init_std",
                format!("{} is not a positive number", self.init_std),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_have_documented_sizes() {
        for name in PRESETS {
            DecoderConfig::preset(name, 50_257)
                .unwrap()
                .validate()
                .unwrap();
        }
        assert!(DecoderConfig::preset("tiny", 4096).unwrap().num_params() < 1_000_000);
        let small = DecoderConfig::preset("small", 8192).unwrap().num_params();
        assert!((8_000_000..12_000_000).contains(&small), "{small}");
        let m1b = DecoderConfig::preset("m1b", 32_000).unwrap().num_params();
        assert!((1_000_000_000..1_200_000_000).contains(&m1b), "{m1b}");
        assert!(matches!(
            DecoderConfig::preset("huge", 10),
            Err(DecoderError::UnknownPreset(_))
        ));
    }

    #[test]
    fn invalid_fields_are_named() {
        let c = DecoderConfig::new(100, 65, 2, 4);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("d_model") && e.contains("n_heads"), "{e}");
        let c = DecoderConfig::new(100, 64, 2, 4).with_n_kv_heads(3);
        assert!(c.validate().unwrap_err().to_string().contains("n_kv_heads"));
        let c = DecoderConfig::new(0, 64, 2, 4);
        assert!(c.validate().unwrap_err().to_string().contains("vocab_size"));
        let c = DecoderConfig::new(10, 12, 1, 4); // head dim 3 is odd
        assert!(c.validate().unwrap_err().to_string().contains("RoPE"));
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = DecoderConfig::preset("m1b", 321).unwrap();
        let s = serde_json::to_string(&c).unwrap();
        let back: DecoderConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(c, back);
    }
}
