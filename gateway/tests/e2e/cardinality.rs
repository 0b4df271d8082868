//! A flood of denied requests to names nobody asked for before must not grow the
//! exposition: no host becomes a label, so the series stay the ones there were, and
//! what is exported stays valid for Prometheus (`promtool check metrics`).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use egress_testkit::KeepAliveClient;
use http::Method;

use crate::common::{allow_policy, Exposition, Scenario};

const REQUESTS: usize = 10_000;
const CLIENTS: usize = 8;

/// Host names no rule matches, each one different: `<random>-<n>.flood.invalid`.
struct Names(egress_testkit::XorShift);

impl Names {
    fn new(seed: u64) -> Names {
        Names(egress_testkit::XorShift::new(seed))
    }

    fn next(&mut self, n: usize) -> String {
        format!("h{:016x}-{n}.flood.invalid", self.0.next_u64())
    }
}

/// The series of an exposition: every sample's name and labels, without its value.
fn series(e: &Exposition) -> BTreeSet<String> {
    e.text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run promtool ({e}): install the Debian package prometheus \
             (scripts/test.sh installs it)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

#[tokio::test]
async fn ten_thousand_denied_random_hosts_add_no_series_and_promtool_accepts_the_exposition() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut names = Names::new(seed);
    // One allowed request and one denied one first: the series they create are the
    // ones every later request of their kind is counted in.
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    assert_eq!(s.get(&names.next(0), "/").await.status, Some(403));
    let denied = [r#"decision="deny""#];
    let before = Exposition::wait(&s.gateway, |e| {
        e.value_or_zero("egress_requests_total", &denied) == 1.0
    })
    .await;
    let (ok, said) = promtool_check(&before.text);
    assert!(ok, "promtool check metrics:\n{said}\n{}", before.text);

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut names = Names::new(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let addr = s.http();
        tasks.push(tokio::spawn(async move {
            let mut client = KeepAliveClient::connect(addr).await.unwrap();
            let mut sample = Vec::new();
            for n in 0..REQUESTS / CLIENTS {
                let host = names.next(n);
                let response = client
                    .request(Method::GET, "/", &[("host", host.as_str())], "")
                    .await
                    .unwrap();
                assert_eq!(response.status, 403, "{host}");
                if n % 500 == 0 {
                    sample.push(host);
                }
            }
            assert!(!client.is_closed(), "denials keep the connection open");
            sample
        }));
    }
    let mut sample = Vec::new();
    for task in tasks {
        sample.extend(task.await.unwrap());
    }

    let after = Exposition::wait(&s.gateway, |e| {
        e.value_or_zero("egress_requests_total", &denied) == (REQUESTS + 1) as f64
    })
    .await;
    assert_eq!(
        after.value("egress_requests_total", &denied),
        (REQUESTS + 1) as f64,
        "every denial is counted"
    );
    assert_eq!(
        after.value("egress_denials_total", &[r#"reason="no_rule""#]),
        (REQUESTS + 1) as f64
    );
    let (old, new) = (series(&before), series(&after));
    let added: Vec<&String> = new.difference(&old).collect();
    let gone: Vec<&String> = old.difference(&new).collect();
    assert!(
        added.is_empty() && gone.is_empty(),
        "the series changed: added {added:#?}, gone {gone:#?}"
    );
    assert_eq!(
        after.text.lines().count(),
        before.text.lines().count(),
        "same number of lines"
    );
    // Only the values grew, by a few digits each.
    let grown = after.text.len().saturating_sub(before.text.len());
    assert!(
        grown <= 8 * new.len(),
        "the exposition grew by {grown} bytes over {} series",
        new.len()
    );
    assert!(
        !after.text.contains("flood.invalid"),
        "no host in any label"
    );
    for host in &sample {
        assert!(
            !after.text.contains(host.as_str()),
            "{host} is in the exposition"
        );
    }
    let (ok, said) = promtool_check(&after.text);
    assert!(ok, "promtool check metrics:\n{said}\n{}", after.text);
}
