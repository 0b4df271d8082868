//! Certificates from `TestCa`: PEM and DER agree, keys load, the DER has the expected
//! shape, SANs and issuer, and (where `openssl` is installed) the chain verifies for the
//! right purpose and names.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of these tests fail the test on any error"
)]

use std::path::Path;
use std::process::Command;

use egress_testkit::tempfile::TempDir;
use egress_testkit::{Issued, TestCa};
use rcgen::KeyPair;

/// Decodes standard base64, ignoring line breaks: enough to read PEM back.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let value = ALPHABET
            .iter()
            .position(|a| *a == c)
            .expect("base64 character") as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn pem_body(pem: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).expect("begin line") + begin.len();
    let stop = pem.find(&end).expect("end line");
    base64_decode(&pem[start..stop])
}

/// One DER element: (tag, whole element, contents).
fn der_element(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        n if n < 0x80 => (usize::from(n), 2),
        n => {
            let count = usize::from(n & 0x7f);
            let len = input[2..2 + count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + count)
        }
    };
    (tag, &input[..header + len], &input[header..header + len])
}

/// The children of a constructed DER element's contents.
fn der_children(mut contents: &[u8]) -> Vec<(u8, &[u8], &[u8])> {
    let mut children = Vec::new();
    while !contents.is_empty() {
        let child = der_element(contents);
        contents = &contents[child.1.len()..];
        children.push(child);
    }
    children
}

/// (issuer, subject, subject public key info) of a certificate, as DER.
fn names_and_key(cert_der: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (tag, whole, contents) = der_element(cert_der);
    assert_eq!(tag, 0x30, "a certificate is a SEQUENCE");
    assert_eq!(whole.len(), cert_der.len(), "nothing after the certificate");
    let parts = der_children(contents);
    assert_eq!(
        parts.len(),
        3,
        "tbsCertificate, signatureAlgorithm, signature"
    );
    assert_eq!(parts[2].0, 0x03, "the signature is a BIT STRING");
    let tbs = der_children(parts[0].2);
    // [0] version, serial, signature, issuer, validity, subject, spki, [3] extensions
    assert_eq!(tbs[0].0, 0xa0);
    assert_eq!(tbs[1].0, 0x02);
    (tbs[3].1.to_vec(), tbs[5].1.to_vec(), tbs[6].1.to_vec())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn check_pair(issued: &Issued, ca: &TestCa) {
    assert_eq!(pem_body(&issued.cert_pem, "CERTIFICATE"), issued.cert_der);
    assert_eq!(pem_body(&issued.key_pem, "PRIVATE KEY"), issued.key_der);
    let key = KeyPair::from_pem(&issued.key_pem).unwrap();
    let (issuer, _subject, spki) = names_and_key(&issued.cert_der);
    assert_eq!(
        spki,
        key.public_key_der(),
        "the certificate carries the key's public half"
    );
    let (_, ca_subject, _) = names_and_key(&ca.cert_der());
    assert_eq!(issuer, ca_subject, "issued by the CA");
}

#[test]
fn server_certificate_has_dns_and_ip_sans() {
    let ca = TestCa::new();
    let issued = ca.issue_server(&["api.example.com", "127.0.0.1", "*.example.org"]);
    check_pair(&issued, &ca);
    assert!(contains(&issued.cert_der, b"\x82\x0fapi.example.com"));
    assert!(contains(&issued.cert_der, b"\x82\x0d*.example.org"));
    assert!(contains(&issued.cert_der, &[0x87, 4, 127, 0, 0, 1]));
}

#[test]
fn client_certificate_has_a_uri_san() {
    let ca = TestCa::new();
    let identity = "spiffe://cluster.local/ns/default/sa/sleep";
    let issued = ca.issue_client(identity);
    check_pair(&issued, &ca);
    let mut san = vec![0x86, identity.len() as u8];
    san.extend_from_slice(identity.as_bytes());
    assert!(contains(&issued.cert_der, &san));
}

#[test]
fn ca_is_self_signed_and_a_ca() {
    let ca = TestCa::named("other CA");
    let (issuer, subject, _) = names_and_key(&ca.cert_der());
    assert_eq!(issuer, subject);
    assert!(contains(&subject, b"other CA"));
    assert_eq!(pem_body(&ca.cert_pem(), "CERTIFICATE"), ca.cert_der());
    // basicConstraints: cA TRUE
    assert!(contains(&ca.cert_der(), &[0x30, 0x03, 0x01, 0x01, 0xff]));
}

#[test]
fn files_are_written() {
    let dir = TempDir::new().unwrap();
    let ca = TestCa::new();
    let ca_path = ca.write_cert(dir.path(), "ca.crt").unwrap();
    let (cert, key) = ca
        .issue_server(&["a.test"])
        .write_to(dir.path(), "server")
        .unwrap();
    assert_eq!(std::fs::read_to_string(ca_path).unwrap(), ca.cert_pem());
    assert!(std::fs::read_to_string(cert)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(std::fs::read_to_string(key)
        .unwrap()
        .contains("PRIVATE KEY"));
}

/// `openssl verify` output, or `None` when openssl is not installed.
fn openssl_verify(dir: &Path, args: &[&str]) -> Option<(bool, String)> {
    let output = Command::new("openssl")
        .arg("verify")
        .args(["-CAfile", "ca.crt"])
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Some((output.status.success(), text))
}

#[test]
fn openssl_verifies_the_chains() {
    let dir = TempDir::new().unwrap();
    let ca = TestCa::new();
    ca.write_cert(dir.path(), "ca.crt").unwrap();
    ca.issue_server(&["api.example.com", "127.0.0.1"])
        .write_to(dir.path(), "server")
        .unwrap();
    ca.issue_client("spiffe://cluster.local/ns/a/sa/b")
        .write_to(dir.path(), "client")
        .unwrap();
    ca.issue_expired_server(&["old.example.com"])
        .write_to(dir.path(), "expired")
        .unwrap();
    TestCa::new()
        .issue_server(&["api.example.com"])
        .write_to(dir.path(), "stranger")
        .unwrap();

    let server = [
        "-purpose",
        "sslserver",
        "-verify_hostname",
        "api.example.com",
        "server.crt",
    ];
    let Some((ok, text)) = openssl_verify(dir.path(), &server) else {
        eprintln!("openssl not installed: chain verification skipped");
        return;
    };
    assert!(ok, "{text}");
    let (ok, text) =
        openssl_verify(dir.path(), &["-verify_ip", "127.0.0.1", "server.crt"]).unwrap();
    assert!(ok, "{text}");
    let (ok, text) = openssl_verify(dir.path(), &["-purpose", "sslclient", "client.crt"]).unwrap();
    assert!(ok, "{text}");

    let (ok, _) =
        openssl_verify(dir.path(), &["-verify_hostname", "evil.com", "server.crt"]).unwrap();
    assert!(!ok, "wrong name");
    let (ok, text) = openssl_verify(dir.path(), &["expired.crt"]).unwrap();
    assert!(!ok && text.contains("expired"), "{text}");
    let (ok, _) = openssl_verify(dir.path(), &["stranger.crt"]).unwrap();
    assert!(!ok, "another CA's certificate");
}
