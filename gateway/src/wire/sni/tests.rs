//! Tests of ClientHello parsing: real and hand-built hellos, splits across records and
//! segments, each malformed shape, and hostile input that must never panic.

use super::*;

/// Builds a ClientHello body (after the handshake header) with the given extensions.
fn hello_body(extensions: Option<Vec<u8>>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(32);
    body.extend_from_slice(&[9; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    if let Some(ext) = extensions {
        body.extend_from_slice(&u16_len(ext.len()));
        body.extend_from_slice(&ext);
    }
    body
}

fn u16_len(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend_from_slice(&u16_len(data.len()));
    out.extend_from_slice(data);
    out
}

fn sni_ext(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(0);
        list.extend_from_slice(&u16_len(name.len()));
        list.extend_from_slice(name);
    }
    let mut data = u16_len(list.len()).to_vec();
    data.extend_from_slice(&list);
    extension(EXT_SERVER_NAME, &data)
}

fn alpn_ext(protocols: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in protocols {
        list.push(u8::try_from(p.len()).unwrap());
        list.extend_from_slice(p);
    }
    let mut data = u16_len(list.len()).to_vec();
    data.extend_from_slice(&list);
    extension(EXT_ALPN, &data)
}

/// The handshake message: header and body.
fn message(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut out = vec![HANDSHAKE_CLIENT_HELLO, len[1], len[2], len[3]];
    out.extend_from_slice(body);
    out
}

/// Wraps a handshake message in records of at most `chunk` bytes each.
fn records(message: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for fragment in message.chunks(chunk) {
        out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&u16_len(fragment.len()));
        out.extend_from_slice(fragment);
    }
    out
}

fn hello_for(name: &str) -> Vec<u8> {
    let mut ext = sni_ext(&[name.as_bytes()]);
    ext.extend(alpn_ext(&[b"h2", b"http/1.1"]));
    ext.extend(extension(43, &[2, 3, 4]));
    records(&message(&hello_body(Some(ext))), MAX_RECORD_LEN)
}

fn malformed(buf: &[u8]) -> &'static str {
    match parse_client_hello(buf) {
        Err(SniError::Malformed(why)) => why,
        other => panic!("expected malformed, got {other:?}"),
    }
}

/// What curl 7.88 (OpenSSL 3.0) sent to `https://api.example.com/`, captured on loopback:
/// a real client's hello, ALPN h2 and http/1.1, padded to 512 bytes.
const CURL_HELLO_HEX: &str = concat!(
    "1603010200010001fc0303f07b13ea173ec5a06c7a50d209608f3a24bfe5ea5bb29326536128e7e8",
    "99f698208b17ce8b219b604cd910b296ac42449b74e06e81816ad234b1a385566624a589003e1302",
    "13031301c02cc030009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039",
    "c009c0130033009d009c003d003c0035002f00ff0100017500000014001200000f6170692e657861",
    "6d706c652e636f6d000b000403000102000a00160014001d0017001e001900180100010101020103",
    "01040010000e000c02683208687474702f312e31001600000017000000310000000d002a00280403",
    "05030603080708080809080a080b080408050806040105010601030303010302040205020602002b",
    "0009080304030303020301002d00020101003300260024001d002045eb748601dba2ce96481af765",
    "0cdfa57c5e7b79e43deec894e6676453880c4b001500ae0000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000000000000000000000000000000000000000000000",
);

fn curl_hello() -> Vec<u8> {
    (0..CURL_HELLO_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&CURL_HELLO_HEX[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn reads_sni_and_alpn_from_a_real_hello() {
    let hello = parse_client_hello(&curl_hello()).unwrap();
    assert_eq!(hello.server_name.as_deref(), Some("api.example.com"));
    assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
}

#[test]
fn every_prefix_of_a_hello_asks_for_more() {
    let bytes = curl_hello();
    for cut in 0..bytes.len() {
        match parse_client_hello(&bytes[..cut]) {
            Err(SniError::Incomplete { needed: Some(n) }) => assert!(n > cut, "cut {cut}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    assert!(parse_client_hello(&bytes).is_ok());
}

#[test]
fn a_hello_split_across_many_records() {
    let msg = message(&hello_body(Some(sni_ext(&[b"www.163.com"]))));
    for chunk in [1, 2, 3, 5, 40] {
        let bytes = records(&msg, chunk);
        let hello = parse_client_hello(&bytes).unwrap();
        assert_eq!(
            hello.server_name.as_deref(),
            Some("www.163.com"),
            "chunk {chunk}"
        );
        // And fed a byte at a time over those records.
        for cut in 0..bytes.len() {
            assert!(matches!(
                parse_client_hello(&bytes[..cut]),
                Err(SniError::Incomplete { .. })
            ));
        }
    }
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    let mut bytes = hello_for("api.example.com");
    bytes.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
    assert_eq!(
        parse_client_hello(&bytes).unwrap().server_name.as_deref(),
        Some("api.example.com")
    );
}

#[test]
fn names_are_returned_as_sent() {
    let bytes = hello_for("API.Example.COM.");
    let hello = parse_client_hello(&bytes).unwrap();
    assert_eq!(hello.server_name.as_deref(), Some("API.Example.COM."));
}

#[test]
fn hellos_without_sni() {
    let no_ext = records(&message(&hello_body(None)), MAX_RECORD_LEN);
    assert_eq!(parse_client_hello(&no_ext).unwrap(), ClientHello::default());
    let other_ext = records(
        &message(&hello_body(Some(alpn_ext(&[b"h2"])))),
        MAX_RECORD_LEN,
    );
    let hello = parse_client_hello(&other_ext).unwrap();
    assert_eq!(hello.server_name, None);
    assert_eq!(hello.alpn, vec![b"h2".to_vec()]);
}

#[test]
fn not_tls_is_said_from_the_first_byte() {
    assert_eq!(parse_client_hello(b"G"), Err(SniError::NotTls));
    assert_eq!(
        parse_client_hello(b"GET / HTTP/1.1\r\n"),
        Err(SniError::NotTls)
    );
    assert_eq!(parse_client_hello(&[0x16, 0x02]), Err(SniError::NotTls));
    assert_eq!(
        parse_client_hello(&[0x16, 0x03, 0x09]),
        Err(SniError::NotTls)
    );
    // SSLv2-compatible hello: no extensions, so never any SNI.
    assert_eq!(
        parse_client_hello(&[0x80, 0x2e, 0x01]),
        Err(SniError::NotTls)
    );
    // Application data first: TLS, but not a handshake.
    assert_eq!(
        parse_client_hello(&[23, 3, 3, 0, 1, 0]),
        Err(SniError::NotTls)
    );
    assert_eq!(
        parse_client_hello(&[]),
        Err(SniError::Incomplete { needed: Some(5) })
    );
    assert_eq!(
        parse_client_hello(&[0x16, 0x03]),
        Err(SniError::Incomplete { needed: Some(5) })
    );
}

#[test]
fn record_shapes_that_are_refused() {
    assert_eq!(malformed(&[22, 3, 1, 0, 0]), "empty handshake record");
    assert_eq!(malformed(&[22, 3, 1, 0x40, 1]), "record over 16384 bytes");
    // A server hello first.
    assert_eq!(
        malformed(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
        "first handshake message is not a client hello"
    );
    // An alert between two fragments of the hello.
    let msg = message(&hello_body(Some(sni_ext(&[b"a.example"]))));
    let mut bytes = records(&msg[..10], 10);
    bytes.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
    assert_eq!(malformed(&bytes), "non-handshake record inside the hello");
}

#[test]
fn size_bounds() {
    // A handshake header announcing more than the limit is refused before the bytes.
    assert_eq!(
        parse_client_hello(&[22, 3, 1, 0, 4, 1, 0, 0x40, 1]),
        Err(SniError::TooLarge)
    );
    // Within the limit but spread over so many tiny records that they pass the bound.
    let big = vec![0u8; 4000];
    let mut body = hello_body(None);
    body.extend_from_slice(&big);
    let bytes = records(&message(&body), 1);
    assert_eq!(parse_client_hello(&bytes), Err(SniError::TooLarge));
    let mut at = 0;
    // Every prefix either asks for more within the bound or says too large.
    while at < bytes.len() {
        match parse_client_hello(&bytes[..at]) {
            Err(SniError::Incomplete { needed: Some(n) }) => {
                assert!(n <= MAX_CLIENT_HELLO_BYTES)
            }
            Err(SniError::TooLarge) => break,
            other => panic!("prefix {at}: {other:?}"),
        }
        at += 97;
    }
    // The largest hello in whole records is accepted.
    let mut body = hello_body(Some(sni_ext(&[b"big.example"])));
    let pad = MAX_CLIENT_HELLO_LEN - body.len() - 4;
    let padding = extension(21, &vec![0; pad]);
    let ext_len = usize::from(u16::from_be_bytes([body[75], body[76]])) + padding.len();
    body[75..77].copy_from_slice(&u16_len(ext_len));
    body.extend_from_slice(&padding);
    assert_eq!(body.len(), MAX_CLIENT_HELLO_LEN);
    let bytes = records(&message(&body), MAX_RECORD_LEN);
    assert_eq!(
        parse_client_hello(&bytes).unwrap().server_name.as_deref(),
        Some("big.example")
    );
}

#[test]
fn hello_shapes_that_are_refused() {
    let wrap = |ext: Vec<u8>| records(&message(&hello_body(Some(ext))), MAX_RECORD_LEN);
    let mut two_sni = sni_ext(&[b"a.example"]);
    two_sni.extend(sni_ext(&[b"b.example"]));
    assert_eq!(malformed(&wrap(two_sni)), "duplicate extension");
    assert_eq!(
        malformed(&wrap(sni_ext(&[b"a.example", b"b.example"]))),
        "more than one server name"
    );
    assert_eq!(malformed(&wrap(sni_ext(&[]))), "empty server name list");
    assert_eq!(malformed(&wrap(sni_ext(&[b""]))), "empty server name");
    assert_eq!(
        malformed(&wrap(sni_ext(&["bücher.example".as_bytes()]))),
        "server name is not printable ascii"
    );
    assert_eq!(
        malformed(&wrap(sni_ext(&[b"a.example\0.evil"]))),
        "server name is not printable ascii"
    );
    assert_eq!(
        malformed(&wrap(extension(EXT_SERVER_NAME, &[]))),
        "truncated server name list"
    );
    assert_eq!(
        malformed(&wrap(extension(EXT_SERVER_NAME, &[0, 4, 1, 0, 1, b'a']))),
        "server name type is not host_name"
    );
    assert_eq!(
        malformed(&wrap(extension(EXT_SERVER_NAME, &[0, 4, 0, 0, 1, b'a', 0]))),
        "bytes after the server name list"
    );
    assert_eq!(malformed(&wrap(alpn_ext(&[]))), "empty alpn list");
    assert_eq!(malformed(&wrap(alpn_ext(&[b""]))), "empty alpn protocol");
    // Extensions whose length overruns the block.
    assert_eq!(malformed(&wrap(vec![0, 0, 0, 9, 1])), "truncated extension");
    // Trailing bytes after the extensions block.
    let mut body = hello_body(Some(sni_ext(&[b"a.example"])));
    body.push(0);
    assert_eq!(
        malformed(&records(&message(&body), MAX_RECORD_LEN)),
        "bytes after the extensions"
    );
    // A session id over 32 bytes, and no cipher suites.
    let mut body = hello_body(None);
    body[34] = 33;
    body.insert(35, 0);
    assert_eq!(
        malformed(&records(&message(&body), MAX_RECORD_LEN)),
        "session id over 32 bytes"
    );
    let mut body = hello_body(None);
    body[67..71].copy_from_slice(&[0, 0, 1, 0]);
    body.truncate(71);
    assert_eq!(
        malformed(&records(&message(&body), MAX_RECORD_LEN)),
        "bad cipher suites length"
    );
    // A message whose announced length ends inside the fixed fields.
    assert_eq!(
        malformed(&records(&message(&[3, 3, 1]), MAX_RECORD_LEN)),
        "truncated random"
    );
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

#[test]
fn hostile_input_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds = [
        curl_hello(),
        hello_for("www.baidu.com"),
        records(&message(&hello_body(Some(sni_ext(&[b"x.example"])))), 3),
    ];
    for round in 0..20_000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        match rng.below(4) {
            // Flip a few bytes.
            0 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len());
                    bytes[at] = u8::try_from(rng.next() & 0xff).unwrap();
                }
            }
            // Truncate.
            1 => bytes.truncate(rng.below(bytes.len())),
            // Set a length-looking pair of bytes to something large.
            2 => {
                let at = rng.below(bytes.len() - 1);
                bytes[at] = 0xff;
                bytes[at + 1] = u8::try_from(rng.next() & 0xff).unwrap();
            }
            // Pure noise after a plausible record header.
            _ => {
                let len = rng.below(600);
                bytes = vec![22, 3, 1];
                bytes.extend((0..len).map(|_| u8::try_from(rng.next() & 0xff).unwrap()));
            }
        }
        // Whatever it says, it says it without panicking, and never asks for more
        // than the bound.
        if let Err(SniError::Incomplete { needed: Some(n) }) = parse_client_hello(&bytes) {
            assert!(n > bytes.len() && n <= MAX_CLIENT_HELLO_BYTES);
        }
    }
}
