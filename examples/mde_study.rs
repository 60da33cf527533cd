//! Belenki et al.'s Mixture of Data Experts on the built-in small corpus, in about two
//! minutes on 2 CPU cores: a seed model, one expert per domain continued from it, 20 ground-truth
//! mixture models (the last 8 held out), the MDE estimate of every mixture from the experts'
//! token probabilities, regressions with and without MDE features scored on the held-out
//! mixtures, and the searched mixture.
//!
//! ```sh
//! ./scripts/fetch-corpus.sh --small
//! cargo run --release --example mde_study [-- data/small/corpus]
//! ```
//!
//! At this scale (a 0.25 M-parameter model, 60 continued steps) the numbers are noisy; the
//! main job (`./scripts/main.sh`, docs/reproduction.md) runs the same design at the scale
//! where the paper's effects show, with replicates for the noise floor.

use datamix::study::{self, StudyConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/small/corpus".into());
    // Under runs/ like the main job: a rerun reuses the trained models.
    let out = std::path::PathBuf::from("runs/examples/mde_study");
    let config = format!(
        r#"
out_dir = {out:?}
[data]
corpus = {corpus:?}
vocab_size = 2048
seq_len = 128
unit_tokens = 1048576     # one base unit per domain: this example is about experts
eval_tokens = 8192
[model]
preset = "tiny"
[seed_model]
steps = 150
lr = 3e-3
warmup_steps = 15
[continued]               # experts and mixture models: re-warmed, continued from the seed
steps = 60
lr = 3e-3
warmup_steps = 6
[mixtures]
count = 20
test = 8                  # held out: never fitted on, never used to choose a family
alpha = 1.0
[analysis]
folds = 4
family = "auto"
curve_repeats = 0
[search]
validate = false
"#
    );
    let cfg = StudyConfig::from_toml(&config, "mde_study.toml".as_ref())?;
    let o = study::run(&cfg)?;

    println!("\nExperts (rows) on each domain's held-out split (columns), mean CE in nats:");
    print!("{:<14}", "");
    for e in &o.eval_domains {
        print!(" {:>11.11}", e);
    }
    println!();
    for (d, row) in o.domains.iter().zip(&o.expert_loss) {
        print!("{d:<14}");
        for l in row {
            print!(" {l:>11.3}");
        }
        println!();
    }
    println!("\nMDE estimate vs the trained mixture models, on the objective (mean held-out CE):");
    for q in o
        .analysis
        .proxy_quality
        .iter()
        .filter(|q| q.target == "objective")
    {
        println!(
            "  {:<24} Pearson {:+.3}  Spearman {:+.3}  (n = {} mixtures)",
            q.proxy,
            q.pearson,
            q.spearman,
            o.mixtures.len()
        );
    }
    let n_test = o.is_test.iter().filter(|t| **t).count();
    println!("\nRegressions fitted on the training mixtures, scored on {n_test} held-out ones:");
    println!(
        "  {:<22} {:<14} {:>9} {:>9} {:>10}",
        "family", "features", "Spearman", "Pearson", "MSE"
    );
    for r in o.analysis.test.iter().filter(|r| r.target == "objective") {
        println!(
            "  {:<22} {:<14} {:>9.3} {:>9.3} {:>10.2e}",
            r.family, r.features, r.metrics.spearman, r.metrics.pearson, r.metrics.mse
        );
    }
    let show = |w: &[f64]| {
        o.domains
            .iter()
            .zip(w)
            .map(|(d, x)| format!("{d} {x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let (Some(rec), Some(pred)) = (&o.analysis.recommended, o.analysis.predicted) {
        println!(
            "\nSearched mixture ({} on {}): {}\n  predicted objective {pred:.4}; best training mixture {:.4}",
            o.analysis.family,
            o.analysis.features.join("+"),
            show(rec),
            o.analysis.best_observed_loss
        );
    }
    if let Some(m) = &o.analysis.mde_optimum {
        println!("Exact MDE optimum (no regression): {}", show(m));
    }
    println!(
        "\nEverything (CSV, JSON, plots, report.md): {}",
        out.join("results").display()
    );
    Ok(())
}
