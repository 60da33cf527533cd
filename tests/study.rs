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
    // An end-task set: a greek context continued by its next greek word.
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    let mut tasks = String::new();
    for i in 0..30 {
        let ctx: Vec<&str> = (0..6).map(|j| words[0][(i + j) % 6]).collect();
        let _ = writeln!(
            tasks,
            "{}",
            serde_json::json!({"id": i, "context": ctx.join(" "), "answer": format!(" {}", words[0][(i + 6) % 6])})
        );
    }
    std::fs::write(dir.join("tasks").join("next.jsonl"), tasks).unwrap();
}

fn config(dir: &Path) -> String {
    format!(
        r#"
out_dir = "{out}"
[data]
corpus = "{corpus}"
eval_sets = ["{eval}"]
task_sets = ["{tasks}"]
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
count = 10
test = 3
alpha = 0.5
[replicates]
mixtures = [0, 1]
seeds = 1
[subsets]
count = 4
k = 2
[objective]
weights = {{ code = 1.0, digits = 1.0, greek = 1.0, mixed = 2.0, task_next = 1.0 }}
secondary = {{ task_next = 1.0 }}
[analysis]
folds = 0
family = "ridge"
curve_repeats = 3
[search]
validate_seeds = 2
"#,
        out = dir.join("out").display(),
        tasks = dir.join("tasks").display(),
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
    assert_eq!(
        o.eval_domains,
        ["code", "digits", "greek", "mixed", "task_next"]
    );
    assert_eq!(o.eval_task, [false, false, false, false, true]);
    let w = &o.objective_weights;
    assert!((w[3] - 2.0 / 6.0).abs() < 1e-12 && (w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert_eq!(o.mixtures.len(), 10);
    assert_eq!(o.is_test.iter().filter(|t| **t).count(), 3);
    assert!(o.is_test[7..].iter().all(|t| *t));
    for m in [&o.true_loss, &o.mde_loss, &o.merged_loss] {
        assert_eq!(m.len(), 10);
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
    // Replicates: two mixtures with one extra seed each give a noise floor per target.
    assert_eq!(o.replicates.len(), 2);
    let a = &o.analysis;
    assert_eq!(a.noise.len(), 6);
    assert!(
        a.noise
            .iter()
            .all(|n| n.runs == 4 && n.seed_sd.is_finite() && n.seed_sd > 0.0)
    );
    // Held-out test mixtures: every family x feature set scored on them; the family was
    // chosen on training folds, the best observed mixture is a training one.
    assert!(
        a.test
            .iter()
            .any(|r| r.family == "ridge" && r.features == "λ+MDE")
    );
    assert!(!o.is_test[a.best_observed]);
    assert!(
        a.comparison
            .as_ref()
            .unwrap()
            .rows
            .iter()
            .all(|r| r.n_features > 0)
    );
    assert!(
        a.curves
            .iter()
            .any(|c| c.features == "λ+MDE" && c.n_train == 5)
    );
    // The λ-only baseline stands beside each proxy.
    assert!(
        a.proxy_quality
            .iter()
            .any(|q| q.target == "mixed" && q.proxy.starts_with("λ-only"))
    );
    let v = a.validation.as_ref().unwrap();
    assert_eq!(
        (v.recommended.len(), v.uniform.len(), v.best.len()),
        (2, 2, 2)
    );
    assert_eq!(v.uniform[0], study::analysis::objective(&o.true_loss[0], w));
    // Na et al.'s setting: 4 subsets of 2 units, seq models and four proxies scored.
    let x = o.subsets.as_ref().unwrap();
    assert_eq!((x.subsets.len(), x.k), (4, 2));
    assert_eq!(x.proxies.len(), 4);
    assert!(
        x.seq_loss
            .iter()
            .flatten()
            .all(|l| l.is_finite() && *l > 0.0)
    );
    assert_eq!(x.quality.len(), 5 * 5);

    let results = cfg.out_dir.join("results");
    for f in [
        "report.md",
        "mixtures.csv",
        "proxies.csv",
        "regression.md",
        "outcome.json",
        "proxies.svg",
        "noise.csv",
        "test.csv",
        "curves.csv",
        "subsets.csv",
        "subsets.svg",
        "curves.svg",
        "proxies.png",
        "subsets.png",
        "curves.png",
    ] {
        assert!(results.join(f).is_file(), "missing {f}");
    }
    // The report says "undefined" or "no spread" where a statistic has none (the mean
    // baseline's correlations, a learning-curve point with one subset) instead of NaN.
    let report = std::fs::read_to_string(results.join("report.md")).unwrap();
    assert!(!report.contains("NaN"), "{report}");
    let pool_entries = std::fs::read_dir(cfg.out_dir.join("pool")).unwrap().count();
    let units: usize = o.units_per_domain.iter().sum();
    // seed, units, experts, mixtures, replicates (2), subsets (4), the recommendation with 2
    // seeds, the best training mixture's second seed unless it is a replicated one (mixture
    // 0's second seed is a replicate).
    let best_extra = usize::from(!matches!(a.best_observed, 0 | 1));
    assert_eq!(pool_entries, 1 + units + 3 + 10 + 2 + 4 + 2 + best_extra);

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

    // Designs that cannot work, refused before any training.
    for (from, to, key) in [
        ("test = 3", "test = 8", "mixtures.test"),
        (
            "mixtures = [0, 1]",
            "mixtures = [0, 10]",
            "replicates.mixtures",
        ),
        ("seeds = 1", "seeds = 0", "replicates.seeds"),
        ("mixed = 2.0", "mixed = -2.0", "objective.weights.mixed"),
    ] {
        let text = config(dir.path()).replace(from, to);
        let e = StudyConfig::from_toml(&text, Path::new("bad.toml")).unwrap_err();
        assert!(e.to_string().contains(key), "{from} -> {to}: {e}");
    }

    // A corpus path that does not exist: an error naming it, and no output directory.
    let cfg = StudyConfig::from_toml(&config(dir.path()), Path::new("ok.toml")).unwrap();
    let e = study::run(&cfg).unwrap_err();
    assert!(e.to_string().contains("corpus"), "{e}");
    assert!(!cfg.out_dir.exists());
}

#[test]
fn designs_that_need_the_data_fail_before_any_training() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let bad_tasks = dir.path().join("bad-tasks");
    std::fs::create_dir_all(&bad_tasks).unwrap();
    std::fs::write(
        bad_tasks.join("qa.jsonl"),
        "{\"context\": \"alpha beta\", \"answer\": \" gamma\"}\n{\"context\": \"beta\"}\n",
    )
    .unwrap();
    for (from, to, expected) in [
        ("k = 2", "k = 500", "subsets.k = 500"),
        ("count = 4", "count = 4000", "subsets.count = 4000"),
        (
            "mixed = 2.0, task_next",
            "mixed = 2.0, nope",
            "objective.weights.nope",
        ),
        (
            "secondary = { task_next",
            "secondary = { gone",
            "objective.secondary.gone",
        ),
        (
            "task_sets = [\"",
            "task_sets = [\"BAD\", \"",
            "qa.jsonl line 2: no `answer`",
        ),
        (
            "vocab_size = 300",
            "vocab_size = 300\nseed_corpus = \"EVAL\"",
            "has the same content as eval set",
        ),
        (
            "vocab_size = 300",
            "vocab_size = 300\nseed_corpus = \"EVAL/none.jsonl\"",
            "none.jsonl",
        ),
    ] {
        let text = config(dir.path())
            .replace(from, to)
            .replace("BAD", &bad_tasks.display().to_string())
            .replace("EVAL", &dir.path().join("eval").display().to_string());
        let cfg = StudyConfig::from_toml(&text, Path::new("d.toml")).unwrap();
        let e = study::run(&cfg).unwrap_err().to_string();
        assert!(e.contains(expected), "{from} -> {to}: {e}");
        assert!(
            !cfg.out_dir.join("pool").exists(),
            "{from}: trained before failing"
        );
    }
}

/// `mixtures.init = "scratch"`: experts and mixture models start from a random
/// initialisation (their pool specs name no parent), λ decides all of their training, and
/// the expert merge (meaningless across basins) is left out of the subsets' proxies.
#[test]
fn mixtures_from_scratch_have_no_parent() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let text = config(dir.path())
        .replace("alpha = 0.5", "alpha = 0.5\ninit = \"scratch\"")
        .replace("count = 10\ntest = 3", "count = 8\ntest = 3")
        .replace("mixtures = [0, 1]", "mixtures = [0]")
        .replace("count = 4\nk = 2", "count = 3\nk = 2")
        .replace("validate_seeds = 2", "validate_seeds = 1");
    let cfg = StudyConfig::from_toml(&text, Path::new("scratch.toml")).unwrap();
    let o = study::run(&cfg).unwrap();
    assert_eq!(o.lambda_share, 1.0);
    let x = o.subsets.as_ref().unwrap();
    let names: Vec<&str> = x.proxies.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["micro", "macro", "mean-individual"]);
    let mut roles = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for e in std::fs::read_dir(cfg.out_dir.join("pool")).unwrap() {
        let spec = e.unwrap().path().join("spec.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(spec).unwrap()).unwrap();
        let r = roles
            .entry(v["role"].as_str().unwrap().to_string())
            .or_default();
        if v["from"].is_null() {
            r.0 += 1
        } else {
            r.1 += 1
        }
    }
    // (from scratch, from a parent) per role.
    assert_eq!(roles["seed"], (1, 0));
    assert_eq!(roles["expert"], (3, 0));
    assert!(
        roles["mixture"].0 >= 8 && roles["mixture"].1 == 0,
        "{roles:?}"
    );
    assert_eq!(roles["unit"].0, 0);
    assert_eq!(roles["subset"], (0, 3));
}

/// `data.seed_corpus`: the seed model trains on the uniform mixture of the seed corpus'
/// domains (its pool spec names that corpus, not the training one); everything else
/// continues from it as before, and nothing of the seed corpus is evaluated.
#[test]
fn a_separate_seed_corpus_trains_the_seed_only() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let seed_dir = dir.path().join("seed-corpus");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let mut general = String::new();
    for doc in 0..30 {
        let text: String = (0..150)
            .map(|i| ["the", "cat", "sat", "on", "a", "mat", "and", "slept"][(i * 7 + doc) % 8])
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            general,
            "{}",
            serde_json::json!({"id": doc, "text": text, "metadata": {"domain": "general"}})
        );
    }
    std::fs::write(seed_dir.join("general.jsonl"), general).unwrap();
    let text = config(dir.path())
        .replace(
            "vocab_size = 300",
            &format!("vocab_size = 300\nseed_corpus = \"{}\"", seed_dir.display()),
        )
        .replace("count = 10\ntest = 3", "count = 6\ntest = 0")
        .replace("mixtures = [0, 1]", "mixtures = []")
        .replace("count = 4\nk = 2", "count = 0\nk = 2")
        .replace("validate_seeds = 2", "validate = false");
    let cfg = StudyConfig::from_toml(&text, Path::new("seedcorpus.toml")).unwrap();
    let o = study::run(&cfg).unwrap();
    assert!(
        o.eval_domains.iter().all(|d| d != "general"),
        "{:?}",
        o.eval_domains
    );
    // Pool keys name data by content: the seed's streams are the seed corpus' domain, every
    // other model's are training domains or their units.
    let mut seeds = Vec::new();
    let mut continued = 0;
    for e in std::fs::read_dir(cfg.out_dir.join("pool")).unwrap() {
        let spec = e.unwrap().path().join("spec.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(spec).unwrap()).unwrap();
        let streams = v["data"]["streams"].as_array().unwrap().clone();
        assert!(!streams.is_empty(), "{v}");
        if v["role"] == "seed" {
            assert!(streams.iter().all(|s| s["name"] == "general"), "{v}");
            seeds.push(v);
        } else {
            assert!(streams.iter().all(|s| s["name"] != "general"), "{v}");
            continued += 1;
        }
    }
    assert_eq!(seeds.len(), 1);
    assert!(continued >= 6 + 3, "{continued} continued models");
    let report = std::fs::read_to_string(cfg.out_dir.join("results/report.md")).unwrap();
    assert!(report.contains("a separate seed corpus"), "{report}");
}

/// Na et al.'s cost argument: a finished study extended by one domain trains only the models
/// that sample it (its base units, its expert and the mixtures, whose λ gains an axis); the
/// seed (trained on a separate seed corpus), the other domains' unit models and experts
/// keep their pool keys. Needs a tokenizer that does not change with the corpus
/// (`data.tokenizer`): a retrained one would renumber every token.
#[test]
fn adding_a_domain_trains_only_the_models_that_sample_it() {
    use datamix::partition::{CorpusSource, DEFAULT_EOT, ReaderOptions, train_tokenizer};
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let corpus = dir.path().join("corpus");
    let mut prose = String::new();
    let words = [
        "river", "stone", "quiet", "north", "letter", "winter", "harbor", "lamp",
    ];
    for doc in 0..40 {
        let text: Vec<&str> = (0..120).map(|i| words[(i * 5 + doc * 3) % 8]).collect();
        let _ = writeln!(
            prose,
            "{}",
            serde_json::json!({"id": format!("prose-{doc}"), "text": text.join(" "), "metadata": {"domain": "prose"}})
        );
    }
    // The tokenizer is trained once on all four domains and then given to both studies.
    let all = dir.path().join("all");
    std::fs::create_dir_all(&all).unwrap();
    for f in ["greek", "digits", "code"] {
        std::fs::copy(
            corpus.join(format!("{f}.jsonl")),
            all.join(format!("{f}.jsonl")),
        )
        .unwrap();
    }
    std::fs::write(all.join("prose.jsonl"), &prose).unwrap();
    let sources = CorpusSource::discover(&all).unwrap();
    let tok = train_tokenizer(
        &sources,
        &ReaderOptions::default(),
        300,
        DEFAULT_EOT,
        u64::MAX,
    )
    .unwrap();
    let tok_path = dir.path().join("tokenizer.json");
    tok.save(&tok_path).unwrap();
    let seed_dir = dir.path().join("seed-corpus");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::copy(corpus.join("greek.jsonl"), seed_dir.join("general.jsonl")).unwrap();
    let text = config(dir.path())
        .replace(
            "vocab_size = 300",
            &format!(
                "tokenizer = \"{}\"\nseed_corpus = \"{}\"",
                tok_path.display(),
                seed_dir.display()
            ),
        )
        .replace("count = 10\ntest = 3", "count = 4\ntest = 0")
        .replace("mixtures = [0, 1]", "mixtures = []")
        .replace("count = 4\nk = 2", "count = 0\nk = 2")
        .replace("curve_repeats = 3", "curve_repeats = 0")
        .replace("validate_seeds = 2", "validate = false");
    let cfg = StudyConfig::from_toml(&text, Path::new("extend.toml")).unwrap();
    study::run(&cfg).unwrap();
    let pool = datamix::pool::Pool::open(cfg.out_dir.join("pool")).unwrap();
    let before: Vec<String> = pool
        .trainings()
        .unwrap()
        .iter()
        .map(|t| t.key.clone())
        .collect();
    let first = study::plan(&cfg).unwrap();

    std::fs::write(corpus.join("prose.jsonl"), &prose).unwrap();
    let second = study::plan(&cfg).unwrap();
    let old = |role: &str, name: &str| {
        first
            .jobs
            .iter()
            .find(|j| role_of(j) == role && j.name == name)
            .map(|j| j.key.clone())
    };
    let mut expect_new = Vec::new();
    for j in &second.jobs {
        let role = role_of(j);
        let samples_prose = j.name == "prose" || j.name.starts_with("prose/");
        match role.as_str() {
            "seed" => assert_eq!(
                Some(j.key.clone()),
                old("seed", &j.name),
                "the seed retrains"
            ),
            "unit" | "expert" if !samples_prose => assert_eq!(
                Some(j.key.clone()),
                old(&role, &j.name),
                "{role} {} changed its key",
                j.name
            ),
            "unit" | "expert" | "mixture" => {
                assert!(
                    before.iter().all(|k| k != j.key.as_str()),
                    "{} in the pool",
                    j.id
                );
                expect_new.push(j.key.as_str().to_string());
            }
            other => panic!("unexpected job role {other}"),
        }
    }
    assert!(
        second.jobs.iter().any(|j| j.name.starts_with("prose/")),
        "no base unit of the new domain"
    );
    study::run(&cfg).unwrap();
    let mut trained: Vec<String> = pool
        .trainings()
        .unwrap()
        .iter()
        .map(|t| t.key.clone())
        .filter(|k| !before.contains(k))
        .collect();
    trained.sort();
    expect_new.sort();
    assert_eq!(
        trained, expect_new,
        "trained exactly the models that sample the new domain"
    );
}

fn role_of(j: &datamix::study::graph::Job) -> String {
    serde_json::to_value(j.role)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// A pool written by the previous format (descriptions without `format`, keys naming the
/// whole corpus) or one that cannot be written: a typed error naming it, before any work.
#[test]
fn an_old_or_unwritable_pool_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let cfg = StudyConfig::from_toml(&config(dir.path()), Path::new("old.toml")).unwrap();
    let entry = cfg.out_dir.join("pool").join("ab".repeat(32));
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(
        entry.join("spec.json"),
        r#"{"role":"seed","name":"uniform","corpus":"00"}"#,
    )
    .unwrap();
    let e = study::run(&cfg).unwrap_err();
    assert!(matches!(e, datamix::Error::PoolFormat { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&"ab".repeat(32))
            && msg.contains("`1`")
            && msg.contains("datamix-model-spec-v2"),
        "{msg}"
    );
    assert!(
        !cfg.out_dir.join("corpus").exists(),
        "prepared data before refusing"
    );
    std::fs::remove_dir_all(cfg.out_dir.join("pool")).unwrap();
    std::fs::write(cfg.out_dir.join("pool"), b"not a directory").unwrap();
    let e = study::run(&cfg).unwrap_err();
    assert!(matches!(e, datamix::Error::PoolUnwritable { .. }), "{e}");
    assert!(e.to_string().contains("not writable"), "{e}");
}
