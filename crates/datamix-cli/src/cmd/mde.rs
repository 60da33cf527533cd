//! `datamix mde`: expert log-probability tables (one per eval domain) + mixtures → the MDE
//! loss of every mixture on every eval domain; `--optimize` for the exact MDE optimum.

use std::path::{Path, PathBuf};

use datamix::Result;
use datamix::mde::{Bounds, ExpertTable, OptimumParams, WeightedMdeLoss, minimize};

use super::common::{ConstraintArgs, CsvTable, Outputs, csv_field, key_value, short, user};
use super::fit::SUM_TOLERANCE;

const EXAMPLE: &str = "\
Examples:
  # MDE loss of every mixture on every eval domain (a study writes its tables to out_dir/tables)
  datamix mde --tables runs/study/tables --mixtures mixtures.csv --out mde/

  # The exact MDE optimum of the mean eval loss, code at least 10%
  datamix mde --tables runs/study/tables --optimize --min code=0.1

Mixture columns are named after the experts, `lambda:<expert>` or `<expert>`. mde.csv
(run id, lambda:<expert>..., mde:<eval domain>...) is an input `datamix fit --data` takes.";

/// Arguments of `datamix mde`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLE)]
pub struct MdeArgs {
    /// Expert tables (safetensors, one per eval domain), or folders of them.
    #[arg(long, value_name = "PATH", num_args = 1.., required = true)]
    pub tables: Vec<PathBuf>,
    /// Mixtures to score: a CSV with an optional run-id column and one column per expert.
    #[arg(long, value_name = "CSV", required_unless_present = "optimize")]
    pub mixtures: Option<PathBuf>,
    /// Run-id column of --mixtures [default: the first of `run`, `mixture`, `id` present].
    #[arg(long, value_name = "COLUMN")]
    pub id: Option<String>,
    /// Rescale every mixture to sum to 1.
    #[arg(long)]
    pub normalize: bool,
    /// Also find the exact minimiser of the weighted MDE loss (convex; certified gap).
    #[arg(long)]
    pub optimize: bool,
    /// Weight of one eval domain in the optimised objective, DOMAIN=W (repeatable; default:
    /// the mean over every table).
    #[arg(long = "weight", value_name = "DOMAIN=W")]
    pub weights: Vec<String>,
    #[command(flatten)]
    pub constraints: ConstraintArgs,
    /// Output directory (mde.csv, optimum.json); without it, results are only printed.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// Every table file: the paths given, folders expanded to their `.safetensors` files
/// (sorted).
fn table_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| datamix::Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            if files.is_empty() {
                return Err(user(format!("{}: no .safetensors tables", p.display())));
            }
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Loads the tables and aligns their experts to the first table's order; tables from other
/// tokenizers, with other experts, or of the same eval domain twice are refused, naming
/// both files.
pub fn load_tables(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<ExpertTable>)> {
    let files = table_files(paths)?;
    let mut tables: Vec<ExpertTable> = Vec::new();
    for f in &files {
        let t = ExpertTable::load(f)?;
        if let Some(first) = tables.first() {
            let (a, b) = (&first.meta().tokenizer_hash, &t.meta().tokenizer_hash);
            if a != b {
                return Err(user(format!(
                    "{}: tokenizer hash `{b}` differs from {}'s `{a}`: tables of different \
                     tokenizers cannot be combined",
                    f.display(),
                    files[0].display()
                )));
            }
            if let Some(j) = tables
                .iter()
                .position(|o| o.eval_domain() == t.eval_domain())
            {
                return Err(user(format!(
                    "{}: eval domain `{}` is also {}'s",
                    f.display(),
                    t.eval_domain(),
                    files[j].display()
                )));
            }
            let mut want = first.expert_ids().to_vec();
            let mut got = t.expert_ids().to_vec();
            want.sort();
            got.sort();
            if want != got {
                return Err(user(format!(
                    "{}: experts [{}] differ from {}'s [{}]",
                    f.display(),
                    t.expert_ids().join(", "),
                    files[0].display(),
                    first.expert_ids().join(", ")
                )));
            }
            let aligned = t.select(first.expert_ids())?;
            tables.push(aligned);
        } else {
            tables.push(t);
        }
    }
    Ok((files, tables))
}

/// Reads mixtures over `experts` (columns `lambda:<expert>` or `<expert>`).
fn read_mixtures(
    path: &Path,
    experts: &[String],
    id: Option<&str>,
    normalize: bool,
) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let t = CsvTable::read(path)?;
    let idc = match id {
        Some(name) => Some(t.column(name, "the run id, --id")?),
        None => ["run", "mixture", "id"]
            .iter()
            .find_map(|c| t.headers.iter().position(|h| h == c)),
    };
    let cols: Vec<usize> = experts
        .iter()
        .map(|e| {
            let pref = format!("lambda:{e}");
            t.headers
                .iter()
                .position(|h| *h == pref)
                .or_else(|| t.headers.iter().position(|h| h == e))
                .ok_or_else(|| {
                    user(format!(
                        "{}: no column for expert `{e}` (`lambda:{e}` or `{e}`); the columns \
                         are: {}",
                        path.display(),
                        t.headers.join(", ")
                    ))
                })
        })
        .collect::<Result<_>>()?;
    let mut ids = Vec::new();
    let mut mixtures = Vec::new();
    for r in 0..t.rows.len() {
        let id = idc.map_or_else(
            || format!("line{}", CsvTable::line(r)),
            |c| t.rows[r][c].clone(),
        );
        let mut row = Vec::with_capacity(cols.len());
        for &c in &cols {
            let v = t.number(r, c)?;
            if v < 0.0 {
                return Err(user(format!(
                    "{}: line {}, column `{}`: weight {v} is negative",
                    path.display(),
                    CsvTable::line(r),
                    t.headers[c]
                )));
            }
            row.push(v);
        }
        let s: f64 = row.iter().sum();
        if s <= 0.0 || (!normalize && (s - 1.0).abs() > SUM_TOLERANCE) {
            return Err(user(format!(
                "{}: line {} (run `{id}`): the weights sum to {} (off by {}{}); pass \
                 --normalize to rescale every row to sum to 1",
                path.display(),
                CsvTable::line(r),
                short(s),
                if s > 1.0 { "+" } else { "" },
                short(s - 1.0)
            )));
        }
        row.iter_mut().for_each(|v| *v /= s);
        ids.push(id);
        mixtures.push(row);
    }
    Ok((ids, mixtures))
}

/// Runs `datamix mde`.
pub fn run(a: &MdeArgs) -> Result<()> {
    let (_, tables) = load_tables(&a.tables)?;
    let experts = tables[0].expert_ids().to_vec();
    let domains: Vec<String> = tables.iter().map(|t| t.eval_domain().to_string()).collect();
    let refs: Vec<&ExpertTable> = tables.iter().collect();
    let mut out = Outputs::default();
    let mut report = String::new();
    // Everything is checked before anything is computed.
    let mixtures = match &a.mixtures {
        Some(p) => Some(read_mixtures(p, &experts, a.id.as_deref(), a.normalize)?),
        None => None,
    };
    let optimum_setup = if a.optimize {
        let mut w = vec![if a.weights.is_empty() { 1.0 } else { 0.0 }; tables.len()];
        for item in &a.weights {
            let (d, v) = key_value("--weight", item)?;
            let j = domains.iter().position(|x| *x == d).ok_or_else(|| {
                user(format!(
                    "--weight {item}: no table of eval domain `{d}`; the eval domains are: {}",
                    domains.join(", ")
                ))
            })?;
            if v < 0.0 {
                return Err(user(format!("--weight {item}: expected a weight >= 0")));
            }
            w[j] = v;
        }
        let total: f64 = w.iter().sum();
        if total <= 0.0 {
            return Err(user("--weight: the weights sum to 0"));
        }
        w.iter_mut().for_each(|v| *v /= total);
        let b = a.constraints.bounds(&experts)?;
        Some((w, b))
    } else {
        if !a.weights.is_empty() {
            return Err(user("--weight only weighs the objective of --optimize"));
        }
        None
    };
    if let Some((ids, mix)) = &mixtures {
        let f = datamix::mde::mde_features(&refs, mix)?;
        let mut csv = String::from("run");
        for e in &experts {
            csv.push_str(&format!(",{}", csv_field(&format!("lambda:{e}"))));
        }
        for d in &domains {
            csv.push_str(&format!(",{}", csv_field(&format!("mde:{d}"))));
        }
        csv.push('\n');
        for (r, id) in ids.iter().enumerate() {
            csv.push_str(&csv_field(id));
            for v in &mix[r] {
                csv.push_str(&format!(",{v}"));
            }
            for v in f.row(r) {
                csv.push_str(&format!(",{v}"));
            }
            csv.push('\n');
        }
        report.push_str(&csv);
        out.add("mde.csv", csv);
    }
    if let Some((w, b)) = optimum_setup {
        let objective = WeightedMdeLoss::new(&refs, &w)?;
        let bounds = Bounds::new(b.lower.clone(), b.upper.clone())?;
        let opt = minimize(&objective, &bounds, &OptimumParams::default())?;
        let json = serde_json::json!({
            "experts": experts,
            "mixture": opt.lambda,
            "objective": opt.value,
            "gap": opt.gap,
            "converged": opt.converged,
            "iterations": opt.iterations,
            "eval_domains": domains,
            "weights": w,
            "bounds": b,
        });
        let mix: Vec<String> = experts
            .iter()
            .zip(&opt.lambda)
            .map(|(e, l)| format!("{e} {l:.4}"))
            .collect();
        report.push_str(&format!(
            "MDE optimum: {} (MDE loss {:.6}, certified gap {:.1e})\n",
            mix.join(", "),
            opt.value,
            opt.gap
        ));
        out.add(
            "optimum.json",
            serde_json::to_string_pretty(&json).expect("plain data serialises"),
        );
    }
    if let Some(dir) = &a.out {
        out.write(dir)?;
    }
    print!("{report}");
    Ok(())
}
