//! AdamW with decoupled weight decay on matrices only, global-norm gradient
//! clipping, and state keyed by stable parameter names (so it can be saved
//! next to the weights and survive a reload of the model).
//!
//! Burn's own `AdamW` decays every parameter, clips per tensor and keys its
//! state by random `ParamId`s; the papers' recipe needs the three differences.
//! Where [`crate::fused`] has kernels (Burn's `flex`), the update and the norm each run
//! as one parallel pass; the update gives the same bits as the elementwise composite.

use std::collections::BTreeMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

/// Flattened tensors keyed by parameter name (HF-like, see [`crate::checkpoint`]).
pub type NamedTensors<B> = BTreeMap<String, Tensor<B, 1>>;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay, applied to parameters of rank >= 2 only.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// First and second moments of every parameter, plus the step count used for
/// bias correction.
#[derive(Debug, Clone)]
pub struct AdamWState<B: Backend> {
    /// Number of updates applied so far.
    pub step: u64,
    /// First moments (`exp_avg`).
    pub m: NamedTensors<B>,
    /// Second moments (`exp_avg_sq`).
    pub v: NamedTensors<B>,
}

impl<B: Backend> Default for AdamWState<B> {
    fn default() -> Self {
        Self {
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }
}

/// Tracks the dotted module path during a visit or a map.
#[derive(Default)]
pub(crate) struct PathTracker {
    stack: Vec<String>,
}

impl PathTracker {
    pub(crate) fn enter(&mut self, name: &str, container: &str) {
        // Enum variants (our `Norm`) add no level to the stable name.
        let skip = container.starts_with("Enum:");
        self.stack.push(if skip {
            String::new()
        } else {
            name.to_string()
        });
    }
    pub(crate) fn exit(&mut self) {
        self.stack.pop();
    }
    /// The HF-like name of the parameter at the current path (Burn enters the
    /// parameter's own field as the last level).
    pub(crate) fn name(&self) -> String {
        let parts: Vec<&str> = self
            .stack
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        crate::checkpoint::hf_name(&parts.join("."))
    }
}

/// Collects the gradient of every float parameter (flattened), adding it into `out`.
pub(crate) struct GradCollector<'a, B: AutodiffBackend> {
    pub path: PathTracker,
    pub grads: &'a B::Gradients,
    pub out: &'a mut NamedTensors<B::InnerBackend>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradCollector<'_, B> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.name();
        if let Some(g) = param.val().grad(self.grads) {
            let n = g.shape().num_elements();
            let g = g.reshape([n]);
            let g = match self.out.remove(&name) {
                Some(acc) => acc + g,
                None => g,
            };
            self.out.insert(name, g);
        }
    }
}

/// Global L2 norm of a set of gradients.
pub(crate) fn global_norm<B: Backend>(grads: &NamedTensors<B>) -> f64 {
    let mut fused = 0.0;
    let mut composite: Option<Tensor<B, 1>> = None;
    for g in grads.values() {
        match crate::fused::sum_squares(g) {
            Some(s) => fused += s,
            None => {
                let s = g.clone().powi_scalar(2).sum();
                composite = Some(match composite.take() {
                    Some(c) => c + s,
                    None => s,
                });
            }
        }
    }
    (fused + composite.map_or(0.0, |t| t.into_scalar().elem::<f64>())).sqrt()
}

/// One parameter's AdamW update as the scalars its elementwise formula uses
/// (bias corrections, decay and learning rate folded in), so that the composite and the
/// fused kernel compute with the same numbers:
///
/// `g' = g s`, `m <- β1 m + (1-β1) g'`, `v <- β2 v + (1-β2) g'²`,
/// `p <- (1 - lr λ) p - lr/(1-β1ᵗ) · m / (sqrt(v/(1-β2ᵗ)) + ε)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdamWStep {
    /// `s`: 1/accumulation x clipping coefficient.
    pub grad_scale: f64,
    /// `β1`.
    pub beta1: f64,
    /// `1 - β1`.
    pub one_minus_beta1: f64,
    /// `β2`.
    pub beta2: f64,
    /// `1 - β2`.
    pub one_minus_beta2: f64,
    /// `1 - β2ᵗ`.
    pub bias2: f64,
    /// `ε`.
    pub eps: f64,
    /// `1 - lr λ` (`λ` = 0 for parameters of rank < 2).
    pub keep: f64,
    /// `lr / (1 - β1ᵗ)`.
    pub step_size: f64,
}

impl AdamWStep {
    /// The scalars of update number `t` (1-based) of a parameter of rank `rank`.
    pub(crate) fn new(params: &AdamWParams, t: u64, lr: f64, grad_scale: f64, rank: usize) -> Self {
        let t = t as i32;
        let decay = if rank >= 2 {
            lr * params.weight_decay
        } else {
            0.0
        };
        Self {
            grad_scale,
            beta1: params.beta1,
            one_minus_beta1: 1.0 - params.beta1,
            beta2: params.beta2,
            one_minus_beta2: 1.0 - params.beta2,
            bias2: 1.0 - params.beta2.powi(t),
            eps: params.eps,
            keep: 1.0 - decay,
            step_size: lr / (1.0 - params.beta1.powi(t)),
        }
    }
}

/// A flat parameter and its two moments, all `[n]`.
pub(crate) struct AdamWTensors<B: Backend> {
    /// The parameter.
    pub p: Tensor<B, 1>,
    /// First moment.
    pub m: Tensor<B, 1>,
    /// Second moment.
    pub v: Tensor<B, 1>,
}

/// One AdamW update of `t` with gradient `g` (`[n]`): one fused pass where the backend
/// has one, else Burn's elementwise ops (the same `f32` results).
pub(crate) fn adamw<B: Backend>(
    t: AdamWTensors<B>,
    g: &Tensor<B, 1>,
    step: &AdamWStep,
) -> AdamWTensors<B> {
    match crate::fused::adamw(t, g, step) {
        Ok(t) => t,
        Err(AdamWTensors { p, m, v }) => {
            let s = step;
            let g = g.clone().mul_scalar(s.grad_scale);
            let m = m.mul_scalar(s.beta1) + g.clone().mul_scalar(s.one_minus_beta1);
            let v = v.mul_scalar(s.beta2) + g.powi_scalar(2).mul_scalar(s.one_minus_beta2);
            let update = m
                .clone()
                .div(v.clone().div_scalar(s.bias2).sqrt().add_scalar(s.eps));
            let p = p.mul_scalar(s.keep) - update.mul_scalar(s.step_size);
            AdamWTensors { p, m, v }
        }
    }
}

/// Applies one AdamW update to every parameter that has a gradient.
pub(crate) struct Updater<'a, B: AutodiffBackend> {
    pub path: PathTracker,
    pub grads: &'a NamedTensors<B::InnerBackend>,
    pub state: &'a mut AdamWState<B::InnerBackend>,
    pub params: AdamWParams,
    pub lr: f64,
    /// Multiplies every gradient (1/accumulation x clipping coefficient).
    pub grad_scale: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Updater<'_, B> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.name();
        let (id, tensor, mapper) = param.consume();
        let Some(g) = self.grads.get(&name) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let shape = tensor.shape();
        let n = shape.num_elements();
        let p = tensor.inner().reshape([n]);
        let zeros = || Tensor::zeros([n], &p.device());
        let moments = AdamWTensors {
            m: self.state.m.remove(&name).unwrap_or_else(zeros),
            v: self.state.v.remove(&name).unwrap_or_else(zeros),
            p,
        };
        let step = AdamWStep::new(
            &self.params,
            self.state.step + 1,
            self.lr,
            self.grad_scale,
            D,
        );
        let AdamWTensors { p, m, v } = adamw(moments, g, &step);
        self.state.m.insert(name.clone(), m);
        self.state.v.insert(name, v);
        let p = Tensor::from_inner(p.reshape(shape)).require_grad();
        Param::from_mapped_value(id, p, mapper)
    }
}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    use super::*;
    use crate::without_fused_ops;

    fn flat(v: &[f32]) -> Tensor<Flex, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    fn host(t: &Tensor<Flex, 1>) -> Vec<f32> {
        t.to_data().to_vec().unwrap()
    }

    /// Deterministic values in `[-scale, scale)`.
    fn table(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        crate::fused::test_table(n, seed, scale)
    }

    /// Three updates of a parameter of `n` elements and rank `rank`, with a new gradient
    /// each time, on Flex: the final `(p, m, v)`.
    fn three_updates(n: usize, rank: usize) -> [Vec<f32>; 3] {
        let params = AdamWParams::default();
        let mut t = AdamWTensors {
            p: flat(&table(n, 1, 1.0)),
            m: flat(&vec![0.0; n]),
            v: flat(&vec![0.0; n]),
        };
        for step in 1..=3 {
            let g = flat(&table(n, 10 + step, 0.05));
            let s = AdamWStep::new(&params, step, 1e-2, 0.5, rank);
            t = adamw(t, &g, &s);
        }
        [host(&t.p), host(&t.m), host(&t.v)]
    }

    #[test]
    fn fused_adamw_equals_the_composite_bit_for_bit() {
        // Several rayon tasks and a partial last one.
        let n = 3 * (1 << 15) + 37;
        for rank in [1, 2] {
            let fused = three_updates(n, rank);
            let composite = without_fused_ops(|| three_updates(n, rank));
            for (f, c) in fused.iter().zip(&composite) {
                assert!(f.iter().zip(c).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    #[test]
    fn adamw_follows_the_textbook_update() {
        // Bias-corrected moments, decoupled decay on matrices only (Loshchilov & Hutter).
        let n = 1000;
        let params = AdamWParams::default();
        let (lr, scale) = (1e-2f64, 0.5f64);
        for rank in [1, 2] {
            let [p, m, v] = three_updates(n, rank);
            let mut want_p: Vec<f64> = table(n, 1, 1.0).iter().map(|&x| x as f64).collect();
            let (mut want_m, mut want_v) = (vec![0f64; n], vec![0f64; n]);
            let decay = if rank >= 2 { params.weight_decay } else { 0.0 };
            for t in 1..=3u64 {
                let g = table(n, 10 + t, 0.05);
                for i in 0..n {
                    let g = g[i] as f64 * scale;
                    want_m[i] = params.beta1 * want_m[i] + (1.0 - params.beta1) * g;
                    want_v[i] = params.beta2 * want_v[i] + (1.0 - params.beta2) * g * g;
                    let m_hat = want_m[i] / (1.0 - params.beta1.powi(t as i32));
                    let v_hat = want_v[i] / (1.0 - params.beta2.powi(t as i32));
                    want_p[i] -= lr * (m_hat / (v_hat.sqrt() + params.eps) + decay * want_p[i]);
                }
            }
            for i in 0..n {
                assert!((p[i] as f64 - want_p[i]).abs() < 1e-5, "p[{i}]");
                assert!((m[i] as f64 - want_m[i]).abs() < 1e-7 * (1.0 + want_m[i].abs()));
                assert!((v[i] as f64 - want_v[i]).abs() < 1e-6 * want_v[i].abs() + 1e-12);
            }
        }
    }

    #[test]
    fn fused_gradient_norm_matches_the_exact_one() {
        let grads: NamedTensors<Flex> = [("a", 70_001), ("b", 3), ("c", 1 << 16)]
            .into_iter()
            .enumerate()
            .map(|(i, (name, n))| (name.to_string(), flat(&table(n, i as u64 + 5, 2.0))))
            .collect();
        let exact: f64 = grads
            .values()
            .flat_map(host)
            .map(|x| x as f64 * x as f64)
            .sum::<f64>()
            .sqrt();
        let fused = global_norm(&grads);
        let composite = without_fused_ops(|| global_norm(&grads));
        assert!((fused - exact).abs() < 1e-12 * exact, "{fused} vs {exact}");
        assert!(
            (composite - exact).abs() < 1e-5 * exact,
            "{composite} vs {exact}"
        );
    }
}
