//! How a policy set is laid out under the etcd prefix `P`:
//!
//! | key | value |
//! |---|---|
//! | `P policy` | the set in force: a manifest ([`MANIFEST_HEADER`] + JSON), or plain policy YAML (what `etcdctl put` writes) |
//! | `P blobs/<sha256>` | a piece of a gzip-compressed set, at most [`PIECE_BYTES`], named by its digest |
//! | `P history/<n>` | the manifest of a version, created in the transaction that put it in force; its create revision is the version |
//! | `P members/<id>` | a replica, on its lease |
//!
//! etcd refuses a value over 1.5 MiB and a transaction over 128 operations by default,
//! while a large set is many megabytes of YAML: the set is compressed, cut into pieces
//! written (content-addressed, so unchanged sets share them) before the one small
//! transaction that swaps the manifest. Everything here is pure, so it is tested
//! without an etcd.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::policy::PolicyFile;

/// The first line of a manifest value.
pub const MANIFEST_HEADER: &str = "# egress-gateway policy manifest v1\n";
/// The largest piece of a compressed set, well below etcd's default 1.5 MiB request limit.
pub const PIECE_BYTES: usize = 1024 * 1024;
/// The most pieces one set may take: 64 MiB compressed (a 100k-rule set takes about one).
pub const MAX_PIECES: usize = 64;
/// The name a plain YAML value is compiled under.
pub const PLAIN_FILE: &str = "policy.yaml";

/// The keys of one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (a trailing `/` is added when missing).
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// The prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The set in force.
    pub fn policy(&self) -> String {
        format!("{}policy", self.prefix)
    }

    /// A piece of a compressed set.
    pub fn blob(&self, digest: &str) -> String {
        format!("{}blobs/{digest}", self.prefix)
    }

    /// Where pieces live.
    pub fn blobs(&self) -> String {
        format!("{}blobs/", self.prefix)
    }

    /// A history entry, named by the version it replaced (unique: one write per base).
    pub fn history_entry(&self, replaced: u64) -> String {
        format!("{}history/{replaced:020}", self.prefix)
    }

    /// Where history entries live.
    pub fn history(&self) -> String {
        format!("{}history/", self.prefix)
    }

    /// A replica's entry.
    pub fn member(&self, id: &str) -> String {
        format!("{}members/{id}", self.prefix)
    }

    /// Where replicas register.
    pub fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }

    /// The end of the range a replica watches: history, members and the policy, but not
    /// the pieces, which are read only when a manifest names them.
    pub fn watch_end(&self) -> Vec<u8> {
        let mut end = self.policy().into_bytes();
        end.push(0);
        end
    }

    /// What kind of key `key` is.
    pub fn classify<'k>(&self, key: &'k str) -> Key<'k> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return Key::Other;
        };
        if rest == "policy" {
            Key::Policy
        } else if let Some(name) = rest.strip_prefix("history/") {
            Key::History(name)
        } else if let Some(id) = rest.strip_prefix("members/") {
            Key::Member(id)
        } else {
            Key::Other
        }
    }
}

/// A key under the prefix, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'k> {
    /// `P policy`.
    Policy,
    /// `P history/<name>`.
    History(&'k str),
    /// `P members/<id>`.
    Member(&'k str),
    /// Anything else (pieces, foreign keys).
    Other,
}

/// What a version is: who wrote it, when, what changed, and where its set is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The set's file names, in order.
    pub files: Vec<String>,
    /// The digests of the compressed set's pieces, in order.
    pub pieces: Vec<String>,
    /// The uncompressed size of the set's text, in bytes.
    pub bytes: u64,
    /// A token's name, or who seeded the prefix.
    pub author: String,
    /// When it was written (RFC 3339, UTC).
    pub time: String,
    /// What it changed from the version before.
    pub summary: Vec<String>,
}

/// A value of `P policy` as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A manifest naming pieces.
    Manifest(Manifest),
    /// A plain YAML document, put there by hand.
    Plain(String),
}

/// Why a value or a set cannot be stored or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The set is larger than the store holds.
    #[error("the policy set is {compressed} bytes compressed ({bytes} bytes of YAML); the etcd store holds at most {limit} bytes compressed per set ({pieces} pieces of {PIECE_BYTES} bytes, each below etcd's 1.5 MiB value limit)", limit = pieces * PIECE_BYTES)]
    TooLarge {
        /// The text's size.
        bytes: u64,
        /// Its compressed size.
        compressed: usize,
        /// The most pieces a set may take.
        pieces: usize,
    },
    /// A manifest or set that does not decode.
    #[error("{0}")]
    Corrupt(String),
}

/// Reads a `P policy` or history value.
///
/// Fails when a value that claims to be a manifest does not decode, or is not UTF-8.
pub fn decode(value: &[u8]) -> Result<Stored, LayoutError> {
    let text = std::str::from_utf8(value)
        .map_err(|_| LayoutError::Corrupt("the stored policy is not UTF-8".to_owned()))?;
    match text.strip_prefix(MANIFEST_HEADER) {
        Some(json) => serde_json::from_str(json)
            .map(Stored::Manifest)
            .map_err(|e| LayoutError::Corrupt(format!("the stored manifest does not decode: {e}"))),
        None => Ok(Stored::Plain(text.to_owned())),
    }
}

/// A manifest as stored.
pub fn encode(manifest: &Manifest) -> Vec<u8> {
    let mut out = MANIFEST_HEADER.as_bytes().to_vec();
    // A manifest of strings always serializes.
    out.extend(serde_json::to_vec(manifest).unwrap_or_default());
    out
}

/// A set cut into pieces: the manifest's file names, pieces and size, and the pieces
/// with their digests.
#[derive(Debug, Clone)]
pub struct Packed {
    /// File names, in order.
    pub files: Vec<String>,
    /// `(digest, bytes)` of each piece, in order.
    pub pieces: Vec<(String, Vec<u8>)>,
    /// The uncompressed size.
    pub bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    name: std::borrow::Cow<'a, str>,
    text: std::borrow::Cow<'a, str>,
}

/// Compresses `files` (named by file name alone) and cuts them into pieces.
///
/// Fails when the compressed set needs more than [`MAX_PIECES`] pieces.
pub fn pack(files: &[PolicyFile]) -> Result<Packed, LayoutError> {
    pack_within(files, MAX_PIECES)
}

/// [`pack`] with at most `max_pieces` pieces.
fn pack_within(files: &[PolicyFile], max_pieces: usize) -> Result<Packed, LayoutError> {
    let entries: Vec<Entry<'_>> = files
        .iter()
        .map(|f| Entry {
            name: f.name.as_str().into(),
            text: (*f.text).into(),
        })
        .collect();
    let json = serde_json::to_vec(&entries).unwrap_or_default();
    let bytes = files.iter().map(|f| f.text.len() as u64).sum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(&json);
    let compressed = gz.finish().unwrap_or_default();
    if compressed.len() > max_pieces * PIECE_BYTES {
        return Err(LayoutError::TooLarge {
            bytes,
            compressed: compressed.len(),
            pieces: max_pieces,
        });
    }
    let pieces = compressed
        .chunks(PIECE_BYTES)
        .map(|piece| (digest(piece), piece.to_vec()))
        .collect();
    Ok(Packed {
        files: files.iter().map(|f| f.name.clone()).collect(),
        pieces,
        bytes,
    })
}

/// The set that `pieces` (in the manifest's order) hold.
///
/// Fails when a piece does not match its digest or the set does not decompress.
pub fn unpack(manifest: &Manifest, pieces: &[Vec<u8>]) -> Result<Vec<PolicyFile>, LayoutError> {
    let mut compressed = Vec::new();
    for (want, piece) in manifest.pieces.iter().zip(pieces) {
        if &digest(piece) != want {
            return Err(LayoutError::Corrupt(format!(
                "piece {want} of the stored policy does not match its digest"
            )));
        }
        compressed.extend_from_slice(piece);
    }
    if pieces.len() != manifest.pieces.len() {
        return Err(LayoutError::Corrupt(format!(
            "the stored policy has {} of its {} pieces",
            pieces.len(),
            manifest.pieces.len()
        )));
    }
    let mut json = Vec::new();
    // A hostile value could claim to expand without bound: stop a little past the size
    // the manifest declares (JSON quoting adds some).
    let limit = manifest.bytes.saturating_mul(2).saturating_add(1 << 20);
    flate2::read::GzDecoder::new(compressed.as_slice())
        .take(limit)
        .read_to_end(&mut json)
        .map_err(|e| LayoutError::Corrupt(format!("the stored policy does not decompress: {e}")))?;
    let entries: Vec<Entry<'_>> = serde_json::from_slice(&json)
        .map_err(|e| LayoutError::Corrupt(format!("the stored policy does not decode: {e}")))?;
    Ok(entries
        .into_iter()
        .map(|e| PolicyFile {
            name: e.name.into_owned(),
            text: e.text.into(),
        })
        .collect())
}

/// The most summary lines a manifest keeps: a set replaced whole may change 100k rules,
/// and the manifest is one etcd value.
pub const SUMMARY_LINES: usize = 100;

/// `summary` cut to [`SUMMARY_LINES`], saying how many lines were left out.
pub fn capped(summary: &[String]) -> Vec<String> {
    if summary.len() <= SUMMARY_LINES {
        return summary.to_vec();
    }
    let mut out = summary[..SUMMARY_LINES - 1].to_vec();
    out.push(format!(
        "... and {} more changes",
        summary.len() - (SUMMARY_LINES - 1)
    ));
    out
}

/// The hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PolicyFile {
        PolicyFile {
            name: name.to_owned(),
            text: text.to_owned().into(),
        }
    }

    #[test]
    fn a_set_comes_back_whole() {
        let files = vec![
            file("a.yaml", "rules: []\n"),
            file("b.yaml", "listeners: []\n"),
        ];
        let packed = pack(&files).unwrap();
        assert_eq!(packed.pieces.len(), 1);
        let manifest = Manifest {
            files: packed.files.clone(),
            pieces: packed.pieces.iter().map(|(d, _)| d.clone()).collect(),
            bytes: packed.bytes,
            author: "ops".into(),
            time: "2026-01-01T00:00:00Z".into(),
            summary: vec![],
        };
        let pieces: Vec<Vec<u8>> = packed.pieces.into_iter().map(|(_, p)| p).collect();
        assert_eq!(unpack(&manifest, &pieces).unwrap(), files);
        assert_eq!(
            decode(&encode(&manifest)).unwrap(),
            Stored::Manifest(manifest)
        );
    }

    #[test]
    fn a_large_set_is_cut_below_the_value_limit() {
        // Incompressible text: random-looking host names.
        let mut text = String::from("rules:\n");
        let mut rng = egress_testkit::XorShift::new(0x9e37_79b9_7f4a_7c15);
        while text.len() < 8 * PIECE_BYTES {
            let x = rng.next_u64();
            text.push_str(&format!(
                "  - {{name: r{x:x}, hosts: [h{x:016x}.example]}}\n"
            ));
        }
        let packed = pack(&[file("big.yaml", &text)]).unwrap();
        assert!(packed.pieces.len() >= 2, "{}", packed.pieces.len());
        assert!(packed.pieces.iter().all(|(_, p)| p.len() <= PIECE_BYTES));
        let manifest = Manifest {
            files: packed.files,
            pieces: packed.pieces.iter().map(|(d, _)| d.clone()).collect(),
            bytes: packed.bytes,
            author: String::new(),
            time: String::new(),
            summary: vec![],
        };
        let pieces: Vec<Vec<u8>> = packed.pieces.into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            unpack(&manifest, &pieces).unwrap()[0].text,
            text.as_str().into()
        );
        let mut swapped = pieces.clone();
        swapped.swap(0, 1);
        let err = unpack(&manifest, &swapped).unwrap_err();
        assert!(
            err.to_string().contains("does not match its digest"),
            "{err}"
        );
    }

    #[test]
    fn plain_yaml_is_a_document_and_a_broken_manifest_an_error() {
        assert_eq!(
            decode(b"rules: []\n").unwrap(),
            Stored::Plain("rules: []\n".into())
        );
        let broken = format!("{MANIFEST_HEADER}{{\"files\":");
        assert!(decode(broken.as_bytes()).is_err());
    }

    #[test]
    fn keys_are_told_apart() {
        let keys = Keys::new("/egress");
        assert_eq!(keys.policy(), "/egress/policy");
        assert_eq!(keys.classify("/egress/policy"), Key::Policy);
        assert_eq!(keys.classify("/egress/members/a"), Key::Member("a"));
        assert_eq!(
            keys.classify(&keys.history_entry(7)),
            Key::History("00000000000000000007")
        );
        assert_eq!(keys.classify(&keys.blob("ab")), Key::Other);
        assert_eq!(keys.classify("/other/policy"), Key::Other);
        // The watched range holds history, members and the policy, not the pieces.
        let end = keys.watch_end();
        for key in [keys.history_entry(1), keys.member("x"), keys.policy()] {
            assert!(key.as_bytes() >= keys.history().as_bytes() && key.as_bytes() < &end[..]);
        }
        assert!(keys.blob("ff").as_bytes() < keys.history().as_bytes());
    }
}
