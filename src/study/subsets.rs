//! Na et al.'s setting: mixtures as sets of `k` base units. Each subset's seq model (the
//! seed continued on the union of its units for `k` times the unit budget) is set against
//! proxies built from the units' models without training: the micro merge (uniform over the
//! units; with equal-sized units this is also the uniform merge), the macro merge (each
//! domain's units averaged, then the domains uniformly), the merge of the domain experts
//! (weighted by the subset's units per domain), and the "mean of individual models"
//! baseline (the mean perplexity of the units' models, nothing merged). Quality is the
//! Pearson r of seq vs proxy perplexity over the subsets per eval domain (the papers'
//! Tables 2-3), beside a λ-only baseline: the best family cross-validated on the subsets'
//! domain shares.

use burn::tensor::backend::AutodiffBackend;
use datamix_regression::{GbdtParams, GpParams, Regressor, RidgeParams, Task};
use ndarray::{Array1, Array2};
use serde::Serialize;

use super::config::{Init, StudyConfig};
use super::data::Prepared;
use super::lab::Lab;
use super::stats;
use crate::error::Result;
use crate::pool::PoolKey;

/// Proxy names, in report order.
pub const PROXIES: [&str; 4] = ["micro", "macro", "experts", "mean-individual"];

/// What the subsets measured.
#[derive(Debug, Clone, Serialize)]
pub struct SubsetOutcome {
    /// Units per subset.
    pub k: usize,
    /// Base-unit ids (manifest order).
    pub units: Vec<String>,
    /// Each subset's units (indices into `units`).
    pub subsets: Vec<Vec<usize>>,
    /// Mean CE of each base-unit model per eval domain.
    pub unit_loss: Vec<Vec<f64>>,
    /// Mean CE of each subset's seq model per eval domain.
    pub seq_loss: Vec<Vec<f64>>,
    /// Mean CE per proxy (as [`PROXIES`], `experts` only when experts start from the
    /// seed), per subset, per eval domain; `mean-individual` is `ln` of the units' mean
    /// perplexity.
    pub proxies: Vec<(String, Vec<Vec<f64>>)>,
    /// Correlations per eval domain and proxy (filled by [`analyse`]).
    pub quality: Vec<SubsetQuality>,
}

/// One proxy's (or the λ-only baseline's) agreement with the seq models on one eval domain.
#[derive(Debug, Clone, Serialize)]
pub struct SubsetQuality {
    /// Eval domain.
    pub eval_domain: String,
    /// Whether it is a training domain's held-out split.
    pub in_domain: bool,
    /// Proxy name, or `λ-only (CV): <family>`.
    pub proxy: String,
    /// Pearson r of perplexities over the subsets.
    pub pearson: f64,
    /// Spearman ρ.
    pub spearman: f64,
}

/// Scores the units' models, the subsets' seq models and every proxy.
pub fn score<B: AutodiffBackend>(
    lab: &Lab<'_, B>,
    cfg: &StudyConfig,
    data: &Prepared,
    units: &[(String, PoolKey)],
    experts: &[PoolKey],
    trained: &[(Vec<usize>, PoolKey)],
) -> Result<SubsetOutcome> {
    let m = data.corpus.manifest();
    let unit_loss = units
        .iter()
        .map(|(_, key)| lab.score_mean(key))
        .collect::<Result<Vec<_>>>()?;
    let mut seq_loss = Vec::new();
    let mut proxies: Vec<(String, Vec<Vec<f64>>)> = PROXIES
        .iter()
        .filter(|p| **p != "experts" || cfg.mixtures.init == Init::Seed)
        .map(|p| (p.to_string(), Vec::new()))
        .collect();
    for (s, key) in trained {
        seq_loss.push(lab.score_mean(key)?);
        let keys: Vec<(f64, &PoolKey)> = s.iter().map(|&u| (1.0, &units[u].1)).collect();
        let domains = domain_counts(units, s);
        for (name, out) in proxies.iter_mut() {
            let losses = match name.as_str() {
                "micro" => lab.score_plan(&lab.weighted_plan(&keys))?,
                "macro" => {
                    // Each unit weighted 1 / (#domains · #units of its domain).
                    let per: Vec<(f64, &PoolKey)> = s
                        .iter()
                        .map(|&u| {
                            let c = domains
                                .iter()
                                .find(|(d, _)| *d == units[u].0)
                                .map_or(1, |x| x.1);
                            (1.0 / (domains.len() * c) as f64, &units[u].1)
                        })
                        .collect();
                    lab.score_plan(&lab.weighted_plan(&per))?
                }
                "experts" => {
                    let per: Vec<(f64, &PoolKey)> = domains
                        .iter()
                        .map(|(d, c)| {
                            let i = data
                                .domains
                                .iter()
                                .position(|x| x == d)
                                .expect("known domain");
                            (*c as f64, &experts[i])
                        })
                        .collect();
                    lab.score_plan(&lab.weighted_plan(&per))?
                }
                _ => mean_individual(s.iter().map(|&u| &unit_loss[u])),
            };
            out.push(losses);
        }
    }
    Ok(SubsetOutcome {
        k: cfg.subsets.k,
        units: m.units.iter().map(|u| u.id.clone()).collect(),
        subsets: trained.iter().map(|(s, _)| s.clone()).collect(),
        unit_loss,
        seq_loss,
        proxies,
        quality: Vec::new(),
    })
}

/// `(domain, units of it in the subset)`, in first-seen order.
fn domain_counts<'a>(units: &'a [(String, PoolKey)], subset: &[usize]) -> Vec<(&'a str, usize)> {
    let mut out: Vec<(&str, usize)> = Vec::new();
    for &u in subset {
        let d = units[u].0.as_str();
        match out.iter_mut().find(|(x, _)| *x == d) {
            Some(e) => e.1 += 1,
            None => out.push((d, 1)),
        }
    }
    out
}

/// `ln(mean_u exp(CE_u))` per eval domain: the mean perplexity of individual models, in nats.
pub fn mean_individual<'a>(losses: impl Iterator<Item = &'a Vec<f64>>) -> Vec<f64> {
    let rows: Vec<&Vec<f64>> = losses.collect();
    let n = rows.len() as f64;
    (0..rows.first().map_or(0, |r| r.len()))
        .map(|j| (rows.iter().map(|r| r[j].exp()).sum::<f64>() / n).ln())
        .collect()
}

/// The subsets' domain shares (units of each training domain / k): the λ of a subset.
pub fn shares(o: &SubsetOutcome, unit_domains: &[String], domains: &[String]) -> Array2<f64> {
    Array2::from_shape_fn((o.subsets.len(), domains.len()), |(r, c)| {
        let s = &o.subsets[r];
        s.iter().filter(|&&u| unit_domains[u] == domains[c]).count() as f64 / s.len() as f64
    })
}

/// Fills `o.quality`: per eval domain, Pearson/Spearman of seq vs proxy perplexity, and the
/// best λ-only family's out-of-fold predictions (exp of the predicted CE).
pub fn analyse(
    o: &mut SubsetOutcome,
    eval_domains: &[String],
    in_domain: &[bool],
    unit_domains: &[String],
    domains: &[String],
    folds: usize,
    seed: u64,
) -> Result<()> {
    let n = o.subsets.len();
    let folds = super::analysis::folds_of(folds, n, seed)?;
    let x = shares(o, unit_domains, domains);
    let (ridge, gp, gbdt) = (RidgeParams::new(), GpParams::new(), GbdtParams::new());
    let learners: [&dyn Regressor; 3] = [&ridge, &gp, &gbdt];
    let ppl = |m: &[Vec<f64>], j: usize| m.iter().map(|r| r[j].exp()).collect::<Vec<_>>();
    let mut quality = Vec::new();
    for (j, e) in eval_domains.iter().enumerate() {
        let truth = ppl(&o.seq_loss, j);
        for (name, m) in &o.proxies {
            let (pearson, spearman) = stats::correlate(&ppl(m, j), &truth);
            quality.push(SubsetQuality {
                eval_domain: e.clone(),
                in_domain: in_domain[j],
                proxy: name.clone(),
                pearson,
                spearman,
            });
        }
        let task = Task {
            x: x.clone(),
            y: Array1::from(truth.clone()),
            feature_names: domains.iter().map(|d| format!("lambda:{d}")).collect(),
            target: e.clone(),
            ids: (0..n).map(|i| format!("subset{i:02}")).collect(),
            mde_proxy: None,
        };
        let (family, pearson, spearman) = stats::best_baseline(&learners, &task, &folds)?;
        quality.push(SubsetQuality {
            eval_domain: e.clone(),
            in_domain: in_domain[j],
            proxy: format!("{}: {family}", super::analysis::LAMBDA_ONLY),
            pearson,
            spearman,
        });
    }
    o.quality = quality;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_individual_is_the_log_of_the_mean_perplexity() {
        let a = vec![1.0f64.ln(), 4.0f64.ln()];
        let b = vec![3.0f64.ln(), 2.0f64.ln()];
        let m = mean_individual([&a, &b].into_iter());
        assert!((m[0] - 2.0f64.ln()).abs() < 1e-12);
        assert!((m[1] - 3.0f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn shares_count_units_per_domain() {
        let o = SubsetOutcome {
            k: 2,
            units: vec!["a/0".into(), "a/1".into(), "b/0".into()],
            subsets: vec![vec![0, 1], vec![0, 2]],
            unit_loss: vec![],
            seq_loss: vec![],
            proxies: vec![],
            quality: vec![],
        };
        let unit_domains = ["a".to_string(), "a".into(), "b".into()];
        let x = shares(&o, &unit_domains, &["a".into(), "b".into()]);
        assert_eq!(x.row(0).to_vec(), [1.0, 0.0]);
        assert_eq!(x.row(1).to_vec(), [0.5, 0.5]);
    }
}
