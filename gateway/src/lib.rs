//! egress-gateway: a dedicated egress gateway appliance.
//!
//! Traffic that leaves a cluster or service mesh passes through here. Each request or
//! connection travels one path, and each arrow below is a module boundary:
//!
//! ```text
//! accept (listen) → read destination (wire) → identify source (source)
//!   → decide (policy) → resolve (resolve) → guard (guard)
//!   → connect upstream (upstream) → relay (listen/http, relay)
//!   → record (audit + metrics), also for denials and errors
//! ```
//!
//! [`egress`] strings decide → resolve → guard → connect together, so every listener
//! runs the same sequence; [`app`] wires the parts and owns the process lifecycle.

pub mod app;
pub mod audit;
pub mod config;
pub mod connections;
pub mod control;
pub mod egress;
pub mod error;
pub mod guard;
pub mod import;
pub mod listen;
pub mod metrics;
pub mod policy;
pub mod rate;
pub mod relay;
pub mod resolve;
pub mod source;
pub mod upstream;
pub mod wire;

#[cfg(feature = "test-util")]
pub mod testing;
