//! The TLS ClientHello reader of `tls` listeners and of CONNECT tunnels with
//! `check_sni`: bytes from a client, parsed again on every read until they decide.
#![no_main]

use egress_gateway::wire::host::parse_host;
use egress_gateway::wire::sni::{parse_client_hello, SniError, MAX_CLIENT_HELLO_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_client_hello(data);
    match &whole {
        Ok(hello) => {
            if let Some(name) = &hello.server_name {
                assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()));
                let _ = parse_host(name);
            }
            assert!(hello.alpn.iter().all(|p| !p.is_empty() && p.len() <= 255));
            // Bytes after the hello (the client's next record) change nothing.
            let mut more = data.to_vec();
            more.extend_from_slice(b"\x16\x03\x03\x00\x01\x01");
            assert_eq!(parse_client_hello(&more), whole);
        }
        Err(SniError::Incomplete { needed: Some(n) }) => {
            assert!(*n > data.len(), "needs {n} with {} read", data.len());
            assert!(*n <= MAX_CLIENT_HELLO_BYTES);
        }
        Err(_) => {}
    }
    // The caller parses again after every read: once the bytes so far decide, more
    // bytes never change the answer, and an unfinished beginning never asks for less.
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse_client_hello(&data[..cut]) {
            Err(SniError::Incomplete { needed }) => {
                if let (Some(n), Err(SniError::Incomplete { needed: Some(m) })) = (needed, &whole) {
                    assert!(n <= *m);
                }
            }
            decided => assert_eq!(decided, whole, "a prefix of {cut} bytes decided otherwise"),
        }
    }
});
