//! Inbound TLS on a listener (`tls: {cert, key, client_ca, require_client_cert}`): the
//! handshake with the mesh, the client certificate's URI SAN as the source identity,
//! and certificates that reload when their files change.
//!
//! Files are checked when connections arrive, at most once per [`RELOAD_CHECK`]: their
//! bytes are read and compared with those in force, so a rotated certificate (a mounted
//! Secret, cert-manager, a `cp`) applies without a restart, and files that do not load
//! leave the previous certificate serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::context::Context;
use crate::audit::{Recorder, ResponseFlags};
use crate::policy::ListenerTls;
use crate::source::Source;
use crate::wire::expiry::not_after;
use crate::wire::san::uri_sans;

/// How often, at most, the certificate files are read again to see whether they changed.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A listener's TLS termination: its configuration, reloaded as its files change.
#[derive(Debug)]
pub struct TlsTerminator {
    listener: String,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    require_client_cert: bool,
    alpn: Vec<Vec<u8>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    loaded: Option<Loaded>,
    checked: Option<Instant>,
    last_error: Option<String>,
}

#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    /// The served certificate's notAfter (Unix seconds), when its DER could be read.
    not_after: Option<i64>,
    /// The files' bytes (cert, key, client CA) the configuration was built from.
    contents: Vec<Vec<u8>>,
}

/// A connection whose handshake completed.
#[derive(Debug)]
pub struct Terminated {
    /// The TLS session.
    pub stream: TlsStream<TcpStream>,
    /// The client certificate's first URI SAN, when it presented one.
    pub identity: Option<String>,
}

/// Why a connection's TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum TlsInError {
    /// The listener's certificate or key does not load.
    #[error("listener certificate unavailable: {0}")]
    Unavailable(String),
    /// The handshake did not finish in time.
    #[error("TLS handshake not finished within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The listener requires a client certificate and none was sent.
    #[error("no client certificate presented")]
    ClientCertificateRequired,
    /// The client certificate does not verify against `client_ca`.
    #[error("client certificate refused: {0}")]
    ClientCertificateRefused(String),
    /// The client left during the handshake.
    #[error("client closed the connection during the TLS handshake")]
    Closed,
    /// Anything else: not TLS, no shared cipher, an alert.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

impl TlsInError {
    /// RESPONSE_CODE_DETAILS of the refusal's audit line.
    pub fn details(&self) -> &'static str {
        match self {
            TlsInError::Unavailable(_) => "tls_certificate_unavailable",
            TlsInError::Timeout(_) => "tls_handshake_timeout",
            TlsInError::ClientCertificateRequired => "client_certificate_required",
            TlsInError::ClientCertificateRefused(_) => "client_certificate_refused",
            TlsInError::Closed => "downstream_remote_disconnect",
            TlsInError::Handshake(_) => "tls_handshake_failed",
        }
    }

    /// RESPONSE_FLAGS: DC when the client left, DPE when it did not speak TLS properly.
    pub fn flags(&self) -> ResponseFlags {
        match self {
            TlsInError::Closed => ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
            TlsInError::Timeout(_) | TlsInError::Handshake(_) => {
                ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR
            }
            _ => ResponseFlags::NONE,
        }
    }

    fn from_io(e: &std::io::Error) -> Self {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::NoCertificatesPresented => TlsInError::ClientCertificateRequired,
                rustls::Error::InvalidCertificate(why) => {
                    TlsInError::ClientCertificateRefused(format!("{why:?}"))
                }
                other => TlsInError::Handshake(other.to_string()),
            };
        }
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => TlsInError::Closed,
            _ => TlsInError::Handshake(e.to_string()),
        }
    }
}

impl TlsTerminator {
    /// Termination for `listener` by `spec`, offering `alpn`; relative paths are taken
    /// from `dir` (the policy directory). Nothing is read until [`TlsTerminator::load`]
    /// or the first connection.
    pub fn new(listener: &str, spec: &ListenerTls, dir: &Path, alpn: &[&[u8]]) -> Self {
        Self {
            listener: listener.to_owned(),
            cert: dir.join(&spec.cert),
            key: dir.join(&spec.key),
            client_ca: spec.client_ca.as_ref().map(|ca| dir.join(ca)),
            require_client_cert: spec.require_client_cert,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            state: Mutex::new(State::default()),
        }
    }

    /// Loads the files now (at listener start), so a missing certificate is reported at
    /// once rather than at the first connection.
    ///
    /// Fails when a file cannot be read or does not hold what it should.
    pub async fn load(&self) -> Result<(), TlsInError> {
        self.config().await.map(|_| ())
    }

    /// The listener's name.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// The notAfter (Unix seconds) of the certificate served now, if one loaded.
    pub fn expires_at(&self) -> Option<i64> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.loaded.as_ref().and_then(|l| l.not_after)
    }

    /// Completes the server side of the handshake on `stream` within `timeout`.
    ///
    /// Fails when the certificate is unavailable, the client does not finish the
    /// handshake in time, or its certificate is missing (when required) or refused.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<Terminated, TlsInError> {
        let config = self.config().await?;
        let accepting = TlsAcceptor::from(config).accept(stream);
        let stream = match tokio::time::timeout(timeout, accepting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(TlsInError::from_io(&e)),
            Err(_) => return Err(TlsInError::Timeout(timeout)),
        };
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| match uri_sans(leaf) {
                Ok(uris) => uris.into_iter().next(),
                Err(e) => {
                    tracing::debug!(error = %e, "client certificate SANs unreadable");
                    None
                }
            });
        Ok(Terminated { stream, identity })
    }

    /// The configuration in force, after reading the files again when a check is due.
    async fn config(&self) -> Result<Arc<ServerConfig>, TlsInError> {
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let due = state.checked.is_none_or(|at| at.elapsed() >= RELOAD_CHECK);
            if !due {
                return state.current();
            }
            state.checked = Some(Instant::now());
        }
        let read = self.read_files().await;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let contents = match read {
            Ok(contents) => contents,
            Err(e) => return state.failed(&self.listener, e),
        };
        if state
            .loaded
            .as_ref()
            .is_some_and(|l| l.contents == contents)
        {
            return state.current();
        }
        match self.build(&contents) {
            Ok((config, not_after)) => {
                if state.loaded.is_some() {
                    tracing::info!(listener = %self.listener, "listener certificate reloaded");
                }
                let config = Arc::new(config);
                state.loaded = Some(Loaded {
                    config: Arc::clone(&config),
                    not_after,
                    contents,
                });
                state.last_error = None;
                Ok(config)
            }
            Err(e) => state.failed(&self.listener, e),
        }
    }

    async fn read_files(&self) -> Result<Vec<Vec<u8>>, String> {
        let mut contents = Vec::with_capacity(3);
        for path in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
        {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            contents.push(bytes);
        }
        Ok(contents)
    }

    /// The server configuration, and the leaf certificate's notAfter.
    fn build(&self, contents: &[Vec<u8>]) -> Result<(ServerConfig, Option<i64>), String> {
        let (cert_pem, key_pem) = match contents {
            [cert, key, ..] => (cert, key),
            _ => return Err("certificate and key not read".to_owned()),
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        let Some(leaf) = chain.first() else {
            return Err(format!("{}: no PEM certificate", self.cert.display()));
        };
        let not_after = match not_after(leaf) {
            Ok(at) => Some(at),
            Err(e) => {
                tracing::warn!(listener = %self.listener, error = %e, "listener certificate expiry unreadable");
                None
            }
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match (&self.client_ca, contents.get(2)) {
            (Some(path), Some(ca_pem)) => {
                let roots = roots(ca_pem).map_err(|e| format!("{}: {e}", path.display()))?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = if self.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("{} with {}: {e}", self.cert.display(), self.key.display()))?;
        config.alpn_protocols.clone_from(&self.alpn);
        Ok((config, not_after))
    }
}

impl State {
    fn current(&self) -> Result<Arc<ServerConfig>, TlsInError> {
        match &self.loaded {
            Some(loaded) => Ok(Arc::clone(&loaded.config)),
            None => Err(TlsInError::Unavailable(
                self.last_error.clone().unwrap_or_default(),
            )),
        }
    }

    /// Keeps serving what loaded before; says so once per distinct error.
    fn failed(&mut self, listener: &str, error: String) -> Result<Arc<ServerConfig>, TlsInError> {
        if self.last_error.as_deref() != Some(error.as_str()) {
            match self.loaded {
                Some(_) => {
                    tracing::warn!(%listener, %error, "listener certificate did not reload; the previous one serves")
                }
                None => {
                    tracing::error!(%listener, %error, "listener certificate does not load; TLS connections are refused")
                }
            }
            self.last_error = Some(error);
        }
        self.current()
    }
}

fn roots(pem: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no PEM certificate".to_owned());
    }
    Ok(Arc::new(roots))
}

/// Writes the audit line of a connection whose TLS handshake failed: a TCP-level line
/// (`"- - -"`, code 0) with the reason in RESPONSE_CODE_DETAILS and the TLS error in
/// CONNECTION_TERMINATION_DETAILS.
pub fn refuse(
    ctx: &Context,
    listener: &Arc<str>,
    source: &Source,
    local: SocketAddr,
    error: &TlsInError,
) {
    if !matches!(error, TlsInError::Closed) {
        ctx.egress.metrics.tls_inbound_failed(error.details());
    }
    let mut recorder = Recorder::start(Arc::clone(&ctx.recording), Arc::clone(listener));
    let record = recorder.record();
    record.response_flags = error.flags();
    record.response_code_details = Some(error.details().into());
    record.connection_termination_details = match error {
        TlsInError::Unavailable(why)
        | TlsInError::ClientCertificateRefused(why)
        | TlsInError::Handshake(why) => Some(why.clone()),
        _ => None,
    };
    record.downstream_local_address = Some(local);
    record.downstream_remote_address = Some(source.addr);
    recorder.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn handshake_failures_are_told_apart() {
        let missing = TlsInError::from_io(&io(rustls::Error::NoCertificatesPresented));
        assert_eq!(missing.details(), "client_certificate_required");
        assert!(missing.flags().is_empty());
        let refused = TlsInError::from_io(&io(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert_eq!(refused.details(), "client_certificate_refused");
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        assert_eq!(
            TlsInError::from_io(&eof).details(),
            "downstream_remote_disconnect"
        );
        let garbage = TlsInError::from_io(&io(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        )));
        assert_eq!(garbage.details(), "tls_handshake_failed");
        assert_eq!(garbage.flags(), ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
    }

    #[tokio::test]
    async fn missing_files_are_unavailable_and_named() {
        let spec = ListenerTls {
            cert: "missing.crt".into(),
            key: "missing.key".into(),
            client_ca: None,
            require_client_cert: false,
        };
        let tls = TlsTerminator::new("mesh", &spec, Path::new("/nonexistent"), &[]);
        match tls.load().await {
            Err(TlsInError::Unavailable(why)) => {
                assert!(why.contains("/nonexistent/missing.crt"), "{why}");
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}
