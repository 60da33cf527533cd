//! datamix's Gaussian process and Bayesian-optimisation loop beside egobox's (egobox-gp,
//! egobox-ego: the linfa ecosystem's Kriging and EGO), on the same data, in one process
//! (`benches/egobox.sh`; issue 22, item 7: adopt the library where it is as good).
//!
//! `gp <mixtures.csv> <folds> [n_test]`: every GP on λ and on λ+MDE (when the table has
//! MDE columns), target `target:objective` or else the mean of all targets;
//! cross-validated on `folds` folds (row % folds) and, with `n_test`, fitted on all but the
//! last `n_test` rows and scored on those. Time = the whole CV (and fit + predict of the
//! hold-out), one thread.
//!
//! `bo <tables dir> <evaluations> <batch> <seeds>`: minimise the mean MDE loss over the
//! tables' eval domains (a real, cheap response surface whose exact optimum is known:
//! `mde_exact`) with each loop, `evaluations` calls in batches of `batch`, for each seed;
//! prints the regret (best found minus the exact optimum) and the loop's time.
//!
//! One JSON object per line. With `EGOBOX_COMPARE_SHOW=1`, `gp` also prints to stderr the
//! hyper-parameters each GP settles on when fitted on every row.

use std::path::Path;
use std::time::Instant;

use datamix_mde::{ExpertTable, OptimumParams};
use datamix_optimizer::{
    BayesOpt, BoConfig, MdeObjective, Objective, RegressionSurrogate, SearchSpace, mde_exact,
};
use datamix_regression::{
    Dataset, Folds, GpParams, Metrics, Prediction, Predictor, RegressionError, Regressor, Task,
    cross_validate,
};
use egobox_ego::EgorBuilder;
use egobox_gp::GaussianProcess;
use egobox_gp::correlation_models::Matern52Corr;
use egobox_gp::mean_models::ConstantMean;
use linfa::prelude::*;
use ndarray::{Array2, ArrayView2};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gp") if args.len() >= 3 => gp(
            &args[1],
            args[2].parse()?,
            args.get(3).map(|s| s.parse()).transpose()?,
        ),
        Some("bo") if args.len() == 5 => bo(
            Path::new(&args[1]),
            args[2].parse()?,
            args[3].parse()?,
            args[4].parse()?,
        ),
        _ => {
            eprintln!(
                "usage: datamix-egobox-compare gp <mixtures.csv> <folds> [n_test] \
                 | bo <tables dir> <evaluations> <batch> <seeds>"
            );
            std::process::exit(2);
        }
    }
}

/// egobox-gp's Kriging (constant mean, Matérn 5/2 ARD correlation, hyper-parameters by
/// maximum likelihood with its COBYLA multistart) as a datamix [`Regressor`].
#[derive(Debug, Clone)]
struct EgoboxGp {
    /// Relative nugget on the correlation diagonal; `None` keeps egobox's default
    /// (100 machine epsilons: interpolation).
    nugget: Option<f64>,
}

#[derive(Debug)]
struct EgoboxModel {
    names: Vec<String>,
    gp: GaussianProcess<f64, ConstantMean, Matern52Corr>,
}

fn fit_error(e: impl std::fmt::Display) -> RegressionError {
    RegressionError::Fit {
        family: "egobox-gp",
        message: e.to_string(),
    }
}

impl Regressor for EgoboxGp {
    fn name(&self) -> String {
        match self.nugget {
            None => "egobox-gp".into(),
            Some(n) => format!("egobox-gp(nugget={n})"),
        }
    }

    fn fit(&self, task: &Task) -> datamix_regression::Result<Box<dyn Predictor>> {
        let mut params = GaussianProcess::<f64, ConstantMean, Matern52Corr>::params(
            ConstantMean::default(),
            Matern52Corr::default(),
        );
        if let Some(n) = self.nugget {
            params = params.nugget(n);
        }
        let data = linfa::Dataset::new(task.x.clone(), task.y.clone());
        let gp = params.fit(&data).map_err(fit_error)?;
        Ok(Box::new(EgoboxModel {
            names: task.feature_names.clone(),
            gp,
        }))
    }
}

impl Predictor for EgoboxModel {
    fn feature_names(&self) -> &[String] {
        &self.names
    }

    fn predict(&self, x: ArrayView2<'_, f64>) -> datamix_regression::Result<Prediction> {
        let mean = self.gp.predict(&x).map_err(fit_error)?;
        let var = self.gp.predict_var(&x).map_err(fit_error)?;
        Ok(Prediction {
            mean,
            std: Some(var.mapv(|v| v.max(0.0).sqrt())),
        })
    }
}

fn gp(path: &str, k: usize, n_test: Option<usize>) -> Res<()> {
    let mut data = Dataset::from_csv(path)?;
    let target = if data.target_names().iter().any(|t| t == "objective") {
        "objective"
    } else {
        data.add_mean_objective("avg")?;
        "avg"
    };
    let ours = GpParams::new();
    // Eight random restarts instead of two: whether a gap is the optimiser's local optima.
    let ours8 = GpParams::new().restarts(8);
    let ego = EgoboxGp { nugget: None };
    let ego_noise = EgoboxGp { nugget: Some(1e-2) };
    let fams: Vec<(&str, &dyn Regressor)> = vec![
        ("datamix-gp", &ours),
        ("datamix-gp-restarts8", &ours8),
        ("egobox-gp", &ego),
        ("egobox-gp-nugget1e-2", &ego_noise),
    ];
    let mut sets = vec![("lambda", vec!["lambda"])];
    if data.groups().contains(&"mde") {
        sets.push(("lambda+mde", vec!["lambda", "mde"]));
    }
    let n = data.n_rows();
    for (set, groups) in &sets {
        let task = data.task(groups, target)?;
        if std::env::var_os("EGOBOX_COMPARE_SHOW").is_some() {
            // The hyper-parameters each GP settles on, fitted on every row.
            eprintln!("{set} datamix: {:?}", ours.fit(&task)?);
            let mut p = GaussianProcess::<f64, ConstantMean, Matern52Corr>::params(
                ConstantMean::default(),
                Matern52Corr::default(),
            );
            p = p.nugget(1e-2);
            let g = p.fit(&linfa::Dataset::new(task.x.clone(), task.y.clone()))?;
            eprintln!(
                "{set} egobox: theta {} variance {} likelihood {}",
                g.theta(),
                g.variance(),
                g.likelihood()
            );
        }
        let folds = Folds::from_assignment(&(0..n).map(|r| r % k).collect::<Vec<_>>())?;
        for (label, fam) in &fams {
            match cross_validate(*fam, &task, &folds) {
                Ok(cv) => println!(
                    "{{\"kind\":\"cv\",\"model\":\"{label}\",\"features\":\"{set}\",\"rows\":{n},\"folds\":{k},\"mse\":{},\"spearman\":{},\"seconds\":{}}}",
                    cv.metrics.mse,
                    num(cv.metrics.spearman),
                    cv.seconds
                ),
                Err(e) => println!(
                    "{{\"kind\":\"cv\",\"model\":\"{label}\",\"features\":\"{set}\",\"error\":{:?}}}",
                    e.to_string()
                ),
            }
            let Some(n_test) = n_test else { continue };
            let train: Vec<usize> = (0..n - n_test).collect();
            let test: Vec<usize> = (n - n_test..n).collect();
            let (tr, te) = (task.subset(&train), task.subset(&test));
            let t = Instant::now();
            let fitted = fam.fit(&tr).and_then(|m| m.predict(te.x.view()));
            let secs = t.elapsed().as_secs_f64();
            match fitted {
                Ok(p) => {
                    let m = Metrics::compute(p.mean.view(), te.y.view())?;
                    println!(
                        "{{\"kind\":\"holdout\",\"model\":\"{label}\",\"features\":\"{set}\",\"train\":{},\"test\":{n_test},\"mse\":{},\"spearman\":{},\"seconds\":{secs}}}",
                        tr.n_rows(),
                        m.mse,
                        num(m.spearman)
                    );
                }
                Err(e) => println!(
                    "{{\"kind\":\"holdout\",\"model\":\"{label}\",\"features\":\"{set}\",\"error\":{:?}}}",
                    e.to_string()
                ),
            }
        }
    }
    Ok(())
}

/// The uniform cube `[0, 1]^(k-1)` onto the simplex, uniform onto uniform (stick
/// breaking with Beta(1, k - 1 - i) fractions by inverse CDF), so that egobox's box
/// search covers the simplex without constraints.
fn stick_breaking(u: &[f64]) -> Vec<f64> {
    let k = u.len() + 1;
    let mut left = 1.0;
    let mut x = Vec::with_capacity(k);
    for (i, &ui) in u.iter().enumerate() {
        let v = 1.0 - (1.0 - ui.clamp(0.0, 1.0)).powf(1.0 / (k - 1 - i) as f64);
        x.push(left * v);
        left -= left * v;
    }
    x.push(left.max(0.0));
    x
}

fn bo(dir: &Path, evaluations: usize, batch: usize, seeds: u64) -> Res<()> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
    paths.sort();
    let tables = paths
        .iter()
        .map(ExpertTable::load)
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&ExpertTable> = tables.iter().collect();
    let objective = MdeObjective::mean(&refs)?;
    let k = tables[0].n_experts();
    let space = SearchSpace::simplex(k)?;
    let exact = mde_exact(&space, &objective, &OptimumParams::default())?;
    let optimum = exact.objective;
    println!(
        "{{\"kind\":\"bo-optimum\",\"experts\":{k},\"eval_domains\":{},\"tokens\":{},\"value\":{optimum}}}",
        refs.len(),
        tables[0].n_tokens()
    );
    let initial = k + 1;
    for seed in 0..seeds {
        // datamix: GP surrogate on λ, expected improvement, kriging-believer batches.
        let t = Instant::now();
        let config = BoConfig {
            initial_points: Some(initial),
            seed,
            ..BoConfig::default()
        };
        let surrogate = RegressionSurrogate::new(GpParams::new(), &space);
        let mut loop_ = BayesOpt::new(space.clone(), surrogate, config)?;
        let r = loop_.run(&objective, evaluations, batch)?;
        println!(
            "{{\"kind\":\"bo\",\"impl\":\"datamix\",\"seed\":{seed},\"evaluations\":{},\"best\":{},\"regret\":{},\"seconds\":{}}}",
            r.evaluations,
            r.objective,
            r.objective - optimum,
            t.elapsed().as_secs_f64()
        );
        // egobox-ego: Egor on a box mapped onto the simplex (two maps: stick breaking on
        // [0, 1]^(k-1), and normalisation λ = u / Σu on [0, 1]^k), the same initial design
        // size, the rest in iterations of `batch` points (its default qEI strategy).
        for (map, dim) in [("stick-breaking", k - 1), ("normalised", k)] {
            let to_simplex = move |u: &[f64]| -> Vec<f64> {
                if map == "stick-breaking" {
                    stick_breaking(u)
                } else {
                    let s: f64 = u.iter().sum::<f64>().max(1e-12);
                    u.iter().map(|v| v / s).collect()
                }
            };
            let t = Instant::now();
            let f = |u: &ArrayView2<f64>| -> Array2<f64> {
                Array2::from_shape_fn((u.nrows(), 1), |(r, _)| {
                    objective.value(&to_simplex(&u.row(r).to_vec()))
                })
            };
            let xlimits = Array2::from_shape_fn((dim, 2), |(_, c)| c as f64);
            let iters = (evaluations - initial).div_ceil(batch);
            let res = EgorBuilder::optimize(f)
                .configure(|c| {
                    c.n_doe(initial)
                        .max_iters(iters)
                        .configure_qei(|q| q.batch(batch))
                        .seed(seed)
                })
                .min_within(&xlimits)?
                .run()?;
            let best: f64 = res.y_opt[0];
            let lam = to_simplex(&res.x_opt.to_vec());
            println!(
                "{{\"kind\":\"bo\",\"impl\":\"egobox-ego-{map}\",\"seed\":{seed},\"evaluations\":{},\"best\":{best},\"regret\":{},\"seconds\":{},\"x_sum\":{}}}",
                res.y_doe.nrows(),
                best - optimum,
                t.elapsed().as_secs_f64(),
                lam.iter().sum::<f64>()
            );
        }
    }
    Ok(())
}

fn num(v: f64) -> String {
    if v.is_finite() {
        v.to_string()
    } else {
        "null".into()
    }
}
