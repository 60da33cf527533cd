//! `datamix mde` on hand-made expert tables: the MDE losses match the formula
//! `L(λ) = -(1/T) Σ_t ln Σ_i λ_i p_i(t)` computed here, the optimum of a symmetric table is
//! the even mixture (or the bound that binds), and bad input is refused cleanly.

use std::path::Path;
use std::process::Command;

use datamix::mde::ExpertTableBuilder;

const EXPERTS: [&str; 2] = ["e0", "e1"];
/// Per-token probabilities of each expert on the `web_val` stream: mirror images, so the
/// mean-loss optimum is the even mixture.
const WEB: [[f64; 2]; 2] = [[0.9, 0.1], [0.1, 0.9]];
/// And on `code_val`.
const CODE: [[f64; 2]; 2] = [[0.5, 0.5], [0.2, 0.8]];
/// f32 log-probabilities: agreement to this is all the formula can give.
const TOL: f64 = 1e-5;

fn save_table(dir: &Path, domain: &str, probs: &[[f64; 2]; 2], tokenizer: &str) {
    let mut b = ExpertTableBuilder::new(domain, tokenizer);
    for (e, p) in EXPERTS.iter().zip(probs) {
        let logp: Vec<f32> = p.iter().map(|x| x.ln() as f32).collect();
        b.add_expert(*e, format!("ckpt-{e}"), &logp).unwrap();
    }
    b.build()
        .unwrap()
        .save(dir.join(format!("{domain}.safetensors")))
        .unwrap();
}

/// The MDE loss by its definition (from the same f32 log-probabilities).
fn mde(probs: &[[f64; 2]; 2], lambda: &[f64]) -> f64 {
    let t = probs[0].len();
    -(0..t)
        .map(|j| {
            (0..EXPERTS.len())
                .map(|i| lambda[i] * f64::from((probs[i][j].ln() as f32).exp()))
                .sum::<f64>()
                .ln()
        })
        .sum::<f64>()
        / t as f64
}

fn datamix(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_datamix"))
        .args(["--log", "error", "mde"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const MIXTURES: [[f64; 2]; 3] = [[0.5, 0.5], [0.8, 0.2], [0.1, 0.9]];

fn write_mixtures(path: &Path) {
    let mut csv = String::from("run,lambda:e0,e1\n");
    for (i, m) in MIXTURES.iter().enumerate() {
        csv.push_str(&format!("m{i},{},{}\n", m[0], m[1]));
    }
    std::fs::write(path, csv).unwrap();
}

#[test]
fn losses_match_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    std::fs::create_dir(&tables).unwrap();
    save_table(&tables, "web_val", &WEB, "tok");
    save_table(&tables, "code_val", &CODE, "tok");
    let mix = dir.path().join("mix.csv");
    write_mixtures(&mix);
    let out = dir.path().join("out");
    let (code, _, err) = datamix(&[
        "--tables",
        s(&tables),
        "--mixtures",
        s(&mix),
        "--out",
        s(&out),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let text = std::fs::read_to_string(out.join("mde.csv")).unwrap();
    let mut lines = text.lines();
    // Tables load in file-name order: code_val, then web_val.
    assert_eq!(
        lines.next().unwrap(),
        "run,lambda:e0,lambda:e1,mde:code_val,mde:web_val"
    );
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[0], format!("m{i}"));
        let code: f64 = f[3].parse().unwrap();
        let web: f64 = f[4].parse().unwrap();
        assert!((code - mde(&CODE, &MIXTURES[i])).abs() < TOL, "{line}");
        assert!((web - mde(&WEB, &MIXTURES[i])).abs() < TOL, "{line}");
    }
}

#[test]
fn the_optimum_is_the_even_mixture_or_the_binding_bound() {
    let dir = tempfile::tempdir().unwrap();
    save_table(dir.path(), "web_val", &WEB, "tok");
    save_table(dir.path(), "code_val", &CODE, "tok");
    let web = dir.path().join("web_val.safetensors");
    let code = dir.path().join("code_val.safetensors");
    let out = dir.path().join("out");
    let optimum = |extra: &[&str]| {
        let mut args = vec![
            "--tables",
            s(&web),
            s(&code),
            "--optimize",
            "--weight",
            "web_val=1",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let (code, stdout, err) = datamix(&args);
        assert_eq!(code, Some(0), "{err}");
        assert!(stdout.contains("MDE optimum"), "{stdout}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("optimum.json")).unwrap())
                .unwrap();
        let m: Vec<f64> = v["mixture"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        (m, v["objective"].as_f64().unwrap())
    };
    let (m, value) = optimum(&[]);
    assert!((m[0] - 0.5).abs() < 1e-4, "{m:?}");
    assert!((value - mde(&WEB, &[0.5, 0.5])).abs() < TOL, "{value}");
    // The loss is convex and symmetric about 0.5: a cap below it binds.
    let (m, value) = optimum(&["--max", "e0=0.3"]);
    assert!((m[0] - 0.3).abs() < 1e-6, "{m:?}");
    assert!((value - mde(&WEB, &[0.3, 0.7])).abs() < TOL, "{value}");
}

#[test]
fn bad_tables_and_mixtures_exit_1_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    save_table(&good, "web_val", &WEB, "tok");
    save_table(&other, "code_val", &CODE, "another-tok");
    let web = good.join("web_val.safetensors");
    let mix = dir.path().join("mix.csv");
    write_mixtures(&mix);
    let out = dir.path().join("out");
    let case = |what: &str, args: &[&str], expected: &str| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--out", s(&out)]);
        let (code, _, err) = datamix(&all);
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(err.starts_with("error: "), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected `{expected}` in {err}"
        );
        assert!(!out.exists(), "{what}: output written");
    };
    let other_tok = other.join("code_val.safetensors");
    case(
        "different tokenizers",
        &["--tables", s(&web), s(&other_tok), "--mixtures", s(&mix)],
        "code_val.safetensors: tokenizer hash `another-tok` differs from",
    );
    case(
        "same eval domain twice",
        &["--tables", s(&web), s(&web), "--mixtures", s(&mix)],
        "eval domain `web_val` is also",
    );
    let missing = dir.path().join("nope.safetensors");
    case(
        "missing table",
        &["--tables", s(&missing), "--mixtures", s(&mix)],
        "nope.safetensors",
    );
    std::fs::write(&mix, "run,e0,e2\nm0,0.5,0.5\n").unwrap();
    case(
        "expert column missing",
        &["--tables", s(&web), "--mixtures", s(&mix)],
        "no column for expert `e1`",
    );
    std::fs::write(&mix, "run,e0,e1\nm0,0.5,0.4\n").unwrap();
    case(
        "weights off",
        &["--tables", s(&web), "--mixtures", s(&mix)],
        "line 2 (run `m0`): the weights sum to 0.9 (off by -0.1)",
    );
    case(
        "infeasible bounds",
        &["--tables", s(&web), "--optimize", "--min-weight", "0.6"],
        "the lower bounds sum to 1.2 > 1",
    );
    case(
        "weight of an unknown domain",
        &["--tables", s(&web), "--optimize", "--weight", "latin=1"],
        "no table of eval domain `latin`",
    );
}
