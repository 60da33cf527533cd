//! Domain rules: which metadata decides a document's domain, and how its values map to
//! domain names. Loaded from TOML; unknown keys are rejected by name.
//!
//! ```toml
//! field = "field_of_study"        # metadata key; dots reach into nested objects
//! missing = "unknown"             # bucket for documents without the field (else dropped)
//! other = "misc"                  # bucket for values no range matches (else dropped)
//! priority = ["Physics", "Biology"]  # for list-valued fields: first of these the document has
//! include = ["Physics", "Biology", "Environmental Science"]  # keep only these domains
//!
//! [rename]                        # renames and merges, applied to every value
//! "Geography" = "Environmental Science"
//! "Ecology" = "Environmental Science"
//!
//! [[ranges]]                      # numeric fields (e.g. year): inclusive ranges -> domains
//! name = "before-2000"
//! max = 1999
//! [[ranges]]
//! name = "2000s"
//! min = 2000
//! max = 2009
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{PartitionError, Result};

/// A numeric range mapped to a domain name; bounds are inclusive, either may be open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRule {
    /// Domain name for values in the range.
    pub name: String,
    /// Smallest value (inclusive); none = unbounded.
    pub min: Option<f64>,
    /// Largest value (inclusive); none = unbounded.
    pub max: Option<f64>,
}

/// How a document's domain is decided. See the module docs for the TOML form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainRules {
    /// Metadata key holding the domain (dots reach into nested objects). Default `domain`.
    pub field: String,
    /// Renames and merges of field values (applied before `priority`, `include`).
    pub rename: BTreeMap<String, String>,
    /// Numeric ranges (e.g. years) -> domain names. When set, the field must be numeric
    /// (or a string starting with a number, such as `"2019-05-01"`).
    pub ranges: Vec<RangeRule>,
    /// For list-valued fields (several tags): the domain is the first entry of this list
    /// that the document carries; when empty, the document's first tag.
    pub priority: Vec<String>,
    /// Domain for documents without the field; none = drop them (they are counted).
    pub missing: Option<String>,
    /// Domain for values that match no range or priority entry; none = drop (counted).
    pub other: Option<String>,
    /// Keep only these domains (after renaming); each must end up non-empty.
    pub include: Vec<String>,
}

impl Default for DomainRules {
    fn default() -> Self {
        Self {
            field: "domain".into(),
            rename: BTreeMap::new(),
            ranges: Vec::new(),
            priority: Vec::new(),
            missing: None,
            other: None,
            include: Vec::new(),
        }
    }
}

/// The outcome of applying rules to one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// The document belongs to this domain.
    Domain(String),
    /// The document lacks the field and there is no `missing` bucket.
    MissingField,
    /// The value matched no range / priority entry and there is no `other` bucket.
    Unmatched,
    /// The domain is not in `include`.
    Excluded,
}

impl DomainRules {
    /// Parses rules from TOML; an unknown key is an error naming it.
    pub fn from_toml_str(s: &str, what: &str) -> Result<Self> {
        let rules: Self = toml::from_str(s).map_err(|e| PartitionError::Config {
            what: what.into(),
            message: e.to_string(),
        })?;
        rules.validate(what)?;
        Ok(rules)
    }

    /// Reads rules from a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| PartitionError::io(path, e))?;
        Self::from_toml_str(&s, &path.display().to_string())
    }

    /// Checks that the rules are usable.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |message: String| {
            Err(PartitionError::Config {
                what: what.into(),
                message,
            })
        };
        if self.field.is_empty() {
            return bad("`field` must name a metadata key".into());
        }
        for r in &self.ranges {
            if let (Some(lo), Some(hi)) = (r.min, r.max)
                && lo > hi
            {
                return bad(format!("range `{}` has min {lo} > max {hi}", r.name));
            }
        }
        Ok(())
    }

    /// Looks up the rule's field in a document's metadata.
    pub fn lookup<'a>(&self, metadata: &'a Map<String, Value>) -> Option<&'a Value> {
        lookup_path(metadata, &self.field)
    }

    /// Decides a document's domain from its metadata.
    pub fn assign(&self, metadata: &Map<String, Value>) -> Assignment {
        let name = match self.lookup(metadata) {
            None | Some(Value::Null) => match &self.missing {
                Some(m) => m.clone(),
                None => return Assignment::MissingField,
            },
            Some(v) => match self.value_domain(v) {
                Some(d) => d,
                None => match &self.other {
                    Some(o) => o.clone(),
                    None => return Assignment::Unmatched,
                },
            },
        };
        if !self.include.is_empty() && !self.include.contains(&name) {
            return Assignment::Excluded;
        }
        Assignment::Domain(name)
    }

    fn renamed(&self, s: &str) -> String {
        self.rename.get(s).cloned().unwrap_or_else(|| s.to_string())
    }

    fn value_domain(&self, v: &Value) -> Option<String> {
        if !self.ranges.is_empty() {
            let x = match v {
                Value::Number(n) => n.as_f64()?,
                Value::String(s) => leading_number(s)?,
                Value::Array(a) => return a.iter().find_map(|t| self.value_domain(t)),
                _ => return None,
            };
            let r = self
                .ranges
                .iter()
                .find(|r| r.min.is_none_or(|m| x >= m) && r.max.is_none_or(|m| x <= m))?;
            return Some(self.renamed(&r.name));
        }
        match v {
            Value::String(s) => Some(self.renamed(s)),
            Value::Number(_) | Value::Bool(_) => Some(self.renamed(&v.to_string())),
            Value::Array(tags) => {
                let tags: Vec<String> = tags.iter().filter_map(|t| self.value_domain(t)).collect();
                if self.priority.is_empty() {
                    tags.into_iter().next()
                } else {
                    self.priority.iter().find(|p| tags.contains(p)).cloned()
                }
            }
            _ => None,
        }
    }
}

/// Looks up `a.b.c` in nested objects (an exact key containing dots wins).
pub(crate) fn lookup_path<'a>(metadata: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = metadata.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = metadata.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn leading_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-') || c == '.'))
        .map_or(s.len(), |(i, _)| i);
    s[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renames_merge_and_missing_bucket() {
        let r = DomainRules::from_toml_str(
            "field = \"field\"\nmissing = \"none\"\n[rename]\nGeography = \"Env\"\nEcology = \"Env\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            r.assign(&meta(json!({"field": "Geography"}))),
            Assignment::Domain("Env".into())
        );
        assert_eq!(
            r.assign(&meta(json!({"field": "Ecology"}))),
            Assignment::Domain("Env".into())
        );
        assert_eq!(
            r.assign(&meta(json!({"field": "Physics"}))),
            Assignment::Domain("Physics".into())
        );
        assert_eq!(
            r.assign(&meta(json!({}))),
            Assignment::Domain("none".into())
        );
        assert_eq!(
            DomainRules::default().assign(&meta(json!({}))),
            Assignment::MissingField
        );
    }

    #[test]
    fn year_ranges_and_nested_keys() {
        let r = DomainRules::from_toml_str(
            "field = \"meta.year\"\n[[ranges]]\nname = \"old\"\nmax = 1999\n[[ranges]]\nname = \"new\"\nmin = 2000\nmax = 2009\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            r.assign(&meta(json!({"meta": {"year": 1990}}))),
            Assignment::Domain("old".into())
        );
        assert_eq!(
            r.assign(&meta(json!({"meta": {"year": "2005-03-01"}}))),
            Assignment::Domain("new".into())
        );
        assert_eq!(
            r.assign(&meta(json!({"meta": {"year": 2020}}))),
            Assignment::Unmatched
        );
    }

    #[test]
    fn first_of_several_tags() {
        let r = DomainRules::from_toml_str("field = \"tags\"\n", "t").unwrap();
        assert_eq!(
            r.assign(&meta(json!({"tags": ["b", "a"]}))),
            Assignment::Domain("b".into())
        );
        let r = DomainRules::from_toml_str(
            "field = \"tags\"\npriority = [\"a\", \"b\"]\ninclude = [\"a\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            r.assign(&meta(json!({"tags": ["b", "a"]}))),
            Assignment::Domain("a".into())
        );
        assert_eq!(
            r.assign(&meta(json!({"tags": ["b"]}))),
            Assignment::Excluded
        );
        assert_eq!(
            r.assign(&meta(json!({"tags": ["c"]}))),
            Assignment::Unmatched
        );
    }

    #[test]
    fn unknown_toml_key_is_named() {
        let e = DomainRules::from_toml_str("feild = \"x\"\n", "rules.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("rules.toml") && msg.contains("feild"), "{msg}");
    }
}
