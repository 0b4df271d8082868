//! Certificates made at test time: a self-signed [`TestCa`] that issues server
//! certificates (DNS and IP SANs) and client certificates (a URI SAN, the SPIFFE
//! identity a mesh sidecar presents).

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::fail;

/// A certificate and its private key, in PEM and DER.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl Issued {
    /// Writes `<stem>.crt` and `<stem>.key` (PEM) into `dir` and returns their paths,
    /// certificate first.
    ///
    /// Fails when a file cannot be written.
    pub fn write_to(&self, dir: &Path, stem: &str) -> io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A self-signed certificate authority for one test. Each `TestCa::new()` makes a new key,
/// so a certificate from one CA does not verify against another: that is the "bad
/// certificate" case.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TestCa")
            .field("cert_pem", &self.cert.pem())
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A rustls client configuration that trusts this CA (and nothing else), offering
    /// `alpn`, and presenting `identity` as its client certificate when given.
    ///
    /// # Panics
    /// When the CA or the identity does not load, which is a bug in the test.
    pub fn client_config(
        &self,
        alpn: &[&[u8]],
        identity: Option<&Issued>,
    ) -> std::sync::Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        if let Err(e) = roots.add(rustls_pki_types::CertificateDer::from(self.cert_der())) {
            fail(format!("test CA does not load as a root: {e}"));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => builder.with_root_certificates(roots),
            Err(e) => fail(format!("rustls client config: {e}")),
        };
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let chain = vec![rustls_pki_types::CertificateDer::from(id.cert_der.clone())];
                let key = rustls_pki_types::PrivateKeyDer::Pkcs8(id.key_der.clone().into());
                match builder.with_client_auth_cert(chain, key) {
                    Ok(config) => config,
                    Err(e) => fail(format!("client certificate does not load: {e}")),
                }
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        std::sync::Arc::new(config)
    }

    /// Makes a CA with common name `egress-gateway test CA`.
    ///
    /// # Panics
    /// When rcgen cannot make a key or sign, which does not happen with its defaults.
    pub fn new() -> TestCa {
        Self::named("egress-gateway test CA")
    }

    /// Makes a CA with the given common name, to tell several apart.
    ///
    /// # Panics
    /// As [`TestCa::new`].
    pub fn named(common_name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, Validity::Current);
        let key = new_key();
        match params.self_signed(&key) {
            Ok(cert) => TestCa { cert, key },
            Err(e) => fail(format!("test CA {common_name:?}: signing failed: {e}")),
        }
    }

    /// The CA certificate, PEM: what a client trusts, or a listener's `client_ca`.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// Writes the CA certificate to `dir/<file_name>` (PEM) and returns the path.
    ///
    /// Fails when the file cannot be written.
    pub fn write_cert(&self, dir: &Path, file_name: &str) -> io::Result<PathBuf> {
        let path = dir.join(file_name);
        std::fs::write(&path, self.cert_pem())?;
        Ok(path)
    }

    /// Issues a server certificate for `names`: each is an IP SAN when it parses as an IP
    /// address (`127.0.0.1`, `::1`), else a DNS SAN (`api.example.com`, `*.example.com`).
    /// The first name is also the common name. Valid from 2020 to 2100.
    ///
    /// # Panics
    /// When a name is not a valid DNS SAN (e.g. not ASCII).
    pub fn issue_server(&self, names: &[&str]) -> Issued {
        self.issue_server_valid(names, Validity::Current)
    }

    /// Like [`TestCa::issue_server`] but expired (valid 2000 to 2001), for verification
    /// failure tests.
    ///
    /// # Panics
    /// As [`TestCa::issue_server`].
    pub fn issue_expired_server(&self, names: &[&str]) -> Issued {
        self.issue_server_valid(names, Validity::Expired)
    }

    /// Issues a client certificate whose only SAN is the URI `identity`, e.g.
    /// `spiffe://cluster.local/ns/default/sa/sleep`, for mTLS to the gateway.
    ///
    /// # Panics
    /// When `identity` is not a valid URI SAN (e.g. not ASCII).
    pub fn issue_client(&self, identity: &str) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(identity);
        params.subject_alt_names = match identity.to_owned().try_into() {
            Ok(uri) => vec![SanType::URI(uri)],
            Err(e) => fail(format!(
                "client certificate: {identity:?} is not a URI SAN: {e}"
            )),
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, Validity::Current);
        self.sign(params, identity)
    }

    fn issue_server_valid(&self, names: &[&str], validity: Validity) -> Issued {
        let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = match CertificateParams::new(owned) {
            Ok(params) => params,
            Err(e) => fail(format!("server certificate: bad name in {names:?}: {e}")),
        };
        params.distinguished_name = name(names.first().copied().unwrap_or("test server"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, validity);
        self.sign(params, &names.join(","))
    }

    fn sign(&self, params: CertificateParams, what: &str) -> Issued {
        let key = new_key();
        match params.signed_by(&key, &self.cert, &self.key) {
            Ok(cert) => Issued {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                cert_der: cert.der().to_vec(),
                key_der: key.serialize_der(),
            },
            Err(e) => fail(format!("certificate for {what}: signing failed: {e}")),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy)]
enum Validity {
    Current,
    Expired,
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    // Fixed dates rather than "now": no dependency on the clock, and far enough apart
    // that no test run falls outside them.
    let (from, to) = match validity {
        Validity::Current => (2020, 2100),
        Validity::Expired => (2000, 2001),
    };
    params.not_before = date_time_ymd(from, 1, 1);
    params.not_after = date_time_ymd(to, 1, 1);
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn new_key() -> KeyPair {
    match KeyPair::generate() {
        Ok(key) => key,
        Err(e) => fail(format!("key generation failed: {e}")),
    }
}
