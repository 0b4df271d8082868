//! Packets no resolver sends, and more queries than a client should: each is answered
//! FORMERR or REFUSED, or dropped and counted, and the listener goes on answering.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use super::client::{dig, exchange, query};
use super::{dns_lines, gateway, policy};
use crate::common::Exposition;

const WAIT: Duration = Duration::from_secs(2);
/// How long a packet that gets no answer is waited for.
const SILENCE: Duration = Duration::from_millis(500);

/// A header with id 0x1234, recursion desired, and `questions` questions.
fn header(questions: u16) -> Vec<u8> {
    let mut h = vec![0x12, 0x34, 0x01, 0x00];
    h.extend_from_slice(&questions.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    h
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_are_dropped_and_answers_go_on() {
    let gw = gateway(&policy("deny", "")).await;
    let dns = gw.addr("dns");
    let mut compression_loop = header(1);
    compression_loop.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    let mut long_label = header(1);
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut long_name = header(1);
    for _ in 0..5 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'b'; 63]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    let no_question = header(1);
    let cases: [(&str, Vec<u8>); 4] = [
        ("compression loop", compression_loop),
        ("label over 63 bytes", long_label),
        ("name over 255 bytes", long_name),
        ("question count without a question", no_question),
    ];
    for (what, packet) in &cases {
        let answer = exchange(dns, packet, WAIT).await;
        let answer = answer.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(answer.id(), 0x1234, "{what}");
        assert_eq!(answer.response_code(), ResponseCode::FormErr, "{what}");
    }
    // Too short for a header, or a response: dropped.
    assert!(exchange(dns, &[1, 2, 3, 4, 5], SILENCE).await.is_none());
    let mut response = query(7, "api.example.com.", RecordType::A);
    response[2] |= 0x80;
    assert!(exchange(dns, &response, SILENCE).await.is_none());
    // Random bytes: whatever they parse as, an answer or nothing, never a crash.
    let mut rng = egress_testkit::XorShift::new(0x9E37_79B9_7F4A_7C15);
    for _ in 0..500 {
        let len = rng.below(300) as usize + 12;
        let packet = rng.bytes(len);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&packet, dns).await.unwrap();
    }
    let ok = dig(dns, &["api.example.com"]).await;
    assert_eq!(ok.data("A"), ["127.0.0.1"], "{}", ok.text);
    let lines = dns_lines(&gw, cases.len()).await;
    for line in &lines[..cases.len()] {
        assert_eq!(
            (line.details.as_str(), line.termination.as_str()),
            ("FORMERR", "malformed")
        );
    }
    let m = Exposition::wait(&gw, |m| {
        m.value_or_zero("egress_dns_queries_total", &["rcode=\"dropped\""]) >= 2.0
    })
    .await;
    assert!(m.value_or_zero("egress_dns_queries_total", &["decision=\"malformed\""]) >= 6.0);
}

#[tokio::test]
async fn a_flood_of_ten_thousand_queries_is_answered_or_refused_and_counted() {
    const QUERIES: usize = 10_000;
    const WINDOW: usize = 64;
    let gw = egress_gateway::testing::TestGateway::builder(&policy("deny", ""))
        .configure(|c| c.limits.dns_queries_per_source = 2000)
        .start()
        .await;
    let dns = gw.addr("dns");
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (mut answered, mut refused, mut sent) = (0usize, 0usize, 0usize);
    let mut outstanding = 0usize;
    while answered < QUERIES {
        while sent < QUERIES && outstanding < WINDOW {
            let id = sent as u16;
            socket
                .send_to(&query(id, "api.example.com.", RecordType::A), dns)
                .await
                .unwrap();
            sent += 1;
            outstanding += 1;
        }
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{answered} of {sent} answered, then silence"))
            .unwrap();
        let answer = hickory_proto::op::Message::from_vec(&buf[..len]).unwrap();
        match answer.response_code() {
            ResponseCode::NoError => {}
            ResponseCode::Refused => refused += 1,
            other => panic!("answered {other}"),
        }
        answered += 1;
        outstanding -= 1;
    }
    assert!(
        refused > 0,
        "2000 a second from one source should refuse some"
    );
    assert!(refused < QUERIES, "the burst should be answered");
    let lines = gw.wait_audit_lines(QUERIES).await;
    assert_eq!(lines.len(), QUERIES);
    let limited = lines
        .iter()
        .filter(|l| l.contains(" RL REFUSED rate_limited "))
        .count();
    assert_eq!(limited, refused);
    let m = Exposition::wait(&gw, |m| {
        m.value_or_zero("egress_dns_queries_total", &[]) >= QUERIES as f64
    })
    .await;
    assert_eq!(
        m.value("egress_dns_queries_total", &["decision=\"rate_limited\""]),
        refused as f64
    );
}

#[tokio::test]
async fn tcp_connections_over_the_cap_are_closed_and_counted() {
    let gw = egress_gateway::testing::TestGateway::builder(&policy("deny", ""))
        .configure(|c| c.limits.dns_tcp_connections = 2)
        .start()
        .await;
    let dns = gw.addr("dns");
    let _first = egress_testkit::client::connect(dns).await.unwrap();
    let _second = egress_testkit::client::connect(dns).await.unwrap();
    let m = Exposition::wait(&gw, |m| {
        m.value_or_zero("egress_connections_active", &["listener=\"dns\""]) >= 2.0
    })
    .await;
    assert_eq!(
        m.value("egress_connections_active", &["listener=\"dns\""]),
        2.0
    );
    let mut third = egress_testkit::client::connect(dns).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut third, &mut sink),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the third connection is closed"
    );
    let m = Exposition::wait(&gw, |m| {
        m.value_or_zero(
            "egress_connections_refused_total",
            &["reason=\"dns_tcp_connections\""],
        ) >= 1.0
    })
    .await;
    assert_eq!(
        m.value(
            "egress_connections_refused_total",
            &["listener=\"dns\"", "reason=\"dns_tcp_connections\""]
        ),
        1.0
    );
    // UDP is not held up by the idle connections.
    assert_eq!(
        dig(dns, &["api.example.com"]).await.data("A"),
        ["127.0.0.1"]
    );
}
