//! The etcd policy store: one policy set shared by a fleet of replicas.
//!
//! etcd is the source of truth; each replica keeps the compiled policy in memory as
//! with the file store and follows the prefix with one watch ([`follow`]). The policy's
//! version is the etcd revision at which `P policy` last changed, the same number on
//! every replica. Writes ([`write`]) are one transaction that compares that revision,
//! so two writers through two replicas get one success and one conflict. The layout of
//! the keys is in [`layout`].
//!
//! etcd down never stops traffic: the last good policy keeps serving, writes fail with
//! the endpoints named, the watch resumes from the last revision seen (or reads
//! everything again when that revision was compacted). Every applied set is also written
//! to a local cache file, so a replica that starts while etcd is down serves it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::history::{self, VersionMeta};
use crate::config::EtcdConfig;
use crate::policy::{PolicyError, PolicyErrors, PolicyFile};
use layout::{Keys, Manifest, Stored};

pub mod follow;
pub mod layout;
pub mod write;

/// The cache file inside `store.etcd.cache_dir`.
const CACHE_FILE: &str = "policy.json";
/// The TTL of a replica's member entry: a replica that dies disappears this soon.
pub const MEMBER_TTL_SECONDS: i64 = 5;

/// A replica as it describes itself under `P members/<id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Bootstrap `id`, or the host name.
    pub id: String,
    /// The admin API's address.
    pub admin: String,
    /// Listener name → bound address.
    pub listeners: BTreeMap<String, String>,
    /// The policy version in force.
    pub version: u64,
    /// The gateway's build version.
    pub build: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// Whether it is draining.
    pub draining: bool,
}

/// Whether etcd answers, and since when.
#[derive(Debug, Clone)]
struct Link {
    up: bool,
    since: String,
    error: String,
}

/// A change seen in etcd that did not compile (or did not decode).
#[derive(Debug, Clone)]
struct Refusal {
    revision: u64,
    errors: PolicyErrors,
}

/// The etcd side of a [`PolicyStore`](super::PolicyStore).
pub struct Etcd {
    settings: EtcdConfig,
    password: Option<String>,
    keys: Keys,
    id: String,
    history_limit: usize,
    client: tokio::sync::Mutex<Option<Client>>,
    link: Mutex<Link>,
    /// The highest revision of `P policy` seen.
    latest: AtomicU64,
    refused: Mutex<Option<Refusal>>,
    /// History entries by key: (version, manifest).
    history: Mutex<BTreeMap<String, (u64, Manifest)>>,
    /// The record of a version put by hand (no history entry of its own).
    plain: Mutex<Option<VersionMeta>>,
    members: Mutex<BTreeMap<String, Member>>,
    /// What this replica says of itself; a change re-registers it.
    me: watch::Sender<Member>,
    lease: AtomicI64,
    /// Set once the gateway is shutting down: the member entry is revoked, not renewed.
    leaving: AtomicBool,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.settings.endpoints)
            .field("prefix", &self.keys.prefix())
            .field("id", &self.id)
            .field("latest", &self.latest())
            .finish_non_exhaustive()
    }
}

/// An etcd request that failed: etcd is unreachable, or (`refused`) it answered no.
#[derive(Debug, thiserror::Error)]
#[error("{}", if *refused { format!("the etcd store ({endpoints}) refused the request: {reason}") } else { format!("the etcd store ({endpoints}) is unreachable: {reason}") })]
pub struct Unreachable {
    endpoints: String,
    reason: String,
    /// etcd answered and refused (too large, no permission): it is not down.
    pub refused: bool,
}

/// Whether etcd answered the request and said no, rather than not answering.
fn is_refusal(e: &etcd_client::Error) -> bool {
    // gRPC codes: invalid argument (too large), permission denied, resource exhausted
    // (quota), failed precondition, out of range (compacted), unauthenticated.
    matches!(e, etcd_client::Error::GRpcStatus(status) if matches!(status.code() as i32, 3 | 7 | 8 | 9 | 11 | 16))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Etcd {
    /// The etcd side for `settings`, registering as `id`, pruning history to
    /// `history_limit` versions. Nothing is contacted yet.
    ///
    /// Fails when the password file cannot be read.
    pub fn new(settings: EtcdConfig, id: String, history_limit: usize) -> std::io::Result<Self> {
        let password = match &settings.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("store.etcd.password_file {}: {e}", path.display()),
                        )
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => None,
        };
        let keys = Keys::new(&settings.prefix);
        let me = Member {
            id: id.clone(),
            build: env!("CARGO_PKG_VERSION").to_owned(),
            started: history::now(),
            ..Member::default()
        };
        Ok(Self {
            me: watch::Sender::new(me),
            settings,
            password,
            keys,
            id,
            history_limit: history_limit.max(1),
            client: tokio::sync::Mutex::new(None),
            link: Mutex::new(Link {
                up: false,
                since: history::now(),
                error: "not contacted yet".to_owned(),
            }),
            latest: AtomicU64::new(0),
            refused: Mutex::new(None),
            history: Mutex::new(BTreeMap::new()),
            plain: Mutex::new(None),
            members: Mutex::new(BTreeMap::new()),
            lease: AtomicI64::new(0),
            leaving: AtomicBool::new(false),
        })
    }

    /// The endpoints, for messages.
    pub fn endpoints(&self) -> String {
        self.settings.endpoints.join(",")
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn timeout(&self) -> Duration {
        self.settings.dial_timeout
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> Unreachable {
        Unreachable {
            endpoints: self.endpoints(),
            reason: reason.to_string(),
            refused: false,
        }
    }

    /// A client, connecting on first use (and again after a failed connect).
    async fn client(&self) -> Result<Client, Unreachable> {
        let mut slot = self.client.lock().await;
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let connected = match tokio::time::timeout(self.timeout(), self.connect()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                let e = self.unreachable(format!("connecting: {e}"));
                self.mark_down(&e.reason);
                return Err(e);
            }
            Err(_) => {
                let e =
                    self.unreachable(format!("connecting: no answer within {:?}", self.timeout()));
                self.mark_down(&e.reason);
                return Err(e);
            }
        };
        let client = connected;
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, etcd_client::Error> {
        // HTTP/2 pings find a dead or black-holed etcd within seconds, which ends the
        // watch so that it is re-established.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timeout())
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let (Some(user), Some(password)) = (&self.settings.username, &self.password) {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.settings.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        Client::connect(&self.settings.endpoints, Some(options)).await
    }

    /// Runs one request with the dial timeout, noting whether etcd answered.
    async fn call<T, F>(&self, what: &str, request: F) -> Result<T, Unreachable>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.timeout(), request).await {
            Ok(Ok(value)) => {
                self.mark_up();
                Ok(value)
            }
            Ok(Err(e)) if is_refusal(&e) => {
                self.mark_up();
                let mut e = self.unreachable(format!("{what}: {e}"));
                e.refused = true;
                Err(e)
            }
            Ok(Err(e)) => {
                let e = self.unreachable(format!("{what}: {e}"));
                self.mark_down(&e.reason);
                Err(e)
            }
            Err(_) => {
                let e = self.unreachable(format!("{what}: no answer within {:?}", self.timeout()));
                self.mark_down(&e.reason);
                Err(e)
            }
        }
    }

    fn mark_up(&self) {
        let mut link = lock(&self.link);
        if !link.up {
            tracing::info!(endpoints = %self.endpoints(), "etcd store reachable");
            *link = Link {
                up: true,
                since: history::now(),
                error: String::new(),
            };
        }
    }

    pub(super) fn mark_down(&self, reason: &str) {
        let mut link = lock(&self.link);
        if link.up || link.error != reason {
            if link.up {
                tracing::warn!(endpoints = %self.endpoints(), %reason, "etcd store unreachable; the policy in force keeps serving");
                link.since = history::now();
            }
            link.up = false;
            link.error = reason.to_owned();
        }
    }

    /// Whether etcd answered the last request.
    pub fn up(&self) -> bool {
        lock(&self.link).up
    }

    /// The highest policy revision seen in etcd.
    pub fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    fn saw(&self, revision: u64) {
        self.latest.fetch_max(revision, Ordering::AcqRel);
    }

    /// Lines for `/readyz` details: the store's state and any refused change.
    pub fn details(&self) -> Vec<String> {
        let mut out = Vec::new();
        let link = lock(&self.link).clone();
        if link.up {
            out.push(format!(
                "store: etcd {} prefix {}: reachable, latest revision {}",
                self.endpoints(),
                self.prefix(),
                self.latest()
            ));
        } else {
            out.push(format!(
                "store: unreachable since {} (etcd {}): {}",
                link.since,
                self.endpoints(),
                link.error
            ));
        }
        if let Some(refusal) = &*lock(&self.refused) {
            out.push(format!(
                "policy: revision {} in etcd was refused ({} errors); the last good policy keeps serving",
                refusal.revision,
                refusal.errors.0.len()
            ));
            for error in &refusal.errors.0 {
                out.push(format!("  {error}"));
            }
        }
        out
    }

    fn refuse(&self, revision: u64, errors: PolicyErrors) {
        tracing::warn!(
            revision,
            count = errors.0.len(),
            "policy in etcd refused; the previous policy keeps serving"
        );
        for error in &errors.0 {
            tracing::warn!(%error, "invalid policy");
        }
        *lock(&self.refused) = Some(Refusal { revision, errors });
    }

    fn accepted(&self) {
        *lock(&self.refused) = None;
    }

    /// The versions kept in etcd, newest first.
    pub fn history(&self, current: u64) -> Vec<VersionMeta> {
        let mut list: Vec<VersionMeta> = lock(&self.history)
            .values()
            .map(|(version, m)| meta(*version, m))
            .collect();
        if let Some(plain) = &*lock(&self.plain) {
            if !list.iter().any(|m| m.version == plain.version) {
                list.push(plain.clone());
            }
        }
        list.sort_by_key(|m| std::cmp::Reverse(m.version));
        if !list.iter().any(|m| m.version == current) && current > 0 {
            list.insert(
                0,
                VersionMeta {
                    version: current,
                    time: String::new(),
                    author: "unknown".to_owned(),
                    summary: vec!["no history entry in etcd".to_owned()],
                },
            );
        }
        list.truncate(self.history_limit);
        list
    }

    /// The members seen, by id.
    pub fn members(&self) -> Vec<Member> {
        lock(&self.members).values().cloned().collect()
    }

    /// Updates what this replica says of itself (re-registered at once).
    pub fn describe_me(&self, update: impl FnOnce(&mut Member)) {
        self.me.send_modify(update);
    }

    /// A kept version's files: from its history entry's pieces, or for a version put by
    /// hand, from etcd's own history of the key (until it is compacted). `None` when the
    /// version is not kept (or its pieces are gone).
    ///
    /// Fails when etcd is unreachable.
    pub async fn version_files(
        &self,
        version: u64,
    ) -> Result<Option<Vec<PolicyFile>>, Unreachable> {
        let manifest = lock(&self.history)
            .values()
            .find(|(v, _)| *v == version)
            .map(|(_, m)| m.clone());
        if let Some(manifest) = manifest {
            return Ok(self.fetch_set(&manifest).await?.ok());
        }
        let mut client = self.client().await?;
        let options = GetOptions::new().with_revision(to_i64(version));
        let response = match tokio::time::timeout(
            self.timeout(),
            client.get(self.keys.policy(), Some(options)),
        )
        .await
        {
            Err(_) => return Err(self.unreachable("reading an old version: no answer")),
            // Compacted, or never a version.
            Ok(Err(_)) => return Ok(None),
            Ok(Ok(response)) => response,
        };
        match response.kvs().first() {
            Some(kv) if kv.mod_revision() == to_i64(version) => {
                Ok(self.files_of(kv.value()).await?.ok())
            }
            _ => Ok(None),
        }
    }

    /// The files a `P policy` value holds; the inner error when the value or its pieces
    /// do not decode.
    async fn files_of(
        &self,
        value: &[u8],
    ) -> Result<Result<Vec<PolicyFile>, layout::LayoutError>, Unreachable> {
        match layout::decode(value) {
            Ok(Stored::Manifest(manifest)) => self.fetch_set(&manifest).await,
            Ok(Stored::Plain(text)) => Ok(Ok(vec![PolicyFile {
                name: layout::PLAIN_FILE.to_owned(),
                text: text.into(),
            }])),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Reads and unpacks the pieces a manifest names; the inner error when one is
    /// missing or the set does not decode.
    async fn fetch_set(
        &self,
        manifest: &Manifest,
    ) -> Result<Result<Vec<PolicyFile>, layout::LayoutError>, Unreachable> {
        let mut client = self.client().await?;
        let mut pieces = Vec::with_capacity(manifest.pieces.len());
        for digest in &manifest.pieces {
            let response = self
                .call(
                    "reading the policy",
                    client.get(self.keys.blob(digest), None),
                )
                .await?;
            match response.kvs().first() {
                Some(kv) => pieces.push(kv.value().to_vec()),
                None => {
                    return Ok(Err(layout::LayoutError::Corrupt(format!(
                        "piece {digest} of the stored policy is missing"
                    ))))
                }
            }
        }
        Ok(layout::unpack(manifest, &pieces))
    }

    /// Everything a replica follows, read at one revision: the policy, the history
    /// entries and the members. Returns the revision read at.
    ///
    /// Fails when etcd is unreachable.
    async fn read_all(&self) -> Result<Snapshot, Unreachable> {
        let mut client = self.client().await?;
        let txn = etcd_client::Txn::new().and_then([
            TxnOp::get(self.keys.policy(), None),
            TxnOp::get(self.keys.history(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(self.keys.members(), Some(GetOptions::new().with_prefix())),
        ]);
        let response = self.call("reading the prefix", client.txn(txn)).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut gets = response.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        });
        let mut take = || gets.next().map(|mut g| g.take_kvs()).unwrap_or_default();
        let policy = take().into_iter().next();
        let history = take();
        let members = take();
        Ok(Snapshot {
            revision: u64::try_from(revision).unwrap_or(0),
            policy,
            history,
            members,
        })
    }

    /// Replaces what is known of history and members with a snapshot's.
    fn load_snapshot(&self, snapshot: &Snapshot) {
        let mut history = lock(&self.history);
        history.clear();
        for kv in &snapshot.history {
            self.note_history(&mut history, kv);
        }
        drop(history);
        let mut members = lock(&self.members);
        members.clear();
        for kv in &snapshot.members {
            if let Some(member) = decode_member(kv) {
                members.insert(member.id.clone(), member);
            }
        }
    }

    fn note_history(&self, history: &mut BTreeMap<String, (u64, Manifest)>, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match layout::decode(kv.value()) {
            Ok(Stored::Manifest(manifest)) => {
                let version = u64::try_from(kv.create_revision()).unwrap_or(0);
                history.insert(key, (version, manifest));
            }
            _ => tracing::warn!(%key, "skipping a history entry in etcd that is not a manifest"),
        }
    }

    /// Writes the set in force to the cache file: temporary file, synced, renamed.
    fn save_cache(&self, version: u64, meta: &VersionMeta, files: &[PolicyFile]) {
        let cache = Cache {
            prefix: self.prefix().to_owned(),
            version,
            meta: meta.clone(),
            files: files
                .iter()
                .map(|f| CachedFile {
                    name: f.name.clone(),
                    text: f.text.to_string(),
                })
                .collect(),
        };
        let dir = &self.settings.cache_dir;
        let written = (|| {
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{CACHE_FILE}.tmp"));
            history::write_synced(&tmp, &serde_json::to_vec(&cache)?)?;
            std::fs::rename(&tmp, dir.join(CACHE_FILE))?;
            history::sync_dir(dir)
        })();
        if let Err(error) = written {
            tracing::warn!(dir = %dir.display(), %error, "cannot write the policy cache; a restart while etcd is down will not have this version");
        }
    }

    /// The cached set, when there is one for this prefix.
    pub fn load_cache(&self) -> Option<(u64, VersionMeta, Vec<PolicyFile>)> {
        let path = self.settings.cache_dir.join(CACHE_FILE);
        let text = std::fs::read(&path).ok()?;
        let cache: Cache = match serde_json::from_slice(&text) {
            Ok(cache) => cache,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring an unreadable policy cache");
                return None;
            }
        };
        if cache.prefix != self.prefix() {
            tracing::warn!(path = %path.display(), cached = %cache.prefix, prefix = %self.prefix(), "ignoring a policy cache of another prefix");
            return None;
        }
        let files = cache
            .files
            .into_iter()
            .map(|f| PolicyFile {
                name: f.name,
                text: f.text.into(),
            })
            .collect();
        Some((cache.version, cache.meta, files))
    }

    /// Where the cache lives.
    pub fn cache_dir(&self) -> &Path {
        &self.settings.cache_dir
    }

    /// Marks this replica as leaving and revokes its member entry, so the fleet sees it
    /// go at once rather than when its lease expires.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
        let lease = self.lease.swap(0, Ordering::AcqRel);
        if lease == 0 {
            return;
        }
        if let Ok(mut client) = self.client().await {
            let _ = self
                .call("leaving the fleet", client.lease_revoke(lease))
                .await;
        }
    }
}

/// What [`Etcd::read_all`] read.
#[derive(Debug)]
struct Snapshot {
    revision: u64,
    policy: Option<KeyValue>,
    history: Vec<KeyValue>,
    members: Vec<KeyValue>,
}

#[derive(Serialize, Deserialize)]
struct Cache {
    prefix: String,
    version: u64,
    meta: VersionMeta,
    files: Vec<CachedFile>,
}

#[derive(Serialize, Deserialize)]
struct CachedFile {
    name: String,
    text: String,
}

fn decode_member(kv: &KeyValue) -> Option<Member> {
    serde_json::from_slice(kv.value()).ok()
}

/// A history manifest's record.
fn meta(version: u64, manifest: &Manifest) -> VersionMeta {
    VersionMeta {
        version,
        time: manifest.time.clone(),
        author: manifest.author.clone(),
        summary: manifest.summary.clone(),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn tls_options(
    tls: &crate::config::EtcdTls,
) -> Result<etcd_client::TlsOptions, etcd_client::Error> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| {
            etcd_client::Error::InvalidArgs(format!("store.etcd.tls {}: {e}", path.display()))
        })
    };
    let mut options = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)?));
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        options = options.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(options)
}

/// Errors that stop a set read from etcd from compiling, as the policy errors every
/// replica reports alike.
fn layout_errors(revision: u64, message: impl std::fmt::Display) -> PolicyErrors {
    PolicyErrors(vec![PolicyError {
        file: format!("etcd revision {revision}"),
        line: None,
        path: String::new(),
        message: message.to_string(),
    }])
}
