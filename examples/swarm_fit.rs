//! Fit a swarm of trained mixtures and search the best mixture, RegMix / olmix style, with
//! no model training: regression + search only.
//!
//! A "swarm" is a table of mixtures λ (one row per small model trained elsewhere) and the loss
//! each reached. This example generates one from a known loss function of λ (so the searched
//! optimum can be checked against the true one), writes it as the CSV layout
//! `datamix::regression::Dataset` reads (`mixture,lambda:<domain>...,target:<name>`), loads
//! it back, cross-validates ridge, a Gaussian process, gradient-boosted trees and the
//! mean baseline, fits the best family on every row and searches the simplex (with
//! per-domain bounds) for the mixture it predicts best. It prints the comparison, predicted
//! vs true losses on fresh mixtures, and the searched mixture beside the true optimum.
//!
//! ```sh
//! cargo run --release --example swarm_fit
//! # only the slim crates are needed:
//! cargo run --release --example swarm_fit --no-default-features --features regression,optimizer
//! ```

use std::fmt::Write as _;

use datamix::optimizer::{CmaEs, Method, ModelObjective, OptimResult, SearchSpace};
use datamix::regression::{
    Dataset, FeatureSet, Folds, GbdtParams, GpParams, MeanParams, Regressor, RidgeParams, eval,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Training domains of the generated swarm.
const DOMAINS: [&str; 6] = ["web", "code", "books", "wiki", "papers", "forums"];
/// Mixtures in the swarm (RegMix trains hundreds of small models).
const SWARM: usize = 256;
/// Standard deviation of the measurement noise on each observed loss (seed-to-seed noise).
const NOISE: f64 = 0.003;
/// Fresh mixtures on which predictions are compared with the true loss.
const FRESH: usize = 8;

/// The known loss of a model trained on mixture λ: per eval set j, the cross-entropy of the
/// λ-weighted mixture of per-domain token probabilities `p[i][j]` (as MDE models it), plus a
/// repetition penalty `c · Σ λ_i² / tokens_i` for domains with little data.
struct TrueLoss {
    p: Vec<Vec<f64>>,
    eval_weights: Vec<f64>,
    scarcity: Vec<f64>,
}

impl TrueLoss {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        let k = DOMAINS.len();
        let n_eval = 4;
        let p = (0..k)
            .map(|i| {
                (0..n_eval)
                    .map(|j| {
                        let base: f64 = rng.random_range(2.0..4.0);
                        (-(if i == j { base - 1.2 } else { base })).exp()
                    })
                    .collect()
            })
            .collect();
        let raw: Vec<f64> = (0..n_eval).map(|_| rng.random_range(0.5..1.5)).collect();
        let total: f64 = raw.iter().sum();
        Self {
            p,
            eval_weights: raw.iter().map(|w| w / total).collect(),
            scarcity: (0..k).map(|_| rng.random_range(0.0..0.6)).collect(),
        }
    }

    fn loss(&self, lambda: &[f64]) -> f64 {
        let ce: f64 = self
            .eval_weights
            .iter()
            .enumerate()
            .map(|(j, w)| {
                let q: f64 = lambda.iter().zip(&self.p).map(|(l, p)| l * p[j]).sum();
                -w * q.ln()
            })
            .sum();
        let repetition: f64 = lambda
            .iter()
            .zip(&self.scarcity)
            .map(|(l, c)| c * l * l)
            .sum();
        ce + repetition
    }
}

fn swarm_csv(space: &SearchSpace, truth: &TrueLoss, rng: &mut ChaCha8Rng) -> String {
    let noise = Normal::new(0.0, NOISE).expect("positive std");
    let mut csv = String::from("mixture");
    for d in DOMAINS {
        write!(csv, ",lambda:{d}").unwrap();
    }
    csv.push_str(",target:loss\n");
    let uniform = vec![1.0 / DOMAINS.len() as f64; DOMAINS.len()];
    for r in 0..SWARM {
        // RegMix-style draws: mostly spread, some close to single-domain.
        let concentration = if r % 4 == 0 { 1.0 } else { 6.0 };
        let lambda = space.sample_dirichlet(&uniform, concentration, rng);
        write!(csv, "run{r}").unwrap();
        for l in &lambda {
            write!(csv, ",{l}").unwrap();
        }
        writeln!(csv, ",{}", truth.loss(&lambda) + noise.sample(rng)).unwrap();
    }
    csv
}

fn show(label: &str, r: &OptimResult, truth: &TrueLoss) {
    let mix: Vec<String> = r
        .domains
        .iter()
        .zip(&r.mixture)
        .map(|(d, l)| format!("{d} {l:.3}"))
        .collect();
    println!("{label:<20} {}", mix.join(", "));
    println!(
        "{:<20} objective {:.4}{}, true loss {:.4}",
        "",
        r.objective,
        r.uncertainty
            .map_or(String::new(), |s| format!(" ± {s:.4}")),
        truth.loss(&r.mixture)
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let truth = TrueLoss::new(&mut rng);
    // The search space: every domain between 2% and 60% of the mixture.
    let k = DOMAINS.len();
    let space = SearchSpace::builder_named(DOMAINS)
        .lower(vec![0.02; k])
        .upper(vec![0.6; k])
        .build()?;

    // 1. The swarm as a CSV file, read back as a regression dataset.
    let dir = tempfile::tempdir()?;
    let csv_path = dir.path().join("swarm.csv");
    std::fs::write(&csv_path, swarm_csv(&space, &truth, &mut rng))?;
    let data = Dataset::from_csv(&csv_path)?;
    println!(
        "swarm: {} mixtures x {} domains (noise std {NOISE}), read from {}",
        data.n_rows(),
        k,
        csv_path.display()
    );

    // 2. Cross-validated comparison of the families (5-fold).
    let families: Vec<Box<dyn Regressor>> = vec![
        Box::new(RidgeParams::new()),
        Box::new(GpParams::new().seed(0)),
        Box::new(GbdtParams::new().seed(0)),
        Box::new(MeanParams),
    ];
    let refs: Vec<&dyn Regressor> = families.iter().map(Box::as_ref).collect();
    let folds = Folds::kfold(data.n_rows(), 5, Some(0))?;
    let table = eval::compare(
        &data,
        "loss",
        &refs,
        &[FeatureSet::new("λ", &["lambda"])],
        &folds,
    )?;
    println!(
        "\n5-fold cross-validation on the swarm:\n{}",
        table.to_markdown()
    );
    let (best_row, best) = table
        .rows
        .iter()
        .zip(&families)
        .min_by(|a, b| a.0.metrics.mse.total_cmp(&b.0.metrics.mse))
        .ok_or("no family could be cross-validated")?;
    println!("lowest CV MSE: {}", best_row.family);

    // 3. Fit the best family on every row and check it on fresh mixtures.
    let task = data.task(&["lambda"], "loss")?;
    let model = best.fit(&task)?;
    let objective = ModelObjective::new(model, &space, None)?;
    let fresh: Vec<Vec<f64>> = (0..FRESH).map(|_| space.sample_uniform(&mut rng)).collect();
    println!("\npredicted vs true loss on {FRESH} fresh mixtures:");
    println!("{:>10} {:>10} {:>10}", "predicted", "± std", "true");
    for (x, p) in fresh.iter().zip(objective.predict(&fresh)) {
        println!("{:>10.4} {:>10.4} {:>10.4}", p.mean, p.std, truth.loss(x));
    }

    // 4. Search: the model's optimum vs the true optimum (same method, same space).
    let method = CmaEs::new().seed(0);
    let searched = method.minimize(&space, &objective)?;
    let true_opt = method.minimize(&space, &|x: &[f64]| truth.loss(x))?;
    let best_seen = (0..data.n_rows())
        .map(|r| task.y[r])
        .fold(f64::INFINITY, f64::min);
    println!("\nsearch ({}):", method.name());
    show("searched (model)", &searched, &truth);
    show("true optimum", &true_opt, &truth);
    println!(
        "regret of the searched mixture: {:.4} (best observed loss in the swarm: {best_seen:.4})",
        truth.loss(&searched.mixture) - true_opt.objective
    );
    Ok(())
}
