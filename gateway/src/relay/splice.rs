//! The splicing stage (Linux): bytes move from one socket into a pipe and from the pipe
//! into the other socket inside the kernel, as page references, so a tunnel between two
//! plain sockets costs two system calls per chunk and no copy through the gateway.
//!
//! Pipes are taken like buffers: from a small free list of the thread when a direction
//! reads, given back when it goes quiet with the pipe empty, so idle tunnels hold no
//! pipe (and no descriptors beyond their sockets).

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::copy::Copied;
use super::Stage;

/// A pipe's capacity when the kernel grants it. Measured on 1 MiB CONNECT transfers,
/// 256 KiB cost 0.62 ms of gateway CPU per MiB against 0.74 with the default 64 KiB
/// (kept when the kernel refuses more); 1 MiB gained nothing over 256 KiB.
const PIPE_BYTES: usize = 256 * 1024;

/// Pipes kept per thread for the next tunnels that read; more are closed.
const FREE_PER_THREAD: usize = 32;

/// The flags of every splice: the sockets and pipes are non-blocking already, and the
/// pages are moved, not copied, where the kernel can.
const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// A pipe's two ends and its capacity.
struct Fds {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

thread_local! {
    static FREE: RefCell<Vec<Fds>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Pipes taken on this thread and not dropped yet, for the tests.
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// New pipes fail on this thread as when descriptors run out, for the tests.
    static REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A pipe taken for one direction: back on its thread's free list when dropped empty,
/// closed when dropped with bytes still in it.
pub(super) struct Pipe {
    fds: Option<Fds>,
    empty: bool,
}

impl Pipe {
    /// One from the free list, or a new one when it is empty.
    fn take() -> io::Result<Pipe> {
        #[cfg(test)]
        if REFUSED.with(std::cell::Cell::get) {
            return Err(io::Error::from_raw_os_error(24)); // EMFILE
        }
        let reused = FREE.try_with(|free| free.borrow_mut().pop()).ok().flatten();
        let fds = match reused {
            Some(fds) => fds,
            None => {
                let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
                let capacity = fcntl_setpipe_size(&write, PIPE_BYTES).unwrap_or(64 * 1024);
                Fds {
                    read,
                    write,
                    capacity,
                }
            }
        };
        #[cfg(test)]
        HELD.with(|held| held.set(held.get() + 1));
        Ok(Pipe {
            fds: Some(fds),
            empty: false,
        })
    }

    /// Pipes taken on this thread and not given back or closed yet.
    #[cfg(test)]
    pub(super) fn held_here() -> usize {
        HELD.with(std::cell::Cell::get)
    }

    /// Makes every new pipe on this thread fail, as when descriptors run out.
    #[cfg(test)]
    pub(super) fn refuse_here() {
        REFUSED.with(|refused| refused.set(true));
    }

    fn fds(&self) -> io::Result<&Fds> {
        self.fds
            .as_ref()
            .ok_or_else(|| io::Error::other("pipe already given back"))
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        #[cfg(test)]
        HELD.with(|held| held.set(held.get() - 1));
        let Some(fds) = self.fds.take() else { return };
        if !self.empty {
            return;
        }
        // During the thread's teardown the list is gone and the pipe is just closed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < FREE_PER_THREAD {
                free.push(fds);
            }
        });
    }
}

/// One direction's pipe and the bytes in it; or, when no pipe could be made (the
/// descriptors ran out), a buffer the bytes are copied through instead.
#[derive(Default)]
pub(super) struct Spliced {
    pipe: Option<Pipe>,
    held: usize,
    copied: Option<Copied>,
}

impl Stage<TcpStream, TcpStream> for Spliced {
    // Two plain sockets: closing the writer sends its FIN.
    const SHUTDOWN_BEFORE_CLOSE: bool = false;

    fn held(&self) -> usize {
        match &self.copied {
            Some(copied) => Stage::<TcpStream, TcpStream>::held(copied),
            None => self.held,
        }
    }

    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        from: Pin<&mut TcpStream>,
    ) -> Poll<io::Result<usize>> {
        if let Some(copied) = &mut self.copied {
            return Stage::<TcpStream, TcpStream>::poll_fill(copied, cx, from);
        }
        // A quiet direction takes no pipe: only once the socket has bytes.
        ready!(from.poll_read_ready(cx))?;
        let pipe = match &mut self.pipe {
            Some(pipe) => pipe,
            None => match Pipe::take() {
                Ok(pipe) => self.pipe.insert(pipe),
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe for a tunnel; copying its bytes");
                    let copied = self.copied.insert(Copied::default());
                    return Stage::<TcpStream, TcpStream>::poll_fill(copied, cx, from);
                }
            },
        };
        let fds = pipe.fds()?;
        // The pipe is empty, so a splice that would block waits on the socket alone.
        let n = ready!(poll_splice(&from, Interest::READABLE, cx, || {
            splice(&*from, None, &fds.write, None, fds.capacity, FLAGS)
        }))?;
        self.held = n;
        Poll::Ready(Ok(n))
    }

    fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        to: Pin<&mut TcpStream>,
    ) -> Poll<io::Result<usize>> {
        if let Some(copied) = &mut self.copied {
            return Stage::<TcpStream, TcpStream>::poll_drain(copied, cx, to);
        }
        let Some(pipe) = &self.pipe else {
            return Poll::Ready(Ok(0));
        };
        let fds = pipe.fds()?;
        let held = self.held;
        // The pipe holds bytes, so a splice that would block waits on the socket alone.
        let n = ready!(poll_splice(&to, Interest::WRITABLE, cx, || {
            splice(&fds.read, None, &*to, None, held, FLAGS)
        }))?;
        self.held -= n;
        Poll::Ready(Ok(n))
    }

    fn release(&mut self) {
        if let Some(copied) = &mut self.copied {
            Stage::<TcpStream, TcpStream>::release(copied);
        }
        if self.held == 0 {
            if let Some(mut pipe) = self.pipe.take() {
                pipe.empty = true;
            }
        }
    }
}

/// Waits until `socket` is ready for `interest`, then splices; a splice that would
/// block clears that readiness and waits again.
fn poll_splice(
    socket: &TcpStream,
    interest: Interest,
    cx: &mut Context<'_>,
    mut splice: impl FnMut() -> rustix::io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        let ready = if interest.is_readable() {
            socket.poll_read_ready(cx)
        } else {
            socket.poll_write_ready(cx)
        };
        ready!(ready)?;
        match socket.try_io(interest, || splice().map_err(io::Error::from)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}
