//! The certificates the TLS-terminating listeners serve, followed while each listener
//! runs, for the expiry gauge read at scrape time.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::tls_in::TlsTerminator;

/// The certificates the terminating listeners serve, while they run: what the
/// certificate expiry gauge is read from at scrape time.
#[derive(Debug, Default)]
pub struct Certificates {
    live: Mutex<Vec<Weak<TlsTerminator>>>,
}

impl Certificates {
    /// Follows `terminator` for as long as its listener holds it.
    pub fn track(&self, terminator: &Arc<TlsTerminator>) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|t| t.strong_count() > 0);
        live.push(Arc::downgrade(terminator));
    }

    /// Each running listener's name with the notAfter (Unix seconds) of the certificate
    /// it serves; listeners whose certificate has not loaded are left out.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|t| t.strong_count() > 0);
        live.iter()
            .filter_map(Weak::upgrade)
            .filter_map(|t| Some((t.listener().to_owned(), t.expires_at()?)))
            .collect()
    }
}
