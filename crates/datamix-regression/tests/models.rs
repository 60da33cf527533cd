//! Each family on data whose answer is known.

use datamix_regression::{
    ElasticNetParams, GbdtParams, GpParams, Kernel, MdeAloneParams, MeanParams, Predictor,
    RegressionError, Regressor, RegressorSpec, RidgeParams, Task,
};
use ndarray::{Array1, Array2, array, s};
use rand::{Rng, SeedableRng};

fn task(x: Array2<f64>, y: Array1<f64>) -> Task {
    let n = x.nrows();
    Task {
        feature_names: (0..x.ncols()).map(|i| format!("f:{i}")).collect(),
        x,
        y,
        target: "t".into(),
        ids: (0..n).map(|i| format!("m{i}")).collect(),
        mde_proxy: None,
    }
}

fn random_x(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, d), |_| rng.random_range(-1.0..1.0))
}

#[test]
fn ridge_recovers_known_coefficients() {
    let x = random_x(50, 3, 1);
    let w = array![2.0, -1.0, 0.5];
    let y = x.dot(&w) + 3.0;
    let fitted = RidgeParams::new()
        .alpha(1e-8)
        .fit(&task(x.clone(), y))
        .unwrap();
    let p = fitted
        .predict(
            array![
                [0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [0.0, 0.0, 1.0]
            ]
            .view(),
        )
        .unwrap();
    assert!((p.mean[0] - 3.0).abs() < 1e-6, "intercept {}", p.mean[0]);
    for (i, wi) in w.iter().enumerate() {
        assert!((p.mean[i + 1] - p.mean[0] - wi).abs() < 1e-6, "coef {i}");
    }
    assert!(p.std.is_none());
}

#[test]
fn elastic_net_with_small_penalty_is_close_to_least_squares() {
    let x = random_x(60, 2, 2);
    let y = x.dot(&array![1.5, -0.5]) - 1.0;
    let fitted = ElasticNetParams::new()
        .alpha(1e-6)
        .fit(&task(x, y))
        .unwrap();
    let p = fitted
        .predict(array![[0.0, 0.0], [1.0, 1.0]].view())
        .unwrap();
    assert!(
        (p.mean[0] + 1.0).abs() < 1e-3 && (p.mean[1] - 0.0).abs() < 1e-3,
        "{:?}",
        p.mean
    );
}

#[test]
fn gp_interpolates_and_its_variance_grows_away_from_data() {
    let x = Array2::from_shape_fn((12, 1), |(i, _)| i as f64 / 11.0);
    let y = x.column(0).mapv(|v| (6.0 * v).sin());
    for kernel in [Kernel::Rbf, Kernel::Matern52, Kernel::Matern32] {
        let gp = GpParams::new()
            .kernel(kernel)
            .min_noise(1e-8)
            .fit(&task(x.clone(), y.clone()))
            .unwrap();
        let p = gp.predict(x.view()).unwrap();
        let err = (&p.mean - &y).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-2, "{kernel:?}: max training error {err}");
        let probe = array![[5.0 / 11.0], [5.5 / 11.0], [1.5], [3.0]];
        let s = gp.predict(probe.view()).unwrap().std.unwrap();
        assert!(
            s[0] < 0.05 && s[0] < s[2] && s[2] < s[3],
            "{kernel:?}: stds {s}"
        );
        assert!(
            s[1] > s[0],
            "{kernel:?}: between points {} vs at a point {}",
            s[1],
            s[0]
        );
    }
}

#[test]
fn gbdt_fits_a_step_function() {
    let x = Array2::from_shape_fn((80, 2), |(i, j)| {
        if j == 0 {
            i as f64 / 79.0
        } else {
            ((i * 7) % 13) as f64
        }
    });
    let y = x.column(0).mapv(|v| if v < 0.4 { 1.0 } else { 3.0 });
    let q = array![[0.1, 5.0], [0.3, 1.0], [0.6, 2.0], [0.9, 9.0]];
    // One bin per row: the step is found exactly.
    let m = GbdtParams::new()
        .min_rows_per_bin(1)
        .fit(&task(x.clone(), y.clone()))
        .unwrap();
    let p = m.predict(q.view()).unwrap();
    for (got, want) in p.mean.iter().zip([1.0, 1.0, 3.0, 3.0]) {
        assert!((got - want).abs() < 0.01, "{:?}", p.mean);
    }
    // Default bins of 3 rows (LightGBM's min_data_in_bin): the bin holding rows 30-32
    // straddles the step between rows 31 and 32, so leaves near it mix both levels. LightGBM
    // with the same settings predicts [0.979, 0.955, 2.986, 2.948] here.
    let p = GbdtParams::new()
        .fit(&task(x, y))
        .unwrap()
        .predict(q.view())
        .unwrap();
    for (got, want) in p.mean.iter().zip([1.0, 1.0, 3.0, 3.0]) {
        assert!((got - want).abs() < 0.1, "{:?}", p.mean);
    }
}

#[test]
fn boxed_predictors_score_many_candidates_like_one_at_a_time() {
    let x = random_x(30, 3, 3);
    let y = x.column(0).mapv(|v| v * v) + x.column(1);
    let t = task(x, y);
    let cands = random_x(1500, 3, 4);
    let families: Vec<Box<dyn Regressor>> = vec![
        Box::new(RidgeParams::new()),
        Box::new(GpParams::new().restarts(0)),
        Box::new(GbdtParams::new().n_trees(50)),
        Box::new(MeanParams),
    ];
    for fam in families {
        let model: Box<dyn Predictor> = fam.fit(&t).unwrap();
        let batch = model.predict(cands.view()).unwrap();
        assert_eq!(batch.mean.len(), 1500);
        for r in [0, 511, 512, 1499] {
            let (m, s) = model.predict_one(cands.row(r)).unwrap();
            assert!((m - batch.mean[r]).abs() < 1e-9, "{}: row {r}", fam.name());
            assert_eq!(s.is_some(), batch.std.is_some());
        }
        // Bad candidates: wrong width, or a NaN / inf value named by row and column.
        let e = model.predict(cands.slice(s![.., ..2])).unwrap_err();
        assert!(
            matches!(
                e,
                RegressionError::FeatureMismatch {
                    expected: 3,
                    found: 2,
                    ..
                }
            ),
            "{e}"
        );
        let mut bad = cands.slice(s![..4, ..]).to_owned();
        bad[[2, 1]] = f64::NAN;
        let e = model.predict(bad.view()).unwrap_err();
        assert!(
            matches!(&e, RegressionError::NonFinite { row: 2, column, .. } if column == "f:1"),
            "{}: {e}",
            fam.name()
        );
        bad[[2, 1]] = 0.5;
        bad[[0, 2]] = f64::INFINITY;
        assert!(model.predict(bad.view()).is_err());
    }
}

#[test]
fn model_specs_deserialize_and_validate() {
    let spec: RegressorSpec =
        serde_json::from_str(r#"{"family": "gp", "kernel": "rbf", "restarts": 1}"#).unwrap();
    assert_eq!(spec.build().unwrap().name(), "gp-rbf");
    let spec: RegressorSpec = serde_json::from_str(r#"{"family": "mde-alone"}"#).unwrap();
    assert_eq!(spec, RegressorSpec::MdeAlone { calibrate: true });
    let bad: RegressorSpec =
        serde_json::from_str(r#"{"family": "gbdt", "learning_rate": 0}"#).unwrap();
    assert!(
        bad.build()
            .unwrap_err()
            .to_string()
            .contains("learning_rate")
    );
    assert!(serde_json::from_str::<RegressorSpec>(r#"{"family": "ridge", "alpah": 1}"#).is_err());
    assert_eq!(MdeAloneParams::default().name(), "mde-alone-calibrated");
}
