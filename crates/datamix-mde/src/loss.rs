//! The MDE loss `L(λ) = -(1/T) Σ_t ln Σ_i λ_i p_i(t)`: one mixture exactly (f64, with
//! gradient), many mixtures fast (blocked AVX-512 / AVX2 kernels on x86_64, a portable
//! SIMD kernel on every CPU, rayon), and feature matrices.
//!
//! This file owns the exact losses and gradients, mixture validation, the batching of
//! many mixtures over token chunks, and feature matrices; the per-block kernels (scalar,
//! portable SIMD, and the unsafe x86_64 SIMD code) live in `loss/kernel.rs`, the tests in
//! `loss/tests.rs`.

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

    /// [`ExpertTable::losses`] with a named kernel (`"avx512"`, `"avx2"`, `"portable"` or
    /// `"scalar"`), for benchmarks comparing the kernels; errors if this CPU lacks it, or
    /// for a SIMD kernel if `k > 16`.
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
/// name (`"avx512"`, `"avx2"`, `"portable"` or `"scalar"`) and how many tokens share one
/// `ln` call per mixture (1 for the scalar kernel; the SIMD kernels take one `ln` of a
/// product of mantissas per group of tokens, with the exponents summed exactly).
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

/// The batched kernels (scalar, portable SIMD, AVX2, AVX-512) and the choice among them
/// for this CPU: `loss/kernel.rs`, which documents their arithmetic and their safety
/// contract.
mod kernel;

#[cfg(test)]
mod tests;
