//! Row kernels behind the fused CPU ops: plain `f32` slices in, no Burn types.
//!
//! Each kernel is one pass (or two) over its rows, vectorised by the compiler: the loops
//! work on 16-lane blocks with independent accumulators, every helper is
//! `#[inline(always)]` into a [`multiversion`] function, which is compiled once per SIMD
//! level (AVX-512, AVX2+FMA, NEON, ...) and picks the best at run time. Rows are spread over
//! rayon's pool in blocks. `exp` is a branch-free Cephes-style polynomial (below), not
//! libm's scalar `expf`, which Burn's CPU backend calls element by element.

use std::mem::MaybeUninit;

use multiversion::multiversion;
use rayon::prelude::*;

/// Lanes per block: one AVX-512 register of `f32`, two AVX2 ones.
const LANES: usize = 16;

/// Elements per rayon task: enough work to amortise a task, small enough to balance.
const TASK_ELEMS: usize = 1 << 15;

/// `e^x`, with a relative error below 2.5 `f32::EPSILON` for `x` in `[-87, 88]` (tested);
/// 0 below -87 (where
/// `e^x` leaves the normal range), `e^88` above 88, NaN for NaN. Range reduction
/// `x = n ln 2 + r` with `ln 2` in two parts (Cody-Waite), then a degree-7 polynomial for
/// `e^r` on `|r| <= ln 2 / 2` (Cephes `expf`'s coefficients), scaled by `2^n` through the
/// exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = x.clamp(-87.0, 88.0);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((n as i32 + 127) << 23) as u32);
    if x < -87.0 { 0.0 } else { er * two_n }
}

/// Largest element (NaNs ignored; `-inf` for an empty row).
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut blocks = xs.chunks_exact(LANES);
    for b in &mut blocks {
        for (a, &x) in acc.iter_mut().zip(b) {
            *a = if x > *a { x } else { *a };
        }
    }
    let tail = blocks.remainder().iter().copied();
    acc.into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m })
}

/// `Σ x` over the row.
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut blocks = xs.chunks_exact(LANES);
    for b in &mut blocks {
        for (a, &x) in acc.iter_mut().zip(b) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + blocks.remainder().iter().sum::<f32>()
}

/// `Σ e^(x - shift)` over the row.
#[inline(always)]
fn sum_exp(xs: &[f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut blocks = xs.chunks_exact(LANES);
    for b in &mut blocks {
        for (a, &x) in acc.iter_mut().zip(b) {
            *a += exp(x - shift);
        }
    }
    let tail: f32 = blocks.remainder().iter().map(|&x| exp(x - shift)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ a_i b_i` over two rows of equal length.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (mut ab, mut bb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ab).zip(&mut bb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ab
        .remainder()
        .iter()
        .zip(bb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Rows per rayon task for rows of `cols` elements.
fn rows_per_task(cols: usize) -> usize {
    (TASK_ELEMS / cols.max(1)).max(1)
}

// ---------------------------------------------------------------------------------------
// matrix product

/// Products below this many multiply-adds run on one thread.
const PARALLEL_GEMM: usize = 1 << 18;

/// `A B` for an `[m, k]` matrix `a` and a `[k, n]` matrix `b`, each read through its
/// `(row, column)` strides (so a transposed operand costs nothing), into a new row-major
/// `[m, n]` vector. `flex`'s own gemm crate, called as one problem over all rows (Burn's
/// `linear` runs one product per batch entry) and writing straight into the new buffer
/// (Burn zero-fills each output and then copies it into aligned storage).
pub(crate) fn matmul(
    dims: (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) -> Vec<f32> {
    let (m, k, n) = dims;
    let threads = if m * n * k >= PARALLEL_GEMM {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let mut out = Vec::<f32>::with_capacity(m * n);
    let spare = &mut out.spare_capacity_mut()[..m * n];
    product_into(spare, dims, a, a_strides, b, b_strides, threads);
    // SAFETY: `product_into` wrote all `m * n` elements.
    unsafe { out.set_len(m * n) };
    out
}

/// [`matmul`] into `dst` (`m * n` elements, uninitialised or not), on the calling thread
/// (callers spread independent products over rayon); returns `dst`, now initialised.
pub(crate) fn product<'a>(
    dst: &'a mut [MaybeUninit<f32>],
    dims: (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) -> &'a mut [f32] {
    product_into(
        dst,
        dims,
        a,
        a_strides,
        b,
        b_strides,
        gemm::Parallelism::None,
    );
    // SAFETY: `product_into` wrote every element of `dst`.
    unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `dst += A B` (shapes and strides as in [`matmul`]), on the calling thread.
pub(crate) fn product_add(
    dst: &mut [f32],
    dims: (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    let (m, k, n) = dims;
    check_operands(dims, a, a_strides, b, b_strides);
    assert_eq!(dst.len(), m * n, "dst is not [m, n]");
    if m * n * k == 0 {
        return;
    }
    // SAFETY: `dst` holds `m * n` initialised elements; the reads stay inside `a` and `b`.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            true,
            dims,
            a,
            a_strides,
            b,
            b_strides,
            gemm::Parallelism::None,
        )
    }
}

/// Writes `A B` into every element of `dst` (`m * n`).
fn product_into(
    dst: &mut [MaybeUninit<f32>],
    dims: (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    threads: gemm::Parallelism,
) {
    let (m, k, n) = dims;
    check_operands(dims, a, a_strides, b, b_strides);
    assert_eq!(dst.len(), m * n, "dst is not [m, n]");
    if m * n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(MaybeUninit::new(0.0));
        return;
    }
    // SAFETY: with `read_dst = false` gemm writes `dst = 1 * (a b)` to each of the
    // `m * n` elements without reading them; the reads stay inside `a` and `b`.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr().cast(),
            false,
            dims,
            a,
            a_strides,
            b,
            b_strides,
            threads,
        )
    }
}

/// Every element the operands' strides can reach lies inside them.
fn check_operands(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    if m * k > 0 {
        assert!(
            (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
            "lhs out of bounds"
        );
    }
    if k * n > 0 {
        assert!(
            (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
            "rhs out of bounds"
        );
    }
}

/// `dst = (read_dst ? dst : 0) + A B` with row-major `dst` (`[m, n]`, row stride `n`).
///
/// # Safety
/// `dst` must be valid for `m * n` writes (and reads, with `read_dst`); the operands
/// must pass [`check_operands`]; `m`, `k` and `n` must be positive.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    dst: *mut f32,
    read_dst: bool,
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    threads: gemm::Parallelism,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            read_dst,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            threads,
        )
    }
}

// ---------------------------------------------------------------------------------------
// log_softmax at the target

/// For each row `x` of `logits` (`rows * vocab`, row-major) and its target `t`:
/// `lse = ln Σ_v e^(x_v)` and `out = x_t - lse`, the target's log-probability.
pub(crate) fn target_logprobs(
    logits: &[f32],
    vocab: usize,
    targets: &[usize],
    out: &mut [f32],
    lse: &mut [f32],
) {
    let rows = rows_per_task(vocab);
    logits
        .par_chunks(rows * vocab)
        .zip(targets.par_chunks(rows))
        .zip(out.par_chunks_mut(rows).zip(lse.par_chunks_mut(rows)))
        .for_each(|((x, t), (o, l))| target_logprobs_block(x, vocab, t, o, l));
}

#[multiversion(targets = "simd")]
fn target_logprobs_block(
    logits: &[f32],
    vocab: usize,
    targets: &[usize],
    out: &mut [f32],
    lse: &mut [f32],
) {
    for (((x, &t), o), l) in logits.chunks_exact(vocab).zip(targets).zip(out).zip(lse) {
        let m = max(x);
        *l = m + sum_exp(x, m).ln();
        *o = x[t] - *l;
    }
}

/// Gradient of [`target_logprobs`] with respect to the logits, in place of them, given
/// the upstream gradient `g` of each row's output: `x_v <- g (δ_vt - e^(x_v - lse))`.
pub(crate) fn target_logprobs_grad(
    logits: &mut [f32],
    vocab: usize,
    targets: &[usize],
    lse: &[f32],
    g: &[f32],
) {
    let rows = rows_per_task(vocab);
    logits
        .par_chunks_mut(rows * vocab)
        .zip(targets.par_chunks(rows).zip(lse.par_chunks(rows)))
        .zip(g.par_chunks(rows))
        .for_each(|((x, (t, l)), g)| target_logprobs_grad_block(x, vocab, t, l, g));
}

#[multiversion(targets = "simd")]
fn target_logprobs_grad_block(
    logits: &mut [f32],
    vocab: usize,
    targets: &[usize],
    lse: &[f32],
    g: &[f32],
) {
    for (((x, &t), &l), &g) in logits.chunks_exact_mut(vocab).zip(targets).zip(lse).zip(g) {
        x.iter_mut().for_each(|x| *x = -g * exp(*x - l));
        x[t] += g;
    }
}

// ---------------------------------------------------------------------------------------
// SwiGLU's gate: silu(g) * u

/// `out = silu(g) ⊙ u = g σ(g) ⊙ u`, elementwise.
pub(crate) fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    g.par_chunks(TASK_ELEMS)
        .zip(u.par_chunks(TASK_ELEMS))
        .zip(out.par_chunks_mut(TASK_ELEMS))
        .for_each(|((g, u), o)| silu_mul_block(g, u, o));
}

#[multiversion(targets = "simd")]
fn silu_mul_block(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

/// Gradients of [`silu_mul`] given `d` (the output's), in place of the inputs:
/// `g <- d u σ(g) (1 + g (1 - σ(g)))` and `u <- d g σ(g)`.
pub(crate) fn silu_mul_grad(g: &mut [f32], u: &mut [f32], d: &[f32]) {
    g.par_chunks_mut(TASK_ELEMS)
        .zip(u.par_chunks_mut(TASK_ELEMS))
        .zip(d.par_chunks(TASK_ELEMS))
        .for_each(|((g, u), d)| silu_mul_grad_block(g, u, d));
}

#[multiversion(targets = "simd")]
fn silu_mul_grad_block(g: &mut [f32], u: &mut [f32], d: &[f32]) {
    for ((g, u), &d) in g.iter_mut().zip(u.iter_mut()).zip(d) {
        let (x, v) = (*g, *u);
        let s = 1.0 / (1.0 + exp(-x));
        *u = d * x * s;
        *g = d * v * s * (1.0 + x * (1.0 - s));
    }
}

// ---------------------------------------------------------------------------------------
// RoPE

/// Rotates, in place, each pair `(x_2j, x_2j+1)` of every row of `x` (`[batch, seq,
/// heads, head_dim]`, row-major) by its position's angle: `y_2j = x_2j c_2j - x_2j+1 s_2j`,
/// `y_2j+1 = x_2j+1 c_2j+1 + x_2j s_2j+1`, with `c`, `s` the `[seq, head_dim]` cos and sin
/// tables. With `transpose`, applies the transposed map instead (the backward pass):
/// `dx_2j = dy_2j c_2j + dy_2j+1 s_2j+1`, `dx_2j+1 = dy_2j+1 c_2j+1 - dy_2j s_2j`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope(
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    seq: usize,
    heads: usize,
    transpose: bool,
) {
    let hd = cos.len() / seq;
    let rows = rows_per_task(hd);
    x.par_chunks_mut(rows * hd)
        .enumerate()
        .for_each(|(i, x)| rope_block(x, cos, sin, i * rows, seq, heads, transpose));
}

#[multiversion(targets = "simd")]
fn rope_block(
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    first: usize,
    seq: usize,
    heads: usize,
    transpose: bool,
) {
    let hd = cos.len() / seq;
    let sign = if transpose { -1.0 } else { 1.0 };
    for (r, x) in x.chunks_exact_mut(hd).enumerate() {
        let pos = ((first + r) / heads) % seq;
        let (c, s) = (&cos[pos * hd..][..hd], &sin[pos * hd..][..hd]);
        for (x, (c, s)) in x
            .chunks_exact_mut(2)
            .zip(c.chunks_exact(2).zip(s.chunks_exact(2)))
        {
            // Forward: s_a = s_2j, s_b = s_2j+1; transposed: s_a = -s_2j+1, s_b = -s_2j.
            let (sa, sb) = if transpose {
                (s[1], s[0])
            } else {
                (s[0], s[1])
            };
            let (x0, x1) = (x[0], x[1]);
            x[0] = x0 * c[0] - sign * x1 * sa;
            x[1] = x1 * c[1] + sign * x0 * sb;
        }
    }
}

// ---------------------------------------------------------------------------------------
// RMSNorm

/// For each row `x` (`rows * d`): `rstd = 1 / sqrt(mean(x²) + eps)` and
/// `y = x rstd ⊙ gamma`.
pub(crate) fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, y: &mut [f32], rstd: &mut [f32]) {
    let d = gamma.len();
    let rows = rows_per_task(d);
    x.par_chunks(rows * d)
        .zip(y.par_chunks_mut(rows * d))
        .zip(rstd.par_chunks_mut(rows))
        .for_each(|((x, y), r)| rms_norm_block(x, gamma, eps, y, r));
}

#[multiversion(targets = "simd")]
fn rms_norm_block(x: &[f32], gamma: &[f32], eps: f32, y: &mut [f32], rstd: &mut [f32]) {
    let d = gamma.len();
    for ((x, y), r) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(rstd) {
        *r = 1.0 / (dot(x, x) / d as f32 + eps).sqrt();
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(gamma) {
            *y = x * *r * w;
        }
    }
}

/// Gradients of [`rms_norm`] given `dy`, in place of it: `dy <- dx = rstd (dy ⊙ gamma -
/// x̂ mean(dy ⊙ gamma ⊙ x̂))` with `x̂ = x rstd`; returns `dgamma = Σ_rows dy ⊙ x̂` (summed
/// per task, then over tasks).
pub(crate) fn rms_norm_grad(x: &[f32], gamma: &[f32], rstd: &[f32], dy: &mut [f32]) -> Vec<f32> {
    let d = gamma.len();
    let rows = rows_per_task(d);
    x.par_chunks(rows * d)
        .zip(dy.par_chunks_mut(rows * d))
        .zip(rstd.par_chunks(rows))
        .map(|((x, dy), r)| {
            let mut dgamma = vec![0f32; d];
            rms_norm_grad_block(x, gamma, r, dy, &mut dgamma);
            dgamma
        })
        .reduce(
            || vec![0f32; d],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            },
        )
}

#[multiversion(targets = "simd")]
fn rms_norm_grad_block(x: &[f32], gamma: &[f32], rstd: &[f32], dy: &mut [f32], dgamma: &mut [f32]) {
    let d = gamma.len();
    for ((x, dy), &r) in x.chunks_exact(d).zip(dy.chunks_exact_mut(d)).zip(rstd) {
        // mean(dy ⊙ gamma ⊙ x̂) = rstd Σ dy gamma x / d
        let mut acc = [0f32; LANES];
        let (mut xb, mut yb, mut gb) = (
            x.chunks_exact(LANES),
            dy.chunks_exact(LANES),
            gamma.chunks_exact(LANES),
        );
        for ((x, dy), g) in (&mut xb).zip(&mut yb).zip(&mut gb) {
            for i in 0..LANES {
                acc[i] += dy[i] * g[i] * x[i];
            }
        }
        let tail: f32 = (xb
            .remainder()
            .iter()
            .zip(yb.remainder())
            .zip(gb.remainder()))
        .map(|((x, dy), g)| dy * g * x)
        .sum();
        let c = r * r * (acc.iter().sum::<f32>() + tail) / d as f32;
        for (((dy, &x), &g), dgam) in dy.iter_mut().zip(x).zip(gamma).zip(&mut *dgamma) {
            *dgam += *dy * x * r;
            *dy = r * (*dy * g - x * c);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Optimizer

/// [`crate::optim::AdamWStep`]'s scalars as the `f32`s Burn's elementwise ops would
/// use (each `f64` rounded once).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamW {
    grad_scale: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias2: f32,
    eps: f32,
    keep: f32,
    step_size: f32,
}

impl From<&crate::optim::AdamWStep> for AdamW {
    fn from(s: &crate::optim::AdamWStep) -> Self {
        Self {
            grad_scale: s.grad_scale as f32,
            beta1: s.beta1 as f32,
            one_minus_beta1: s.one_minus_beta1 as f32,
            beta2: s.beta2 as f32,
            one_minus_beta2: s.one_minus_beta2 as f32,
            bias2: s.bias2 as f32,
            eps: s.eps as f32,
            keep: s.keep as f32,
            step_size: s.step_size as f32,
        }
    }
}

/// One AdamW update in place of `p`, `m`, `v` given the gradient `g`, element by element
/// in the composite's order of operations (so with the same `f32` roundings: no FMA).
pub(crate) fn adamw(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: &AdamW) {
    p.par_chunks_mut(TASK_ELEMS)
        .zip(m.par_chunks_mut(TASK_ELEMS))
        .zip(v.par_chunks_mut(TASK_ELEMS))
        .zip(g.par_chunks(TASK_ELEMS))
        .for_each(|(((p, m), v), g)| adamw_block(p, m, v, g, c));
}

#[multiversion(targets = "simd")]
fn adamw_block(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: &AdamW) {
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        let g = g * c.grad_scale;
        *m = *m * c.beta1 + g * c.one_minus_beta1;
        *v = *v * c.beta2 + g * g * c.one_minus_beta2;
        let update = *m / ((*v / c.bias2).sqrt() + c.eps);
        *p = *p * c.keep - update * c.step_size;
    }
}

/// `Σ x²` in `f64`: per block of [`TASK_ELEMS`], in parallel, then the block sums in
/// order (so the result does not depend on how rayon splits the work).
pub(crate) fn sum_squares(x: &[f32]) -> f64 {
    let blocks: Vec<f64> = x.par_chunks(TASK_ELEMS).map(sum_squares_block).collect();
    blocks.iter().sum()
}

#[multiversion(targets = "simd")]
fn sum_squares_block(x: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let mut blocks = x.chunks_exact(LANES);
    for b in &mut blocks {
        for (a, &x) in acc.iter_mut().zip(b) {
            *a += x as f64 * x as f64;
        }
    }
    let tail: f64 = blocks
        .remainder()
        .iter()
        .map(|&x| x as f64 * x as f64)
        .sum();
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_normal_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let exact = (x as f64).exp();
            let rel = ((exp(x) as f64 - exact) / exact).abs();
            worst = worst.max(rel);
            x += 0.001_37;
        }
        assert!(
            worst < 2.5 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp(-88.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
    }

    /// Exact (f64) log-softmax at the target, row by row.
    fn reference_logprobs(x: &[f32], vocab: usize, t: &[usize]) -> Vec<f32> {
        x.chunks(vocab)
            .zip(t)
            .map(|(row, &t)| {
                let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                (row[t] as f64 - m - s.ln()) as f32
            })
            .collect()
    }

    /// A deterministic pseudo-random row-major table in `[-scale, scale)`.
    pub(crate) fn table(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    #[test]
    fn target_logprobs_and_gradient_match_the_exact_ones() {
        // A vocabulary that is not a multiple of the lane count, and enough rows for
        // several rayon tasks.
        let (rows, vocab) = (70, 1003);
        let x = table(rows * vocab, 3, 20.0);
        let t: Vec<usize> = (0..rows).map(|r| (r * 37) % vocab).collect();
        let (mut out, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
        target_logprobs(&x, vocab, &t, &mut out, &mut lse);
        for (a, b) in out.iter().zip(reference_logprobs(&x, vocab, &t)) {
            assert!(close(*a, b, 1e-5), "{a} vs {b}");
        }
        // Gradient against central differences of the exact loss, g = row index weights.
        let g: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32 / rows as f32).collect();
        let mut grad = x.clone();
        target_logprobs_grad(&mut grad, vocab, &t, &lse, &g);
        for &(r, v) in &[(0, 0), (0, t[0]), (13, 500), (69, t[69]), (69, 1002)] {
            let h = 1e-2f64;
            let f = |dx: f64| {
                let mut y: Vec<f64> = x[r * vocab..(r + 1) * vocab]
                    .iter()
                    .map(|&a| a as f64)
                    .collect();
                y[v] += dx;
                let m = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = y.iter().map(|a| (a - m).exp()).sum();
                g[r] as f64 * (y[t[r]] - m - s.ln())
            };
            let numeric = (f(h) - f(-h)) / (2.0 * h);
            let got = grad[r * vocab + v] as f64;
            assert!(
                (got - numeric).abs() < 1e-4 * (1.0 + numeric.abs()),
                "{r},{v}: {got} vs {numeric}"
            );
        }
    }

    #[test]
    fn silu_mul_and_gradient_match_the_definition() {
        let n = 40_000; // more than one task
        let (g, u, d) = (table(n, 1, 12.0), table(n, 2, 3.0), table(n, 4, 1.0));
        let mut out = vec![0.0; n];
        silu_mul(&g, &u, &mut out);
        let (mut dg, mut du) = (g.clone(), u.clone());
        silu_mul_grad(&mut dg, &mut du, &d);
        for i in (0..n).step_by(97) {
            let (g, u, d) = (g[i] as f64, u[i] as f64, d[i] as f64);
            let s = 1.0 / (1.0 + (-g).exp());
            assert!((out[i] as f64 - g * s * u).abs() < 1e-5 * (1.0 + (g * u).abs()));
            assert!((du[i] as f64 - d * g * s).abs() < 1e-5 * (1.0 + g.abs()));
            let dg_exact = d * u * s * (1.0 + g * (1.0 - s));
            assert!((dg[i] as f64 - dg_exact).abs() < 1e-5 * (1.0 + dg_exact.abs()));
        }
    }

    #[test]
    fn rope_is_a_rotation_and_transpose_is_its_inverse() {
        let (b, seq, heads, hd) = (2, 5, 3, 8);
        let angle = |p: usize, j: usize| p as f32 * (0.3 + j as f32 / 10.0);
        let (mut cos, mut sin) = (vec![0.0; seq * hd], vec![0.0; seq * hd]);
        for p in 0..seq {
            for i in 0..hd {
                cos[p * hd + i] = angle(p, i / 2).cos();
                sin[p * hd + i] = angle(p, i / 2).sin();
            }
        }
        let x = table(b * seq * heads * hd, 12, 1.0);
        let mut y = x.clone();
        rope(&mut y, &cos, &sin, seq, heads, false);
        for (r, (xr, yr)) in x.chunks(hd).zip(y.chunks(hd)).enumerate() {
            let p = (r / heads) % seq;
            for j in 0..hd / 2 {
                let (c, s) = (angle(p, j).cos(), angle(p, j).sin());
                let (x0, x1) = (xr[2 * j], xr[2 * j + 1]);
                assert!((yr[2 * j] - (x0 * c - x1 * s)).abs() < 1e-6);
                assert!((yr[2 * j + 1] - (x1 * c + x0 * s)).abs() < 1e-6);
            }
        }
        // The transpose of a rotation is its inverse.
        let mut back = y.clone();
        rope(&mut back, &cos, &sin, seq, heads, true);
        for (a, b) in back.iter().zip(&x) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn matmul_matches_the_naive_product_with_transposed_operands() {
        // Large enough for the parallel path, and a small one.
        for (m, k, n) in [(70, 33, 129), (3, 2, 5)] {
            let a = table(m * k, 21, 1.0); // [m, k] row-major
            let b = table(k * n, 22, 1.0); // [k, n] row-major
            let naive: Vec<f64> = (0..m * n)
                .map(|i| {
                    (0..k)
                        .map(|j| a[i / n * k + j] as f64 * b[j * n + i % n] as f64)
                        .sum()
                })
                .collect();
            let check = |c: &[f32]| {
                for (x, y) in c.iter().zip(&naive) {
                    assert!((*x as f64 - y).abs() < 1e-4, "{x} vs {y}");
                }
            };
            check(&matmul((m, k, n), &a, (k, 1), &b, (n, 1)));
            // The same product from the transposes' storage, read through swapped strides.
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect(); // [k, m]
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect(); // [n, k]
            check(&matmul((m, k, n), &at, (1, m), &bt, (1, k)));
        }
        assert_eq!(matmul((2, 0, 3), &[], (0, 1), &[], (3, 1)), vec![0.0; 6]);
    }

    #[test]
    fn rms_norm_and_gradient_match_central_differences() {
        let (rows, d, eps) = (300, 70, 1e-5f32);
        let x = table(rows * d, 8, 2.0);
        let gamma = table(d, 6, 1.5);
        let (mut y, mut rstd) = (vec![0.0; rows * d], vec![0.0; rows]);
        rms_norm(&x, &gamma, eps, &mut y, &mut rstd);
        let dy = table(rows * d, 10, 1.0);
        let mut dx = dy.clone();
        let dgamma = rms_norm_grad(&x, &gamma, &rstd, &mut dx);
        // L = Σ dy ⊙ y in f64, differentiated numerically.
        let loss = |x: &[f64], gamma: &[f64]| -> f64 {
            x.chunks(d)
                .zip(dy.chunks(d))
                .map(|(x, dy)| {
                    let r =
                        1.0 / (x.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps as f64).sqrt();
                    x.iter()
                        .zip(gamma)
                        .zip(dy)
                        .map(|((x, g), dy)| x * r * g * *dy as f64)
                        .sum::<f64>()
                })
                .sum()
        };
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let g64: Vec<f64> = gamma.iter().map(|&v| v as f64).collect();
        let h = 1e-4;
        for &i in &[0, 69, 70, 1234, rows * d - 1] {
            let (mut a, mut b) = (x64.clone(), x64.clone());
            a[i] += h;
            b[i] -= h;
            let numeric = (loss(&a, &g64) - loss(&b, &g64)) / (2.0 * h);
            assert!(
                (dx[i] as f64 - numeric).abs() < 1e-3 * (1.0 + numeric.abs()),
                "dx[{i}]"
            );
        }
        for &j in &[0, 33, 69] {
            let (mut a, mut b) = (g64.clone(), g64.clone());
            a[j] += h;
            b[j] -= h;
            let numeric = (loss(&x64, &a) - loss(&x64, &b)) / (2.0 * h);
            assert!(
                (dgamma[j] as f64 - numeric).abs() < 1e-3 * (1.0 + numeric.abs()),
                "dgamma[{j}]"
            );
        }
        let r0 = 1.0 / ((x[..d].iter().map(|v| v * v).sum::<f32>() / d as f32) + eps).sqrt();
        assert!((y[5] - x[5] * r0 * gamma[5]).abs() < 1e-5);
    }
}
