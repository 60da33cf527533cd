//! Adapters to fitted regression models (datamix-regression): a [`Surrogate`] for the
//! Bayesian-optimisation loop and an [`Objective`] for the search methods, both on features
//! `[λ, extra(λ)]`, where the extra features (e.g. MDE losses per eval domain) are computed
//! for every candidate by a [`FeatureMap`].

use std::fmt::Debug;

use datamix_regression::dataset::LAMBDA;
use datamix_regression::{Predictor, Regressor, Task};
use ndarray::Array2;

use crate::bo::{Surrogate, SurrogateError, SurrogatePrediction};
use crate::error::{OptimizerError, Result};
use crate::objective::Objective;
use crate::space::SearchSpace;

/// Computes extra regression features for candidate mixtures (rows of the result follow
/// `xs`; columns follow [`FeatureMap::names`]).
pub trait FeatureMap: Send + Sync + Debug {
    /// Column headers, `group:name` as in datamix-regression datasets (e.g. `mde:web`).
    fn names(&self) -> Vec<String>;

    /// Features of every mixture in `xs`.
    fn features(&self, xs: &[Vec<f64>]) -> Result<Array2<f64>, SurrogateError>;
}

/// Column headers of the mixture weights: `lambda:<domain>`.
pub fn lambda_names(space: &SearchSpace) -> Vec<String> {
    space
        .names()
        .iter()
        .map(|n| format!("{LAMBDA}:{n}"))
        .collect()
}

/// Builds the `[λ, extra(λ)]` matrix with columns in `order` (headers).
fn design(
    lambda_names: &[String],
    extra: Option<&dyn FeatureMap>,
    order: &[String],
    xs: &[Vec<f64>],
) -> Result<Array2<f64>, SurrogateError> {
    let extra_names = extra.map(|e| e.names()).unwrap_or_default();
    let extra_x = match extra {
        Some(e) => {
            let f = e.features(xs)?;
            if f.dim() != (xs.len(), extra_names.len()) {
                return Err(format!(
                    "feature map returned a {:?} matrix, expected ({}, {})",
                    f.dim(),
                    xs.len(),
                    extra_names.len()
                )
                .into());
            }
            Some(f)
        }
        None => None,
    };
    let mut out = Array2::zeros((xs.len(), order.len()));
    for (c, name) in order.iter().enumerate() {
        let mut col = out.column_mut(c);
        if let Some(i) = lambda_names.iter().position(|n| n == name) {
            for (r, x) in xs.iter().enumerate() {
                col[r] = x[i];
            }
        } else if let (Some(j), Some(f)) =
            (extra_names.iter().position(|n| n == name), extra_x.as_ref())
        {
            col.assign(&f.column(j));
        } else {
            return Err(format!(
                "model feature `{name}` is neither a mixture weight ({}) nor a computed \
                 feature ({})",
                lambda_names.join(", "),
                extra_names.join(", ")
            )
            .into());
        }
    }
    Ok(out)
}

/// A [`Surrogate`] that refits a datamix-regression model family (e.g. `GpParams`) on
/// `[λ, extra(λ)]` at every [`Surrogate::fit`].
#[derive(Debug)]
pub struct RegressionSurrogate<R> {
    family: R,
    lambda_names: Vec<String>,
    extra: Option<Box<dyn FeatureMap>>,
    model: Option<Box<dyn Predictor>>,
}

impl<R: Regressor> RegressionSurrogate<R> {
    /// Surrogate on λ alone.
    pub fn new(family: R, space: &SearchSpace) -> Self {
        Self {
            family,
            lambda_names: lambda_names(space),
            extra: None,
            model: None,
        }
    }

    /// Adds features computed from λ (e.g. MDE losses), as in "GP on [λ, MDE]".
    pub fn with_features(mut self, features: Box<dyn FeatureMap>) -> Self {
        self.extra = Some(features);
        self
    }

    /// The last fitted model.
    pub fn model(&self) -> Option<&dyn Predictor> {
        self.model.as_deref()
    }

    fn names(&self) -> Vec<String> {
        let mut names = self.lambda_names.clone();
        if let Some(e) = &self.extra {
            names.extend(e.names());
        }
        names
    }
}

impl<R: Regressor> Surrogate for RegressionSurrogate<R> {
    fn fit(&mut self, xs: &[Vec<f64>], ys: &[f64]) -> Result<(), SurrogateError> {
        let names = self.names();
        let x = design(&self.lambda_names, self.extra.as_deref(), &names, xs)?;
        let task = Task {
            x,
            y: ys.iter().copied().collect(),
            feature_names: names,
            target: "objective".into(),
            ids: (0..xs.len()).map(|i| format!("obs{i}")).collect(),
            mde_proxy: None,
        };
        self.model = Some(self.family.fit(&task)?);
        Ok(())
    }

    fn predict(&self, xs: &[Vec<f64>]) -> Result<Vec<SurrogatePrediction>, SurrogateError> {
        let model = self.model.as_ref().ok_or("surrogate used before fit")?;
        let x = design(
            &self.lambda_names,
            self.extra.as_deref(),
            model.feature_names(),
            xs,
        )?;
        predictions(model.as_ref(), x)
    }
}

fn predictions(
    model: &dyn Predictor,
    x: Array2<f64>,
) -> Result<Vec<SurrogatePrediction>, SurrogateError> {
    let p = model.predict(x.view())?;
    Ok(p.mean
        .iter()
        .enumerate()
        .map(|(i, &mean)| SurrogatePrediction {
            mean,
            std: p.std.as_ref().map_or(0.0, |s| s[i]),
        })
        .collect())
}

/// The objective "predicted loss of λ" from a fitted datamix-regression model whose
/// features are `lambda:<domain>` columns plus columns computed by a [`FeatureMap`] (e.g.
/// MDE losses per eval domain, computed on the fly for every candidate). Columns are
/// matched by header, in whatever order the model was fitted with.
///
/// Batched evaluation ([`Objective::values`]) computes features and predictions for all
/// candidates at once. The model's predictive std is reported as uncertainty.
#[derive(Debug)]
pub struct ModelObjective {
    model: Box<dyn Predictor>,
    lambda_names: Vec<String>,
    extra: Option<Box<dyn FeatureMap>>,
}

impl ModelObjective {
    /// Wraps a fitted model; checks now that every model feature can be produced.
    pub fn new(
        model: Box<dyn Predictor>,
        space: &SearchSpace,
        extra: Option<Box<dyn FeatureMap>>,
    ) -> Result<Self> {
        let o = Self {
            model,
            lambda_names: lambda_names(space),
            extra,
        };
        o.design(&[space.prior().to_vec()])
            .map_err(OptimizerError::Surrogate)?;
        Ok(o)
    }

    fn design(&self, xs: &[Vec<f64>]) -> Result<Array2<f64>, SurrogateError> {
        design(
            &self.lambda_names,
            self.extra.as_deref(),
            self.model.feature_names(),
            xs,
        )
    }

    /// Mean and std at many mixtures (NaN where prediction failed).
    pub fn predict(&self, xs: &[Vec<f64>]) -> Vec<SurrogatePrediction> {
        let nan = SurrogatePrediction {
            mean: f64::NAN,
            std: f64::NAN,
        };
        self.design(xs)
            .and_then(|x| predictions(self.model.as_ref(), x))
            .unwrap_or_else(|_| vec![nan; xs.len()])
    }
}

impl Objective for ModelObjective {
    fn value(&self, x: &[f64]) -> f64 {
        self.predict(&[x.to_vec()])[0].mean
    }

    fn uncertainty(&self, x: &[f64]) -> Option<f64> {
        let s = self.predict(&[x.to_vec()])[0].std;
        (s.is_finite() && s > 0.0).then_some(s)
    }

    fn values(&self, xs: &[Vec<f64>]) -> Vec<f64> {
        // Chunks keep the feature matrices small and use every core.
        use rayon::prelude::*;
        xs.par_chunks(1024)
            .flat_map_iter(|c| self.predict(c).into_iter().map(|p| p.mean))
            .collect()
    }
}
