//! The policy in force: loaded from the policy directory, swapped atomically on change.
//!
//! Readers take a snapshot with [`PolicyStore::current`] (lock-free) and keep it for the
//! request or connection at hand; a reload compiles the whole directory and swaps the
//! new policy in, or changes nothing and reports every error. Admin writes ([`write`])
//! go through the same lock, and every version is recorded in [`history`].
//!
//! The set comes from one of three places ([`Backing`]): memory (tests), the policy
//! directory (the default, watched with inotify), or etcd, shared by a fleet
//! ([`etcd`]). Readers never know which.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::watch;

use super::edit::summarize_files;
use super::{compile, Policy, PolicyError, PolicyErrors, PolicyFile};
use history::{Kept, VersionMeta, Versions};

pub mod etcd;
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

/// Gives the files that `current` has unchanged the text already in memory, so that
/// the versions kept share one copy of each text.
fn share_unchanged(files: &mut [PolicyFile], current: &[PolicyFile]) {
    for file in files {
        let same = current
            .iter()
            .find(|kept| kept.name == file.name && kept.text == file.text);
        if let Some(kept) = same {
            file.text = Arc::clone(&kept.text);
        }
    }
}

/// Reads every top-level `*.yaml` / `*.yml` of `dir` (sorted by name) and compiles them.
/// Dotfiles and subdirectories (such as `.history/`) are not read; symbolic links are
/// followed, as a mounted ConfigMap's files are links.
///
/// Fails when the directory cannot be read or the set does not compile.
pub fn load_dir(dir: &Path) -> Result<Policy, PolicyErrors> {
    let (files, errors) = read_dir(dir)?;
    compile_read(&files, errors)
}

/// The policy files of `dir`, and the errors of those that could not be read.
fn read_dir(dir: &Path) -> Result<(Vec<PolicyFile>, Vec<PolicyError>), PolicyErrors> {
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
                text: text.into(),
            }),
            Err(e) => errors.push(PolicyError {
                file: display,
                line: None,
                path: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    Ok((files, errors))
}

/// Compiles what [`read_dir`] read; a file that could not be read fails the set, with
/// every error of the others.
fn compile_read(
    files: &[PolicyFile],
    mut errors: Vec<PolicyError>,
) -> Result<Policy, PolicyErrors> {
    match compile(files) {
        Ok(policy) if errors.is_empty() => Ok(policy),
        Ok(_) => Err(PolicyErrors(errors)),
        Err(PolicyErrors(more)) => {
            errors.extend(more);
            Err(PolicyErrors(errors))
        }
    }
}

/// Where a store's set comes from.
#[derive(Debug)]
pub enum Backing {
    /// A policy in memory: no reload, no write.
    Memory,
    /// The policy directory.
    Dir(PathBuf),
    /// etcd, shared by a fleet.
    Etcd(Arc<etcd::Etcd>),
}

/// The policy in force, with its version (the directory's: 1 for the first, +1 per
/// applied change; etcd's: the revision of the set).
#[derive(Debug)]
pub struct PolicyStore {
    backing: Backing,
    /// Whether a policy was ever loaded (etcd: not before the first read or cache).
    loaded: AtomicBool,
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
                summary.extend(summarize_files(&last.files, &files));
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
        let store = Self::new(Backing::Dir(dir), policy, Versions::new(kept, keep));
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
            Backing::Memory,
            policy,
            Versions::new(vec![first], HISTORY_LIMIT),
        ))
    }

    /// A store following etcd, serving `first` (from etcd or the cache) until etcd says
    /// otherwise; with `None` it serves nothing and is not [`loaded`](Self::loaded).
    /// The history is etcd's: only the version in force is kept here.
    pub fn from_etcd(etcd: Arc<etcd::Etcd>, first: Option<(Policy, VersionMeta)>) -> Arc<Self> {
        let loaded = first.is_some();
        let (policy, kept) = match first {
            Some((policy, meta)) => {
                let files = history::basenames(&policy.sources);
                (policy, vec![Kept { meta, files }])
            }
            None => (Policy::empty(), Vec::new()),
        };
        let store = Self::new(Backing::Etcd(etcd), policy, Versions::new(kept, 1));
        store
            .loaded
            .store(loaded, std::sync::atomic::Ordering::Release);
        if !loaded {
            store.version.send_replace(0);
        }
        Arc::new(store)
    }

    fn new(backing: Backing, policy: Policy, versions: Versions) -> Self {
        let version = versions.current().map_or(1, |k| k.meta.version);
        Self {
            backing,
            loaded: AtomicBool::new(true),
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
        match &self.backing {
            Backing::Etcd(etcd) => etcd.history(self.version()),
            _ => self.versions().list(),
        }
    }

    /// The files of a kept version (named by file name alone), for a rollback. Call it
    /// off the runtime's threads: with etcd it waits for the pieces.
    ///
    /// Fails when etcd is unreachable.
    pub fn kept(&self, version: u64) -> Result<Option<Vec<PolicyFile>>, write::WriteError> {
        match &self.backing {
            Backing::Etcd(etcd) => {
                let handle = tokio::runtime::Handle::try_current()
                    .map_err(|e| write::WriteError::Io(e.to_string()))?;
                handle
                    .block_on(etcd.version_files(version))
                    .map_err(|e| write::WriteError::Unavailable(e.to_string()))
            }
            _ => Ok(self.versions().get(version).map(|k| k.files.clone())),
        }
    }

    /// Where the set comes from.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The etcd side, when the set comes from etcd.
    pub fn etcd(&self) -> Option<&Arc<etcd::Etcd>> {
        match &self.backing {
            Backing::Etcd(etcd) => Some(etcd),
            _ => None,
        }
    }

    /// Whether a policy is loaded: false only for an etcd store that has read nothing
    /// yet (etcd unreachable with no cache, or an empty prefix).
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Where the set comes from, for people: the directory, or etcd's endpoints and prefix.
    pub fn describe(&self) -> String {
        match &self.backing {
            Backing::Memory => "memory".to_owned(),
            Backing::Dir(dir) => dir.display().to_string(),
            Backing::Etcd(etcd) => format!("etcd {} prefix {}", etcd.endpoints(), etcd.prefix()),
        }
    }

    /// Lines for `/readyz` details: the store's state and any refused change.
    pub fn details(&self) -> Vec<String> {
        match &self.backing {
            Backing::Etcd(etcd) => {
                let mut out = etcd.details();
                if !self.loaded() {
                    out.insert(0, "not ready: no policy loaded yet (the etcd prefix is empty, or etcd is unreachable and there is no cache)".to_owned());
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// Puts `policy` in force as the version `meta` records unless that version (or a
    /// later one) is in force already: a writer and the watch both see each change, and
    /// whichever comes second changes nothing. Returns whether it was applied.
    pub fn install(&self, policy: Policy, meta: VersionMeta) -> bool {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.loaded() && meta.version <= self.version() {
            return false;
        }
        self.swap(policy, meta);
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        true
    }

    /// Counts a change that was refused.
    pub(crate) fn count_rejected(&self) {
        self.rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    /// The policy directory (empty unless the set comes from one).
    pub fn dir(&self) -> &Path {
        match &self.backing {
            Backing::Dir(dir) => dir,
            _ => Path::new(""),
        }
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
        let Backing::Dir(dir) = &self.backing else {
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
        // Read and compared before compiling: most reloads (the history written beside
        // the files, an editor's swap file) change nothing.
        let (mut files, errors) = read_dir(dir)?;
        let current = self.current.load_full();
        if errors.is_empty() && files == current.sources {
            return Ok((self.version(), false));
        }
        share_unchanged(&mut files, &current.sources);
        let policy = compile_read(&files, errors)?;
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
            summary: summarize_files(&current.sources, &next.sources),
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
        let Backing::Dir(dir) = &self.backing else {
            return Err(notify::Error::generic("the policy store has no directory"));
        };
        let dir = dir.clone();
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
                    self.count_rejected();
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
