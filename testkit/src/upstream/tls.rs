//! The stub upstream over TLS: the same routes, `h2` or `http/1.1` by ALPN, and the
//! SNI of each connection recorded.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::StubUpstream;
use crate::fail;

impl StubUpstream {
    /// Starts a stub upstream on `127.0.0.1:0` that speaks TLS with `cert` (issued by a
    /// [`TestCa`](crate::TestCa)), offering `h2` and `http/1.1` by ALPN, with the same
    /// routes.
    ///
    /// # Panics
    /// When no loopback port can be bound or the certificate does not load.
    pub async fn start_tls(cert: &crate::Issued) -> StubUpstream {
        match Self::try_start_tls(cert).await {
            Ok(stub) => stub,
            Err(e) => fail(format!("TLS stub upstream: {e}")),
        }
    }

    /// [`StubUpstream::start_tls`], returning errors.
    ///
    /// Fails when the port cannot be bound or the certificate does not load.
    pub async fn try_start_tls(cert: &crate::Issued) -> io::Result<StubUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let chain = vec![rustls_pki_types::CertificateDer::from(
            cert.cert_der.clone(),
        )];
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_der.clone().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(io::Error::other)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::serve(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }
}
