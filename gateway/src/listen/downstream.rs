//! The client's side of a connection once it is accepted: a plain socket, or a TLS
//! session the listener terminated. Handlers read and write it the same way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A downstream connection's byte stream.
#[derive(Debug)]
pub enum Downstream {
    /// Plain TCP.
    Plain(TcpStream),
    /// A TLS session terminated by the listener (boxed: the session state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Downstream {
    /// The SNI the client sent (REQUESTED_SERVER_NAME), on a terminated TLS session.
    pub fn server_name(&self) -> Option<&str> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(s) => s.get_ref().1.server_name(),
        }
    }

    /// The protocol agreed by ALPN, on a terminated TLS session that negotiated one.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Downstream::Plain($s) => $e,
            Downstream::Tls($s) => $e,
        }
    };
}

impl AsyncRead for Downstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Downstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, s => s.is_write_vectored())
    }
}
