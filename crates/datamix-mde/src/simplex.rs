//! Exact projections onto the capped simplex `{x : Σ x_i = 1, l ≤ x ≤ u}`: the one
//! implementation behind the MDE optimum ([`crate::minimize`]) and every search method of
//! `datamix-optimizer` (which re-exports it as `datamix_optimizer::projection`; it lives
//! here because the optimizer depends on this crate, not the other way round).
//!
//! Both projections share one shape: the solution is `x_i = clip(h_i(τ), l_i, u_i)` for a
//! scalar `τ` at which the coordinates sum to one, and `Σ_i clip(h_i(τ))` is monotone in
//! `τ`. `τ` is bracketed, bisected, and finally solved exactly on the set of coordinates
//! that are strictly between their bounds, so the result satisfies the bounds exactly and
//! sums to one up to rounding. Nothing is allocated: each step is one pass over the
//! inputs, and the result is written into the caller's buffer.

/// Euclidean projection of `y` onto `{x : Σ x = 1, lower ≤ x ≤ upper}`:
/// `argmin_x ‖x − y‖²`, written into `out`.
///
/// The caller guarantees `lower ≤ upper` element-wise, `Σ lower ≤ 1 ≤ Σ upper` and finite
/// inputs of equal length (validated [`crate::Bounds`] and `datamix_optimizer::SearchSpace`s
/// do); non-finite entries of `y` are treated as `lower`.
pub fn project_euclidean(y: &[f64], lower: &[f64], upper: &[f64], out: &mut [f64]) {
    debug_assert!(y.len() == lower.len() && y.len() == upper.len() && y.len() == out.len());
    let y_at = |i: usize| if y[i].is_finite() { y[i] } else { lower[i] };
    // x_i(τ) = clip(y_i − τ) decreases in τ: all coordinates sit at the upper bound for
    // τ ≤ min(y − u) and at the lower bound for τ ≥ max(y − l).
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..y.len() {
        lo = lo.min(y_at(i) - upper[i]);
        hi = hi.max(y_at(i) - lower[i]);
    }
    let x_of = |tau: f64, i: usize| (y_at(i) - tau).clamp(lower[i], upper[i]);
    let tau = solve_threshold(y.len(), lo, hi, x_of, |tau, free| {
        // On the free set x_i = y_i − τ, so Σ_free (y_i − τ) = 1 − Σ_clamped x_i.
        let (mut clamped, mut free_y, mut n) = (0.0, 0.0, 0usize);
        for i in 0..y.len() {
            if free(i) {
                free_y += y_at(i);
                n += 1;
            } else {
                clamped += x_of(tau, i);
            }
        }
        (n > 0).then(|| (free_y + clamped - 1.0) / n as f64)
    });
    for (i, o) in out.iter_mut().enumerate() {
        *o = x_of(tau, i);
    }
}

/// Kullback–Leibler (Bregman) projection of a positive vector `y` onto
/// `{x : Σ x = 1, lower ≤ x ≤ upper}`: `argmin_x Σ x_i log(x_i / y_i) − x_i + y_i`,
/// written into `out`. This is the projection step of exponentiated gradient.
///
/// Its solution is `x_i = clip(c · y_i, l_i, u_i)` for a scale `c > 0`; same preconditions
/// as [`project_euclidean`], and entries of `y` that are not positive and finite are
/// treated as the smallest positive number.
pub fn project_kl(y: &[f64], lower: &[f64], upper: &[f64], out: &mut [f64]) {
    debug_assert!(y.len() == lower.len() && y.len() == upper.len() && y.len() == out.len());
    let y_at = |i: usize| {
        if y[i].is_finite() && y[i] > 0.0 {
            y[i]
        } else {
            f64::MIN_POSITIVE
        }
    };
    // Bisect on t = −log c so the sum decreases in t, like the Euclidean case.
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..y.len() {
        let ly = y_at(i).ln();
        lo = lo.min(ly - upper[i].max(f64::MIN_POSITIVE).ln());
        hi = hi.max(ly - lower[i].max(f64::MIN_POSITIVE).ln());
    }
    let x_of = |t: f64, i: usize| (y_at(i) * (-t).exp()).clamp(lower[i], upper[i]);
    let t = solve_threshold(y.len(), lo, hi, x_of, |t, free| {
        // On the free set x_i = c · y_i, so c = (1 − Σ_clamped x_i) / Σ_free y_i.
        let (mut clamped, mut free_y) = (0.0, 0.0);
        for i in 0..y.len() {
            if free(i) {
                free_y += y_at(i);
            } else {
                clamped += x_of(t, i);
            }
        }
        let c = (1.0 - clamped) / free_y;
        (free_y > 0.0 && c > 0.0 && c.is_finite()).then(|| -c.ln())
    });
    for (i, o) in out.iter_mut().enumerate() {
        *o = x_of(t, i);
    }
}

/// Finds `τ` in `[lo, hi]` with `Σ_i x_of(τ, i) = 1`, where the sum is non-increasing in
/// `τ`. Bisects until the bracket stops shrinking, then asks `exact` for the closed-form
/// `τ` on the free set found at the midpoint and keeps it if it is at least as accurate.
fn solve_threshold(
    n: usize,
    mut lo: f64,
    mut hi: f64,
    x_of: impl Fn(f64, usize) -> f64,
    exact: impl Fn(f64, &dyn Fn(usize) -> bool) -> Option<f64>,
) -> f64 {
    let sum = |tau: f64| (0..n).map(|i| x_of(tau, i)).sum::<f64>();
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if sum(mid) > 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mid = 0.5 * (lo + hi);
    let err = |tau: f64| (sum(tau) - 1.0).abs();
    // A coordinate is free if it is strictly inside its interval at the midpoint and the
    // interval is not degenerate (fixed domains are never free).
    let free = |i: usize| {
        let x = x_of(mid, i);
        x > x_of(f64::INFINITY, i) && x < x_of(f64::NEG_INFINITY, i)
    };
    match exact(mid, &free) {
        Some(t) if t.is_finite() && err(t) <= err(mid) => t,
        _ => mid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn euclidean_matches_closed_form_on_plain_simplex() {
        // Projection of (0.5, 0.5, -1) onto the simplex: subtract 0 and clip -> (0.5, 0.5, 0).
        let mut x = [0.0; 3];
        project_euclidean(&[0.5, 0.5, -1.0], &[0.0; 3], &[1.0; 3], &mut x);
        assert!((x[0] - 0.5).abs() < 1e-15 && (x[1] - 0.5).abs() < 1e-15 && x[2] == 0.0);
        // (1, 1, 1) -> uniform.
        project_euclidean(&[1.0, 1.0, 1.0], &[0.0; 3], &[1.0; 3], &mut x);
        for v in x {
            assert!((v - 1.0 / 3.0).abs() < 1e-15);
        }
    }

    #[test]
    fn euclidean_respects_caps_and_fixed_domains() {
        let lower = [0.2, 0.0, 0.1];
        let upper = [0.2, 0.3, 1.0];
        let mut x = [0.0; 3];
        project_euclidean(&[0.0, 5.0, 0.0], &lower, &upper, &mut x);
        assert_eq!(x, [0.2, 0.3, 0.5]);
    }

    #[test]
    fn kl_keeps_ratios_of_free_coordinates() {
        let mut x = [0.0; 3];
        project_kl(&[1.0, 2.0, 7.0], &[0.0; 3], &[0.5; 3], &mut x);
        assert!((x[2] - 0.5).abs() < 1e-15);
        assert!((x[1] / x[0] - 2.0).abs() < 1e-12);
        assert!((x.iter().sum::<f64>() - 1.0).abs() < 1e-14);
    }

    /// The MDE optimum's projection before the two were merged: 2100 bisection steps on
    /// `τ` (allocating a clipped copy per step), kept here as the reference.
    fn old_mde_project(y: &[f64], lower: &[f64], upper: &[f64]) -> Vec<f64> {
        let clip = |tau: f64| -> Vec<f64> {
            y.iter()
                .zip(lower.iter().zip(upper))
                .map(|(&x, (&l, &h))| (x - tau).clamp(l, h))
                .collect()
        };
        let sum = |tau: f64| clip(tau).iter().sum::<f64>();
        let mut a = y
            .iter()
            .zip(upper)
            .map(|(x, h)| x - h)
            .fold(f64::INFINITY, f64::min);
        let mut b = y
            .iter()
            .zip(lower)
            .map(|(x, l)| x - l)
            .fold(f64::NEG_INFINITY, f64::max);
        for _ in 0..2100 {
            let mid = 0.5 * (a + b);
            if mid <= a || mid >= b {
                break;
            }
            if sum(mid) > 1.0 { a = mid } else { b = mid }
        }
        clip(0.5 * (a + b))
    }

    /// Random capped-simplex problems: `y` anywhere, bounds with `Σ l ≤ 1 ≤ Σ u`.
    fn problem() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, Vec<f64>)> {
        (1usize..12).prop_flat_map(|k| {
            (
                prop::collection::vec(-3.0f64..3.0, k),
                prop::collection::vec((0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0), k),
            )
                .prop_map(|(y, raw)| {
                    // Lower bounds scaled to sum below one, upper bounds to sum above it.
                    let k = y.len() as f64;
                    let lower: Vec<f64> = raw.iter().map(|r| r.0 * r.2 / k).collect();
                    let upper: Vec<f64> = raw
                        .iter()
                        .zip(&lower)
                        .map(|(r, &l)| (l + r.1).clamp(l, 1.0))
                        .collect();
                    let su: f64 = upper.iter().sum();
                    let upper = if su >= 1.0 {
                        upper
                    } else {
                        // Not enough room: open the caps to the whole interval.
                        vec![1.0; y.len()]
                    };
                    (y, lower, upper)
                })
        })
    }

    proptest! {
        #[test]
        fn euclidean_is_feasible_idempotent_and_matches_the_old_bisection(
            (y, lower, upper) in problem()
        ) {
            let k = y.len();
            let mut x = vec![0.0; k];
            project_euclidean(&y, &lower, &upper, &mut x);
            prop_assert!((x.iter().sum::<f64>() - 1.0).abs() < 1e-12, "sum {x:?}");
            for i in 0..k {
                prop_assert!(lower[i] <= x[i] && x[i] <= upper[i], "{i}: {x:?}");
            }
            let mut again = vec![0.0; k];
            project_euclidean(&x, &lower, &upper, &mut again);
            for i in 0..k {
                prop_assert!((again[i] - x[i]).abs() < 1e-12, "not idempotent: {x:?} {again:?}");
            }
            let old = old_mde_project(&y, &lower, &upper);
            for i in 0..k {
                prop_assert!((old[i] - x[i]).abs() < 1e-12, "{old:?} vs {x:?}");
            }
        }

        #[test]
        fn kl_is_feasible_and_idempotent((y, lower, upper) in problem()) {
            let y: Vec<f64> = y.iter().map(|v| v.exp()).collect();
            let k = y.len();
            let mut x = vec![0.0; k];
            project_kl(&y, &lower, &upper, &mut x);
            prop_assert!((x.iter().sum::<f64>() - 1.0).abs() < 1e-12, "sum {x:?}");
            for i in 0..k {
                prop_assert!(lower[i] <= x[i] && x[i] <= upper[i], "{i}: {x:?}");
            }
            let positive: Vec<f64> = x.iter().map(|v| v.max(f64::MIN_POSITIVE)).collect();
            let mut again = vec![0.0; k];
            project_kl(&positive, &lower, &upper, &mut again);
            for i in 0..k {
                prop_assert!((again[i] - x[i]).abs() < 1e-12, "not idempotent: {x:?} {again:?}");
            }
        }
    }
}
