//! Who is asking: the peer address of a connection and, when the listener terminates
//! mTLS, the identity (URI SAN) of its client certificate.

use std::net::SocketAddr;

/// The source of a request or connection, as rules' `sources` match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The client's address (the peer, or what a PROXY protocol header says).
    pub addr: SocketAddr,
    /// The client certificate's URI SAN, e.g. `spiffe://cluster.local/ns/default/sa/sleep`.
    pub identity: Option<String>,
}

impl Source {
    /// A source known only by its address.
    pub fn from_addr(addr: SocketAddr) -> Self {
        Self {
            addr,
            identity: None,
        }
    }
}
