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
//! The alarm is this member's view, checked where writes are proposed (on
//! the leader); it is never replicated, so a new leader judges its own
//! store within one snapshot tick.
//!
//! Client writes also wait here while the shard's ring is three quarters
//! full ([`admit`]): a group that must compact before it can snapshot (a
//! Raft write of its own) needs ring space for that entry, and writes that
//! kept coming would take it. The snapshot task's own proposals do not wait.

use std::time::Duration;

use tokio::time::Instant;

use super::groups::ShardGroup;
use crate::kv::command::adds_data;
use crate::raft::GroupError;

/// A raised alarm: what did not fit where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSpace {
    /// The group's snapshot with all history compacted, in bytes.
    pub snapshot_bytes: u64,
    /// The room its shard's snapshot area had for it.
    pub room_bytes: u64,
    pub since: Instant,
}

/// Refuses `command` when the group is out of space and the command could
/// make its store larger.
pub fn check_room(entry: &ShardGroup, command: &[u8]) -> Result<(), GroupError> {
    let Some(alarm) = entry.no_space.get() else { return Ok(()) };
    if !adds_data(command) {
        return Ok(());
    }
    Err(GroupError::NoSpace {
        group: entry.raft.group(),
        member: entry.raft.member(),
        snapshot_bytes: alarm.snapshot_bytes,
        room_bytes: alarm.room_bytes,
    })
}

/// The share of the ring, in percent, above which client writes wait.
const RING_ADMIT_PERCENT: u64 = 75;
/// How often a waiting write looks at the ring again.
const RING_ADMIT_POLL: Duration = Duration::from_millis(2);

/// Returns once this shard's ring is less than three quarters full: where
/// client writes wait while snapshots and purges give space back (within
/// the caller's request timeout).
pub async fn admit() {
    let Some(shard) = super::local() else { return };
    while shard.log.with(|log| log.used_percent()) >= RING_ADMIT_PERCENT {
        tokio::time::sleep(RING_ADMIT_POLL).await;
    }
}

/// Raises the alarm of `entry`'s group (saying so once, as an operator must
/// act), or updates the sizes of one raised already.
pub fn raise(entry: &ShardGroup, snapshot_bytes: u64, room_bytes: u64) {
    let since = match entry.no_space.get() {
        Some(raised) => raised.since,
        None => {
            let group = entry.raft.group();
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
    entry.no_space.set(Some(NoSpace { snapshot_bytes, room_bytes, since }));
}

/// Clears the alarm of `entry`'s group, if raised: its snapshot fitted.
pub fn clear(entry: &ShardGroup) {
    if let Some(raised) = entry.no_space.take() {
        let group = entry.raft.group();
        tracing::warn!(
            group,
            "group {group} has space again after {:.1} s: the NOSPACE alarm is cleared and writes are taken",
            raised.since.elapsed().as_secs_f64()
        );
    }
}
