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
/// Whole-tensor (top-k); needs a base model. Memory per tensor being
/// merged: about `numel` × (40 bytes + 1 byte per model) besides the `f64`
/// output (base, one task vector, the election sums, the divisors, the
/// selection order, and each model's kept-entry mask), so a 24.5 M-element
/// embedding with 8 models takes about 1.2 GB while it is merged; task
/// vectors are decoded twice rather than kept.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::{FloatDtype, FloatSlice};

    /// Little-endian `f64` bytes (exact, so expected values are too).
    fn bytes(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn slice(b: &[u8]) -> FloatSlice<'_> {
        FloatSlice::new(FloatDtype::F64, b).unwrap()
    }

    /// Runs `method` on one tensor named `name` of the given models, weights
    /// and base.
    fn run(
        method: &dyn MergeMethod,
        name: &str,
        models: &[&[f64]],
        weights: &[f64],
        base: Option<&[f64]>,
    ) -> Result<Vec<f64>, MethodError> {
        let n = models.first().map_or(0, |m| m.len());
        let encoded: Vec<Vec<u8>> = models.iter().map(|m| bytes(m)).collect();
        let xs: Vec<FloatSlice<'_>> = encoded.iter().map(|b| slice(b)).collect();
        let base_bytes = base.map(bytes);
        let shape = [n];
        let t = TensorSlices {
            name,
            shape: &shape,
            elems: 0..n,
            models: &xs,
            weights,
            base: base_bytes.as_deref().map(slice),
        };
        let mut out = vec![f64::NAN; n];
        method.merge(&t, &mut out).map(|()| out)
    }

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(seed: u64, n: usize) -> Vec<f64> {
        (0..n as u64)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f64 / 1001.5 - 1.0)
            .collect()
    }

    #[test]
    fn linear_is_the_weighted_sum() {
        // 0.25 [1, 2] + 0.75 [3, -4] = [0.25 + 2.25, 0.5 - 3] = [2.5, -2.5].
        let got = run(
            &Linear,
            "w",
            &[&[1.0, 2.0], &[3.0, -4.0]],
            &[0.25, 0.75],
            None,
        );
        assert_eq!(got.unwrap(), [2.5, -2.5]);
        assert_eq!(
            run(&Linear, "w", &[&[1.0, 2.0], &[3.0, -4.0]], &[1.0], None),
            Err(MethodError::WeightCount {
                models: 2,
                weights: 1
            })
        );
        assert_eq!(Linear.check(2, true), Err(MethodError::UnexpectedBase));
    }

    #[test]
    fn linear_with_one_model_is_the_identity() {
        let x = values(1, 257);
        let got = run(&Linear, "w", &[&x], &[1.0], None).unwrap();
        assert!(got.iter().zip(&x).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn task_arithmetic_adds_weighted_task_vectors_to_the_base() {
        // base [1, 2, -1]; τ1 = [3, 2, 0] - base = [2, 0, 1],
        // τ2 = [0, 4, -1] - base = [-1, 2, 0].
        // 0.5 τ1 + 2 τ2 = [1 - 2, 0 + 4, 0.5 + 0] = [-1, 4, 0.5];
        // plus the base: [0, 6, -0.5].
        let base = [1.0, 2.0, -1.0];
        let got = run(
            &TaskArithmetic,
            "w",
            &[&[3.0, 2.0, 0.0], &[0.0, 4.0, -1.0]],
            &[0.5, 2.0],
            Some(&base),
        );
        assert_eq!(got.unwrap(), [0.0, 6.0, -0.5]);
        // Without a base: refused up front and per tensor.
        assert_eq!(
            TaskArithmetic.check(2, false),
            Err(MethodError::MissingBase)
        );
        assert_eq!(
            run(&TaskArithmetic, "w", &[&[1.0]], &[1.0], None),
            Err(MethodError::MissingBase)
        );
    }

    #[test]
    fn task_arithmetic_with_zero_weights_is_the_base() {
        let (base, a, b) = (values(1, 100), values(2, 100), values(3, 100));
        let got = run(&TaskArithmetic, "w", &[&a, &b], &[0.0, 0.0], Some(&base)).unwrap();
        assert!(
            got.iter()
                .zip(&base)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
    }

    /// The TIES example worked by hand below: base, three models, weights.
    const TIES_BASE: [f64; 4] = [1.0, 1.0, 1.0, 1.0];
    const TIES_MODELS: [[f64; 4]; 3] = [
        [4.0, 0.5, 1.0, -1.0], // τ1 = [3, -0.5, 0, -2]
        [0.0, 2.0, 3.0, 3.0],  // τ2 = [-1, 1, 2, 2]
        [1.5, 1.0, -2.0, 2.0], // τ3 = [0.5, 0, -3, 1]
    ];
    const TIES_WEIGHTS: [f64; 3] = [1.0, 0.5, 1.0];

    fn ties(method: &Ties) -> Result<Vec<f64>, MethodError> {
        let models: Vec<&[f64]> = TIES_MODELS.iter().map(|m| m.as_slice()).collect();
        run(method, "w", &models, &TIES_WEIGHTS, Some(&TIES_BASE))
    }

    #[test]
    fn ties_trims_elects_and_takes_the_disjoint_mean() {
        // density 0.5 of 4 elements: k = 2 per task vector.
        //   τ1' = [3, 0, 0, -2]   (|3|, |-2| largest)
        //   τ2' = [0, 0, 2, 2]    (the two 2s)
        //   τ3' = [0, 0, -3, 1]   (|-3|, |1|)
        // weighted (w = [1, 0.5, 1]):
        //   w1τ1' = [3, 0, 0, -2], w2τ2' = [0, 0, 1, 1], w3τ3' = [0, 0, -3, 1]
        //   sum   = [3, 0, -2, 0] → elected signs [+, +, -, +] (0 counts as +)
        // agreeing (non-zero, elected sign) entries and their weights:
        //   e0: 3 (w 1)               → 3 / 1     = 3
        //   e1: none                  → 0 / 1     = 0 (zero divisor → 1)
        //   e2: -3 (w 1)              → -3 / 1    = -3
        //   e3: 1 (w 0.5), 1 (w 1)    → 2 / 1.5
        // plus the base (1 everywhere):
        let got = ties(&Ties::new(0.5)).unwrap();
        assert_eq!(got, [4.0, 1.0, -2.0, 1.0 + 2.0 / 1.5]);
        // Without normalisation the agreeing entries are summed:
        // [1 + 3, 1 + 0, 1 - 3, 1 + 2].
        let sum = ties(&Ties {
            density: 0.5.into(),
            normalize: false,
        });
        assert_eq!(sum.unwrap(), [4.0, 1.0, -2.0, 3.0]);
    }

    #[test]
    fn ties_density_is_per_tensor() {
        // "w" matches no override (density 0.5, as above); a "norm" filter
        // does not apply to it, a "w" one does: density 1 keeps every
        // entry. Then (weights [1, 0.5, 1]):
        //   w τ = [3, -0.5, 0, -2], [-0.5, 0.5, 1, 1], [0.5, 0, -3, 1]
        //   sum = [3, 0, -2, 0] → signs [+, +, -, +]
        //   e0: 3 (w 1), 0.5 (w 1)          → 3.5 / 2
        //   e1: 0.5 (w 0.5)                 → 0.5 / 0.5 = 1
        //   e2: -3 (w 1)                    → -3
        //   e3: 1 (w 0.5), 1 (w 1)          → 2 / 1.5
        let other = Ties::new(PerTensor::new(0.5).with("norm", 1.0));
        assert_eq!(ties(&other).unwrap(), ties(&Ties::new(0.5)).unwrap());
        let full = Ties::new(PerTensor::new(0.5).with("w", 1.0));
        assert_eq!(
            ties(&full).unwrap(),
            [1.0 + 3.5 / 2.0, 2.0, -2.0, 1.0 + 2.0 / 1.5]
        );
    }

    #[test]
    fn ties_with_density_one_and_agreeing_signs_is_the_task_arithmetic_mean() {
        // Task vectors of one sign per element (the sign of `s`); weights
        // summing to 1, so the disjoint mean divides by 1.
        let base = values(1, 300);
        let s = values(2, 300);
        let models: Vec<Vec<f64>> = (0..3)
            .map(|i| {
                let m = values(10 + i, 300);
                (0..300)
                    .map(|j| base[j] + s[j].signum() * (m[j].abs() + 0.01))
                    .collect()
            })
            .collect();
        let refs: Vec<&[f64]> = models.iter().map(|m| m.as_slice()).collect();
        let w = [0.25, 0.25, 0.5];
        let got = run(&Ties::new(1.0), "w", &refs, &w, Some(&base)).unwrap();
        let want = run(&TaskArithmetic, "w", &refs, &w, Some(&base)).unwrap();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn ties_checks_density_and_base() {
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let err = Ties::new(bad).check(2, true).unwrap_err();
            assert!(
                matches!(err, MethodError::Parameter { name: "density", value, .. } if value.to_bits() == bad.to_bits()),
                "{bad}: {err:?}"
            );
        }
        let override_bad = Ties::new(PerTensor::new(0.5).with("mlp", 2.0));
        assert!(matches!(
            override_bad.check(2, true),
            Err(MethodError::Parameter { value: 2.0, .. })
        ));
        assert_eq!(
            Ties::new(1.0).check(2, false),
            Err(MethodError::MissingBase)
        );
        assert_eq!(Ties::new(1.0).check(2, true), Ok(()));
        // 0.2 of 4 elements keeps none: refused, naming the density.
        assert_eq!(
            ties(&Ties::new(0.2)),
            Err(MethodError::NothingKept {
                density: 0.2,
                numel: 4
            })
        );
    }

    #[test]
    fn top_k_breaks_ties_by_the_lower_index() {
        let mut order = Vec::new();
        assert_eq!(
            top_k(&[1.0, -1.0, 1.0, 0.5], 2, &mut order),
            [true, true, false, false]
        );
        assert_eq!(
            top_k(&[0.0, -2.0, 1.0], 1, &mut order),
            [false, true, false]
        );
        assert_eq!(top_k(&[1.0, 2.0], 5, &mut order), [true, true]);
    }

    #[test]
    fn slerp_follows_the_great_circle() {
        // v0 = [2, 0], v1 = [0, 3]: orthogonal, θ = π/2, sin θ = 1.
        // t = 1/2: both coefficients sin(π/4) = √2/2 → [√2, 1.5 √2].
        // t = 1/3: sin(π/3) = √3/2 and sin(π/6) = 1/2 → [√3, 1.5].
        let (v0, v1) = ([2.0, 0.0], [0.0, 3.0]);
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-15);
        let half = run(&Slerp::new(0.5), "w", &[&v0, &v1], &[0.5, 0.5], None).unwrap();
        let r2 = std::f64::consts::SQRT_2;
        assert!(close(&half, &[r2, 1.5 * r2]), "{half:?}");
        let third = run(&Slerp::new(1.0 / 3.0), "w", &[&v0, &v1], &[1.0, 1.0], None).unwrap();
        assert!(close(&third, &[3f64.sqrt(), 1.5]), "{third:?}");
        // The base form: the base is v0.
        let based = run(&Slerp::new(0.5), "w", &[&v1], &[1.0], Some(&v0)).unwrap();
        assert_eq!(based, half);
    }

    #[test]
    fn slerp_of_nearly_colinear_tensors_is_linear() {
        // [1, 2] and [2, 4.002]: cos θ > 0.9995, so lerp at t = 1/4:
        // 0.75 [1, 2] + 0.25 [2, 4.002] = [0.75 + 0.5, 1.5 + 1.0005].
        let got = run(
            &Slerp::new(0.25),
            "w",
            &[&[1.0, 2.0], &[2.0, 4.002]],
            &[1.0, 1.0],
            None,
        )
        .unwrap();
        assert!((got[0] - 1.25).abs() < 1e-15 && (got[1] - 2.5005).abs() < 1e-15);
    }

    #[test]
    fn slerp_endpoints_are_the_models() {
        let (a, b) = (values(1, 200), values(2, 200));
        for (t, want) in [(0.0, &a), (1.0, &b)] {
            let got = run(&Slerp::new(t), "w", &[&a, &b], &[1.0, 1.0], None).unwrap();
            assert_eq!(&got, want, "t = {t}");
        }
        // Per tensor: t = 1 only for tensors whose name contains "mlp".
        let s = Slerp::new(PerTensor::new(0.0).with("mlp", 1.0));
        assert_eq!(run(&s, "mlp.up", &[&a, &b], &[1.0, 1.0], None).unwrap(), b);
        assert_eq!(run(&s, "attn", &[&a, &b], &[1.0, 1.0], None).unwrap(), a);
    }

    #[test]
    fn slerp_checks_model_count_and_t() {
        let s = Slerp::new(0.5);
        assert_eq!(s.check(2, false), Ok(()));
        assert_eq!(s.check(1, true), Ok(()));
        for (models, base) in [(1, false), (3, false), (2, true), (0, true)] {
            assert!(
                matches!(s.check(models, base), Err(MethodError::ModelCount { found, .. }) if found == models),
                "{models} {base}"
            );
        }
        assert!(matches!(
            Slerp::new(1.5).check(2, false),
            Err(MethodError::Parameter { name: "t", .. })
        ));
        assert!(!s.skips_zero_weights());
    }

    #[test]
    fn methods_round_trip_through_json_and_keep_their_names() {
        let json = r#"[{"method":"linear"},{"method":"task_arithmetic"},
            {"method":"ties","density":0.5},
            {"method":"ties","density":{"default":0.3,"overrides":[{"filter":"norm","value":1.0}]},"normalize":false},
            {"method":"slerp","t":0.25}]"#;
        let methods: Vec<Method> = serde_json::from_str(json).unwrap();
        let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            ["linear", "task_arithmetic", "ties", "ties", "slerp"]
        );
        assert_eq!(methods[2], Method::Ties(Ties::new(0.5)));
        assert_eq!(
            methods[3],
            Method::Ties(Ties {
                density: PerTensor::new(0.3).with("norm", 1.0),
                normalize: false
            })
        );
        assert_eq!(methods[4], Method::Slerp(Slerp::new(0.25)));
        let again: Vec<Method> =
            serde_json::from_str(&serde_json::to_string(&methods).unwrap()).unwrap();
        assert_eq!(again, methods);
        assert!(Method::Linear.parameters().is_none());
        assert!(serde_json::from_str::<Method>(r#"{"method":"dare"}"#).is_err());
    }
}
