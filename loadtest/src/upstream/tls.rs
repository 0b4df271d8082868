//! The stub's TLS: a certificate made at start by the test CA, refused (no certificate,
//! so the handshake fails) for SNI names starting with `denied`, HTTP/1.1 inside.

use std::sync::Arc;

use egress_testkit::TestCa;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Names the stub's certificate holds.
pub const NAMES: [&str; 3] = [crate::scenario::ALLOWED_HOST, "localhost", "127.0.0.1"];

/// Why the TLS stub could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// rustls refused the key or the configuration.
    #[error("tls stub: {0}")]
    Rustls(#[from] rustls::Error),
}

/// An acceptor serving a fresh certificate for [`NAMES`], with ALPN http/1.1, and the
/// CA's certificate (PEM) for clients that want to verify.
///
/// Fails when rustls refuses the generated key, which does not happen with rcgen's
/// defaults.
pub fn acceptor() -> Result<(TlsAcceptor, String), TlsSetupError> {
    let ca = TestCa::named("egress-loadtest upstream CA");
    let issued = ca.issue_server(&NAMES);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(issued.key_der.into()))?;
    let certified = Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(issued.cert_der)],
        key,
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(RefuseDenied(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), ca.cert_pem()))
}

/// One certificate for every name but those a mix denies.
#[derive(Debug)]
struct RefuseDenied(Arc<CertifiedKey>);

impl ResolvesServerCert for RefuseDenied {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(name) if name.starts_with("denied") => None,
            _ => Some(self.0.clone()),
        }
    }
}
