//! RegMix-style search: sample many mixtures from a Dirichlet around the prior, keep the
//! best `top_k`, and average them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Method, ensure};
use crate::error::Result;
use crate::objective::{Objective, checked_value, checked_values};
use crate::result::{OptimResult, Tracker};
use crate::space::SearchSpace;

/// Samples `samples` mixtures `λ ~ Dirichlet(α · prior)` (projected into the space), with
/// the total concentration `α` drawn log-uniformly from `concentration` per sample, and
/// returns the average of the `top_k` lowest-objective samples (RegMix's final step;
/// the average of feasible points is feasible).
///
/// Needs only objective values, evaluated in batches through [`Objective::values`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DirichletSearch {
    /// Number of sampled mixtures.
    pub samples: usize,
    /// How many of the best samples are averaged.
    pub top_k: usize,
    /// Range `[min, max]` of the total Dirichlet concentration, relative to the number of
    /// domains `k` (`α = c · k`; `c = 1` with a uniform prior is uniform on the simplex).
    pub concentration: (f64, f64),
    /// RNG seed.
    pub seed: u64,
    /// Samples evaluated per batch.
    pub batch: usize,
}

impl Default for DirichletSearch {
    fn default() -> Self {
        Self {
            samples: 10_000,
            top_k: 100,
            concentration: (0.5, 50.0),
            seed: 0,
            batch: 4096,
        }
    }
}

impl DirichletSearch {
    /// Default parameters with the given sample count and top-k.
    pub fn new(samples: usize, top_k: usize) -> Self {
        Self {
            samples,
            top_k,
            ..Self::default()
        }
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn validate(&self) -> Result<()> {
        const N: &str = "DirichletSearch";
        ensure(self.samples > 0, N, "samples", self.samples, ">= 1")?;
        ensure(
            self.top_k >= 1 && self.top_k <= self.samples,
            N,
            "top_k",
            self.top_k,
            "between 1 and `samples`",
        )?;
        let (lo, hi) = self.concentration;
        ensure(
            lo > 0.0 && hi >= lo && hi.is_finite(),
            N,
            "concentration",
            format!("({lo}, {hi})"),
            "0 < min <= max < inf",
        )?;
        ensure(self.batch > 0, N, "batch", self.batch, ">= 1")
    }
}

impl Method for DirichletSearch {
    fn name(&self) -> &'static str {
        "dirichlet"
    }

    fn minimize(&self, space: &SearchSpace, objective: &dyn Objective) -> Result<OptimResult> {
        self.validate()?;
        let k = space.dim() as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let (ln_lo, ln_hi) = (self.concentration.0.ln(), self.concentration.1.ln());
        // Best samples so far, as (value, mixture), at most `top_k` after each batch.
        let mut best: Vec<(f64, Vec<f64>)> = Vec::with_capacity(self.top_k + self.batch);
        let mut tracker: Option<Tracker> = None;
        let mut done = 0;
        let mut iteration = 0;
        while done < self.samples {
            let n = self.batch.min(self.samples - done);
            let xs: Vec<Vec<f64>> = (0..n)
                .map(|_| {
                    let c = if ln_hi > ln_lo {
                        rng.random_range(ln_lo..=ln_hi).exp()
                    } else {
                        self.concentration.0
                    };
                    space.sample_dirichlet(space.prior(), c * k, &mut rng)
                })
                .collect();
            let vs = checked_values(objective, &xs)?;
            done += n;
            iteration += 1;
            let t = tracker.get_or_insert_with(|| Tracker::new(xs[0].clone(), vs[0], 0));
            t.evaluations = done;
            let mut batch_best = f64::INFINITY;
            for (x, &v) in xs.iter().zip(&vs) {
                t.offer(x, v);
                batch_best = batch_best.min(v);
            }
            t.log(iteration, batch_best);
            best.extend(vs.into_iter().zip(xs));
            if best.len() > self.top_k {
                best.select_nth_unstable_by(self.top_k - 1, |a, b| a.0.total_cmp(&b.0));
                best.truncate(self.top_k);
            }
        }
        let mut t = tracker.expect("samples >= 1 was validated");
        let mut avg = vec![0.0; space.dim()];
        for (_, x) in &best {
            avg.iter_mut().zip(x).for_each(|(a, v)| *a += v);
        }
        avg.iter_mut().for_each(|a| *a /= best.len() as f64);
        // Averaging keeps feasibility; re-projecting only removes rounding.
        let avg = space.project(&avg);
        let v = checked_value(objective, &avg)?;
        t.evaluations += 1;
        // The result is the top-k average (RegMix), even if a single sample scored lower.
        t.best_x = avg;
        t.best_value = v;
        t.log(iteration + 1, v);
        Ok(t.finish(self.name(), space, objective, true))
    }
}
