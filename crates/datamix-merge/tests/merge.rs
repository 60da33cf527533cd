//! Merging real safetensors files: exactness, linearity, micro/macro weights,
//! checks and bad input.

use std::path::{Path, PathBuf};

use datamix_merge::{
    CHUNK_ELEMS, HASH_ALGORITHM, METADATA_KEY, MergeError, MergePlan, MergeRecord, Merger,
    OutDtype, PathsOnly, Source, TensorData, Weighting, file_hash,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write(path: &Path, tensors: &[Tensor]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A small model: a 2-D weight spanning several chunks, a vector, and an
/// integer buffer.
fn model(seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rand = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-6..4)))
            .collect()
    };
    vec![
        (
            "w".into(),
            Dtype::F32,
            vec![300, 1100],
            f32_bytes(&rand(330_000)),
        ),
        ("norm".into(), Dtype::F32, vec![7], f32_bytes(&rand(7))),
        (
            "pos".into(),
            Dtype::I64,
            vec![4],
            [0i64, 1, 2, 3]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
    ]
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.3.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn put(&self, name: &str, tensors: &[Tensor]) -> PathBuf {
        let p = self.0.path().join(name);
        write(&p, tensors);
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(self.0.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

fn small_batches() -> Merger {
    // Several batches even for the small test model.
    Merger::linear().batch_bytes(100_000)
}

#[test]
fn merging_identical_checkpoints_is_bitwise_identity() {
    let dir = Dir::new();
    let m = model(1);
    let paths: Vec<_> = (0..3).map(|i| dir.put(&format!("{i}.st"), &m)).collect();
    let plan = MergePlan::uniform(paths.clone());
    let merged = small_batches().merge(&plan, &PathsOnly).unwrap();
    for t in [&m[0], &m[1]] {
        let got = merged.get(&t.0).unwrap().as_f32().unwrap();
        let want = f32s(t);
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }
    match merged.get("pos").unwrap().data() {
        TensorData::Raw { dtype, bytes } => {
            assert_eq!(*dtype, Dtype::I64);
            assert_eq!(bytes, &m[2].3);
        }
        other => panic!("pos should be copied raw, got {other:?}"),
    }
    // The same through a file.
    let out = dir.path("out.st");
    let record = small_batches()
        .merge_to_file(&plan, &PathsOnly, &out)
        .unwrap();
    assert_eq!(record.inputs.len(), 3);
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for t in &m {
        let v = st.tensor(&t.0).unwrap();
        assert_eq!(v.dtype(), t.1);
        assert_eq!(v.data(), &t.3[..], "{}", t.0);
    }
}

#[test]
fn weights_one_zero_return_the_first_input() {
    let dir = Dir::new();
    let (a, b) = (model(1), model(2));
    let pa = dir.put("a.st", &a);
    let pb = dir.put("b.st", &b);
    let merged = Merger::linear()
        .merge(&MergePlan::weighted([(pa, 1.0), (pb, 0.0)]), &PathsOnly)
        .unwrap();
    let got = merged.get("w").unwrap().as_f32().unwrap();
    assert!(
        got.iter()
            .zip(f32s(&a[0]))
            .all(|(x, y)| x.to_bits() == y.to_bits())
    );
}

#[test]
fn merge_is_linear_in_the_weights_and_matches_the_naive_sum() {
    let dir = Dir::new();
    let models: Vec<_> = (0..3).map(|i| model(10 + i)).collect();
    let paths: Vec<_> = models
        .iter()
        .enumerate()
        .map(|(i, m)| dir.put(&format!("{i}.st"), m))
        .collect();
    let run = |w: [f64; 3]| {
        let plan = MergePlan::weighted(paths.iter().cloned().zip(w));
        small_batches()
            .merge(&plan, &PathsOnly)
            .unwrap()
            .get("w")
            .unwrap()
            .as_f32()
            .unwrap()
            .to_vec()
    };
    let (u, v, alpha) = ([0.2, 0.3, 0.5], [0.6, 0.1, 0.3], 0.25);
    let mix: [f64; 3] = std::array::from_fn(|i| alpha * u[i] + (1.0 - alpha) * v[i]);
    let (mu, mv, mm) = (run(u), run(v), run(mix));
    let inputs: Vec<Vec<f32>> = models.iter().map(|m| f32s(&m[0])).collect();
    for j in 0..mm.len() {
        let naive: f64 = (0..3).map(|i| mix[i] * inputs[i][j] as f64).sum();
        let lin = alpha * mu[j] as f64 + (1.0 - alpha) * mv[j] as f64;
        let scale = inputs
            .iter()
            .map(|x| x[j].abs() as f64)
            .fold(1e-30, f64::max);
        assert!((mm[j] as f64 - naive).abs() <= 1e-6 * scale, "element {j}");
        assert!((mm[j] as f64 - lin).abs() <= 1e-6 * scale, "element {j}");
    }
}

#[test]
fn macro_and_micro_merges_weight_units_as_in_the_paper() {
    // Domain A: three base units, domain B: one. Each unit is a constant model.
    let dir = Dir::new();
    let unit = |name: &str, value: f32| {
        dir.put(
            name,
            &[("w".into(), Dtype::F32, vec![2], f32_bytes(&[value, -value]))],
        )
    };
    let a = vec![unit("a1", 1.0), unit("a2", 2.0), unit("a3", 6.0)];
    let b = vec![unit("b1", 12.0)];
    let value = |plan: MergePlan| {
        Merger::linear()
            .merge(&plan, &PathsOnly)
            .unwrap()
            .get("w")
            .unwrap()
            .as_f32()
            .unwrap()[0]
    };
    // micro: (1 + 2 + 6 + 12) / 4; macro: ((1 + 2 + 6) / 3 + 12) / 2.
    assert_eq!(value(MergePlan::micro(a.iter().chain(&b).cloned())), 5.25);
    assert_eq!(value(MergePlan::macro_([a.clone(), b.clone()])), 7.5);
}

#[test]
fn bf16_and_f16_inputs_accumulate_in_high_precision() {
    let dir = Dir::new();
    for (dtype, enc) in [
        (
            Dtype::BF16,
            (|x: f32| half::bf16::from_f32(x).to_le_bytes()) as fn(f32) -> [u8; 2],
        ),
        (Dtype::F16, |x: f32| half::f16::from_f32(x).to_le_bytes()),
    ] {
        // 1 and 1 + 2^-7 are both exact in bf16 and f16; their mean is not.
        let one = dir.put("one", &[("w".into(), dtype, vec![1], enc(1.0).to_vec())]);
        let up = dir.put(
            "up",
            &[("w".into(), dtype, vec![1], enc(1.0078125).to_vec())],
        );
        let plan = MergePlan::uniform([one, up]);
        let merged = Merger::linear().merge(&plan, &PathsOnly).unwrap();
        assert_eq!(
            merged.get("w").unwrap().as_f32().unwrap(),
            &[1.0 + 2f32.powi(-8)]
        );
        let out = dir.path("out");
        Merger::linear()
            .out_dtype(OutDtype::BF16)
            .merge_to_file(&plan, &PathsOnly, &out)
            .unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let w = st.tensor("w").unwrap();
        assert_eq!(w.dtype(), Dtype::BF16);
        assert_eq!(w.data(), half::bf16::from_f64(1.00390625).to_le_bytes());
    }
}

#[test]
fn output_records_the_flat_plan_and_input_hashes() {
    let dir = Dir::new();
    let pa = dir.put("a.st", &model(1));
    let pb = dir.put("b.st", &model(2));
    let resolver = |key: &str| (key == "pool-b").then(|| pb.clone());
    let plan = MergePlan::Average(vec![
        (3.0, MergePlan::leaf(pa.clone())),
        (1.0, MergePlan::Leaf(Source::Key("pool-b".into()))),
    ]);
    let out = dir.path("out.st");
    Merger::linear()
        .merge_to_file(&plan, &resolver, &out)
        .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().as_ref().unwrap();
    assert_eq!(meta["format"], "pt");
    let record: MergeRecord = serde_json::from_str(&meta[METADATA_KEY]).unwrap();
    assert_eq!(record.method, "linear");
    assert_eq!(record.inputs[0].weight, 0.75);
    assert_eq!(record.inputs[1].source, Source::Key("pool-b".into()));
    assert_eq!(record.inputs[1].path, pb);
    // BLAKE3 of each whole file, computed independently of the merge.
    for (input, path) in record.inputs.iter().zip([&pa, &pb]) {
        let want = format!(
            "{HASH_ALGORITHM}:{}",
            blake3::hash(&std::fs::read(path).unwrap()).to_hex()
        );
        assert_eq!(HASH_ALGORITHM, "blake3");
        assert_eq!(input.hash.as_deref(), Some(want.as_str()));
        assert_eq!(file_hash(path).unwrap(), want);
    }
    let empty = dir.path("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        file_hash(&empty).unwrap(),
        format!("blake3:{}", blake3::hash(b"").to_hex())
    );
    assert!(matches!(
        file_hash(&dir.path("missing")),
        Err(MergeError::Io { .. })
    ));
    // The in-memory merge records the same hashes, and small batches (the
    // hash advancing batch by batch) do not change them.
    let merged = small_batches().merge(&plan, &resolver).unwrap();
    assert_eq!(merged.record(), &record);
    // A key the resolver does not know.
    let unknown = MergePlan::Leaf(Source::Key("nope".into()));
    assert!(matches!(
        Merger::linear().merge(&unknown, &resolver),
        Err(MergeError::UnresolvedKey { key }) if key == "nope"
    ));
}

#[test]
fn raw_weights_allow_task_arithmetic() {
    let dir = Dir::new();
    let t =
        |name: &str, v: f32| dir.put(name, &[("w".into(), Dtype::F32, vec![1], f32_bytes(&[v]))]);
    let (base, tuned) = (t("base", 1.0), t("tuned", 3.0));
    // base + 2 (tuned - base) = -1 base + 2 tuned.
    let plan = MergePlan::weighted([(base, -1.0), (tuned, 2.0)]);
    assert!(matches!(
        Merger::linear().merge(&plan, &PathsOnly),
        Err(MergeError::NegativeWeight { .. })
    ));
    let merged = Merger::linear()
        .weighting(Weighting::Raw)
        .merge(&plan, &PathsOnly)
        .unwrap();
    assert_eq!(merged.get("w").unwrap().as_f32().unwrap(), &[5.0]);
}

/// Runs a failing merge to a file and checks that nothing was left behind.
fn fails_cleanly(dir: &Dir, plan: &MergePlan) -> MergeError {
    let before = dir.entries();
    let err = Merger::linear()
        .merge_to_file(plan, &PathsOnly, &dir.path("out.st"))
        .unwrap_err();
    assert_eq!(dir.entries(), before, "partial output left after: {err}");
    err
}

#[test]
fn mismatched_inputs_name_the_tensor_and_file() {
    let dir = Dir::new();
    let good = model(1);
    let a = dir.put("a.st", &good);
    let mut shape = model(2);
    shape[1].2 = vec![1, 7];
    let mut dtype = model(2);
    dtype[1] = ("norm".into(), Dtype::F64, vec![7], vec![0; 56]);
    let mut missing = model(2);
    missing.remove(1);
    let mut extra = model(2);
    extra.push(("extra".into(), Dtype::F32, vec![1], vec![0; 4]));
    let mut ints = model(2);
    ints[2].3[0] = 9;
    let mut f8 = model(2);
    f8[1] = ("norm".into(), Dtype::F8_E4M3, vec![7], vec![0; 7]);
    let cases: Vec<(&str, Vec<Tensor>)> = vec![
        ("shape.st", shape),
        ("dtype.st", dtype),
        ("missing.st", missing),
        ("extra.st", extra),
        ("ints.st", ints),
    ];
    for (name, tensors) in cases {
        let b = dir.put(name, &tensors);
        let err = fails_cleanly(&dir, &MergePlan::uniform([a.clone(), b.clone()]));
        let msg = err.to_string();
        assert!(msg.contains(name), "{msg}");
        let tensor = match (&err, name) {
            (
                MergeError::ShapeMismatch {
                    tensor,
                    expected,
                    found,
                    ..
                },
                "shape.st",
            ) => {
                assert_eq!(
                    (expected.as_slice(), found.as_slice()),
                    (&[7][..], &[1, 7][..])
                );
                tensor
            }
            (MergeError::DtypeMismatch { tensor, .. }, "dtype.st")
            | (MergeError::MissingTensor { tensor, .. }, "missing.st")
            | (MergeError::UnexpectedTensor { tensor, .. }, "extra.st")
            | (MergeError::NonFloatMismatch { tensor, .. }, "ints.st") => tensor,
            _ => panic!("{name}: wrong error {err:?}"),
        };
        let want = match name {
            "extra.st" => "extra",
            "ints.st" => "pos",
            _ => "norm",
        };
        assert_eq!(tensor, want, "{name}");
    }
    let f8 = dir.put("f8.st", &f8);
    assert!(matches!(
        fails_cleanly(&dir, &MergePlan::uniform([f8.clone(), f8])),
        MergeError::UnsupportedDtype { tensor, .. } if tensor == "norm"
    ));
}

#[test]
fn bad_files_and_weights_are_typed_errors_without_output() {
    let dir = Dir::new();
    let good = dir.put("good.st", &model(1));
    let bytes = std::fs::read(&good).unwrap();
    let raw = |name: &str, b: &[u8]| {
        let p = dir.path(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let truncated = raw("truncated.st", &bytes[..bytes.len() - 100]);
    let tiny = raw("tiny.st", &bytes[..5]);
    let empty = raw("empty.st", &[]);
    let mut json = bytes.clone();
    json[8] = b'#';
    let bad_json = raw("badjson.st", &json);
    // A header whose declared length points past the end of the file.
    let mut long = bytes.clone();
    long[..8].copy_from_slice(&(bytes.len() as u64 * 2).to_le_bytes());
    let past_end = raw("pastend.st", &long);
    // A header whose tensor offsets point outside the data.
    let header = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,1600]}}"#;
    let mut outside = (header.len() as u64).to_le_bytes().to_vec();
    outside.extend_from_slice(header);
    outside.extend_from_slice(&[0; 16]);
    let outside = raw("outside.st", &outside);
    for p in [truncated, tiny, empty, bad_json, past_end, outside] {
        let err = fails_cleanly(&dir, &MergePlan::uniform([good.clone(), p.clone()]));
        assert!(
            matches!(&err, MergeError::InvalidFile { path, .. } if *path == p),
            "{}: {err:?}",
            p.display()
        );
    }
    let missing = dir.path("does-not-exist.st");
    assert!(matches!(
        fails_cleanly(&dir, &MergePlan::uniform([missing])),
        MergeError::Io { .. }
    ));
    assert!(matches!(
        fails_cleanly(&dir, &MergePlan::uniform(Vec::<PathBuf>::new())),
        MergeError::NoInputs
    ));
    assert!(matches!(
        fails_cleanly(
            &dir,
            &MergePlan::weighted([(good.clone(), 0.0), (good.clone(), 0.0)])
        ),
        MergeError::ZeroWeights { .. }
    ));
    assert!(matches!(
        fails_cleanly(&dir, &MergePlan::weighted([(good.clone(), f64::NAN)])),
        MergeError::NonFiniteWeight { .. }
    ));
}

#[test]
fn in_memory_result_saves_and_serialises_like_a_file_merge() {
    let dir = Dir::new();
    let plan = MergePlan::uniform([dir.put("a", &model(1)), dir.put("b", &model(2))]);
    let merger = Merger::linear().hash_inputs(false);
    let merged = merger.merge(&plan, &PathsOnly).unwrap();
    assert!(merged.record().inputs.iter().all(|i| i.hash.is_none()));
    for dtype in [OutDtype::F32, OutDtype::F16] {
        let (saved, streamed) = (dir.path("saved"), dir.path("streamed"));
        merged.save(&saved, dtype).unwrap();
        merger
            .clone()
            .out_dtype(dtype)
            .merge_to_file(&plan, &PathsOnly, &streamed)
            .unwrap();
        assert_eq!(
            std::fs::read(&saved).unwrap(),
            std::fs::read(&streamed).unwrap()
        );
    }
    let bytes = merged.to_safetensors_bytes().unwrap();
    // Deterministic (the header's metadata comes from a HashMap) and the same as the file.
    for _ in 0..4 {
        assert_eq!(merged.to_safetensors_bytes().unwrap(), bytes);
    }
    let saved = dir.path("saved-f32");
    merged.save(&saved, OutDtype::F32).unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), bytes);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 3);
    assert_eq!(
        st.tensor("w").unwrap().data(),
        bytemuck::cast_slice::<f32, u8>(merged.get("w").unwrap().as_f32().unwrap())
    );
}

/// A method that refuses every chunk: the error names the method and tensor,
/// and no output is left behind.
struct Refuse;

impl datamix_merge::MergeMethod for Refuse {
    fn name(&self) -> &str {
        "refuse"
    }
    fn merge(
        &self,
        _t: &datamix_merge::TensorSlices<'_>,
        _out: &mut [f64],
    ) -> Result<(), datamix_merge::MethodError> {
        Err(datamix_merge::MethodError::Other("no".into()))
    }
}

#[test]
fn a_failing_method_leaves_no_output() {
    let dir = Dir::new();
    let plan = MergePlan::uniform([dir.put("a", &model(1)), dir.put("b", &model(2))]);
    let before = dir.entries();
    let err = Merger::new(Refuse)
        .batch_bytes(100_000)
        .merge_to_file(&plan, &PathsOnly, &dir.path("out.st"))
        .unwrap_err();
    let is_refusal = |err: &MergeError| matches!(err, MergeError::Method { method, tensor, .. } if method == "refuse" && (tensor == "w" || tensor == "norm"));
    assert!(is_refusal(&err), "{err:?}");
    assert_eq!(dir.entries(), before);
    // In memory too, with or without hashing (the pool stops, nobody hangs).
    for hash in [false, true] {
        let merger = Merger::new(Refuse).batch_bytes(100_000).hash_inputs(hash);
        let err = merger.merge(&plan, &PathsOnly).unwrap_err();
        assert!(is_refusal(&err), "hash {hash}: {err:?}");
    }
}

#[test]
fn the_model_spans_several_chunks_and_batches() {
    // Keeps the tests above meaningful if CHUNK_ELEMS changes.
    assert!(model(1)[0].2.iter().product::<usize>() > 2 * CHUNK_ELEMS);
}

#[test]
fn hashes_cover_the_whole_file_whatever_the_layout() {
    // The second input stores its tensors in the opposite order (and the
    // merge reads it out of file order): hashing must still see every byte
    // once, in order.
    let dir = Dir::new();
    let m = model(3);
    let pa = dir.put("a.st", &m);
    let reversed: Vec<Tensor> = m.iter().rev().cloned().collect();
    let views: Vec<(String, TensorView<'_>)> = reversed
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    // Explicit order: safetensors sorts by dtype alignment then name, so
    // write the file by hand with the layout reversed.
    let pb = dir.path("b.st");
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, v) in &views {
        let start = data.len();
        data.extend_from_slice(v.data());
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": format!("{:?}", v.dtype()),
                "shape": v.shape(),
                "data_offsets": [start, data.len()],
            }),
        );
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend(json);
    file.extend(data);
    std::fs::write(&pb, &file).unwrap();
    let plan = MergePlan::uniform([pa.clone(), pb.clone()]);
    let merged = small_batches().merge(&plan, &PathsOnly).unwrap();
    let record = small_batches()
        .merge_to_file(&plan, &PathsOnly, &dir.path("out.st"))
        .unwrap();
    for (i, path) in [&pa, &pb].into_iter().enumerate() {
        let want = format!(
            "blake3:{}",
            blake3::hash(&std::fs::read(path).unwrap()).to_hex()
        );
        assert_eq!(
            merged.record().inputs[i].hash.as_deref(),
            Some(want.as_str())
        );
        assert_eq!(record.inputs[i].hash.as_deref(), Some(want.as_str()));
    }
    // Both inputs merged alike (the layout does not matter).
    let w = merged.get("w").unwrap().as_f32().unwrap();
    assert_eq!(w, f32s(&m[0]).as_slice());
}

#[test]
fn huge_pages_give_the_same_output() {
    let dir = Dir::new();
    // Big enough (8 MB of f32 output) to cover whole huge pages.
    let big = |seed: u64| -> Vec<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..2_000_000)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        vec![("big".into(), Dtype::F32, vec![2000, 1000], f32_bytes(&v))]
    };
    let plan = MergePlan::weighted([
        (dir.put("a", &big(1)), 1.0),
        (dir.put("b", &big(2)), 2.0),
        (dir.put("c", &big(3)), 3.0),
    ]);
    let plain = Merger::linear()
        .huge_pages(false)
        .merge(&plan, &PathsOnly)
        .unwrap();
    let huge = Merger::linear()
        .huge_pages(true)
        .merge(&plan, &PathsOnly)
        .unwrap();
    let (a, b) = (
        plain.get("big").unwrap().as_f32().unwrap(),
        huge.get("big").unwrap().as_f32().unwrap(),
    );
    assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(plain.record(), huge.record());
}

#[test]
fn records_from_older_versions_keep_their_sha256() {
    let old = r#"{"method":"linear","weighting":"normalized","inputs":[
        {"source":{"path":"a.st"},"path":"a.st","weight":1.0,"sha256":"ab12"},
        {"source":{"path":"b.st"},"path":"b.st","weight":0.0}]}"#;
    let record: MergeRecord = serde_json::from_str(old).unwrap();
    assert_eq!(record.inputs[0].hash.as_deref(), Some("sha256:ab12"));
    assert_eq!(record.inputs[1].hash, None);
    // New records round-trip under `hash`.
    let json = serde_json::to_string(&record).unwrap();
    assert!(json.contains(r#""hash":"sha256:ab12""#) && !json.contains(r#""sha256""#));
    assert_eq!(serde_json::from_str::<MergeRecord>(&json).unwrap(), record);
}

#[test]
fn merge_into_reuses_buffers_and_equals_a_fresh_merge() {
    let dir = Dir::new();
    let paths: Vec<_> = (0..3)
        .map(|i| dir.put(&format!("{i}.st"), &model(10 + i)))
        .collect();
    let first = MergePlan::weighted([(paths[0].clone(), 1.0), (paths[1].clone(), 3.0)]);
    let second = MergePlan::weighted([(paths[1].clone(), 2.0), (paths[2].clone(), 1.0)]);
    let mut out = small_batches().merge(&first, &PathsOnly).unwrap();
    let before = out.get("w").unwrap().as_f32().unwrap().as_ptr();
    small_batches()
        .merge_into(&second, &PathsOnly, &mut out)
        .unwrap();
    let fresh = small_batches().merge(&second, &PathsOnly).unwrap();
    // Same buffers, now holding exactly what a fresh merge gives.
    assert_eq!(out.get("w").unwrap().as_f32().unwrap().as_ptr(), before);
    for t in fresh.tensors() {
        assert_eq!(out.get(t.name()).unwrap(), t, "{}", t.name());
    }
    assert_eq!(out.record(), fresh.record());

    // A model of another layout is replaced, not reused.
    let other: Vec<Tensor> = vec![("v".into(), Dtype::F32, vec![5], f32_bytes(&[1.0; 5]))];
    let plan = MergePlan::uniform([dir.put("o1", &other), dir.put("o2", &other)]);
    small_batches()
        .merge_into(&plan, &PathsOnly, &mut out)
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out.get("v").unwrap().as_f32().unwrap(), &[1.0; 5]);

    // A bad input leaves the previous result untouched.
    let keep = out.clone();
    std::fs::write(dir.path("bad"), b"not a safetensors file").unwrap();
    let bad = MergePlan::uniform([dir.path("o1"), dir.path("bad")]);
    assert!(matches!(
        small_batches().merge_into(&bad, &PathsOnly, &mut out),
        Err(MergeError::InvalidFile { .. })
    ));
    assert_eq!(out.tensors(), keep.tensors());
    assert_eq!(out.record(), keep.record());
}

/// BLAKE3 of a safetensors file's tensor data (everything after the header):
/// the merge result without the header's metadata, which names temporary
/// paths.
fn data_hash(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    blake3::hash(&bytes[8 + n..]).to_hex().to_string()
}

#[test]
fn merge_outputs_are_bit_identical_to_the_recorded_ones() {
    // Golden hashes recorded before exec.rs was split into modules (issue
    // 22): refactoring the executor must not change a single output bit, in
    // any output dtype, in memory or to a file, with or without hashing.
    let dir = Dir::new();
    let paths: Vec<_> = (0..3)
        .map(|i| dir.put(&format!("{i}.st"), &model(20 + i)))
        .collect();
    let plan = MergePlan::weighted(paths.iter().cloned().zip([0.5, 0.3, 0.2]));
    let mut got = Vec::new();
    for (dtype, hash) in [
        (OutDtype::F32, false),
        (OutDtype::BF16, true),
        (OutDtype::F16, false),
    ] {
        let out = dir.path(&format!("out-{dtype:?}"));
        small_batches()
            .out_dtype(dtype)
            .hash_inputs(hash)
            .merge_to_file(&plan, &PathsOnly, &out)
            .unwrap();
        got.push(data_hash(&out));
    }
    let merged = small_batches().merge(&plan, &PathsOnly).unwrap();
    let mut mem = blake3::Hasher::new();
    for t in merged.tensors() {
        mem.update(t.name().as_bytes());
        match t.data() {
            TensorData::F32(v) => mem.update(bytemuck::cast_slice(v)),
            TensorData::Raw { bytes, .. } => mem.update(bytes),
        };
    }
    got.push(mem.finalize().to_hex().to_string());
    let want = [
        "4f454da05ffbdb880b986ac7c5a5a1d200f59fe42cfc8756ebb658867c27de88",
        "45d9773502fdd376571e1f76883bd89dfe42df0b663b50ac3f959eddf8c375cd",
        "dbcf50cd6a8e3a07de5763deb670a6bf919f70e8f19c504f24d7b78f19bbdf81",
        "395455aed4f6be679433e1ae83b28327f9f41613420b81fa862405e32634c9f0",
    ];
    assert_eq!(got, want);
}
