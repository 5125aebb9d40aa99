//! Recovery of a shard log: read the newest valid checkpoint, then replay
//! the ring from its head, record by record, until the exact tail.
//!
//! The tail is the first place where the next record (by sequence number
//! and CRC chain) is not. A torn or corrupt record there is dropped, with
//! everything after it, when it cannot be proven durable. It is corruption
//! in the middle, and fatal, when a valid later record says (through its
//! `durable_before`) that the bad one had already been durable when it was
//! written: then a record the shard reported durable is damaged. The seal
//! the log writes whenever it goes idle (`format::RecordKind::Seal`) is such
//! a record for everything before it.
//!
//! What recovery knows, and what it cannot:
//! - A record that a later valid record proves durable is never dropped:
//!   damage to it stops the shard with an error naming its LBA.
//! - A bad record after the last proof is dropped either way, because a
//!   write torn by a crash while in flight (never reported durable) and a
//!   record reported durable and damaged later (a bit flip, a latent error,
//!   a write that landed elsewhere) look alike. Such records lie only in the
//!   last writes before the crash, or after the last seal.
//! - When the block where the tail was found holds no record (no record
//!   magic), or a whole valid record that does not chain (a leftover of an
//!   earlier lap, of another log, or of an earlier open whose tail was
//!   dropped), no record of this log was begun there, and recovery says the
//!   tail was clean. A torn write whose first block never landed is such a
//!   case, and loses only what was never reported durable. A device that acknowledged a write it never made, or made
//!   at another LBA, can still leave such a block; no log can tell that
//!   without a later proof.
//! - Otherwise recovery keeps an [`UnprovenTail`]: records that may have
//!   been reported durable were dropped, and which groups and indexes they
//!   held is unknown (their headers may be the damaged part). Every group of
//!   the shard may then have lost entries after the last one it holds, and
//!   its last vote; the Raft layer keeps such a member from voting until a
//!   leader has brought it past that point. The groups still in that state
//!   are listed in every seal, so a restart before then keeps them there.

use std::collections::BTreeMap;

/// Records that may have been reported durable were dropped with the tail
/// of the log (see the module doc): what is known of where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnprovenTail {
    /// The sequence number of the first record dropped.
    pub sequence: u64,
    /// Where it lay.
    pub lba: u64,
    /// What was found there instead of it.
    pub found: String,
}

use super::checkpoint::Checkpoint;
use super::format::{self, DecodeError, RecordKind};
use super::log::{EntryMeta, GroupState, Placement, RingRecord, ShardLog};
use super::{blocking, WalError};
use crate::nvme::DmaBuf;

/// How far past a bad record recovery looks for proof that it had been
/// durable. Records written while it was in flight lie within
/// inflight_writes_max × batch_bytes_max of it; the limits of both keep that
/// under this bound.
const LOOKAHEAD_BYTES: u64 = 64 << 20;
/// Bytes read from the ring at a time while scanning.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Reads the ring in large chunks and hands out record-sized views.
struct RingReader {
    ring_first_block: u64,
    ring_blocks: u64,
    lba_bytes: usize,
    chunk: Option<(u64, DmaBuf)>,
}

impl RingReader {
    /// The bytes of `blocks` blocks at ring `offset` (which must not cross
    /// the end of the ring).
    fn get(&mut self, log: &mut ShardLog, offset: u64, blocks: u64) -> Result<&[u8], WalError> {
        assert!(
            offset + blocks <= self.ring_blocks,
            "ring read at {offset}+{blocks} past {}",
            self.ring_blocks
        );
        let covered = self.chunk.as_ref().is_some_and(|(start, buffer)| {
            *start <= offset && offset + blocks <= start + (buffer.len() / self.lba_bytes) as u64
        });
        if !covered {
            let chunk_blocks =
                ((SCAN_CHUNK_BYTES / self.lba_bytes) as u64).max(blocks).min(self.ring_blocks - offset);
            let buffer =
                blocking::read(log.queue.as_mut(), self.ring_first_block + offset, chunk_blocks as usize)
                    .map_err(|source| WalError::Device { what: "reading the log ring", source })?;
            self.chunk = Some((offset, buffer));
        }
        let (start, buffer) = self.chunk.as_ref().expect("chunk just read");
        let from = ((offset - start) as usize) * self.lba_bytes;
        Ok(&buffer[from..from + blocks as usize * self.lba_bytes])
    }
}

pub(super) fn recover(log: &mut ShardLog) -> Result<(), WalError> {
    let checkpoint = read_checkpoint(log)?;
    log.checkpoint_generation = checkpoint.generation;
    log.head_offset = checkpoint.head_offset;
    log.head_sequence = checkpoint.head_sequence;
    log.head_previous_crc = checkpoint.head_previous_crc;
    let mut groups = BTreeMap::new();
    for group in checkpoint.groups {
        groups.insert(
            group.group,
            GroupState {
                vote: group.vote,
                purged: group.purged,
                snapshot: group.snapshot,
                entries: Default::default(),
                entry_blocks: 0,
            },
        );
    }
    log.groups = groups;

    let ring_blocks = log.ring_blocks;
    if log.head_offset >= ring_blocks {
        return Err(WalError::Corrupt(format!(
            "checkpoint of shard {} puts the head at ring block {}, past the ring of {ring_blocks} blocks",
            log.region.shard, log.head_offset
        )));
    }
    let mut reader = RingReader {
        ring_first_block: log.region.ring_first_block(),
        ring_blocks,
        lba_bytes: log.lba_bytes,
        chunk: None,
    };
    let mut offset = log.head_offset;
    let mut expected = log.head_sequence;
    let mut previous_crc = log.head_previous_crc;
    // The open that wrote the last record replayed.
    let mut last_epoch = None;
    let mut used = 0u64;
    let mut orphans = Vec::new();
    loop {
        if offset == ring_blocks {
            offset = 0;
        }
        if used >= ring_blocks {
            break;
        }
        let room = ring_blocks - offset;
        match read_record_at(log, &mut reader, offset, room)? {
            Ok((header, payload, crc))
                if header.sequence == expected
                    && header.previous_crc == previous_crc
                    && header.log_id == log.region.log_id =>
            {
                let ring_blocks_used = u64::from(header.blocks);
                replay(log, &mut orphans, &header, payload, offset, crc)?;
                used += ring_blocks_used;
                offset += ring_blocks_used;
                expected += 1;
                previous_crc = crc;
                last_epoch = Some(header.epoch);
            }
            found => {
                let what = match found {
                    Ok((header, _, _)) => format!(
                        "record {} chained to {:#010x} (expected record {expected} chained to {previous_crc:#010x})",
                        header.sequence, header.previous_crc
                    ),
                    Err(error) => error.to_string(),
                };
                check_torn_not_corrupt(log, &mut reader, offset, expected, &what)?;
                if !tail_is_clean(log, &mut reader, offset, expected, last_epoch)? {
                    let lba = log.region.ring_first_block() + offset;
                    let header = format::decode_header(reader.get(log, offset, 1)?, log.lba_bytes).ok();
                    tracing::warn!(
                        ?header,
                        shard = log.region.shard,
                        lba,
                        sequence = expected,
                        found = %what,
                        "dropped a damaged record at the tail of the log that no later record proves durable: it may \
                         have been reported durable (a torn write and later damage look alike); this member's groups \
                         do not vote until a leader has brought them past it"
                    );
                    log.unproven_tail = Some(UnprovenTail { sequence: expected, lba, found: what });
                } else {
                    tracing::debug!(shard = log.region.shard, offset, expected, %what, "found the tail of the log");
                }
                break;
            }
        }
    }
    for (group, state) in &log.groups {
        if let Some(reference) = state.snapshot {
            let blocks = reference.blocks(log.lba_bytes);
            log.snapshot_area.mark_used(reference.offset, blocks).map_err(|reason| {
                WalError::Corrupt(format!("shard {} group {group}: {reason}", log.region.shard))
            })?;
        }
    }
    if let Some(orphan) = orphans.first() {
        return Err(WalError::Corrupt(format!(
            "record {} at LBA {} holds entry {} of group {}, but the group's next entry is {} and no later \
             truncation removes it",
            orphan.sequence, orphan.lba, orphan.index, orphan.group, orphan.expected
        )));
    }
    log.tail_offset = offset;
    log.next_sequence = expected;
    log.durable_sequence = expected - 1;
    log.last_crc = previous_crc;
    // Records replayed since the last seal get one at the first idle turn,
    // so a member that restarts and idles has its log proven too.
    log.unsealed = log.ring.back().is_some_and(|record| record.kind != RecordKind::Seal);
    if log.unproven_tail.is_some() {
        // Every group may have lost records after the last entry it holds
        // now; one listed already keeps the later of the two points, past
        // which a leader must bring it for both losses to be repaired.
        let held: Vec<(u32, u64)> =
            log.groups.iter().map(|(group, state)| (*group, state.last_index().unwrap_or(0))).collect();
        for (group, index) in held {
            let after = log.unproven.entry(group).or_insert(index);
            *after = (*after).max(index);
        }
        log.unproven_others = true;
        // The first idle turn writes a seal that lists them.
        log.unsealed = true;
    }
    clamp_committed(log);
    log.used_blocks = used;
    tracing::info!(
        shard = log.region.shard,
        groups = log.groups.len(),
        records = expected - log.head_sequence,
        "recovered the shard log"
    );
    Ok(())
}

type Decoded = Result<(format::RecordHeader, Vec<u8>, u32), DecodeError>;

/// Decodes the record at `offset`, reading as many blocks as its header
/// names (a wrap record is one block on disk, whatever it spans).
fn read_record_at(
    log: &mut ShardLog,
    reader: &mut RingReader,
    offset: u64,
    room: u64,
) -> Result<Decoded, WalError> {
    let lba_bytes = log.lba_bytes;
    let first = reader.get(log, offset, 1)?;
    let header = match format::decode_header(first, lba_bytes) {
        Ok(header) => header,
        Err(error) => return Ok(Err(error)),
    };
    let on_disk_blocks = if header.kind == RecordKind::Wrap { 1 } else { u64::from(header.blocks) };
    if u64::from(header.blocks) > room
        || (header.kind == RecordKind::Wrap && u64::from(header.blocks) != room)
    {
        return Ok(Err(DecodeError::BadField("blocks")));
    }
    let bytes = reader.get(log, offset, on_disk_blocks)?;
    Ok(format::decode_record(bytes, lba_bytes).map(|(header, payload, crc)| (header, payload.to_vec(), crc)))
}

/// Looks past a bad record at `offset` for a valid later record written
/// after the bad one was durable. Finding one means corruption in the
/// middle of the log: fatal, naming the LBA and what was expected.
fn check_torn_not_corrupt(
    log: &mut ShardLog,
    reader: &mut RingReader,
    offset: u64,
    expected: u64,
    what: &str,
) -> Result<(), WalError> {
    let ring_blocks = log.ring_blocks;
    let window = (LOOKAHEAD_BYTES / log.lba_bytes as u64).min(ring_blocks.saturating_sub(1));
    for step in 1..=window {
        let position = (offset + step) % ring_blocks;
        let first = reader.get(log, position, 1)?;
        let Ok(header) = format::decode_header(first, log.lba_bytes) else { continue };
        if header.log_id != log.region.log_id
            || header.sequence <= expected
            || header.durable_before <= expected
        {
            continue;
        }
        let on_disk_blocks = if header.kind == RecordKind::Wrap { 1 } else { u64::from(header.blocks) };
        if position + on_disk_blocks > ring_blocks {
            continue;
        }
        let bytes = reader.get(log, position, on_disk_blocks)?;
        if format::decode_record(bytes, log.lba_bytes).is_ok() {
            return Err(WalError::Corrupt(format!(
                "shard {} record {expected} at LBA {} is damaged ({what}), but record {} at LBA {} was written after \
                 it was durable; the log cannot be trusted past LBA {}. Restore this node from its peers or a backup.",
                log.region.shard,
                log.region.ring_first_block() + offset,
                header.sequence,
                log.region.ring_first_block() + position,
                log.region.ring_first_block() + offset,
            )));
        }
    }
    Ok(())
}

/// Whether the block at `offset`, where the record with sequence
/// `expected` should have started, shows that no record of this log was
/// begun there: bytes without the record magic (zeroes, data a ring on a
/// used device held before, or what a write that never reached the block
/// left), or a whole valid record that does not chain to the last one
/// replayed. That record is not the one expected as written (which would
/// chain and have been replayed); it is a leftover of an earlier lap, of
/// another log, or of an earlier open whose tail was dropped. Only a valid
/// record of the same open with a later sequence number could be a later
/// write misdirected over the expected one, and counts as damage.
/// Anything else (a record whose CRC fails, impossible header fields) may
/// be a record that was reported durable and damaged since. Damage to the
/// four magic bytes alone passes for "no record": the price of not
/// flagging every restart on a device whose ring held other data before.
fn tail_is_clean(
    log: &mut ShardLog,
    reader: &mut RingReader,
    offset: u64,
    expected: u64,
    last_epoch: Option<u64>,
) -> Result<bool, WalError> {
    let lba_bytes = log.lba_bytes;
    let first = reader.get(log, offset, 1)?;
    let header = match format::decode_header(first, lba_bytes) {
        Ok(header) => header,
        Err(DecodeError::NoMagic) => return Ok(true),
        Err(_) => return Ok(false),
    };
    let on_disk_blocks = if header.kind == RecordKind::Wrap { 1 } else { u64::from(header.blocks) };
    if offset + on_disk_blocks > log.ring_blocks {
        return Ok(false);
    }
    let log_id = log.region.log_id;
    let bytes = reader.get(log, offset, on_disk_blocks)?;
    let misdirected_here =
        header.log_id == log_id && Some(header.epoch) == last_epoch && header.sequence >= expected;
    Ok(format::decode_record(bytes, lba_bytes).is_ok() && !misdirected_here)
}

/// An entry found with a gap before it, waiting for the truncation that
/// explains it.
struct Orphan {
    group: u32,
    index: u64,
    sequence: u64,
    lba: u64,
    expected: u64,
}

/// Keeps every recovered committed index within the entries its group
/// holds now. A group's Raft layer knows an index committed only once its
/// own log matched the leader's that far, and a seal is written only once
/// every record before it is durable (which proves them: recovery never
/// drops one as a torn tail), so a seal's index is within the group's log
/// as it was; the clamp is the last guard, so that no damage, no bug and
/// no log an older build left can make the Raft layer apply an entry this
/// member does not hold. Within that bound applying is safe: every entry at
/// or below a committed index is the committed entry (a later leader holds
/// every committed entry and only ever truncates entries above the commit
/// point), so the member's entries up to the clamped index are the ones
/// every member applies.
fn clamp_committed(log: &mut ShardLog) {
    let groups = &log.groups;
    log.committed.retain(|group, index| {
        let Some(last) = groups.get(group).and_then(GroupState::last_index) else {
            return false;
        };
        *index = (*index).min(last);
        true
    });
}

/// Applies one valid record to the in-memory state.
fn replay(
    log: &mut ShardLog,
    orphans: &mut Vec<Orphan>,
    header: &format::RecordHeader,
    payload: Vec<u8>,
    offset: u64,
    crc: u32,
) -> Result<(), WalError> {
    let lba = log.region.ring_first_block() + offset;
    if !matches!(header.kind, RecordKind::Wrap | RecordKind::Seal)
        && !log.groups.contains_key(&header.group)
        && log.groups.len() >= log.region.groups_max as usize
    {
        return Err(WalError::Corrupt(format!(
            "record {} at LBA {lba} names group {}, beyond the {} groups shard {} holds",
            header.sequence, header.group, log.region.groups_max, log.region.shard
        )));
    }
    match header.kind {
        RecordKind::Entry => {
            let state = log.groups.entry(header.group).or_default();
            let purged = state.purged.map(|(index, _)| index);
            if purged.is_some_and(|purged| header.index <= purged) {
                // Purged after it was written; the checkpoint already knows.
            } else if state.next_index().is_none_or(|next| next == header.index) {
                state.entries.push_back(EntryMeta {
                    index: header.index,
                    term: header.term,
                    operation: 0,
                    placed: Some(Placement { sequence: header.sequence, offset, blocks: header.blocks }),
                    cached: None,
                });
                state.entry_blocks += u64::from(header.blocks);
            } else {
                // Its predecessors are behind the head, so it must have been
                // truncated by a record still to come; if none comes, the log
                // is corrupt.
                orphans.push(Orphan {
                    group: header.group,
                    index: header.index,
                    sequence: header.sequence,
                    lba,
                    expected: state.next_index().unwrap_or_default(),
                });
            }
        }
        RecordKind::Vote => log.groups.entry(header.group).or_default().vote = Some(payload),
        RecordKind::Truncate => {
            log.groups.entry(header.group).or_default().truncate(header.index);
            orphans.retain(|orphan| orphan.group != header.group || orphan.index < header.index);
        }
        RecordKind::Purge => log.groups.entry(header.group).or_default().purge(header.index, header.term),
        RecordKind::SnapshotRef => {
            let reference = super::snapshot::SnapshotRef::decode(&payload).map_err(|reason| {
                WalError::Corrupt(format!("record {} at LBA {lba}: {reason}", header.sequence))
            })?;
            // Two snapshots of a group may become durable in either order
            // (one built here, one installed from the leader): the one
            // that covers more of the log stays current, as it did before
            // the restart.
            log.groups.entry(header.group).or_default().offer_snapshot(reference);
        }
        RecordKind::Seal => {
            let seal = format::decode_seal(&payload).map_err(|reason| {
                WalError::Corrupt(format!("seal record {} at LBA {lba}: {reason}", header.sequence))
            })?;
            // The last seal's list is current: each seal lists them all.
            log.unproven = seal.unproven;
            // A committed index never goes back; a seal of an older build
            // carries none, which leaves what an earlier seal said.
            for (group, index) in seal.committed {
                log.set_committed(group, index);
            }
            log.last_seal = Some(header.sequence);
        }
        RecordKind::Wrap => {}
    }
    log.ring.push_back(RingRecord {
        sequence: header.sequence,
        offset,
        blocks: u64::from(header.blocks),
        kind: header.kind,
        group: header.group,
        index: header.index,
        crc,
    });
    Ok(())
}

/// The newest valid checkpoint of the two slots.
fn read_checkpoint(log: &mut ShardLog) -> Result<Checkpoint, WalError> {
    let region = log.region;
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for slot in 0..2 {
        let bytes = blocking::read(
            log.queue.as_mut(),
            region.checkpoint_slot_lba(slot),
            region.checkpoint_blocks as usize,
        )
        .map_err(|source| WalError::Device { what: "reading a checkpoint", source })?;
        match Checkpoint::decode(&bytes) {
            Ok(Some(checkpoint)) if checkpoint.shard == region.shard => found.push(checkpoint),
            Ok(Some(checkpoint)) => {
                problems.push(format!("slot {slot} belongs to shard {}", checkpoint.shard));
            }
            Ok(None) => problems.push(format!("slot {slot} was never written")),
            Err(reason) => problems.push(format!("slot {slot}: {reason}")),
        }
    }
    found.into_iter().max_by_key(|checkpoint| checkpoint.generation).ok_or_else(|| {
        WalError::Corrupt(format!(
            "no valid checkpoint for shard {} at LBA {}: {}",
            region.shard,
            region.first_block,
            problems.join("; ")
        ))
    })
}
