//! Training the job graph's models one job at a time (`datamix study run-job`, a SLURM or
//! Kubernetes array task) or by workers that take whichever job is free until the graph is
//! in the pool (`datamix study worker`, `datamix study --workers N`). Scoring and analysis
//! are not here: they run once every job is in the pool ([`super::finish`]).

use burn::tensor::backend::AutodiffBackend;
use datamix_decoder::BackendTask;
use serde::Serialize;

use super::config::StudyConfig;
use super::data::Prepared;
use super::graph::Graph;
use super::lab::Lab;
use super::load;
use crate::error::{Error, Result};

/// What [`run_job`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobRun {
    /// The model was in the pool already: nothing trained.
    InPool,
    /// Trained (by this process, or by another one this process waited for).
    Trained,
}

/// Trains one job of the graph (`datamix study run-job`); a no-op if its model is in the
/// pool. Fails before any work on an unknown id ([`Error::UnknownJob`]) or a dependency
/// not in the pool ([`Error::JobsMissing`]), or, with `expect_plan`, a config whose plan
/// id is another one ([`Error::PlanMismatch`]: scripts emitted for an older config).
pub fn run_job(cfg: &StudyConfig, id: &str, expect_plan: Option<&str>) -> Result<JobRun> {
    let (data, graph) = load(cfg, expect_plan)?;
    let Some((index, job)) = graph.job(id) else {
        return Err(Error::UnknownJob {
            id: id.to_string(),
            known: graph.jobs.iter().map(|j| j.id.clone()).collect(),
        });
    };
    let pool = super::lab::open_pool(cfg)?;
    if pool.check(&job.key)? {
        tracing::info!(job = id, key = job.key.short(), "already in the pool");
        return Ok(JobRun::InPool);
    }
    let mut missing = Vec::new();
    for d in &job.deps {
        let (_, dep) = graph.job(d).expect("dependencies are jobs of the graph");
        if !pool.check(&dep.key)? {
            missing.push(d.clone());
        }
    }
    if !missing.is_empty() {
        return Err(Error::JobsMissing {
            pool: pool.root().to_path_buf(),
            ids: missing,
        });
    }
    cfg.backend.run(Jobs {
        cfg,
        data: &data,
        graph: &graph,
        mode: JobsMode::One(index),
    })??;
    Ok(JobRun::Trained)
}

/// What a [`worker`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerReport {
    /// Ids of the jobs this worker trained.
    pub trained: Vec<String>,
    /// Jobs found in the pool (trained before, or by other workers).
    pub in_pool: usize,
}

/// A worker (`datamix study worker`): repeatedly takes a job whose dependencies are in the
/// pool and whose lock no other process holds, trains it, and returns when every job of
/// the graph is in the pool. Any number of workers, on one machine or on several sharing
/// the pool's file system, train each model once ([`crate::lock`] has the caveats).
/// `poll` is how long an idle worker waits before looking again.
pub fn worker(cfg: &StudyConfig, poll: std::time::Duration) -> Result<WorkerReport> {
    let (data, graph) = load(cfg, None)?;
    cfg.backend.run(Jobs {
        cfg,
        data: &data,
        graph: &graph,
        mode: JobsMode::Worker(poll),
    })?
}

enum JobsMode {
    One(usize),
    Worker(std::time::Duration),
}

struct Jobs<'a> {
    cfg: &'a StudyConfig,
    data: &'a Prepared,
    graph: &'a Graph,
    mode: JobsMode,
}

impl BackendTask for Jobs<'_> {
    type Output = Result<WorkerReport>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let g = self.graph;
        let train = |lab: &Lab<'_, B>, i: usize, wait: bool| {
            let j = &g.jobs[i];
            lab.train_if_free(
                j.spec_role,
                &j.name,
                j.from.map(|f| &g.jobs[f].key),
                &j.data,
                &j.run,
                j.train_seed,
                wait,
            )
        };
        let mut report = WorkerReport::default();
        match self.mode {
            JobsMode::One(i) => {
                let lab = Lab::<B>::new(self.cfg, self.data, device, g.jobs[i].steps)?;
                train(&lab, i, true)?;
                lab.finish();
                report.trained.push(g.jobs[i].id.clone());
            }
            JobsMode::Worker(poll) => {
                let total = g.jobs.iter().map(|j| j.steps).sum();
                let lab = Lab::<B>::new(self.cfg, self.data, device, total)?;
                let mut done = vec![false; g.jobs.len()];
                loop {
                    let mut remaining = 0;
                    let mut progressed = false;
                    for i in 0..g.jobs.len() {
                        if done[i] {
                            continue;
                        }
                        if lab.pool().check(&g.jobs[i].key)? {
                            done[i] = true;
                            report.in_pool += 1;
                            continue;
                        }
                        remaining += 1;
                        if g.jobs[i].from.is_some_and(|f| !done[f]) {
                            continue;
                        }
                        if train(&lab, i, false)?.is_some() {
                            done[i] = true;
                            remaining -= 1;
                            progressed = true;
                            report.trained.push(g.jobs[i].id.clone());
                        }
                    }
                    if remaining == 0 {
                        break;
                    }
                    if !progressed {
                        std::thread::sleep(poll);
                    }
                }
                lab.finish();
            }
        }
        Ok(report)
    }
}
