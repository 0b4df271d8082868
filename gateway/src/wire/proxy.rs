//! The PROXY protocol header (HAProxy's v1 text and v2 binary forms) that a load
//! balancer puts in front of a connection to say who the client is. Pure: bytes in,
//! the header and its length out; never reads past the header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature, the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 signature.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the spec's bound).
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED_LEN: usize = 16;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection: the client's address and the address it reached.
    Proxied {
        /// The client (what rules match and the audit line prints).
        source: SocketAddr,
        /// The address the client connected to, at the load balancer.
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the load balancer's own connection (a health check); the peer
    /// address stands.
    Local,
    /// v1 `UNKNOWN`, or a v2 family without IP addresses (`UNSPEC`, `UNIX`): the
    /// peer address stands.
    Unknown,
}

/// Why bytes are not (yet) a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes so far are a valid beginning; the header continues past them.
    #[error("the PROXY header is incomplete")]
    Incomplete,
    /// The bytes start with neither the v1 nor the v2 signature.
    #[error("the connection does not start with a PROXY header")]
    Missing,
    /// A v1 header without CRLF within 107 bytes.
    #[error("the PROXY v1 header is longer than {V1_MAX_LEN} bytes")]
    TooLong,
    /// A header with the right signature but wrong content.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

impl ProxyError {
    /// A snake_case name for audit lines.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyError::Incomplete => "incomplete",
            ProxyError::Missing => "missing",
            ProxyError::TooLong => "too_long",
            ProxyError::Malformed(_) => "malformed",
        }
    }
}

/// Parses the PROXY header at the start of `buf`: the header and how many bytes it
/// takes. Bytes after it belong to the connection and are not looked at.
///
/// Fails with [`ProxyError::Incomplete`] when `buf` is a valid but unfinished header
/// (every byte of `buf` then belongs to the header), and with the other variants when
/// no header can start with these bytes.
pub fn parse(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyError> {
    let prefix = |signature: &[u8]| {
        let n = buf.len().min(signature.len());
        buf[..n] == signature[..n]
    };
    if buf.is_empty() {
        Err(ProxyError::Incomplete)
    } else if prefix(V1_SIGNATURE) {
        parse_v1(buf)
    } else if prefix(&V2_SIGNATURE) {
        parse_v2(buf)
    } else {
        Err(ProxyError::Missing)
    }
}

fn parse_v1(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    // A bare LF ends the line wrongly wherever a CR comes later: refused as soon as it
    // is there, so that more bytes never turn a refusal into a wait.
    let end = window.iter().position(|&b| b == b'\r' || b == b'\n');
    if end.is_some_and(|at| window[at] == b'\n') {
        return Err(ProxyError::Malformed("v1 line ends without CR"));
    }
    let Some(cr) = end else {
        return if window.len() >= V1_MAX_LEN {
            Err(ProxyError::TooLong)
        } else {
            Err(ProxyError::Incomplete)
        };
    };
    match window.get(cr + 1) {
        None if cr + 1 >= V1_MAX_LEN => return Err(ProxyError::TooLong),
        None => return Err(ProxyError::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::Malformed("v1 line has a CR without LF")),
    }
    let line = std::str::from_utf8(&window[V1_SIGNATURE.len()..cr])
        .map_err(|_| ProxyError::Malformed("v1 line is not ASCII"))?;
    let len = cr + 2;
    let mut words = line.split(' ');
    let family = words.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The spec lets the rest of an UNKNOWN line be anything; the receiver ignores it.
        return Ok((ProxyHeader::Unknown, len));
    }
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed(
            "v1 line needs family, two addresses and two ports, one space apart",
        ));
    };
    let (source, destination) = match family {
        "TCP4" => (IpAddr::V4(v1_ipv4(src)?), IpAddr::V4(v1_ipv4(dst)?)),
        "TCP6" => (IpAddr::V6(v1_ipv6(src)?), IpAddr::V6(v1_ipv6(dst)?)),
        _ => {
            return Err(ProxyError::Malformed(
                "v1 family is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    Ok((
        ProxyHeader::Proxied {
            source: SocketAddr::new(source, v1_port(sport)?),
            destination: SocketAddr::new(destination, v1_port(dport)?),
        },
        len,
    ))
}

fn v1_ipv4(text: &str) -> Result<Ipv4Addr, ProxyError> {
    // std refuses leading zeros and every form but the dotted quad, as the spec asks.
    text.parse()
        .map_err(|_| ProxyError::Malformed("v1 TCP4 address is not a dotted quad"))
}

fn v1_ipv6(text: &str) -> Result<Ipv6Addr, ProxyError> {
    text.parse()
        .map_err(|_| ProxyError::Malformed("v1 TCP6 address is not an IPv6 address"))
}

fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let invalid = ProxyError::Malformed("v1 port is not a number 0-65535 without leading zeros");
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return Err(invalid);
    }
    text.parse().map_err(|_| invalid)
}

fn parse_v2(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyError> {
    if buf.len() < V2_FIXED_LEN {
        // Check what has arrived of the version byte early, so garbage is refused
        // without waiting for the rest.
        if let Some(&ver_cmd) = buf.get(12) {
            v2_command(ver_cmd)?;
        }
        return Err(ProxyError::Incomplete);
    }
    let local = v2_command(buf[12])?;
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = V2_FIXED_LEN + body_len;
    if local {
        // The spec: a receiver takes LOCAL whatever its family and address block say.
        return match buf.get(V2_FIXED_LEN..len) {
            Some(_) => Ok((ProxyHeader::Local, len)),
            None => Err(ProxyError::Incomplete),
        };
    }
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    if family > 3 || transport > 2 {
        return Err(ProxyError::Malformed("v2 family or transport is unknown"));
    }
    let needed = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body_len < needed {
        return Err(ProxyError::Malformed(
            "v2 length is shorter than its address block",
        ));
    }
    let Some(body) = buf.get(V2_FIXED_LEN..len) else {
        return Err(ProxyError::Incomplete);
    };
    // TLVs after the addresses (AWS VPC endpoint ids, SSL details, ...) are skipped.
    let header = match family {
        1 => {
            let ip = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V4(ip(0)), be16(body, 8)),
                destination: SocketAddr::new(IpAddr::V4(ip(4)), be16(body, 10)),
            }
        }
        2 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V6(ip(0)), be16(body, 32)),
                destination: SocketAddr::new(IpAddr::V6(ip(16)), be16(body, 34)),
            }
        }
        _ => ProxyHeader::Unknown,
    };
    Ok((header, len))
}

/// The version/command byte: version 2, command LOCAL (true) or PROXY (false).
fn v2_command(byte: u8) -> Result<bool, ProxyError> {
    if byte >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version is not 2"));
    }
    match byte & 0x0f {
        0 => Ok(true),
        1 => Ok(false),
        _ => Err(ProxyError::Malformed(
            "v2 command is neither LOCAL nor PROXY",
        )),
    }
}

fn be16(body: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([body[at], body[at + 1]])
}

#[cfg(test)]
mod tests;
