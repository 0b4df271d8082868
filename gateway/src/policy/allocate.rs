//! Addresses for TCP services (Istio's DNS auto-allocation), derived from the host
//! names alone, so that every replica of a fleet and every restart answers the same
//! address for a host without sharing any state.
//!
//! A host's address is the SHA-256 of its name (and a try count) taken modulo the
//! range's usable addresses. Hosts are placed in name order; one whose address is taken
//! tries again with the next count, so collisions resolve the same way everywhere.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// How many hashed tries a host gets before taking the next free address.
const PROBES: u32 = 16;

/// Every range's allocations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Allocations {
    ranges: Vec<Range>,
    /// Address → host, over every range.
    hosts: HashMap<IpAddr, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    net: IpNet,
    /// Host → address, in name order.
    addresses: BTreeMap<String, IpAddr>,
}

/// A range with fewer usable addresses than hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSmall {
    /// Addresses the range can give.
    pub usable: u128,
    /// Hosts that need one.
    pub needed: usize,
}

/// One allocated address, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation<'a> {
    /// The range it came from.
    pub range: IpNet,
    /// The host.
    pub host: &'a str,
    /// Its address.
    pub address: IpAddr,
}

impl Allocations {
    /// Gives each of `hosts` (sorted, unique) an address in `net`; a range allocated
    /// before is left as it is.
    ///
    /// Fails when the range has fewer usable addresses than hosts.
    pub fn allocate(&mut self, net: IpNet, hosts: &[&str]) -> Result<(), TooSmall> {
        if self.ranges.iter().any(|r| r.net == net) {
            return Ok(());
        }
        let (first, usable) = usable(net);
        if (hosts.len() as u128) > usable {
            return Err(TooSmall {
                usable,
                needed: hosts.len(),
            });
        }
        let mut taken: HashSet<u128> = HashSet::with_capacity(hosts.len());
        let mut addresses = BTreeMap::new();
        for host in hosts {
            let mut offset = digest(host, 0) % usable;
            let mut attempt = 1;
            while !taken.insert(offset) {
                // A nearly full range: after a few new tries, the next free address.
                offset = if attempt < PROBES {
                    digest(host, attempt) % usable
                } else {
                    (offset + 1) % usable
                };
                attempt = attempt.saturating_add(1);
            }
            let address = at(net, first + offset);
            addresses.insert((*host).to_owned(), address);
            self.hosts
                .entry(address)
                .or_insert_with(|| (*host).to_owned());
        }
        self.ranges.push(Range { net, addresses });
        Ok(())
    }

    /// The address `host` has in `net`.
    pub fn address(&self, net: IpNet, host: &str) -> Option<IpAddr> {
        let range = self.ranges.iter().find(|r| r.net == net)?;
        range.addresses.get(host).copied()
    }

    /// The host that was given `address`, in any range.
    pub fn host(&self, address: IpAddr) -> Option<&str> {
        self.hosts.get(&address.to_canonical()).map(String::as_str)
    }

    /// Every allocation, by range and then by host name.
    pub fn iter(&self) -> impl Iterator<Item = Allocation<'_>> {
        self.ranges.iter().flat_map(|r| {
            r.addresses.iter().map(|(host, address)| Allocation {
                range: r.net,
                host,
                address: *address,
            })
        })
    }

    /// Whether no address is allocated.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// The first usable address of `net` (as a number) and how many there are: an IPv4
/// range of 4 or more leaves out its network and broadcast addresses, an IPv6 range of
/// 2 or more its network (subnet-router anycast) address.
fn usable(net: IpNet) -> (u128, u128) {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    let size = 1u128.checked_shl(bits).unwrap_or(u128::MAX);
    let network = number(net.network());
    match net {
        IpNet::V4(_) if bits >= 2 => (network + 1, size - 2),
        IpNet::V6(_) if bits >= 1 => (network + 1, size - 1),
        _ => (network, size),
    }
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn at(net: IpNet, n: u128) -> IpAddr {
    match net {
        // Within an IPv4 range the number fits in 32 bits.
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// A stable hash of `host` for try `attempt`: the same on every machine and version.
fn digest(host: &str, attempt: u32) -> u128 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(host.as_bytes());
    ctx.update(&attempt.to_be_bytes());
    let sum = ctx.finish();
    let mut first = [0u8; 16];
    first.copy_from_slice(&sum.as_ref()[..16]);
    u128::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn the_same_hosts_get_the_same_addresses_whatever_else_is_allocated() {
        let mut a = Allocations::default();
        a.allocate(
            net("240.240.0.0/16"),
            &["db1.example.com", "db2.example.com"],
        )
        .unwrap();
        let mut b = Allocations::default();
        b.allocate(
            net("240.240.0.0/16"),
            &["db1.example.com", "db2.example.com"],
        )
        .unwrap();
        assert_eq!(a, b);
        let one = a.address(net("240.240.0.0/16"), "db1.example.com").unwrap();
        let two = a.address(net("240.240.0.0/16"), "db2.example.com").unwrap();
        assert_ne!(one, two);
        assert!(net("240.240.0.0/16").contains(&one));
        assert_eq!(a.host(one), Some("db1.example.com"));
        assert_eq!(a.host(two), Some("db2.example.com"));
        // A host added later does not move the others (unless it collides first).
        let mut c = Allocations::default();
        c.allocate(
            net("240.240.0.0/16"),
            &["db1.example.com", "db2.example.com", "db3.example.com"],
        )
        .unwrap();
        assert_eq!(
            c.address(net("240.240.0.0/16"), "db1.example.com"),
            Some(one)
        );
    }

    #[test]
    fn a_full_range_gives_every_usable_address_once_and_never_network_or_broadcast() {
        let hosts: Vec<String> = (0..14).map(|i| format!("h{i}.example.com")).collect();
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let mut a = Allocations::default();
        a.allocate(net("10.1.2.0/28"), &hosts).unwrap();
        let mut seen: Vec<IpAddr> = a.iter().map(|x| x.address).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 14);
        assert!(!seen.contains(&"10.1.2.0".parse().unwrap()));
        assert!(!seen.contains(&"10.1.2.15".parse().unwrap()));
        let mut more = hosts.clone();
        more.push("h99.example.com");
        more.sort_unstable();
        let err = Allocations::default()
            .allocate(net("10.1.2.0/28"), &more)
            .unwrap_err();
        assert_eq!(
            err,
            TooSmall {
                usable: 14,
                needed: 15
            }
        );
    }

    #[test]
    fn ipv6_ranges_allocate_too() {
        let mut a = Allocations::default();
        a.allocate(net("fd00:ec::/64"), &["db.example.com"])
            .unwrap();
        let ip = a.address(net("fd00:ec::/64"), "db.example.com").unwrap();
        assert!(ip.is_ipv6() && net("fd00:ec::/64").contains(&ip));
        assert_ne!(ip, "fd00:ec::".parse::<IpAddr>().unwrap());
    }
}
