//! The MDE adapters: the exact convex solve agrees with the generic methods on real
//! datamix-mde tables, and a regression model on [λ, MDE(λ)] can be searched with its MDE
//! features computed for every candidate.

use datamix_mde::{ExpertTable, ExpertTableBuilder, OptimumParams};
use datamix_optimizer::{
    CmaEs, ExponentiatedGradient, MdeFeatures, MdeObjective, Method, ModelObjective, Objective,
    ProjectedGradient, SearchSpace, TokenLimits, mde_exact,
};
use datamix_regression::{Column, Dataset, Regressor, RidgeParams};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Two eval domains, three experts; tokens of eval domain j mostly suit expert j.
fn tables() -> Vec<ExpertTable> {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    (0..2)
        .map(|j| {
            let mut b = ExpertTableBuilder::new(format!("eval{j}"), "tok");
            for i in 0..3 {
                let logp: Vec<f32> = (0..2000)
                    .map(|_| {
                        let p: f64 = if i == j {
                            rng.random_range(0.2..0.7)
                        } else {
                            rng.random_range(0.01..0.2)
                        };
                        p.ln() as f32
                    })
                    .collect();
                b.add_expert(format!("d{i}"), format!("ckpt{i}"), &logp)
                    .unwrap();
            }
            b.build().unwrap()
        })
        .collect()
}

#[test]
fn exact_mde_solve_matches_generic_methods_under_constraints() {
    let t = tables();
    let refs: Vec<&ExpertTable> = t.iter().collect();
    let f = MdeObjective::mean(&refs).unwrap();
    let space = SearchSpace::builder_named(["d0", "d1", "d2"])
        .lower(vec![0.0, 0.0, 0.1])
        .token_limits(TokenLimits {
            budget: 100.0,
            tokens: vec![1e9, 40.0, 1e9],
            max_epochs: vec![1.0, 1.0, 1.0],
        })
        .build()
        .unwrap();
    let exact = mde_exact(&space, &f, &OptimumParams::default()).unwrap();
    space.check(&exact.mixture).unwrap();
    assert!(exact.converged);
    assert!(exact.mixture[1] <= 0.4 + 1e-9 && exact.mixture[2] >= 0.1 - 1e-9);
    let methods: Vec<Box<dyn Method>> = vec![
        Box::new(ProjectedGradient::new()),
        Box::new(ExponentiatedGradient::new()),
        Box::new(CmaEs::new().seed(1)),
    ];
    for m in methods {
        let r = m.minimize(&space, &f).unwrap();
        assert!(
            r.objective >= exact.objective - 1e-9 && r.objective - exact.objective < 1e-6,
            "{}: {} vs exact {}",
            r.method,
            r.objective,
            exact.objective
        );
    }
}

#[test]
fn regression_model_on_lambda_and_mde_features_is_searchable() {
    let t = tables();
    let refs: Vec<&ExpertTable> = t.iter().collect();
    let f = MdeObjective::mean(&refs).unwrap();
    let space = SearchSpace::builder_named(["d0", "d1", "d2"])
        .build()
        .unwrap();
    // "Trained" mixtures whose true objective is an affine function of the MDE objective.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let xs: Vec<Vec<f64>> = (0..20).map(|_| space.sample_uniform(&mut rng)).collect();
    let feats = MdeFeatures::new(t.clone()).unwrap();
    let mde = datamix_mde::mde_features(&refs, &xs).unwrap();
    let mut x = Array2::zeros((xs.len(), 5));
    for (r, l) in xs.iter().enumerate() {
        for i in 0..3 {
            x[[r, i]] = l[i];
        }
        x[[r, 3]] = mde[[r, 0]];
        x[[r, 4]] = mde[[r, 1]];
    }
    let y = Array2::from_shape_fn((xs.len(), 1), |(r, _)| 0.5 + 0.9 * f.value(&xs[r]));
    let cols = ["d0", "d1", "d2"]
        .iter()
        .map(|d| Column::new("lambda", *d))
        .chain(["eval0", "eval1"].iter().map(|e| Column::new("mde", *e)))
        .collect();
    let data = Dataset::new(
        (0..20).map(|i| format!("m{i}")).collect(),
        cols,
        x,
        vec!["obj".into()],
        y,
    )
    .unwrap();
    let task = data.task(&["lambda", "mde"], "obj").unwrap();
    let model = RidgeParams::new().alpha(1e-6).fit(&task).unwrap();
    let objective = ModelObjective::new(model, &space, Some(Box::new(feats))).unwrap();
    let found = CmaEs::new().seed(2).minimize(&space, &objective).unwrap();
    let exact = mde_exact(&space, &f, &OptimumParams::default()).unwrap();
    // The model's minimiser is the MDE minimiser (up to the ridge fit).
    let dx = found
        .mixture
        .iter()
        .zip(&exact.mixture)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(dx < 0.05, "{:?} vs {:?}", found.mixture, exact.mixture);
}
