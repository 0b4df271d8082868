//! What a downstream HTTP connection is doing, so the listener can tell a client that
//! dribbles its request head (cut after the header timeout, with an audit line) from a
//! keep-alive connection resting between requests (closed quietly after the idle
//! timeout).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

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
    since_micros: AtomicU64,
    in_flight: AtomicUsize,
    changed: Notify,
}

impl Activity {
    /// A connection that has just been accepted (idle, nothing read).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            state: AtomicU8::new(IDLE),
            since_micros: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    fn set(&self, state: u8) {
        let micros = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.since_micros.store(micros, Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
        self.changed.notify_one();
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

    /// Resolves when the phase changes.
    pub async fn changed(&self) {
        self.changed.notified().await;
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

    fn bytes_read(&self) {
        if self.state.load(Ordering::Acquire) == IDLE {
            self.set(HEAD);
        }
    }
}

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

/// A socket that reports reads to its connection's [`Activity`].
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
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
            self.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
