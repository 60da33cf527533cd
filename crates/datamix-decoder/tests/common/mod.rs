//! Shared fixtures for the decoder's integration tests.
#![allow(dead_code)]

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use datamix_decoder::checkpoint::to_host;
use datamix_decoder::{Decoder, DecoderConfig, TrainConfig};

pub type B = burn::backend::Autodiff<datamix_decoder::backend::Cpu>;
pub type Inner = datamix_decoder::backend::Cpu;

/// Deterministic English-like text from a tiny grammar (xorshift PRNG), as bytes.
pub fn grammar_text(n_sentences: usize, seed: u64) -> Vec<u32> {
    let subjects = ["the cat", "a dog", "my friend", "the old man", "every bird"];
    let verbs = ["sees", "likes", "finds", "follows", "paints"];
    let objects = [
        "the river",
        "a red ball",
        "the moon",
        "green apples",
        "the small house",
    ];
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |n: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % n as u64) as usize
    };
    let mut text = String::new();
    for _ in 0..n_sentences {
        text.push_str(subjects[next(subjects.len())]);
        text.push(' ');
        text.push_str(verbs[next(verbs.len())]);
        text.push(' ');
        text.push_str(objects[next(objects.len())]);
        text.push_str(". ");
    }
    text.bytes().map(u32::from).collect()
}

/// Entropy (nats) of the unigram distribution of `tokens`.
pub fn unigram_entropy(tokens: &[u32]) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for t in tokens {
        *counts.entry(t).or_insert(0usize) += 1;
    }
    let n = tokens.len() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// A seeded model of `config` on the backend `C` and the same weights loaded on `X`
/// (default devices), for comparing backends.
pub fn seeded_with_copy<C: Backend, X: Backend>(
    config: &DecoderConfig,
    seed: u64,
) -> (Decoder<C>, Decoder<X>) {
    let model = config.init_seeded::<C>(seed, &Default::default()).unwrap();
    let copy = config
        .init_from_host::<X>(
            &to_host(&model),
            std::path::Path::new("<copy>"),
            &Default::default(),
        )
        .unwrap();
    (model, copy)
}

pub fn tiny() -> DecoderConfig {
    DecoderConfig::preset("tiny", 256)
        .unwrap()
        .with_max_seq_len(64)
}

pub fn train_cfg(total_steps: u64) -> TrainConfig {
    TrainConfig {
        batch_size: 8,
        seq_len: 64,
        lr: 3e-3,
        warmup_steps: 10,
        total_steps,
        ..TrainConfig::default()
    }
}

/// Fixed-length chunks of a token stream, as a trainer's data source.
pub fn chunks(tokens: &[u32], n: usize) -> impl Iterator<Item = Vec<u32>> + Clone + '_ {
    tokens.chunks(n).map(<[u32]>::to_vec)
}

/// Largest absolute difference between two equally long sequences of log-probabilities.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The loss of a `[batch, seq]` batch cut from `tokens` and the gradient of every weight
/// (embedding, each block's norm, q/k/v/o, gate, up and down projections, the final
/// norm, the untied head if any), named, as host vectors.
pub fn loss_and_grads<B: AutodiffBackend>(
    model: &Decoder<B>,
    tokens: &[u32],
    (b, s): (usize, usize),
) -> (f32, Vec<(String, Vec<f32>)>) {
    use burn::module::Param;
    use datamix_decoder::model::Norm;
    let device = Default::default();
    let ids = |off: usize| {
        let v: Vec<i64> = (0..b * s)
            .map(|i| tokens[(i / s) * (s + 1) + i % s + off] as i64)
            .collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, [b, s]), &device)
    };
    let loss = model.loss(ids(0), ids(1));
    let value = loss.clone().into_scalar().elem::<f32>();
    let grads = loss.backward();
    fn host<B: AutodiffBackend, const D: usize>(
        p: &Param<Tensor<B, D>>,
        grads: &B::Gradients,
    ) -> Vec<f32> {
        p.grad(grads).unwrap().into_data().to_vec::<f32>().unwrap()
    }
    let norm = |n: &Norm<B>| match n {
        Norm::Rms(n) => host(&n.gamma, &grads),
        Norm::Layer(n) => host(&n.gamma, &grads),
    };
    let mut out = vec![("embed".to_string(), host(&model.embed.weight, &grads))];
    for (i, l) in model.layers.iter().enumerate() {
        out.push((format!("layers.{i}.norm"), norm(&l.norm)));
        for (name, w) in [
            ("q", &l.attn.q_proj.weight),
            ("k", &l.attn.k_proj.weight),
            ("v", &l.attn.v_proj.weight),
            ("o", &l.attn.o_proj.weight),
            ("gate", &l.mlp.swiglu.linear_inner.weight),
            ("up", &l.mlp.swiglu.linear_outer.weight),
            ("down", &l.mlp.down_proj.weight),
        ] {
            out.push((format!("layers.{i}.{name}"), host(w, &grads)));
        }
    }
    out.push(("norm".to_string(), norm(&model.norm)));
    if let Some(head) = &model.lm_head {
        out.push(("lm_head".to_string(), host(&head.weight, &grads)));
    }
    (value, out)
}

/// Asserts two gradient lists (as from [`loss_and_grads`]) agree within `rel` of each
/// tensor's largest entry.
pub fn assert_grads_close(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], rel: f32) {
    assert_eq!(a.len(), b.len());
    for ((name, a), (_, b)) in a.iter().zip(b) {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = max_abs_diff(a, b);
        assert!(
            d <= rel * scale.max(1e-6),
            "gradient {name}: max diff {d}, max |g| {scale}"
        );
    }
}
