//! `egress-loadtest`: load generator, stub upstreams and peer comparison for
//! egress-gateway. It speaks to the proxies only over loopback sockets, like a user.
//!
//! ```text
//! upstream   stub upstreams: HTTP/1.1 + h2c (fixed bodies, /bytes/N, /delay/MS), TLS, echo, sink
//! run        one scenario against one target: closed loop or open loop (wrk2's correction)
//! compare    one scenario against direct, egress-gateway, nginx, HAProxy, Squid, alternated
//! idle       the gateway's memory at rest and per idle CONNECT tunnel
//! ```
//!
//! Reading order: [`scenario`] (what a request is), [`schedule`] (when it is sent),
//! [`client`] (how it is sent), [`run`] (the engine), [`report`] (what it measured),
//! [`upstream`] (what answers), [`proc_stat`], [`peers`], [`targets`] and [`compare`]
//! (the side-by-side), [`plot`].

pub mod client;
pub mod compare;
pub mod converge;
pub mod histogram;
pub mod idle;
pub mod machine;
pub mod peers;
pub mod plot;
pub mod policy_load;
pub mod proc_stat;
pub mod reload;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod table;
pub mod targets;
pub mod upstream;
