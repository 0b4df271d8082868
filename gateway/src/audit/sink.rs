//! Where audit lines go: a file or stdout, written by a thread of its own so disk I/O
//! never blocks the data path.
//!
//! [`AuditSink::send`] appends the line to one shared batch under a short lock and wakes
//! nobody: the writer thread takes the whole batch every few milliseconds while traffic
//! flows, so a busy gateway pays no thread wake-up per line. A sender wakes the writer
//! only when it sleeps idle or the batch passes half its capacity. A full batch drops
//! the line (counted). Control messages keep their place among the lines: a reopen
//! carries the lines sent before it, which go to the old file.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::broadcast;

use writer::{Output, Writer};

mod writer;

/// Where lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to, reopened on SIGHUP.
    File(PathBuf),
}

/// Rotation by size (`audit.max_bytes`, `audit.keep`), beside SIGHUP for logrotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A file at least this large is rotated (between batches: lines stay whole).
    pub max_bytes: u64,
    /// Rotated files kept (`audit.log.1` ... `audit.log.N`); 0 keeps none.
    pub keep: usize,
}

/// The writer's handle: queue lines, reopen, flush.
pub struct AuditSink {
    tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    tail: broadcast::Sender<Arc<str>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Message {
    /// Take the batch now (flush, reopen, a full batch, or the writer sleeps idle).
    Wake,
    Close,
}

/// Lines waiting for the writer, in send order, and where in them reopens fall.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) bytes: Vec<u8>,
    pub(super) lines: usize,
    /// Byte offsets in `bytes` at which the files are reopened: what comes before goes
    /// to the old files, what comes after to the new ones.
    pub(super) reopens: Vec<usize>,
}

/// State shared by the handle and the writer thread.
struct Shared {
    capacity: usize,
    /// Lines waiting for the writer; at most `capacity`.
    batch: Mutex<Batch>,
    /// The writer sleeps long (no traffic lately): the next line must wake it.
    idle: AtomicBool,
    /// Lines accepted into the queue since the start.
    accepted: AtomicU64,
    written: AtomicU64,
    /// Lines dropped because the queue was full (or the sink closed).
    dropped: AtomicU64,
    /// Lines lost because a target could not be written.
    lost: AtomicU64,
    write_errors: AtomicU64,
    /// Since when the last writes have been failing (RFC 3339), if they are.
    failing: Mutex<Option<String>>,
    closed: AtomicBool,
    progress: Mutex<Progress>,
    progressed: Condvar,
}

/// What the writer has finished, for `flush` and `close` to wait on.
#[derive(Default)]
struct Progress {
    /// Lines taken off the queue and flushed (or failed).
    done: u64,
    stopped: bool,
}

/// How long the writer waits for a line before reporting pending drops anyway.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a busy writer takes the batch: the longest a line waits to reach the file.
const BUSY_INTERVAL: Duration = Duration::from_millis(10);
/// Live-tail subscribers that fall this many lines behind lose lines (they see `Lagged`).
const TAIL_CAPACITY: usize = 1024;
const BUFFER_BYTES: usize = 64 * 1024;
/// How often written lines are synced to disk by default: a power loss loses at most
/// about this much.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

impl AuditSink {
    /// Opens every target and starts the writer thread; at most `capacity` lines wait
    /// in the queue (at least 1).
    ///
    /// Fails when a file cannot be opened for appending (the error names its path) or
    /// the thread cannot be started.
    pub fn open(targets: Vec<AuditTarget>, capacity: usize) -> io::Result<AuditSink> {
        Self::open_with(targets, capacity, Some(SYNC_INTERVAL), None)
    }

    /// [`AuditSink::open`], syncing files to disk every `sync_every` (`None`: never; the
    /// kernel writes them back when it will) and rotating them by size when asked.
    ///
    /// Fails as [`AuditSink::open`].
    pub fn open_with(
        targets: Vec<AuditTarget>,
        capacity: usize,
        sync_every: Option<Duration>,
        rotation: Option<Rotation>,
    ) -> io::Result<AuditSink> {
        let outputs = targets
            .into_iter()
            .map(Output::open)
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            capacity: capacity.max(1),
            batch: Mutex::new(Batch::default()),
            idle: AtomicBool::new(true),
            accepted: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            failing: Mutex::new(None),
            closed: AtomicBool::new(false),
            progress: Mutex::new(Progress::default()),
            progressed: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel();
        let (tail, _) = broadcast::channel(TAIL_CAPACITY);
        let writer = Writer::new(rx, outputs, Arc::clone(&shared), sync_every, rotation);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())?;
        Ok(AuditSink {
            tx,
            shared,
            tail,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues one line (with its newline); never blocks. When the queue is full, or the
    /// sink is closed, the line is dropped and counted.
    pub fn send(&self, line: String) {
        self.send_str(&line);
    }

    /// [`AuditSink::send`] without giving up a `String`: the line is copied into the
    /// batch, so callers can render into a buffer they reuse.
    pub fn send_str(&self, line: &str) {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Relaxed) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let half_full = {
            let mut batch = shared.lock_batch();
            if batch.lines >= shared.capacity {
                drop(batch);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            batch.bytes.extend_from_slice(line.as_bytes());
            batch.lines += 1;
            shared.accepted.fetch_add(1, Ordering::AcqRel);
            batch.lines == shared.capacity / 2 + 1
        };
        // Tail readers get the line from here, so the writer stays a plain copy loop;
        // nobody listening costs one atomic load.
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(Arc::from(line));
        }
        if half_full || shared.idle.swap(false, Ordering::AcqRel) {
            let _ = self.tx.send(Message::Wake);
        }
    }

    /// Reopens the files by path (logrotate, SIGHUP): lines sent before this call go to
    /// the old file, lines after it to the new one. Asynchronous; never blocks. A file
    /// that cannot be reopened is logged and keeps its old handle.
    pub fn reopen(&self) {
        {
            let mut batch = self.shared.lock_batch();
            let at = batch.bytes.len();
            batch.reopens.push(at);
        }
        let _ = self.tx.send(Message::Wake);
    }

    /// Waits until every line queued before this call is written and flushed, at most
    /// `timeout`. Returns whether that happened in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let target = self.shared.accepted.load(Ordering::Acquire);
        let _ = self.tx.send(Message::Wake);
        let progress = self.shared.lock_progress();
        let (progress, _) = self
            .shared
            .progressed
            .wait_timeout_while(progress, timeout, |p| p.done < target && !p.stopped)
            .unwrap_or_else(|e| e.into_inner());
        progress.done >= target
    }

    /// Stops accepting lines, writes and flushes what is queued, and stops the writer,
    /// waiting at most `timeout`. Returns whether the writer finished in time. Lines
    /// sent afterwards are dropped and counted. Used on SIGTERM.
    pub fn close(&self, timeout: Duration) -> bool {
        self.shared.closed.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Message::Close);
        let progress = self.shared.lock_progress();
        let (progress, _) = self
            .shared
            .progressed
            .wait_timeout_while(progress, timeout, |p| !p.stopped)
            .unwrap_or_else(|e| e.into_inner());
        let stopped = progress.stopped;
        drop(progress);
        if stopped {
            let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(handle) = handle {
                let _ = handle.join();
            }
        }
        stopped
    }

    /// Lines waiting in the queue for the writer now.
    pub fn queued(&self) -> usize {
        self.shared.lock_batch().lines
    }

    /// The most lines the queue holds before it drops them.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Lines written to every target without error.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the queue was full or the sink closed.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Lines lost because the audit log could not be written (a full disk).
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Since when writes have been failing (RFC 3339), while they are.
    pub fn failing_since(&self) -> Option<String> {
        self.shared
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Lines for `/readyz` details: writes failing now, lines lost so far.
    pub fn details(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(since) = self.failing_since() {
            out.push(format!(
                "audit: the audit log cannot be written since {since}; lines are being lost ({} so far)",
                self.lost()
            ));
        } else if self.lost() > 0 {
            out.push(format!(
                "audit: {} lines could not be written (a full disk?); writing again",
                self.lost()
            ));
        }
        out
    }

    /// Lines (or flushes) that failed to reach a target, e.g. on a full disk.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// A live tail of the lines as they are written (each with its newline). Costs
    /// nothing while nobody subscribes; a subscriber that falls behind sees `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tail.subscribe()
    }
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("capacity", &self.shared.capacity)
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .field("write_errors", &self.write_errors())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn set_failing(&self, failing: bool) {
        let mut since = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match (failing, since.is_some()) {
            (true, false) => *since = Some(now_rfc3339()),
            (false, true) => *since = None,
            _ => {}
        }
    }

    fn lock_progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_batch(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
