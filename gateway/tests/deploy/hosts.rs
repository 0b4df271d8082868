//! deploy/systemd and deploy/Dockerfile: the unit verifies, and the image is built with
//! the pinned toolchain and runs as non-root.

use std::path::Path;

use crate::kit::{run, str_of, text, ROOT};
use serde_yaml::Value;

#[test]
fn the_systemd_unit_verifies_and_its_configuration_loads() {
    let dir = tempfile::tempdir().unwrap();
    let unit =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/systemd/egress-gateway.service"))
            .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/egress-gateway "));
    let config = Path::new(ROOT).join("deploy/systemd/gateway.yaml");
    let policies = Path::new(ROOT).join("deploy/kubernetes/base/policies");
    let check = run(std::process::Command::new(crate::kit::BIN)
        .arg("--config")
        .arg(&config)
        .arg("--policies")
        .arg(&policies)
        .arg("--check"));
    assert!(check.status.success(), "{}", text(&check.stderr));
    let logrotate =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/systemd/egress-gateway.logrotate"))
            .unwrap();
    let config_text = std::fs::read_to_string(&config).unwrap();
    let audit: Value = serde_yaml::from_str(&config_text).unwrap();
    assert!(
        logrotate.starts_with('#')
            && logrotate.contains(&format!("{} {{", str_of(&audit["audit"]["path"])))
    );
    assert!(
        logrotate.contains("HUP"),
        "logrotate has the gateway reopen its audit log"
    );

    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed here: the unit is not verified");
        return;
    }
    let path = dir.path().join("egress-gateway.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/egress-gateway", crate::kit::BIN),
    )
    .unwrap();
    let verify = run(std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .current_dir(dir.path()));
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        text(&verify.stderr)
    );
}

#[test]
fn the_dockerfile_builds_with_the_pinned_toolchain_and_runs_as_non_root() {
    let toolchain = std::fs::read_to_string(Path::new(ROOT).join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("deploy/Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert!(
        stages[0].starts_with(&format!("FROM rust:{channel}-")),
        "the build stage uses Rust {channel}: {}",
        stages[0]
    );
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap();
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
}
