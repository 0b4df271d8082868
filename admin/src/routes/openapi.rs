//! `GET /openapi.json`: the admin API as OpenAPI 3.1, written by hand and checked
//! against [`ROUTES`](super::ROUTES) by a test, so that neither drifts from the other.

use serde_json::{json, Value};

/// Whether a concrete path matches a template with `{param}` segments.
pub fn path_matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.starts_with('{') && !b.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

fn error_responses(codes: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for code in codes {
        let what = match *code {
            "400" => "invalid request; every error in details",
            "401" => "missing or wrong bearer token",
            "404" => "no such rule or version",
            "409" => "read-only store",
            "503" => "the policy store (etcd) is unreachable; nothing changed",
            "412" => "If-Match names a version no longer in force",
            "413" => "body over the size limit",
            "415" => "body neither YAML nor JSON",
            _ => "error",
        };
        out.insert(
            (*code).to_owned(),
            json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(out)
}

fn write_op(summary: &str, body: Option<&str>, params: Value) -> Value {
    let mut responses = error_responses(&["400", "401", "404", "409", "412", "413", "415", "503"]);
    responses["200"] = json!({
        "description": "the version in force afterwards, and what changed",
        "headers": {"ETag": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Applied"}}}
    });
    let mut op = json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": params,
        "responses": responses,
    });
    if let Some(body) = body {
        op["requestBody"] = json!({
            "required": true,
            "description": body,
            "content": {"application/yaml": {}, "application/json": {}}
        });
    }
    op
}

fn write_params(extra: Option<Value>) -> Value {
    let mut params = vec![
        json!({"name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"},
               "description": "the ETag (version) the change was prepared against; 412 when stale"}),
        json!({"name": "dry_run", "in": "query", "required": false, "schema": {"type": "boolean"},
               "description": "validate and describe the change without applying it"}),
    ];
    params.extend(extra);
    Value::Array(params)
}

fn read_op(summary: &str, media: &str, security: bool) -> Value {
    let mut op = json!({
        "summary": summary,
        "responses": {"200": {"description": "ok", "content": {media: {}}}},
    });
    if security {
        op["security"] = json!([{"bearer": []}]);
        op["responses"]["401"] = error_responses(&["401"])["401"].clone();
    }
    op
}

/// `POST /policy/import/istio` (its own function: one `json!` this deep overflows the
/// macro's recursion limit).
fn import_op() -> Value {
    json!({
        "summary": "translate Istio resources (ServiceEntry, VirtualService, DestinationRule, Gateway, AuthorizationPolicy; many documents, List kinds) into a policy document, with every field not translated and why; changes nothing",
        "security": [{"bearer": []}],
        "requestBody": {"required": true, "content": {"application/yaml": {}}},
        "responses": {"200": {"description": "the policy (YAML) and the report", "content": {"application/json": {"schema": {
            "type": "object", "properties": {
                "policy": {"type": "string"}, "rules": {"type": "integer"}, "listeners": {"type": "integer"},
                "dropped": {"type": "integer"},
                "notes": {"type": "array", "items": {"type": "object", "properties": {
                    "resource": {"type": "string"}, "field": {"type": "string"},
                    "message": {"type": "string"}, "dropped": {"type": "boolean"}}}}}}}}},
                      "400": error_responses(&["400"])["400"].clone(),
                      "401": error_responses(&["401"])["401"].clone(),
                      "413": error_responses(&["413"])["413"].clone()}
    })
}

/// `GET /policy/suggest`.
fn suggest_op() -> Value {
    json!({
        "summary": "rules for what the audit log shows denied or would-be-denied and the policy in force still refuses, appended to that policy (ready for PUT /policy); changes nothing",
        "security": [{"bearer": []}],
        "parameters": [
            {"name": "min_count", "in": "query", "required": false, "schema": {"type": "integer"},
             "description": "leave out hosts seen fewer times"},
            {"name": "group_wildcards", "in": "query", "required": false, "schema": {"type": "boolean"},
             "description": "fold two or more hosts under one parent into *.parent"},
            {"name": "since", "in": "query", "required": false, "schema": {"type": "string"},
             "description": "only lines from then on: a duration back from now (1h, 30m) or an RFC 3339 time"}],
        "responses": {"200": {"description": "the suggestion: lines read, suggested rules with counts, sources, first and last seen, and the merged policy", "content": {"application/json": {}}},
                      "400": error_responses(&["400"])["400"].clone(),
                      "401": error_responses(&["401"])["401"].clone()}
    })
}

/// The document.
pub fn document() -> Value {
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let version =
        json!({"name": "version", "in": "path", "required": true, "schema": {"type": "integer"}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "egress-gateway admin API", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "details"], "properties": {
                    "error": {"type": "string"},
                    "details": {"type": "array", "items": {"type": "object", "properties": {
                        "path": {"type": "string"}, "line": {"type": "integer"}, "message": {"type": "string"}}}}}},
                "Applied": {"type": "object", "properties": {
                    "version": {"type": "integer"}, "changed": {"type": "boolean"},
                    "dry_run": {"type": "boolean"}, "summary": {"type": "array", "items": {"type": "string"}}}}
            }
        },
        "paths": {
            "/healthz": {"get": read_op("alive", "text/plain", false)},
            "/readyz": {"get": read_op("ready: 503 while draining or before the first policy loads; lines after the first say how the policy store is (etcd unreachable, refused changes) and which listeners could not bind", "text/plain", false)},
            "/fleet": {"get": read_op("every live replica sharing the etcd policy store: id, admin, listeners, version, converged, draining (with the file store: this gateway alone)", "application/json", true)},
            "/dns/allocations": {"get": read_op("the address each TCP service got from a dns listener's auto_allocate: host, address, range, and the policy version", "application/json", true)},
            "/metrics": {"get": read_op("Prometheus text exposition", "text/plain", false)},
            "/openapi.json": {"get": read_op("this document", "application/json", true)},
            "/policy": {
                "get": read_op("the policy set in force (YAML, or JSON by Accept); its version is the ETag", "application/yaml", true),
                "put": write_op("replace the policy set; 400 with every error, nothing changed", Some("the whole policy set"), write_params(None)),
            },
            "/policy/check": {"post": {
                "summary": "would this destination be allowed? the decision, the rule and why, after resolving and the address guard",
                "security": [{"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["host", "port"], "properties": {
                        "host": {"type": "string"}, "port": {"type": "integer"},
                        "source": {"type": "string"}, "listener": {"type": "string"},
                        "resolve": {"type": "boolean", "default": true}}}}}},
                "responses": {"200": {"description": "the decision", "content": {"application/json": {}}},
                              "400": error_responses(&["400"])["400"].clone(),
                              "401": error_responses(&["401"])["401"].clone()}
            }},
            "/policy/import/istio": {"post": import_op()},
            "/policy/suggest": {"get": suggest_op()},
            "/policy/history": {"get": read_op("the versions kept, newest first, with time, author and what changed", "application/json", true)},
            "/policy/rollback/{version}": {"post": write_op("apply an earlier version's set again, as a new version", None, write_params(Some(version)))},
            "/rules/{name}": {
                "put": write_op("add or replace one rule", Some("one rule (its name may be omitted)"), write_params(Some(name.clone()))),
                "delete": write_op("remove one rule", None, write_params(Some(name))),
            },
            "/connections": {"get": read_op("connections open now: listener, source, destination, rule, age, bytes", "application/json", true)},
            "/audit/tail": {"get": {
                "summary": "audit lines as they are written (streamed); a reader that falls behind is dropped",
                "security": [{"bearer": []}],
                "parameters": [{"name": "filter", "in": "query", "required": false, "schema": {"type": "string"},
                                "description": "only lines containing this text (a host, a rule name), case-insensitively"}],
                "responses": {"200": {"description": "a stream of lines", "content": {"text/plain": {}}},
                              "401": error_responses(&["401"])["401"].clone()}
            }},
            "/drain": {"post": {
                "summary": "stop accepting, finish what is in flight, answer when done (503 when the drain timeout passed first)",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "drained", "content": {"application/json": {}}},
                              "503": {"description": "work still in flight at the drain timeout", "content": {"application/json": {}}},
                              "401": error_responses(&["401"])["401"].clone()}
            }},
        }
    })
}
