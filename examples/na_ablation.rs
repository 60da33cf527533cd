//! Na et al.'s ablation on the built-in small corpus, in about a minute on 2 CPU cores: one
//! model per equal-sized base unit continued from a shared seed, then sets of k base units
//! whose "seq" model trains on their union (k times the unit budget), each predicted by the
//! parameter average of its units' models (uniform, macro and micro merges), by the merge of
//! the domain experts and by the mean of the individual models, beside a regression on the
//! subsets' composition alone (the λ-only baseline, cross-validated).
//!
//! ```sh
//! ./scripts/fetch-corpus.sh --small
//! cargo run --release --example na_ablation [-- data/small/corpus]
//! ```
//!
//! The paper's claim: the merged proxies' perplexities correlate with the seq models' (Pearson
//! 0.93-0.98 on average over out-of-domain sets). At this scale the correlations are noisy;
//! the main job (`./scripts/main.sh`, docs/reproduction.md) runs the same setting larger.

use datamix::study::{self, StudyConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/small/corpus".into());
    // Under runs/ like the main job: a rerun reuses the trained models.
    let out = std::path::PathBuf::from("runs/examples/na_ablation");
    let config = format!(
        r#"
out_dir = {out:?}
[data]
corpus = {corpus:?}
vocab_size = 2048
seq_len = 128
unit_tokens = 16384       # ~26 equal-sized base units
eval_tokens = 8192
[model]
preset = "tiny"
[seed_model]
steps = 150
lr = 3e-3
warmup_steps = 15
[continued]               # every unit model: re-warmed, continued from the seed
steps = 30
lr = 3e-3
warmup_steps = 3
[mixtures]
count = 4
[subsets]                 # 10 sets of 3 base units; seq model = seed + 3 x 30 steps
count = 10
k = 3
[analysis]
folds = 4
curve_repeats = 0
[search]
validate = false
"#
    );
    let cfg = StudyConfig::from_toml(&config, "na_ablation.toml".as_ref())?;
    let o = study::run(&cfg)?;
    let s = o
        .subsets
        .as_ref()
        .ok_or("the study ran without its subsets")?;
    println!(
        "\n{} subsets of k = {} base units (of {}); Pearson r of perplexities, proxy vs seq model, per eval domain:",
        s.subsets.len(),
        s.k,
        s.units.len()
    );
    // The λ-only baseline's family may differ by eval domain: one column for it.
    let column = |p: &str| {
        if p.starts_with("λ-only") {
            "λ-only (CV)".to_string()
        } else {
            p.to_string()
        }
    };
    let mut proxies: Vec<String> = Vec::new();
    for q in &s.quality {
        if !proxies.contains(&column(&q.proxy)) {
            proxies.push(column(&q.proxy));
        }
    }
    print!("{:<14}", "eval domain");
    for p in &proxies {
        print!(" {:>16.16}", p);
    }
    println!();
    for e in &o.eval_domains {
        print!("{e:<14}");
        for p in &proxies {
            match s
                .quality
                .iter()
                .find(|q| &q.eval_domain == e && column(&q.proxy) == *p)
            {
                Some(q) => print!(" {:>16.3}", q.pearson),
                None => print!(" {:>16}", "-"),
            }
        }
        println!();
    }
    for p in &proxies {
        let r: Vec<f64> = s
            .quality
            .iter()
            .filter(|q| column(&q.proxy) == *p && q.pearson.is_finite())
            .map(|q| q.pearson)
            .collect();
        if !r.is_empty() {
            println!(
                "  mean over {} eval domains: {:<28} {:+.3}",
                r.len(),
                p,
                r.iter().sum::<f64>() / r.len() as f64
            );
        }
    }
    println!(
        "\nEverything (CSV, JSON, plots, report.md): {}",
        out.join("results").display()
    );
    Ok(())
}
