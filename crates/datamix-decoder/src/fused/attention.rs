//! Causal multi-query attention on plain `f32` slices, forward and backward, in blocks of
//! query positions so that the masked upper triangle is never computed.
//!
//! Per sequence the queries of all heads form one `[seq * heads, head_dim]` matrix (row
//! `i * heads + h` is query `i`, head `h`) against a single key and value head (`[seq,
//! head_dim]` each). The queries at positions `a..e` (one block) see keys `0..e` only, so
//! block `j` computes its scores, probabilities and their gradients as a
//! `[(e - a) * heads, e]` matrix: for `seq` 256 and blocks of 64 that is 62.5% of the full
//! square. Each block is a few single-threaded gemms and a row kernel, and all blocks of
//! all sequences run in parallel on rayon. For a backward pass the probabilities are kept,
//! block after block (`[rows, e]` each, see [`Causal::probs_per_seq`]).

use std::mem::MaybeUninit;

use multiversion::multiversion;
use rayon::prelude::*;

use super::kernels::{dot, exp, max, product, product_add, sum};

/// Query positions per block: rows enough for an efficient gemm (64 x heads), while the
/// diagonal blocks waste little on masked keys.
pub(crate) const QUERY_BLOCK: usize = 64;

/// The shape of one sequence's attention and its partition into query blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Causal {
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Query positions per block (positive).
    pub block: usize,
}

impl Causal {
    fn blocks(&self) -> usize {
        self.seq.div_ceil(self.block)
    }

    /// Block `j`'s positions `a..e`: its queries, and the keys it sees are `0..e`.
    fn span(&self, j: usize) -> (usize, usize) {
        (j * self.block, ((j + 1) * self.block).min(self.seq))
    }

    /// Elements of block `j`'s probabilities, `[(e - a) * heads, e]`.
    fn probs_len(&self, j: usize) -> usize {
        let (a, e) = self.span(j);
        (e - a) * self.heads * e
    }

    /// Elements of one sequence's probabilities, all blocks.
    pub(crate) fn probs_per_seq(&self) -> usize {
        (0..self.blocks()).map(|j| self.probs_len(j)).sum()
    }

    /// Elements of one sequence's queries (and outputs), `[seq * heads, head_dim]`.
    fn rows_len(&self) -> usize {
        self.seq * self.heads * self.head_dim
    }

    /// `buf` (one sequence's probabilities) cut into its blocks.
    fn split_probs<'a, T>(&self, mut buf: &'a mut [T]) -> Vec<&'a mut [T]> {
        (0..self.blocks())
            .map(|j| {
                let (head, rest) = std::mem::take(&mut buf).split_at_mut(self.probs_len(j));
                buf = rest;
                head
            })
            .collect()
    }

    /// Checks the tiling that [`forward`] and [`backward`] rely on before they `set_len`
    /// their outputs, and returns the batch size. The outputs are filled through
    /// `par_chunks_mut(..).zip(..)`, and a `zip` silently stops at its shorter side, so
    /// every element is written only if
    /// - `q` holds whole sequences and `k`, `v` exactly as many (no uncovered tail),
    /// - each sequence's output rows split into exactly [`Causal::blocks`] chunks of
    ///   `block * heads * head_dim` (the last one shorter), one per query block, as its
    ///   keys do into chunks of `block * head_dim` (backward), and
    /// - the probability blocks of [`Causal::split_probs`] fill [`Causal::probs_per_seq`].
    ///
    /// Each chunk is then written whole: `product` asserts that its destination is exactly
    /// the `[rows, cols]` it computes.
    fn assert_tiling(&self, q: usize, k: usize, v: usize) -> usize {
        let batch = q / self.rows_len().max(1);
        let kv = self.seq * self.head_dim;
        assert_eq!(
            q,
            batch * self.rows_len(),
            "q is not [batch, seq * heads, head_dim]"
        );
        assert_eq!(k, batch * kv, "k is not [batch, seq, head_dim]");
        assert_eq!(v, batch * kv, "v is not [batch, seq, head_dim]");
        if batch > 0 && self.rows_len() > 0 {
            let out_chunk = self.block * self.heads * self.head_dim;
            assert_eq!(self.rows_len().div_ceil(out_chunk), self.blocks());
            assert_eq!(kv.div_ceil(self.block * self.head_dim), self.blocks());
            for j in 0..self.blocks() {
                let (a, e) = self.span(j);
                let chunk = out_chunk.min(self.rows_len() - j * out_chunk);
                assert_eq!(chunk, (e - a) * self.heads * self.head_dim);
            }
        }
        batch
    }

    /// Block `j`'s slice of one sequence's probabilities.
    fn probs_block<'a>(&self, buf: &'a [f32], j: usize) -> &'a [f32] {
        let start: usize = (0..j).map(|i| self.probs_len(i)).sum();
        &buf[start..start + self.probs_len(j)]
    }
}

/// `out = softmax(scale q kᵀ + causal mask) v` for every sequence. `q`: `[batch, seq *
/// heads, head_dim]`, `k` and `v`: `[batch, seq, head_dim]`, all row-major. Returns `out`
/// (`[batch, seq * heads, head_dim]`) and, with `keep_probs` (for [`backward`]), the
/// probabilities (`batch` times [`Causal::probs_per_seq`]); without, each block's
/// probabilities live only while the block runs, so inference memory does not grow with
/// `batch * seq²`.
pub(crate) fn forward(
    c: Causal,
    (q, k, v): (&[f32], &[f32], &[f32]),
    scale: f32,
    keep_probs: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (h, hd, kv) = (c.heads, c.head_dim, c.seq * c.head_dim);
    let per = c.probs_per_seq();
    let batch = c.assert_tiling(q.len(), k.len(), v.len());
    if batch == 0 || per == 0 {
        return (vec![0.0; q.len()], keep_probs.then(Vec::new));
    }
    // One block `j` of sequence `n`: its probabilities into `p`, its output rows into `o`.
    let block = |n: usize, j: usize, p: &mut [MaybeUninit<f32>], o: &mut [MaybeUninit<f32>]| {
        let (a, e) = c.span(j);
        let rows = (e - a) * h;
        let q = &q[n * c.rows_len() + a * h * hd..][..rows * hd];
        let (k, v) = (&k[n * kv..][..kv], &v[n * kv..][..kv]);
        // [rows, hd] x [hd, e] (kᵀ through strides) -> [rows, e].
        let p = product(p, (rows, hd, e), q, (hd, 1), k, (1, hd));
        softmax_block(p, a * h, e, h, scale);
        // [rows, e] x [e, hd] -> [rows, hd].
        product(o, (rows, e, hd), p, (e, 1), v, (hd, 1));
    };
    let mut out = Vec::with_capacity(q.len());
    let outs = out.spare_capacity_mut()[..q.len()].par_chunks_mut(c.rows_len());
    let probs = if keep_probs {
        let mut probs = Vec::with_capacity(batch * per);
        outs.zip(probs.spare_capacity_mut()[..batch * per].par_chunks_mut(per))
            .enumerate()
            .for_each(|(n, (out, probs))| {
                c.split_probs(probs)
                    .into_par_iter()
                    .zip(out.par_chunks_mut(c.block * h * hd))
                    .enumerate()
                    .for_each(|(j, (p, o))| block(n, j, p, o));
            });
        // SAFETY: `assert_tiling` (above) checked that the per-sequence chunks and their
        // blocks tile the buffer, and each block wrote all of its probabilities.
        unsafe { probs.set_len(batch * per) };
        Some(probs)
    } else {
        outs.enumerate().for_each(|(n, out)| {
            out.par_chunks_mut(c.block * h * hd)
                .enumerate()
                .for_each(|(j, o)| {
                    let mut p = Vec::with_capacity(c.probs_len(j));
                    block(n, j, &mut p.spare_capacity_mut()[..c.probs_len(j)], o);
                });
        });
        None
    };
    // SAFETY: `assert_tiling` (above) checked that the blocks tile the output of every
    // sequence, and each wrote all its rows.
    unsafe { out.set_len(q.len()) };
    (out, probs)
}

/// The gradients `(dq, dk, dv)` of [`forward`] given `d_out` (its output's, same shape),
/// from the saved `probs`. Shapes as the inputs of [`forward`].
pub(crate) fn backward(
    c: Causal,
    (q, k, v): (&[f32], &[f32], &[f32]),
    probs: &[f32],
    d_out: &[f32],
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (h, hd, kv) = (c.heads, c.head_dim, c.seq * c.head_dim);
    let per = c.probs_per_seq();
    let batch = c.assert_tiling(q.len(), k.len(), v.len());
    if batch == 0 || per == 0 {
        return (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    }
    let mut dq = Vec::with_capacity(q.len());
    let mut dk = Vec::with_capacity(k.len());
    let mut dv = Vec::with_capacity(v.len());
    // dS, block by block as `probs`.
    let mut ds = Vec::<f32>::with_capacity(batch * per);
    dq.spare_capacity_mut()[..q.len()]
        .par_chunks_mut(c.rows_len())
        .zip(dk.spare_capacity_mut()[..k.len()].par_chunks_mut(kv))
        .zip(dv.spare_capacity_mut()[..v.len()].par_chunks_mut(kv))
        .zip(ds.spare_capacity_mut()[..batch * per].par_chunks_mut(per))
        .enumerate()
        .for_each(|(n, (((dq, dk), dv), ds))| {
            let rows = n * c.rows_len()..(n + 1) * c.rows_len();
            let (q, d_out) = (&q[rows.clone()], &d_out[rows]);
            let (k, v) = (&k[n * kv..][..kv], &v[n * kv..][..kv]);
            let probs = &probs[n * per..][..per];
            // Per query block: dP = dO vᵀ, dS = scale P ⊙ (dP - rowsum(P ⊙ dP)) in place,
            // dQ = dS k.
            let ds: Vec<&[f32]> = c
                .split_probs(ds)
                .into_par_iter()
                .zip(dq.par_chunks_mut(c.block * h * hd))
                .enumerate()
                .map(|(j, (ds, dq))| {
                    let (a, e) = c.span(j);
                    let rows = (e - a) * h;
                    let d_out = &d_out[a * h * hd..e * h * hd];
                    let ds = product(ds, (rows, hd, e), d_out, (hd, 1), v, (1, hd));
                    softmax_grad_block(c.probs_block(probs, j), ds, a * h, e, h, scale);
                    let ds: &[f32] = ds;
                    product(dq, (rows, e, hd), ds, (e, 1), k, (hd, 1));
                    ds
                })
                .collect();
            // Per key block `a..e`: the query blocks `j` from its own on see it, so
            // dK = Σ_j dS_jᵀ q_j and dV = Σ_j P_jᵀ dO_j over the key columns `a..e`
            // (the transposes read through strides): `[keys, rows] x [rows, hd]`.
            dk.par_chunks_mut(c.block * hd)
                .zip(dv.par_chunks_mut(c.block * hd))
                .enumerate()
                .for_each(|(i, (dk, dv))| {
                    let (a, e) = c.span(i);
                    let operands = |j: usize| {
                        let (qa, qe) = c.span(j);
                        let rows = qa * h * hd..qe * h * hd;
                        let dims = (e - a, (qe - qa) * h, hd);
                        let ds_t = (&ds[j][a..], (1, qe));
                        let p_t = (&c.probs_block(probs, j)[a..], (1, qe));
                        (dims, ds_t, p_t, &q[rows.clone()], &d_out[rows])
                    };
                    let (dims, (ds_t, st), (p_t, pt), q, d_out) = operands(i);
                    let dk = product(dk, dims, ds_t, st, q, (hd, 1));
                    let dv = product(dv, dims, p_t, pt, d_out, (hd, 1));
                    for j in i + 1..c.blocks() {
                        let (dims, (ds_t, st), (p_t, pt), q, d_out) = operands(j);
                        product_add(dk, dims, ds_t, st, q, (hd, 1));
                        product_add(dv, dims, p_t, pt, d_out, (hd, 1));
                    }
                });
        });
    // SAFETY: `assert_tiling` (above) checked that the query blocks tile `dq`, the key
    // blocks `dk` and `dv`, of every sequence, and each wrote all of its elements.
    unsafe {
        dq.set_len(q.len());
        dk.set_len(k.len());
        dv.set_len(v.len());
    }
    (dq, dk, dv)
}

/// In place over one block's scores (`[rows, width]`, row `r` is multi-query row
/// `first + r`): `softmax(scale * row)` over the keys that row sees, 0 after them.
#[multiversion(targets = "simd")]
fn softmax_block(scores: &mut [f32], first: usize, width: usize, heads: usize, scale: f32) {
    for (r, row) in scores.chunks_exact_mut(width).enumerate() {
        let (live, masked) = row.split_at_mut((first + r) / heads + 1);
        let m = max(live);
        live.iter_mut().for_each(|x| *x = exp(scale * (*x - m)));
        let inv = 1.0 / sum(live);
        live.iter_mut().for_each(|x| *x *= inv);
        masked.fill(0.0);
    }
}

/// Gradient of [`softmax_block`] in place of `dp` (the gradient of its output `p`):
/// `scale * p ⊙ (dp - Σ_j p_j dp_j)` per row, 0 at masked keys.
#[multiversion(targets = "simd")]
fn softmax_grad_block(
    p: &[f32],
    dp: &mut [f32],
    first: usize,
    width: usize,
    heads: usize,
    scale: f32,
) {
    let rows = p.chunks_exact(width).zip(dp.chunks_exact_mut(width));
    for (r, (p, d)) in rows.enumerate() {
        let n = (first + r) / heads + 1;
        let (live, masked) = d.split_at_mut(n);
        let c = dot(&p[..n], live);
        for (d, &p) in live.iter_mut().zip(p) {
            *d = scale * p * (*d - c);
        }
        masked.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::kernels::tests::table;

    /// Exact (f64) attention of one batch: `(out, dq, dk, dv)` for the loss `Σ d_out ⊙ out`.
    #[allow(clippy::type_complexity)]
    fn reference(
        c: Causal,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        d_out: &[f32],
        scale: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (s, h, hd) = (c.seq, c.heads, c.head_dim);
        let batch = q.len() / (s * h * hd);
        let f = |x: &[f32]| x.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let (q, k, v, d_out) = (f(q), f(k), f(v), f(d_out));
        let mut out = vec![0.0; q.len()];
        let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        for b in 0..batch {
            for i in 0..s {
                for head in 0..h {
                    let row = (b * s + i) * h + head;
                    let qr = &q[row * hd..][..hd];
                    let key = |j: usize| &k[(b * s + j) * hd..][..hd];
                    let val = |j: usize| &v[(b * s + j) * hd..][..hd];
                    let dot =
                        |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
                    let scores: Vec<f64> = (0..=i).map(|j| scale * dot(qr, key(j))).collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                    let p: Vec<f64> = scores.iter().map(|x| (x - m).exp() / z).collect();
                    let dor = &d_out[row * hd..][..hd];
                    let dp: Vec<f64> = (0..=i).map(|j| dot(dor, val(j))).collect();
                    let cc: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                    for j in 0..=i {
                        let ds = scale * p[j] * (dp[j] - cc);
                        for d in 0..hd {
                            out[row * hd + d] += p[j] * val(j)[d];
                            dv[(b * s + j) * hd + d] += p[j] * dor[d];
                            dq[row * hd + d] += ds * key(j)[d];
                            dk[(b * s + j) * hd + d] += ds * qr[d];
                        }
                    }
                }
            }
        }
        (out, dq, dk, dv)
    }

    fn assert_close(got: &[f32], exact: &[f64], what: &str) {
        assert_eq!(got.len(), exact.len(), "{what}: length");
        for (i, (&g, &e)) in got.iter().zip(exact).enumerate() {
            assert!(
                (g as f64 - e).abs() < 1e-5 * (1.0 + e.abs()),
                "{what}[{i}]: {g} vs {e}"
            );
        }
    }

    #[test]
    fn blocked_attention_and_gradients_match_the_exact_ones() {
        // Several blocks with a partial last one, one block exactly, one block larger than
        // the sequence, and blocks of one position.
        for block in [8, 37, 64, 1] {
            let c = Causal {
                seq: 37,
                heads: 3,
                head_dim: 5,
                block,
            };
            let batch = 2;
            let q = table(batch * 37 * 3 * 5, 1, 1.5);
            let k = table(batch * 37 * 5, 2, 1.5);
            let v = table(batch * 37 * 5, 3, 1.0);
            let d_out = table(q.len(), 4, 1.0);
            let scale = 0.45;
            let (out, probs) = forward(c, (&q, &k, &v), scale, true);
            let probs = probs.unwrap();
            assert_eq!(probs.len(), batch * c.probs_per_seq());
            let (inference, none) = forward(c, (&q, &k, &v), scale, false);
            assert!(none.is_none());
            assert_eq!(inference, out, "inference differs (block {block})");
            let (dq, dk, dv) = backward(c, (&q, &k, &v), &probs, &d_out, scale);
            let (eo, eq, ek, ev) = reference(c, &q, &k, &v, &d_out, scale as f64);
            assert_close(&out, &eo, &format!("out (block {block})"));
            assert_close(&dq, &eq, &format!("dq (block {block})"));
            assert_close(&dk, &ek, &format!("dk (block {block})"));
            assert_close(&dv, &ev, &format!("dv (block {block})"));
        }
    }

    #[test]
    fn blocks_store_only_the_visible_triangle_in_blocks() {
        let c = Causal {
            seq: 256,
            heads: 8,
            head_dim: 32,
            block: QUERY_BLOCK,
        };
        // Blocks of 64 see 64, 128, 192 and 256 keys: 5/8 of the full square.
        assert_eq!(c.probs_per_seq() * 8, 256 * 8 * 256 * 5);
        let one = Causal { block: 256, ..c };
        assert_eq!(one.probs_per_seq(), 256 * 8 * 256);
    }

    #[test]
    fn empty_inputs_give_empty_outputs() {
        let c = Causal {
            seq: 4,
            heads: 2,
            head_dim: 3,
            block: 2,
        };
        let (out, probs) = forward(c, (&[], &[], &[]), 1.0, true);
        assert!(out.is_empty() && probs.unwrap().is_empty());
        let (dq, dk, dv) = backward(c, (&[], &[], &[]), &[], &[], 1.0);
        assert!(dq.is_empty() && dk.is_empty() && dv.is_empty());
    }
}
