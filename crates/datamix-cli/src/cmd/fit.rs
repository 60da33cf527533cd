//! `datamix fit`: a swarm of trained mixtures (ratios + measured metrics) → families
//! cross-validated per feature set, a fitted model on disk, the recommended mixture under
//! constraints, a predicted-vs-true plot.

use std::path::PathBuf;

use datamix::plot::{BLUE_RGB, Panel, scatter_svg, svg_to_png};
use datamix::regression::dataset::{LAMBDA, MDE};
use datamix::regression::eval::{ComparisonRow, cross_validate};
use datamix::regression::{Column, ComparisonTable, Dataset, FeatureSet, Folds};
use datamix::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;

use super::common::{
    ConstraintArgs, CsvTable, FitModel, MODEL_FORMAT, MODEL_VERSION, Outputs, csv_field,
    family_spec, recommend, short, user,
};

/// How far a row's ratios may sum from 1 before it is an error without --normalize: ratios
/// printed with five or more decimals sum to 1 within this.
pub const SUM_TOLERANCE: f64 = 1e-4;

/// Row-id columns looked for when --id is not given.
const ID_CANDIDATES: &[&str] = &["run", "mixture", "id"];

/// Name of the weighted objective when several metrics are combined.
const OBJECTIVE: &str = "objective";

const EXAMPLE: &str = "\
Examples:
  # One CSV: run id, ratio columns `lambda:<domain>`, metric columns
  datamix fit --data swarm.csv --target val_loss --out fit/

  # olmix / RegMix style: ratios and metrics in two files joined on a run id
  datamix fit --ratios ratios.csv --metrics metrics.csv --id run \\
      --target web_loss=0.5 --target code_loss=0.5 \\
      --min code=0.1 --available books=2e9 --total-tokens 1e10 --max-epochs 4 --out fit/

Writes to --out: comparison.csv/.json/.md (families × feature sets, cross-validated),
predictions.csv (out-of-fold predictions), model.json (for `datamix search`),
recommendation.json/.csv, predicted_vs_true.svg/.png.";

/// Arguments of `datamix fit`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLE)]
pub struct FitArgs {
    /// One CSV with an optional run-id column, one ratio column per domain and metric columns.
    #[arg(long, value_name = "CSV", required_unless_present = "ratios", conflicts_with_all = ["ratios", "metrics"])]
    pub data: Option<PathBuf>,
    /// Mixture ratios, one row per run and one column per domain (joined with --metrics on
    /// the run id).
    #[arg(long, value_name = "CSV", requires = "metrics")]
    pub ratios: Option<PathBuf>,
    /// Measured metrics, one row per run (joined with --ratios on the run id).
    #[arg(long, value_name = "CSV", requires = "ratios")]
    pub metrics: Option<PathBuf>,
    /// Run-id column [default: the first of `run`, `mixture`, `id` present; with --data,
    /// rows are numbered when there is none].
    #[arg(long, value_name = "COLUMN")]
    pub id: Option<String>,
    /// Ratio columns, by name (comma-separated) [default: the columns starting with --prefix;
    /// with --ratios, every column but the id].
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub domains: Vec<String>,
    /// Prefix of the ratio columns in --data (the domain is the rest of the name).
    #[arg(long, default_value = "lambda:")]
    pub prefix: String,
    /// Prefix of MDE-loss feature columns (per eval domain); when there are some, the λ+MDE
    /// feature set is compared too.
    #[arg(long, default_value = "mde:")]
    pub mde_prefix: String,
    /// Metric to minimise, NAME or NAME=WEIGHT (repeatable; several are summed with their
    /// weights, equal shares when none is given) [default: the only metric column].
    #[arg(long = "target", value_name = "NAME[=WEIGHT]")]
    pub targets: Vec<String>,
    /// Rescale every row's ratios to sum to 1 (without it, a row whose ratios sum to more
    /// than 1e-4 away from 1 is an error).
    #[arg(long)]
    pub normalize: bool,
    /// Families compared, comma-separated, from: mean, ridge, elastic-net, gp, gbdt,
    /// mde-alone [default: mean, ridge, gp, gbdt, and mde-alone with MDE columns].
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub families: Vec<String>,
    /// Family of the saved model and the search: `auto` takes the best cross-validated
    /// Spearman on λ among ridge, elastic-net, gp and gbdt.
    #[arg(long, default_value = "auto")]
    pub family: String,
    /// Cross-validation folds (0: leave-one-out; so is any number ≥ the runs).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed of the folds, the GP restarts and the search.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub constraints: ConstraintArgs,
    /// Output directory (created; files in it are replaced).
    #[arg(long, short)]
    pub out: PathBuf,
}

/// A swarm of trained mixtures, checked.
#[derive(Debug, Clone)]
pub struct Swarm {
    /// Run ids.
    pub ids: Vec<String>,
    /// Domains.
    pub domains: Vec<String>,
    /// Ratios, rows summing to 1.
    pub ratios: Vec<Vec<f64>>,
    /// MDE feature names (prefix stripped).
    pub mde_names: Vec<String>,
    /// MDE features per run.
    pub mde: Vec<Vec<f64>>,
    /// Metric names used by the objective.
    pub metric_names: Vec<String>,
    /// Metric values per run.
    pub metrics: Vec<Vec<f64>>,
    /// Weight of each metric in the objective.
    pub weights: Vec<f64>,
    /// Rows whose ratios were rescaled by more than the tolerance (--normalize).
    pub normalized: usize,
}

impl Swarm {
    /// The objective's name: the metric itself, or [`OBJECTIVE`] for a weighted sum.
    pub fn target(&self) -> String {
        if self.metric_names.len() == 1 && self.weights[0] == 1.0 {
            self.metric_names[0].clone()
        } else {
            OBJECTIVE.into()
        }
    }

    /// How the objective is made, for the model file and the report.
    pub fn target_description(&self) -> String {
        let t = self.target();
        if t == self.metric_names[0] && self.metric_names.len() == 1 {
            return t;
        }
        let terms: Vec<String> = self
            .metric_names
            .iter()
            .zip(&self.weights)
            .map(|(m, w)| format!("{w}·{m}"))
            .collect();
        format!("{t} = {}", terms.join(" + "))
    }

    /// The regression dataset: `lambda:` and `mde:` features, the metrics as targets and the
    /// objective.
    pub fn dataset(&self) -> Result<Dataset> {
        let n = self.ids.len();
        let mut columns: Vec<Column> = self
            .domains
            .iter()
            .map(|d| Column::new(LAMBDA, d))
            .collect();
        columns.extend(self.mde_names.iter().map(|m| Column::new(MDE, m)));
        let k = self.domains.len();
        let features = Array2::from_shape_fn((n, columns.len()), |(r, c)| {
            if c < k {
                self.ratios[r][c]
            } else {
                self.mde[r][c - k]
            }
        });
        let targets =
            Array2::from_shape_fn((n, self.metric_names.len()), |(r, c)| self.metrics[r][c]);
        let mut data = Dataset::new(
            self.ids.clone(),
            columns,
            features,
            self.metric_names.clone(),
            targets,
        )?;
        if self.target() == OBJECTIVE {
            let w: Vec<(&str, f64)> = self
                .metric_names
                .iter()
                .map(String::as_str)
                .zip(self.weights.iter().copied())
                .collect();
            data.add_objective(OBJECTIVE, &w)?;
        }
        Ok(data)
    }

    /// The objective of every run.
    pub fn objective(&self) -> Vec<f64> {
        self.metrics
            .iter()
            .map(|m| m.iter().zip(&self.weights).map(|(v, w)| v * w).sum())
            .collect()
    }
}

/// Finds the id column: `--id` (must exist) or the first candidate present.
fn id_column(t: &CsvTable, id: Option<&str>) -> Result<Option<usize>> {
    match id {
        Some(name) => t.column(name, "the run id, --id").map(Some),
        None => Ok(ID_CANDIDATES
            .iter()
            .find_map(|c| t.headers.iter().position(|h| h == c))),
    }
}

/// Run ids of `t` (from column `c`, or numbered rows), checked unique.
fn run_ids(t: &CsvTable, c: Option<usize>) -> Result<Vec<String>> {
    let ids: Vec<String> = match c {
        Some(c) => t.rows.iter().map(|r| r[c].clone()).collect(),
        None => (0..t.rows.len())
            .map(|r| format!("line{}", CsvTable::line(r)))
            .collect(),
    };
    for (r, id) in ids.iter().enumerate() {
        if id.is_empty() {
            return Err(user(format!(
                "{}: line {}: empty run id",
                t.path.display(),
                CsvTable::line(r)
            )));
        }
        if let Some(first) = ids[..r].iter().position(|x| x == id) {
            return Err(user(format!(
                "{}: run id `{id}` appears twice (lines {} and {})",
                t.path.display(),
                CsvTable::line(first),
                CsvTable::line(r)
            )));
        }
    }
    Ok(ids)
}

/// Parses `--target` items into (column, weight); equal shares when no weight is given.
fn parse_targets(items: &[String]) -> Result<Vec<(String, f64)>> {
    let mut out: Vec<(String, Option<f64>)> = Vec::new();
    for item in items {
        let (name, w) = match item.split_once('=') {
            Some(_) => {
                let (n, w) = super::common::key_value("--target", item)?;
                if w < 0.0 {
                    return Err(user(format!("--target {item}: expected a weight >= 0")));
                }
                (n, Some(w))
            }
            None => (item.trim().to_string(), None),
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(user(format!("--target: metric `{name}` given twice")));
        }
        out.push((name, w));
    }
    let weighted = out.iter().filter(|(_, w)| w.is_some()).count();
    if weighted != 0 && weighted != out.len() {
        return Err(user(
            "--target: give a weight to every metric (NAME=WEIGHT) or to none",
        ));
    }
    let share = 1.0 / out.len().max(1) as f64;
    let pairs: Vec<(String, f64)> = out
        .into_iter()
        .map(|(n, w)| (n, w.unwrap_or(share)))
        .collect();
    if weighted > 0 && pairs.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
        return Err(user("--target: the weights sum to 0"));
    }
    Ok(pairs)
}

/// Numbers of column `c` over every row of `t`, in the order `rows` gives.
fn numbers(t: &CsvTable, rows: &[usize], c: usize) -> Result<Vec<f64>> {
    rows.iter().map(|&r| t.number(r, c)).collect()
}

/// Reads and checks the swarm.
pub fn load_swarm(a: &FitArgs) -> Result<Swarm> {
    let (rt, mt, ids, ratio_rows, metric_rows, ratio_id, metric_id) = match (
        &a.data, &a.ratios, &a.metrics,
    ) {
        (Some(data), _, _) => {
            let t = CsvTable::read(data)?;
            let idc = id_column(&t, a.id.as_deref())?;
            let ids = run_ids(&t, idc)?;
            let rows: Vec<usize> = (0..t.rows.len()).collect();
            (t.clone(), t, ids, rows.clone(), rows, idc, idc)
        }
        (None, Some(rp), Some(mp)) => {
            let rt = CsvTable::read(rp)?;
            let mt = CsvTable::read(mp)?;
            let ric = match id_column(&rt, a.id.as_deref())? {
                Some(c) => c,
                None => {
                    return Err(user(format!(
                        "{}: no run-id column to join with {} (looked for {}); name it with --id",
                        rp.display(),
                        mp.display(),
                        ID_CANDIDATES.join(", ")
                    )));
                }
            };
            let id_name = rt.headers[ric].clone();
            let mic = mt.column(&id_name, "the run id to join on")?;
            let ids = run_ids(&rt, Some(ric))?;
            let mids = run_ids(&mt, Some(mic))?;
            let metric_rows: Vec<usize> = ids
                .iter()
                .enumerate()
                .map(|(r, id)| {
                    mids.iter().position(|m| m == id).ok_or_else(|| {
                        user(format!(
                            "{}: no row for run `{id}` ({} line {})",
                            mp.display(),
                            rp.display(),
                            CsvTable::line(r)
                        ))
                    })
                })
                .collect::<Result<_>>()?;
            let rows: Vec<usize> = (0..rt.rows.len()).collect();
            (rt, mt, ids, rows, metric_rows, Some(ric), Some(mic))
        }
        _ => return Err(user("give --data, or --ratios with --metrics")),
    };
    let joined = a.data.is_none();
    // Ratio columns.
    let (domain_cols, domains): (Vec<usize>, Vec<String>) = if !a.domains.is_empty() {
        let mut cols = Vec::new();
        for d in &a.domains {
            if a.domains.iter().filter(|x| *x == d).count() > 1 {
                return Err(user(format!("--domains: `{d}` given twice")));
            }
            cols.push(rt.column(d, "a ratio column named by --domains")?);
        }
        (cols, a.domains.clone())
    } else if joined {
        (0..rt.headers.len())
            .filter(|&c| Some(c) != ratio_id)
            .map(|c| (c, rt.headers[c].clone()))
            .unzip()
    } else {
        (0..rt.headers.len())
            .filter(|&c| Some(c) != ratio_id)
            .filter_map(|c| {
                rt.headers[c]
                    .strip_prefix(&a.prefix)
                    .filter(|d| !d.is_empty())
                    .map(|d| (c, d.to_string()))
            })
            .unzip()
    };
    if domains.len() < 2 {
        return Err(user(format!(
            "{}: {} ratio column(s) found ({}), a mixture needs at least 2; name them with \
             --domains A,B,... or --prefix",
            rt.path.display(),
            domains.len(),
            if joined {
                "every column but the run id".to_string()
            } else {
                format!("columns starting with `{}`", a.prefix)
            }
        )));
    }
    if let Some(c) = ratio_id.filter(|c| domain_cols.contains(c)) {
        return Err(user(format!(
            "{}: column `{}` is both the run id and a ratio column",
            rt.path.display(),
            rt.headers[c]
        )));
    }
    // Ratios: finite, non-negative, summing to 1 (or normalised).
    let mut ratios = Vec::with_capacity(ids.len());
    let mut off: Vec<(usize, f64)> = Vec::new();
    for (i, &r) in ratio_rows.iter().enumerate() {
        let mut row = Vec::with_capacity(domain_cols.len());
        for &c in &domain_cols {
            let v = rt.number(r, c)?;
            if v < 0.0 {
                return Err(user(format!(
                    "{}: line {} (run `{}`), column `{}`: ratio {v} is negative",
                    rt.path.display(),
                    CsvTable::line(r),
                    ids[i],
                    rt.headers[c]
                )));
            }
            row.push(v);
        }
        let s: f64 = row.iter().sum();
        if s <= 0.0 {
            return Err(user(format!(
                "{}: line {} (run `{}`): the ratios sum to 0",
                rt.path.display(),
                CsvTable::line(r),
                ids[i]
            )));
        }
        if (s - 1.0).abs() > SUM_TOLERANCE {
            off.push((i, s));
        }
        row.iter_mut().for_each(|v| *v /= s);
        ratios.push(row);
    }
    if let Some(&(i, s)) = off.first()
        && !a.normalize
    {
        let more = match off.len() - 1 {
            0 => String::new(),
            m => format!(" ({m} more row(s) too)"),
        };
        return Err(user(format!(
            "{}: line {} (run `{}`): the ratios sum to {} (off by {}{}){more}; pass \
             --normalize to rescale every row to sum to 1",
            rt.path.display(),
            CsvTable::line(ratio_rows[i]),
            ids[i],
            short(s),
            if s > 1.0 { "+" } else { "" },
            short(s - 1.0)
        )));
    }
    // MDE features and metrics.
    let taken = |c: usize| Some(c) == metric_id || (!joined && domain_cols.contains(&c));
    let (mde_cols, mde_names): (Vec<usize>, Vec<String>) = (0..mt.headers.len())
        .filter(|&c| !taken(c))
        .filter_map(|c| {
            mt.headers[c]
                .strip_prefix(&a.mde_prefix)
                .filter(|m| !m.is_empty() && !a.mde_prefix.is_empty())
                .map(|m| (c, m.to_string()))
        })
        .unzip();
    let candidates: Vec<usize> = (0..mt.headers.len())
        .filter(|&c| !taken(c) && !mde_cols.contains(&c))
        .collect();
    let targets = if a.targets.is_empty() {
        match candidates.as_slice() {
            [c] => vec![(mt.headers[*c].clone(), 1.0)],
            [] => {
                return Err(user(format!(
                    "{}: no metric column (every column is a run id, ratio or MDE feature)",
                    mt.path.display()
                )));
            }
            _ => {
                return Err(user(format!(
                    "{}: several metric columns ({}); name the one(s) to minimise with --target",
                    mt.path.display(),
                    candidates
                        .iter()
                        .map(|&c| mt.headers[c].as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    } else {
        parse_targets(&a.targets)?
    };
    let mut metric_cols = Vec::new();
    for (name, _) in &targets {
        let c = mt.column(name, "a metric named by --target")?;
        if !candidates.contains(&c) {
            return Err(user(format!(
                "{}: --target `{name}` is a run-id, ratio or MDE column, not a metric",
                mt.path.display()
            )));
        }
        metric_cols.push(c);
    }
    let by_row = |cols: &[usize]| -> Result<Vec<Vec<f64>>> {
        let per_col: Vec<Vec<f64>> = cols
            .iter()
            .map(|&c| numbers(&mt, &metric_rows, c))
            .collect::<Result<_>>()?;
        Ok((0..ids.len())
            .map(|r| per_col.iter().map(|col| col[r]).collect())
            .collect())
    };
    let normalized = if a.normalize { off.len() } else { 0 };
    Ok(Swarm {
        mde: by_row(&mde_cols)?,
        metrics: by_row(&metric_cols)?,
        ids,
        domains,
        ratios,
        mde_names,
        metric_names: targets.iter().map(|(n, _)| n.clone()).collect(),
        weights: targets.iter().map(|(_, w)| *w).collect(),
        normalized,
    })
}

/// Out-of-fold predictions of one family on one feature set.
struct CvCell {
    row: ComparisonRow,
    predictions: Vec<f64>,
}

/// Families compared when --families is not given.
fn default_families(has_mde: bool) -> Vec<String> {
    let mut f: Vec<String> = ["mean", "ridge", "gp", "gbdt"].map(String::from).to_vec();
    if has_mde {
        f.push("mde-alone".into());
    }
    f
}

/// Families that can be searched over λ (`auto` picks among them).
const SEARCHABLE: &[&str] = &["ridge", "elastic-net", "gp", "gbdt", "gbdt-regmix"];

/// Runs `datamix fit`.
pub fn run(a: &FitArgs) -> Result<()> {
    let swarm = load_swarm(a)?;
    let families = if a.families.is_empty() {
        default_families(!swarm.mde_names.is_empty())
    } else {
        a.families.clone()
    };
    let specs: Vec<_> = families
        .iter()
        .map(|f| family_spec(f, a.seed).map(|s| (f.clone(), s)))
        .collect::<Result<_>>()?;
    if a.family != "auto" {
        family_spec(&a.family, a.seed)?;
        if !SEARCHABLE.contains(&a.family.as_str()) {
            return Err(user(format!(
                "--family {}: the searched model must be one of {} (it predicts from λ alone)",
                a.family,
                SEARCHABLE.join(", ")
            )));
        }
    }
    if a.family == "auto" && !families.iter().any(|f| SEARCHABLE.contains(&f.as_str())) {
        return Err(user(format!(
            "--family auto: --families has none of {} to search with",
            SEARCHABLE.join(", ")
        )));
    }
    let (space, bounds) = a.constraints.space(&swarm.domains)?;
    let data = swarm.dataset()?;
    let target = swarm.target();
    let n = swarm.ids.len();
    let folds = if a.folds == 0 || a.folds >= n {
        Folds::loo(n)?
    } else {
        Folds::kfold(n, a.folds, Some(a.seed))?
    };
    let mut feature_sets = vec![FeatureSet::new("λ", &[LAMBDA])];
    if !swarm.mde_names.is_empty() {
        feature_sets.push(FeatureSet::new("λ+MDE", &[LAMBDA, MDE]));
    }
    if swarm.normalized > 0 {
        eprintln!(
            "note: rescaled the ratios of {} run(s) to sum to 1 (--normalize)",
            swarm.normalized
        );
    }

    // Every family on every feature set, cross-validated.
    let cells_total = (specs.len() * feature_sets.len()) as u64;
    let bar = ProgressBar::new(cells_total).with_style(
        ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut cells: Vec<CvCell> = Vec::new();
    for (fname, spec) in &specs {
        let family = spec.build()?;
        for fs in &feature_sets {
            bar.set_message(format!("{fname} on {}", fs.name));
            let groups: Vec<&str> = fs.groups.iter().map(String::as_str).collect();
            if fname == "mde-alone" && !groups.contains(&MDE) {
                bar.inc(1);
                continue;
            }
            let task = data.task(&groups, &target)?;
            let cv = cross_validate(family.as_ref(), &task, &folds)
                .map_err(|e| user(format!("cross-validating {fname} on {}: {e}", fs.name)))?;
            cells.push(CvCell {
                row: ComparisonRow {
                    family: family.name(),
                    features: fs.name.clone(),
                    n_features: task.x.ncols(),
                    metrics: cv.metrics,
                    seconds: cv.seconds,
                },
                predictions: cv.predictions.to_vec(),
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let table = ComparisonTable {
        target: target.clone(),
        rows: cells.iter().map(|c| c.row.clone()).collect(),
    };

    // The family searched: the best cross-validated Spearman on λ (ties: lower MSE).
    let chosen = if a.family == "auto" {
        specs
            .iter()
            .zip(cells.chunks(feature_sets.len()))
            .filter(|((f, _), _)| SEARCHABLE.contains(&f.as_str()))
            .filter_map(|((f, s), c)| c.first().map(|c| (f, s, &c.row.metrics)))
            .max_by(|x, y| {
                let key = |m: &datamix::regression::Metrics| {
                    (
                        if m.spearman.is_nan() {
                            -2.0
                        } else {
                            m.spearman
                        },
                        -m.mse,
                    )
                };
                let (a, b) = (key(x.2), key(y.2));
                a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1))
            })
            .map(|(f, s, _)| (f.clone(), s.clone()))
            .ok_or_else(|| {
                user(format!(
                    "--family auto: --families has none of {} to search with",
                    SEARCHABLE.join(", ")
                ))
            })?
    } else {
        (a.family.clone(), family_spec(&a.family, a.seed)?)
    };
    let (chosen_name, chosen_spec) = chosen;
    let mut saved = FitModel {
        format: MODEL_FORMAT.into(),
        version: MODEL_VERSION,
        family: chosen_spec.build()?.name(),
        spec: chosen_spec,
        target: swarm.target_description(),
        domains: swarm.domains.clone(),
        ids: swarm.ids.clone(),
        mixtures: swarm.ratios.clone(),
        values: swarm.objective(),
        fitted: Vec::new(),
    };
    let model = saved.fit()?;
    saved.fitted = model.predict(saved.task().x.view())?.mean.to_vec();
    let rec = recommend(&saved, model, &space, bounds, a.seed)?;

    // Outputs, all rendered before any is written.
    let mut out = Outputs::default();
    out.add("comparison.csv", table.to_csv_string());
    out.add("comparison.json", table.to_json_string());
    out.add("comparison.md", table.to_markdown());
    out.add("predictions.csv", predictions_csv(&swarm, &cells));
    out.add("model.json", saved.to_json());
    out.add(
        "recommendation.json",
        serde_json::to_string_pretty(&rec).expect("plain data serialises"),
    );
    out.add("recommendation.csv", rec.to_csv());
    let svg = plot(&swarm, &cells, &target)?;
    out.add("predicted_vs_true.png", svg_to_png(&svg)?);
    out.add("predicted_vs_true.svg", svg);
    out.write(&a.out)?;

    println!("{}", table.to_markdown());
    println!(
        "Model: {chosen_name} on λ, fitted on {n} runs ({} domains) → {}",
        swarm.domains.len(),
        a.out.join("model.json").display()
    );
    println!("{}", rec.summary());
    println!("Results: {}", a.out.display());
    Ok(())
}

/// `run,true,<family (features)>...`: the out-of-fold predictions of every cell.
fn predictions_csv(swarm: &Swarm, cells: &[CvCell]) -> String {
    let mut s = String::from("run,true");
    for c in cells {
        s.push(',');
        s.push_str(&csv_field(&format!(
            "{} ({})",
            c.row.family, c.row.features
        )));
    }
    s.push('\n');
    for (r, y) in swarm.objective().iter().enumerate() {
        s.push_str(&csv_field(&swarm.ids[r]));
        s.push_str(&format!(",{y}"));
        for c in cells {
            s.push_str(&format!(",{}", c.predictions[r]));
        }
        s.push('\n');
    }
    s
}

/// One panel per family and feature set: out-of-fold prediction (x) against the measured
/// objective (y), with the diagonal.
fn plot(swarm: &Swarm, cells: &[CvCell], target: &str) -> Result<String> {
    let truth = swarm.objective();
    let panels: Vec<Panel> = cells
        .iter()
        .map(|c| Panel {
            name: format!(
                "{} ({}): Spearman {:.3}",
                c.row.family, c.row.features, c.row.metrics.spearman
            ),
            truth: truth.clone(),
            series: vec![(BLUE_RGB, c.predictions.clone())],
            diagonal: true,
        })
        .collect();
    scatter_svg(
        &panels,
        &format!("predicted {target} (out of fold)"),
        &format!("measured {target}"),
    )
    .map_err(|e: Error| user(format!("predicted_vs_true.svg: {e}")))
}
