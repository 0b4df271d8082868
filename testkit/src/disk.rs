//! A small file system of its own, for tests of what happens when a disk fills: a tmpfs
//! mounted on a temporary directory (root only), unmounted when dropped, and [`fill`]
//! to use up its space with one file that, removed, gives it back.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A mounted tmpfs.
#[derive(Debug)]
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` bytes, panicking when it cannot (mounting needs root;
    /// scripts/test.sh runs as root).
    #[expect(clippy::panic, reason = "a test helper: no mount fails the test")]
    pub fn mount(bytes: usize) -> SmallDisk {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("a temporary directory: {e}"),
        };
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            panic!("mounting a tmpfs needs root (scripts/test.sh runs as root)");
        }
        SmallDisk { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `dir` with one file, to the last byte; removing the
/// file gives the space back.
///
/// # Panics
/// When the file cannot be created.
#[expect(
    clippy::panic,
    reason = "a test helper: a file that cannot be made fails the test"
)]
pub fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = match std::fs::File::create(&filler) {
        Ok(file) => file,
        Err(e) => panic!("{}: {e}", filler.display()),
    };
    while file.write_all(&[b'f'; 4096]).is_ok() {}
    while file.write_all(b"f").is_ok() {}
    filler
}
