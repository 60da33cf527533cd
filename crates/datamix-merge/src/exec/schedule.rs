//! The schedulers: batch by batch (to a file, each batch handed to the
//! writer) and one shared queue (in memory, threads never meet at batch
//! ends); the per-segment merge through a thread's accumulator; and which
//! input ranges are released when. Knows the job's layout and the method;
//! must not know where outputs go (slices it is handed) or how pages are
//! released (the `pages` module) or hashed (the `hash` module).

use std::ops::Range;

use rayon::prelude::*;

use crate::MergeError;
use crate::method::{FloatSlice, MergeMethod, TensorSlices};

use super::TILE_ELEMS;
use super::encode::encode;
use super::hash::HashState;
use super::job::{Job, Kind, Segment};
use super::pages::{Rounding, merge_ranges, release_all};
use super::record::MergeRecord;

impl Job {
    /// Merges the segments of batch `b` into `dsts` (one slice per segment,
    /// in the output dtype), in parallel, and meanwhile advances the inputs'
    /// hashes (if any) past the batch and releases the input ranges `mapped`
    /// (what the previous batch returned). Returns the input ranges that may
    /// now be mapped, for the next batch (or, after the last, the caller) to
    /// release.
    pub(super) fn run_batch(
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
    pub(super) fn run_queued(
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
    pub(super) fn hash_batch(
        &self,
        segs: &[Segment],
        states: &mut [HashState],
    ) -> Vec<Range<usize>> {
        states
            .par_iter_mut()
            .enumerate()
            .map(|(i, state)| state.advance(&self.inputs[i].map, self.hash_upto(segs, i), false))
            .collect()
    }

    /// How far input `i` is hashed once the segments `segs` are merged: to
    /// the end of the last of its bytes they read.
    pub(super) fn hash_upto(&self, segs: &[Segment], i: usize) -> usize {
        segs.iter()
            .map(|s| self.in_range(s, i).end)
            .max()
            .unwrap_or(0)
    }

    /// Hashes whatever the batches did not cover (e.g. trailing bytes) and
    /// writes the hashes into the record.
    pub(super) fn finish_hashes(&self, states: Option<Vec<HashState>>, record: &mut MergeRecord) {
        let Some(mut states) = states else { return };
        let hashes: Vec<String> = states
            .par_iter_mut()
            .zip(&self.inputs)
            .map(|(state, input)| {
                state.advance(&input.map, input.map.len(), true);
                state.finish()
            })
            .collect();
        // The models, then the base model (the last input).
        let recs = record.inputs.iter_mut().chain(&mut record.base);
        for (rec, h) in recs.zip(hashes) {
            rec.hash = Some(h);
        }
    }

    /// Merges one segment into `dst` (in the output dtype): tile by tile
    /// through this thread's accumulator for an elementwise method, in one
    /// piece (a segment is a whole tensor) for a whole-tensor one.
    pub(super) fn run_segment(
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
        let whole = self.layout.whole_tensors;
        let set = &self.layout.sets[spec.set];
        // Taken out rather than borrowed: a method that itself uses rayon may
        // let this thread run another chunk meanwhile, which then simply gets
        // a fresh buffer. A whole tensor's accumulator is not kept.
        let mut acc = if whole { Vec::new() } else { ACC.take() };
        let tile_elems = if whole { seg.len() } else { TILE_ELEMS };
        let mut xs = Vec::with_capacity(set.active.len());
        let out_size = spec.out_size();
        let mut tiles = dst.chunks_mut(tile_elems * out_size).enumerate();
        let merged = tiles.try_for_each(|(t, dst)| {
            let start = seg.elems.start + t * tile_elems;
            let tile = Segment {
                tensor: seg.tensor,
                elems: start..start + dst.len() / out_size,
            };
            let slice = |i: usize| {
                FloatSlice::new(dtype, &self.inputs[i].map[self.in_range(&tile, i)])
                    .expect("ranges are whole elements")
            };
            xs.clear();
            xs.extend(set.active.iter().map(|&i| slice(i)));
            acc.resize(tile.len(), 0.0);
            let slices = TensorSlices {
                name: &spec.name,
                shape: &spec.shape,
                elems: tile.elems.clone(),
                models: &xs,
                weights: &set.weights,
                base: self.layout.base.map(slice),
            };
            method
                .merge(&slices, &mut acc)
                .map_err(|source| MergeError::Method {
                    method: method.name().to_string(),
                    tensor: spec.name.clone(),
                    source,
                })?;
            encode(&acc, spec.out_dtype, dst);
            Ok(())
        });
        if !whole {
            ACC.set(acc);
        }
        merged
    }

    /// The input ranges to release once the batches `done` are merged: theirs
    /// and those of the batch before them. The kernel's fault-around maps a
    /// few pages on either side of a faulting address (all of a huge page),
    /// so these batches may have re-mapped the end of the previous one.
    pub(super) fn release_ranges(&self, done: Range<usize>) -> Vec<(usize, Range<usize>)> {
        let start = |b: usize| self.batches.get(b).map_or(self.segments.len(), |r| r.start);
        self.ranges(&self.segments[start(done.start.saturating_sub(1))..start(done.end)])
    }

    /// The input byte ranges that the segments `segs` read, as
    /// `(input, range)`, adjacent ranges joined.
    pub(super) fn ranges(&self, segs: &[Segment]) -> Vec<(usize, Range<usize>)> {
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
    pub(super) fn release(&self, ranges: Vec<(usize, Range<usize>)>, rounding: Rounding) {
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
