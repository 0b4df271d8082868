//! Where audit lines go: a file or stdout, written by a thread of its own so disk I/O
//! never blocks the data path.

use std::path::PathBuf;
use std::time::Duration;

/// Where lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to, reopened on SIGHUP.
    File(PathBuf),
}

/// The writer's handle: queue lines, reopen, flush.
#[derive(Debug)]
pub struct AuditSink {}

impl AuditSink {
    /// Opens the targets.
    ///
    /// Fails when a file cannot be opened.
    pub fn open(targets: Vec<AuditTarget>, capacity: usize) -> std::io::Result<Self> {
        let _ = (targets, capacity);
        Ok(Self {})
    }
    /// Queues one line (with its newline); never blocks.
    pub fn send(&self, line: String) {
        let _ = line;
    }
    /// Reopens files.
    pub fn reopen(&self) {}
    /// Flushes.
    pub fn flush(&self, timeout: Duration) {
        let _ = timeout;
    }
    /// Drains and stops.
    pub fn close(&self, timeout: Duration) {
        let _ = timeout;
    }
    /// Lines written.
    pub fn written(&self) -> u64 {
        0
    }
    /// Lines dropped.
    pub fn dropped(&self) -> u64 {
        0
    }
}
