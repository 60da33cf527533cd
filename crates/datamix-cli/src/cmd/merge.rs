//! `datamix merge`: a TOML plan (models, weights, method, output dtype), in the spirit of
//! mergekit's config → a merged safetensors file and its merge record.

use std::path::{Path, PathBuf};

use datamix::Result;
use datamix::merge::{MergePlan, Merger, OutDtype, PathsOnly, Weighting};
use serde::Deserialize;

use super::common::{Outputs, user};

const EXAMPLE: &str = "\
Example plan (merge.toml; relative paths are from the plan's folder):

  method = \"linear\"          # the methods this build has: linear
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

Writes the output (its metadata records the plan and the inputs' BLAKE3 hashes) and the
same record as <output stem>.merge.json beside it.";

/// Merge methods this build has.
const METHODS: &[&str] = &["linear"];

/// Arguments of `datamix merge`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLE)]
pub struct MergeArgs {
    /// The merge plan (TOML).
    #[arg(long, value_name = "TOML")]
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
    weight: f64,
}

/// A merge plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default = "linear")]
    method: String,
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

/// The record's path: `<output stem>.merge.json` beside the output.
pub fn record_path(output: &Path) -> PathBuf {
    output.with_extension("merge.json")
}

/// Runs `datamix merge`.
pub fn run(a: &MergeArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.plan).map_err(|e| datamix::Error::io(&a.plan, e))?;
    let bad = |m: String| user(format!("{}: {m}", a.plan.display()));
    let plan: PlanFile = toml::from_str(&text).map_err(|e| {
        bad(e
            .to_string()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" "))
    })?;
    if !METHODS.contains(&plan.method.as_str()) {
        return Err(bad(format!(
            "method `{}` is not in this build; the methods are: {}",
            plan.method,
            METHODS.join(", ")
        )));
    }
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
    let merge_plan = MergePlan::weighted(pairs);
    let merger = Merger::linear()
        .weighting(plan.weighting)
        .out_dtype(plan.dtype.into());
    let record = merger.merge_to_file(&merge_plan, &PathsOnly, &output)?;
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
