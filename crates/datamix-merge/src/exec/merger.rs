//! The public entry point: [`Merger`], its builder options, and the three
//! ways of running a plan (in memory, into a previous result, to a file).
//! Resolves and opens inputs and hands a validated job to the schedulers;
//! must not know how chunks are merged, hashed, encoded or released.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::MergeError;
use crate::method::{MergeMethod, Scope};
use crate::plan::{FlatPlan, MergePlan, MethodPlan, Resolver, Source, WeightOverride, Weighting};
use crate::strategies::{Linear, Method};

use super::hash::{HASH_ALGORITHM, HashState};
use super::job::{Input, Job, Kind, Layout, WeightSet};
use super::output::{
    MergedTensor, MergedTensors, OutDtype, TensorData, WriteError, atomic_write, header_bytes,
};
use super::pages::{Rounding, advise_huge_pages};
use super::record::{InputRecord, MergeRecord};
use super::{BATCH_INPUT_BYTES, SYNC_EVERY_BYTES};

/// Runs merge plans with one [`MergeMethod`] (builder style).
#[derive(Debug, Clone)]
pub struct Merger<M = Linear> {
    method: M,
    weighting: Weighting,
    out_dtype: OutDtype,
    hash_inputs: bool,
    huge_pages: bool,
    batch_bytes: usize,
    base: Option<Source>,
    weight_overrides: Vec<WeightOverride>,
}

impl Default for Merger<Linear> {
    fn default() -> Self {
        Self::new(Linear)
    }
}

impl Merger<Linear> {
    /// Linear merging (weight averaging), normalised weights, `f32` output,
    /// inputs hashed.
    pub fn linear() -> Self {
        Self::default()
    }
}

impl Merger<Method> {
    /// A merger for a [`MethodPlan`]: its method, weighting, base model and
    /// weight overrides (then `f32` output and hashed inputs, as
    /// [`new`](Merger::new)). Run it on `plan.models`:
    /// `Merger::for_plan(&plan).merge_to_file(&plan.models, &resolver, out)`.
    pub fn for_plan(plan: &MethodPlan) -> Self {
        let mut m = Merger::new(plan.method.clone()).weighting(plan.weighting);
        m.base = plan.base.clone();
        m.weight_overrides = plan.weight_overrides.clone();
        m
    }
}

impl<M: MergeMethod> Merger<M> {
    /// A merger using `method`, with normalised weights, `f32` output and
    /// hashed inputs.
    pub fn new(method: M) -> Self {
        Self {
            method,
            weighting: Weighting::Normalized,
            out_dtype: OutDtype::F32,
            hash_inputs: true,
            huge_pages: false,
            batch_bytes: BATCH_INPUT_BYTES,
            base: None,
            weight_overrides: Vec::new(),
        }
    }

    /// The base model, for methods that take one (task arithmetic, TIES;
    /// SLERP's first endpoint). It must have the models' tensors; it is
    /// hashed and recorded like them.
    pub fn base(mut self, base: impl Into<Source>) -> Self {
        self.base = Some(base.into());
        self
    }

    /// Adds a per-tensor weight override (see [`WeightOverride`]; the first
    /// one whose filter matches a tensor's name wins).
    pub fn weight_override(mut self, o: WeightOverride) -> Self {
        self.weight_overrides.push(o);
        self
    }

    /// How plan weights are checked and scaled (default normalised).
    pub fn weighting(mut self, weighting: Weighting) -> Self {
        self.weighting = weighting;
        self
    }

    /// Float dtype written by [`merge_to_file`](Self::merge_to_file) (default `f32`).
    pub fn out_dtype(mut self, out_dtype: OutDtype) -> Self {
        self.out_dtype = out_dtype;
        self
    }

    /// Whether to record a BLAKE3 hash of every input (default on). Each
    /// batch of input is hashed right after being merged, through the same
    /// mapped pages, so inputs are not read twice from the page cache; it
    /// still costs CPU time, worth turning off for throw-away proxies.
    pub fn hash_inputs(mut self, hash: bool) -> Self {
        self.hash_inputs = hash;
        self
    }

    /// Whether [`merge`](Self::merge) asks the kernel for transparent huge
    /// pages for the output tensors (`MADV_HUGEPAGE`, Linux; default off):
    /// far fewer page faults while the model is written, but on the
    /// benchmark VM zeroing fresh huge pages often cost more than it saved
    /// (docs/bench-merge.md). The result is the same either way.
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = on;
        self
    }

    /// Input bytes (summed over inputs) per batch, the unit in which input
    /// pages are released (default [`BATCH_INPUT_BYTES`]): smaller batches
    /// keep less of the inputs mapped (about three batches at a time), at one
    /// more release per batch. Merging to a file also writes one batch at a
    /// time.
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// Merges into memory (floating tensors as `f32`), for evaluating a proxy
    /// without writing it.
    pub fn merge(
        &self,
        plan: &MergePlan,
        resolver: &impl Resolver,
    ) -> Result<MergedTensors, MergeError> {
        let (job, record) = self.prepare(plan, resolver, OutDtype::F32)?;
        let mut out = MergedTensors::new(self.alloc(&job), record);
        self.run_in_memory(&job, &mut out)?;
        Ok(out)
    }

    /// Merges into `out`, reusing its buffers when it already holds a model
    /// of the same layout (same tensor names in the same order, same shapes
    /// and dtypes, e.g. the previous proxy of a study), else replacing it.
    /// Scoring many mixtures this way skips allocating, page-faulting and
    /// zeroing a fresh output model per merge.
    ///
    /// Inputs are validated before `out` is touched: on a bad input `out` is
    /// left as it was. Only a merge method that fails part-way (the built-in
    /// linear method does not) leaves `out` partly overwritten.
    pub fn merge_into(
        &self,
        plan: &MergePlan,
        resolver: &impl Resolver,
        out: &mut MergedTensors,
    ) -> Result<(), MergeError> {
        let (job, record) = self.prepare(plan, resolver, OutDtype::F32)?;
        let same_layout = out.tensors.len() == job.specs.len()
            && out.tensors.iter().zip(&job.specs).all(|(t, s)| {
                t.name == s.name
                    && t.shape == s.shape
                    && match (&t.data, s.kind) {
                        (TensorData::F32(v), Kind::Float(_)) => v.len() == s.numel,
                        (TensorData::Raw { dtype, bytes }, Kind::Raw) => {
                            *dtype == s.dtype && bytes.len() == s.out_bytes()
                        }
                        _ => false,
                    }
            });
        if same_layout {
            out.record = record;
        } else {
            *out = MergedTensors::new(self.alloc(&job), record);
        }
        self.run_in_memory(&job, out)
    }

    /// Fresh output tensors for `job` (contents to be overwritten).
    pub(super) fn alloc(&self, job: &Job) -> Vec<MergedTensor> {
        job.specs
            .iter()
            .map(|s| MergedTensor {
                name: s.name.clone(),
                shape: s.shape.clone(),
                data: match s.kind {
                    Kind::Float(_) => {
                        // Zeroed pages straight from the kernel (calloc), not
                        // yet touched, so the advice applies before the first
                        // fault.
                        let mut v = vec![0.0f32; s.numel];
                        if self.huge_pages {
                            advise_huge_pages(bytemuck::cast_slice_mut(v.as_mut_slice()));
                        }
                        TensorData::F32(v)
                    }
                    Kind::Raw => TensorData::Raw {
                        dtype: s.dtype,
                        bytes: vec![0; s.out_bytes()],
                    },
                },
            })
            .collect()
    }

    /// Runs `job` into `out`, whose tensors have the job's layout.
    pub(super) fn run_in_memory(
        &self,
        job: &Job,
        out: &mut MergedTensors,
    ) -> Result<(), MergeError> {
        let mut dsts: Vec<&mut [u8]> = Vec::with_capacity(job.segments.len());
        for (t, tensor) in out.tensors.iter_mut().enumerate() {
            let bytes: &mut [u8] = match &mut tensor.data {
                TensorData::F32(v) => bytemuck::cast_slice_mut(v.as_mut_slice()),
                TensorData::Raw { bytes, .. } => bytes,
            };
            let lens = job
                .segments_of(t)
                .map(|s| s.len() * job.specs[t].out_size());
            dsts.extend(split(bytes, lens));
        }
        let mut hashes = self.hash_states(job);
        job.run_queued(&self.method, &mut dsts, hashes.as_deref_mut())?;
        job.finish_hashes(hashes, &mut out.record);
        Ok(())
    }

    /// Merges into a safetensors file, atomically (temporary file in the same
    /// directory, fsync, rename): on error nothing is left at `out`. Memory
    /// stays a few batches, not a model.
    pub fn merge_to_file(
        &self,
        plan: &MergePlan,
        resolver: &impl Resolver,
        out: &Path,
    ) -> Result<MergeRecord, MergeError> {
        let (job, mut record) = self.prepare(plan, resolver, self.out_dtype)?;
        let mut hashes = self.hash_states(&job);
        if hashes.is_some() {
            // Hashes are known only once every input has been read: the
            // header is written with placeholders of the same length and
            // rewritten at the end.
            let placeholder = format!("{HASH_ALGORITHM}:{}", "0".repeat(64));
            for i in record.inputs.iter_mut().chain(&mut record.base) {
                i.hash = Some(placeholder.clone());
            }
        }
        let entries: Vec<_> = job
            .specs
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.out_dtype,
                    s.shape.as_slice(),
                    s.out_bytes(),
                )
            })
            .collect();
        let header = header_bytes(&entries, &record)?;
        atomic_write(out, |file| {
            file.write_all(&header)?;
            let file: &File = file;
            // A writer thread writes (and starts flushing) batch b while the
            // pool merges batch b + 1; buffers travel back for reuse.
            let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(1);
            let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
            std::thread::scope(|scope| {
                let writer = scope.spawn(move || -> std::io::Result<()> {
                    let mut unsynced = 0;
                    let mut file = file;
                    for buf in full_rx {
                        file.write_all(&buf)?;
                        unsynced += buf.len();
                        if unsynced >= SYNC_EVERY_BYTES {
                            file.sync_data()?;
                            unsynced = 0;
                        }
                        let _ = free_tx.send(buf);
                    }
                    Ok(())
                });
                let mut merged = Ok(());
                let mut mapped = Vec::new();
                for (b, batch) in job.batches.iter().enumerate() {
                    let segs = &job.segments[batch.clone()];
                    let lens = segs
                        .iter()
                        .map(|s| s.len() * job.specs[s.tensor].out_size());
                    let mut buf = free_rx.try_recv().unwrap_or_default();
                    buf.resize(lens.clone().sum(), 0);
                    let mut dsts = split(&mut buf, lens);
                    let hashes = hashes.as_deref_mut();
                    let prev = std::mem::take(&mut mapped);
                    match job.run_batch(&self.method, b, &mut dsts, hashes, prev) {
                        Ok(next) => mapped = next,
                        Err(e) => {
                            merged = Err(WriteError::Merge(e));
                            break;
                        }
                    }
                    if full_tx.send(buf).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                drop(full_tx);
                job.release(mapped, Rounding::Whole);
                let written = writer.join().expect("writer thread does not panic");
                merged?;
                written?;
                if hashes.is_some() {
                    job.finish_hashes(hashes, &mut record);
                    let real = header_bytes(&entries, &record).map_err(WriteError::Merge)?;
                    if real.len() != header.len() {
                        return Err(WriteError::Merge(MergeError::Record {
                            reason: "the header with input hashes changed length".into(),
                        }));
                    }
                    let mut file = file;
                    file.seek(SeekFrom::Start(0))?;
                    file.write_all(&real)?;
                }
                Ok(())
            })
        })?;
        Ok(record)
    }

    /// Fresh hash states (one per input) when hashing is on.
    pub(super) fn hash_states(&self, job: &Job) -> Option<Vec<HashState>> {
        self.hash_inputs
            .then(|| job.inputs.iter().map(|_| HashState::default()).collect())
    }

    pub(super) fn prepare(
        &self,
        plan: &MergePlan,
        resolver: &impl Resolver,
        out_dtype: OutDtype,
    ) -> Result<(Job, MergeRecord), MergeError> {
        let flat = plan.flatten(self.weighting)?;
        let setup = |source| MergeError::MethodSetup {
            method: self.method.name().to_string(),
            source,
        };
        self.method
            .check(flat.terms.len(), self.base.is_some())
            .map_err(setup)?;
        let weights: Vec<f64> = flat.terms.iter().map(|t| t.weight).collect();
        let sets = std::iter::once(Ok(weights))
            .chain(
                self.weight_overrides
                    .iter()
                    .map(|o| o.apply(&flat, self.weighting)),
            )
            .map(|w| {
                let skip = self.method.skips_zero_weights();
                let (active, weights) = w?
                    .into_iter()
                    .enumerate()
                    .filter(|&(_, w)| !(skip && w == 0.0))
                    .unzip();
                Ok(WeightSet { active, weights })
            })
            .collect::<Result<Vec<_>, MergeError>>()?;
        let paths = resolve(&flat, resolver)?;
        let base_path = match &self.base {
            Some(b) => Some(resolve_source(b, resolver)?),
            None => None,
        };
        let inputs = paths
            .iter()
            .chain(&base_path)
            .map(|p| Input::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let record = MergeRecord {
            method: self.method.name().to_string(),
            weighting: self.weighting,
            inputs: flat
                .terms
                .iter()
                .zip(paths)
                .map(|(t, path)| InputRecord {
                    source: t.source.clone(),
                    path,
                    weight: t.weight,
                    hash: None,
                })
                .collect(),
            parameters: self.method.parameters(),
            base: self
                .base
                .clone()
                .zip(base_path)
                .map(|(source, path)| InputRecord {
                    source,
                    path,
                    weight: 0.0,
                    hash: None,
                }),
            weight_overrides: self.weight_overrides.clone(),
        };
        let layout = Layout {
            sets,
            filters: self
                .weight_overrides
                .iter()
                .map(|o| o.filter.clone())
                .collect(),
            base: self.base.as_ref().map(|_| flat.terms.len()),
            whole_tensors: self.method.scope() == Scope::WholeTensor,
        };
        Ok((
            Job::new(inputs, layout, out_dtype, self.batch_bytes)?,
            record,
        ))
    }
}

/// The file of one plan leaf.
fn resolve_source(source: &Source, resolver: &impl Resolver) -> Result<PathBuf, MergeError> {
    match source {
        Source::Path(p) => Ok(p.clone()),
        Source::Key(k) => resolver
            .resolve(k)
            .ok_or_else(|| MergeError::UnresolvedKey { key: k.clone() }),
    }
}

pub(super) fn resolve(
    flat: &FlatPlan,
    resolver: &impl Resolver,
) -> Result<Vec<PathBuf>, MergeError> {
    flat.terms
        .iter()
        .map(|t| resolve_source(&t.source, resolver))
        .collect()
}

/// Splits `buf` into consecutive pieces of the given lengths.
pub(super) fn split(mut buf: &mut [u8], lens: impl Iterator<Item = usize>) -> Vec<&mut [u8]> {
    lens.map(|n| {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(n);
        buf = tail;
        head
    })
    .collect()
}
