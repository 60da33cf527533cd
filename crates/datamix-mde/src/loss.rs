//! The MDE loss `L(λ) = -(1/T) Σ_t ln Σ_i λ_i p_i(t)`: one mixture exactly (f64, with
//! gradient), many mixtures fast (blocked AVX2 kernel, rayon), and feature matrices.

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

    /// MDE losses of many mixtures (one per row), with the fast kernel: f32 products and
    /// `ln` (relative error ~1e-7 per token), f64 accumulation of the mean, exact
    /// log-sum-exp for tokens whose mixture probability underflows.
    pub fn losses<M: AsRef<[f64]> + Sync>(&self, mixtures: &[M]) -> Result<Vec<f64>> {
        let k = self.n_experts();
        for (row, m) in mixtures.iter().enumerate() {
            validate_mixture(m.as_ref(), k, row)?;
        }
        Ok(self.losses_unchecked(mixtures))
    }

    fn losses_unchecked<M: AsRef<[f64]> + Sync>(&self, mixtures: &[M]) -> Vec<f64> {
        let k = self.n_experts();
        let n = self.n_tokens();
        let lam: Vec<f64> = mixtures
            .iter()
            .flat_map(|m| m.as_ref().iter().copied())
            .collect();
        let lam32: Vec<f32> = lam.iter().map(|&l| l as f32).collect();
        let ln_lam: Vec<f64> = lam.iter().map(|l| l.ln()).collect();
        let main = n - n % 16;
        let kernel = kernel::select(k);
        let n_chunks = main.div_ceil(TOKEN_CHUNK);
        let mut out = vec![0.0f64; mixtures.len()];
        out.par_chunks_mut(MIXTURE_CHUNK)
            .enumerate()
            .for_each(|(c, out)| {
                let m0 = c * MIXTURE_CHUNK;
                let rows = m0..m0 + out.len();
                let sums = (0..n_chunks)
                    .into_par_iter()
                    .fold(
                        || vec![0.0f64; out.len()],
                        |mut acc, tc| {
                            let (t0, t1) = (tc * TOKEN_CHUNK, main.min((tc + 1) * TOKEN_CHUNK));
                            for (a, j) in acc.iter_mut().zip(rows.clone()) {
                                let r = j * k..(j + 1) * k;
                                *a += kernel(
                                    self,
                                    t0,
                                    t1,
                                    &lam[r.clone()],
                                    &lam32[r.clone()],
                                    &ln_lam[r],
                                );
                            }
                            acc
                        },
                    )
                    .reduce(
                        || vec![0.0f64; out.len()],
                        |mut a, b| {
                            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                            a
                        },
                    );
                for ((o, s), j) in out.iter_mut().zip(sums).zip(rows) {
                    let r = j * k..(j + 1) * k;
                    let tail: f64 = (main..n)
                        .map(|t| ln_mix(self, t, &lam[r.clone()], &ln_lam[r.clone()]))
                        .sum();
                    *o = -(self.shift_sum() + s + tail) / n as f64;
                }
            });
        out
    }
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

/// The per-mixture token-range kernels.
mod kernel {
    use super::*;

    /// `Σ_{t0 <= t < t1} ln Σ_i λ_i scaled_i(t)`, `t1 - t0` a multiple of 16.
    /// Arguments: table, t0, t1, λ (f64), λ (f32), ln λ (f64).
    pub(super) type Kernel = fn(&ExpertTable, usize, usize, &[f64], &[f32], &[f64]) -> f64;

    /// The fastest kernel for `k` experts on this CPU.
    pub(super) fn select(k: usize) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if crate::fastln::avx2::available() {
            macro_rules! pick {
                ($($n:literal)*) => {
                    match k {
                        $($n => return avx2::entry::<$n>,)*
                        _ => {}
                    }
                };
            }
            pick!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        }
        let _ = k;
        scalar
    }

    /// Portable kernel (f64, exact fallback per token).
    fn scalar(
        table: &ExpertTable,
        t0: usize,
        t1: usize,
        lam: &[f64],
        _: &[f32],
        ln_lam: &[f64],
    ) -> f64 {
        (t0..t1).map(|t| ln_mix(table, t, lam, ln_lam)).sum()
    }

    /// Exact values for the tokens flagged in `mask` (bit `b` = token `t + b`).
    #[cold]
    #[inline(never)]
    fn fix_lanes(table: &ExpertTable, t: usize, mask: u32, ln_lam: &[f64]) -> f64 {
        (0..16)
            .filter(|b| mask & (1 << b) != 0)
            .map(|b| ln_mix_exact(table, t + b, ln_lam))
            .sum()
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::*;
        use crate::fastln::avx2::{hsum_f64, ln8};
        use std::arch::x86_64::*;

        /// Safe entry point; only handed out by `select` after checking AVX2+FMA.
        pub(in super::super) fn entry<const K: usize>(
            table: &ExpertTable,
            t0: usize,
            t1: usize,
            _: &[f64],
            lam: &[f32],
            ln_lam: &[f64],
        ) -> f64 {
            assert!(
                lam.len() == K
                    && t0 <= t1
                    && t1 <= table.n_tokens()
                    && (t1 - t0).is_multiple_of(16)
            );
            // SAFETY: `select` returns this only when AVX2 and FMA are available; the
            // bounds are asserted above.
            unsafe { sum::<K>(table, t0, t1, lam, ln_lam) }
        }

        /// Σ ln s over `[t0, t1)` in blocks of 512 tokens: a fast pass (two 8-token vectors
        /// per step, K FMAs each with λ in registers, fast `ln`, running minimum of s), and
        /// a careful pass over the rare blocks whose minimum underflows.
        ///
        /// # Safety
        /// AVX2+FMA available, `t1 <= T`, `(t1 - t0) % 16 == 0`, `lam.len() == K`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn sum<const K: usize>(
            table: &ExpertTable,
            t0: usize,
            t1: usize,
            lam: &[f32],
            ln_lam: &[f64],
        ) -> f64 {
            let lamv: [__m256; K] = std::array::from_fn(|i| _mm256_set1_ps(lam[i]));
            let mut total = 0.0f64;
            let mut t = t0;
            while t < t1 {
                let end = t1.min(t + 512);
                let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut low = _mm256_set1_ps(1.0);
                for tt in (t..end).step_by(16) {
                    // SAFETY: `tt + 16 <= t1 <= T` (caller's contract).
                    let (s0, s1) = unsafe { mix16::<K>(table, tt, &lamv) };
                    low = _mm256_min_ps(low, _mm256_min_ps(s0, s1));
                    a = _mm256_add_ps(a, ln8(s0));
                    b = _mm256_add_ps(b, ln8(s1));
                }
                let low = _mm256_cmp_ps::<_CMP_LT_OQ>(low, _mm256_set1_ps(TINY));
                total += if _mm256_movemask_ps(low) == 0 {
                    hsum_f64(_mm256_add_ps(a, b))
                } else {
                    // SAFETY: same range as the fast pass.
                    unsafe { careful::<K>(table, t, end, &lamv, ln_lam) }
                };
                t = end;
            }
            total
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

        /// Like the fast pass, but tokens with `s < TINY` get the exact log-sum-exp value.
        ///
        /// # Safety
        /// As for [`sum`].
        #[cold]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn careful<const K: usize>(
            table: &ExpertTable,
            t0: usize,
            t1: usize,
            lamv: &[__m256; K],
            ln_lam: &[f64],
        ) -> f64 {
            let tiny = _mm256_set1_ps(TINY);
            let one = _mm256_set1_ps(1.0);
            let mut acc = _mm256_setzero_ps();
            let mut exact = 0.0f64;
            for t in (t0..t1).step_by(16) {
                // SAFETY: caller's contract.
                let (mut s0, mut s1) = unsafe { mix16::<K>(table, t, lamv) };
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
            }
            hsum_f64(acc) + exact
        }
    }
}
