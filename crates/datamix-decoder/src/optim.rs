//! AdamW with decoupled weight decay on matrices only, global-norm gradient
//! clipping, and state keyed by stable parameter names (so it can be saved
//! next to the weights and survive a reload of the model).
//!
//! Burn's own `AdamW` decays every parameter, clips per tensor and keys its
//! state by random `ParamId`s; the papers' recipe needs the three differences.

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

/// Squared global L2 norm of a set of gradients.
pub(crate) fn global_norm<B: Backend>(grads: &NamedTensors<B>) -> f64 {
    let total = grads
        .values()
        .map(|g| g.clone().powi_scalar(2).sum())
        .reduce(|a, b| a + b);
    total.map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
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
        let g = g.clone().mul_scalar(self.grad_scale);
        let AdamWParams {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.params;
        let m = match self.state.m.remove(&name) {
            Some(m) => m.mul_scalar(beta1) + g.clone().mul_scalar(1.0 - beta1),
            None => g.clone().mul_scalar(1.0 - beta1),
        };
        let v = match self.state.v.remove(&name) {
            Some(v) => v.mul_scalar(beta2) + g.powi_scalar(2).mul_scalar(1.0 - beta2),
            None => g.powi_scalar(2).mul_scalar(1.0 - beta2),
        };
        let t = (self.state.step + 1) as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2 = 1.0 - beta2.powi(t);
        let update = m
            .clone()
            .div(v.clone().div_scalar(bc2).sqrt().add_scalar(eps));
        let decay = if D >= 2 { self.lr * weight_decay } else { 0.0 };
        let p = p.mul_scalar(1.0 - decay) - update.mul_scalar(self.lr / bc1);
        self.state.m.insert(name.clone(), m);
        self.state.v.insert(name, v);
        let p = Tensor::from_inner(p.reshape(shape)).require_grad();
        Param::from_mapped_value(id, p, mapper)
    }
}
