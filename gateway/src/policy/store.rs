//! The policy in force: loaded from the policy directory, swapped atomically on change.
//!
//! Readers take a snapshot with [`PolicyStore::current`] (lock-free) and keep it for the
//! request or connection at hand; a reload compiles the whole directory and swaps the
//! new policy in, or changes nothing and reports every error. Admin writes ([`write`])
//! go through the same lock, and every version is recorded in [`history`].

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::watch;

use super::edit::{merge, summarize};
use super::{compile, Policy, PolicyError, PolicyErrors, PolicyFile};
use history::{Kept, VersionMeta, Versions};

pub mod history;
pub mod write;

/// How many versions the history keeps unless told otherwise.
pub const HISTORY_LIMIT: usize = 50;
/// The author of versions that come from an edit of the policy directory's files.
pub const DIRECTORY_AUTHOR: &str = "policy directory";

/// Quiet time after the last change event before reloading: editors and ConfigMap
/// updates touch several files in a burst, and the set should apply once, whole.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A steady stream of events still reloads this often.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Reads every top-level `*.yaml` / `*.yml` of `dir` (sorted by name) and compiles them.
/// Dotfiles and subdirectories (such as `.history/`) are not read; symbolic links are
/// followed, as a mounted ConfigMap's files are links.
///
/// Fails when the directory cannot be read or the set does not compile.
pub fn load_dir(dir: &Path) -> Result<Policy, PolicyErrors> {
    let dir_error = |e: std::io::Error| {
        PolicyErrors(vec![PolicyError {
            file: dir.display().to_string(),
            line: None,
            path: String::new(),
            message: format!("cannot read the policy directory: {e}"),
        }])
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let name = entry.map_err(dir_error)?.file_name();
        let name = name.to_string_lossy().into_owned();
        if !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            names.push(name);
        }
    }
    names.sort();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let display = path.display().to_string();
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            _ => {}
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push(PolicyFile {
                name: display,
                text,
            }),
            Err(e) => errors.push(PolicyError {
                file: display,
                line: None,
                path: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    match compile(&files) {
        Ok(policy) if errors.is_empty() => Ok(policy),
        Ok(_) => Err(PolicyErrors(errors)),
        Err(PolicyErrors(more)) => {
            errors.extend(more);
            Err(PolicyErrors(errors))
        }
    }
}

/// The policy in force, with its version (1 for the first, +1 per applied change).
#[derive(Debug)]
pub struct PolicyStore {
    /// `None` for a store made from a policy in memory.
    dir: Option<PathBuf>,
    current: ArcSwap<Policy>,
    version: watch::Sender<u64>,
    /// Reloads and writes compile and swap one at a time, so versions follow the order
    /// of swaps.
    reloading: Mutex<()>,
    /// The last versions, the one in force last.
    versions: Mutex<Versions>,
    /// Directory changes refused because the set did not compile.
    rejected: std::sync::atomic::AtomicU64,
}

impl PolicyStore {
    /// Loads the policy directory `dir`, keeping [`HISTORY_LIMIT`] versions.
    ///
    /// Fails with every error when the directory cannot be read or does not compile.
    pub fn open(dir: PathBuf) -> Result<Arc<Self>, PolicyErrors> {
        Self::open_keeping(dir, HISTORY_LIMIT)
    }

    /// Loads the policy directory `dir`, keeping the last `keep` versions. The version
    /// continues the directory's `.history/`: the set an admin write left keeps its
    /// version (and author) across a restart; a set edited since is the next version.
    ///
    /// Fails with every error when the directory cannot be read or does not compile.
    pub fn open_keeping(dir: PathBuf, keep: usize) -> Result<Arc<Self>, PolicyErrors> {
        let policy = load_dir(&dir)?;
        let mut kept = history::load(&dir);
        let files = history::basenames(&policy.sources);
        let last = kept.last();
        if last.is_none_or(|last| last.files != files) {
            let mut summary = vec!["loaded at start-up".to_owned()];
            if let Some(last) = last {
                summary.extend(summarize(&merge(&last.files), &merge(&files)));
            }
            kept.push(Kept {
                meta: VersionMeta {
                    version: last.map_or(1, |l| l.meta.version + 1),
                    time: history::now(),
                    author: DIRECTORY_AUTHOR.to_owned(),
                    summary,
                },
                files,
            });
        }
        let store = Self::new(Some(dir), policy, Versions::new(kept, keep));
        Ok(Arc::new(store))
    }

    /// A store serving `policy` as version 1, with no directory behind it ([`reload`]
    /// fails; [`replace`] changes it).
    ///
    /// [`reload`]: Self::reload
    /// [`replace`]: Self::replace
    pub fn from_policy(policy: Policy) -> Arc<Self> {
        let first = Kept {
            meta: VersionMeta {
                version: 1,
                time: history::now(),
                author: "start-up".to_owned(),
                summary: vec!["loaded at start-up".to_owned()],
            },
            files: history::basenames(&policy.sources),
        };
        Arc::new(Self::new(
            None,
            policy,
            Versions::new(vec![first], HISTORY_LIMIT),
        ))
    }

    fn new(dir: Option<PathBuf>, policy: Policy, versions: Versions) -> Self {
        let version = versions.current().map_or(1, |k| k.meta.version);
        Self {
            dir,
            current: ArcSwap::from_pointee(policy),
            version: watch::Sender::new(version),
            reloading: Mutex::new(()),
            versions: Mutex::new(versions),
            rejected: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn versions(&self) -> MutexGuard<'_, Versions> {
        self.versions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The versions kept, newest first: who applied each, when, and what it changed.
    pub fn history(&self) -> Vec<VersionMeta> {
        self.versions().list()
    }

    /// The files of a kept version (named by file name alone), for a rollback.
    pub fn kept(&self, version: u64) -> Option<Vec<PolicyFile>> {
        self.versions().get(version).map(|k| k.files.clone())
    }

    /// The policy in force. Lock-free; keep the snapshot for the work at hand.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// The version in force.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Sees every version change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The policy directory (empty for a store made with [`from_policy`](Self::from_policy)).
    pub fn dir(&self) -> &Path {
        self.dir.as_deref().unwrap_or(Path::new(""))
    }

    /// How many changes of the directory were refused (the old policy kept serving).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads and compiles the directory again and applies it; returns the version in
    /// force. A set identical to the one in force changes nothing, not even the version.
    ///
    /// Fails with every error when the set is invalid; the policy in force stays.
    pub fn reload(&self) -> Result<u64, PolicyErrors> {
        self.reload_changed().map(|(version, _)| version)
    }

    /// [`reload`](Self::reload), also saying whether anything changed.
    fn reload_changed(&self) -> Result<(u64, bool), PolicyErrors> {
        let Some(dir) = &self.dir else {
            return Err(PolicyErrors(vec![PolicyError {
                file: String::new(),
                line: None,
                path: String::new(),
                message: "this policy store has no directory to reload from".into(),
            }]));
        };
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let policy = load_dir(dir)?;
        let current = self.current.load_full();
        if policy.sources == current.sources {
            return Ok((self.version(), false));
        }
        let meta = self.next_meta(&current, &policy, DIRECTORY_AUTHOR);
        Ok((self.swap(policy, meta), true))
    }

    /// Puts `policy` in force and returns its version.
    pub fn replace(&self, policy: Policy) -> u64 {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let meta = self.next_meta(&self.current(), &policy, "replace");
        self.swap(policy, meta)
    }

    /// The record of the version after the one in force; call with the lock held.
    fn next_meta(&self, current: &Policy, next: &Policy, author: &str) -> VersionMeta {
        VersionMeta {
            version: self.version() + 1,
            time: history::now(),
            author: author.to_owned(),
            summary: summarize(&merge(&current.sources), &merge(&next.sources)),
        }
    }

    /// Puts `policy` in force as the version `meta` records; call with the lock held.
    fn swap(&self, policy: Policy, meta: VersionMeta) -> u64 {
        let files = history::basenames(&policy.sources);
        let version = meta.version;
        self.versions().push(Kept { meta, files });
        self.current.store(Arc::new(policy));
        self.version.send_replace(version);
        version
    }

    /// Watches the directory (not its subdirectories) and reloads after each burst of
    /// changes, logging the version applied or every error of a refused change. Watching
    /// the directory rather than its files also sees a mounted ConfigMap's `..data`
    /// symlink swap. Dropping the returned watcher stops watching.
    ///
    /// Fails when the directory cannot be watched (or the store has none).
    pub fn watch(self: &Arc<Self>) -> Result<PolicyWatcher, notify::Error> {
        let Some(dir) = self.dir.clone() else {
            return Err(notify::Error::generic("the policy store has no directory"));
        };
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let filter_dir = dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if relevant(&event, &filter_dir) => {
                    let _ = events.send(Signal::Change);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "policy directory watch failed"),
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let store = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || store.follow(&rx))
            .map_err(notify::Error::io)?;
        Ok(PolicyWatcher {
            _watcher: watcher,
            stop: tx,
            thread: Some(thread),
        })
    }

    /// The watcher's loop: wait for a change, let the burst settle, reload.
    fn follow(&self, signals: &mpsc::Receiver<Signal>) {
        while let Ok(Signal::Change) = signals.recv() {
            let started = Instant::now();
            let mut quiet_at = started + DEBOUNCE;
            loop {
                let now = Instant::now();
                if now >= quiet_at || now >= started + MAX_DELAY {
                    break;
                }
                match signals.recv_timeout(quiet_at - now) {
                    Ok(Signal::Change) => quiet_at = Instant::now() + DEBOUNCE,
                    Err(RecvTimeoutError::Timeout) => break,
                    Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            let dir = self.dir().display();
            match self.reload_changed() {
                Ok((version, true)) => tracing::info!(version, %dir, "policy applied"),
                Ok((_, false)) => {}
                Err(errors) => {
                    self.rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let count = errors.0.len();
                    tracing::warn!(%dir, count, "policy change refused; the previous policy keeps serving");
                    for error in &errors.0 {
                        tracing::warn!(%error, "invalid policy");
                    }
                }
            }
        }
    }
}

/// Watches the policy directory while it lives; see [`PolicyStore::watch`].
#[derive(Debug)]
pub struct PolicyWatcher {
    _watcher: notify::RecommendedWatcher,
    stop: mpsc::Sender<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(Signal::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug)]
enum Signal {
    Change,
    Stop,
}

/// Whether an event may change the policy set: a top-level YAML file, the directory
/// itself, a ConfigMap's `..data` swap, or a lost-events rescan. Reads, editors'
/// dotfiles and other files are not.
fn relevant(event: &notify::Event, dir: &Path) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    if event.need_rescan() || event.paths.is_empty() {
        return true;
    }
    event.paths.iter().any(|path| {
        if path == dir {
            return true;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        name.starts_with("..")
            || (!name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")))
    })
}
