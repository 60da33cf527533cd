//! What `datamix fit` and `datamix search` share: CSV tables with located errors, mixture
//! constraints (bounds, token availability) turned into a search space, the saved model file,
//! the search itself, and outputs written only once everything is computed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datamix::optimizer::{CmaEs, Method, ModelObjective, OptimResult, SearchSpace};
use datamix::regression::dataset::LAMBDA;
use datamix::regression::{Predictor, RegressorSpec, Task};
use datamix::{Error, Result};
use serde::{Deserialize, Serialize};

/// A user error: the message names the file, column, row or flag.
pub fn user(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// A CSV file read whole: headers and text fields, with errors that name the file, the line
/// (the header is line 1) and the column.
#[derive(Debug, Clone)]
pub struct CsvTable {
    /// The file.
    pub path: PathBuf,
    /// Column names (trimmed).
    pub headers: Vec<String>,
    /// Data rows (trimmed fields), as many fields as headers.
    pub rows: Vec<Vec<String>>,
}

impl CsvTable {
    /// Reads `path`; errors on an empty or repeated column name, a row with the wrong number
    /// of fields, or no data rows.
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(std::io::BufReader::new(file));
        let csv_err = |e: csv::Error| user(format!("{}: CSV error: {e}", path.display()));
        let headers: Vec<String> = rdr
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(str::to_string)
            .collect();
        for (i, h) in headers.iter().enumerate() {
            if h.is_empty() {
                return Err(user(format!(
                    "{}: column {} has no name in the header",
                    path.display(),
                    i + 1
                )));
            }
            if let Some(j) = headers[..i].iter().position(|g| g == h) {
                return Err(user(format!(
                    "{}: column `{h}` appears twice in the header (columns {} and {})",
                    path.display(),
                    j + 1,
                    i + 1
                )));
            }
        }
        let mut rows = Vec::new();
        for (r, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(csv_err)?;
            if rec.len() != headers.len() {
                return Err(user(format!(
                    "{}: line {} has {} fields, the header has {}",
                    path.display(),
                    r + 2,
                    rec.len(),
                    headers.len()
                )));
            }
            rows.push(rec.iter().map(str::to_string).collect());
        }
        if rows.is_empty() {
            return Err(user(format!("{}: no data rows", path.display())));
        }
        Ok(Self {
            path: path.to_path_buf(),
            headers,
            rows,
        })
    }

    /// Index of column `name`; the error lists the columns there are.
    pub fn column(&self, name: &str, what: &str) -> Result<usize> {
        self.headers.iter().position(|h| h == name).ok_or_else(|| {
            user(format!(
                "{}: no column `{name}` ({what}); the columns are: {}",
                self.path.display(),
                self.headers.join(", ")
            ))
        })
    }

    /// The line of data row `r` in the file (the header is line 1).
    pub fn line(r: usize) -> usize {
        r + 2
    }

    /// Field `(r, c)` as a finite number.
    pub fn number(&self, r: usize, c: usize) -> Result<f64> {
        let text = &self.rows[r][c];
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(user(format!(
                "{}: line {}, column `{}`: `{text}` is not a finite number",
                self.path.display(),
                Self::line(r),
                self.headers[c]
            ))),
        }
    }
}

/// A number for messages: six decimals at most, trailing zeros dropped (`0.9`, not
/// `0.8999999999999999`).
pub fn short(v: f64) -> String {
    let t = format!("{v:.6}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    if t == "-0" { "0".into() } else { t.to_string() }
}

/// Parses `NAME=VALUE`.
pub fn key_value(flag: &str, text: &str) -> Result<(String, f64)> {
    let bad = || user(format!("{flag} `{text}`: expected NAME=NUMBER"));
    let (k, v) = text.split_once('=').ok_or_else(bad)?;
    let v: f64 = v.trim().parse().map_err(|_| bad())?;
    if k.trim().is_empty() || !v.is_finite() {
        return Err(bad());
    }
    Ok((k.trim().to_string(), v))
}

/// Mixture constraints, as command-line flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConstraintArgs {
    /// Lower bound on every domain's weight (a per-domain --min overrides it).
    #[arg(long, value_name = "W")]
    pub min_weight: Option<f64>,
    /// Upper bound on every domain's weight (a per-domain --max overrides it).
    #[arg(long, value_name = "W")]
    pub max_weight: Option<f64>,
    /// Lower bound on one domain's weight, DOMAIN=W (repeatable).
    #[arg(long = "min", value_name = "DOMAIN=W")]
    pub min: Vec<String>,
    /// Upper bound on one domain's weight, DOMAIN=W (repeatable).
    #[arg(long = "max", value_name = "DOMAIN=W")]
    pub max: Vec<String>,
    /// Tokens available in one domain, DOMAIN=TOKENS (repeatable; domains not named are
    /// unlimited). With --total-tokens and --max-epochs: weight × total ≤ epochs × available.
    #[arg(long = "available", value_name = "DOMAIN=TOKENS")]
    pub available: Vec<String>,
    /// Training tokens of the run the mixture is for (needed by --available).
    #[arg(long, value_name = "TOKENS")]
    pub total_tokens: Option<f64>,
    /// Most passes over a domain's available tokens (repetition factor; default 1).
    #[arg(long, value_name = "EPOCHS")]
    pub max_epochs: Option<f64>,
}

/// The effective bounds of every domain and where each came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// Domain names.
    pub domains: Vec<String>,
    /// Effective lower bounds.
    pub lower: Vec<f64>,
    /// Effective upper bounds (token limits included).
    pub upper: Vec<f64>,
    /// Where each lower bound comes from (flag), `default` when none.
    pub lower_from: Vec<String>,
    /// Where each upper bound comes from (flag), `default` when none.
    pub upper_from: Vec<String>,
}

impl ConstraintArgs {
    /// Per-domain values of a repeatable `DOMAIN=VALUE` flag (unknown or repeated domains are
    /// errors).
    fn per_domain(
        flag: &str,
        items: &[String],
        domains: &[String],
    ) -> Result<BTreeMap<usize, f64>> {
        let mut out = BTreeMap::new();
        for item in items {
            let (name, v) = key_value(flag, item)?;
            let i = domains.iter().position(|d| *d == name).ok_or_else(|| {
                user(format!(
                    "{flag} {item}: unknown domain `{name}`; the domains are: {}",
                    domains.join(", ")
                ))
            })?;
            if out.insert(i, v).is_some() {
                return Err(user(format!("{flag}: domain `{name}` given twice")));
            }
        }
        Ok(out)
    }

    /// The effective bounds over `domains`, or an error that says which constraint makes
    /// the set of mixtures empty.
    pub fn bounds(&self, domains: &[String]) -> Result<Bounds> {
        let k = domains.len();
        let weight = |flag: &str, v: f64| -> Result<f64> {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(user(format!("{flag} {v}: expected a weight in [0, 1]")))
            }
        };
        let mut lower = vec![0.0; k];
        let mut upper = vec![1.0; k];
        let mut lower_from = vec!["default".to_string(); k];
        let mut upper_from = vec!["default".to_string(); k];
        if let Some(v) = self.min_weight {
            lower = vec![weight("--min-weight", v)?; k];
            lower_from = vec![format!("--min-weight {v}"); k];
        }
        if let Some(v) = self.max_weight {
            upper = vec![weight("--max-weight", v)?; k];
            upper_from = vec![format!("--max-weight {v}"); k];
        }
        for (i, v) in Self::per_domain("--min", &self.min, domains)? {
            lower[i] = weight("--min", v)?;
            lower_from[i] = format!("--min {}={v}", domains[i]);
        }
        for (i, v) in Self::per_domain("--max", &self.max, domains)? {
            upper[i] = weight("--max", v)?;
            upper_from[i] = format!("--max {}={v}", domains[i]);
        }
        let available = Self::per_domain("--available", &self.available, domains)?;
        match (available.is_empty(), self.total_tokens, self.max_epochs) {
            (true, Some(_), _) => {
                return Err(user(
                    "--total-tokens limits nothing without --available DOMAIN=TOKENS",
                ));
            }
            (true, None, Some(_)) => {
                return Err(user(
                    "--max-epochs limits nothing without --available DOMAIN=TOKENS",
                ));
            }
            (false, None, _) => {
                return Err(user(
                    "--available needs --total-tokens (the training tokens of the run)",
                ));
            }
            (false, Some(total), epochs) => {
                if !(total.is_finite() && total > 0.0) {
                    return Err(user(format!(
                        "--total-tokens {total}: expected a number of tokens > 0"
                    )));
                }
                let epochs = epochs.unwrap_or(1.0);
                if !(epochs.is_finite() && epochs > 0.0) {
                    return Err(user(format!(
                        "--max-epochs {epochs}: expected a number of passes > 0"
                    )));
                }
                for (i, tokens) in available {
                    if tokens < 0.0 {
                        return Err(user(format!(
                            "--available {}={tokens}: expected a number of tokens >= 0",
                            domains[i]
                        )));
                    }
                    let cap = epochs * tokens / total;
                    if cap < upper[i] {
                        upper[i] = cap;
                        upper_from[i] = format!(
                            "--available {}={tokens} × {epochs} epochs / {total} total tokens",
                            domains[i]
                        );
                    }
                }
            }
            (true, None, None) => {}
        }
        for i in 0..k {
            if lower[i] > upper[i] {
                return Err(user(format!(
                    "constraints leave no mixture: domain `{}` must weigh at least {} ({}) \
                     but at most {} ({})",
                    domains[i],
                    short(lower[i]),
                    lower_from[i],
                    short(upper[i]),
                    upper_from[i]
                )));
            }
        }
        let list = |v: &[f64], from: &[String]| {
            (0..k)
                .map(|i| format!("{} {} ({})", domains[i], short(v[i]), from[i]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Rounding slack of a sum of k bounds.
        let slack = f64::EPSILON * 4.0 * k as f64;
        let lo: f64 = lower.iter().sum();
        if lo > 1.0 + slack {
            return Err(user(format!(
                "constraints leave no mixture: the lower bounds sum to {} > 1: {}",
                short(lo),
                list(&lower, &lower_from)
            )));
        }
        let up: f64 = upper.iter().sum();
        if up < 1.0 - slack {
            return Err(user(format!(
                "constraints leave no mixture: the upper bounds sum to {} < 1: {}",
                short(up),
                list(&upper, &upper_from)
            )));
        }
        Ok(Bounds {
            domains: domains.to_vec(),
            lower,
            upper,
            lower_from,
            upper_from,
        })
    }

    /// The search space over `domains` under these constraints.
    pub fn space(&self, domains: &[String]) -> Result<(SearchSpace, Bounds)> {
        let b = self.bounds(domains)?;
        let space = SearchSpace::builder_named(domains.to_vec())
            .lower(b.lower.clone())
            .upper(b.upper.clone())
            .build()
            .map_err(|e| user(format!("constraints: {e}")))?;
        Ok((space, b))
    }
}

/// Files computed in memory and written together at the end, each atomically and durably
/// ([`datamix::io::write_file`]: temporary file, fsync, rename, folder fsync): an error
/// before [`Outputs::write`] leaves nothing behind.
#[derive(Debug, Default)]
pub struct Outputs {
    files: Vec<(String, Vec<u8>)>,
}

impl Outputs {
    /// Queues file `name` with `bytes`.
    pub fn add(&mut self, name: &str, bytes: impl Into<Vec<u8>>) {
        self.files.push((name.to_string(), bytes.into()));
    }

    /// Writes every file into `dir` (created if needed); returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut paths = Vec::new();
        for (name, bytes) in &self.files {
            let path = dir.join(name);
            datamix::io::write_file(&path, bytes)?;
            paths.push(path);
        }
        Ok(paths)
    }
}

/// Family names `datamix fit --families` accepts.
pub const FAMILY_NAMES: &[&str] = &[
    "mean",
    "ridge",
    "elastic-net",
    "gp",
    "gbdt",
    "gbdt-regmix",
    "mde-alone",
];

/// The model spec of a family name (family defaults; `seed` where the family has one).
pub fn family_spec(name: &str, seed: u64) -> Result<RegressorSpec> {
    Ok(match name {
        "mean" => RegressorSpec::Mean,
        "ridge" => RegressorSpec::Ridge { alpha: None },
        "elastic-net" => RegressorSpec::ElasticNet {
            alpha: None,
            l1_ratio: None,
        },
        "gp" => RegressorSpec::Gp {
            kernel: None,
            restarts: None,
            seed: Some(seed),
        },
        "gbdt" => RegressorSpec::Gbdt {
            n_trees: None,
            learning_rate: None,
            max_leaves: None,
            min_leaf: None,
            early_stopping_rounds: None,
            validation_share: None,
        },
        // RegMix's LightGBM settings: 20 rows per leaf, early stopping after 3 rounds on a
        // validation set (the last 20% of the rows).
        "gbdt-regmix" => RegressorSpec::Gbdt {
            n_trees: None,
            learning_rate: None,
            max_leaves: None,
            min_leaf: Some(20.0),
            early_stopping_rounds: Some(3),
            validation_share: Some(0.2),
        },
        "mde-alone" => RegressorSpec::MdeAlone { calibrate: true },
        other => {
            return Err(user(format!(
                "unknown model family `{other}`; the families are: {}",
                FAMILY_NAMES.join(", ")
            )));
        }
    })
}

/// `lambda:<domain>` headers.
pub fn lambda_headers(domains: &[String]) -> Vec<String> {
    domains.iter().map(|d| format!("{LAMBDA}:{d}")).collect()
}

/// The format tag of a saved model file.
pub const MODEL_FORMAT: &str = "datamix-fit-model";
/// Its version.
pub const MODEL_VERSION: u32 = 1;
/// How far a refitted model's predictions may move from the saved ones, relative to the
/// spread of the target (floating-point reordering only; anything more means a different
/// model).
const REFIT_TOLERANCE: f64 = 1e-6;

/// A model fitted by `datamix fit`: the family with its hyper-parameters and the swarm it was
/// fitted on. The families' fitted states are not serialisable, so loading refits (the fits
/// are deterministic) and checks that the refit reproduces the saved predictions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitModel {
    /// [`MODEL_FORMAT`].
    pub format: String,
    /// [`MODEL_VERSION`].
    pub version: u32,
    /// Family name as in the comparison table.
    pub family: String,
    /// Family and hyper-parameters.
    pub spec: RegressorSpec,
    /// The objective fitted (a metric or a weighted sum of metrics).
    pub target: String,
    /// Domains, in the order of every mixture.
    pub domains: Vec<String>,
    /// Run ids.
    pub ids: Vec<String>,
    /// Mixture of every run.
    pub mixtures: Vec<Vec<f64>>,
    /// Measured objective of every run.
    pub values: Vec<f64>,
    /// The fitted model's prediction at every run, when saved.
    pub fitted: Vec<f64>,
}

impl FitModel {
    /// The λ-only regression task of the swarm.
    pub fn task(&self) -> Task {
        let n = self.ids.len();
        let k = self.domains.len();
        Task {
            x: ndarray::Array2::from_shape_fn((n, k), |(r, c)| self.mixtures[r][c]),
            y: self.values.iter().copied().collect(),
            feature_names: lambda_headers(&self.domains),
            target: self.target.clone(),
            ids: self.ids.clone(),
            mde_proxy: None,
        }
    }

    /// Fits the family on the swarm.
    pub fn fit(&self) -> Result<Box<dyn Predictor>> {
        Ok(self.spec.build()?.fit(&self.task())?)
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serialises")
    }

    /// Loads and refits a model file, checking that the refit reproduces its predictions.
    pub fn load(path: &Path) -> Result<(Self, Box<dyn Predictor>)> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |m: String| user(format!("{}: {m}", path.display()));
        let m: FitModel = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a model written by `datamix fit`: {e}")))?;
        if m.format != MODEL_FORMAT || m.version != MODEL_VERSION {
            return Err(bad(format!(
                "format `{}` version {}, expected `{MODEL_FORMAT}` version {MODEL_VERSION}",
                m.format, m.version
            )));
        }
        let n = m.ids.len();
        if m.domains.len() < 2
            || m.mixtures.len() != n
            || m.values.len() != n
            || m.fitted.len() != n
            || m.mixtures.iter().any(|x| x.len() != m.domains.len())
        {
            return Err(bad(
                "inconsistent sizes of `domains`, `ids`, `mixtures`, `values`, `fitted`".into(),
            ));
        }
        let model = m.fit().map_err(|e| bad(format!("refitting: {e}")))?;
        let pred = model.predict(m.task().x.view())?;
        let spread = m.task().y.std(0.0).max(f64::MIN_POSITIVE);
        let worst = pred
            .mean
            .iter()
            .zip(&m.fitted)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        if worst.is_nan() || worst > REFIT_TOLERANCE * spread {
            return Err(bad(format!(
                "refitting the saved {} model moves its predictions by up to {worst:e} \
                 (allowed {:e}); was the file edited or written by another datamix version?",
                m.family,
                REFIT_TOLERANCE * spread
            )));
        }
        Ok((m, model))
    }
}

/// The recommended mixture and what the model predicts there.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    /// Family of the model searched.
    pub family: String,
    /// The objective.
    pub target: String,
    /// Domain → weight.
    pub mixture: BTreeMap<String, f64>,
    /// Weights in domain order.
    pub weights: Vec<f64>,
    /// Predicted objective there.
    pub predicted: f64,
    /// Its predictive standard deviation (families with uncertainty).
    pub predicted_std: Option<f64>,
    /// The best run of the swarm (lowest measured objective).
    pub best_run: String,
    /// Its measured objective.
    pub best_run_value: f64,
    /// The constraints searched under.
    pub bounds: Bounds,
    /// The search (method, evaluations, trace).
    pub search: OptimResult,
}

impl Recommendation {
    /// CSV: one line per domain with its weight and bounds.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("domain,weight,lower,upper\n");
        for (i, d) in self.bounds.domains.iter().enumerate() {
            s.push_str(&format!(
                "{},{},{},{}\n",
                csv_field(d),
                self.weights[i],
                self.bounds.lower[i],
                self.bounds.upper[i]
            ));
        }
        s
    }

    /// Human-readable summary lines.
    pub fn summary(&self) -> String {
        let mix = self
            .bounds
            .domains
            .iter()
            .zip(&self.weights)
            .map(|(d, w)| format!("{d} {w:.4}"))
            .collect::<Vec<_>>()
            .join(", ");
        let std = self
            .predicted_std
            .map_or(String::new(), |s| format!(" ± {s:.4}"));
        format!(
            "Recommended mixture ({} on λ, {} search): {mix}\nPredicted {}: {:.4}{std} \
             (best run `{}`: {:.4})",
            self.family,
            self.search.method,
            self.target,
            self.predicted,
            self.best_run,
            self.best_run_value
        )
    }
}

/// Quotes a CSV field when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Searches the fitted model's predicted objective over `space` (CMA-ES through the exact
/// projection, so the mixture is feasible).
pub fn recommend(
    saved: &FitModel,
    model: Box<dyn Predictor>,
    space: &SearchSpace,
    bounds: Bounds,
    seed: u64,
) -> Result<Recommendation> {
    let objective = ModelObjective::new(model, space, None)?;
    let found = CmaEs::new().seed(seed).minimize(space, &objective)?;
    let best = (0..saved.values.len())
        .min_by(|&a, &b| saved.values[a].total_cmp(&saved.values[b]))
        .expect("a model has runs");
    Ok(Recommendation {
        family: saved.family.clone(),
        target: saved.target.clone(),
        mixture: saved
            .domains
            .iter()
            .cloned()
            .zip(found.mixture.iter().copied())
            .collect(),
        weights: found.mixture.clone(),
        predicted: found.objective,
        predicted_std: found.uncertainty,
        best_run: saved.ids[best].clone(),
        best_run_value: saved.values[best],
        bounds,
        search: found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn token_limits_become_upper_bounds_and_empty_sets_name_the_constraint() {
        let d = names(&["web", "code", "books"]);
        let c = ConstraintArgs {
            available: vec!["code=100".into()],
            total_tokens: Some(1000.0),
            max_epochs: Some(2.0),
            ..Default::default()
        };
        let b = c.bounds(&d).unwrap();
        assert_eq!(b.upper[1], 2.0 * 100.0 / 1000.0);
        assert!(b.upper_from[1].starts_with("--available code=100"));
        assert_eq!(b.upper[0], 1.0);
        let c = ConstraintArgs {
            min: vec!["code=0.5".into()],
            ..c
        };
        let e = c.bounds(&d).unwrap_err().to_string();
        assert!(
            e.contains("`code`") && e.contains("--min code=0.5") && e.contains("--available"),
            "{e}"
        );
        let c = ConstraintArgs {
            max_weight: Some(0.3),
            ..Default::default()
        };
        let e = c.bounds(&d).unwrap_err().to_string();
        assert!(e.contains("upper bounds sum to 0.9"), "{e}");
        let c = ConstraintArgs {
            min: vec!["latin=0.1".into()],
            ..Default::default()
        };
        assert!(c.bounds(&d).unwrap_err().to_string().contains("latin"));
    }

    #[test]
    fn every_family_name_builds() {
        for f in FAMILY_NAMES {
            family_spec(f, 0).unwrap().build().unwrap();
        }
        assert!(family_spec("svm", 0).is_err());
    }
}
