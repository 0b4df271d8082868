//! The PROXY header parser: every form the spec defines, the malformed ones, and random
//! and truncated inputs that must neither panic nor change their answer as bytes arrive.

use super::*;

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn v2_inet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&src);
    body.extend_from_slice(&dst);
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&dport.to_be_bytes());
    body
}

#[test]
fn v1_tcp4_gives_the_client_and_stops_at_crlf() {
    let header = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n";
    let mut buf = header.to_vec();
    buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(
        parse(&buf),
        Ok((
            ProxyHeader::Proxied {
                source: sa("192.0.2.10:56324"),
                destination: sa("198.51.100.1:443"),
            },
            header.len()
        ))
    );
}

#[test]
fn v1_tcp6_and_unknown() {
    let header = b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";
    assert_eq!(
        parse(header),
        Ok((
            ProxyHeader::Proxied {
                source: sa("[2001:db8::1]:0"),
                destination: sa("[::1]:65535"),
            },
            header.len()
        ))
    );
    assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok((ProxyHeader::Unknown, 15)));
    let unknown = b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 99999 x\r\nrest";
    assert_eq!(
        parse(unknown),
        Ok((ProxyHeader::Unknown, unknown.len() - 4))
    );
}

#[test]
fn v1_is_bounded_to_107_bytes() {
    let longest = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN - 16));
    assert_eq!(longest.len(), V1_MAX_LEN);
    assert_eq!(
        parse(longest.as_bytes()),
        Ok((ProxyHeader::Unknown, V1_MAX_LEN))
    );
    let over = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN - 15));
    assert_eq!(parse(over.as_bytes()), Err(ProxyError::TooLong));
    assert_eq!(
        parse(&over.as_bytes()[..V1_MAX_LEN]),
        Err(ProxyError::TooLong)
    );
    let endless = format!("PROXY UNKNOWN {}", "x".repeat(500));
    assert_eq!(parse(endless.as_bytes()), Err(ProxyError::TooLong));
}

#[test]
fn v1_malformed_lines_are_refused() {
    for line in [
        "PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n",
        "PROXY TCP4 192.0.2.10  198.51.100.1 1 2\r\n",
        "PROXY TCP4 192.0.2.10 198.51.100.1 1 2 \r\n",
        "PROXY TCP4 192.0.2.010 198.51.100.1 1 2\r\n",
        "PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
        "PROXY TCP6 192.0.2.10 ::1 1 2\r\n",
        "PROXY TCP4 192.0.2.10 198.51.100.1 01 2\r\n",
        "PROXY TCP4 192.0.2.10 198.51.100.1 +1 2\r\n",
        "PROXY TCP4 192.0.2.10 198.51.100.1 65536 2\r\n",
        "PROXY TCP4 192.0.2.10 198.51.100.1 1 \r\n",
        "PROXY UDP4 192.0.2.10 198.51.100.1 1 2\r\n",
        "PROXY tcp4 192.0.2.10 198.51.100.1 1 2\r\n",
        "PROXY \r\n",
        "PROXY TCP4 192.0.2.10 198.51.100.1 1 2\n",
        "PROXY TCP4 192.0.2.10 198.51.100.1 1 2\rX",
        "PROXY TCP4 192.0.2.10\n198.51.100.1 1 2\r\n",
        "PROXY TCP4 192.0.2.10 198.51.100.1 1 2\u{e9}\r\n",
    ] {
        assert!(
            matches!(parse(line.as_bytes()), Err(ProxyError::Malformed(_))),
            "{line:?} gave {:?}",
            parse(line.as_bytes())
        );
    }
}

#[test]
fn a_bare_lf_is_refused_even_when_a_cr_follows() {
    // A prefix up to the LF was refused, and the whole must not ask for more instead:
    // the CR after it is no line end.
    for buf in [
        &b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r"[..],
        b"PROXY T\n\r",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r\n",
    ] {
        assert_eq!(
            parse(buf),
            Err(ProxyError::Malformed("v1 line ends without CR")),
            "{buf:?}"
        );
        assert_consistent(buf);
    }
}

#[test]
fn what_is_not_a_proxy_header_is_missing_at_the_first_byte_that_differs() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
    assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Err(ProxyError::Missing));
    assert_eq!(parse(b"PROXZ"), Err(ProxyError::Missing));
    assert_eq!(parse(b"proxy TCP4"), Err(ProxyError::Missing));
    assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(ProxyError::Missing));
    assert_eq!(parse(b"PRO"), Err(ProxyError::Incomplete));
    assert_eq!(parse(b""), Err(ProxyError::Incomplete));
}

#[test]
fn v2_inet_and_inet6_with_tlvs_and_payload() {
    let mut body = v2_inet([192, 0, 2, 10], [198, 51, 100, 1], 56324, 443);
    body.extend_from_slice(&[0x05, 0x00, 0x03, b'a', b'b', b'c']); // a TLV, skipped
    let mut buf = v2(1, 0x11, &body);
    let len = buf.len();
    buf.extend_from_slice(b"\x16\x03\x01payload");
    assert_eq!(
        parse(&buf),
        Ok((
            ProxyHeader::Proxied {
                source: sa("192.0.2.10:56324"),
                destination: sa("198.51.100.1:443"),
            },
            len
        ))
    );

    let mut body = Vec::new();
    body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&1234u16.to_be_bytes());
    body.extend_from_slice(&8443u16.to_be_bytes());
    let buf = v2(1, 0x21, &body);
    assert_eq!(
        parse(&buf),
        Ok((
            ProxyHeader::Proxied {
                source: sa("[2001:db8::7]:1234"),
                destination: sa("[::1]:8443"),
            },
            buf.len()
        ))
    );
}

#[test]
fn v2_local_unspec_and_unix_keep_the_peer() {
    assert_eq!(parse(&v2(0, 0x00, &[])), Ok((ProxyHeader::Local, 16)));
    // LOCAL is taken whatever its address block says.
    assert_eq!(
        parse(&v2(0, 0x11, &[1, 2, 3])),
        Ok((ProxyHeader::Local, 19))
    );
    assert_eq!(parse(&v2(1, 0x00, &[])), Ok((ProxyHeader::Unknown, 16)));
    assert_eq!(
        parse(&v2(1, 0x31, &[0u8; 216])),
        Ok((ProxyHeader::Unknown, 232))
    );
}

#[test]
fn v2_malformed_headers_are_refused() {
    let inet = v2_inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
    let mut wrong_version = v2(1, 0x11, &inet);
    wrong_version[12] = 0x11;
    let mut bad_command = v2(1, 0x11, &inet);
    bad_command[12] = 0x22;
    for (what, buf) in [
        ("version 1", wrong_version),
        ("command 2", bad_command),
        ("family 4", v2(1, 0x41, &inet)),
        ("transport 3", v2(1, 0x13, &inet)),
        ("short inet block", v2(1, 0x11, &inet[..11])),
        ("short inet6 block", v2(1, 0x21, &[0u8; 35])),
        ("short unix block", v2(1, 0x31, &[0u8; 215])),
    ] {
        assert!(
            matches!(parse(&buf), Err(ProxyError::Malformed(_))),
            "{what}: {:?}",
            parse(&buf)
        );
    }
    // The version byte is judged as soon as it arrives.
    let mut early = V2_SIGNATURE.to_vec();
    early.push(0x31);
    assert!(matches!(parse(&early), Err(ProxyError::Malformed(_))));
}

fn valid_headers() -> Vec<Vec<u8>> {
    vec![
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2(1, 0x11, &v2_inet([10, 1, 2, 3], [10, 0, 0, 1], 4000, 443)),
        v2(1, 0x21, &[7u8; 40]),
        v2(0, 0x00, &[]),
        v2(1, 0x31, &[0u8; 230]),
    ]
}

#[test]
fn every_truncation_of_a_valid_header_is_incomplete() {
    for header in valid_headers() {
        let full = parse(&header).unwrap();
        assert_eq!(full.1, header.len());
        for cut in 0..header.len() {
            assert_eq!(
                parse(&header[..cut]),
                Err(ProxyError::Incomplete),
                "{header:?} cut at {cut}"
            );
        }
        let mut more = header.clone();
        more.extend_from_slice(b"\r\n\r\nPROXY TCP4 garbage\0\xff");
        assert_eq!(parse(&more), Ok(full));
    }
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
        (self.next() % n as u64) as usize
    }
}

/// The reader consumes what `Incomplete` covers and asks again with more: the answer
/// for a prefix must never contradict the answer for the whole.
fn assert_consistent(buf: &[u8]) {
    let whole = parse(buf);
    if let Ok((_, len)) = whole {
        assert!(len <= buf.len());
    }
    for cut in 0..=buf.len() {
        match parse(&buf[..cut]) {
            Err(ProxyError::Incomplete) => {}
            Ok(found) => {
                assert_eq!(whole, Ok(found), "{buf:?}: prefix {cut} parsed alone");
            }
            Err(_) => assert!(
                matches!(whole, Err(ref e) if *e != ProxyError::Incomplete),
                "{buf:?}: prefix {cut} refused, whole {whole:?}"
            ),
        }
    }
}

#[test]
fn random_bytes_and_mutated_headers_never_panic_and_stay_consistent() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds = valid_headers();
    for _ in 0..20_000 {
        let mut buf = match rng.below(3) {
            0 => (0..rng.below(140)).map(|_| rng.next() as u8).collect(),
            _ => seeds[rng.below(seeds.len())].clone(),
        };
        for _ in 0..rng.below(4) {
            if buf.is_empty() {
                break;
            }
            let at = rng.below(buf.len());
            match rng.below(4) {
                0 => buf[at] = rng.next() as u8,
                1 => buf[at] = b" \r\n:.0"[rng.below(6)],
                2 => {
                    buf.remove(at);
                }
                _ => buf.insert(at, rng.next() as u8),
            }
        }
        if rng.below(2) == 0 {
            let cut = rng.below(buf.len() + 1);
            buf.truncate(cut);
        }
        assert_consistent(&buf);
    }
}
