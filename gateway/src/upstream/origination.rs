//! TLS origination: the gateway speaks TLS to the upstream, verifying its certificate
//! against the web PKI roots plus the rule's `ca_file`, with SNI = the destination host.
//! Verification is always on; a failure is a 503 UF whose details name the TLS error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::{CertificateError, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{io_reason, Origination};
use crate::error::{EgressError, TlsFailure};

/// How often, at most, a rule's `ca_file` is read again to see whether it changed.
const CA_RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Client configurations by (`ca_file`, HTTP/2 only), built once and rebuilt when the
/// CA file's bytes change.
#[derive(Debug, Default)]
pub(super) struct ClientConfigs {
    cached: Mutex<HashMap<(Option<PathBuf>, bool), Cached>>,
}

#[derive(Debug)]
struct Cached {
    config: Arc<ClientConfig>,
    ca_pem: Option<Vec<u8>>,
    checked: Instant,
}

impl ClientConfigs {
    /// The configuration for `ca_file`, offering `h2` only or `h2` and `http/1.1`.
    async fn get(
        &self,
        ca_file: Option<&PathBuf>,
        h2_only: bool,
        addr: SocketAddr,
    ) -> Result<Arc<ClientConfig>, EgressError> {
        let key = (ca_file.cloned(), h2_only);
        {
            let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cached.get(&key) {
                if ca_file.is_none() || c.checked.elapsed() < CA_RELOAD_CHECK {
                    return Ok(Arc::clone(&c.config));
                }
            }
        }
        let ca_pem = match ca_file {
            None => None,
            Some(path) => {
                Some(
                    tokio::fs::read(path)
                        .await
                        .map_err(|e| EgressError::UpstreamTls {
                            addr,
                            reason: format!("TLS_error:ca_file_unreadable:{}:{e}", path.display()),
                            failure: TlsFailure::CaFile,
                        })?,
                )
            }
        };
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = cached.get_mut(&key) {
            if c.ca_pem == ca_pem {
                c.checked = Instant::now();
                return Ok(Arc::clone(&c.config));
            }
        }
        let config = Arc::new(build(ca_pem.as_deref(), h2_only).map_err(|why| {
            EgressError::UpstreamTls {
                addr,
                reason: format!(
                    "TLS_error:ca_file_invalid:{}:{why}",
                    ca_file.map(|p| p.display().to_string()).unwrap_or_default()
                ),
                failure: TlsFailure::CaFile,
            }
        })?);
        cached.insert(
            key,
            Cached {
                config: Arc::clone(&config),
                ca_pem,
                checked: Instant::now(),
            },
        );
        Ok(config)
    }

    /// The TLS handshake on `stream`, within `timeout`; true when ALPN agreed on `h2`.
    ///
    /// Fails with [`EgressError::UpstreamTls`]: the certificate does not verify, the
    /// handshake fails or times out, or the `ca_file` does not load.
    pub(super) async fn connect(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        origination: &Origination,
        h2_only: bool,
        timeout: Duration,
    ) -> Result<(TlsStream<TcpStream>, bool), EgressError> {
        let config = self
            .get(origination.ca_file.as_ref(), h2_only, addr)
            .await?;
        let name = ServerName::try_from(origination.server_name.clone()).map_err(|_| {
            EgressError::UpstreamTls {
                addr,
                reason: "TLS_error:invalid_server_name".to_owned(),
                failure: TlsFailure::InvalidServerName,
            }
        })?;
        let handshake = TlsConnector::from(config).connect(name, stream);
        let stream = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(EgressError::UpstreamTls {
                    addr,
                    reason: failure_reason(&e),
                    failure: failure_kind(&e),
                })
            }
            Err(_) => {
                return Err(EgressError::UpstreamTls {
                    addr,
                    reason: "TLS_error:handshake_timeout".to_owned(),
                    failure: TlsFailure::Timeout,
                })
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        Ok((stream, h2))
    }
}

fn build(ca_pem: Option<&[u8]>, h2_only: bool) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            added += 1;
        }
        if added == 0 {
            return Err("no PEM certificate".to_owned());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if h2_only {
        vec![b"h2".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// UPSTREAM_TRANSPORT_FAILURE_REASON of a failed handshake, in the shape Envoy gives
/// its BoringSSL errors: `TLS_error:CERTIFICATE_VERIFY_FAILED:unknown_issuer`.
/// What kind of failure `e` is, for the metrics (the reason string says more).
fn failure_kind(e: &std::io::Error) -> TlsFailure {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => TlsFailure::CertificateVerifyFailed,
        Some(rustls::Error::AlertReceived(_)) => TlsFailure::AlertReceived,
        Some(rustls::Error::NoApplicationProtocol) => TlsFailure::NoApplicationProtocol,
        _ => TlsFailure::Handshake,
    }
}

fn failure_reason(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(why)) => {
            format!(
                "TLS_error:CERTIFICATE_VERIFY_FAILED:{}",
                certificate_reason(why)
            )
        }
        Some(rustls::Error::AlertReceived(alert)) => format!("TLS_error:alert_received:{alert:?}"),
        Some(rustls::Error::NoApplicationProtocol) => {
            "TLS_error:no_application_protocol".to_owned()
        }
        Some(other) => format!("TLS_error:{other}"),
        None => format!("TLS_error:{}", io_reason(e)),
    }
}

fn certificate_reason(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => "unknown_issuer".to_owned(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "certificate_not_valid_for_name".to_owned()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate_expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate_not_valid_yet".to_owned()
        }
        CertificateError::BadSignature => "bad_signature".to_owned(),
        CertificateError::Revoked => "certificate_revoked".to_owned(),
        CertificateError::BadEncoding => "bad_encoding".to_owned(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "invalid_purpose".to_owned()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_read_like_envoy_details() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(
            failure_reason(&e),
            "TLS_error:CERTIFICATE_VERIFY_FAILED:unknown_issuer"
        );
        let e = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(failure_reason(&e), "TLS_error:connection_reset");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        assert!(build(Some(b"not pem"), false).is_err());
        let config = build(None, true).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
