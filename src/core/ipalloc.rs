//! Address allocation from the configured prefixes. Pure: the "random" strategy draws from
//! entropy passed in with the command, so replay allocates the same addresses.

use super::event::Allocation;
use super::intervals::Runs;
use ipnet::{Ipv4Net, Ipv6Net};
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

/// The IPv4 reserved block holding `addr`, as its last address: `addr` itself for a single
/// reserved address, the end of ChromeOS's range inside it.
fn v4_reserved_until(addr: u128, prefix: &Ipv4Net) -> Option<u128> {
    let chromeos = Ipv4Net::new(CHROMEOS_V4.0, CHROMEOS_V4.1).expect("valid constant prefix");
    let v4 = Ipv4Addr::from(u32::try_from(addr).ok()?);
    if chromeos.contains(&v4) {
        return Some(u128::from(u32::from(chromeos.broadcast())));
    }
    v4_reserved(v4, prefix).then_some(addr)
}

fn v6_reserved_until(addr: u128, prefix: &Ipv6Net) -> Option<u128> {
    v6_reserved(Ipv6Addr::from(addr), prefix).then_some(addr)
}

/// The first candidate, from offset `first` in the prefix (`start`, `size` addresses) and
/// wrapping round, that is neither used nor reserved; at most `limit` candidates are
/// examined. Whole runs of used addresses (and reserved blocks) are stepped over at once, so
/// the cost does not grow with the number of addresses in use.
fn search(
    used: &Runs,
    (start, size): (u128, u128),
    limit: u128,
    first: u128,
    reserved_until: impl Fn(u128) -> Option<u128>,
) -> Option<u128> {
    let mut offset = first % size;
    let mut left = limit;
    while left > 0 {
        let addr = start + offset;
        let Some(end) = used.run_end(addr).or_else(|| reserved_until(addr)) else {
            return Some(addr);
        };
        // Skip `addr ..= end`, but not past the prefix's end (the search wraps there).
        let skip = (end - addr).saturating_add(1).min(size - offset).min(left);
        left -= skip;
        offset = (offset + skip) % size;
    }
    None
}

/// Picks a free IPv4 address in `prefix`: sequentially after the highest one in use (wrapping
/// round), or from a random starting point. `used` holds the addresses in use (as `u32`s).
pub fn allocate_v4(
    prefix: &Ipv4Net,
    used: &Runs,
    allocation: Allocation,
    entropy: u64,
) -> Option<Ipv4Addr> {
    allocate_v4_outside(prefix, used, allocation, entropy, &[])
}

/// As `allocate_v4`, never choosing an address in `excluded` (the policy's `ipPool`s, kept
/// for their targets): "after the highest in use" looks only at addresses outside them.
pub fn allocate_v4_outside(
    prefix: &Ipv4Net,
    used: &Runs,
    allocation: Allocation,
    entropy: u64,
    excluded: &[Ipv4Net],
) -> Option<Ipv4Addr> {
    let start = u128::from(u32::from(prefix.network()));
    let size = 1u128 << (32 - prefix.prefix_len());
    let range = |net: &Ipv4Net| {
        (
            u128::from(u32::from(net.network())),
            u128::from(u32::from(net.broadcast())),
        )
    };
    let excluded_until = |a: u128| {
        excluded
            .iter()
            .map(range)
            .find(|(low, high)| *low <= a && a <= *high)
            .map(|(_, high)| high)
    };
    let first = match allocation {
        Allocation::Sequential => {
            let mut high = start + size - 1;
            let mut highest = used.max_within(start, high);
            // At most one step per excluded range: below the range holding the highest.
            for _ in 0..excluded.len() {
                let Some(h) = highest else { break };
                let Some((low, _)) = excluded.iter().map(range).find(|(l, e)| *l <= h && h <= *e)
                else {
                    break;
                };
                if low <= start {
                    highest = None;
                    break;
                }
                high = low - 1;
                highest = used.max_within(start, high);
            }
            highest.map_or(1, |highest| highest - start + 1)
        }
        Allocation::Random => u128::from(entropy) % size,
    };
    let found = search(used, (start, size), size, first, |a| {
        v4_reserved_until(a, prefix).or_else(|| excluded_until(a))
    })?;
    Some(Ipv4Addr::from(u32::try_from(found).ok()?))
}

/// As `allocate_v4`, for IPv6. Only the low 64 bits are searched (a /64 is plenty), though
/// "the highest in use" looks at the whole prefix.
pub fn allocate_v6(
    prefix: &Ipv6Net,
    used: &Runs,
    allocation: Allocation,
    entropy: u64,
) -> Option<Ipv6Addr> {
    let start = u128::from(prefix.network());
    let host_bits = (128 - prefix.prefix_len()).min(64) as u32;
    let size: u128 = 1u128 << host_bits;
    let first: u128 = match allocation {
        Allocation::Sequential => used
            .max_within(start, u128::from(prefix.broadcast()))
            .map_or(1, |highest| (highest - start).wrapping_add(1)),
        Allocation::Random => u128::from(entropy) % size,
    };
    // Bounded search: a tailnet never has anywhere near this many nodes.
    let limit = size.min(1 << 24);
    search(used, (start, size), limit, first, |a| {
        v6_reserved_until(a, prefix)
    })
    .map(Ipv6Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn runs_v4(used: &HashSet<Ipv4Addr>) -> Runs {
        let mut runs = Runs::default();
        for a in used {
            runs.insert(u128::from(u32::from(*a)));
        }
        runs
    }

    fn runs_v6(used: &HashSet<Ipv6Addr>) -> Runs {
        let mut runs = Runs::default();
        for a in used {
            runs.insert(u128::from(*a));
        }
        runs
    }

    /// The allocator as it was before the index: a scan over every address in use and
    /// every candidate. Replay must allocate exactly what it did.
    mod scan {
        use super::super::{v4_reserved, v6_reserved};
        use crate::core::event::Allocation;
        use ipnet::{Ipv4Net, Ipv6Net};
        use std::collections::HashSet;
        use std::net::{Ipv4Addr, Ipv6Addr};

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
            let limit = size.min(1 << 24);
            (0..limit)
                .map(|i| (first_offset + i) % size)
                .map(|offset| Ipv6Addr::from(start + offset))
                .find(|a| !used.contains(a) && !v6_reserved(*a, prefix))
        }
    }

    fn allocation() -> impl Strategy<Value = Allocation> {
        prop_oneof![Just(Allocation::Sequential), Just(Allocation::Random)]
    }

    /// Prefixes around the reserved addresses (network, broadcast, 100.100.100.100,
    /// ChromeOS's /23) and the usual /10.
    fn v4_prefix() -> impl Strategy<Value = Ipv4Net> {
        prop::sample::select(vec![
            "100.64.0.0/30",
            "100.64.0.0/31",
            "100.64.0.0/32",
            "100.64.0.0/28",
            "100.100.100.96/28",
            "100.115.92.0/22",
            "100.115.90.0/23",
            "100.64.0.0/10",
        ])
        .prop_map(|p| p.parse().unwrap())
    }

    fn v6_prefix() -> impl Strategy<Value = Ipv6Net> {
        prop::sample::select(vec![
            "fd7a:115c:a1e0::/126",
            "fd7a:115c:a1e0::/124",
            "fd7a:115c:a1e0::40/122",
            "fd7a:115c:a1e0::/48",
        ])
        .prop_map(|p| p.parse().unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2000,
            // A failure is reported, not written into the source tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The indexed allocator picks what the scan picked, for used sets clustered at the
        /// start and the end of the prefix, a few addresses past either side included (so
        /// runs, runs across the prefix's ends, wrapping and exhaustion all happen), in both
        /// modes.
        #[test]
        fn v4_matches_the_scan(
            prefix in v4_prefix(),
            low in prop::collection::vec(0u64..44, 0..24),
            high in prop::collection::vec(0u64..44, 0..24),
            allocation in allocation(),
            entropy in any::<u64>(),
        ) {
            let start = u64::from(u32::from(prefix.network()));
            let size = 1u64 << (32 - prefix.prefix_len());
            let end = start + size - 1;
            let window = size.min(40) + 4;
            let used: HashSet<Ipv4Addr> = low
                .iter()
                .map(|o| start - 4 + o % window)
                .chain(high.iter().map(|o| end + 4 - o % window))
                .map(|a| Ipv4Addr::from(a as u32))
                .collect();
            prop_assert_eq!(
                allocate_v4(&prefix, &runs_v4(&used), allocation, entropy),
                scan::allocate_v4(&prefix, &used, allocation, entropy)
            );
        }

        #[test]
        fn v6_matches_the_scan(
            prefix in v6_prefix(),
            low in prop::collection::vec(0u128..40, 0..24),
            high in prop::collection::vec(0u128..40, 0..24),
            beyond in prop::option::of(0u128..1000),
            allocation in allocation(),
            entropy in any::<u64>(),
        ) {
            let start = u128::from(prefix.network());
            let size = 1u128 << (128 - prefix.prefix_len()).min(64);
            let used: HashSet<Ipv6Addr> = low
                .iter()
                .map(|o| start + o % size)
                .chain(high.iter().map(|o| start + size - 1 - o % size))
                // In a /48, beyond the 64 bits searched: still "the highest in use".
                .chain(beyond.map(|o| u128::from(prefix.broadcast()) - o))
                .map(Ipv6Addr::from)
                .collect();
            // A random start in a /48 lands in a sparse region; keep the scan short there.
            let entropy = if size > 1 << 20 { entropy % 64 } else { entropy };
            prop_assert_eq!(
                allocate_v6(&prefix, &runs_v6(&used), allocation, entropy),
                scan::allocate_v6(&prefix, &used, allocation, entropy)
            );
        }
    }

    #[test]
    fn sequential_skips_network_and_reserved() {
        let prefix: Ipv4Net = "100.64.0.0/10".parse().unwrap();
        let mut used = HashSet::new();
        let a = allocate_v4(&prefix, &runs_v4(&used), Allocation::Sequential, 0).unwrap();
        assert_eq!(a, Ipv4Addr::new(100, 64, 0, 1));
        used.insert(a);
        let b = allocate_v4(&prefix, &runs_v4(&used), Allocation::Sequential, 0).unwrap();
        assert_eq!(b, Ipv4Addr::new(100, 64, 0, 2));
        used.insert(Ipv4Addr::new(100, 100, 100, 99));
        let c = allocate_v4(&prefix, &runs_v4(&used), Allocation::Sequential, 0).unwrap();
        assert_eq!(c, Ipv4Addr::new(100, 100, 100, 101));
        used.insert(Ipv4Addr::new(100, 115, 91, 255));
        let d = allocate_v4(&prefix, &runs_v4(&used), Allocation::Sequential, 0).unwrap();
        assert_eq!(d, Ipv4Addr::new(100, 115, 94, 0), "skips ChromeOS's range");
    }

    #[test]
    fn exhaustion_is_none() {
        let prefix: Ipv4Net = "100.64.0.0/30".parse().unwrap();
        let used: HashSet<_> = [Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2)]
            .into_iter()
            .collect();
        assert_eq!(
            allocate_v4(&prefix, &runs_v4(&used), Allocation::Sequential, 0),
            None
        );
    }

    #[test]
    fn v6_sequential_and_random() {
        let prefix: Ipv6Net = "fd7a:115c:a1e0::/48".parse().unwrap();
        let used = Runs::default();
        assert_eq!(
            allocate_v6(&prefix, &used, Allocation::Sequential, 0).unwrap(),
            "fd7a:115c:a1e0::1".parse::<Ipv6Addr>().unwrap()
        );
        let r = allocate_v6(&prefix, &used, Allocation::Random, 12345).unwrap();
        assert!(prefix.contains(&r));
    }
}
