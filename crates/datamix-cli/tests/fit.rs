//! `datamix fit` and `datamix search` on a synthetic swarm whose true objective is known: a
//! quadratic bowl over three domains with its minimum inside the simplex, so the best
//! mixture under any bounds can be worked out by hand. Then every kind of bad input: exit
//! status 1, one `error:` line naming the file, column, row or flag, and nothing written.

use std::path::{Path, PathBuf};
use std::process::Command;

const DOMAINS: [&str; 3] = ["web", "code", "books"];
/// The true objective's minimiser.
const OPTIMUM: [f64; 3] = [0.5, 0.3, 0.2];
/// Its value there.
const FLOOR: f64 = 2.0;
/// Curvature of the bowl.
const CURVATURE: f64 = 3.0;
/// Runs in the swarm.
const RUNS: usize = 40;
/// How close a recommendation must come to the true optimum (max over domains): the GP
/// interpolates a smooth bowl from 40 runs far more closely than this.
const NEAR: f64 = 0.03;

/// The true objective.
fn bowl(w: &[f64]) -> f64 {
    FLOOR
        + CURVATURE
            * w.iter()
                .zip(OPTIMUM)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
}

/// Mixtures drawn from Dirichlet(1) (normalised exponentials of a fixed LCG stream).
fn mixtures() -> Vec<[f64; 3]> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut uniform = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..RUNS)
        .map(|_| {
            let g = [-uniform().ln(), -uniform().ln(), -uniform().ln()];
            let s: f64 = g.iter().sum();
            [g[0] / s, g[1] / s, g[2] / s]
        })
        .collect()
}

/// One CSV: `run`, `lambda:<domain>`, `val_loss` (the bowl) and `other` (a second metric).
fn swarm_csv(dir: &Path) -> PathBuf {
    let mut s = String::from("run,lambda:web,lambda:code,lambda:books,val_loss,other\n");
    for (i, m) in mixtures().iter().enumerate() {
        s.push_str(&format!(
            "r{i},{},{},{},{},{}\n",
            m[0],
            m[1],
            m[2],
            bowl(m),
            bowl(m) * 2.0
        ));
    }
    let p = dir.join("swarm.csv");
    std::fs::write(&p, s).unwrap();
    p
}

/// Runs `datamix` with `args`; returns (exit code, stdout, stderr).
fn datamix(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_datamix"))
        .args(["--log", "error"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = datamix(args);
    assert_eq!(code, Some(0), "{args:?}: {err}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The recommendation file: (weights, predicted, predicted std).
fn recommendation(dir: &Path) -> (Vec<f64>, f64, Option<f64>) {
    let text = std::fs::read_to_string(dir.join("recommendation.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let w = v["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    (
        w,
        v["predicted"].as_f64().unwrap(),
        v["predicted_std"].as_f64(),
    )
}

fn assert_near(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst <= tol, "{what}: {got:?} vs {want:?}");
}

#[test]
fn fit_recommends_the_known_optimum_and_writes_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = swarm_csv(dir.path());
    let out = dir.path().join("fit");
    let stdout = ok(&[
        "fit",
        "--data",
        s(&data),
        "--target",
        "val_loss",
        "--out",
        s(&out),
    ]);
    assert!(stdout.contains("Recommended mixture"), "{stdout}");
    for f in [
        "comparison.csv",
        "comparison.json",
        "comparison.md",
        "predictions.csv",
        "model.json",
        "recommendation.json",
        "recommendation.csv",
        "predicted_vs_true.svg",
        "predicted_vs_true.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let (w, predicted, std) = recommendation(&out);
    assert_near("recommendation", &w, &OPTIMUM, NEAR);
    assert!(
        (predicted - FLOOR).abs() < CURVATURE * NEAR * NEAR,
        "{predicted}"
    );
    // The smooth bowl is the GP's to win; it reports its uncertainty.
    assert!(std.is_some_and(|s| s >= 0.0), "{std:?}");
    let model = std::fs::read_to_string(out.join("model.json")).unwrap();
    assert!(model.contains("\"family\": \"gp"), "{model}");
    // Every default family, cross-validated on λ.
    let table = std::fs::read_to_string(out.join("comparison.csv")).unwrap();
    for f in ["mean", "ridge", "gp", "gbdt"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("val_loss,{f}"))),
            "{f}: {table}"
        );
    }
    let preds = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(preds.lines().count(), RUNS + 1);
    let png = std::fs::read(out.join("predicted_vs_true.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let svg = std::fs::read_to_string(out.join("predicted_vs_true.svg")).unwrap();
    // One point per run in each of the four panels.
    assert_eq!(svg.matches("<circle").count(), 4 * RUNS);
}

#[test]
fn fit_and_search_respect_bounds_and_token_limits() {
    let dir = tempfile::tempdir().unwrap();
    let data = swarm_csv(dir.path());
    let out = dir.path().join("fit");
    // books ≥ 0.4 binds: the rest of the bowl is minimised on web + code = 0.6 with equal
    // deviations from the optimum: (0.4, 0.2, 0.4).
    ok(&[
        "fit",
        "--data",
        s(&data),
        "--target",
        "val_loss",
        "--min",
        "books=0.4",
        "--out",
        s(&out),
    ]);
    let (w, _, _) = recommendation(&out);
    assert_near("--min books=0.4", &w, &[0.4, 0.2, 0.4], NEAR);
    assert!(w[2] >= 0.4 - 1e-9);

    // code capped at 2 epochs × 1e8 tokens / 1e9 = 0.2: web and books share the remaining
    // 0.3 of deviation equally: (0.55, 0.2, 0.25).
    let again = dir.path().join("search");
    let stdout = ok(&[
        "search",
        "--model",
        s(&out.join("model.json")),
        "--available",
        "code=1e8",
        "--total-tokens",
        "1e9",
        "--max-epochs",
        "2",
        "--suggest",
        "4",
        "--out",
        s(&again),
    ]);
    assert!(stdout.contains("Next 4 mixture(s)"), "{stdout}");
    let (w, _, _) = recommendation(&again);
    assert_near("code capped at 0.2", &w, &[0.55, 0.2, 0.25], NEAR);
    assert!(w[1] <= 0.2 + 1e-9);
    // The suggested batch: four distinct feasible mixtures.
    let text = std::fs::read_to_string(again.join("suggestions.csv")).unwrap();
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert_eq!(r.len(), DOMAINS.len());
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{r:?}");
        assert!(r.iter().all(|&v| v >= -1e-12), "{r:?}");
        assert!(r[1] <= 0.2 + 1e-9, "{r:?}");
    }
    for i in 0..rows.len() {
        for j in 0..i {
            assert_ne!(rows[i], rows[j]);
        }
    }
}

#[test]
fn ratios_and_metrics_joined_on_the_run_id_fit_like_one_csv() {
    let dir = tempfile::tempdir().unwrap();
    let m = mixtures();
    let mut ratios = String::from("run,web,code,books\n");
    for (i, x) in m.iter().enumerate() {
        ratios.push_str(&format!("r{i},{},{},{}\n", x[0], x[1], x[2]));
    }
    // Metrics in reverse order (the join is by id), the bowl split into two halves whose
    // equal-weight mean is the bowl.
    let mut metrics = String::from("run,a,b\n");
    for (i, x) in m.iter().enumerate().rev() {
        let y = bowl(x);
        metrics.push_str(&format!("r{i},{},{}\n", y - 1.0, y + 1.0));
    }
    std::fs::write(dir.path().join("ratios.csv"), ratios).unwrap();
    std::fs::write(dir.path().join("metrics.csv"), metrics).unwrap();
    let out = dir.path().join("fit");
    ok(&[
        "fit",
        "--ratios",
        s(&dir.path().join("ratios.csv")),
        "--metrics",
        s(&dir.path().join("metrics.csv")),
        "--target",
        "a",
        "--target",
        "b",
        "--families",
        "ridge,gp",
        "--out",
        s(&out),
    ]);
    let (w, predicted, _) = recommendation(&out);
    assert_near("joined", &w, &OPTIMUM, NEAR);
    assert!(
        (predicted - FLOOR).abs() < CURVATURE * NEAR * NEAR,
        "{predicted}"
    );
    let table = std::fs::read_to_string(out.join("comparison.csv")).unwrap();
    assert!(table.lines().nth(1).unwrap().starts_with("objective,ridge"));
    assert_eq!(table.lines().count(), 3, "{table}");
}

#[test]
fn a_saved_model_that_no_longer_refits_the_same_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = swarm_csv(dir.path());
    let out = dir.path().join("fit");
    ok(&[
        "fit",
        "--data",
        s(&data),
        "--target",
        "val_loss",
        "--families",
        "ridge",
        "--out",
        s(&out),
    ]);
    let path = out.join("model.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let y = v["values"][0].as_f64().unwrap();
    v["values"][0] = serde_json::json!(y + 1.0);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let (code, _, err) = datamix(&["search", "--model", s(&path)]);
    assert_user_error("tampered model", code, &err, "model.json");
    assert!(err.contains("refitting"), "{err}");
}

/// A clean failure: exit status 1, one `error:` line naming `expected`, no panic.
fn assert_user_error(what: &str, code: Option<i32>, err: &str, expected: &str) {
    assert_eq!(code, Some(1), "{what}: {err}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
    assert!(
        err.contains(expected),
        "{what}: expected `{expected}` in: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
}

/// Bad swarm files and flags: `(what, edit of the swarm CSV text, extra args, expected)`.
type Edit = fn(&str) -> String;
const BAD_FIT: &[(&str, Edit, &[&str], &str)] = &[
    (
        "unknown metric",
        |t| t.to_string(),
        &["--target", "nope"],
        "no column `nope`",
    ),
    (
        "duplicate column",
        |t| t.replacen("other", "val_loss", 1),
        &["--target", "val_loss"],
        "column `val_loss` appears twice",
    ),
    (
        "non-numeric ratio",
        |t| {
            let mut l: Vec<String> = t.lines().map(String::from).collect();
            let f: Vec<&str> = l[2].split(',').collect();
            l[2] = format!("{},{},abc,{},{},{}", f[0], f[1], f[3], f[4], f[5]);
            l.join("\n") + "\n"
        },
        &["--target", "val_loss"],
        "line 3, column `lambda:code`: `abc`",
    ),
    (
        "non-finite metric",
        |t| {
            let mut l: Vec<String> = t.lines().map(String::from).collect();
            let f: Vec<&str> = l[4].split(',').collect();
            l[4] = format!("{},{},{},{},NaN,{}", f[0], f[1], f[2], f[3], f[5]);
            l.join("\n") + "\n"
        },
        &["--target", "val_loss"],
        "line 5, column `val_loss`: `NaN` is not a finite number",
    ),
    (
        "ratios off",
        |t| {
            let mut l: Vec<String> = t.lines().map(String::from).collect();
            let f: Vec<&str> = l[3].split(',').collect();
            l[3] = format!("{},0.5,0.3,0.1,{},{}", f[0], f[4], f[5]);
            l.join("\n") + "\n"
        },
        &["--target", "val_loss"],
        "line 4 (run `r2`): the ratios sum to 0.9 (off by -0.1); pass --normalize",
    ),
    (
        "negative ratio",
        |t| {
            let mut l: Vec<String> = t.lines().map(String::from).collect();
            let f: Vec<&str> = l[1].split(',').collect();
            l[1] = format!("{},1.2,-0.2,0,{},{}", f[0], f[4], f[5]);
            l.join("\n") + "\n"
        },
        &["--target", "val_loss"],
        "column `lambda:code`: ratio -0.2 is negative",
    ),
    (
        "duplicate run id",
        |t| t.replacen("r1,", "r0,", 1),
        &["--target", "val_loss"],
        "run id `r0` appears twice (lines 2 and 3)",
    ),
    (
        "short row",
        |t| t.to_string() + "r99,0.5,0.5\n",
        &["--target", "val_loss"],
        "has 3 fields, the header has 6",
    ),
    (
        "several metrics, no --target",
        |t| t.to_string(),
        &[],
        "several metric columns (val_loss, other)",
    ),
    (
        "one ratio column",
        |t| {
            t.replace("lambda:code", "code")
                .replace("lambda:books", "books")
        },
        &["--target", "val_loss"],
        "1 ratio column(s) found",
    ),
    (
        "target is a ratio",
        |t| t.to_string(),
        &["--target", "lambda:web"],
        "not a metric",
    ),
    (
        "lower bounds above 1",
        |t| t.to_string(),
        &[
            "--target", "val_loss", "--min", "web=0.7", "--min", "code=0.5",
        ],
        "the lower bounds sum to 1.2 > 1: web 0.7 (--min web=0.7), code 0.5 (--min code=0.5)",
    ),
    (
        "upper bounds below 1",
        |t| t.to_string(),
        &["--target", "val_loss", "--max-weight", "0.3"],
        "the upper bounds sum to",
    ),
    (
        "token limit below a minimum",
        |t| t.to_string(),
        &[
            "--target",
            "val_loss",
            "--min",
            "code=0.5",
            "--available",
            "code=10",
            "--total-tokens",
            "100",
        ],
        "domain `code` must weigh at least 0.5 (--min code=0.5) but at most 0.1 (--available code=10",
    ),
    (
        "unknown domain",
        |t| t.to_string(),
        &["--target", "val_loss", "--max", "latin=0.5"],
        "unknown domain `latin`",
    ),
    (
        "available without total",
        |t| t.to_string(),
        &["--target", "val_loss", "--available", "code=10"],
        "--available needs --total-tokens",
    ),
    (
        "weight out of range",
        |t| t.to_string(),
        &["--target", "val_loss", "--min-weight", "1.5"],
        "--min-weight 1.5",
    ),
    (
        "unknown family",
        |t| t.to_string(),
        &["--target", "val_loss", "--families", "ridge,svm"],
        "unknown model family `svm`",
    ),
    (
        "nothing to search with",
        |t| t.to_string(),
        &["--target", "val_loss", "--families", "mean"],
        "--families has none of ridge, elastic-net, gp, gbdt",
    ),
];

#[test]
fn bad_input_exits_1_names_the_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(swarm_csv(dir.path())).unwrap();
    let data = dir.path().join("case.csv");
    let out = dir.path().join("out");
    for (what, edit, extra, expected) in BAD_FIT {
        std::fs::write(&data, edit(&good)).unwrap();
        let mut args = vec!["fit", "--data", s(&data), "--out", s(&out)];
        args.extend_from_slice(extra);
        let (code, _, err) = datamix(&args);
        assert_user_error(what, code, &err, expected);
        assert!(
            err.contains("case.csv") || !expected.contains("line"),
            "{what}: {err}"
        );
        assert!(!out.exists(), "{what}: output written");
    }
    // The rows off by more than the tolerance fit once normalised.
    std::fs::write(&data, (BAD_FIT[4].1)(&good)).unwrap();
    let (code, _, err) = datamix(&[
        "fit",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--target",
        "val_loss",
        "--families",
        "ridge",
        "--normalize",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("rescaled the ratios of 1 run(s)"), "{err}");

    // Missing files, joins and models.
    let gone = dir.path().join("absent.csv");
    let out2 = dir.path().join("out2");
    let (code, _, err) = datamix(&["fit", "--data", s(&gone), "--out", s(&out2)]);
    assert_user_error("missing file", code, &err, "absent.csv");
    std::fs::write(
        dir.path().join("r.csv"),
        "run,web,code\nr0,0.5,0.5\nr1,0.2,0.8\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("m.csv"), "run,loss\nr0,2.5\n").unwrap();
    let (code, _, err) = datamix(&[
        "fit",
        "--ratios",
        s(&dir.path().join("r.csv")),
        "--metrics",
        s(&dir.path().join("m.csv")),
        "--out",
        s(&out2),
    ]);
    assert_user_error(
        "run without metrics",
        code,
        &err,
        "m.csv: no row for run `r1`",
    );
    std::fs::write(dir.path().join("m.csv"), "name,loss\nr0,2.5\nr1,2.6\n").unwrap();
    let (code, _, err) = datamix(&[
        "fit",
        "--ratios",
        s(&dir.path().join("r.csv")),
        "--metrics",
        s(&dir.path().join("m.csv")),
        "--out",
        s(&out2),
    ]);
    assert_user_error("no id to join on", code, &err, "no column `run`");
    assert!(!out2.exists(), "output written");
    let (code, _, err) = datamix(&["search", "--model", s(&data)]);
    assert_user_error(
        "not a model",
        code,
        &err,
        "not a model written by `datamix fit`",
    );
    let (code, _, err) = datamix(&["search", "--model", s(&gone)]);
    assert_user_error("missing model", code, &err, "absent.csv");
}
