//! Gateway → listeners: one per server port; PASSTHROUGH is a `tls` listener (by SNI),
//! HTTP an `http` listener, TCP a `tcp` listener whose destination the VirtualService's
//! `tcp` route names. Inbound TLS (ISTIO_MUTUAL, MUTUAL, SIMPLE) needs certificate files
//! the import cannot know, so it is reported.

use super::model::{listener_doc, listener_port, ListenerEntry, Model};
use super::service_entry::traffic;
use super::yaml::Obj;
use super::{model::Traffic, Report, Resource};
use crate::policy::Protocol;

pub(super) fn translate(r: &Resource, model: &mut Model, report: &mut Report) {
    let id = r.id();
    let mut spec = Obj::new(Some(&r.spec), "spec");
    spec.note(
        "selector",
        report,
        &id,
        "the selector picks the egress gateway: this gateway is it",
    );
    for mut server in spec.list("servers") {
        let mut port = server.obj("port");
        let number = port.port("number");
        let name = port.str("name");
        let protocol = port.str("protocol");
        port.note("targetPort", report, &id, "the listener binds its own port");
        port.finish(report, &id);
        let hosts = server.strs("hosts");
        let mut tls = server.obj("tls");
        let mode = tls.str("mode").map(|m| m.to_ascii_uppercase());
        tls.drop(
            "httpsRedirect",
            report,
            &id,
            "redirects to HTTPS are not supported",
        );
        for key in [
            "serverCertificate",
            "privateKey",
            "caCertificates",
            "credentialName",
            "credentialNames",
            "subjectAltNames",
            "minProtocolVersion",
            "maxProtocolVersion",
            "cipherSuites",
            "verifyCertificateSpki",
            "verifyCertificateHash",
        ] {
            tls.note(
                key,
                report,
                &id,
                "inbound TLS settings: see listeners[].tls",
            );
        }
        tls.finish(report, &id);
        server.drop(
            "bind",
            report,
            &id,
            "the listener binds every address unless `address:` is set",
        );
        server.drop("defaultEndpoint", report, &id, "sidecar ingress only");
        server.note("name", report, &id, "server names are not kept");
        server.finish(report, &id);
        let Some(number) = number else {
            report.dropped(
                &id,
                "spec.servers.port.number",
                "a server without a valid port: skipped",
            );
            continue;
        };
        if hosts.iter().any(|h| h != "*" && !h.ends_with("/*")) {
            report.info(
                &id,
                "spec.servers.hosts",
                &format!("server hosts {hosts:?}: the rules decide which hosts pass this listener"),
            );
        }
        let kind = traffic(protocol.as_deref(), name.as_deref());
        let passthrough = matches!(mode.as_deref(), Some("PASSTHROUGH" | "AUTO_PASSTHROUGH"));
        let terminates = kind == Traffic::Tls && !passthrough;
        let proto = match kind {
            Traffic::Tls if passthrough => Protocol::Tls,
            Traffic::Http | Traffic::Tls => Protocol::Http,
            Traffic::Tcp => Protocol::Tcp,
        };
        if terminates || matches!(mode.as_deref(), Some("ISTIO_MUTUAL" | "MUTUAL" | "SIMPLE")) {
            report.dropped(
                &id,
                "spec.servers.tls",
                &format!("port {number}: inbound TLS ({}) needs the gateway's certificate, key and client CA files: add listeners[].tls {{cert, key, client_ca}}; the listener is written without it", mode.as_deref().unwrap_or("SIMPLE")),
            );
        }
        let base = name.unwrap_or_else(|| {
            format!(
                "{}-{number}",
                protocol.unwrap_or_default().to_ascii_lowercase()
            )
        });
        let mut doc = listener_doc(&base, listener_port(number), proto);
        let default_target = if proto == Protocol::Tls { 443 } else { 80 };
        if proto != Protocol::Tcp && number != default_target {
            doc.target_port = Some(i64::from(number));
        }
        model.add_listener(ListenerEntry {
            doc,
            origin: id.clone(),
            istio_port: number,
        });
    }
    spec.finish(report, &id);
}
