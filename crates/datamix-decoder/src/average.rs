//! Typed, in-memory weighted averaging of Burn modules of the same
//! architecture (any [`Module`], not only [`crate::Decoder`]): the proxy of a
//! candidate mixture can be merged and evaluated in one process without
//! touching disk. File-based, streaming merges of checkpoints live in
//! `datamix-merge`.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::error::{DecoderError, Result};

struct Collect<B: Backend> {
    out: Vec<(Vec<usize>, Tensor<B, 1>)>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let n: usize = shape.iter().product();
        self.out.push((shape, t.reshape([n])));
    }
}

struct Replace<B: Backend> {
    next: std::vec::IntoIter<Tensor<B, 1>>,
}

impl<B: Backend> ModuleMapper<B> for Replace<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, old, mapper) = param.consume();
        let new = self
            .next
            .next()
            .expect("parameter counts were checked")
            .reshape(old.shape())
            .detach();
        let new = if old.is_require_grad() {
            new.require_grad()
        } else {
            new
        };
        Param::from_mapped_value(id, new, mapper)
    }
}

/// `Σ_i w_i θ_i` over the float parameters of `models` (same architecture).
///
/// Weights must be finite and non-negative with a positive sum; they are
/// normalised to sum to 1. The result keeps the structure (and constant
/// tensors such as RoPE tables) of the first model.
pub fn average_modules<B: Backend, M: Module<B>>(models: Vec<M>, weights: &[f64]) -> Result<M> {
    if models.is_empty() || models.len() != weights.len() {
        return Err(DecoderError::InvalidInput(format!(
            "{} models and {} weights: need as many weights as models, at least one",
            models.len(),
            weights.len()
        )));
    }
    if let Some((i, w)) = weights
        .iter()
        .enumerate()
        .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
    {
        return Err(DecoderError::InvalidInput(format!(
            "weight {i} is {w}: weights must be finite and non-negative"
        )));
    }
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Err(DecoderError::InvalidInput("weights are all zero".into()));
    }
    let params: Vec<Vec<(Vec<usize>, Tensor<B, 1>)>> = models
        .iter()
        .map(|m| {
            let mut c = Collect { out: Vec::new() };
            m.visit(&mut c);
            c.out
        })
        .collect();
    for (i, p) in params.iter().enumerate().skip(1) {
        let same = p.len() == params[0].len() && p.iter().zip(&params[0]).all(|(a, b)| a.0 == b.0);
        if !same {
            return Err(DecoderError::InvalidInput(format!(
                "model {i} does not have the architecture of model 0 (parameter count or shapes differ)"
            )));
        }
    }
    let n_params = params[0].len();
    let mut sums: Vec<Option<Tensor<B, 1>>> = vec![None; n_params];
    for (p, &w) in params.into_iter().zip(weights) {
        if w == 0.0 {
            continue;
        }
        let w = w / total;
        for (slot, (_, t)) in sums.iter_mut().zip(p) {
            let term = if w == 1.0 { t } else { t.mul_scalar(w) };
            *slot = Some(match slot.take() {
                Some(acc) => acc + term,
                None => term,
            });
        }
    }
    let sums: Vec<Tensor<B, 1>> = sums
        .into_iter()
        .map(|s| s.expect("positive weight"))
        .collect();
    let first = models.into_iter().next().expect("non-empty");
    Ok(first.map(&mut Replace {
        next: sums.into_iter(),
    }))
}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use super::*;
    use crate::checkpoint::to_host;
    use crate::config::DecoderConfig;

    type Cpu = crate::backend::Cpu;

    fn model(seed: u64) -> crate::Decoder<Cpu> {
        DecoderConfig::preset("tiny", 64)
            .unwrap()
            .init_seeded(seed, &Default::default())
            .unwrap()
    }

    #[test]
    fn averaging_identical_models_is_the_identity() {
        let a = model(1);
        let avg = average_modules(vec![model(1), model(1)], &[0.5, 0.5]).unwrap();
        assert_eq!(to_host(&a), to_host(&avg));
        let one = average_modules(vec![model(1), model(2)], &[1.0, 0.0]).unwrap();
        assert_eq!(to_host(&a), to_host(&one));
    }

    #[test]
    fn average_is_the_weighted_sum() {
        let (a, b) = (to_host(&model(1)), to_host(&model(2)));
        let avg = to_host(&average_modules(vec![model(1), model(2)], &[3.0, 1.0]).unwrap());
        for (name, t) in &avg {
            for ((x, y), z) in a[name].data.iter().zip(&b[name].data).zip(&t.data) {
                assert!((0.75 * x + 0.25 * y - z).abs() < 1e-6, "{name}");
            }
        }
    }

    #[test]
    fn bad_weights_and_architectures_are_rejected() {
        assert!(average_modules(vec![model(1)], &[f64::NAN]).is_err());
        assert!(average_modules(vec![model(1), model(2)], &[0.0, 0.0]).is_err());
        assert!(average_modules(vec![model(1), model(2)], &[-1.0, 2.0]).is_err());
        assert!(average_modules(vec![model(1)], &[1.0, 1.0]).is_err());
        let other = DecoderConfig::preset("tiny", 80)
            .unwrap()
            .init_seeded::<Cpu>(1, &Default::default())
            .unwrap();
        assert!(average_modules(vec![model(1), other], &[1.0, 1.0]).is_err());
    }
}
