//! VirtualService → settings of entries. Only the half that routes out of the egress
//! gateway (or a sidecar's own outbound route) is policy; the half that routes the mesh
//! to the gateway is reported as staying in the mesh.

use super::model::{Entry, Model, Settings, Traffic};
use super::yaml::Obj;
use super::{Report, Resource};
use crate::policy::Protocol;

/// One route's effect on the hosts it matches.
struct Route {
    traffic: Traffic,
    hosts: Vec<String>,
    port: Option<u16>,
    dest_port: Option<u16>,
    request_timeout: Option<String>,
    /// Through a Gateway (true) or a sidecar's outbound route (false).
    via_gateway: bool,
    dest_host: Option<String>,
}

/// Whether `host` names the egress gateway's (or any cluster) Service, not the outside.
pub(super) fn is_cluster_service(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.ends_with(".svc.cluster.local") || host.ends_with(".svc") || host.contains("egressgateway")
}

/// An Istio duration (`3s`, `0.5s`, `1m`) as the policy writes it.
pub(super) fn duration(raw: &str) -> Option<String> {
    if humantime::parse_duration(raw).is_ok() && !raw.contains('.') {
        return Some(raw.to_owned());
    }
    let secs: f64 = raw.strip_suffix('s')?.parse().ok()?;
    if !(0.0..=1e9).contains(&secs) {
        return None;
    }
    Some(format!("{}ms", (secs * 1000.0).round() as u64))
}

pub(super) fn translate(r: &Resource, model: &mut Model, report: &mut Report) {
    let id = r.id();
    let mut spec = Obj::new(Some(&r.spec), "spec");
    let hosts = spec.strs("hosts");
    let declared = spec.strs("gateways");
    let gateways = if declared.is_empty() {
        vec!["mesh".to_owned()]
    } else {
        declared.clone()
    };
    let mut routes = Vec::new();
    for (key, traffic) in [
        ("http", Traffic::Http),
        ("tls", Traffic::Tls),
        ("tcp", Traffic::Tcp),
    ] {
        for mut route in spec.list(key) {
            read_route(
                &mut route,
                traffic,
                &hosts,
                &gateways,
                &id,
                report,
                &mut routes,
            );
            route.finish(report, &id);
        }
    }
    spec.note(
        "exportTo",
        report,
        &id,
        "exportTo: the gateway's policy is not scoped by namespace",
    );
    spec.drop(
        "delegate",
        report,
        &id,
        "delegated VirtualServices are not followed",
    );
    spec.finish(report, &id);
    for route in routes {
        apply(route, r, model, report);
    }
}

fn read_route(
    route: &mut Obj<'_>,
    traffic: Traffic,
    vs_hosts: &[String],
    gateways: &[String],
    id: &str,
    report: &mut Report,
    out: &mut Vec<Route>,
) {
    let path = route.path_of("route");
    let mut destinations = route.list("route");
    let mut dest_host = None;
    let mut dest_port = None;
    for d in destinations.iter_mut() {
        let mut dest = d.obj("destination");
        dest_host = dest.str("host");
        dest_port = dest.obj("port").port("number");
        dest.note(
            "subset",
            report,
            id,
            "subsets select endpoints inside the mesh; the gateway has none",
        );
        dest.finish(report, id);
        // One destination takes all traffic whatever its weight; a split is reported below.
        d.get("weight");
        d.drop(
            "headers",
            report,
            id,
            "header changes are not supported: requests pass as sent",
        );
    }
    if destinations.len() > 1 {
        report.dropped(
            id,
            &path,
            "a traffic split across destinations is not supported: the gateway connects to the requested host",
        );
    }
    for d in destinations {
        d.finish(report, id);
    }
    let request_timeout = match route.str("timeout") {
        Some(raw) => {
            let parsed = duration(&raw);
            if parsed.is_none() {
                report.dropped(
                    id,
                    &route.path_of("timeout"),
                    &format!("{raw:?} is not a duration"),
                );
            }
            parsed
        }
        None => None,
    };
    route.drop(
        "retries",
        report,
        id,
        "retries are not supported: the gateway does not retry a request",
    );
    for key in [
        "fault",
        "mirror",
        "mirrors",
        "mirrorPercentage",
        "mirrorPercent",
    ] {
        route.drop(
            key,
            report,
            id,
            "fault injection and mirroring are not supported",
        );
    }
    for key in [
        "rewrite",
        "redirect",
        "directResponse",
        "corsPolicy",
        "headers",
    ] {
        route.drop(
            key,
            report,
            id,
            "request rewriting is not supported: requests pass as sent",
        );
    }
    route.note("name", report, id, "route names are not kept");
    let mut matches = route.list("match");
    if matches.is_empty() {
        matches.push(Obj::new(None, format!("{}.match", route.path_of(""))));
    }
    let mesh_only_vs = gateways.iter().all(|g| g == "mesh");
    for mut m in matches {
        let gws = match m.strs("gateways") {
            g if g.is_empty() => gateways.to_vec(),
            g => g,
        };
        let port = m.port("port");
        let sni = m.strs("sniHosts");
        m.drop(
            "destinationSubnets",
            report,
            id,
            "a route chosen by destination subnet is not translated: the route applies to every address the rules allow",
        );
        for key in [
            "uri",
            "scheme",
            "method",
            "authority",
            "headers",
            "queryParams",
            "withoutHeaders",
            "ignoreUriCase",
        ] {
            m.drop(key, report, id, "request matching beyond host and port is not supported: the route's settings apply to every request to the host");
        }
        for key in ["sourceLabels", "sourceNamespace", "statPrefix"] {
            m.drop(
                key,
                report,
                id,
                "matching by source workload is mesh-side: not translated",
            );
        }
        m.note("name", report, id, "match names are not kept");
        m.finish(report, id);
        // The gateway half routes out wherever it points; a mesh-only match is the
        // mesh half of a split, or a sidecar's own outbound route when nothing routes
        // through a gateway and it points outside the cluster.
        let outbound = gws.iter().any(|g| g != "mesh");
        let to_cluster = dest_host.as_deref().is_some_and(is_cluster_service);
        if !outbound && (!mesh_only_vs || to_cluster) {
            report.info(
                id,
                &path,
                "routes the mesh to the egress gateway: keep this half in the mesh, it is not policy",
            );
            continue;
        }
        let hosts = if traffic == Traffic::Tls && !sni.is_empty() {
            sni
        } else {
            vs_hosts.to_vec()
        };
        out.push(Route {
            traffic,
            hosts,
            port,
            dest_port,
            request_timeout: request_timeout.clone(),
            via_gateway: outbound,
            dest_host: dest_host.clone(),
        });
    }
}

fn apply(route: Route, r: &Resource, model: &mut Model, report: &mut Report) {
    let id = r.id();
    if route.traffic == Traffic::Tcp {
        if let (Some(port), Some(host)) = (route.port, &route.dest_host) {
            let forward = format!("{host}:{}", route.dest_port.unwrap_or(port));
            for l in model.listeners.iter_mut() {
                if l.istio_port == port
                    && l.doc.protocol == Protocol::Tcp
                    && l.doc.forward_to.is_none()
                {
                    l.doc.forward_to = Some(forward.clone());
                }
            }
        }
    }
    for host in &route.hosts {
        if let Some(dest) = &route.dest_host {
            if !dest.eq_ignore_ascii_case(host) {
                report.dropped(
                    &id,
                    "spec.route.destination.host",
                    &format!("{host} is routed to {dest}: the gateway connects to the requested host, destinations are not rewritten"),
                );
            }
        }
        let mut found = false;
        for e in model.entries.iter_mut() {
            let port_ok = route.port.is_none_or(|p| p == e.port);
            if !e.deny && e.host.eq_ignore_ascii_case(host) && port_ok {
                found = true;
                if let Some(t) = &route.request_timeout {
                    e.settings.request_timeout = Some(t.clone());
                }
                if let Some(p) = route.dest_port {
                    e.upstream_port = p;
                }
            }
        }
        if found {
            continue;
        }
        let port = route.port.or(route.dest_port);
        match (route.via_gateway, port) {
            (true, Some(port)) => {
                report.info(
                    &id,
                    "spec",
                    &format!("no ServiceEntry lists {host}:{port}; allowed because this route takes it out of the egress gateway"),
                );
                model.entries.push(Entry {
                    host: host.clone(),
                    port,
                    traffic: route.traffic,
                    upstream_port: route.dest_port.unwrap_or(port),
                    settings: Settings {
                        request_timeout: route.request_timeout.clone(),
                        ..Settings::default()
                    },
                    deny: false,
                    origin: id.clone(),
                    base_name: r.name.clone(),
                });
            }
            (true, None) => report.dropped(
                &id,
                "spec",
                &format!("{host}: the route names no port and no ServiceEntry lists the host: not allowed"),
            ),
            (false, _) => report.info(
                &id,
                "spec",
                &format!("no ServiceEntry lists {host}: Istio's REGISTRY_ONLY keeps it in, so it is not allowed"),
            ),
        }
    }
}
