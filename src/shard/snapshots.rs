//! When the groups of a shard take snapshots. A snapshot that cannot be
//! stored stops its group (openraft treats a failed snapshot save as a
//! storage failure), and the shard's snapshot area is shared by all its
//! groups, so no group snapshots on its own: this task asks a group for a
//! snapshot once it applied `snapshot_logs_since_last` entries since its
//! last, and only when the snapshot area has room for it, one group at a
//! time. Without room the group goes on from its log (which keeps growing:
//! once the ring is full, its writes wait) and the node says so every
//! minute, naming the sizes and what to do.
//!
//! A snapshot's size is known before it is built (`kv::snapshot::encoded_len`),
//! so the check is exact up to the envelope around the store's bytes.
//!
//! Under that pressure the group's leader compacts the group's history down
//! to `compact_keep_revisions` revisions (a Raft entry, so every replica
//! compacts alike), once per pressure: history is what grows without bound
//! under writes, and it is kept as long as there is room for it.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::groups::{ShardGroup, ShardGroups};
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
    let bytes = store_bytes() + ENVELOPE_BYTES;
    if bytes <= room {
        Due::Fits { bytes }
    } else {
        Due::NoRoom { bytes, room }
    }
}

/// Starts the snapshot task of this shard.
pub fn spawn_snapshots(groups: Rc<ShardGroups>, log: SharedLog) {
    tokio::task::spawn_local(async move {
        let mut warned: BTreeMap<GroupId, Instant> = BTreeMap::new();
        loop {
            tokio::time::sleep(SNAPSHOT_TICK).await;
            let entries: Vec<Rc<ShardGroup>> = match groups.groups.borrow().as_ref() {
                Some(map) => map.values().cloned().collect(),
                None => continue,
            };
            let every = groups.layout.raft.snapshot_logs_since_last;
            let keep = groups.layout.compact_keep_revisions;
            for entry in entries {
                snapshot_if_due(&entry, every, keep, &log, &mut warned).await;
            }
        }
    });
}

async fn snapshot_if_due(
    entry: &Rc<ShardGroup>,
    every: u64,
    keep: u64,
    log: &SharedLog,
    warned: &mut BTreeMap<GroupId, Instant>,
) {
    let group = entry.raft.group();
    let room = log.with(|log| log.snapshot_room_bytes());
    let store_bytes = || crate::kv::snapshot::encoded_len(&entry.machine.borrow().state.store);
    match due(entry.raft.entries_since_snapshot(), every, store_bytes, room) {
        Due::NotYet => {}
        Due::NoRoom { bytes, room } => {
            if compact_for_room(entry, keep).await {
                return;
            }
            let now = Instant::now();
            if warned.get(&group).is_none_or(|last| now.duration_since(*last) >= NO_ROOM_WARNING_EVERY) {
                warned.insert(group, now);
                let area = log.with(|log| log.snapshot_area_bytes());
                tracing::warn!(
                    group,
                    snapshot_bytes = bytes,
                    room_bytes = room,
                    area_bytes = area,
                    "group {group} cannot take a snapshot: it needs {bytes} bytes and the shard's snapshot area \
                     ({area} bytes, shared by its groups) has {room} free in one piece; its log grows meanwhile \
                     and, once the ring is full, its writes wait. Compact the group's history (nvkv compact) or \
                     give the node a larger namespace_bytes"
                );
            }
        }
        Due::Fits { bytes } => {
            let before = entry.raft.metrics().snapshot.map(|snapshot| snapshot.index);
            if let Err(error) = entry.raft.snapshot_now().await {
                tracing::warn!(group, %error, "asking for a snapshot failed");
                return;
            }
            let started = Instant::now();
            while entry.raft.metrics().snapshot.map(|snapshot| snapshot.index) == before {
                if started.elapsed() > SNAPSHOT_WAIT {
                    tracing::warn!(
                        group,
                        bytes,
                        "a snapshot is not stored after {SNAPSHOT_WAIT:?}; moving on"
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            warned.remove(&group);
        }
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

/// Where this member leads `entry`'s group and it keeps more history than
/// `keep` revisions, compacts it to that; returns whether it did.
async fn compact_for_room(entry: &Rc<ShardGroup>, keep: u64) -> bool {
    let group = entry.raft.group();
    if entry.raft.metrics().current_leader != Some(entry.raft.member()) {
        return false;
    }
    let Some(target) = pressure_compaction(&entry.machine.borrow().state.store, keep) else { return false };
    let command = encode_command(&Command::Compact { revision: target });
    match super::propose::propose(entry.clone(), command).await {
        Ok(_) => {
            tracing::info!(
                group,
                revision = target,
                "compacted group {group} at revision {target}, keeping {keep} revisions, so its snapshot fits \
                 its shard's snapshot area (store.compact_under_pressure_keep_revisions)"
            );
            true
        }
        Err(error) => {
            tracing::warn!(group, %error, "compacting group {group} to make room for its snapshot failed");
            false
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
