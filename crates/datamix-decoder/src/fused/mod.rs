//! Fused ops: each one Burn autodiff op with a hand-written backward pass, instead of the
//! composite of small ops that Burn's autodiff records and replays one by one.
//!
//! | op | composite it replaces | `flex` (default CPU) | `tch` (LibTorch) |
//! |---|---|---|---|
//! | causal multi-query attention | matmul, scale, mask add, softmax, matmul | per block of 64 queries: 2 gemms over the keys it sees + a masked-softmax row kernel (the upper triangle is skipped) | PyTorch's CPU flash attention |
//! | target log-probabilities | `log_softmax` + gather | one row pass forward, one back (in place of the logits) | libtorch's fused `log_softmax` |
//! | SwiGLU gate `silu(g) ⊙ u` | sigmoid, 2 muls | elementwise kernel | composite |
//! | RMSNorm | square, mean, add, sqrt, div, mul | row kernel | composite |
//! | RoPE | pair-swap matmul, 2 broadcast muls, add | in-place row kernel | composite |
//! | bias-free linear `x W` | one batched matmul per batch entry, batch-summed weight gradient | one gemm over all rows, each way, no zero-fill | composite |
//! | AdamW update (no autodiff) | 11 elementwise passes, each allocating | one parallel pass, in place | composite |
//! | gradient norm `Σ g²` | square, sum | one parallel pass, `f64` sums | composite |
//!
//! The `flex` kernels (private modules `kernels` and `attention`) are plain `f32` slice loops with a
//! vectorised `exp`, compiled per SIMD level by `multiversion` and spread over rayon.
//!
//! Rust has no specialisation, so each entry point checks at run time whether the generic
//! backend *is* one with a fused version (a `TypeId` comparison, with or without
//! `Autodiff`) and returns `None` otherwise: the model then runs the portable composite,
//! which stays the definition every fused version is tested against.
//! [`without_fused_ops`] runs a closure on the composites (for tests and ablations).

use std::any::Any;
use std::cell::Cell;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorPrimitive};

use crate::optim::{AdamWStep, AdamWTensors};

#[cfg(feature = "cpu")]
mod attention;
#[cfg(feature = "cpu")]
mod flex;
#[cfg(feature = "cpu")]
mod kernels;
#[cfg(feature = "tch")]
mod tch;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` with the fused ops turned off on this thread: every model built or run
/// inside it records Burn's portable composites instead, on every backend. For
/// comparisons (the fused ops are tested against the composites, and
/// `benches/decoder.sh` times both); the results agree to rounding.
pub fn without_fused_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENABLED.set(self.0);
        }
    }
    let _restore = Restore(ENABLED.replace(false));
    f()
}

/// Whether fused ops are on for this thread.
fn enabled() -> bool {
    ENABLED.get()
}

/// Causal multi-query attention. `q`: `[batch, seq, heads, head_dim]` (rotated), `k`:
/// `[batch, seq, 1, head_dim]` (rotated), `v`: `[batch, seq, head_dim]` ->
/// `[batch, seq, heads * head_dim]`; `None` where no fused version exists.
#[allow(unused_variables)]
pub(crate) fn mqa_attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 3>,
    scale: f64,
) -> Option<Tensor<B, 3>> {
    if !enabled() {
        return None;
    }
    #[cfg(feature = "tch")]
    if let Some(out) = tch::mqa_attention(q, k, v, scale) {
        return Some(out);
    }
    #[cfg(feature = "cpu")]
    if let Some(out) = flex::mqa_attention(q, k, v, scale) {
        return Some(out);
    }
    None
}

/// `log_softmax(logits)[target]`. `logits`: `[batch, seq, vocab]`, `targets`:
/// `[batch, seq]` -> `[batch, seq]`; `None` where no fused version exists.
#[allow(unused_variables)]
pub(crate) fn target_logprobs<B: Backend>(
    logits: &Tensor<B, 3>,
    targets: &Tensor<B, 2, Int>,
) -> Option<Tensor<B, 2>> {
    if !enabled() {
        return None;
    }
    #[cfg(feature = "tch")]
    if let Some(out) = tch::target_logprobs(logits, targets) {
        return Some(out);
    }
    #[cfg(feature = "cpu")]
    if let Some(out) = flex::target_logprobs(logits, targets) {
        return Some(out);
    }
    None
}

/// SwiGLU's gate `silu(g) ⊙ u`. `g`, `u`: `[batch, seq, hidden]` -> same; `None` where no
/// fused version exists.
#[allow(unused_variables)]
pub(crate) fn silu_mul<B: Backend>(g: &Tensor<B, 3>, u: &Tensor<B, 3>) -> Option<Tensor<B, 3>> {
    if !enabled() {
        return None;
    }
    #[cfg(feature = "cpu")]
    if let Some(out) = flex::silu_mul(g, u) {
        return Some(out);
    }
    None
}

/// RMSNorm `x / sqrt(mean(x²) + eps) ⊙ gamma` over the last axis. `x`:
/// `[batch, seq, d]`, `gamma`: `[d]` -> `[batch, seq, d]`; `None` where no fused version
/// exists.
#[allow(unused_variables)]
pub(crate) fn rms_norm<B: Backend>(
    x: &Tensor<B, 3>,
    gamma: &Tensor<B, 1>,
    eps: f64,
) -> Option<Tensor<B, 3>> {
    if !enabled() {
        return None;
    }
    #[cfg(feature = "cpu")]
    if let Some(out) = flex::rms_norm(x, gamma, eps) {
        return Some(out);
    }
    None
}

/// RoPE: `x ⊙ cos + (x P) ⊙ sin` with `P` the pair rotation. `x`: `[batch, seq, heads,
/// head_dim]` (consumed: the fused version rotates it in place), `cos`, `sin`:
/// `[1, seq, 1, head_dim]` (constants) -> same as `x`; `Err(x)` where no fused version
/// exists.
pub(crate) fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    if !enabled() {
        return Err(x);
    }
    #[cfg(feature = "cpu")]
    let x = match flex::rope(x, cos, sin) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    #[cfg(not(feature = "cpu"))]
    let _ = (cos, sin);
    Err(x)
}

/// Bias-free linear layer `x W`. `x`: `[batch, seq, d_in]`, `w`: `[d_in, d_out]` ->
/// `[batch, seq, d_out]`; `None` where no fused version exists.
#[allow(unused_variables)]
pub(crate) fn linear<B: Backend>(x: &Tensor<B, 3>, w: &Tensor<B, 2>) -> Option<Tensor<B, 3>> {
    if !enabled() {
        return None;
    }
    #[cfg(feature = "cpu")]
    if let Some(out) = flex::linear(x, w) {
        return Some(out);
    }
    None
}

/// One AdamW update of a flat parameter and its moments (see [`AdamWStep`]), in one pass
/// and in place; `Err` with the tensors unchanged where no fused version exists. The
/// results equal the composite's bit for bit.
pub(crate) fn adamw<B: Backend>(
    t: AdamWTensors<B>,
    g: &Tensor<B, 1>,
    step: &AdamWStep,
) -> Result<AdamWTensors<B>, AdamWTensors<B>> {
    if !enabled() {
        return Err(t);
    }
    #[cfg(feature = "cpu")]
    let t = match flex::adamw(t, g, step) {
        Ok(t) => return Ok(t),
        Err(t) => t,
    };
    #[cfg(not(feature = "cpu"))]
    let _ = (g, step);
    Err(t)
}

/// `Σ x²` of a flat tensor, accumulated in `f64` on the host; `None` where no fused
/// version exists.
#[allow(unused_variables)]
pub(crate) fn sum_squares<B: Backend>(x: &Tensor<B, 1>) -> Option<f64> {
    if !enabled() {
        return None;
    }
    #[cfg(feature = "cpu")]
    if let Some(s) = flex::sum_squares(x) {
        return Some(s);
    }
    None
}

/// [`kernels`]'s deterministic pseudo-random table in `[-scale, scale)`, for tests
/// elsewhere in the crate.
#[cfg(all(test, feature = "cpu"))]
pub(crate) fn test_table(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    kernels::tests::table(n, seed, scale)
}

/// Completes a prepared autodiff op with its output `out`, keeping `state` for the
/// backward pass only when some parent is tracked.
#[allow(dead_code)]
fn finish<BK, Op, const N: usize>(
    prep: OpsKind<Op, BK, Op::State, NoCheckpointing, N>,
    state: Op::State,
    out: BK::FloatTensorPrimitive,
) -> burn::tensor::ops::FloatTensor<Autodiff<BK>>
where
    BK: Backend,
    Op: Backward<BK, N>,
    Op::State: Clone + Send + std::fmt::Debug + 'static,
{
    match prep {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// The float primitive of `t` as backend `BK`'s, which the caller has checked (by
/// `TypeId`) to be `B`.
#[allow(dead_code)]
fn float<B: Backend, BK: Backend, const D: usize>(t: &Tensor<B, D>) -> BK::FloatTensorPrimitive {
    cast::<_, Tensor<BK, D>>(t.clone())
        .into_primitive()
        .tensor()
}

/// The integer primitive of `t` as backend `BK`'s, checked to be `B`.
#[allow(dead_code)]
fn ints<B: Backend, BK: Backend>(t: &Tensor<B, 2, Int>) -> BK::IntTensorPrimitive {
    cast::<_, Tensor<BK, 2, Int>>(t.clone()).into_primitive()
}

/// A float primitive of backend `BK` as a tensor of `B`, checked to be `BK`.
#[allow(dead_code)]
fn wrap<BK: Backend, B: Backend, const D: usize>(p: BK::FloatTensorPrimitive) -> Tensor<B, D> {
    cast(Tensor::<BK, D>::from_primitive(TensorPrimitive::Float(p)))
}

/// `x` as `T`, which the caller has checked (by `TypeId`) to be `A`'s type.
fn cast<A: 'static, T: 'static>(x: A) -> T {
    *(Box::new(x) as Box<dyn Any>)
        .downcast::<T>()
        .expect("types checked by TypeId")
}
