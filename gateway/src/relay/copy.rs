//! The copying stage: bytes read into a buffer of the gateway and written from it, for
//! any pair of streams (a TLS session the listener terminated, say).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::buffers::Buffer;
use super::Stage;

/// A buffer with `buf[pos..cap]` still to write, held only from a read until its bytes
/// are written and the next read would block.
#[derive(Default)]
pub(super) struct Copied {
    held: Option<Held>,
}

struct Held {
    buf: Buffer,
    pos: usize,
    cap: usize,
}

impl<R, W> Stage<R, W> for Copied
where
    R: AsyncRead + ?Sized,
    W: AsyncWrite + ?Sized,
{
    // The writer may be a TLS session.
    const SHUTDOWN_BEFORE_CLOSE: bool = true;

    fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |held| held.cap - held.pos)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, from: Pin<&mut R>) -> Poll<io::Result<usize>> {
        let held = self.held.get_or_insert_with(|| Held {
            buf: Buffer::take(),
            pos: 0,
            cap: 0,
        });
        let mut read = ReadBuf::new(&mut held.buf);
        ready!(from.poll_read(cx, &mut read))?;
        let n = read.filled().len();
        (held.pos, held.cap) = (0, n);
        Poll::Ready(Ok(n))
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>, to: Pin<&mut W>) -> Poll<io::Result<usize>> {
        let Some(held) = &mut self.held else {
            return Poll::Ready(Ok(0));
        };
        let n = ready!(to.poll_write(cx, &held.buf[held.pos..held.cap]))?;
        held.pos += n;
        Poll::Ready(Ok(n))
    }

    fn release(&mut self) {
        self.held = None;
    }
}
