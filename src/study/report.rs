//! Study stage 5: results as CSV/JSON, plots as SVG, a markdown summary.
//!
//! Layout under `out_dir/results/`: `mixtures.csv` (the regression dataset: λ, MDE and
//! merged losses, true losses), `proxies.csv`, `regression.md`, `outcome.json` (every
//! number), `report.md`, `proxies.svg`.

use std::fmt::Write as _;
use std::path::Path;

use datamix_decoder::checkpoint::write_atomic;
use plotters::prelude::*;

use super::StudyOutcome;
use super::analysis::{self, objective};
use super::config::StudyConfig;
use crate::error::{Error, Result};

/// Writes every result file; returns the report's markdown.
pub fn write(cfg: &StudyConfig, o: &StudyOutcome) -> Result<String> {
    let dir = cfg.out_dir.join("results");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    analysis::dataset(o)?.to_csv(dir.join("mixtures.csv"))?;
    let mut csv = String::from("target,proxy,pearson,spearman\n");
    for q in &o.analysis.proxy_quality {
        let _ = writeln!(
            csv,
            "{},{},{:.6},{:.6}",
            q.target, q.proxy, q.pearson, q.spearman
        );
    }
    write_atomic(&dir.join("proxies.csv"), csv.as_bytes())?;
    if let Some(t) = &o.analysis.comparison {
        write_atomic(&dir.join("regression.md"), t.to_markdown().as_bytes())?;
    }
    let json = serde_json::to_vec_pretty(o).expect("outcome serialises");
    write_atomic(&dir.join("outcome.json"), &json)?;
    plot(o, &dir.join("proxies.svg"))?;
    let md = markdown(cfg, o);
    write_atomic(&dir.join("report.md"), md.as_bytes())?;
    Ok(md)
}

fn fmt_mix(domains: &[String], l: &[f64]) -> String {
    domains
        .iter()
        .zip(l)
        .map(|(d, w)| format!("{d} {w:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The human-readable summary.
pub fn markdown(cfg: &StudyConfig, o: &StudyOutcome) -> String {
    let a = &o.analysis;
    let mut s = String::from("# datamix study\n\n");
    let _ = writeln!(
        s,
        "Config: `{}` backend, model preset `{}`; {} domains, {} base units, {} ground-truth mixtures, {} eval domains.\n",
        cfg.backend,
        cfg.model.preset,
        o.domains.len(),
        o.units_per_domain.iter().sum::<usize>(),
        o.mixtures.len(),
        o.eval_domains.len()
    );
    s.push_str("## Losses (mean CE, nats/token)\n\n| eval domain | in-domain | seed | best expert | mixture models (min / mean / max) |\n|---|---|---:|---:|---:|\n");
    for (j, e) in o.eval_domains.iter().enumerate() {
        let col: Vec<f64> = o.true_loss.iter().map(|r| r[j]).collect();
        let best_expert = o
            .expert_loss
            .iter()
            .map(|r| r[j])
            .fold(f64::INFINITY, f64::min);
        let _ = writeln!(
            s,
            "| {e} | {} | {:.4} | {:.4} | {:.4} / {:.4} / {:.4} |",
            if o.eval_in_domain[j] { "yes" } else { "no" },
            o.seed_loss[j],
            best_expert,
            col.iter().copied().fold(f64::INFINITY, f64::min),
            objective(&col),
            col.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
    }
    s.push_str("\n## Proxies vs truth on the objective (mean over eval domains)\n\n| proxy | Pearson r | Spearman ρ |\n|---|---:|---:|\n");
    for q in a
        .proxy_quality
        .iter()
        .filter(|q| q.target == analysis::OBJECTIVE)
    {
        let _ = writeln!(s, "| {} | {:.3} | {:.3} |", q.proxy, q.pearson, q.spearman);
    }
    s.push_str("\nPer eval domain: `proxies.csv`. Plot: `proxies.svg`.\n\n");
    if let Some(t) = &a.comparison {
        s.push_str("## Regression (cross-validated)\n\n");
        s.push_str(&t.to_markdown());
        s.push('\n');
    }
    s.push_str("## Search\n\n");
    let _ = writeln!(
        s,
        "- Best trained mixture: mix{:02} (objective {:.4}): {}",
        a.best_observed,
        a.best_observed_loss,
        fmt_mix(&o.domains, &o.mixtures[a.best_observed])
    );
    if let Some(r) = &a.recommended {
        let std = a
            .predicted_std
            .map(|s| format!(" ± {s:.4}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "- Recommended by {} on {}: predicted {:.4}{std}: {}",
            a.family,
            a.features.join("+"),
            a.predicted.unwrap_or(f64::NAN),
            fmt_mix(&o.domains, r)
        );
    }
    if let Some(v) = a.validated_loss {
        let _ = writeln!(
            s,
            "- Trained on the recommendation: objective {v:.4} ({:+.4} vs the best trained mixture)",
            v - a.best_observed_loss
        );
    }
    if let (Some(m), Some(v)) = (&a.mde_optimum, a.mde_optimum_loss) {
        let _ = writeln!(
            s,
            "- MDE-only optimum (exact convex solve): MDE objective {v:.4}: {}",
            fmt_mix(&o.domains, m)
        );
    }
    if let Some(b) = &a.bo_next {
        let _ = writeln!(
            s,
            "- Next mixture to train (Bayesian optimisation): {}",
            fmt_mix(&o.domains, b)
        );
    }
    s
}

/// One scatter panel: each trained mixture's loss against its two proxies.
struct Panel {
    name: String,
    truth: Vec<f64>,
    mde: Vec<f64>,
    merged: Vec<f64>,
}

/// One scatter panel per eval domain (and one for the objective): both proxies (MDE
/// blue, merged red) against the trained models' losses.
fn plot(o: &StudyOutcome, path: &Path) -> Result<()> {
    let plot_err = |e: String| Error::Invalid(format!("plot {}: {e}", path.display()));
    let col = |m: &Vec<Vec<f64>>, j: usize| m.iter().map(|r| r[j]).collect::<Vec<_>>();
    let obj = |m: &Vec<Vec<f64>>| m.iter().map(|r| objective(r)).collect::<Vec<_>>();
    let mut panels: Vec<Panel> = o
        .eval_domains
        .iter()
        .enumerate()
        .map(|(j, e)| Panel {
            name: e.clone(),
            truth: col(&o.true_loss, j),
            mde: col(&o.mde_loss, j),
            merged: col(&o.merged_loss, j),
        })
        .collect();
    panels.push(Panel {
        name: "objective (mean)".into(),
        truth: obj(&o.true_loss),
        mde: obj(&o.mde_loss),
        merged: obj(&o.merged_loss),
    });
    let cols = 3;
    let rows = panels.len().div_ceil(cols);
    let tmp = path.with_extension("svg.tmp");
    {
        let root = SVGBackend::new(&tmp, (1200, 340 * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        let areas = root.split_evenly((rows, cols));
        for (
            area,
            Panel {
                name,
                truth,
                mde,
                merged,
            },
        ) in areas.iter().zip(&panels)
        {
            let all: Vec<f64> = mde.iter().chain(merged).copied().collect();
            let range = |v: &[f64]| {
                let (lo, hi) = v
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                        (a.min(x), b.max(x))
                    });
                let pad = ((hi - lo) * 0.08).max(1e-3);
                (lo - pad)..(hi + pad)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(name, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(range(&all), range(truth))
                .map_err(|e| plot_err(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("proxy: MDE (blue), merged (red)")
                .y_desc("trained model")
                .draw()
                .map_err(|e| plot_err(e.to_string()))?;
            for (proxy, colour) in [(mde, BLUE), (merged, RED)] {
                chart
                    .draw_series(
                        proxy
                            .iter()
                            .zip(truth)
                            .map(|(&x, &y)| Circle::new((x, y), 3, colour.filled())),
                    )
                    .map_err(|e| plot_err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
