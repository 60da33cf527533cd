//! What this file owns: the batched MDE kernels in three families (`scalar`: f64, one
//! `ln` per token; `portable`: safe portable SIMD written with the `wide` crate, for
//! every CPU; `avx2` and `avx512`: x86_64 intrinsics, the only unsafe code), how one is
//! chosen for this CPU, and the unsafe SIMD code; the parent module (`loss.rs`) owns the
//! exact losses, the batching over mixtures and tokens, and feature matrices.
//!
//! The batched kernels: for a block of [`MB`] mixtures `j`, add
//! `Σ_{t0 <= t < t1} ln s_j(t)`, `s_j(t) = Σ_i λ_ji scaled_i(t)`, to `out[j]`.
//!
//! The SIMD kernels take far fewer logarithms with the same formula. A positive normal
//! f32 `x` is split by bit operations into its biased exponent `e` and mantissa
//! `m ∈ [1, 2)`, `x = 2^(e - 127) · m`, so a sum of logarithms becomes an integer sum of
//! exponents plus the `ln` of a product of mantissas:
//! - AVX2 and portable (the same algorithm, 8 lanes): each `s` is split,
//!   `Σ_t ln s_t = ln 2 · Σ_t (e_t - 127) + ln Π_t m_t`, and the mantissas of [`GROUP`]
//!   consecutive tokens of a lane are multiplied (the product stays in `[1, 2^GROUP)`:
//!   no overflow or underflow) before one `ln`.
//! - AVX-512: each lane keeps a running product, multiplied by [`SPLIT`] consecutive `s`
//!   and then split (exponent summed, mantissa kept), so half the integer operations; one
//!   `ln` of the running mantissa per [`GROUP`] tokens of a lane. The fast pass requires
//!   every running product to stay at or above [`PRODUCT_MIN`] (then every factor and
//!   partial product was a normal f32). It also uses the reference-expert form of `s`
//!   for blocks of mixtures that share their largest weight (see `avx512::sum`).
//!
//! Blocks of [`BLOCK`] tokens in which some `s < TINY` (AVX2, portable) or some running
//! product `< PRODUCT_MIN` (AVX-512; zero weights, underflow) are redone token by token
//! in the plain form, with the exact log-sum-exp for the tokens with `s < TINY` (AVX2
//! and AVX-512: one f32 `ln` per token, `careful`; portable: the scalar kernel's f64
//! `ln_mix`).
//!
//! Which kernel runs: [`select`] takes AVX-512, else AVX2 (both x86_64, detected at run
//! time), else `portable` (every CPU: on aarch64 `wide` compiles it to NEON, on baseline
//! x86_64 to SSE2, where it measured 15.6x the scalar kernel and 0.47x the AVX2 one on
//! one core, docs/benchmarks.md), for k <= 16; `scalar` for more experts. The
//! `portable` path has no `cfg`, no `unsafe` and no intrinsics: what runs on aarch64 is
//! the code the tests run on x86_64, compiled by `wide` for the target's vector unit.

use super::*;

/// Arguments: table, t0, t1 (`t1 - t0` a multiple of 16), a [`Block`] of [`MB`]
/// mixtures, and the `MB` sums to add to.
///
/// An `unsafe fn`: the x86_64 SIMD kernels are undefined behaviour on a CPU without
/// their instruction set. Only [`Choice::run`] calls one, and a [`Choice`] holding one
/// of those exists only after its feature check (`avx512_choice` / `avx2_choice`; the
/// field is private to this module). The `scalar` and `portable` kernels are safe
/// functions (coerced to this pointer type) and run on any CPU.
pub(super) type Kernel = unsafe fn(&ExpertTable, usize, usize, &Block, &mut [f64]);

/// [`MB`] mixtures `j` over `k` experts, as each kernel wants them (row-major,
/// `MB * k` entries per slice).
pub(super) struct Block<'a> {
    /// λ (f64).
    pub(super) lam: &'a [f64],
    /// λ (f32).
    pub(super) lam32: &'a [f32],
    /// ln λ (f64; `-inf` for zero weights).
    pub(super) ln_lam: &'a [f64],
    /// `λ_ji / Σ_i λ_ji` (f32), the weights of the reference-expert form.
    pub(super) unit32: &'a [f32],
    /// Reference expert `r_j` of each mixture (the first largest λ_ji).
    pub(super) reference: &'a [usize],
    /// `ln Σ_i λ_ji` (f64; 0 up to the [`SUM_TOLERANCE`] of validation).
    pub(super) ln_sum: &'a [f64],
}

/// A kernel and what it is: the token that it may run on this CPU. Made only here, by
/// [`SCALAR`], [`portable_choice`] (safe code, any CPU) and the x86_64 `*_choice`
/// functions after their feature checks.
#[derive(Clone, Copy)]
pub(super) struct Choice {
    pub(super) name: &'static str,
    pub(super) tokens_per_ln: usize,
    kernel: Kernel,
}

impl Choice {
    /// Runs the kernel (arguments as for [`Kernel`]; they are checked by each SIMD
    /// kernel before its unsafe code).
    pub(super) fn run(
        &self,
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        block: &Block,
        out: &mut [f64],
    ) {
        // SAFETY: a `Choice` holds an x86_64 SIMD kernel only if it was made by
        // `avx512_choice` / `avx2_choice`, after checking that this CPU has the
        // kernel's features (the field is private to this module, and no code here
        // builds a `Choice` otherwise); `scalar` and `portable` are safe functions,
        // with no precondition.
        unsafe { (self.kernel)(table, t0, t1, block, out) }
    }
}

/// Tokens (per SIMD lane) per `ln`: whose mantissas are multiplied (AVX2, portable; the
/// product stays below 2^GROUP), or over which the running product is kept (AVX-512).
const GROUP: usize = 64;
/// Vectors of 16 tokens whose mixture probabilities the AVX-512 kernel multiplies
/// into its running products before splitting those into exponent and mantissa.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const SPLIT: usize = 2;
/// Smallest running product (after SPLIT factors) of the AVX-512 fast pass: above it
/// every factor and partial product was a normal f32 (see `avx512::sum`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PRODUCT_MIN: f32 = f32::MIN_POSITIVE * 4.0;
/// Tokens per underflow check of the SIMD kernels.
const BLOCK: usize = 1024;

/// The f64 kernel, one `ln` per token (any CPU, any k).
pub(super) const SCALAR: Choice = Choice {
    name: "scalar",
    tokens_per_ln: 1,
    kernel: scalar,
};

/// The kernel called `name` for `k` experts, if this CPU has it.
pub(super) fn by_name(name: &str, k: usize) -> Option<Choice> {
    match name {
        "scalar" => Some(SCALAR),
        "portable" => portable_choice(k),
        #[cfg(target_arch = "x86_64")]
        "avx512" => avx512_choice(k),
        #[cfg(target_arch = "x86_64")]
        "avx2" => avx2_choice(k),
        _ => None,
    }
}

/// The fastest kernel for `k` experts on this CPU: AVX-512, else AVX2 (x86_64, run-time
/// detection), else portable SIMD (k <= 16), else scalar.
pub(super) fn select(k: usize) -> Choice {
    #[cfg(target_arch = "x86_64")]
    if let Some(c) = avx512_choice(k).or_else(|| avx2_choice(k)) {
        return c;
    }
    portable_choice(k).unwrap_or(SCALAR)
}

macro_rules! pick {
    ($m:ident, $k:expr) => {
        match $k {
            1 => Some($m::entry::<1> as Kernel),
            2 => Some($m::entry::<2> as Kernel),
            3 => Some($m::entry::<3> as Kernel),
            4 => Some($m::entry::<4> as Kernel),
            5 => Some($m::entry::<5> as Kernel),
            6 => Some($m::entry::<6> as Kernel),
            7 => Some($m::entry::<7> as Kernel),
            8 => Some($m::entry::<8> as Kernel),
            9 => Some($m::entry::<9> as Kernel),
            10 => Some($m::entry::<10> as Kernel),
            11 => Some($m::entry::<11> as Kernel),
            12 => Some($m::entry::<12> as Kernel),
            13 => Some($m::entry::<13> as Kernel),
            14 => Some($m::entry::<14> as Kernel),
            15 => Some($m::entry::<15> as Kernel),
            16 => Some($m::entry::<16> as Kernel),
            _ => None,
        }
    };
}

/// The AVX-512 kernel for `k` experts, if the CPU has AVX-512F (+AVX2, FMA) and k <= 16.
#[cfg(target_arch = "x86_64")]
pub(super) fn avx512_choice(k: usize) -> Option<Choice> {
    if !crate::fastln::avx512::available() {
        return None;
    }
    pick!(avx512, k).map(|kernel| Choice {
        name: "avx512",
        tokens_per_ln: GROUP,
        kernel,
    })
}

/// The AVX2 kernel for `k` experts, if the CPU has AVX2 and FMA and k <= 16.
#[cfg(target_arch = "x86_64")]
pub(super) fn avx2_choice(k: usize) -> Option<Choice> {
    if !crate::fastln::avx2::available() {
        return None;
    }
    pick!(avx2, k).map(|kernel| Choice {
        name: "avx2",
        tokens_per_ln: GROUP,
        kernel,
    })
}

/// The portable SIMD kernel for `k` experts, if k <= 16 (any CPU: safe code).
pub(super) fn portable_choice(k: usize) -> Option<Choice> {
    pick!(portable, k).map(|kernel| Choice {
        name: "portable",
        tokens_per_ln: GROUP,
        kernel,
    })
}

/// Scalar kernel (f64, one `ln` per token, exact fallback per token).
fn scalar(table: &ExpertTable, t0: usize, t1: usize, block: &Block, out: &mut [f64]) {
    let k = table.n_experts();
    for (j, o) in out.iter_mut().enumerate() {
        let r = j * k..(j + 1) * k;
        *o += (t0..t1)
            .map(|t| ln_mix(table, t, &block.lam[r.clone()], &block.ln_lam[r.clone()]))
            .sum::<f64>();
    }
}

/// Exact values for the tokens flagged in `mask` (bit `b` = token `t + b`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[cold]
#[inline(never)]
fn fix_lanes(table: &ExpertTable, t: usize, mask: u32, ln_lam: &[f64]) -> f64 {
    (0..16)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| ln_mix_exact(table, t + b, ln_lam))
        .sum()
}

/// Whether a kernel's arguments are consistent (checked by the SIMD kernels first).
fn valid_args(
    table: &ExpertTable,
    k: usize,
    t0: usize,
    t1: usize,
    block: &Block,
    out: &[f64],
) -> bool {
    table.n_experts() == k
        && block.lam.len() == k * MB
        && block.lam32.len() == k * MB
        && block.ln_lam.len() == k * MB
        && block.unit32.len() == k * MB
        && block.reference.len() == MB
        && block.reference.iter().all(|&r| r < k)
        && block.ln_sum.len() == MB
        && out.len() == MB
        && t0 <= t1
        && t1 <= table.n_tokens()
        && (t1 - t0).is_multiple_of(16)
}

/// The portable SIMD kernel: the AVX2 kernel's algorithm in safe code on `wide`'s
/// 8-lane vectors, which `wide` compiles for the target's vector unit (NEON on aarch64,
/// SSE2 on baseline x86_64, AVX/AVX2 when compiled with those features, scalar code
/// elsewhere). Nothing here is arch-specific.
mod portable {
    use super::*;
    use crate::fastln::portable::{hsum_f64, ln8};
    use wide::{f32x8, u32x8};

    /// The kernel's entry point: checks its arguments (panics if inconsistent), then
    /// runs [`sum`] per mixture.
    pub(in super::super) fn entry<const K: usize>(
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        block: &Block,
        out: &mut [f64],
    ) {
        assert!(valid_args(table, K, t0, t1, block, out));
        for (j, o) in out.iter_mut().enumerate() {
            let r = j * K..(j + 1) * K;
            *o += sum::<K>(
                table,
                t0,
                t1,
                &block.lam32[r.clone()],
                &block.lam[r.clone()],
                &block.ln_lam[r],
            );
        }
    }

    /// Σ ln s of one mixture over `[t0, t1)` (`t1 - t0` a multiple of 8), as
    /// `avx2::sum`: 8 tokens per step (K multiply-adds in two chains with λ held in
    /// vectors), one `ln` per [`GROUP`] mantissa products of a lane, integer exponent
    /// sums; a block whose minimum s is below TINY is redone by the scalar kernel's
    /// per-token [`ln_mix`] (f64 `ln`, exact log-sum-exp for the tiny ones), so such
    /// rare blocks run at the scalar kernel's speed (AVX2 has a SIMD `careful` pass).
    fn sum<const K: usize>(
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        lam32: &[f32],
        lam: &[f64],
        ln_lam: &[f64],
    ) -> f64 {
        let n = table.n_tokens();
        let q = table.scaled();
        let lamv: [f32x8; K] = std::array::from_fn(|i| f32x8::splat(lam32[i]));
        let mant = u32x8::splat(0x007F_FFFF);
        let one_bits = u32x8::splat(0x3F80_0000);
        let tiny = f32x8::splat(TINY);
        let mut total = 0.0f64;
        let mut t = t0;
        while t < t1 {
            let end = t1.min(t + BLOCK);
            // The block's 8-token vectors of each expert row.
            let rows: [&[[f32; 8]]; K] =
                std::array::from_fn(|i| q[i * n + t..i * n + end].as_chunks::<8>().0);
            let steps = (end - t) / 8;
            let mut acc = f32x8::ZERO;
            let mut ex = u32x8::ZERO;
            let mut low = f32x8::ONE;
            let mut v = 0;
            while v < steps {
                let group_end = steps.min(v + GROUP);
                let mut prod = f32x8::ONE;
                while v < group_end {
                    let s = mix8::<K>(&rows, v, &lamv);
                    low = low.fast_min(s);
                    let bits = s.to_bits();
                    ex += bits >> 23u32;
                    prod *= f32x8::from_bits((bits & mant) | one_bits);
                    v += 1;
                }
                acc += ln8(prod);
            }
            total += if low.simd_lt(tiny).any() {
                (t..end).map(|t| ln_mix(table, t, lam, ln_lam)).sum::<f64>()
            } else {
                let e: i64 = ex.to_array().iter().map(|&x| i64::from(x)).sum();
                hsum_f64(acc) + LN_2 * (e - 127 * (end - t) as i64) as f64
            };
            t = end;
        }
        total
    }

    /// `Σ_i λ_i scaled_i` for the 8 tokens of step `v` of a block (two interleaved
    /// chains, as `avx2::mix8`).
    #[inline(always)]
    fn mix8<const K: usize>(rows: &[&[[f32; 8]]; K], v: usize, lamv: &[f32x8; K]) -> f32x8 {
        let row = |i: usize| f32x8::new(rows[i][v]);
        let mut a = lamv[0] * row(0);
        if K == 1 {
            return a;
        }
        let mut b = lamv[1] * row(1);
        let mut i = 2;
        while i + 1 < K {
            a = lamv[i].mul_add(row(i), a);
            b = lamv[i + 1].mul_add(row(i + 1), b);
            i += 2;
        }
        if i < K {
            a = lamv[i].mul_add(row(i), a);
        }
        a + b
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::fastln::avx2::{hsum_f64, ln8};
    use std::arch::x86_64::*;

    /// The kernel's entry point: checks its arguments (panics if inconsistent), then
    /// runs [`sum`] per mixture.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA (`crate::fastln::avx2::available()`).
    pub(in super::super) unsafe fn entry<const K: usize>(
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        block: &Block,
        out: &mut [f64],
    ) {
        assert!(valid_args(table, K, t0, t1, block, out));
        let (lam, ln_lam) = (block.lam32, block.ln_lam);
        for (j, o) in out.iter_mut().enumerate() {
            let r = j * K..(j + 1) * K;
            // SAFETY: the caller guarantees AVX2 and FMA; the bounds are asserted
            // above.
            *o += unsafe { sum::<K>(table, t0, t1, &lam[r.clone()], &ln_lam[r]) };
        }
    }

    /// Σ ln s of one mixture over `[t0, t1)`: 8 tokens per step (K multiply-adds with
    /// λ in registers), grouped `ln` of mantissa products, integer exponent sums, and
    /// [`careful`] for the blocks whose minimum s is below TINY.
    ///
    /// # Safety
    /// AVX2+FMA available, `t1 <= T`, `(t1 - t0) % 16 == 0`, `lam.len() == K`,
    /// `ln_lam.len() == K`, `K` the table's expert count.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum<const K: usize>(
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        lam: &[f32],
        ln_lam: &[f64],
    ) -> f64 {
        let n = table.n_tokens();
        let base = table.scaled().as_ptr();
        let lamv: [__m256; K] = std::array::from_fn(|i| _mm256_set1_ps(lam[i]));
        let one = _mm256_set1_ps(1.0);
        let mant = _mm256_set1_epi32(0x007F_FFFF);
        let one_bits = _mm256_set1_epi32(0x3F80_0000);
        let mut total = 0.0f64;
        let mut t = t0;
        while t < t1 {
            let end = t1.min(t + BLOCK);
            let mut acc = _mm256_setzero_ps();
            let mut ex = _mm256_setzero_si256();
            let mut low = one;
            let mut tt = t;
            while tt < end {
                let group_end = end.min(tt + 8 * GROUP);
                let mut prod = one;
                while tt < group_end {
                    // SAFETY: `tt + 8 <= end <= T` (caller's contract).
                    let s = unsafe { mix8::<K>(base, n, tt, &lamv) };
                    low = _mm256_min_ps(low, s);
                    let bits = _mm256_castps_si256(s);
                    ex = _mm256_add_epi32(ex, _mm256_srli_epi32::<23>(bits));
                    let m = _mm256_or_si256(_mm256_and_si256(bits, mant), one_bits);
                    prod = _mm256_mul_ps(prod, _mm256_castsi256_ps(m));
                    tt += 8;
                }
                acc = _mm256_add_ps(acc, ln8(prod));
            }
            let low = _mm256_cmp_ps::<_CMP_LT_OQ>(low, _mm256_set1_ps(TINY));
            total += if _mm256_movemask_ps(low) == 0 {
                let mut lanes = [0i32; 8];
                // SAFETY: `lanes` is 32 bytes.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), ex) };
                let e: i64 = lanes.iter().map(|&x| x as i64).sum();
                hsum_f64(acc) + LN_2 * (e - 127 * (end - t) as i64) as f64
            } else {
                // SAFETY: same range as the fast pass.
                unsafe { careful::<K>(table, t, end, lam, ln_lam) }
            };
            t = end;
        }
        total
    }

    /// `Σ_i λ_i scaled_i(t..t+8)` (two interleaved chains).
    ///
    /// # Safety
    /// AVX2+FMA available, `base` the k x n buffer, `t + 8 <= n`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mix8<const K: usize>(
        base: *const f32,
        n: usize,
        t: usize,
        lamv: &[__m256; K],
    ) -> __m256 {
        // SAFETY: row `i < K` of the k x n buffer, `t + 8 <= n`.
        unsafe {
            let row = |i: usize| _mm256_loadu_ps(base.add(i * n + t));
            let mut a = _mm256_mul_ps(lamv[0], row(0));
            if K == 1 {
                return a;
            }
            let mut b = _mm256_mul_ps(lamv[1], row(1));
            let mut i = 2;
            while i + 1 < K {
                a = _mm256_fmadd_ps(lamv[i], row(i), a);
                b = _mm256_fmadd_ps(lamv[i + 1], row(i + 1), b);
                i += 2;
            }
            if i < K {
                a = _mm256_fmadd_ps(lamv[i], row(i), a);
            }
            _mm256_add_ps(a, b)
        }
    }

    /// `Σ_i λ_i scaled_i(t..t+16)` as two vectors.
    ///
    /// # Safety
    /// AVX2+FMA available, `t + 16 <= T`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mix16<const K: usize>(
        table: &ExpertTable,
        t: usize,
        lamv: &[__m256; K],
    ) -> (__m256, __m256) {
        let n = table.n_tokens();
        let base = table.scaled().as_ptr();
        // SAFETY: rows are `n` long and `t + 16 <= n`; row `i < K` of the k x n buffer.
        unsafe {
            let row = base.add(t);
            let mut s0 = _mm256_mul_ps(lamv[0], _mm256_loadu_ps(row));
            let mut s1 = _mm256_mul_ps(lamv[0], _mm256_loadu_ps(row.add(8)));
            for (i, l) in lamv.iter().enumerate().skip(1) {
                let row = base.add(i * n + t);
                s0 = _mm256_fmadd_ps(*l, _mm256_loadu_ps(row), s0);
                s1 = _mm256_fmadd_ps(*l, _mm256_loadu_ps(row.add(8)), s1);
            }
            (s0, s1)
        }
    }

    /// One `ln` per token; tokens with `s < TINY` get the exact log-sum-exp value.
    /// Used for the rare blocks with underflowing mixture probabilities.
    ///
    /// # Safety
    /// AVX2+FMA available, `t1 <= T`, `(t1 - t0) % 16 == 0`, `lam.len() == K`,
    /// `ln_lam.len() == K`, `K` the table's expert count.
    #[cold]
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) unsafe fn careful<const K: usize>(
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        lam: &[f32],
        ln_lam: &[f64],
    ) -> f64 {
        let lamv: [__m256; K] = std::array::from_fn(|i| _mm256_set1_ps(lam[i]));
        let tiny = _mm256_set1_ps(TINY);
        let one = _mm256_set1_ps(1.0);
        let mut acc = _mm256_setzero_ps();
        let mut exact = 0.0f64;
        for t in (t0..t1).step_by(16) {
            // SAFETY: caller's contract.
            let (mut s0, mut s1) = unsafe { mix16::<K>(table, t, &lamv) };
            let small0 = _mm256_cmp_ps::<_CMP_LT_OQ>(s0, tiny);
            let small1 = _mm256_cmp_ps::<_CMP_LT_OQ>(s1, tiny);
            let mask =
                (_mm256_movemask_ps(small0) as u32) | ((_mm256_movemask_ps(small1) as u32) << 8);
            if mask != 0 {
                exact += fix_lanes(table, t, mask, ln_lam);
                s0 = _mm256_blendv_ps(s0, one, small0);
                s1 = _mm256_blendv_ps(s1, one, small1);
            }
            acc = _mm256_add_ps(acc, _mm256_add_ps(ln8(s0), ln8(s1)));
            // Into f64 every 256 tokens, so that long blocks keep f32 sums short.
            if (t - t0) % 256 == 240 {
                exact += hsum_f64(acc);
                acc = _mm256_setzero_ps();
            }
        }
        hsum_f64(acc) + exact
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use crate::fastln::avx512::{hsum_f64, ln16};
    use std::arch::x86_64::*;

    /// The kernel's entry point: checks its arguments (panics if inconsistent), then
    /// runs [`passes`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX2 and FMA
    /// (`crate::fastln::avx512::available()`).
    pub(in super::super) unsafe fn entry<const K: usize>(
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        block: &Block,
        out: &mut [f64],
    ) {
        assert!(valid_args(table, K, t0, t1, block, out));
        // All MB = 8 mixtures per pass while the K expert vectors, 8 products and 8
        // exponent sums fit in the 32 registers; 4 per pass for more experts.
        if K <= 8 {
            // SAFETY: the caller guarantees the features; the arguments were checked
            // just above.
            unsafe { passes::<K, 8>(table, t0, t1, block, out) };
        } else {
            // SAFETY: as above.
            unsafe { passes::<K, 4>(table, t0, t1, block, out) };
        }
    }

    /// [`sum`] over the MB mixtures, NB at a time: in the reference-expert form when
    /// the NB mixtures share their reference expert, else in the plain form.
    ///
    /// # Safety
    /// AVX-512F, AVX2 and FMA available, and `valid_args(table, K, t0, t1, block,
    /// out)` holds.
    #[inline]
    unsafe fn passes<const K: usize, const NB: usize>(
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        block: &Block,
        out: &mut [f64],
    ) {
        for (b, out) in out.chunks_exact_mut(NB).enumerate() {
            let m0 = b * NB;
            let lam: [[f32; K]; NB] =
                std::array::from_fn(|j| std::array::from_fn(|i| block.lam32[(m0 + j) * K + i]));
            let out: &mut [f64; NB] = out.try_into().expect("NB sums");
            let ln_lam = &block.ln_lam[m0 * K..(m0 + NB) * K];
            let r = block.reference[m0];
            if block.reference[m0..m0 + NB].iter().all(|&x| x == r) {
                // Rows in the order r, then the others; weights in that order.
                let rows: [usize; K] =
                    std::array::from_fn(|i| if i == 0 { r } else { i - usize::from(i <= r) });
                let coef: [[f32; K]; NB] = std::array::from_fn(|j| {
                    std::array::from_fn(|i| block.unit32[(m0 + j) * K + rows[i]])
                });
                let ln_sum: [f64; NB] = std::array::from_fn(|j| block.ln_sum[m0 + j]);
                // SAFETY: the caller guarantees AVX-512F, AVX2 and FMA and the
                // arguments (`valid_args`: `r < K`, so every `rows[i] < K`).
                unsafe {
                    sum::<K, NB, true>(table, t0, t1, &rows, &coef, &lam, ln_lam, &ln_sum, out)
                }
            } else {
                let rows: [usize; K] = std::array::from_fn(|i| i);
                // SAFETY: as above (`rows` is the identity on `0..K`).
                unsafe {
                    sum::<K, NB, false>(table, t0, t1, &rows, &lam, &lam, ln_lam, &[0.0; NB], out)
                }
            }
        }
    }

    /// Σ ln s of NB mixtures over `[t0, t1)`: 16 tokens per step, each loaded vector
    /// of expert probabilities used by all NB mixtures (weights broadcast from memory
    /// inside the FMAs), per-lane running products split every SPLIT steps (integer
    /// exponent sums, one `ln` of the mantissa per GROUP tokens of a lane), and the
    /// AVX2 `careful` pass (plain form, raw λ) for blocks where a running product fell
    /// below PRODUCT_MIN (or was negative: signed integer min of the bits).
    ///
    /// Plain form (`REF = false`, `rows` the identity, `coef` = λ):
    /// `s = Σ_i λ_i q_i`, K multiplies or FMAs per mixture in two chains.
    /// Reference-expert form (`REF = true`, `rows[0] = r`, the NB mixtures' common
    /// reference expert, then the other rows; `coef[j][i]` the normalised weight
    /// `λ'_i = λ_j,rows[i] / Σλ_j` (f32) for `i >= 1`):
    /// `s' = q_r + Σ_{i≠r} λ'_i (q_i − q_r)`, which is `s / Σλ` because `Σ λ' = 1`
    /// (the f32 rounding of the λ' only perturbs the implicit weight of `q_r` by
    /// ~`kε`); `ln Σλ` per token is added back in f64, so `Σλ ≠ 1` within
    /// SUM_TOLERANCE stays exact. The differences `q_i − q_r` are taken once per 16
    /// tokens for all NB mixtures (on the add pipes), so each mixture costs K − 1
    /// multiplies/FMAs (two chains) instead of K.
    ///
    /// Error of the reference form: with `r = argmax λ`, `λ_r ≥ 1/k`, so
    /// `q_r ≤ k·s'`; every partial sum is at most `q_r + s' ≤ (k+1)·s'` and each of the
    /// ~k roundings (and of the differences) adds at most ε times that, so
    /// `|error| ≲ k(k+1)·ε·s'` relative in the worst case (about 4e-6 for k = 8,
    /// against `k·ε` for the plain form); these errors are unbiased roundings and
    /// average out over tokens (the tests measure ~5e-8 relative on the loss).
    /// s' can only come out negative where it is subnormal, which the signed
    /// minimum catches.
    ///
    /// # Safety
    /// AVX-512F, AVX2 and FMA available, `t1 <= T`, `(t1 - t0) % 16 == 0`,
    /// `ln_lam.len() == NB * K`, `K` the table's expert count, `rows[i] < K`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn sum<const K: usize, const NB: usize, const REF: bool>(
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        rows: &[usize; K],
        coef: &[[f32; K]; NB],
        lam: &[[f32; K]; NB],
        ln_lam: &[f64],
        ln_sum: &[f64; NB],
        out: &mut [f64; NB],
    ) {
        let n = table.n_tokens();
        let base = table.scaled().as_ptr();
        // SAFETY: `rows[i] < K`: row starts inside the k x n buffer.
        let row: [*const f32; K] = std::array::from_fn(|i| unsafe { base.add(rows[i] * n) });
        let one = _mm512_set1_ps(1.0);
        let mant = _mm512_set1_epi32(0x007F_FFFF);
        let one_bits = _mm512_set1_epi32(0x3F80_0000);
        let mut t = t0;
        while t < t1 {
            let end = t1.min(t + BLOCK);
            let mut acc = [_mm512_setzero_ps(); NB];
            let mut ex = [_mm512_setzero_si512(); NB];
            // Running minimum of the bits of s as signed integers (non-negative floats
            // order like their bits; a negative s, which rounding could only give for
            // a subnormal s in the reference form, has negative bits and is caught
            // too; an integer min keeps the FMA ports free).
            let mut low = _mm512_set1_epi32(i32::MAX);
            let mut tt = t;
            let mut splits = 0i64;
            while tt < end {
                let group_end = end.min(tt + 16 * GROUP);
                let mut prod = [one; NB];
                while tt < group_end {
                    // Multiply up to SPLIT vectors of s into the running products,
                    // then split those into exponent and mantissa.
                    let v = ((group_end - tt) / 16).min(SPLIT);
                    for h in 0..SPLIT {
                        if h < v {
                            // SAFETY: `tt + 16 * (h + 1) <= group_end <= n`, caller's
                            // contract for the rest.
                            let s = unsafe { mix_all::<K, NB, REF>(&row, tt + 16 * h, coef) };
                            for j in 0..NB {
                                prod[j] = _mm512_mul_ps(prod[j], s[j]);
                            }
                        }
                    }
                    for j in 0..NB {
                        let bits = _mm512_castps_si512(prod[j]);
                        low = _mm512_min_epi32(low, bits);
                        ex[j] = _mm512_add_epi32(ex[j], _mm512_srli_epi32::<23>(bits));
                        // (bits & mant) | one_bits
                        let m = _mm512_ternarylogic_epi32::<0xEA>(bits, mant, one_bits);
                        prod[j] = _mm512_castsi512_ps(m);
                    }
                    splits += 1;
                    tt += 16 * v;
                }
                for j in 0..NB {
                    acc[j] = _mm512_add_ps(acc[j], ln16(prod[j]));
                }
            }
            if _mm512_cmplt_epi32_mask(low, _mm512_set1_epi32(PRODUCT_MIN.to_bits() as i32)) == 0 {
                let bias = 127 * 16 * splits;
                for j in 0..NB {
                    let e = _mm512_reduce_add_epi32(ex[j]) as i64 - bias;
                    let scale = if REF {
                        ln_sum[j] * (end - t) as f64
                    } else {
                        0.0
                    };
                    out[j] += hsum_f64(acc[j]) + LN_2 * e as f64 + scale;
                }
            } else {
                for (j, o) in out.iter_mut().enumerate() {
                    // SAFETY: same range as the fast pass; AVX2+FMA available.
                    *o += unsafe {
                        super::avx2::careful::<K>(
                            table,
                            t,
                            end,
                            &lam[j],
                            &ln_lam[j * K..(j + 1) * K],
                        )
                    };
                }
            }
            t = end;
        }
    }

    /// s of NB mixtures for the 16 tokens at `tt` (see [`sum`]).
    ///
    /// # Safety
    /// AVX-512F and FMA available, `row[i].add(tt + 16)` inside row `i`.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn mix_all<const K: usize, const NB: usize, const REF: bool>(
        row: &[*const f32; K],
        tt: usize,
        coef: &[[f32; K]; NB],
    ) -> [__m512; NB] {
        let mut p = [_mm512_setzero_ps(); K];
        for (i, p) in p.iter_mut().enumerate() {
            // SAFETY: caller's contract.
            *p = unsafe { _mm512_loadu_ps(row[i].add(tt)) };
        }
        if REF {
            for i in 1..K {
                p[i] = _mm512_sub_ps(p[i], p[0]);
            }
        }
        // An opaque copy of the weights' pointer per step, so that the compiler
        // broadcasts them from memory inside the FMAs ({1to16}) instead of hoisting
        // 64-byte vectors to the stack.
        let mut addr = coef.as_ptr().addr();
        // SAFETY: an empty asm block that only passes the address through.
        unsafe {
            std::arch::asm!(
                "/* {0} */",
                inout(reg) addr,
                options(nomem, nostack, preserves_flags)
            );
        }
        let lp = coef.as_ptr().with_addr(addr);
        std::array::from_fn(|j| {
            // SAFETY: `lp` is `coef.as_ptr()` (same address), `j < NB`.
            let c = unsafe { &*lp.add(j) };
            if REF {
                mix_ref::<K>(&p, c)
            } else {
                mix::<K>(&p, c)
            }
        })
    }

    /// `q_0 + Σ_{i>=1} c_i d_i` for 16 tokens (`d_i = q_i − q_0`, `c_0` not used):
    /// two interleaved chains, one starting from `q_0` (odd `i`), one from a multiply
    /// (even `i`), so K − 1 multiplies or FMAs (and one add) with half the latency
    /// of a single chain; weights broadcast from memory.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mix_ref<const K: usize>(d: &[__m512; K], c: &[f32; K]) -> __m512 {
        let a = d[0];
        if K == 1 {
            return a;
        }
        let a = _mm512_fmadd_ps(_mm512_set1_ps(c[1]), d[1], a);
        if K == 2 {
            return a;
        }
        let b = _mm512_mul_ps(_mm512_set1_ps(c[2]), d[2]);
        two_chains(a, b, d, c, 3)
    }

    /// `Σ_i λ_i p_i` for 16 tokens (two interleaved chains, λ broadcast from memory).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mix<const K: usize>(p: &[__m512; K], lam: &[f32; K]) -> __m512 {
        let a = _mm512_mul_ps(_mm512_set1_ps(lam[0]), p[0]);
        if K == 1 {
            return a;
        }
        let b = _mm512_mul_ps(_mm512_set1_ps(lam[1]), p[1]);
        two_chains(a, b, p, lam, 2)
    }

    /// Adds `c_i x_i` for `i >= from` alternately to the chains `a` and `b`, then
    /// `a + b`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn two_chains<const K: usize>(
        mut a: __m512,
        mut b: __m512,
        x: &[__m512; K],
        c: &[f32; K],
        from: usize,
    ) -> __m512 {
        let mut i = from;
        while i + 1 < K {
            a = _mm512_fmadd_ps(_mm512_set1_ps(c[i]), x[i], a);
            b = _mm512_fmadd_ps(_mm512_set1_ps(c[i + 1]), x[i + 1], b);
            i += 2;
        }
        if i < K {
            a = _mm512_fmadd_ps(_mm512_set1_ps(c[i]), x[i], a);
        }
        _mm512_add_ps(a, b)
    }
}
