//! Admin writes to etcd: read the revision in force, prepare and compile the new set,
//! upload its pieces, then one transaction that swaps the manifest only if `P policy`
//! is still at that revision, records the history entry and prunes the oldest. A lost
//! race answers 412 when the writer named a version (`If-Match`), else the write is
//! prepared again on the newer set.
//!
//! This runs on the admin API's blocking thread: the etcd requests are driven with
//! `Handle::block_on`, and `prepare` (which may itself read a kept version) runs between
//! them, never inside one.

use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};

use super::layout::{self, Manifest, Packed};
use super::{meta, to_i64, Etcd, Unreachable};
use crate::policy::edit::summarize_files;
use crate::policy::store::history;
use crate::policy::store::write::{Candidate, WriteError, Written};
use crate::policy::store::PolicyStore;
use crate::policy::{compile, Policy, PolicyFile};

/// How often a write without `If-Match` is prepared again after losing a race.
const ATTEMPTS: usize = 3;

/// The revision in force in etcd and what a write needs to know of it.
struct Base {
    revision: u64,
    /// The value of `P policy` when it is not the set this replica serves.
    value: Option<Vec<u8>>,
    /// History keys, oldest first.
    history: Vec<String>,
}

/// See [`PolicyStore::write`].
pub fn write(
    store: &PolicyStore,
    etcd: &Etcd,
    author: &str,
    if_match: Option<u64>,
    dry_run: bool,
    mut prepare: impl FnMut(&Policy) -> Result<Candidate, WriteError>,
) -> Result<Written, WriteError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| WriteError::Io(format!("no runtime for the etcd store: {e}")))?;
    for _ in 0..ATTEMPTS {
        let base = handle
            .block_on(read_base(etcd, store.version()))
            .map_err(unavailable)?;
        if let Some(expected) = if_match.filter(|v| *v != base.revision) {
            return Err(WriteError::Stale {
                expected,
                current: base.revision,
            });
        }
        let current = match &base.value {
            None => store.current(),
            Some(value) => {
                // A set in etcd that does not decode or compile was refused by every
                // replica: edits apply to the last good one, which they serve.
                let files = handle
                    .block_on(etcd.files_of(value))
                    .map_err(unavailable)?
                    .ok();
                match files.map(|files| compile(&files)) {
                    Some(Ok(policy)) => std::sync::Arc::new(policy),
                    _ => store.current(),
                }
            }
        };
        // Prepared on the set in etcd: a rule edit made after losing a race is made on
        // the set that won it.
        let candidate = prepare(&current)?;
        let files = vec![PolicyFile {
            name: layout::PLAIN_FILE.to_owned(),
            text: candidate.text.as_str().into(),
        }];
        let policy = compile(&files).map_err(|errors| WriteError::Invalid {
            errors,
            body_lines: candidate.body_lines,
        })?;
        if policy.sources == current.sources {
            return Ok(Written {
                version: base.revision,
                changed: false,
                summary: Vec::new(),
            });
        }
        let mut summary = summarize_files(&current.sources, &files);
        if let Some(note) = &candidate.note {
            summary.insert(0, note.clone());
        }
        if dry_run {
            return Ok(Written {
                version: base.revision,
                changed: true,
                summary,
            });
        }
        let packed = layout::pack(&files).map_err(|e| WriteError::BadRequest(e.to_string()))?;
        let manifest = Manifest {
            files: packed.files.clone(),
            pieces: packed.pieces.iter().map(|(d, _)| d.clone()).collect(),
            bytes: packed.bytes,
            author: author.to_owned(),
            time: history::now(),
            summary: layout::capped(&summary),
        };
        let committed = handle
            .block_on(commit(etcd, &base, &packed, &manifest))
            .map_err(unavailable)?;
        match committed {
            Some(version) => {
                let meta = meta(version, &manifest);
                store.install(policy, meta.clone());
                etcd.saw(version);
                etcd.save_cache(version, &meta, &files);
                tracing::info!(version, %author, "policy changed through the admin API (etcd)");
                handle.block_on(collect_garbage(etcd));
                return Ok(Written {
                    version,
                    changed: true,
                    summary,
                });
            }
            None if if_match.is_some() => {
                let current = handle
                    .block_on(read_base(etcd, store.version()))
                    .map_or(base.revision, |b| b.revision);
                return Err(WriteError::Stale {
                    expected: base.revision,
                    current,
                });
            }
            // Lost a race with no version named: prepared again on the newer set.
            None => {}
        }
    }
    Err(WriteError::Io(
        "the policy in etcd kept changing while this write was prepared; send it again".to_owned(),
    ))
}

/// A failed request as a write's error: 503 while etcd cannot be reached, 500 when it
/// answered and refused.
fn unavailable(e: Unreachable) -> WriteError {
    if e.refused {
        WriteError::Io(e.to_string())
    } else {
        WriteError::Unavailable(e.to_string())
    }
}

/// Seeds an empty prefix with `files`, as version 1 of the fleet's history. Returns the
/// revision written, or `None` when the prefix already holds a policy.
///
/// Fails when etcd is unreachable or the set is too large.
pub async fn seed(
    etcd: &Etcd,
    files: &[PolicyFile],
    author: &str,
) -> Result<Option<u64>, WriteError> {
    let base = read_base(etcd, 0).await.map_err(unavailable)?;
    if base.revision != 0 {
        return Ok(None);
    }
    let packed = layout::pack(files).map_err(|e| WriteError::BadRequest(e.to_string()))?;
    let manifest = Manifest {
        files: packed.files.clone(),
        pieces: packed.pieces.iter().map(|(d, _)| d.clone()).collect(),
        bytes: packed.bytes,
        author: author.to_owned(),
        time: history::now(),
        summary: vec!["seeded the fleet's policy".to_owned()],
    };
    commit(etcd, &base, &packed, &manifest)
        .await
        .map_err(unavailable)
}

/// The revision of `P policy` (0 when absent), its value when it is not `serving`, and
/// the history keys, oldest first.
async fn read_base(etcd: &Etcd, serving: u64) -> Result<Base, Unreachable> {
    let mut client = etcd.client().await?;
    let history = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_sort(SortTarget::Create, SortOrder::Ascend);
    let txn = Txn::new().and_then([
        TxnOp::get(etcd.keys.policy(), None),
        TxnOp::get(etcd.keys.history(), Some(history)),
    ]);
    let response = etcd.call("reading the policy", client.txn(txn)).await?;
    let mut gets = response.op_responses().into_iter().filter_map(|r| match r {
        etcd_client::TxnOpResponse::Get(get) => Some(get),
        _ => None,
    });
    let policy = gets
        .next()
        .and_then(|mut g| g.take_kvs().into_iter().next());
    let history = gets
        .next()
        .map(|g| {
            g.kvs()
                .iter()
                .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let revision = policy
        .as_ref()
        .map_or(0, |kv| u64::try_from(kv.mod_revision()).unwrap_or(0));
    etcd.saw(revision);
    let value = policy
        .filter(|_| revision != serving)
        .map(|kv| kv.value().to_vec());
    Ok(Base {
        revision,
        value,
        history,
    })
}

/// Uploads the pieces etcd lacks, then swaps the manifest in one transaction that holds
/// only while `P policy` is at `base.revision` and every piece is there. Returns the
/// new version, or `None` when another write came first.
async fn commit(
    etcd: &Etcd,
    base: &Base,
    packed: &Packed,
    manifest: &Manifest,
) -> Result<Option<u64>, Unreachable> {
    let mut client = etcd.client().await?;
    let mut compares = vec![Compare::mod_revision(
        etcd.keys.policy(),
        CompareOp::Equal,
        to_i64(base.revision),
    )];
    for (digest, piece) in &packed.pieces {
        let key = etcd.keys.blob(digest);
        let there = etcd
            .call(
                "checking a piece",
                client.get(key.clone(), Some(GetOptions::new().with_count_only())),
            )
            .await?
            .count()
            > 0;
        if !there {
            etcd.call(
                "writing a piece",
                client.put(key.clone(), piece.clone(), None),
            )
            .await?;
        }
        // A piece removed by another writer's clean-up since would leave the manifest
        // pointing at nothing: the transaction checks that each one is still there.
        compares.push(Compare::version(key, CompareOp::Greater, 0));
    }
    let value = layout::encode(manifest);
    let mut ops = vec![
        TxnOp::put(etcd.keys.policy(), value.clone(), None),
        TxnOp::put(etcd.keys.history_entry(base.revision), value, None),
    ];
    // Keep `history_limit` entries with the new one; etcd allows 128 operations.
    let excess = (base.history.len() + 1).saturating_sub(etcd.history_limit);
    for key in base.history.iter().take(excess.min(100)) {
        ops.push(TxnOp::delete(key.clone(), None));
    }
    let response = etcd
        .call(
            "writing the policy",
            client.txn(Txn::new().when(compares).and_then(ops)),
        )
        .await?;
    if !response.succeeded() {
        return Ok(None);
    }
    Ok(response
        .header()
        .and_then(|h| u64::try_from(h.revision()).ok()))
}

/// Removes pieces no kept version names. Only pieces older than the oldest history entry
/// go: a writer uploads its pieces just before its transaction, so a piece that young may
/// belong to a write in flight. Best effort: a failure leaves garbage, never a gap.
async fn collect_garbage(etcd: &Etcd) {
    let Ok(mut client) = etcd.client().await else {
        return;
    };
    let Ok(history) = etcd
        .call(
            "reading the history",
            client.get(etcd.keys.history(), Some(GetOptions::new().with_prefix())),
        )
        .await
    else {
        return;
    };
    let Ok(policy) = etcd
        .call("reading the policy", client.get(etcd.keys.policy(), None))
        .await
    else {
        return;
    };
    let mut named = std::collections::HashSet::new();
    let mut oldest = i64::MAX;
    for kv in history.kvs().iter().chain(policy.kvs()) {
        oldest = oldest.min(kv.create_revision());
        if let Ok(layout::Stored::Manifest(m)) = layout::decode(kv.value()) {
            named.extend(m.pieces);
        }
    }
    let Ok(pieces) = etcd
        .call(
            "listing pieces",
            client.get(
                etcd.keys.blobs(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        )
        .await
    else {
        return;
    };
    for kv in pieces.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let digest = key.rsplit('/').next().unwrap_or_default();
        if !named.contains(digest) && kv.mod_revision() < oldest {
            let _ = etcd
                .call("removing a piece", client.delete(key, None))
                .await;
        }
    }
}
