//! ServiceEntry → entries: each host (and each single address) on each port, with
//! static endpoints for `resolution: STATIC`.

use std::net::IpAddr;

use super::model::{Entry, Model, Settings, Traffic};
use super::yaml::Obj;
use super::{Report, Resource};

/// How an Istio port protocol reaches the gateway (the port name's prefix when absent,
/// as Istio reads it).
pub(super) fn traffic(protocol: Option<&str>, name: Option<&str>) -> Traffic {
    let word = match protocol {
        Some(p) => p.to_ascii_uppercase(),
        None => name
            .unwrap_or_default()
            .split('-')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase(),
    };
    match word.as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Traffic::Http,
        "HTTPS" | "TLS" => Traffic::Tls,
        _ => Traffic::Tcp,
    }
}

/// One `ports` entry.
struct Port {
    number: u16,
    name: Option<String>,
    target: Option<u16>,
    traffic: Traffic,
}

pub(super) fn translate(r: &Resource, model: &mut Model, report: &mut Report) {
    let id = r.id();
    let mut spec = Obj::new(Some(&r.spec), "spec");
    let hosts = spec.strs("hosts");
    let mut ports = Vec::new();
    for mut p in spec.list("ports") {
        let Some(number) = p.port("number") else {
            report.dropped(
                &id,
                &p.path_of("number"),
                "no valid port number: port skipped",
            );
            p.finish(report, &id);
            continue;
        };
        let name = p.str("name");
        let protocol = p.str("protocol");
        let target = p.port("targetPort");
        ports.push(Port {
            number,
            traffic: traffic(protocol.as_deref(), name.as_deref()),
            name,
            target,
        });
        p.finish(report, &id);
    }
    if ports.is_empty() {
        report.dropped(&id, "spec.ports", "no ports: nothing to allow");
    }
    let resolution = spec.str("resolution").unwrap_or_else(|| "NONE".to_owned());
    let endpoints = endpoints(&mut spec, &resolution, &id, report);
    let mut destinations: Vec<String> = hosts.clone();
    for (i, address) in spec.strs("addresses").iter().enumerate() {
        let field = format!("spec.addresses[{i}]");
        match destination_address(address) {
            Some((pattern, None)) => destinations.push(pattern),
            Some((pattern, Some(note))) => {
                report.info(&id, &field, &note);
                destinations.push(pattern);
            }
            None => report.dropped(
                &id,
                &field,
                &format!("{address:?} is neither an IP address nor a CIDR"),
            ),
        }
    }
    match resolution.to_ascii_uppercase().as_str() {
        "NONE" => report.info(
            &id,
            "spec.resolution",
            "NONE (original destination): the gateway resolves the requested name by DNS",
        ),
        "DNS" | "DNS_ROUND_ROBIN" | "STATIC" => {}
        other => report.dropped(
            &id,
            "spec.resolution",
            &format!("{other} is not a resolution the import knows; the gateway resolves by DNS"),
        ),
    }
    if let Some(location) = spec.str("location") {
        if location.eq_ignore_ascii_case("MESH_INTERNAL") {
            report.info(
                &id,
                "spec.location",
                "MESH_INTERNAL: imported as an egress destination all the same",
            );
        }
    }
    let export = spec.strs("exportTo");
    if !export.is_empty() {
        report.info(
            &id,
            "spec.exportTo",
            &format!("exportTo {export:?}: the gateway's policy is not scoped by namespace; the rule applies to every source it names"),
        );
    }
    spec.drop(
        "workloadSelector",
        report,
        &id,
        "workload endpoints are mesh-internal: no counterpart at the egress gateway",
    );
    spec.drop(
        "subjectAltNames",
        report,
        &id,
        "the gateway verifies an upstream's certificate against the host name, not a list of SANs",
    );
    spec.finish(report, &id);
    for port in &ports {
        let mut settings = Settings::default();
        if !endpoints.is_empty() {
            settings.endpoints = endpoints
                .iter()
                .map(|(ip, ep_ports)| {
                    let mapped = port
                        .name
                        .as_ref()
                        .and_then(|n| ep_ports.iter().find(|(k, _)| k == n).map(|(_, v)| *v))
                        .or(port.target);
                    match (mapped, ip) {
                        (Some(p), IpAddr::V6(v6)) => format!("[{v6}]:{p}"),
                        (Some(p), IpAddr::V4(v4)) => format!("{v4}:{p}"),
                        (None, ip) => ip.to_string(),
                    }
                })
                .collect();
        } else if port.target.is_some_and(|t| t != port.number) {
            report.dropped(
                &id,
                "spec.ports.targetPort",
                &format!("targetPort for port {} without static endpoints: the gateway connects to the destination port", port.number),
            );
        }
        for host in &destinations {
            model.entries.push(Entry {
                host: host.clone(),
                port: port.number,
                traffic: port.traffic,
                upstream_port: port.number,
                settings: settings.clone(),
                deny: false,
                origin: id.clone(),
                base_name: r.name.clone(),
            });
        }
    }
}

/// `10.0.0.1`, `10.0.0.1/32` or `2001:db8::1/128`: one address.
/// An `addresses` entry as a `hosts` pattern: an address, or a CIDR in its network form
/// (matched for IP-literal destinations), with a note when host bits were dropped.
fn destination_address(raw: &str) -> Option<(String, Option<String>)> {
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some((ip.to_string(), None));
    }
    let net = raw.parse::<ipnet::IpNet>().ok()?;
    if net.prefix_len() == net.max_prefix_len() {
        return Some((net.addr().to_string(), None));
    }
    let network = net.trunc();
    let note = (network != net)
        .then(|| format!("{raw} has host bits set; the rule lists the network {network}"));
    Some((network.to_string(), note))
}

/// Static endpoints (address, port name → number) for `resolution: STATIC`.
fn endpoints(
    spec: &mut Obj<'_>,
    resolution: &str,
    id: &str,
    report: &mut Report,
) -> Vec<(IpAddr, Vec<(String, u16)>)> {
    let mut out = Vec::new();
    let is_static = resolution.eq_ignore_ascii_case("STATIC");
    for mut ep in spec.list("endpoints") {
        let address = ep.str("address").unwrap_or_default();
        let mut ports = Vec::new();
        let mut pm = ep.obj("ports");
        if let Some(map) = ep_map(&pm) {
            for (k, v) in map {
                if let (Some(k), Some(v)) = (super::yaml::scalar(&k), super::yaml::scalar(&v)) {
                    if let Ok(v) = v.parse::<u16>() {
                        pm.get(&k);
                        ports.push((k, v));
                    }
                }
            }
        }
        pm.finish(report, id);
        let path = ep.path_of("address");
        match address.parse::<IpAddr>() {
            Ok(ip) if is_static => out.push((ip, ports)),
            Ok(_) => report.dropped(id, &path, "endpoints are used with resolution STATIC only; the gateway resolves the requested name by DNS"),
            Err(_) => report.dropped(
                id,
                &path,
                &format!("{address:?}: endpoints by name or socket are not supported (static endpoints are IP addresses); the gateway resolves the requested host itself"),
            ),
        }
        ep.drop(
            "labels",
            report,
            id,
            "endpoint labels select subsets, which the gateway has none of",
        );
        ep.drop(
            "weight",
            report,
            id,
            "endpoint weights are not supported: the gateway tries the addresses in order",
        );
        ep.drop(
            "locality",
            report,
            id,
            "locality-aware balancing is not supported",
        );
        ep.drop(
            "network",
            report,
            id,
            "multi-network endpoints are mesh-internal",
        );
        ep.finish(report, id);
    }
    if is_static && out.is_empty() {
        report.dropped(
            id,
            "spec.endpoints",
            "resolution STATIC without IP endpoints: the gateway resolves the name by DNS instead",
        );
    }
    out
}

fn ep_map(obj: &Obj<'_>) -> Option<Vec<(serde_yaml::Value, serde_yaml::Value)>> {
    obj.mapping()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}
