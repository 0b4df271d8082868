//! The address guard: which resolved addresses the gateway may connect to. Pure.
//!
//! Private, loopback, link-local (cloud metadata), CGNAT and other special-purpose
//! addresses are refused unless a rule allows them; embedded IPv4 forms in IPv6
//! (mapped, compatible, NAT64, 6to4, Teredo, ISATAP) are judged by the address they
//! embed. For IPv6 only global unicast (2000::/3) outside the special blocks passes:
//! anything else is at best unroutable and at worst a way around the IPv4 checks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A class of special-purpose address that the guard refuses by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, fc00::/7, fec0::/10 (deprecated site-local).
    Private,
    /// 169.254.0.0/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10.
    Cgnat,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// Other reserved ranges (240.0.0.0/4, 192.0.0.0/24, 100::/64, Teredo, IPv6 outside
    /// 2000::/3, ...).
    Reserved,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmarking,
}

impl AddressClass {
    /// Every class.
    pub const ALL: [AddressClass; 10] = [
        AddressClass::Loopback,
        AddressClass::Private,
        AddressClass::LinkLocal,
        AddressClass::Cgnat,
        AddressClass::Unspecified,
        AddressClass::Multicast,
        AddressClass::Broadcast,
        AddressClass::Documentation,
        AddressClass::Reserved,
        AddressClass::Benchmarking,
    ];

    /// The snake_case word used in audit details and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link_local",
            AddressClass::Cgnat => "cgnat",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Documentation => "documentation",
            AddressClass::Reserved => "reserved",
            AddressClass::Benchmarking => "benchmarking",
        }
    }

    /// Whether `allow_private: true` lets this class through. Unspecified, multicast
    /// and broadcast never name one upstream host (and on Linux a connect to 0.0.0.0
    /// reaches the gateway's own machine), so no rule can allow them.
    pub fn allowed_by_allow_private(self) -> bool {
        !matches!(
            self,
            AddressClass::Unspecified | AddressClass::Multicast | AddressClass::Broadcast
        )
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The special class of `ip`, or `None` for an ordinary public address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether the gateway may connect to `ip`: `Ok` for a public address, or for a
/// special one that `allow_private` (from the rule or `defaults`) lets through.
///
/// Fails with the address's class when it is refused.
pub fn check(ip: IpAddr, allow_private: bool) -> Result<(), AddressClass> {
    match classify(ip) {
        None => Ok(()),
        Some(class) if allow_private && class.allowed_by_allow_private() => Ok(()),
        Some(class) => Err(class),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        (0, _, _) => Unspecified,
        (127, _, _) => Loopback,
        (10, _, _) => Private,
        (172, 16..=31, _) => Private,
        (192, 168, _) => Private,
        (169, 254, _) => LinkLocal,
        (100, 64..=127, _) => Cgnat,
        (224..=239, _, _) => Multicast,
        _ if ip == Ipv4Addr::BROADCAST => Broadcast,
        (240..=255, _, _) => Reserved,
        (192, 0, 0) => Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Documentation,
        (198, 18..=19, _) => Benchmarking,
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::*;
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    if let Some(class) = classify_embedded(&s) {
        return class;
    }
    // An ISATAP interface id may sit under any prefix; judge the IPv4 address it names
    // but let the prefix decide when that address is public.
    if s[4] & 0xfcff == 0 && s[5] == 0x5efe {
        if let Some(class) = classify_v4(v4_at(&s, 6)) {
            return Some(class);
        }
    }
    let class = match s {
        [0xff00..=0xffff, ..] => Multicast,
        [0xfe80..=0xfebf, ..] => LinkLocal,
        [0xfec0..=0xfeff, ..] => Private,
        [0xfc00..=0xfdff, ..] => Private,
        [0x2001, 0xdb8, ..] => Documentation,
        [0x3fff, 0..=0x0fff, ..] => Documentation,
        [0x2001, 0x2, 0, ..] => Benchmarking,
        [0x2001, 0..=0x01ff, ..] if !is_global_in_2001_23(&s) => Reserved,
        [0x2000..=0x3fff, ..] => return None,
        _ => Reserved,
    };
    Some(class)
}

/// The verdict for IPv6 forms that carry an IPv4 address at a known place: `None` when
/// `s` is no such form, `Some(verdict)` otherwise.
fn classify_embedded(s: &[u16; 8]) -> Option<Option<AddressClass>> {
    use AddressClass::*;
    let verdict = match s {
        // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (SIIT), ::a.b.c.d (compatible).
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] | [0, 0, 0, 0, 0, 0, ..] => {
            classify_v4(v4_at(s, 6))
        }
        // NAT64 well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => classify_v4(v4_at(s, 6)),
        // Local-use NAT64 64:ff9b:1::/48: translated inside some network, so private
        // whatever it embeds.
        [0x64, 0xff9b, 1, ..] => classify_v4(v4_at(s, 6)).or(Some(Private)),
        // 6to4: 2002:AABB:CCDD::/48.
        [0x2002, ..] => classify_v4(v4_at(s, 1)),
        // Teredo 2001:0::/32: server in bits 32-63, client (inverted) in the last 32.
        // A tunnel through a third party is never a destination a rule means, so it is
        // refused even when both embedded addresses are public.
        [0x2001, 0, ..] => {
            let client = Ipv4Addr::from(!u32::from(v4_at(s, 6)));
            classify_v4(client)
                .or_else(|| classify_v4(v4_at(s, 2)))
                .or(Some(Reserved))
        }
        _ => return None,
    };
    Some(verdict)
}

/// The IPv4 address in segments `at` and `at + 1`.
fn v4_at(s: &[u16; 8], at: usize) -> Ipv4Addr {
    let hi = s.get(at).copied().unwrap_or(0);
    let lo = s.get(at + 1).copied().unwrap_or(0);
    Ipv4Addr::from(u32::from(hi) << 16 | u32::from(lo))
}

/// The globally reachable blocks inside the IETF protocol assignments 2001::/23
/// (IANA special-purpose registry): PCP and TURN anycast, AMT, AS112, ORCHIDv2, drone
/// identifiers.
fn is_global_in_2001_23(s: &[u16; 8]) -> bool {
    matches!(
        s,
        [0x2001, 1, 0, 0, 0, 0, 0, 1 | 2]
            | [0x2001, 3, ..]
            | [0x2001, 4, 0x112, ..]
            | [0x2001, 0x20..=0x3f, ..]
    )
}

#[cfg(test)]
mod tests;
