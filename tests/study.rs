//! The end-to-end study on a small synthetic corpus whose domains are easy to tell apart.

use std::fmt::Write as _;
use std::path::Path;

use datamix::study::{self, StudyConfig};

/// Three domains with disjoint vocabularies and different statistics, one JSONL file each.
fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir.join("corpus")).unwrap();
    std::fs::create_dir_all(dir.join("eval")).unwrap();
    let words: [&[&str]; 3] = [
        &["alpha", "beta", "gamma", "delta", "omega", "sigma"],
        &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "="],
        &["fn", "let", "mut", "{", "}", "(", ")", ";", "->", "impl"],
    ];
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for (d, name) in ["greek", "digits", "code"].iter().enumerate() {
        let mut f = String::new();
        for doc in 0..40 {
            let mut text = String::new();
            for _ in 0..120 {
                let w = words[d][next() % words[d].len()];
                text.push_str(w);
                text.push(' ');
            }
            let _ = writeln!(
                f,
                "{}",
                serde_json::json!({"id": format!("{name}-{doc}"), "text": text, "metadata": {"domain": name}})
            );
        }
        std::fs::write(dir.join("corpus").join(format!("{name}.jsonl")), f).unwrap();
    }
    let mut ood = String::new();
    for doc in 0..5 {
        let text: String = (0..100)
            .map(|i| words[i % 3][next() % 6])
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            ood,
            "{}",
            serde_json::json!({"id": format!("mixed-{doc}"), "text": text})
        );
    }
    std::fs::write(dir.join("eval").join("mixed.jsonl"), ood).unwrap();
}

fn config(dir: &Path) -> String {
    format!(
        r#"
out_dir = "{out}"
[data]
corpus = "{corpus}"
eval_sets = ["{eval}"]
vocab_size = 300
seq_len = 32
unit_tokens = 2048
heldout_fraction = 0.2
eval_tokens = 1024
[model]
preset = "tiny"
d_model = 32
[seed_model]
steps = 30
batch_size = 4
lr = 5e-3
warmup_steps = 3
[continued]
steps = 12
batch_size = 4
lr = 3e-3
warmup_steps = 2
[mixtures]
count = 7
alpha = 0.5
[analysis]
folds = 0
family = "ridge"
"#,
        out = dir.join("out").display(),
        corpus = dir.join("corpus").display(),
        eval = dir.join("eval").display(),
    )
}

#[test]
fn study_runs_end_to_end_and_reuses_its_pool() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let cfg = StudyConfig::from_toml(&config(dir.path()), Path::new("test.toml")).unwrap();
    let o = study::run(&cfg).unwrap();

    assert_eq!(o.domains, ["code", "digits", "greek"]);
    assert_eq!(o.eval_domains.last().unwrap(), "mixed");
    assert_eq!(o.mixtures.len(), 7);
    for m in [&o.true_loss, &o.mde_loss, &o.merged_loss] {
        assert_eq!(m.len(), 7);
        assert!(m.iter().flatten().all(|x| x.is_finite() && *x > 0.0));
    }
    // Experts specialise: on each training domain's held-out set, that domain's expert
    // beats every other expert.
    for (j, e) in o
        .eval_domains
        .iter()
        .enumerate()
        .filter(|(j, _)| o.eval_in_domain[*j])
    {
        let own = o.domains.iter().position(|d| d == e).unwrap();
        for (i, row) in o.expert_loss.iter().enumerate() {
            if i != own {
                assert!(
                    o.expert_loss[own][j] < row[j],
                    "expert {own} on {e}: {:?}",
                    o.expert_loss
                );
            }
        }
    }
    // The MDE estimate ranks mixtures like the trained models do on in-domain sets.
    let q: Vec<_> = o
        .analysis
        .proxy_quality
        .iter()
        .filter(|q| q.proxy == "mde" && o.domains.contains(&q.target))
        .collect();
    assert!(!q.is_empty());
    let mean_rho = q.iter().map(|q| q.spearman).sum::<f64>() / q.len() as f64;
    assert!(mean_rho > 0.5, "MDE Spearman on in-domain sets: {q:?}");
    // A recommendation inside the simplex, validated by training on it.
    let rec = o.analysis.recommended.as_ref().unwrap();
    assert!((rec.iter().sum::<f64>() - 1.0).abs() < 1e-6 && rec.iter().all(|&w| w >= -1e-12));
    assert!(o.analysis.validated_loss.unwrap().is_finite());

    let results = cfg.out_dir.join("results");
    for f in [
        "report.md",
        "mixtures.csv",
        "proxies.csv",
        "regression.md",
        "outcome.json",
        "proxies.svg",
    ] {
        assert!(results.join(f).is_file(), "missing {f}");
    }
    let pool_entries = std::fs::read_dir(cfg.out_dir.join("pool")).unwrap().count();
    let units: usize = o.units_per_domain.iter().sum();
    assert_eq!(pool_entries, 1 + units + 3 + 7 + 1);

    // Rerun: everything comes from the pool, with identical numbers.
    let again = study::run(&cfg).unwrap();
    assert_eq!(again.true_loss, o.true_loss);
    assert_eq!(again.mde_loss, o.mde_loss);
    assert_eq!(
        std::fs::read_dir(cfg.out_dir.join("pool")).unwrap().count(),
        pool_entries
    );
}

#[test]
fn bad_configs_are_rejected_with_the_key_named_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path()).replace("vocab_size = 300", "vocab_size = 300\nvocab = 3");
    let e = StudyConfig::from_toml(&text, Path::new("bad.toml")).unwrap_err();
    assert!(
        e.to_string().contains("vocab") && e.to_string().contains("bad.toml"),
        "{e}"
    );

    let text = config(dir.path()).replace("warmup_steps = 2", "warmup_steps = 20");
    let e = StudyConfig::from_toml(&text, Path::new("bad.toml")).unwrap_err();
    assert!(e.to_string().contains("continued.warmup_steps"), "{e}");

    // A corpus path that does not exist: an error naming it, and no output directory.
    let cfg = StudyConfig::from_toml(&config(dir.path()), Path::new("ok.toml")).unwrap();
    let e = study::run(&cfg).unwrap_err();
    assert!(e.to_string().contains("corpus"), "{e}");
    assert!(!cfg.out_dir.exists());
}
