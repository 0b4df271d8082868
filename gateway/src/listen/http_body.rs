//! Bodies on the HTTP path: the request body counted on its way upstream, and the
//! response body that carries the request's audit record to its last byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::activity::InFlight;
use crate::audit::{Recorder, ResponseFlags};
use crate::upstream::Lease;

/// The error a response body ends with when the upstream fails mid-body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A downstream request body counting the bytes it carries upstream (BYTES_RECEIVED).
#[derive(Debug)]
pub struct CountingBody {
    inner: Incoming,
    count: Arc<AtomicU64>,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl CountingBody {
    /// Wraps `inner`, adding its data bytes to `count` and setting `failed` when the
    /// client's body turns out malformed or cut short.
    pub fn new(
        inner: Incoming,
        count: Arc<AtomicU64>,
        failed: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self {
            inner,
            count,
            failed,
        }
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Some(Err(_)) => self.failed.store(true, Ordering::Relaxed),
            None => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a response body streams.
enum Source {
    /// A local reply.
    Local(Option<Bytes>),
    /// The upstream's body, with the pooled connection to give back at its end and the
    /// route's deadline, which covers the body too.
    Upstream {
        body: Incoming,
        lease: Option<Lease>,
        deadline: Option<Pin<Box<Sleep>>>,
    },
}

/// A response body that finishes the request's audit record when its last byte is out,
/// or records the failure (upstream reset, timeout, client gone) when it ends early.
pub struct ResponseBody {
    source: Source,
    recorder: Option<Recorder>,
    sent: u64,
    in_flight: Option<InFlight>,
    /// The rule's limits count the request in flight until its body is done.
    admitted: Option<crate::egress::limits::Admitted>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// A local reply of `text`.
    pub fn local(text: Bytes, recorder: Recorder) -> Self {
        Self {
            source: Source::Local(Some(text)),
            recorder: Some(recorder),
            sent: 0,
            in_flight: None,
            admitted: None,
        }
    }

    /// No body and no record: a CONNECT tunnel writes its own audit line when it ends.
    pub fn empty() -> Self {
        Self {
            source: Source::Local(None),
            recorder: None,
            sent: 0,
            in_flight: None,
            admitted: None,
        }
    }

    /// The upstream's body.
    pub fn upstream(
        body: Incoming,
        lease: Lease,
        deadline: Option<Instant>,
        recorder: Recorder,
    ) -> Self {
        Self {
            source: Source::Upstream {
                body,
                lease: Some(lease),
                deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            },
            recorder: Some(recorder),
            sent: 0,
            in_flight: None,
            admitted: None,
        }
    }

    /// Keeps the connection marked busy until this body is done.
    pub fn with_in_flight(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// Keeps the request counted by its rule's `max_concurrent` until this body is done.
    pub fn with_admitted(mut self, admitted: crate::egress::limits::Admitted) -> Self {
        self.admitted = Some(admitted);
        self
    }

    fn finish(&mut self, flag: Option<ResponseFlags>) {
        self.in_flight = None;
        self.admitted = None;
        if let Source::Upstream { lease, .. } = &mut self.source {
            // Only a body read to its end leaves the connection reusable.
            if let Some(lease) = lease.take() {
                if flag.is_none() {
                    lease.release();
                }
            }
        }
        if let Some(mut recorder) = self.recorder.take() {
            let record = recorder.record();
            record.bytes_sent = self.sent;
            if let Some(flag) = flag {
                record.response_flags.insert(flag);
            }
            recorder.finish();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.source {
            Source::Local(text) => Ok(text.take().map(Frame::data)),
            Source::Upstream { body, deadline, .. } => {
                if let Some(deadline) = deadline {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.finish(Some(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT));
                        return Poll::Ready(Some(Err("upstream response timed out".into())));
                    }
                }
                match ready!(Pin::new(body).poll_frame(cx)) {
                    Some(Ok(frame)) => Ok(Some(frame)),
                    None => Ok(None),
                    Some(Err(e)) => Err(e),
                }
            }
        };
        match polled {
            Ok(Some(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Err(e) => {
                this.finish(Some(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION));
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Local(text) => text.is_none(),
            Source::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Local(Some(text)) => SizeHint::with_exact(text.len() as u64),
            Source::Local(None) => SizeHint::with_exact(0),
            Source::Upstream { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper drops without polling the bodies of HEAD, 204 and 304 responses; those
        // are complete, and so is a local reply. Any other upstream body dropped early
        // means the client left.
        let complete = matches!(self.source, Source::Local(_)) || self.is_end_stream();
        if complete {
            self.finish(None);
        } else {
            self.finish(Some(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION));
        }
    }
}
