//! Flattening a random plan gives the same model as evaluating it recursively.

use datamix_merge::{MergePlan, Source, Weighting};
use proptest::prelude::*;

const LEAVES: usize = 5;

fn plan() -> impl Strategy<Value = MergePlan> {
    let leaf = (0..LEAVES).prop_map(|i| MergePlan::leaf(Source::Key(format!("m{i}"))));
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop::collection::vec((0.0f64..10.0, inner), 1..4).prop_map(MergePlan::Average)
    })
}

/// Each checkpoint `m{i}` is the 2-vector `models[i]`; average recursively.
fn naive(plan: &MergePlan, models: &[[f64; 2]], weighting: Weighting) -> Option<[f64; 2]> {
    match plan {
        MergePlan::Leaf(Source::Key(k)) => Some(models[k[1..].parse::<usize>().unwrap()]),
        MergePlan::Leaf(Source::Path(_)) => unreachable!(),
        MergePlan::Average(children) => {
            let sum: f64 = children.iter().map(|(w, _)| w).sum();
            let norm = match weighting {
                Weighting::Normalized if sum == 0.0 => return None,
                Weighting::Normalized => sum,
                Weighting::Raw => 1.0,
            };
            let mut out = [0.0; 2];
            for (w, c) in children {
                let v = naive(c, models, weighting)?;
                for j in 0..2 {
                    out[j] += w / norm * v[j];
                }
            }
            Some(out)
        }
    }
}

proptest! {
    #[test]
    fn flattening_matches_recursive_evaluation(
        plan in plan(),
        models in prop::array::uniform5(prop::array::uniform2(-100.0f64..100.0)),
        raw in any::<bool>(),
    ) {
        let weighting = if raw { Weighting::Raw } else { Weighting::Normalized };
        let want = naive(&plan, &models, weighting);
        match plan.flatten(weighting) {
            Ok(flat) => {
                let want = want.expect("flatten accepted a plan with a zero-sum node");
                let mut got = [0.0; 2];
                for t in &flat.terms {
                    let Source::Key(k) = &t.source else { unreachable!() };
                    let m = models[k[1..].parse::<usize>().unwrap()];
                    for j in 0..2 {
                        got[j] += t.weight * m[j];
                    }
                }
                for j in 0..2 {
                    prop_assert!((got[j] - want[j]).abs() <= 1e-9 * (1.0 + want[j].abs()));
                }
                // Distinct sources, and convex weights when normalised.
                let mut keys: Vec<_> = flat.terms.iter().map(|t| t.source.clone()).collect();
                keys.dedup();
                prop_assert_eq!(keys.len(), flat.terms.len());
                if !raw {
                    let total: f64 = flat.terms.iter().map(|t| t.weight).sum();
                    prop_assert!((total - 1.0).abs() < 1e-9);
                }
            }
            Err(_) => {
                // Only zero-sum weights can be rejected here.
                let zero_somewhere = want.is_none()
                    || naive(&plan, &[[1.0, 1.0]; LEAVES], Weighting::Raw) == Some([0.0, 0.0]);
                prop_assert!(zero_somewhere);
            }
        }
    }
}
