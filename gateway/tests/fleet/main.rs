//! A fleet on one real etcd: replicas share the policy, converge, refuse the same bad
//! document, survive etcd going away, catch up after a partition and a compaction, and
//! leave or restart without failing a request.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod replica;
mod restart;

use std::time::Duration;

use egress_testkit::relay::Relay;
use http::Method;

use replica::{Fleet, PREFIX};

const CONVERGE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_added_through_one_replica_is_enforced_by_every_replica() {
    let fleet = Fleet::start().await;
    let a = fleet
        .replica(1)
        .seed_from(fleet.seed(&["other.example.com"]))
        .start()
        .await;
    let b = fleet.replica(2).start().await;
    let c = fleet.replica(3).start().await;
    let api = fleet.authority("api.example.com");
    for r in [&a, &b, &c] {
        assert_eq!(
            r.request(&api).await,
            403,
            "{} denies before the change",
            r.id
        );
    }

    let put = a.put_rule("api", "api.example.com").await;
    assert_eq!(put.status, 200, "{}", put.body);
    let version = a.version().await;
    assert_eq!(put.etag.as_deref(), Some(format!("\"{version}\"").as_str()));
    // The version is etcd's revision: the same number on every replica.
    let revision = fleet
        .etcd
        .ctl(&["get", &format!("{PREFIX}policy"), "-w", "json"]);
    let revision: serde_json::Value = serde_json::from_str(&revision).unwrap();
    assert_eq!(revision["kvs"][0]["mod_revision"].as_u64(), Some(version));
    for r in [&a, &b, &c] {
        r.wait_version(version, CONVERGE).await;
        assert_eq!(r.request(&api).await, 200, "{} enforces the new rule", r.id);
        assert!(
            r.metrics()
                .await
                .contains(&format!("egress_policy_version {version}")),
            "{} reports the version",
            r.id
        );
    }

    let (status, out) = b.egressctl(&["fleet", "--wait", "5s"], fleet.dir.path());
    assert!(status.success(), "{out}");
    for id in ["replica-1", "replica-2", "replica-3"] {
        let row = out
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} missing:\n{out}"));
        assert!(
            row.contains(&version.to_string()) && row.contains("yes"),
            "{row}"
        );
    }
    assert!(b.metrics().await.contains("egress_fleet_members 3"));

    let (status, out) = c.egressctl(&["status"], fleet.dir.path());
    assert!(status.success(), "{out}");
    assert!(out.contains(&format!("version {version}")), "{out}");
    assert!(out.contains("store: etcd"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_two_replicas_get_one_200_and_one_412() {
    let fleet = Fleet::start().await;
    let a = fleet.replica(1).seed_from(fleet.seed(&[])).start().await;
    let b = fleet.replica(2).start().await;
    let base = a.version().await;
    b.wait_version(base, CONVERGE).await;
    let if_match = format!("\"{base}\"");
    let headers = [
        ("content-type", "application/yaml"),
        ("if-match", if_match.as_str()),
    ];
    let (first, second) = tokio::join!(
        a.admin(
            Method::PUT,
            "/rules/api",
            &headers,
            "hosts: [api.example.com]\n"
        ),
        b.admin(
            Method::PUT,
            "/rules/other",
            &headers,
            "hosts: [other.example.com]\n"
        ),
    );
    let mut statuses = [first.status, second.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "{} / {}", first.body, second.body);

    // History and rollback answer the same through either replica.
    let version = a.version().await;
    b.wait_version(version, CONVERGE).await;
    let history_a = a.admin(Method::GET, "/policy/history", &[], "").await.body;
    let history_b = b.admin(Method::GET, "/policy/history", &[], "").await.body;
    assert_eq!(history_a, history_b);
    let history: serde_json::Value = serde_json::from_str(&history_a).unwrap();
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{history_a}");
    assert_eq!(versions[1]["author"], "seed");
    assert_eq!(versions[0]["author"], "test");

    let rollback = b
        .admin(Method::POST, &format!("/policy/rollback/{base}"), &[], "")
        .await;
    assert_eq!(rollback.status, 200, "{}", rollback.body);
    let restored = b.version().await;
    a.wait_version(restored, CONVERGE).await;
    let api = fleet.authority("api.example.com");
    let other = fleet.authority("other.example.com");
    assert_eq!(a.request(&api).await, 403);
    assert_eq!(a.request(&other).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_document_put_with_etcdctl_is_refused_by_every_replica() {
    let fleet = Fleet::start().await;
    let a = fleet
        .replica(1)
        .seed_from(fleet.seed(&["api.example.com"]))
        .start()
        .await;
    let b = fleet.replica(2).start().await;
    let version = a.version().await;
    b.wait_version(version, CONVERGE).await;

    let broken = format!(
        "listeners: [{{name: http, port: {}, protocol: htp}}]\nrules:\n  - {{name: x, hosts: [a.example.com], ports: [70000]}}\n",
        fleet.port
    );
    fleet
        .etcd
        .ctl(&["put", &format!("{PREFIX}policy"), &broken]);

    let mut details = Vec::new();
    for r in [&a, &b] {
        let ok = egress_testkit::wait::wait_until_async(CONVERGE, || async {
            r.readyz()
                .await
                .is_some_and(|(_, body)| body.contains("was refused"))
        })
        .await;
        assert!(ok, "{} reports the refusal; log:\n{}", r.id, r.log());
        let (status, body) = r.readyz().await.unwrap();
        assert_eq!(status, 200, "still ready: {body}");
        details.push(
            body.lines()
                .skip(1)
                .filter(|l| !l.starts_with("store:"))
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            r.version().await,
            version,
            "{} keeps the last good version",
            r.id
        );
        assert_eq!(r.request(&fleet.authority("api.example.com")).await, 200);
        assert!(r
            .metrics()
            .await
            .contains("egress_policy_reloads_total{result=\"rejected\"} 1"));
    }
    assert_eq!(details[0], details[1], "the same errors on every replica");
    // Every replica serves an older version than the latest revision it saw: the fleet
    // has not converged, and egressctl fleet says so with its exit status.
    let (status, out) = b.egressctl(&["fleet", "--wait", "1s"], fleet.dir.path());
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("has not converged") && out.contains("replica-1") && out.contains("replica-2"),
        "{out}"
    );
    let text = details[0].join("\n");
    assert!(
        text.contains("policy.yaml:1") && text.contains("htp"),
        "the error, with its line:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_replicas_serve_writes_fail_and_a_restarted_replica_uses_its_cache() {
    let mut fleet = Fleet::start().await;
    let a = fleet
        .replica(1)
        .seed_from(fleet.seed(&["api.example.com"]))
        .start()
        .await;
    let mut b = fleet.replica(2).start().await;
    let version = a.version().await;
    b.wait_version(version, CONVERGE).await;
    let api = fleet.authority("api.example.com");
    let other = fleet.authority("other.example.com");

    fleet.etcd.stop();
    for r in [&a, &b] {
        assert_eq!(r.request(&api).await, 200, "{} keeps serving", r.id);
    }
    let put = a.put_rule("other", "other.example.com").await;
    assert_eq!(put.status, 503, "{}", put.body);
    assert!(
        put.body.contains(&fleet.etcd.endpoint()),
        "names the endpoints: {}",
        put.body
    );
    let ok = egress_testkit::wait::wait_until_async(CONVERGE, || async {
        a.readyz()
            .await
            .is_some_and(|(s, body)| s == 200 && body.contains("store: unreachable since"))
    })
    .await;
    assert!(ok, "readyz says the store is down: {:?}", a.readyz().await);
    assert!(a.metrics().await.contains("egress_policy_store_up 0"));

    // A replica restarted during the outage serves from its cache.
    b.kill();
    let b = fleet.replica(2).start().await;
    assert_eq!(b.version().await, version);
    assert_eq!(b.request(&api).await, 200);

    fleet.etcd.restart().unwrap();
    let put = egress_testkit::wait::wait_until_async(CONVERGE, || async {
        a.put_rule("other", "other.example.com").await.status == 200
    })
    .await;
    assert!(put, "a write succeeds once etcd is back");
    let version = a.version().await;
    for r in [&a, &b] {
        r.wait_version(version, CONVERGE).await;
        assert_eq!(r.request(&other).await, 200, "{} enforces the write", r.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_etcd_catches_up_and_recovers_from_a_compaction() {
    let fleet = Fleet::start().await;
    let a = fleet.replica(1).seed_from(fleet.seed(&[])).start().await;
    let relay = Relay::start(fleet.etcd.addr()).await.unwrap();
    let b = fleet.replica(2).endpoint(relay.endpoint()).start().await;
    b.wait_version(a.version().await, CONVERGE).await;
    let api = fleet.authority("api.example.com");
    let other = fleet.authority("other.example.com");

    // Cut, change, heal: the watch resumes from the last revision seen.
    relay.cut();
    let put = a.put_rule("api", "api.example.com").await;
    assert_eq!(put.status, 200);
    let version = a.version().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.request(&api).await,
        403,
        "cut off, b still serves the old policy"
    );
    relay.heal();
    b.wait_version(version, Duration::from_secs(20)).await;
    assert_eq!(b.request(&api).await, 200);

    // Cut, change, compact past b's revision, heal: b reads everything again.
    relay.cut();
    let put = a.put_rule("other", "other.example.com").await;
    assert_eq!(put.status, 200);
    let version = a.version().await;
    fleet.etcd.ctl(&["put", "/unrelated", "x"]);
    fleet
        .etcd
        .ctl(&["compact", &fleet.etcd.revision().to_string()]);
    relay.heal();
    b.wait_version(version, Duration::from_secs(20)).await;
    assert_eq!(b.request(&other).await, 200);
    assert!(
        b.log().contains("compacted"),
        "the full read is logged:\n{}",
        b.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_prefix_without_seed_is_not_ready_until_a_policy_is_applied() {
    let fleet = Fleet::start().await;
    let a = fleet.replica(1).spawn();
    let ok = egress_testkit::wait::wait_until_async(CONVERGE, || async {
        a.readyz().await.is_some_and(|(s, _)| s == 503)
    })
    .await;
    assert!(ok, "not ready: {:?}", a.readyz().await);
    let (_, body) = a.readyz().await.unwrap();
    assert!(body.contains("no policy loaded"), "{body}");

    let policy = fleet.policy(&["api.example.com"]);
    let put = a
        .admin(
            Method::PUT,
            "/policy",
            &[("content-type", "application/yaml")],
            &policy,
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    a.wait_ready().await;
    // The listener declared by the applied policy binds live.
    assert_eq!(a.request(&fleet.authority("api.example.com")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_over_etcds_value_limit_is_stored_in_pieces_and_read_back_whole() {
    let fleet = Fleet::start().await;
    let a = fleet.replica(1).seed_from(fleet.seed(&[])).start().await;
    let b = fleet.replica(2).start().await;
    // ~3.5 MB of YAML that compresses poorly: more than etcd's 1.5 MiB per value, and
    // more than one 1 MiB piece once compressed.
    let mut policy = fleet.policy(&["api.example.com"]);
    let mut rng = egress_testkit::XorShift::new(0x2545_f491_4f6c_dd1d);
    for i in 0..40_000 {
        let x = rng.next_u64();
        policy.push_str(&format!(
            "  - {{name: filler-{i}, hosts: [h{x:016x}{:016x}.example]}}\n",
            x.rotate_left(29)
        ));
    }
    policy.push_str("  - {name: last, hosts: [other.example.com]}\n");
    assert!(policy.len() > 3_000_000, "{}", policy.len());
    let put = a
        .admin(
            Method::PUT,
            "/policy",
            &[("content-type", "application/yaml")],
            &policy,
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let version = a.version().await;
    b.wait_version(version, Duration::from_secs(60)).await;
    assert_eq!(
        b.request(&fleet.authority("other.example.com")).await,
        200,
        "the set's last rule is there"
    );
    let pieces = fleet
        .etcd
        .ctl(&["get", "--prefix", &format!("{PREFIX}blobs/"), "--keys-only"]);
    let pieces = pieces.lines().filter(|l| !l.is_empty()).count();
    assert!(pieces >= 2, "stored in {pieces} pieces");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_log_in_to_an_etcd_with_authentication_and_a_wrong_password_is_reported() {
    let fleet = Fleet::start().await;
    fleet
        .etcd
        .ctl(&["user", "add", "root", "--new-user-password=root-secret"]);
    fleet.etcd.ctl(&["user", "grant-role", "root", "root"]);
    fleet.etcd.ctl(&["auth", "enable"]);
    let a = fleet
        .replica(1)
        .auth("root", "root-secret")
        .seed_from(fleet.seed(&["api.example.com"]))
        .start()
        .await;
    assert_eq!(a.request(&fleet.authority("api.example.com")).await, 200);
    let put = a.put_rule("other", "other.example.com").await;
    assert_eq!(put.status, 200, "{}", put.body);

    let b = fleet.replica(2).auth("root", "wrong").spawn();
    let said = egress_testkit::wait::wait_until_async(CONVERGE, || async {
        b.readyz()
            .await
            .is_some_and(|(s, body)| s == 503 && body.contains("authentication failed"))
    })
    .await;
    assert!(said, "not ready, saying why: {:?}", b.readyz().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_speak_tls_to_etcd_with_a_client_certificate() {
    let fleet = Fleet::start_tls().await;
    assert!(fleet.etcd.endpoint().starts_with("https://"));
    let a = fleet
        .replica(1)
        .seed_from(fleet.seed(&["api.example.com"]))
        .start()
        .await;
    let b = fleet.replica(2).start().await;
    let put = a.put_rule("other", "other.example.com").await;
    assert_eq!(put.status, 200, "{}", put.body);
    b.wait_version(a.version().await, CONVERGE).await;
    assert_eq!(b.request(&fleet.authority("other.example.com")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_leaves_the_fleet_when_its_lease_expires() {
    let fleet = Fleet::start().await;
    let a = fleet.replica(1).seed_from(fleet.seed(&[])).start().await;
    let mut b = fleet.replica(2).start().await;
    let members = || async {
        let body = a.admin(Method::GET, "/fleet", &[], "").await.body;
        let fleet: serde_json::Value = serde_json::from_str(&body).unwrap();
        fleet["members"].as_array().unwrap().len()
    };
    let both =
        egress_testkit::wait::wait_until_async(CONVERGE, || async { members().await == 2 }).await;
    assert!(both, "both registered");
    b.kill();
    // SIGKILL: no drain, no revoke; the 5 s lease runs out.
    let gone = egress_testkit::wait::wait_until_async(Duration::from_secs(15), || async {
        members().await == 1
    })
    .await;
    assert!(gone, "the dead replica left the fleet");
    assert!(a.metrics().await.contains("egress_fleet_members 1"));
}
