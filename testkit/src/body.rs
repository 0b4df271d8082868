//! Response bodies of the stub upstream: a sized body of repeated bytes and a chunked
//! body of numbered pieces, both made without allocating per request.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// The body type of every stub response.
pub(crate) type StubBody = BoxBody<Bytes, Infallible>;

/// One static block reused for every `/bytes/N` response, so a load test asking for
/// 1 MiB bodies measures the gateway, not the stub's allocator.
static FILL: [u8; 16 * 1024] = [b'x'; 16 * 1024];

/// A whole body from bytes already in memory.
pub(crate) fn full(bytes: impl Into<Bytes>) -> StubBody {
    Full::new(bytes.into()).boxed()
}

/// An empty body.
pub(crate) fn empty() -> StubBody {
    full(Bytes::new())
}

/// One data frame of `data`, then `trailers` (gRPC's `grpc-status` and the like).
pub(crate) fn with_trailers(data: Bytes, trailers: http::HeaderMap) -> StubBody {
    WithTrailers {
        data: Some(data),
        trailers: Some(trailers),
    }
    .boxed()
}

/// `len` bytes of `x`, with an exact size so HTTP/1.1 sends a `content-length`.
pub(crate) fn repeated(len: u64) -> StubBody {
    Repeated { remaining: len }.boxed()
}

/// `count` data frames with no size known in advance, so HTTP/1.1 sends them with
/// `transfer-encoding: chunked`, one chunk per frame.
pub(crate) fn chunks(count: u64) -> StubBody {
    Chunks { next: 0, count }.boxed()
}

struct Repeated {
    remaining: u64,
}

impl Body for Repeated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let take = usize::try_from(self.remaining).map_or(FILL.len(), |r| r.min(FILL.len()));
        self.remaining -= take as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILL[..take])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

struct Chunks {
    next: u64,
    count: u64,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.next == self.count {
            return Poll::Ready(None);
        }
        let line = format!("chunk {}\n", self.next);
        self.next += 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
    }

    fn is_end_stream(&self) -> bool {
        self.next == self.count
    }
}

struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}
