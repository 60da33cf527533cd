//! `datamix train` and `datamix eval` end to end on a two-domain synthetic corpus: a seed,
//! two experts continued from it, their MDE tables, and `datamix mde` on those tables.
//! Checks what ties the tools together: `eval` reproduces the held-out cross-entropy
//! `train` recorded, each expert is best on its own domain, the MDE loss of a one-hot
//! mixture is that expert's cross-entropy, and mismatched inputs are refused.

use std::path::Path;
use std::process::Command;

fn datamix(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_datamix"))
        .args(["--log", "error"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = datamix(args);
    assert!(success, "datamix {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Two domains that share little: English-like prose and code-like lines.
fn corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let prose = [
        "the river",
        "a quiet town",
        "her old letters",
        "the long winter",
    ];
    let code = [
        "fn main()",
        "let x = y + 1;",
        "if a < b { return; }",
        "impl Foo for Bar",
    ];
    for (name, words) in [("prose", prose), ("code", code)] {
        let mut text = String::new();
        for i in 0..120 {
            let line: Vec<&str> = (0..6).map(|j| words[(i * 3 + j * 5) % 4]).collect();
            text.push_str(&format!(
                "{{\"text\": \"{} {i}\", \"metadata\": {{\"domain\": \"{name}\"}}}}\n",
                line.join(" ")
            ));
        }
        std::fs::write(dir.join(format!("{name}.jsonl")), text).unwrap();
    }
}

/// `(model, eval_domain) -> ce` from an eval.csv.
fn ce(csv: &str, model: &str, domain: &str) -> f64 {
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f[0] == model && f[1] == domain)
        .unwrap_or_else(|| panic!("no row {model},{domain} in\n{csv}"))[3]
        .parse()
        .unwrap()
}

#[test]
fn train_experts_eval_them_and_score_mixtures_with_mde() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = d.join("text");
    corpus(&text);
    let seed = d.join("seed");
    let common = ["--steps", "30", "--batch-size", "4", "--lr", "3e-3"];
    let mut args = vec!["train", "--corpus", s(&text), "--out", s(&seed)];
    args.extend([
        "--vocab-size",
        "300",
        "--seq-len",
        "32",
        "--heldout-fraction",
        "0.2",
    ]);
    args.extend(["--warmup", "3", "--eval-tokens", "512"]);
    args.extend(common);
    ok(&args);
    for f in [
        "model.safetensors",
        "trainer.json",
        "tokenizer.json",
        "train.csv",
        "run.json",
    ] {
        assert!(seed.join(f).is_file(), "{f} missing");
    }
    let train_csv = std::fs::read_to_string(seed.join("train.csv")).unwrap();
    assert_eq!(train_csv.lines().count(), 31, "header + one row per step");
    let packed = seed.join("corpus");
    for (name, domain) in [("p", "prose"), ("c", "code")] {
        let out = d.join(name);
        let mix = format!("{domain}=1");
        let mut args = vec!["train", "--packed", s(&packed), "--init", s(&seed)];
        args.extend(["--mixture", &mix, "--out", s(&out), "--warmup", "0"]);
        args.extend(["--eval-tokens", "512"]);
        args.extend(common);
        ok(&args);
    }
    // The same run folder again: refused, nothing overwritten.
    let before = std::fs::read(d.join("p/model.safetensors")).unwrap();
    let (success, _, err) = datamix(&[
        "train",
        "--packed",
        s(&packed),
        "--mixture",
        "prose=1",
        "--out",
        s(&d.join("p")),
    ]);
    assert!(!success && err.contains("holds a finished run"), "{err}");
    assert_eq!(
        std::fs::read(d.join("p/model.safetensors")).unwrap(),
        before
    );

    let ev = d.join("ev");
    let p_model = format!("p={}", s(&d.join("p")));
    let c_model = format!("c={}", s(&d.join("c")));
    let mut args = vec!["eval", "--model", &p_model, "--model", &c_model];
    args.extend([
        "--heldout",
        s(&packed),
        "--eval-tokens",
        "512",
        "--out",
        s(&ev),
    ]);
    ok(&args);
    let csv = std::fs::read_to_string(ev.join("eval.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 2, "{csv}");
    // Each expert is best on its own domain.
    assert!(ce(&csv, "p", "prose") < ce(&csv, "c", "prose"), "{csv}");
    assert!(ce(&csv, "c", "code") < ce(&csv, "p", "code"), "{csv}");
    // `eval` reproduces what `train` measured on the held-out split (same tokens, window).
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("p/run.json")).unwrap()).unwrap();
    for h in run["heldout"].as_array().unwrap() {
        let domain = h["eval_domain"].as_str().unwrap();
        let recorded = h["ce"].as_f64().unwrap();
        assert!(
            (recorded - ce(&csv, "p", domain)).abs() < 1e-9,
            "{domain}: train recorded {recorded}, eval {}",
            ce(&csv, "p", domain)
        );
    }
    // The MDE loss of a one-hot mixture is that expert's cross-entropy.
    let mixtures = d.join("mixtures.csv");
    std::fs::write(&mixtures, "run,p,c\nonly_p,1,0\nonly_c,0,1\nhalf,0.5,0.5\n").unwrap();
    let mde_out = d.join("mde");
    ok(&[
        "mde",
        "--tables",
        s(&ev.join("tables")),
        "--mixtures",
        s(&mixtures),
        "--out",
        s(&mde_out),
    ]);
    let mde_csv = std::fs::read_to_string(mde_out.join("mde.csv")).unwrap();
    let header: Vec<&str> = mde_csv.lines().next().unwrap().split(',').collect();
    for line in mde_csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let expert = match f[0] {
            "only_p" => "p",
            "only_c" => "c",
            _ => continue,
        };
        for domain in ["prose", "code"] {
            let col = header
                .iter()
                .position(|h| *h == format!("mde:{domain}"))
                .unwrap_or_else(|| panic!("no mde:{domain} in {header:?}"));
            let got: f64 = f[col].parse().unwrap();
            let want = ce(&csv, expert, domain);
            assert!(
                (got - want).abs() < 1e-4,
                "{expert} on {domain}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn models_with_other_tokenizers_are_not_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    corpus(&d.join("text"));
    for (name, vocab) in [("a", "300"), ("b", "320")] {
        ok(&[
            "train",
            "--corpus",
            s(&d.join("text")),
            "--out",
            s(&d.join(name)),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--vocab-size",
            vocab,
            "--warmup",
            "0",
            "--eval-tokens",
            "64",
        ]);
    }
    let (success, _, err) = datamix(&[
        "eval",
        "--model",
        s(&d.join("a")),
        "--model",
        s(&d.join("b")),
        "--heldout",
        s(&d.join("a/corpus")),
        "--out",
        s(&d.join("ev")),
    ]);
    assert!(!success, "{err}");
    assert!(err.contains("--model b uses another tokenizer"), "{err}");
    assert!(!d.join("ev").exists(), "wrote output after refusing");
    // A continued training on a corpus packed with another tokenizer.
    let (success, _, err) = datamix(&[
        "train",
        "--packed",
        s(&d.join("b/corpus")),
        "--init",
        s(&d.join("a")),
        "--out",
        s(&d.join("c")),
        "--steps",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(!success && err.contains("another tokenizer"), "{err}");
    // An unknown domain names the ones there are.
    let (success, _, err) = datamix(&[
        "train",
        "--packed",
        s(&d.join("a/corpus")),
        "--mixture",
        "poetry=1",
        "--out",
        s(&d.join("c")),
    ]);
    assert!(
        !success && err.contains("no domain `poetry`") && err.contains("code, prose"),
        "{err}"
    );
}
