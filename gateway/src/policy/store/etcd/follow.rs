//! A replica following etcd: the first read at start-up ([`open`]), then one watch on
//! the history, members and policy keys ([`follow`]) that applies each change as it
//! arrives, and the replica's own member entry on a lease ([`register`]).
//!
//! The watch resumes from the last revision it saw after any break, so no change is
//! missed; when that revision was compacted meanwhile, everything is read again.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, KeyValue, PutOptions, WatchOptions};

use super::layout::{self, Key, Stored};
use super::{
    decode_member, layout_errors, lock, meta, Etcd, Member, Unreachable, MEMBER_TTL_SECONDS,
};
use crate::policy::edit::summarize_files;
use crate::policy::store::history::{self, VersionMeta};
use crate::policy::store::{load_dir, PolicyStore};
use crate::policy::{compile, PolicyErrors, PolicyFile};

/// The first retry after a failure waits this long, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Who a policy put into etcd by hand (not through a gateway) is credited to.
const HAND_AUTHOR: &str = "etcd (written directly)";

/// Why the etcd store cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The seed directory does not compile.
    #[error("--seed-from {dir}: invalid policy:\n{errors}")]
    Seed {
        /// The directory.
        dir: String,
        /// Every error.
        errors: PolicyErrors,
    },
    /// The seed is too large for the store.
    #[error("--seed-from {dir}: {message}")]
    SeedTooLarge {
        /// The directory.
        dir: String,
        /// Why.
        message: String,
    },
}

/// Reads the prefix (seeding it from `seed_from` when it is empty) and builds the
/// store: with etcd's policy, else the cached one when etcd is unreachable, else none
/// (not ready, saying why). Returns the store and the revision read, if etcd answered.
///
/// Fails only when the seed directory is invalid.
pub async fn open(
    etcd: Arc<Etcd>,
    seed_from: Option<&Path>,
) -> Result<(Arc<PolicyStore>, Option<u64>), OpenError> {
    if let Some(dir) = seed_from {
        let policy = load_dir(dir).map_err(|errors| OpenError::Seed {
            dir: dir.display().to_string(),
            errors,
        })?;
        let files = history::basenames(&policy.sources);
        match super::write::seed(&etcd, &files, "seed").await {
            Ok(Some(version)) => {
                tracing::info!(version, dir = %dir.display(), "seeded the empty etcd prefix")
            }
            Ok(None) => {
                tracing::info!(dir = %dir.display(), "the etcd prefix holds a policy already; --seed-from ignored")
            }
            Err(crate::policy::store::write::WriteError::BadRequest(message)) => {
                return Err(OpenError::SeedTooLarge {
                    dir: dir.display().to_string(),
                    message,
                })
            }
            Err(error) => {
                tracing::warn!(%error, "cannot seed the etcd prefix now");
            }
        }
    }
    let read = etcd.read_all().await;
    let mut first = None;
    let mut revision = None;
    match read {
        Ok(snapshot) => {
            etcd.load_snapshot(&snapshot);
            revision = Some(snapshot.revision);
            match &snapshot.policy {
                Some(kv) => match compile_value(&etcd, kv, None).await {
                    Ok(Ok((policy, meta, files))) => {
                        etcd.save_cache(meta.version, &meta, &files);
                        first = Some((policy, meta));
                    }
                    Ok(Err(errors)) => {
                        etcd.refuse(version_of(kv), errors);
                        first = from_cache(&etcd);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the policy from etcd; trying the cache");
                        first = from_cache(&etcd);
                        revision = None;
                    }
                },
                None => tracing::warn!(
                    prefix = %etcd.prefix(),
                    "the etcd prefix holds no policy: not ready until one is applied (egressctl policy apply -f FILE, or start with --seed-from DIR)"
                ),
            }
        }
        Err(error) => {
            tracing::warn!(%error, "etcd unreachable at start-up; serving the cached policy");
            first = from_cache(&etcd);
            if first.is_none() {
                tracing::warn!(cache = %etcd.cache_dir().display(), "no cached policy either: not ready until etcd answers");
            }
        }
    }
    let store = PolicyStore::from_etcd(Arc::clone(&etcd), first);
    Ok((store, revision))
}

fn version_of(kv: &KeyValue) -> u64 {
    u64::try_from(kv.mod_revision()).unwrap_or(0)
}

/// The cached policy, compiled.
fn from_cache(etcd: &Etcd) -> Option<(crate::policy::Policy, VersionMeta)> {
    let (version, meta, files) = etcd.load_cache()?;
    match compile(&files) {
        Ok(policy) => {
            tracing::info!(version, cache = %etcd.cache_dir().display(), "serving the cached policy");
            Some((policy, meta))
        }
        Err(errors) => {
            tracing::warn!(%errors, "the cached policy does not compile; ignoring it");
            None
        }
    }
}

/// A `P policy` value, fetched and compiled off the runtime's threads: the policy with
/// its record and files, or every error (the same on every replica).
async fn compile_value(
    etcd: &Etcd,
    kv: &KeyValue,
    current: Option<&crate::policy::Policy>,
) -> Result<Result<(crate::policy::Policy, VersionMeta, Vec<PolicyFile>), PolicyErrors>, Unreachable>
{
    let version = version_of(kv);
    let (files, record) = match layout::decode(kv.value()) {
        Ok(Stored::Manifest(manifest)) => match etcd.fetch_set(&manifest).await? {
            Ok(files) => (files, Some(meta(version, &manifest))),
            Err(e) => return Ok(Err(layout_errors(version, e))),
        },
        Ok(Stored::Plain(text)) => (
            vec![PolicyFile {
                name: layout::PLAIN_FILE.to_owned(),
                text: text.into(),
            }],
            None,
        ),
        Err(e) => return Ok(Err(layout_errors(version, e))),
    };
    // Only a set put by hand lacks a record; summarizing 100k rules is not free.
    let summary = match (&record, current) {
        (None, Some(c)) => Some(summarize_files(&c.sources, &files)),
        _ => None,
    };
    // The files go to the compiling thread and come back: a 100k-rule set is megabytes.
    let compiled = tokio::task::spawn_blocking(move || {
        let policy = compile(&files);
        (policy, files)
    })
    .await;
    let (policy, files) = match compiled {
        Ok((Ok(policy), files)) => (policy, files),
        Ok((Err(errors), _)) => return Ok(Err(errors)),
        Err(e) => {
            return Ok(Err(layout_errors(
                version,
                format!("compiling failed: {e}"),
            )))
        }
    };
    let record = record.unwrap_or_else(|| VersionMeta {
        version,
        time: history::now(),
        author: HAND_AUTHOR.to_owned(),
        summary: summary.unwrap_or_else(|| vec!["put into etcd directly".to_owned()]),
    });
    Ok(Ok((policy, record, files)))
}

/// Applies a `P policy` value unless its version is in force already.
///
/// Fails when etcd is unreachable while the pieces are read (nothing is applied).
async fn apply(store: &PolicyStore, etcd: &Etcd, kv: &KeyValue) -> Result<(), Unreachable> {
    let version = version_of(kv);
    etcd.saw(version);
    if store.loaded() && version <= store.version() {
        return Ok(());
    }
    let current = store.current();
    match compile_value(etcd, kv, store.loaded().then_some(&*current)).await? {
        Ok((policy, meta, files)) => {
            let is_plain = meta.author == HAND_AUTHOR;
            if is_plain {
                *lock(&etcd.plain) = Some(meta.clone());
            }
            if store.install(policy, meta.clone()) {
                etcd.accepted();
                etcd.save_cache(version, &meta, &files);
                tracing::info!(version, author = %meta.author, "policy applied from etcd");
            }
        }
        Err(errors) => {
            store.count_rejected();
            etcd.refuse(version, errors);
        }
    }
    Ok(())
}

/// How a watch ended.
enum Ended {
    /// The revision to resume from was compacted: read everything again.
    Compacted,
    /// The stream broke (etcd down, black-holed, restarted).
    Broken(String),
}

/// Follows the prefix for as long as the store lives: watches from `resume + 1`, or
/// reads everything first when `resume` is `None`.
pub async fn follow(store: Arc<PolicyStore>, mut resume: Option<u64>) {
    let Some(etcd) = store.etcd().cloned() else {
        return;
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let from = match resume {
            Some(revision) => revision,
            None => match read_everything(&store, &etcd).await {
                Ok(revision) => revision,
                Err(error) => {
                    tracing::debug!(%error, "etcd full read failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        resume = Some(from);
        match watch(&store, &etcd, from, &mut resume, &mut backoff).await {
            Ended::Compacted => {
                tracing::warn!(
                    from,
                    "the revisions missed while away were compacted; reading the whole policy again"
                );
                resume = None;
            }
            Ended::Broken(reason) => {
                etcd.mark_down(&reason);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Reads the prefix whole and applies it. Returns the revision read.
async fn read_everything(store: &PolicyStore, etcd: &Etcd) -> Result<u64, Unreachable> {
    let snapshot = etcd.read_all().await?;
    etcd.load_snapshot(&snapshot);
    if let Some(kv) = &snapshot.policy {
        apply(store, etcd, kv).await?;
    }
    Ok(snapshot.revision)
}

/// Watches from `from + 1`, applying each event; `resume` follows the last revision
/// fully applied.
async fn watch(
    store: &PolicyStore,
    etcd: &Etcd,
    from: u64,
    resume: &mut Option<u64>,
    backoff: &mut Duration,
) -> Ended {
    let mut client = match etcd.client().await {
        Ok(client) => client,
        Err(e) => return Ended::Broken(e.to_string()),
    };
    let options = WatchOptions::new()
        .with_range(etcd.keys.watch_end())
        .with_start_revision(super::to_i64(from + 1));
    let stream = tokio::time::timeout(
        etcd.timeout(),
        client.watch(etcd.keys.history(), Some(options)),
    )
    .await;
    let mut stream = match stream {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Ended::Broken(format!("watching: {e}")),
        Err(_) => return Ended::Broken("watching: no answer".to_owned()),
    };
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ended::Broken("the watch ended".to_owned()),
            Err(e) => return Ended::Broken(format!("watching: {e}")),
        };
        if message.compact_revision() > 0 {
            return Ended::Compacted;
        }
        if message.canceled() {
            return Ended::Broken(format!("watch canceled: {}", message.cancel_reason()));
        }
        if message.created() {
            etcd.mark_up();
            *backoff = FIRST_BACKOFF;
        }
        for event in message.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match (etcd.keys.classify(&key), event.event_type()) {
                (Key::Policy, EventType::Put) => {
                    if let Err(e) = apply(store, etcd, kv).await {
                        // Not applied: resume from before this event.
                        return Ended::Broken(e.to_string());
                    }
                }
                (Key::Policy, EventType::Delete) => tracing::warn!(
                    %key,
                    version = store.version(),
                    "the policy was deleted from etcd; the policy in force keeps serving"
                ),
                (Key::History(_), EventType::Put) => {
                    etcd.note_history(&mut lock(&etcd.history), kv);
                }
                (Key::History(_), EventType::Delete) => {
                    lock(&etcd.history).remove(&key);
                }
                (Key::Member(_), EventType::Put) => {
                    if let Some(member) = decode_member(kv) {
                        lock(&etcd.members).insert(member.id.clone(), member);
                    }
                }
                (Key::Member(id), EventType::Delete) => {
                    lock(&etcd.members).remove(id);
                }
                (Key::Other, _) => {}
            }
            *resume = Some(
                resume
                    .unwrap_or(0)
                    .max(u64::try_from(kv.mod_revision()).unwrap_or(0)),
            );
        }
    }
}

/// Keeps this replica's member entry under `P members/<id>` on a lease, re-written when
/// what it says changes, until the gateway leaves.
pub async fn register(etcd: Arc<Etcd>) {
    let mut backoff = FIRST_BACKOFF;
    let mut me = etcd.me.subscribe();
    while !etcd.leaving.load(Ordering::Acquire) {
        let error = hold_lease(&etcd, &mut me, &mut backoff).await;
        if etcd.leaving.load(Ordering::Acquire) {
            break;
        }
        tracing::debug!(%error, "member entry lost; registering again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn hold_lease(
    etcd: &Etcd,
    me: &mut tokio::sync::watch::Receiver<Member>,
    backoff: &mut Duration,
) -> Unreachable {
    let mut client = match etcd.client().await {
        Ok(client) => client,
        Err(e) => return e,
    };
    let lease = match etcd
        .call(
            "granting a lease",
            client.lease_grant(MEMBER_TTL_SECONDS, None),
        )
        .await
    {
        Ok(lease) => lease.id(),
        Err(e) => return e,
    };
    etcd.lease.store(lease, Ordering::Release);
    let key = etcd.keys.member(etcd.id());
    let put = |client: &mut etcd_client::Client, member: &Member| {
        let value = serde_json::to_vec(member).unwrap_or_default();
        let options = PutOptions::new().with_lease(lease);
        let mut client = client.clone();
        let key = key.clone();
        async move { client.put(key, value, Some(options)).await }
    };
    let current = me.borrow_and_update().clone();
    if let Err(e) = etcd.call("registering", put(&mut client, &current)).await {
        return e;
    }
    let (mut keeper, mut responses) = match etcd
        .call("keeping the lease", client.lease_keep_alive(lease))
        .await
    {
        Ok(pair) => pair,
        Err(e) => return e,
    };
    *backoff = FIRST_BACKOFF;
    let mut tick = tokio::time::interval(Duration::from_millis(
        u64::try_from(MEMBER_TTL_SECONDS).unwrap_or(5) * 1000 / 3,
    ));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if etcd.leaving.load(Ordering::Acquire) {
                    return etcd.unreachable("leaving");
                }
                if let Err(e) = etcd.call("keeping the lease", keeper.keep_alive()).await {
                    return e;
                }
                match etcd.call("keeping the lease", responses.message()).await {
                    Ok(Some(answer)) if answer.ttl() > 0 => {}
                    Ok(_) => return etcd.unreachable("the lease expired"),
                    Err(e) => return e,
                }
            }
            changed = me.changed() => {
                if changed.is_err() {
                    return etcd.unreachable("stopped");
                }
                let current = me.borrow_and_update().clone();
                if let Err(e) = etcd.call("registering", put(&mut client, &current)).await {
                    return e;
                }
            }
        }
    }
}
