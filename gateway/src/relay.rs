//! Tunnels: bytes both ways between a client and its upstream until both sides are
//! done, with the idle timeout, byte counts, half-close, revocation and periodic reports.
//!
//! Both directions run in the connection's own task (no task per direction), so a
//! tunnel ends as one unit: when either side fails, the timeout passes or the policy
//! revokes it, the whole tunnel stops and both sockets close.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};

use crate::connections::{Entry, POLICY_REVOKED};

/// Bytes read at once in each direction: one TLS record, so a record read whole is
/// written whole; two of these per tunnel.
const BUFFER_LEN: usize = 16 * 1024;

/// How a tunnel is kept.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Closed after this long with no byte either way.
    pub idle_timeout: Duration,
    /// The report callback runs this often while the tunnel is open; zero = never.
    pub report_every: Duration,
}

/// Why a tunnel ended.
#[derive(Debug)]
pub enum Ending {
    /// Both sides finished sending (each end-of-stream was passed on to the other).
    Closed,
    /// No byte either way for the idle timeout.
    IdleTimeout,
    /// Revoked (a new policy denies it); the reason for the audit line.
    Revoked(&'static str),
    /// Reading from or writing to the client failed (reset, broken pipe).
    Downstream(io::Error),
    /// Reading from or writing to the upstream failed.
    Upstream(io::Error),
}

/// Which end an I/O error came from.
enum Side {
    Downstream(io::Error),
    Upstream(io::Error),
}

/// Relays between `downstream` and `upstream` until both have finished sending, either
/// fails, `settings.idle_timeout` passes with no byte, or `entry.revoked` is cancelled.
/// Counts bytes into `entry` as they are written (`bytes_received` from the client,
/// `bytes_sent` to it) and calls `report` every `settings.report_every`.
///
/// When one side ends its stream, the other side's write half is shut down and the
/// opposite direction keeps flowing (half-close), as TCP allows.
pub async fn relay<D, U>(
    downstream: D,
    upstream: U,
    entry: &Entry,
    settings: Settings,
    mut report: impl FnMut(),
) -> Ending
where
    D: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let base = Instant::now();
    let last_active = AtomicU64::new(0);
    let (down_read, down_write) = tokio::io::split(downstream);
    let (up_read, up_write) = tokio::io::split(upstream);
    let to_upstream = pump(
        down_read,
        up_write,
        Side::Downstream,
        Side::Upstream,
        &entry.bytes_received,
        &last_active,
        base,
    );
    let to_downstream = pump(
        up_read,
        down_write,
        Side::Upstream,
        Side::Downstream,
        &entry.bytes_sent,
        &last_active,
        base,
    );
    tokio::pin!(to_upstream, to_downstream);
    let (mut up_done, mut down_done) = (false, false);

    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    let reporting = !settings.report_every.is_zero();
    let period = if reporting {
        settings.report_every
    } else {
        Duration::from_secs(3600)
    };
    let mut ticks = tokio::time::interval_at(base + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            () = entry.revoked.cancelled() => {
                return Ending::Revoked(entry.revoke_reason().unwrap_or(POLICY_REVOKED));
            }
            done = &mut to_upstream, if !up_done => match done {
                Ok(()) if down_done => return Ending::Closed,
                Ok(()) => up_done = true,
                Err(side) => return side.into(),
            },
            done = &mut to_downstream, if !down_done => match done {
                Ok(()) if up_done => return Ending::Closed,
                Ok(()) => down_done = true,
                Err(side) => return side.into(),
            },
            () = &mut idle => {
                let last = base + Duration::from_millis(last_active.load(Ordering::Relaxed));
                let deadline = last + settings.idle_timeout;
                if Instant::now() >= deadline {
                    return Ending::IdleTimeout;
                }
                idle.as_mut().reset(deadline);
            }
            _ = ticks.tick(), if reporting => report(),
        }
    }
}

/// Copies one direction until its end of stream, which it passes on by shutting down
/// the writer. `read_err` and `write_err` say which end each failure belongs to.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    read_err: fn(io::Error) -> Side,
    write_err: fn(io::Error) -> Side,
    counter: &AtomicU64,
    last_active: &AtomicU64,
    base: Instant,
) -> Result<(), Side>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER_LEN];
    loop {
        let n = from.read(&mut buf).await.map_err(read_err)?;
        if n == 0 {
            // The peer may already be gone; its end is then reported by the other
            // direction, so a failed shutdown is not an error of this one.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await.map_err(write_err)?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        let millis = u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_active.store(millis, Ordering::Relaxed);
    }
}

impl From<Side> for Ending {
    fn from(side: Side) -> Self {
        match side {
            Side::Downstream(e) => Ending::Downstream(e),
            Side::Upstream(e) => Ending::Upstream(e),
        }
    }
}

#[cfg(test)]
mod tests;
