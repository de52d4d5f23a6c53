//! The consistent hash ring that maps each node to one live conductor.
//!
//! The scheme is Ironic's (tooz `HashRing` with md5): every conductor owns 2^5 positions on a
//! 128-bit ring — the running md5 digest of its host name fed once, twice, ... 32 times — and a
//! node belongs to the conductor of the first position strictly after the md5 of its uuid
//! (wrapping around). So a node moves only when the set of conductors changes, and then only
//! to or from the conductor that joined or left. Conductors of one `conductor_group` share a
//! ring; nodes only go to conductors of their own group.

use md5::{Digest, Md5};
use uuid::Uuid;

/// Positions per conductor: 2^`hash_partition_exponent` with Ironic's default exponent, 5.
const PARTITIONS: usize = 1 << 5;

/// A ring over a set of conductor host names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashRing {
    /// (position, index into `hosts`), sorted by position.
    positions: Vec<(u128, usize)>,
    hosts: Vec<String>,
}

fn as_u128(digest: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(bytes)
}

impl HashRing {
    /// The ring of `hosts` (order and duplicates do not matter).
    pub fn new<I, S>(hosts: I) -> HashRing
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut hosts: Vec<String> = hosts.into_iter().map(Into::into).collect();
        hosts.sort();
        hosts.dedup();
        let mut positions = Vec::with_capacity(hosts.len() * PARTITIONS);
        for (i, host) in hosts.iter().enumerate() {
            let mut md5 = Md5::new();
            for _ in 0..PARTITIONS {
                md5.update(host.as_bytes());
                positions.push((as_u128(&md5.clone().finalize()), i));
            }
        }
        positions.sort_unstable();
        HashRing { positions, hosts }
    }

    /// The conductors on the ring, sorted.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The conductor that owns `node`; `None` on an empty ring.
    pub fn owner(&self, node: &Uuid) -> Option<&str> {
        if self.positions.is_empty() {
            return None;
        }
        let key = as_u128(&Md5::digest(node.to_string().as_bytes()));
        let i = self.positions.partition_point(|(p, _)| *p <= key);
        let (_, host) = self.positions[i % self.positions.len()];
        Some(&self.hosts[host])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn uuids(n: usize) -> Vec<Uuid> {
        (0..n)
            .map(|i| Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("node-{i}").as_bytes()))
            .collect()
    }

    #[test]
    fn owners_match_the_documented_md5_scheme() {
        // Vectors from an independent implementation of the scheme in Python (hashlib.md5,
        // cumulative updates of the host name, bisect_right with wrap-around).
        let ring = HashRing::new(["conductor-a", "conductor-b", "conductor-c"]);
        for (node, owner) in [
            ("1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "conductor-b"),
            ("7d9c2f0e-1a2b-4c3d-8e4f-5a6b7c8d9e03", "conductor-c"),
            ("00000000-0000-0000-0000-000000000000", "conductor-c"),
            ("f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9", "conductor-c"),
        ] {
            assert_eq!(ring.owner(&node.parse().unwrap()), Some(owner), "{node}");
        }
        assert_eq!(ring.positions[0].0, 0x503616e6f9b877a78da7a33e6dad8d9);
    }

    #[test]
    fn nodes_spread_over_every_conductor() {
        let ring = HashRing::new(["c1", "c2", "c3"]);
        let mut count: HashMap<&str, usize> = HashMap::new();
        let nodes = uuids(3000);
        for n in &nodes {
            *count.entry(ring.owner(n).unwrap()).or_default() += 1;
        }
        assert_eq!(count.len(), 3, "{count:?}");
        // 32 positions per host: shares vary, but no conductor is starved or swamped.
        for (host, c) in &count {
            assert!((500..=1600).contains(c), "{host} owns {c} of 3000");
        }
    }

    #[test]
    fn only_the_joining_or_leaving_conductors_nodes_move() {
        let nodes = uuids(2000);
        let three = HashRing::new(["c1", "c2", "c3"]);
        let four = HashRing::new(["c1", "c2", "c3", "c4"]);
        let mut moved = 0;
        for n in &nodes {
            let (before, after) = (three.owner(n).unwrap(), four.owner(n).unwrap());
            if before != after {
                assert_eq!(after, "c4", "a node moved between surviving conductors");
                moved += 1;
            }
        }
        assert!(moved > 0 && moved < nodes.len() / 2, "{moved} moved");
        let two = HashRing::new(["c1", "c3"]);
        for n in &nodes {
            let before = three.owner(n).unwrap();
            if before != "c2" {
                assert_eq!(
                    two.owner(n),
                    Some(before),
                    "only c2's nodes move when it leaves"
                );
            }
        }
    }

    #[test]
    fn empty_and_single_rings() {
        let n = Uuid::new_v4();
        assert_eq!(HashRing::new(Vec::<String>::new()).owner(&n), None);
        assert_eq!(HashRing::new(["only"]).owner(&n), Some("only"));
        assert_eq!(HashRing::new(["b", "a", "b"]).hosts(), ["a", "b"]);
    }
}
