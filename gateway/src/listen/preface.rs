//! HTTP/2 with prior knowledge on a listener that also serves HTTP/1.1: the first bytes
//! tell which (RFC 9113 §3.4, the connection preface), and are then replayed to the
//! server that reads on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What an HTTP/2 client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The HTTP/2 connection preface.
    Http2,
    /// Anything else: HTTP/1 (or garbage, which the HTTP/1 parser answers).
    Http1,
    /// The client closed before sending a byte.
    Closed,
}

/// Judges the bytes read so far: `None` while they are still a strict prefix of the
/// preface. `eof` says the client sent all it will.
pub fn judge(read: &[u8], eof: bool) -> Option<Verdict> {
    let n = read.len().min(PREFACE.len());
    if read[..n] != PREFACE[..n] {
        return Some(Verdict::Http1);
    }
    if n == PREFACE.len() {
        return Some(Verdict::Http2);
    }
    match (eof, read.is_empty()) {
        (false, _) => None,
        (true, true) => Some(Verdict::Closed),
        (true, false) => Some(Verdict::Http1),
    }
}

/// Reads once more from `io` into `read` and judges; `None`: read again.
///
/// Fails when the read fails.
pub async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    read: &mut Vec<u8>,
) -> io::Result<Option<Verdict>> {
    let mut chunk = [0u8; 1024];
    let n = io.read(&mut chunk).await?;
    read.extend_from_slice(&chunk[..n]);
    Ok(judge(read, n == 0))
}

/// A stream that yields `prefix` before what remains of `inner`.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// Replays `prefix`, then reads `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }

    /// What is left of the prefix (not read yet), and the stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_http2_however_it_arrives() {
        assert_eq!(judge(PREFACE, false), Some(Verdict::Http2));
        let mut with_frames = PREFACE.to_vec();
        with_frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(judge(&with_frames, false), Some(Verdict::Http2));
        for cut in 0..PREFACE.len() {
            assert_eq!(judge(&PREFACE[..cut], false), None, "cut at {cut}");
        }
    }

    #[test]
    fn http1_is_known_at_the_first_differing_byte() {
        assert_eq!(judge(b"G", false), Some(Verdict::Http1));
        assert_eq!(judge(b"POST / HTTP/1.1\r\n", false), Some(Verdict::Http1));
        assert_eq!(judge(b"PRI * HTTP/1.1", false), Some(Verdict::Http1));
    }

    #[test]
    fn end_of_stream_decides() {
        assert_eq!(judge(b"", true), Some(Verdict::Closed));
        assert_eq!(judge(b"PRI", true), Some(Verdict::Http1));
    }

    #[tokio::test]
    async fn rewind_replays_then_reads_on() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b" world")
            .await
            .unwrap();
        drop(client);
        let mut rewind = Rewind::new(Bytes::from_static(b"hello"), server);
        let mut all = String::new();
        rewind.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
