//! Recovery of groups whose current snapshot is damaged (a bit flip in
//! its blob, a latent read error, a blob written over): the checks, the
//! reset that empties such a group for its leader to repair, and the vote
//! refusal that follows, at this recovery and every later one until a
//! committed index past the loss is known.
//!
//! Why the whole group goes: its entries after the snapshot cannot be
//! applied without it, and an older good snapshot rarely stands (its space
//! is reused once a newer one is durable, and the entries between the two
//! are purged), while the leader holds a copy. The vote is kept: it was
//! not damaged, and forgetting it could let the member vote twice in a
//! term. It must never keep a damaged snapshot current, nor let an emptied
//! group vote before a leader has brought it past the last index it held.

use std::collections::BTreeMap;

use super::log::{GroupState, ShardLog};
use super::snapshot::{self, SnapshotRef};
use super::{blocking, WalError};

/// What was wrong with a group's current snapshot.
pub(super) struct DamagedSnapshot {
    reference: SnapshotRef,
    /// The first block of its blob.
    lba: u64,
    found: String,
}

/// Reads every group's current snapshot blob and checks it against its
/// reference (header, group, index, term, size, this log's id, data CRC):
/// the groups whose blob fails, by group.
pub(super) fn damaged_snapshots(log: &mut ShardLog) -> Result<BTreeMap<u32, DamagedSnapshot>, WalError> {
    if !log.options.repair_snapshots_from_peers {
        // The group's start reads the snapshot and stops, naming it.
        return Ok(BTreeMap::new());
    }
    let references: Vec<(u32, SnapshotRef)> = log
        .groups
        .iter()
        .filter_map(|(group, state)| state.snapshot.map(|reference| (*group, reference)))
        .collect();
    let mut damaged = BTreeMap::new();
    for (group, reference) in references {
        let lba = log.region.snapshot_first_block() + reference.offset;
        let blocks = reference.blocks(log.lba_bytes);
        let found = if reference.offset.saturating_add(blocks) > log.snapshot_area.blocks() {
            Some(format!(
                "a reference to blocks {}+{blocks} past the snapshot area of {} blocks",
                reference.offset,
                log.snapshot_area.blocks()
            ))
        } else {
            let bytes = blocking::read(log.queue.as_mut(), lba, blocks as usize)
                .map_err(|source| WalError::Device { what: "reading a snapshot", source })?;
            snapshot::decode_blob(&bytes, group, log.region.log_id, &reference)
                .err()
                .map(|error| error.to_string())
        };
        if let Some(found) = found {
            damaged.insert(group, DamagedSnapshot { reference, lba, found });
        }
    }
    Ok(damaged)
}

/// Empties each group of `damaged`, but for its vote, and queues the reset
/// record that makes it durable (before any group starts: every record a
/// leader sends to repair the group lies after it in the ring).
pub(super) fn reset_damaged(
    log: &mut ShardLog,
    damaged: BTreeMap<u32, DamagedSnapshot>,
) -> Result<(), WalError> {
    for (group, damage) in damaged {
        let held = log.groups.get(&group).and_then(GroupState::last_index).unwrap_or(0);
        let lost_after = held.max(damage.reference.index);
        log.stats.snapshots_repaired += 1;
        tracing::warn!(
            shard = log.region.shard,
            group,
            snapshot_index = damage.reference.index,
            snapshot_term = damage.reference.term,
            lba = damage.lba,
            found = %damage.found,
            lost_after,
            "the group's snapshot is damaged: dropped it and the group's log after it (they cannot be applied \
             without it); the group grants no vote until its leader has brought it past entry {lost_after} (the \
             leader sends it a snapshot)"
        );
        log.reset_group(group, lost_after)?;
        let listed = log.snapshot_resets.entry(group).or_insert(lost_after);
        *listed = (*listed).max(lost_after);
    }
    Ok(())
}

/// Makes each group emptied here or by a reset record a recovery replayed
/// refuse votes until a leader has brought it past the point it lost:
/// unless it knows a committed index past that point, which its Raft layer
/// learned from a leader whose log its own matched that far (so every entry
/// it may have acknowledged and lost is back), and which a seal after the
/// reset carried (a reset forgets the committed index before it).
pub(super) fn refuse_votes_after_resets(log: &mut ShardLog) {
    let resets: Vec<(u32, u64)> = log.snapshot_resets.iter().map(|(group, after)| (*group, *after)).collect();
    for (group, lost_after) in resets {
        if log.committed.get(&group).is_some_and(|committed| *committed > lost_after) {
            continue;
        }
        let listed = log.unproven.entry(group).or_insert(lost_after);
        *listed = (*listed).max(lost_after);
        log.known_loss.insert(group);
        log.unsealed = true;
    }
}

/// Replays a reset record of `group`: everything but its vote goes, and
/// the group is listed as lost after `lost_after`.
pub(super) fn replay_reset(log: &mut ShardLog, group: u32, lost_after: u64) {
    let state = log.groups.entry(group).or_default();
    let vote = state.vote.take();
    *state = GroupState { vote, ..GroupState::default() };
    // What a seal before it said was committed was of the log it dropped.
    log.committed.remove(&group);
    let listed = log.snapshot_resets.entry(group).or_insert(lost_after);
    *listed = (*listed).max(lost_after);
}
