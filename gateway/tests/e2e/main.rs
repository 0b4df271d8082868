//! End-to-end tests: a real gateway on loopback, real clients, stub upstreams and a DNS
//! server for tests. One test binary, so the workspace links it once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "tests dial the gateways, stubs and servers they started on loopback"
)]

mod admin_api;
mod admin_store;
mod audit_disk;
mod audit_lines;
mod bad_requests;
mod cardinality;
mod clients;
mod common;
mod connect;
mod dns;
mod drain;
mod forwarding;
mod guard;
mod h2;
mod istio_names;
mod limits;
mod metrics;
mod mtls;
mod observability;
mod proxy_protocol;
mod reload;
mod rule_limits;
mod stats;
mod tcp;
mod tls_origination;
mod tls_passthrough;
mod tls_scenario;
mod tunnels;
mod upstream_failures;
