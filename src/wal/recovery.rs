//! Recovery of a shard log: read the newest valid checkpoint, then replay
//! the ring from its head, record by record, until the exact tail.
//!
//! The tail is the first place where the next record (by sequence number
//! and CRC chain) is not. A torn or corrupt record there is dropped, with
//! everything after it, when it cannot be proven durable. It is damage in
//! the middle when a valid later record says (through its `durable_before`)
//! that the bad one had already been durable when it was written: then a
//! record the shard reported durable is damaged. The seal the log writes
//! whenever it goes idle (`format::RecordKind::Seal`) is such a record for
//! everything before it.
//!
//! Damage in the middle is skipped, not fatal (protocol-aware recovery):
//! replay goes on at the next record, which chains from the damaged one,
//! and each group that may have lost entries with it is cut at its last
//! entry before it (see [`Hole`]), made durable by a truncation record
//! before any group starts, and refuses votes until a leader has repaired
//! it from its own copy. It must never keep a group's entries past a point
//! where it may have lost one, and never let such a group vote. It stops
//! the shard, naming the record and its LBA, only where it cannot bound
//! what was lost: the first record after the checkpoint, a second damaged
//! record, or no valid successor.
//!
//! A group whose current snapshot fails its checks (a damaged block of the
//! blob, or a blob another one overwrote) is emptied, not fatal: its
//! snapshot, purge point and entries are dropped (the entries after a
//! snapshot cannot be applied without it), its vote is kept, a reset record
//! makes that durable before any group starts, and it refuses votes until a
//! leader has brought it past the last index it held; the leader sends it a
//! snapshot (`super::snapshot_repair`, which says why no older snapshot is
//! looked for).
//!
//! What recovery knows, and what it cannot:
//! - A record that a later valid record proves durable is never dropped in
//!   silence: damage to it is skipped as above, loudly, and counted.
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
//!   are listed in every seal, so a restart before then keeps them there;
//!   so are the groups whose loss is known (a skipped damaged record, a
//!   damaged snapshot), which refuse votes whatever the policy for unproven
//!   tails, so they keep that after the head has passed the record that
//!   showed the loss.

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

/// A damaged record in the middle of the log that recovery skipped
/// because later records prove it had been durable (see the module doc):
/// where it lay, and what each group may have lost with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairedRecord {
    /// The sequence number of the skipped record.
    pub sequence: u64,
    /// Where it lay.
    pub lba: u64,
    /// What was found there instead of it.
    pub found: String,
    /// The groups cut at the hole, each with the index after which it may
    /// have lost entries (its last entry before the hole; 0 for a group
    /// that held none). Their entries after the hole were dropped.
    pub cut: BTreeMap<u32, u64>,
    /// The groups that kept every entry but whose vote the record may have
    /// held, each with its last index.
    pub vote_unknown: BTreeMap<u32, u64>,
}

use std::collections::BTreeSet;

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
    // The damaged record skipped in the middle of the log, if any.
    let mut hole: Option<Hole> = None;
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
                replay(log, &mut orphans, hole.as_mut(), &header, payload, offset, crc)?;
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
                if let Some(proof) = later_proof(log, &mut reader, offset, expected)? {
                    let skipped =
                        skip_damaged(log, &mut reader, offset, expected, &what, proof, hole.is_some())?;
                    let lba = log.region.ring_first_block() + offset;
                    hole = Some(Hole::new(log, expected, lba, what));
                    log.ring.push_back(RingRecord {
                        sequence: expected,
                        offset,
                        blocks: skipped.blocks,
                        // A record with no effect on replay that reclaim may
                        // pass: so the head never stops at the damaged one.
                        kind: RecordKind::Wrap,
                        group: 0,
                        index: 0,
                        // The next record chains from the damaged one's CRC,
                        // so that is what a checkpoint past it must name.
                        crc: skipped.previous_crc,
                    });
                    used += skipped.blocks;
                    offset += skipped.blocks;
                    expected += 1;
                    previous_crc = skipped.previous_crc;
                    continue;
                }
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
    let damaged = super::snapshot_repair::damaged_snapshots(log)?;
    for (group, state) in &log.groups {
        if let Some(reference) = state.snapshot {
            // A damaged snapshot's group is emptied below, and its extent
            // stays free.
            if damaged.contains_key(group) {
                continue;
            }
            let blocks = reference.blocks(log.lba_bytes);
            log.snapshot_area.mark_used(reference.offset, blocks).map_err(|reason| {
                WalError::Corrupt(format!("shard {} group {group}: {reason}", log.region.shard))
            })?;
        }
    }
    let mut cut_at = match hole {
        Some(hole) => hole.finish(log),
        None => BTreeMap::new(),
    };
    for group in damaged.keys() {
        // Every entry of it goes with the reset: neither a cut nor an
        // orphan of it matters any more.
        cut_at.remove(group);
        orphans.retain(|orphan| orphan.group != *group);
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
    // The cut is made durable before any group starts taking entries: the
    // truncation lies in the ring before every entry a leader sends to
    // repair the group, so the next recovery, which meets the same damaged
    // record and the entries after it again, replays the repaired entries
    // instead of taking them for orphans (and drops the old ones even once
    // the head has passed the damaged record).
    for (group, next) in cut_at {
        // A purge after the hole may have passed the cut (a snapshot that
        // holds what was lost): the truncation must not reach below it.
        let past_purge = log.purged(group).map_or(0, |(purged, _)| purged + 1);
        log.truncate(group, next.max(past_purge))?;
    }
    super::snapshot_repair::reset_damaged(log, damaged)?;
    super::snapshot_repair::refuse_votes_after_resets(log);
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

/// A valid later record of this log, written after the record it proves.
struct Proof {
    position: u64,
    sequence: u64,
}

/// Looks past a bad record at `offset` for a valid later record written
/// after the bad one was durable. Finding one means damage in the middle of
/// the log, to a record the shard reported durable: never a torn tail.
fn later_proof(
    log: &mut ShardLog,
    reader: &mut RingReader,
    offset: u64,
    expected: u64,
) -> Result<Option<Proof>, WalError> {
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
            return Ok(Some(Proof { position, sequence: header.sequence }));
        }
    }
    Ok(None)
}

/// Where replay goes on past a skipped record.
struct Skipped {
    /// Ring blocks the damaged record took.
    blocks: u64,
    /// Its CRC, as the record after it names it.
    previous_crc: u32,
}

/// Finds the record after the damaged one at `offset`, which `proof`
/// proved was durable, so that replay can go on past it: the first valid
/// record of this log after `offset`, up to the proof, with the next
/// sequence number. The records after it chain from it, as it chains from
/// the damaged one (whose CRC it names). Fails, naming the record and its
/// LBA, when the damage cannot be skipped safely: a second damaged record
/// in one recovery, the record at the head (nothing before it in this log
/// says what each group held), or no such successor (more than one record
/// lost, whose contents no group's entries could bound).
fn skip_damaged(
    log: &mut ShardLog,
    reader: &mut RingReader,
    offset: u64,
    expected: u64,
    what: &str,
    proof: Proof,
    skipped_one: bool,
) -> Result<Skipped, WalError> {
    let ring_blocks = log.ring_blocks;
    let first_lba = log.region.ring_first_block();
    let shard = log.region.shard;
    let corrupt = |why: &str| {
        WalError::Corrupt(format!(
            "shard {} record {expected} at LBA {} is damaged ({what}), but record {} at LBA {} was written after it \
             was durable, and {why}; the log cannot be trusted past LBA {}. Restore this node from its peers or a \
             backup.",
            shard,
            first_lba + offset,
            proof.sequence,
            first_lba + proof.position,
            first_lba + offset,
        ))
    };
    if skipped_one {
        return Err(corrupt("recovery already skipped a damaged record in this log"));
    }
    if expected == log.head_sequence {
        return Err(corrupt("it is the first record after the checkpoint"));
    }
    let distance = (proof.position + ring_blocks - offset) % ring_blocks;
    for step in 1..=distance {
        let position = (offset + step) % ring_blocks;
        // A record never spans the end of the ring: only a wrap record at
        // the damaged place could be followed by one at block 0.
        if position < offset && position != 0 {
            break;
        }
        let first = reader.get(log, position, 1)?;
        let Ok(header) = format::decode_header(first, log.lba_bytes) else { continue };
        if header.log_id != log.region.log_id || header.sequence != expected + 1 {
            continue;
        }
        let on_disk_blocks = if header.kind == RecordKind::Wrap { 1 } else { u64::from(header.blocks) };
        if position + on_disk_blocks > ring_blocks {
            continue;
        }
        let bytes = reader.get(log, position, on_disk_blocks)?;
        if format::decode_record(bytes, log.lba_bytes).is_err() {
            continue;
        }
        let blocks = if position == 0 { ring_blocks - offset } else { position - offset };
        return Ok(Skipped { blocks, previous_crc: header.previous_crc });
    }
    Err(corrupt(&format!("no valid record {} follows it", expected + 1)))
}

/// What recovery learns of each group after skipping a damaged record in
/// the middle of the log, whose header (no part of the record can be
/// trusted) may have named any group and any kind: an entry, a vote, a
/// truncation, a purge, a snapshot reference or a seal.
///
/// - A group whose first entry after the hole is the next one it needed
///   lost no entry: its log continues. A lost truncation would show (the
///   next entry would repeat an index it holds), a lost purge only leaves
///   entries it still holds readable, and the hole is one record, so it
///   held no entry of this group. Its vote may still have been there, so
///   unless a vote record of the group follows the hole, it refuses votes
///   until a leader has caught it up: a vote lost and given again in the
///   same term lets two candidates win one term.
/// - A group whose first entry after the hole repeats an index it holds
///   lost a truncation there: its entries from that index are dropped, as
///   the truncation did, and the entry is replayed. Nothing else was lost
///   with it, but it is treated as above all the same.
/// - A group whose first entry after the hole skips indexes, or that has
///   no entry after it, may have lost entries it acknowledged: its log is
///   cut at its last entry before the hole, its later entries are dropped
///   (the entries a leader sends to repair it are the first replayed
///   again), and it refuses votes until a leader has brought it past the
///   cut. Voting with an acknowledged entry lost could elect a candidate
///   that lacks a committed entry.
/// - A group with no state in the log may have had its only record there.
///
/// A snapshot reference lost in the hole leaves the group its previous
/// snapshot, which the leader's next snapshot replaces.
struct Hole {
    record: RepairedRecord,
    /// Groups whose first entry after the hole was replayed (continued or
    /// truncated), and groups cut.
    resolved: BTreeSet<u32>,
    /// Groups cut whose entries past the next one they need are dropped,
    /// until a repaired entry at it comes.
    cutting: BTreeSet<u32>,
    /// Groups cut, with the index their truncation record removes from.
    cut_at: BTreeMap<u32, u64>,
    /// Groups with a vote record after the hole.
    voted: BTreeSet<u32>,
}

impl Hole {
    fn new(log: &mut ShardLog, sequence: u64, lba: u64, found: String) -> Hole {
        log.stats.records_repaired += 1;
        Hole {
            record: RepairedRecord {
                sequence,
                lba,
                found,
                cut: BTreeMap::new(),
                vote_unknown: BTreeMap::new(),
            },
            resolved: BTreeSet::new(),
            cutting: BTreeSet::new(),
            cut_at: BTreeMap::new(),
            voted: BTreeSet::new(),
        }
    }

    /// Whether an entry of `group` at `index`, after the hole, is replayed
    /// (false: it follows entries the group may have lost, and is dropped).
    fn entry(&mut self, group: u32, state: &mut GroupState, index: u64) -> bool {
        let next = state.next_index().unwrap_or(0);
        if self.cutting.contains(&group) {
            if index == next {
                // The first entry a leader sent to repair the group (after
                // the truncation an earlier recovery wrote): the cut is
                // durable already, and a new truncation would drop these.
                self.cutting.remove(&group);
                self.cut_at.remove(&group);
                return true;
            }
            // Below: an orphan unless a later truncation removes it, as
            // anywhere. Above: it follows what the group may have lost.
            return index < next;
        }
        if !self.resolved.insert(group) || index == next {
            return true;
        }
        if index < next {
            // The hole held this group's truncation.
            state.truncate(index);
            return true;
        }
        let after = state.last_index().unwrap_or(0);
        self.record.cut.insert(group, after);
        self.cutting.insert(group);
        self.cut_at.insert(group, next);
        false
    }

    /// Ends replay: decides for the groups that showed nothing after the
    /// hole, marks every group that may have lost something so it refuses
    /// votes until repaired (whatever the policy for unproven tails), logs
    /// it, and returns the truncation each cut group needs.
    fn finish(mut self, log: &mut ShardLog) -> BTreeMap<u32, u64> {
        for (group, state) in &log.groups {
            if self.resolved.contains(group) {
                continue;
            }
            // No entry after the hole: it may have held the next one.
            let next = state.next_index().unwrap_or(0);
            self.record.cut.insert(*group, state.last_index().unwrap_or(0));
            self.cut_at.insert(*group, next);
        }
        for (group, state) in &log.groups {
            if !self.record.cut.contains_key(group) && !self.voted.contains(group) {
                self.record.vote_unknown.insert(*group, state.last_index().unwrap_or(0));
            }
        }
        for (group, after) in self.record.cut.iter().chain(&self.record.vote_unknown) {
            let listed = log.unproven.entry(*group).or_insert(*after);
            *listed = (*listed).max(*after);
            log.known_loss.insert(*group);
        }
        log.known_loss_others = true;
        log.unproven_others = true;
        log.unsealed = true;
        tracing::warn!(
            shard = log.region.shard,
            lba = self.record.lba,
            sequence = self.record.sequence,
            found = %self.record.found,
            cut = ?self.record.cut,
            vote_unknown = ?self.record.vote_unknown,
            "skipped a damaged record in the middle of the log that later records prove was durable: each group \
             cut may have lost the entries after the index given (its later entries are dropped), and the other \
             groups may have lost their vote; these groups grant no vote until a leader has repaired them"
        );
        log.repaired = Some(self.record);
        self.cut_at
    }
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
    hole: Option<&mut Hole>,
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
            } else if hole.is_some_and(|hole| !hole.entry(header.group, state, header.index)) {
                // It follows entries the group may have lost in the hole.
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
        RecordKind::Vote => {
            if let Some(hole) = hole {
                hole.voted.insert(header.group);
            }
            log.groups.entry(header.group).or_default().vote = Some(payload);
        }
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
            // The last seal's lists are current: each seal lists them all.
            log.unproven = seal.unproven;
            log.known_loss = seal.known_loss;
            // A committed index never goes back; a seal of an older build
            // carries none, which leaves what an earlier seal said.
            for (group, index) in seal.committed {
                log.set_committed(group, index);
            }
            log.last_seal = Some(header.sequence);
        }
        RecordKind::Reset => {
            super::snapshot_repair::replay_reset(log, header.group, header.index);
            orphans.retain(|orphan| orphan.group != header.group);
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
