//! Tests of the spliced relay over loopback sockets: bytes intact both ways, half-close,
//! pipes held only while bytes wait, and a reset named on its side.

#![allow(
    clippy::disallowed_methods,
    reason = "tests dial the gateways, stubs and servers they started on loopback"
)]
#![cfg(target_os = "linux")]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::buffers::Buffer;
use super::splice::Pipe;
use super::tests::{ends_closed_with, payload, pong_comes_back, registration, while_open};
use super::*;

/// A tunnel that stays open through each test.
fn settings() -> Settings {
    super::tests::settings(60_000, 0)
}

/// Two connected loopback sockets with small kernel buffers, so that a reader that
/// stops reading soon blocks its writer: (the outside end, the gateway's end).
async fn socket_pair() -> (TcpStream, TcpStream) {
    let small = |socket: &TcpSocket| {
        socket.set_recv_buffer_size(32 * 1024).unwrap();
        socket.set_send_buffer_size(32 * 1024).unwrap();
    };
    let listening = TcpSocket::new_v4().unwrap();
    small(&listening);
    listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = listening.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let outside = TcpSocket::new_v4().unwrap();
    small(&outside);
    let (outside, accepted) = tokio::join!(outside.connect(addr), listener.accept());
    (outside.unwrap(), accepted.unwrap().0)
}

/// (client, gateway's downstream, gateway's upstream, server).
async fn tunnel_sockets() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
    let (client, downstream) = socket_pair().await;
    let (server, upstream) = socket_pair().await;
    (client, downstream, upstream, server)
}

#[tokio::test]
async fn spliced_bytes_arrive_intact_both_ways_with_half_close() {
    let reg = registration();
    let (mut client, downstream, upstream, mut server) = tunnel_sockets().await;
    // More than a pipe holds, in both directions at once.
    let request = payload(3_000_000);
    let mut response = payload(2_500_000);
    response.reverse();
    let client_side = async {
        let (mut read, mut write) = client.split();
        let sending = async {
            write.write_all(&request).await.unwrap();
            write.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let ((), read) = tokio::join!(sending, read.read_to_end(&mut got));
        read.unwrap();
        got
    };
    let server_side = async {
        let (mut read, mut write) = server.split();
        let mut got = Vec::new();
        read.read_to_end(&mut got).await.unwrap();
        // The request's end reached the server; the answer still flows after it.
        write.write_all(&response).await.unwrap();
        write.shutdown().await.unwrap();
        got
    };
    let (ending, at_client, at_server) = tokio::join!(
        relay_sockets(downstream, upstream, reg.entry(), settings(), || {}),
        client_side,
        server_side
    );
    assert!(matches!(ending, Ending::Closed), "{ending:?}");
    assert!(at_server == request, "request changed on the way");
    assert!(at_client == response, "response changed on the way");
    assert_eq!(
        reg.entry().bytes_received.load(Ordering::Relaxed),
        3_000_000
    );
    assert_eq!(reg.entry().bytes_sent.load(Ordering::Relaxed), 2_500_000);
    assert_eq!(Pipe::held_here(), 0);
}

#[tokio::test]
async fn a_blocked_direction_keeps_its_pipe_and_a_quiet_tunnel_holds_none() {
    let reg = registration();
    let (mut client, downstream, upstream, mut server) = tunnel_sockets().await;
    let relaying = relay_sockets(downstream, upstream, reg.entry(), settings(), || {});
    tokio::pin!(relaying);
    // Far more than the sockets' and the pipe's buffers while the server reads nothing:
    // the writer blocks, and the relay waits on the upstream with bytes in its pipe.
    let payload = payload(8_000_000);
    let (mut client_read, mut client_write) = client.split();
    let writing = client_write.write_all(&payload);
    tokio::pin!(writing);
    // Wait, with a deadline, until the relay holds a pipe of bytes nobody takes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Pipe::held_here() != 1 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            ending = &mut relaying => panic!("ended: {ending:?}"),
            _ = &mut writing => panic!("8 MB went into sockets nobody reads"),
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    assert_eq!(
        Pipe::held_here(),
        1,
        "the blocked direction holds one pipe, the quiet one none"
    );
    let chat = async {
        let mut got = vec![0u8; payload.len()];
        let (written, read) = tokio::join!(&mut writing, server.read_exact(&mut got));
        written.unwrap();
        read.unwrap();
        assert!(got == payload, "bytes changed on the way");
        pong_comes_back(&mut server, &mut client_read).await;
    };
    while_open(relaying.as_mut(), chat).await;
    // Open, idle, and no pipe or buffer held in either direction.
    assert_eq!(Pipe::held_here() + Buffer::held_here(), 0);
    drop((client, server));
    ends_closed_with(relaying, reg.entry(), 8_000_000, 4).await;
}

#[tokio::test]
async fn an_upstream_reset_ends_the_tunnel_as_the_upstreams_failure() {
    let reg = registration();
    let (mut client, downstream, upstream, server) = tunnel_sockets().await;
    client.write_all(b"hello").await.unwrap();
    // A zero linger turns the close into a reset.
    TcpSocket::from_std_stream(server.into_std().unwrap())
        .set_zero_linger()
        .unwrap();
    let ending = tokio::time::timeout(
        Duration::from_secs(5),
        relay_sockets(downstream, upstream, reg.entry(), settings(), || {}),
    )
    .await
    .unwrap();
    assert!(matches!(ending, Ending::Upstream(_)), "{ending:?}");
}

#[tokio::test]
async fn without_pipes_the_bytes_are_copied_instead() {
    Pipe::refuse_here();
    let reg = registration();
    let (mut client, downstream, upstream, mut server) = tunnel_sockets().await;
    let relaying = relay_sockets(downstream, upstream, reg.entry(), settings(), || {});
    tokio::pin!(relaying);
    let payload = payload(1_000_000);
    let chat = async {
        let mut got = vec![0u8; payload.len()];
        let (written, read) = tokio::join!(client.write_all(&payload), server.read_exact(&mut got));
        written.unwrap();
        read.unwrap();
        assert!(got == payload, "bytes changed on the way");
        pong_comes_back(&mut server, &mut client).await;
    };
    while_open(relaying.as_mut(), chat).await;
    assert_eq!(Pipe::held_here(), 0, "a refused pipe was counted as held");
    drop((client, server));
    ends_closed_with(relaying, reg.entry(), 1_000_000, 4).await;
}
