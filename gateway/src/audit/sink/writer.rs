//! The writer thread: takes lines off the queue, writes them to every target, flushes
//! when the queue runs empty, reopens on request, and reports drops and errors.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use super::{AuditTarget, Batch, Message, Shared, BUFFER_BYTES, BUSY_INTERVAL, REPORT_INTERVAL};

/// One open target.
pub(super) enum Output {
    Stdout(BufWriter<io::Stdout>),
    File {
        path: PathBuf,
        file: BufWriter<File>,
    },
}

impl Output {
    pub(super) fn open(target: AuditTarget) -> io::Result<Output> {
        match target {
            AuditTarget::Stdout => Ok(Output::Stdout(BufWriter::with_capacity(
                BUFFER_BYTES,
                io::stdout(),
            ))),
            AuditTarget::File(path) => {
                let file = open_append(&path)?;
                Ok(Output::File {
                    path,
                    file: BufWriter::with_capacity(BUFFER_BYTES, file),
                })
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(w) => w,
            Output::File { file, .. } => file,
        }
    }

    fn name(&self) -> String {
        match self {
            Output::Stdout(_) => "stdout".into(),
            Output::File { path, .. } => path.display().to_string(),
        }
    }
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
}

/// Rate-limited reporting of drops and write errors.
#[derive(Default)]
struct Reporter {
    reported_dropped: u64,
    reported_errors: u64,
    last_report: Option<Instant>,
}

impl Writer {
    pub(super) fn new(
        rx: mpsc::Receiver<Message>,
        outputs: Vec<Output>,
        shared: Arc<Shared>,
    ) -> Self {
        Writer {
            rx,
            outputs,
            shared,
            reporter: Reporter::default(),
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

    /// Writes a batch to every target, reopening where the batch says, and flushes;
    /// returns its line count.
    fn write_batch(&mut self, batch: Batch) -> u64 {
        let mut ok = true;
        let mut from = 0;
        for &at in &batch.reopens {
            ok &= self.write_all(&batch.bytes[from..at]);
            self.reopen();
            from = at;
        }
        ok &= self.write_all(&batch.bytes[from..]);
        let lines = batch.lines as u64;
        if ok {
            self.shared.written.fetch_add(lines, Ordering::Relaxed);
        }
        lines
    }

    /// Writes bytes to every target and flushes; false when a target failed.
    fn write_all(&mut self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let mut ok = true;
        for output in &mut self.outputs {
            let written = output.writer().write_all(bytes);
            if let Err(error) = written.and_then(|()| output.writer().flush()) {
                ok = false;
                self.reporter.failed(&self.shared, output, &error);
            }
        }
        ok
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
            let Output::File { path, file } = output else {
                continue;
            };
            match open_append(path) {
                Ok(new) => *file = BufWriter::with_capacity(BUFFER_BYTES, new),
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
