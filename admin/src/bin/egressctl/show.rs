//! Answers rendered for people: aligned tables and short sentences.

use std::fmt::Write;

use egress_admin::api::{Applied, CheckAnswer, Connections, DrainReport, History};

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

pub fn status(
    admin: &str,
    ready: bool,
    history: Option<&History>,
    connections: Option<usize>,
    details: &[String],
) -> String {
    let mut out = format!("admin:        {admin}\n");
    let _ = writeln!(
        out,
        "ready:        {}",
        if ready {
            "yes"
        } else {
            "no (draining or no policy loaded)"
        }
    );
    match history {
        Some(history) => {
            let current = history
                .versions
                .iter()
                .find(|v| v.version == history.current);
            let _ = match current {
                Some(v) => writeln!(
                    out,
                    "policy:       version {}, applied {} by {}",
                    v.version, v.time, v.author
                ),
                None => writeln!(out, "policy:       version {}", history.current),
            };
        }
        None => out.push_str("policy:       (pass --token-file to see the version)\n"),
    }
    if let Some(n) = connections {
        let _ = writeln!(out, "connections:  {n} open");
    }
    for line in details {
        let _ = writeln!(out, "{line}");
    }
    out
}

pub fn applied(applied: &Applied) -> String {
    let mut out = if applied.dry_run {
        if applied.changed {
            format!(
                "applying it would change version {} like this:\n",
                applied.version
            )
        } else {
            format!(
                "no change: version {} is already this policy\n",
                applied.version
            )
        }
    } else if applied.changed {
        format!("applied: version {} is in force\n", applied.version)
    } else {
        format!("no change: version {} stays in force\n", applied.version)
    };
    if applied.changed {
        for line in &applied.summary {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

pub fn history(history: &History) -> String {
    let rows: Vec<Vec<String>> = history
        .versions
        .iter()
        .map(|v| {
            let marker = if v.version == history.current {
                " *"
            } else {
                ""
            };
            vec![
                format!("{}{marker}", v.version),
                v.time.clone(),
                v.author.clone(),
                v.summary.join("; "),
            ]
        })
        .collect();
    table(&["VERSION", "TIME", "AUTHOR", "CHANGES"], &rows)
}

pub fn check(answer: &CheckAnswer) -> String {
    let verdict = match answer.decision.as_str() {
        "allow" => "ALLOW",
        "would_deny" => "WOULD DENY (audit mode forwards it)",
        _ => "DENY",
    };
    let mut out = format!(
        "{verdict} {} on listener {} (policy version {}, rule {})\n  {}\n",
        answer.destination,
        answer.listener,
        answer.version,
        answer.rule.as_deref().unwrap_or("-"),
        answer.why
    );
    if let Some(details) = &answer.details {
        out.push_str(&format!("  {details}\n"));
    }
    if !answer.addresses.is_empty() {
        out.push_str(&format!("  connects to {}\n", answer.addresses.join(", ")));
    }
    out
}

pub fn connections(list: &Connections) -> String {
    let rows: Vec<Vec<String>> = list
        .connections
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.listener.clone(),
                c.kind.clone(),
                match &c.identity {
                    Some(id) => format!("{} ({id})", c.source),
                    None => c.source.clone(),
                },
                c.destination.clone().unwrap_or_else(|| "-".into()),
                c.rule.clone().unwrap_or_else(|| "-".into()),
                format!("{:.0}s", c.age_seconds),
                c.bytes_received.to_string(),
                c.bytes_sent.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "LISTENER",
            "KIND",
            "SOURCE",
            "DESTINATION",
            "RULE",
            "AGE",
            "RECEIVED",
            "SENT",
        ],
        &rows,
    )
}

pub fn drain(report: &DrainReport) -> String {
    if report.drained {
        format!(
            "drained in {} ms: nothing in flight; readiness is 503, listeners closed\n",
            report.waited_ms
        )
    } else {
        format!(
            "drain timeout after {} ms: {} connections still open\n",
            report.waited_ms, report.in_flight
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let text = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), "y".into()],
            ],
        );
        assert_eq!(text, "A          LONGER\nwide cell  x\nb          y\n");
    }
}
