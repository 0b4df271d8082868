//! The HTTP/1 request head path of an `http` listener: the preface sniff, hyper's
//! parser behind the tracked socket, and the head checks (framing, transfer codings,
//! destination) that run before anything is decided.
//!
//! The bytes are served twice: as one read, and as many small reads. Beside the
//! gateway, the harness walks the same bytes with httparse and checks that every
//! request whose head carries both Content-Length and Transfer-Encoding is refused, and
//! no other is refused for it.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use bytes::Bytes;
use egress_gateway::listen::fuzzing::{http1_requests, HeadVerdict};
use egress_gateway::policy::{Listener, Protocol};
use libfuzzer_sys::fuzz_target;

const BOTH_LENGTHS: &str = "transfer_encoding_with_content_length";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    })
}

fn listener() -> &'static Listener {
    static LISTENER: OnceLock<Listener> = OnceLock::new();
    LISTENER.get_or_init(|| Listener {
        name: "http".into(),
        address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 8080,
        protocol: Protocol::Http,
        target_port: 80,
        forward_to: None,
        tls: None,
        proxy_protocol: false,
        check_sni: false,
        route_by: egress_gateway::policy::RouteBy::ForwardTo,
        dns: None,
    })
}

fuzz_target!(|data: &[u8]| {
    let expected = heads(data);
    let step = 1 + usize::from(data.first().copied().unwrap_or(0) % 13);
    let small: Vec<Bytes> = data.chunks(step).map(Bytes::copy_from_slice).collect();
    for reads in [vec![Bytes::copy_from_slice(data)], small] {
        let verdicts = runtime().block_on(http1_requests(reads, listener(), 64 * 1024));
        check(&expected, &verdicts);
    }
});

fn check(expected: &[bool], verdicts: &[HeadVerdict]) {
    for (i, (&both, verdict)) in expected.iter().zip(verdicts).enumerate() {
        let refused_for_it = matches!(verdict, Err(reason) if reason == BOTH_LENGTHS);
        assert_eq!(
            refused_for_it, both,
            "request {i}: both lengths in the head: {both}, verdict {verdict:?} (all: {verdicts:?}, heads: {expected:?})"
        );
        if verdict.is_err() {
            // A refused request closes the connection.
            assert_eq!(i + 1, verdicts.len());
        }
    }
}

/// For each request head in `data`, as httparse reads them one after the other (bodies
/// skipped by their framing): whether it names both Content-Length and
/// Transfer-Encoding. Stops where the connection cannot go on.
fn heads(data: &[u8]) -> Vec<bool> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = req.parse(&data[at..]) else {
            break;
        };
        let mut lengths = Vec::new();
        let mut chunked = false;
        let mut close = req.version != Some(1);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths.push(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("connection")
                && h.value.eq_ignore_ascii_case(b"close")
            {
                close = true;
            }
        }
        let both = chunked && !lengths.is_empty();
        out.push(both);
        at += len;
        if both || close || req.method == Some("CONNECT") {
            break;
        }
        if chunked {
            match chunked_len(&data[at..]) {
                Some(n) => at += n,
                None => break,
            }
        } else if let Some(first) = lengths.first() {
            let Some(n) = std::str::from_utf8(first)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
            else {
                break;
            };
            if lengths.iter().any(|v| v != first) {
                break;
            }
            at = at.saturating_add(n);
        }
    }
    out
}

/// The length of a chunked body at the start of `data`, trailers included.
fn chunked_len(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let Ok(httparse::Status::Complete((line, size))) = httparse::parse_chunk_size(&data[at..])
        else {
            return None;
        };
        at += line;
        if size == 0 {
            let mut trailers = [httparse::EMPTY_HEADER; 32];
            return match httparse::parse_headers(&data[at..], &mut trailers) {
                Ok(httparse::Status::Complete((n, _))) => Some(at + n),
                _ => None,
            };
        }
        at = at.checked_add(usize::try_from(size).ok()?)?;
        if data.get(at..at + 2) != Some(b"\r\n") {
            return None;
        }
        at += 2;
    }
}
