//! The policy compiler: YAML documents as users, admin writes and etcd hand them in,
//! compiled into rules; every error located, every compiled set decidable.
//!
//! A line `# next file` splits the input into several documents of one set.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use egress_gateway::policy::edit::as_one_yaml;
use egress_gateway::policy::{
    compile, Action, HostPattern, Mode, Policy, PolicyFile, Query, SourceMatch, Verdict,
};
use egress_gateway::source::Source;
use egress_gateway::wire::host::Host;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files: Vec<PolicyFile> = text
        .split("\n# next file\n")
        .enumerate()
        .map(|(i, text)| PolicyFile {
            name: format!("policies/{i}.yaml"),
            text: text.into(),
        })
        .collect();
    match compile(&files) {
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                let file = files.iter().find(|f| f.name == e.file);
                let file = file.unwrap_or_else(|| panic!("error names no file: {e}"));
                if let Some(line) = e.line {
                    // A syntax error at the end of a text without a final newline is
                    // reported on the line after its last.
                    assert!(line >= 1 && line <= yaml_lines(&file.text) + 1, "{e}");
                }
                assert!(!e.message.is_empty());
            }
        }
        Ok(policy) => {
            // What `GET /policy` shows and admin writes store compiles to the same set.
            let one = as_one_yaml(&files, "merged");
            let again = compile(&[PolicyFile {
                name: "policies/merged.yaml".into(),
                text: one.as_str().into(),
            }])
            .unwrap_or_else(|e| panic!("the merged set does not compile: {e}\n{one}"));
            same(&policy, &again, &one);
            decide_every_host(&policy);
        }
    }
});

/// Lines as YAML counts them: CR LF, a lone CR and a lone LF each end one.
fn yaml_lines(text: &str) -> usize {
    text.replace("\r\n", "\n").matches(['\r', '\n']).count() + 1
}

fn same(a: &Policy, b: &Policy, merged: &str) {
    assert_eq!(a.listeners(), b.listeners(), "{merged}");
    assert_eq!(a.rules().len(), b.rules().len(), "{merged}");
    for (x, y) in a.rules().iter().zip(b.rules()) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.hosts, y.hosts, "{merged}");
        assert_eq!(x.action, y.action);
        assert_eq!(x.ports, y.ports);
        assert_eq!(x.sources, y.sources);
        assert_eq!(x.listeners, y.listeners);
        assert_eq!(x.route, y.route, "{merged}");
    }
    let (da, db) = (a.defaults(), b.defaults());
    assert_eq!(da.mode, db.mode);
    assert_eq!(da.connect_timeout, db.connect_timeout);
    assert_eq!(da.request_timeout, db.request_timeout);
    assert_eq!(da.idle_timeout, db.idle_timeout);
    assert_eq!(da.allow_private, db.allow_private);
}

/// Asks about every host a rule names, on its ports and listeners, from its sources:
/// the deciding rule must cover the query, and a verdict must follow from the rule (or
/// the mode) that gave it.
fn decide_every_host(policy: &Policy) {
    let mode = policy.defaults().mode;
    for rule in policy.rules() {
        let port = rule.ports.as_ref().and_then(|p| p.first()).copied();
        let listener = rule
            .listeners
            .as_ref()
            .and_then(|l| l.first())
            .cloned()
            .unwrap_or_else(|| "any".into());
        let addr = rule
            .sources
            .iter()
            .find_map(|s| match s {
                SourceMatch::Net(net) => Some(net.addr()),
                SourceMatch::Identity(_) => None,
            })
            .unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        let identity = rule.sources.iter().find_map(|s| match s {
            SourceMatch::Identity(id) => Some(id.trim_end_matches('*').to_owned() + "x"),
            SourceMatch::Net(_) => None,
        });
        let source = Source {
            addr: SocketAddr::new(addr, 40000),
            identity,
        };
        for pattern in &rule.hosts {
            let host = match pattern {
                HostPattern::Name(name) => Host::Name(name.clone()),
                HostPattern::Below(suffix) => Host::Name(format!("a.{suffix}")),
                HostPattern::AnyName => Host::Name("any.example".into()),
                HostPattern::Ip(ip) => Host::Ip(*ip),
                HostPattern::Net(net) => Host::Ip(net.addr()),
            };
            let query = Query {
                host: &host,
                port: port.unwrap_or(443),
                listener: &listener,
                source: &source,
            };
            let decision = policy.decide(&query);
            match &decision.rule {
                Some(by) => {
                    assert!(by.applies(&query), "rule {} decided {host}", by.name);
                    let want = match (by.action, mode) {
                        (Action::Allow, _) => Verdict::Allow,
                        (Action::Deny, Mode::Audit) => Verdict::WouldDeny,
                        (Action::Deny, _) => Verdict::Deny,
                    };
                    assert_eq!(decision.verdict, want);
                }
                None => {
                    // The rule asked about covers this query (a Name or Ip pattern of
                    // it matches exactly): some rule must decide.
                    if matches!(pattern, HostPattern::Name(_) | HostPattern::Ip(_))
                        && rule.applies(&query)
                    {
                        panic!("no rule decided {host}, which rule {} covers", rule.name);
                    }
                }
            }
        }
    }
}
