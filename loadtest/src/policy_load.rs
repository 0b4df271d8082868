//! The gateway's policy under load: filler rules that make a large policy without
//! matching any destination of a scenario, the harmless edit a reload test writes (as
//! GitOps would: a temporary file renamed over the policy), and the reload counter read
//! back from the gateway's `/metrics`.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The domain of every filler host: reserved (RFC 2606), so no scenario ever sends to it.
pub const FILLER_DOMAIN: &str = "filler.invalid";

/// `n` allow rules for `listeners`, alternating exact hosts (`h7.filler.invalid`) and
/// wildcards (`*.w8.filler.invalid`), none matching a scenario's destination.
pub fn filler_rules(n: usize, listeners: &[&str]) -> String {
    let listeners = listeners.join(", ");
    let mut out = String::with_capacity(n * 96);
    for i in 0..n {
        let host = if i % 2 == 0 {
            format!("h{i}.{FILLER_DOMAIN}")
        } else {
            format!("\"*.w{i}.{FILLER_DOMAIN}\"")
        };
        let _ = writeln!(
            out,
            "  - {{name: filler-{i}, hosts: [{host}], listeners: [{listeners}], ports: [443]}}"
        );
    }
    out
}

/// The rule a reload test appends: its host changes with `generation`, so every write
/// is a new policy version the gateway must compile and swap, and it matches nothing.
pub fn marker_rule(generation: u64, listeners: &[&str]) -> String {
    format!(
        "  - {{name: reload-marker, hosts: [reload-{generation}.{FILLER_DOMAIN}], listeners: [{}]}}\n",
        listeners.join(", ")
    )
}

/// Writes `text` to `path` as a policy repository checkout would: a temporary file in
/// the same directory (a dotfile, which the gateway does not read), then a rename.
///
/// Fails when either step fails.
pub fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

/// `egress_policy_reloads_total{result="applied"}` in a `/metrics` text; `None` when
/// the gateway has not counted one yet (the series appears on the first reload).
pub fn applied_reloads(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("egress_policy_reloads_total{"))
        .filter(|l| l.contains("result=\"applied\""))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// `GET /metrics` from the gateway's admin listener (loopback only).
///
/// Fails when the listener does not answer.
pub async fn fetch_metrics(admin: SocketAddr) -> io::Result<String> {
    let mut stream = crate::client::connect(admin).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_rules_mix_exact_and_wildcard_hosts_and_load() {
        let rules = filler_rules(4, &["http"]);
        assert_eq!(rules.lines().count(), 4);
        assert!(rules.contains("name: filler-0, hosts: [h0.filler.invalid]"));
        assert!(rules.contains("hosts: [\"*.w1.filler.invalid\"]"));
        let policy = format!(
            "defaults: {{mode: deny}}\nlisteners:\n  - {{name: http, port: 1, protocol: http}}\nrules:\n{rules}{}",
            marker_rule(7, &["http"])
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), &policy).unwrap();
        let loaded = egress_gateway::policy::load_dir(dir.path()).unwrap();
        assert_eq!(loaded.rules().len(), 5);
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        write_atomically(&path, "a").unwrap();
        write_atomically(&path, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn reads_the_applied_reload_counter() {
        let text = "# HELP x\negress_policy_reloads_total{result=\"failed\"} 2\negress_policy_reloads_total{result=\"applied\"} 12\n";
        assert_eq!(applied_reloads(text), Some(12));
        assert_eq!(applied_reloads("egress_policy_version 1\n"), None);
    }
}
