//! Tests of the address guard: every special range, every embedding, and the IP
//! literal spellings of the request path end to end through host parsing.

use super::*;
use crate::wire::host::{parse_authority, HostError};
use AddressClass::*;

fn class(s: &str) -> Option<AddressClass> {
    classify(s.parse().unwrap())
}

#[test]
fn ipv4_special_ranges() {
    let cases = [
        ("127.0.0.1", Loopback),
        ("127.255.255.254", Loopback),
        ("10.0.0.1", Private),
        ("10.255.255.255", Private),
        ("172.16.0.1", Private),
        ("172.31.255.255", Private),
        ("192.168.1.1", Private),
        ("169.254.169.254", LinkLocal),
        ("169.254.0.1", LinkLocal),
        ("100.64.0.1", Cgnat),
        ("100.127.255.255", Cgnat),
        ("0.0.0.0", Unspecified),
        ("0.1.2.3", Unspecified),
        ("224.0.0.1", Multicast),
        ("239.255.255.250", Multicast),
        ("255.255.255.255", Broadcast),
        ("192.0.2.1", Documentation),
        ("198.51.100.7", Documentation),
        ("203.0.113.7", Documentation),
        ("198.18.0.1", Benchmarking),
        ("198.19.255.255", Benchmarking),
        ("240.0.0.1", Reserved),
        ("255.255.255.254", Reserved),
        ("192.0.0.8", Reserved),
    ];
    for (ip, want) in cases {
        assert_eq!(class(ip), Some(want), "{ip}");
    }
}

#[test]
fn public_addresses_pass() {
    for ip in [
        "8.8.8.8",
        "93.184.216.34",
        "1.1.1.1",
        "172.15.255.255",
        "172.32.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "169.253.255.255",
        "192.0.1.255",
        "192.0.3.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001:4:112::1",
        "2001:20::1",
        "2001:1::1",
    ] {
        assert_eq!(class(ip), None, "{ip}");
        assert_eq!(check(ip.parse().unwrap(), false), Ok(()), "{ip}");
    }
}

#[test]
fn ipv6_special_ranges() {
    let cases = [
        ("::1", Loopback),
        ("::", Unspecified),
        ("fc00::1", Private),
        ("fd12:3456::1", Private),
        ("fe80::1", LinkLocal),
        ("febf::1", LinkLocal),
        ("fec0::1", Private),
        ("ff02::1", Multicast),
        ("ff05::1:3", Multicast),
        ("2001:db8::1", Documentation),
        ("3fff::1", Documentation),
        ("2001:2::1", Benchmarking),
        ("100::1", Reserved),
        ("2001:10::1", Reserved),
        ("2001:1::3", Reserved),
        ("5f00::1", Reserved),
        ("4000::1", Reserved),
        ("1::", Reserved),
        ("::2:0:0:1", Reserved),
    ];
    for (ip, want) in cases {
        assert_eq!(class(ip), Some(want), "{ip}");
    }
}

#[test]
fn embedded_ipv4_is_judged_by_what_it_embeds() {
    let cases = [
        // IPv4-mapped, SIIT-translated and IPv4-compatible.
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:169.254.169.254", LinkLocal),
        ("::ffff:10.0.0.1", Private),
        ("::ffff:0.0.0.0", Unspecified),
        ("::ffff:0:127.0.0.1", Loopback),
        ("::127.0.0.1", Loopback),
        ("::10.0.0.1", Private),
        ("::0.0.0.2", Unspecified),
        // NAT64, well-known and local-use.
        ("64:ff9b::a9fe:a9fe", LinkLocal),
        ("64:ff9b::127.0.0.1", Loopback),
        ("64:ff9b:1::a9fe:a9fe", LinkLocal),
        ("64:ff9b:1::808:808", Private),
        // 6to4.
        ("2002:a9fe:a9fe::", LinkLocal),
        ("2002:7f00:1::1", Loopback),
        ("2002:c0a8:101::", Private),
        // Teredo: 2001:0::80ff:fefe is server 0.0.0.0, client !80ff:fefe = 127.0.1.1.
        ("2001:0::80ff:fefe", Loopback),
        ("2001:0:a9fe:a9fe::f7f7:f7f7", LinkLocal),
        ("2001:0:808:808::", Broadcast),
        ("2001:0:808:808::f7f7:f7f7", Reserved),
        // ISATAP under any prefix.
        ("::5efe:10.0.0.1", Private),
        ("::200:5efe:127.0.0.1", Loopback),
        ("2606:4700::5efe:a9fe:a9fe", LinkLocal),
        ("2606:4700::200:5efe:c0a8:101", Private),
        ("fe80::5efe:8.8.8.8", LinkLocal),
    ];
    for (ip, want) in cases {
        assert_eq!(class(ip), Some(want), "{ip}");
    }
    // ISATAP naming a public address under a global prefix is an ordinary address.
    assert_eq!(class("2606:4700::5efe:808:808"), None);
}

#[test]
fn check_honours_allow_private_but_never_for_unusable_targets() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(check(ip("127.0.0.1"), false), Err(Loopback));
    assert_eq!(check(ip("127.0.0.1"), true), Ok(()));
    assert_eq!(check(ip("::ffff:10.0.0.1"), true), Ok(()));
    assert_eq!(check(ip("169.254.169.254"), false), Err(LinkLocal));
    assert_eq!(check(ip("100.64.0.1"), false), Err(Cgnat));
    assert_eq!(check(ip("203.0.113.7"), true), Ok(()));
    for s in [
        "0.0.0.0",
        "::",
        "::ffff:0.0.0.0",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
    ] {
        assert!(check(ip(s), true).is_err(), "{s}");
        assert!(check(ip(s), false).is_err(), "{s}");
    }
    assert_eq!(check(ip("8.8.8.8"), false), Ok(()));
}

#[test]
fn classes_have_stable_audit_words() {
    let all = [
        (Loopback, "loopback"),
        (Private, "private"),
        (LinkLocal, "link_local"),
        (Cgnat, "cgnat"),
        (Unspecified, "unspecified"),
        (Multicast, "multicast"),
        (Broadcast, "broadcast"),
        (Documentation, "documentation"),
        (Reserved, "reserved"),
        (Benchmarking, "benchmarking"),
    ];
    for (class, word) in all {
        assert_eq!(class.as_str(), word);
        assert_eq!(class.to_string(), word);
    }
    assert_eq!(
        format!("destination_address_refused{{{}}}", Loopback),
        "destination_address_refused{loopback}"
    );
}

/// The and the peers' IP-literal spellings, as a client sends them in a Host
/// header or CONNECT target: each is canonicalised and then refused by the guard, or
/// refused as malformed; none reaches DNS as a name.
#[test]
fn literal_spellings_are_guarded_or_malformed() {
    let guarded = [
        ("10.0.0.1", Private),
        ("127.1", Loopback),
        ("0x7f.1", Loopback),
        ("0177.0.0.1", Loopback),
        ("2130706433", Loopback),
        ("01200034567", Private),
        ("012.1.2.3", Private),
        ("0x7f000001", Loopback),
        ("127.0.0.1.", Loopback),
        ("0", Unspecified),
        ("0.0.0.0", Unspecified),
        ("0xa9fea9fe", LinkLocal),
        ("169.254.169.254", LinkLocal),
        ("100.64.0.1", Cgnat),
        ("[::1]", Loopback),
        ("[::]", Unspecified),
        ("[::ffff:127.0.0.1]", Loopback),
        ("[::127.0.0.1]", Loopback),
        ("[64:ff9b::a9fe:a9fe]", LinkLocal),
        ("[2002:a9fe:a9fe::]", LinkLocal),
        ("[2001:0::80ff:fefe]", Loopback),
        ("[::5efe:10.0.0.1]", Private),
        ("[fe80::1]", LinkLocal),
        ("[fd00::1]", Private),
    ];
    for (raw, want) in guarded {
        for authority in [raw.to_owned(), format!("{raw}:80")] {
            let (host, _) = parse_authority(&authority).unwrap();
            let ip = host
                .ip()
                .unwrap_or_else(|| panic!("{authority} is not an IP"));
            assert_eq!(check(ip, false), Err(want), "{authority}");
        }
    }
    for raw in [
        "256.0.0.1",
        "127.0.0.1.1",
        "08.0.0.1",
        "0x7f.0x",
        "1.2.3.0x1g",
        "[fe80::1%25eth0]",
        "[::ffff:127.1]",
        "::1",
    ] {
        let got = parse_authority(raw);
        assert!(
            matches!(got, Err(HostError::MalformedIp(_))),
            "{raw}: {got:?}"
        );
    }
}
