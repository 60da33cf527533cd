//! `datamix search`: a model saved by `datamix fit`, searched again under other constraints,
//! and optionally the next batch of mixtures to train (Bayesian optimisation).

use std::path::PathBuf;

use datamix::optimizer::{BayesOpt, BoConfig, RegressionSurrogate};
use datamix::regression::GpParams;
use datamix::{Error, Result};

use super::common::{ConstraintArgs, FitModel, Outputs, csv_field, recommend, user};

const EXAMPLE: &str = "\
Examples:
  # The best mixture under new constraints
  datamix search --model fit/model.json --min code=0.2 --max-weight 0.5

  # Also the next 8 mixtures to train (GP expected improvement, batch by kriging believer)
  datamix search --model fit/model.json --available books=2e9 --total-tokens 1e10 \\
      --max-epochs 4 --suggest 8 --out round2/

Writes to --out (when given): recommendation.json/.csv and, with --suggest, suggestions.csv.";

/// Arguments of `datamix search`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLE)]
pub struct SearchArgs {
    /// A model written by `datamix fit` (its model.json).
    #[arg(long, value_name = "JSON")]
    pub model: PathBuf,
    #[command(flatten)]
    pub constraints: ConstraintArgs,
    /// Also propose the next N mixtures to train: Bayesian optimisation (a GP on λ, expected
    /// improvement) over the model's runs that satisfy the constraints.
    #[arg(long, value_name = "N")]
    pub suggest: Option<usize>,
    /// Seed of the search and the suggestions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (created; files in it are replaced). Without it, results are only
    /// printed.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// Runs `datamix search`.
pub fn run(a: &SearchArgs) -> Result<()> {
    if a.suggest == Some(0) {
        return Err(user("--suggest 0: expected a batch of at least 1 mixture"));
    }
    let (saved, model) = FitModel::load(&a.model)?;
    let (space, bounds) = a.constraints.space(&saved.domains)?;
    let rec = recommend(&saved, model, &space, bounds, a.seed)?;
    let mut out = Outputs::default();
    out.add(
        "recommendation.json",
        serde_json::to_string_pretty(&rec).expect("plain data serialises"),
    );
    out.add("recommendation.csv", rec.to_csv());
    let mut report = rec.summary();
    if let Some(q) = a.suggest {
        let mut bo = BayesOpt::new(
            space.clone(),
            RegressionSurrogate::new(GpParams::new().seed(a.seed), &space),
            BoConfig {
                seed: a.seed,
                ..BoConfig::default()
            },
        )?;
        // Runs outside the new constraints cannot be observed by the loop (its observations
        // must be feasible mixtures); they are counted, not silently dropped.
        let mut outside = 0;
        for (x, &y) in saved.mixtures.iter().zip(&saved.values) {
            if space.check(x).is_ok() {
                bo.observe(x.clone(), y)?;
            } else {
                outside += 1;
            }
        }
        let batch = bo.suggest_batch(q)?;
        let mut csv = String::from("suggestion");
        for d in &saved.domains {
            csv.push(',');
            csv.push_str(&csv_field(d));
        }
        csv.push('\n');
        report.push_str(&format!(
            "\nNext {q} mixture(s) to train (Bayesian optimisation on {} of {} runs{}):",
            saved.values.len() - outside,
            saved.values.len(),
            if outside > 0 {
                format!("; {outside} lie outside the constraints")
            } else {
                String::new()
            }
        ));
        for (i, x) in batch.iter().enumerate() {
            csv.push_str(&format!("s{i}"));
            for v in x {
                csv.push_str(&format!(",{v}"));
            }
            csv.push('\n');
            let mix: Vec<String> = saved
                .domains
                .iter()
                .zip(x)
                .map(|(d, w)| format!("{d} {w:.4}"))
                .collect();
            report.push_str(&format!("\n  s{i}: {}", mix.join(", ")));
        }
        out.add("suggestions.csv", csv);
    }
    if let Some(dir) = &a.out {
        out.write(dir)?;
    }
    println!("{report}");
    if let Some(dir) = &a.out {
        println!("Results: {}", dir.display());
    }
    Ok::<(), Error>(())
}
