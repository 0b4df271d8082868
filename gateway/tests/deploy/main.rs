//! The deploy kit, checked offline by the tools that will read it: kustomize builds and
//! Kubernetes schemas, the gateway binary itself on the kit's configuration and policy,
//! systemd-analyze, and promtool. A missing tool fails its test and names what
//! installs it (`scripts/test.sh` does).

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

mod hosts;
mod istio;
mod kit;
mod kubernetes;
mod live;
mod monitoring;
