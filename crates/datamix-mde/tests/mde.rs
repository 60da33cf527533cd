//! Behaviour of MDE tables, losses, gradients, the optimum and features.

use datamix_mde::{
    Bounds, ExpertTable, ExpertTableBuilder, MdeError, MixtureProblem, OptimumParams,
    WeightedMdeLoss, mde_features, minimize,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random table: per-token difficulty plus per-expert noise, log-probs in about [-12, 0].
fn random_table(k: usize, t: usize, seed: u64) -> ExpertTable {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let base: Vec<f32> = (0..t)
        .map(|_| 2.0 * rng.random_range(1e-4f32..1.0).ln())
        .collect();
    let mut b = ExpertTableBuilder::new("dom", "tok");
    for i in 0..k {
        let row: Vec<f32> = base
            .iter()
            .map(|&x| (x + rng.random_range(-2.0f32..2.0)).min(0.0))
            .collect();
        b.add_expert(format!("e{i}"), format!("h{i}"), &row)
            .unwrap();
    }
    b.build().unwrap()
}

fn random_mixture(rng: &mut ChaCha8Rng, k: usize) -> Vec<f64> {
    let w: Vec<f64> = (0..k)
        .map(|_| -rng.random_range(1e-9f64..1.0).ln())
        .collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|x| x / s).collect()
}

fn one_hot(k: usize, i: usize) -> Vec<f64> {
    (0..k).map(|j| if j == i { 1.0 } else { 0.0 }).collect()
}

#[test]
fn one_hot_mixture_is_the_experts_cross_entropy() {
    let table = random_table(5, 3001, 1);
    let hots: Vec<Vec<f64>> = (0..5).map(|i| one_hot(5, i)).collect();
    let batched = table.losses(&hots).unwrap();
    for i in 0..5 {
        let ce = table.expert_cross_entropy(i);
        assert!(ce > 0.5, "cross-entropy {ce} should be a real loss");
        assert!((table.loss(&hots[i]).unwrap() - ce).abs() < 1e-9 * ce);
        assert!(
            (batched[i] - ce).abs() < 1e-6 * ce,
            "{} vs {ce}",
            batched[i]
        );
    }
}

#[test]
fn batched_equals_one_at_a_time() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    // k = 20 exercises the scalar kernel; 5003 tokens leave a tail after the 16-token blocks.
    for (k, t) in [(1, 40), (3, 5003), (8, 20_000), (20, 1000)] {
        let table = random_table(k, t, k as u64);
        let mut mixtures: Vec<Vec<f64>> = (0..150).map(|_| random_mixture(&mut rng, k)).collect();
        mixtures.push(one_hot(k, k - 1));
        let batched = table.losses(&mixtures).unwrap();
        assert_eq!(batched.len(), mixtures.len());
        for (m, b) in mixtures.iter().zip(&batched) {
            let exact = table.loss(m).unwrap();
            assert!(
                (b - exact).abs() <= 1e-6 * exact.abs(),
                "k={k} T={t}: {b} vs {exact}"
            );
        }
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let table = random_table(4, 2000, 3);
    let lambda = [0.1, 0.2, 0.3, 0.4];
    let (value, grad) = table.loss_and_grad(&lambda).unwrap();
    assert!((value - table.loss(&lambda).unwrap()).abs() < 1e-12);
    // Directions inside the simplex's tangent space (sum zero), plus the per-coordinate
    // derivative via the homogeneity identity Σ_i λ_i ∂L/∂λ_i = -1.
    let h = 1e-6;
    for d in [
        [1.0, -1.0, 0.0, 0.0],
        [0.0, 0.5, 0.5, -1.0],
        [0.3, -0.1, -0.1, -0.1],
    ] {
        let plus: Vec<f64> = lambda.iter().zip(&d).map(|(l, d)| l + h * d).collect();
        let minus: Vec<f64> = lambda.iter().zip(&d).map(|(l, d)| l - h * d).collect();
        let fd = (table.loss(&plus).unwrap() - table.loss(&minus).unwrap()) / (2.0 * h);
        let an: f64 = grad.iter().zip(&d).map(|(g, d)| g * d).sum();
        assert!((fd - an).abs() < 1e-6 * an.abs().max(1.0), "{fd} vs {an}");
    }
    let euler: f64 = grad.iter().zip(&lambda).map(|(g, l)| g * l).sum();
    assert!((euler + 1.0).abs() < 1e-9, "Σ λ_i g_i = {euler}");
}

#[test]
fn underflowing_probabilities_stay_finite_and_exact() {
    // Expert 0 is sure, expert 1 gives p = e^-300 (0 in f32 after exp), expert 2 e^-500.
    let t = 1000;
    let mut b = ExpertTableBuilder::new("dom", "tok");
    b.add_expert("sure", "h0", &vec![-0.01f32; t]).unwrap();
    b.add_expert("tiny", "h1", &vec![-300.0f32; t]).unwrap();
    b.add_expert("tinier", "h2", &vec![-500.0f32; t]).unwrap();
    let table = b.build().unwrap();
    let cases = [
        (vec![0.0, 1.0, 0.0], 300.0),
        (vec![0.0, 0.0, 1.0], 500.0),
        (vec![0.0, 0.5, 0.5], 300.0 + 2f64.ln()),
        (vec![1e-200, 1.0 - 1e-200, 0.0], 300.0),
    ];
    let mixtures: Vec<Vec<f64>> = cases.iter().map(|c| c.0.clone()).collect();
    let batched = table.losses(&mixtures).unwrap();
    for ((m, want), b) in cases.iter().zip(batched) {
        let exact = table.loss(m).unwrap();
        assert!((exact - want).abs() < 1e-6, "{m:?}: {exact} vs {want}");
        assert!((b - want).abs() < 1e-6, "{m:?}: batched {b} vs {want}");
        let (_, g) = table.loss_and_grad(m).unwrap();
        assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
    }
}

/// Token types 0..3 with frequencies α; expert c is sure of type-c tokens and gives the
/// others p = e^-60. The optimum of L over the simplex is λ = α (up to ~1e-26).
fn typed_table(alpha: &[usize], domain: &str) -> ExpertTable {
    let types: Vec<usize> = alpha
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c, n))
        .collect();
    let mut b = ExpertTableBuilder::new(domain, "tok");
    for i in 0..alpha.len() {
        let row: Vec<f32> = types
            .iter()
            .map(|&c| if c == i { 0.0 } else { -60.0 })
            .collect();
        b.add_expert(format!("e{i}"), format!("h{i}"), &row)
            .unwrap();
    }
    b.build().unwrap()
}

#[test]
fn optimum_recovers_known_answer_and_beats_vertices_and_random_points() {
    let table = typed_table(&[500, 300, 200], "dom");
    let objective = WeightedMdeLoss::mean(&[&table]).unwrap();
    let opt = minimize(&objective, &Bounds::simplex(3), &OptimumParams::default()).unwrap();
    assert!(opt.converged, "{opt:?}");
    assert!(opt.gap <= 1e-9);
    for (l, a) in opt.lambda.iter().zip([0.5, 0.3, 0.2]) {
        assert!((l - a).abs() < 1e-4, "{:?}", opt.lambda);
    }
    let known = table.loss(&[0.5, 0.3, 0.2]).unwrap();
    assert!(opt.value <= known + 1e-9 && opt.value >= known - opt.gap - 1e-12);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for i in 0..3 {
        assert!(opt.value < table.loss(&one_hot(3, i)).unwrap());
    }
    for _ in 0..200 {
        assert!(opt.value <= table.loss(&random_mixture(&mut rng, 3)).unwrap() + 1e-12);
    }
}

#[test]
fn optimum_respects_bounds_and_weights() {
    let a = typed_table(&[500, 300, 200], "a");
    // With λ_0 <= 0.4 the optimum of Σ α_c ln λ_c puts 0.4 on expert 0 and splits the
    // rest 3:2.
    let bounds = Bounds::new(vec![0.0; 3], vec![0.4, 1.0, 1.0]).unwrap();
    let opt = minimize(
        &WeightedMdeLoss::mean(&[&a]).unwrap(),
        &bounds,
        &OptimumParams::default(),
    )
    .unwrap();
    assert!(opt.converged, "{opt:?}");
    for (l, w) in opt.lambda.iter().zip([0.4, 0.36, 0.24]) {
        assert!((l - w).abs() < 1e-4, "{:?}", opt.lambda);
    }
    // Two domains weighted 1:3 pool their token types: α = (1·0.5 + 3·0.1, 1·0.3 + 3·0.1, 1·0.2 + 3·0.8) / 4.
    let b = typed_table(&[100, 100, 800], "b");
    let obj = WeightedMdeLoss::new(&[&a, &b], &[1.0, 3.0]).unwrap();
    let opt = minimize(&obj, &Bounds::simplex(3), &OptimumParams::default()).unwrap();
    assert!(opt.converged, "{opt:?}");
    for (l, w) in opt.lambda.iter().zip([0.2, 0.15, 0.65]) {
        assert!((l - w).abs() < 1e-4, "{:?}", opt.lambda);
    }
}

#[test]
fn optimum_on_random_tables_has_small_certified_gap() {
    let t1 = random_table(6, 4000, 7);
    let t2 = random_table(6, 3000, 8).select(t1.expert_ids()).unwrap();
    let t2 = ExpertTable::from_parts(
        datamix_mde::TableMeta {
            eval_domain: "other".into(),
            ..t2.meta().clone()
        },
        t2.logp().to_vec(),
    )
    .unwrap();
    let obj = WeightedMdeLoss::new(&[&t1, &t2], &[0.7, 0.3]).unwrap();
    let bounds = Bounds::new(vec![0.05; 6], vec![0.5; 6]).unwrap();
    let opt = minimize(&obj, &bounds, &OptimumParams::default().gap_tol(1e-10)).unwrap();
    assert!(opt.converged && opt.gap <= 1e-10, "{opt:?}");
    assert!(
        opt.lambda
            .iter()
            .all(|&l| (0.05 - 1e-12..=0.5 + 1e-12).contains(&l))
    );
    assert!((opt.lambda.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..100 {
        let m = random_mixture(&mut rng, 6);
        // Project crudely into the box by mixing with the optimum; still feasible.
        let m: Vec<f64> = m
            .iter()
            .zip(&opt.lambda)
            .map(|(a, b)| 0.5 * a + 0.5 * b)
            .collect();
        if m.iter().all(|&x| (0.05..=0.5).contains(&x)) {
            assert!(opt.value <= obj.value_and_grad(&m).unwrap().0 + 1e-12);
        }
    }
}

#[test]
fn features_matrix_has_one_column_per_domain() {
    let a = random_table(3, 500, 10);
    let b = ExpertTable::from_parts(
        datamix_mde::TableMeta {
            eval_domain: "b".into(),
            ..random_table(3, 700, 11).meta().clone()
        },
        random_table(3, 700, 11).logp().to_vec(),
    )
    .unwrap();
    let mixtures = vec![vec![1.0, 0.0, 0.0], vec![0.2, 0.3, 0.5]];
    let f = mde_features(&[&a, &b], &mixtures).unwrap();
    assert_eq!(f.dim(), (2, 2));
    for (r, m) in mixtures.iter().enumerate() {
        assert!((f[[r, 0]] - a.loss(m).unwrap()).abs() < 1e-6 * f[[r, 0]]);
        assert!((f[[r, 1]] - b.loss(m).unwrap()).abs() < 1e-6 * f[[r, 1]]);
    }
    // Tables listing experts in another order are rejected until aligned.
    let reordered = b.select(&["e2", "e0", "e1"]).unwrap();
    assert!(matches!(
        mde_features(&[&a, &reordered], &mixtures),
        Err(MdeError::ExpertMismatch { .. })
    ));
    let realigned = reordered.select(a.expert_ids()).unwrap();
    assert_eq!(mde_features(&[&a, &realigned], &mixtures).unwrap(), f);
}

#[test]
fn bad_mixtures_are_typed_errors() {
    let table = random_table(3, 100, 12);
    let problem = |m: &[f64]| match table.loss(m) {
        Err(MdeError::Mixture { problem, .. }) => problem,
        other => panic!("{m:?}: expected a mixture error, got {other:?}"),
    };
    assert!(matches!(
        problem(&[0.5, 0.5]),
        MixtureProblem::WrongLength {
            expected: 3,
            got: 2
        }
    ));
    assert!(matches!(
        problem(&[1.5, -0.5, 0.0]),
        MixtureProblem::Negative { index: 1, .. }
    ));
    assert!(matches!(
        problem(&[f64::NAN, 0.5, 0.5]),
        MixtureProblem::NonFinite { index: 0, .. }
    ));
    assert!(matches!(problem(&[0.0, 0.0, 0.0]), MixtureProblem::AllZero));
    assert!(matches!(
        problem(&[0.3, 0.3, 0.3]),
        MixtureProblem::NotNormalized { .. }
    ));
    // Batched errors name the row.
    let err = table
        .losses(&[vec![0.2, 0.3, 0.5], vec![0.2, 0.3]])
        .unwrap_err();
    assert!(matches!(err, MdeError::Mixture { row: 1, .. }), "{err}");
    assert!(err.to_string().contains("row 1"));
}

#[test]
fn mismatched_tables_and_experts_are_typed_errors() {
    let mut b = ExpertTableBuilder::new("dom", "tok");
    b.add_expert("a", "h", &[-1.0, -2.0]).unwrap();
    assert!(matches!(
        b.add_expert("b", "h", &[-1.0]),
        Err(MdeError::TokenCountMismatch {
            expected: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        b.add_expert("a", "h", &[-1.0, -1.0]),
        Err(MdeError::DuplicateExpert { .. })
    ));
    assert!(matches!(
        b.add_expert("c", "h", &[-1.0, f32::NAN]),
        Err(MdeError::InvalidLogProb { position: 1, .. })
    ));
    assert!(matches!(
        b.add_expert("c", "h", &[0.5, -1.0]),
        Err(MdeError::InvalidLogProb { position: 0, .. })
    ));
    let a = b.build().unwrap();
    assert!(matches!(
        ExpertTableBuilder::new("dom", "tok").build(),
        Err(MdeError::EmptyTable { .. })
    ));

    let mut other_tok = ExpertTableBuilder::new("dom", "tok2");
    other_tok.add_expert("z", "h", &[-1.0, -1.0]).unwrap();
    let other_tok = other_tok.build().unwrap();
    assert!(matches!(
        a.merge_experts(&other_tok),
        Err(MdeError::TokenizerMismatch { .. })
    ));
    assert!(matches!(
        WeightedMdeLoss::mean(&[&a, &other_tok]),
        Err(MdeError::TokenizerMismatch { .. })
    ));

    let mut longer = ExpertTableBuilder::new("dom", "tok");
    longer.add_expert("z", "h", &[-1.0, -1.0, -1.0]).unwrap();
    assert!(matches!(
        a.merge_experts(&longer.build().unwrap()),
        Err(MdeError::TokenCountMismatch { .. })
    ));

    let mut more = ExpertTableBuilder::new("dom", "tok");
    more.add_expert("z", "hz", &[-3.0, -0.5]).unwrap();
    let merged = a.merge_experts(&more.build().unwrap()).unwrap();
    assert_eq!(merged.expert_ids(), ["a", "z"]);
    assert_eq!(merged.logp_row(1), [-3.0, -0.5]);

    match merged.select(&["z", "missing"]) {
        Err(MdeError::MissingExpert { expert, .. }) => assert_eq!(expert, "missing"),
        other => panic!("expected MissingExpert, got {other:?}"),
    }
}

/// `base` as this process's umask leaves it (read from `/proc/self/status`; `base` itself
/// where that is unreadable), i.e. the mode of a file or folder created with `base`.
#[cfg(unix)]
fn under_umask(base: u32) -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .map_or(base, |m| base & !m)
}

#[test]
fn save_load_round_trip_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let table = random_table(3, 1234, 13);
    let path = dir.path().join("t.safetensors");
    table.save(&path).unwrap();
    let back = ExpertTable::load(&path).unwrap();
    assert_eq!(back.meta(), table.meta());
    assert_eq!(back.logp(), table.logp());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp files left"
    );
    let m = [0.2, 0.3, 0.5];
    assert_eq!(back.loss(&m).unwrap(), table.loss(&m).unwrap());

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a table").unwrap();
    assert!(matches!(
        ExpertTable::load(&junk),
        Err(MdeError::Format { .. })
    ));
    assert!(matches!(
        ExpertTable::load(dir.path().join("absent")),
        Err(MdeError::Io { .. })
    ));
    // Truncated copies (shorter than a header, or cut inside the data) are typed errors
    // naming the file, found before or while mapping it.
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
        let short = dir.path().join(format!("cut{cut}.safetensors"));
        std::fs::write(&short, &bytes[..cut]).unwrap();
        match ExpertTable::load(&short) {
            Err(MdeError::Format { path, .. }) => assert_eq!(path, short),
            other => panic!("{cut} bytes: expected a format error, got {other:?}"),
        }
    }
    // Saving into a missing folder fails without creating anything.
    assert!(matches!(
        table.save(dir.path().join("no/such/dir/t.safetensors")),
        Err(MdeError::Io { .. })
    ));
}

#[test]
fn identical_tables_save_to_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let table = random_table(4, 257, 5);
    let mut files = Vec::new();
    for i in 0..6 {
        // Fresh HashMaps each time: their iteration order (and formerly the header's) varies.
        let p = dir.path().join(format!("t{i}.safetensors"));
        table.save(&p).unwrap();
        files.push(std::fs::read(&p).unwrap());
        let back = ExpertTable::load(&p).unwrap();
        assert_eq!(back.meta(), table.meta());
        assert_eq!(back.logp(), table.logp());
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]), "table files differ");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("t0.safetensors"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            under_umask(0o644),
            "tables are not private temp files"
        );
    }
    let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header padded to 8 bytes");
}

fn small_table() -> impl Strategy<Value = (usize, Vec<f32>)> {
    (2usize..5, 1usize..40)
        .prop_flat_map(|(k, t)| (Just(k), proptest::collection::vec(-30.0f32..0.0, k * t)))
}

fn simplex_point(k: usize) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(0.0f64..1.0, k).prop_map(|w| {
        let s: f64 = w.iter().sum::<f64>() + 1e-9;
        let mut v: Vec<f64> = w.iter().map(|x| x / s).collect();
        let rest = 1.0 - v.iter().sum::<f64>();
        v[0] += rest;
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn loss_is_midpoint_convex(((k, logp), (a, b)) in small_table().prop_flat_map(|(k, logp)| {
        (Just((k, logp)), (simplex_point(k), simplex_point(k)))
    })) {
        let t = logp.len() / k;
        let mut builder = ExpertTableBuilder::new("d", "t");
        for i in 0..k {
            builder.add_expert(format!("e{i}"), "h", &logp[i * t..(i + 1) * t]).unwrap();
        }
        let table = builder.build().unwrap();
        let mid: Vec<f64> = a.iter().zip(&b).map(|(x, y)| 0.5 * (x + y)).collect();
        let (la, lb, lm) = (table.loss(&a).unwrap(), table.loss(&b).unwrap(), table.loss(&mid).unwrap());
        prop_assert!(lm <= 0.5 * (la + lb) + 1e-9 * (1.0 + la.abs() + lb.abs()), "{lm} > ({la} + {lb}) / 2");
    }
}
