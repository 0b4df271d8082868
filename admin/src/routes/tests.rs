//! The router against a stand-in gateway, without sockets: authentication on every
//! route, the OpenAPI document against the route table, and how bodies are read.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::broadcast;
use tower::ServiceExt;

use super::{openapi, ROUTES};
use crate::api::*;
use crate::{router, Control, ControlError, Options, Tokens};

const TOKEN: &str = "alice-token-0123456789";

struct Stand {
    ready: AtomicBool,
    changes: Mutex<Vec<(Change, WriteOptions)>>,
    tail: broadcast::Sender<Arc<str>>,
}

impl Control for Stand {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    fn metrics(&self) -> String {
        "egress_policy_version 3\n".to_owned()
    }
    fn suggest(
        &self,
        min_count: u64,
        _group: bool,
        _since: Option<String>,
    ) -> Result<crate::suggest::Suggestion, ControlError> {
        let tally = crate::suggest::Tally::default();
        let observed = tally.observed(min_count, false);
        crate::suggest::build(&tally, observed, |_, _| true, "rules: []\n")
            .map_err(ControlError::Internal)
    }
    fn import_istio(&self, text: &str) -> Result<crate::api::ImportAnswer, ControlError> {
        Ok(crate::api::ImportAnswer {
            policy: format!("# {} bytes of Istio YAML\n", text.len()),
            rules: 0,
            listeners: 0,
            dropped: 0,
            notes: Vec::new(),
        })
    }
    fn policy(&self, format: Format) -> PolicyView {
        let text = match format {
            Format::Yaml => "rules: []\n",
            Format::Json => "{}",
        };
        PolicyView {
            version: 3,
            text: text.to_owned(),
        }
    }
    fn change(&self, change: Change, options: WriteOptions) -> Result<Applied, ControlError> {
        if options.if_match.is_some_and(|v| v != 3) {
            return Err(ControlError::Stale {
                expected: options.if_match.unwrap_or(0),
                current: 3,
            });
        }
        self.changes.lock().unwrap().push((change, options));
        Ok(Applied {
            version: 4,
            changed: true,
            dry_run: false,
            summary: vec!["rule a added".into()],
        })
    }
    fn history(&self) -> History {
        History {
            current: 3,
            versions: Vec::new(),
        }
    }
    fn check(
        &self,
        request: CheckRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<CheckAnswer, ControlError>> + Send>,
    > {
        Box::pin(async move {
            Ok(CheckAnswer {
                decision: "deny".into(),
                rule: None,
                why: "no rule".into(),
                destination: format!("{}:{}", request.host, request.port),
                listener: "http".into(),
                version: 3,
                details: None,
                addresses: Vec::new(),
            })
        })
    }
    fn connections(&self) -> Vec<ConnectionInfo> {
        Vec::new()
    }
    fn audit_tail(&self) -> broadcast::Receiver<Arc<str>> {
        self.tail.subscribe()
    }
    fn drain(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = DrainReport> + Send>> {
        Box::pin(async {
            DrainReport {
                drained: true,
                in_flight: 0,
                waited_ms: 0,
            }
        })
    }
}

fn stand() -> Arc<Stand> {
    Arc::new(Stand {
        ready: AtomicBool::new(true),
        changes: Mutex::new(Vec::new()),
        tail: broadcast::channel(16).0,
    })
}

fn app(control: Arc<Stand>) -> axum::Router {
    let tokens = Tokens::parse(&format!("alice:{TOKEN}\n"), std::path::Path::new("t")).unwrap();
    let mut options = Options::new(tokens);
    options.body_limit = 1024;
    router(control, options)
}

async fn call(
    control: &Arc<Stand>,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app(Arc::clone(control)).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    // A live tail never ends: take what is there.
    let body = if request_is_tail(&headers) {
        String::new()
    } else {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (status, headers, body)
}

fn request_is_tail(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CACHE_CONTROL)
        .is_some_and(|v| v == "no-cache")
}

/// A request that satisfies the handler of `method path` (templates filled in).
fn request(method: &str, template: &str, token: Option<&str>) -> Request<Body> {
    let path = template.replace("{version}", "2").replace("{name}", "a");
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match (method, template) {
        ("POST", "/policy/check") => r#"{"host": "api.example.com", "port": 443}"#,
        ("PUT", _) => "name: a\nhosts: [a.example]\n",
        _ => "",
    };
    if !body.is_empty() && template == "/policy/check" {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    builder.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn every_guarded_route_wants_the_token_and_open_routes_do_not() {
    let control = stand();
    for spec in ROUTES {
        for method in spec.methods {
            let (status, headers, body) = call(&control, request(method, spec.path, None)).await;
            if spec.open {
                assert_eq!(status, StatusCode::OK, "{method} {}", spec.path);
                continue;
            }
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {}", spec.path);
            assert!(headers
                .get(header::WWW_AUTHENTICATE)
                .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")));
            let error: ErrorBody = serde_json::from_str(&body).unwrap();
            assert!(error.error.contains("missing bearer token"), "{body}");
            let (status, _, body) = call(
                &control,
                request(method, spec.path, Some("wrong-token-0123456789")),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {}", spec.path);
            assert!(body.contains("refused"), "{body}");
            let (status, _, body) = call(&control, request(method, spec.path, Some(TOKEN))).await;
            assert!(
                status.is_success(),
                "{method} {}: {status} {body}",
                spec.path
            );
        }
    }
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let doc = openapi::document();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (path.clone(), m.to_ascii_uppercase()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(|m| (r.path.to_owned(), (*m).to_owned()))
        })
        .collect();
    assert_eq!(
        documented, served,
        "the document and the route table disagree"
    );
    let control = stand();
    for (path, _) in &documented {
        for method in ["GET", "PUT", "POST", "DELETE"] {
            let (status, _, body) = call(&control, request(method, path, Some(TOKEN))).await;
            if served.contains(&(path.clone(), method.to_owned())) {
                assert!(
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but answers {status}"
                );
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert!(body.contains("is not allowed"), "{body}");
            }
        }
    }
    let (status, _, body) = call(&control, request("GET", "/nothing", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("openapi.json"), "{body}");
}

#[tokio::test]
async fn writes_read_their_body_format_precondition_and_author() {
    let control = stand();
    let put = |content_type: &str, body: Vec<u8>| {
        Request::put("/policy")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, content_type)
            .header(header::IF_MATCH, "\"3\"")
            .body(Body::from(body))
            .unwrap()
    };
    let (status, _, body) = call(&control, put("text/html", b"<p>".to_vec())).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (status, _, _) = call(&control, put("application/yaml", vec![0xff, 0xfe])).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, body) = call(&control, put("application/yaml", vec![b'#'; 2048])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        control.changes.lock().unwrap().is_empty(),
        "nothing reached the gateway"
    );
    let (status, headers, body) = call(&control, put("application/json", b"{}".to_vec())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers.get(header::ETAG).unwrap(), "\"4\"");
    let (change, options) = control.changes.lock().unwrap().pop().unwrap();
    assert_eq!(
        change,
        Change::Replace(PolicyText {
            text: "{}".into(),
            format: Format::Json
        })
    );
    assert_eq!(options.author, "alice");
    assert_eq!(options.if_match, Some(3));
    let stale = Request::delete("/rules/a")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::IF_MATCH, "\"2\"")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = call(&control, stale).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(body.contains("version 3 is in force"), "{body}");
}

#[tokio::test]
async fn readiness_follows_the_gateway() {
    let control = stand();
    control.ready.store(false, Ordering::Relaxed);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    assert_eq!(
        call(&control, get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    control.ready.store(true, Ordering::Relaxed);
    assert_eq!(call(&control, get("/readyz")).await.0, StatusCode::OK);
    let (status, _, body) = call(&control, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("egress_policy_version 3"));
}

#[tokio::test]
async fn the_stats_router_serves_the_open_routes_and_nothing_else() {
    let control = stand();
    let stats = |request| crate::stats_router(Arc::clone(&control) as _).oneshot(request);
    let paths: Vec<&str> = super::stats::paths().collect();
    assert_eq!(paths, ["/healthz", "/readyz", "/metrics"]);
    for path in paths {
        let response = stats(request("GET", path, None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    }
    for spec in ROUTES.iter().filter(|r| !r.open) {
        for method in spec.methods {
            let response = stats(request(method, spec.path, Some(TOKEN)))
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{method} {} is not on the stats listener, even with a token",
                spec.path
            );
        }
    }
    control.ready.store(false, Ordering::Relaxed);
    let response = stats(request("GET", "/readyz", None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}
