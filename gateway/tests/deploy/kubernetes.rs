//! deploy/kubernetes: every kustomization builds and validates, its objects agree with
//! each other and with the shipped policy, and a gateway started from its configuration
//! answers the probes.

use std::collections::BTreeSet;
use std::path::Path;

use crate::kit::{get, map, run, seq, str_of, text, tool, Built, KitGateway};
use serde_yaml::Value;

#[test]
fn every_kustomization_builds_and_validates_against_the_kubernetes_schemas() {
    for built in Built::all() {
        let file = built.dir.path().join("built.yaml");
        std::fs::write(&file, &built.yaml).unwrap();
        let validate = run(tool("python3").arg("-m").arg("kubernetes_validate").args([
            "--strict",
            "--quiet",
            file.to_str().unwrap(),
        ]));
        assert!(
            validate.status.success(),
            "{}: kubernetes-validate refused it:\n{}{}",
            built.name,
            text(&validate.stdout),
            text(&validate.stderr)
        );
        let kinds: BTreeSet<&str> = built.docs.iter().map(|d| str_of(&d["kind"])).collect();
        for kind in [
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "ConfigMap",
            "Secret",
        ] {
            assert!(
                kinds.contains(kind),
                "{}: no {kind} in {kinds:?}",
                built.name
            );
        }
    }
}

#[test]
fn services_and_budgets_select_the_gateway_pods_and_expose_the_policy_listeners() {
    for built in Built::all() {
        let pod_labels = map(&built.deployment()["spec"]["template"]["metadata"]["labels"]);
        let service = built.one("Service", "egress-gateway");
        let pdb = built.one("PodDisruptionBudget", "egress-gateway");
        for (what, selector) in [
            ("the Service", map(&service["spec"]["selector"])),
            (
                "the PodDisruptionBudget",
                map(&pdb["spec"]["selector"]["matchLabels"]),
            ),
        ] {
            assert!(
                !selector.is_empty(),
                "{}: {what} selects nothing",
                built.name
            );
            for (k, v) in &selector {
                assert_eq!(
                    pod_labels.get(k),
                    Some(v),
                    "{}: {what} selects {k}={v}, the pods are labelled {pod_labels:?}",
                    built.name
                );
            }
        }

        let container_ports = built.container_ports();
        let mut service_ports = BTreeSet::new();
        for port in seq(&service["spec"]["ports"]) {
            let target = str_of(&port["targetPort"]);
            let number = port["port"].as_u64().unwrap();
            assert_eq!(
                container_ports.get(target),
                Some(&number),
                "{}: Service port {number} targets {target}, not a container port of that number",
                built.name
            );
            service_ports.insert(number);
        }
        let listener_ports: BTreeSet<u64> = built
            .listeners()
            .iter()
            .map(|l| l["port"].as_u64().unwrap())
            .collect();
        assert_eq!(
            service_ports, listener_ports,
            "{}: the Service's ports are the policy's listeners",
            built.name
        );
    }
}

#[test]
fn pods_run_on_egress_nodes_unprivileged_and_spread_across_nodes() {
    for built in Built::all() {
        let deployment = built.deployment();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(str_of(&pod["nodeSelector"]["egress-node"]), "true");
        assert!(
            seq(&pod["tolerations"])
                .iter()
                .any(|t| str_of(&t["key"]) == "egress-node" && str_of(&t["effect"]) == "NoSchedule"),
            "{}: tolerates the egress-node taint",
            built.name
        );
        let anti =
            &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        assert!(
            seq(anti)
                .iter()
                .any(|t| str_of(&t["topologyKey"]) == "kubernetes.io/hostname"),
            "{}: one gateway per node",
            built.name
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
        let low_port = built
            .listeners()
            .iter()
            .any(|l| l["port"].as_u64().unwrap() < 1024);
        let container = built.container();
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], Value::Bool(true));
        assert_eq!(security["allowPrivilegeEscalation"], Value::Bool(false));
        let dropped: Vec<&str> = seq(&security["capabilities"]["drop"])
            .iter()
            .map(str_of)
            .collect();
        assert_eq!(dropped, ["ALL"], "{}", built.name);
        let added: Vec<&str> = seq(&security["capabilities"]["add"])
            .iter()
            .map(str_of)
            .collect();
        let wanted: &[&str] = if low_port { &["NET_BIND_SERVICE"] } else { &[] };
        assert_eq!(
            added, wanted,
            "{}: capabilities only for a port below 1024",
            built.name
        );
        for key in ["requests", "limits"] {
            assert!(
                container["resources"][key]["memory"].is_string(),
                "{}: resources.{key}.memory",
                built.name
            );
        }
        assert!(
            container["lifecycle"]["preStop"].is_mapping(),
            "{}: a preStop before the drain",
            built.name
        );
    }
}

#[test]
fn the_kit_configuration_starts_a_gateway_whose_stats_listener_answers_the_probes() {
    for built in Built::all().into_iter().filter(|b| b.name == "base") {
        let config = built.bootstrap_config();
        // Every path the configuration names lies in a volume the Deployment mounts.
        let mounts = built.mounts();
        let args: Vec<&str> = seq(&built.container()["args"]).iter().map(str_of).collect();
        let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
        for (what, path, volume_kind) in [
            ("--config", config_path, "ConfigMap"),
            ("policies", str_of(&config["policies"]), "ConfigMap"),
            (
                "admin.token_file",
                str_of(&config["admin"]["token_file"]),
                "Secret",
            ),
        ] {
            let (mount, source) = mounts
                .iter()
                .find(|(mount, _)| Path::new(path).starts_with(mount))
                .unwrap_or_else(|| panic!("{what} {path} is in no volume the pod mounts"));
            let (kind, name) = source;
            assert_eq!(
                *kind,
                volume_kind,
                "{what} {path} is mounted from {}",
                mount.display()
            );
            let object = built.one(kind, name);
            let key = Path::new(path)
                .strip_prefix(mount)
                .unwrap()
                .to_str()
                .unwrap();
            if !key.is_empty() {
                assert!(
                    object["data"][key].is_string(),
                    "{what}: {kind} {name} has no key {key}"
                );
            }
        }

        let gateway = KitGateway::start(&built);
        let stats_port: u16 = str_of(&config["stats"]["address"])
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let container_ports = built.container_ports();
        let container = built.container();
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let http = &container[probe]["httpGet"];
            let port = container_ports[str_of(&http["port"])];
            assert_eq!(port, u64::from(stats_port), "{probe} is on the stats port");
            let reply = get(gateway.stats, str_of(&http["path"]));
            assert!(reply.starts_with("HTTP/1.1 200"), "{probe}: {reply}");
        }
        let annotations = map(&built.deployment()["spec"]["template"]["metadata"]["annotations"]);
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], stats_port.to_string());
        let metrics = get(gateway.stats, &annotations["prometheus.io/path"]);
        assert!(
            metrics.starts_with("HTTP/1.1 200") && metrics.contains("egress_policy_version 1"),
            "{metrics}"
        );
        assert!(get(gateway.stats, "/policy").starts_with("HTTP/1.1 404"));
    }
}
