//! Leases as replicated data: which leases exist, the TTL each was granted,
//! and which keys are attached to each.
//!
//! This module must never look at a clock or decide that a lease expired:
//! every replica applies the same grants and revokes in the same order, and
//! the Raft leader alone keeps timers (restarting them when it takes over,
//! as etcd does) and proposes a revoke when one fires. `store` deletes the
//! attached keys of a revoked lease; this table only keeps the books.

use std::collections::{BTreeMap, BTreeSet};

use super::types::{KvError, LeaseStatus, LeaseTimeToLive};

/// etcd's `MaxLeaseTTL`: a longer TTL is refused.
pub const LEASE_TTL_SECONDS_MAX: i64 = 9_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) ttl_seconds: i64,
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

/// Every lease of one group, in id order so listings and snapshots are the
/// same on every replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTable {
    pub(crate) leases: BTreeMap<i64, Lease>,
    /// The id a grant without one tries first; ids are handed out in
    /// increasing order, skipping those granted explicitly.
    pub(crate) next_id: i64,
}

impl Default for LeaseTable {
    fn default() -> Self {
        LeaseTable { leases: BTreeMap::new(), next_id: 1 }
    }
}

impl LeaseTable {
    /// Grants lease `id`, or the next free id when `id` is 0. Returns the id.
    pub fn grant(&mut self, id: i64, ttl_seconds: i64) -> Result<i64, KvError> {
        if !(1..=LEASE_TTL_SECONDS_MAX).contains(&ttl_seconds) {
            return Err(KvError::InvalidArgument(format!(
                "lease TTL of {ttl_seconds} seconds is out of range; give 1 to {LEASE_TTL_SECONDS_MAX} seconds"
            )));
        }
        let id = match id {
            0 => self.free_id()?,
            id if id < 0 => {
                return Err(KvError::InvalidArgument(format!(
                    "lease id {id} is negative; give a positive id, or 0 for a fresh one"
                )))
            }
            id if self.leases.contains_key(&id) => return Err(KvError::LeaseExists(id)),
            id => id,
        };
        self.leases.insert(id, Lease { ttl_seconds, keys: BTreeSet::new() });
        Ok(id)
    }

    fn free_id(&mut self) -> Result<i64, KvError> {
        let mut id = self.next_id;
        while self.leases.contains_key(&id) {
            id = id.checked_add(1).ok_or_else(Self::exhausted)?;
        }
        self.next_id = id.checked_add(1).ok_or_else(Self::exhausted)?;
        Ok(id)
    }

    fn exhausted() -> KvError {
        KvError::InvalidArgument(
            "every automatic lease id is used up; grant leases with explicit ids".to_string(),
        )
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Every lease in id order: what a new leader needs to restart its timers.
    pub fn list(&self) -> Vec<LeaseStatus> {
        self.leases.iter().map(|(&id, lease)| LeaseStatus { id, ttl_seconds: lease.ttl_seconds }).collect()
    }

    /// The TTL lease `id` was granted, without gathering its keys: what a
    /// leader needs to renew it.
    pub fn ttl_seconds(&self, id: i64) -> Option<i64> {
        self.leases.get(&id).map(|lease| lease.ttl_seconds)
    }

    pub fn time_to_live(&self, id: i64) -> Result<LeaseTimeToLive, KvError> {
        let lease = self.leases.get(&id).ok_or(KvError::LeaseNotFound(id))?;
        Ok(LeaseTimeToLive { id, ttl_seconds: lease.ttl_seconds, keys: lease.keys.iter().cloned().collect() })
    }

    /// Attaches `key` to lease `id`; the store has checked that it exists.
    pub(crate) fn attach(&mut self, id: i64, key: &[u8]) {
        if id == 0 {
            return;
        }
        let lease = self.leases.get_mut(&id).expect("the store checks a lease exists before attaching to it");
        lease.keys.insert(key.to_vec());
    }

    /// Detaches `key` from lease `id`, if both are there.
    pub(crate) fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Forgets lease `id` and hands back its attached keys, in key order.
    pub(crate) fn remove(&mut self, id: i64) -> Result<BTreeSet<Vec<u8>>, KvError> {
        self.leases.remove(&id).map(|lease| lease.keys).ok_or(KvError::LeaseNotFound(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_ids_increase_and_skip_explicit_ones() {
        let mut table = LeaseTable::default();
        assert_eq!(table.grant(0, 10), Ok(1));
        assert_eq!(table.grant(2, 10), Ok(2));
        assert_eq!(table.grant(0, 10), Ok(3));
        assert_eq!(table.grant(2, 10), Err(KvError::LeaseExists(2)));
        assert_eq!(table.list().iter().map(|lease| lease.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn bad_ttl_and_negative_id_are_refused_with_the_value() {
        let mut table = LeaseTable::default();
        let error = table.grant(0, 0).unwrap_err().to_string();
        assert!(error.contains("TTL of 0 seconds"), "{error}");
        let error = table.grant(-5, 10).unwrap_err().to_string();
        assert!(error.contains("-5"), "{error}");
        assert!(table.is_empty());
    }

    #[test]
    fn attach_detach_and_time_to_live_list_the_keys_in_order() {
        let mut table = LeaseTable::default();
        let id = table.grant(0, 30).unwrap();
        table.attach(id, b"b");
        table.attach(id, b"a");
        table.attach(id, b"c");
        table.detach(id, b"c");
        let ttl = table.time_to_live(id).unwrap();
        assert_eq!(ttl, LeaseTimeToLive { id, ttl_seconds: 30, keys: vec![b"a".to_vec(), b"b".to_vec()] });
        assert_eq!(table.time_to_live(99), Err(KvError::LeaseNotFound(99)));
        assert_eq!(table.remove(id).unwrap().len(), 2);
        assert_eq!(table.remove(id), Err(KvError::LeaseNotFound(id)));
    }
}
