//! deploy/istio: each route sends a seed scenario to our Service, on a listener of the
//! right protocol, for a destination the shipped policy allows.

use std::collections::BTreeMap;
use std::path::Path;

use crate::kit::{seq, str_of, Built, KitGateway, ROOT};
use serde_yaml::Value;

const SERVICE_HOST: &str = "egress-gateway.egress-system.svc.cluster.local";

#[test]
fn istio_routes_name_our_service_and_the_shipped_policy_allows_each_destination() {
    let base = Built::all().into_iter().find(|b| b.name == "base").unwrap();
    let service = base.one("Service", "egress-gateway");
    assert_eq!(
        format!(
            "{}.{}.svc.cluster.local",
            str_of(&service["metadata"]["name"]),
            str_of(&service["metadata"]["namespace"])
        ),
        SERVICE_HOST
    );
    let declared = base.listeners();
    let listeners: BTreeMap<u64, &Value> = declared
        .iter()
        .map(|l| (l["port"].as_u64().unwrap(), l))
        .collect();
    let istio = crate::kit::kustomize(&Path::new(ROOT).join("deploy/istio"));
    let entries: BTreeMap<(String, u64), &Value> = istio
        .iter()
        .filter(|d| str_of(&d["kind"]) == "ServiceEntry")
        .flat_map(|d| {
            let ports = seq(&d["spec"]["ports"]);
            seq(&d["spec"]["hosts"]).iter().flat_map(move |h| {
                ports
                    .iter()
                    .map(move |p| ((str_of(h).to_owned(), p["number"].as_u64().unwrap()), p))
            })
        })
        .collect();
    let dr = istio
        .iter()
        .find(|d| str_of(&d["kind"]) == "DestinationRule")
        .expect("a DestinationRule for our Service");
    assert_eq!(str_of(&dr["spec"]["host"]), SERVICE_HOST);

    let gateway = KitGateway::start(&base);
    let mut routes = 0;
    for vs in istio
        .iter()
        .filter(|d| str_of(&d["kind"]) == "VirtualService")
    {
        let name = str_of(&vs["metadata"]["name"]);
        let hosts: Vec<&str> = seq(&vs["spec"]["hosts"]).iter().map(str_of).collect();
        for (kind, protocol, se_protocol) in [
            ("http", "http", "HTTP"),
            ("tls", "tls", "TLS"),
            ("tcp", "tcp", "TCP"),
        ] {
            for route in seq(&vs["spec"][kind]) {
                let matched = seq(&route["match"]);
                assert_eq!(matched.len(), 1, "{name}: one port per route");
                let port = matched[0]["port"].as_u64().unwrap();
                let destinations = seq(&route["route"]);
                assert_eq!(destinations.len(), 1, "{name}");
                let destination = &destinations[0]["destination"];
                assert_eq!(str_of(&destination["host"]), SERVICE_HOST, "{name}");
                let to = destination["port"]["number"].as_u64().unwrap();
                let listener = listeners
                    .get(&to)
                    .unwrap_or_else(|| panic!("{name}: port {to} is no listener of the policy"));
                assert_eq!(str_of(&listener["protocol"]), protocol, "{name}: port {to}");
                let route_hosts: Vec<&str> = match kind {
                    "tls" => seq(&matched[0]["sniHosts"]).iter().map(str_of).collect(),
                    _ => hosts.clone(),
                };
                for host in route_hosts {
                    let entry = entries
                        .get(&(host.to_owned(), port))
                        .unwrap_or_else(|| panic!("{name}: no ServiceEntry for {host}:{port}"));
                    assert_eq!(
                        str_of(&entry["protocol"]),
                        se_protocol,
                        "{name}: {host}:{port}"
                    );
                    if protocol == "tcp" {
                        assert_eq!(str_of(&listener["forward_to"]), format!("{host}:{port}"));
                    }
                    let answer = gateway.check(host, port, str_of(&listener["name"]));
                    assert_eq!(
                        answer["decision"], "allow",
                        "{name}: {host}:{port}: {answer}"
                    );
                    routes += 1;
                }
            }
        }
    }
    assert!(
        routes >= 5,
        "httpbin, baidu, cnn 80 and 443, mysql: {routes}"
    );
}
