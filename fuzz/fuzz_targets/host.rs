//! Host and IP spellings: `Host` headers, URI authorities, SNI names and the hosts of
//! policy rules, canonicalised so that no spelling slips past a rule or the guard.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_gateway::policy::hosts::parse_pattern;
use egress_gateway::wire::host::{normalize_name, parse_authority, parse_host, Host};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };

    let host = parse_host(raw);
    if let Ok(host) = &host {
        // Canonical forms are fixed points.
        assert_eq!(parse_host(&host.to_string()).as_ref(), Ok(host), "{raw:?}");
        if let Host::Name(name) = host {
            assert!(name.len() <= 253 && !name.ends_with('.'));
            assert!(name.split('.').all(|label| (1..=63).contains(&label.len())));
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)));
            assert_eq!(normalize_name(name).as_deref(), Ok(name.as_str()));
        }
    }
    // Any address the standard library reads, the gateway reads as the same address.
    if let Ok(v4) = raw.parse::<Ipv4Addr>() {
        assert_eq!(host, Ok(Host::Ip(IpAddr::V4(v4))), "{raw:?}");
    }
    if let Ok(v6) = raw.parse::<Ipv6Addr>() {
        assert_eq!(host, Ok(Host::Ip(IpAddr::V6(v6))), "{raw:?}");
        assert_eq!(
            parse_host(&format!("[{raw}]")),
            Ok(Host::Ip(IpAddr::V6(v6)))
        );
    }

    if let Ok(name) = normalize_name(raw) {
        assert_eq!(
            normalize_name(&name).as_deref(),
            Ok(name.as_str()),
            "{raw:?}"
        );
        assert_eq!(host, Ok(Host::Name(name)), "{raw:?}");
    }

    if let Ok((host, port)) = parse_authority(raw) {
        assert_ne!(port, Some(0));
        let written = match port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        assert_eq!(
            parse_authority(&written),
            Ok((host.clone(), port)),
            "{raw:?} → {written:?}"
        );
    }

    // A rule's host: the pattern as printed (`GET /policy`, errors) reads back the same.
    if let Ok(pattern) = parse_pattern(raw) {
        let printed = pattern.to_string();
        assert_eq!(
            parse_pattern(&printed),
            Ok(pattern),
            "{raw:?} → {printed:?}"
        );
    }
});
