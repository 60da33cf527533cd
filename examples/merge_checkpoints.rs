//! Merge safetensors checkpoints with `datamix::merge`, as mergekit's linear merge does:
//! uniform, weighted and Na et al.'s macro merge (average within a domain, then across
//! domains), in memory or to a file whose metadata records the plan and input hashes.
//!
//! The example writes four small f32 checkpoints (a toy two-layer model, seeded random
//! weights), merges them, checks every merged value against a hand-computed weighted
//! average, prints the merge record, and shows the error for a checkpoint whose tensor
//! shapes do not match.
//!
//! ```sh
//! cargo run --release --example merge_checkpoints
//! cargo run --release --example merge_checkpoints --no-default-features --features merge
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use datamix::merge::{
    METADATA_KEY, MergePlan, MergeRecord, Merger, OutDtype, PathsOnly, Weighting,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// The toy model's tensors: name and shape.
const LAYOUT: [(&str, &[usize]); 4] = [
    ("embed.weight", &[32, 16]),
    ("block0.attn.weight", &[16, 16]),
    ("block0.norm.scale", &[16]),
    ("head.weight", &[16, 32]),
];

/// Writes a checkpoint with `LAYOUT`'s tensors (seeded values) and returns them.
fn write_checkpoint(
    path: &Path,
    seed: u64,
    layout: &[(&str, &[usize])],
) -> HashMap<String, Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: HashMap<String, Vec<f32>> = layout
        .iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let v = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            (name.to_string(), v)
        })
        .collect();
    let bytes: HashMap<&str, Vec<u8>> = values
        .iter()
        .map(|(name, v)| (name.as_str(), f32_le_bytes(v)))
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = layout
        .iter()
        .map(|(name, shape)| {
            let view = TensorView::new(Dtype::F32, shape.to_vec(), &bytes[name])
                .expect("shape matches the data");
            (*name, view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("checkpoint written");
    values
}

fn f32_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Largest |merged − Σ w_i θ_i| over every tensor.
fn max_error(
    merged: &datamix::merge::MergedTensors,
    inputs: &[&HashMap<String, Vec<f32>>],
    weights: &[f64],
) -> f64 {
    let mut worst = 0.0f64;
    for (name, _) in LAYOUT {
        let got = merged
            .get(name)
            .and_then(|t| t.as_f32())
            .expect("a merged f32 tensor");
        for (i, g) in got.iter().enumerate() {
            let want: f64 = inputs
                .iter()
                .zip(weights)
                .map(|(t, w)| w * f64::from(t[name][i]))
                .sum();
            worst = worst.max((f64::from(*g) - want).abs());
        }
    }
    worst
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("expert{i}.safetensors")))
        .collect();
    let thetas: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| write_checkpoint(p, i as u64, &LAYOUT))
        .collect();
    let inputs: Vec<&HashMap<String, Vec<f32>>> = thetas.iter().collect();
    let params: usize = LAYOUT
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    println!(
        "3 checkpoints of {} tensors ({params} f32 parameters each) in {}",
        LAYOUT.len(),
        dir.path().display()
    );

    // 1. Uniform average, in memory (what a caller evaluates without writing a file).
    let merger = Merger::linear();
    let uniform = merger.merge(
        &MergePlan::uniform(paths.iter().map(PathBuf::as_path)),
        &PathsOnly,
    )?;
    println!(
        "uniform merge:  {} tensors, max |merged - mean| = {:.2e}",
        uniform.len(),
        max_error(&uniform, &inputs, &[1.0 / 3.0; 3])
    );

    // 2. Weighted average (weights normalised to sum to 1).
    let weights = [0.5, 0.3, 0.2];
    let plan = MergePlan::weighted(paths.iter().map(PathBuf::as_path).zip(weights));
    let weighted = merger.merge(&plan, &PathsOnly)?;
    println!(
        "weighted merge: weights {weights:?}, max |merged - Σ w θ| = {:.2e}",
        max_error(&weighted, &inputs, &weights)
    );

    // 3. Na et al.'s macro merge: domain A has two base-unit experts, domain B one; average
    //    within each domain, then across domains: effective weights 1/4, 1/4, 1/2.
    let plan = MergePlan::macro_([
        vec![paths[0].as_path(), paths[1].as_path()],
        vec![paths[2].as_path()],
    ]);
    let flat = plan.flatten(Weighting::Normalized)?;
    let effective: Vec<f64> = paths
        .iter()
        .map(|p| flat.weight(&p.as_path().into()))
        .collect();
    let out = dir.path().join("macro.safetensors");
    let record: MergeRecord = merger
        .clone()
        .out_dtype(OutDtype::BF16)
        .merge_to_file(&plan, &PathsOnly, &out)?;
    let macro_mem = merger.merge(&plan, &PathsOnly)?;
    println!(
        "macro merge:    effective weights {effective:?}, max error {:.2e}; written as bf16 to {} ({} bytes)",
        max_error(&macro_mem, &inputs, &effective),
        out.display(),
        std::fs::metadata(&out)?.len()
    );

    // The record travels in the output's safetensors metadata.
    let bytes = std::fs::read(&out)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    let stored = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or("no merge record in the output")?;
    let stored: MergeRecord = serde_json::from_str(stored)?;
    assert_eq!(stored, record, "the file's record is the one returned");
    println!(
        "merge record (metadata key `{METADATA_KEY}`):\n{}",
        serde_json::to_string_pretty(&record)?
    );

    // 4. Bad input: a checkpoint whose `head.weight` has another shape. The error names
    //    the tensor and both shapes; nothing is written.
    let odd = dir.path().join("odd.safetensors");
    let mut layout = LAYOUT.to_vec();
    layout[3] = ("head.weight", &[16, 48]);
    write_checkpoint(&odd, 9, &layout);
    let bad_out = dir.path().join("bad.safetensors");
    let plan = MergePlan::uniform([paths[0].as_path(), odd.as_path()]);
    match merger.merge_to_file(&plan, &PathsOnly, &bad_out) {
        Err(e) => println!("\nmismatched checkpoint refused: {e}"),
        Ok(_) => return Err("a shape mismatch was merged".into()),
    }
    println!("output written: {}", bad_out.exists());
    Ok(())
}
