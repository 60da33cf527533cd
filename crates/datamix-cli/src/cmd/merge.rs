//! `datamix merge`: a TOML or YAML plan (models, weights, method and its parameters, base
//! model, output dtype), in the spirit of mergekit's config → a merged safetensors file and
//! its merge record.

use std::path::{Path, PathBuf};

use datamix::Result;
use datamix::merge::{
    MergePlan, Merger, Method, MethodPlan, OutDtype, PathsOnly, PerTensor, Slerp, Source, Ties,
    Weighting,
};
use serde::Deserialize;

use super::common::{Outputs, user};

const EXAMPLE: &str = "\
Example plan (merge.toml; merge.yaml takes the same keys; relative paths are from the
plan's folder):

  method = \"linear\"          # linear, task_arithmetic, ties or slerp
  weighting = \"normalized\"   # or \"raw\": weights as given (task arithmetic)
  dtype = \"bf16\"             # f32, bf16 or f16 (floating tensors of the output)
  output = \"merged.safetensors\"

  [[models]]
  path = \"web.safetensors\"
  weight = 0.7

  [[models]]
  path = \"code.safetensors\"
  weight = 0.3

  datamix merge --plan merge.toml

TIES keeps the largest `density` share of each task vector (model - base), elects signs
and averages the agreeing entries: method = \"ties\", base = \"seed.safetensors\",
density = 0.5 (or per tensor: density = { default = 0.5, overrides = [{ filter = \"norm\",
value = 1.0 }] }). SLERP interpolates two models (or base and one model) along the sphere:
method = \"slerp\", t = 0.3. Task arithmetic adds the weighted task vectors to the base.

Writes the output (its metadata records the plan and the inputs' BLAKE3 hashes) and the
same record as <output stem>.merge.json beside it.";

/// Merge methods this build has.
const METHODS: &[&str] = &["linear", "task_arithmetic", "ties", "slerp"];

/// Arguments of `datamix merge`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLE)]
pub struct MergeArgs {
    /// The merge plan (TOML, or YAML for a .yaml/.yml file).
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// Output file (overrides the plan's `output`).
    #[arg(long, short, value_name = "SAFETENSORS")]
    pub out: Option<PathBuf>,
}

/// One model of a plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    path: PathBuf,
    #[serde(default = "one")]
    weight: f64,
}

fn one() -> f64 {
    1.0
}

/// A merge plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default = "linear")]
    method: String,
    /// TIES: the share of each task vector kept, in (0, 1] (one value or per tensor).
    density: Option<PerTensor<f64>>,
    /// SLERP: the interpolation parameter in [0, 1] (one value or per tensor).
    t: Option<PerTensor<f64>>,
    /// The base model (task arithmetic, TIES; SLERP's first endpoint).
    base: Option<PathBuf>,
    #[serde(default)]
    weighting: Weighting,
    #[serde(default)]
    dtype: Dtype,
    output: Option<PathBuf>,
    models: Vec<ModelEntry>,
}

fn linear() -> String {
    "linear".into()
}

impl PlanFile {
    /// Parses TOML, or YAML for a `.yaml`/`.yml` file.
    fn parse(path: &Path, text: &str) -> std::result::Result<Self, String> {
        let flat = |e: String| {
            e.lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => serde_yaml_ng::from_str(text).map_err(|e| flat(e.to_string())),
            _ => toml::from_str(text).map_err(|e| flat(e.to_string())),
        }
    }

    /// The method with its parameters; a parameter of another method is refused.
    fn method(&self) -> std::result::Result<Method, String> {
        let stray = |key: &str, of: &str| {
            Err(format!(
                "`{key}` is a parameter of {of}, not of method `{}`",
                self.method
            ))
        };
        if self.density.is_some() && self.method != "ties" {
            return stray("density", "ties");
        }
        if self.t.is_some() && self.method != "slerp" {
            return stray("t", "slerp");
        }
        let need = |key: &str| format!("method `{}` needs `{key}`", self.method);
        Ok(match self.method.as_str() {
            "linear" => Method::Linear,
            "task_arithmetic" => Method::TaskArithmetic,
            "ties" => Method::Ties(Ties::new(
                self.density.clone().ok_or_else(|| need("density"))?,
            )),
            "slerp" => Method::Slerp(Slerp::new(self.t.clone().ok_or_else(|| need("t"))?)),
            other => {
                return Err(format!(
                    "method `{other}` is not in this build; the methods are: {}",
                    METHODS.join(", ")
                ));
            }
        })
    }
}

/// Output dtype as written in a plan.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Dtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl From<Dtype> for OutDtype {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => OutDtype::F32,
            Dtype::Bf16 => OutDtype::BF16,
            Dtype::F16 => OutDtype::F16,
        }
    }
}

/// Creates the missing folders above `output`, each one's entry fsynced in its parent (the
/// output's own rename fsyncs only the innermost); returns them, deepest first.
fn create_parents(output: &Path) -> std::result::Result<Vec<PathBuf>, datamix::Error> {
    let mut missing = Vec::new();
    let mut dir = output.parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    if let Some(deepest) = missing.first() {
        std::fs::create_dir_all(deepest).map_err(|e| datamix::Error::io(deepest, e))?;
    }
    for d in &missing {
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty());
        datamix::io::sync_dir(parent.unwrap_or(Path::new(".")))?;
    }
    Ok(missing)
}

/// The record's path: `<output stem>.merge.json` beside the output.
pub fn record_path(output: &Path) -> PathBuf {
    output.with_extension("merge.json")
}

/// Runs `datamix merge`.
pub fn run(a: &MergeArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.plan).map_err(|e| datamix::Error::io(&a.plan, e))?;
    let bad = |m: String| user(format!("{}: {m}", a.plan.display()));
    let plan = PlanFile::parse(&a.plan, &text).map_err(&bad)?;
    let method = plan.method().map_err(&bad)?;
    if plan.models.is_empty() {
        return Err(bad("`models` is empty: a merge needs at least one".into()));
    }
    let base = a.plan.parent().unwrap_or(Path::new("."));
    let output = match (&a.out, &plan.output) {
        (Some(o), _) => o.clone(),
        (None, Some(o)) => base.join(o),
        (None, None) => {
            return Err(bad(
                "no output: set `output` in the plan or pass --out".into()
            ));
        }
    };
    let mut pairs = Vec::with_capacity(plan.models.len());
    for (i, m) in plan.models.iter().enumerate() {
        let path = base.join(&m.path);
        if !path.is_file() {
            return Err(bad(format!(
                "models[{i}]: {}: no such file",
                path.display()
            )));
        }
        if path == output {
            return Err(bad(format!(
                "models[{i}]: {} is also the output",
                path.display()
            )));
        }
        pairs.push((path, m.weight));
    }
    let mut method_plan =
        MethodPlan::new(method, MergePlan::weighted(pairs)).weighting(plan.weighting);
    if let Some(b) = &plan.base {
        let path = base.join(b);
        if !path.is_file() {
            return Err(bad(format!("base: {}: no such file", path.display())));
        }
        method_plan = method_plan.base(Source::Path(path));
    }
    method_plan.check()?;
    // The output's folder is created when missing (and removed again, if still empty,
    // when the merge fails), so a failed merge leaves nothing behind.
    let created = create_parents(&output)?;
    let record = Merger::for_plan(&method_plan)
        .out_dtype(plan.dtype.into())
        .merge_to_file(&method_plan.models, &PathsOnly, &output)
        .inspect_err(|_| {
            for dir in &created {
                let _ = std::fs::remove_dir(dir);
            }
        })?;
    let json = serde_json::to_string_pretty(&record).expect("plain data serialises");
    let rec_path = record_path(&output);
    let mut out = Outputs::default();
    let name = rec_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "merge.json".into());
    out.add(&name, json);
    let dir = match rec_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    out.write(&dir)?;
    println!(
        "Merged {} model(s) ({}, {:?} weights) → {} (record: {})",
        record.inputs.len(),
        record.method,
        plan.weighting,
        output.display(),
        rec_path.display()
    );
    Ok(())
}
