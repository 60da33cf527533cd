//! The PaLM-like decoder module: `DecoderConfig::init` builds a [`Decoder`].

use burn::module::{Initializer, Module};
use burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, RmsNorm,
    RmsNormConfig, RotaryEncoding, RotaryEncodingConfig, SwiGlu, SwiGluConfig,
};
use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::config::{DecoderConfig, NormKind};
use crate::error::Result;
use crate::fused;

/// Pre-norm of a block, or the final norm: RMSNorm or bias-free LayerNorm.
#[derive(Module, Debug)]
pub enum Norm<B: Backend> {
    /// RMSNorm.
    Rms(RmsNorm<B>),
    /// LayerNorm without bias.
    Layer(LayerNorm<B>),
}

impl<B: Backend> Norm<B> {
    fn new(kind: NormKind, d: usize, eps: f64, device: &B::Device) -> Self {
        match kind {
            NormKind::Rms => Norm::Rms(RmsNormConfig::new(d).with_epsilon(eps).init(device)),
            NormKind::LayerNoBias => Norm::Layer(
                LayerNormConfig::new(d)
                    .with_epsilon(eps)
                    .with_bias(false)
                    .init(device),
            ),
        }
    }

    /// `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Norm::Rms(n) => {
                fused::rms_norm(&x, &n.gamma.val(), n.epsilon).unwrap_or_else(|| n.forward(x))
            }
            Norm::Layer(n) => n.forward(x),
        }
    }
}

/// `lin.forward(x)` for `x`: `[batch, seq, d_in]` -> `[batch, seq, d_out]`, by the fused
/// linear op where the backend has one (the layers here have no bias).
fn project<B: Backend>(lin: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    if lin.bias.is_none()
        && let Some(y) = fused::linear(&x, &lin.weight.val())
    {
        return y;
    }
    lin.forward(x)
}

/// Causal multi-query / grouped-query self-attention with RoPE, no biases.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[d_model, n_heads * head_dim]`.
    pub q_proj: Linear<B>,
    /// `[d_model, n_kv_heads * head_dim]`.
    pub k_proj: Linear<B>,
    /// `[d_model, n_kv_heads * head_dim]`.
    pub v_proj: Linear<B>,
    /// `[n_heads * head_dim, d_model]`.
    pub o_proj: Linear<B>,
    n_heads: usize,
    n_kv_heads: usize,
}

impl<B: Backend> Attention<B> {
    /// `x`: `[batch, seq, d_model]` (already normed) -> `[batch, seq, d_model]`.
    ///
    /// With one key/value head (multi-query attention, PaLM's choice) no tensor is
    /// transposed: the queries of all heads at all positions form one `[seq * heads,
    /// head_dim]` matrix per sequence, which multiplies the single key matrix; the causal
    /// mask is an additive `[seq * heads, seq]` table. Otherwise queries, keys and values
    /// are split into heads and Burn's fused `attention` runs per head.
    pub fn forward(&self, x: Tensor<B, 3>, ctx: &ForwardCtx<B>) -> Tensor<B, 3> {
        if self.n_kv_heads == 1 {
            self.forward_mqa(x, ctx)
        } else {
            self.forward_heads(x, ctx)
        }
    }

    /// Multi-query path. `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`.
    fn forward_mqa(&self, x: Tensor<B, 3>, ctx: &ForwardCtx<B>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let nh = self.n_heads;
        let hd = d / nh;
        // [b, s, h * hd] -> [b, s, h, hd] (a view), rotated in place of layout.
        let q = ctx
            .rope
            .apply(project(&self.q_proj, x.clone()).reshape([b, s, nh, hd]));
        let k = ctx
            .rope
            .apply(project(&self.k_proj, x.clone()).reshape([b, s, 1, hd]));
        let v = project(&self.v_proj, x); // [b, s, hd]
        let scale = (hd as f64).powf(-0.5);
        if let Some(out) = fused::mqa_attention(&q, &k, &v, scale) {
            return project(&self.o_proj, out); // [b, s, h * hd]
        }
        // [b, s * h, hd] x [b, hd, s] -> [b, s * h, s]: row `i * h + head` is query i.
        let scores = q
            .reshape([b, s * nh, hd])
            .matmul(k.reshape([b, s, hd]).swap_dims(1, 2))
            .mul_scalar(scale)
            + ctx.mqa_mask().unsqueeze::<3>();
        let probs = softmax(scores, 2);
        // [b, s * h, s] x [b, s, hd] -> [b, s * h, hd] = [b, s, h * hd].
        project(&self.o_proj, probs.matmul(v).reshape([b, s, d]))
    }

    /// Per-head path (grouped-query or multi-head attention).
    /// `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`.
    fn forward_heads(&self, x: Tensor<B, 3>, ctx: &ForwardCtx<B>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let (nh, nkv) = (self.n_heads, self.n_kv_heads);
        let hd = d / nh;
        // [b, s, h*hd] -> [b, s, h, hd] (rotated) -> [b, h, s, hd]
        let q = ctx
            .rope
            .apply(project(&self.q_proj, x.clone()).reshape([b, s, nh, hd]))
            .swap_dims(1, 2);
        let k = ctx
            .rope
            .apply(project(&self.k_proj, x.clone()).reshape([b, s, nkv, hd]))
            .swap_dims(1, 2);
        let v = project(&self.v_proj, x)
            .reshape([b, s, nkv, hd])
            .swap_dims(1, 2);
        // Share each kv head with its group of query heads: [b, nkv, s, hd] -> [b, nh, s, hd].
        let (k, v) = if nkv == nh {
            (k, v)
        } else {
            let group = |t: Tensor<B, 4>| {
                t.unsqueeze_dim::<5>(2)
                    .expand([b, nkv, nh / nkv, s, hd])
                    .reshape([b, nh, s, hd])
            };
            (group(k), group(v))
        };
        let opts = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        let out = attention(q, k, v, None, None, opts); // [b, nh, s, hd]
        project(&self.o_proj, out.swap_dims(1, 2).reshape([b, s, d]))
    }
}

/// Per-forward constants shared by every block: RoPE tables and the causal mask (built
/// once, by the first layer that needs it).
pub struct ForwardCtx<B: Backend> {
    rope: RopeTables<B>,
    seq: usize,
    device: B::Device,
    /// Query heads per layer (the multi-query mask's layout).
    heads: usize,
    /// The multi-query mask, built by the first layer that needs it.
    mask: std::cell::OnceCell<Tensor<B, 2>>,
}

impl<B: Backend> ForwardCtx<B> {
    /// Tables for sequences of `seq` tokens and layers of `heads` query heads.
    pub fn new(rope: &RotaryEncoding<B>, seq: usize, heads: usize, device: &B::Device) -> Self {
        Self {
            rope: RopeTables::new(rope, seq, device),
            seq,
            device: device.clone(),
            heads,
            mask: std::cell::OnceCell::new(),
        }
    }

    /// Additive causal mask for the multi-query layout: `[seq * heads, seq]`, row
    /// `i * heads + h` is 0 at keys `j <= i` and -inf after (every row keeps its own
    /// position, so no row is all -inf). `-inf` rather than a large finite value: `exp`
    /// of it is exactly 0, and libtorch's vectorised `exp` takes ~3.6x as long on
    /// inputs that underflow (`-1e9`) as on `-inf` (docs/benchmarks.md).
    fn mqa_mask(&self) -> Tensor<B, 2> {
        let (s, heads) = (self.seq, self.heads);
        self.mask
            .get_or_init(|| {
                let mut m = vec![0f32; s * heads * s];
                for (r, row) in m.chunks_exact_mut(s).enumerate() {
                    row[r / heads + 1..].fill(f32::NEG_INFINITY);
                }
                Tensor::from_data(TensorData::new(m, [s * heads, s]), &self.device)
            })
            .clone()
    }
}

/// RoPE as Burn's [`RotaryEncoding`] defines it (each pair `(x₀, x₁)` of a head is rotated
/// by the angle of its position and frequency), applied to `[batch, seq, heads, head_dim]`
/// tensors: `x ⊙ cos + (x P) ⊙ sin`, where `P` maps each pair to `(-x₁, x₀)`.
struct RopeTables<B: Backend> {
    /// `[1, seq, 1, head_dim]`.
    cos: Tensor<B, 4>,
    /// `[1, seq, 1, head_dim]`.
    sin: Tensor<B, 4>,
    /// `[head_dim, head_dim]`, the pair rotation `P`.
    rot: Tensor<B, 2>,
}

impl<B: Backend> RopeTables<B> {
    fn new(rope: &RotaryEncoding<B>, seq: usize, device: &B::Device) -> Self {
        // Burn's table: [max_seq, head_dim, 2], (cos, sin) of each element's pair angle.
        let f = rope.freq_complex.clone().narrow(0, 0, seq);
        let [_, hd, _] = f.dims();
        let cos = f
            .clone()
            .slice([0..seq, 0..hd, 0..1])
            .reshape([1, seq, 1, hd]);
        let sin = f.slice([0..seq, 0..hd, 1..2]).reshape([1, seq, 1, hd]);
        let mut p = vec![0f32; hd * hd];
        for i in (0..hd).step_by(2) {
            p[(i + 1) * hd + i] = -1.0; // out[i] = -x[i+1]
            p[i * hd + i + 1] = 1.0; // out[i+1] = x[i]
        }
        let rot = Tensor::from_data(TensorData::new(p, [hd, hd]), device);
        Self { cos, sin, rot }
    }

    /// `x`: `[batch, seq, heads, head_dim]` -> same shape, rotated.
    fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = match fused::rope(x, &self.cos, &self.sin) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let [b, s, h, hd] = x.dims();
        let swapped = x
            .clone()
            .reshape([b * s * h, hd])
            .matmul(self.rot.clone())
            .reshape([b, s, h, hd]);
        x * self.cos.clone() + swapped * self.sin.clone()
    }
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate (`linear_inner`) and up (`linear_outer`) projections, `[d_model, hidden]` each.
    pub swiglu: SwiGlu<B>,
    /// `[hidden, d_model]`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        // SwiGlu::forward, with the gate fused where the backend allows.
        let g = project(&self.swiglu.linear_inner, x.clone()); // [b, s, hidden]
        let u = project(&self.swiglu.linear_outer, x);
        let h = fused::silu_mul(&g, &u).unwrap_or_else(|| silu(g) * u);
        project(&self.down_proj, h)
    }
}

/// One parallel block: `x + attn(norm(x)) + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// The shared pre-norm.
    pub norm: Norm<B>,
    /// Self-attention.
    pub attn: Attention<B>,
    /// SwiGLU MLP.
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`.
    pub fn forward(&self, x: Tensor<B, 3>, ctx: &ForwardCtx<B>) -> Tensor<B, 3> {
        let h = self.norm.forward(x.clone());
        x + self.attn.forward(h.clone(), ctx) + self.mlp.forward(h)
    }
}

/// A PaLM-like decoder-only language model.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Token embedding, `[vocab, d_model]`.
    pub embed: Embedding<B>,
    /// The blocks.
    pub layers: Vec<Block<B>>,
    /// Final norm.
    pub norm: Norm<B>,
    /// Output projection `[d_model, vocab]`, absent when embeddings are tied.
    pub lm_head: Option<Linear<B>>,
    /// RoPE cos/sin table (a constant, not a parameter).
    pub rope: RotaryEncoding<B>,
}

impl DecoderConfig {
    /// Validates the config and builds a freshly initialised [`Decoder`]
    /// (weights `N(0, init_std)`, output projections scaled by `1/sqrt(2 n_layers)`).
    /// Call `B::seed` first for a reproducible initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Decoder<B>> {
        self.validate()?;
        let d = self.d_model;
        let hd = self.head_dim();
        let normal = |std: f64| Initializer::Normal { mean: 0.0, std };
        let w = normal(self.init_std);
        let w_out = normal(self.init_std / (2.0 * self.n_layers as f64).sqrt());
        let linear = |i, o, init: &Initializer| {
            LinearConfig::new(i, o)
                .with_bias(false)
                .with_initializer(init.clone())
                .init(device)
        };
        let layers = (0..self.n_layers)
            .map(|_| Block {
                norm: Norm::new(self.norm, d, self.norm_eps, device),
                attn: Attention {
                    q_proj: linear(d, self.n_heads * hd, &w),
                    k_proj: linear(d, self.n_kv_heads * hd, &w),
                    v_proj: linear(d, self.n_kv_heads * hd, &w),
                    o_proj: linear(self.n_heads * hd, d, &w_out),
                    n_heads: self.n_heads,
                    n_kv_heads: self.n_kv_heads,
                },
                mlp: Mlp {
                    swiglu: SwiGluConfig::new(d, self.mlp_hidden())
                        .with_initializer(w.clone())
                        .init(device),
                    down_proj: linear(self.mlp_hidden(), d, &w_out),
                },
            })
            .collect();
        Ok(Decoder {
            embed: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(w.clone())
                .init(device),
            layers,
            norm: Norm::new(self.norm, d, self.norm_eps, device),
            lm_head: (!self.tied_embeddings).then(|| linear(d, self.vocab_size, &w)),
            rope: RotaryEncodingConfig::new(self.max_seq_len, hd)
                .with_theta(self.rope_theta)
                .init(device),
        })
    }
}

impl<B: Backend> Decoder<B> {
    /// Next-token logits. `tokens`: `[batch, seq]` -> `[batch, seq, vocab]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, seq] = tokens.dims();
        let heads = self.layers.first().map_or(1, |l| l.attn.n_heads);
        let ctx = ForwardCtx::new(&self.rope, seq, heads, &tokens.device());
        let mut x = self.embed.forward(tokens);
        for layer in &self.layers {
            x = layer.forward(x, &ctx);
        }
        let x = self.norm.forward(x);
        match &self.lm_head {
            Some(head) => project(head, x),
            None => {
                let w = self.embed.weight.val().transpose(); // [d_model, vocab]
                fused::linear(&x, &w).unwrap_or_else(|| x.matmul(w.unsqueeze()))
            }
        }
    }

    /// Log-probability of each target token. `inputs`, `targets`: `[batch, seq]`
    /// -> `[batch, seq]` (natural log).
    pub fn token_logprobs(
        &self,
        inputs: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let logits = self.forward(inputs); // [b, s, vocab]
        if let Some(out) = fused::target_logprobs(&logits, &targets) {
            return out;
        }
        let logp = log_softmax(logits, 2);
        logp.gather(2, targets.unsqueeze_dim(2)).squeeze_dim(2)
    }

    /// Mean next-token cross-entropy (nats), the training loss.
    /// `inputs`, `targets`: `[batch, seq]` -> `[1]`.
    pub fn loss(&self, inputs: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        self.token_logprobs(inputs, targets).mean().neg()
    }
}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type B = crate::backend::Cpu;

    #[test]
    fn rope_tables_match_burns_rotary_encoding() {
        let dev = Default::default();
        let rope = RotaryEncodingConfig::new(16, 8).init::<B>(&dev);
        let x = Tensor::<B, 4>::random([2, 5, 3, 8], Distribution::Normal(0.0, 1.0), &dev);
        let ours = RopeTables::new(&rope, 5, &dev).apply(x.clone());
        let burns = rope.forward(x.swap_dims(1, 2)).swap_dims(1, 2);
        ours.into_data()
            .assert_approx_eq::<f32>(&burns.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn multi_query_path_equals_the_per_head_path() {
        let dev = Default::default();
        let cfg = DecoderConfig::new(50, 32, 1, 4).with_max_seq_len(16);
        let model = cfg.init_seeded::<B>(7, &dev).unwrap();
        let attn = &model.layers[0].attn;
        let ctx = ForwardCtx::new(&model.rope, 9, 4, &dev);
        let x = Tensor::<B, 3>::random([2, 9, 32], Distribution::Normal(0.0, 1.0), &dev);
        let fast = attn.forward_mqa(x.clone(), &ctx);
        let heads = attn.forward_heads(x, &ctx);
        fast.into_data()
            .assert_approx_eq::<f32>(&heads.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn attention_is_causal() {
        let dev = Default::default();
        let cfg = DecoderConfig::new(50, 32, 2, 4).with_max_seq_len(16);
        let model = cfg.init_seeded::<B>(3, &dev).unwrap();
        let a = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [1, 6]),
            &dev,
        );
        let b = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![1i64, 2, 3, 4, 9, 9], [1, 6]),
            &dev,
        );
        let la = model.forward(a).slice([0..1, 0..4]);
        let lb = model.forward(b).slice([0..1, 0..4]);
        la.into_data()
            .assert_approx_eq::<f32>(&lb.into_data(), Tolerance::absolute(1e-6));
    }
}
