//! A policy set as one document: merging the files of a set, rendering it as YAML,
//! changing one rule, and saying in a few lines what changed between two sets — what
//! `GET /policy` shows, what admin writes store, and what the history records.

use std::collections::BTreeMap;

use serde::Serialize;

use super::document::{Document, RuleDoc};
use super::values::serde_error;
use super::{PolicyError, PolicyFile};

/// The documents of `files` merged as a policy set merges them: `defaults` from the
/// file that has it, listeners and rules concatenated in file order. Files that do not
/// parse are skipped (a compiled set has none).
pub fn merge(files: &[PolicyFile]) -> Document {
    let mut merged = Document::default();
    for file in files {
        let Ok(Some(doc)) = serde_yaml::from_str::<Option<Document>>(&file.text) else {
            continue;
        };
        if merged.defaults.is_none() {
            merged.defaults = doc.defaults;
        }
        merged.listeners.extend(doc.listeners);
        merged.rules.extend(doc.rules);
    }
    merged
}

/// `doc` as YAML, after a comment line saying where it came from.
pub fn to_yaml(doc: &Document, comment: &str) -> String {
    let body = serde_yaml::to_string(doc).unwrap_or_default();
    let body = if body.trim() == "{}" {
        String::new()
    } else {
        body
    };
    format!("# {comment}\n{body}")
}

/// The set `files` holds, as one YAML text: a lone file as it was written (comments
/// kept), several merged into one document.
pub fn as_one_yaml(files: &[PolicyFile], comment: &str) -> String {
    match files {
        [one] => one.text.to_string(),
        _ => {
            let names: Vec<&str> = files
                .iter()
                .map(|f| f.name.rsplit('/').next().unwrap_or(&f.name))
                .collect();
            to_yaml(
                &merge(files),
                &format!("{comment}; merged from {}", names.join(", ")),
            )
        }
    }
}

/// One rule sent on its own (YAML or JSON) for the rule `name`: a `name` in the body
/// must be `name`; an absent one is taken from it.
///
/// Fails when the body is not a mapping, names another rule, or is not a rule.
pub fn parse_rule(text: &str, name: &str) -> Result<RuleDoc, PolicyError> {
    let error = |line: Option<usize>, path: &str, message: String| PolicyError {
        file: "request body".to_owned(),
        line,
        path: path.to_owned(),
        message,
    };
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| serde_error("request body", &e))?;
    let Some(map) = value.as_mapping_mut() else {
        return Err(error(
            None,
            "",
            "a rule is a mapping: name, hosts, ports, ...".into(),
        ));
    };
    match map.get("name") {
        None => {
            map.insert("name".into(), name.into());
        }
        Some(given) if given.as_str() == Some(name) => {}
        Some(given) => {
            let given = serde_yaml::to_string(given).unwrap_or_default();
            let message = format!(
                "the body names rule {:?} but the path names {name:?}; they must agree",
                given.trim()
            );
            return Err(error(None, "name", message));
        }
    }
    serde_yaml::from_value(value).map_err(|e| serde_error("request body", &e))
}

/// `doc` with `rule` in place of the rule of the same name, or appended. Returns
/// whether it replaced one.
pub fn set_rule(doc: &mut Document, rule: RuleDoc) -> bool {
    match doc.rules.iter_mut().find(|r| r.name == rule.name) {
        Some(slot) => {
            *slot = rule;
            true
        }
        None => {
            doc.rules.push(rule);
            false
        }
    }
}

/// What changed from the set of files `old` to `new`, as [`summarize`] says it.
pub fn summarize_files(old: &[PolicyFile], new: &[PolicyFile]) -> Vec<String> {
    // A file present with the same name and text on both sides changes nothing; leaving
    // it out spares parsing it twice (a 100k-rule file beside the one edited).
    let same = |f: &PolicyFile, other: &[PolicyFile]| {
        other.iter().any(|o| o.name == f.name && o.text == f.text)
    };
    let old_changed: Vec<PolicyFile> = old.iter().filter(|f| !same(f, new)).cloned().collect();
    let new_changed: Vec<PolicyFile> = new.iter().filter(|f| !same(f, old)).cloned().collect();
    summarize(&merge(&old_changed), &merge(&new_changed))
}

/// What changed from `old` to `new`, one line per default, listener or rule.
pub fn summarize(old: &Document, new: &Document) -> Vec<String> {
    let mut out = Vec::new();
    let fields = changed_fields(&old.defaults, &new.defaults);
    if !fields.is_empty() {
        out.push(format!("defaults changed: {}", fields.join(", ")));
    }
    named_changes(
        "listener",
        &pairs(&old.listeners, |l| &l.name),
        &pairs(&new.listeners, |l| &l.name),
        &mut out,
    );
    named_changes(
        "rule",
        &pairs(&old.rules, |r| &r.name),
        &pairs(&new.rules, |r| &r.name),
        &mut out,
    );
    let order = |doc: &Document| doc.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    if out.is_empty() && order(old) != order(new) {
        out.push("rule order changed".to_owned());
    }
    if out.is_empty() {
        out.push("no rule, listener or default changed (comments or layout only)".to_owned());
    }
    out
}

fn pairs<'a, T: Serialize>(
    items: &'a [T],
    name: impl Fn(&'a T) -> &'a String,
) -> Vec<(&'a str, serde_json::Value)> {
    items
        .iter()
        .map(|item| {
            let value = serde_json::to_value(item).unwrap_or_default();
            (name(item).as_str(), value)
        })
        .collect()
}

fn named_changes(
    kind: &str,
    old: &[(&str, serde_json::Value)],
    new: &[(&str, serde_json::Value)],
    out: &mut Vec<String>,
) {
    let before: BTreeMap<&str, &serde_json::Value> = old.iter().map(|(n, v)| (*n, v)).collect();
    let after: BTreeMap<&str, &serde_json::Value> = new.iter().map(|(n, v)| (*n, v)).collect();
    for (name, value) in new {
        match before.get(name) {
            None => out.push(format!("{kind} {name} added")),
            Some(previous) if *previous != value => {
                let fields = changed_fields(*previous, value);
                out.push(format!("{kind} {name} changed: {}", fields.join(", ")));
            }
            Some(_) => {}
        }
    }
    for (name, _) in old {
        if !after.contains_key(name) {
            out.push(format!("{kind} {name} removed"));
        }
    }
}

/// The fields that differ, as `field old → new` (values shortened).
fn changed_fields<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let old = serde_json::to_value(old).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{k} {} → {}", short(old.get(k)), short(new.get(k))))
        .collect()
}

fn short(value: Option<&serde_json::Value>) -> String {
    let text = match value {
        None => "(none)".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Document {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn summaries_name_what_changed() {
        let old = doc("defaults: {mode: deny}\nrules:\n- {name: a, hosts: [a.example], ports: [443]}\n- {name: b, hosts: [b.example]}\n");
        let new = doc("defaults: {mode: audit}\nrules:\n- {name: a, hosts: [a.example], ports: [443, 8443]}\n- {name: c, hosts: [c.example]}\n");
        assert_eq!(
            summarize(&old, &new),
            vec![
                "defaults changed: mode deny → audit",
                "rule a changed: ports [443] → [443,8443]",
                "rule c added",
                "rule b removed",
            ]
        );
        assert_eq!(
            summarize(&old, &old),
            vec!["no rule, listener or default changed (comments or layout only)"]
        );
    }

    #[test]
    fn a_rule_body_takes_its_name_from_the_path_and_must_agree_with_it() {
        let rule = parse_rule("hosts: [a.example]\n", "a").unwrap();
        assert_eq!(rule.name, "a");
        let err = parse_rule("{\"name\": \"b\", \"hosts\": []}", "a").unwrap_err();
        assert_eq!(err.path, "name");
        let err = parse_rule("hosts: [a.example]\nhostz: 1\n", "a").unwrap_err();
        assert_eq!(err.path, "hostz");
        assert!(parse_rule("- a\n", "a").is_err());
    }

    #[test]
    fn several_files_merge_into_one_document() {
        let files = vec![
            PolicyFile {
                name: "p/a.yaml".into(),
                text: "defaults: {mode: allow}\nrules: [{name: a, hosts: [a.example]}]\n".into(),
            },
            PolicyFile {
                name: "p/b.yaml".into(),
                text: "rules: [{name: b, hosts: [b.example]}]\n".into(),
            },
        ];
        let text = as_one_yaml(&files, "the set in force");
        assert!(text.starts_with("# the set in force; merged from a.yaml, b.yaml\n"));
        let merged: Document = serde_yaml::from_str(&text).unwrap();
        assert_eq!(merged.rules.len(), 2);
        assert_eq!(merged, merge(&files));
    }
}
