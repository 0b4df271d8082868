//! The versions a store keeps: in memory, the last N sets with who applied them, when
//! and what they changed; on disk, `.history/<version>/` in the policy directory holding
//! that version's files and a `meta.json`, so that a restart keeps versions, authors
//! and rollback.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::policy::PolicyFile;

/// The history's directory inside the policy directory (a dotfile: never read as policy).
pub const HISTORY_DIR: &str = ".history";
const META: &str = "meta.json";

/// Who applied a version, when, and what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// The version.
    pub version: u64,
    /// When it was applied (RFC 3339, UTC).
    pub time: String,
    /// A token's name, or `policy directory` for an edit of the files.
    pub author: String,
    /// What it changed from the version before.
    pub summary: Vec<String>,
}

/// A kept version: its record and its files (named by file name alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Who, when, what.
    pub meta: VersionMeta,
    /// The set's files.
    pub files: Vec<PolicyFile>,
}

/// The last `limit` versions, oldest first; the last is the one in force.
#[derive(Debug)]
pub struct Versions {
    kept: VecDeque<Kept>,
    limit: usize,
}

impl Versions {
    /// Versions already kept (oldest first), trimmed to `limit`.
    pub fn new(kept: Vec<Kept>, limit: usize) -> Self {
        let mut versions = Self {
            kept: VecDeque::new(),
            limit: limit.max(1),
        };
        for k in kept {
            versions.push(k);
        }
        versions
    }

    /// Records a version, forgetting the oldest beyond the limit.
    pub fn push(&mut self, kept: Kept) {
        self.kept.push_back(kept);
        while self.kept.len() > self.limit {
            self.kept.pop_front();
        }
    }

    /// The version in force.
    pub fn current(&self) -> Option<&Kept> {
        self.kept.back()
    }

    /// A kept version.
    pub fn get(&self, version: u64) -> Option<&Kept> {
        self.kept.iter().find(|k| k.meta.version == version)
    }

    /// Every record, newest first.
    pub fn list(&self) -> Vec<VersionMeta> {
        self.kept.iter().rev().map(|k| k.meta.clone()).collect()
    }

    /// How many are kept at most.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// `files` named by their file names alone, as the history stores them.
pub fn basenames(files: &[PolicyFile]) -> Vec<PolicyFile> {
    files
        .iter()
        .map(|f| PolicyFile {
            name: Path::new(&f.name)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.name.clone()),
            text: f.text.clone(),
        })
        .collect()
}

/// Now, as RFC 3339 in UTC to the second.
pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Every version kept in `dir/.history`, oldest first. Entries that cannot be read are
/// skipped with a warning: the history must never keep a gateway from starting.
pub fn load(dir: &Path) -> Vec<Kept> {
    let root = dir.join(HISTORY_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u64>().is_err() {
            continue;
        }
        match read_version(&entry.path()) {
            Ok(k) => kept.push(k),
            Err(error) => {
                tracing::warn!(version = %name, %error, "skipping an unreadable policy history entry");
            }
        }
    }
    kept.sort_by_key(|k| k.meta.version);
    kept
}

fn read_version(path: &Path) -> std::io::Result<Kept> {
    let meta: VersionMeta = serde_json::from_str(&std::fs::read_to_string(path.join(META))?)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            let text = std::fs::read_to_string(entry.path())?;
            files.push(PolicyFile {
                name,
                text: text.into(),
            });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Kept { meta, files })
}

/// Writes `kept` as `dir/.history/<version>/` unless it is there already: into a
/// temporary directory first, every file synced, then renamed into place.
///
/// Fails when the directory cannot be written.
pub fn save(dir: &Path, kept: &Kept) -> std::io::Result<()> {
    let root = dir.join(HISTORY_DIR);
    let target = root.join(kept.meta.version.to_string());
    if target.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&root)?;
    let tmp = root.join(format!(".tmp-{}", kept.meta.version));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp)?;
    for file in &kept.files {
        write_synced(&tmp.join(&file.name), file.text.as_bytes())?;
    }
    let meta = serde_json::to_vec_pretty(&kept.meta)?;
    write_synced(&tmp.join(META), &meta)?;
    sync_dir(&tmp)?;
    std::fs::rename(&tmp, &target)?;
    sync_dir(&root)
}

/// Removes the oldest `.history/<version>/` directories beyond `keep`.
///
/// Fails when one cannot be removed.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let root = dir.join(HISTORY_DIR);
    let mut versions: Vec<u64> = std::fs::read_dir(&root)?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    versions.sort_unstable();
    let excess = versions.len().saturating_sub(keep);
    for version in &versions[..excess] {
        std::fs::remove_dir_all(root.join(version.to_string()))?;
    }
    Ok(())
}

/// Creates or truncates `path`, writes `bytes` and syncs them to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Syncs a directory, so that renames and removals in it survive a crash.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}
