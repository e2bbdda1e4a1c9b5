//! DIR-16-8-8 longest-prefix match: a three-level multibit trie with strides
//! 16/8/8 and controlled prefix expansion. A lookup is at most three dependent
//! array loads and no branches on prefix length.

use ipnet::Ipv4Net;

/// Entry encoding in the trie arrays: 0 = no route; high bit = index of a
/// child chunk; otherwise next-hop value + 1.
const CHILD: u32 = 1 << 31;

/// DIR-16-8-8 longest-prefix-match trie over IPv4 addresses.
#[derive(Debug, Clone)]
pub struct Lpm {
    /// 65536 entries indexed by the top 16 bits (an array, so indexing by
    /// 16 bits needs no bounds check).
    l16: Box<[u32; 1 << 16]>,
    /// 256-entry chunks indexed by bits 15..8.
    l24: Vec<[u32; 256]>,
    /// 256-entry chunks indexed by bits 7..0.
    l32: Vec<[u32; 256]>,
}

impl Lpm {
    /// Builds a trie. Values must be below 2^31 - 1. When the same prefix
    /// appears twice the later one wins.
    pub fn build(prefixes: impl IntoIterator<Item = (Ipv4Net, u32)>) -> Lpm {
        let mut v: Vec<(Ipv4Net, u32)> =
            prefixes.into_iter().map(|(n, x)| (n.trunc(), x)).collect();
        // Shorter prefixes first: a longer one is then written over the
        // expansion of every shorter one that covers it.
        v.sort_by_key(|(n, _)| n.prefix_len());
        let mut lpm = Lpm {
            l16: vec![0u32; 1 << 16]
                .into_boxed_slice()
                .try_into()
                .expect("65536 entries"),
            l24: Vec::new(),
            l32: Vec::new(),
        };
        for (net, value) in v {
            assert!(value < CHILD - 1, "next-hop value out of range");
            let leaf = value + 1;
            let addr = u32::from(net.network());
            let len = net.prefix_len();
            if len <= 16 {
                let start = (addr >> 16) as usize;
                let count = 1usize << (16 - len);
                lpm.l16[start..start + count].fill(leaf);
                continue;
            }
            let c24 = lpm.child24(addr);
            if len <= 24 {
                let start = ((addr >> 8) & 0xff) as usize;
                let count = 1usize << (24 - len);
                lpm.l24[c24][start..start + count].fill(leaf);
                continue;
            }
            let c32 = lpm.child32(c24, addr);
            let start = (addr & 0xff) as usize;
            let count = 1usize << (32 - len);
            lpm.l32[c32][start..start + count].fill(leaf);
        }
        lpm
    }

    /// The level-24 chunk under `addr`'s /16, created (inheriting the /16's
    /// leaf) if needed.
    fn child24(&mut self, addr: u32) -> usize {
        let slot = &mut self.l16[(addr >> 16) as usize];
        if *slot & CHILD != 0 {
            return (*slot & !CHILD) as usize;
        }
        let idx = self.l24.len();
        self.l24.push([*slot; 256]);
        *slot = CHILD | idx as u32;
        idx
    }

    fn child32(&mut self, c24: usize, addr: u32) -> usize {
        let slot = &mut self.l24[c24][((addr >> 8) & 0xff) as usize];
        if *slot & CHILD != 0 {
            return (*slot & !CHILD) as usize;
        }
        let idx = self.l32.len();
        self.l32.push([*slot; 256]);
        *slot = CHILD | idx as u32;
        idx
    }

    /// Longest-prefix match.
    #[inline(always)]
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        self.leaf(addr).checked_sub(1)
    }

    /// Whether the longest match for `addr` is `value` (cheaper than
    /// comparing [`Lpm::lookup`]'s answer: one compare of the leaf).
    #[inline(always)]
    pub fn matches(&self, addr: u32, value: u32) -> bool {
        // No stored value reaches CHILD - 1 (see `build`), so no route (0)
        // never matches.
        value < CHILD - 1 && self.leaf(addr) == value + 1
    }

    /// The leaf for `addr`: 0 for no route, else the next-hop value + 1.
    #[inline(always)]
    fn leaf(&self, addr: u32) -> u32 {
        let mut e = self.l16[(addr >> 16) as usize];
        if e & CHILD != 0 {
            e = self.l24[(e & !CHILD) as usize][((addr >> 8) & 0xff) as usize];
            if e & CHILD != 0 {
                e = self.l32[(e & !CHILD) as usize][(addr & 0xff) as usize];
            }
        }
        e
    }

    /// Bytes of memory the trie uses.
    pub fn memory_bytes(&self) -> usize {
        self.l16.len() * 4 + (self.l24.len() + self.l32.len()) * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// Reference LPM: linear scan, longest match, later wins on ties.
    fn naive(prefixes: &[(Ipv4Net, u32)], addr: u32) -> Option<u32> {
        let a = Ipv4Addr::from(addr);
        let mut best: Option<(u8, u32)> = None;
        for (n, v) in prefixes {
            if n.contains(&a) && best.is_none_or(|(l, _)| n.prefix_len() >= l) {
                best = Some((n.prefix_len(), *v));
            }
        }
        best.map(|(_, v)| v)
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn lpm_basic() {
        let p = [
            (net("10.0.0.0/8"), 1),
            (net("10.244.0.0/16"), 2),
            (net("10.244.1.0/24"), 3),
            (net("10.244.1.64/26"), 4),
            (net("10.244.1.70/32"), 5),
            (net("0.0.0.0/0"), 6),
        ];
        let lpm = Lpm::build(p);
        let l = |s: &str| lpm.lookup(u32::from(s.parse::<Ipv4Addr>().unwrap()));
        assert_eq!(l("10.1.1.1"), Some(1));
        assert_eq!(l("10.244.2.1"), Some(2));
        assert_eq!(l("10.244.1.1"), Some(3));
        assert_eq!(l("10.244.1.65"), Some(4));
        assert_eq!(l("10.244.1.70"), Some(5));
        assert_eq!(l("10.244.1.71"), Some(4));
        assert_eq!(l("192.168.1.1"), Some(6));
        assert_eq!(
            Lpm::build([(net("10.244.1.0/24"), 0)]).lookup(0x0af40200),
            None
        );
    }

    #[test]
    fn lpm_matches_naive_on_random_sets() {
        let mut rng = XorShift(0x9e3779b97f4a7c15);
        for round in 0..20 {
            let n = 1 + (rng.next() % 300) as usize;
            let prefixes: Vec<(Ipv4Net, u32)> = (0..n)
                .map(|i| {
                    // Cluster addresses so prefixes nest and overlap.
                    let addr = 0x0af4_0000 | (rng.next() as u32 & 0x0003_ffff);
                    let len =
                        [8, 12, 16, 18, 20, 24, 26, 28, 30, 31, 32][(rng.next() % 11) as usize];
                    (
                        Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc(),
                        i as u32,
                    )
                })
                .collect();
            // Ties on identical prefixes: keep the last (as Lpm::build does).
            let lpm = Lpm::build(prefixes.iter().copied());
            for _ in 0..2000 {
                let addr = 0x0af4_0000 | (rng.next() as u32 & 0x0003_ffff);
                assert_eq!(
                    lpm.lookup(addr),
                    naive(&prefixes, addr),
                    "round {round} addr {}",
                    Ipv4Addr::from(addr)
                );
            }
        }
    }
}
