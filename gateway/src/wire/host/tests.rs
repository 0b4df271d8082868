//! Tests of host parsing: IPv4 spellings, IPv6 literals, name forms, ports, and
//! hostile input that must neither panic nor slip through.

use super::*;

mod hostile;

fn v4(s: &str) -> Host {
    Host::Ip(IpAddr::V4(s.parse().unwrap()))
}

fn v6(s: &str) -> Host {
    Host::Ip(IpAddr::V6(s.parse().unwrap()))
}

fn name(s: &str) -> Host {
    Host::Name(s.to_owned())
}

#[test]
fn ipv4_in_every_resolver_spelling() {
    let cases = [
        ("10.0.0.1", "10.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("01200034567", "10.0.57.119"),
        ("012.1.2.3", "10.1.2.3"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.0.0.0x1", "127.0.0.1"),
        ("0xa9.0376.43518", "169.254.169.254"),
        ("0xA9FEA9FE", "169.254.169.254"),
        ("0", "0.0.0.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("00", "0.0.0.0"),
        ("0x00000000007f.1", "127.0.0.1"),
        ("4294967295", "255.255.255.255"),
        ("1.16777215", "1.255.255.255"),
        ("8.8.8.8", "8.8.8.8"),
        // A trailing dot after a literal is still the literal.
        ("127.0.0.1.", "127.0.0.1"),
        ("127.1.", "127.0.0.1"),
        ("0x7f.", "0.0.0.127"),
        // UTS 46 maps full-width digits and dots before the IPv4 check, as browsers do.
        ("１２７．０．０．１", "127.0.0.1"),
        ("127。0。0。1", "127.0.0.1"),
    ];
    for (raw, want) in cases {
        assert_eq!(parse_host(raw), Ok(v4(want)), "{raw}");
        assert_eq!(parse_authority(raw), Ok((v4(want), None)), "{raw}");
    }
}

#[test]
fn numeric_hosts_that_are_no_address_are_malformed_never_names() {
    let cases = [
        "256.1.1.1",
        "1.256.1.1",
        "1.2.3.256",
        "1.2.65536",
        "1.16777216",
        "4294967296",
        "99999999999999999999999",
        "0x100000000",
        "1.2.3.4.5",
        "08.1.1.1",
        "1.2.3.09",
        "0x",
        "0x.1",
        "1.2.3.0x1g",
        "1.2.3.4a",
        "1.2.3.+1",
        "example.123",
        "example.0x1",
        "1..2",
        "1.2.3.4 ",
    ];
    for raw in cases {
        let got = parse_host(raw);
        assert!(
            matches!(
                got,
                Err(HostError::MalformedIp(_) | HostError::InvalidName(_))
            ),
            "{raw}: {got:?}"
        );
    }
    for raw in [
        "256.1.1.1",
        "1.2.3.4.5",
        "08.1.1.1",
        "0x",
        "1.2.3.0x1g",
        "4294967296",
    ] {
        assert_eq!(
            parse_host(raw),
            Err(HostError::MalformedIp(raw.to_owned())),
            "{raw}"
        );
    }
}

#[test]
fn ipv6_literals_in_brackets() {
    let cases = [
        ("[::1]", "::1"),
        ("[::]", "::"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[::FFFF:7F00:1]", "::ffff:127.0.0.1"),
        ("[::127.0.0.1]", "::127.0.0.1"),
        ("[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe"),
        ("[2002:a9fe:a9fe::]", "2002:a9fe:a9fe::"),
        ("[2001:0::80ff:fefe]", "2001::80ff:fefe"),
        ("[::5efe:10.0.0.1]", "::5efe:a00:1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("[2606:4700::1111]", "2606:4700::1111"),
    ];
    for (raw, want) in cases {
        assert_eq!(parse_host(raw), Ok(v6(want)), "{raw}");
        assert_eq!(parse_authority(raw), Ok((v6(want), None)), "{raw}");
        let with_port = format!("{raw}:443");
        assert_eq!(
            parse_authority(&with_port),
            Ok((v6(want), Some(443))),
            "{with_port}"
        );
    }
    // Bare IPv6 is accepted where no port can follow (rule patterns).
    assert_eq!(parse_host("::1"), Ok(v6("::1")));
    assert_eq!(
        parse_host("64:ff9b::a9fe:a9fe"),
        Ok(v6("64:ff9b::a9fe:a9fe"))
    );
}

#[test]
fn malformed_ipv6_and_zone_ids_are_refused() {
    for raw in [
        "[fe80::1%25eth0]",
        "[fe80::1%eth0]",
        "fe80::1%eth0",
        "[::1",
        "::1]",
        "[]",
        "[127.0.0.1]",
        "[example.com]",
        "[::ffff:0x7f.1]",
        "[::ffff:127.1]",
        "[::１]",
        "[1:2:3:4:5:6:7:8:9]",
        "[::1]]",
        "[[::1]]",
        "1:2",
    ] {
        let got = parse_host(raw);
        assert!(
            matches!(got, Err(HostError::MalformedIp(_))),
            "{raw}: {got:?}"
        );
    }
    for raw in [
        "[fe80::1%25eth0]:80",
        "[::1",
        "::1",
        "::1:80",
        "2001:db8::1:443",
    ] {
        let got = parse_authority(raw);
        assert!(
            matches!(got, Err(HostError::MalformedIp(_))),
            "{raw}: {got:?}"
        );
    }
}

#[test]
fn name_forms_normalise_to_one_name() {
    let same = [
        "api.example.com",
        "API.Example.COM",
        "api.example.com.",
        "API.EXAMPLE.COM.",
        "ａｐｉ．example.com",
        "api。example。com",
    ];
    for raw in same {
        assert_eq!(parse_host(raw), Ok(name("api.example.com")), "{raw}");
        assert_eq!(
            normalize_name(raw),
            Ok("api.example.com".to_owned()),
            "{raw}"
        );
    }
    for raw in [
        "bücher.example",
        "BÜCHER.example",
        "xn--bcher-kva.example",
        "XN--BCHER-KVA.example.",
    ] {
        assert_eq!(parse_host(raw), Ok(name("xn--bcher-kva.example")), "{raw}");
    }
    // Search-domain forms: the trailing dot is dropped, the name is otherwise kept.
    assert_eq!(
        parse_host("Host.NS.svc.cluster.local."),
        Ok(name("host.ns.svc.cluster.local"))
    );
    // Real names the strict IDNA profile would refuse.
    for raw in [
        "_dmarc.example.com",
        "r3---sn-abc.example",
        "a-.example",
        "localhost",
        "x",
    ] {
        assert_eq!(parse_host(raw), Ok(name(raw)), "{raw}");
    }
    // Digits are fine anywhere but the last label.
    assert_eq!(parse_host("0x7f.example.com"), Ok(name("0x7f.example.com")));
    assert_eq!(parse_host("1.2.3.example"), Ok(name("1.2.3.example")));
}

#[test]
fn characters_no_host_name_has_are_refused() {
    let label64 = "a".repeat(64);
    let long = format!("{}.com", vec!["a".repeat(62); 4].join("."));
    for raw in [
        "a..b",
        ".",
        "..",
        ".example.com",
        "example.com..",
        "exa mple.com",
        " example.com",
        "user@example.com",
        "example.com/path",
        "example.com\\evil",
        "exa%2ecom",
        "example.com\u{0}",
        "exam\tple.com",
        "*",
        "*.example.com",
        "a*b.example",
        "exa\"mple.com",
        "{example}.com",
        "a|b#c.example",
        "example.com?x",
        "example.com#x",
        "exa<mple>.com",
        "ex^ample.com",
        "xn--zz.example",
        "\u{200b}.example",
        "\u{fffd}.example",
        &format!("{label64}.example"),
        &long,
    ] {
        let got = parse_host(raw);
        assert!(
            matches!(got, Err(HostError::InvalidName(_) | HostError::Empty)),
            "{raw:?}: {got:?}"
        );
    }
    // A colon sends the host down the IPv6 path, where it is malformed.
    assert!(parse_host("example.com\r\nx: y").is_err());
    assert_eq!(parse_host(""), Err(HostError::Empty));
    let longest = format!("{}.{}", vec!["a".repeat(63); 3].join("."), "a".repeat(61));
    assert_eq!(longest.len(), 253);
    assert_eq!(parse_host(&longest), Ok(name(&longest)));
    assert_eq!(parse_host(&format!("{longest}.")), Ok(name(&longest)));
}

#[test]
fn normalize_name_refuses_addresses() {
    for raw in ["10.0.0.1", "127.1", "::1", "[::1]", "0x7f.1"] {
        assert!(normalize_name(raw).is_err(), "{raw}");
    }
    assert_eq!(normalize_name("Example.COM."), Ok("example.com".to_owned()));
    assert!(normalize_name("").is_err());
}

#[test]
fn authorities_and_ports() {
    let ok = [
        ("example.com:80", name("example.com"), Some(80)),
        ("Example.com.:8080", name("example.com"), Some(8080)),
        ("example.com", name("example.com"), None),
        ("example.com:65535", name("example.com"), Some(65535)),
        ("example.com:1", name("example.com"), Some(1)),
        ("example.com:080", name("example.com"), Some(80)),
        ("127.1:443", v4("127.0.0.1"), Some(443)),
        ("0x7f.1:22", v4("127.0.0.1"), Some(22)),
        ("[::1]:8080", v6("::1"), Some(8080)),
        (
            "bücher.example:443",
            name("xn--bcher-kva.example"),
            Some(443),
        ),
    ];
    for (raw, host, port) in ok {
        assert_eq!(parse_authority(raw), Ok((host, port)), "{raw}");
    }
    for raw in [
        "example.com:",
        "example.com:0",
        "example.com:65536",
        "example.com:99999999999",
        "example.com:+80",
        "example.com:-80",
        "example.com: 80",
        "example.com:80 ",
        "example.com:8o",
        "example.com:0x50",
        "example.com:٨٠",
        "[::1]:",
        "[::1]80",
        "[::1]:0",
        "[::1]:http",
    ] {
        assert_eq!(
            parse_authority(raw),
            Err(HostError::InvalidPort(raw.to_owned())),
            "{raw}"
        );
    }
    assert_eq!(parse_authority(""), Err(HostError::Empty));
    assert_eq!(parse_authority(":80"), Err(HostError::Empty));
    for raw in [
        "user@example.com",
        "user:pass@example.com:80",
        "@example.com",
        "a@[::1]:80",
    ] {
        assert_eq!(
            parse_authority(raw),
            Err(HostError::InvalidName(raw.to_owned())),
            "{raw}"
        );
    }
    // A full-width colon maps to ':' under UTS 46 and is then refused, never read as
    // a port separator after the fact.
    assert!(parse_authority("example.com：80").is_err());
}

#[test]
fn display_is_canonical_and_parses_back() {
    for raw in [
        "Example.COM.",
        "0x7f.1",
        "[::FFFF:127.0.0.1]",
        "bücher.example",
    ] {
        let host = parse_host(raw).unwrap();
        assert_eq!(parse_host(&host.to_string()), Ok(host.clone()), "{raw}");
    }
    assert_eq!(parse_host("0x7f.1").unwrap().to_string(), "127.0.0.1");
    assert_eq!(parse_host("::1").unwrap().to_string(), "[::1]");
    assert_eq!(parse_host("A.example").unwrap().to_string(), "a.example");
    assert_eq!(v4("1.2.3.4").ip(), Some("1.2.3.4".parse().unwrap()));
    assert_eq!(v4("1.2.3.4").name(), None);
    assert_eq!(name("a.example").name(), Some("a.example"));
    assert_eq!(name("a.example").ip(), None);
}
