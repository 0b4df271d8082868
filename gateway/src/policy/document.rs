//! The policy documents as users write them (serde types; unknown fields are errors).

use serde::{Deserialize, Serialize};

/// `defaults.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only rules let traffic out (Istio REGISTRY_ONLY).
    #[default]
    Deny,
    /// All out unless a rule denies (ALLOW_ANY).
    Allow,
    /// Like deny, but forwards what would be denied and marks its audit line.
    Audit,
}

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 and h2c; destination from Host / :authority.
    Http,
    /// TLS passthrough by SNI.
    Tls,
    /// Opaque bytes to `forward_to`.
    Tcp,
    /// HTTP forward proxy (CONNECT and absolute URIs).
    Connect,
    /// DNS answers for allowed names.
    Dns,
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it out.
    #[default]
    Allow,
    /// Refuse it.
    Deny,
}
