//! The Bayesian-optimisation loop with a real GP surrogate (datamix-regression).

use datamix_optimizer::{
    Acquisition, BayesOpt, BoConfig, BoState, Objective, OptimizerError, RegressionSurrogate,
    SearchSpace,
};
use datamix_regression::GpParams;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Seeded benchmark on the 4-simplex: an anisotropic bowl with a ripple, minimum inside.
fn benchmark(x: &[f64]) -> f64 {
    let c = [0.45, 0.05, 0.3, 0.2];
    let a = [3.0, 1.0, 2.0, 4.0];
    let bowl: f64 = (0..4).map(|i| a[i] * (x[i] - c[i]).powi(2)).sum();
    bowl + 0.05 * (7.0 * x[0]).sin() * (5.0 * x[2]).cos()
}

fn gp_loop(seed: u64, acquisition: Acquisition) -> BayesOpt<RegressionSurrogate<GpParams>> {
    let space = SearchSpace::simplex(4).unwrap();
    let gp = RegressionSurrogate::new(GpParams::new().restarts(1).seed(seed), &space);
    let config = BoConfig {
        acquisition,
        initial_points: Some(5),
        candidates: 1000,
        seed,
        ..BoConfig::default()
    };
    BayesOpt::new(space, gp, config).unwrap()
}

#[test]
fn bo_beats_random_sampling_with_the_same_evaluations() {
    const EVALS: usize = 20;
    let mut wins = 0;
    let (mut bo_sum, mut rs_sum) = (0.0, 0.0);
    for seed in 0..4u64 {
        let mut bo = gp_loop(seed, Acquisition::ExpectedImprovement { xi: 0.01 });
        let bo_best = bo.run(&benchmark, EVALS, 1).unwrap().objective;
        let space = bo.space().clone();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rs_best = (0..EVALS)
            .map(|_| benchmark(&space.sample_uniform(&mut rng)))
            .fold(f64::INFINITY, f64::min);
        wins += usize::from(bo_best < rs_best);
        bo_sum += bo_best;
        rs_sum += rs_best;
        eprintln!("seed {seed}: BO {bo_best:.5}, random {rs_best:.5}");
    }
    assert!(
        bo_sum < rs_sum,
        "mean best: BO {} vs random {}",
        bo_sum / 4.0,
        rs_sum / 4.0
    );
    assert!(wins >= 3, "BO won only {wins} of 4 seeds");
}

#[test]
fn batch_suggestions_ucb_and_resume() {
    let mut bo = gp_loop(7, Acquisition::Ucb { beta: 2.0 });
    // Initial design, then two model-based batches of 3.
    for x in bo.suggest_batch(5).unwrap() {
        bo.observe(x.clone(), benchmark(&x)).unwrap();
    }
    for _ in 0..2 {
        let batch = bo.suggest_batch(3).unwrap();
        assert_eq!(batch.len(), 3);
        for (i, x) in batch.iter().enumerate() {
            bo.space().check(x).unwrap();
            for y in &batch[..i] {
                let d: f64 = x.iter().zip(y).map(|(a, b)| (a - b).abs()).sum();
                assert!(d > 1e-6, "batch repeats a point");
            }
        }
        for x in batch {
            bo.observe(x.clone(), benchmark(&x)).unwrap();
        }
    }
    assert_eq!(bo.observations().len(), 11);
    // A saved state resumes to the same next suggestion.
    let json = serde_json::to_string(bo.state()).unwrap();
    let state: BoState = serde_json::from_str(&json).unwrap();
    let space = bo.space().clone();
    let gp = RegressionSurrogate::new(GpParams::new().restarts(1).seed(7), &space);
    let mut resumed = BayesOpt::new(space, gp, state.config.clone()).unwrap();
    let mut resumed_state = BayesOpt::from_state(
        resumed.space().clone(),
        RegressionSurrogate::new(GpParams::new().restarts(1).seed(7), resumed.space()),
        state,
    )
    .unwrap();
    assert_eq!(bo.suggest().unwrap(), resumed_state.suggest().unwrap());
    // Bad observations are typed errors.
    let e = resumed.observe(vec![0.5, 0.5, 0.5, -0.5], 1.0).unwrap_err();
    assert!(matches!(e, OptimizerError::InfeasibleMixture { .. }));
    let e = resumed.observe(vec![0.25; 4], f64::NAN).unwrap_err();
    assert!(matches!(e, OptimizerError::NonFiniteObservation { .. }));
    let r = bo.result().unwrap();
    assert_eq!(r.evaluations, 11);
    assert!(r.objective <= benchmark(bo.space().prior()) || r.trace.len() == 11);
    let _ = benchmark.value(&[0.25; 4]);
}
