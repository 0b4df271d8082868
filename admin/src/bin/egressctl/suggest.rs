//! `egressctl policy suggest`: audit logs in, the policy in force with rules added for
//! what was denied (or would be, in audit mode) and is still not allowed.
//!
//! Each candidate host and port is checked with `POST /policy/check`, so what the
//! policy allows by now is not suggested again, whatever the log's format recorded.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use egress_admin::api::{CheckAnswer, CheckRequest};
use egress_admin::suggest::{Observed, Tally};
use serde_yaml::{Mapping, Value};

use super::commands::Ctl;
use super::input::parse;
use super::{Failure, Output};

/// One suggested rule and what it stands for.
#[derive(Debug, serde::Serialize)]
struct Suggested {
    name: String,
    /// Ports the policy in force still refuses.
    ports: Vec<u16>,
    #[serde(flatten)]
    observed: Observed,
}

impl Ctl {
    pub(super) async fn suggest(
        &self,
        from: &[PathBuf],
        min_count: u64,
        group_wildcards: bool,
    ) -> Result<(), Failure> {
        let mut tally = Tally::default();
        for path in from {
            for line in read_log(path)?.lines() {
                tally.add_line(line);
            }
        }
        let reply = self.get("/policy", "application/yaml").await?;
        let mut policy: Value = serde_yaml::from_str(&reply.text())
            .map_err(|e| Failure::new(format!("the policy in force is not YAML: {e}")))?;
        let mut names: BTreeSet<String> = rules(&policy)
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let mut suggested = Vec::new();
        let mut already = Vec::new();
        for observed in tally.observed(min_count, group_wildcards) {
            let mut ports = Vec::new();
            for port in &observed.ports {
                if self.refused_now(&observed, *port).await? {
                    ports.push(*port);
                } else {
                    already.push(format!("{}:{port}", observed.host));
                }
            }
            if ports.is_empty() {
                continue;
            }
            let name = unique(&mut names, &observed.host);
            suggested.push(Suggested {
                name,
                ports,
                observed,
            });
        }
        let text = merged(&mut policy, &suggested)?;
        let summary = summary(&tally, &suggested, &already);
        match self.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({
                    "lines": tally.lines,
                    "unreadable": tally.unreadable,
                    "suggested": suggested,
                    "already_allowed": already,
                    "refused_by_address_guard": tally.refused,
                    "policy": text,
                })
            ),
            Output::Table | Output::Yaml => {
                if !suggested.is_empty() {
                    print!("{text}");
                }
                eprint!("{summary}");
            }
        }
        Ok(())
    }

    /// Whether the policy in force refuses `host:port` (for `*.parent`, any host folded in).
    async fn refused_now(&self, observed: &Observed, port: u16) -> Result<bool, Failure> {
        let hosts = if observed.folded.is_empty() {
            vec![observed.host.clone()]
        } else {
            observed.folded.clone()
        };
        for host in hosts {
            let request = CheckRequest {
                host,
                port,
                source: None,
                listener: None,
            };
            let body = serde_json::to_vec(&request).map_err(|e| Failure::new(e.to_string()))?;
            let answer: CheckAnswer = parse(&self.post_json("/policy/check", body).await?)?;
            if answer.decision != "allow" {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A log file's text; `.gz` files (or any starting with the gzip magic) are inflated.
fn read_log(path: &Path) -> Result<String, Failure> {
    let fail = |e: std::io::Error| Failure::new(format!("cannot read {}: {e}", path.display()));
    let bytes = std::fs::read(path).map_err(fail)?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(fail)?;
        out
    } else {
        bytes
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn rules(policy: &Value) -> Vec<Value> {
    match policy.get("rules") {
        Some(Value::Sequence(rules)) => rules.clone(),
        _ => Vec::new(),
    }
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
fn merged(policy: &mut Value, suggested: &[Suggested]) -> Result<String, Failure> {
    if !policy.is_mapping() {
        *policy = Value::Mapping(Mapping::new());
    }
    let Some(map) = policy.as_mapping_mut() else {
        return Err(Failure::new("the policy in force is not a mapping"));
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
            vec![Value::from(s.observed.host.clone())].into(),
        );
        let ports: Vec<Value> = s.ports.iter().map(|p| Value::from(u64::from(*p))).collect();
        rule.insert("ports".into(), ports.into());
        list.push(Value::Mapping(rule));
    }
    map.insert("rules".into(), Value::Sequence(list));
    let text = serde_yaml::to_string(policy).map_err(|e| Failure::new(e.to_string()))?;
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
    let o = &s.observed;
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

fn summary(tally: &Tally, suggested: &[Suggested], already: &[String]) -> String {
    let mut out = format!(
        "# {} audit lines read ({} unreadable, {} allowed when written); {} rules suggested\n",
        tally.lines,
        tally.unreadable,
        tally.allowed,
        suggested.len()
    );
    for s in suggested {
        let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
        out.push_str(&format!(
            "+ rule {}: {} ports {} ({} lines{})\n",
            s.name,
            s.observed.host,
            ports.join(","),
            s.observed.count,
            if s.observed.folded.is_empty() {
                String::new()
            } else {
                format!(", {} hosts folded", s.observed.folded.len())
            }
        ));
        if !s.observed.private.is_empty() {
            out.push_str(&format!(
                "  review {}: resolved to private or special addresses\n",
                s.name
            ));
        }
    }
    if !already.is_empty() {
        out.push_str(&format!(
            "= allowed by the policy in force now: {}\n",
            already.join(", ")
        ));
    }
    for (host, count) in &tally.refused {
        out.push_str(&format!(
            "! {host}: refused {count} times by the address guard (a private or special address), not by policy: not suggested\n"
        ));
    }
    if suggested.is_empty() {
        out.push_str("nothing to suggest: the policy in force allows everything seen\n");
    }
    out
}
