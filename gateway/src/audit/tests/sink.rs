//! The sink: order, reopen after rename, drops with a blocked writer, flush and close.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use egress_testkit::disk::{fill, SmallDisk};

use crate::audit::{AuditSink, AuditTarget};

const WAIT: Duration = Duration::from_secs(10);

fn file_sink(path: &Path, capacity: usize) -> AuditSink {
    AuditSink::open(vec![AuditTarget::File(path.to_path_buf())], capacity).unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn sink_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<AuditSink>();
}

#[test]
fn lines_reach_the_file_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let sink = file_sink(&path, 100_000);
    for i in 0..10_000 {
        sink.send(format!("line {i}\n"));
    }
    assert!(sink.flush(WAIT));
    let got = lines(&path);
    assert_eq!(got.len(), 10_000);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, l)| *l == format!("line {i}")));
    assert_eq!(
        (sink.written(), sink.dropped(), sink.write_errors()),
        (10_000, 0, 0)
    );
}

#[test]
fn concurrent_senders_keep_their_own_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let sink = file_sink(&path, 100_000);
    std::thread::scope(|s| {
        for t in 0..4 {
            let sink = &sink;
            s.spawn(move || (0..2_000).for_each(|i| sink.send(format!("{t} {i}\n"))));
        }
    });
    assert!(sink.flush(WAIT));
    let mut next = [0; 4];
    for line in lines(&path) {
        let (t, i) = line.split_once(' ').unwrap();
        let t: usize = t.parse().unwrap();
        assert_eq!(i.parse::<i32>().unwrap(), next[t]);
        next[t] += 1;
    }
    assert_eq!(next, [2_000; 4]);
}

#[test]
fn reopen_after_rename_splits_at_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let sink = file_sink(&path, 1_000);
    sink.send("a\n".into());
    sink.send("b\n".into());
    assert!(sink.flush(WAIT));
    fs::rename(&path, &rotated).unwrap();
    // Written after the rename but queued before the reopen: still the old file.
    sink.send("c\n".into());
    sink.reopen();
    sink.send("d\n".into());
    assert!(sink.flush(WAIT));
    assert_eq!(lines(&rotated), ["a", "b", "c"]);
    assert_eq!(lines(&path), ["d"]);
}

#[test]
fn open_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("audit.log");
    let err = AuditSink::open(vec![AuditTarget::File(path.clone())], 10).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn close_drains_then_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let sink = file_sink(&path, 1_000);
    for i in 0..500 {
        sink.send(format!("{i}\n"));
    }
    assert!(sink.close(WAIT));
    assert_eq!(lines(&path).len(), 500);
    sink.send("late\n".into());
    assert_eq!(sink.dropped(), 1);
    assert_eq!(lines(&path).len(), 500);
    assert!(sink.close(WAIT), "closing twice is harmless");
}

#[test]
fn live_tail_sees_written_lines() {
    let dir = tempfile::tempdir().unwrap();
    let sink = file_sink(&dir.path().join("audit.log"), 10);
    sink.send("before\n".into());
    assert!(sink.flush(WAIT));
    let mut tail = sink.subscribe();
    sink.send("after\n".into());
    assert!(sink.flush(WAIT));
    assert_eq!(&*tail.try_recv().unwrap(), "after\n");
    assert!(tail.try_recv().is_err());
}

#[test]
fn write_errors_are_counted_and_never_stall() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    let sink = file_sink(full, 10_000);
    for i in 0..1_000 {
        sink.send(format!("{i} {}\n", "x".repeat(200)));
    }
    assert!(sink.flush(WAIT));
    assert!(sink.write_errors() > 0);
    assert!(sink.close(WAIT));
}

/// A writer blocked on a full pipe: the queue fills, further lines are dropped and
/// counted, and once the reader catches up every accepted line arrives in order.
#[test]
fn full_queue_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        return;
    }
    // Read-write so the sink's write-only open does not wait for a reader.
    let mut reader = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let sink = file_sink(&fifo, 4);
    // Bigger than the pipe's buffer: the writer blocks in write until we read.
    let big = format!("{}\n", "b".repeat(256 * 1024));
    sink.send(big.clone());
    for i in 0..100 {
        sink.send(format!("small {i:03}\n"));
    }
    let dropped = sink.dropped();
    // At most `capacity` lines wait. The writer, woken by the big line, may take it
    // with up to three small ones before it blocks on the full pipe; then four more
    // wait: 3 to 7 small lines get in.
    assert!((93..=97).contains(&dropped), "dropped {dropped}");
    let mut got = vec![0; big.len()];
    reader.read_exact(&mut got).unwrap();
    assert_eq!(got, big.as_bytes());
    assert!(sink.close(WAIT));
    let small = usize::try_from(sink.written()).unwrap() - 1;
    assert_eq!(small as u64 + dropped, 100);
    let mut rest = vec![0; small * "small 000\n".len()];
    reader.read_exact(&mut rest).unwrap();
    // The writer may take a batch off the queue during the burst, freeing slots for
    // later lines: accepted lines are some in increasing order, the first three always
    // among them.
    let rest = String::from_utf8(rest).unwrap();
    let numbers: Vec<u32> = rest
        .lines()
        .map(|l| l["small ".len()..].parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), small);
    assert_eq!(numbers[..3], [0, 1, 2]);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
}

#[test]
fn a_full_disk_loses_lines_counted_never_torn_and_writes_resume_whole() {
    let disk = SmallDisk::mount(256 * 1024);
    let path = disk.path().join("audit.log");
    let sink = file_sink(&path, 100_000);
    sink.send("before the disk filled\n".into());
    assert!(sink.flush(WAIT));
    let filler = fill(disk.path());
    // One page free again: the line that crosses its end is cut short.
    let len = fs::metadata(&filler).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    for i in 0..3_000 {
        sink.send(format!("line {i:05} {}\n", "x".repeat(100)));
    }
    assert!(sink.flush(WAIT));
    assert!(sink.lost() > 0, "lines were lost");
    assert!(sink.failing_since().is_some());
    assert!(
        sink.details()[0].contains("cannot be written"),
        "{:?}",
        sink.details()
    );
    // Every line is written, lost, or the one cut short waiting to be finished.
    let accounted = sink.written() + sink.lost();
    assert_eq!(accounted, 3_000, "the line cut short is not counted yet");
    let partial = fs::read_to_string(&path).unwrap();
    assert!(
        !partial.ends_with('\n'),
        "a line was cut short by the full disk"
    );

    fs::remove_file(filler).unwrap();
    for i in 0..100 {
        sink.send(format!("after {i:03}\n"));
    }
    assert!(sink.flush(WAIT));
    assert!(sink.failing_since().is_none());
    assert_eq!(
        sink.written() + sink.lost(),
        3_101,
        "every line accounted for"
    );
    let text = fs::read_to_string(&path).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len() as u64, sink.written());
    for line in &got {
        let whole = *line == "before the disk filled"
            || (line.starts_with("line ") && line.len() == 5 + 5 + 1 + 100)
            || line.starts_with("after ");
        assert!(whole, "a torn line: {line:?}");
    }
    assert_eq!(got.last(), Some(&"after 099"));
}

#[test]
fn files_rotate_by_size_keeping_whole_lines_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let rotation = crate::audit::Rotation {
        max_bytes: 10_000,
        keep: 2,
    };
    let sink = AuditSink::open_with(
        vec![AuditTarget::File(path.clone())],
        100_000,
        None,
        Some(rotation),
    )
    .unwrap();
    let mut n = 0;
    for _ in 0..30 {
        for _ in 0..100 {
            sink.send(format!("line {n:06} {}\n", "y".repeat(30)));
            n += 1;
        }
        assert!(sink.flush(WAIT));
    }
    let numbered = |k: usize| dir.path().join(format!("audit.log.{k}"));
    assert!(numbered(1).exists() && numbered(2).exists());
    assert!(!numbered(3).exists(), "only two rotated files are kept");
    // Oldest first: .2, .1, then the live file; each ends with a whole line and carries
    // on where the one before it stopped.
    let mut next: Option<u64> = None;
    for file in [numbered(2), numbered(1), path.clone()] {
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{}",
            file.display()
        );
        for line in text.lines() {
            let k: u64 = line[5..11].parse().unwrap();
            if let Some(want) = next {
                assert_eq!(k, want, "{}: lines follow on", file.display());
            }
            next = Some(k + 1);
        }
    }
    assert_eq!(next, Some(n), "the newest line is in the live file");
    assert!(fs::metadata(numbered(1)).unwrap().len() >= 10_000);
}
