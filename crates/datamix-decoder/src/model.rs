//! The PaLM-like decoder module: `DecoderConfig::init` builds a [`Decoder`].

use burn::module::{Initializer, Module};
use burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, RmsNorm,
    RmsNormConfig, RotaryEncoding, RotaryEncodingConfig, SwiGlu, SwiGluConfig,
};
use burn::tensor::activation::log_softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor, backend::Backend};

use crate::config::{DecoderConfig, NormKind};
use crate::error::Result;

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
            Norm::Rms(n) => n.forward(x),
            Norm::Layer(n) => n.forward(x),
        }
    }
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
    pub fn forward(&self, x: Tensor<B, 3>, rope: &RotaryEncoding<B>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let (nh, nkv) = (self.n_heads, self.n_kv_heads);
        let hd = d / nh;
        // [b, s, h*hd] -> [b, h, s, hd]
        let heads = |t: Tensor<B, 3>, h: usize| t.reshape([b, s, h, hd]).swap_dims(1, 2);
        let q = rope.forward(heads(self.q_proj.forward(x.clone()), nh));
        let k = rope.forward(heads(self.k_proj.forward(x.clone()), nkv));
        let v = heads(self.v_proj.forward(x), nkv);
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
        self.o_proj.forward(out.swap_dims(1, 2).reshape([b, s, d]))
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
        self.down_proj.forward(self.swiglu.forward(x))
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
    pub fn forward(&self, x: Tensor<B, 3>, rope: &RotaryEncoding<B>) -> Tensor<B, 3> {
        let h = self.norm.forward(x.clone());
        x + self.attn.forward(h.clone(), rope) + self.mlp.forward(h)
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
        let mut x = self.embed.forward(tokens);
        for layer in &self.layers {
            x = layer.forward(x, &self.rope);
        }
        let x = self.norm.forward(x);
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => x.matmul(self.embed.weight.val().transpose().unsqueeze()),
        }
    }

    /// Log-probability of each target token. `inputs`, `targets`: `[batch, seq]`
    /// -> `[batch, seq]` (natural log).
    pub fn token_logprobs(
        &self,
        inputs: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let logp = log_softmax(self.forward(inputs), 2); // [b, s, vocab]
        logp.gather(2, targets.unsqueeze_dim(2)).squeeze_dim(2)
    }

    /// Mean next-token cross-entropy (nats), the training loss.
    /// `inputs`, `targets`: `[batch, seq]` -> `[1]`.
    pub fn loss(&self, inputs: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        self.token_logprobs(inputs, targets).mean().neg()
    }
}
