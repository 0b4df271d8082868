//! Test and load helpers for egress-gateway: stub upstreams, a DNS server for tests,
//! certificates made at run time. Depends on no workspace crate.
