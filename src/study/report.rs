//! Study stage 5: results as CSV/JSON, plots as SVG, a markdown summary.
//!
//! Layout under `out_dir/results/`: `mixtures.csv` (the regression dataset: λ, MDE and
//! merged losses, true losses), `proxies.csv`, `noise.csv`, `test.csv`, `curves.csv`,
//! `subsets.csv` (Na et al.'s setting), `regression.md`, `outcome.json` (every number),
//! `report.md`, and the plots `proxies`, `subsets`, `curves` (each as SVG and PNG).

use std::fmt::Write as _;
use std::path::Path;

use datamix_io::write_file;
use datamix_regression::FeatureGroup::{Mde, Merged};
use plotters::prelude::*;

use super::StudyOutcome;
use super::analysis::{self, LAMBDA_ONLY, OBJECTIVE, objective};
use super::config::StudyConfig;
use super::stats;
use crate::error::{Error, Result};
use crate::plot::{BLUE_RGB, GREEN_RGB, Panel, RED_RGB, png_copy, write_scatter};

/// Writes every result file; returns the report's markdown.
pub fn write(cfg: &StudyConfig, o: &StudyOutcome) -> Result<String> {
    let dir = cfg.out_dir.join("results");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    analysis::dataset(o)?.to_csv(dir.join("mixtures.csv"))?;
    let a = &o.analysis;
    let mut csv = String::from("target,proxy,pearson,spearman\n");
    for q in &a.proxy_quality {
        let _ = writeln!(
            csv,
            "{},{},{:.6},{:.6}",
            q.target, q.proxy, q.pearson, q.spearman
        );
    }
    write_file(&dir.join("proxies.csv"), csv.as_bytes())?;
    let mut csv = String::from("target,mixtures,runs,seed_sd,mixture_sd,ceiling\n");
    for n in &a.noise {
        let _ = writeln!(
            csv,
            "{},{},{},{:.6e},{:.6e},{:.6}",
            n.target, n.mixtures, n.runs, n.seed_sd, n.mixture_sd, n.ceiling
        );
    }
    write_file(&dir.join("noise.csv"), csv.as_bytes())?;
    let mut csv = String::from("target,family,features,mse,spearman,pearson,top1_regret\n");
    for r in &a.test {
        let m = &r.metrics;
        let _ = writeln!(
            csv,
            "{},{},{},{:.6e},{:.6},{:.6},{:.6e}",
            r.target, r.family, r.features, m.mse, m.spearman, m.pearson, m.top1_regret
        );
    }
    write_file(&dir.join("test.csv"), csv.as_bytes())?;
    let mut csv = String::from("family,features,n_train,spearman,spearman_sd,repeats\n");
    for c in &a.curves {
        let _ = writeln!(
            csv,
            "{},{},{},{:.6},{:.6},{}",
            c.family, c.features, c.n_train, c.spearman, c.spearman_sd, c.repeats
        );
    }
    write_file(&dir.join("curves.csv"), csv.as_bytes())?;
    if let Some(s) = &o.subsets {
        let mut csv = String::from("eval_domain,in_domain,proxy,pearson,spearman\n");
        for q in &s.quality {
            let _ = writeln!(
                csv,
                "{},{},{},{:.6},{:.6}",
                q.eval_domain, q.in_domain, q.proxy, q.pearson, q.spearman
            );
        }
        write_file(&dir.join("subsets.csv"), csv.as_bytes())?;
    }
    if let Some(t) = &a.comparison {
        write_file(&dir.join("regression.md"), t.to_markdown().as_bytes())?;
    }
    let json = serde_json::to_vec_pretty(o).expect("outcome serialises");
    write_file(&dir.join("outcome.json"), &json)?;
    plot(o, &dir.join("proxies.svg"))?;
    plot_subsets(o, &dir.join("subsets.svg"))?;
    plot_curves(o, &dir.join("curves.svg"))?;
    for name in ["proxies", "subsets", "curves"] {
        let svg = dir.join(format!("{name}.svg"));
        if svg.is_file() {
            png_copy(&svg)?;
        }
    }
    let md = markdown(cfg, o);
    write_file(&dir.join("report.md"), md.as_bytes())?;
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

/// Where an eval domain comes from.
fn kind(o: &StudyOutcome, j: usize) -> &'static str {
    if o.eval_task[j] {
        "end task"
    } else if o.eval_in_domain[j] {
        "in-domain"
    } else {
        "out-of-domain"
    }
}

/// A correlation for the report: undefined for a constant prediction (the `mean`
/// baseline) or a constant target, which the report says instead of printing NaN.
fn corr(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.3}")
    } else {
        "undefined (constant)".into()
    }
}

/// Mean of the finite values (NaN when none).
fn finite_mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.filter(|x| x.is_finite()).collect();
    stats::mean(&v)
}

/// The human-readable summary.
pub fn markdown(cfg: &StudyConfig, o: &StudyOutcome) -> String {
    let a = &o.analysis;
    let n_test = o.is_test.iter().filter(|t| **t).count();
    let mut s = String::from("# datamix study\n\n");
    let _ = writeln!(
        s,
        "Config: `{}` backend, model preset `{}`; {} domains, {} base units, {} ground-truth mixtures \
         ({} for training, {} held out for testing), {} replicate runs, {} unit subsets, {} eval domains. \
         λ decides {:.0}% of each mixture model's training steps (`mixtures.init = {:?}`).\n",
        cfg.backend,
        cfg.model.preset,
        o.domains.len(),
        o.units_per_domain.iter().sum::<usize>(),
        o.mixtures.len(),
        o.mixtures.len() - n_test,
        n_test,
        o.replicates.len(),
        o.subsets.as_ref().map_or(0, |x| x.subsets.len()),
        o.eval_domains.len(),
        100.0 * o.lambda_share,
        cfg.mixtures.init,
    );
    let _ = writeln!(
        s,
        "The seed model was pre-trained for {} steps on the uniform mixture of {}.\n",
        cfg.seed_model.steps,
        match &cfg.data.seed_corpus {
            Some(p) => format!(
                "a separate seed corpus (`data.seed_corpus = {}`)",
                p.display()
            ),
            None => "the training domains".into(),
        }
    );
    let c = &o.cost;
    if c.study_tokens > 0 {
        let _ = writeln!(
            s,
            "Cost: the study's {} models were trained on {} tokens ({} jobs: {}; {} validation runs: {}). \
             Training one model per candidate mixture the search scored ({} candidates × {} tokens{}) \
             would take {} tokens: {:.1}× the study.\n",
            c.job_models + c.validation_models,
            c.study_tokens,
            c.job_models,
            c.job_tokens,
            c.validation_models,
            c.validation_tokens,
            c.candidates_scored,
            c.tokens_per_candidate,
            if c.naive_tokens
                > c.tokens_per_candidate
                    .saturating_mul(c.candidates_scored as u64)
            {
                ", plus the shared seed"
            } else {
                ""
            },
            c.naive_tokens,
            c.ratio,
        );
    }
    s.push_str("## Losses (mean CE, nats/token)\n\n| eval domain | kind | objective weight | seed | best expert | mixture models (min / mean / max) |\n|---|---|---:|---:|---:|---:|\n");
    for (j, e) in o.eval_domains.iter().enumerate() {
        let col: Vec<f64> = o.true_loss.iter().map(|r| r[j]).collect();
        let best_expert = o
            .expert_loss
            .iter()
            .map(|r| r[j])
            .fold(f64::INFINITY, f64::min);
        let _ = writeln!(
            s,
            "| {e} | {} | {:.3} | {:.4} | {:.4} | {:.4} / {:.4} / {:.4} |",
            kind(o, j),
            o.objective_weights[j],
            o.seed_loss[j],
            best_expert,
            col.iter().copied().fold(f64::INFINITY, f64::min),
            stats::mean(&col),
            col.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
    }
    if !a.noise.is_empty() {
        s.push_str("\n## Noise floor (seed-to-seed)\n\nThe same mixture trained with other seeds; the ceiling is the highest correlation any predictor can reach against one-seed measurements, `sqrt(1 - seed_sd² / mixture_sd²)`.\n\n| target | replicated mixtures | runs | seed-to-seed SD | SD across training mixtures | correlation ceiling |\n|---|---:|---:|---:|---:|---:|\n");
        for n in &a.noise {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2e} | {:.2e} | {:.3} |",
                n.target, n.mixtures, n.runs, n.seed_sd, n.mixture_sd, n.ceiling
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Proxies vs truth per eval domain (all {} mixtures)\n\nPearson r (Spearman ρ). The λ-only baseline is the best of ridge, GP and GBDT on λ alone, cross-validated ({} folds): a proxy's r means little unless it beats it.\n\n| target | MDE | merged (λ-weighted units) | λ-only baseline |\n|---|---:|---:|---:|",
        o.mixtures.len(),
        if cfg.analysis.folds == 0 {
            "leave-one-out".to_string()
        } else {
            cfg.analysis.folds.to_string()
        }
    );
    let targets: Vec<&str> = o
        .eval_domains
        .iter()
        .map(String::as_str)
        .chain([OBJECTIVE])
        .collect();
    for t in targets {
        let cell = |p: &str| {
            a.proxy_quality
                .iter()
                .find(|q| q.target == t && q.proxy.starts_with(p))
                .map_or("-".into(), |q| {
                    format!("{:.3} ({:.3})", q.pearson, q.spearman)
                })
        };
        let base = a
            .proxy_quality
            .iter()
            .find(|q| q.target == t && q.proxy.starts_with(LAMBDA_ONLY))
            .map_or("-".into(), |q| {
                format!(
                    "{:.3} ({:.3}) {}",
                    q.pearson,
                    q.spearman,
                    q.proxy
                        .trim_start_matches(LAMBDA_ONLY)
                        .trim_start_matches(": ")
                )
            });
        let (mde, merged) = (cell(Mde.as_str()), cell(Merged.as_str()));
        let _ = writeln!(s, "| {t} | {mde} | {merged} | {base} |");
    }
    if let Some(t) = &a.comparison {
        let _ = writeln!(
            s,
            "\n## Regression, cross-validated on the {} training mixtures\n",
            o.mixtures.len() - n_test
        );
        s.push_str(&t.to_markdown());
    }
    let mut test_targets: Vec<&str> = a.test.iter().map(|r| r.target.as_str()).collect();
    test_targets.dedup();
    for target in test_targets {
        let _ = writeln!(
            s,
            "\n## Held-out test mixtures ({n_test}, never fitted on, never used to choose a family): `{target}`\n\nFitted on every training mixture, scored on the test mixtures' `{target}`.\n\n| family | features | Spearman | Pearson | MSE | top-1 regret |\n|---|---|---:|---:|---:|---:|"
        );
        for r in a.test.iter().filter(|r| r.target == target) {
            let m = &r.metrics;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.3e} | {:.2e} |",
                r.family,
                r.features,
                corr(m.spearman),
                corr(m.pearson),
                m.mse,
                m.top1_regret
            );
        }
    }
    if !a.curves.is_empty() {
        let _ = writeln!(
            s,
            "\n## Learning curves ({}: Spearman on the test mixtures, mean ± SD over random training subsets)\n\n| training mixtures | λ | λ+MDE |\n|---:|---:|---:|",
            a.family
        );
        let mut sizes: Vec<usize> = a.curves.iter().map(|c| c.n_train).collect();
        sizes.sort_unstable();
        sizes.dedup();
        for n in sizes {
            let cell = |f: &str| {
                a.curves
                    .iter()
                    .find(|c| c.n_train == n && c.features == f)
                    .map_or("-".into(), |c| match c.repeats {
                        1 => format!("{:.3} (one subset: no spread)", c.spearman),
                        _ => format!("{:.3} ± {:.3} ({})", c.spearman, c.spearman_sd, c.repeats),
                    })
            };
            let _ = writeln!(s, "| {n} | {} | {} |", cell("λ"), cell("λ+MDE"));
        }
    }
    if let Some(x) = &o.subsets {
        let _ = writeln!(
            s,
            "\n## Na et al.'s setting: {} subsets of k = {} base units\n\nPearson r of seq-model vs proxy perplexity over the subsets, per eval domain.\n",
            x.subsets.len(),
            x.k
        );
        let mut names: Vec<String> = x.proxies.iter().map(|(n, _)| n.clone()).collect();
        names.push(LAMBDA_ONLY.into());
        s.push_str("The ceiling is the highest r any proxy can reach given the seed-to-seed SD of the replicated mixture models against the spread of the subsets' seq-model CE.\n\n");
        let _ = writeln!(
            s,
            "| eval domain | kind | {} | ceiling |",
            names.join(" | ")
        );
        let _ = writeln!(s, "|---|---|{}---:|", "---:|".repeat(names.len()));
        let ceiling = |j: usize| {
            let seed_sd = a
                .noise
                .iter()
                .find(|n| n.target == o.eval_domains[j])
                .map_or(f64::NAN, |n| n.seed_sd);
            let spread = stats::sample_sd(&x.seq_loss.iter().map(|r| r[j]).collect::<Vec<_>>());
            (1.0 - (seed_sd / spread).powi(2)).max(0.0).sqrt()
        };
        let cell = |e: &str, p: &str| {
            x.quality
                .iter()
                .find(|q| q.eval_domain == e && q.proxy.starts_with(p))
                .map_or(f64::NAN, |q| q.pearson)
        };
        for (j, e) in o.eval_domains.iter().enumerate() {
            let row: Vec<String> = names.iter().map(|p| format!("{:.3}", cell(e, p))).collect();
            let _ = writeln!(
                s,
                "| {e} | {} | {} | {:.3} |",
                kind(o, j),
                row.join(" | "),
                ceiling(j)
            );
        }
        for (label, pick) in [("mean, out-of-domain", false), ("mean, in-domain", true)] {
            let row: Vec<String> = names
                .iter()
                .map(|p| {
                    let v = finite_mean(
                        o.eval_domains
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| o.eval_in_domain[*j] == pick && !o.eval_task[*j])
                            .map(|(_, e)| cell(e, p)),
                    );
                    format!("{v:.3}")
                })
                .collect();
            let _ = writeln!(s, "| **{label}** | | {} | |", row.join(" | "));
        }
    }
    s.push_str("\n## Search\n\n");
    let w = &o.objective_weights;
    let _ = writeln!(
        s,
        "- Best training mixture: mix{:02} (objective {:.4}): {}",
        a.best_observed,
        a.best_observed_loss,
        fmt_mix(&o.domains, &o.mixtures[a.best_observed])
    );
    let _ = writeln!(
        s,
        "- Uniform mixture: objective {:.4}",
        objective(&o.true_loss[0], w)
    );
    if let Some(r) = &a.recommended {
        let std = a
            .predicted_std
            .map(|s| format!(" ± {s:.4}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "- Recommended by {} on {} (fitted on the training mixtures): predicted {:.4}{std}: {}",
            a.family,
            a.features.join("+"),
            a.predicted.unwrap_or(f64::NAN),
            fmt_mix(&o.domains, r)
        );
    }
    if let Some(v) = &a.validation {
        let sd = a
            .noise
            .iter()
            .find(|n| n.target == OBJECTIVE)
            .map_or(f64::NAN, |n| n.seed_sd);
        let (rec, uni, best) = (
            stats::mean(&v.recommended),
            stats::mean(&v.uniform),
            stats::mean(&v.best),
        );
        let _ = writeln!(
            s,
            "- Trained for real with {} seed(s): recommended {:.4}, uniform {:.4}, best training mixture (mix{:02}) {:.4} (means; seed-to-seed SD of the objective {:.2e})",
            v.seeds.len(),
            rec,
            uni,
            v.best_index,
            best,
            sd
        );
        // In seed-to-seed SDs, when replicate runs measured one.
        let in_sd = |d: f64| {
            if sd.is_finite() && sd > 0.0 {
                format!("{:+.1} SD", d / sd)
            } else {
                "SD unknown: no replicate runs".into()
            }
        };
        let _ = writeln!(
            s,
            "- Recommended vs uniform: {:+.4} ({}); vs the best training mixture: {:+.4} ({})",
            rec - uni,
            in_sd(rec - uni),
            rec - best,
            in_sd(rec - best)
        );
        // Paired by seed (same seed = same sampling stream, common random numbers).
        for (label, other) in [("uniform", &v.uniform), ("best training mixture", &v.best)] {
            let d: Vec<f64> = v
                .recommended
                .iter()
                .zip(other)
                .map(|(r, u)| r - u)
                .collect();
            let wins = d.iter().filter(|x| **x < 0.0).count();
            let se = match d.len() {
                1 => "one seed: no SE".to_string(),
                n => format!("± {:.4} SE", stats::sample_sd(&d) / (n as f64).sqrt()),
            };
            let _ = writeln!(
                s,
                "- Paired by seed, recommended − {label}: {} (mean {:+.4} {se}; better in {wins} of {})",
                d.iter()
                    .map(|x| format!("{x:+.4}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                stats::mean(&d),
                d.len()
            );
        }
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

/// One panel per eval domain (and one for the objective): MDE (blue) and merged (red)
/// proxies against the trained mixture models' losses.
fn plot(o: &StudyOutcome, path: &Path) -> Result<()> {
    let col = |m: &[Vec<f64>], j: usize| m.iter().map(|r| r[j]).collect::<Vec<_>>();
    let obj = |m: &[Vec<f64>]| {
        m.iter()
            .map(|r| objective(r, &o.objective_weights))
            .collect::<Vec<_>>()
    };
    let mut panels: Vec<Panel> = o
        .eval_domains
        .iter()
        .enumerate()
        .map(|(j, e)| Panel {
            name: e.clone(),
            truth: col(&o.true_loss, j),
            series: vec![
                (BLUE_RGB, col(&o.mde_loss, j)),
                (RED_RGB, col(&o.merged_loss, j)),
            ],
            diagonal: false,
        })
        .collect();
    panels.push(Panel {
        name: "objective".into(),
        truth: obj(&o.true_loss),
        series: vec![(BLUE_RGB, obj(&o.mde_loss)), (RED_RGB, obj(&o.merged_loss))],
        diagonal: false,
    });
    write_scatter(
        path,
        &panels,
        "proxy CE: MDE (blue), merged (red)",
        "trained model CE",
    )
}

/// Na et al.'s Figure 3: per eval domain, seq-model perplexity against the macro (red),
/// micro (blue) and expert (green) merges' perplexities.
fn plot_subsets(o: &StudyOutcome, path: &Path) -> Result<()> {
    let Some(x) = &o.subsets else {
        return Ok(());
    };
    let ppl = |m: &[Vec<f64>], j: usize| m.iter().map(|r| r[j].exp()).collect::<Vec<_>>();
    let panels: Vec<Panel> = o
        .eval_domains
        .iter()
        .enumerate()
        .map(|(j, e)| Panel {
            name: e.clone(),
            truth: ppl(&x.seq_loss, j),
            series: x
                .proxies
                .iter()
                .filter_map(|(n, m)| {
                    let c = match n.as_str() {
                        "macro" => RED_RGB,
                        "micro" => BLUE_RGB,
                        "experts" => GREEN_RGB,
                        _ => return None,
                    };
                    Some((c, ppl(m, j)))
                })
                .collect(),
            diagonal: false,
        })
        .collect();
    write_scatter(
        path,
        &panels,
        "merged PPL: macro (red), micro (blue), experts (green)",
        "seq model PPL",
    )
}

/// Learning curves: Spearman on the test mixtures against the number of training mixtures,
/// λ (grey) and λ+MDE (blue), ± one SD.
fn plot_curves(o: &StudyOutcome, path: &Path) -> Result<()> {
    let c = &o.analysis.curves;
    if c.is_empty() {
        return Ok(());
    }
    let plot_err = |e: String| Error::Invalid(format!("plot {}: {e}", path.display()));
    let tmp = path.with_extension("svg.tmp");
    {
        let root = SVGBackend::new(&tmp, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        let max_n = c.iter().map(|p| p.n_train).max().unwrap_or(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: Spearman on held-out test mixtures", o.analysis.family),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_n + 1.0, -1.0..1.0)
            .map_err(|e| plot_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("training mixtures")
            .y_desc("Spearman ρ (test)")
            .draw()
            .map_err(|e| plot_err(e.to_string()))?;
        for (f, colour) in [("λ", RGBColor(120, 120, 120)), ("λ+MDE", BLUE)] {
            let pts: Vec<(f64, f64, f64)> = c
                .iter()
                .filter(|p| p.features == f && p.spearman.is_finite())
                .map(|p| (p.n_train as f64, p.spearman, p.spearman_sd))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.1)),
                    colour.stroke_width(2),
                ))
                .map_err(|e| plot_err(e.to_string()))?
                .label(f)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
            chart
                .draw_series(
                    pts.iter().filter(|p| p.2.is_finite()).map(|p| {
                        PathElement::new(vec![(p.0, p.1 - p.2), (p.0, p.1 + p.2)], colour)
                    }),
                )
                .map_err(|e| plot_err(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(e.to_string()))?;
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
