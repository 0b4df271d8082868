//! Istio egress configuration → policy: ServiceEntry, VirtualService, DestinationRule,
//! Gateway and AuthorizationPolicy resources become rules and listeners, with a report
//! of every field that was not translated and why.
//!
//! Pure: text in, YAML and a report out. The translation keeps decisions: for each host
//! and port that the input lets out of the egress gateway (or denies), the imported
//! policy decides the same, or the report says why it cannot. When a condition cannot
//! be expressed (a JWT, a path, a CIDR wider than one address), the import denies more,
//! never less: an ALLOW clause that needs it is left out, a DENY clause applies without it.

mod authorization;
mod destination_rule;
mod gateway;
mod model;
mod service_entry;
mod virtual_service;
mod yaml;

use serde_yaml::{Mapping, Value};

use crate::policy::{compile, PolicyErrors, PolicyFile};
use model::Model;

/// One line of the import report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The resource, e.g. `ServiceEntry default/cnn` (`document 3` when it did not parse).
    pub resource: String,
    /// The field inside it, e.g. `spec.ports[1].targetPort`; empty for the whole resource.
    pub field: String,
    /// What happened to it, and why.
    pub message: String,
    /// True when something the input says is not in the output (what `--check` fails on);
    /// false for a remark (kept in the mesh, mapped by convention).
    pub dropped: bool,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The policy document (YAML, with a comment naming each rule's source).
    pub policy: String,
    /// Every remark and every field not translated, in input order.
    pub notes: Vec<Note>,
    /// Rules written.
    pub rules: usize,
    /// Listeners written.
    pub listeners: usize,
}

impl Imported {
    /// How many notes say something was not translated.
    pub fn dropped(&self) -> usize {
        self.notes.iter().filter(|n| n.dropped).count()
    }
}

/// The generated policy does not compile: a fault of the translation, not of the input.
#[derive(Debug, thiserror::Error)]
#[error("the imported policy does not compile (a bug in the Istio import): {0}")]
pub struct ImportError(pub PolicyErrors);

/// The notes being collected.
#[derive(Debug, Default)]
pub(crate) struct Report {
    notes: Vec<Note>,
}

impl Report {
    pub(crate) fn dropped(&mut self, resource: &str, field: &str, message: &str) {
        self.push(resource, field, message, true);
    }

    pub(crate) fn info(&mut self, resource: &str, field: &str, message: &str) {
        self.push(resource, field, message, false);
    }

    fn push(&mut self, resource: &str, field: &str, message: &str, dropped: bool) {
        let note = Note {
            resource: resource.to_owned(),
            field: field.to_owned(),
            message: message.to_owned(),
            dropped,
        };
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

/// One Istio resource of the input.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    pub(crate) spec: Value,
}

impl Resource {
    /// `Kind namespace/name` (or `Kind name`), as the report and comments name it.
    pub(crate) fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// Translates Istio YAML (many documents, `List` kinds, `kubectl get -o yaml` output) into
/// one policy document and its report.
///
/// Fails only when the generated policy does not compile, which is a bug here.
pub fn istio(text: &str) -> Result<Imported, ImportError> {
    let mut report = Report::default();
    let resources = read_resources(text, &mut report);
    let mut model = Model::default();
    fn by_kind<'a>(all: &'a [Resource], kind: &'a str) -> impl Iterator<Item = &'a Resource> {
        all.iter().filter(move |r| r.kind == kind)
    }
    for r in by_kind(&resources, "Gateway") {
        gateway::translate(r, &mut model, &mut report);
    }
    for r in by_kind(&resources, "ServiceEntry") {
        service_entry::translate(r, &mut model, &mut report);
    }
    for r in by_kind(&resources, "VirtualService") {
        virtual_service::translate(r, &mut model, &mut report);
    }
    for r in by_kind(&resources, "DestinationRule") {
        destination_rule::translate(r, &mut model, &mut report);
    }
    let policies: Vec<&Resource> = by_kind(&resources, "AuthorizationPolicy").collect();
    authorization::translate(&policies, &mut model, &mut report);
    let rendered = model.render(&mut report);
    let file = PolicyFile {
        name: "imported.yaml".to_owned(),
        text: rendered.text.as_str().into(),
    };
    compile(std::slice::from_ref(&file)).map_err(ImportError)?;
    Ok(Imported {
        policy: rendered.text,
        notes: report.notes,
        rules: rendered.rules,
        listeners: rendered.listeners,
    })
}

/// The Istio resources of `text`, in order. Documents that do not parse, and kinds
/// that have no counterpart, are reported.
fn read_resources(text: &str, report: &mut Report) -> Vec<Resource> {
    let mut out = Vec::new();
    for (index, doc) in split_documents(text).iter().enumerate() {
        let what = format!("document {}", index + 1);
        match serde_yaml::from_str::<Value>(doc) {
            Ok(Value::Null) => {}
            Ok(value) => collect(&value, &what, &mut out, report),
            Err(e) => report.dropped(&what, "", &format!("not YAML, skipped: {e}")),
        }
    }
    out
}

/// Splits on `---` lines, so that one broken document does not hide the others.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs
}

fn collect(value: &Value, what: &str, out: &mut Vec<Resource>, report: &mut Report) {
    let Some(map) = value.as_mapping() else {
        report.dropped(what, "", "not a Kubernetes resource (no mapping), skipped");
        return;
    };
    let get = |m: &Mapping, k: &str| m.get(k).and_then(yaml::scalar);
    let kind = get(map, "kind").unwrap_or_default();
    let api = get(map, "apiVersion").unwrap_or_default();
    if kind == "List" || kind.ends_with("List") && map.contains_key("items") {
        if let Some(Value::Sequence(items)) = map.get("items") {
            for (i, item) in items.iter().enumerate() {
                collect(item, &format!("{what} items[{i}]"), out, report);
            }
        }
        return;
    }
    let meta = map.get("metadata").and_then(Value::as_mapping);
    let name = meta.and_then(|m| get(m, "name")).unwrap_or_default();
    let namespace = meta.and_then(|m| get(m, "namespace"));
    let resource = Resource {
        kind: kind.clone(),
        name: if name.is_empty() {
            what.to_owned()
        } else {
            name
        },
        namespace,
        spec: map.get("spec").cloned().unwrap_or(Value::Null),
    };
    let group = api.split('/').next().unwrap_or_default();
    let known = matches!(
        (group, kind.as_str()),
        (
            "networking.istio.io",
            "ServiceEntry" | "VirtualService" | "DestinationRule" | "Gateway"
        ) | ("security.istio.io", "AuthorizationPolicy")
    );
    if known {
        out.push(resource);
    } else if kind.is_empty() {
        report.dropped(what, "", "no kind: not a Kubernetes resource, skipped");
    } else {
        report.dropped(
            &resource.id(),
            "",
            &format!("{api} {kind} is not translated: only ServiceEntry, VirtualService, DestinationRule, Gateway and AuthorizationPolicy are"),
        );
    }
}
