//! The built-in merge methods ([`Linear`], [`TaskArithmetic`], [`Ties`],
//! [`Slerp`]) and [`Method`], which names one of them and its parameters in
//! a plan. The definitions follow mergekit's (`linear`, `task_arithmetic`,
//! `ties`, `slerp`), computed in `f64`. This module sees tensors through
//! [`TensorSlices`] only: it must not know the executor, files or plans.

use serde::{Deserialize, Serialize};

use crate::method::{MergeMethod, MethodError, PerTensor, Scope, TensorSlices, weighted_sum};

/// Linear merge: `θ = Σ_i w_i θ_i` (weight averaging). Elementwise, on the
/// streaming fast path ([`weighted_sum`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Linear;

impl MergeMethod for Linear {
    fn name(&self) -> &str {
        "linear"
    }

    fn merge(&self, t: &TensorSlices<'_>, out: &mut [f64]) -> Result<(), MethodError> {
        if t.models.is_empty() {
            return Err(MethodError::ModelCount {
                expected: "at least one model",
                found: 0,
            });
        }
        t.check_lengths(out.len())?;
        weighted_sum(t.models, t.weights, out);
        Ok(())
    }
}

/// Task arithmetic: `θ = θ_base + Σ_i w_i (θ_i − θ_base)` (mergekit's
/// `task_arithmetic` without `normalize`: weights are used as the plan's
/// weighting leaves them, so [`Weighting::Raw`](crate::Weighting::Raw) gives
/// raw task-vector scales). Elementwise; needs a base model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskArithmetic;

impl MergeMethod for TaskArithmetic {
    fn name(&self) -> &str {
        "task_arithmetic"
    }

    fn check(&self, _models: usize, base: bool) -> Result<(), MethodError> {
        if !base {
            return Err(MethodError::MissingBase);
        }
        Ok(())
    }

    fn merge(&self, t: &TensorSlices<'_>, out: &mut [f64]) -> Result<(), MethodError> {
        t.check_lengths(out.len())?;
        let base = t.require_base()?;
        let mut b = vec![0.0; out.len()];
        base.scale_into(1.0, &mut b, false);
        let mut x = vec![0.0; out.len()];
        out.fill(0.0);
        for (m, &w) in t.models.iter().zip(t.weights) {
            m.scale_into(1.0, &mut x, false);
            for ((o, &x), &b) in out.iter_mut().zip(&x).zip(&b) {
                *o += w * (x - b);
            }
        }
        for (o, &b) in out.iter_mut().zip(&b) {
            *o += b;
        }
        Ok(())
    }
}

/// TIES merging (Yadav et al. 2023, mergekit's `ties`): per tensor, each
/// task vector `τ_i = θ_i − θ_base` is trimmed to its `k = ⌊density ·
/// numel⌋` largest magnitudes (ties broken by the lower index); the sign
/// of each element is elected as the sign of `Σ_i w_i τ'_i` (positive when
/// zero); the output is `θ_base + Σ_i w_i τ'_i [agree_i] / Σ_i w_i
/// [agree_i]` where `agree_i` says that `w_i τ'_i` is non-zero with the
/// elected sign (a zero divisor counts as 1). Without `normalize` the sum
/// is not divided (mergekit's `normalize: false`).
///
/// Whole-tensor (top-k); needs a base model. Memory per tensor: about
/// `numel` × (3 `f64` + one byte per model) besides the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ties {
    /// Fraction of each task vector kept, in (0, 1]; may differ by tensor.
    pub density: PerTensor<f64>,
    /// Divide by the sum of the agreeing models' weights (default on, as
    /// in mergekit).
    #[serde(default = "yes")]
    pub normalize: bool,
}

fn yes() -> bool {
    true
}

impl Ties {
    /// TIES with this density (one value, or per tensor) and normalisation.
    pub fn new(density: impl Into<PerTensor<f64>>) -> Self {
        Self {
            density: density.into(),
            normalize: true,
        }
    }
}

/// Checks that every value of a per-tensor parameter lies in a range.
fn check_range(
    p: &PerTensor<f64>,
    name: &'static str,
    ok: impl Fn(f64) -> bool,
    expected: &'static str,
) -> Result<(), MethodError> {
    match p.values().find(|&&v| !ok(v)) {
        Some(&value) => Err(MethodError::Parameter {
            name,
            value,
            expected,
        }),
        None => Ok(()),
    }
}

/// Marks the `k` elements of `x` largest in magnitude (the lower index first
/// among equal magnitudes); `order` is scratch space.
fn top_k(x: &[f64], k: usize, order: &mut Vec<usize>) -> Vec<bool> {
    if k >= x.len() {
        return vec![true; x.len()];
    }
    let mut keep = vec![false; x.len()];
    if k == 0 {
        return keep;
    }
    order.clear();
    order.extend(0..x.len());
    order.select_nth_unstable_by(k - 1, |&a, &b| {
        x[b].abs().total_cmp(&x[a].abs()).then(a.cmp(&b))
    });
    for &i in &order[..k] {
        keep[i] = true;
    }
    keep
}

impl MergeMethod for Ties {
    fn name(&self) -> &str {
        "ties"
    }

    fn scope(&self) -> Scope {
        Scope::WholeTensor
    }

    fn check(&self, _models: usize, base: bool) -> Result<(), MethodError> {
        check_range(
            &self.density,
            "density",
            |d| d > 0.0 && d <= 1.0,
            "in (0, 1]",
        )?;
        if !base {
            return Err(MethodError::MissingBase);
        }
        Ok(())
    }

    fn parameters(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }

    fn merge(&self, t: &TensorSlices<'_>, out: &mut [f64]) -> Result<(), MethodError> {
        t.check_lengths(out.len())?;
        let base = t.require_base()?;
        let n = out.len();
        let density = *self.density.get(t.name);
        let k = if density >= 1.0 {
            n
        } else {
            (density * n as f64) as usize
        };
        if k == 0 && n > 0 {
            return Err(MethodError::NothingKept { density, numel: n });
        }
        let b = base.to_f64_vec();
        let mut delta = vec![0.0; n];
        let task_vector = |i: usize, delta: &mut [f64]| {
            t.models[i].scale_into(1.0, delta, false);
            delta.iter_mut().zip(&b).for_each(|(d, &b)| *d -= b);
        };
        // Trim, and sum the weighted trimmed task vectors for the election.
        let (mut order, mut kept) = (Vec::new(), Vec::with_capacity(t.models.len()));
        let mut elect = vec![0.0; n];
        for (i, &w) in t.weights.iter().enumerate() {
            task_vector(i, &mut delta);
            let keep = top_k(&delta, k, &mut order);
            for ((e, &d), &kp) in elect.iter_mut().zip(&delta).zip(&keep) {
                if kp {
                    *e += w * d;
                }
            }
            kept.push(keep);
        }
        // Disjoint mean of the entries that agree with the elected sign.
        out.fill(0.0);
        let mut divisor = vec![0.0; n];
        for (i, &w) in t.weights.iter().enumerate() {
            task_vector(i, &mut delta);
            for j in 0..n {
                let wd = w * delta[j];
                let agree = if elect[j] >= 0.0 { wd > 0.0 } else { wd < 0.0 };
                if kept[i][j] && agree {
                    out[j] += wd;
                    divisor[j] += w;
                }
            }
        }
        for ((o, &d), &b) in out.iter_mut().zip(&divisor).zip(&b) {
            if self.normalize {
                *o /= if d == 0.0 { 1.0 } else { d };
            }
            *o += b;
        }
        Ok(())
    }
}

/// Spherical linear interpolation of two models per tensor (mergekit's
/// `slerp`): with `v0`, `v1` the two tensors flattened, `cos θ = ⟨v0/‖v0‖,
/// v1/‖v1‖⟩` (a norm of at most 1e-8 is not divided by), the output is
/// `sin((1−t)θ)/sin θ · v0 + sin(tθ)/sin θ · v1`, or `(1−t) v0 + t v1`
/// where `|cos θ| > 0.9995` (nearly colinear). `t = 0` gives `v0`, `t = 1`
/// gives `v1`.
///
/// The endpoints are the plan's two models in order (`v0` first), or the
/// base model (`v0`, as in mergekit) and the plan's one model. Plan weights
/// are not used. Whole-tensor (norms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slerp {
    /// Interpolation parameter in [0, 1] (0: the first endpoint); may
    /// differ by tensor.
    pub t: PerTensor<f64>,
}

impl Slerp {
    /// SLERP at `t` (one value, or per tensor).
    pub fn new(t: impl Into<PerTensor<f64>>) -> Self {
        Self { t: t.into() }
    }
}

/// Above this `|cos θ|` SLERP falls back to linear interpolation.
const SLERP_DOT_THRESHOLD: f64 = 0.9995;
/// Norms at most this are not divided by.
const SLERP_EPS: f64 = 1e-8;

/// `out = slerp(t, v0, v1)` (see [`Slerp`]).
fn slerp(t: f64, v0: &[f64], v1: &[f64], out: &mut [f64]) {
    let norm = |v: &[f64]| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > SLERP_EPS { n } else { 1.0 }
    };
    let (n0, n1) = (norm(v0), norm(v1));
    let dot: f64 = v0.iter().zip(v1).map(|(a, b)| (a / n0) * (b / n1)).sum();
    let (c0, c1) = if dot.abs() > SLERP_DOT_THRESHOLD {
        (1.0 - t, t)
    } else {
        let theta = dot.acos();
        let sin = theta.sin();
        let theta_t = theta * t;
        ((theta - theta_t).sin() / sin, theta_t.sin() / sin)
    };
    for ((o, &a), &b) in out.iter_mut().zip(v0).zip(v1) {
        *o = c0 * a + c1 * b;
    }
}

impl MergeMethod for Slerp {
    fn name(&self) -> &str {
        "slerp"
    }

    fn scope(&self) -> Scope {
        Scope::WholeTensor
    }

    fn skips_zero_weights(&self) -> bool {
        false
    }

    fn check(&self, models: usize, base: bool) -> Result<(), MethodError> {
        check_range(&self.t, "t", |t| (0.0..=1.0).contains(&t), "in [0, 1]")?;
        match (models, base) {
            (2, false) | (1, true) => Ok(()),
            _ => Err(MethodError::ModelCount {
                expected: "2 models, or 1 model and a base",
                found: models,
            }),
        }
    }

    fn parameters(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }

    fn merge(&self, t: &TensorSlices<'_>, out: &mut [f64]) -> Result<(), MethodError> {
        let (v0, v1) = match (t.base, t.models) {
            (None, [a, b]) => (*a, *b),
            (Some(base), [m]) => (base, *m),
            _ => {
                return Err(MethodError::ModelCount {
                    expected: "2 models, or 1 model and a base",
                    found: t.models.len(),
                });
            }
        };
        t.check_lengths(out.len())?;
        slerp(
            *self.t.get(t.name),
            &v0.to_f64_vec()[..out.len()],
            &v1.to_f64_vec()[..out.len()],
            out,
        );
        Ok(())
    }
}

/// A built-in merge method and its parameters, as named in a
/// [`MethodPlan`](crate::MethodPlan) (JSON: `{"method": "ties", "density":
/// 0.5}`, `{"method": "slerp", "t": {"default": 0.5, "overrides":
/// [{"filter": "mlp", "value": 0.7}]}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    /// [`Linear`].
    Linear,
    /// [`TaskArithmetic`].
    TaskArithmetic,
    /// [`Ties`].
    Ties(Ties),
    /// [`Slerp`].
    Slerp(Slerp),
}

impl Method {
    /// The method as a trait object.
    pub fn as_method(&self) -> &dyn MergeMethod {
        match self {
            Method::Linear => &Linear,
            Method::TaskArithmetic => &TaskArithmetic,
            Method::Ties(m) => m,
            Method::Slerp(m) => m,
        }
    }
}

impl MergeMethod for Method {
    fn name(&self) -> &str {
        self.as_method().name()
    }
    fn scope(&self) -> Scope {
        self.as_method().scope()
    }
    fn skips_zero_weights(&self) -> bool {
        self.as_method().skips_zero_weights()
    }
    fn check(&self, models: usize, base: bool) -> Result<(), MethodError> {
        self.as_method().check(models, base)
    }
    fn parameters(&self) -> Option<serde_json::Value> {
        self.as_method().parameters()
    }
    fn merge(&self, t: &TensorSlices<'_>, out: &mut [f64]) -> Result<(), MethodError> {
        self.as_method().merge(t, out)
    }
}
