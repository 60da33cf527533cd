//! Bad input through the `datamix study` command, as a user meets it: every case must exit
//! with status 1, print one `error:` line naming the offending key or file, and leave no
//! output behind (config errors: no output directory at all; errors that need the data: no
//! model pool and no results, since nothing may train before the input is known good).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Two domains of distinct words (one JSONL file each), an out-of-domain set and a task set.
fn write_inputs(dir: &Path) {
    for sub in ["corpus", "eval", "tasks", "empty", "one/corpus"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let words = [
        ["alpha", "beta", "gamma", "delta"],
        ["one", "two", "three", "four"],
    ];
    for (d, name) in ["greek", "numbers"].iter().enumerate() {
        let mut f = String::new();
        for doc in 0..30 {
            // A different pseudo-random word sequence per document (distinct texts, so
            // the held-out split by text hash keeps some of each domain).
            let mut x = 0x9e37_79b9_u64.wrapping_mul(doc as u64 + 1);
            let text: Vec<&str> = (0..80)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    words[d][(x >> 33) as usize % 4]
                })
                .collect();
            let _ = writeln!(
                f,
                "{}",
                serde_json_line(&format!("{name}-{doc}"), &text.join(" "), name)
            );
        }
        std::fs::write(dir.join("corpus").join(format!("{name}.jsonl")), &f).unwrap();
        if d == 0 {
            std::fs::write(dir.join("one/corpus/greek.jsonl"), &f).unwrap();
        }
    }
    std::fs::write(
        dir.join("eval/mixed.jsonl"),
        serde_json_line("m", "alpha one beta two gamma three", "mixed") + "\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tasks/next.jsonl"),
        "{\"context\": \"alpha beta\", \"answer\": \" gamma\"}\n",
    )
    .unwrap();
}

fn serde_json_line(id: &str, text: &str, domain: &str) -> String {
    format!(
        "{{\"id\": \"{id}\", \"text\": \"{text}\", \"metadata\": {{\"domain\": \"{domain}\"}}}}"
    )
}

fn config(dir: &Path) -> String {
    format!(
        r#"out_dir = "{out}"
backend = "cpu"
seed = 0
[data]
corpus = "{d}/corpus"
eval_sets = ["{d}/eval"]
task_sets = ["{d}/tasks"]
vocab_size = 300
seq_len = 16
unit_tokens = 512
heldout_fraction = 0.2
eval_tokens = 256
[model]
preset = "tiny"
d_model = 32
[seed_model]
steps = 4
batch_size = 2
lr = 1e-3
warmup_steps = 1
[continued]
steps = 2
batch_size = 2
lr = 1e-3
warmup_steps = 1
[mixtures]
count = 7
test = 3
alpha = 1.0
[replicates]
mixtures = [0]
seeds = 1
[subsets]
count = 3
k = 2
[objective]
weights = {{ greek = 1, numbers = 1 }}
[analysis]
folds = 0
family = "auto"
[search]
min_weight = 0.0
validate = true
validate_seeds = 1
"#,
        out = dir.join("out").display(),
        d = dir.display()
    )
}

/// Runs `datamix study` on `text`; returns (exit code, stderr).
fn run(dir: &Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("case.toml");
    std::fs::write(&path, text).unwrap();
    run_path(&path)
}

fn run_path(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_datamix"))
        .args(["--log", "error", "study", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A clean failure: exit status 1, one `error:` line naming `expected`, no panic.
fn assert_user_error(what: &str, code: Option<i32>, err: &str, expected: &str) {
    assert_eq!(code, Some(1), "{what}: {err}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    assert!(
        err.contains(expected),
        "{what}: expected `{expected}` in: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
}

/// Config-level cases: `(what, from, to, expected in the message)`; `from` is replaced by
/// `to` in the good config.
const CONFIG_CASES: &[(&str, &str, &str, &str)] = &[
    ("unknown key", "seed = 0", "seed = 0\ncolour = 1", "colour"),
    (
        "missing section",
        "[model]\npreset = \"tiny\"\nd_model = 32\n",
        "",
        "model",
    ),
    (
        "empty out_dir",
        "out_dir = \"",
        "out_dir = \"\"\n#",
        "out_dir",
    ),
    (
        "not a number",
        "seq_len = 16",
        "seq_len = \"sixteen\"",
        "seq_len",
    ),
    (
        "seq_len too small",
        "seq_len = 16",
        "seq_len = 1",
        "data.seq_len",
    ),
    (
        "unit below seq_len",
        "unit_tokens = 512",
        "unit_tokens = 8",
        "data.unit_tokens",
    ),
    (
        "heldout 0",
        "heldout_fraction = 0.2",
        "heldout_fraction = 0.0",
        "data.heldout_fraction",
    ),
    (
        "heldout > 1",
        "heldout_fraction = 0.2",
        "heldout_fraction = 1.5",
        "data.heldout_fraction",
    ),
    (
        "eval_tokens 1",
        "eval_tokens = 256",
        "eval_tokens = 1",
        "data.eval_tokens",
    ),
    (
        "vocab too small",
        "vocab_size = 300",
        "vocab_size = 100",
        "data.vocab_size",
    ),
    (
        "vocab huge",
        "vocab_size = 300",
        "vocab_size = 1000000000",
        "data.vocab_size",
    ),
    ("zero steps", "steps = 4", "steps = 0", "seed_model.steps"),
    (
        "negative lr",
        "lr = 1e-3\nwarmup_steps = 1\n[mixtures]",
        "lr = -1.0\nwarmup_steps = 1\n[mixtures]",
        "continued.lr",
    ),
    (
        "nan lr",
        "lr = 1e-3\nwarmup_steps = 1\n[continued]",
        "lr = nan\nwarmup_steps = 1\n[continued]",
        "seed_model.lr",
    ),
    (
        "warmup > steps",
        "steps = 4\nbatch_size = 2\nlr = 1e-3\nwarmup_steps = 1",
        "steps = 4\nbatch_size = 2\nlr = 1e-3\nwarmup_steps = 9",
        "seed_model.warmup_steps",
    ),
    (
        "steps overflow",
        "steps = 4",
        "steps = 18446744073709551615",
        "seed_model",
    ),
    (
        "batch overflow",
        "steps = 2\nbatch_size = 2",
        "steps = 2\nbatch_size = 1152921504606846976",
        "continued",
    ),
    (
        "min_lr_ratio > 1",
        "steps = 2\nbatch_size = 2",
        "steps = 2\nmin_lr_ratio = 2.0\nbatch_size = 2",
        "continued.min_lr_ratio",
    ),
    ("one mixture", "count = 7", "count = 1", "mixtures.count"),
    (
        "too many mixtures",
        "count = 7",
        "count = 100000000000",
        "mixtures.count",
    ),
    ("alpha 0", "alpha = 1.0", "alpha = 0.0", "mixtures.alpha"),
    ("test >= count", "test = 3", "test = 7", "mixtures.test"),
    ("one test mixture", "test = 3", "test = 1", "mixtures.test"),
    (
        "unknown init",
        "alpha = 1.0",
        "alpha = 1.0\ninit = \"warm\"",
        "init",
    ),
    (
        "replicate of nothing",
        "mixtures = [0]",
        "mixtures = [7]",
        "replicates.mixtures",
    ),
    (
        "replicates without seeds",
        "seeds = 1",
        "seeds = 0",
        "replicates.seeds",
    ),
    (
        "negative weight",
        "greek = 1, numbers = 1",
        "greek = -1, numbers = 1",
        "objective.weights.greek",
    ),
    (
        "weights sum 0",
        "greek = 1, numbers = 1",
        "greek = 0, numbers = 0",
        "objective.weights",
    ),
    ("one fold", "folds = 0", "folds = 1", "analysis.folds"),
    (
        "two subsets",
        "count = 3\nk = 2",
        "count = 2\nk = 2",
        "subsets.count",
    ),
    (
        "unknown family",
        "family = \"auto\"",
        "family = \"svm\"",
        "analysis.family",
    ),
    (
        "min_weight 1.5",
        "min_weight = 0.0",
        "min_weight = 1.5",
        "search.min_weight",
    ),
    (
        "max_epochs 0",
        "min_weight = 0.0",
        "min_weight = 0.0\nmax_epochs = 0.0",
        "search.max_epochs",
    ),
    (
        "no validation seeds",
        "validate_seeds = 1",
        "validate_seeds = 0",
        "search.validate_seeds",
    ),
    (
        "unknown preset",
        "preset = \"tiny\"",
        "preset = \"huge\"",
        "huge",
    ),
    (
        "heads do not divide",
        "d_model = 32",
        "d_model = 32\nn_heads = 3",
        "n_heads",
    ),
    (
        "unknown backend",
        "backend = \"cpu\"",
        "backend = \"abacus\"",
        "abacus",
    ),
    (
        "backend not compiled",
        "backend = \"cpu\"",
        "backend = \"cuda\"",
        "cuda",
    ),
    ("not TOML", "[data]", "[data", "case.toml"),
];

/// Cases that need the data: `(what, from, to, expected)`.
const DATA_CASES: &[(&str, &str, &str, &str)] = &[
    ("corpus missing", "/corpus\"", "/nowhere\"", "nowhere"),
    ("corpus folder empty", "/corpus\"", "/empty\"", "empty"),
    ("one domain", "/corpus\"", "/one/corpus\"", "2"),
    ("eval set missing", "/eval\"", "/no-eval\"", "no-eval"),
    (
        "tokenizer missing",
        "vocab_size = 300",
        "vocab_size = 300\ntokenizer = \"/no/tokenizer.json\"",
        "tokenizer.json",
    ),
    ("task set missing", "/tasks\"", "/no-tasks\"", "no-tasks"),
    (
        "unknown objective domain",
        "greek = 1, numbers = 1",
        "greek = 1, latin = 1",
        "objective.weights.latin",
    ),
    ("subset larger than units", "k = 2", "k = 50", "subsets.k"),
    (
        "seed corpus missing",
        "vocab_size = 300",
        "vocab_size = 300\nseed_corpus = \"/no/seed-corpus\"",
        "seed-corpus",
    ),
    (
        "seed corpus folder empty",
        "vocab_size = 300",
        "vocab_size = 300\nseed_corpus = \"EMPTY\"",
        "data.seed_corpus",
    ),
    (
        "infeasible min_weight",
        "min_weight = 0.0",
        "min_weight = 0.6",
        "search.min_weight",
    ),
];

/// The good config itself runs to the end (so every failure below is the change's doing).
#[test]
fn the_good_config_runs() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let (code, err) = run(dir.path(), &config(dir.path()));
    assert_eq!(code, Some(0), "{err}");
    assert!(dir.path().join("out/results/report.md").is_file());
}

#[test]
fn config_errors_exit_1_name_the_key_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let good = config(dir.path());
    for (what, from, to, expected) in CONFIG_CASES {
        assert!(good.contains(from), "{what}: `{from}` not in the config");
        let (code, err) = run(dir.path(), &good.replacen(from, to, 1));
        assert_user_error(what, code, &err, expected);
        assert!(!dir.path().join("out").exists(), "{what}: output written");
    }
    let (code, err) = run_path(&dir.path().join("absent.toml"));
    assert_eq!(code, Some(1));
    assert!(err.contains("absent.toml"), "{err}");
}

#[test]
fn data_errors_exit_1_name_the_file_or_key_and_train_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    std::fs::write(dir.path().join("empty/.keep"), "").unwrap();
    let good = config(dir.path());
    let out: PathBuf = dir.path().join("out");
    for (what, from, to, expected) in DATA_CASES {
        assert!(good.contains(from), "{what}: `{from}` not in the config");
        let to = to.replace("EMPTY", &dir.path().join("empty").display().to_string());
        let (code, err) = run(dir.path(), &good.replacen(from, &to, 1));
        assert_user_error(what, code, &err, expected);
        assert!(!out.join("pool").exists(), "{what}: a model was trained");
        assert!(!out.join("results").exists(), "{what}: results written");
    }
    // Bad files inside an otherwise good corpus.
    let bad_cases: [(&str, &str, &[u8], &str); 3] = [
        (
            "task without answer",
            "tasks/next.jsonl",
            b"{\"context\": \"alpha\"}\n",
            "no `answer`",
        ),
        (
            "task not JSON",
            "tasks/next.jsonl",
            b"alpha beta\n",
            "not a JSON item",
        ),
        ("eval set empty", "eval/mixed.jsonl", b"", "mixed.jsonl"),
    ];
    for (what, file, bytes, expected) in bad_cases {
        let path = dir.path().join(file);
        let keep = std::fs::read(&path).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let (code, err) = run(dir.path(), &good);
        std::fs::write(&path, keep).unwrap();
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected `{expected}` in: {err}"
        );
        assert!(!out.join("pool").exists(), "{what}: a model was trained");
    }
}
