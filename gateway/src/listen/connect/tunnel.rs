//! Bytes both ways through a CONNECT tunnel: half-close passed on, an idle timeout,
//! byte counts on the connection's registry entry, and revocation by a policy change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::connections::Entry;

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Both sides closed their half.
    Closed,
    /// Reading from or writing to the client failed (reset).
    ClientError,
    /// Reading from or writing to the upstream failed (reset).
    UpstreamError,
    /// No byte either way for the route's idle timeout.
    IdleTimeout,
    /// A policy change denies the destination now.
    Revoked,
    /// The gateway refused what the client sent first (the SNI check), with its reason.
    Refused(&'static str),
}

const BUFFER_LEN: usize = 16 * 1024;

/// Relays until both directions have ended, one side fails, `idle` passes without a
/// byte, or the entry is revoked. Counts into the entry's byte counters as it goes.
pub(super) async fn relay<C>(client: C, upstream: TcpStream, idle: Duration, entry: &Entry) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let up = pump(
        &mut client_read,
        &mut upstream_write,
        &entry.bytes_received,
        (&last, start),
        (End::ClientError, End::UpstreamError),
    );
    let down = pump(
        &mut upstream_read,
        &mut client_write,
        &entry.bytes_sent,
        (&last, start),
        (End::UpstreamError, End::ClientError),
    );
    let both = async {
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            let result = tokio::select! {
                r = &mut up, if !up_done => { up_done = true; r }
                r = &mut down, if !down_done => { down_done = true; r }
            };
            if let Err(end) = result {
                return end;
            }
        }
        End::Closed
    };
    tokio::select! {
        end = both => end,
        () = idle_expired(&last, start, idle) => End::IdleTimeout,
        () = entry.revoked.cancelled() => End::Revoked,
    }
}

/// Copies one direction; at its end of stream, closes the other side's write half so
/// the peer sees the half-close. Fails with the side that failed.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    count: &AtomicU64,
    (last, start): (&AtomicU64, Instant),
    (read_side, write_side): (End, End),
) -> Result<(), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER_LEN];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| read_side)?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await.map_err(|_| write_side)?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        last.store(millis(start), Ordering::Relaxed);
    }
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Resolves once `idle` has passed since the last byte either way.
async fn idle_expired(last: &AtomicU64, start: Instant, idle: Duration) {
    loop {
        let at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        if Instant::now() >= at {
            return;
        }
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::net::TcpListener;

    use super::*;
    use crate::connections::{Connections, Kind};
    use crate::source::Source;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let addrs = [addr];
        let (a, b) = tokio::join!(
            crate::upstream::connect_tcp(&addrs, Duration::from_secs(5)),
            listener.accept()
        );
        (a.unwrap().0, b.unwrap().0)
    }

    fn entry(registry: &std::sync::Arc<Connections>) -> crate::connections::Registration {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        registry.register("proxy".into(), Source::from_addr(addr), addr, Kind::Tunnel)
    }

    #[tokio::test]
    async fn relays_both_ways_passes_half_close_and_counts() {
        let (mut client, client_far) = pair().await;
        let (upstream_near, mut upstream) = pair().await;
        let registry = Connections::new();
        let registration = entry(&registry);
        let relay = relay(
            client_far,
            upstream_near,
            Duration::from_secs(10),
            registration.entry(),
        );
        let peers = async {
            client.write_all(b"hello").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            upstream.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
            upstream.write_all(b"world!").await.unwrap();
            upstream.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"world!");
        };
        let (end, ()) = tokio::join!(relay, peers);
        assert_eq!(end, End::Closed);
        let e = registration.entry();
        assert_eq!(e.bytes_received.load(Ordering::Relaxed), 5);
        assert_eq!(e.bytes_sent.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn silence_ends_in_the_idle_timeout_and_revocation_ends_at_once() {
        let registry = Connections::new();
        let (_client, client_far) = pair().await;
        let (upstream_near, _upstream) = pair().await;
        let registration = entry(&registry);
        let end = relay(
            client_far,
            upstream_near,
            Duration::from_millis(200),
            registration.entry(),
        )
        .await;
        assert_eq!(end, End::IdleTimeout);

        let (_client, client_far) = pair().await;
        let (upstream_near, _upstream) = pair().await;
        let registration = entry(&registry);
        registration.entry().revoked.cancel();
        let end = relay(
            client_far,
            upstream_near,
            Duration::from_secs(60),
            registration.entry(),
        )
        .await;
        assert_eq!(end, End::Revoked);
    }
}
