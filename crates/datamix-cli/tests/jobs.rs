//! The study as a job graph through the `datamix` command: `plan` → `run-job` for every job
//! → `finish` gives the numbers of one `datamix study`; concurrent workers on one pool
//! train every model exactly once and give the serial numbers; bad job-graph input is
//! refused before any training.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Three domains of distinct words (one JSONL file each) and an out-of-domain set.
fn write_inputs(dir: &Path) {
    for sub in ["corpus", "eval"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let words: [&[&str]; 3] = [
        &["alpha", "beta", "gamma", "delta", "omega"],
        &["one", "two", "three", "four", "five", "six"],
        &["fn", "let", "mut", "impl", "match"],
    ];
    let mut x = 0x9e37_79b9_u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    for (d, name) in ["greek", "numbers", "code"].iter().enumerate() {
        let mut f = String::new();
        for doc in 0..30 {
            let text: Vec<&str> = (0..80).map(|_| words[d][next() % words[d].len()]).collect();
            let _ = writeln!(
                f,
                "{{\"id\": \"{name}-{doc}\", \"text\": \"{}\", \"metadata\": {{\"domain\": \"{name}\"}}}}",
                text.join(" ")
            );
        }
        std::fs::write(dir.join("corpus").join(format!("{name}.jsonl")), &f).unwrap();
    }
    let mixed: Vec<&str> = (0..60).map(|i| words[i % 3][next() % 5]).collect();
    std::fs::write(
        dir.join("eval/mixed.jsonl"),
        format!("{{\"id\": \"m\", \"text\": \"{}\"}}\n", mixed.join(" ")),
    )
    .unwrap();
}

/// A tiny study with every kind of job: seed, units, experts, mixtures, a replicate,
/// subsets, and validation runs (trained by `finish`).
fn config(dir: &Path, out: &str) -> PathBuf {
    let text = format!(
        r#"out_dir = "{d}/{out}"
backend = "cpu"
seed = 0
[data]
corpus = "{d}/corpus"
eval_sets = ["{d}/eval"]
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
lr = 3e-3
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
[analysis]
folds = 0
family = "ridge"
[search]
min_weight = 0.0
validate = true
validate_seeds = 1
"#,
        d = dir.display()
    );
    let path = dir.join(format!("{out}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn datamix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_datamix"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs `datamix args…`, asserting success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = datamix(args);
    assert!(
        out.status.success(),
        "datamix {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `datamix args…`, asserting exit status 1; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = datamix(args);
    assert_eq!(out.status.code(), Some(1), "datamix {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// `results/outcome.json` without its wall-clock timings (`seconds` fields).
fn outcome(out_dir: &Path) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("seconds");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let p = out_dir.join("results/outcome.json");
    let mut v = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    strip(&mut v);
    v
}

/// The first place where two JSON values differ (`None`: equal).
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value::{Array, Object};
    match (a, b) {
        (Object(x), Object(y)) => {
            if x.len() != y.len() {
                return Some(format!("{at}: keys differ"));
            }
            x.iter().find_map(|(k, v)| match y.get(k) {
                Some(w) => first_difference(v, w, &format!("{at}.{k}")),
                None => Some(format!("{at}.{k}: missing")),
            })
        }
        (Array(x), Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

fn assert_same_outcome(out_dir: &Path, expected: &serde_json::Value, what: &str) {
    let got = outcome(out_dir);
    if let Some(d) = first_difference(&got, expected, "outcome") {
        panic!("{what}: numbers differ from the one-command study at {d}");
    }
}

/// BLAKE3-free comparison of the pool: every entry's files, byte for byte.
fn pool_files(out_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let pool = out_dir.join("pool");
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(&pool).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "stray pool file {name}");
        for f in std::fs::read_dir(e.path()).unwrap() {
            let f = f.unwrap();
            files.insert(
                format!("{name}/{}", f.file_name().to_string_lossy()),
                std::fs::read(f.path()).unwrap(),
            );
        }
    }
    files
}

/// Training records per pool key (`<out>/pool.jobs/trainings/<key>-…json`).
fn trainings(out_dir: &Path) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for e in std::fs::read_dir(out_dir.join("pool.jobs/trainings")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "stray training-record file {name}");
        *n.entry(name[..64].to_string()).or_insert(0) += 1;
    }
    n
}

/// The pids that trained the models `keys` (from the training records; `finish` trains
/// the validation runs, which are not jobs).
fn trainer_pids(out_dir: &Path, keys: &[String]) -> std::collections::BTreeSet<u64> {
    std::fs::read_dir(out_dir.join("pool.jobs/trainings"))
        .unwrap()
        .filter_map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            keys.iter()
                .any(|k| v["key"] == k.as_str())
                .then(|| v["pid"].as_u64().unwrap())
        })
        .collect()
}

fn plan(config: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&[
        "study",
        "plan",
        "--config",
        config.to_str().unwrap(),
    ]))
    .unwrap()
}

fn job_ids(plan: &serde_json::Value) -> Vec<String> {
    plan["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn plan_run_jobs_finish_gives_the_one_command_study() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let serial = config(dir.path(), "serial");
    ok(&["study", "--config", serial.to_str().unwrap()]);
    let expected = outcome(&dir.path().join("serial"));

    let graph = config(dir.path(), "graph");
    let g = graph.to_str().unwrap();
    let p = plan(&graph);
    let ids = job_ids(&p);
    let jobs = p["jobs"].as_array().unwrap();
    // Every role of the config, the seed first, every other job depending on it.
    let roles: Vec<&str> = jobs.iter().map(|j| j["role"].as_str().unwrap()).collect();
    for r in ["seed", "unit", "expert", "mixture", "replicate", "subset"] {
        assert!(roles.contains(&r), "no {r} job: {roles:?}");
    }
    assert_eq!(roles.iter().filter(|r| **r == "mixture").count(), 7);
    assert_eq!(roles.iter().filter(|r| **r == "subset").count(), 3);
    assert_eq!(ids[0], "seed");
    assert!(
        jobs[1..]
            .iter()
            .all(|j| j["deps"] == serde_json::json!(["seed"]))
    );
    assert!(jobs.iter().all(|j| j["tokens"].as_u64().unwrap() > 0));
    assert_eq!(
        p["tokens"].as_u64().unwrap(),
        jobs.iter()
            .map(|j| j["tokens"].as_u64().unwrap())
            .sum::<u64>()
    );
    // The same config elsewhere trains the same models: same plan id and keys.
    let serial_plan = plan(&serial);
    assert_eq!(serial_plan["id"], p["id"]);

    // Bad input, before any training: an unknown id, a job before its dependency,
    // finish before the jobs, a plan id from another config.
    let e = fails(&["study", "run-job", "--config", g, "--job", "nope"]);
    assert!(e.contains("no job `nope`") && e.contains("seed"), "{e}");
    let e = fails(&["study", "run-job", "--config", g, "--job", &ids[1]]);
    assert!(e.contains("not in the pool") && e.contains("seed"), "{e}");
    let e = fails(&["study", "finish", "--config", g]);
    assert!(
        e.contains(&format!("{} job(s) not in the pool", ids.len())),
        "{e}"
    );
    let e = fails(&[
        "study",
        "run-job",
        "--config",
        g,
        "--job",
        "seed",
        "--expect-plan",
        "0123",
    ]);
    assert!(e.contains("plan mismatch"), "{e}");
    assert!(
        !dir.path().join("graph/pool.jobs/trainings").exists(),
        "nothing trained by bad input"
    );

    for id in &ids {
        let out = ok(&["study", "run-job", "--config", g, "--job", id]);
        assert_eq!(out.trim(), format!("{id}: trained"));
    }
    let again = ok(&["study", "run-job", "--config", g, "--job", "seed"]);
    assert_eq!(again.trim(), "seed: already in the pool");
    let e = fails(&["study", "finish", "--config", g, "--expect-plan", "ff"]);
    assert!(e.contains("plan mismatch"), "{e}");
    ok(&[
        "study",
        "finish",
        "--config",
        g,
        "--expect-plan",
        p["id"].as_str().unwrap(),
    ]);
    assert_same_outcome(&dir.path().join("graph"), &expected, "plan/run-job/finish");
    assert_eq!(
        pool_files(&dir.path().join("graph")),
        pool_files(&dir.path().join("serial")),
        "the pools are byte-identical"
    );
    // Each job trained once, by run-job; finish trained only validation runs.
    let t = trainings(&dir.path().join("graph"));
    assert!(t.values().all(|n| *n == 1), "{t:?}");
    for j in jobs {
        assert_eq!(t.get(j["key"].as_str().unwrap()), Some(&1), "{}", j["id"]);
    }
    // Cost accounting: the jobs' tokens are the plan's, the validation runs are what
    // finish trained, and the naive cost trains every candidate the search scored.
    let cost = &outcome(&dir.path().join("graph"))["cost"];
    let n = |k: &str| cost[k].as_u64().unwrap();
    assert_eq!(n("job_models"), ids.len() as u64);
    assert_eq!(n("job_tokens"), p["tokens"].as_u64().unwrap());
    assert_eq!(n("validation_models"), (t.len() - ids.len()) as u64);
    assert_eq!(n("study_tokens"), n("job_tokens") + n("validation_tokens"));
    let tokens_of = |role: &str| {
        jobs.iter().find(|j| j["role"] == role).unwrap()["tokens"]
            .as_u64()
            .unwrap()
    };
    let (seed, continued) = (tokens_of("seed"), tokens_of("mixture"));
    assert_eq!(n("tokens_per_candidate"), continued);
    assert_eq!(n("validation_tokens"), n("validation_models") * continued);
    assert!(n("candidates_scored") > 0);
    assert_eq!(n("naive_tokens"), seed + n("candidates_scored") * continued);
    let report = std::fs::read_to_string(dir.path().join("graph/results/report.md")).unwrap();
    assert!(
        report.contains(&format!("would take {} tokens", n("naive_tokens"))),
        "{report}"
    );
}

/// Starts `n` workers on `config` at once (a fresh out_dir: they also race to prepare the
/// data), waits, then finishes.
fn run_workers(config: &Path, n: usize) {
    let c = config.to_str().unwrap();
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_datamix"))
                .args(["study", "worker", "--config", c, "--poll-ms", "50"])
                .env("RUST_LOG", "warn")
                .env("RAYON_NUM_THREADS", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ok(&["study", "finish", "--config", c]);
}

#[test]
fn concurrent_workers_train_every_model_once_with_the_serial_numbers() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let serial = config(dir.path(), "serial");
    ok(&["study", "--config", serial.to_str().unwrap()]);
    let expected = outcome(&dir.path().join("serial"));
    let keys: Vec<String> = plan(&serial)["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["key"].as_str().unwrap().to_string())
        .collect();

    // Hand-started workers (2 and 4), and `study --workers 2`.
    for (name, n) in [("w2", 2), ("w4", 4), ("flag", 0)] {
        let cfg = config(dir.path(), name);
        if n > 0 {
            run_workers(&cfg, n);
        } else {
            ok(&["study", "--config", cfg.to_str().unwrap(), "--workers", "2"]);
        }
        let out = dir.path().join(name);
        assert_same_outcome(&out, &expected, name);
        assert_eq!(
            pool_files(&out),
            pool_files(&dir.path().join("serial")),
            "{name}: pool differs from serial"
        );
        let t = trainings(&out);
        assert!(
            t.values().all(|c| *c == 1),
            "{name}: a model trained twice: {t:?}"
        );
        for k in &keys {
            assert_eq!(t.get(k), Some(&1), "{name}: job {k} not trained once");
        }
        if n == 4 {
            let pids = trainer_pids(&out, &keys);
            assert!(
                pids.len() >= 2,
                "{name}: one worker trained everything: {pids:?}"
            );
        }
    }
}

#[test]
fn emitted_slurm_and_k8s_files_run_every_job_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let cfg = config(dir.path(), "emit");
    let c = cfg.to_str().unwrap();
    let p = plan(&cfg);
    let id = p["id"].as_str().unwrap();
    let ids = job_ids(&p);
    let slurm = dir.path().join("slurm");
    ok(&[
        "study",
        "emit",
        "slurm",
        "--config",
        c,
        "--out",
        slurm.to_str().unwrap(),
        "--partition",
        "gpu",
        "--gpus-per-task",
        "1",
        "--time",
        "01:00:00",
        "--array-throttle",
        "3",
    ]);
    let read = |f: &str| std::fs::read_to_string(slurm.join(f)).unwrap();
    // The array runs every job but the seed, line i+1 for task i.
    let listed: Vec<String> = read("jobs.txt").lines().map(String::from).collect();
    assert_eq!(listed, ids[1..]);
    let array = read("array.sbatch");
    assert!(
        array.contains(&format!("#SBATCH --array=0-{}%3\n", ids.len() - 2)),
        "{array}"
    );
    for f in ["seed.sbatch", "array.sbatch", "finish.sbatch"] {
        let s = read(f);
        for line in [
            "#SBATCH --partition=gpu",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --time=01:00:00",
        ] {
            assert!(s.contains(line), "{f}: no {line}");
        }
        assert!(s.contains(&format!("--expect-plan {id}")), "{f}");
        // Every #SBATCH directive precedes the first command.
        let first_cmd = s
            .lines()
            .position(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        assert!(
            s.lines().skip(first_cmd).all(|l| !l.starts_with("#SBATCH")),
            "{f}"
        );
    }
    assert!(read("seed.sbatch").contains("run-job") && read("seed.sbatch").contains("--job seed"));
    assert!(read("finish.sbatch").contains(" study finish --config "));
    let submit = read("submit.sh");
    assert!(submit.contains("--dependency=afterok:$seed array.sbatch"));
    assert!(submit.contains("--dependency=afterok:$array finish.sbatch"));
    for f in ["seed.sbatch", "array.sbatch", "finish.sbatch", "submit.sh"] {
        let st = Command::new("bash")
            .args(["-n", slurm.join(f).to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success(), "{f}: shell syntax");
    }

    // Run the array task script as SLURM would, task by task, with `sbatch` replaced by
    // plain bash: the seed, every array index, then finish.
    let run = |script: &str, task: Option<usize>| {
        let mut cmd = Command::new("bash");
        cmd.arg(slurm.join(script)).env("RUST_LOG", "warn");
        if let Some(t) = task {
            cmd.env("SLURM_ARRAY_TASK_ID", t.to_string());
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{script} {task:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("seed.sbatch", None);
    for t in 0..listed.len() {
        run("array.sbatch", Some(t));
    }
    run("finish.sbatch", None);
    let t = trainings(&dir.path().join("emit"));
    for j in p["jobs"].as_array().unwrap() {
        assert_eq!(t.get(j["key"].as_str().unwrap()), Some(&1), "{}", j["id"]);
    }
    assert!(dir.path().join("emit/results/outcome.json").is_file());

    // Kubernetes: an Indexed Job over the same list, the pool on the claim.
    let k8s = dir.path().join("k8s");
    ok(&[
        "study",
        "emit",
        "k8s",
        "--config",
        c,
        "--out",
        k8s.to_str().unwrap(),
        "--gpus",
        "1",
    ]);
    let read = |f: &str| std::fs::read_to_string(k8s.join(f)).unwrap();
    let jobs = read("jobs.yaml");
    for want in [
        "completionMode: Indexed".to_string(),
        format!("completions: {}", ids.len() - 1),
        "claimName: \"datamix-pool\"".to_string(),
        "nvidia.com/gpu: 1".to_string(),
        "JOB_COMPLETION_INDEX".to_string(),
        format!("--expect-plan {id}"),
    ] {
        assert!(jobs.contains(&want), "jobs.yaml: no {want}\n{jobs}");
    }
    let cm = read("configmap.yaml");
    assert!(cm.contains(&serde_json::to_string(&(ids[1..].join("\n") + "\n")).unwrap()));
    assert!(read("finish-job.yaml").contains("study finish"));
    assert!(read("seed-job.yaml").contains("--job seed"));
    let apply = read("apply.sh");
    let order: Vec<usize> = ["seed-job.yaml", "jobs.yaml", "finish-job.yaml"]
        .iter()
        .map(|f| apply.find(f).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{apply}");
}

#[test]
fn emit_refuses_a_bad_kubernetes_name() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let cfg = config(dir.path(), "k");
    let e = fails(&[
        "study",
        "emit",
        "k8s",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "Bad_Name",
    ]);
    assert!(e.contains("--name") && e.contains("Bad_Name"), "{e}");
}

#[test]
fn a_killed_job_resumes_from_its_checkpoint_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    // A longer seed model; the killed run checkpoints every 4 steps, the whole one never.
    let with = |name: &str, every: u64| {
        let path = config(dir.path(), name);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "[seed_model]\nsteps = 4\n",
            &format!("[seed_model]\nsteps = 80\ncheckpoint_every = {every}\n"),
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let whole = with("whole", 0);
    let killed = with("killed", 4);
    ok(&[
        "study",
        "run-job",
        "--config",
        whole.to_str().unwrap(),
        "--job",
        "seed",
    ]);
    let p = plan(&killed);
    let key = p["jobs"][0]["key"].as_str().unwrap().to_string();
    assert_eq!(plan(&whole)["jobs"][0]["key"], p["jobs"][0]["key"]);

    let out = dir.path().join("killed");
    let ckpt = out
        .join("pool.jobs/scratch")
        .join(&key)
        .join("ckpt/job.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_datamix"))
        .args([
            "study",
            "run-job",
            "--config",
            killed.to_str().unwrap(),
            "--job",
            "seed",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !ckpt.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before a checkpoint"
        );
        assert!(t0.elapsed().as_secs() < 120, "no checkpoint written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out.join("pool").join(&key).exists(),
        "the training finished before the kill: nothing was resumed"
    );

    let res = Command::new(env!("CARGO_BIN_EXE_datamix"))
        .args(["--log", "info", "study", "run-job", "--config"])
        .arg(&killed)
        .args(["--job", "seed"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{log}");
    assert!(log.contains("resuming from a checkpoint"), "{log}");
    // Weights, optimizer moments, trainer state, spec and integrity record: every byte.
    let (a, b) = (pool_files(&dir.path().join("whole")), pool_files(&out));
    assert!(a.keys().any(|k| k.ends_with("model.safetensors")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{name} differs from the uninterrupted run"
        );
    }
    assert!(
        !out.join("pool.jobs/scratch").join(&key).exists(),
        "the scratch checkpoint is removed once the entry is in the pool"
    );
}

/// SIGKILLs a process group.
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
}

/// Issue 19's reliability target: a study SIGKILLed at a random point (the whole process
/// group: a one-command study, `--workers 2` with its worker processes, or two hand-started
/// workers followed by `finish`), then rerun with `datamix study`, completes with the numbers
/// and the pool bytes of an uninterrupted run, no finished model trained twice (one training
/// record per key at most) and no stray file in the pool. 20 runs; about 40 s on 2 cores (plus
/// the build), kept out of the default run as it kills processes: `scripts/test-kill.sh` (or
/// `cargo test -p datamix-cli --test jobs -- --ignored`) runs it.
#[test]
#[ignore = "kills processes for about 40 s: scripts/test-kill.sh"]
fn sigkill_at_random_points_then_rerun_twenty_times() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let reference = config(dir.path(), "reference");
    let t0 = std::time::Instant::now();
    ok(&["study", "--config", reference.to_str().unwrap()]);
    let full = t0.elapsed().as_secs_f64();
    let expected = outcome(&dir.path().join("reference"));
    let expected_pool = pool_files(&dir.path().join("reference"));
    let bin = env!("CARGO_BIN_EXE_datamix");
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut killed_while_running = 0;
    for run in 0..20 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // A point anywhere in the first 90% of an uninterrupted study.
        let at = full * 0.9 * (rng % 1000) as f64 / 1000.0;
        let name = format!("killed{run}");
        let cfg = config(dir.path(), &name);
        let c = cfg.to_str().unwrap();
        let script = match run % 3 {
            0 => format!("exec {bin} study --config {c}"),
            1 => format!("exec {bin} study --config {c} --workers 2"),
            _ => format!(
                "{bin} study worker --config {c} --poll-ms 50 & {bin} study worker --config {c} \
                 --poll-ms 50 & wait; exec {bin} study finish --config {c}"
            ),
        };
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_secs_f64(at));
        if child.try_wait().unwrap().is_none() {
            killed_while_running += 1;
        }
        kill_group(child.id());
        let _ = child.wait();
        ok(&["study", "--config", c]);
        let out = dir.path().join(&name);
        assert_same_outcome(&out, &expected, &format!("run {run} (killed at {at:.2} s)"));
        assert_eq!(
            pool_files(&out),
            expected_pool,
            "run {run}: pool differs from the uninterrupted run's"
        );
        let twice: Vec<_> = trainings(&out)
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .collect();
        assert!(twice.is_empty(), "run {run}: trained twice: {twice:?}");
        std::fs::remove_dir_all(&out).unwrap();
    }
    assert!(
        killed_while_running >= 15,
        "only {killed_while_running} of 20 kills hit a running study"
    );
}
