//! The writer thread: takes lines off the queue, writes them to every target, syncs
//! them to disk about once a second, reopens on request, and reports drops and errors.
//!
//! A batch goes to each target in one `write` loop (the batch is the buffer). When a
//! write fails part way (a full disk), every line wholly written counts as written; the
//! rest of a line cut short is kept and written first once writes succeed again, so no
//! line is ever torn; the lines after it count as dropped for a write error.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use super::{
    AuditTarget, Batch, Message, Rotation, Shared, BUFFER_BYTES, BUSY_INTERVAL, REPORT_INTERVAL,
};

/// One open target.
pub(super) struct Output {
    sink: Sink,
    /// The rest of a line a failed write cut short: written first next time.
    torn: Vec<u8>,
    /// Bytes written since the last sync to disk.
    unsynced: bool,
}

enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File { path: PathBuf, file: File },
}

impl Output {
    pub(super) fn open(target: AuditTarget) -> io::Result<Output> {
        let sink = match target {
            AuditTarget::Stdout => {
                Sink::Stdout(BufWriter::with_capacity(BUFFER_BYTES, io::stdout()))
            }
            AuditTarget::File(path) => {
                let file = open_append(&path)?;
                Sink::File { path, file }
            }
        };
        Ok(Output {
            sink,
            torn: Vec::new(),
            unsynced: false,
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.sink {
            Sink::Stdout(w) => w,
            Sink::File { file, .. } => file,
        }
    }

    fn name(&self) -> String {
        match &self.sink {
            Sink::Stdout(_) => "stdout".into(),
            Sink::File { path, .. } => path.display().to_string(),
        }
    }

    /// Writes `bytes` (whole lines), after any torn line. Returns the lines written
    /// whole (a completed torn line included) and, on failure, the lines lost and why.
    fn write_lines(&mut self, bytes: &[u8]) -> (u64, Option<(u64, io::Error)>) {
        let lines = count_lines(bytes);
        let mut done = 0;
        if !self.torn.is_empty() {
            let torn = std::mem::take(&mut self.torn);
            match write_until_error(self.writer(), &torn) {
                Ok(()) => done += 1,
                Err((at, error)) => {
                    self.torn = torn[at..].to_vec();
                    return (0, Some((lines, error)));
                }
            }
        }
        let written = write_until_error(self.writer(), bytes)
            .and_then(|()| self.writer().flush().map_err(|e| (bytes.len(), e)));
        self.unsynced = true;
        match written {
            Ok(()) => (done + lines, None),
            Err((at, error)) => {
                let whole = count_lines(&bytes[..at]);
                let mut lost = lines - whole;
                if at > 0 && bytes[at - 1] != b'\n' {
                    // The line cut short is finished later rather than lost.
                    let end = bytes[at..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(bytes.len(), |i| at + i + 1);
                    self.torn = bytes[at..end].to_vec();
                    lost -= 1;
                }
                (done + whole, Some((lost, error)))
            }
        }
    }

    /// Syncs a file's data to disk if anything was written since the last sync.
    fn sync(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.unsynced) {
            return Ok(());
        }
        match &mut self.sink {
            Sink::File { file, .. } => file.sync_data(),
            Sink::Stdout(_) => Ok(()),
        }
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Writes all of `bytes`, or says how far it got before failing.
fn write_until_error(w: &mut dyn Write, bytes: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut at = 0;
    while at < bytes.len() {
        match w.write(&bytes[at..]) {
            Ok(0) => return Err((at, io::ErrorKind::WriteZero.into())),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((at, e)),
        }
    }
    Ok(())
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open audit log {}: {e}", path.display())))
}

/// The writer thread's state.
pub(super) struct Writer {
    rx: mpsc::Receiver<Message>,
    outputs: Vec<Output>,
    shared: Arc<Shared>,
    reporter: Reporter,
    /// Sync files to disk at most this often (`None`: leave it to the kernel).
    sync_every: Option<std::time::Duration>,
    last_sync: Instant,
    /// Rotate files past a size (`None`: only on SIGHUP, by logrotate).
    rotation: Option<Rotation>,
}

/// Rate-limited reporting of drops and write errors.
#[derive(Default)]
struct Reporter {
    reported_dropped: u64,
    reported_lost: u64,
    reported_errors: u64,
    last_report: Option<Instant>,
}

impl Writer {
    pub(super) fn new(
        rx: mpsc::Receiver<Message>,
        outputs: Vec<Output>,
        shared: Arc<Shared>,
        sync_every: Option<std::time::Duration>,
        rotation: Option<Rotation>,
    ) -> Self {
        Writer {
            rx,
            outputs,
            shared,
            reporter: Reporter::default(),
            sync_every,
            last_sync: Instant::now(),
            rotation,
        }
    }

    /// Rotates files that have grown past the size limit: `log` becomes `log.1`, `log.1`
    /// becomes `log.2`, ..., the oldest beyond `keep` is overwritten. Between batches,
    /// so every file ends with a whole line.
    fn rotate_if_due(&mut self) {
        let Some(rotation) = self.rotation else {
            return;
        };
        let mut rotated = false;
        for output in &mut self.outputs {
            let Sink::File { path, file } = &mut output.sink else {
                continue;
            };
            let big = file.metadata().is_ok_and(|m| m.len() >= rotation.max_bytes);
            if !big || !output.torn.is_empty() {
                continue;
            }
            let numbered = |n: usize| {
                let mut name = path.clone().into_os_string();
                name.push(format!(".{n}"));
                PathBuf::from(name)
            };
            let _ = file.sync_data();
            for n in (1..rotation.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            let moved = if rotation.keep == 0 {
                std::fs::remove_file(&*path)
            } else {
                std::fs::rename(&*path, numbered(1))
            };
            match moved.and_then(|()| open_append(path)) {
                Ok(new) => {
                    *file = new;
                    rotated = true;
                }
                Err(error) => {
                    tracing::error!(%error, "audit log rotation failed; still writing to the old file");
                }
            }
        }
        if rotated {
            tracing::info!(
                max_bytes = rotation.max_bytes,
                keep = rotation.keep,
                "audit log rotated"
            );
        }
    }

    /// Syncs the files when the interval has passed (and before stopping).
    fn sync_if_due(&mut self, now: bool) {
        let Some(every) = self.sync_every else {
            return;
        };
        if !now && self.last_sync.elapsed() < every {
            return;
        }
        self.last_sync = Instant::now();
        for output in &mut self.outputs {
            if let Err(error) = output.sync() {
                self.reporter.failed(&self.shared, output, &error);
            }
        }
    }

    /// Runs until closed, or until the sink is dropped: takes the batch every
    /// [`BUSY_INTERVAL`] while lines come, sleeps until woken when none do.
    pub(super) fn run(mut self) {
        let mut processed = 0u64;
        let mut quiet = 0u32;
        loop {
            let idle = self.shared.idle.load(Ordering::Acquire);
            let wait = if idle { REPORT_INTERVAL } else { BUSY_INTERVAL };
            let closing = match self.rx.recv_timeout(wait) {
                Ok(Message::Wake) | Err(RecvTimeoutError::Timeout) => false,
                Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => true,
            };
            let batch = std::mem::take(&mut *self.shared.lock_batch());
            let lines = self.write_batch(batch);
            processed += lines;
            // A few empty rounds in a row: sleep until a sender wakes us.
            quiet = if lines == 0 { quiet + 1 } else { 0 };
            if quiet >= 3 && !idle {
                self.shared.idle.store(true, Ordering::Release);
            }
            self.sync_if_due(closing);
            self.rotate_if_due();
            self.reporter.report(&self.shared);
            self.shared.lock_progress().done = processed;
            self.shared.progressed.notify_all();
            if closing {
                break;
            }
        }
        // The last word is never rate-limited away.
        self.reporter.last_report = None;
        self.reporter.report(&self.shared);
        self.shared.lock_progress().stopped = true;
        self.shared.progressed.notify_all();
    }

    /// Writes a batch to every target, reopening where the batch says; returns its line
    /// count.
    fn write_batch(&mut self, batch: Batch) -> u64 {
        let mut from = 0;
        for &at in &batch.reopens {
            self.write_all(&batch.bytes[from..at]);
            self.reopen();
            from = at;
        }
        self.write_all(&batch.bytes[from..]);
        batch.lines as u64
    }

    /// Writes whole lines to every target. The first target's outcome is what the
    /// counters say (lines written, lines dropped for a write error); a failure of any
    /// target is a write error.
    fn write_all(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut any_failed = false;
        for (i, output) in self.outputs.iter_mut().enumerate() {
            let (written, failed) = output.write_lines(bytes);
            if i == 0 {
                self.shared.written.fetch_add(written, Ordering::Relaxed);
            }
            if let Some((lost, error)) = failed {
                any_failed = true;
                if i == 0 {
                    self.shared.lost.fetch_add(lost, Ordering::Relaxed);
                }
                self.reporter.failed(&self.shared, output, &error);
            }
        }
        self.shared.set_failing(any_failed);
    }

    fn flush(&mut self) {
        for output in &mut self.outputs {
            if let Err(error) = output.writer().flush() {
                self.reporter.failed(&self.shared, output, &error);
            }
        }
    }

    fn reopen(&mut self) {
        self.flush();
        for output in &mut self.outputs {
            let Sink::File { path, file } = &mut output.sink else {
                continue;
            };
            match open_append(path) {
                Ok(new) => *file = new,
                Err(error) => {
                    tracing::error!(%error, "audit log reopen failed; still writing to the old file");
                }
            }
        }
    }
}

impl Reporter {
    fn failed(&mut self, shared: &Shared, output: &Output, error: &io::Error) {
        shared.write_errors.fetch_add(1, Ordering::Relaxed);
        if self.due() {
            tracing::error!(output = %output.name(), %error, "audit write failed");
            self.reported_errors = shared.write_errors.load(Ordering::Relaxed);
            self.last_report = Some(Instant::now());
        }
    }

    /// Reports drops and write errors since the last report, at most once a second.
    fn report(&mut self, shared: &Shared) {
        if !self.due() {
            return;
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        let errors = shared.write_errors.load(Ordering::Relaxed);
        let lost = shared.lost.load(Ordering::Relaxed);
        if lost > self.reported_lost {
            tracing::error!(
                lost = lost - self.reported_lost,
                total = lost,
                "audit lines lost: the audit log cannot be written (disk full?)"
            );
            self.reported_lost = lost;
            self.last_report = Some(Instant::now());
        }
        if dropped > self.reported_dropped {
            let n = dropped - self.reported_dropped;
            tracing::warn!(
                dropped = n,
                total = dropped,
                "audit lines dropped: writer could not keep up"
            );
            self.reported_dropped = dropped;
            self.last_report = Some(Instant::now());
        }
        if errors > self.reported_errors {
            let n = errors - self.reported_errors;
            tracing::error!(failed = n, total = errors, "audit writes failed");
            self.reported_errors = errors;
            self.last_report = Some(Instant::now());
        }
    }

    fn due(&self) -> bool {
        self.last_report
            .is_none_or(|at| at.elapsed() >= REPORT_INTERVAL)
    }
}
