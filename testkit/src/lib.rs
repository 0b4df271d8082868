//! Test and load helpers for egress-gateway: stub upstreams, a DNS server for tests,
//! certificates made at run time. Depends on no workspace crate.
//!
//! Everything here binds real sockets on loopback, on port 0, so tests run in parallel
//! without fixed ports. Servers stop when their handle is dropped.
//!
//! - [`upstream`]: [`StubUpstream`] (HTTP/1.1 and h2c echo, status, delay, reset, bytes,
//!   stream routes, recording what reached it), [`BlackholeUpstream`], [`ClosedPort`].
//! - [`dns`]: [`TestDns`], an authoritative UDP and TCP DNS server answering from a table
//!   that tests change at run time.
//! - [`tls`]: [`TestCa`] issuing server and client certificates with rcgen.
//! - [`client`]: raw-byte and keep-alive HTTP clients for driving the gateway.
//! - [`wait`]: waiting for a condition with a deadline instead of sleeping.
//! - [`etcd`]: [`TestEtcd`](etcd::TestEtcd), a real etcd on loopback ports, stoppable and
//!   restartable; [`relay`]: [`Relay`](relay::Relay), a TCP relay a test can black-hole.
//! - [`disk`]: [`SmallDisk`](disk::SmallDisk), a tiny tmpfs to fill up.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use egress_testkit::{KeepAliveClient, StubUpstream, TestDns};
//!
//! let upstream = StubUpstream::start().await;
//! let dns = TestDns::start().await;
//! dns.set("api.example.com", ["127.0.0.1".parse()?]);
//!
//! // A gateway under test would be given `dns.addr()` and a rule for api.example.com;
//! // here the client talks to the stub directly.
//! let mut client = KeepAliveClient::connect(upstream.addr()).await?;
//! let response = client.get("/status/418").await?;
//! assert_eq!(response.status, 418);
//! assert_eq!(upstream.request_count(), 1);
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod disk;
pub mod dns;
pub mod etcd;
pub mod relay;
pub mod rng;
pub mod tls;
pub mod upstream;
pub mod wait;

mod body;

pub use client::{
    http_get, raw_request, send_slowly, ClientError, KeepAliveClient, RawResponse, Response,
};
pub use dns::TestDns;
pub use rng::XorShift;
pub use tls::{Issued, TestCa};
pub use upstream::{BlackholeUpstream, ClosedPort, ReceivedRequest, StubUpstream};
pub use wait::{wait_for, wait_until, wait_until_async, within};

/// Re-exported so tests can make temporary directories without their own dependency.
pub use tempfile;

/// Ends a test whose fixture could not start.
#[expect(
    clippy::panic,
    reason = "test fixtures fail loudly rather than hand every test a Result"
)]
pub(crate) fn fail(message: String) -> ! {
    panic!("{message}")
}
