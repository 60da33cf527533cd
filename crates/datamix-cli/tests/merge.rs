//! `datamix merge` on hand-written safetensors files: the weighted average is exact, the
//! output dtype and the merge record are as planned, task arithmetic, TIES and SLERP give
//! the values worked out by hand (plans in YAML), and mismatched tensors or bad plans are
//! refused naming the tensor (both shapes) or the key, with nothing written.

use std::path::Path;
use std::process::Command;

/// Writes a safetensors file of F32 tensors `(name, shape, values)`.
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

/// The header of a safetensors file and its data bytes.
fn read_safetensors(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
        bytes[8 + n..].to_vec(),
    )
}

fn f32_tensor(header: &serde_json::Value, data: &[u8], name: &str) -> Vec<f32> {
    let t = &header[name];
    assert_eq!(t["dtype"], "F32", "{t}");
    let (a, b) = (
        t["data_offsets"][0].as_u64().unwrap() as usize,
        t["data_offsets"][1].as_u64().unwrap() as usize,
    );
    data[a..b]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn datamix(plan: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_datamix"))
        .args(["--log", "error", "merge", "--plan"])
        .arg(plan)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const PLAN: &str = r#"method = "linear"
dtype = "f32"
output = "merged.safetensors"

[[models]]
path = "a.safetensors"
weight = 3.0

[[models]]
path = "b.safetensors"
weight = 1.0
"#;

fn inputs(dir: &Path) {
    write_safetensors(
        &dir.join("a.safetensors"),
        &[
            ("w", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
            ("b", vec![2], vec![0.0, 8.0]),
        ],
    );
    write_safetensors(
        &dir.join("b.safetensors"),
        &[
            ("w", vec![2, 2], vec![5.0, 6.0, 7.0, 8.0]),
            ("b", vec![2], vec![4.0, 0.0]),
        ],
    );
}

#[test]
fn a_plan_merges_exactly_and_records_itself() {
    let dir = tempfile::tempdir().unwrap();
    inputs(dir.path());
    let plan = dir.path().join("merge.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let (code, err) = datamix(&plan);
    assert_eq!(code, Some(0), "{err}");
    let (header, data) = read_safetensors(&dir.path().join("merged.safetensors"));
    // Normalised weights 3:1 → 0.75 a + 0.25 b (exact in f32 for these values).
    assert_eq!(f32_tensor(&header, &data, "w"), [2.0f32, 3.0, 4.0, 5.0]);
    assert_eq!(f32_tensor(&header, &data, "b"), [1.0f32, 6.0]);
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("merged.merge.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["method"], "linear");
    let w: Vec<f64> = record["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["weight"].as_f64().unwrap())
        .collect();
    assert_eq!(w, [0.75, 0.25]);
    assert!(
        record["inputs"][0]["hash"]
            .as_str()
            .unwrap()
            .starts_with("blake3:")
    );
    // bf16 output.
    std::fs::write(&plan, PLAN.replace("\"f32\"", "\"bf16\"")).unwrap();
    let (code, err) = datamix(&plan);
    assert_eq!(code, Some(0), "{err}");
    let (header, _) = read_safetensors(&dir.path().join("merged.safetensors"));
    assert_eq!(header["w"]["dtype"], "BF16");
    // An output in folders that do not exist yet: they are created.
    std::fs::write(
        &plan,
        PLAN.replace("merged.safetensors", "out/deep/m.safetensors"),
    )
    .unwrap();
    let (code, err) = datamix(&plan);
    assert_eq!(code, Some(0), "{err}");
    let (header, data) = read_safetensors(&dir.path().join("out/deep/m.safetensors"));
    assert_eq!(f32_tensor(&header, &data, "w"), [2.0f32, 3.0, 4.0, 5.0]);
    assert!(dir.path().join("out/deep/m.merge.json").is_file());
}

#[test]
fn bad_plans_and_mismatched_tensors_exit_1_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    inputs(dir.path());
    write_safetensors(
        &dir.path().join("wide.safetensors"),
        &[
            ("w", vec![2, 3], vec![0.0; 6]),
            ("b", vec![2], vec![0.0, 0.0]),
        ],
    );
    write_safetensors(
        &dir.path().join("short.safetensors"),
        &[("w", vec![2, 2], vec![0.0; 4])],
    );
    let plan = dir.path().join("merge.toml");
    let cases: &[(&str, String, &str)] = &[
        (
            "shape mismatch",
            PLAN.replace("b.safetensors", "wide.safetensors"),
            "tensor `w` has shape [2, 3], expected [2, 2]",
        ),
        (
            "missing tensor",
            PLAN.replace("b.safetensors", "short.safetensors"),
            "tensor `b`",
        ),
        (
            "unknown method",
            PLAN.replace("\"linear\"", "\"dare\""),
            "method `dare` is not in this build; the methods are: linear, task_arithmetic, ties, slerp",
        ),
        (
            "TIES without its density",
            PLAN.replace("\"linear\"", "\"ties\""),
            "method `ties` needs `density`",
        ),
        (
            "a parameter of another method",
            PLAN.replace("dtype", "density = 0.5\ndtype"),
            "`density` is a parameter of ties, not of method `linear`",
        ),
        (
            "TIES without a base model",
            PLAN.replace("\"linear\"", "\"ties\"\ndensity = 0.5"),
            "base",
        ),
        (
            "unknown dtype",
            PLAN.replace("\"f32\"", "\"f8\""),
            "merge.toml",
        ),
        (
            "unknown key",
            PLAN.replace("dtype", "colour = 1\ndtype"),
            "colour",
        ),
        (
            "missing model",
            PLAN.replace("b.safetensors", "gone.safetensors"),
            "models[1]",
        ),
        ("negative weight", PLAN.replace("1.0", "-1.0"), "weight"),
        (
            "no output",
            PLAN.replace("output = \"merged.safetensors\"\n", ""),
            "no output",
        ),
    ];
    for (what, text, expected) in cases {
        std::fs::write(&plan, text).unwrap();
        let (code, err) = datamix(&plan);
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(err.starts_with("error: "), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected `{expected}` in {err}"
        );
        assert!(
            !dir.path().join("merged.safetensors").exists(),
            "{what}: output written"
        );
        assert!(
            !dir.path().join("merged.merge.json").exists(),
            "{what}: record written"
        );
    }
    // A merge that fails into folders it created removes them again.
    let text = PLAN
        .replace("b.safetensors", "wide.safetensors")
        .replace("merged.safetensors", "new/dir/m.safetensors");
    std::fs::write(&plan, text).unwrap();
    let (code, err) = datamix(&plan);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        !dir.path().join("new").exists(),
        "output folder left behind"
    );
}

#[test]
fn task_arithmetic_ties_and_slerp_from_yaml_plans_give_hand_worked_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_safetensors(&d.join("base.safetensors"), &[("w", vec![4], vec![0.0; 4])]);
    write_safetensors(
        &d.join("a.safetensors"),
        &[("w", vec![4], vec![1.0, -2.0, 3.0, 0.5])],
    );
    write_safetensors(
        &d.join("b.safetensors"),
        &[("w", vec![4], vec![3.0, 1.5, -1.0, 0.1])],
    );
    let run = |name: &str, yaml: &str| {
        let plan = d.join(format!("{name}.yaml"));
        std::fs::write(&plan, yaml).unwrap();
        let (code, err) = datamix(&plan);
        assert_eq!(code, Some(0), "{name}: {err}");
        let (header, data) = read_safetensors(&d.join(format!("{name}.safetensors")));
        f32_tensor(&header, &data, "w")
    };
    let models = "models:\n  - path: a.safetensors\n    weight: 1.0\n  - path: b.safetensors\n    weight: 1.0\n";
    // TIES, density 0.5: a keeps (-2, 3), b keeps (3, 1.5); the elected signs are
    // (+, -, +, none), so entry 0 is b's 3, entry 1 a's -2 (b's 1.5 disagrees), entry 2 a's
    // 3, and entry 3 stays the base's 0.
    let ties = run(
        "ties",
        &format!(
            "method: ties\nbase: base.safetensors\ndensity: 0.5\noutput: ties.safetensors\n{models}"
        ),
    );
    assert_eq!(ties, [3.0f32, -2.0, 3.0, 0.0]);
    // Task arithmetic with raw weights 0.5 each: base + 0.5 (a - base) + 0.5 (b - base).
    let ta = run(
        "ta",
        "method: task_arithmetic\nweighting: raw\nbase: base.safetensors\noutput: ta.safetensors\n\
         models:\n  - path: a.safetensors\n    weight: 0.5\n  - path: b.safetensors\n    weight: 0.5\n",
    );
    assert_eq!(ta, [2.0f32, -0.25, 1.0, 0.3]);
    // SLERP of two orthogonal unit vectors at t = 0.5 stays on the unit circle.
    write_safetensors(&d.join("x.safetensors"), &[("w", vec![2], vec![1.0, 0.0])]);
    write_safetensors(&d.join("y.safetensors"), &[("w", vec![2], vec![0.0, 1.0])]);
    let slerp = run(
        "slerp",
        "method: slerp\nt: 0.5\noutput: slerp.safetensors\n\
         models:\n  - path: x.safetensors\n  - path: y.safetensors\n",
    );
    let h = std::f32::consts::FRAC_1_SQRT_2;
    assert!(
        (slerp[0] - h).abs() < 1e-6 && (slerp[1] - h).abs() < 1e-6,
        "{slerp:?}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("slerp.merge.json")).unwrap())
            .unwrap();
    assert_eq!(record["method"], "slerp");
    // A YAML syntax error names the plan file.
    let plan = d.join("broken.yaml");
    std::fs::write(&plan, "method: [linear\n").unwrap();
    let (code, err) = datamix(&plan);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("broken.yaml"), "{err}");
}
