//! Embed datamix's mixture search in someone else's training loop: the loop asks
//! `BayesOpt::suggest_batch` for the next mixtures, trains on them with its own code, and
//! reports each measured loss with `observe`. Nothing here uses datamix's decoder or data
//! pipeline: the "training stack" is a toy written below.
//!
//! The toy: four data domains, each a distribution over a 64-token vocabulary; "training on
//! mixture λ" fits a unigram language model by SGD on tokens drawn from the λ-mixture of the
//! domains (a fixed token budget); the loss is its cross-entropy on a target distribution
//! that is itself a mixture of the domains with hidden weights. The best training mixture
//! is therefore close to those hidden weights, which the example prints at the end.
//!
//! ```sh
//! cargo run --release --example embed_optimizer
//! cargo run --release --example embed_optimizer --no-default-features --features optimizer,regression
//! ```

use datamix::optimizer::{Acquisition, BayesOpt, BoConfig, RegressionSurrogate, SearchSpace};
use datamix::regression::GpParams;
use rand::distr::{Distribution, weighted::WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const VOCAB: usize = 64;
const DOMAINS: [&str; 4] = ["news", "code", "math", "dialogue"];
/// The mixture the target distribution is made of (unknown to the optimizer).
const HIDDEN: [f64; 4] = [0.45, 0.1, 0.3, 0.15];
/// Tokens seen by one training run, and the SGD batch.
const TOKENS: usize = 60_000;
const BATCH: usize = 64;
/// Training runs: an initial space-filling batch, then model-based batches.
const INITIAL: usize = 6;
const ROUNDS: usize = 5;
const BATCH_SIZE: usize = 3;

/// The external "training stack": domains, a target, and a training function.
struct ToyStack {
    domains: Vec<Vec<f64>>,
    target: Vec<f64>,
}

impl ToyStack {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        // Each domain prefers its own quarter of the vocabulary.
        let domains: Vec<Vec<f64>> = (0..DOMAINS.len())
            .map(|d| {
                let raw: Vec<f64> = (0..VOCAB)
                    .map(|t| {
                        let own = t * DOMAINS.len() / VOCAB == d;
                        rng.random_range(0.1..1.0) * if own { 12.0 } else { 1.0 }
                    })
                    .collect();
                let total: f64 = raw.iter().sum();
                raw.iter().map(|p| p / total).collect()
            })
            .collect();
        let target = (0..VOCAB)
            .map(|t| HIDDEN.iter().zip(&domains).map(|(w, d)| w * d[t]).sum())
            .collect();
        Self { domains, target }
    }

    /// Trains a unigram model (softmax over logits) by SGD on `TOKENS` tokens drawn from
    /// the λ-mixture of the domains and returns its cross-entropy on the target.
    fn train_and_eval(&self, lambda: &[f64], seed: u64) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pick_domain = WeightedIndex::new(lambda).expect("a mixture has positive weights");
        let per_domain: Vec<WeightedIndex<f64>> = self
            .domains
            .iter()
            .map(|d| WeightedIndex::new(d).expect("a distribution"))
            .collect();
        let mut logits = vec![0.0f64; VOCAB];
        let mut grad = vec![0.0f64; VOCAB];
        let lr = 0.5;
        for _ in 0..TOKENS / BATCH {
            let probs = softmax(&logits);
            grad.copy_from_slice(&probs);
            grad.iter_mut().for_each(|g| *g *= BATCH as f64);
            for _ in 0..BATCH {
                let d = pick_domain.sample(&mut rng);
                grad[per_domain[d].sample(&mut rng)] -= 1.0;
            }
            for (l, g) in logits.iter_mut().zip(&grad) {
                *l -= lr * g / BATCH as f64;
            }
        }
        let probs = softmax(&logits);
        -self
            .target
            .iter()
            .zip(&probs)
            .map(|(t, p)| t * p.ln())
            .sum::<f64>()
    }
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

fn fmt_mix(x: &[f64]) -> String {
    x.iter()
        .map(|v| format!("{v:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let stack = ToyStack::new(&mut rng);

    // The search space: every domain at least 5%, "code" at most 40%.
    let space = SearchSpace::builder_named(DOMAINS)
        .lower(vec![0.05; DOMAINS.len()])
        .upper(vec![1.0, 0.4, 1.0, 1.0])
        .build()?;
    let surrogate = RegressionSurrogate::new(GpParams::new().restarts(1).seed(0), &space);
    let config = BoConfig {
        acquisition: Acquisition::ExpectedImprovement { xi: 0.01 },
        initial_points: Some(INITIAL),
        seed: 0,
        ..BoConfig::default()
    };
    let mut bo = BayesOpt::new(space, surrogate, config)?;

    println!("domains: {}", DOMAINS.join(" "));
    let mut runs = 0u64;
    let mut train =
        |bo: &mut BayesOpt<_>, batch: Vec<Vec<f64>>| -> Result<(), Box<dyn std::error::Error>> {
            for x in batch {
                // The external loop trains and evaluates with its own code...
                let loss = stack.train_and_eval(&x, runs);
                runs += 1;
                println!("  run {runs:>2}: λ = [{}]  loss {loss:.4}", fmt_mix(&x));
                // ...and reports the measured loss back.
                bo.observe(x, loss)?;
            }
            Ok(())
        };
    println!("initial design ({INITIAL} runs):");
    let first = bo.suggest_batch(INITIAL)?;
    train(&mut bo, first)?;
    for round in 1..=ROUNDS {
        let batch = bo.suggest_batch(BATCH_SIZE)?;
        println!("round {round} ({BATCH_SIZE} suggestions from the GP surrogate):");
        train(&mut bo, batch)?;
        let best = bo.best().expect("observations were made");
        println!("  best so far: {:.4} at [{}]", best.y, fmt_mix(&best.x));
    }

    // The state is serialisable: an external loop can stop and resume across jobs.
    let state = serde_json::to_string(bo.state())?;
    let best = bo.best().expect("observations were made").clone();
    let hidden = bo.space().project(&HIDDEN);
    println!(
        "\n{} training runs; loop state {} bytes of JSON",
        bo.observations().len(),
        state.len()
    );
    println!(
        "best mixture found : [{}]  loss {:.4}",
        fmt_mix(&best.x),
        best.y
    );
    println!(
        "hidden target mix  : [{}]  loss {:.4} (projected onto the constraints; same training budget)",
        fmt_mix(&hidden),
        stack.train_and_eval(&hidden, 10_000)
    );
    let uniform = vec![1.0 / DOMAINS.len() as f64; DOMAINS.len()];
    println!(
        "uniform mixture    : [{}]  loss {:.4}",
        fmt_mix(&uniform),
        stack.train_and_eval(&uniform, 10_000)
    );
    Ok(())
}
