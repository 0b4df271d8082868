//! Reading Istio resources as loose YAML: every key a translation looks at is marked,
//! so that what is left over can be reported as not translated instead of vanishing.

use serde_yaml::{Mapping, Value};

use super::Report;

/// A mapping being translated: the keys read so far, and where it sits in its resource.
pub(super) struct Obj<'a> {
    map: Option<&'a Mapping>,
    /// Field path inside the resource, e.g. `spec.ports[0]`.
    path: String,
    seen: Vec<String>,
}

impl<'a> Obj<'a> {
    /// `value` as a mapping at `path`; anything else reads as an empty mapping.
    pub(super) fn new(value: Option<&'a Value>, path: impl Into<String>) -> Self {
        Self {
            map: value.and_then(Value::as_mapping),
            path: path.into(),
            seen: Vec::new(),
        }
    }

    /// The mapping itself, when it is one.
    pub(super) fn mapping(&self) -> Option<&'a Mapping> {
        self.map
    }

    /// The path of `key` below this mapping.
    pub(super) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`, marking it translated.
    pub(super) fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.seen.push(key.to_owned());
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// `key` as a string (numbers and booleans as written).
    pub(super) fn str(&mut self, key: &str) -> Option<String> {
        self.get(key).and_then(scalar)
    }

    /// `key` as a list of strings (a lone string is a list of one).
    pub(super) fn strs(&mut self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
            Some(v) => scalar(v).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// `key` as a port number.
    pub(super) fn port(&mut self, key: &str) -> Option<u16> {
        self.str(key)
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|p| *p > 0)
    }

    /// `key` as a list of mappings, each with its path.
    pub(super) fn list(&mut self, key: &str) -> Vec<Obj<'a>> {
        let path = self.path_of(key);
        match self.get(key) {
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Obj::new(Some(v), format!("{path}[{i}]")))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `key` as a mapping.
    pub(super) fn obj(&mut self, key: &str) -> Obj<'a> {
        let path = self.path_of(key);
        Obj::new(self.get(key), path)
    }

    /// Whether `key` is present (without marking it).
    pub(super) fn has(&self, key: &str) -> bool {
        self.map
            .and_then(|m| m.get(key))
            .is_some_and(|v| !v.is_null())
    }

    /// Marks `key` as not translated, for `reason`, when it is present.
    pub(super) fn drop(&mut self, key: &str, report: &mut Report, resource: &str, reason: &str) {
        if self.has(key) {
            report.dropped(resource, &self.path_of(key), reason);
        }
        self.seen.push(key.to_owned());
    }

    /// Notes `key` (present) as kept elsewhere or without effect here, for `reason`.
    pub(super) fn note(&mut self, key: &str, report: &mut Report, resource: &str, reason: &str) {
        if self.has(key) {
            report.info(resource, &self.path_of(key), reason);
        }
        self.seen.push(key.to_owned());
    }

    /// Reports every key not read as not translated.
    pub(super) fn finish(self, report: &mut Report, resource: &str) {
        let Some(map) = self.map else {
            return;
        };
        for key in map.keys() {
            let Some(key) = scalar(key) else {
                continue;
            };
            if !self.seen.contains(&key) {
                report.dropped(
                    resource,
                    &self.path_of(&key),
                    "not translated: the gateway's policy has no counterpart",
                );
            }
        }
    }
}

/// A scalar as text.
pub(super) fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
