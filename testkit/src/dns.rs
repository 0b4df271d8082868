//! [`TestDns`]: an authoritative DNS server for tests, on UDP and TCP of one loopback
//! port, answering A and AAAA from a table that tests change while it runs (DNS
//! rebinding: first a public address, then 127.0.0.1).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

pub use hickory_proto::op::ResponseCode;

use crate::fail;

/// TTL of answers when neither the record nor [`TestDns::set_ttl`] says otherwise.
pub const DEFAULT_TTL: u32 = 60;

/// How many times to look for a port free on both UDP and TCP.
const BIND_ATTEMPTS: usize = 50;

/// Largest UDP answer for a query without EDNS (RFC 1035).
const CLASSIC_UDP_LIMIT: usize = 512;

/// Largest UDP answer we offer with EDNS (the DNS flag day 2020 value).
const EDNS_UDP_LIMIT: u16 = 1232;

/// What the server does for one name.
#[derive(Debug, Clone)]
enum Entry {
    Addrs {
        addrs: Vec<IpAddr>,
        ttl: Option<u32>,
    },
    Rcode(ResponseCode),
    Silent,
}

#[derive(Debug)]
struct Table {
    entries: HashMap<String, Entry>,
    ttl: u32,
    negative_ttl: u32,
    counts: HashMap<String, u64>,
}

/// An authoritative DNS server on `127.0.0.1:<port>`, UDP and TCP. Names are matched
/// without regard to case or a trailing dot; unknown names get NXDOMAIN, and a name with
/// no address of the asked family gets an empty NOERROR, both with an SOA in the
/// authority section (its minimum is the negative TTL) so resolvers cache them.
///
/// Give the gateway `dns.servers: ["127.0.0.1:<port>"]`. Dropping it stops the server.
#[derive(Debug)]
pub struct TestDns {
    addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    udp_task: JoinHandle<()>,
    tcp_task: JoinHandle<()>,
}

impl TestDns {
    /// Starts a server on a loopback port free for both UDP and TCP.
    ///
    /// # Panics
    /// When no such port can be found.
    pub async fn start() -> TestDns {
        match Self::try_start().await {
            Ok(dns) => dns,
            Err(e) => fail(format!("test dns: bind failed: {e}")),
        }
    }

    /// Starts a server on a loopback port free for both UDP and TCP.
    ///
    /// Fails when no such port is found in 50 attempts.
    pub async fn try_start() -> io::Result<TestDns> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let table = Arc::new(Mutex::new(Table {
            entries: HashMap::new(),
            ttl: DEFAULT_TTL,
            negative_ttl: DEFAULT_TTL,
            counts: HashMap::new(),
        }));
        let udp_task = tokio::spawn(serve_udp(udp, Arc::clone(&table)));
        let tcp_task = tokio::spawn(serve_tcp(tcp, Arc::clone(&table)));
        Ok(TestDns {
            addr,
            table,
            udp_task,
            tcp_task,
        })
    }

    /// The address it serves on, UDP and TCP alike.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it serves on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers `name` with `addrs` from now on (IPv4 ones for A, IPv6 ones for AAAA), with
    /// the server's TTL. Replaces whatever `name` had.
    pub fn set(&self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) {
        let addrs = addrs.into_iter().collect();
        self.put(name, Entry::Addrs { addrs, ttl: None });
    }

    /// Like [`TestDns::set`], with a TTL of its own for these records.
    pub fn set_with_ttl(&self, name: &str, addrs: impl IntoIterator<Item = IpAddr>, ttl: u32) {
        let addrs = addrs.into_iter().collect();
        self.put(
            name,
            Entry::Addrs {
                addrs,
                ttl: Some(ttl),
            },
        );
    }

    /// Answers `name` with this response code and no records, e.g.
    /// [`ResponseCode::ServFail`] or [`ResponseCode::Refused`].
    pub fn set_rcode(&self, name: &str, code: ResponseCode) {
        self.put(name, Entry::Rcode(code));
    }

    /// Never answers queries for `name`, so resolvers time out.
    pub fn set_silent(&self, name: &str) {
        self.put(name, Entry::Silent);
    }

    /// Forgets `name`: it answers NXDOMAIN again.
    pub fn remove(&self, name: &str) {
        self.lock().entries.remove(&normalise(name));
    }

    /// Sets the TTL of records that have none of their own (default [`DEFAULT_TTL`]).
    pub fn set_ttl(&self, secs: u32) {
        self.lock().ttl = secs;
    }

    /// Sets how long NXDOMAIN and empty answers may be cached: the SOA's TTL and minimum
    /// (default [`DEFAULT_TTL`]).
    pub fn set_negative_ttl(&self, secs: u32) {
        self.lock().negative_ttl = secs;
    }

    /// How many queries (any type, UDP or TCP) named `name` so far.
    pub fn query_count(&self, name: &str) -> u64 {
        self.lock()
            .counts
            .get(&normalise(name))
            .copied()
            .unwrap_or(0)
    }

    /// How many queries arrived so far, for all names.
    pub fn total_queries(&self) -> u64 {
        self.lock().counts.values().sum()
    }

    /// Sets every query count back to zero.
    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    fn put(&self, name: &str, entry: Entry) {
        self.lock().entries.insert(normalise(name), entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.udp_task.abort();
        self.tcp_task.abort();
    }
}

/// The table's key for a name: lower case, no trailing dot.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // Someone holds that TCP port: try another UDP port.
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no port free on both udp and tcp")))
}

async fn serve_udp(socket: UdpSocket, table: Arc<Mutex<Table>>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = respond(&table, &buf[..len], Transport::Udp) {
            if let Err(e) = socket.send_to(&reply, peer).await {
                tracing::debug!(%peer, error = %e, "test dns udp send failed");
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, table: Arc<Mutex<Table>>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections.spawn(serve_tcp_connection(stream, Arc::clone(&table)));
        while connections.try_join_next().is_some() {}
    }
}

/// Serves length-prefixed queries (RFC 1035 §4.2.2) until the client closes.
async fn serve_tcp_connection(mut stream: TcpStream, table: Arc<Mutex<Table>>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = respond(&table, &query, Transport::Tcp) else {
            continue;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(reply_len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
}

/// The encoded answer to one query message; `None` when it must go unanswered (too
/// short to carry an id, or a silent name).
fn respond(table: &Mutex<Table>, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => {
            let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
            let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return reply.to_vec().ok();
        }
    };
    let reply = build_reply(table, &request)?;
    let encoded = reply.to_vec().ok()?;
    let limit = match request.extensions() {
        Some(edns) => usize::from(edns.max_payload().clamp(512, EDNS_UDP_LIMIT)),
        None => CLASSIC_UDP_LIMIT,
    };
    if transport == Transport::Udp && encoded.len() > limit {
        // Too big for a datagram: say so, and the client retries over TCP.
        return reply.truncate().to_vec().ok();
    }
    Some(encoded)
}

fn build_reply(table: &Mutex<Table>, request: &Message) -> Option<Message> {
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    if request.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_UDP_LIMIT);
        reply.set_edns(edns);
    }
    let query = match (request.message_type(), request.op_code(), request.queries()) {
        (MessageType::Query, OpCode::Query, [query]) => query.clone(),
        (MessageType::Query, OpCode::Query, _) => {
            reply.set_response_code(ResponseCode::FormErr);
            return Some(reply);
        }
        _ => {
            reply.set_response_code(ResponseCode::NotImp);
            return Some(reply);
        }
    };
    reply.add_query(query.clone());

    let key = normalise(&query.name().to_ascii());
    let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
    *table.counts.entry(key.clone()).or_insert(0) += 1;
    let negative = soa(table.negative_ttl);
    match table.entries.get(&key) {
        None => {
            reply.set_response_code(ResponseCode::NXDomain);
            reply.add_name_server(negative);
        }
        Some(Entry::Silent) => return None,
        Some(Entry::Rcode(code)) => {
            reply.set_response_code(*code);
        }
        Some(Entry::Addrs { addrs, ttl }) => {
            let ttl = ttl.unwrap_or(table.ttl);
            let name = query.name().clone();
            let answers: Vec<Record> = addrs
                .iter()
                .filter_map(|addr| match (query.query_type(), addr) {
                    (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(A(*v4))),
                    (RecordType::AAAA, IpAddr::V6(v6)) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                })
                .map(|rdata| Record::from_rdata(name.clone(), ttl, rdata))
                .collect();
            if answers.is_empty() {
                reply.add_name_server(negative);
            } else {
                reply.add_answers(answers);
            }
        }
    }
    Some(reply)
}

/// The SOA that makes a negative answer cacheable for `negative_ttl` seconds
/// (RFC 2308: the lesser of its TTL and its minimum).
fn soa(negative_ttl: u32) -> Record {
    let mname = Name::from_ascii("ns.test.").unwrap_or_else(|_| Name::root());
    let rname = Name::from_ascii("hostmaster.test.").unwrap_or_else(|_| Name::root());
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, negative_ttl);
    Record::from_rdata(Name::root(), negative_ttl, RData::SOA(soa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalise("API.Example.COM."), "api.example.com");
        assert_eq!(normalise("api.example.com"), "api.example.com");
    }

    #[test]
    fn garbage_gets_formerr_and_a_stub_nothing() {
        let table = Mutex::new(Table {
            entries: HashMap::new(),
            ttl: 1,
            negative_ttl: 1,
            counts: HashMap::new(),
        });
        assert!(respond(&table, &[7], Transport::Udp).is_none());
        let reply = respond(&table, &[0x12, 0x34, 0xff], Transport::Udp).unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.id(), 0x1234);
        assert_eq!(reply.response_code(), ResponseCode::FormErr);
    }
}
