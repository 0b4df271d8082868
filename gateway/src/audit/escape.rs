//! Escaping of values in audit lines, so that no value can break or forge a line.
//!
//! Values come from clients (headers, Host, SNI, path) and an audit log is a target:
//! a `\n` in a User-Agent would forge a second record, a `"` would shift the fields a
//! parser sees. Every value therefore goes through [`write_text`]:
//!
//! - control characters (C0, DEL, C1), U+2028/U+2029, `"` and `\` are written as
//!   `\xHH` per UTF-8 byte (`\` too, so an escape in the log is never ambiguous with the
//!   same text sent by a client); bytes that are not UTF-8 are written as `\xHH`;
//! - [`Escape::Token`] (method, path, authority, SNI, peer SAN) also escapes the space
//!   as `\x20`: these fields are unquoted or parsed as `[^ ]*` by Fluent Bit;
//! - [`Escape::Detail`] (code details, termination details, failure reasons) turns a
//!   space into `_`, as Envoy does for its details and transport failure reasons.
//!
//! Values that need no escaping (all normal traffic) are copied as they are, so lines
//! stay byte for byte Envoy's. JSON lines use [`write_json_str`] instead, which is
//! lossless.

/// How strictly a text value is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escape {
    /// Header values printed inside quotes: spaces are kept.
    Quoted,
    /// Values that never hold a space legitimately: a space becomes `\x20`.
    Token,
    /// Details of our own or from TLS errors: a space becomes `_`.
    Detail,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `value`, cut to at most `max` bytes (on a character boundary), escaped.
pub(crate) fn write_text(out: &mut String, value: &[u8], mode: Escape, max: Option<usize>) {
    let value = truncate(value, max);
    // Values that need no escape (printable ASCII) are copied as they are checked, in
    // one pass; the first byte that needs one undoes the copy.
    let start = out.len();
    out.reserve(value.len());
    for &b in value {
        if !is_plain(b, mode) {
            out.truncate(start);
            return write_escaped(out, value, mode);
        }
        out.push(char::from(b));
    }
}

fn write_escaped(out: &mut String, value: &[u8], mode: Escape) {
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            write_char(out, c, mode);
        }
        for &b in chunk.invalid() {
            push_hex(out, b);
        }
    }
}

/// Cuts `value` to at most `max` bytes without splitting a UTF-8 sequence.
fn truncate(value: &[u8], max: Option<usize>) -> &[u8] {
    let Some(max) = max else { return value };
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while end > 0 && value[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    &value[..end]
}

fn is_plain(b: u8, mode: Escape) -> bool {
    match b {
        b' ' => mode == Escape::Quoted,
        b'"' | b'\\' => false,
        0x21..=0x7e => true,
        _ => false,
    }
}

fn write_char(out: &mut String, c: char, mode: Escape) {
    let escape = match c {
        ' ' => match mode {
            Escape::Quoted => false,
            Escape::Token => true,
            Escape::Detail => {
                out.push('_');
                return;
            }
        },
        '"' | '\\' | '\u{2028}' | '\u{2029}' => true,
        c => c.is_control(),
    };
    if escape {
        let mut buf = [0u8; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            push_hex(out, b);
        }
    } else {
        out.push(c);
    }
}

fn push_hex(out: &mut String, b: u8) {
    out.push_str("\\x");
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// Appends `value` as a JSON string literal; bytes that are not UTF-8 become U+FFFD.
pub(crate) fn write_json_str(out: &mut String, value: &[u8]) {
    out.push('"');
    for chunk in value.utf8_chunks() {
        let s = chunk.valid();
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let escaped = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => "",
                _ => continue,
            };
            out.push_str(&s[start..i]);
            if escaped.is_empty() {
                push_json_unicode(out, u32::from(c));
            } else {
                out.push_str(escaped);
            }
            start = i + c.len_utf8();
        }
        out.push_str(&s[start..]);
        if !chunk.invalid().is_empty() {
            out.push('\u{fffd}');
        }
    }
    out.push('"');
}

fn push_json_unicode(out: &mut String, code: u32) {
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        let nibble = (code >> shift) & 0xf;
        out.push(char::from(HEX[nibble as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &[u8], mode: Escape, max: Option<usize>) -> String {
        let mut out = String::new();
        write_text(&mut out, value, mode, max);
        out
    }

    #[test]
    fn plain_values_are_copied() {
        assert_eq!(
            text(b"curl/7.87.0-DEV", Escape::Quoted, None),
            "curl/7.87.0-DEV"
        );
        assert_eq!(text(b"a, b", Escape::Quoted, None), "a, b");
        assert_eq!(text("héllo".as_bytes(), Escape::Quoted, None), "héllo");
    }

    #[test]
    fn hostile_bytes_are_escaped() {
        assert_eq!(
            text(b"x\r\n[2024] \"GET\\", Escape::Quoted, None),
            "x\\x0d\\x0a[2024] \\x22GET\\x5c"
        );
        assert_eq!(
            text(b"a b\x00\x7f", Escape::Token, None),
            "a\\x20b\\x00\\x7f"
        );
        assert_eq!(
            text(b"tls error: bad", Escape::Detail, None),
            "tls_error:_bad"
        );
        assert_eq!(text(b"\xff\xfeok", Escape::Quoted, None), "\\xff\\xfeok");
        assert_eq!(
            text("a\u{85}\u{2028}".as_bytes(), Escape::Quoted, None),
            "a\\xc2\\x85\\xe2\\x80\\xa8"
        );
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(text(b"abcdef", Escape::Quoted, Some(3)), "abc");
        assert_eq!(text("aé".as_bytes(), Escape::Quoted, Some(2)), "a");
        assert_eq!(text(b"a\nb", Escape::Quoted, Some(2)), "a\\x0a");
    }

    #[test]
    fn json_strings_parse_back() {
        for value in ["plain", "q\"b\\s", "line\nbreak\r\t\u{1}", "\u{2028}é"] {
            let mut out = String::new();
            write_json_str(&mut out, value.as_bytes());
            assert!(!out.contains('\n'));
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, value);
        }
        let mut out = String::new();
        write_json_str(&mut out, b"a\xffb");
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a\u{fffd}b");
    }
}
