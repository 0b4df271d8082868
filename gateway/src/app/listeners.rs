//! The listeners running now, kept in step with the policy: a change that adds a
//! listener binds it, one that removes a listener stops its accepting (connections
//! already open finish on their own), one that changes a listener binds the new socket
//! first (SO_REUSEPORT) and only then stops the old one, so no connection is refused in
//! between. A listener that cannot bind is reported and the rest of the change applies.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::listen::{self, Context, ListenError};
use crate::metrics::Metrics;
use crate::policy::Listener;

/// One listener accepting.
#[derive(Debug)]
struct Running {
    spec: Listener,
    addr: SocketAddr,
    /// Cancelled to stop accepting; the task then takes what is queued and ends.
    stop: CancellationToken,
    _task: JoinHandle<()>,
}

/// What [`Listeners::apply`] changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// Names bound for the first time.
    pub added: Vec<String>,
    /// Names bound anew.
    pub changed: Vec<String>,
    /// Names stopped.
    pub removed: Vec<String>,
    /// Listeners that could not bind.
    pub failed: Vec<ListenError>,
}

impl Applied {
    /// Whether any listener changed or failed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.failed.is_empty()
    }
}

/// The running listeners.
#[derive(Debug)]
pub struct Listeners {
    ctx: Arc<Context>,
    metrics: Metrics,
    bind_address: Option<IpAddr>,
    listen_override: Option<IpAddr>,
    backlog: u32,
    running: Mutex<BTreeMap<String, Running>>,
    /// Listener name → why it is not bound, for `/readyz` details.
    failed: Mutex<BTreeMap<String, String>>,
}

impl Listeners {
    /// No listener yet.
    pub fn new(
        ctx: Arc<Context>,
        metrics: Metrics,
        bind_address: Option<IpAddr>,
        listen_override: Option<IpAddr>,
        backlog: u32,
    ) -> Self {
        Self {
            ctx,
            metrics,
            bind_address,
            listen_override,
            backlog,
            running: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
        }
    }

    fn running(&self) -> MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings the running listeners to `specs`.
    pub fn apply(&self, specs: &[Listener]) -> Applied {
        let mut applied = Applied::default();
        let mut running = self.running();
        let mut failed = self.failed();
        for spec in specs {
            let before = running.get(&spec.name);
            if before.is_some_and(|r| &r.spec == spec) {
                continue;
            }
            let addr = listen::bind_addr(spec, self.bind_address, self.listen_override);
            match listen::bind(spec, addr, self.backlog) {
                Ok(socket) => {
                    let addr = socket.local_addr().unwrap_or(addr);
                    let stop = CancellationToken::new();
                    let task =
                        listen::spawn(Arc::clone(&self.ctx), spec.clone(), socket, stop.clone());
                    let new = Running {
                        spec: spec.clone(),
                        addr,
                        stop,
                        _task: task,
                    };
                    // Bound before the old one stops: the port never goes unserved.
                    match running.insert(spec.name.clone(), new) {
                        Some(old) => {
                            old.stop.cancel();
                            applied.changed.push(spec.name.clone());
                        }
                        None => applied.added.push(spec.name.clone()),
                    }
                    failed.remove(&spec.name);
                }
                Err(error) => {
                    self.metrics
                        .listener_bind_errors
                        .with_label_values(&[spec.name.as_str()])
                        .inc();
                    failed.insert(spec.name.clone(), error.to_string());
                    applied.failed.push(error);
                }
            }
        }
        let gone: Vec<String> = running
            .keys()
            .filter(|name| !specs.iter().any(|s| &&s.name == name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = running.remove(&name) {
                old.stop.cancel();
                applied.removed.push(name);
            }
        }
        failed.retain(|name, _| specs.iter().any(|s| &s.name == name));
        applied
    }

    /// Every bound listener's address, by name.
    pub fn addrs(&self) -> BTreeMap<String, SocketAddr> {
        self.running()
            .iter()
            .map(|(name, r)| (name.clone(), r.addr))
            .collect()
    }

    /// Lines for `/readyz` details: listeners that could not bind.
    pub fn details(&self) -> Vec<String> {
        self.failed()
            .values()
            .map(|error| format!("{error} (the rest of the policy applies)"))
            .collect()
    }

    /// Stops accepting on every listener (taking what is queued first); connections
    /// already accepted go on.
    pub fn stop(&self) {
        for (_, running) in std::mem::take(&mut *self.running()) {
            running.stop.cancel();
        }
    }
}
