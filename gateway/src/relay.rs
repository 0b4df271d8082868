//! Tunnels: bytes both ways between a client and its upstream until both sides are
//! done, with the idle timeout, byte counts, half-close, revocation and periodic reports.
//!
//! Both directions run in the connection's own task (no task per direction), so a
//! tunnel ends as one unit: when either side fails, the timeout passes or the policy
//! revokes it, the whole tunnel stops and both sockets close.
//!
//! Between two plain sockets the bytes never enter the gateway's memory: each
//! direction splices them through a pipe in the kernel (Linux). Otherwise (a TLS
//! session the listener terminated) they are copied through a buffer.
//!
//! An idle tunnel holds neither pipe nor buffer: a direction takes one from its
//! thread's free list when it reads, keeps it while bytes flow, and gives it back as
//! soon as a read would block with nothing left to write, so thousands of quiet tunnels
//! cost their sockets and little else.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use crate::connections::{Entry, POLICY_REVOKED};

mod buffers;
mod copy;
#[cfg(target_os = "linux")]
mod splice;

use copy::Copied;

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
    report: impl FnMut(),
) -> Ending
where
    D: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    tokio::pin!(downstream, upstream);
    let to_upstream = Direction::new(Copied::default(), Side::Downstream, Side::Upstream);
    let to_downstream = Direction::new(Copied::default(), Side::Upstream, Side::Downstream);
    run(
        (downstream, upstream),
        (to_upstream, to_downstream),
        entry,
        settings,
        report,
    )
    .await
}

/// [`relay`] between two plain sockets: on Linux the bytes are spliced through a pipe
/// in the kernel, never copied into the gateway; elsewhere they are copied.
pub async fn relay_sockets(
    downstream: TcpStream,
    upstream: TcpStream,
    entry: &Entry,
    settings: Settings,
    report: impl FnMut(),
) -> Ending {
    #[cfg(target_os = "linux")]
    {
        use splice::Spliced;
        let (mut downstream, mut upstream) = (downstream, upstream);
        let to_upstream = Direction::new(Spliced::default(), Side::Downstream, Side::Upstream);
        let to_downstream = Direction::new(Spliced::default(), Side::Upstream, Side::Downstream);
        run(
            (Pin::new(&mut downstream), Pin::new(&mut upstream)),
            (to_upstream, to_downstream),
            entry,
            settings,
            report,
        )
        .await
    }
    #[cfg(not(target_os = "linux"))]
    relay(downstream, upstream, entry, settings, report).await
}

/// The tunnel's loop around its two directions: revocation, the idle timer, reports.
async fn run<D, U, SU, SD>(
    (mut downstream, mut upstream): (Pin<&mut D>, Pin<&mut U>),
    (mut to_upstream, mut to_downstream): (Direction<SU>, Direction<SD>),
    entry: &Entry,
    settings: Settings,
    mut report: impl FnMut(),
) -> Ending
where
    D: AsyncRead + AsyncWrite + ?Sized,
    U: AsyncRead + AsyncWrite + ?Sized,
    SU: Stage<D, U>,
    SD: Stage<U, D>,
{
    let base = Instant::now();
    let last_active = AtomicU64::new(0);
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
                to_downstream.done,
            );
            let down = to_downstream.poll(
                cx,
                upstream.as_mut(),
                downstream.as_mut(),
                &entry.bytes_sent,
                activity,
                to_upstream.done,
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

/// Where one direction keeps the bytes it has read from `R` and not yet written to `W`:
/// a buffer, or a pipe in the kernel.
trait Stage<R: ?Sized, W: ?Sized> {
    /// Whether the writer needs its own shutdown even when the tunnel closes right after:
    /// a TLS writer ends with a close_notify, while closing a plain socket sends the FIN
    /// that a shutdown would.
    const SHUTDOWN_BEFORE_CLOSE: bool;

    /// Bytes read and not yet written.
    fn held(&self) -> usize;

    /// Reads into the stage, which holds nothing: Ready(Ok(0)) at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, from: Pin<&mut R>) -> Poll<io::Result<usize>>;

    /// Writes some of what the stage holds: Ready(Ok(bytes written)).
    fn poll_drain(&mut self, cx: &mut Context<'_>, to: Pin<&mut W>) -> Poll<io::Result<usize>>;

    /// Gives back the buffer or pipe the stage took; called when it holds nothing.
    fn release(&mut self);
}

/// One direction's copy: its stage, and how far it got.
struct Direction<S> {
    stage: S,
    /// The source ended its stream; what is held is written, then the writer shut down.
    read_done: bool,
    /// The whole direction is over: end of stream passed on.
    done: bool,
    /// Bytes were written since the last flush (a TLS writer may keep them otherwise).
    need_flush: bool,
    read_err: fn(io::Error) -> Side,
    write_err: fn(io::Error) -> Side,
}

impl<S> Direction<S> {
    fn new(stage: S, read_err: fn(io::Error) -> Side, write_err: fn(io::Error) -> Side) -> Self {
        Direction {
            stage,
            read_done: false,
            done: false,
            need_flush: false,
            read_err,
            write_err,
        }
    }

    /// Copies from `from` to `to` until `from` would block (Pending), its end of stream
    /// is passed on (Ready(Ok)), or either fails. Ready(Ok) again once done. When the
    /// other direction is already done (`other_done`), the tunnel ends with this one and
    /// its sockets close next.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut R>,
        mut to: Pin<&mut W>,
        counter: &AtomicU64,
        activity: Activity<'_>,
        other_done: bool,
    ) -> Poll<Result<(), Side>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
        S: Stage<R, W>,
    {
        let (read_err, write_err) = (self.read_err, self.write_err);
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            while self.stage.held() > 0 {
                let n = ready!(self.stage.poll_drain(cx, to.as_mut())).map_err(write_err)?;
                if n == 0 {
                    return Poll::Ready(Err(write_err(io::ErrorKind::WriteZero.into())));
                }
                self.need_flush = true;
                counter.fetch_add(n as u64, Ordering::Relaxed);
                activity.touch();
            }
            if self.read_done {
                self.stage.release();
                // The peer may already be gone; its end is then reported by the other
                // direction, so a failed shutdown is not an error of this one.
                if !other_done || S::SHUTDOWN_BEFORE_CLOSE {
                    let _ = ready!(to.as_mut().poll_shutdown(cx));
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match self.stage.poll_fill(cx, from.as_mut()) {
                Poll::Ready(Ok(n)) => self.read_done = n == 0,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(read_err(e))),
                Poll::Pending => {
                    // Nothing to write and nothing to read: the buffer or pipe goes back.
                    self.stage.release();
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
mod splice_tests;
#[cfg(test)]
mod tests;
