//! DestinationRule → how the gateway connects: `tls.mode: SIMPLE` is TLS origination,
//! `connectionPool.tcp.connectTimeout` the connect timeout. Rules for the egress
//! gateway's own Service (ISTIO_MUTUAL from the sidecars) stay in the mesh.

use super::model::{covers, Model, Traffic};
use super::virtual_service::{duration, is_cluster_service};
use super::yaml::Obj;
use super::{Report, Resource};

/// What one `trafficPolicy` (or port-level setting) asks of the connection.
#[derive(Debug, Clone, Default)]
struct Connection {
    tls_mode: Option<String>,
    ca_file: Option<String>,
    sni: Option<String>,
    connect_timeout: Option<String>,
}

pub(super) fn translate(r: &Resource, model: &mut Model, report: &mut Report) {
    let id = r.id();
    let mut spec = Obj::new(Some(&r.spec), "spec");
    let host = spec.str("host").unwrap_or_default();
    if is_cluster_service(&host) {
        report.info(
            &id,
            "",
            &format!("applies to the mesh's traffic to {host} (the egress gateway): keep it in the mesh, it is not policy"),
        );
        return;
    }
    let mut tp = spec.obj("trafficPolicy");
    let all = connection(&mut tp, &id, report);
    let mut per_port = Vec::new();
    for mut setting in tp.list("portLevelSettings") {
        let port = setting.obj("port").port("number");
        let c = connection(&mut setting, &id, report);
        setting.finish(report, &id);
        if let Some(port) = port {
            per_port.push((port, c));
        }
    }
    tp.drop(
        "tunnel",
        report,
        &id,
        "tunnelling to the upstream is not supported",
    );
    tp.drop(
        "proxyProtocol",
        report,
        &id,
        "the gateway does not send PROXY protocol headers upstream",
    );
    tp.finish(report, &id);
    spec.note(
        "subsets",
        report,
        &id,
        "subsets select endpoints inside the mesh; the gateway has none",
    );
    spec.note(
        "exportTo",
        report,
        &id,
        "exportTo: the gateway's policy is not scoped by namespace",
    );
    spec.drop(
        "workloadSelector",
        report,
        &id,
        "applies to chosen workloads only: mesh-side",
    );
    spec.finish(report, &id);
    let mut matched = false;
    for e in model
        .entries
        .iter_mut()
        .filter(|e| !e.deny && covers(&host, &e.host))
    {
        matched = true;
        let c = per_port
            .iter()
            .find(|(p, _)| *p == e.upstream_port)
            .map_or(&all, |(_, c)| c);
        if let Some(t) = &c.connect_timeout {
            e.settings.connect_timeout = Some(t.clone());
        }
        let field = format!("{host}:{}", e.upstream_port);
        match c.tls_mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("SIMPLE") if e.traffic == Traffic::Http => {
                let ours = if e.port == 80 { 443 } else { e.port };
                if ours != e.upstream_port {
                    report.dropped(
                        &id,
                        &field,
                        &format!("TLS origination goes to port {ours} for requests to port {}, not {}", e.port, e.upstream_port),
                    );
                }
                e.settings.tls_origination = true;
                e.settings.ca_file = c.ca_file.clone();
                if let Some(sni) = &c.sni {
                    if !sni.eq_ignore_ascii_case(&e.host) {
                        report.dropped(&id, &field, &format!("sni {sni}: the gateway sends the requested host as SNI"));
                    }
                }
            }
            Some("SIMPLE") => report.info(
                &id,
                &field,
                "clients already speak TLS on this port: passed through by SNI, not originated again",
            ),
            Some("MUTUAL") => report.dropped(
                &id,
                &field,
                "MUTUAL: client certificates for TLS origination are not supported yet; the rule originates no TLS",
            ),
            Some("ISTIO_MUTUAL") => report.info(&id, &field, "ISTIO_MUTUAL is the mesh's own mTLS: mesh-side"),
            _ => {}
        }
    }
    if !matched {
        report.info(
            &id,
            "spec.host",
            &format!("no rule for {host}: nothing to apply it to"),
        );
    }
}

fn connection(tp: &mut Obj<'_>, id: &str, report: &mut Report) -> Connection {
    let mut c = Connection::default();
    let mut tls = tp.obj("tls");
    c.tls_mode = tls.str("mode");
    c.ca_file = tls.str("caCertificates");
    c.sni = tls.str("sni");
    for key in ["clientCertificate", "privateKey", "credentialName"] {
        tls.drop(
            key,
            report,
            id,
            "client certificates for TLS origination are not supported yet",
        );
    }
    tls.drop(
        "subjectAltNames",
        report,
        id,
        "the upstream's certificate is verified against the host name",
    );
    tls.drop(
        "insecureSkipVerify",
        report,
        id,
        "the gateway always verifies the upstream's certificate",
    );
    tls.finish(report, id);
    let mut pool = tp.obj("connectionPool");
    let mut tcp = pool.obj("tcp");
    if let Some(raw) = tcp.str("connectTimeout") {
        c.connect_timeout = duration(&raw);
        if c.connect_timeout.is_none() {
            report.dropped(
                id,
                &tcp.path_of("connectTimeout"),
                &format!("{raw:?} is not a duration"),
            );
        }
    }
    tcp.finish(report, id);
    pool.drop(
        "http",
        report,
        id,
        "HTTP connection pool limits are not supported",
    );
    pool.finish(report, id);
    tp.note(
        "loadBalancer",
        report,
        id,
        "the gateway tries the resolved addresses in order",
    );
    tp.drop(
        "outlierDetection",
        report,
        id,
        "outlier detection is not supported",
    );
    c
}
