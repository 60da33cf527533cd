//! A study's job graph as files for existing batch systems: `sbatch` scripts for SLURM and
//! manifests for Kubernetes (`datamix study emit`). Nothing here submits anything; the
//! files call `datamix study run-job` / `finish`, which check the plan id
//! (`--expect-plan`) before any work, so a script set emitted for one config never trains
//! into a study whose config has changed since.
//!
//! Both run the seed job first, then every other job at once (each continued from the seed
//! or trained from scratch; none depends on another), then `finish` (scoring, analysis,
//! validation runs, report). All processes share the pool through the file system: the
//! pool's entries appear atomically and its per-key locks keep two tasks from training the
//! same model ([`crate::lock`] has the shared-file-system caveats). docs/scale-out.md has
//! the commands.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::graph::{Plan, Role};

/// How the emitted commands call `datamix study`.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The `datamix` binary (absolute path on the cluster's nodes, or a name on their PATH).
    pub datamix: String,
    /// The study config (as the nodes see it).
    pub config: PathBuf,
    /// Extra arguments after the subcommand (`--backend`, `--out-dir` overrides).
    pub extra: Vec<String>,
}

/// SLURM settings (`datamix study emit slurm`).
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// Working directory of every job (the config's relative paths resolve from here).
    pub chdir: PathBuf,
    /// Where the scripts are written (`jobs.txt` is read from here) and logs go (`logs/`).
    pub dir: PathBuf,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--gpus-per-task` (for the training and finish jobs).
    pub gpus_per_task: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--time` (e.g. `02:00:00`).
    pub time: Option<String>,
    /// At most this many array tasks at once (`--array=0-N%K`).
    pub array_throttle: Option<u32>,
}

/// Kubernetes settings (`datamix study emit k8s`).
#[derive(Debug, Clone)]
pub struct K8sOptions {
    /// Prefix of every object's name (a DNS-1123 label).
    pub name: String,
    /// Container image with `datamix` on its PATH (or at [`Invocation::datamix`]).
    pub image: String,
    /// The PersistentVolumeClaim (ReadWriteMany) holding the data and the pool.
    pub pvc: String,
    /// Where it is mounted; the pods' working directory (relative config paths resolve
    /// from it).
    pub mount: String,
    /// Training pods at once.
    pub parallelism: u32,
    /// `nvidia.com/gpu` per training and finish pod.
    pub gpus: Option<u32>,
    /// The config file's text (shipped in a ConfigMap).
    pub config_text: String,
}

/// A file to write: name (relative to the output directory), content, executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// File name.
    pub name: String,
    /// Its text.
    pub text: String,
    /// Whether to make it executable.
    pub executable: bool,
}

/// Quotes `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The ids of the jobs that run after the seed (array tasks / completion indices), in
/// plan order.
pub fn array_jobs(plan: &Plan) -> Vec<&str> {
    plan.jobs
        .iter()
        .filter(|j| j.role != Role::Seed)
        .map(|j| j.id.as_str())
        .collect()
}

impl Invocation {
    /// `datamix study <sub> --config C <extra> --expect-plan ID` (quoted), then `tail`.
    fn command(&self, plan: &Plan, sub: &str, tail: &str) -> String {
        let mut c = format!(
            "{} study {sub} --config {}",
            sh_quote(&self.datamix),
            sh_quote(&self.config.display().to_string())
        );
        for a in &self.extra {
            c.push(' ');
            c.push_str(&sh_quote(a));
        }
        let _ = write!(c, " --expect-plan {}", plan.id);
        if !tail.is_empty() {
            c.push(' ');
            c.push_str(tail);
        }
        c
    }
}

fn sbatch_header(o: &SlurmOptions, name: &str, log: &str, gpus: bool) -> String {
    let mut h = String::from("#!/bin/bash\n");
    let _ = writeln!(h, "#SBATCH --job-name={name}");
    let _ = writeln!(
        h,
        "#SBATCH --chdir={}",
        sh_quote(&o.chdir.display().to_string())
    );
    let _ = writeln!(
        h,
        "#SBATCH --output={}",
        sh_quote(&o.dir.join("logs").join(log).display().to_string())
    );
    h.push_str("#SBATCH --ntasks=1\n");
    if let Some(p) = &o.partition {
        let _ = writeln!(h, "#SBATCH --partition={p}");
    }
    if let Some(t) = &o.time {
        let _ = writeln!(h, "#SBATCH --time={t}");
    }
    if let Some(c) = o.cpus_per_task {
        let _ = writeln!(h, "#SBATCH --cpus-per-task={c}");
    }
    if gpus && let Some(g) = o.gpus_per_task {
        let _ = writeln!(h, "#SBATCH --gpus-per-task={g}");
    }
    h.push_str("set -euo pipefail\n");
    // Compute threads: the CPUs SLURM gave the task (1 unless --cpus-per-task), not every
    // core of the node (array tasks share nodes).
    h.push_str("export RAYON_NUM_THREADS=\"${RAYON_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}\"\n");
    h
}

/// The SLURM script set: `seed.sbatch`, `array.sbatch` (one task per line of `jobs.txt`,
/// `--dependency=afterok` on the seed), `finish.sbatch` (afterok on the whole array) and
/// `submit.sh`, which submits the three chained with `sbatch --parsable`.
pub fn slurm(plan: &Plan, inv: &Invocation, o: &SlurmOptions) -> Vec<File> {
    let ids = array_jobs(plan);
    let mut jobs_txt = String::new();
    for id in &ids {
        jobs_txt.push_str(id);
        jobs_txt.push('\n');
    }
    let jobs_path = sh_quote(&o.dir.join("jobs.txt").display().to_string());
    let seed = format!(
        "{}# Plan {} ({} jobs, {} training tokens in all).\nexec {}\n",
        sbatch_header(o, "datamix-seed", "seed-%j.out", true),
        plan.id,
        plan.jobs.len(),
        plan.tokens,
        inv.command(plan, "run-job", "--job seed")
    );
    let mut array = sbatch_header(o, "datamix-jobs", "job-%A_%a.out", true);
    let throttle = o
        .array_throttle
        .map(|k| format!("%{k}"))
        .unwrap_or_default();
    // The directive must precede the first command: insert it before `set -e`.
    array = array.replace(
        "set -euo pipefail\n",
        &format!(
            "#SBATCH --array=0-{}{throttle}\nset -euo pipefail\n",
            ids.len().saturating_sub(1)
        ),
    );
    let _ = write!(
        array,
        "# Task i trains the job on line i+1 of jobs.txt.\n\
         JOB=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {jobs_path})\n\
         if [ -z \"$JOB\" ]; then echo \"no job for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 1; fi\n\
         exec {}\n",
        inv.command(plan, "run-job", "--job \"$JOB\"")
    );
    let finish = format!(
        "{}exec {}\n",
        sbatch_header(o, "datamix-finish", "finish-%j.out", true),
        inv.command(plan, "finish", "")
    );
    let submit = format!(
        "#!/bin/bash\n\
         # Submits the study: the seed job, the array after it, finish after the array.\n\
         set -euo pipefail\n\
         cd \"$(dirname \"$0\")\"\n\
         mkdir -p logs\n\
         seed=$(sbatch --parsable seed.sbatch); seed=${{seed%%;*}}\n\
         array=$(sbatch --parsable --dependency=afterok:$seed array.sbatch); array=${{array%%;*}}\n\
         finish=$(sbatch --parsable --dependency=afterok:$array finish.sbatch); finish=${{finish%%;*}}\n\
         echo \"seed $seed\"\n\
         echo \"array $array ({} tasks)\"\n\
         echo \"finish $finish\"\n",
        ids.len()
    );
    vec![
        File {
            name: "jobs.txt".into(),
            text: jobs_txt,
            executable: false,
        },
        File {
            name: "seed.sbatch".into(),
            text: seed,
            executable: true,
        },
        File {
            name: "array.sbatch".into(),
            text: array,
            executable: true,
        },
        File {
            name: "finish.sbatch".into(),
            text: finish,
            executable: true,
        },
        File {
            name: "submit.sh".into(),
            text: submit,
            executable: true,
        },
    ]
}

/// A YAML double-quoted string.
fn yq(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// Indents every line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A pod spec running `script` (sh -c) with the pool volume and the plan ConfigMap.
fn pod_spec(o: &K8sOptions, script: &str, gpus: bool) -> String {
    let mut s = format!(
        "restartPolicy: Never\n\
         containers:\n\
         - name: datamix\n  \
           image: {image}\n  \
           workingDir: {mount}\n  \
           command: [\"/bin/sh\", \"-c\"]\n  \
           args:\n  \
           - {script}\n  \
           volumeMounts:\n  \
           - name: pool\n    \
             mountPath: {mount}\n  \
           - name: plan\n    \
             mountPath: /etc/datamix\n    \
             readOnly: true\n",
        image = yq(&o.image),
        mount = yq(&o.mount),
        script = yq(script),
    );
    if gpus && let Some(g) = o.gpus {
        let _ = write!(s, "  resources:\n    limits:\n      nvidia.com/gpu: {g}\n");
    }
    let _ = write!(
        s,
        "volumes:\n\
         - name: pool\n  \
           persistentVolumeClaim:\n    \
             claimName: {pvc}\n\
         - name: plan\n  \
           configMap:\n    \
             name: {name}-plan\n",
        pvc = yq(&o.pvc),
        name = o.name
    );
    s
}

fn job_yaml(o: &K8sOptions, suffix: &str, extra_spec: &str, script: &str) -> String {
    format!(
        "apiVersion: batch/v1\n\
         kind: Job\n\
         metadata:\n  \
           name: {name}-{suffix}\n  \
           labels:\n    \
             app.kubernetes.io/name: datamix\n    \
             datamix/study: {name}\n\
         spec:\n\
         {extra}  \
           template:\n    \
             metadata:\n      \
               labels:\n        \
                 datamix/study: {name}\n    \
             spec:\n\
         {pod}\n",
        name = o.name,
        extra = if extra_spec.is_empty() {
            String::new()
        } else {
            format!("{}\n", indent(extra_spec, 2))
        },
        pod = indent(&pod_spec(o, script, true), 6),
    )
}

/// The Kubernetes manifests: `configmap.yaml` (the config and the job list), `seed-job.yaml`,
/// `jobs.yaml` (an Indexed Job: completion index i trains line i+1 of the job list),
/// `finish-job.yaml`, and `apply.sh`, which applies them in order and waits for each Job
/// to complete (`kubectl wait`). The pool lives on the PersistentVolumeClaim.
pub fn k8s(plan: &Plan, inv: &Invocation, o: &K8sOptions) -> Vec<File> {
    let ids = array_jobs(plan);
    let inv = Invocation {
        config: Path::new("/etc/datamix/study.toml").to_path_buf(),
        ..inv.clone()
    };
    let mut jobs_txt = String::new();
    for id in &ids {
        jobs_txt.push_str(id);
        jobs_txt.push('\n');
    }
    let configmap = format!(
        "apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  \
           name: {name}-plan\n  \
           labels:\n    \
             datamix/study: {name}\n\
         data:\n  \
           plan-id: {id}\n  \
           study.toml: {config}\n  \
           jobs.txt: {jobs}\n",
        name = o.name,
        id = yq(&plan.id),
        config = yq(&o.config_text),
        jobs = yq(&jobs_txt),
    );
    let seed = job_yaml(
        o,
        "seed",
        "backoffLimit: 2",
        &format!("exec {}", inv.command(plan, "run-job", "--job seed")),
    );
    let indexed = job_yaml(
        o,
        "jobs",
        &format!(
            "completionMode: Indexed\ncompletions: {}\nparallelism: {}\nbackoffLimit: {}",
            ids.len(),
            o.parallelism.max(1),
            2 * ids.len().max(1)
        ),
        &format!(
            "JOB=$(sed -n \"$((JOB_COMPLETION_INDEX + 1))p\" /etc/datamix/jobs.txt) && \
             test -n \"$JOB\" && exec {}",
            inv.command(plan, "run-job", "--job \"$JOB\"")
        ),
    );
    let finish = job_yaml(
        o,
        "finish",
        "backoffLimit: 2",
        &format!("exec {}", inv.command(plan, "finish", "")),
    );
    let apply = format!(
        "#!/bin/bash\n\
         # Runs the study on the cluster: seed, then the indexed training Job, then finish.\n\
         set -euo pipefail\n\
         cd \"$(dirname \"$0\")\"\n\
         kubectl apply -f configmap.yaml\n\
         kubectl apply -f seed-job.yaml\n\
         kubectl wait --for=condition=complete --timeout=-1s job/{name}-seed\n\
         kubectl apply -f jobs.yaml\n\
         kubectl wait --for=condition=complete --timeout=-1s job/{name}-jobs\n\
         kubectl apply -f finish-job.yaml\n\
         kubectl wait --for=condition=complete --timeout=-1s job/{name}-finish\n\
         kubectl logs job/{name}-finish | tail -n 40\n",
        name = o.name
    );
    vec![
        File {
            name: "configmap.yaml".into(),
            text: configmap,
            executable: false,
        },
        File {
            name: "seed-job.yaml".into(),
            text: seed,
            executable: false,
        },
        File {
            name: "jobs.yaml".into(),
            text: indexed,
            executable: false,
        },
        File {
            name: "finish-job.yaml".into(),
            text: finish,
            executable: false,
        },
        File {
            name: "apply.sh".into(),
            text: apply,
            executable: true,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_spaces_and_quotes() {
        assert_eq!(sh_quote("/a/b-c.toml"), "/a/b-c.toml");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn indent_keeps_blank_lines_empty() {
        assert_eq!(indent("a\n\nb", 2), "  a\n\n  b");
    }
}
