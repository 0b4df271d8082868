//! Tunnels: bytes both ways between a client and its upstream until both sides are
//! done, with the idle timeout, byte counts, half-close, revocation and periodic reports.
//!
//! Both directions run in the connection's own task (no task per direction), so a
//! tunnel ends as one unit: when either side fails, the timeout passes or the policy
//! revokes it, the whole tunnel stops and both sockets close.
//!
//! An idle tunnel holds no copy buffer: a direction takes one from its thread's free
//! list when it reads, keeps it while bytes flow, and gives it back as soon as a read
//! would block with nothing left to write, so thousands of quiet tunnels cost their
//! sockets and little else.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, MissedTickBehavior};

use crate::connections::{Entry, POLICY_REVOKED};

mod buffers;

use buffers::Buffer;

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
    tokio::pin!(downstream, upstream);
    let base = Instant::now();
    let last_active = AtomicU64::new(0);
    let mut to_upstream = Direction::new(Side::Downstream, Side::Upstream);
    let mut to_downstream = Direction::new(Side::Upstream, Side::Downstream);

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

    let activity = Activity {
        base,
        last_active: &last_active,
    };
    loop {
        // Both directions in one future, since each one reads one stream and writes the
        // other; it finishes when both are done or either fails.
        let copying = poll_fn(|cx| {
            let up = to_upstream.poll(
                cx,
                downstream.as_mut(),
                upstream.as_mut(),
                &entry.bytes_received,
                activity,
            );
            let down = to_downstream.poll(
                cx,
                upstream.as_mut(),
                downstream.as_mut(),
                &entry.bytes_sent,
                activity,
            );
            match (up, down) {
                (Poll::Ready(Err(side)), _) | (_, Poll::Ready(Err(side))) => {
                    Poll::Ready(Ending::from(side))
                }
                (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ending::Closed),
                _ => Poll::Pending,
            }
        });
        tokio::select! {
            () = entry.revoked.cancelled() => {
                return Ending::Revoked(entry.revoke_reason().unwrap_or(POLICY_REVOKED));
            }
            ending = copying => return ending,
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

/// When the tunnel last moved a byte, in milliseconds since `base` (read by the idle
/// timer).
#[derive(Clone, Copy)]
struct Activity<'a> {
    base: Instant,
    last_active: &'a AtomicU64,
}

impl Activity<'_> {
    fn touch(self) {
        let millis = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(millis, Ordering::Relaxed);
    }
}

/// One direction's copy: the bytes read and not yet written, if any, and how far it got.
struct Direction {
    /// Held only from a read until its bytes are written and the next read would block.
    held: Option<Held>,
    /// The source ended its stream; what is held is written, then the writer shut down.
    read_done: bool,
    /// The whole direction is over: end of stream passed on.
    done: bool,
    /// Bytes were written since the last flush (a TLS writer may keep them otherwise).
    need_flush: bool,
    read_err: fn(io::Error) -> Side,
    write_err: fn(io::Error) -> Side,
}

/// A buffer with `buf[pos..cap]` still to write.
struct Held {
    buf: Buffer,
    pos: usize,
    cap: usize,
}

impl Direction {
    fn new(read_err: fn(io::Error) -> Side, write_err: fn(io::Error) -> Side) -> Self {
        Direction {
            held: None,
            read_done: false,
            done: false,
            need_flush: false,
            read_err,
            write_err,
        }
    }

    /// Copies from `from` to `to` until `from` would block (Pending), its end of stream
    /// is passed on (Ready(Ok)), or either fails. Ready(Ok) again once done.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut R>,
        mut to: Pin<&mut W>,
        counter: &AtomicU64,
        activity: Activity<'_>,
    ) -> Poll<Result<(), Side>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let (read_err, write_err) = (self.read_err, self.write_err);
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if let Some(held) = &mut self.held {
                while held.pos < held.cap {
                    let n = ready!(to.as_mut().poll_write(cx, &held.buf[held.pos..held.cap]))
                        .map_err(write_err)?;
                    if n == 0 {
                        return Poll::Ready(Err(write_err(io::ErrorKind::WriteZero.into())));
                    }
                    held.pos += n;
                    self.need_flush = true;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    activity.touch();
                }
            }
            if self.read_done {
                self.held = None;
                // The peer may already be gone; its end is then reported by the other
                // direction, so a failed shutdown is not an error of this one.
                let _ = ready!(to.as_mut().poll_shutdown(cx));
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let held = self.held.get_or_insert_with(|| Held {
                buf: Buffer::take(),
                pos: 0,
                cap: 0,
            });
            let mut read = ReadBuf::new(&mut held.buf);
            match from.as_mut().poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    (held.pos, held.cap) = (0, n);
                    self.read_done = n == 0;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(read_err(e))),
                Poll::Pending => {
                    // Nothing to write and nothing to read: the buffer goes back.
                    self.held = None;
                    if self.need_flush {
                        ready!(to.as_mut().poll_flush(cx)).map_err(write_err)?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
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
