//! Fused ops on Burn's `flex` CPU backend (feature `cpu`, the default). Matrix products
//! go straight to the gemm crate `flex` itself uses (no zero-filled, copied outputs);
//! everything between them is one of [`super::kernels`]'s row kernels (attention's in
//! [`super::attention`]), forward and backward, so the autodiff graph holds one node per
//! op instead of five to ten, and no intermediate is broadcast, masked or saved that the
//! backward pass does not need.
//!
//! Each returns `None` unless the backend is [`Flex`] or `Autodiff<Flex>` and the tensors
//! are `f32` (other dtypes keep the composites).

use std::any::TypeId;

use burn::backend::Autodiff;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Shape, Tensor, TensorData, TensorPrimitive};

use super::{attention, cast, finish, float, ints, kernels, wrap};
use crate::optim::{AdamWStep, AdamWTensors};

type Ad = Autodiff<Flex>;

/// Which flavour of `Flex` the generic backend `B` is, if any.
enum Kind {
    Plain,
    Autodiff,
}

fn kind<B: Backend>() -> Option<Kind> {
    if TypeId::of::<B>() == TypeId::of::<Ad>() {
        Some(Kind::Autodiff)
    } else if TypeId::of::<B>() == TypeId::of::<Flex>() {
        Some(Kind::Plain)
    } else {
        None
    }
}

/// The contiguous `f32` elements of `t` (a copy only if `t` is a strided view).
fn values(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

/// `t` made contiguous, consuming it: when `t` was the only handle on its buffer the
/// result is too, so a kernel can write into it (`storage_mut`) without a copy.
fn owned(t: FlexTensor) -> FlexTensor {
    let c = t.to_contiguous();
    drop(t);
    c
}

/// `t`'s elements; `t` must come from [`values`] (contiguous, `f32`).
fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

/// A new `f32` tensor of `shape` holding `v`.
fn tensor(v: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape.into()))
}

/// `t` as a `Tensor<Flex, D>` (for the gemms and reshapes between kernels).
fn t<const D: usize>(p: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// Whether every float input is `f32` (checked on the generic tensors).
fn all_f32<B: Backend, const D: usize>(ts: &[&Tensor<B, D>]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

/// A fused op of two `f32` inputs whose backward pass keeps both (contiguous) as its
/// state: `forward(a, b)`, recorded as `op` under autodiff.
fn two_inputs<B, O, const DA: usize, const DB: usize>(
    op: O,
    a: &Tensor<B, DA>,
    b: &Tensor<B, DB>,
    forward: fn(&FlexTensor, &FlexTensor) -> FlexTensor,
) -> Option<Tensor<B, 3>>
where
    B: Backend,
    O: Backward<Flex, 2, State = (FlexTensor, FlexTensor)>,
{
    let kind = kind::<B>()?;
    if !all_f32(&[a]) || !all_f32(&[b]) {
        return None;
    }
    Some(match kind {
        Kind::Autodiff => {
            let (a, b) = (float::<_, Ad, DA>(a), float::<_, Ad, DB>(b));
            let prep = op
                .prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()])
                .compute_bound()
                .stateful();
            let (a, b) = (values(&a.primitive), values(&b.primitive));
            let out = forward(&a, &b);
            wrap::<Ad, _, 3>(finish(prep, (a, b), out))
        }
        Kind::Plain => {
            let (a, b) = (float::<_, Flex, DA>(a), float::<_, Flex, DB>(b));
            wrap::<Flex, _, 3>(forward(&values(&a), &values(&b)))
        }
    })
}

// ---------------------------------------------------------------------------------------
// Multi-query attention

/// Causal multi-query attention (shapes as in [`super::mqa_attention`]) by
/// [`attention`]'s blocked kernels: per block of query positions, its scores against the
/// keys it sees (one gemm), masked softmax in place, times the values (one gemm). Saves
/// the queries, keys, values and probabilities.
pub(super) fn mqa_attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 3>,
    scale: f64,
) -> Option<Tensor<B, 3>> {
    let kind = kind::<B>()?;
    if !all_f32(&[q, k]) || !all_f32(&[v]) {
        return None;
    }
    Some(match kind {
        Kind::Autodiff => {
            let (q, k, v) = (
                float::<_, Ad, 4>(q),
                float::<_, Ad, 4>(k),
                float::<_, Ad, 3>(v),
            );
            let prep = MqaAttention
                .prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()])
                .compute_bound()
                .stateful();
            let (q, k, v) = (&q.primitive, &k.primitive, &v.primitive);
            // The probabilities are kept only for a backward pass.
            wrap::<Ad, _, 3>(match prep {
                OpsKind::Tracked(prep) => {
                    let (out, saved) = attention_forward(q, k, v, scale, true);
                    prep.finish(saved.expect("kept"), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(attention_forward(q, k, v, scale, false).0),
            })
        }
        Kind::Plain => {
            let (q, k, v) = (
                float::<_, Flex, 4>(q),
                float::<_, Flex, 4>(k),
                float::<_, Flex, 3>(v),
            );
            wrap::<Flex, _, 3>(attention_forward(&q, &k, &v, scale, false).0)
        }
    })
}

/// What the attention backward pass needs.
#[derive(Debug, Clone)]
struct AttentionSaved {
    /// Contiguous `[b, s, h, hd]`.
    q: FlexTensor,
    /// Contiguous `[b, s, 1, hd]`.
    k: FlexTensor,
    /// Contiguous `[b, s, hd]`.
    v: FlexTensor,
    /// Softmax probabilities, block by block ([`attention::forward`]).
    probs: Vec<f32>,
    shape: attention::Causal,
    scale: f32,
}

/// Forward pass; returns `[b, s, h * hd]` and, with `keep`, the state for the backward
/// pass.
fn attention_forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    scale: f64,
    keep: bool,
) -> (FlexTensor, Option<AttentionSaved>) {
    let [b, s, h, hd] = t::<4>(q.clone()).dims();
    let (q, k, v) = (values(q), values(k), values(v));
    let shape = attention::Causal {
        seq: s,
        heads: h,
        head_dim: hd,
        block: attention::QUERY_BLOCK,
    };
    let scale = scale as f32;
    let (out, probs) = attention::forward(shape, (slice(&q), slice(&k), slice(&v)), scale, keep);
    let saved = probs.map(|probs| AttentionSaved {
        q,
        k,
        v,
        probs,
        shape,
        scale,
    });
    (tensor(out, [b, s, h * hd]), saved)
}

/// The autodiff op of [`mqa_attention`]: parents q, k, v.
#[derive(Debug)]
struct MqaAttention;

impl Backward<Flex, 3> for MqaAttention {
    type State = AttentionSaved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let AttentionSaved {
            q,
            k,
            v,
            probs,
            shape,
            scale,
        } = ops.state;
        // dO: [b, s, h * hd], the layout of the queries.
        let d_out = values(&grads.consume::<Flex>(&ops.node));
        let qkv = (slice(&q), slice(&k), slice(&v));
        let (dq, dk, dv) = attention::backward(shape, qkv, &probs, slice(&d_out), scale);
        for (node, grad, like) in [(node_q, dq, &q), (node_k, dk, &k), (node_v, dv, &v)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, tensor(grad, like.layout().shape().clone()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Target log-probabilities

/// `log_softmax(logits)[target]` (shapes as in [`super::target_logprobs`]): one pass per
/// row forward (max, then `Σ e^x` with the vector `exp`), one pass per row backward
/// (`g (δ - softmax)`). Saves the logits (shared, not copied), the targets and the
/// per-row log-sum-exp. `None` also when a target is outside the vocabulary (the
/// composite reports that).
pub(super) fn target_logprobs<B: Backend>(
    logits: &Tensor<B, 3>,
    targets: &Tensor<B, 2, Int>,
) -> Option<Tensor<B, 2>> {
    let kind = kind::<B>()?;
    if !all_f32(&[logits]) {
        return None;
    }
    let [_, _, vocab] = logits.dims();
    let ids = target_ids(targets, vocab)?;
    Some(match kind {
        Kind::Autodiff => {
            let logits = float::<_, Ad, 3>(logits);
            let prep = TargetLogprobs
                .prepare::<NoCheckpointing>([logits.node.clone()])
                .compute_bound()
                .stateful();
            let (out, saved) = logprobs_forward(logits.primitive, ids);
            wrap::<Ad, _, 2>(finish(prep, saved, out))
        }
        Kind::Plain => wrap::<Flex, _, 2>(logprobs_forward(float::<_, Flex, 3>(logits), ids).0),
    })
}

/// The targets as indices, or `None` if one is outside `0..vocab`.
fn target_ids<B: Backend>(targets: &Tensor<B, 2, Int>, vocab: usize) -> Option<Vec<usize>> {
    let prim = match kind::<B>()? {
        Kind::Autodiff => ints::<_, Ad>(targets),
        Kind::Plain => ints::<_, Flex>(targets),
    };
    let data = prim.into_data();
    let ids: Vec<i64> = data.convert::<i64>().into_vec().ok()?;
    ids.into_iter()
        .map(|t| usize::try_from(t).ok().filter(|&t| t < vocab))
        .collect()
}

/// What the log-probability backward pass needs.
#[derive(Debug, Clone)]
struct LogprobsSaved {
    /// `[b, s, vocab]`, contiguous.
    logits: FlexTensor,
    targets: Vec<usize>,
    /// `ln Σ_v e^(logit_v)` per row.
    lse: Vec<f32>,
}

/// Forward pass; returns `[b, s]` and the saved state.
fn logprobs_forward(logits: FlexTensor, targets: Vec<usize>) -> (FlexTensor, LogprobsSaved) {
    let [b, s, vocab] = t::<3>(logits.clone()).dims();
    let logits = owned(logits);
    let (mut out, mut lse) = (vec![0f32; b * s], vec![0f32; b * s]);
    kernels::target_logprobs(slice(&logits), vocab, &targets, &mut out, &mut lse);
    let saved = LogprobsSaved {
        logits,
        targets,
        lse,
    };
    (tensor(out, [b, s]), saved)
}

/// The autodiff op of [`target_logprobs`]: parent the logits.
#[derive(Debug)]
struct TargetLogprobs;

impl Backward<Flex, 1> for TargetLogprobs {
    type State = LogprobsSaved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = values(&grads.consume::<Flex>(&ops.node)); // [b, s]
        let Some(node) = node else { return };
        let LogprobsSaved {
            logits,
            targets,
            lse,
        } = ops.state;
        let vocab = logits.layout().shape()[2];
        // The gradient overwrites the logits (nothing else holds them).
        let mut grad = owned(logits);
        kernels::target_logprobs_grad(grad.storage_mut(), vocab, &targets, &lse, slice(&g));
        grads.register::<Flex>(node.id, grad);
    }
}

// ---------------------------------------------------------------------------------------
// SwiGLU gate

/// `silu(g) ⊙ u` (shapes as in [`super::silu_mul`]); saves `g` and `u`.
pub(super) fn silu_mul<B: Backend>(g: &Tensor<B, 3>, u: &Tensor<B, 3>) -> Option<Tensor<B, 3>> {
    two_inputs(SiluMul, g, u, silu_mul_forward)
}

fn silu_mul_forward(g: &FlexTensor, u: &FlexTensor) -> FlexTensor {
    let mut out = vec![0f32; slice(g).len()];
    kernels::silu_mul(slice(g), slice(u), &mut out);
    tensor(out, g.layout().shape().clone())
}

/// The autodiff op of [`silu_mul`]: parents g, u.
#[derive(Debug)]
struct SiluMul;

impl Backward<Flex, 2> for SiluMul {
    /// `g` and `u`, contiguous.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_g, node_u] = ops.parents;
        let d = values(&grads.consume::<Flex>(&ops.node));
        // The gradients overwrite the saved inputs.
        let (mut dg, mut du) = (owned(ops.state.0), owned(ops.state.1));
        kernels::silu_mul_grad(dg.storage_mut(), du.storage_mut(), slice(&d));
        if let Some(node) = node_g {
            grads.register::<Flex>(node.id, dg);
        }
        if let Some(node) = node_u {
            grads.register::<Flex>(node.id, du);
        }
    }
}

// ---------------------------------------------------------------------------------------
// RMSNorm

/// RMSNorm over the last axis (shapes as in [`super::rms_norm`]); saves `x`, `gamma` and
/// the per-row `1 / rms`.
pub(super) fn rms_norm<B: Backend>(
    x: &Tensor<B, 3>,
    gamma: &Tensor<B, 1>,
    eps: f64,
) -> Option<Tensor<B, 3>> {
    let kind = kind::<B>()?;
    if !all_f32(&[x]) || !all_f32(&[gamma]) {
        return None;
    }
    let eps = eps as f32;
    Some(match kind {
        Kind::Autodiff => {
            let (x, gamma) = (float::<_, Ad, 3>(x), float::<_, Ad, 1>(gamma));
            let prep = RmsNorm
                .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone()])
                .compute_bound()
                .stateful();
            let (x, gamma) = (values(&x.primitive), values(&gamma.primitive));
            let (y, rstd) = rms_norm_forward(&x, &gamma, eps);
            wrap::<Ad, _, 3>(finish(prep, (x, gamma, rstd), y))
        }
        Kind::Plain => {
            let (x, gamma) = (float::<_, Flex, 3>(x), float::<_, Flex, 1>(gamma));
            wrap::<Flex, _, 3>(rms_norm_forward(&values(&x), &values(&gamma), eps).0)
        }
    })
}

fn rms_norm_forward(x: &FlexTensor, gamma: &FlexTensor, eps: f32) -> (FlexTensor, Vec<f32>) {
    let (xs, gs) = (slice(x), slice(gamma));
    let mut y = vec![0f32; xs.len()];
    let mut rstd = vec![0f32; xs.len() / gs.len().max(1)];
    kernels::rms_norm(xs, gs, eps, &mut y, &mut rstd);
    (tensor(y, x.layout().shape().clone()), rstd)
}

/// The autodiff op of [`rms_norm`]: parents x, gamma.
#[derive(Debug)]
struct RmsNorm;

impl Backward<Flex, 2> for RmsNorm {
    /// `x`, `gamma` (contiguous) and `1 / rms` per row.
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma] = ops.parents;
        // dx overwrites dy.
        let mut dx = owned(grads.consume::<Flex>(&ops.node));
        let (x, gamma, rstd) = ops.state;
        let dgamma = kernels::rms_norm_grad(slice(&x), slice(&gamma), &rstd, dx.storage_mut());
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            let d = dgamma.len();
            grads.register::<Flex>(node.id, tensor(dgamma, [d]));
        }
    }
}

// ---------------------------------------------------------------------------------------
// RoPE

/// RoPE (shapes as in [`super::rope`]), in place of `x` where nothing else holds it: one
/// pass forward, the transposed rotation backward (in place of the incoming gradient).
/// Saves the cos and sin tables only. `Err(x)` for other backends and dtypes.
pub(super) fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(kind) = kind::<B>() else {
        return Err(x);
    };
    if !all_f32(&[&x, cos, sin]) {
        return Err(x);
    }
    Ok(match kind {
        Kind::Autodiff => {
            let (cos, sin) = (float::<_, Ad, 4>(cos), float::<_, Ad, 4>(sin));
            let x = cast::<_, Tensor<Ad, 4>>(x).into_primitive().tensor();
            let prep = Rope
                .prepare::<NoCheckpointing>([x.node.clone()])
                .compute_bound()
                .stateful();
            let tables = (values(&cos.primitive), values(&sin.primitive));
            let y = rotate(x.primitive, &tables, false);
            wrap::<Ad, _, 4>(finish(prep, tables, y))
        }
        Kind::Plain => {
            let (cos, sin) = (float::<_, Flex, 4>(cos), float::<_, Flex, 4>(sin));
            let x = cast::<_, Tensor<Flex, 4>>(x).into_primitive().tensor();
            wrap::<Flex, _, 4>(rotate(x, &(values(&cos), values(&sin)), false))
        }
    })
}

/// The rotation (or its transpose) of `x`, `[b, s, h, hd]`, by the `[1, s, 1, hd]`
/// tables, in place of `x` when nothing else holds it.
fn rotate(x: FlexTensor, (cos, sin): &(FlexTensor, FlexTensor), transpose: bool) -> FlexTensor {
    let [_, s, h, _] = t::<4>(x.clone()).dims();
    let mut x = owned(x);
    kernels::rope(x.storage_mut(), slice(cos), slice(sin), s, h, transpose);
    x
}

/// The autodiff op of [`rope`]: parent x.
#[derive(Debug)]
struct Rope;

impl Backward<Flex, 1> for Rope {
    /// The cos and sin tables, contiguous.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            grads.register::<Flex>(node.id, rotate(dy, &ops.state, true));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Linear (no bias)

/// `x W` (shapes as in [`super::linear`]): one gemm over all `batch * seq` rows forward,
/// and `dY Wᵀ`, `Xᵀ dY` backward, the transposes read through strides. Saves `x` and `W`.
pub(super) fn linear<B: Backend>(x: &Tensor<B, 3>, w: &Tensor<B, 2>) -> Option<Tensor<B, 3>> {
    two_inputs(Linear, x, w, linear_forward)
}

/// `[b, s, k] x [k, n] -> [b, s, n]` for contiguous operands.
fn linear_forward(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let [b, s, k] = t::<3>(x.clone()).dims();
    let n = w.layout().shape()[1];
    let y = kernels::matmul((b * s, k, n), slice(x), (k, 1), slice(w), (n, 1));
    tensor(y, [b, s, n])
}

/// The autodiff op of [`linear`]: parents x, W.
#[derive(Debug)]
struct Linear;

impl Backward<Flex, 2> for Linear {
    /// `x` and `W`, contiguous.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = values(&grads.consume::<Flex>(&ops.node)); // [b, s, n]
        let (x, w) = ops.state;
        let [b, s, k] = t::<3>(x.clone()).dims();
        let (m, n) = (b * s, w.layout().shape()[1]);
        if let Some(node) = node_x {
            // dX = dY Wᵀ: [m, n] x [n, k], Wᵀ read from W's storage.
            let dx = kernels::matmul((m, n, k), slice(&dy), (n, 1), slice(&w), (1, n));
            grads.register::<Flex>(node.id, tensor(dx, [b, s, k]));
        }
        if let Some(node) = node_w {
            // dW = Xᵀ dY: [k, m] x [m, n], Xᵀ read from x's storage.
            let dw = kernels::matmul((k, m, n), slice(&x), (1, k), slice(&dy), (n, 1));
            grads.register::<Flex>(node.id, tensor(dw, [k, n]));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Optimizer (plain `Flex`: the trainer updates the inner backend's tensors)

/// AdamW (see [`super::adamw`]): one pass over `p`, `g`, `m`, `v`, writing `p`, `m`, `v`
/// in place where nothing else holds them. `Err(t)` for other backends and dtypes.
pub(super) fn adamw<B: Backend>(
    t: AdamWTensors<B>,
    g: &Tensor<B, 1>,
    step: &AdamWStep,
) -> Result<AdamWTensors<B>, AdamWTensors<B>> {
    if !matches!(kind::<B>(), Some(Kind::Plain)) || !all_f32(&[&t.p, &t.m, &t.v, g]) {
        return Err(t);
    }
    let owned_float =
        |x: Tensor<B, 1>| owned(cast::<_, Tensor<Flex, 1>>(x).into_primitive().tensor());
    let (mut p, mut m, mut v) = (owned_float(t.p), owned_float(t.m), owned_float(t.v));
    let g = values(&float::<_, Flex, 1>(g));
    kernels::adamw(
        p.storage_mut(),
        m.storage_mut(),
        v.storage_mut(),
        slice(&g),
        &kernels::AdamW::from(step),
    );
    Ok(AdamWTensors {
        p: wrap::<Flex, _, 1>(p),
        m: wrap::<Flex, _, 1>(m),
        v: wrap::<Flex, _, 1>(v),
    })
}

/// `Σ x²` (see [`super::sum_squares`]); `None` for other backends and dtypes.
pub(super) fn sum_squares<B: Backend>(x: &Tensor<B, 1>) -> Option<f64> {
    if !matches!(kind::<B>(), Some(Kind::Plain)) || !all_f32(&[x]) {
        return None;
    }
    let x = values(&float::<_, Flex, 1>(x));
    Some(kernels::sum_squares(slice(&x)))
}
