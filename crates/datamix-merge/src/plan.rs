//! Merge plans: trees of weighted averages over checkpoints and their
//! flattening to one weighted sum; [`MethodPlan`], which adds the merge
//! method, a base model and per-tensor weights. Must not know how plans are
//! executed.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::MergeError;
use crate::method::MergeMethod;
use crate::strategies::Method;

/// Where a checkpoint comes from: a file, or a key in a model pool that a
/// [`Resolver`] turns into a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A safetensors file.
    Path(PathBuf),
    /// A model-pool key, resolved by the caller.
    Key(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(p) => write!(f, "{}", p.display()),
            Source::Key(k) => write!(f, "key:{k}"),
        }
    }
}

impl From<PathBuf> for Source {
    fn from(p: PathBuf) -> Self {
        Source::Path(p)
    }
}

impl From<&std::path::Path> for Source {
    fn from(p: &std::path::Path) -> Self {
        Source::Path(p.to_path_buf())
    }
}

/// Turns pool keys into checkpoint files. Closures `Fn(&str) -> Option<PathBuf>`
/// are resolvers; [`PathsOnly`] resolves nothing (plans of plain paths).
pub trait Resolver {
    /// The safetensors file holding the checkpoint with this key, if known.
    fn resolve(&self, key: &str) -> Option<PathBuf>;
}

impl<F: Fn(&str) -> Option<PathBuf>> Resolver for F {
    fn resolve(&self, key: &str) -> Option<PathBuf> {
        self(key)
    }
}

/// A resolver for plans whose leaves are all paths: every key is unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathsOnly;

impl Resolver for PathsOnly {
    fn resolve(&self, _key: &str) -> Option<PathBuf> {
        None
    }
}

/// How the weights of a plan are checked and scaled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Weights must be finite and non-negative; each node's weights are
    /// divided by their sum, so every node is a convex combination.
    #[default]
    Normalized,
    /// Weights must be finite and are used as given: negative weights and sums
    /// other than one are allowed (task arithmetic, e.g. `θ₀ + s(θ₁ − θ₀)` is
    /// the weights `(1 − s, s)`).
    Raw,
}

/// A merge plan: leaves are checkpoints, inner nodes are weighted averages of
/// their children (which may themselves be merges).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergePlan {
    /// One checkpoint.
    Leaf(Source),
    /// A weighted average of sub-plans.
    Average(Vec<(f64, MergePlan)>),
}

impl MergePlan {
    /// One checkpoint.
    pub fn leaf(source: impl Into<Source>) -> Self {
        MergePlan::Leaf(source.into())
    }

    /// The uniform average of some checkpoints (`w_i = 1/n`).
    pub fn uniform<S: Into<Source>>(sources: impl IntoIterator<Item = S>) -> Self {
        MergePlan::Average(
            sources
                .into_iter()
                .map(|s| (1.0, MergePlan::leaf(s)))
                .collect(),
        )
    }

    /// A weighted average of checkpoints (weights are normalised at merge time
    /// unless [`Weighting::Raw`] is chosen).
    pub fn weighted<S: Into<Source>>(pairs: impl IntoIterator<Item = (S, f64)>) -> Self {
        MergePlan::Average(
            pairs
                .into_iter()
                .map(|(s, w)| (w, MergePlan::leaf(s)))
                .collect(),
        )
    }

    /// Micro merge (Na et al.): the uniform average of all base-unit models of
    /// a mixture, whatever domain they come from.
    pub fn micro<S: Into<Source>>(units: impl IntoIterator<Item = S>) -> Self {
        Self::uniform(units)
    }

    /// Macro merge (Na et al.): average each domain's base-unit models, then
    /// average the domain averages uniformly. A unit of a domain with `m`
    /// units among `k` domains gets weight `1/(k m)`.
    pub fn macro_<S, U>(domains: impl IntoIterator<Item = U>) -> Self
    where
        S: Into<Source>,
        U: IntoIterator<Item = S>,
    {
        MergePlan::Average(
            domains
                .into_iter()
                .map(|units| (1.0, Self::uniform(units)))
                .collect(),
        )
    }

    /// Validates the plan and multiplies weights down the tree, giving one
    /// weighted sum over distinct checkpoints (a checkpoint reached by several
    /// paths gets the sum of their weights), in order of first appearance.
    pub fn flatten(&self, weighting: Weighting) -> Result<FlatPlan, MergeError> {
        if let MergePlan::Average(children) = self
            && children.is_empty()
        {
            return Err(MergeError::NoInputs);
        }
        let mut flat = FlatPlan::default();
        let mut index = HashMap::new();
        self.flatten_into(1.0, "root", weighting, &mut flat, &mut index)?;
        if flat.terms.iter().all(|t| t.weight == 0.0) {
            return Err(MergeError::ZeroWeights {
                node: "flattened".into(),
            });
        }
        Ok(flat)
    }

    fn flatten_into(
        &self,
        scale: f64,
        node: &str,
        weighting: Weighting,
        flat: &mut FlatPlan,
        index: &mut HashMap<Source, usize>,
    ) -> Result<(), MergeError> {
        match self {
            MergePlan::Leaf(source) => {
                let i = *index.entry(source.clone()).or_insert_with(|| {
                    flat.terms.push(FlatTerm {
                        source: source.clone(),
                        weight: 0.0,
                    });
                    flat.terms.len() - 1
                });
                flat.terms[i].weight += scale;
            }
            MergePlan::Average(children) => {
                if children.is_empty() {
                    return Err(MergeError::EmptyNode { node: node.into() });
                }
                for (i, &(w, _)) in children.iter().enumerate() {
                    let child = || format!("{node}/{i}");
                    if !w.is_finite() {
                        return Err(MergeError::NonFiniteWeight {
                            node: child(),
                            weight: w,
                        });
                    }
                    if weighting == Weighting::Normalized && w < 0.0 {
                        return Err(MergeError::NegativeWeight {
                            node: child(),
                            weight: w,
                        });
                    }
                }
                let norm = match weighting {
                    Weighting::Raw => 1.0,
                    Weighting::Normalized => {
                        let sum: f64 = children.iter().map(|(w, _)| w).sum();
                        if sum <= 0.0 {
                            return Err(MergeError::ZeroWeights { node: node.into() });
                        }
                        sum
                    }
                };
                for (i, (w, child)) in children.iter().enumerate() {
                    child.flatten_into(
                        scale * w / norm,
                        &format!("{node}/{i}"),
                        weighting,
                        flat,
                        index,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// One term of a flattened plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatTerm {
    /// The checkpoint.
    pub source: Source,
    /// Its weight in the final sum.
    pub weight: f64,
}

/// A plan flattened to `θ = Σ_i w_i θ_i` over distinct checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlatPlan {
    /// The terms, in order of first appearance in the plan.
    pub terms: Vec<FlatTerm>,
}

impl FlatPlan {
    /// The weight of a checkpoint (0 if absent).
    pub fn weight(&self, source: &Source) -> f64 {
        self.terms
            .iter()
            .find(|t| &t.source == source)
            .map_or(0.0, |t| t.weight)
    }
}

/// Weights for the tensors whose name contains `filter` (mergekit's
/// per-tensor `weight` with a `filter`): the listed checkpoints get these
/// weights instead of their flattened-plan ones, the others keep theirs.
/// Under [`Weighting::Normalized`] the resulting weights are checked
/// (finite, non-negative, not all zero) and divided by their sum, like a
/// plan node's; under [`Weighting::Raw`] they are checked for finiteness
/// and used as given. The first override whose filter matches a tensor wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightOverride {
    /// A substring of the names of the tensors it applies to.
    pub filter: String,
    /// New weights for some of the plan's checkpoints.
    pub weights: Vec<(Source, f64)>,
}

impl WeightOverride {
    /// The weights of `flat`'s terms for the tensors this override covers.
    pub fn apply(&self, flat: &FlatPlan, weighting: Weighting) -> Result<Vec<f64>, MergeError> {
        let mut w: Vec<f64> = flat.terms.iter().map(|t| t.weight).collect();
        let node = format!("override `{}`", self.filter);
        for (source, weight) in &self.weights {
            let Some(i) = flat.terms.iter().position(|t| &t.source == source) else {
                return Err(MergeError::UnknownOverrideSource {
                    filter: self.filter.clone(),
                    checkpoint: source.clone(),
                });
            };
            w[i] = *weight;
        }
        for (i, &x) in w.iter().enumerate() {
            let node = || format!("{node}/{i}");
            if !x.is_finite() {
                return Err(MergeError::NonFiniteWeight {
                    node: node(),
                    weight: x,
                });
            }
            if weighting == Weighting::Normalized && x < 0.0 {
                return Err(MergeError::NegativeWeight {
                    node: node(),
                    weight: x,
                });
            }
        }
        if w.iter().all(|&x| x == 0.0) {
            return Err(MergeError::ZeroWeights { node });
        }
        if weighting == Weighting::Normalized {
            let sum: f64 = w.iter().sum();
            w.iter_mut().for_each(|x| *x /= sum);
        }
        Ok(w)
    }
}

/// A merge plan that names its method: the models (a [`MergePlan`], whose
/// flattened weights are the models' weights), an optional base model, the
/// method and its parameters, and per-tensor weight overrides. Serialises
/// to JSON for configs; [`Merger::for_plan`](crate::Merger::for_plan) runs
/// it.
///
/// ```
/// use datamix_merge::{MergePlan, Method, MethodPlan, PerTensor, Source, Ties};
///
/// let plan = MethodPlan::new(
///     Method::Ties(Ties::new(PerTensor::new(0.5).with("norm", 1.0))),
///     MergePlan::uniform([Source::Path("a.st".into()), Source::Path("b.st".into())]),
/// )
/// .base(Source::Path("base.st".into()));
/// plan.check()?;
/// let json = serde_json::to_string(&plan).unwrap();
/// assert_eq!(serde_json::from_str::<MethodPlan>(&json).unwrap(), plan);
/// # Ok::<(), datamix_merge::MergeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodPlan {
    /// The method and its parameters.
    pub method: Method,
    /// The models and their weights.
    pub models: MergePlan,
    /// The base model, for methods that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Source>,
    /// How the models' weights are checked and scaled.
    #[serde(default)]
    pub weighting: Weighting,
    /// Per-tensor weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_overrides: Vec<WeightOverride>,
}

impl MethodPlan {
    /// `method` over `models`, normalised weights, no base, no overrides.
    pub fn new(method: Method, models: MergePlan) -> Self {
        Self {
            method,
            models,
            base: None,
            weighting: Weighting::Normalized,
            weight_overrides: Vec::new(),
        }
    }

    /// With a base model.
    pub fn base(mut self, base: impl Into<Source>) -> Self {
        self.base = Some(base.into());
        self
    }

    /// With this weighting.
    pub fn weighting(mut self, weighting: Weighting) -> Self {
        self.weighting = weighting;
        self
    }

    /// With one more per-tensor weight override.
    pub fn weight_override(mut self, o: WeightOverride) -> Self {
        self.weight_overrides.push(o);
        self
    }

    /// Checks everything that can be checked without reading a file: the
    /// plan's weights, the method's parameters (e.g. TIES density in
    /// (0, 1]), the number of models (SLERP: 2, or 1 and a base), the base
    /// model's presence, and the overrides. Returns the flattened plan.
    pub fn check(&self) -> Result<FlatPlan, MergeError> {
        let flat = self.models.flatten(self.weighting)?;
        self.method
            .check(flat.terms.len(), self.base.is_some())
            .map_err(|source| MergeError::MethodSetup {
                method: self.method.name().to_string(),
                source,
            })?;
        for o in &self.weight_overrides {
            o.apply(&flat, self.weighting)?;
        }
        Ok(flat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Source {
        Source::Path(s.into())
    }

    #[test]
    fn macro_and_micro_follow_na_et_al() {
        // Domain A has 3 base units, domain B has 1.
        let a = [p("a1"), p("a2"), p("a3")];
        let b = [p("b1")];
        let micro = MergePlan::micro(a.iter().chain(&b).cloned())
            .flatten(Weighting::Normalized)
            .unwrap();
        for s in a.iter().chain(&b) {
            assert!((micro.weight(s) - 0.25).abs() < 1e-15);
        }
        let mac = MergePlan::macro_([a.to_vec(), b.to_vec()])
            .flatten(Weighting::Normalized)
            .unwrap();
        for s in &a {
            assert!((mac.weight(s) - 1.0 / 6.0).abs() < 1e-15);
        }
        assert!((mac.weight(&b[0]) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn duplicates_are_combined_in_first_appearance_order() {
        let plan = MergePlan::Average(vec![
            (1.0, MergePlan::leaf(p("x"))),
            (1.0, MergePlan::uniform([p("y"), p("x")])),
        ]);
        let flat = plan.flatten(Weighting::Normalized).unwrap();
        assert_eq!(flat.terms.len(), 2);
        assert_eq!(flat.terms[0].source, p("x"));
        assert!((flat.terms[0].weight - 0.75).abs() < 1e-15);
        assert!((flat.terms[1].weight - 0.25).abs() < 1e-15);
    }

    #[test]
    fn bad_weights_are_typed_errors() {
        let nan = MergePlan::weighted([(p("a"), f64::NAN), (p("b"), 1.0)]);
        assert!(matches!(
            nan.flatten(Weighting::Normalized),
            Err(MergeError::NonFiniteWeight { node, .. }) if node == "root/0"
        ));
        assert!(matches!(
            nan.flatten(Weighting::Raw),
            Err(MergeError::NonFiniteWeight { .. })
        ));
        let zero = MergePlan::weighted([(p("a"), 0.0), (p("b"), 0.0)]);
        assert!(matches!(
            zero.flatten(Weighting::Normalized),
            Err(MergeError::ZeroWeights { .. })
        ));
        assert!(matches!(
            zero.flatten(Weighting::Raw),
            Err(MergeError::ZeroWeights { .. })
        ));
        let neg = MergePlan::weighted([(p("a"), 1.5), (p("b"), -0.5)]);
        assert!(matches!(
            neg.flatten(Weighting::Normalized),
            Err(MergeError::NegativeWeight { node, .. }) if node == "root/1"
        ));
        let raw = neg.flatten(Weighting::Raw).unwrap();
        assert_eq!(raw.weight(&p("b")), -0.5);
        assert!(matches!(
            MergePlan::uniform(Vec::<Source>::new()).flatten(Weighting::Normalized),
            Err(MergeError::NoInputs)
        ));
        let nested_empty = MergePlan::Average(vec![
            (1.0, MergePlan::leaf(p("a"))),
            (1.0, MergePlan::Average(vec![])),
        ]);
        assert!(matches!(
            nested_empty.flatten(Weighting::Normalized),
            Err(MergeError::EmptyNode { node }) if node == "root/1"
        ));
    }
}
