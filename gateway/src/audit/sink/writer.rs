//! The writer thread: takes lines off the queue, writes them to every target, flushes
//! when the queue runs empty, reopens on request, and reports drops and errors.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;

use super::{AuditTarget, Message, Shared, BUFFER_BYTES, MAX_BATCH, REPORT_INTERVAL};

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
    tail: broadcast::Sender<Arc<str>>,
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
        tail: broadcast::Sender<Arc<str>>,
    ) -> Self {
        Writer {
            rx,
            outputs,
            shared,
            tail,
            reporter: Reporter::default(),
        }
    }

    /// Runs until closed, or until the sink is dropped.
    pub(super) fn run(mut self) {
        let mut processed = 0u64;
        loop {
            let message = match self.rx.recv_timeout(REPORT_INTERVAL) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    self.reporter.report(&self.shared);
                    continue;
                }
                // The sink was dropped: finish like a close.
                Err(RecvTimeoutError::Disconnected) => Message::Close,
            };
            let mut next = Some(message);
            let mut closing = false;
            let mut batch = 0;
            while let Some(message) = next.take() {
                match message {
                    Message::Line(line) => {
                        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                        self.write_line(&line);
                        processed += 1;
                    }
                    Message::Reopen => self.reopen(),
                    Message::Close => {
                        closing = true;
                        break;
                    }
                }
                batch += 1;
                if batch < MAX_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            self.flush();
            self.reporter.report(&self.shared);
            self.shared.lock_progress().done = processed;
            self.shared.progressed.notify_all();
            if closing {
                break;
            }
        }
        // Lines that raced with close: count them, never lose them silently.
        while let Ok(message) = self.rx.try_recv() {
            if let Message::Line(_) = message {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        // The last word is never rate-limited away.
        self.reporter.last_report = None;
        self.reporter.report(&self.shared);
        self.shared.lock_progress().stopped = true;
        self.shared.progressed.notify_all();
    }

    fn write_line(&mut self, line: &str) {
        let mut ok = true;
        for output in &mut self.outputs {
            if let Err(error) = output.writer().write_all(line.as_bytes()) {
                ok = false;
                self.reporter.failed(&self.shared, output, &error);
            }
        }
        if ok {
            self.shared.written.fetch_add(1, Ordering::Relaxed);
        }
        // Allocate for the tail only when someone listens.
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(Arc::from(line));
        }
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
