//! Admin writes as the policy directory keeps them: validated whole, applied
//! atomically, persisted as one `policy.yaml` with the replaced files in `.history/`,
//! guarded by `If-Match`, recorded with their author, rolled back, kept across a
//! restart, and refused on a read-only directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use egress_admin::api::{Applied, History};
use egress_gateway::config::Config;
use egress_gateway::testing::TestGateway;
use hyper::header::{ETAG, IF_MATCH};
use hyper::{Method, StatusCode};

use crate::admin_api::{error_of, Admin};
use crate::common::{allow_policy, Scenario};

fn top_level(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn applied(reply: &egress_admin::client::Reply) -> Applied {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

const INVALID: &str = r#"listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - name: a
    hosts: ["bad host"]
    ports: [70000]
  - name: a
    hosts: [ok.example]
    connect_timeout: soon
"#;

#[tokio::test]
async fn an_invalid_policy_answers_every_error_and_changes_nothing() {
    let policy = allow_policy("[api.example.com]");
    let gateway = TestGateway::start(&policy).await;
    let admin = Admin::of(&gateway);
    let reply = admin.put_yaml("/policy", INVALID, None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let error = error_of(&reply);
    assert!(error.error.contains("nothing changed"), "{}", error.error);
    let paths: Vec<&str> = error.details.iter().map(|d| d.path.as_str()).collect();
    for expected in [
        "rules[0].hosts[0]",
        "rules[0].ports[0]",
        "rules[1].name",
        "rules[1].connect_timeout",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} in {:#?}",
            error.details
        );
    }
    assert!(
        error.details.iter().all(|d| d.line.is_some()),
        "{:#?}",
        error.details
    );
    let json = r#"{"rules": [{"name": "a", "hosts": ["a.example"], "ports": [0]}]}"#;
    let reply = admin
        .send(
            Method::PUT,
            "/policy",
            &[],
            Some((json, "application/json")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&reply).details[0].path, "rules[0].ports[0]");
    let reply = admin
        .put_yaml("/rules/x", "hosts: [\"*.*.bad\"]\nport: 1\n", None)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&reply).details[0].path, "port", "{}", reply.text());
    assert_eq!(gateway.policy_version(), 1);
    assert_eq!(top_level(&gateway.policy_dir()), vec!["policy.yaml"]);
    let on_disk = std::fs::read_to_string(gateway.policy_dir().join("policy.yaml")).unwrap();
    assert_eq!(on_disk, policy);
}

#[tokio::test]
async fn a_write_leaves_one_policy_yaml_and_keeps_the_replaced_files_in_history() {
    let s = Scenario::start(&allow_policy("[other.example.com]")).await;
    s.gateway.write_policy(
        "extra.yaml",
        "rules: [{name: extra, hosts: [extra.example]}]\n",
    );
    assert!(s.gateway.wait_for_version(2, Duration::from_secs(10)).await);
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(403)
    );
    let admin = Admin::of(&s.gateway);
    let new = allow_policy("[api.example.com]");
    let done = applied(&admin.put_yaml("/policy", &new, Some(2)).await);
    assert_eq!(done.version, 3);
    assert!(
        done.summary.contains(&"rule extra removed".to_owned()),
        "{:?}",
        done.summary
    );
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );

    let dir = s.gateway.policy_dir();
    assert_eq!(top_level(&dir), vec![".history", "policy.yaml"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("policy.yaml")).unwrap(),
        new
    );
    assert_eq!(
        top_level(&dir.join(".history/2")),
        vec!["extra.yaml", "meta.json", "policy.yaml"]
    );
    assert_eq!(
        top_level(&dir.join(".history/3")),
        vec!["meta.json", "policy.yaml"]
    );
    let meta = std::fs::read_to_string(dir.join(".history/3/meta.json")).unwrap();
    assert!(meta.contains("\"author\": \"admin\""), "{meta}");
    assert_eq!(
        s.gateway.inner().store().reload().unwrap(),
        3,
        "the directory holds exactly what is in force: the watcher finds nothing to apply"
    );
    // A person's later edit of policy.yaml applies as usual.
    s.gateway
        .write_policy("policy.yaml", &allow_policy("[other.example.com]"));
    assert!(s.gateway.wait_for_version(4, Duration::from_secs(10)).await);
    let history: History = admin.json("/policy/history").await;
    assert_eq!(history.versions[0].author, "policy directory");
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(403)
    );
}

#[tokio::test]
async fn concurrent_writers_cannot_overwrite_each_other() {
    let gateway = TestGateway::start(&allow_policy("[api.example.com]")).await;
    let admin = Admin::of(&gateway);
    let reply = admin.get("/policy").await;
    assert_eq!(reply.headers.get(ETAG).unwrap(), "\"1\"");
    let writes = (0..4).map(|i| {
        let admin = &admin;
        async move {
            admin
                .put_yaml(&format!("/rules/r{i}"), "hosts: [x.example]\n", Some(1))
                .await
        }
    });
    let replies = futures_util::future::join_all(writes).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let stale: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::PRECONDITION_FAILED)
        .collect();
    assert_eq!(
        (ok, stale.len()),
        (1, 3),
        "one writer wins, the others are told"
    );
    assert!(error_of(stale[0]).error.contains("version 2 is in force"));
    assert_eq!(gateway.policy_version(), 2);
    let reply = admin
        .send(
            Method::DELETE,
            "/rules/allowed",
            &[(IF_MATCH, "\"1\"".into())],
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        gateway.policy_version(),
        2,
        "a stale delete changes nothing"
    );
}

#[tokio::test]
async fn history_records_who_changed_what_and_rollback_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "alice:alice-token-0123456789\nbob:bob-token-0123456789\n",
    )
    .unwrap();
    let gateway = TestGateway::builder(&allow_policy("[api.example.com]"))
        .configure(|c| c.admin.token_file = Some(tokens.clone()))
        .start()
        .await;
    let alice = Admin::with_token(&gateway, Some("alice-token-0123456789".into()));
    let bob = Admin::with_token(&gateway, Some("bob-token-0123456789".into()));
    let rule = r#"{"hosts": ["new.example"], "ports": [443]}"#;
    let reply = alice
        .send(
            Method::PUT,
            "/rules/new",
            &[],
            Some((rule, "application/json")),
        )
        .await;
    assert_eq!(applied(&reply).summary, vec!["rule new added"]);
    let reply = bob.send(Method::DELETE, "/rules/allowed", &[], None).await;
    assert_eq!(applied(&reply).version, 3);
    assert_eq!(bob.check("api.example.com", 80).await.decision, "deny");

    let history: History = alice.json("/policy/history").await;
    assert_eq!(history.current, 3);
    let rows: Vec<(u64, &str)> = history
        .versions
        .iter()
        .map(|v| (v.version, v.author.as_str()))
        .collect();
    assert_eq!(
        rows,
        vec![(3, "bob"), (2, "alice"), (1, "policy directory")]
    );
    assert_eq!(history.versions[0].summary, vec!["rule allowed removed"]);

    let reply = alice
        .send(Method::POST, "/policy/rollback/1", &[], None)
        .await;
    let done = applied(&reply);
    assert_eq!(done.version, 4);
    assert_eq!(done.summary[0], "rollback to version 1");
    assert_eq!(alice.check("api.example.com", 80).await.decision, "allow");
    assert_eq!(alice.check("new.example", 443).await.decision, "deny");
    let reply = alice
        .send(Method::POST, "/policy/rollback/99", &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(error_of(&reply).error.contains("GET /policy/history"));
    let reply = alice
        .send(Method::DELETE, "/rules/nothing", &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

fn config_for(dir: &Path) -> Config {
    let mut config = Config {
        policies: dir.join("policies"),
        drain_timeout: Duration::from_secs(5),
        listen_override: Some([127, 0, 0, 1].into()),
        ..Config::default()
    };
    config.admin.address = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin.token_file = Some(dir.join("admin.token"));
    config.audit.path = dir.join("audit.log").display().to_string();
    config
}

#[tokio::test]
async fn a_restart_serves_the_last_applied_policy_with_its_version_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let policies: PathBuf = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("policy.yaml"),
        allow_policy("[api.example.com]"),
    )
    .unwrap();
    let first = egress_gateway::app::start(config_for(dir.path()))
        .await
        .unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let token = token.trim().split_once(':').unwrap().1.to_owned();
    let client =
        egress_admin::client::Client::new(&first.admin_addr().to_string(), Some(token.clone()))
            .unwrap();
    let put = client
        .send(
            Method::PUT,
            "/rules/kept",
            &[],
            Some((b"hosts: [kept.example]\n".to_vec(), "application/yaml")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(applied(&put).version, 2);
    let before = first.store().current().sources().to_vec();
    assert!(first.shutdown().await);

    let second = egress_gateway::app::start(config_for(dir.path()))
        .await
        .unwrap();
    assert_eq!(
        second.store().version(),
        2,
        "the version survives the restart"
    );
    assert_eq!(second.store().current().sources(), &before[..]);
    let history = second.store().history();
    assert_eq!(history[0].author, "admin");
    assert_eq!(history[0].summary, vec!["rule kept added"]);
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(second.shutdown().await);
}

/// Makes a directory unwritable even for root (`chattr +i`) while it lives.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Option<Immutable> {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .ok()?;
        let guard = Immutable(dir.to_owned());
        let probe = dir.join(".probe");
        if !status.success() || std::fs::write(&probe, "x").is_ok() {
            let _ = std::fs::remove_file(probe);
            return None;
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_read_only_store_answers_409_and_changes_nothing() {
    let gateway = TestGateway::start(&allow_policy("[api.example.com]")).await;
    let admin = Admin::of(&gateway);
    let Some(_read_only) = Immutable::set(&gateway.policy_dir()) else {
        eprintln!("skipped: chattr +i is not available here, and no other honest way makes a directory read-only for root");
        return;
    };
    let reply = admin
        .put_yaml("/rules/x", "hosts: [x.example]\n", None)
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    assert!(
        error_of(&reply).error.starts_with("read-only store"),
        "{}",
        reply.text()
    );
    assert_eq!(gateway.policy_version(), 1, "the policy in force stays");
    assert_eq!(top_level(&gateway.policy_dir()), vec!["policy.yaml"]);
    let dry = admin
        .put_yaml("/rules/x?dry_run=true", "hosts: [x.example]\n", None)
        .await;
    assert_eq!(
        applied(&dry).summary,
        vec!["rule x added"],
        "a dry run still answers"
    );
}
