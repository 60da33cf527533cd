//! Streaming execution of a merge plan over memory-mapped safetensors files.
//!
//! Inputs are mapped, checked against the first input (names, shapes, dtypes,
//! identical non-float tensors), and every output tensor is cut into chunks of
//! [`CHUNK_ELEMS`] elements. Chunks are processed in file order by the rayon
//! pool, in batches of at most [`BATCH_INPUT_BYTES`] input bytes: once a
//! batch is merged its input pages are released from this process's mapping
//! (the page cache keeps them) while the next ones are merged, so resident
//! memory stays about one output model (in memory) or a few batches (to
//! file). In memory, threads never wait for each other at batch ends; to a
//! file, each batch is handed to a writer thread. With hashing on,
//! each batch's input bytes are also fed to one BLAKE3 hasher per input (in
//! file order) while the batch is merged, so inputs are read only once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use memmap2::Mmap;
#[cfg(unix)]
use memmap2::UncheckedAdvice;
use rayon::prelude::*;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::MergeError;
use crate::method::{FloatDtype, FloatSlice, Linear, MergeMethod};
use crate::plan::{FlatPlan, MergePlan, Resolver, Source, Weighting};

/// Elements per chunk, the unit of parallel work (and of a method's error
/// report): 512 KiB of each `f32` input.
pub const CHUNK_ELEMS: usize = 128 * 1024;
/// Elements a chunk is merged and encoded in at a time, so that its `f64`
/// accumulator (64 KiB) stays in L2 between the method writing it and the
/// encode reading it. With the whole chunk's 1 MiB accumulator instead, the
/// reused merge took 10% longer; 2-32 Ki elements measured the same
/// (docs/bench-merge.md).
const TILE_ELEMS: usize = 8 * 1024;
/// Default input bytes (over all inputs) per batch: the unit in which input
/// pages are released, so at most about three batches of inputs are mapped.
/// 32 MiB measured no faster and peaked at 1.17-1.20x a model in memory,
/// against 1.12x (docs/bench-merge.md).
pub const BATCH_INPUT_BYTES: usize = 16 << 20;
/// Output bytes written between `fdatasync` calls, so flushing to disk
/// overlaps merging instead of all happening at the end.
const SYNC_EVERY_BYTES: usize = 128 << 20;
/// Metadata key under which outputs record their [`MergeRecord`] (JSON).
pub const METADATA_KEY: &str = "datamix.merge";
/// Name of the hash recorded for every input: [`InputRecord::hash`] is
/// `"blake3:<64 hex digits>"` (BLAKE3 of the whole file, 256-bit output).
pub const HASH_ALGORITHM: &str = "blake3";
/// Input bytes hashed per step when hashing a file on its own ([`file_hash`]).
const HASH_STEP: usize = 8 << 20;

/// Dtype of the floating tensors written by [`Merger::merge_to_file`] and
/// [`MergedTensors::save`]. Non-float tensors keep their dtype.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutDtype {
    /// IEEE single precision.
    #[default]
    F32,
    /// bfloat16 (round to nearest even).
    BF16,
    /// IEEE half precision (round to nearest even).
    F16,
}

impl OutDtype {
    fn float(self) -> FloatDtype {
        match self {
            OutDtype::F32 => FloatDtype::F32,
            OutDtype::BF16 => FloatDtype::BF16,
            OutDtype::F16 => FloatDtype::F16,
        }
    }
}

/// What a merge did: recorded as JSON in the output's metadata under
/// [`METADATA_KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// The merge method's name.
    pub method: String,
    /// How plan weights were treated.
    pub weighting: Weighting,
    /// The flattened plan with resolved files and their hashes.
    pub inputs: Vec<InputRecord>,
}

/// One input of a merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "InputRecordRepr")]
pub struct InputRecord {
    /// The plan leaf.
    pub source: Source,
    /// The file it resolved to.
    pub path: PathBuf,
    /// Its weight in the flattened plan.
    pub weight: f64,
    /// Hash of the whole file as `"<algorithm>:<hex>"` when hashing is on:
    /// `"blake3:..."` ([`HASH_ALGORITHM`], the same as [`file_hash`]).
    /// Records written by older versions, which stored a bare SHA-256 under
    /// `sha256`, read back as `"sha256:<hex>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// What [`InputRecord`] deserialises from (accepts the old `sha256` field).
#[derive(Deserialize)]
struct InputRecordRepr {
    source: Source,
    path: PathBuf,
    weight: f64,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

impl From<InputRecordRepr> for InputRecord {
    fn from(r: InputRecordRepr) -> Self {
        Self {
            source: r.source,
            path: r.path,
            weight: r.weight,
            hash: r.hash.or(r.sha256.map(|h| format!("sha256:{h}"))),
        }
    }
}

/// `"blake3:<hex>"` of a whole file, as recorded in [`InputRecord::hash`]
/// (for comparing a checkpoint with a merge record).
pub fn file_hash(path: &Path) -> Result<String, MergeError> {
    let file = File::open(path).map_err(|e| MergeError::io(path, e))?;
    // SAFETY: read-only mapping; as for merge inputs, the file must not be
    // modified while it is hashed.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| MergeError::io(path, e))?;
    let mut state = HashState::default();
    state.advance(&map, map.len(), true);
    Ok(state.finish())
}

/// Runs merge plans with one [`MergeMethod`] (builder style).
#[derive(Debug, Clone)]
pub struct Merger<M = Linear> {
    method: M,
    weighting: Weighting,
    out_dtype: OutDtype,
    hash_inputs: bool,
    huge_pages: bool,
    batch_bytes: usize,
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
        }
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
    fn alloc(&self, job: &Job) -> Vec<MergedTensor> {
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
    fn run_in_memory(&self, job: &Job, out: &mut MergedTensors) -> Result<(), MergeError> {
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
            for i in &mut record.inputs {
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
                        return Err(WriteError::Merge(MergeError::Method {
                            method: record.method.clone(),
                            tensor: String::new(),
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
    fn hash_states(&self, job: &Job) -> Option<Vec<HashState>> {
        self.hash_inputs
            .then(|| job.inputs.iter().map(|_| HashState::default()).collect())
    }

    fn prepare(
        &self,
        plan: &MergePlan,
        resolver: &impl Resolver,
        out_dtype: OutDtype,
    ) -> Result<(Job, MergeRecord), MergeError> {
        let flat = plan.flatten(self.weighting)?;
        let paths = resolve(&flat, resolver)?;
        let inputs = paths
            .iter()
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
        };
        Ok((
            Job::new(inputs, &flat, out_dtype, self.batch_bytes)?,
            record,
        ))
    }
}

fn resolve(flat: &FlatPlan, resolver: &impl Resolver) -> Result<Vec<PathBuf>, MergeError> {
    flat.terms
        .iter()
        .map(|t| match &t.source {
            Source::Path(p) => Ok(p.clone()),
            Source::Key(k) => resolver
                .resolve(k)
                .ok_or_else(|| MergeError::UnresolvedKey { key: k.clone() }),
        })
        .collect()
}

/// Splits `buf` into consecutive pieces of the given lengths.
fn split(mut buf: &mut [u8], lens: impl Iterator<Item = usize>) -> Vec<&mut [u8]> {
    lens.map(|n| {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(n);
        buf = tail;
        head
    })
    .collect()
}

/// One memory-mapped, header-validated input.
struct Input {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    order: Vec<String>,
    infos: HashMap<String, TensorInfo>,
}

impl Input {
    fn open(path: &Path) -> Result<Self, MergeError> {
        let file = File::open(path).map_err(|e| MergeError::io(path, e))?;
        // SAFETY: the mapping is read-only; like every mmap-based reader we
        // require that checkpoints are not modified while being merged.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| MergeError::io(path, e))?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| MergeError::InvalidFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let infos = meta
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + n,
            order: meta.offset_keys(),
            infos,
        })
    }
}

/// Drops a byte range of a read-only file mapping from this process's page
/// tables; the page cache keeps the data. Unix only (`madvise`); elsewhere
/// the pages stay mapped until the mapping is dropped.
fn release(map: &Mmap, r: Range<usize>) {
    if r.is_empty() {
        return;
    }
    #[cfg(unix)]
    {
        // SAFETY: the mapping is a read-only file mapping, so MADV_DONTNEED
        // only drops page-table entries: later reads fault the same file
        // contents back in. Failure is harmless (memory is simply not
        // released early), so it is ignored.
        let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, r.start, r.len()) };
    }
    #[cfg(not(unix))]
    let _ = map;
}

/// How far [`release_all`] releases each range. Both start at the 2 MiB
/// huge page (or page, where the kernel does not use 2 MiB huge pages)
/// holding the range's start: batches read each input in file order, so what
/// lies before a range is finished. Releasing only whole huge pages matters:
/// releasing part of one splits its mapping, and every split flushes the TLBs
/// of all cores at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounding {
    /// Up to each range's end, rounded out to a page: nothing reads on.
    Whole,
    /// Up to the start of the huge page holding each range's end, which the
    /// next batch may be reading (its faults map whole huge pages, or a few
    /// pages around the fault, never before that start); the release after
    /// that batch starts there, so nothing is skipped.
    Behind,
}

/// Drops byte ranges of read-only file mappings from this process's page
/// tables (the page cache keeps the data), rounded as `rounding` says.
///
/// On Linux one `process_madvise` call covers all of them, so that the kernel
/// (6.16 or later) flushes the other cores' TLBs once rather than once per
/// range: every flush interrupts each core running this process, and in a VM
/// every interrupt exits to the hypervisor. Releasing 8 inputs' ranges one
/// by one and splitting huge pages cost ~6 flushes per batch and made
/// releasing while merging slower than releasing between batches
/// (docs/bench-merge.md). Where the call is refused (kernels before 6.15)
/// the ranges are released one by one.
fn release_all<'a>(ranges: impl IntoIterator<Item = (&'a Mmap, Range<usize>)>, rounding: Rounding) {
    #[cfg(target_os = "linux")]
    {
        /// `PIDFD_SELF` (Linux 6.15): the calling process, no pidfd to open.
        const PIDFD_SELF: libc::c_int = -10000;
        /// The most iovecs one call takes (`UIO_MAXIOV`).
        const MAX_IOV: usize = 1024;
        let (page, huge) = (page_size(), huge_page_size());
        let iov: Vec<libc::iovec> = ranges
            .into_iter()
            .filter_map(|(map, r)| {
                let base = map.as_ptr() as usize;
                let a = rounded(base + r.start..base + r.end, base, rounding, page, huge);
                (!a.is_empty()).then_some(libc::iovec {
                    iov_base: a.start as *mut libc::c_void,
                    iov_len: a.len(),
                })
            })
            .collect();
        for part in iov.chunks(MAX_IOV) {
            let want: usize = part.iter().map(|v| v.iov_len).sum();
            // SAFETY: every iovec lies within a live read-only file mapping
            // (mappings start on a page and extend to the end of their last
            // page), so MADV_DONTNEED only drops page-table entries: later
            // reads fault the same file contents back in.
            let done = unsafe {
                libc::syscall(
                    libc::SYS_process_madvise,
                    PIDFD_SELF,
                    part.as_ptr(),
                    part.len(),
                    libc::MADV_DONTNEED,
                    0,
                )
            };
            if usize::try_from(done).is_ok_and(|d| d == want) {
                continue;
            }
            for v in part {
                // SAFETY: as above. Failure is harmless (memory is simply
                // not released early), so it is ignored.
                unsafe { libc::madvise(v.iov_base, v.iov_len, libc::MADV_DONTNEED) };
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    for (map, r) in ranges {
        let _ = rounding;
        release(map, r);
    }
}

/// What [`release_all`] releases of the address range `a` in a mapping that
/// starts at `map_start` (a page boundary), for pages of `page` bytes and
/// huge pages of `huge` (if the kernel uses them); may be empty.
fn rounded(
    a: Range<usize>,
    map_start: usize,
    rounding: Rounding,
    page: usize,
    huge: Option<usize>,
) -> Range<usize> {
    let unit = huge.unwrap_or(page);
    let start = (a.start / unit * unit).max(map_start);
    let end = match rounding {
        Rounding::Whole => a.end.next_multiple_of(page),
        Rounding::Behind => a.end / unit * unit,
    };
    start..end.max(start)
}

/// The size of a page, as the kernel reports it (4 KiB on x86-64, 16 KiB on
/// Apple Silicon and some arm64 kernels, 64 KiB on others).
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        // sysconf cannot fail for _SC_PAGESIZE; 1 keeps the rounding valid
        // (byte granularity) if it ever did.
        usize::try_from(p).map_or(1, |p| p.max(1))
    })
}

/// The kernel's PMD-sized transparent huge page, if it is 2 MiB (x86-64;
/// arm64 with 4 KiB pages). Larger ones (e.g. 512 MiB with 64 KiB pages)
/// would hold back far more than a batch, so they are not rounded to.
#[cfg(target_os = "linux")]
fn huge_page_size() -> Option<usize> {
    static SIZE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
        s.ok()?
            .trim()
            .parse()
            .ok()
            .filter(|&n: &usize| n == 2 << 20)
    })
}

/// Asks for transparent huge pages on the whole pages inside `buf` (Linux;
/// a no-op elsewhere and for buffers under one huge page). Pure advice: the
/// contents and the result of the merge do not change.
fn advise_huge_pages(buf: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        let page = page_size();
        if buf.len() < HUGE_PAGE {
            return;
        }
        let start = (buf.as_mut_ptr() as usize).next_multiple_of(page);
        let end = (buf.as_mut_ptr() as usize + buf.len()) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside `buf`, memory this process
            // owns and may write; MADV_HUGEPAGE only changes how the kernel
            // backs it, never its contents. Failure (e.g. THP disabled) is
            // harmless and ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// A running BLAKE3 hash of one input, fed in file order.
#[derive(Default)]
struct HashState {
    hasher: blake3::Hasher,
    /// Bytes hashed so far (the file's first `done` bytes).
    done: usize,
}

impl HashState {
    /// Hashes the mapping's bytes from where it stopped up to `upto`, and
    /// returns that range; `release_now` drops its pages as it goes (else
    /// the caller releases them).
    fn advance(&mut self, map: &Mmap, upto: usize, release_now: bool) -> Range<usize> {
        let (from, upto) = (self.done, upto.min(map.len()));
        while self.done < upto {
            let end = (self.done + HASH_STEP).min(upto);
            self.hasher.update(&map[self.done..end]);
            if release_now {
                release(map, self.done..end);
            }
            self.done = end;
        }
        from..self.done.max(from)
    }

    fn finish(&self) -> String {
        format!("{HASH_ALGORITHM}:{}", self.hasher.finalize().to_hex())
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Float(FloatDtype),
    Raw,
}

/// One output tensor and where it lives in every input.
struct Spec {
    name: String,
    shape: Vec<usize>,
    numel: usize,
    dtype: Dtype,
    kind: Kind,
    out_dtype: Dtype,
    /// Absolute byte offset of the tensor in each input's mapping.
    offsets: Vec<usize>,
}

impl Spec {
    fn in_size(&self) -> usize {
        self.dtype.bitsize() / 8
    }
    fn out_size(&self) -> usize {
        self.out_dtype.bitsize() / 8
    }
    fn out_bytes(&self) -> usize {
        self.numel * self.out_size()
    }
}

/// An element range of one tensor.
#[derive(Debug, Clone)]
struct Segment {
    tensor: usize,
    elems: Range<usize>,
}

impl Segment {
    fn len(&self) -> usize {
        self.elems.len()
    }
}

/// A validated merge: inputs, output layout, chunks and batches.
struct Job {
    inputs: Vec<Input>,
    /// Inputs with a non-zero weight, and those weights.
    active: Vec<usize>,
    weights: Vec<f64>,
    specs: Vec<Spec>,
    segments: Vec<Segment>,
    /// First segment of each tensor (plus one past the end).
    tensor_starts: Vec<usize>,
    batches: Vec<Range<usize>>,
}

fn is_unmergeable_float(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::F4
            | Dtype::F6_E2M3
            | Dtype::F6_E3M2
            | Dtype::F8_E5M2
            | Dtype::F8_E4M3
            | Dtype::F8_E8M0
            | Dtype::F8_E4M3FNUZ
            | Dtype::F8_E5M2FNUZ
            | Dtype::C64
    )
}

impl Job {
    fn new(
        inputs: Vec<Input>,
        flat: &FlatPlan,
        out_dtype: OutDtype,
        batch_bytes: usize,
    ) -> Result<Self, MergeError> {
        let first = &inputs[0];
        let mut specs = Vec::with_capacity(first.order.len());
        for name in &first.order {
            let info = &first.infos[name];
            let kind = match FloatDtype::from_safetensors(info.dtype) {
                Some(f) => Kind::Float(f),
                None if is_unmergeable_float(info.dtype) => {
                    return Err(MergeError::UnsupportedDtype {
                        path: first.path.clone(),
                        tensor: name.clone(),
                        dtype: format!("{:?}", info.dtype),
                    });
                }
                None => Kind::Raw,
            };
            let mut offsets = Vec::with_capacity(inputs.len());
            for input in &inputs {
                let other = input
                    .infos
                    .get(name)
                    .ok_or_else(|| MergeError::MissingTensor {
                        path: input.path.clone(),
                        tensor: name.clone(),
                        reference: first.path.clone(),
                    })?;
                if other.dtype != info.dtype {
                    return Err(MergeError::DtypeMismatch {
                        path: input.path.clone(),
                        tensor: name.clone(),
                        expected: format!("{:?}", info.dtype),
                        found: format!("{:?}", other.dtype),
                    });
                }
                if other.shape != info.shape {
                    return Err(MergeError::ShapeMismatch {
                        path: input.path.clone(),
                        tensor: name.clone(),
                        expected: info.shape.clone(),
                        found: other.shape.clone(),
                    });
                }
                offsets.push(input.data_start + other.data_offsets.0);
            }
            let numel = info.shape.iter().product();
            let spec = Spec {
                name: name.clone(),
                shape: info.shape.clone(),
                numel,
                dtype: info.dtype,
                kind,
                out_dtype: match kind {
                    Kind::Float(_) => out_dtype.float().to_safetensors(),
                    Kind::Raw => info.dtype,
                },
                offsets,
            };
            if let Kind::Raw = kind {
                let len = spec.numel * spec.in_size();
                let reference = &first.map[spec.offsets[0]..][..len];
                for (input, &off) in inputs.iter().zip(&spec.offsets).skip(1) {
                    if &input.map[off..][..len] != reference {
                        return Err(MergeError::NonFloatMismatch {
                            path: input.path.clone(),
                            tensor: name.clone(),
                        });
                    }
                }
            }
            specs.push(spec);
        }
        for input in &inputs[1..] {
            if let Some(extra) = input.order.iter().find(|n| !first.infos.contains_key(*n)) {
                return Err(MergeError::UnexpectedTensor {
                    path: input.path.clone(),
                    tensor: extra.clone(),
                    reference: first.path.clone(),
                });
            }
        }
        // Widest dtypes first keeps every output tensor aligned.
        specs.sort_by_key(|s| std::cmp::Reverse(s.out_size()));

        let mut segments = Vec::new();
        let mut tensor_starts = Vec::with_capacity(specs.len() + 1);
        for (t, s) in specs.iter().enumerate() {
            tensor_starts.push(segments.len());
            let step = match s.kind {
                Kind::Float(_) => CHUNK_ELEMS,
                Kind::Raw => s.numel.max(1),
            };
            let mut start = 0;
            while start < s.numel {
                let end = (start + step).min(s.numel);
                segments.push(Segment {
                    tensor: t,
                    elems: start..end,
                });
                start = end;
            }
        }
        tensor_starts.push(segments.len());

        let (active, weights): (Vec<usize>, Vec<f64>) = flat
            .terms
            .iter()
            .enumerate()
            .filter(|(_, t)| t.weight != 0.0)
            .map(|(i, t)| (i, t.weight))
            .unzip();
        let mut batches = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, seg) in segments.iter().enumerate() {
            let spec = &specs[seg.tensor];
            let n = match spec.kind {
                Kind::Float(_) => active.len(),
                Kind::Raw => 1,
            } * seg.len()
                * spec.in_size();
            if bytes > 0 && bytes + n > batch_bytes {
                batches.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += n;
        }
        if start < segments.len() {
            batches.push(start..segments.len());
        }
        Ok(Self {
            inputs,
            active,
            weights,
            specs,
            segments,
            tensor_starts,
            batches,
        })
    }

    fn segments_of(&self, tensor: usize) -> impl Iterator<Item = &Segment> + '_ {
        self.segments[self.tensor_starts[tensor]..self.tensor_starts[tensor + 1]].iter()
    }

    fn in_range(&self, seg: &Segment, input: usize) -> Range<usize> {
        let spec = &self.specs[seg.tensor];
        let base = spec.offsets[input];
        base + seg.elems.start * spec.in_size()..base + seg.elems.end * spec.in_size()
    }

    /// Merges the segments of batch `b` into `dsts` (one slice per segment,
    /// in the output dtype), in parallel, and meanwhile advances the inputs'
    /// hashes (if any) past the batch and releases the input ranges `mapped`
    /// (what the previous batch returned). Returns the input ranges that may
    /// now be mapped, for the next batch (or, after the last, the caller) to
    /// release.
    fn run_batch(
        &self,
        method: &dyn MergeMethod,
        b: usize,
        dsts: &mut [&mut [u8]],
        hashes: Option<&mut [HashState]>,
        mapped: Vec<(usize, Range<usize>)>,
    ) -> Result<Vec<(usize, Range<usize>)>, MergeError> {
        let segs = &self.segments[self.batches[b].clone()];
        let mut merge = || {
            segs.par_iter()
                .zip(dsts.par_iter_mut())
                .try_for_each(|(seg, dst)| self.run_segment(method, seg, dst))
        };
        let work = || match hashes {
            Some(states) => rayon::join(merge, || self.hash_batch(segs, states)),
            None => (merge(), Vec::new()),
        };
        // Releasing while merging, not between batches (where it left one
        // of two cores idle for ~12% of an in-memory merge).
        let ((merged, hashed), ()) = rayon::join(work, || self.release(mapped, Rounding::Behind));
        merged?;
        let mut next = self.release_ranges(b..b + 1);
        next.extend(hashed.into_iter().enumerate());
        Ok(next)
    }

    /// Merges every segment into `dsts` (one slice per segment, in the
    /// output dtype) and meanwhile advances the inputs' hashes (if any),
    /// without the pool ever waiting for a batch to finish: each pool thread
    /// takes the next item in file order (a segment or, with hashing, one
    /// input's hash step for a batch) from a shared counter, and whoever
    /// completes the last outstanding item of a batch releases that batch's
    /// input pages while the others go on. Batches still bound what is
    /// mapped; they are no longer points where threads meet.
    fn run_queued(
        &self,
        method: &dyn MergeMethod,
        dsts: &mut [&mut [u8]],
        hashes: Option<&mut [HashState]>,
    ) -> Result<(), MergeError> {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        enum Item {
            /// Merge this segment.
            Merge(usize),
            /// Hash this input (second) up to the end of this batch (first).
            Hash(usize, usize),
        }
        let hashing = hashes.is_some();
        let (mut items, mut batch_ends) = (Vec::new(), Vec::with_capacity(self.batches.len()));
        for (b, batch) in self.batches.iter().enumerate() {
            items.extend(batch.clone().map(Item::Merge));
            if hashing {
                items.extend((0..self.inputs.len()).map(|i| Item::Hash(b, i)));
            }
            batch_ends.push(items.len());
        }
        // The number of batches whose items all lie before item `k`.
        let batches_before = |k: usize| batch_ends.partition_point(|&e| e <= k);
        // Each item is taken once, so none of these locks is ever contended
        // (a hash step may wait for the same input's previous one).
        let dsts: Vec<Mutex<&mut [u8]>> = dsts.iter_mut().map(|d| Mutex::new(&mut **d)).collect();
        let hashes: Vec<Mutex<&mut HashState>> =
            hashes.into_iter().flatten().map(Mutex::new).collect();
        let hashed = Mutex::new(Vec::<(usize, usize, Range<usize>)>::new());
        let done: Vec<AtomicBool> = items.iter().map(|_| AtomicBool::new(false)).collect();
        let (next, failed) = (AtomicUsize::new(0), AtomicBool::new(false));
        let error = Mutex::new(None);
        // The first item not known to be done, and the batches released
        // (also readable without the lock).
        let progress = Mutex::new((0, 0));
        let released_batches = AtomicUsize::new(0);
        // Takes the hashed ranges of batches before `upto` out of `hashed`.
        let hashed_before = |hashed: &mut Vec<(usize, usize, Range<usize>)>, upto: usize| {
            let mut out = Vec::new();
            hashed.retain(|(b, i, r)| {
                let keep = *b >= upto;
                if !keep {
                    out.push((*i, r.clone()));
                }
                keep
            });
            out
        };
        let advance = || {
            // Whoever holds the lock is releasing and re-checks afterwards.
            let Ok(mut guard) = progress.try_lock() else {
                return;
            };
            let (first, released) = &mut *guard;
            loop {
                while *first < items.len() && done[*first].load(Ordering::Acquire) {
                    *first += 1;
                }
                let complete = batches_before(*first);
                if complete == *released {
                    return;
                }
                let mut ranges = self.release_ranges(*released..complete);
                ranges.extend(hashed_before(&mut hashed.lock().unwrap(), complete));
                *released = complete;
                released_batches.store(complete, Ordering::Release);
                self.release(ranges, Rounding::Behind);
            }
        };
        let work = || {
            while !failed.load(Ordering::Relaxed) {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(k) else { break };
                // At most one batch beyond the first unreleased one is
                // mapped: a thread that runs ahead (the other one descheduled
                // mid-item, say) waits here, and meanwhile releases what the
                // others finished.
                let batch = batches_before(k);
                while batch > released_batches.load(Ordering::Acquire) + 1 {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    advance();
                    std::thread::yield_now();
                }
                let result = match *item {
                    Item::Merge(s) => {
                        self.run_segment(method, &self.segments[s], &mut dsts[s].lock().unwrap())
                    }
                    Item::Hash(b, i) => {
                        let upto = self.hash_upto(&self.segments[self.batches[b].clone()], i);
                        let r = hashes[i]
                            .lock()
                            .unwrap()
                            .advance(&self.inputs[i].map, upto, false);
                        hashed.lock().unwrap().push((b, i, r));
                        Ok(())
                    }
                };
                if let Err(e) = result {
                    failed.store(true, Ordering::Relaxed);
                    error.lock().unwrap().get_or_insert(e);
                    break;
                }
                done[k].store(true, Ordering::Release);
                advance();
            }
        };
        rayon::scope(|s| {
            for _ in 1..rayon::current_num_threads() {
                s.spawn(|_| work());
            }
            work();
        });
        if let Some(e) = error.into_inner().unwrap() {
            return Err(e);
        }
        let (_, released) = progress.into_inner().unwrap();
        let mut ranges = self.release_ranges(released..self.batches.len());
        ranges.extend(hashed_before(&mut hashed.into_inner().unwrap(), usize::MAX));
        self.release(ranges, Rounding::Whole);
        Ok(())
    }

    /// Hashes every input (in parallel) up to the end of its bytes that the
    /// batch `segs` reads, so each page is hashed while the merge has it
    /// mapped and cached; returns the ranges hashed, to be released.
    fn hash_batch(&self, segs: &[Segment], states: &mut [HashState]) -> Vec<Range<usize>> {
        states
            .par_iter_mut()
            .enumerate()
            .map(|(i, state)| state.advance(&self.inputs[i].map, self.hash_upto(segs, i), false))
            .collect()
    }

    /// How far input `i` is hashed once the segments `segs` are merged: to
    /// the end of the last of its bytes they read.
    fn hash_upto(&self, segs: &[Segment], i: usize) -> usize {
        segs.iter()
            .map(|s| self.in_range(s, i).end)
            .max()
            .unwrap_or(0)
    }

    /// Hashes whatever the batches did not cover (e.g. trailing bytes) and
    /// writes the hashes into the record.
    fn finish_hashes(&self, states: Option<Vec<HashState>>, record: &mut MergeRecord) {
        let Some(mut states) = states else { return };
        let hashes: Vec<String> = states
            .par_iter_mut()
            .zip(&self.inputs)
            .map(|(state, input)| {
                state.advance(&input.map, input.map.len(), true);
                state.finish()
            })
            .collect();
        for (rec, h) in record.inputs.iter_mut().zip(hashes) {
            rec.hash = Some(h);
        }
    }

    /// Merges one segment into `dst` (in the output dtype), through this
    /// thread's accumulator.
    fn run_segment(
        &self,
        method: &dyn MergeMethod,
        seg: &Segment,
        dst: &mut [u8],
    ) -> Result<(), MergeError> {
        let spec = &self.specs[seg.tensor];
        let Kind::Float(dtype) = spec.kind else {
            dst.copy_from_slice(&self.inputs[0].map[self.in_range(seg, 0)]);
            return Ok(());
        };
        // Taken out rather than borrowed: a method that itself uses rayon may
        // let this thread run another chunk meanwhile, which then simply gets
        // a fresh buffer.
        let mut acc = ACC.take();
        let mut xs = Vec::with_capacity(self.active.len());
        let out_size = spec.out_size();
        let mut tiles = dst.chunks_mut(TILE_ELEMS * out_size).enumerate();
        let merged = tiles.try_for_each(|(t, dst)| {
            let start = seg.elems.start + t * TILE_ELEMS;
            let tile = Segment {
                tensor: seg.tensor,
                elems: start..start + dst.len() / out_size,
            };
            xs.clear();
            xs.extend(self.active.iter().map(|&i| {
                FloatSlice::new(dtype, &self.inputs[i].map[self.in_range(&tile, i)])
                    .expect("ranges are whole elements")
            }));
            acc.resize(tile.len(), 0.0);
            method
                .merge_chunk(&xs, &self.weights, &mut acc)
                .map_err(|reason| MergeError::Method {
                    method: method.name().to_string(),
                    tensor: spec.name.clone(),
                    reason,
                })?;
            encode(&acc, spec.out_dtype, dst);
            Ok(())
        });
        ACC.set(acc);
        merged
    }

    /// The input ranges to release once the batches `done` are merged: theirs
    /// and those of the batch before them. The kernel's fault-around maps a
    /// few pages on either side of a faulting address (all of a huge page),
    /// so these batches may have re-mapped the end of the previous one.
    fn release_ranges(&self, done: Range<usize>) -> Vec<(usize, Range<usize>)> {
        let start = |b: usize| self.batches.get(b).map_or(self.segments.len(), |r| r.start);
        self.ranges(&self.segments[start(done.start.saturating_sub(1))..start(done.end)])
    }

    /// The input byte ranges that the segments `segs` read, as
    /// `(input, range)`, adjacent ranges joined.
    fn ranges(&self, segs: &[Segment]) -> Vec<(usize, Range<usize>)> {
        (0..self.inputs.len())
            .flat_map(|i| {
                merge_ranges(segs.iter().map(|s| self.in_range(s, i)).collect())
                    .into_iter()
                    .map(move |r| (i, r))
            })
            .collect()
    }

    /// Drops input pages from this process's page tables (they stay in the
    /// page cache), so resident memory does not grow with the inputs.
    fn release(&self, ranges: Vec<(usize, Range<usize>)>, rounding: Rounding) {
        release_all(
            ranges.into_iter().map(|(i, r)| (&self.inputs[i].map, r)),
            rounding,
        );
    }
}

thread_local! {
    /// Each worker thread's `f64` accumulator (at most [`TILE_ELEMS`]
    /// elements), kept across chunks, batches and merges: allocating and
    /// zero-filling a fresh one per chunk cost ~2-4% of a merge, and methods
    /// write every element of it anyway.
    static ACC: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Writes `acc` into `dst` as little-endian `dtype` (a float dtype).
fn encode(acc: &[f64], dtype: Dtype, dst: &mut [u8]) {
    fn go<const N: usize>(acc: &[f64], dst: &mut [u8], f: impl Fn(f64) -> [u8; N]) {
        let (chunks, _) = dst.as_chunks_mut::<N>();
        chunks.iter_mut().zip(acc).for_each(|(c, &a)| *c = f(a));
    }
    match dtype {
        Dtype::F64 => go(acc, dst, f64::to_le_bytes),
        Dtype::BF16 => go(acc, dst, |a| half::bf16::from_f64(a).to_le_bytes()),
        Dtype::F16 => go(acc, dst, |a| half::f16::from_f64(a).to_le_bytes()),
        _ => encode_f32(acc, dst),
    }
}

/// Writes `acc` into `dst` as little-endian `f32`, with AVX-512 or AVX2 where
/// the CPU has them (detected at run time; ~2-4% of an in-memory merge,
/// docs/bench-merge.md). Every path rounds to nearest even, as `as f32` does.
fn encode_f32(acc: &[f64], dst: &mut [u8]) {
    #[inline(always)]
    fn portable(acc: &[f64], dst: &mut [u8]) {
        let (chunks, _) = dst.as_chunks_mut::<4>();
        chunks
            .iter_mut()
            .zip(acc)
            .for_each(|(c, &a)| *c = (a as f32).to_le_bytes());
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(acc: &[f64], dst: &mut [u8]) {
            portable(acc, dst);
        }
        #[target_feature(enable = "avx2")]
        fn avx2(acc: &[f64], dst: &mut [u8]) {
            portable(acc, dst);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { avx512(acc, dst) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { avx2(acc, dst) };
        }
    }
    portable(acc, dst);
}

/// Contents of one merged tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// A floating tensor, merged, as `f32`.
    F32(Vec<f32>),
    /// A non-float tensor, copied from the inputs (little-endian bytes).
    Raw {
        /// Its dtype.
        dtype: Dtype,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// One merged tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedTensor {
    name: String,
    shape: Vec<usize>,
    data: TensorData,
}

impl MergedTensor {
    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Its contents.
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    /// Its values if it is a floating tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::Raw { .. } => None,
        }
    }
    /// Its dtype in memory.
    pub fn dtype(&self) -> Dtype {
        match &self.data {
            TensorData::F32(_) => Dtype::F32,
            TensorData::Raw { dtype, .. } => *dtype,
        }
    }
    fn bytes(&self) -> &[u8] {
        match &self.data {
            TensorData::F32(v) => bytemuck::cast_slice(v),
            TensorData::Raw { bytes, .. } => bytes,
        }
    }
}

impl safetensors::View for &MergedTensor {
    fn dtype(&self) -> Dtype {
        MergedTensor::dtype(self)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.bytes().len()
    }
}

/// A merged model held in memory: tensors in output order, ready to load into
/// a model without touching disk (or to [`save`](Self::save)).
#[derive(Debug, Clone)]
pub struct MergedTensors {
    tensors: Vec<MergedTensor>,
    index: HashMap<String, usize>,
    record: MergeRecord,
}

impl MergedTensors {
    fn new(tensors: Vec<MergedTensor>, record: MergeRecord) -> Self {
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Self {
            tensors,
            index,
            record,
        }
    }

    /// The tensors, in output order.
    pub fn tensors(&self) -> &[MergedTensor] {
        &self.tensors
    }

    /// Takes the tensors out.
    pub fn into_tensors(self) -> Vec<MergedTensor> {
        self.tensors
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<&MergedTensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// What the merge did.
    pub fn record(&self) -> &MergeRecord {
        &self.record
    }

    /// The merged model as safetensors bytes (`f32` floats), e.g. for a
    /// loader that reads from a buffer: the same bytes as [`save`](Self::save)
    /// with [`OutDtype::F32`] (sorted header, so equal models give equal bytes).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, MergeError> {
        let mut order: Vec<&MergedTensor> = self.tensors.iter().collect();
        order.sort_by_key(|t| std::cmp::Reverse(t.dtype().bitsize()));
        let entries: Vec<_> = order
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.dtype(),
                    t.shape.as_slice(),
                    t.bytes().len(),
                )
            })
            .collect();
        let mut out = header_bytes(&entries, &self.record)?;
        for t in order {
            out.extend_from_slice(t.bytes());
        }
        Ok(out)
    }

    /// Writes the model to a safetensors file atomically, floats as `dtype`.
    pub fn save(&self, path: &Path, dtype: OutDtype) -> Result<(), MergeError> {
        let out = dtype.float().to_safetensors();
        let mut order: Vec<&MergedTensor> = self.tensors.iter().collect();
        let out_dtype = |t: &MergedTensor| match t.data {
            TensorData::F32(_) => out,
            TensorData::Raw { dtype, .. } => dtype,
        };
        order.sort_by_key(|t| std::cmp::Reverse(out_dtype(t).bitsize()));
        let entries: Vec<_> = order
            .iter()
            .map(|t| {
                let d = out_dtype(t);
                let numel: usize = t.shape.iter().product();
                (
                    t.name.as_str(),
                    d,
                    t.shape.as_slice(),
                    numel * d.bitsize() / 8,
                )
            })
            .collect();
        let header = header_bytes(&entries, &self.record)?;
        atomic_write(path, |file| {
            file.write_all(&header)?;
            let mut buf = Vec::new();
            let mut acc = Vec::new();
            for t in order {
                match &t.data {
                    TensorData::F32(v) if out != Dtype::F32 => {
                        for c in v.chunks(CHUNK_ELEMS) {
                            acc.clear();
                            acc.extend(c.iter().map(|&x| f64::from(x)));
                            buf.resize(c.len() * out.bitsize() / 8, 0);
                            encode(&acc, out, &mut buf);
                            file.write_all(&buf)?;
                        }
                    }
                    _ => file.write_all(t.bytes())?,
                }
            }
            Ok(())
        })
    }
}

fn metadata(record: &MergeRecord) -> Result<HashMap<String, String>, MergeError> {
    let json = serde_json::to_string(record).map_err(|e| MergeError::Method {
        method: record.method.clone(),
        tensor: String::new(),
        reason: format!("cannot serialise the merge record: {e}"),
    })?;
    Ok(HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (METADATA_KEY.to_string(), json),
    ]))
}

/// The safetensors header (length prefix + JSON padded to 8 bytes) for tensors
/// laid out back to back in the given order.
fn header_bytes(
    entries: &[(&str, Dtype, &[usize], usize)],
    record: &MergeRecord,
) -> Result<Vec<u8>, MergeError> {
    let mut map = serde_json::Map::new();
    map.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata(record)?).expect("string map"),
    );
    let mut offset = 0;
    for &(name, dtype, shape, bytes) in entries {
        let info = TensorInfo {
            dtype,
            shape: shape.to_vec(),
            data_offsets: (offset, offset + bytes),
        };
        offset += bytes;
        map.insert(
            name.to_string(),
            serde_json::to_value(info).expect("tensor info serialises"),
        );
    }
    let mut json = serde_json::to_vec(&map).expect("JSON map serialises");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    Ok(out)
}

enum WriteError {
    Io(std::io::Error),
    Merge(MergeError),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Writes `path` durably through [`datamix_io::AtomicFile`] (temporary file beside it,
/// fsync, rename, directory fsync, `0644` under the umask); on any error the temporary
/// file is removed.
fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), WriteError>,
) -> Result<(), MergeError> {
    let mut tmp = datamix_io::AtomicFile::create(path).map_err(MergeError::from)?;
    match write(tmp.file_mut()) {
        Ok(()) => {}
        Err(WriteError::Io(e)) => return Err(MergeError::io(path, e)),
        Err(WriteError::Merge(e)) => return Err(e),
    }
    tmp.commit().map_err(MergeError::from)
}

/// Sorts byte ranges and merges the overlapping or touching ones.
fn merge_ranges(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_start_at_the_huge_page_and_leave_the_one_read_on() {
        let (page, huge, mib) = (4096, Some(2 << 20), 1 << 20);
        let at = |a: Range<usize>, map_start, r, huge| rounded(a, map_start, r, page, huge);
        // From the huge page holding the start (never before the mapping).
        assert_eq!(
            at(3 * mib..9 * mib, 0, Rounding::Behind, huge),
            2 * mib..8 * mib
        );
        assert_eq!(
            at(3 * mib..9 * mib, 0, Rounding::Whole, huge),
            2 * mib..9 * mib
        );
        assert_eq!(
            at(3 * mib..5000 + 8 * mib, mib, Rounding::Whole, huge).start,
            2 * mib
        );
        assert_eq!(
            at(mib..9 * mib, 4096, Rounding::Behind, huge),
            4096..8 * mib
        );
        // A range inside one huge page: nothing yet, all of it when whole.
        assert!(at(5 * mib..5 * mib + 5, 0, Rounding::Behind, huge).is_empty());
        assert_eq!(
            at(5 * mib..5 * mib + 5, 0, Rounding::Whole, huge),
            4 * mib..5 * mib + page
        );
        // Without huge pages: pages.
        assert_eq!(at(5000..9000, 0, Rounding::Behind, None), 4096..8192);
        assert_eq!(at(5000..9000, 0, Rounding::Whole, None), 4096..12288);
        // Consecutive batches' releases leave no gap, however short the
        // batches: each starts at or before where the previous one ended.
        let ends = [
            0,
            mib / 2,
            mib,
            3 * mib,
            3 * mib + 7,
            4 * mib,
            7 * mib,
            9 * mib,
        ];
        let mut released = 0;
        for w in ends.windows(3) {
            // The release after batch w[1]..w[2] covers it and the one before.
            let r = at(w[0]..w[2], 0, Rounding::Behind, huge);
            assert!(
                r.is_empty() || r.start <= released,
                "{r:?} after {released}"
            );
            released = released.max(r.end);
        }
        let last = at(ends[ends.len() - 2]..9 * mib, 0, Rounding::Whole, huge);
        assert!(last.start <= released && last.end == 9 * mib);
    }

    #[test]
    fn f32_encoding_rounds_like_a_cast_on_every_path() {
        let mut acc: Vec<f64> = (0..1037).map(|i| (i as f64 - 500.0) / 3.0).collect();
        acc.extend([
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            1e300,
            -1e-300,
            f32::MIN_POSITIVE as f64 / 3.0,
            1.0 + f64::EPSILON,
            // Halfway between two f32: rounds to the even one.
            1.0 + f32::EPSILON as f64 / 2.0,
        ]);
        let mut dst = vec![0u8; acc.len() * 4 + 4];
        encode(&acc, Dtype::F32, &mut dst);
        for (i, (c, &a)) in dst.chunks(4).zip(&acc).enumerate() {
            let got = f32::from_le_bytes(c.try_into().unwrap());
            assert_eq!(got.to_bits(), (a as f32).to_bits(), "element {i}: {a}");
        }
        assert_eq!(
            dst[acc.len() * 4..],
            [0; 4],
            "writes nothing past the input"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_leave_the_mapping_and_read_back_the_same() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..6 << 20).map(|i: u32| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        // SAFETY: a private temporary file, not modified while mapped.
        let map = unsafe { Mmap::map(&file) }.unwrap();
        let sum = |m: &Mmap| m.iter().map(|&b| u64::from(b)).sum::<u64>();
        let want = sum(&map);
        // Resident bytes of this mapping, from /proc/self/smaps.
        let resident = |m: &Mmap| -> usize {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let start = format!("{:x}-", m.as_ptr() as usize);
            let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
            lines.next().expect("the mapping is listed");
            let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
            rss.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap()
                << 10
        };
        assert!(resident(&map) > 0);
        // Ranges not on page boundaries, in two inputs' worth of one call.
        release_all(
            [(&map, 1000..3 << 20), (&map, 3 << 20..map.len())],
            Rounding::Whole,
        );
        assert_eq!(resident(&map), 0);
        assert_eq!(sum(&map), want);
        // The sum mapped every page again; this releases up to the (huge)
        // page holding the end, and leaves the rest mapped.
        assert_eq!(resident(&map), map.len());
        release_all([(&map, 1000..5 << 20)], Rounding::Behind);
        let base = map.as_ptr() as usize;
        let r = rounded(
            base + 1000..base + (5 << 20),
            base,
            Rounding::Behind,
            page_size(),
            huge_page_size(),
        );
        assert!(r.end > base, "something is released");
        assert_eq!(resident(&map), map.len() - (r.end - base));
        assert_eq!(sum(&map), want);
        assert_eq!(&map[..], &data[..]);
    }
}
