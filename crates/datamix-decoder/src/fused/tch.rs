//! Fused ops on LibTorch (feature `tch`):
//! - [`mqa_attention`]: causal multi-query attention by PyTorch's CPU flash-attention
//!   kernel forward and backward (instead of matmul + masked softmax + matmul);
//! - [`target_logprobs`]: the log-probability of each target token, by libtorch's fused
//!   `log_softmax` and its fused backward (instead of Burn's `log_softmax` composite +
//!   gather).
//!
//! Each returns `None` unless the backend is [`Tch`] or `Autodiff<Tch>`.

use std::any::TypeId;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::libtorch::TchTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::{finish, float, ints, wrap};
use crate::backend::Tch;

type Ad = Autodiff<Tch>;

/// Causal multi-query attention if `B` is LibTorch (with or without autodiff).
/// `q`: `[batch, seq, heads, head_dim]` (rotated), `k`: `[batch, seq, 1, head_dim]`
/// (rotated), `v`: `[batch, seq, head_dim]` -> `[batch, seq, heads * head_dim]`;
/// `None` (inputs untouched) for any other backend.
pub(crate) fn mqa_attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 3>,
    scale: f64,
) -> Option<Tensor<B, 3>> {
    if TypeId::of::<B>() == TypeId::of::<Ad>() {
        let (q, k, v) = (
            float::<_, Ad, 4>(q),
            float::<_, Ad, 4>(k),
            float::<_, Ad, 3>(v),
        );
        let prep = FlashMqa
            .prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful();
        let (out, saved) = flash_forward(&q.primitive, &k.primitive, &v.primitive, scale);
        let out = finish(prep, saved, out);
        return Some(wrap::<Ad, _, 3>(out));
    }
    if TypeId::of::<B>() == TypeId::of::<Tch>() {
        let (q, k, v) = (
            float::<_, Tch, 4>(q),
            float::<_, Tch, 4>(k),
            float::<_, Tch, 3>(v),
        );
        return Some(wrap::<Tch, _, 3>(flash_forward(&q, &k, &v, scale).0));
    }
    None
}

/// What the backward pass needs: the `[b, h, s, d]` views the kernel saw, its output and
/// log-sum-exp, and the scale.
#[derive(Debug, Clone)]
struct Saved {
    q: TchTensor,
    k: TchTensor,
    v: TchTensor,
    out: TchTensor,
    lse: TchTensor,
    scale: f64,
}

/// The autodiff op: parents q, k, v.
#[derive(Debug)]
struct FlashMqa;

impl Backward<Tch, 3> for FlashMqa {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad = grads.consume::<Tch>(&ops.node).tensor; // [b, s, h * d]
        let s = ops.state;
        let size = s.q.tensor.size(); // [b, h, s, d]
        let (b, h, n, d) = (size[0], size[1], size[2], size[3]);
        let grad = grad.view([b, n, h, d]).permute([0, 2, 1, 3]);
        let (gq, gk, gv) =
            tch::Tensor::internal_scaled_dot_product_flash_attention_for_cpu_backward(
                &grad,
                &s.q.tensor,
                &s.k.tensor,
                &s.v.tensor,
                &s.out.tensor,
                &s.lse.tensor,
                0.0,
                true,
                None::<tch::Tensor>,
                s.scale,
            );
        if let Some(node) = node_q {
            // [b, h, s, d] -> [b, s, h, d]
            let g = gq.permute([0, 2, 1, 3]).contiguous();
            grads.register::<Tch>(node.id, TchTensor::new(g));
        }
        if let Some(node) = node_k {
            // The single key head was expanded over h query heads: sum them back.
            let g = gk
                .sum_dim_intlist(1, true, None)
                .permute([0, 2, 1, 3])
                .contiguous();
            grads.register::<Tch>(node.id, TchTensor::new(g));
        }
        if let Some(node) = node_v {
            let g = gv.sum_dim_intlist(1, false, None).contiguous(); // [b, s, d]
            grads.register::<Tch>(node.id, TchTensor::new(g));
        }
    }
}

/// PyTorch's CPU flash attention, causal, the single key/value head expanded (a view)
/// over the query heads. Shapes as in [`mqa_attention`]; returns the output
/// `[b, s, h * d]` and what the backward pass needs.
fn flash_forward(q: &TchTensor, k: &TchTensor, v: &TchTensor, scale: f64) -> (TchTensor, Saved) {
    let size = q.tensor.size(); // [b, s, h, d]
    let (b, n, h, d) = (size[0], size[1], size[2], size[3]);
    // Views share their parent's storage handle, so Burn never mutates the inputs in
    // place while the backward pass still needs them.
    let view =
        |parent: &TchTensor, t: tch::Tensor| TchTensor::from_existing(t, parent.storage.clone());
    let qv = q.tensor.permute([0, 2, 1, 3]); // [b, h, s, d]
    let kv = k.tensor.permute([0, 2, 1, 3]).expand([b, h, n, d], false);
    let vv = v.tensor.unsqueeze(1).expand([b, h, n, d], false);
    let (out, lse) = tch::Tensor::internal_scaled_dot_product_flash_attention_for_cpu(
        &qv,
        &kv,
        &vv,
        0.0,
        true,
        None::<tch::Tensor>,
        scale,
    );
    let merged = out.permute([0, 2, 1, 3]).contiguous().view([b, n, h * d]);
    let saved = Saved {
        q: view(q, qv),
        k: view(k, kv),
        v: view(v, vv),
        out: TchTensor::new(out),
        lse: TchTensor::new(lse),
        scale,
    };
    (TchTensor::new(merged), saved)
}

/// `log_softmax(logits)[target]` if `B` is LibTorch (with or without autodiff).
/// `logits`: `[batch, seq, vocab]`, `targets`: `[batch, seq]` -> `[batch, seq]`;
/// `None` for any other backend.
pub(crate) fn target_logprobs<B: Backend>(
    logits: &Tensor<B, 3>,
    targets: &Tensor<B, 2, Int>,
) -> Option<Tensor<B, 2>> {
    if TypeId::of::<B>() == TypeId::of::<Ad>() {
        let (logits, targets) = (float::<_, Ad, 3>(logits), ints::<_, Ad>(targets));
        let prep = TargetLogprobs
            .prepare::<NoCheckpointing>([logits.node.clone()])
            .compute_bound()
            .stateful();
        let (out, lsm) = logprobs_forward(&logits.primitive, &targets);
        let out = finish(prep, (lsm, targets), out);
        return Some(wrap::<Ad, _, 2>(out));
    }
    if TypeId::of::<B>() == TypeId::of::<Tch>() {
        let (logits, targets) = (float::<_, Tch, 3>(logits), ints::<_, Tch>(targets));
        return Some(wrap::<Tch, _, 2>(logprobs_forward(&logits, &targets).0));
    }
    None
}

/// Log-probabilities of the targets and the full `log_softmax` (for the backward pass).
fn logprobs_forward(logits: &TchTensor, targets: &TchTensor) -> (TchTensor, TchTensor) {
    let lsm = logits.tensor.log_softmax(-1, tch::Kind::Float); // [b, s, v]
    let out = lsm
        .gather(-1, &targets.tensor.unsqueeze(-1), false)
        .squeeze_dim(-1);
    (TchTensor::new(out), TchTensor::new(lsm))
}

/// The autodiff op of [`target_logprobs`]: parent the logits.
#[derive(Debug)]
struct TargetLogprobs;

impl Backward<Tch, 1> for TargetLogprobs {
    /// `log_softmax(logits)` and the targets.
    type State = (TchTensor, TchTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<Tch>(&ops.node).tensor; // [b, s]
        let Some(node) = node else { return };
        let (lsm, targets) = ops.state;
        // d out / d log_softmax is `grad` at the target, 0 elsewhere; libtorch's fused
        // log_softmax backward turns that into `g_target - softmax * g` in one pass.
        let index = targets.tensor.unsqueeze(-1);
        let sparse = lsm
            .tensor
            .zeros_like()
            .scatter(-1, &index, &grad.unsqueeze(-1));
        let g = tch::Tensor::internal_log_softmax_backward_data(
            &sparse,
            &lsm.tensor,
            -1,
            tch::Kind::Float,
        );
        grads.register::<Tch>(node.id, TchTensor::new(g));
    }
}
