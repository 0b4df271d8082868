//! Tests of the relay over in-memory pipes: both directions counted, half-close, the
//! idle timeout, revocation, reports and failures on either side.

use std::sync::Arc;

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::connections::{Connections, Kind, Registration};
use crate::source::Source;

pub(super) fn registration() -> Registration {
    Connections::new().register(
        "tls".into(),
        Source::from_addr("10.0.0.1:4000".parse().unwrap()),
        "127.0.0.1:8443".parse().unwrap(),
        Kind::Tunnel,
    )
}

pub(super) fn settings(idle_ms: u64, report_ms: u64) -> Settings {
    Settings {
        idle_timeout: Duration::from_millis(idle_ms),
        report_every: Duration::from_millis(report_ms),
    }
}

/// `len` bytes of a pattern that shows any byte lost, doubled or moved.
pub(super) fn payload(len: u32) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Once both ends have closed: the relay ends `Closed` within 5 s, having counted
/// `received` bytes from the client and `sent` to it.
pub(super) async fn ends_closed_with(
    relaying: impl std::future::Future<Output = Ending>,
    entry: &Entry,
    received: u64,
    sent: u64,
) {
    let ending = tokio::time::timeout(Duration::from_secs(5), relaying)
        .await
        .unwrap();
    assert!(matches!(ending, Ending::Closed), "{ending:?}");
    assert_eq!(entry.bytes_received.load(Ordering::Relaxed), received);
    assert_eq!(entry.bytes_sent.load(Ordering::Relaxed), sent);
}

/// Runs `chat` with the tunnel open: the test fails if the relay ends first.
pub(super) async fn while_open(
    relaying: Pin<&mut impl std::future::Future<Output = Ending>>,
    chat: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        ending = relaying => panic!("ended: {ending:?}"),
        () = chat => {}
    }
}

/// The server answers `pong` and the client reads it back.
pub(super) async fn pong_comes_back(
    server: &mut (impl AsyncWrite + Unpin),
    client: &mut (impl AsyncRead + Unpin),
) {
    server.write_all(b"pong").await.unwrap();
    let mut pong = [0u8; 4];
    client.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
}

/// (client end, gateway's downstream end, gateway's upstream end, upstream end).
fn pipes() -> (DuplexStream, DuplexStream, DuplexStream, DuplexStream) {
    let (client, downstream) = duplex(64 * 1024);
    let (upstream, server) = duplex(64 * 1024);
    (client, downstream, upstream, server)
}

#[tokio::test]
async fn bytes_flow_both_ways_and_half_close_is_passed_on() {
    let reg = registration();
    let (mut client, downstream, upstream, mut server) = pipes();
    let peers = async {
        client.write_all(b"hello upstream").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        // The client's end of stream reaches the server...
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello upstream");
        // ...and the other direction still flows after it.
        server.write_all(b"a longer answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"a longer answer");
    };
    let (ending, ()) = tokio::join!(
        relay(downstream, upstream, reg.entry(), settings(5_000, 0), || {}),
        peers
    );
    assert!(matches!(ending, Ending::Closed), "{ending:?}");
    assert_eq!(reg.entry().bytes_received.load(Ordering::Relaxed), 14);
    assert_eq!(reg.entry().bytes_sent.load(Ordering::Relaxed), 15);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_the_timeout_but_not_a_busy_one() {
    let reg = registration();
    let (mut client, downstream, upstream, mut server) = pipes();
    let started = std::time::Instant::now();
    let chatter = async {
        // Busy for longer than the idle timeout, in steps shorter than it.
        for _ in 0..6 {
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let relaying = relay(downstream, upstream, reg.entry(), settings(150, 0), || {});
    tokio::pin!(relaying);
    tokio::select! {
        ending = &mut relaying => panic!("ended while busy: {ending:?}"),
        () = chatter => {}
    }
    let ending = relaying.await;
    assert!(matches!(ending, Ending::IdleTimeout), "{ending:?}");
    // The last byte went through at 250 ms or later; the timeout counts from it.
    assert!(started.elapsed() >= Duration::from_millis(250 + 140));
    assert_eq!(reg.entry().bytes_received.load(Ordering::Relaxed), 6);
}

#[tokio::test]
async fn revocation_stops_the_tunnel_at_once() {
    let reg = registration();
    let (_client, downstream, upstream, _server) = pipes();
    let entry = Arc::clone(reg.entry());
    let revoker = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        entry.revoke("policy_revoked");
    };
    let (ending, ()) = tokio::join!(
        relay(
            downstream,
            upstream,
            reg.entry(),
            settings(60_000, 0),
            || {}
        ),
        revoker
    );
    assert!(
        matches!(ending, Ending::Revoked("policy_revoked")),
        "{ending:?}"
    );
}

#[tokio::test]
async fn reports_run_while_the_tunnel_is_open() {
    let reg = registration();
    let (client, downstream, upstream, server) = pipes();
    let mut reports = 0;
    let closer = async move {
        tokio::time::sleep(Duration::from_millis(130)).await;
        drop((client, server));
    };
    let relaying = relay(
        downstream,
        upstream,
        reg.entry(),
        settings(60_000, 40),
        || reports += 1,
    );
    let (ending, ()) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(relaying, closer)
    })
    .await
    .unwrap();
    assert!(matches!(ending, Ending::Closed), "{ending:?}");
    assert!(reports >= 2, "{reports} reports");
}

#[tokio::test]
async fn a_failing_side_ends_the_tunnel_and_is_named() {
    let reg = registration();
    let (client, downstream, upstream, server) = pipes();
    drop(server);
    let mut client = client;
    client.write_all(b"data for a gone upstream").await.unwrap();
    let ending = tokio::time::timeout(
        Duration::from_secs(5),
        relay(
            downstream,
            upstream,
            reg.entry(),
            settings(60_000, 0),
            || {},
        ),
    )
    .await
    .unwrap();
    assert!(matches!(ending, Ending::Upstream(_)), "{ending:?}");
}

#[tokio::test]
async fn a_quiet_tunnel_holds_no_buffer_and_a_blocked_one_keeps_its_bytes() {
    let reg = registration();
    let (mut client, downstream, upstream, mut server) = pipes();
    let relaying = relay(
        downstream,
        upstream,
        reg.entry(),
        settings(60_000, 0),
        || {},
    );
    tokio::pin!(relaying);
    // More than the upstream pipe holds while nobody reads it, so the relay waits on a
    // full writer with bytes held.
    let payload = payload(300_000);
    let blocked = async {
        client.write_all(&payload[..100_000]).await.unwrap();
        // The relay moves what it can until the upstream pipe is full, then holds a
        // buffer with bytes in it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while buffers::Buffer::held_here() != 1 && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        buffers::Buffer::held_here()
    };
    let held_while_blocked = tokio::select! {
        ending = &mut relaying => panic!("ended: {ending:?}"),
        held = blocked => held,
    };
    assert_eq!(held_while_blocked, 1);
    let chat = async {
        let (written, got) = tokio::join!(client.write_all(&payload[100_000..]), async {
            let mut got = vec![0u8; payload.len()];
            server.read_exact(&mut got).await.map(|_| got)
        });
        written.unwrap();
        assert!(got.unwrap() == payload, "bytes changed on the way");
        pong_comes_back(&mut server, &mut client).await;
    };
    while_open(relaying.as_mut(), chat).await;
    // Open, idle, and no copy buffer held in either direction.
    assert_eq!(buffers::Buffer::held_here(), 0);
    drop((client, server));
    ends_closed_with(relaying, reg.entry(), 300_000, 4).await;
}
