//! When the groups of a shard take snapshots, and how their logs stay
//! inside the shard's ring. A snapshot that cannot be stored stops its group
//! (openraft treats a failed snapshot save as a storage failure), and the
//! shard's snapshot area is shared by all its groups, so no group snapshots
//! on its own: this task asks a group for one, one group at a time, when it
//! is due and only when the snapshot area has room for it.
//!
//! A group is due when any of these holds:
//! - it applied `snapshot_logs_since_last` entries since its last snapshot;
//! - its entries take `snapshot_after_bytes` of the ring (large values fill
//!   a ring long before they number many entries);
//! - the ring is half full and the group's oldest entry is the one that
//!   keeps the ring's head from moving (ring pressure).
//!
//! After a snapshot the group's log is purged up to `max_in_snapshot_log_to_keep`
//! entries behind it, and after one due to bytes or pressure up to the
//! snapshot itself, which large entries cannot afford. This task decides
//! every purge: openraft is told to keep every entry a snapshot covers
//! (see `raft::GroupConfig::openraft_config`), so its own purge point never
//! falls behind one asked for here (openraft asserts it only moves ahead).
//!
//! A snapshot's size is known before it is built (`kv::snapshot::encoded_len`),
//! so the check is exact up to the envelope around the store's bytes.
//!
//! Without room a member compacts the group's history, the oldest first:
//! at least down to `compact_keep_revisions` revisions, and further, just as
//! far as the snapshot needs to fit (`kv::snapshot::compaction_for_size`),
//! as one Raft entry so every replica compacts alike. A follower asks its
//! leader for that entry (`super::forward`), measured against its own
//! snapshot area: its free space is laid out apart from the leader's (a
//! follower's current snapshot may be larger than the leader's, taken
//! before a compaction reached it), so a store that fits the leader's area
//! may not fit the follower's, and a follower that could only wait for the
//! leader's compactions kept its log until its ring filled, the compaction
//! that would have let it snapshot then waiting behind entries with no room.
//! When even the live keys do not fit while the log must shrink, the group
//! raises its NOSPACE alarm (`super::space`) and refuses writes that add
//! data until deletes make it fit again.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use super::group::ShardGroup;
/// The policy is a setting of the layout, which every shard holds.
pub use super::layout::SnapshotPolicy;
use super::leader_link::LeaderLink;
use super::registry::ShardGroups;
use crate::kv::command::{encode_command, Command};
use crate::raft::GroupId;
use crate::wal::SharedLog;

/// How often the shard looks for groups due a snapshot.
const SNAPSHOT_TICK: Duration = Duration::from_millis(200);
/// How long one snapshot may take to be stored before the shard moves on
/// (it keeps going in the background; only the next one waits less).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);
/// Room beyond the store's encoding: the snapshot envelope (its Raft
/// metadata) and the blob header on the namespace.
const ENVELOPE_BYTES: u64 = crate::raft::wal_snapshots::SNAPSHOT_ENVELOPE_BYTES_MAX;
/// How often a group that cannot snapshot for lack of room says so.
const NO_ROOM_WARNING_EVERY: Duration = Duration::from_secs(60);
/// How long a follower waits for a compaction it asked its leader for to
/// apply here before it asks again (the entry may have been lost with a
/// leader that failed before committing it).
const FOLLOWER_COMPACTION_WAIT: Duration = Duration::from_secs(5);

/// Whether a group is due a snapshot, and whether one fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    NotYet,
    Fits { bytes: u64 },
    NoRoom { bytes: u64, room: u64 },
}

/// Decides for one group: `entries` applied since its last snapshot, a
/// snapshot of `store_bytes` encoded, `room` bytes free in one piece.
pub fn due(entries: u64, every: u64, store_bytes: impl FnOnce() -> u64, room: u64) -> Due {
    if entries < every {
        return Due::NotYet;
    }
    fits(store_bytes(), room)
}

/// Whether a snapshot of a store of `store_bytes` fits `room`.
fn fits(store_bytes: u64, room: u64) -> Due {
    let bytes = store_bytes + ENVELOPE_BYTES;
    if bytes <= room {
        Due::Fits { bytes }
    } else {
        Due::NoRoom { bytes, room }
    }
}

/// The log ring of the shard as the task sees it on one tick.
#[derive(Clone, Copy, Debug)]
struct Ring {
    used: u64,
    bytes: u64,
    pinned_by: Option<GroupId>,
}

impl Ring {
    /// Half full, with `group` holding its head.
    fn pressed_by(&self, group: GroupId) -> bool {
        self.used * 2 >= self.bytes && self.pinned_by == Some(group)
    }
}

/// Starts the snapshot task of this shard.
pub fn spawn_snapshots(groups: Rc<ShardGroups>, log: SharedLog) {
    tokio::task::spawn_local(async move {
        let mut warned: BTreeMap<GroupId, Instant> = BTreeMap::new();
        let mut asked: BTreeMap<GroupId, Asked> = BTreeMap::new();
        loop {
            tokio::time::sleep(SNAPSHOT_TICK).await;
            let Some(mut entries) = groups.started() else { continue };
            // The group that holds the ring's head goes first: no other
            // group's purge gives space back while it does, and another
            // group's compaction (a Raft write) may be waiting for that
            // space.
            let pinned_by = log.with(|log| log.head_pinned_by());
            entries.sort_by_key(|entry| Some(entry.raft().group()) != pinned_by);
            let policy = groups.layout().snapshots;
            let keep = groups.layout().raft.max_in_snapshot_log_to_keep;
            let groups_here = entries.len() as u64;
            for entry in entries {
                let mut task =
                    Task { log: &log, leaders: groups.leaders(), warned: &mut warned, asked: &mut asked };
                tend(&entry, &policy, keep, groups_here, &mut task).await;
            }
        }
    });
}

/// A compaction a follower asked its leader for: at which revision, when.
#[derive(Clone, Copy, Debug)]
struct Asked {
    revision: i64,
    at: Instant,
}

/// What the snapshot task keeps between the turns of its groups.
struct Task<'a> {
    log: &'a SharedLog,
    /// Where a follower's compaction goes.
    leaders: &'a Rc<dyn LeaderLink>,
    /// When each group last said it could not snapshot.
    warned: &'a mut BTreeMap<GroupId, Instant>,
    /// The compaction each group asked its leader for, until it applies here.
    asked: &'a mut BTreeMap<GroupId, Asked>,
}

/// One group's turn: a snapshot when due and room allows, a purge where its
/// log holds more than it must, compaction or the alarm where room is short.
async fn tend(
    entry: &Rc<ShardGroup>,
    policy: &SnapshotPolicy,
    keep: u64,
    groups_here: u64,
    task: &mut Task<'_>,
) {
    let log = task.log;
    let group = entry.raft().group();
    let (ring, log_bytes, room) = log.with(|log| {
        let stats = log.stats();
        let ring = Ring { used: stats.used_bytes, bytes: stats.ring_bytes, pinned_by: log.head_pinned_by() };
        (ring, log.group_log_bytes(group), log.snapshot_room_bytes())
    });
    let must_shrink = log_bytes >= policy.after_bytes || ring.pressed_by(group);
    let since = entry.raft().entries_since_snapshot();
    if since == 0 {
        // Nothing new to snapshot; the entries kept behind the last one may
        // still be what fills the ring.
        if must_shrink {
            purge_behind_snapshot(entry, 0).await;
        }
        return;
    }
    if since < policy.every_entries && !must_shrink {
        return;
    }
    let (area, possible) = log.with(|log| (log.snapshot_area_bytes(), log.snapshot_area_uncommitted_bytes()));
    // The area is shared by the shard's groups, and a group's current
    // snapshot stays until its next one is durable: a group keeps to its
    // share (half the area divided among the groups), so every group can
    // always write its next snapshot beside its current one.
    let share = area / (2 * groups_here.max(1));
    let store_bytes = || crate::kv::snapshot::encoded_len(&entry.machine().borrow().state.store);
    let mut compacted = Compacted::NotHere;
    if store_bytes() + ENVELOPE_BYTES > room.min(share) {
        compacted = compact_for_room(entry, policy.compact_keep_revisions, room, share, task).await;
        if let Compacted::CannotFit { bytes: live } = compacted {
            // Out of space only when nothing could make room: the live
            // keys are larger than every byte no current snapshot holds.
            // Less room than that is a snapshot in flight, or a gap between
            // snapshots, and passes.
            if must_shrink && live + ENVELOPE_BYTES > possible {
                entry.alarms().raise(live + ENVELOPE_BYTES, possible);
                return;
            }
        }
    }
    match fits(store_bytes(), room) {
        Due::NotYet => {}
        Due::Fits { bytes }
            if bytes > share
                && matches!(compacted, Compacted::Yes | Compacted::Asked)
                && ring.used.saturating_mul(4) < ring.bytes.saturating_mul(3) =>
        {
            // A compaction that brings the store within its share is on
            // its way: a snapshot larger than the share now would leave
            // too little room beside it for the next one (on a follower,
            // for good if the leader never needs to compact that far). Not
            // with the ring three quarters full: a follower there refuses
            // its leader's entries that do not fit (`super::peer_requests`),
            // so the compaction may never reach it, and the snapshot that
            // fits now is what frees its ring.
        }
        Due::Fits { bytes } => {
            if snapshot(entry, bytes, log).await {
                task.warned.remove(&group);
                entry.alarms().clear();
                purge_behind_snapshot(entry, if must_shrink { 0 } else { keep }).await;
            }
        }
        Due::NoRoom { bytes, room } => {
            let leads = entry.raft().metrics().current_leader == Some(entry.raft().member());
            if must_shrink && leads && policy.compact_keep_revisions == 0 && bytes > possible {
                // A leader that may not compact on its own: only deletes
                // and `nvkv compact` can make room.
                entry.alarms().raise(bytes, possible);
                return;
            }
            if matches!(compacted, Compacted::Yes | Compacted::Asked) {
                // Writes applied while the compaction waited its turn in
                // the log took the room it made; the next tick compacts
                // again.
                return;
            }
            let now = Instant::now();
            if task.warned.get(&group).is_none_or(|last| now.duration_since(*last) >= NO_ROOM_WARNING_EVERY) {
                task.warned.insert(group, now);
                tracing::warn!(
                    group,
                    snapshot_bytes = bytes,
                    room_bytes = room,
                    area_bytes = area,
                    "group {group} cannot take a snapshot: it needs {bytes} bytes and the shard's snapshot area \
                     ({area} bytes, shared by its groups) has {room} free in one piece; its log grows meanwhile. \
                     Compact the group's history (nvkv compact) or give the node a larger namespace_bytes"
                );
            }
        }
    }
}

/// Asks the group for a snapshot of about `bytes` and waits until it is
/// stored; returns whether it was (a snapshot that grew past the room
/// before it was built is declined, see `raft::state_machine`).
async fn snapshot(entry: &Rc<ShardGroup>, bytes: u64, log: &SharedLog) -> bool {
    let group = entry.raft().group();
    let before = entry.raft().metrics().snapshot.map(|snapshot| snapshot.index);
    let refused = || log.with(|log| log.snapshots_refused(group));
    let refused_before = refused();
    if let Err(error) = entry.raft().snapshot_now().await {
        tracing::warn!(group, %error, "asking for a snapshot failed");
        return false;
    }
    let started = Instant::now();
    while entry.raft().metrics().snapshot.map(|snapshot| snapshot.index) == before {
        if refused() != refused_before {
            return false;
        }
        if started.elapsed() > SNAPSHOT_WAIT {
            tracing::warn!(group, bytes, "a snapshot is not stored after {SNAPSHOT_WAIT:?}; moving on");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Purges the group's log up to `keep` entries behind its snapshot.
async fn purge_behind_snapshot(entry: &Rc<ShardGroup>, keep: u64) {
    let Some(snapshot) = entry.raft().metrics().snapshot else { return };
    let purged = entry.raft().metrics().purged.map_or(0, |purged| purged.index);
    let upto = snapshot.index.saturating_sub(keep);
    if upto <= purged {
        return;
    }
    if let Err(error) = entry.raft().purge_log_to(upto).await {
        tracing::warn!(group = entry.raft().group(), %error, "asking for a purge failed");
    }
}

/// The revision to compact a group's store at so it keeps `keep` revisions
/// (writes: hybrid revisions are not counted 1, 2, 3), when it holds more
/// than that beyond its compact revision.
pub fn pressure_compaction(store: &crate::kv::MvccStore, keep: u64) -> Option<i64> {
    if keep == 0 {
        return None;
    }
    store.revision_writes_ago(keep).filter(|target| *target > store.compact_revision())
}

/// What compacting for room did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compacted {
    /// A compaction was applied (by the leader, where a follower asked
    /// for it): the snapshot fits next tick.
    Yes,
    /// This follower asked for a compaction that has not applied here yet.
    Asked,
    /// Even all history compacted, the store takes `bytes`, more than the room.
    CannotFit { bytes: u64 },
    /// The group may not compact on its own, or the compaction failed:
    /// nothing to conclude.
    NotHere,
}

/// Compacts `entry`'s group's history so this member's snapshot fits: the
/// oldest history first, at least down to `keep` revisions, and as far as a
/// snapshot of half the group's `share` of the area needs (so it grows a
/// while before it outgrows the share), or, when the live keys alone are
/// larger than that, as far as one that fits `room` needs. A leader
/// proposes the compaction and returns once it is applied; a follower asks
/// its leader for it (the same Raft entry, so every replica compacts alike)
/// and returns once the leader applied it, asking again only once it
/// applied here or after [`FOLLOWER_COMPACTION_WAIT`].
async fn compact_for_room(
    entry: &Rc<ShardGroup>,
    keep: u64,
    room: u64,
    share: u64,
    task: &mut Task<'_>,
) -> Compacted {
    use crate::kv::snapshot::{compaction_for_size, CompactionFit};
    let group = entry.raft().group();
    if keep == 0 {
        return Compacted::NotHere;
    }
    let leads = entry.raft().metrics().current_leader == Some(entry.raft().member());
    // Writes applied while the compaction waits its turn in the log grow
    // the store again: leave them a quarter of the room.
    let comfortable = (share / 2).min(room / 2).saturating_sub(ENVELOPE_BYTES);
    let most = (room.saturating_sub(ENVELOPE_BYTES) / 4) * 3;
    let (compacted, fit, kept) = {
        let machine = entry.machine().borrow();
        let store = &machine.state.store;
        let fit = match compaction_for_size(store, comfortable.min(most)) {
            CompactionFit::Never { .. } => compaction_for_size(store, most),
            fit => fit,
        };
        (store.compact_revision(), fit, pressure_compaction(store, keep))
    };
    let needed = match fit {
        CompactionFit::Never { bytes } => return Compacted::CannotFit { bytes },
        CompactionFit::Fits => compacted,
        CompactionFit::At(needed) => needed,
    };
    let target = needed.max(kept.unwrap_or(compacted));
    if target <= compacted {
        return Compacted::NotHere;
    }
    if !leads {
        if let Some(asked) = task.asked.get(&group) {
            if asked.revision > compacted && asked.at.elapsed() < FOLLOWER_COMPACTION_WAIT {
                // Asked already; its entry is on its way here.
                return Compacted::Asked;
            }
        }
        task.asked.insert(group, Asked { revision: target, at: Instant::now() });
    }
    let command = encode_command(&Command::Compact { revision: target });
    let answer = if leads {
        super::propose::propose(entry.proposing(), command).await
    } else {
        super::forward::write(entry.clone(), task.leaders, command).await
    };
    match answer {
        Ok(_) => {
            tracing::info!(
                group,
                revision = target,
                "compacted group {group} at revision {target} so its snapshot fits its shard's snapshot area \
                 (store.compact_under_pressure_keep_revisions = {keep} writes are kept at most)"
            );
            Compacted::Yes
        }
        Err(error) => {
            tracing::warn!(group, %error, "compacting group {group} to make room for its snapshot failed");
            Compacted::NotHere
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_due_after_enough_entries_and_only_if_its_snapshot_fits() {
        assert_eq!(due(99, 100, || panic!("not measured before it is due"), 0), Due::NotYet);
        assert_eq!(due(100, 100, || 1000, 1 << 20), Due::Fits { bytes: 1000 + ENVELOPE_BYTES });
        assert_eq!(
            due(500, 100, || 1 << 20, 1 << 20),
            Due::NoRoom { bytes: (1 << 20) + ENVELOPE_BYTES, room: 1 << 20 }
        );
    }

    #[test]
    fn pressure_keeps_the_newest_revisions_and_never_compacts_backwards() {
        let mut store = crate::kv::MvccStore::hybrid(3);
        let mut revisions = Vec::new();
        for write in 0..50u64 {
            store.set_stamp(1_000_000 + write * 7);
            let put =
                crate::kv::PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
            revisions.push(store.put(&put).unwrap().response.revision);
        }
        assert_eq!(pressure_compaction(&store, 10), Some(revisions[49 - 10]), "the 10 newest writes stay");
        store.compact(revisions[45]).unwrap();
        assert_eq!(pressure_compaction(&store, 10), None, "already compacted that far");
        assert_eq!(pressure_compaction(&store, 100), None, "less history than kept");
        assert_eq!(pressure_compaction(&store, 0), None, "0 turns it off");
    }
}
