//! Observations → a suggestion: one rule per host and the ports the policy in force
//! still refuses, appended to that policy with a comment saying what was seen.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use super::{Observed, Tally};

/// One suggested rule and what it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggested {
    /// The rule's name (`seen-HOST`, unique in the policy).
    pub name: String,
    /// The ports the policy in force still refuses.
    pub ports: Vec<u16>,
    /// What the audit lines showed.
    pub seen: Observed,
}

/// `GET /policy/suggest`, and what `egressctl policy suggest -o json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    /// Audit lines read.
    pub lines: u64,
    /// Lines of no known format.
    pub unreadable: u64,
    /// Lines allowed when written.
    pub allowed: u64,
    /// The rules to add.
    pub suggested: Vec<Suggested>,
    /// `host:port` seen denied that the policy in force allows by now.
    pub already_allowed: Vec<String>,
    /// Hosts the address guard refused (policy allowed them), with counts.
    pub refused_by_address_guard: BTreeMap<String, u64>,
    /// The policy in force with the rules appended (YAML); empty when none are suggested.
    pub policy: String,
}

/// Every `host:port` whose answer [`build`] needs (each host folded into a `*.parent`).
pub fn candidates(observed: &[Observed]) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for o in observed {
        for host in members(o) {
            for port in &o.ports {
                out.push((host.clone(), *port));
            }
        }
    }
    out
}

fn members(o: &Observed) -> Vec<String> {
    if o.folded.is_empty() {
        vec![o.host.clone()]
    } else {
        o.folded.clone()
    }
}

/// The suggestion for `observed`, given which `host:port` the policy in force refuses
/// and that policy's YAML.
///
/// Fails when the policy is not YAML.
pub fn build(
    tally: &Tally,
    observed: Vec<Observed>,
    refused: impl Fn(&str, u16) -> bool,
    policy_yaml: &str,
) -> Result<Suggestion, String> {
    let mut policy: Value = serde_yaml::from_str(policy_yaml)
        .map_err(|e| format!("the policy in force is not YAML: {e}"))?;
    let mut names: BTreeSet<String> = match policy.get("rules") {
        Some(Value::Sequence(rules)) => rules
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        _ => BTreeSet::new(),
    };
    let mut suggested = Vec::new();
    let mut already = Vec::new();
    for o in observed {
        let mut ports = Vec::new();
        for port in &o.ports {
            if members(&o).iter().any(|h| refused(h, *port)) {
                ports.push(*port);
            } else {
                already.push(format!("{}:{port}", o.host));
            }
        }
        if !ports.is_empty() {
            suggested.push(Suggested {
                name: unique(&mut names, &o.host),
                ports,
                seen: o,
            });
        }
    }
    let text = if suggested.is_empty() {
        String::new()
    } else {
        merged(&mut policy, &suggested)?
    };
    Ok(Suggestion {
        lines: tally.lines,
        unreadable: tally.unreadable,
        allowed: tally.allowed,
        suggested,
        already_allowed: already,
        refused_by_address_guard: tally.refused.clone(),
        policy: text,
    })
}

/// `seen-<host>`, unique among `names` (which it joins).
fn unique(names: &mut BTreeSet<String>, host: &str) -> String {
    let stem: String = format!("seen-{}", host.replace('*', "wildcard"))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = stem.clone();
    let mut n = 2;
    while names.contains(&name) {
        name = format!("{stem}-{n}");
        n += 1;
    }
    names.insert(name.clone());
    name
}

/// The policy with the suggested rules appended, each with a comment saying what was seen.
fn merged(policy: &mut Value, suggested: &[Suggested]) -> Result<String, String> {
    if !policy.is_mapping() {
        *policy = Value::Mapping(Mapping::new());
    }
    let Some(map) = policy.as_mapping_mut() else {
        return Err("the policy in force is not a mapping".to_owned());
    };
    let mut list = match map.remove("rules") {
        Some(Value::Sequence(rules)) => rules,
        _ => Vec::new(),
    };
    for s in suggested {
        let mut rule = Mapping::new();
        rule.insert("name".into(), s.name.clone().into());
        rule.insert(
            "hosts".into(),
            vec![Value::from(s.seen.host.clone())].into(),
        );
        let ports: Vec<Value> = s.ports.iter().map(|p| Value::from(u64::from(*p))).collect();
        rule.insert("ports".into(), ports.into());
        list.push(Value::Mapping(rule));
    }
    map.insert("rules".into(), Value::Sequence(list));
    let text = serde_yaml::to_string(policy).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for line in text.lines() {
        if let Some(s) = suggested
            .iter()
            .find(|s| line.trim_start() == format!("- name: {}", s.name))
        {
            let indent = &line[..line.len() - line.trim_start().len()];
            for c in comment(s) {
                out.push_str(&format!("{indent}# {c}\n"));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

fn comment(s: &Suggested) -> Vec<String> {
    let o = &s.seen;
    let sources: Vec<&str> = o.sources.iter().map(String::as_str).take(5).collect();
    let more = o.sources.len().saturating_sub(5);
    let mut out = vec![format!(
        "suggested: seen {} times from {}{}, {} .. {}",
        o.count,
        if sources.is_empty() {
            "unknown sources".to_owned()
        } else {
            sources.join(", ")
        },
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
        o.first,
        o.last
    )];
    if !o.folded.is_empty() {
        out.push(format!(
            "folds {} hosts: {}",
            o.folded.len(),
            o.folded.join(", ")
        ));
    }
    if !o.private.is_empty() {
        let addrs: Vec<&str> = o.private.iter().map(String::as_str).collect();
        out.push(format!(
            "REVIEW: it resolved to private or special addresses ({}); the address guard still refuses them unless allow_private is set",
            addrs.join(", ")
        ));
    }
    out
}

impl Suggestion {
    /// What people read: the lines, each rule added, what is allowed by now, what the
    /// address guard refused.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "# {} audit lines read ({} unreadable, {} allowed when written); {} rules suggested\n",
            self.lines,
            self.unreadable,
            self.allowed,
            self.suggested.len()
        );
        for s in &self.suggested {
            let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
            let folded = match s.seen.folded.len() {
                0 => String::new(),
                n => format!(", {n} hosts folded"),
            };
            out.push_str(&format!(
                "+ rule {}: {} ports {} ({} lines{folded})\n",
                s.name,
                s.seen.host,
                ports.join(","),
                s.seen.count,
            ));
            if !s.seen.private.is_empty() {
                out.push_str(&format!(
                    "  review {}: resolved to private or special addresses\n",
                    s.name
                ));
            }
        }
        if !self.already_allowed.is_empty() {
            out.push_str(&format!(
                "= allowed by the policy in force now: {}\n",
                self.already_allowed.join(", ")
            ));
        }
        for (host, count) in &self.refused_by_address_guard {
            out.push_str(&format!(
                "! {host}: refused {count} times by the address guard (a private or special address), not by policy: not suggested\n"
            ));
        }
        if self.suggested.is_empty() {
            out.push_str("nothing to suggest: the policy in force allows everything seen\n");
        }
        out
    }
}
