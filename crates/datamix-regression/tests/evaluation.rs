//! Cross-validation, metrics, tables and bad input.

use std::io::Cursor;
use std::path::Path;

use datamix_regression::eval::{pearson, ranks, spearman};
use datamix_regression::{
    Column, Dataset, FeatureSet, Folds, GbdtParams, GpParams, MdeAloneParams, MeanParams,
    RegressionError, Regressor, RidgeParams, SyntheticSpec, compare, cross_validate,
    learning_curve, synthetic,
};
use ndarray::{Array1, Array2, array};
use proptest::prelude::*;

fn read(text: &str) -> Result<Dataset, RegressionError> {
    Dataset::read_csv(Cursor::new(text.to_string()), Path::new("mix.csv"))
}

#[test]
fn loo_of_the_mean_matches_hand_computation() {
    let d = read("mixture,lambda:a,target:t\nm0,0.1,1\nm1,0.2,2\nm2,0.3,3\nm3,0.4,4\n").unwrap();
    let task = d.task(&["lambda"], "t").unwrap();
    let cv = cross_validate(&MeanParams, &task, &Folds::loo(4).unwrap()).unwrap();
    // Leaving row i out predicts the mean of the other three: [3, 8/3, 7/3, 2].
    let expect = array![3.0, 8.0 / 3.0, 7.0 / 3.0, 2.0];
    assert!((&cv.predictions - &expect).mapv(f64::abs).sum() < 1e-12);
    assert!((cv.metrics.mse - (4.0 + 4.0 / 9.0 + 4.0 / 9.0 + 4.0) / 4.0).abs() < 1e-12);
    assert!((cv.metrics.spearman + 1.0).abs() < 1e-12);
    assert!((cv.metrics.pearson + 1.0).abs() < 1e-12);
    // Predicted best is m3 (2.0), truly the worst: rank 4, regret 4 − 1.
    assert_eq!(cv.metrics.top1_rank, 4.0);
    assert_eq!(cv.metrics.top1_regret, 3.0);
}

#[test]
fn spearman_handles_ties() {
    // x ranks [1.5, 1.5, 3, 4], y ranks [1, 2, 3, 4].
    let rho = spearman(
        array![5.0, 5.0, 6.0, 7.0].view(),
        array![1.0, 2.0, 3.0, 4.0].view(),
    );
    assert!((rho - 0.9486832980505138).abs() < 1e-12, "{rho}");
    assert_eq!(ranks(array![2.0, 2.0, 2.0].view()), array![2.0, 2.0, 2.0]);
}

proptest! {
    #[test]
    fn spearman_is_invariant_under_monotone_maps(v in prop::collection::vec(-10.0f64..10.0, 3..20), w in prop::collection::vec(-10.0f64..10.0, 3..20)) {
        let n = v.len().min(w.len());
        let (a, b) = (Array1::from(v[..n].to_vec()), Array1::from(w[..n].to_vec()));
        let rho = spearman(a.view(), b.view());
        let rho2 = spearman(a.mapv(|x| x.exp()).view(), b.mapv(|x| 3.0 * x - 1.0).view());
        prop_assume!(rho.is_finite());
        prop_assert!((rho - rho2).abs() < 1e-9);
        prop_assert!((-1.0 - 1e-12..=1.0 + 1e-12).contains(&rho));
        prop_assert!((pearson(a.view(), a.view()) - 1.0).abs() < 1e-9 || a.iter().all(|&x| x == a[0]));
    }

    #[test]
    fn ranks_sum_to_n_n_plus_1_over_2(v in prop::collection::vec(0u8..5, 1..30)) {
        let a = Array1::from(v.iter().map(|&x| x as f64).collect::<Vec<_>>());
        let n = a.len() as f64;
        prop_assert!((ranks(a.view()).sum() - n * (n + 1.0) / 2.0).abs() < 1e-9);
    }
}

#[test]
fn mde_features_beat_lambda_alone_on_synthetic_mixtures() {
    let mut data = synthetic(&SyntheticSpec {
        n_mixtures: 40,
        ..Default::default()
    });
    data.add_mean_objective("avg").unwrap();
    let folds = Folds::kfold(40, 5, Some(1)).unwrap();
    let ridge = RidgeParams::new().alpha(0.1);
    let gp = GpParams::new().restarts(0);
    let gbdt = GbdtParams::new().n_trees(200).learning_rate(0.05);
    let mde = MdeAloneParams::default();
    let fams: Vec<&dyn Regressor> = vec![&MeanParams, &mde, &ridge, &gp, &gbdt];
    let sets = [
        FeatureSet::new("λ", &["lambda"]),
        FeatureSet::new("λ+MDE", &["lambda", "mde"]),
        FeatureSet::new("λ+MDE+merged", &["lambda", "mde", "merged"]),
    ];
    let table = compare(&data, "avg", &fams, &sets, &folds).unwrap();
    // MDE alone is skipped on λ only: 3 + 2 + 3 + 3 + 3 rows.
    assert_eq!(table.rows.len(), 14);
    eprintln!("{}", table.to_markdown());
    let get = |f: &str, s: &str| {
        table
            .rows
            .iter()
            .find(|r| r.family == f && r.features == s)
            .unwrap()
            .metrics
    };
    assert!(get("mde-alone-calibrated", "λ+MDE").spearman > 0.8);
    for fam in ["ridge", "gp-matern52"] {
        assert!(get(fam, "λ+MDE").spearman > get(fam, "λ").spearman, "{fam}");
        assert!(get(fam, "λ+MDE").mse < get("mean", "λ").mse, "{fam}");
        assert!(
            get(fam, "λ+MDE+merged").spearman > get(fam, "λ").spearman,
            "{fam}"
        );
    }
    let n_feat = |s: &str| {
        table
            .rows
            .iter()
            .find(|r| r.features == s)
            .unwrap()
            .n_features
    };
    assert_eq!(
        (n_feat("λ"), n_feat("λ+MDE"), n_feat("λ+MDE+merged")),
        (5, 10, 15)
    );
    let md = table.to_markdown();
    assert!(md.contains("| gp-matern52 | λ+MDE |"), "{md}");
    let dir = tempfile::tempdir().unwrap();
    for ext in ["csv", "json", "md"] {
        let p = dir.path().join(format!("t.{ext}"));
        table.save(&p).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("ridge"));
    }
    assert!(table.save(dir.path().join("t.txt")).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        3,
        "no stray temporary files"
    );
}

#[test]
fn learning_curve_improves_with_more_mixtures() {
    let data = synthetic(&SyntheticSpec {
        n_mixtures: 40,
        seed: 3,
        ..Default::default()
    });
    let task = data.task(&["lambda", "mde"], "e1").unwrap();
    let folds = Folds::kfold(40, 4, Some(0)).unwrap();
    let lc = learning_curve(
        &RidgeParams::new().alpha(0.1),
        &task,
        &folds,
        &[5, 30],
        3,
        0,
    )
    .unwrap();
    assert_eq!(lc.len(), 2);
    assert!(lc[1].metrics.mse < lc[0].metrics.mse, "{lc:?}");
    assert!(learning_curve(&MeanParams, &task, &folds, &[31], 1, 0).is_err());
}

#[test]
fn csv_round_trips() {
    let data = synthetic(&SyntheticSpec {
        n_mixtures: 7,
        n_domains: 3,
        n_eval: 2,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.csv");
    data.to_csv(&p).unwrap();
    let back = Dataset::from_csv(&p).unwrap();
    assert_eq!(back.ids(), data.ids());
    assert_eq!(back.columns(), data.columns());
    assert_eq!(back.features(), data.features());
    assert_eq!(back.targets(), data.targets());
    assert_eq!(back.groups(), vec!["lambda", "mde", "merged"]);
}

#[test]
fn bad_input_gives_typed_errors_naming_row_and_column() {
    let e = read("mixture,lambda:a,target:t\nm0,0.1,1\nm1,0.2\n").unwrap_err();
    assert!(
        matches!(
            e,
            RegressionError::ColumnCount {
                row: 3,
                expected: 3,
                found: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = read("mixture,lambda:a,target:t\nm0,0.1,1\nm1,NaN,2\n").unwrap_err();
    assert!(
        matches!(&e, RegressionError::NonFinite { row: 1, column, .. } if column == "lambda:a"),
        "{e}"
    );
    assert!(e.to_string().contains("m1"), "{e}");
    let e = read("mixture,lambda:a,target:t\nm0,0.1,inf\n").unwrap_err();
    assert!(
        matches!(&e, RegressionError::NonFinite { column, .. } if column == "target:t"),
        "{e}"
    );
    let e = read("mixture,lambda:a,target:t\nm0,abc,1\n").unwrap_err();
    assert!(
        matches!(&e, RegressionError::Parse { row: 2, column, .. } if column == "lambda:a"),
        "{e}"
    );
    let e = read("mixture,lambda,target:t\nm0,1,1\n").unwrap_err();
    assert!(
        matches!(&e, RegressionError::BadColumn { column, .. } if column == "lambda"),
        "{e}"
    );
    let e = read("mixture,lambda:a,lambda:a,target:t\nm0,1,1,1\n").unwrap_err();
    assert!(
        matches!(&e, RegressionError::BadColumn { column, .. } if column == "lambda:a"),
        "{e}"
    );

    let d =
        read("mixture,lambda:a,target:t,target:c\nm0,0.1,1,5\nm1,0.2,2,5\nm2,0.3,3,5\n").unwrap();
    let e = d.task(&["lambda"], "c").unwrap_err();
    assert!(
        matches!(&e, RegressionError::ConstantTarget { target, .. } if target == "c"),
        "{e}"
    );
    assert!(matches!(
        d.task(&["mde"], "t"),
        Err(RegressionError::Unknown {
            kind: "feature group",
            ..
        })
    ));
    assert!(matches!(
        d.task(&["lambda"], "x"),
        Err(RegressionError::Unknown { kind: "target", .. })
    ));
    assert!(matches!(
        Folds::kfold(d.n_rows(), 5, None),
        Err(RegressionError::TooFewRows {
            needed: 5,
            rows: 3,
            ..
        })
    ));
    let task = d.task(&["lambda"], "t").unwrap();
    let e = cross_validate(&MeanParams, &task, &Folds::kfold(4, 2, None).unwrap()).unwrap_err();
    assert!(matches!(e, RegressionError::Shape { .. }), "{e}");

    // Built in memory: names vs columns, and non-finite values named by row and column.
    let ids = vec!["m0".to_string(), "m1".to_string()];
    let cols = vec![Column::new("lambda", "a"), Column::new("mde", "e")];
    let e = Dataset::new(
        ids.clone(),
        cols[..1].to_vec(),
        Array2::zeros((2, 2)),
        vec!["t".into()],
        Array2::zeros((2, 1)),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            RegressionError::Shape {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = Dataset::new(
        ids,
        cols,
        array![[0.5, 3.0], [0.5, f64::NEG_INFINITY]],
        vec!["t".into()],
        array![[1.0], [2.0]],
    )
    .unwrap_err();
    assert!(
        matches!(&e, RegressionError::NonFinite { row: 1, id, column, .. } if id == "m1" && column == "mde:e"),
        "{e}"
    );
}
