//! `egressctl policy suggest`: audit logs in, the policy in force with rules added for
//! what was denied (or would be, in audit mode) and is still not allowed.
//!
//! Each candidate host and port is checked with `POST /policy/check`, so what the
//! policy allows by now is not suggested again, whatever the log's format recorded.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use egress_admin::api::{CheckAnswer, CheckRequest};
use egress_admin::suggest::{build, candidates, Suggestion, Tally};

use super::commands::Ctl;
use super::input::parse;
use super::{Failure, Output};

impl Ctl {
    pub(super) async fn suggest(
        &self,
        from: &[PathBuf],
        min_count: u64,
        group_wildcards: bool,
        since: Option<&str>,
    ) -> Result<(), Failure> {
        let cutoff = match since {
            Some(raw) => Some(egress_admin::routes::since_cutoff(raw).ok_or_else(|| {
                Failure::new(format!(
                    "--since {raw:?} is neither a duration (1h, 30m) nor an RFC 3339 time"
                ))
            })?),
            None => None,
        };
        let suggestion = if from.is_empty() {
            let mut path =
                format!("/policy/suggest?min_count={min_count}&group_wildcards={group_wildcards}");
            if let Some(cutoff) = &cutoff {
                path.push_str(&format!("&since={}", super::input::encode(cutoff)));
            }
            parse::<Suggestion>(&self.get(&path, "application/json").await?)?
        } else {
            self.suggest_from(from, min_count, group_wildcards, cutoff)
                .await?
        };
        match self.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string(&suggestion).map_err(|e| Failure::new(e.to_string()))?
            ),
            Output::Table | Output::Yaml => {
                print!("{}", suggestion.policy);
                eprint!("{}", suggestion.summary());
            }
        }
        Ok(())
    }

    /// The suggestion for log files read here, checked against the gateway's policy.
    async fn suggest_from(
        &self,
        from: &[PathBuf],
        min_count: u64,
        group_wildcards: bool,
        since: Option<String>,
    ) -> Result<Suggestion, Failure> {
        let mut tally = Tally::since(since);
        for path in from {
            for line in read_log(path)?.lines() {
                tally.add_line(line);
            }
        }
        let observed = tally.observed(min_count, group_wildcards);
        let mut refused = HashSet::new();
        for (host, port) in candidates(&observed) {
            let request = CheckRequest {
                host: host.clone(),
                port,
                source: None,
                listener: None,
                // What the policy says: the address guard is the gateway's business.
                resolve: false,
            };
            let body = serde_json::to_vec(&request).map_err(|e| Failure::new(e.to_string()))?;
            let answer: CheckAnswer = parse(&self.post_json("/policy/check", body).await?)?;
            if answer.decision != "allow" {
                refused.insert((host, port));
            }
        }
        let policy = self.get("/policy", "application/yaml").await?.text();
        build(
            &tally,
            observed,
            |h, p| refused.contains(&(h.to_owned(), p)),
            &policy,
        )
        .map_err(Failure::new)
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
