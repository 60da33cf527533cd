//! `datamix merge` on hand-written safetensors files: the weighted average is exact, the
//! output dtype and the merge record are as planned, and mismatched tensors or bad plans
//! are refused naming the tensor (both shapes) or the key, with nothing written.

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
            PLAN.replace("\"linear\"", "\"ties\""),
            "method `ties` is not in this build; the methods are: linear",
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
}
