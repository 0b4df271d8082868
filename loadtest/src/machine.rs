//! Where a comparison ran: date, processors, kernel and CPU model, for the record.

use serde::Serialize;

/// The machine a comparison ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// UTC date and time.
    pub date: String,
    /// Processors online (`nproc`).
    pub nproc: usize,
    /// `uname -r`.
    pub kernel: String,
    /// The CPU model.
    pub cpu: String,
}

/// Date, processors, kernel and CPU model of this machine.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let nproc = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Machine {
        date,
        nproc,
        kernel,
        cpu,
    }
}
