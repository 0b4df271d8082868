//! The relay's copy buffers: taken when a direction reads, given back to a small free
//! list of the thread when it goes quiet, so idle tunnels hold none and busy ones do
//! not allocate per read.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Bytes read at once in each direction: one TLS record, so a record read whole is
/// written whole.
pub(super) const BUFFER_LEN: usize = 16 * 1024;

/// Buffers kept per thread for the next reads; more are freed. Enough for the tunnels
/// one worker moves bytes for at the same moment, small beside the sockets' own.
const FREE_PER_THREAD: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Buffers taken on this thread and not dropped yet, for the tests.
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A copy buffer of [`BUFFER_LEN`] bytes, back on its thread's free list when dropped.
pub(super) struct Buffer(Box<[u8]>);

impl Buffer {
    /// One from the free list, or a new one when it is empty.
    pub(super) fn take() -> Buffer {
        let reused = FREE.try_with(|free| free.borrow_mut().pop()).ok().flatten();
        #[cfg(test)]
        HELD.with(|held| held.set(held.get() + 1));
        Buffer(reused.unwrap_or_else(|| vec![0u8; BUFFER_LEN].into_boxed_slice()))
    }

    /// Buffers taken on this thread and not given back yet.
    #[cfg(test)]
    pub(super) fn held_here() -> usize {
        HELD.with(std::cell::Cell::get)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        #[cfg(test)]
        HELD.with(|held| held.set(held.get() - 1));
        let buf = std::mem::take(&mut self.0);
        // During the thread's teardown the list is gone and the buffer is just freed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < FREE_PER_THREAD {
                free.push(buf);
            }
        });
    }
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}
