//! The target of a `CONNECT host:port` line: the request target as hyper reads it into
//! a URI, then the authority as the connect listener checks it.
#![no_main]

use egress_gateway::wire::connect::parse_target;
use egress_gateway::wire::host::{parse_authority, parse_host, Host};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    check(target);
    // The line as the listener gets it: hyper makes a URI of the request target, and
    // the listener checks its authority.
    if let Ok(uri) = target.parse::<http::Uri>() {
        if let Some(authority) = uri.authority() {
            check(authority.as_str());
        }
    }
});

fn check(target: &str) {
    let Ok((host, port)) = parse_target(target) else {
        return;
    };
    assert_ne!(port, 0);
    assert!(!target.contains('/') && !target.contains('@'));
    // The canonical form is a fixed point: written out and read again, the same.
    let canonical = format!("{host}:{port}");
    assert_eq!(
        parse_target(&canonical),
        Ok((host.clone(), port)),
        "{target:?} → {canonical:?}"
    );
    assert_eq!(parse_authority(target), Ok((host.clone(), Some(port))));
    if let Host::Name(name) = &host {
        assert_eq!(parse_host(name).as_ref(), Ok(&host));
    }
}
