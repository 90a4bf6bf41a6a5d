//! Address allocation from the configured prefixes. Pure: the "random" strategy draws from
//! entropy passed in with the command, so replay allocates the same addresses.

use super::event::Allocation;
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Addresses Tailscale clients treat specially and that must never be handed out.
const RESERVED_V4: [Ipv4Addr; 1] = [Ipv4Addr::new(100, 100, 100, 100)];
/// ChromeOS's VM range inside CGNAT space.
const CHROMEOS_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(100, 115, 92, 0), 23);
const RESERVED_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x53)];

fn v4_reserved(addr: Ipv4Addr, prefix: &Ipv4Net) -> bool {
    let chromeos = Ipv4Net::new(CHROMEOS_V4.0, CHROMEOS_V4.1).expect("valid constant prefix");
    RESERVED_V4.contains(&addr)
        || chromeos.contains(&addr)
        || addr == prefix.network()
        || (prefix.prefix_len() < 31 && addr == prefix.broadcast())
}

fn v6_reserved(addr: Ipv6Addr, prefix: &Ipv6Net) -> bool {
    RESERVED_V6.contains(&addr) || addr == prefix.network()
}

/// Picks a free IPv4 address in `prefix`: sequentially after the highest one in use (wrapping
/// round), or from a random starting point.
pub fn allocate_v4(
    prefix: &Ipv4Net,
    used: &HashSet<Ipv4Addr>,
    allocation: Allocation,
    entropy: u64,
) -> Option<Ipv4Addr> {
    let start = u32::from(prefix.network()) as u64;
    let size = 1u64 << (32 - prefix.prefix_len());
    let first_offset = match allocation {
        Allocation::Sequential => used
            .iter()
            .filter(|a| prefix.contains(*a))
            .map(|a| u32::from(*a) as u64 - start + 1)
            .max()
            .unwrap_or(1),
        Allocation::Random => entropy % size,
    };
    (0..size)
        .map(|i| (first_offset + i) % size)
        .map(|offset| Ipv4Addr::from((start + offset) as u32))
        .find(|a| !used.contains(a) && !v4_reserved(*a, prefix))
}

/// As `allocate_v4`, for IPv6. Only the low 64 bits are searched (a /64 is plenty).
pub fn allocate_v6(
    prefix: &Ipv6Net,
    used: &HashSet<Ipv6Addr>,
    allocation: Allocation,
    entropy: u64,
) -> Option<Ipv6Addr> {
    let start = u128::from(prefix.network());
    let host_bits = (128 - prefix.prefix_len()).min(64) as u32;
    let size: u128 = 1u128 << host_bits;
    let first_offset: u128 = match allocation {
        Allocation::Sequential => used
            .iter()
            .filter(|a| prefix.contains(*a))
            .map(|a| u128::from(*a) - start + 1)
            .max()
            .unwrap_or(1),
        Allocation::Random => (entropy as u128) % size,
    };
    // Bounded search: a tailnet never has anywhere near this many nodes.
    let limit = size.min(1 << 24);
    (0..limit)
        .map(|i| (first_offset + i) % size)
        .map(|offset| Ipv6Addr::from(start + offset))
        .find(|a| !used.contains(a) && !v6_reserved(*a, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_skips_network_and_reserved() {
        let prefix: Ipv4Net = "100.64.0.0/10".parse().unwrap();
        let mut used = HashSet::new();
        let a = allocate_v4(&prefix, &used, Allocation::Sequential, 0).unwrap();
        assert_eq!(a, Ipv4Addr::new(100, 64, 0, 1));
        used.insert(a);
        let b = allocate_v4(&prefix, &used, Allocation::Sequential, 0).unwrap();
        assert_eq!(b, Ipv4Addr::new(100, 64, 0, 2));
        used.insert(Ipv4Addr::new(100, 100, 100, 99));
        let c = allocate_v4(&prefix, &used, Allocation::Sequential, 0).unwrap();
        assert_eq!(c, Ipv4Addr::new(100, 100, 100, 101));
    }

    #[test]
    fn exhaustion_is_none() {
        let prefix: Ipv4Net = "100.64.0.0/30".parse().unwrap();
        let used: HashSet<_> = [Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2)]
            .into_iter()
            .collect();
        assert_eq!(allocate_v4(&prefix, &used, Allocation::Sequential, 0), None);
    }

    #[test]
    fn v6_sequential_and_random() {
        let prefix: Ipv6Net = "fd7a:115c:a1e0::/48".parse().unwrap();
        let used = HashSet::new();
        assert_eq!(
            allocate_v6(&prefix, &used, Allocation::Sequential, 0).unwrap(),
            "fd7a:115c:a1e0::1".parse::<Ipv6Addr>().unwrap()
        );
        let r = allocate_v6(&prefix, &used, Allocation::Random, 12345).unwrap();
        assert!(prefix.contains(&r));
    }
}
