//! Evaluation: the log-probability of every true next token of a stream,
//! windowed so memory does not grow with the stream's length.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{DecoderError, Result};
use crate::model::Decoder;

/// How a stream is cut into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Tokens of context per window (<= the model's `max_seq_len`).
    pub window: usize,
    /// New tokens scored per window after the first (1..=window). With
    /// `stride == window` windows do not overlap; a smaller stride gives every
    /// scored token at least `window - stride` tokens of context.
    pub stride: usize,
    /// Windows per forward pass.
    pub batch_size: usize,
}

impl EvalConfig {
    /// Non-overlapping windows of `window` tokens, 8 per forward pass.
    pub fn new(window: usize) -> Self {
        Self {
            window,
            stride: window,
            batch_size: 8,
        }
    }
}

/// Per-token results for one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// `logprobs[t - 1] = ln P(x_t | x_<t)` for `t = 1..T` (the first token
    /// has no prefix and is not scored): `T - 1` values.
    pub logprobs: Vec<f32>,
    /// Mean cross-entropy in nats per token (f64 accumulation).
    pub mean_ce: f64,
    /// `exp(mean_ce)`.
    pub perplexity: f64,
}

impl EvalResult {
    /// Builds the summary from per-token log-probabilities.
    pub fn from_logprobs(logprobs: Vec<f32>) -> Self {
        let n = logprobs.len().max(1) as f64;
        let mean_ce = -logprobs.iter().map(|&x| x as f64).sum::<f64>() / n;
        Self {
            logprobs,
            mean_ce,
            perplexity: mean_ce.exp(),
        }
    }
}

/// A window: inputs `tokens[start..start + len]`, scoring its last `score` targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start: usize,
    len: usize,
    score: usize,
}

/// Windows covering targets `1..n` (see [`EvalConfig::stride`]).
fn windows(n: usize, window: usize, stride: usize) -> Vec<Window> {
    let mut out = Vec::new();
    let mut next = 1; // next target index to score
    while next < n {
        let last = if next == 1 {
            window.min(n - 1)
        } else {
            (next + stride - 1).min(n - 1)
        };
        let start = last.saturating_sub(window);
        out.push(Window {
            start,
            len: last - start,
            score: last + 1 - next,
        });
        next = last + 1;
    }
    out
}

/// Scores every next token of `tokens` with `model` (no autodiff graph: pass a
/// model on an inference backend, e.g. `trainer.inference_model()`).
pub fn evaluate<B: Backend>(
    model: &Decoder<B>,
    tokens: &[u32],
    cfg: &EvalConfig,
    device: &B::Device,
) -> Result<EvalResult> {
    let max = model.rope.freq_complex.dims()[0];
    if cfg.window == 0 || cfg.window > max {
        return Err(DecoderError::InvalidConfig {
            field: "window",
            reason: format!("{} must be in 1..={max} (max_seq_len)", cfg.window),
        });
    }
    if cfg.stride == 0 || cfg.stride > cfg.window {
        return Err(DecoderError::InvalidConfig {
            field: "stride",
            reason: format!("{} must be in 1..={}", cfg.stride, cfg.window),
        });
    }
    if cfg.batch_size == 0 {
        return Err(DecoderError::InvalidConfig {
            field: "batch_size",
            reason: "must be at least 1".into(),
        });
    }
    if tokens.len() < 2 {
        return Err(DecoderError::InvalidInput(format!(
            "token stream has {} tokens; at least 2 are needed to score one",
            tokens.len()
        )));
    }
    let vocab = model.embed.weight.dims()[0];
    if let Some((position, &token)) = tokens
        .iter()
        .enumerate()
        .find(|(_, t)| **t as usize >= vocab)
    {
        return Err(DecoderError::TokenOutOfRange {
            token,
            position,
            vocab_size: vocab,
        });
    }
    let ws = windows(tokens.len(), cfg.window, cfg.stride);
    let mut logprobs = Vec::with_capacity(tokens.len() - 1);
    // All windows have the same length except when the stream is shorter than one window.
    for group in ws.chunks(cfg.batch_size) {
        let (b, s) = (group.len(), group[0].len);
        let mut x = Vec::with_capacity(b * s);
        let mut y = Vec::with_capacity(b * s);
        for w in group {
            debug_assert_eq!(w.len, s);
            x.extend(tokens[w.start..w.start + s].iter().map(|&t| t as i64));
            y.extend(
                tokens[w.start + 1..w.start + s + 1]
                    .iter()
                    .map(|&t| t as i64),
            );
        }
        let x = Tensor::<B, 2, Int>::from_data(TensorData::new(x, [b, s]), device);
        let y = Tensor::<B, 2, Int>::from_data(TensorData::new(y, [b, s]), device);
        let lp = model
            .token_logprobs(x, y)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32");
        for (i, w) in group.iter().enumerate() {
            logprobs.extend_from_slice(&lp[i * s + s - w.score..(i + 1) * s]);
        }
    }
    Ok(EvalResult::from_logprobs(logprobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_score_every_target_once() {
        for n in [2, 3, 10, 17, 64, 65, 100] {
            for window in [1, 4, 8, 16] {
                for stride in 1..=window {
                    let ws = windows(n, window, stride);
                    let mut scored = Vec::new();
                    for w in &ws {
                        assert!(w.len <= window && w.score <= w.len && w.score > 0);
                        assert!(w.start + w.len < n);
                        scored.extend(w.start + w.len + 1 - w.score..=w.start + w.len);
                        if n > window {
                            assert_eq!(w.len, window, "equal lengths allow batching");
                        }
                    }
                    assert_eq!(
                        scored,
                        (1..n).collect::<Vec<_>>(),
                        "n={n} w={window} s={stride}"
                    );
                }
            }
        }
    }
}
