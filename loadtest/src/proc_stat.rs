//! The proxy's own CPU time, from `/proc`: utime + stime of its process and every
//! descendant (nginx's workers under its master). `/proc/PID/stat` is read rather than
//! summing `/proc/PID/task/*/stat`, because the process line also holds the time of
//! threads that have already exited; [`threads`] gives the per-thread view.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

/// The fields of a `stat` line the tool uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Process (or thread) id.
    pub pid: u32,
    /// Command name (`comm`), without the parentheses.
    pub comm: String,
    /// Parent process id.
    pub ppid: u32,
    /// User-mode time, clock ticks.
    pub utime: u64,
    /// Kernel-mode time, clock ticks.
    pub stime: u64,
}

/// A `stat` line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed /proc stat line: {0}")]
pub struct StatError(pub String);

/// Parses one `/proc/PID/stat` (or `task/TID/stat`) line. The command name may hold
/// spaces and parentheses, so fields are counted from the last `)`.
///
/// Fails when the line is cut short or a number does not parse.
pub fn parse_stat(line: &str) -> Result<Stat, StatError> {
    let bad = || StatError(line.chars().take(80).collect());
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.rfind(')').ok_or_else(bad)?;
    if close < open {
        return Err(bad());
    }
    let pid = line[..open].trim().parse().map_err(|_| bad())?;
    let comm = line[open + 1..close].to_owned();
    // After ")": field 3 (state) is index 0, so field N is index N - 3.
    let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, StatError> {
        rest.get(n - 3)
            .ok_or_else(bad)?
            .parse::<u64>()
            .map_err(|_| bad())
    };
    Ok(Stat {
        pid,
        comm,
        ppid: u32::try_from(field(4)?).map_err(|_| bad())?,
        utime: field(14)?,
        stime: field(15)?,
    })
}

/// `pid` and every process descending from it, from parent ids of all `stats`.
pub fn tree(root: u32, stats: &[Stat]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for s in stats {
        children.entry(s.ppid).or_default().push(s.pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids.iter().copied().filter(|k| *k != root));
        }
        i += 1;
    }
    out
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux the tool runs on).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Every process's stat line under `proc` (normally `/proc`); processes that vanish
/// while being read are skipped.
pub fn all_processes(proc: &Path) -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|line| parse_stat(&line).ok())
        .collect()
}

/// CPU time of a process tree, split into user and kernel mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// User-mode time (utime).
    pub user: Duration,
    /// Kernel-mode time (stime): system calls, and the network stack's work done on
    /// the process's behalf.
    pub kernel: Duration,
}

impl CpuTime {
    /// The time spent since the reading `earlier`.
    pub fn since(&self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            kernel: self.kernel.saturating_sub(earlier.kernel),
        }
    }
}

/// CPU time used so far by `root` and its descendants.
pub fn cpu_time(root: u32, ticks_per_second: u64) -> CpuTime {
    let stats = all_processes(Path::new("/proc"));
    let members = tree(root, &stats);
    let (user, kernel) = stats
        .iter()
        .filter(|s| members.contains(&s.pid))
        .fold((0, 0), |(u, k), s| (u + s.utime, k + s.stime));
    let seconds =
        |ticks: u64| Duration::from_secs_f64(ticks as f64 / ticks_per_second.max(1) as f64);
    CpuTime {
        user: seconds(user),
        kernel: seconds(kernel),
    }
}

/// CPU ticks per thread name of one process (`/proc/PID/task/*/stat`), to see where a
/// proxy spends its time (workers, audit writer, ...).
pub fn threads(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    for s in all_processes(&Path::new("/proc").join(pid.to_string()).join("task")) {
        *by_name.entry(s.comm).or_default() += s.utime + s.stime;
    }
    by_name
}

/// The resident set size in KiB of a `/proc/PID/status` text (its `VmRSS:` line).
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The resident set size of `pid` in KiB; `None` when it has exited.
pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The soft and hard limits on open files of a `/proc/PID/limits` text.
pub fn parse_nofile(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let mut next = || -> Option<u64> {
        match numbers.next()? {
            "unlimited" => Some(u64::MAX),
            n => n.parse().ok(),
        }
    };
    Some((next()?, next()?))
}

/// Raises this process's soft limit on open files to its hard limit (with `prlimit`;
/// the proxies it starts inherit it) and returns the limit now in force.
pub fn raise_nofile() -> u64 {
    let read = || {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| parse_nofile(&t))
    };
    let Some((soft, hard)) = read() else {
        return 1024;
    };
    if soft < hard {
        let limit = if hard == u64::MAX {
            "1048576".to_owned()
        } else {
            hard.to_string()
        };
        let _ = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={limit}:{limit}"))
            .status();
    }
    read().map_or(soft, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "4242 (tokio-runtime-w) S 4241 4242 4241 0 -1 4194560 1234 0 0 0 1500 320 0 0 20 0 3 0 987654 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17664 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_pid_comm_ppid_and_times() {
        let s = parse_stat(LINE).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "tokio-runtime-w");
        assert_eq!(s.ppid, 4241);
        assert_eq!(s.utime, 1500);
        assert_eq!(s.stime, 320);
    }

    #[test]
    fn command_names_with_spaces_and_parentheses() {
        let line = LINE.replace("(tokio-runtime-w)", "(nginx: worker (x) )");
        let s = parse_stat(&line).unwrap();
        assert_eq!(s.comm, "nginx: worker (x) ");
        assert_eq!(s.utime, 1500);
    }

    #[test]
    fn short_or_garbled_lines_are_errors() {
        assert!(parse_stat("12 (x) S 1 2 3").is_err());
        assert!(parse_stat("no parens here").is_err());
        assert!(parse_stat(&LINE.replace(" 1500 ", " x ")).is_err());
    }

    #[test]
    fn tree_collects_descendants_only() {
        let stat = |pid, ppid| Stat {
            pid,
            comm: String::new(),
            ppid,
            utime: 0,
            stime: 0,
        };
        let stats = [
            stat(1, 0),
            stat(10, 1),
            stat(11, 10),
            stat(12, 10),
            stat(13, 11),
            stat(20, 1),
        ];
        let mut t = tree(10, &stats);
        t.sort_unstable();
        assert_eq!(t, [10, 11, 12, 13]);
    }

    #[test]
    fn resident_size_and_open_file_limits_parse() {
        let status = "Name:\tegress-gateway\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 20000                files\n";
        assert_eq!(parse_nofile(limits), Some((1024, 20000)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile(unlimited), Some((u64::MAX, u64::MAX)));
    }

    #[test]
    fn system_calls_count_as_kernel_time() {
        use std::io::Read;
        let me = std::process::id();
        let hz = ticks_per_second();
        let before = cpu_time(me, hz);
        let mut zero = std::fs::File::open("/dev/zero").unwrap();
        let mut block = vec![1u8; 256 * 1024];
        let started = std::time::Instant::now();
        // Reads of /dev/zero: the kernel fills the buffer, the program does nothing.
        let spent = loop {
            for _ in 0..500 {
                zero.read_exact(&mut block).unwrap();
            }
            let spent = cpu_time(me, hz).since(before);
            if spent.kernel >= Duration::from_millis(100) || started.elapsed().as_secs() >= 5 {
                break spent;
            }
        };
        assert!(spent.kernel >= Duration::from_millis(100), "{spent:?}");
        assert!(spent.kernel > spent.user, "{spent:?}");
        assert_eq!(before.since(cpu_time(me, hz)), CpuTime::default());
    }

    #[test]
    fn own_process_is_readable_and_has_a_thread() {
        let me = std::process::id();
        let _ = cpu_time(me, ticks_per_second());
        assert!(!threads(me).is_empty());
        assert!(ticks_per_second() > 0);
    }
}
