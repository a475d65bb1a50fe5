//! Shards: which shard an aggregate is in, and which live node should own each shard.
//!
//! The shard of an aggregate is a stable hash of its type and id modulo a fixed shard count, so
//! it never changes while the count does not. The preferred owner of a shard is chosen by
//! rendezvous (highest random weight) hashing over the live members: every node computes the
//! same owner from the same member list, and a member joining or leaving moves only the shards
//! it wins or held (about 1/N of them).

use uuid::Uuid;
use xxhash_rust::xxh3::Xxh3;

/// Default number of shards: ten times a 100-node cluster, small enough to list in one query.
pub const DEFAULT_SHARD_COUNT: u32 = 1_024;

/// The shard of aggregate `id` of type `aggregate_type` among `shard_count` shards.
pub fn shard_of(aggregate_type: &str, id: &str, shard_count: u32) -> u32 {
    let mut hasher = Xxh3::new();
    hasher.update(aggregate_type.as_bytes());
    hasher.update(&[0]);
    hasher.update(id.as_bytes());
    let hash = hasher.digest();
    // shard_count is at least 1 wherever a count is accepted; the max keeps this total.
    u32::try_from(hash % u64::from(shard_count.max(1))).unwrap_or(0)
}

/// The rendezvous weight of `node` for `shard`.
fn weight(shard: u32, node: Uuid) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(&shard.to_le_bytes());
    hasher.update(node.as_bytes());
    hasher.digest()
}

/// The member that should own `shard`: the one with the highest weight (ties, which need two
/// equal 64-bit hashes, go to the higher node id). `None` without members.
pub fn preferred_owner(shard: u32, members: &[Uuid]) -> Option<Uuid> {
    members
        .iter()
        .copied()
        .max_by_key(|&node| (weight(shard, node), node))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn shards_are_stable_and_within_the_count() {
        let a = shard_of("account", "alice", DEFAULT_SHARD_COUNT);
        assert_eq!(a, shard_of("account", "alice", DEFAULT_SHARD_COUNT));
        assert!(a < DEFAULT_SHARD_COUNT);
        assert_ne!(
            shard_of("ab", "c", 1 << 20),
            shard_of("a", "bc", 1 << 20),
            "type and id are separated"
        );
        assert_eq!(shard_of("account", "alice", 0), 0);
    }

    #[test]
    fn shards_spread_evenly() {
        let count = 64;
        let mut per_shard = vec![0u32; count as usize];
        for i in 0..64_000 {
            per_shard[shard_of("account", &i.to_string(), count) as usize] += 1;
        }
        let (min, max) = (per_shard.iter().min(), per_shard.iter().max());
        assert!(min >= Some(&800) && max <= Some(&1_200), "{min:?}..{max:?}");
    }

    proptest! {
        #[test]
        fn every_node_computes_the_same_owner_whatever_the_member_order(
            seeds in proptest::collection::vec(any::<u128>(), 1..8),
            shard in 0u32..DEFAULT_SHARD_COUNT,
        ) {
            let members: Vec<Uuid> = seeds.iter().map(|s| Uuid::from_u128(*s)).collect();
            let mut reversed = members.clone();
            reversed.reverse();
            prop_assert_eq!(preferred_owner(shard, &members), preferred_owner(shard, &reversed));
        }

        #[test]
        fn a_joining_node_takes_about_its_share_and_moves_nothing_else(
            seeds in proptest::collection::vec(any::<u128>(), 3..6),
            joiner in any::<u128>(),
        ) {
            let members: Vec<Uuid> = seeds.iter().map(|s| Uuid::from_u128(*s)).collect();
            let joiner = Uuid::from_u128(joiner);
            prop_assume!(!members.contains(&joiner));
            let mut grown = members.clone();
            grown.push(joiner);
            let mut moved = 0;
            for shard in 0..DEFAULT_SHARD_COUNT {
                let before = preferred_owner(shard, &members);
                let after = preferred_owner(shard, &grown);
                if before != after {
                    // Only to the joiner: no shard moves between old members.
                    prop_assert_eq!(after, Some(joiner));
                    moved += 1;
                }
            }
            // Each shard goes to the joiner with probability 1/N: a binomial share whose
            // standard deviation is sqrt(p(1-p)/shards); allow 4.5 of them.
            let share = f64::from(moved) / f64::from(DEFAULT_SHARD_COUNT);
            let expected = 1.0 / grown.len() as f64;
            let sd = (expected * (1.0 - expected) / f64::from(DEFAULT_SHARD_COUNT)).sqrt();
            prop_assert!((share - expected).abs() <= 4.5 * sd,
                "moved {share:.3}, expected about {expected:.3} (sd {sd:.4})");
        }
    }
}
