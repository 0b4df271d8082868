//! Where audit lines go: a file or stdout, written by a thread of its own so disk I/O
//! never blocks the data path.

use std::path::PathBuf;

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
    /// Queues one line (with its newline); never blocks.
    pub fn send(&self, line: String) {
        let _ = line;
    }
}
