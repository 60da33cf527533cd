//! Trained mixtures as a table: named feature groups and loss targets, with CSV load/save.
//!
//! CSV layout (one row per trained mixture):
//!
//! ```text
//! mixture,lambda:web,lambda:code,mde:web_val,mde:code_val,merged:web_val,target:web_val,target:code_val
//! m0,0.7,0.3,3.12,3.50,3.20,3.05,3.41
//! ```
//!
//! * `mixture` (optional, first column): the row's name.
//! * `target:<name>`: an observed loss (per eval domain) or a weighted objective.
//! * `<group>:<name>`: a feature column; the group (`lambda`, `mde`, `merged`, or any other)
//!   is what feature sets select by name.

use std::io::{Read, Write};
use std::path::Path;

use ndarray::{Array1, Array2, ArrayView1, Axis};

use crate::error::{RegressionError, Result};

/// Name of the optional row-identifier column.
pub const ID_COLUMN: &str = "mixture";
/// Prefix marking target columns.
pub const TARGET_PREFIX: &str = "target";
/// Feature group holding mixture weights.
pub const LAMBDA: &str = FeatureGroup::Lambda.as_str();
/// Feature group holding MDE losses per eval domain.
pub const MDE: &str = FeatureGroup::Mde.as_str();
/// Feature group holding merged-model losses per eval domain.
pub const MERGED: &str = FeatureGroup::Merged.as_str();

/// The feature groups datamix itself writes, so that code naming them is checked by the
/// compiler. A [`Dataset`] read from CSV may hold other groups too: every method that
/// selects groups takes anything that is `AsRef<str>` (these, `&str` or `String`).
/// Serialised as the lowercase names, the same strings as the column headers' groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureGroup {
    /// The mixture weights λ (`lambda:<domain>`).
    Lambda,
    /// MDE losses per eval domain (`mde:<domain>`).
    Mde,
    /// Losses of merged models per eval domain (`merged:<domain>`).
    Merged,
}

impl FeatureGroup {
    /// Every group, in the order datamix writes them.
    pub const ALL: [FeatureGroup; 3] = [
        FeatureGroup::Lambda,
        FeatureGroup::Mde,
        FeatureGroup::Merged,
    ];

    /// The group's name in column headers (`lambda`, `mde`, `merged`).
    pub const fn as_str(self) -> &'static str {
        match self {
            FeatureGroup::Lambda => "lambda",
            FeatureGroup::Mde => "mde",
            FeatureGroup::Merged => "merged",
        }
    }
}

impl AsRef<str> for FeatureGroup {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for FeatureGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A feature column: `group:name`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// Feature group (`lambda`, `mde`, `merged`, ...).
    pub group: String,
    /// Name within the group (a training or eval domain).
    pub name: String,
}

impl Column {
    /// A column of `group` called `name`.
    pub fn new(group: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            name: name.into(),
        }
    }

    /// Parses `group:name`.
    pub fn parse(header: &str) -> Result<Self> {
        match header.split_once(':') {
            Some((g, n)) if !g.is_empty() && !n.is_empty() => Ok(Self::new(g, n)),
            _ => Err(RegressionError::BadColumn {
                column: header.to_string(),
                reason: format!(
                    "expected `group:name` (e.g. `lambda:web`, `{TARGET_PREFIX}:web_val`)"
                ),
            }),
        }
    }

    /// The header text, `group:name`.
    pub fn header(&self) -> String {
        format!("{}:{}", self.group, self.name)
    }
}

/// Rows = trained mixtures; columns = features (grouped) and targets.
///
/// Every value is finite; this is checked on construction and on load.
#[derive(Debug, Clone)]
pub struct Dataset {
    ids: Vec<String>,
    columns: Vec<Column>,
    features: Array2<f64>,
    target_names: Vec<String>,
    targets: Array2<f64>,
    /// MDE proxy of each target: weights over `mde:` columns (see [`Dataset::mde_proxy`]).
    objectives: Vec<(String, Vec<(String, f64)>)>,
}

/// One regression problem cut from a [`Dataset`]: the selected feature columns and one target.
#[derive(Debug, Clone)]
pub struct Task {
    /// Feature matrix, rows = mixtures.
    pub x: Array2<f64>,
    /// Target values.
    pub y: Array1<f64>,
    /// Headers (`group:name`) of the columns of `x`.
    pub feature_names: Vec<String>,
    /// Target name.
    pub target: String,
    /// Row names.
    pub ids: Vec<String>,
    /// The MDE estimate of the target as weights over columns of `x`, when those columns
    /// are selected (used by the "MDE alone" baseline).
    pub mde_proxy: Option<Vec<(usize, f64)>>,
}

impl Task {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.y.len()
    }

    /// The rows `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Task {
        Task {
            x: self.x.select(Axis(0), idx),
            y: self.y.select(Axis(0), idx),
            feature_names: self.feature_names.clone(),
            target: self.target.clone(),
            ids: idx.iter().map(|&i| self.ids[i].clone()).collect(),
            mde_proxy: self.mde_proxy.clone(),
        }
    }
}

fn check_finite(ids: &[String], names: &[String], m: &Array2<f64>) -> Result<()> {
    for ((r, c), &v) in m.indexed_iter() {
        if !v.is_finite() {
            return Err(RegressionError::NonFinite {
                row: r,
                id: ids[r].clone(),
                column: names[c].clone(),
                value: v,
            });
        }
    }
    Ok(())
}

fn shape(what: &str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(RegressionError::Shape {
            what: what.to_string(),
            expected,
            found,
        })
    }
}

impl Dataset {
    /// Builds a dataset, checking shapes, unique names and that every value is finite.
    ///
    /// `targets` columns are named by `target_names` (without the `target:` prefix).
    pub fn new(
        ids: Vec<String>,
        columns: Vec<Column>,
        features: Array2<f64>,
        target_names: Vec<String>,
        targets: Array2<f64>,
    ) -> Result<Self> {
        shape("feature rows vs row ids", ids.len(), features.nrows())?;
        shape("target rows vs row ids", ids.len(), targets.nrows())?;
        shape("feature columns vs names", columns.len(), features.ncols())?;
        shape(
            "target columns vs names",
            target_names.len(),
            targets.ncols(),
        )?;
        let mut headers: Vec<String> = columns.iter().map(Column::header).collect();
        for c in &columns {
            if c.group == TARGET_PREFIX || c.group.is_empty() || c.name.is_empty() {
                return Err(RegressionError::BadColumn {
                    column: c.header(),
                    reason: "feature groups must be non-empty and not `target`".into(),
                });
            }
        }
        let target_headers: Vec<String> = target_names
            .iter()
            .map(|t| format!("{TARGET_PREFIX}:{t}"))
            .collect();
        check_finite(&ids, &headers, &features)?;
        check_finite(&ids, &target_headers, &targets)?;
        headers.extend(target_headers);
        let mut sorted = headers.clone();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(RegressionError::BadColumn {
                column: w[0].clone(),
                reason: "appears more than once".into(),
            });
        }
        Ok(Self {
            ids,
            columns,
            features,
            target_names,
            targets,
            objectives: Vec::new(),
        })
    }

    /// Number of rows (trained mixtures).
    pub fn n_rows(&self) -> usize {
        self.ids.len()
    }

    /// Row names.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Feature columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The feature matrix (all groups).
    pub fn features(&self) -> &Array2<f64> {
        &self.features
    }

    /// Target names (without the `target:` prefix).
    pub fn target_names(&self) -> &[String] {
        &self.target_names
    }

    /// The target matrix.
    pub fn targets(&self) -> &Array2<f64> {
        &self.targets
    }

    /// Feature groups, in first-appearance order.
    pub fn groups(&self) -> Vec<&str> {
        let mut g: Vec<&str> = Vec::new();
        for c in &self.columns {
            if !g.contains(&c.group.as_str()) {
                g.push(&c.group);
            }
        }
        g
    }

    /// Values of one target.
    pub fn target(&self, name: &str) -> Result<ArrayView1<'_, f64>> {
        Ok(self.targets.column(self.target_index(name)?))
    }

    fn target_index(&self, name: &str) -> Result<usize> {
        self.target_names
            .iter()
            .position(|t| t == name)
            .ok_or_else(|| RegressionError::Unknown {
                kind: "target",
                name: name.to_string(),
                available: self.target_names.join(", "),
            })
    }

    /// Indices of the feature columns in `groups` (in dataset order).
    pub fn group_columns<G: AsRef<str>>(&self, groups: &[G]) -> Result<Vec<usize>> {
        let known = self.groups();
        for g in groups {
            let g = g.as_ref();
            if !known.contains(&g) {
                return Err(RegressionError::Unknown {
                    kind: "feature group",
                    name: g.to_string(),
                    available: known.join(", "),
                });
            }
        }
        Ok((0..self.columns.len())
            .filter(|&i| groups.iter().any(|g| g.as_ref() == self.columns[i].group))
            .collect())
    }

    /// Appends a weighted objective as a new target: `Σ w · target` (e.g. the mean over the
    /// training domains' validation losses). Its MDE proxy is the same combination of the
    /// `mde:` columns of the components.
    pub fn add_objective(&mut self, name: &str, weights: &[(&str, f64)]) -> Result<()> {
        if self.target_names.iter().any(|t| t == name) {
            return Err(RegressionError::BadColumn {
                column: format!("{TARGET_PREFIX}:{name}"),
                reason: "appears more than once".into(),
            });
        }
        let mut col = Array1::zeros(self.n_rows());
        for &(t, w) in weights {
            if !w.is_finite() {
                return Err(RegressionError::InvalidParam {
                    family: "objective",
                    param: "weight",
                    value: format!("{t}={w}"),
                    expected: "finite",
                });
            }
            col.scaled_add(w, &self.target(t)?);
        }
        self.targets
            .push_column(col.view())
            .expect("row count matches");
        self.target_names.push(name.to_string());
        self.objectives.push((
            name.to_string(),
            weights.iter().map(|&(t, w)| (t.to_string(), w)).collect(),
        ));
        Ok(())
    }

    /// Appends the equal-weight mean of all current targets as a new target `name`
    /// ([`Dataset::add_objective`] with weight `1/n` each).
    pub fn add_mean_objective(&mut self, name: &str) -> Result<()> {
        let names = self.target_names.clone();
        let w = 1.0 / names.len() as f64;
        let weights: Vec<(&str, f64)> = names.iter().map(|t| (t.as_str(), w)).collect();
        self.add_objective(name, &weights)
    }

    /// The MDE estimate of `target` as weights over feature-column indices: `mde:<target>`, or
    /// for an objective added by [`Dataset::add_objective`], its weights over `mde:<component>`.
    /// `None` when a needed `mde:` column is missing.
    pub fn mde_proxy(&self, target: &str) -> Option<Vec<(usize, f64)>> {
        let find = |t: &str| {
            self.columns
                .iter()
                .position(|c| c.group == MDE && c.name == t)
        };
        if let Some(i) = find(target) {
            return Some(vec![(i, 1.0)]);
        }
        let (_, weights) = self.objectives.iter().find(|(n, _)| n == target)?;
        weights
            .iter()
            .map(|(t, w)| find(t).map(|i| (i, *w)))
            .collect()
    }

    /// Cuts a regression task: the feature columns of `groups` and the target `target`.
    ///
    /// Errors if a group or the target is unknown, or the target is constant.
    pub fn task<G: AsRef<str>>(&self, groups: &[G], target: &str) -> Result<Task> {
        let cols = self.group_columns(groups)?;
        let y = self.target(target)?.to_owned();
        if self.n_rows() == 0 {
            return Err(RegressionError::TooFewRows {
                what: format!("target `{target}`"),
                needed: 1,
                rows: 0,
            });
        }
        if y.iter().all(|&v| v == y[0]) {
            return Err(RegressionError::ConstantTarget {
                target: target.to_string(),
                value: y[0],
            });
        }
        let mde_proxy = self.mde_proxy(target).and_then(|p| {
            p.into_iter()
                .map(|(i, w)| cols.iter().position(|&c| c == i).map(|j| (j, w)))
                .collect()
        });
        Ok(Task {
            x: self.features.select(Axis(1), &cols),
            y,
            feature_names: cols.iter().map(|&i| self.columns[i].header()).collect(),
            target: target.to_string(),
            ids: self.ids.clone(),
            mde_proxy,
        })
    }

    /// Loads a CSV file (see the module docs for the layout).
    pub fn from_csv(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let f = std::fs::File::open(path).map_err(|source| RegressionError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::read_csv(std::io::BufReader::new(f), path)
    }

    /// Reads CSV from any reader; `path` is only used in error messages.
    pub fn read_csv(reader: impl Read, path: &Path) -> Result<Self> {
        let csv_err = |source| RegressionError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let header: Vec<String> = rdr
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(str::to_string)
            .collect();
        let has_id = header.first().is_some_and(|h| h == ID_COLUMN);
        let mut feat_idx = Vec::new();
        let mut columns = Vec::new();
        let mut targ_idx = Vec::new();
        let mut target_names = Vec::new();
        for (i, h) in header.iter().enumerate().skip(usize::from(has_id)) {
            let c = Column::parse(h)?;
            if c.group == TARGET_PREFIX {
                targ_idx.push(i);
                target_names.push(c.name);
            } else {
                feat_idx.push(i);
                columns.push(c);
            }
        }
        let (mut ids, mut fvals, mut tvals) = (Vec::new(), Vec::new(), Vec::new());
        for (r, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(csv_err)?;
            let line = r + 2;
            if rec.len() != header.len() {
                return Err(RegressionError::ColumnCount {
                    path: path.to_path_buf(),
                    row: line,
                    expected: header.len(),
                    found: rec.len(),
                });
            }
            let num = |i: usize| -> Result<f64> {
                rec[i].parse::<f64>().map_err(|_| RegressionError::Parse {
                    path: path.to_path_buf(),
                    row: line,
                    column: header[i].clone(),
                    value: rec[i].to_string(),
                })
            };
            ids.push(if has_id {
                rec[0].to_string()
            } else {
                format!("row{}", r + 1)
            });
            for &i in &feat_idx {
                fvals.push(num(i)?);
            }
            for &i in &targ_idx {
                tvals.push(num(i)?);
            }
        }
        let n = ids.len();
        let features = Array2::from_shape_vec((n, feat_idx.len()), fvals).expect("sizes counted");
        let targets = Array2::from_shape_vec((n, targ_idx.len()), tvals).expect("sizes counted");
        Self::new(ids, columns, features, target_names, targets)
    }

    /// Writes the dataset as CSV, atomically (temporary file in the same folder, fsync, rename).
    pub fn to_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        write_atomic(path, |w| self.write_csv(w))
    }

    /// Writes CSV to any writer.
    pub fn write_csv(&self, w: impl Write) -> std::io::Result<()> {
        let mut wr = csv::Writer::from_writer(w);
        let mut header = vec![ID_COLUMN.to_string()];
        header.extend(self.columns.iter().map(Column::header));
        header.extend(
            self.target_names
                .iter()
                .map(|t| format!("{TARGET_PREFIX}:{t}")),
        );
        wr.write_record(&header)?;
        for r in 0..self.n_rows() {
            let mut rec = vec![self.ids[r].clone()];
            rec.extend(self.features.row(r).iter().map(|v| v.to_string()));
            rec.extend(self.targets.row(r).iter().map(|v| v.to_string()));
            wr.write_record(&rec)?;
        }
        wr.flush()
    }

    /// The rows `idx`, in that order (objective definitions are kept).
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        Dataset {
            ids: idx.iter().map(|&i| self.ids[i].clone()).collect(),
            columns: self.columns.clone(),
            features: self.features.select(Axis(0), idx),
            target_names: self.target_names.clone(),
            targets: self.targets.select(Axis(0), idx),
            objectives: self.objectives.clone(),
        }
    }
}

/// Writes a file atomically and durably ([`datamix_io::AtomicFile`]): `write` fills a
/// temporary file in the same folder, which is fsynced and renamed over `path`, and the
/// folder fsynced. Nothing is left behind on error.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let mut f = datamix_io::AtomicFile::create(path)?;
    write(f.file_mut()).map_err(|source| RegressionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(f.commit()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_objective_averages_every_target() {
        let rows = 4;
        let d = |targets| {
            Dataset::new(
                (0..rows).map(|r| format!("m{r}")).collect(),
                vec![Column::new(LAMBDA, "a")],
                Array2::from_shape_fn((rows, 1), |(r, _)| r as f64),
                vec!["x".into(), "y".into(), "z".into()],
                targets,
            )
            .unwrap()
        };
        let mut d = d(Array2::from_shape_fn((rows, 3), |(r, c)| {
            (r * 3 + c * c) as f64
        }));
        d.add_mean_objective("avg").unwrap();
        let want: Vec<f64> = (0..rows).map(|r| (r * 3) as f64 + 5.0 / 3.0).collect();
        for (g, w) in d.target("avg").unwrap().iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        // A second objective of the same name is refused, as by `add_objective`.
        assert!(d.add_mean_objective("avg").is_err());
    }

    #[test]
    fn feature_groups_keep_their_names() {
        // CSV headers, configs and outcome files name groups by these strings.
        for (g, name) in FeatureGroup::ALL
            .into_iter()
            .zip(["lambda", "mde", "merged"])
        {
            assert_eq!(g.as_str(), name);
            assert_eq!(g.to_string(), name);
            assert_eq!(serde_json::to_string(&g).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<FeatureGroup>(&format!("\"{name}\"")).unwrap(),
                g
            );
        }
        assert_eq!(
            [LAMBDA, MDE, MERGED],
            FeatureGroup::ALL.map(FeatureGroup::as_str)
        );
    }

    #[test]
    fn enums_and_strings_select_the_same_columns() {
        let columns = [
            Column::new(LAMBDA, "a"),
            Column::new(LAMBDA, "b"),
            Column::new(MDE, "e"),
            Column::new("custom", "x"),
        ];
        let rows = 5;
        let features =
            Array2::from_shape_fn((rows, columns.len()), |(r, c)| (r * 7 + c * c) as f64);
        let targets = Array2::from_shape_fn((rows, 1), |(r, _)| r as f64);
        let d = Dataset::new(
            (0..rows).map(|r| format!("m{r}")).collect(),
            columns.to_vec(),
            features,
            vec!["t".into()],
            targets,
        )
        .unwrap();
        let by_enum = d
            .task(&[FeatureGroup::Lambda, FeatureGroup::Mde], "t")
            .unwrap();
        let by_str = d.task(&["lambda", "mde"], "t").unwrap();
        assert_eq!(by_enum.feature_names, ["lambda:a", "lambda:b", "mde:e"]);
        assert_eq!(by_enum.feature_names, by_str.feature_names);
        assert_eq!(by_enum.x, by_str.x);
        assert!(
            d.task(&[FeatureGroup::Merged], "t").is_err(),
            "absent group refused"
        );
        assert_eq!(
            d.task(&["custom"], "t").unwrap().feature_names,
            ["custom:x"]
        );
    }
}
