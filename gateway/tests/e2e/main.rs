//! End-to-end tests: a real gateway on loopback, real clients, stub upstreams and a DNS
//! server for tests. One test binary, so the workspace links it once.

mod audit_lines;
mod bad_requests;
mod common;
mod forwarding;
mod guard;
mod reload;
mod upstream_failures;
