//! The URI subject alternative names of an X.509 certificate (DER): the SPIFFE identity
//! a mesh client presents. Only the path to the SAN extension is walked; the
//! certificate has been verified by rustls before it is read here, but the walk still
//! treats every length as hostile.

pub use super::der::DerError as SanError;
use super::der::{Der, SEQUENCE};

/// DER tags on the way to the SAN extension.
const EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT in TBSCertificate
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const URI_NAME: u8 = 0x86; // GeneralName [6] IMPLICIT IA5String
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// Every URI SAN of the DER certificate `cert`, in certificate order; empty when it has
/// no SAN extension or no URI among its names. URIs that are not UTF-8 are skipped.
///
/// Fails when the DER on the way to the SANs is truncated or malformed.
pub fn uri_sans(cert: &[u8]) -> Result<Vec<String>, SanError> {
    let certificate = Der::new(cert).expect(SEQUENCE, "certificate is not a SEQUENCE")?;
    let tbs = Der::new(certificate).expect(SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut fields = Der::new(tbs);
    while !fields.is_empty() {
        let (tag, contents) = fields.next()?;
        if tag != EXTENSIONS {
            continue;
        }
        let mut extensions =
            Der::new(Der::new(contents).expect(SEQUENCE, "extensions are not a SEQUENCE")?);
        while !extensions.is_empty() {
            let extension = extensions.expect(SEQUENCE, "extension is not a SEQUENCE")?;
            let mut parts = Der::new(extension);
            if parts.expect(OID, "extension has no OID")? != SUBJECT_ALT_NAME {
                continue;
            }
            let (mut tag, mut value) = parts.next()?;
            if tag == BOOLEAN {
                (tag, value) = parts.next()?;
            }
            if tag != OCTET_STRING {
                return Err(SanError::Malformed(
                    "extension value is not an OCTET STRING",
                ));
            }
            return general_names(value);
        }
    }
    Ok(Vec::new())
}

fn general_names(value: &[u8]) -> Result<Vec<String>, SanError> {
    let mut names = Der::new(Der::new(value).expect(SEQUENCE, "SANs are not a SEQUENCE")?);
    let mut uris = Vec::new();
    while !names.is_empty() {
        let (tag, contents) = names.next()?;
        if tag == URI_NAME {
            if let Ok(uri) = std::str::from_utf8(contents) {
                uris.push(uri.to_owned());
            }
        }
    }
    Ok(uris)
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_testkit::TestCa;

    #[test]
    fn the_spiffe_id_of_a_client_certificate_is_read() {
        let ca = TestCa::new();
        let client = ca.issue_client("spiffe://cluster.local/ns/payments/sa/api");
        assert_eq!(
            uri_sans(&client.cert_der).unwrap(),
            vec!["spiffe://cluster.local/ns/payments/sa/api".to_owned()]
        );
    }

    #[test]
    fn a_server_certificate_has_no_uri() {
        let ca = TestCa::new();
        let server = ca.issue_server(&["api.example.com", "127.0.0.1"]);
        assert!(uri_sans(&server.cert_der).unwrap().is_empty());
        assert!(uri_sans(&ca.cert_der()).unwrap().is_empty());
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let ca = TestCa::new();
        let der = ca.issue_client("spiffe://td/ns/a/sa/b").cert_der;
        for len in 0..der.len() {
            assert!(uri_sans(&der[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn hostile_lengths_are_refused() {
        assert_eq!(
            uri_sans(&[0x30, 0x80]),
            Err(SanError::Malformed("indefinite length"))
        );
        assert_eq!(
            uri_sans(&[0x30, 0x85, 1, 1, 1, 1, 1]),
            Err(SanError::Malformed("length longer than 4 bytes"))
        );
        assert_eq!(
            uri_sans(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            Err(SanError::Truncated)
        );
        assert_eq!(
            uri_sans(&[0x1f, 0x00]),
            Err(SanError::Malformed("multi-byte tag"))
        );
        assert_eq!(
            uri_sans(&[0x30, 0x02, 0x31, 0x00]),
            Err(SanError::Malformed("tbsCertificate is not a SEQUENCE"))
        );
    }
}
