//! Task arithmetic, TIES, SLERP and per-tensor weights through real
//! safetensors files: the executor's whole-tensor and elementwise paths
//! give what the methods give on the decoded tensors, plans name methods
//! and parameters, and bad setups are typed errors with nothing written.

use std::path::{Path, PathBuf};

use datamix_merge::{
    FloatDtype, FloatSlice, METADATA_KEY, MergeError, MergeMethod, MergePlan, MergeRecord, Merger,
    Method, MethodError, MethodPlan, OutDtype, PathsOnly, PerTensor, Slerp, Source, TaskArithmetic,
    TensorSlices, Ties, WeightOverride, Weighting,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Name, shape, `f32` values.
type Tensor = (String, Vec<usize>, Vec<f32>);

/// A model with a 2-D weight spanning several chunks, a small vector and
/// an integer buffer (written last).
fn model(seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rand =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    vec![
        ("w".into(), vec![300, 1100], rand(330_000)),
        ("norm".into(), vec![7], rand(7)),
    ]
}

fn write(path: &Path, tensors: &[Tensor]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.2.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let pos: Vec<u8> = [0i64, 1, 2].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            (
                t.0.clone(),
                TensorView::new(Dtype::F32, t.1.clone(), b).unwrap(),
            )
        })
        .collect();
    views.push((
        "pos".into(),
        TensorView::new(Dtype::I64, vec![3], &pos).unwrap(),
    ));
    safetensors::serialize_to_file(views, None, path).unwrap();
}

struct Models {
    dir: tempfile::TempDir,
    tensors: Vec<Vec<Tensor>>,
}

impl Models {
    /// The base (`0.st`) and `n` models (`1.st`...).
    fn new(n: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tensors: Vec<Vec<Tensor>> = (0..=n).map(|i| model(100 + i)).collect();
        for (i, t) in tensors.iter().enumerate() {
            write(&dir.path().join(format!("{i}.st")), t);
        }
        Self { dir, tensors }
    }
    fn path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{i}.st"))
    }
    fn entries(&self) -> usize {
        std::fs::read_dir(self.dir.path()).unwrap().count()
    }
}

/// What `method` gives on tensor `t` of the decoded models (and base): the
/// reference the executor must reproduce.
fn direct(
    method: &dyn MergeMethod,
    m: &Models,
    t: usize,
    models: &[usize],
    weights: &[f64],
    base: Option<usize>,
) -> Vec<f32> {
    let bytes = |i: usize| -> Vec<u8> {
        m.tensors[i][t]
            .2
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect()
    };
    let encoded: Vec<Vec<u8>> = models.iter().map(|&i| bytes(i)).collect();
    let xs: Vec<FloatSlice<'_>> = encoded
        .iter()
        .map(|b| FloatSlice::new(FloatDtype::F32, b).unwrap())
        .collect();
    let base_bytes = base.map(bytes);
    let (name, shape, values) = &m.tensors[0][t];
    let slices = TensorSlices {
        name,
        shape,
        elems: 0..values.len(),
        models: &xs,
        weights,
        base: base_bytes
            .as_deref()
            .map(|b| FloatSlice::new(FloatDtype::F32, b).unwrap()),
    };
    let mut out = vec![0.0; values.len()];
    method.merge(&slices, &mut out).unwrap();
    out.into_iter().map(|x| x as f32).collect()
}

fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn ties_through_files_equals_the_method_on_whole_tensors() {
    let m = Models::new(3);
    let ties = Ties::new(PerTensor::new(0.3).with("norm", 1.0));
    let plan = MethodPlan::new(
        Method::Ties(ties.clone()),
        MergePlan::weighted([(m.path(1), 1.0), (m.path(2), 2.0), (m.path(3), 1.0)]),
    )
    .base(m.path(0));
    plan.check().unwrap();
    // Small batches: each whole tensor is still one unit of work.
    let merger = Merger::for_plan(&plan).batch_bytes(100_000);
    let merged = merger.merge(&plan.models, &PathsOnly).unwrap();
    let w = [0.25, 0.5, 0.25];
    for (t, name) in ["w", "norm"].into_iter().enumerate() {
        let want = direct(&ties, &m, t, &[1, 2, 3], &w, Some(0));
        assert!(
            same(merged.get(name).unwrap().as_f32().unwrap(), &want),
            "{name}"
        );
    }
    // Trimming changed something: TIES is not task arithmetic here.
    let ta = direct(&TaskArithmetic, &m, 0, &[1, 2, 3], &w, Some(0));
    assert!(!same(merged.get("w").unwrap().as_f32().unwrap(), &ta));
    // The same through a file, whose record names the base (hashed) and the
    // parameters; the integer buffer is copied.
    let out = m.dir.path().join("ties.out");
    let record = merger
        .out_dtype(OutDtype::F32)
        .merge_to_file(&plan.models, &PathsOnly, &out)
        .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let w_bytes: Vec<u8> = merged
        .get("w")
        .unwrap()
        .as_f32()
        .unwrap()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(st.tensor("w").unwrap().data(), &w_bytes[..]);
    assert_eq!(st.tensor("pos").unwrap().dtype(), Dtype::I64);
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let stored: MergeRecord =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()[METADATA_KEY]).unwrap();
    assert_eq!(stored, record);
    assert_eq!(record.method, "ties");
    let base = record.base.as_ref().unwrap();
    assert_eq!(base.source, Source::Path(m.path(0)));
    assert_eq!(
        base.hash.as_deref(),
        Some(datamix_merge::file_hash(&m.path(0)).unwrap().as_str())
    );
    assert_eq!(
        record.parameters,
        Some(serde_json::to_value(&ties).unwrap())
    );
}

#[test]
fn task_arithmetic_streams_chunks_and_equals_the_method() {
    let m = Models::new(2);
    let merged = Merger::new(TaskArithmetic)
        .weighting(Weighting::Raw)
        .base(m.path(0))
        .batch_bytes(100_000)
        .merge(
            &MergePlan::weighted([(m.path(1), 0.7), (m.path(2), -0.4)]),
            &PathsOnly,
        )
        .unwrap();
    for (t, name) in ["w", "norm"].into_iter().enumerate() {
        let want = direct(&TaskArithmetic, &m, t, &[1, 2], &[0.7, -0.4], Some(0));
        assert!(
            same(merged.get(name).unwrap().as_f32().unwrap(), &want),
            "{name}"
        );
    }
}

#[test]
fn slerp_through_files_in_both_forms() {
    let m = Models::new(2);
    let slerp = Slerp::new(PerTensor::new(0.3).with("norm", 1.0));
    let two = Merger::new(slerp.clone())
        .merge(&MergePlan::uniform([m.path(1), m.path(2)]), &PathsOnly)
        .unwrap();
    let want = direct(&slerp, &m, 0, &[1, 2], &[0.5, 0.5], None);
    assert!(same(two.get("w").unwrap().as_f32().unwrap(), &want));
    // t = 1 for "norm": the second model, exactly.
    assert!(same(
        two.get("norm").unwrap().as_f32().unwrap(),
        &m.tensors[2][1].2
    ));
    // Base form: base = first endpoint.
    let based = Merger::new(slerp)
        .base(m.path(1))
        .merge(&MergePlan::leaf(m.path(2)), &PathsOnly)
        .unwrap();
    assert_eq!(based.tensors(), two.tensors());
}

#[test]
fn per_tensor_weight_overrides_change_only_their_tensors() {
    let m = Models::new(2);
    let plan = MergePlan::uniform([m.path(1), m.path(2)]);
    let o = WeightOverride {
        filter: "norm".into(),
        weights: vec![(Source::Path(m.path(2)), 3.0)],
    };
    let merged = Merger::linear()
        .weight_override(o.clone())
        .merge(&plan, &PathsOnly)
        .unwrap();
    let plain = Merger::linear().merge(&plan, &PathsOnly).unwrap();
    assert_eq!(merged.get("w"), plain.get("w"));
    // "norm": weights (1/2, 3) normalised to (1/7, 6/7).
    let (a, b) = (&m.tensors[1][1].2, &m.tensors[2][1].2);
    let got = merged.get("norm").unwrap().as_f32().unwrap();
    for j in 0..a.len() {
        let want = (0.5 / 3.5) * a[j] as f64 + (3.0 / 3.5) * b[j] as f64;
        assert!((got[j] as f64 - want).abs() < 1e-6, "{j}");
    }
    assert_eq!(merged.record().weight_overrides, [o]);
    // An override may leave a model out of a tensor entirely (weight 0:
    // never read for it).
    let only_first = WeightOverride {
        filter: "w".into(),
        weights: vec![(Source::Path(m.path(2)), 0.0)],
    };
    let merged = Merger::linear()
        .weight_override(only_first)
        .merge(&plan, &PathsOnly)
        .unwrap();
    assert!(same(
        merged.get("w").unwrap().as_f32().unwrap(),
        &m.tensors[1][0].2
    ));
}

/// Merges `plan` to a file and checks that it fails before writing anything.
fn fails_cleanly(m: &Models, plan: &MethodPlan) -> MergeError {
    let before = m.entries();
    let checked = plan.check().unwrap_err();
    let err = Merger::for_plan(plan)
        .merge_to_file(&plan.models, &PathsOnly, &m.dir.path().join("out.st"))
        .unwrap_err();
    assert_eq!(m.entries(), before, "partial output left after: {err}");
    assert_eq!(checked.to_string(), err.to_string());
    err
}

#[test]
fn bad_method_setups_are_typed_errors_without_output() {
    let m = Models::new(3);
    let three = MergePlan::uniform([m.path(1), m.path(2), m.path(3)]);
    // TIES and task arithmetic without a base.
    for method in [Method::TaskArithmetic, Method::Ties(Ties::new(0.5))] {
        let err = fails_cleanly(&m, &MethodPlan::new(method, three.clone()));
        assert!(
            matches!(
                err,
                MergeError::MethodSetup {
                    source: MethodError::MissingBase,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // SLERP of three models, or of two and a base.
    let err = fails_cleanly(&m, &MethodPlan::new(Method::Slerp(Slerp::new(0.5)), three));
    assert!(matches!(
        err,
        MergeError::MethodSetup { source: MethodError::ModelCount { found: 3, .. }, ref method } if method == "slerp"
    ));
    let two = MergePlan::uniform([m.path(1), m.path(2)]);
    let err = fails_cleanly(
        &m,
        &MethodPlan::new(Method::Slerp(Slerp::new(0.5)), two.clone()).base(m.path(0)),
    );
    assert!(matches!(
        err,
        MergeError::MethodSetup {
            source: MethodError::ModelCount { found: 2, .. },
            ..
        }
    ));
    // Density outside (0, 1], also in an override.
    for density in [PerTensor::new(0.0), PerTensor::new(0.5).with("norm", 1.01)] {
        let plan = MethodPlan::new(Method::Ties(Ties::new(density)), two.clone()).base(m.path(0));
        let err = fails_cleanly(&m, &plan);
        assert!(matches!(
            err,
            MergeError::MethodSetup {
                source: MethodError::Parameter {
                    name: "density",
                    ..
                },
                ..
            }
        ));
    }
    // A base given to linear is refused, not ignored.
    let err = fails_cleanly(
        &m,
        &MethodPlan::new(Method::Linear, two.clone()).base(m.path(0)),
    );
    assert!(matches!(
        err,
        MergeError::MethodSetup {
            source: MethodError::UnexpectedBase,
            ..
        }
    ));
    // An override naming a checkpoint that is not in the plan.
    let stray = MethodPlan::new(Method::Linear, two).weight_override(WeightOverride {
        filter: "w".into(),
        weights: vec![(Source::Path(m.path(3)), 1.0)],
    });
    assert!(matches!(
        fails_cleanly(&m, &stray),
        MergeError::UnknownOverrideSource { filter, .. } if filter == "w"
    ));
}

#[test]
fn the_base_model_is_checked_like_the_models() {
    let m = Models::new(2);
    let odd = m.dir.path().join("odd.st");
    write(&odd, &m.tensors[0][..1]); // no "norm"
    let err = Merger::new(TaskArithmetic)
        .base(odd.clone())
        .merge(&MergePlan::uniform([m.path(1), m.path(2)]), &PathsOnly)
        .unwrap_err();
    assert!(
        matches!(&err, MergeError::MissingTensor { path, tensor, .. } if path == &odd && tensor == "norm"),
        "{err:?}"
    );
    // A pool key as the base goes through the resolver.
    let resolver = |key: &str| (key == "base").then(|| m.path(0));
    let merged = Merger::new(TaskArithmetic)
        .base(Source::Key("base".into()))
        .merge(&MergePlan::uniform([m.path(1), m.path(2)]), &resolver)
        .unwrap();
    assert_eq!(merged.record().base.as_ref().unwrap().path, m.path(0));
    assert!(matches!(
        Merger::new(TaskArithmetic)
            .base(Source::Key("nope".into()))
            .merge(&MergePlan::uniform([m.path(1)]), &resolver),
        Err(MergeError::UnresolvedKey { key }) if key == "nope"
    ));
}

#[test]
fn density_keeping_nothing_of_a_tensor_names_it() {
    // 0.1 of the 7-element "norm" keeps no element (mergekit refuses too);
    // a per-tensor override fixes it.
    let m = Models::new(2);
    let two = MergePlan::uniform([m.path(1), m.path(2)]);
    let merger = Merger::new(Ties::new(0.1)).base(m.path(0));
    let err = merger.merge(&two, &PathsOnly).unwrap_err();
    assert!(
        matches!(&err, MergeError::Method { method, tensor, source: MethodError::NothingKept { numel: 7, .. } } if method == "ties" && tensor == "norm"),
        "{err:?}"
    );
    Merger::new(Ties::new(PerTensor::new(0.1).with("norm", 0.5)))
        .base(m.path(0))
        .merge(&two, &PathsOnly)
        .unwrap();
}

#[test]
fn method_plans_round_trip_through_json() {
    let json = r#"{
        "method": {"method": "ties", "density": {"default": 0.4, "overrides": [{"filter": "norm", "value": 1.0}]}},
        "models": {"average": [[1.0, {"leaf": {"path": "a.st"}}], [2.0, {"leaf": {"key": "pool-b"}}]]},
        "base": {"path": "base.st"},
        "weight_overrides": [{"filter": "mlp", "weights": [[{"path": "a.st"}, 0.0]]}]
    }"#;
    let plan: MethodPlan = serde_json::from_str(json).unwrap();
    assert_eq!(plan.weighting, Weighting::Normalized);
    assert_eq!(plan.base, Some(Source::Path("base.st".into())));
    assert_eq!(
        plan.method,
        Method::Ties(Ties::new(PerTensor::new(0.4).with("norm", 1.0)))
    );
    let flat = plan.check().unwrap();
    assert_eq!(flat.terms.len(), 2);
    let again: MethodPlan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
    assert_eq!(again, plan);
}
