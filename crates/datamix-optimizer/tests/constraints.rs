//! Property tests: for random feasible bounds, projections are exact and no method ever
//! returns an infeasible mixture.

mod common;

use common::Quadratic;
use datamix_optimizer::projection::{project_euclidean, project_kl};
use datamix_optimizer::{
    CmaEs, DirichletSearch, ExponentiatedGradient, Method, ProjectedGradient, SearchSpace,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Random feasible (lower, upper), possibly with fixed domains: lower sums to at most 0.95,
/// upper sums to at least 1.
fn bounds() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (2usize..9).prop_flat_map(|k| {
        (
            prop::collection::vec(0.0f64..1.0, k),
            prop::collection::vec(0.0f64..1.0, k),
            prop::collection::vec(any::<bool>(), k),
            0.0f64..0.95,
        )
            .prop_map(|(lo, width, fixed, lo_total)| {
                let s: f64 = lo.iter().sum::<f64>().max(1e-9);
                let lower: Vec<f64> = lo.iter().map(|v| v / s * lo_total).collect();
                let mut upper: Vec<f64> = lower
                    .iter()
                    .zip(&width)
                    .zip(&fixed)
                    .map(|((l, w), &f)| if f { *l } else { (l + w).min(1.0) })
                    .collect();
                // Widen the last free domain (or the last one) until Σ upper >= 1.
                let short = 1.0 - upper.iter().sum::<f64>();
                if short > 0.0 {
                    let i = fixed.iter().rposition(|f| !f).unwrap_or(upper.len() - 1);
                    upper[i] = (upper[i] + short + 1e-12).min(1.0);
                }
                (lower, upper)
            })
            .prop_filter("feasible", |(l, u)| {
                l.iter().sum::<f64>() <= 1.0 && u.iter().sum::<f64>() >= 1.0
            })
    })
}

fn space_of(lower: &[f64], upper: &[f64]) -> SearchSpace {
    SearchSpace::builder(lower.len())
        .lower(lower.to_vec())
        .upper(upper.to_vec())
        .build()
        .expect("strategy only makes feasible bounds")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The Euclidean projection is feasible, idempotent, and optimal: for every feasible z,
    /// ⟨y − P(y), z − P(y)⟩ ≤ 0.
    #[test]
    fn euclidean_projection_is_exact(
        (lower, upper) in bounds(),
        y in prop::collection::vec(-3.0f64..3.0, 8),
        seed in any::<u64>(),
    ) {
        let k = lower.len();
        let y = &y[..k];
        let space = space_of(&lower, &upper);
        let mut x = vec![0.0; k];
        project_euclidean(y, &lower, &upper, &mut x);
        prop_assert!(space.check(&x).is_ok(), "{:?}", space.check(&x));
        let again = space.project(&x);
        prop_assert!(common::max_abs_diff(&again, &x) < 1e-12);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..20 {
            let z = space.sample_uniform(&mut rng);
            let ip: f64 = (0..k).map(|i| (y[i] - x[i]) * (z[i] - x[i])).sum();
            prop_assert!(ip <= 1e-9, "variational inequality violated: {ip}");
        }
    }

    /// The KL projection is feasible and scales the free coordinates by one factor.
    #[test]
    fn kl_projection_is_feasible(
        (lower, upper) in bounds(),
        y in prop::collection::vec(1e-6f64..10.0, 8),
    ) {
        let k = lower.len();
        let space = space_of(&lower, &upper);
        let mut x = vec![0.0; k];
        project_kl(&y[..k], &lower, &upper, &mut x);
        prop_assert!(space.check(&x).is_ok(), "{:?}", space.check(&x));
        let free: Vec<usize> = (0..k).filter(|&i| x[i] > lower[i] + 1e-12 && x[i] < upper[i] - 1e-12).collect();
        for w in free.windows(2) {
            let (a, b) = (x[w[0]] / y[w[0]], x[w[1]] / y[w[1]]);
            prop_assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// No method returns an infeasible mixture, whatever the bounds.
    #[test]
    fn methods_stay_feasible((lower, upper) in bounds(), seed in 0u64..1000) {
        let k = lower.len();
        let space = space_of(&lower, &upper);
        // Optimum of the unconstrained quadratic part far outside the box: pushes on bounds.
        let mut target = vec![0.0; k];
        target[(seed as usize) % k] = 2.0;
        target[0] -= 1.0;
        let f = Quadratic::new(target, &vec![false; k], &vec![false; k], seed);
        let methods: Vec<Box<dyn Method>> = vec![
            Box::new(ProjectedGradient::new()),
            Box::new(ExponentiatedGradient::new()),
            Box::new(CmaEs { max_evals: 400, ..CmaEs::new().seed(seed) }),
            Box::new(DirichletSearch::new(300, 10).seed(seed)),
        ];
        for m in methods {
            let r = m.minimize(&space, &f).unwrap();
            prop_assert!(space.check(&r.mixture).is_ok(), "{}: {:?}", m.name(), space.check(&r.mixture));
        }
    }
}
