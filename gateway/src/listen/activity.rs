//! What a downstream HTTP connection is doing, so the listener can tell a client that
//! dribbles its request head (cut after the header timeout, with an audit line) from a
//! keep-alive connection resting between requests (closed quietly after the idle
//! timeout).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::{HeadScan, CONTENT_LENGTH, TRANSFER_ENCODING};

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const REQUEST: u8 = 2;

/// The phase a connection is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests, since the given instant.
    Idle(Instant),
    /// Bytes of a request head arrived, since the given instant.
    Head(Instant),
    /// A request is being served.
    Request,
}

/// Shared between the connection's socket, its requests and its timer.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    state: AtomicU8,
    /// The framing headers of each head read and not yet taken by its request, in order.
    heads: Mutex<VecDeque<u8>>,
    since_micros: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// A connection that has just been accepted (idle, nothing read).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            state: AtomicU8::new(IDLE),
            heads: Mutex::new(VecDeque::new()),
            since_micros: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Moves to `state`. Nothing is woken: the connection's timer checks the phase at
    /// least every header timeout, and a head's timeout counts from the time kept here.
    fn set(&self, state: u8) {
        let micros = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.since_micros.store(micros, Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        let since = self.epoch + Duration::from_micros(self.since_micros.load(Ordering::Relaxed));
        match self.state.load(Ordering::Acquire) {
            IDLE => Phase::Idle(since),
            HEAD => Phase::Head(since),
            _ => Phase::Request,
        }
    }

    /// Whether a request is being served now.
    pub fn in_request(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Marks a request head as received; the request is served until the returned
    /// guard is dropped (with its response body).
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.set(REQUEST);
        InFlight(Arc::clone(self))
    }

    /// Whether the head of the request now beginning carried both `Content-Length` and
    /// `Transfer-Encoding`. hyper drops the former silently; a gateway must refuse the
    /// pair, since another hop may frame the body by the other one. Called once per
    /// request, in order: each call takes the next head's entry.
    pub fn head_had_both_lengths(&self) -> bool {
        let framing = self
            .heads
            .lock()
            .ok()
            .and_then(|mut heads| heads.pop_front());
        framing == Some(CONTENT_LENGTH | TRANSFER_ENCODING)
    }

    /// Notes a head's framing headers; false when too many wait for their requests
    /// (bytes after an upgrade, say), and nothing more is noted.
    fn head_read(&self, framing: u8) -> bool {
        let Ok(mut heads) = self.heads.lock() else {
            return false;
        };
        if heads.len() >= MAX_PENDING_HEADS {
            return false;
        }
        heads.push_back(framing);
        true
    }

    /// Returns true when these bytes start a new request head.
    fn bytes_read(&self) -> bool {
        if self.state.load(Ordering::Acquire) == IDLE {
            self.set(HEAD);
            return true;
        }
        false
    }
}

/// The most heads noted ahead of their requests: more than hyper's read buffer holds.
const MAX_PENDING_HEADS: usize = 8192;

/// A request being served; dropping it returns the connection to idle.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.set(IDLE);
        }
    }
}

/// How long, and how much, a closing connection keeps reading what the client still
/// sends, so the last response (a 400 or 431) is not destroyed by a TCP reset.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// A socket that reports reads to its connection's [`Activity`], and closes lingering.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    linger: Option<Linger>,
    scan: HeadScan,
}

#[derive(Debug)]
struct Linger {
    deadline: Pin<Box<tokio::time::Sleep>>,
    drained: usize,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            linger: None,
            scan: HeadScan::default(),
        }
    }

    /// The socket, for a connection that stops being HTTP (a CONNECT tunnel): a tunnel
    /// passes half-closes on and must not linger-read the client's bytes away.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let this = &mut *self;
            // A scan that lost track starts again with the next head after a rest.
            if this.activity.bytes_read() && this.scan.is_lost() {
                this.scan.restart();
            }
            let activity = &this.activity;
            this.scan.feed(&buf.filled()[before..], |framing| {
                activity.head_read(framing)
            });
        }
        polled
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Shuts the write side, then reads and discards what the client still sends until
    /// it closes, or for a bounded time and size: closing with unread bytes would send a
    /// reset that can destroy the response the client has not read yet.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some(Linger {
                deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                drained: 0,
            });
        }
        let Some(linger) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 4096];
        loop {
            if linger.drained >= LINGER_BYTES || linger.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => linger.drained += buf.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
