//! The hasher behind the RIB's prefix- and address-keyed maps.
//!
//! Std's SipHash costs more than the rest of applying a route (the key is 6 bytes fed in three
//! small writes). This is a keyed multiply-fold hash: one 64x64->128 multiply per write, with a
//! per-map random seed so that which prefixes collide is not predictable from outside.
//! It is not a cryptographic defence against hash flooding; the inputs come from configured
//! peers through import policy, and the worst case is slower lookups, not wrong answers.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

/// An odd 64-bit constant with well-spread bits (2^64 divided by the golden ratio).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// A `HashMap` using [`SeededBuild`].
pub(crate) type FastMap<K, V> = HashMap<K, V, SeededBuild>;

fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Which of `shards` (a power of two) buckets `v` belongs to. Unseeded on purpose: a chosen
/// set of keys can at worst land in one shard, which is then an ordinary single map.
pub(crate) fn shard_of(v: u64, shards: usize) -> usize {
    // The top bits of the folded product depend on every bit of `v`.
    (fold_mul(v, MULTIPLIER) >> (64 - shards.trailing_zeros())) as usize
}

/// Builds [`SeededHasher`]s, all with this map's random seed.
#[derive(Debug, Clone)]
pub(crate) struct SeededBuild {
    seed: u64,
}

impl Default for SeededBuild {
    fn default() -> Self {
        // RandomState is seeded per process and varied per instance: a cheap source of a key.
        SeededBuild {
            seed: RandomState::new().hash_one(0x5EED_u64),
        }
    }
}

impl BuildHasher for SeededBuild {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher { acc: self.seed }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct SeededHasher {
    acc: u64,
}

impl SeededHasher {
    fn mix(&mut self, v: u64) {
        self.acc = fold_mul(self.acc ^ v, MULTIPLIER);
    }
}

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.mix(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.mix(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }

    fn write_u128(&mut self, v: u128) {
        self.mix(v as u64);
        self.mix((v >> 64) as u64);
    }

    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }

    fn finish(&self) -> u64 {
        self.acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    #[test]
    fn neighbouring_host_routes_spread_over_buckets() {
        // hashbrown picks buckets with the low bits and tags with the top 7: both must vary.
        let b = SeededBuild::default();
        let mut low = std::collections::HashSet::new();
        let mut top = std::collections::HashSet::new();
        for i in 0..4096u32 {
            let p = IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(i), 32).unwrap());
            let h = b.hash_one(p);
            low.insert(h & 0xFFF);
            top.insert(h >> 57);
        }
        assert!(low.len() > 2400, "low bits poorly spread: {}", low.len());
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn neighbouring_prefixes_spread_over_shards() {
        let mut count = [0usize; 64];
        for i in 0..64_000u64 {
            count[shard_of((0x0A00_0000 + i) << 8 | 32, 64)] += 1;
        }
        assert!(count.iter().all(|&c| (800..1200).contains(&c)), "{count:?}");
    }
}
