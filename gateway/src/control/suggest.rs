//! `GET /policy/suggest` for this gateway: its own audit log, judged by the policy in
//! force.

use std::path::Path;
use std::time::Duration;

use egress_admin::api::{CheckRequest, Format};
use egress_admin::suggest::{build, Suggestion, Tally};
use egress_admin::{Control, ControlError};

use super::{check, GatewayControl};

/// Reads the audit log at `path` (flushed first) and suggests.
pub(super) fn suggest(
    control: &GatewayControl,
    path: Option<&Path>,
    min_count: u64,
    group_wildcards: bool,
    since: Option<String>,
) -> Result<Suggestion, ControlError> {
    let Some(path) = path else {
        return Err(ControlError::BadRequest(
            "the audit log goes to stdout, not a file: run `egressctl policy suggest --from FILE` on a copy".to_owned(),
        ));
    };
    control.sink.flush(Duration::from_secs(2));
    let text = std::fs::read(path).map_err(|e| {
        ControlError::Internal(format!("cannot read the audit log {}: {e}", path.display()))
    })?;
    let mut tally = Tally::since(since);
    for line in String::from_utf8_lossy(&text).lines() {
        tally.add_line(line);
    }
    let policy = control.store.current();
    let version = control.store.version();
    let refused = |host: &str, port: u16| {
        let request = CheckRequest {
            host: host.to_owned(),
            port,
            source: None,
            listener: None,
            resolve: false,
        };
        // A host that is not a valid destination is not suggested: no rule could name it.
        check::policy_only(&policy, version, &request).is_ok_and(|a| a.decision != "allow")
    };
    let observed = tally.observed(min_count, group_wildcards);
    build(
        &tally,
        observed,
        refused,
        &control.policy(Format::Yaml).text,
    )
    .map_err(ControlError::Internal)
}
