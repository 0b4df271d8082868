//! The PROXY protocol header (v1 text, v2 binary) that a load balancer sends first.
#![no_main]

use std::net::SocketAddr;

use egress_gateway::wire::proxy::{parse, ProxyError, ProxyHeader, V2_SIGNATURE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    match whole {
        Ok((header, len)) => {
            assert!(len > 0 && len <= data.len());
            // The header alone is the header; the connection's bytes after it are never
            // looked at, and one byte less is still a beginning.
            assert_eq!(parse(&data[..len]), Ok((header, len)));
            assert_eq!(parse(&data[..len - 1]), Err(ProxyError::Incomplete));
            let mut more = data[..len].to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(&more), Ok((header, len)));
            if let ProxyHeader::Proxied {
                source,
                destination,
            } = header
            {
                // Written anew, in either version, it reads back the same.
                let v1 = v1_line(source, destination);
                assert_eq!(parse(&v1), Ok((header, v1.len())), "{v1:?}");
                let v2 = v2_header(source, destination);
                assert_eq!(parse(&v2), Ok((header, v2.len())));
            }
        }
        Err(ProxyError::Incomplete) => {
            // Every byte so far belongs to the header: so does every prefix.
            assert_eq!(parse(&data[..data.len() / 2]), Err(ProxyError::Incomplete));
        }
        Err(e) => {
            // Refused is final: more bytes do not make it a header (the reason named
            // may change: a CR after a bare LF makes the same line not ASCII first).
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\x00\x00");
            let again = parse(&more).map_err(|e| e.as_str());
            assert_eq!(again, Err(e.as_str()));
        }
    }
});

fn v1_line(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    let mut body = Vec::new();
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            out.push(0x21);
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
        }
        _ => unreachable!("a header's two addresses are of one family"),
    }
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}
