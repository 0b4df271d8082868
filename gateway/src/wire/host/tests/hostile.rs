//! Hostile input: fixed odd strings and generated ones, which must never panic and,
//! when accepted, must come out canonical.

use super::super::*;

/// Whatever the input, parsing returns: no panic, and every accepted host is in
/// canonical form (a lower-case ASCII name of valid labels, or an address) that parses
/// back to itself. Returns how many of the two parsers accepted it.
fn assert_sound(input: &str) -> usize {
    let mut accepted = 0;
    for result in [parse_host(input), parse_authority(input).map(|(h, _)| h)] {
        let Ok(host) = result else { continue };
        if let Host::Name(n) = &host {
            assert!(n.len() <= MAX_NAME_LEN, "{input:?} -> {n:?}");
            assert!(n.split('.').all(is_label), "{input:?} -> {n:?}");
            assert!(
                !n.bytes().any(|b| b.is_ascii_uppercase()),
                "{input:?} -> {n:?}"
            );
            let last = n.rsplit('.').next().unwrap();
            assert!(!last.starts_with(|c: char| c.is_ascii_digit()), "{input:?}");
        }
        assert_eq!(parse_host(&host.to_string()), Ok(host.clone()), "{input:?}");
        accepted += 1;
    }
    let _ = normalize_name(input);
    accepted
}

#[test]
fn hostile_strings_never_panic() {
    let fixed = [
        "[",
        "]",
        "[]",
        "[:]",
        ":",
        "::",
        ":::",
        "[::",
        "]::[",
        "@",
        "@:",
        "[@]",
        ".",
        ":.",
        "0x",
        "0x.",
        "0x0x0",
        "00000000000000000000000000000000001",
        "1.",
        ".1",
        "1..",
        "\u{0}",
        "\u{7f}",
        "\u{feff}example.com",
        "\u{202e}moc.elpmaxe",
        "ß.example",
        "ς.example",
        "xn--",
        "xn--.example",
        "xn--a.example",
        "-",
        "_",
        "%",
        "%00",
        "%2e",
        "a:b:c",
        "[a]:b",
        "[::1]:[::1]",
        "255.255.255.255.255",
        "１.２.３.４.５",
        "0x7f.1:",
        "0x7f.1:0",
        "\u{ff0e}",
        "a\u{ff0e}\u{ff0e}b",
        "\u{3002}",
    ];
    for input in fixed {
        let _ = assert_sound(input);
    }
    let alphabet: Vec<char> = "0123456789abcdefxX.:[]@%/\\ -_*AZ\u{0}\u{ff0e}\u{3002}ü\u{ff11}"
        .chars()
        .collect();
    let mut rng = egress_testkit::XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let len = (rng.next_u64() % 24) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
            .collect();
        accepted += assert_sound(&s);
    }
    // Dotted numbers in every radix, with and without a port: the IPv4 parser's edges.
    let parts = [
        "0",
        "00",
        "0x",
        "0X7f",
        "0177",
        "08",
        "255",
        "256",
        "65535",
        "65536",
        "16777216",
        "4294967295",
        "4294967296",
        "0xffffffff",
        "0x1ffffffff",
        "1",
        "",
        "a",
        "１",
    ];
    for _ in 0..20_000 {
        let count = 1 + (rng.next_u64() % 6) as usize;
        let mut s = (0..count)
            .map(|_| parts[(rng.next_u64() % parts.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(".");
        match rng.next_u64() % 4 {
            0 => s.push('.'),
            1 => s.push_str(":443"),
            _ => {}
        }
        accepted += assert_sound(&s);
    }
    // The generators reach the accepting paths, not only the refusals.
    assert!(accepted > 1_000, "only {accepted} accepted");
    // Raw bytes, as a header would carry them, through lossy UTF-8.
    for _ in 0..20_000 {
        let len = (rng.next_u64() % 32) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let _ = assert_sound(&String::from_utf8_lossy(&bytes));
    }
}
