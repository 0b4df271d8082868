//! `TestDns` over real UDP and TCP: answers, NXDOMAIN with an SOA, name normalisation,
//! runtime changes (rebinding), query counts, and a real resolver's caching against it.

#![allow(
    clippy::disallowed_methods,
    reason = "tests dial the gateways, stubs and servers they started on loopback"
)]
#![expect(
    clippy::unwrap_used,
    reason = "helpers of these tests fail the test on any error"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use egress_testkit::dns::ResponseCode;
use egress_testkit::within;
use egress_testkit::TestDns;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::Resolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

fn query(name: &str, record_type: RecordType) -> Message {
    let mut message = Message::new();
    message
        .set_id(0x4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    message
}

async fn ask_udp(server: SocketAddr, request: &Message) -> Message {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    socket
        .send_to(&request.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let (len, _) = within(socket.recv_from(&mut buf)).await.unwrap();
    Message::from_vec(&buf[..len]).unwrap()
}

async fn ask_tcp(server: SocketAddr, request: &Message) -> Message {
    let mut stream = within(TcpSocket::new_v4().unwrap().connect(server))
        .await
        .unwrap();
    let bytes = request.to_vec().unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = within(stream.read_u16()).await.unwrap();
    let mut reply = vec![0u8; usize::from(len)];
    within(stream.read_exact(&mut reply)).await.unwrap();
    Message::from_vec(&reply).unwrap()
}

fn addresses(reply: &Message) -> Vec<IpAddr> {
    reply
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14));
const PUBLIC6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2606, 0x2800, 0x21f, 0, 0, 0, 0, 1));

#[tokio::test]
async fn answers_a_and_aaaa_from_the_table() {
    let dns = TestDns::start().await;
    dns.set_with_ttl("api.example.com", [PUBLIC, PUBLIC6], 42);

    let reply = ask_udp(dns.addr(), &query("api.example.com.", RecordType::A)).await;
    assert_eq!(reply.id(), 0x4242);
    assert_eq!(reply.message_type(), MessageType::Response);
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.authoritative());
    assert_eq!(addresses(&reply), [PUBLIC]);
    assert_eq!(reply.answers()[0].ttl(), 42);

    let reply = ask_udp(dns.addr(), &query("api.example.com.", RecordType::AAAA)).await;
    assert_eq!(addresses(&reply), [PUBLIC6]);
    assert_eq!(dns.query_count("api.example.com"), 2);
}

#[tokio::test]
async fn unknown_names_get_nxdomain_with_an_soa() {
    let dns = TestDns::start().await;
    dns.set_negative_ttl(7);
    let reply = ask_udp(dns.addr(), &query("nope.example.com.", RecordType::A)).await;
    assert_eq!(reply.response_code(), ResponseCode::NXDomain);
    assert!(reply.answers().is_empty());
    assert_eq!(reply.name_servers().len(), 1);
    let soa = reply.name_servers()[0].data();
    assert!(
        matches!(soa, RData::SOA(soa) if soa.minimum() == 7),
        "{soa:?}"
    );
    assert_eq!(dns.query_count("nope.example.com"), 1);
}

#[tokio::test]
async fn a_name_without_that_family_gets_an_empty_noerror() {
    let dns = TestDns::start().await;
    dns.set("v4only.example.com", [PUBLIC]);
    let reply = ask_udp(dns.addr(), &query("v4only.example.com.", RecordType::AAAA)).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.answers().is_empty());
    assert!(matches!(reply.name_servers()[0].data(), RData::SOA(_)));
}

#[tokio::test]
async fn names_match_without_case_or_trailing_dot() {
    let dns = TestDns::start().await;
    dns.set("API.Example.com.", [PUBLIC]);
    let reply = ask_udp(dns.addr(), &query("aPi.eXample.COM.", RecordType::A)).await;
    assert_eq!(addresses(&reply), [PUBLIC]);
    assert_eq!(dns.query_count("api.example.com"), 1);
    assert_eq!(dns.query_count("API.EXAMPLE.COM."), 1);
}

#[tokio::test]
async fn records_change_at_run_time() {
    let dns = TestDns::start().await;
    dns.set("rebind.example.com", [PUBLIC]);
    let first = ask_udp(dns.addr(), &query("rebind.example.com.", RecordType::A)).await;
    assert_eq!(addresses(&first), [PUBLIC]);

    dns.set("rebind.example.com", [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let second = ask_udp(dns.addr(), &query("rebind.example.com.", RecordType::A)).await;
    assert_eq!(addresses(&second), [IpAddr::V4(Ipv4Addr::LOCALHOST)]);

    dns.remove("rebind.example.com");
    let third = ask_udp(dns.addr(), &query("rebind.example.com.", RecordType::A)).await;
    assert_eq!(third.response_code(), ResponseCode::NXDomain);
    assert_eq!(dns.total_queries(), 3);
    dns.reset_counts();
    assert_eq!(dns.total_queries(), 0);
}

#[tokio::test]
async fn tcp_serves_the_same_table() {
    let dns = TestDns::start().await;
    dns.set("api.example.com", [PUBLIC]);
    let reply = ask_tcp(dns.addr(), &query("api.example.com.", RecordType::A)).await;
    assert_eq!(addresses(&reply), [PUBLIC]);
}

#[tokio::test]
async fn big_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let dns = TestDns::start().await;
    let many: Vec<IpAddr> = (1..=60)
        .map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)))
        .collect();
    dns.set("many.example.com", many.clone());
    let udp = ask_udp(dns.addr(), &query("many.example.com.", RecordType::A)).await;
    assert!(udp.truncated());
    assert!(udp.answers().is_empty());
    let tcp = ask_tcp(dns.addr(), &query("many.example.com.", RecordType::A)).await;
    assert_eq!(addresses(&tcp), many);

    // With EDNS the limit is larger: 60 A records (about 1 KiB) fit in 1232 bytes.
    let mut edns_query = query("many.example.com.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    edns_query.set_edns(edns);
    let udp = ask_udp(dns.addr(), &edns_query).await;
    assert!(!udp.truncated());
    assert_eq!(addresses(&udp).len(), 60);
}

#[tokio::test]
async fn rcode_and_silent_names() {
    let dns = TestDns::start().await;
    dns.set_rcode("broken.example.com", ResponseCode::ServFail);
    let reply = ask_udp(dns.addr(), &query("broken.example.com.", RecordType::A)).await;
    assert_eq!(reply.response_code(), ResponseCode::ServFail);

    dns.set_silent("slow.example.com");
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let request = query("slow.example.com.", RecordType::A).to_vec().unwrap();
    socket.send_to(&request, dns.addr()).await.unwrap();
    let mut buf = [0u8; 512];
    let waited = tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await;
    assert!(waited.is_err(), "a silent name must not be answered");
    assert_eq!(dns.query_count("slow.example.com"), 1);
}

fn resolver(dns: &TestDns) -> Resolver<TokioConnectionProvider> {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(dns.addr(), Protocol::Udp));
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    Resolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(options)
        .build()
}

#[tokio::test]
async fn a_real_resolver_resolves_and_caches_by_ttl() {
    let dns = TestDns::start().await;
    dns.set("api.example.com", [PUBLIC]);
    let resolver = resolver(&dns);

    let first = within(resolver.ipv4_lookup("api.example.com."))
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|a| IpAddr::V4(a.0)).collect::<Vec<_>>(),
        [PUBLIC]
    );
    let _second = within(resolver.ipv4_lookup("api.example.com."))
        .await
        .unwrap();
    assert_eq!(
        dns.query_count("api.example.com"),
        1,
        "the second lookup hit the cache"
    );

    let missing = within(resolver.ipv4_lookup("nope.example.com."))
        .await
        .unwrap_err();
    assert!(missing.is_nx_domain(), "{missing}");
    let _ = within(resolver.ipv4_lookup("nope.example.com."))
        .await
        .unwrap_err();
    assert_eq!(
        dns.query_count("nope.example.com"),
        1,
        "NXDOMAIN was cached"
    );
}
