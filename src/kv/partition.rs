//! The key-to-group function, and which groups a range needs.
//!
//! A key's group is decided by its partition prefix alone:
//!
//! - A key starting with `/` (etcd's and Kubernetes' convention) has as
//!   prefix its first `depth` path segments with the slashes around them:
//!   with depth 2, `/registry/pods/default/web-0` has prefix
//!   `/registry/pods/`, so every pod lands in one group, while
//!   `/registry/services/...` may land in another. A key with fewer
//!   segments (`/registry/pods`, `/health`) is its own prefix, whole.
//! - Any other key has as prefix its bytes up to and including its first
//!   `/` (`tenant-a/config` → `tenant-a/`), or the whole key if it has no
//!   `/`. `depth` does not apply to such keys.
//! - A whole-key prefix (one that lacks its closing `/`) is placed as if
//!   it had it: `/registry/pods` lives with `/registry/pods/...`,
//!   `tenant-a` with `tenant-a/...`. Kubernetes reads the bare resource key
//!   (`/registry/pods`) for the revision of the resource's prefix, so the
//!   two must share a group.
//!
//! The group is CRC32C (Castagnoli) of the prefix, modulo the group count.
//! CRC32C is a fixed function, so placement is the same on every node and
//! every version of nvkv; changing `depth` or the group count moves keys,
//! which needs a data migration this layer does not do.
//!
//! This module decides placement only; it must never look at a store or
//! route a request.

/// Which groups hold the keys of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSet {
    /// Every key the range can select lives in this group.
    One(u32),
    /// The range crosses partition prefixes: ask every group and merge (the
    /// merged answer is not one snapshot: each group reads at its own revision).
    All,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("group count 0: a store needs at least one group; set groups_per_shard to 1 or more")]
    NoGroups,
    #[error("partition depth 0 would put every key under one prefix `/`; give a depth of 1 or more")]
    ZeroDepth,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partitioner {
    groups: u32,
    depth: usize,
}

impl Partitioner {
    pub fn new(groups: u32, depth: usize) -> Result<Partitioner, PartitionError> {
        if groups == 0 {
            return Err(PartitionError::NoGroups);
        }
        if depth == 0 {
            return Err(PartitionError::ZeroDepth);
        }
        Ok(Partitioner { groups, depth })
    }

    pub fn groups(&self) -> u32 {
        self.groups
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The partition prefix of `key`, and whether it is complete: ends with
    /// the `/` that closes its last counted segment, so that every key
    /// starting with it has the same prefix.
    pub fn prefix<'a>(&self, key: &'a [u8]) -> (&'a [u8], bool) {
        let slashes_wanted = if key.first() == Some(&b'/') { self.depth + 1 } else { 1 };
        let closing = key.iter().enumerate().filter(|(_, &byte)| byte == b'/').nth(slashes_wanted - 1);
        match closing {
            Some((index, _)) => (&key[..=index], true),
            None => (key, false),
        }
    }

    fn group_of_prefix(&self, prefix: &[u8]) -> u32 {
        crc32c::crc32c(prefix) % self.groups
    }

    pub fn group_of(&self, key: &[u8]) -> u32 {
        match self.prefix(key) {
            (prefix, true) => self.group_of_prefix(prefix),
            // As if the closing `/` were there, without copying the key.
            (prefix, false) => crc32c::crc32c_append(crc32c::crc32c(prefix), b"/") % self.groups,
        }
    }

    /// The groups a range in etcd's convention (`types::range_contains`) may
    /// touch: one group when every key it can select shares one partition
    /// prefix, every group otherwise.
    pub fn groups_for_range(&self, key: &[u8], range_end: &[u8]) -> GroupSet {
        if self.groups == 1 {
            return GroupSet::One(0);
        }
        // `[0]` means every key from `key` on, even when `key` is empty and
        // `[0]` also reads as "the empty key followed by a zero byte".
        if range_end == [0] {
            return GroupSet::All;
        }
        let single_key =
            range_end.len() == key.len() + 1 && range_end.starts_with(key) && range_end.ends_with(&[0]);
        if range_end.is_empty() || single_key {
            return GroupSet::One(self.group_of(key));
        }
        if range_end <= key {
            // Selects nothing; any group answers that.
            return GroupSet::One(self.group_of(key));
        }
        let (prefix, complete) = self.prefix(key);
        // A complete prefix ends in `/`; every key in [prefix, prefix with
        // that `/` raised to `0`) starts with it, hence shares it.
        if complete && range_end <= super::types::prefix_range_end(prefix).as_slice() {
            return GroupSet::One(self.group_of_prefix(prefix));
        }
        GroupSet::All
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kv::types::{prefix_range_end, range_contains};

    fn kubernetes() -> Partitioner {
        Partitioner::new(16, 2).unwrap()
    }

    #[test]
    fn every_pod_lives_in_the_group_of_the_pods_prefix() {
        let partitioner = kubernetes();
        let group = partitioner.group_of(b"/registry/pods/");
        for namespace in ["default", "kube-system", "a"] {
            for name in ["web-0", "web-1", "x/y/z", ""] {
                let key = format!("/registry/pods/{namespace}/{name}");
                assert_eq!(partitioner.group_of(key.as_bytes()), group, "{key}");
            }
        }
        assert_eq!(partitioner.prefix(b"/registry/pods/default/web-0"), (&b"/registry/pods/"[..], true));
        assert_eq!(partitioner.prefix(b"/registry/pods"), (&b"/registry/pods"[..], false));
    }

    #[test]
    fn keys_without_a_leading_slash_group_by_their_first_segment() {
        let partitioner = kubernetes();
        assert_eq!(partitioner.prefix(b"tenant-a/config/x"), (&b"tenant-a/"[..], true));
        assert_eq!(partitioner.prefix(b"plain"), (&b"plain"[..], false));
        assert_eq!(partitioner.group_of(b"tenant-a/1"), partitioner.group_of(b"tenant-a/2/3"));
    }

    #[test]
    fn placement_is_pinned_across_versions() {
        // Changing these values moves every stored key: it needs a migration.
        let partitioner = kubernetes();
        let pinned: Vec<u32> =
            ["/registry/pods/", "/registry/services/", "/registry/leases/", "tenant/", "plain"]
                .iter()
                .map(|key| partitioner.group_of(key.as_bytes()))
                .collect();
        assert_eq!(pinned, PINNED_GROUPS);
    }

    const PINNED_GROUPS: [u32; 5] = [7, 2, 11, 15, 14];

    #[test]
    fn a_bare_resource_key_lives_with_its_resource() {
        let partitioner = kubernetes();
        let pods = partitioner.group_of(b"/registry/pods/default/web-0");
        assert_eq!(partitioner.group_of(b"/registry/pods"), pods);
        let widgets = partitioner.group_of(b"/registry/example.com/widgets/ns/w");
        assert_eq!(partitioner.group_of(b"/registry/example.com/widgets"), widgets, "a CRD's bare key");
        assert_eq!(partitioner.group_of(b"tenant-a"), partitioner.group_of(b"tenant-a/x"));
    }

    #[test]
    fn a_prefix_range_inside_one_prefix_needs_one_group_and_wider_ranges_all() {
        let partitioner = kubernetes();
        let pods = GroupSet::One(partitioner.group_of(b"/registry/pods/x"));
        let range = |prefix: &[u8]| partitioner.groups_for_range(prefix, &prefix_range_end(prefix));
        assert_eq!(range(b"/registry/pods/"), pods);
        assert_eq!(range(b"/registry/pods/default/"), pods);
        assert_eq!(partitioner.groups_for_range(b"/registry/pods/a", b"/registry/pods/b"), pods);
        assert_eq!(range(b"/registry/"), GroupSet::All);
        assert_eq!(range(b"/registry/pods"), GroupSet::All, "also selects /registry/podsecuritypolicies/");
        assert_eq!(partitioner.groups_for_range(b"/registry/pods/", &[0]), GroupSet::All);
        assert_eq!(
            partitioner.groups_for_range(b"", &[0]),
            GroupSet::All,
            "all keys, not the key \"\" alone"
        );
        assert_eq!(partitioner.groups_for_range(b"/registry/pods/a", b""), pods);
        assert_eq!(
            partitioner.groups_for_range(b"/health", b"/health\0"),
            GroupSet::One(partitioner.group_of(b"/health"))
        );
        assert_eq!(Partitioner::new(1, 2).unwrap().groups_for_range(b"", &[0]), GroupSet::One(0));
    }

    #[test]
    fn many_prefixes_spread_evenly_over_the_groups() {
        for groups in [3u32, 8, 16] {
            let partitioner = Partitioner::new(groups, 2).unwrap();
            let mut per_group = vec![0u32; groups as usize];
            let prefixes = 4000;
            for resource in 0..prefixes {
                per_group
                    [partitioner.group_of(format!("/registry/resource{resource}/x").as_bytes()) as usize] +=
                    1;
            }
            let mean = prefixes / groups;
            for (group, &count) in per_group.iter().enumerate() {
                assert!(
                    count * 10 >= mean * 8 && count * 10 <= mean * 12,
                    "{groups} groups: group {group} holds {count} prefixes, mean {mean}"
                );
            }
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(Partitioner::new(0, 2), Err(PartitionError::NoGroups));
        assert_eq!(Partitioner::new(4, 0), Err(PartitionError::ZeroDepth));
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop::sample::select(vec![b'/', b'a', b'b', b'0', 0u8, 0xff]), 0..7)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// The promise routing relies on: a range said to need one group
        /// selects no key of another.
        #[test]
        fn a_single_group_range_holds_only_keys_of_that_group(
            start in key(), random_end in key(), as_prefix in any::<bool>(), suffix in key(), depth in 1usize..3,
        ) {
            let partitioner = Partitioner::new(7, depth).unwrap();
            let range_end = if as_prefix { prefix_range_end(&start) } else { random_end };
            let candidate = [start.as_slice(), suffix.as_slice()].concat();
            if let GroupSet::One(group) = partitioner.groups_for_range(&start, &range_end) {
                if range_contains(&start, &range_end, &candidate) {
                    prop_assert_eq!(partitioner.group_of(&candidate), group);
                }
            }
        }
    }
}
