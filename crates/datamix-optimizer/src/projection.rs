//! Exact projections onto the capped simplex `{x : Σ x_i = 1, l ≤ x ≤ u}`.
//!
//! Both projections share one shape: the solution is `x_i = clip(h_i(τ), l_i, u_i)` for a
//! scalar `τ` at which the coordinates sum to one, and `Σ_i clip(h_i(τ))` is monotone in
//! `τ`. `τ` is bracketed, bisected, and finally solved exactly on the set of coordinates
//! that are strictly between their bounds, so the result satisfies the bounds exactly and
//! sums to one up to rounding.

/// Euclidean projection of `y` onto `{x : Σ x = 1, lower ≤ x ≤ upper}`:
/// `argmin_x ‖x − y‖²`, written into `out`.
///
/// The caller guarantees `lower ≤ upper` element-wise, `Σ lower ≤ 1 ≤ Σ upper` and finite
/// inputs of equal length (a validated [`crate::SearchSpace`] does); non-finite entries of
/// `y` are treated as `lower`.
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
}
