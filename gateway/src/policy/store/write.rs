//! Admin writes: a new set validated, applied whole, and persisted as the one
//! `policy.yaml` of the policy directory, the files it replaces kept in
//! `.history/<version>/` — all under the store's reload lock, so the directory watcher
//! never sees half a write and, seeing the finished one, finds nothing new to apply.

use std::path::Path;
use std::sync::PoisonError;

use super::history::{self, Kept, VersionMeta};
use super::PolicyStore;
use crate::policy::edit::summarize_files;
use crate::policy::{compile, Policy, PolicyErrors, PolicyFile};

/// The file an admin write leaves in the policy directory.
pub const POLICY_FILE: &str = "policy.yaml";
const TEMPORARY: &str = ".policy.yaml.tmp";

/// The text a write proposes for `policy.yaml`.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The whole set, as YAML.
    pub text: String,
    /// Whether error lines point into what the client sent (else they are dropped).
    pub body_lines: bool,
    /// A first summary line, e.g. `rollback to version 3`.
    pub note: Option<String>,
}

/// Why a write changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The set does not compile.
    #[error("invalid policy:\n{errors}")]
    Invalid {
        /// Every error.
        errors: PolicyErrors,
        /// Whether their lines point into what the client sent.
        body_lines: bool,
    },
    /// A rule body (or similar) that is not what the write needs.
    #[error("{0}")]
    BadRequest(String),
    /// `If-Match` is not the version in force.
    #[error("version {expected} is no longer in force (version {current} is)")]
    Stale {
        /// The version the writer prepared against.
        expected: u64,
        /// The version in force.
        current: u64,
    },
    /// The directory cannot be written.
    #[error("{0}")]
    ReadOnly(String),
    /// A rule or version that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Writing failed for another reason.
    #[error("{0}")]
    Io(String),
    /// The store (etcd) cannot be reached; nothing changed.
    #[error("{0}")]
    Unavailable(String),
}

/// The outcome of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The version in force afterwards (the current one for a dry run or no change).
    pub version: u64,
    /// Whether the set changed (would change, for a dry run).
    pub changed: bool,
    /// What changed.
    pub summary: Vec<String>,
}

impl PolicyStore {
    /// Applies the set `prepare` makes from the policy in force, for `author`, when the
    /// version in force is `if_match` (if given; etcd may call `prepare` again after
    /// losing a race without one): compiled, swapped in, and written as
    /// the directory's one `policy.yaml`. A dry run stops after compiling; a set equal
    /// to the one in force changes nothing.
    ///
    /// Fails when `If-Match` is stale, `prepare` fails, the set is invalid (every error),
    /// or the directory is read-only; the policy in force and the directory then stay.
    pub fn write(
        &self,
        author: &str,
        if_match: Option<u64>,
        dry_run: bool,
        mut prepare: impl FnMut(&Policy) -> Result<Candidate, WriteError>,
    ) -> Result<Written, WriteError> {
        let dir = match &self.backing {
            super::Backing::Dir(dir) => dir,
            super::Backing::Etcd(etcd) => {
                return super::etcd::write::write(self, etcd, author, if_match, dry_run, prepare)
            }
            super::Backing::Memory => {
                return Err(WriteError::ReadOnly(
                    "this policy is not kept in a directory".to_owned(),
                ))
            }
        };
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let version = self.version();
        if let Some(expected) = if_match.filter(|v| *v != version) {
            return Err(WriteError::Stale {
                expected,
                current: version,
            });
        }
        let current = self.current();
        let candidate = prepare(&current)?;
        let files = vec![PolicyFile {
            name: dir.join(POLICY_FILE).display().to_string(),
            text: candidate.text.as_str().into(),
        }];
        let policy = compile(&files).map_err(|errors| WriteError::Invalid {
            errors,
            body_lines: candidate.body_lines,
        })?;
        if policy.sources == current.sources {
            return Ok(Written {
                version,
                changed: false,
                summary: Vec::new(),
            });
        }
        let mut summary = summarize_files(&current.sources, &files);
        if let Some(note) = candidate.note {
            summary.insert(0, note);
        }
        if dry_run {
            return Ok(Written {
                version,
                changed: true,
                summary,
            });
        }
        let meta = VersionMeta {
            version: version + 1,
            time: history::now(),
            author: author.to_owned(),
            summary: summary.clone(),
        };
        self.persist(dir, &candidate.text, &meta)?;
        let version = self.swap(policy, meta);
        tracing::info!(version, %author, "policy changed through the admin API");
        Ok(Written {
            version,
            changed: true,
            summary,
        })
    }

    /// Writes `text` as the directory's only policy file, keeping the version in force
    /// and the new one in `.history/`. The temporary file comes first, so a read-only
    /// directory fails before anything is touched.
    fn persist(&self, dir: &Path, text: &str, meta: &VersionMeta) -> Result<(), WriteError> {
        let tmp = dir.join(TEMPORARY);
        history::write_synced(&tmp, text.as_bytes()).map_err(|e| classify(dir, &e))?;
        let done = self.replace_files(dir, &tmp, text, meta);
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done.map_err(|e| classify(dir, &e))
    }

    fn replace_files(
        &self,
        dir: &Path,
        tmp: &Path,
        text: &str,
        meta: &VersionMeta,
    ) -> std::io::Result<()> {
        let (previous, limit) = {
            let versions = self.versions();
            (versions.current().cloned(), versions.limit())
        };
        let replaced = top_level_policy_files(dir)?;
        if let Some(previous) = &previous {
            warn_unapplied(dir, &replaced, previous);
            history::save(dir, previous)?;
        }
        let new = Kept {
            meta: meta.clone(),
            files: vec![PolicyFile {
                name: POLICY_FILE.to_owned(),
                text: text.into(),
            }],
        };
        history::save(dir, &new)?;
        std::fs::rename(tmp, dir.join(POLICY_FILE))?;
        for name in replaced.iter().filter(|n| *n != POLICY_FILE) {
            std::fs::remove_file(dir.join(name))?;
        }
        history::sync_dir(dir)?;
        history::prune(dir, limit)
    }
}

/// The names of the top-level policy files, as [`load_dir`](super::load_dir) reads them.
fn top_level_policy_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if yaml && !name.starts_with('.') && !entry.path().is_dir() {
            names.push(name);
        }
    }
    Ok(names)
}

/// A file whose text is not what is in force holds an edit that was refused: it is
/// replaced like the rest, but said so.
fn warn_unapplied(dir: &Path, names: &[String], in_force: &Kept) {
    for name in names {
        let on_disk = std::fs::read_to_string(dir.join(name)).ok();
        let applied = in_force.files.iter().find(|f| &f.name == name);
        if on_disk.as_deref() != applied.map(|f| &*f.text) {
            tracing::warn!(file = %name, "replacing a policy file whose content was never applied (an invalid edit?)");
        }
    }
}

/// Permission and read-only file system errors mean the store is read-only (a mounted
/// ConfigMap); anything else is an I/O failure.
fn classify(dir: &Path, e: &std::io::Error) -> WriteError {
    use std::io::ErrorKind;
    let message = format!("cannot write the policy directory {}: {e}", dir.display());
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            WriteError::ReadOnly(message)
        }
        _ => WriteError::Io(message),
    }
}
