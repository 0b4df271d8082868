//! Decision time with 100, 10k and 100k rules (mixed exact and wildcard hosts), for a
//! rotating mix of hits and misses: the lookup must cost O(labels), not O(rules).

#![expect(clippy::unwrap_used, reason = "a benchmark's setup may fail loudly")]
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::fmt::Write;
use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use egress_gateway::policy::{compile, Policy, PolicyFile, Query};
use egress_gateway::source::Source;
use egress_gateway::wire::host::{parse_host, Host};

/// A policy of `n` rules: 3 in 4 list two exact names, 1 in 4 a wildcard; some deny,
/// some are limited to ports or sources.
fn policy(n: usize) -> Policy {
    let mut text = String::from("defaults: {mode: deny}\nrules:\n");
    for i in 0..n {
        let hosts = if i % 4 == 3 {
            format!("[\"*.zone{i}.example.net\"]")
        } else {
            format!("[api{i}.team{}.example.com, www{i}.example.org]", i % 97)
        };
        let extra = match i % 5 {
            0 => ", ports: [443]",
            1 => ", action: deny",
            2 => ", sources: [10.0.0.0/8]",
            _ => "",
        };
        writeln!(text, "  - {{name: r{i}, hosts: {hosts}{extra}}}").unwrap();
    }
    let file = PolicyFile {
        name: "bench.yaml".into(),
        text: text.into(),
    };
    compile(&[file]).unwrap()
}

/// Hits on exact names and on wildcards (at depth), and misses of several shapes.
fn hosts(n: usize) -> Vec<Host> {
    let mut out = Vec::new();
    for k in 0..64 {
        let i = (k * 7919) % n;
        let wild = i - i % 4 + 3;
        let names = [
            format!("api{i}.team{}.example.com", i % 97),
            format!("www{i}.example.org"),
            format!("a.b.c.zone{wild}.example.net"),
            format!("nope{k}.team1.example.com"),
            format!("deep.miss.{k}.example.net"),
            "zone3.example.net".to_owned(),
        ];
        out.extend(names.iter().map(|h| parse_host(h).unwrap()));
    }
    out
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    let source = Source::from_addr(SocketAddr::from(([10, 1, 2, 3], 40000)));
    for n in [100, 10_000, 100_000] {
        let policy = policy(n);
        let hosts = hosts(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut k = 0usize;
            b.iter(|| {
                k = (k + 1) % hosts.len();
                let query = Query {
                    host: &hosts[k],
                    port: if k.is_multiple_of(2) { 443 } else { 80 },
                    listener: "http",
                    source: &source,
                };
                black_box(policy.decide(black_box(&query)))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
