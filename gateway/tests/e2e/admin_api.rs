//! The admin API over real HTTP against a running gateway: tokens on every route, one
//! error shape, body limits and media types, check, connections, the live audit tail,
//! drain, and the OpenAPI document.

use std::time::Duration;

use egress_admin::api::{CheckAnswer, Connections, DrainReport, ErrorBody};
use egress_admin::client::{Client, Reply};
use egress_admin::routes::ROUTES;
use egress_gateway::testing::TestGateway;
use http_body_util::BodyExt;
use hyper::header::{HeaderName, CONTENT_TYPE, IF_MATCH, WWW_AUTHENTICATE};
use hyper::{Method, StatusCode};

use crate::common::{allow_policy, Scenario};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The admin API of a test gateway, with its token (or another).
pub struct Admin {
    pub client: Client,
}

impl Admin {
    pub fn of(gateway: &TestGateway) -> Admin {
        Self::with_token(gateway, Some(gateway.admin_token()))
    }

    pub fn with_token(gateway: &TestGateway, token: Option<String>) -> Admin {
        let client = Client::new(&gateway.admin_addr().to_string(), token).unwrap();
        Admin { client }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Option<(&str, &str)>,
    ) -> Reply {
        let body = body.map(|(text, media)| (text.as_bytes().to_vec(), media));
        self.client
            .send(method, path, headers, body, TIMEOUT)
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], None).await
    }

    pub async fn put_yaml(&self, path: &str, yaml: &str, if_match: Option<u64>) -> Reply {
        let headers: Vec<(HeaderName, String)> = if_match
            .map(|v| (IF_MATCH, format!("\"{v}\"")))
            .into_iter()
            .collect();
        self.send(
            Method::PUT,
            path,
            &headers,
            Some((yaml, "application/yaml")),
        )
        .await
    }

    pub async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let reply = self.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        serde_json::from_slice(&reply.body).unwrap()
    }

    /// What the policy alone decides (no lookup: these gateways have no test DNS).
    pub async fn check(&self, host: &str, port: u16) -> CheckAnswer {
        let body = format!(r#"{{"host": "{host}", "port": {port}, "resolve": false}}"#);
        let reply = self
            .send(
                Method::POST,
                "/policy/check",
                &[],
                Some((&body, "application/json")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        serde_json::from_slice(&reply.body).unwrap()
    }
}

pub fn error_of(reply: &Reply) -> ErrorBody {
    assert_eq!(
        reply.headers.get(CONTENT_TYPE).unwrap(),
        "application/json",
        "{}",
        reply.text()
    );
    serde_json::from_slice(&reply.body).unwrap()
}

/// A request every route accepts, with its placeholders filled in.
fn request_for(
    method: &str,
    template: &str,
) -> (Method, String, Option<(&'static str, &'static str)>) {
    let path = template
        .replace("{version}", "1")
        .replace("{name}", "extra");
    let body = match (method, template) {
        ("PUT", "/policy") => Some((
            "listeners: [{name: http, port: 8080, protocol: http}]\nrules: [{name: allowed, hosts: [api.example.com]}]\n",
            "application/yaml",
        )),
        ("PUT", _) => Some(("hosts: [extra.example]\n", "application/yaml")),
        ("POST", "/policy/check") => Some((r#"{"host": "api.example.com", "port": 80, "resolve": false}"#, "application/json")),
        _ => None,
    };
    (method.parse().unwrap(), path, body)
}

#[tokio::test]
async fn every_route_wants_the_token_and_a_wrong_one_is_refused() {
    let gateway = TestGateway::start(&allow_policy("[api.example.com]")).await;
    let right = Admin::of(&gateway);
    let none = Admin::with_token(&gateway, None);
    let wrong = Admin::with_token(&gateway, Some("not-the-token-0123456789".into()));
    // Drain last: it stops the gateway taking traffic.
    let mut routes: Vec<(&str, &str, bool)> = ROUTES
        .iter()
        .flat_map(|r| r.methods.iter().map(move |m| (*m, r.path, r.open)))
        .collect();
    routes.sort_by_key(|(_, path, _)| *path == "/drain");
    for (method, template, open) in routes {
        let (method, path, body) = request_for(method, template);
        if template == "/audit/tail" {
            for (admin, expected) in [(&none, 401), (&wrong, 401), (&right, 200)] {
                let response = admin.client.stream(&path).await.unwrap();
                assert_eq!(response.status().as_u16(), expected, "{method} {path}");
            }
            continue;
        }
        for (admin, who) in [(&none, "no token"), (&wrong, "a wrong token")] {
            let reply = admin.send(method.clone(), &path, &[], body).await;
            if open {
                assert_eq!(reply.status, StatusCode::OK, "{method} {path} is open");
                continue;
            }
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {who}"
            );
            assert!(
                reply.headers.get(WWW_AUTHENTICATE).is_some(),
                "{method} {path}: WWW-Authenticate"
            );
            assert!(!error_of(&reply).error.is_empty());
        }
        let reply = right.send(method.clone(), &path, &[], body).await;
        assert!(
            reply.status.is_success(),
            "{method} {path} with the token: {} {}",
            reply.status,
            reply.text()
        );
    }
}

#[tokio::test]
async fn bodies_must_be_yaml_or_json_and_under_the_limit() {
    let gateway = TestGateway::builder(&allow_policy("[api.example.com]"))
        .configure(|c| c.admin.max_body_bytes = 4096)
        .start()
        .await;
    let admin = Admin::of(&gateway);
    let reply = admin
        .send(
            Method::PUT,
            "/policy",
            &[],
            Some(("a=b", "application/x-www-form-urlencoded")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(error_of(&reply).error.contains("application/yaml"));
    let big = format!("# {}\nrules: []\n", "x".repeat(5000));
    let reply = admin.put_yaml("/policy", &big, None).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&reply).error.contains("4096 bytes"));
    let reply = admin.put_yaml("/policy", "  \n", None).await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "an empty body is refused"
    );
    let reply = admin.get("/no/such/route").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    error_of(&reply);
    assert_eq!(gateway.policy_version(), 1, "nothing changed");
}

#[tokio::test]
async fn check_answers_the_decision_the_rule_and_why() {
    let gateway = TestGateway::start(
        r#"
defaults: {mode: deny}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: api, hosts: ["*.example.com"], ports: [443]}
  - {name: block, hosts: [evil.example.com], action: deny}
"#,
    )
    .await;
    let admin = Admin::of(&gateway);
    let allowed = admin.check("API.Example.com.", 443).await;
    assert_eq!(allowed.decision, "allow");
    assert_eq!(allowed.rule.as_deref(), Some("api"));
    assert_eq!(allowed.destination, "api.example.com:443");
    assert!(allowed.why.contains("*.example.com"), "{}", allowed.why);
    let denied = admin.check("evil.example.com", 443).await;
    assert_eq!(
        (denied.decision.as_str(), denied.rule.as_deref()),
        ("deny", Some("block"))
    );
    let other_port = admin.check("api.example.com", 80).await;
    assert_eq!(other_port.decision, "deny");
    assert_eq!(other_port.rule, None);
    assert!(
        other_port.why.contains("rule api names the host"),
        "{}",
        other_port.why
    );
    assert!(other_port.why.contains("mode deny"), "{}", other_port.why);
    let bad = admin
        .send(
            Method::POST,
            "/policy/check",
            &[],
            Some((r#"{"host": "a..b", "port": 80}"#, "application/json")),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(error_of(&bad).error.starts_with("host:"));
    let no_listener = admin
        .send(
            Method::POST,
            "/policy/check",
            &[],
            Some((
                r#"{"host": "a.example.com", "port": 443, "listener": "tls", "resolve": false}"#,
                "application/json",
            )),
        )
        .await;
    assert_eq!(no_listener.status, StatusCode::BAD_REQUEST);
    assert!(error_of(&no_listener).error.contains("declares: http"));
}

#[tokio::test]
async fn open_connections_are_listed_with_their_listener_and_source() {
    let gateway = TestGateway::start(&allow_policy("[api.example.com]")).await;
    let admin = Admin::of(&gateway);
    let idle = egress_testkit::client::connect(gateway.addr("http"))
        .await
        .unwrap();
    let local = idle.local_addr().unwrap().to_string();
    let end = std::time::Instant::now() + TIMEOUT;
    let entry = loop {
        let listed: Connections = admin.json("/connections").await;
        if let Some(entry) = listed.connections.into_iter().find(|c| c.source == local) {
            break entry;
        }
        assert!(std::time::Instant::now() < end, "{local} is never listed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        (entry.listener.as_str(), entry.kind.as_str()),
        ("http", "http")
    );
    drop(idle);
}

#[tokio::test]
async fn the_tail_streams_lines_written_after_it_connected_and_filters_them() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    s.get("before.example.com", "/").await;
    s.gateway.wait_audit_lines(1).await;
    let admin = Admin::of(&s.gateway);
    let response = admin
        .client
        .stream("/audit/tail?filter=API.example.com")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    assert_eq!(s.get("denied.example.com", "/").await.status, Some(403));
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    let mut seen = String::new();
    let read = tokio::time::timeout(TIMEOUT, async {
        while !seen.contains('\n') {
            let frame = body.frame().await.unwrap().unwrap();
            if let Some(data) = frame.data_ref() {
                seen.push_str(&String::from_utf8_lossy(data));
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no line came: {seen:?}");
    assert!(seen.contains("\"api.example.com:"), "{seen}");
    assert!(!seen.contains("denied.example.com"), "filtered out: {seen}");
    assert!(
        !seen.contains("before.example.com"),
        "only lines after it connected"
    );
}

#[tokio::test]
async fn drain_turns_readiness_off_stops_accepting_and_reports() {
    let gateway = TestGateway::start(&allow_policy("[api.example.com]")).await;
    let admin = Admin::of(&gateway);
    assert_eq!(admin.get("/readyz").await.status, StatusCode::OK);
    let reply = admin.send(Method::POST, "/drain", &[], None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let report: DrainReport = serde_json::from_slice(&reply.body).unwrap();
    assert!(report.drained);
    assert_eq!(report.in_flight, 0);
    assert_eq!(
        admin.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let http = gateway.addr("http");
    let end = std::time::Instant::now() + TIMEOUT;
    while egress_testkit::client::connect(http).await.is_ok() {
        assert!(
            std::time::Instant::now() < end,
            "the listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gateway.shutdown().await);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_lists_every_route() {
    let gateway = TestGateway::start(&allow_policy("[api.example.com]")).await;
    let admin = Admin::of(&gateway);
    let doc: serde_json::Value = admin.json("/openapi.json").await;
    for route in ROUTES {
        for method in route.methods {
            assert!(
                doc["paths"][route.path][method.to_ascii_lowercase()].is_object(),
                "{method} {} is served but not documented",
                route.path
            );
        }
    }
}
