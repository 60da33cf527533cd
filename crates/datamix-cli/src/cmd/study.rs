//! `datamix study`: one command for the whole study, or its job graph piece by piece
//! (`plan`, `run-job`, `worker`, `finish`) and as SLURM / Kubernetes files (`emit`).

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use clap::{Args, Subcommand};
use datamix::decoder::BackendKind;
use datamix::study::{self, StudyConfig, emit};
use datamix::{Error, Result};

/// Run a study described by a TOML config (see configs/study-small.toml).
///
/// Outputs go to the config's `out_dir`: the trained tokenizer, the packed corpus,
/// the model pool (content-addressed: rerunning trains only what is new), MDE tables,
/// and results/ (report.md, mixtures.csv, proxies.csv, regression.md, outcome.json,
/// proxies.svg).
///
/// The subcommands run the same study as a job graph (docs/scale-out.md): `plan` lists
/// the training jobs, `run-job` trains one, `worker` trains whatever is ready, `finish`
/// scores and reports once every job is in the pool, `emit` writes SLURM or Kubernetes
/// files that do all that on a cluster.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct StudyCmd {
    #[command(flatten)]
    target: Target,
    /// Train with this many worker processes on this machine (1: in this process), then
    /// finish here. Each worker gets `--threads` compute threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: u32,
    /// Compute threads per worker (default: the CPUs divided among the workers; an
    /// explicit RAYON_NUM_THREADS wins).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    threads: Option<u32>,
    #[command(subcommand)]
    action: Option<Action>,
}

/// The study a command acts on.
#[derive(Args, Debug, Clone)]
struct Target {
    /// The study config.
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,
    /// Override the config's backend (one of the compiled-in: see `datamix backends`).
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Override the config's output directory (where the pool is).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// The study a job-graph command acts on (the config is required).
#[derive(Args, Debug, Clone)]
struct JobTarget {
    /// The study config.
    #[arg(long, short)]
    config: PathBuf,
    /// Override the config's backend.
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Override the config's output directory (where the pool is).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Refuse to work unless the config's plan id is this one (emitted scripts pass it, so
    /// a changed config is caught before any training).
    #[arg(long)]
    expect_plan: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Write the study's training jobs (id, role, name, pool key, dependencies, tokens)
    /// as JSON. Prepares the data (tokenizer, packed corpus); trains nothing.
    Plan {
        #[command(flatten)]
        target: JobTarget,
        /// Write the plan here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Train one job of the plan (a no-op if its model is in the pool).
    RunJob {
        #[command(flatten)]
        target: JobTarget,
        /// The job id (see `datamix study plan`).
        #[arg(long)]
        job: String,
    },
    /// Train jobs whose dependencies are done and that no other process is training,
    /// until every job is in the pool. Start any number, on any nodes sharing the pool.
    Worker {
        #[command(flatten)]
        target: JobTarget,
        /// Milliseconds an idle worker waits before looking again.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
    },
    /// Score, analyse, validate and report once every job is in the pool (else list the
    /// missing jobs and stop).
    Finish {
        #[command(flatten)]
        target: JobTarget,
    },
    /// Write SLURM scripts or Kubernetes manifests that run the study's jobs.
    Emit {
        #[command(subcommand)]
        engine: Engine,
    },
}

#[derive(Subcommand, Debug)]
enum Engine {
    /// sbatch scripts: the seed job, a job array over the other jobs
    /// (`--dependency=afterok` on the seed), and finish (afterok on the array);
    /// `submit.sh` submits them chained.
    Slurm {
        #[command(flatten)]
        target: JobTarget,
        #[command(flatten)]
        emit: EmitArgs,
        /// `#SBATCH --partition`.
        #[arg(long)]
        partition: Option<String>,
        /// `#SBATCH --gpus-per-task`.
        #[arg(long)]
        gpus_per_task: Option<u32>,
        /// `#SBATCH --cpus-per-task`.
        #[arg(long)]
        cpus_per_task: Option<u32>,
        /// `#SBATCH --time` (e.g. 02:00:00).
        #[arg(long)]
        time: Option<String>,
        /// At most this many array tasks at once (`--array=0-N%K`).
        #[arg(long)]
        array_throttle: Option<u32>,
    },
    /// Kubernetes manifests: a ConfigMap (config + job list), the seed Job, an Indexed Job
    /// (completion index → job id) and the finish Job, the pool on a shared
    /// PersistentVolumeClaim; `apply.sh` applies them in order.
    K8s {
        #[command(flatten)]
        target: JobTarget,
        #[command(flatten)]
        emit: EmitArgs,
        /// Prefix of the objects' names.
        #[arg(long, default_value = "datamix-study")]
        name: String,
        /// Container image with `datamix` in it.
        #[arg(long, default_value = "datamix:latest")]
        image: String,
        /// ReadWriteMany PersistentVolumeClaim holding the data and the pool.
        #[arg(long, default_value = "datamix-pool")]
        pvc: String,
        /// Where the claim is mounted (the pods' working directory: relative paths in the
        /// config and `--out-dir` resolve from it).
        #[arg(long, default_value = "/work")]
        mount: String,
        /// Training pods at once.
        #[arg(long, default_value_t = 4)]
        parallelism: u32,
        /// `nvidia.com/gpu` per pod.
        #[arg(long)]
        gpus: Option<u32>,
    },
}

#[derive(Args, Debug, Clone)]
struct EmitArgs {
    /// Write the files into this directory (else print them).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `datamix` command the jobs run (default: this binary's absolute path for SLURM,
    /// `datamix` for Kubernetes).
    #[arg(long)]
    datamix: Option<String>,
}

fn load(
    config: &Path,
    backend: Option<BackendKind>,
    out_dir: Option<PathBuf>,
) -> Result<StudyConfig> {
    let mut cfg = StudyConfig::from_file(config)?;
    if let Some(b) = backend {
        cfg.backend = b;
    }
    if let Some(o) = out_dir {
        cfg.out_dir = o;
    }
    Ok(cfg)
}

impl JobTarget {
    fn config(&self) -> Result<StudyConfig> {
        load(&self.config, self.backend, self.out_dir.clone())
    }

    /// The overrides as arguments for the commands of emitted scripts.
    fn extra_args(&self, abs: impl Fn(&Path) -> PathBuf) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(b) = self.backend {
            a.extend(["--backend".to_string(), b.to_string()]);
        }
        if let Some(o) = &self.out_dir {
            a.extend(["--out-dir".to_string(), abs(o).display().to_string()]);
        }
        a
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

/// Runs `datamix study …`.
pub fn run(cmd: StudyCmd) -> Result<()> {
    match cmd.action {
        None => {
            let t = &cmd.target;
            let config = t.config.clone().expect("clap requires --config");
            let cfg = load(&config, t.backend, t.out_dir.clone())?;
            let outcome = if cmd.workers > 1 {
                parallel(&config, t, &cfg, cmd.workers, cmd.threads)?
            } else {
                study::run(&cfg)?
            };
            println!("{}", study::report::markdown(&cfg, &outcome));
            println!("Results: {}", cfg.out_dir.join("results").display());
            Ok(())
        }
        Some(Action::Plan { target, out }) => {
            let cfg = target.config()?;
            let plan = study::plan(&cfg)?;
            if let Some(e) = &target.expect_plan
                && *e != plan.id
            {
                return Err(Error::PlanMismatch {
                    expected: e.clone(),
                    actual: plan.id,
                });
            }
            let json = serde_json::to_string_pretty(&plan).expect("plans serialise");
            match out {
                Some(p) => {
                    std::fs::write(&p, json + "\n").map_err(|e| Error::io(&p, e))?;
                    eprintln!(
                        "plan {}: {} jobs -> {}",
                        plan.id,
                        plan.jobs.len(),
                        p.display()
                    );
                }
                None => println!("{json}"),
            }
            Ok(())
        }
        Some(Action::RunJob { target, job }) => {
            let cfg = target.config()?;
            match study::run_job(&cfg, &job, target.expect_plan.as_deref())? {
                study::JobRun::InPool => println!("{job}: already in the pool"),
                study::JobRun::Trained => println!("{job}: trained"),
            }
            Ok(())
        }
        Some(Action::Worker { target, poll_ms }) => {
            let cfg = target.config()?;
            if let Some(e) = &target.expect_plan {
                let id = study::plan(&cfg)?.id;
                if *e != id {
                    return Err(Error::PlanMismatch {
                        expected: e.clone(),
                        actual: id,
                    });
                }
            }
            let r = study::worker(&cfg, std::time::Duration::from_millis(poll_ms))?;
            println!(
                "worker {}: trained {} job(s) [{}], {} found in the pool",
                std::process::id(),
                r.trained.len(),
                r.trained.join(", "),
                r.in_pool
            );
            Ok(())
        }
        Some(Action::Finish { target }) => {
            let cfg = target.config()?;
            let outcome = study::finish(&cfg, target.expect_plan.as_deref())?;
            println!("{}", study::report::markdown(&cfg, &outcome));
            println!("Results: {}", cfg.out_dir.join("results").display());
            Ok(())
        }
        Some(Action::Emit { engine }) => emit_files(engine),
    }
}

/// `--workers N`: prepares the data and the plan here, starts N `datamix study worker`
/// processes with `threads` compute threads each, waits for them, then finishes here.
fn parallel(
    config: &Path,
    t: &Target,
    cfg: &StudyConfig,
    workers: u32,
    threads: Option<u32>,
) -> Result<study::StudyOutcome> {
    let plan = study::plan(cfg)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let threads = threads.unwrap_or((cpus / workers).max(1));
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("current_exe"), e))?;
    tracing::info!(
        workers,
        threads,
        jobs = plan.jobs.len(),
        plan = %plan.id,
        "starting worker processes"
    );
    let mut children = Vec::new();
    for _ in 0..workers {
        let mut p = Process::new(&exe);
        p.args(["study", "worker", "--config"])
            .arg(config)
            .args(["--expect-plan", &plan.id]);
        if let Some(b) = t.backend {
            p.args(["--backend", &b.to_string()]);
        }
        if let Some(o) = &t.out_dir {
            p.arg("--out-dir").arg(o);
        }
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            p.env("RAYON_NUM_THREADS", threads.to_string());
        }
        children.push(p.spawn().map_err(|e| Error::io(&exe, e))?);
    }
    let mut failed = Vec::new();
    for (i, mut c) in children.into_iter().enumerate() {
        let status = c.wait().map_err(|e| Error::io(&exe, e))?;
        if !status.success() {
            failed.push(format!("worker {i} (pid {}): {status}", c.id()));
        }
    }
    if !failed.is_empty() {
        return Err(Error::Invalid(format!(
            "{} of {workers} worker(s) failed: {} (rerun: finished models are kept)",
            failed.len(),
            failed.join("; ")
        )));
    }
    study::finish(cfg, Some(&plan.id))
}

fn write_or_print(files: &[emit::File], out: Option<&Path>) -> Result<()> {
    match out {
        None => {
            for f in files {
                println!("# ==> {} <==", f.name);
                print!("{}", f.text);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            for f in files {
                let p = dir.join(&f.name);
                std::fs::write(&p, &f.text).map_err(|e| Error::io(&p, e))?;
                #[cfg(unix)]
                if f.executable {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                        .map_err(|e| Error::io(&p, e))?;
                }
            }
            eprintln!("wrote {} file(s) to {}", files.len(), dir.display());
        }
    }
    Ok(())
}

fn emit_files(engine: Engine) -> Result<()> {
    match engine {
        Engine::Slurm {
            target,
            emit: e,
            partition,
            gpus_per_task,
            cpus_per_task,
            time,
            array_throttle,
        } => {
            let cfg = target.config()?;
            let plan = study::plan(&cfg)?;
            let cwd = std::env::current_dir().map_err(|err| Error::io(Path::new("."), err))?;
            let dir = match &e.out {
                Some(d) => absolute(d)?,
                None => cwd.join("slurm"),
            };
            let datamix = match e.datamix {
                Some(d) => d,
                None => std::env::current_exe()
                    .map_err(|err| Error::io(Path::new("current_exe"), err))?
                    .display()
                    .to_string(),
            };
            let inv = emit::Invocation {
                datamix,
                config: absolute(&target.config)?,
                extra: target.extra_args(|p| cwd.join(p)),
            };
            let opts = emit::SlurmOptions {
                chdir: cwd,
                dir,
                partition,
                gpus_per_task,
                cpus_per_task,
                time,
                array_throttle,
            };
            write_or_print(&emit::slurm(&plan, &inv, &opts), e.out.as_deref())
        }
        Engine::K8s {
            target,
            emit: e,
            name,
            image,
            pvc,
            mount,
            parallelism,
            gpus,
        } => {
            // Objects get `<name>-plan`, `-seed`, `-jobs`, `-finish`: DNS-1123 labels.
            let label_ok = !name.is_empty()
                && name.len() <= 50
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !label_ok {
                return Err(Error::Invalid(format!(
                    "--name {name:?}: a Kubernetes name needs 1-50 lowercase letters, digits \
                     or '-', not starting or ending with '-'"
                )));
            }
            let cfg = target.config()?;
            let plan = study::plan(&cfg)?;
            let config_text = std::fs::read_to_string(&target.config)
                .map_err(|err| Error::io(&target.config, err))?;
            let inv = emit::Invocation {
                datamix: e.datamix.unwrap_or_else(|| "datamix".into()),
                config: target.config.clone(),
                // Relative `--out-dir` stays relative: it resolves from the mount.
                extra: target.extra_args(Path::to_path_buf),
            };
            let opts = emit::K8sOptions {
                name,
                image,
                pvc,
                mount,
                parallelism,
                gpus,
                config_text,
            };
            write_or_print(&emit::k8s(&plan, &inv, &opts), e.out.as_deref())
        }
    }
}
