//! The MDE loss `L(λ) = -(1/T) Σ_t ln Σ_i λ_i p_i(t)`: one mixture exactly (f64, with
//! gradient), many mixtures fast (blocked AVX-512 / AVX2 kernels, rayon), and feature
//! matrices.

use std::f64::consts::LN_2;

use ndarray::Array2;
use rayon::prelude::*;

use crate::error::{MdeError, MixtureProblem, Result};
use crate::table::{ExpertTable, check_tokenizer};

/// Below this a per-token mixture probability (relative to the token's best expert) is
/// recomputed exactly by log-sum-exp from the log-probabilities, so zero weights and
/// underflowing probabilities stay finite and accurate.
const TINY: f32 = 1e-30;
/// Largest deviation of `Σ λ_i` from 1 accepted as a mixture.
pub const SUM_TOLERANCE: f64 = 1e-6;
/// Tokens per task of the batched kernel (k = 8 expert rows of one chunk: 32 KiB).
const TOKEN_CHUNK: usize = 1024;
/// Mixtures per task of the batched kernel.
const MIXTURE_CHUNK: usize = 64;
/// Mixtures per call of the batched kernels (the AVX-512 kernel reuses each loaded vector
/// of expert probabilities for up to this many).
const MB: usize = 8;
const _: () = assert!(MIXTURE_CHUNK.is_multiple_of(MB));
/// Tokens per task of the exact path.
const EXACT_CHUNK: usize = 16384;

/// Check that `lambda` is a mixture over `k` experts: right length, finite, non-negative,
/// not all zero and summing to 1 (within [`SUM_TOLERANCE`]). `row` names it in errors.
pub fn validate_mixture(lambda: &[f64], k: usize, row: usize) -> Result<()> {
    let err = |problem| Err(MdeError::Mixture { row, problem });
    if lambda.len() != k {
        return err(MixtureProblem::WrongLength {
            expected: k,
            got: lambda.len(),
        });
    }
    for (index, &value) in lambda.iter().enumerate() {
        if !value.is_finite() {
            return err(MixtureProblem::NonFinite { index, value });
        }
        if value < 0.0 {
            return err(MixtureProblem::Negative { index, value });
        }
    }
    if lambda.iter().all(|&x| x == 0.0) {
        return err(MixtureProblem::AllZero);
    }
    let sum: f64 = lambda.iter().sum();
    if (sum - 1.0).abs() > SUM_TOLERANCE {
        return err(MixtureProblem::NotNormalized { sum });
    }
    Ok(())
}

/// `ln Σ_i λ_i exp(logp_i(t) - shift_t)` by log-sum-exp over the experts with λ_i > 0.
fn ln_mix_exact(table: &ExpertTable, t: usize, ln_lambda: &[f64]) -> f64 {
    let n = table.n_tokens();
    let logp = table.logp();
    let shift = table.shift()[t] as f64;
    let term = |i: usize| ln_lambda[i] + (logp[i * n + t] as f64 - shift);
    let live = || (0..ln_lambda.len()).filter(|&i| ln_lambda[i] > f64::NEG_INFINITY);
    let max = live().map(term).fold(f64::NEG_INFINITY, f64::max);
    max + live().map(|i| (term(i) - max).exp()).sum::<f64>().ln()
}

/// `ln Σ_i λ_i scaled_i(t)` in f64, exact fallback for tiny sums.
#[inline]
fn ln_mix(table: &ExpertTable, t: usize, lambda: &[f64], ln_lambda: &[f64]) -> f64 {
    let n = table.n_tokens();
    let q = table.scaled();
    let s: f64 = lambda
        .iter()
        .enumerate()
        .map(|(i, &l)| l * q[i * n + t] as f64)
        .sum();
    if s >= TINY as f64 {
        s.ln()
    } else {
        ln_mix_exact(table, t, ln_lambda)
    }
}

impl ExpertTable {
    /// MDE loss (nats per token) of one mixture, computed in f64.
    pub fn loss(&self, lambda: &[f64]) -> Result<f64> {
        validate_mixture(lambda, self.n_experts(), 0)?;
        let ln_lambda: Vec<f64> = lambda.iter().map(|l| l.ln()).collect();
        let n = self.n_tokens();
        let sum: f64 = (0..n.div_ceil(EXACT_CHUNK))
            .into_par_iter()
            .map(|c| {
                (c * EXACT_CHUNK..n.min((c + 1) * EXACT_CHUNK))
                    .map(|t| ln_mix(self, t, lambda, &ln_lambda))
                    .sum::<f64>()
            })
            .sum();
        Ok(-(self.shift_sum() + sum) / n as f64)
    }

    /// MDE loss and its gradient `∂L/∂λ_i = -(1/T) Σ_t p_i(t) / Σ_j λ_j p_j(t)`, in f64.
    pub fn loss_and_grad(&self, lambda: &[f64]) -> Result<(f64, Vec<f64>)> {
        validate_mixture(lambda, self.n_experts(), 0)?;
        Ok(self.loss_and_grad_unchecked(lambda))
    }

    /// [`ExpertTable::loss_and_grad`] for an already validated mixture.
    pub(crate) fn loss_and_grad_unchecked(&self, lambda: &[f64]) -> (f64, Vec<f64>) {
        let k = self.n_experts();
        let n = self.n_tokens();
        let q = self.scaled();
        let logp = self.logp();
        let ln_lambda: Vec<f64> = lambda.iter().map(|l| l.ln()).collect();
        let (sum, mut grad) = (0..n.div_ceil(EXACT_CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut g = vec![0.0f64; k];
                let mut sum = 0.0f64;
                for t in c * EXACT_CHUNK..n.min((c + 1) * EXACT_CHUNK) {
                    let s: f64 = (0..k).map(|i| lambda[i] * q[i * n + t] as f64).sum();
                    if s >= TINY as f64 {
                        sum += s.ln();
                        for (i, gi) in g.iter_mut().enumerate() {
                            *gi += q[i * n + t] as f64 / s;
                        }
                    } else {
                        let lse = ln_mix_exact(self, t, &ln_lambda);
                        sum += lse;
                        let shift = self.shift()[t] as f64;
                        for (i, gi) in g.iter_mut().enumerate() {
                            *gi += (logp[i * n + t] as f64 - shift - lse).exp();
                        }
                    }
                }
                (sum, g)
            })
            .reduce(
                || (0.0, vec![0.0; k]),
                |(s1, mut g1), (s2, g2)| {
                    g1.iter_mut().zip(&g2).for_each(|(a, b)| *a += b);
                    (s1 + s2, g1)
                },
            );
        grad.iter_mut().for_each(|g| *g = -*g / n as f64);
        (-(self.shift_sum() + sum) / n as f64, grad)
    }

    /// MDE losses of many mixtures (one per row), with the fast kernel ([`batched_kernel`]
    /// says which): f32 mixture probabilities, one f32 `ln` per group of tokens of the
    /// product of their mantissas with the exponents summed exactly (see the `kernel`
    /// module; |error| of a loss below ~1e-7 nats in the tests), f64 accumulation of the
    /// mean, exact log-sum-exp for tokens whose mixture probability underflows.
    pub fn losses<M: AsRef<[f64]> + Sync>(&self, mixtures: &[M]) -> Result<Vec<f64>> {
        let k = self.n_experts();
        for (row, m) in mixtures.iter().enumerate() {
            validate_mixture(m.as_ref(), k, row)?;
        }
        Ok(self.losses_unchecked(mixtures))
    }

    /// [`ExpertTable::losses`] with a named kernel (`"avx512"`, `"avx2"` or `"scalar"`),
    /// for benchmarks comparing the kernels; errors if this CPU lacks it or `k > 16`.
    #[doc(hidden)]
    pub fn losses_with_kernel<M: AsRef<[f64]> + Sync>(
        &self,
        mixtures: &[M],
        name: &str,
    ) -> Result<Vec<f64>> {
        let k = self.n_experts();
        for (row, m) in mixtures.iter().enumerate() {
            validate_mixture(m.as_ref(), k, row)?;
        }
        let choice = kernel::by_name(name, k).ok_or_else(|| MdeError::InvalidParam {
            name: "kernel".into(),
            reason: format!("'{name}' is not available on this CPU for {k} experts"),
        })?;
        Ok(self.losses_with(mixtures, choice))
    }

    fn losses_unchecked<M: AsRef<[f64]> + Sync>(&self, mixtures: &[M]) -> Vec<f64> {
        self.losses_with(mixtures, kernel::select(self.n_experts()))
    }

    /// The batched losses with a given kernel (also used by the tests to compare kernels).
    ///
    /// The mixtures are processed in a stable order by their reference expert (the first
    /// largest λ_i), so that most blocks of [`MB`] mixtures share it and the AVX-512 kernel
    /// can use the reference-expert form (see the `kernel` module); the results are put
    /// back in the caller's order.
    fn losses_with<M: AsRef<[f64]> + Sync>(
        &self,
        mixtures: &[M],
        kernel: kernel::Choice,
    ) -> Vec<f64> {
        let k = self.n_experts();
        let n = self.n_tokens();
        if mixtures.is_empty() {
            return Vec::new();
        }
        let mut order: Vec<usize> = (0..mixtures.len()).collect();
        order.sort_by_key(|&j| reference_expert(mixtures[j].as_ref()));
        // Row-major λ in that order, padded to a multiple of MB mixtures with copies of the
        // last one (their results are dropped).
        let padded = mixtures.len().div_ceil(MB) * MB;
        let last = order[order.len() - 1];
        let rows: Vec<&[f64]> = order
            .iter()
            .chain(std::iter::repeat_n(&last, padded - mixtures.len()))
            .map(|&j| mixtures[j].as_ref())
            .collect();
        let lam: Vec<f64> = rows.iter().flat_map(|m| m.iter().copied()).collect();
        let lam32: Vec<f32> = lam.iter().map(|&l| l as f32).collect();
        let ln_lam: Vec<f64> = lam.iter().map(|l| l.ln()).collect();
        let reference: Vec<usize> = rows.iter().map(|m| reference_expert(m)).collect();
        let sums: Vec<f64> = rows.iter().map(|m| m.iter().sum()).collect();
        let ln_sum: Vec<f64> = sums.iter().map(|s| s.ln()).collect();
        let unit32: Vec<f32> = rows
            .iter()
            .zip(&sums)
            .flat_map(|(m, s)| m.iter().map(move |&l| (l / s) as f32))
            .collect();
        let main = n - n % 16;
        let n_chunks = main.div_ceil(TOKEN_CHUNK);
        let mut out = vec![0.0f64; mixtures.len()];
        out.par_chunks_mut(MIXTURE_CHUNK)
            .enumerate()
            .for_each(|(c, out)| {
                let m0 = c * MIXTURE_CHUNK;
                let width = out.len().div_ceil(MB) * MB;
                let sums = (0..n_chunks)
                    .into_par_iter()
                    .fold(
                        || vec![0.0f64; width],
                        |mut acc, tc| {
                            let (t0, t1) = (tc * TOKEN_CHUNK, main.min((tc + 1) * TOKEN_CHUNK));
                            for (b, acc) in acc.chunks_exact_mut(MB).enumerate() {
                                let j = m0 + b * MB..m0 + (b + 1) * MB;
                                let r = j.start * k..j.end * k;
                                let block = kernel::Block {
                                    lam: &lam[r.clone()],
                                    lam32: &lam32[r.clone()],
                                    ln_lam: &ln_lam[r.clone()],
                                    unit32: &unit32[r],
                                    reference: &reference[j.clone()],
                                    ln_sum: &ln_sum[j],
                                };
                                kernel.run(self, t0, t1, &block, acc);
                            }
                            acc
                        },
                    )
                    .reduce(
                        || vec![0.0f64; width],
                        |mut a, b| {
                            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                            a
                        },
                    );
                for (j, (o, s)) in out.iter_mut().zip(sums).enumerate() {
                    let r = (m0 + j) * k..(m0 + j + 1) * k;
                    let tail: f64 = (main..n)
                        .map(|t| ln_mix(self, t, &lam[r.clone()], &ln_lam[r.clone()]))
                        .sum();
                    *o = -(self.shift_sum() + s + tail) / n as f64;
                }
            });
        let mut result = vec![0.0f64; mixtures.len()];
        for (&j, v) in order.iter().zip(out) {
            result[j] = v;
        }
        result
    }
}

/// The reference expert of a mixture: the first index of its largest weight.
fn reference_expert(lambda: &[f64]) -> usize {
    let mut best = 0;
    for (i, &l) in lambda.iter().enumerate() {
        if l > lambda[best] {
            best = i;
        }
    }
    best
}

/// Which batched kernel [`ExpertTable::losses`] uses for `k` experts on this CPU: its
/// name (`"avx512"`, `"avx2"` or `"scalar"`) and how many tokens share one `ln` call per
/// mixture (1 for the scalar kernel; the SIMD kernels take one `ln` of a product of
/// mantissas per group of tokens, with the exponents summed exactly).
pub fn batched_kernel(k: usize) -> (&'static str, usize) {
    let c = kernel::select(k);
    (c.name, c.tokens_per_ln)
}

/// Check that tables can be used together: same experts in the same order, same tokenizer.
pub(crate) fn check_aligned(tables: &[&ExpertTable]) -> Result<()> {
    let Some(first) = tables.first() else {
        return Err(MdeError::InvalidParam {
            name: "tables".into(),
            reason: "at least one eval-domain table is needed".into(),
        });
    };
    for t in &tables[1..] {
        check_tokenizer(first, t)?;
        if t.expert_ids() != first.expert_ids() {
            return Err(MdeError::ExpertMismatch {
                domain: t.eval_domain().to_string(),
                expected: first.expert_ids().to_vec(),
                got: t.expert_ids().to_vec(),
            });
        }
    }
    Ok(())
}

/// MDE features for the regression crate: a `mixtures x eval domains` matrix whose entry
/// `(r, j)` is the MDE loss of mixture `r` on `tables[j]`. All tables must list the same
/// experts in the same order and share a tokenizer.
pub fn mde_features<M: AsRef<[f64]> + Sync>(
    tables: &[&ExpertTable],
    mixtures: &[M],
) -> Result<Array2<f64>> {
    check_aligned(tables)?;
    let k = tables[0].n_experts();
    for (row, m) in mixtures.iter().enumerate() {
        validate_mixture(m.as_ref(), k, row)?;
    }
    let mut out = Array2::zeros((mixtures.len(), tables.len()));
    for (j, table) in tables.iter().enumerate() {
        for (r, v) in table.losses_unchecked(mixtures).into_iter().enumerate() {
            out[[r, j]] = v;
        }
    }
    Ok(out)
}

/// The batched kernels: for a block of [`MB`] mixtures `j`, add
/// `Σ_{t0 <= t < t1} ln s_j(t)`, `s_j(t) = Σ_i λ_ji scaled_i(t)`, to `out[j]`.
///
/// The SIMD kernels take far fewer logarithms with the same formula. A positive normal
/// f32 `x` is split by bit operations into its biased exponent `e` and mantissa
/// `m ∈ [1, 2)`, `x = 2^(e - 127) · m`, so a sum of logarithms becomes an integer sum of
/// exponents plus the `ln` of a product of mantissas:
/// - AVX2: each `s` is split, `Σ_t ln s_t = ln 2 · Σ_t (e_t - 127) + ln Π_t m_t`, and the
///   mantissas of [`GROUP`] consecutive tokens of a lane are multiplied (the product stays
///   in `[1, 2^GROUP)`: no overflow or underflow) before one `ln`.
/// - AVX-512: each lane keeps a running product, multiplied by [`SPLIT`] consecutive `s`
///   and then split (exponent summed, mantissa kept), so half the integer operations; one
///   `ln` of the running mantissa per [`GROUP`] tokens of a lane. The fast pass requires
///   every running product to stay at or above [`PRODUCT_MIN`] (then every factor and
///   partial product was a normal f32). It also uses the reference-expert form of `s`
///   for blocks of mixtures that share their largest weight (see `avx512::sum`).
///
/// Blocks of [`BLOCK`] tokens in which some `s < TINY` (AVX2) or some running product
/// `< PRODUCT_MIN` (AVX-512; zero weights, underflow) are redone token by token in the
/// plain form, with the exact log-sum-exp for the tokens with `s < TINY`.
mod kernel {
    use super::*;

    /// Arguments: table, t0, t1 (`t1 - t0` a multiple of 16), a [`Block`] of [`MB`]
    /// mixtures, and the `MB` sums to add to.
    ///
    /// An `unsafe fn`: the SIMD kernels are undefined behaviour on a CPU without their
    /// instruction set. Only [`Choice::run`] calls one, and a [`Choice`] holding a SIMD
    /// kernel exists only after its feature check (`avx512_choice` / `avx2_choice`; the
    /// field is private to this module).
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
    /// [`SCALAR`] and the `*_choice` functions after their feature checks.
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
            // SAFETY: a `Choice` holds a SIMD kernel only if it was made by
            // `avx512_choice` / `avx2_choice`, after checking that this CPU has the
            // kernel's features (the field is private to this module, and no code here
            // builds a `Choice` otherwise).
            unsafe { (self.kernel)(table, t0, t1, block, out) }
        }
    }

    /// Tokens (per SIMD lane) per `ln`: whose mantissas are multiplied (AVX2; the product
    /// stays below 2^GROUP), or over which the running product is kept (AVX-512).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const BLOCK: usize = 1024;

    /// The portable kernel.
    pub(super) const SCALAR: Choice = Choice {
        name: "scalar",
        tokens_per_ln: 1,
        kernel: scalar,
    };

    /// The kernel called `name` for `k` experts, if this CPU has it.
    pub(super) fn by_name(name: &str, k: usize) -> Option<Choice> {
        match name {
            "scalar" => Some(SCALAR),
            #[cfg(target_arch = "x86_64")]
            "avx512" => avx512_choice(k),
            #[cfg(target_arch = "x86_64")]
            "avx2" => avx2_choice(k),
            _ => None,
        }
    }

    /// The fastest kernel for `k` experts on this CPU.
    pub(super) fn select(k: usize) -> Choice {
        #[cfg(target_arch = "x86_64")]
        if let Some(c) = avx512_choice(k).or_else(|| avx2_choice(k)) {
            return c;
        }
        let _ = k;
        SCALAR
    }

    #[cfg(target_arch = "x86_64")]
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

    /// Portable kernel (f64, one `ln` per token, exact fallback per token).
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

    /// Whether a kernel's arguments are consistent (checked before the unsafe SIMD code).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
                let mask = (_mm256_movemask_ps(small0) as u32)
                    | ((_mm256_movemask_ps(small1) as u32) << 8);
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
                        sum::<K, NB, false>(
                            table, t0, t1, &rows, &lam, &lam, ln_lam, &[0.0; NB], out,
                        )
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
                if _mm512_cmplt_epi32_mask(low, _mm512_set1_epi32(PRODUCT_MIN.to_bits() as i32))
                    == 0
                {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::ExpertTableBuilder;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A random table with hard cases: per-token difficulty plus per-expert noise, and on
    /// ~3% of the tokens each expert independently gives p ~ e^-40..e^-90 (scaled values
    /// from ~1e-18 down to 0 in f32), so mixtures that weight those experts see tiny and
    /// underflowing mixture probabilities.
    fn hard_table(k: usize, t: usize, seed: u64) -> ExpertTable {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let base: Vec<f32> = (0..t)
            .map(|_| 2.0 * rng.random_range(1e-4f32..1.0).ln())
            .collect();
        let mut b = ExpertTableBuilder::new("dom", "tok");
        for i in 0..k {
            let row: Vec<f32> = base
                .iter()
                .map(|&x| {
                    if rng.random_bool(0.03) {
                        x - rng.random_range(40.0f32..90.0)
                    } else {
                        (x + rng.random_range(-2.0f32..2.0)).min(0.0)
                    }
                })
                .collect();
            b.add_expert(format!("e{i}"), format!("h{i}"), &row)
                .unwrap();
        }
        b.build().unwrap()
    }

    /// Random mixtures, about a third of their entries exactly zero, plus the one-hots.
    fn mixtures(k: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
        let mut out: Vec<Vec<f64>> = (0..n)
            .map(|_| {
                let mut w: Vec<f64> = (0..k)
                    .map(|_| {
                        if rng.random_bool(0.33) {
                            0.0
                        } else {
                            -rng.random_range(1e-9f64..1.0).ln()
                        }
                    })
                    .collect();
                if w.iter().all(|&x| x == 0.0) {
                    w[0] = 1.0;
                }
                let s: f64 = w.iter().sum();
                w.into_iter().map(|x| x / s).collect()
            })
            .collect();
        out.extend((0..k).map(|i| (0..k).map(|j| f64::from(u8::from(i == j))).collect()));
        out
    }

    /// The kernels this CPU can run for `k` experts.
    fn kernels(k: usize) -> Vec<kernel::Choice> {
        ["scalar", "avx2", "avx512"]
            .iter()
            .filter_map(|name| kernel::by_name(name, k))
            .collect()
    }

    #[test]
    fn every_kernel_agrees_with_the_exact_f64_loss() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut worst = std::collections::HashMap::new();
        // Token counts with and without a tail after the 16-token blocks, shorter and
        // longer than a 512-token block and a 1024-token task; k = 1..16 (SIMD) and 17.
        for (k, t) in [
            (1, 600),
            (2, 5003),
            (3, 1040),
            (5, 2100),
            (8, 20_000),
            (13, 777),
            (16, 3000),
            (17, 500),
        ] {
            let table = hard_table(k, t, k as u64 + 100);
            // Counts that are not multiples of MB: the last block is padded.
            let mixtures = mixtures(k, 4 * 9 + 3 - k % 4, &mut rng);
            let exact: Vec<f64> = mixtures.iter().map(|m| table.loss(m).unwrap()).collect();
            for choice in kernels(k) {
                let got = table.losses_with(&mixtures, choice);
                assert_eq!(got.len(), mixtures.len());
                for ((g, e), m) in got.iter().zip(&exact).zip(&mixtures) {
                    let err = (g - e).abs();
                    let w = worst.entry(choice.name).or_insert(0.0f64);
                    *w = w.max(err / e.abs().max(1.0));
                    assert!(
                        err <= 1e-6 * e.abs().max(1.0),
                        "{} k={k} T={t} λ={m:?}: {g} vs exact {e}",
                        choice.name
                    );
                }
            }
        }
        println!("max |batched - exact| / max(1, loss) per kernel: {worst:?}");
    }

    #[test]
    fn simd_kernels_agree_with_each_other() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for k in [4, 8, 11] {
            let table = hard_table(k, 4099, k as u64);
            let mixtures = mixtures(k, 30, &mut rng);
            let all: Vec<Vec<f64>> = kernels(k)
                .iter()
                .map(|c| table.losses_with(&mixtures, *c))
                .collect();
            for pair in all.windows(2) {
                for (a, b) in pair[0].iter().zip(&pair[1]) {
                    assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn grouped_ln_keeps_underflow_blocks_exact() {
        // Expert 0 sure, expert 1 e^-40 (s ~ 4e-18: fast path, large exponents), expert 2
        // e^-300 (0 in f32: careful path), interleaved so both paths meet in one task.
        let t = 3000;
        let row = |p: f32, q: f32| -> Vec<f32> {
            (0..t)
                .map(|i| if (i / 700) % 2 == 0 { p } else { q })
                .collect()
        };
        let mut b = ExpertTableBuilder::new("dom", "tok");
        b.add_expert("sure", "h0", &vec![-0.01f32; t]).unwrap();
        b.add_expert("small", "h1", &row(-40.0, -0.5)).unwrap();
        b.add_expert("tiny", "h2", &row(-300.0, -1.0)).unwrap();
        let table = b.build().unwrap();
        let cases = [
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.0, 1.0],
            vec![0.0, 0.5, 0.5],
            vec![0.2, 0.3, 0.5],
        ];
        for choice in kernels(3) {
            let got = table.losses_with(&cases, choice);
            for (m, g) in cases.iter().zip(got) {
                let e = table.loss(m).unwrap();
                assert!(
                    (g - e).abs() <= 1e-6 * e.max(1.0),
                    "{} {m:?}: {g} vs {e}",
                    choice.name
                );
            }
        }
    }

    #[test]
    fn mixed_reference_experts_in_shuffled_order_match_one_at_a_time() {
        // Mixtures with every expert as the largest weight, in shuffled order (so blocks
        // of MB mix reference experts and take the plain form, and sorted runs take the
        // reference-expert form), near-uniform ones whose largest weight wins by 1e-7,
        // and sums off 1 by up to 5e-7 (inside SUM_TOLERANCE): each batched result must
        // match the same mixture alone (a block of MB copies: reference form) and the
        // exact f64 loss.
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for k in [2, 5, 8, 12] {
            let table = hard_table(k, 2077, 40 + k as u64);
            let mut all = mixtures(k, 6 * k, &mut rng);
            for r in 0..k {
                let mut w = vec![1.0 / k as f64 - 1e-7 / k as f64; k];
                w[r] += 1e-7;
                all.push(w);
            }
            for (j, m) in all.iter_mut().enumerate() {
                let scale = 1.0 + 5e-7 * ((j % 3) as f64 - 1.0);
                m.iter_mut().for_each(|x| *x *= scale);
            }
            for j in (1..all.len()).rev() {
                all.swap(j, rng.random_range(0..=j));
            }
            for choice in kernels(k) {
                let got = table.losses_with(&all, choice);
                for (m, g) in all.iter().zip(&got) {
                    let alone = table.losses_with(std::slice::from_ref(m), choice)[0];
                    let e = table.loss(m).unwrap();
                    let tol = 1e-6 * e.abs().max(1.0);
                    assert!(
                        (g - alone).abs() <= tol,
                        "{} k={k} {m:?}: {g} vs alone {alone}",
                        choice.name
                    );
                    assert!(
                        (g - e).abs() <= tol,
                        "{} k={k} {m:?}: {g} vs exact {e}",
                        choice.name
                    );
                }
            }
        }
    }

    #[test]
    fn reference_expert_is_the_first_largest_weight() {
        assert_eq!(reference_expert(&[0.2, 0.5, 0.3]), 1);
        assert_eq!(reference_expert(&[0.4, 0.2, 0.4]), 0);
        assert_eq!(reference_expert(&[1.0]), 0);
        assert_eq!(reference_expert(&[0.0, 0.0, 1.0]), 2);
    }

    #[test]
    fn no_mixtures_no_losses() {
        let table = hard_table(3, 100, 1);
        let none: Vec<Vec<f64>> = Vec::new();
        assert!(table.losses(&none).unwrap().is_empty());
        assert!(table.losses_with_kernel(&none, "nonsense").is_err());
    }
}
