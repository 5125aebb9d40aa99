//! When a group runs out of room: the NOSPACE alarm of one group on this
//! member, and the writes it refuses while the alarm is raised.
//!
//! A group's log can only shrink by a snapshot followed by a purge, and a
//! snapshot needs room in its shard's snapshot area. When the group's store
//! does not fit there even with all its history compacted, its log can only
//! grow; before it fills the shard's ring (which every group of the shard
//! shares), the group raises the alarm and its leader refuses writes that add
//! data (`kv::command::adds_data`) with a typed error that says what to do.
//! Deletes, compaction and lease revocations still go through, and once the
//! store fits again the next snapshot clears the alarm. The snapshot task
//! (`snapshots`) raises and clears it; this module never decides when.
//!
//! The alarms of one group are its [`Alarms`]; this module never looks up a
//! group or a shard.
//!
//! The alarm is this member's view, checked where writes are proposed (on
//! the leader); it is never replicated, so a new leader judges its own
//! store within one snapshot tick.
//!
//! A group whose store (as its snapshot encodes it) grows past
//! `store.quota_bytes` raises the same alarm for that reason
//! (`super::quota` measures every group of the shard each second), refusing
//! the same writes, and clears it once deletes and compaction bring the store
//! back under the quota.
//!
//! Client writes also wait here while the shard's ring is three quarters
//! full ([`RingAdmission`], one per shard): a group that must compact
//! before it can snapshot (a Raft write of its own) needs ring space for
//! that entry, and writes that kept coming would take it. The writes
//! admitted and not yet ended count as ring space already (a write reaches
//! the ring only once its batch entry is logged, so the ring's use alone
//! would let every write that arrives together in), so writes never carry
//! the ring past the line by more than one of them. Writes that add no
//! data wait only past nine tenths, so that deletes can still shrink a
//! store out of space; past that, the deletes of a group whose alarm is
//! raised still go one at a time (a new leader may find its ring that full
//! already, filled while it followed, and only deletes clear the alarm).
//! The snapshot task's own proposals do not wait, nor do the revokes of
//! expired leases (`super::lease_requests`): both are bounded, and a
//! revoke only deletes.
//!
//! This module must never let a write that adds data into the band above
//! three quarters beyond the one write that crosses the line: that band is
//! what deletes, compaction and snapshots are left when a store is out of
//! space.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use crate::kv::command::adds_data;
use crate::raft::{GroupError, GroupId, NodeId};
use crate::wal::SharedLog;

/// A raised alarm: what did not fit where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSpace {
    /// The group's snapshot with all history compacted, in bytes.
    pub snapshot_bytes: u64,
    /// The room its shard's snapshot area had for it.
    pub room_bytes: u64,
    pub since: Instant,
}

/// A raised quota alarm: the group's store passed `store.quota_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverQuota {
    /// The group's store as its snapshot encodes it, in bytes.
    pub store_bytes: u64,
    pub quota_bytes: u64,
    pub since: Instant,
}

/// The NOSPACE alarms of one group on this member: for room (raised and
/// cleared by the snapshot task) and for its quota (by the quota task).
#[derive(Debug)]
pub struct Alarms {
    group: GroupId,
    member: NodeId,
    no_space: Cell<Option<NoSpace>>,
    over_quota: Cell<Option<OverQuota>>,
}

impl Alarms {
    /// The alarms of `group` on `member`, none raised.
    pub fn new(group: GroupId, member: NodeId) -> Alarms {
        Alarms { group, member, no_space: Cell::new(None), over_quota: Cell::new(None) }
    }

    /// Whether the group refuses writes that add data here (NOSPACE).
    pub fn raised(&self) -> bool {
        self.no_space.get().is_some() || self.over_quota.get().is_some()
    }

    /// Refuses `command` when the group is out of space or over its quota
    /// and the command could make its store larger.
    pub fn check_room(&self, command: &[u8]) -> Result<(), GroupError> {
        if !self.raised() || !adds_data(command) {
            return Ok(());
        }
        let (group, member) = (self.group, self.member);
        match (self.no_space.get(), self.over_quota.get()) {
            (Some(alarm), _) => Err(GroupError::NoSpace {
                group,
                member,
                snapshot_bytes: alarm.snapshot_bytes,
                room_bytes: alarm.room_bytes,
            }),
            (None, Some(alarm)) => Err(GroupError::OverQuota {
                group,
                member,
                store_bytes: alarm.store_bytes,
                quota_bytes: alarm.quota_bytes,
            }),
            (None, None) => Ok(()),
        }
    }

    /// Raises or clears the quota alarm for a store of `store_bytes`.
    pub fn judge_quota(&self, store_bytes: u64, quota_bytes: u64) {
        let group = self.group;
        match self.over_quota.get() {
            None if store_bytes > quota_bytes => {
                tracing::error!(
                    group,
                    store_bytes,
                    quota_bytes,
                    "group {group} is over its quota (alarm NOSPACE): its store takes {store_bytes} bytes and \
                     store.quota_bytes is {quota_bytes}; writes that add data are refused until keys are deleted \
                     and compacted (both still work), or store.quota_bytes is raised"
                );
                self.over_quota.set(Some(OverQuota { store_bytes, quota_bytes, since: Instant::now() }));
            }
            Some(raised) if store_bytes > quota_bytes => {
                self.over_quota.set(Some(OverQuota { store_bytes, ..raised }));
            }
            Some(raised) => {
                tracing::warn!(
                    group,
                    "group {group} is under its quota again after {:.1} s ({store_bytes} of {quota_bytes} bytes): \
                     the NOSPACE alarm is cleared and writes are taken",
                    raised.since.elapsed().as_secs_f64()
                );
                self.over_quota.set(None);
            }
            None => {}
        }
    }

    /// Raises the alarm for room (saying so once, as an operator must act),
    /// or updates the sizes of one raised already.
    pub fn raise(&self, snapshot_bytes: u64, room_bytes: u64) {
        let since = match self.no_space.get() {
            Some(raised) => raised.since,
            None => {
                let group = self.group;
                tracing::error!(
                    group,
                    snapshot_bytes,
                    room_bytes,
                    "group {group} is out of space (alarm NOSPACE): its store takes {snapshot_bytes} bytes as a \
                     snapshot with all history compacted and its shard's snapshot area has {room_bytes} free, so its \
                     log cannot be purged; writes that add data are refused until keys are deleted (deletes and \
                     compaction still work), or give the node a larger namespace_bytes"
                );
                Instant::now()
            }
        };
        self.no_space.set(Some(NoSpace { snapshot_bytes, room_bytes, since }));
    }

    /// Clears the alarm for room, if raised: the group's snapshot fitted.
    pub fn clear(&self) {
        if let Some(raised) = self.no_space.take() {
            let group = self.group;
            tracing::warn!(
                group,
                "group {group} has space again after {:.1} s: the NOSPACE alarm is cleared and writes are taken",
                raised.since.elapsed().as_secs_f64()
            );
        }
    }
}

/// The share of the ring, in percent, that client writes that add data may
/// fill (with the writes admitted before them and not yet ended counted
/// in): past it they wait.
const RING_ADMIT_PERCENT: u64 = 75;
/// The share that client writes that add none (deletes, lease revokes,
/// compaction: `kv::command::adds_data`) may fill. Between the two they go
/// on: a group out of snapshot space holds the ring above three quarters
/// for good, and the deletes an operator sends to shrink its store (what
/// the NOSPACE error tells them to do) must reach it, or the alarm could
/// never clear. Above this the last tenth stays the snapshot task's, but
/// for one shrinking write at a time of a group whose alarm is raised
/// ([`RingAdmission::try_admit`]).
const RING_ADMIT_SHRINKING_PERCENT: u64 = 90;
/// What one admitted write is counted beyond its command: the share of
/// the batch entry's framing it may cause.
const ADMITTED_OVERHEAD_BYTES: u64 = 64;
/// How often a waiting write looks at the ring again.
const RING_ADMIT_POLL: Duration = Duration::from_millis(2);

/// The ring admission of one shard: the bytes of the client writes it
/// admitted whose proposals have not ended yet, so that writes admitted
/// together cannot carry the ring past the line by more than the last of
/// them (use is read when a write arrives, and a write reaches the ring
/// only once its batch entry is logged). A write's bytes count from its
/// admission until its proposal ends ([`Admitted`]): past the moment its
/// entry is logged, where they are counted twice for a round trip, which
/// errs towards waiting; a proposal that timed out may still reach the log
/// after it was released (bounded by the writes of one request timeout).
#[derive(Debug, Default)]
pub struct RingAdmission {
    /// Bytes of the client writes admitted and not yet ended.
    admitted: Cell<u64>,
    /// Shrinking writes admitted past nine tenths and not yet ended: at
    /// most one.
    shrinking_past_line: Cell<bool>,
}

/// A client write's share of its shard's ring, from its admission until
/// its proposal ends (dropped).
#[derive(Debug)]
#[must_use = "the write's bytes are released when this is dropped: hold it until the proposal ends"]
pub struct Admitted {
    admission: Rc<RingAdmission>,
    bytes: u64,
    /// Admitted past nine tenths as the one shrinking write there.
    past_line: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let admitted = &self.admission.admitted;
        admitted.set(admitted.get().saturating_sub(self.bytes));
        if self.past_line {
            self.admission.shrinking_past_line.set(false);
        }
    }
}

impl RingAdmission {
    /// Bytes of client writes admitted and not yet ended.
    pub fn admitted_bytes(&self) -> u64 {
        self.admitted.get()
    }

    /// Admits client write `command` to a ring of `ring_bytes` holding
    /// `used_bytes`, or says it must wait (`None`). A write that adds data
    /// goes while the ring with the writes admitted before it is below
    /// three quarters; one that adds none below nine tenths, and past that
    /// one at a time while `alarms` are raised (its group is out of space or
    /// over its quota, and only such writes can clear that): those share no
    /// room with the writes that add data, which never pass three quarters
    /// by more than one write, so nothing they do can keep a delete out,
    /// not even a ring that a new leader found full already. The common
    /// case (the ring well below the line) reads one number.
    pub fn try_admit(
        self: &Rc<Self>,
        used_bytes: u64,
        ring_bytes: u64,
        command: &[u8],
        alarms: &Alarms,
    ) -> Option<Admitted> {
        let filled = used_bytes.saturating_add(self.admitted.get());
        let past = |percent: u64| filled.saturating_mul(100) >= ring_bytes.saturating_mul(percent);
        let mut past_line = false;
        if past(RING_ADMIT_PERCENT) {
            if adds_data(command) {
                return None;
            }
            if past(RING_ADMIT_SHRINKING_PERCENT) {
                if !alarms.raised() || self.shrinking_past_line.get() {
                    return None;
                }
                past_line = true;
                self.shrinking_past_line.set(true);
            }
        }
        let bytes = command.len() as u64 + ADMITTED_OVERHEAD_BYTES;
        self.admitted.set(self.admitted.get().saturating_add(bytes));
        Some(Admitted { admission: self.clone(), bytes, past_line })
    }

    /// Admits client write `command` to the ring of `log` (its shard's) as
    /// soon as [`RingAdmission::try_admit`] does, looking again while
    /// snapshots and purges give space back and admitted writes end (the
    /// caller bounds the wait with its request timeout).
    pub async fn admit(self: &Rc<Self>, log: &SharedLog, command: &[u8], alarms: &Alarms) -> Admitted {
        loop {
            let (used_bytes, ring_bytes) = log.with(|log| log.ring_use());
            if let Some(admitted) = self.try_admit(used_bytes, ring_bytes, command, alarms) {
                return admitted;
            }
            tokio::time::sleep(RING_ADMIT_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::{encode_command, Command};
    use crate::kv::types::{DeleteRangeRequest, PutRequest};

    const RING: u64 = 1_000_000;

    fn put(bytes: usize) -> Vec<u8> {
        encode_command(&Command::Put(PutRequest {
            key: b"/k".to_vec(),
            value: vec![7; bytes],
            ..PutRequest::default()
        }))
    }

    fn delete() -> Vec<u8> {
        encode_command(&Command::DeleteRange(DeleteRangeRequest {
            key: b"/k".to_vec(),
            ..DeleteRangeRequest::default()
        }))
    }

    /// Writes admitted while the ring is just under three quarters, none of
    /// them logged yet (the ring's use has not moved), count against the
    /// line: only the first passes, and the ring cannot go past the line by
    /// more than that one write. Admission used to read the ring's use
    /// alone, and let every one of them in.
    #[test]
    fn writes_admitted_and_not_yet_logged_count_against_the_line() {
        let admission = Rc::new(RingAdmission::default());
        let alarms = Alarms::new(0, 1);
        let used = RING * 74 / 100;
        let first =
            admission.try_admit(used, RING, &put(100_000), &alarms).expect("below the line: admitted");
        assert!(
            admission.admitted_bytes() > 100_000,
            "the admitted write counts: {}",
            admission.admitted_bytes()
        );
        for _ in 0..10 {
            assert!(
                admission.try_admit(used, RING, &put(100_000), &alarms).is_none(),
                "the ring with the write admitted before is past three quarters: a second waits"
            );
        }
        assert!(
            admission.try_admit(used, RING, &delete(), &alarms).is_some(),
            "a delete still goes below nine tenths"
        );
        drop(first);
        assert_eq!(admission.admitted_bytes(), 0, "every write that ended gave its share back");
        let second = admission.try_admit(used, RING, &put(100_000), &alarms);
        assert!(second.is_some(), "once the first ended (logged, or failed), the next goes");
    }

    /// Past nine tenths (a new leader whose ring filled while it followed,
    /// or a group out of snapshot space), writes that add no data go one at
    /// a time while the group's alarm is raised: they are what clears it.
    /// Writes that add data never do, and without the alarm the last tenth
    /// stays the snapshot task's.
    #[test]
    fn past_nine_tenths_a_delete_of_a_group_out_of_space_goes_one_at_a_time() {
        let admission = Rc::new(RingAdmission::default());
        let alarms = Alarms::new(0, 1);
        let used = RING * 97 / 100;
        assert!(admission.try_admit(used, RING, &delete(), &alarms).is_none(), "no alarm: the delete waits");

        alarms.raise(2 * RING, RING / 4);
        assert!(
            admission.try_admit(used, RING, &put(10), &alarms).is_none(),
            "a put never goes past the line"
        );
        let first =
            admission.try_admit(used, RING, &delete(), &alarms).expect("the alarm is raised: a delete goes");
        assert!(
            admission.try_admit(used, RING, &delete(), &alarms).is_none(),
            "one at a time: the second waits for the first"
        );
        drop(first);
        let second = admission.try_admit(used, RING, &delete(), &alarms);
        assert!(second.is_some(), "the first ended: the next delete goes");

        alarms.clear();
        drop(second);
        assert!(
            admission.try_admit(used, RING, &delete(), &alarms).is_none(),
            "the alarm cleared: deletes wait again"
        );
    }

    /// The common case: a ring well below the line admits anything.
    #[test]
    fn a_ring_below_the_line_admits_every_write() {
        let admission = Rc::new(RingAdmission::default());
        let alarms = Alarms::new(0, 1);
        let held: Vec<Admitted> = (0..5)
            .map(|_| admission.try_admit(RING / 10, RING, &put(1_000), &alarms).expect("admitted"))
            .collect();
        assert_eq!(held.len(), 5);
    }
}
