//! Search results: best mixture, predicted objective ± uncertainty, trace (JSON).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{OptimizerError, Result};

/// One step of a search: the best point so far after `evaluations` objective calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Iteration (or generation / batch) index.
    pub iteration: usize,
    /// Objective evaluations used so far.
    pub evaluations: usize,
    /// Objective value of the iterate (or batch best) at this step.
    pub value: f64,
    /// Best value seen so far.
    pub best_value: f64,
}

/// Outcome of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimResult {
    /// Name of the method that produced it.
    pub method: String,
    /// Domain names, in the order of `mixture`.
    pub domains: Vec<String>,
    /// Best mixture found (feasible).
    pub mixture: Vec<f64>,
    /// Objective (predicted loss) at `mixture`.
    pub objective: f64,
    /// Standard deviation of `objective`, when the objective reports one.
    pub uncertainty: Option<f64>,
    /// Total objective evaluations.
    pub evaluations: usize,
    /// Whether the method's own convergence criterion was met (false: budget ran out).
    pub converged: bool,
    /// Progress of the search.
    pub trace: Vec<TraceEntry>,
}

impl OptimResult {
    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Parses a result written by [`Self::to_json`] or [`Self::write_json`].
    pub fn from_json(s: &str) -> Result<Self> {
        Ok(serde_json::from_str(s)?)
    }

    /// Writes pretty JSON atomically and durably (temporary file beside it, fsync, rename,
    /// directory fsync; mode `0644` under the umask).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_json()?.as_bytes())
    }
}

/// Writes `bytes` to `path` atomically and durably ([`datamix_io::write_file`]): nothing
/// is left behind on error.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    datamix_io::write_file(path, bytes).map_err(|e| {
        let (path, source) = e.into_parts();
        OptimizerError::Io { path, source }
    })
}

/// Keeps the best point and the trace while a method runs.
#[derive(Debug)]
pub(crate) struct Tracker {
    pub best_x: Vec<f64>,
    pub best_value: f64,
    pub evaluations: usize,
    pub trace: Vec<TraceEntry>,
}

impl Tracker {
    pub fn new(x: Vec<f64>, value: f64, evaluations: usize) -> Self {
        let mut t = Self {
            best_x: x,
            best_value: value,
            evaluations,
            trace: Vec::new(),
        };
        t.log(0, value);
        t
    }

    /// Offers a candidate; keeps it if better.
    pub fn offer(&mut self, x: &[f64], value: f64) {
        if value < self.best_value {
            self.best_value = value;
            self.best_x.clear();
            self.best_x.extend_from_slice(x);
        }
    }

    /// Appends a trace entry for `iteration` with the iterate's `value`.
    pub fn log(&mut self, iteration: usize, value: f64) {
        self.trace.push(TraceEntry {
            iteration,
            evaluations: self.evaluations,
            value,
            best_value: self.best_value,
        });
    }

    pub fn finish<O: crate::Objective + ?Sized>(
        self,
        method: &str,
        space: &crate::SearchSpace,
        objective: &O,
        converged: bool,
    ) -> OptimResult {
        OptimResult {
            method: method.to_owned(),
            domains: space.names().to_vec(),
            uncertainty: objective.uncertainty(&self.best_x),
            mixture: self.best_x,
            objective: self.best_value,
            evaluations: self.evaluations,
            converged,
            trace: self.trace,
        }
    }
}
