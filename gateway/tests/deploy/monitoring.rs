//! deploy/prometheus and deploy/grafana: promtool accepts the config and rules, every
//! alert fires and clears in its test, and every query names an exported metric.

use std::collections::BTreeSet;
use std::path::Path;

use crate::kit::{run, seq, str_of, text, tool, Built, ROOT};
use serde_yaml::Value;

#[test]
fn prometheus_configuration_and_rules_pass_promtool_and_every_alert_fires_and_clears() {
    let dir = Path::new(ROOT).join("deploy/prometheus");
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = run(tool("promtool").args(args).current_dir(&dir));
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("alerts.yml")).unwrap()).unwrap();
    let tests: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap())
            .unwrap();
    let cases: Vec<&Value> = seq(&tests["tests"])
        .iter()
        .flat_map(|t| seq(&t["alert_rule_test"]))
        .collect();
    for rule in seq(&rules["groups"]).iter().flat_map(|g| seq(&g["rules"])) {
        let alert = str_of(&rule["alert"]);
        let mut evals: Vec<(u64, bool)> = cases
            .iter()
            .filter(|c| str_of(&c["alertname"]) == alert)
            .map(|c| {
                let minutes = str_of(&c["eval_time"])
                    .trim_end_matches('m')
                    .parse()
                    .unwrap();
                (minutes, !seq(&c["exp_alerts"]).is_empty())
            })
            .collect();
        evals.sort();
        let fires = evals.iter().position(|(_, firing)| *firing);
        let clears = fires.and_then(|at| evals[at..].iter().find(|(_, firing)| !firing));
        assert!(
            fires.is_some() && clears.is_some(),
            "{alert}: alerts_test.yml must see it fire and then clear: {evals:?}"
        );
    }

    // The Kubernetes discovery config (not checkable by Debian's promtool) keeps pods by
    // the annotations and label the Deployment carries.
    let k8s: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("prometheus-kubernetes.yml")).unwrap(),
    )
    .unwrap();
    let base = Built::all().into_iter().find(|b| b.name == "base").unwrap();
    let template = &base.deployment()["spec"]["template"]["metadata"];
    let relabels = seq(&k8s["scrape_configs"][0]["relabel_configs"]);
    for (meta, value) in [
        (
            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
            str_of(&template["labels"]["app.kubernetes.io/name"]),
        ),
        (
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
            str_of(&template["annotations"]["prometheus.io/scrape"]),
        ),
    ] {
        assert!(
            relabels.iter().any(|r| str_of(&r["action"]) == "keep"
                && str_of(&r["source_labels"][0]) == meta
                && str_of(&r["regex"]) == value),
            "prometheus-kubernetes.yml keeps {meta}={value}"
        );
    }
}

#[test]
fn alerts_and_the_dashboard_use_metrics_the_gateway_exports() {
    // Exported names, as registered in metrics.rs and metrics/; and those an alert
    // waits for before the gateway exports them (none now).
    let src = Path::new(ROOT).join("gateway/src");
    let mut source = std::fs::read_to_string(src.join("metrics.rs")).unwrap();
    for file in std::fs::read_dir(src.join("metrics")).unwrap() {
        source += &std::fs::read_to_string(file.unwrap().path()).unwrap();
    }
    let pending: [&str; 0] = [];
    let exported = |name: &str| {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        source.contains(&format!("\"{family}\"")) || source.contains(&format!("\"{name}\""))
    };
    let dir = Path::new(ROOT).join("deploy");
    let mut exprs: Vec<String> = Vec::new();
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("prometheus/alerts.yml")).unwrap())
            .unwrap();
    for rule in seq(&rules["groups"]).iter().flat_map(|g| seq(&g["rules"])) {
        exprs.push(str_of(&rule["expr"]).to_owned());
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("grafana/egress-gateway.json")).unwrap(),
    )
    .unwrap();
    let queries = crate::kit::dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "{queries:?}");
    exprs.extend(queries);
    let names = regex::Regex::new(r"\begress_[a-z_]+\b").unwrap();
    let mut seen = BTreeSet::new();
    for expr in &exprs {
        for name in names.find_iter(expr) {
            let name = name.as_str();
            seen.insert(name.to_owned());
            if pending.contains(&name) {
                assert!(
                    !exported(name),
                    "{name} is exported now: drop it from the pending list and its comment"
                );
                continue;
            }
            assert!(
                exported(name),
                "{name} in `{expr}` is not a metric of the gateway"
            );
        }
    }
    for wanted in [
        "egress_requests_total",
        "egress_audit_lines_dropped_total",
        "egress_policy_version",
    ] {
        assert!(seen.contains(wanted), "{wanted} is watched: {seen:?}");
    }
}
