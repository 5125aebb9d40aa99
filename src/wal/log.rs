//! The shard log: group commit of every group's records into the ring, the
//! in-memory index of every group's entries, and ring reclaim.
//!
//! Invariants:
//! - Records get consecutive sequence numbers in the order they are placed
//!   in the ring, and each chains to the CRC of the one before.
//! - Operations are reported durable in the order they were queued, and only
//!   when the write that carries them and every earlier write is durable.
//! - The ring space before the head is overwritten only after a checkpoint
//!   naming the new head is durable.
//! - A failed write or flush stops the log for good: nothing after it is ever
//!   reported durable.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use super::checkpoint::{self, Checkpoint, GroupCheckpoint};
use super::format::{self, RecordHeader, RecordKind, HEADER_BYTES};
use super::snapshot::{self as snapshot_format, SnapshotArea, SnapshotRef};
use super::superblock::ShardRegion;
use super::{Durability, WalError};
use crate::nvme::{Command, Completion, DmaBuf, NamespaceInfo, QueuePair};

/// Most group-commit writes in flight, and most bytes in one. Recovery
/// relies on their product (64 MiB) to bound its search past a bad record.
pub const INFLIGHT_WRITES_LIMIT: usize = 16;
pub const BATCH_BYTES_LIMIT: usize = 4 << 20;

#[derive(Clone, Debug)]
pub struct LogOptions {
    pub durability: Durability,
    /// Most bytes one group-commit write carries.
    pub batch_bytes_max: usize,
    /// Most group-commit writes in flight at once.
    pub inflight_writes_max: usize,
    /// Bytes of entry payloads kept in memory for reads (recent entries).
    pub cache_bytes_max: usize,
    /// Depth of the queue pair the log is given: reads and snapshot writes
    /// use only the slots its own writes leave.
    pub queue_depth: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Fua,
            batch_bytes_max: 1 << 20,
            inflight_writes_max: 4,
            cache_bytes_max: 64 << 20,
            queue_depth: 64,
        }
    }
}

/// Identifies a queued operation; durable once the log says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub(crate) u64);

/// Identifies a snapshot being written: done once its blob and the record
/// that points at it are durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotTicket(u64);

/// Identifies a read that went to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadTicket(u64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub group: u32,
    pub index: u64,
    pub term: u64,
    pub payload: Rc<[u8]>,
}

pub enum ReadRequest {
    Ready(Entry),
    Pending(ReadTicket),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub operations: u64,
    pub records_written: u64,
    pub writes: u64,
    pub bytes_written: u64,
    pub flushes: u64,
    pub checkpoints: u64,
    pub reads_from_device: u64,
    pub snapshots_written: u64,
    pub snapshot_bytes_written: u64,
    /// Device commands that failed (an error completion) or that the
    /// device refused to take.
    pub device_errors: u64,
    pub head_sequence: u64,
    pub next_sequence: u64,
    pub used_bytes: u64,
    pub ring_bytes: u64,
}

/// Where an append's time goes inside the log, in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct LogStages {
    /// From the append call to the write that carries it being submitted:
    /// waiting for the end of the tick, a free in-flight slot or ring space.
    pub queue_wait: StageHistogram,
    /// From a group-commit write's submission to its durability (FUA write,
    /// or write and flush), in the order durability is reported.
    pub device_write: StageHistogram,
}

/// A latency histogram of one stage (1 ns to 60 s, 3 significant digits).
#[derive(Clone, Debug)]
pub struct StageHistogram(hdrhistogram::Histogram<u64>);

impl Default for StageHistogram {
    fn default() -> Self {
        StageHistogram::new()
    }
}

impl StageHistogram {
    pub fn new() -> StageHistogram {
        StageHistogram(crate::latency::histogram())
    }

    pub fn record(&mut self, elapsed: std::time::Duration) {
        self.0.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1));
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `quantile` (0.0..=1.0), in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn histogram(&self) -> &hdrhistogram::Histogram<u64> {
        &self.0
    }
}

const TAG_KIND_SHIFT: u32 = 56;
const TAG_WRITE: u64 = 1 << TAG_KIND_SHIFT;
const TAG_FLUSH: u64 = 2 << TAG_KIND_SHIFT;
const TAG_CHECKPOINT: u64 = 3 << TAG_KIND_SHIFT;
const TAG_READ: u64 = 4 << TAG_KIND_SHIFT;
const TAG_SNAPSHOT_WRITE: u64 = 5 << TAG_KIND_SHIFT;
const TAG_SNAPSHOT_READ: u64 = 6 << TAG_KIND_SHIFT;
const TAG_KIND_MASK: u64 = 0xff << TAG_KIND_SHIFT;

#[derive(Clone, Debug)]
pub(super) struct EntryMeta {
    pub index: u64,
    pub term: u64,
    /// The operation that appended it, to tell it from a later entry at the
    /// same index after a truncation.
    pub operation: u64,
    /// Sequence number and ring position once placed in a write.
    pub placed: Option<Placement>,
    pub cached: Option<Rc<[u8]>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Placement {
    pub sequence: u64,
    pub offset: u64,
    pub blocks: u32,
}

#[derive(Clone, Debug, Default)]
pub(super) struct GroupState {
    pub vote: Option<Vec<u8>>,
    pub purged: Option<(u64, u64)>,
    /// The group's current (durable) snapshot.
    pub snapshot: Option<SnapshotRef>,
    pub entries: VecDeque<EntryMeta>,
    /// Ring blocks the group's live entries hold (those placed in a write):
    /// what purging them would give back.
    pub entry_blocks: u64,
}

impl GroupState {
    pub fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|entry| entry.index).or(self.purged.map(|(index, _)| index))
    }

    /// The index the next append must have; `None` when any index may start
    /// the log (nothing appended or purged yet).
    pub fn next_index(&self) -> Option<u64> {
        self.last_index().map(|last| last + 1)
    }

    pub fn position(&self, index: u64) -> Option<usize> {
        let first = self.entries.front()?.index;
        let position = index.checked_sub(first)? as usize;
        (position < self.entries.len()).then_some(position)
    }

    pub fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|entry| entry.index >= index) {
            let removed = self.entries.pop_back().expect("checked");
            self.forget_blocks(&removed);
        }
    }

    pub fn purge(&mut self, index: u64, term: u64) {
        if self.purged.is_none_or(|(purged, _)| purged < index) {
            self.purged = Some((index, term));
        }
        while self.entries.front().is_some_and(|entry| entry.index <= index) {
            let removed = self.entries.pop_front().expect("checked");
            self.forget_blocks(&removed);
        }
    }

    fn forget_blocks(&mut self, removed: &EntryMeta) {
        if let Some(placed) = removed.placed {
            self.entry_blocks -= u64::from(placed.blocks);
        }
    }

    /// Makes `snapshot` current unless the current one covers more of the
    /// log (two snapshots of a group can finish in either order: one built
    /// here, one installed from the leader). Returns the reference that
    /// lost, whose blob space is free again.
    pub fn offer_snapshot(&mut self, snapshot: SnapshotRef) -> Option<SnapshotRef> {
        match self.snapshot {
            Some(current) if (current.index, current.term) > (snapshot.index, snapshot.term) => {
                Some(snapshot)
            }
            _ => self.snapshot.replace(snapshot),
        }
    }
}

/// A record in the ring, kept for reclaim.
#[derive(Clone, Copy, Debug)]
pub(super) struct RingRecord {
    pub sequence: u64,
    pub offset: u64,
    pub blocks: u64,
    pub kind: RecordKind,
    pub group: u32,
    pub index: u64,
    pub crc: u32,
}

struct Pending {
    operation: u64,
    queued_at: Instant,
    kind: RecordKind,
    group: u32,
    index: u64,
    term: u64,
    payload: Rc<[u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteState {
    Writing,
    Written,
    Flushing,
    Durable,
}

struct InflightWrite {
    tag: u64,
    submitted_at: Instant,
    last_sequence: u64,
    /// The operations the write carries, in ring order (none for a wrap).
    /// Usually consecutive; a record that frees space may have been placed
    /// ahead of older ones waiting for room.
    operations: Vec<u64>,
    state: WriteState,
}

struct CheckpointWrite {
    tag: u64,
    checkpoint: Checkpoint,
    records_passed: usize,
    blocks_freed: u64,
}

struct SnapshotWrite {
    group: u32,
    reference: SnapshotRef,
    /// The operation of the reference record, once the blob is written.
    reference_operation: Option<u64>,
}

/// What of one group waits in the queue ahead of a record that would go
/// before it: the lowest entry index, and whether a truncation, a purge or
/// a vote does.
#[derive(Default)]
struct Waiting {
    lowest_entry: Option<u64>,
    truncation_or_purge: bool,
    vote: bool,
}

impl Waiting {
    fn add(&mut self, record: &Pending) {
        match record.kind {
            RecordKind::Entry => {
                self.lowest_entry =
                    Some(self.lowest_entry.map_or(record.index, |lowest| lowest.min(record.index)))
            }
            RecordKind::Truncate | RecordKind::Purge => self.truncation_or_purge = true,
            RecordKind::Vote => self.vote = true,
            RecordKind::SnapshotRef | RecordKind::Wrap => {}
        }
    }

    /// Whether `record` (one that frees space) may be written before these
    /// and replay still finds the same state. A vote may unless an older
    /// vote of its group waits (replay keeps the last vote written); a
    /// snapshot reference always may (replay keeps the one that covers
    /// most); a purge may go before entries above its index (replay appends
    /// them after the purge point all the same), never before an entry it
    /// removes, nor before another truncation or purge of its group.
    fn lets_jump(&self, record: &Pending) -> bool {
        match record.kind {
            RecordKind::Vote => !self.vote,
            RecordKind::SnapshotRef => true,
            RecordKind::Purge => {
                !self.truncation_or_purge && self.lowest_entry.is_none_or(|lowest| lowest > record.index)
            }
            RecordKind::Entry | RecordKind::Truncate | RecordKind::Wrap => false,
        }
    }
}

impl Pending {
    /// Records that give ring space back (or are needed before any can be
    /// given back: a vote, for an election that lets a group go on) take
    /// space from the reserve entries may not touch.
    fn frees_space(&self) -> bool {
        matches!(self.kind, RecordKind::Vote | RecordKind::SnapshotRef | RecordKind::Purge)
    }
}

struct PendingRead {
    group: u32,
    index: u64,
    term: u64,
    sequence: u64,
}

pub struct ShardLog {
    pub(super) queue: Box<dyn QueuePair>,
    pub(super) region: ShardRegion,
    pub(super) options: LogOptions,
    pub(super) lba_bytes: usize,
    pub(super) ring_blocks: u64,
    pub(super) epoch: u64,
    pub(super) groups: BTreeMap<u32, GroupState>,
    pending: VecDeque<Pending>,
    next_operation: u64,
    /// Every operation up to this one is durable.
    durable_operation: u64,
    /// Operations above `durable_operation` that are durable already: records
    /// placed ahead of older ones that waited for ring space.
    durable_ahead: BTreeSet<u64>,
    /// Ring blocks entries may not take: they stay for the records that free
    /// space (votes, snapshot references, purges), so a full ring can always
    /// be emptied again.
    reserve_blocks: u64,
    pub(super) next_sequence: u64,
    pub(super) durable_sequence: u64,
    pub(super) last_crc: u32,
    pub(super) tail_offset: u64,
    pub(super) head_offset: u64,
    pub(super) head_sequence: u64,
    pub(super) head_previous_crc: u32,
    pub(super) used_blocks: u64,
    pub(super) ring: VecDeque<RingRecord>,
    pub(super) checkpoint_generation: u64,
    inflight: VecDeque<InflightWrite>,
    flush_tag: Option<u64>,
    checkpoint_write: Option<CheckpointWrite>,
    next_tag: u64,
    cache_order: VecDeque<(u32, u64, u64)>,
    cache_bytes: usize,
    reads: HashMap<u64, PendingRead>,
    reads_done: HashMap<u64, Result<Entry, WalError>>,
    pub(super) snapshot_area: SnapshotArea,
    snapshot_writes: BTreeMap<u64, SnapshotWrite>,
    /// Per group, the snapshots refused for lack of room, so whoever asked
    /// for one learns it will not come.
    snapshots_refused: BTreeMap<u32, u64>,
    snapshot_reads: HashMap<u64, (u32, SnapshotRef)>,
    snapshot_reads_done: HashMap<u64, Result<Vec<u8>, WalError>>,
    failed: Option<String>,
    completions: Vec<Completion>,
    waiters: Vec<(u64, Waker)>,
    read_waiters: Vec<(u64, Waker)>,
    /// Waiters for snapshot writes, by their tag.
    snapshot_waiters: Vec<(u64, Waker)>,
    blocked_on_space: bool,
    /// Leading ring records known reclaimable, and the blocks they hold.
    reclaim_scan: (usize, u64),
    /// Reads and snapshot writes waiting for a queue slot.
    deferred: VecDeque<(Command, u64)>,
    stats: LogStats,
    stages: LogStages,
}

impl ShardLog {
    /// Opens the log of `region`: reads its checkpoint and replays the ring
    /// up to the exact tail. The queue pair must be idle.
    pub fn open(
        queue: Box<dyn QueuePair>,
        region: ShardRegion,
        options: LogOptions,
    ) -> Result<ShardLog, WalError> {
        let lba_bytes = queue.info().lba_bytes as usize;
        if options.batch_bytes_max < lba_bytes || options.batch_bytes_max % lba_bytes != 0 {
            return Err(WalError::Layout(format!(
                "batch_bytes_max = {} must be a positive multiple of the {lba_bytes}-byte block",
                options.batch_bytes_max
            )));
        }
        if options.inflight_writes_max == 0 || options.inflight_writes_max > INFLIGHT_WRITES_LIMIT {
            return Err(WalError::Layout(format!(
                "inflight_writes_max = {} must be from 1 to {INFLIGHT_WRITES_LIMIT}",
                options.inflight_writes_max
            )));
        }
        if options.inflight_writes_max + 2 >= options.queue_depth {
            return Err(WalError::Layout(format!(
                "inflight_writes_max = {} leaves no room in a queue of depth {} for reads (a checkpoint and a \
                 flush need a slot each too); lower inflight_writes_max or raise queue_depth",
                options.inflight_writes_max, options.queue_depth
            )));
        }
        if options.batch_bytes_max > BATCH_BYTES_LIMIT {
            return Err(WalError::Layout(format!(
                "batch_bytes_max = {} must be at most {BATCH_BYTES_LIMIT}",
                options.batch_bytes_max
            )));
        }
        let ring_blocks = region.ring_blocks();
        let mut log = ShardLog {
            queue,
            region,
            options,
            lba_bytes,
            ring_blocks,
            epoch: new_epoch(),
            groups: BTreeMap::new(),
            pending: VecDeque::new(),
            next_operation: 1,
            durable_operation: 0,
            durable_ahead: BTreeSet::new(),
            reserve_blocks: reserve_blocks(ring_blocks),
            next_sequence: 1,
            durable_sequence: 0,
            last_crc: 0,
            tail_offset: 0,
            head_offset: 0,
            head_sequence: 1,
            head_previous_crc: 0,
            used_blocks: 0,
            ring: VecDeque::new(),
            checkpoint_generation: 1,
            inflight: VecDeque::new(),
            flush_tag: None,
            checkpoint_write: None,
            next_tag: 1,
            cache_order: VecDeque::new(),
            cache_bytes: 0,
            reads: HashMap::new(),
            reads_done: HashMap::new(),
            snapshot_area: SnapshotArea::new(region.snapshot_blocks),
            snapshot_writes: BTreeMap::new(),
            snapshots_refused: BTreeMap::new(),
            snapshot_reads: HashMap::new(),
            snapshot_reads_done: HashMap::new(),
            failed: None,
            completions: Vec::new(),
            waiters: Vec::new(),
            read_waiters: Vec::new(),
            snapshot_waiters: Vec::new(),
            blocked_on_space: false,
            reclaim_scan: (0, 0),
            deferred: VecDeque::new(),
            stats: LogStats::default(),
            stages: LogStages::default(),
        };
        super::recovery::recover(&mut log)?;
        Ok(log)
    }

    pub fn shard(&self) -> u32 {
        self.region.shard
    }

    pub fn info(&self) -> &NamespaceInfo {
        self.queue.info()
    }

    /// The largest entry payload the log takes.
    pub fn entry_bytes_max(&self) -> usize {
        self.options.batch_bytes_max - HEADER_BYTES
    }

    /// The groups that have any state in this log.
    pub fn groups(&self) -> Vec<u32> {
        self.groups.keys().copied().collect()
    }

    /// First and last index of a group's entries, if it has any.
    pub fn entry_range(&self, group: u32) -> Option<(u64, u64)> {
        let state = self.groups.get(&group)?;
        Some((state.entries.front()?.index, state.entries.back()?.index))
    }

    /// The last index appended (or purged) in `group`.
    pub fn last_index(&self, group: u32) -> Option<u64> {
        self.groups.get(&group).and_then(GroupState::last_index)
    }

    #[cfg(test)]
    pub fn term_of(&self, group: u32, index: u64) -> Option<u64> {
        let state = self.groups.get(&group)?;
        state.position(index).map(|position| state.entries[position].term)
    }

    pub fn vote(&self, group: u32) -> Option<&[u8]> {
        self.groups.get(&group).and_then(|state| state.vote.as_deref())
    }

    pub fn purged(&self, group: u32) -> Option<(u64, u64)> {
        self.groups.get(&group).and_then(|state| state.purged)
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            head_sequence: self.head_sequence,
            next_sequence: self.next_sequence,
            used_bytes: self.used_blocks * self.lba_bytes as u64,
            ring_bytes: self.ring_blocks * self.lba_bytes as u64,
            ..self.stats.clone()
        }
    }

    /// Bytes of the ring that `group`'s live entries hold: what purging
    /// its whole log would give back.
    pub fn group_log_bytes(&self, group: u32) -> u64 {
        self.groups.get(&group).map_or(0, |state| state.entry_blocks * self.lba_bytes as u64)
    }

    /// The group whose oldest live entry keeps the head of the ring where it
    /// is: no ring space comes back until that group purges it.
    pub fn head_pinned_by(&self) -> Option<u32> {
        let record = self.ring.get(self.reclaim_scan.0)?;
        (record.kind == RecordKind::Entry && record.sequence <= self.durable_sequence).then_some(record.group)
    }

    /// How full the ring is, in percent.
    pub fn used_percent(&self) -> u64 {
        self.used_blocks * 100 / self.ring_blocks.max(1)
    }

    /// Ring bytes entries may not take (kept for votes, snapshot references
    /// and purges).
    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_blocks * self.lba_bytes as u64
    }

    /// Latency of the log's stages since it opened.
    pub fn stages(&self) -> &LogStages {
        &self.stages
    }

    /// Why the log stopped, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn check_usable(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(reason) => Err(WalError::Failed { shard: self.region.shard, reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn group_mut(&mut self, group: u32) -> Result<&mut GroupState, WalError> {
        if !self.groups.contains_key(&group) && self.groups.len() >= self.region.groups_max as usize {
            return Err(WalError::TooManyGroups { shard: self.region.shard, max: self.region.groups_max });
        }
        Ok(self.groups.entry(group).or_default())
    }

    fn queue_operation(
        &mut self,
        kind: RecordKind,
        group: u32,
        index: u64,
        term: u64,
        payload: Rc<[u8]>,
    ) -> Ticket {
        let operation = self.next_operation;
        self.next_operation += 1;
        self.stats.operations += 1;
        self.pending.push_back(Pending {
            operation,
            queued_at: Instant::now(),
            kind,
            group,
            index,
            term,
            payload,
        });
        Ticket(operation)
    }

    /// Queues entry `index` of `group`. The entry is readable at once and
    /// durable when [`ShardLog::is_durable`] says so.
    pub fn append(&mut self, group: u32, index: u64, term: u64, payload: &[u8]) -> Result<Ticket, WalError> {
        self.check_usable()?;
        if payload.len() > self.entry_bytes_max() {
            return Err(WalError::EntryTooLarge { bytes: payload.len(), max: self.entry_bytes_max() });
        }
        let state = self.group_mut(group)?;
        if let Some(expected) = state.next_index() {
            if index != expected {
                return Err(WalError::IndexGap { group, index, expected });
            }
        }
        let payload: Rc<[u8]> = Rc::from(payload);
        let operation = self.next_operation;
        let state = self.groups.get_mut(&group).expect("group exists");
        state.entries.push_back(EntryMeta {
            index,
            term,
            operation,
            placed: None,
            cached: Some(payload.clone()),
        });
        self.cache_bytes += payload.len();
        let ticket = self.queue_operation(RecordKind::Entry, group, index, term, payload);
        Ok(ticket)
    }

    /// Queues the vote of `group`.
    pub fn save_vote(&mut self, group: u32, vote: &[u8]) -> Result<Ticket, WalError> {
        self.check_usable()?;
        if vote.len() > checkpoint::VOTE_BYTES_MAX {
            return Err(WalError::VoteTooLarge { bytes: vote.len(), max: checkpoint::VOTE_BYTES_MAX });
        }
        self.group_mut(group)?.vote = Some(vote.to_vec());
        Ok(self.queue_operation(RecordKind::Vote, group, 0, 0, Rc::from(vote)))
    }

    /// Removes entries of `group` at `index` and above. Readers stop seeing
    /// them at once; the removal is durable with the ticket.
    pub fn truncate(&mut self, group: u32, index: u64) -> Result<Ticket, WalError> {
        self.check_usable()?;
        let state = self.group_mut(group)?;
        if let Some((purged, _)) = state.purged {
            if index <= purged {
                return Err(WalError::TruncatePurged { group, index, purged });
            }
        }
        state.truncate(index);
        Ok(self.queue_operation(RecordKind::Truncate, group, index, 0, Rc::from(&[][..])))
    }

    /// Removes entries of `group` at `index` and below; `term` is the term
    /// of entry `index`. Purging past the last entry empties the group, and
    /// the next append must then be `index + 1`.
    pub fn purge(&mut self, group: u32, index: u64, term: u64) -> Result<Ticket, WalError> {
        self.check_usable()?;
        let state = self.group_mut(group)?;
        if state.purged.is_some_and(|(purged, _)| purged >= index) {
            return Ok(self.queue_operation(RecordKind::Purge, group, index, term, Rc::from(&[][..])));
        }
        state.purge(index, term);
        Ok(self.queue_operation(RecordKind::Purge, group, index, term, Rc::from(&[][..])))
    }

    /// `Ok(true)` once the operation is durable; an error if the log failed
    /// before it was.
    pub fn is_durable(&self, ticket: Ticket) -> Result<bool, WalError> {
        if self.operation_durable(ticket.0) {
            return Ok(true);
        }
        self.check_usable()?;
        Ok(false)
    }

    fn operation_durable(&self, operation: u64) -> bool {
        operation <= self.durable_operation || self.durable_ahead.contains(&operation)
    }

    /// Registers a waker for a ticket, woken when it becomes durable or the
    /// log fails.
    pub fn wake_when_durable(&mut self, ticket: Ticket, waker: &Waker) {
        self.waiters.push((ticket.0, waker.clone()));
    }

    /// Whether anything is queued or in flight.
    pub fn is_idle(&self) -> bool {
        (self.pending.is_empty() || self.failed.is_some())
            && self.queue.in_flight() == 0
            && self.checkpoint_write.is_none()
            && self.snapshot_writes.is_empty()
            && self.deferred.is_empty()
    }

    /// The eventfd of the queue pair, readable when a completion arrives.
    pub fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        self.queue.completion_fd()
    }

    /// One turn of the reactor: reaps completions, sends everything queued
    /// since the last turn as one write per ring stretch, and reclaims ring
    /// space. Returns whether anything happened.
    pub fn tick(&mut self) -> bool {
        let mut progress = self.reap();
        progress |= self.submit_writes();
        progress |= self.submit_deferred();
        progress |= self.maybe_reclaim();
        // Hand the new commands to the device now, not a tick later.
        progress |= self.reap();
        progress
    }

    #[cfg(any(test, feature = "testing"))]
    /// Blocks until `ticket` is durable. For tests, tools and startup: the
    /// reactor uses [`ShardLog::tick`] and wakers instead.
    pub fn wait_durable(&mut self, ticket: Ticket) -> Result<(), WalError> {
        loop {
            self.tick();
            if self.is_durable(ticket)? {
                return Ok(());
            }
            if self.queue.in_flight() > 0 {
                self.queue
                    .wait()
                    .map_err(|source| WalError::Device { what: "waiting for the log", source })?;
            } else if !self.pending.is_empty() && self.blocked_on_space {
                return Err(WalError::Full { shard: self.region.shard, ring_bytes: self.stats().ring_bytes });
            }
        }
    }

    /// Reads entry `index` of `group`: from memory when cached, else from
    /// the device (finish with [`ShardLog::take_read`]).
    pub fn read(&mut self, group: u32, index: u64) -> Result<ReadRequest, WalError> {
        self.check_usable()?;
        let not_found = |state: Option<&GroupState>| {
            let (first, last) = state
                .and_then(|state| Some((state.entries.front()?.index, state.entries.back()?.index)))
                .unwrap_or((0, 0));
            WalError::NotFound { group, index, first, last }
        };
        let Some(state) = self.groups.get(&group) else {
            return Err(not_found(None));
        };
        let Some(position) = state.position(index) else {
            return Err(not_found(Some(state)));
        };
        let entry = &state.entries[position];
        if let Some(payload) = &entry.cached {
            return Ok(ReadRequest::Ready(Entry {
                group,
                index,
                term: entry.term,
                payload: payload.clone(),
            }));
        }
        let placement = entry.placed.expect("an entry without a cached payload has been placed in the ring");
        let term = entry.term;
        let tag = TAG_READ | self.take_tag();
        let mut buffer = self.queue.allocate(placement.blocks as usize * self.lba_bytes);
        buffer.set_len(placement.blocks as usize * self.lba_bytes);
        let lba = self.region.ring_first_block() + placement.offset;
        self.submit_side_command(Command::Read { lba, buffer }, tag)
            .map_err(|source| WalError::Device { what: "reading an entry", source })?;
        self.stats.reads_from_device += 1;
        self.reads.insert(tag, PendingRead { group, index, term, sequence: placement.sequence });
        Ok(ReadRequest::Pending(ReadTicket(tag)))
    }

    /// The result of a device read, once it has completed.
    pub fn take_read(&mut self, ticket: ReadTicket) -> Option<Result<Entry, WalError>> {
        self.reads_done.remove(&ticket.0)
    }

    pub fn wake_when_read(&mut self, ticket: ReadTicket, waker: &Waker) {
        self.read_waiters.push((ticket.0, waker.clone()));
    }

    #[cfg(any(test, feature = "testing"))]
    /// Reads an entry, blocking on the device if needed. For tests and tools.
    pub fn read_blocking(&mut self, group: u32, index: u64) -> Result<Entry, WalError> {
        let ticket = match self.read(group, index)? {
            ReadRequest::Ready(entry) => return Ok(entry),
            ReadRequest::Pending(ticket) => ticket,
        };
        loop {
            self.tick();
            if let Some(result) = self.take_read(ticket) {
                return result;
            }
            self.check_usable()?;
            self.queue.wait().map_err(|source| WalError::Device { what: "reading an entry", source })?;
        }
    }

    /// Writes `data` as the snapshot of `group` covering the log up to
    /// entry `index` of `term`. It becomes the group's current snapshot when
    /// [`ShardLog::is_snapshot_durable`] says so; until then the previous
    /// one stays current and its space untouched.
    pub fn write_snapshot(
        &mut self,
        group: u32,
        index: u64,
        term: u64,
        data: &[u8],
    ) -> Result<SnapshotTicket, WalError> {
        self.check_usable()?;
        self.group_mut(group)?;
        let blocks = snapshot_format::blob_blocks(data.len(), self.lba_bytes);
        let area_bytes = self.snapshot_area.blocks() * self.lba_bytes as u64;
        if blocks > self.snapshot_area.blocks() {
            *self.snapshots_refused.entry(group).or_default() += 1;
            return Err(WalError::SnapshotTooLarge { group, bytes: data.len() as u64, area_bytes });
        }
        let Some(offset) = self.snapshot_area.allocate(blocks) else {
            *self.snapshots_refused.entry(group).or_default() += 1;
            return Err(WalError::SnapshotAreaFull {
                shard: self.region.shard,
                bytes: data.len() as u64,
                used_bytes: self.snapshot_area.used_blocks() * self.lba_bytes as u64,
                area_bytes,
            });
        };
        let mut buffer = self.queue.allocate(blocks as usize * self.lba_bytes);
        buffer.set_len(blocks as usize * self.lba_bytes);
        let crc = snapshot_format::encode_blob(group, index, term, self.region.log_id, data, &mut buffer);
        let reference = SnapshotRef { offset, bytes: data.len() as u64, index, term, crc };
        let tag = TAG_SNAPSHOT_WRITE | self.take_tag();
        let lba = self.region.snapshot_first_block() + offset;
        let fua = self.options.durability == Durability::Fua;
        if let Err(source) = self.submit_side_command(Command::Write { lba, buffer, fua }, tag) {
            self.snapshot_area.release(offset);
            return Err(WalError::Device { what: "writing a snapshot", source });
        }
        self.stats.snapshots_written += 1;
        self.stats.snapshot_bytes_written += data.len() as u64;
        self.snapshot_writes.insert(tag, SnapshotWrite { group, reference, reference_operation: None });
        Ok(SnapshotTicket(tag))
    }

    /// The largest snapshot [`ShardLog::write_snapshot`] can place now, in
    /// bytes of blob (its own header included): the longest extent of the
    /// snapshot area that no current snapshot, nor one being written, holds.
    pub fn snapshot_room_bytes(&self) -> u64 {
        self.snapshot_area.largest_free_blocks() * self.lba_bytes as u64
    }

    /// The snapshot area's bytes that no group's current snapshot holds:
    /// the most room a snapshot could find once the writes in flight are
    /// done (a current snapshot stays until its group's next one is
    /// durable).
    pub fn snapshot_area_uncommitted_bytes(&self) -> u64 {
        let current: u64 = self
            .groups
            .values()
            .filter_map(|state| state.snapshot)
            .map(|snapshot| snapshot.blocks(self.lba_bytes))
            .sum();
        self.snapshot_area.blocks().saturating_sub(current) * self.lba_bytes as u64
    }

    /// How many snapshots of `group` were refused for lack of room.
    pub fn snapshots_refused(&self, group: u32) -> u64 {
        self.snapshots_refused.get(&group).copied().unwrap_or(0)
    }

    /// The whole snapshot area, in bytes.
    pub fn snapshot_area_bytes(&self) -> u64 {
        self.snapshot_area.blocks() * self.lba_bytes as u64
    }

    /// `Ok(true)` once the snapshot is durable and current.
    pub fn is_snapshot_durable(&self, ticket: SnapshotTicket) -> Result<bool, WalError> {
        self.check_usable()?;
        Ok(!self.snapshot_writes.contains_key(&ticket.0))
    }

    /// Registers a waker for a snapshot write, woken when the operation
    /// that finishes it is durable (or the log fails).
    pub fn wake_when_snapshot_durable(&mut self, ticket: SnapshotTicket, waker: &Waker) {
        self.snapshot_waiters.push((ticket.0, waker.clone()));
    }

    /// Blocks until the snapshot is durable. For tests and tools.
    pub fn wait_snapshot_durable(&mut self, ticket: SnapshotTicket) -> Result<(), WalError> {
        loop {
            self.tick();
            if self.is_snapshot_durable(ticket)? {
                return Ok(());
            }
            if self.queue.in_flight() > 0 {
                self.queue
                    .wait()
                    .map_err(|source| WalError::Device { what: "waiting for a snapshot", source })?;
            }
        }
    }

    /// The current snapshot of `group`, if it has one.
    pub fn snapshot(&self, group: u32) -> Option<SnapshotRef> {
        self.groups.get(&group).and_then(|state| state.snapshot)
    }

    /// Starts reading the current snapshot of `group`; `None` if it has none.
    pub fn read_snapshot(&mut self, group: u32) -> Result<Option<ReadTicket>, WalError> {
        self.check_usable()?;
        let Some(reference) = self.snapshot(group) else { return Ok(None) };
        let blocks = reference.blocks(self.lba_bytes) as usize;
        let mut buffer = self.queue.allocate(blocks * self.lba_bytes);
        buffer.set_len(blocks * self.lba_bytes);
        let tag = TAG_SNAPSHOT_READ | self.take_tag();
        let lba = self.region.snapshot_first_block() + reference.offset;
        self.submit_side_command(Command::Read { lba, buffer }, tag)
            .map_err(|source| WalError::Device { what: "reading a snapshot", source })?;
        self.snapshot_reads.insert(tag, (group, reference));
        Ok(Some(ReadTicket(tag)))
    }

    /// The data of a snapshot read, once it has completed.
    pub fn take_snapshot_read(&mut self, ticket: ReadTicket) -> Option<Result<Vec<u8>, WalError>> {
        self.snapshot_reads_done.remove(&ticket.0)
    }

    #[cfg(test)]
    /// Reads the current snapshot of `group`, blocking. For tests and tools.
    pub fn read_snapshot_blocking(&mut self, group: u32) -> Result<Option<(SnapshotRef, Vec<u8>)>, WalError> {
        let Some(reference) = self.snapshot(group) else { return Ok(None) };
        let ticket = self.read_snapshot(group)?.expect("the group has a snapshot");
        loop {
            self.tick();
            if let Some(result) = self.take_snapshot_read(ticket) {
                return result.map(|data| Some((reference, data)));
            }
            self.check_usable()?;
            self.queue.wait().map_err(|source| WalError::Device { what: "reading a snapshot", source })?;
        }
    }

    /// Queue slots kept for the log's own writes: every group-commit write
    /// that may be in flight, a checkpoint and a flush.
    fn reserved_slots(&self) -> usize {
        self.options.inflight_writes_max + 2
    }

    /// Submits a read or a snapshot write if the queue has a slot beyond the
    /// reserved ones, else holds it (in order) for a later tick: a side
    /// command must never take the slot a durable write needs.
    fn submit_side_command(&mut self, command: Command, tag: u64) -> Result<(), crate::nvme::NvmeError> {
        if !self.deferred.is_empty()
            || self.queue.in_flight() + self.reserved_slots() >= self.options.queue_depth
        {
            self.deferred.push_back((command, tag));
            return Ok(());
        }
        self.submit(command, tag).map_err(|rejected| rejected.error)
    }

    /// Hands one command to the queue pair, counting a refusal as a device error.
    fn submit(&mut self, command: Command, tag: u64) -> Result<(), Box<crate::nvme::Rejected>> {
        let submitted = self.queue.submit(command, tag);
        if submitted.is_err() {
            self.stats.device_errors += 1;
        }
        submitted
    }

    /// Submits held side commands while slots allow.
    fn submit_deferred(&mut self) -> bool {
        let mut progress = false;
        while !self.deferred.is_empty()
            && self.queue.in_flight() + self.reserved_slots() < self.options.queue_depth
        {
            let (command, tag) = self.deferred.pop_front().expect("not empty");
            if let Err(rejected) = self.submit(command, tag) {
                self.fail(format!("the device refused a read or snapshot write: {}", rejected.error));
                return progress;
            }
            progress = true;
        }
        progress
    }

    fn take_tag(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    fn fail(&mut self, reason: String) {
        if self.failed.is_none() {
            tracing::error!(shard = self.region.shard, %reason, "the shard log failed and stops");
            self.failed = Some(reason);
        }
        for (_, waker) in self.waiters.drain(..) {
            waker.wake();
        }
        for (_, waker) in self.read_waiters.drain(..) {
            waker.wake();
        }
        for (_, waker) in self.snapshot_waiters.drain(..) {
            waker.wake();
        }
    }

    /// Free ring blocks, not counting the ones a checkpoint is about to free.
    fn free_blocks(&self) -> u64 {
        self.ring_blocks - self.used_blocks
    }

    /// Packs queued records into writes, as long as writes may be in flight
    /// and the ring has room. Records go in the order they were queued;
    /// when the oldest waits for room, records that free space go ahead of
    /// it where that cannot change what a replay finds ([`Self::may_jump`]).
    fn submit_writes(&mut self) -> bool {
        let mut progress = false;
        self.blocked_on_space = false;
        while !self.pending.is_empty()
            && self.failed.is_none()
            && self.inflight.len() < self.options.inflight_writes_max
        {
            if self.tail_offset == self.ring_blocks {
                self.tail_offset = 0;
            }
            let contiguous = self.ring_blocks - self.tail_offset;
            let first = &self.pending[0];
            let first_blocks = format::record_blocks(first.payload.len(), self.lba_bytes) as u64;
            let first_reserve = if first.frees_space() { 0 } else { self.reserve_blocks };
            if first_blocks > contiguous {
                // Wrap only when the record then fits: a wrap that leaves
                // it waiting would only have wasted the blocks.
                if self.free_blocks() >= contiguous + first_blocks + first_reserve {
                    self.submit_wrap(contiguous);
                    progress = true;
                    continue;
                }
            } else {
                let batch = self.take_in_order(contiguous);
                if !batch.is_empty() {
                    self.submit_batch(batch);
                    progress = true;
                    continue;
                }
            }
            let jumpers = self.take_jumpers(contiguous);
            if jumpers.is_empty() {
                self.blocked_on_space = true;
                break;
            }
            self.submit_batch(jumpers);
            progress = true;
        }
        progress
    }

    /// The blocks a write starting at the tail may take now.
    fn write_room(&self, contiguous: u64) -> u64 {
        contiguous.min(self.free_blocks()).min((self.options.batch_bytes_max / self.lba_bytes) as u64)
    }

    /// The longest run of queued records, oldest first, that fits one write
    /// at the tail: entries leave the reserve free, records that free
    /// space may use it.
    fn take_in_order(&mut self, contiguous: u64) -> Vec<Pending> {
        let room = self.write_room(contiguous);
        let free = self.free_blocks();
        let mut count = 0;
        let mut blocks = 0;
        for pending in &self.pending {
            let record = format::record_blocks(pending.payload.len(), self.lba_bytes) as u64;
            let reserve = if pending.frees_space() { 0 } else { self.reserve_blocks };
            if blocks + record > room || blocks + record + reserve > free {
                break;
            }
            blocks += record;
            count += 1;
        }
        self.pending.drain(..count).collect()
    }

    /// Records that free space and may go ahead of older records waiting
    /// for room, as many as one write at the tail takes, in queue order.
    fn take_jumpers(&mut self, contiguous: u64) -> Vec<Pending> {
        let room = self.write_room(contiguous);
        let mut chosen = Vec::new();
        let mut blocks = 0;
        let mut ahead: BTreeMap<u32, Waiting> = BTreeMap::new();
        for (position, pending) in self.pending.iter().enumerate() {
            let record = format::record_blocks(pending.payload.len(), self.lba_bytes) as u64;
            let waiting = ahead.entry(pending.group).or_default();
            if pending.frees_space() && blocks + record <= room && waiting.lets_jump(pending) {
                chosen.push(position);
                blocks += record;
                continue;
            }
            waiting.add(pending);
        }
        let mut taken = Vec::with_capacity(chosen.len());
        for position in chosen.into_iter().rev() {
            taken.push(self.pending.remove(position).expect("a chosen position is queued"));
        }
        taken.reverse();
        taken
    }

    fn record_header(
        &self,
        kind: RecordKind,
        group: u32,
        index: u64,
        term: u64,
        payload_len: usize,
        blocks: u64,
    ) -> RecordHeader {
        RecordHeader {
            kind,
            sequence: self.next_sequence,
            epoch: self.epoch,
            durable_before: self.durable_sequence + 1,
            group,
            blocks: blocks as u32,
            index,
            term,
            payload_len: payload_len as u32,
            previous_crc: self.last_crc,
            log_id: self.region.log_id,
        }
    }

    fn place(&mut self, header: &RecordHeader, crc: u32, offset: u64, ring_blocks: u64) {
        self.ring.push_back(RingRecord {
            sequence: header.sequence,
            offset,
            blocks: ring_blocks,
            kind: header.kind,
            group: header.group,
            index: header.index,
            crc,
        });
        self.last_crc = crc;
        self.next_sequence += 1;
        self.stats.records_written += 1;
    }

    /// Marks the rest of the ring unused: the next record goes to its start.
    fn submit_wrap(&mut self, contiguous: u64) {
        let header = self.record_header(RecordKind::Wrap, 0, 0, 0, 0, contiguous);
        let mut buffer = self.queue.allocate(self.lba_bytes);
        let crc = format::encode_record(&header, &[], &mut buffer);
        let offset = self.tail_offset;
        self.place(&header, crc, offset, contiguous);
        self.used_blocks += contiguous;
        self.tail_offset = 0;
        self.send_write(offset, buffer, header.sequence, Vec::new());
    }

    /// Writes `batch` as one write at the tail.
    fn submit_batch(&mut self, batch: Vec<Pending>) {
        let blocks: u64 = batch
            .iter()
            .map(|pending| format::record_blocks(pending.payload.len(), self.lba_bytes) as u64)
            .sum();
        let mut buffer = self.queue.allocate(blocks as usize * self.lba_bytes);
        let offset = self.tail_offset;
        let mut at = 0usize;
        let mut operations = Vec::with_capacity(batch.len());
        for pending in batch {
            self.stages.queue_wait.record(pending.queued_at.elapsed());
            let record_blocks = format::record_blocks(pending.payload.len(), self.lba_bytes) as u64;
            let header = self.record_header(
                pending.kind,
                pending.group,
                pending.index,
                pending.term,
                pending.payload.len(),
                record_blocks,
            );
            let end = at + record_blocks as usize * self.lba_bytes;
            let crc = format::encode_record(&header, &pending.payload, &mut buffer[at..end]);
            let record_offset = offset + (at / self.lba_bytes) as u64;
            if pending.kind == RecordKind::Entry {
                // The entry may have been truncated since it was queued; then
                // the record is written but nothing points at it.
                if let Some(state) = self.groups.get_mut(&pending.group) {
                    if let Some(position) = state.position(pending.index) {
                        let entry = &mut state.entries[position];
                        if entry.operation == pending.operation {
                            entry.placed = Some(Placement {
                                sequence: header.sequence,
                                offset: record_offset,
                                blocks: record_blocks as u32,
                            });
                            state.entry_blocks += record_blocks;
                            self.cache_order.push_back((pending.group, pending.index, header.sequence));
                        }
                    }
                }
            }
            self.place(&header, crc, record_offset, record_blocks);
            operations.push(pending.operation);
            at = end;
        }
        self.used_blocks += blocks;
        self.tail_offset += blocks;
        self.send_write(offset, buffer, self.next_sequence - 1, operations);
    }

    fn send_write(&mut self, offset: u64, buffer: DmaBuf, last_sequence: u64, operations: Vec<u64>) {
        let tag = TAG_WRITE | self.take_tag();
        let bytes = buffer.len() as u64;
        let lba = self.region.ring_first_block() + offset;
        assert!(
            offset + bytes / self.lba_bytes as u64 <= self.ring_blocks,
            "a log write at ring offset {offset} of {bytes} bytes runs past the ring of {} blocks",
            self.ring_blocks
        );
        let fua = self.options.durability == Durability::Fua;
        match self.submit(Command::Write { lba, buffer, fua }, tag) {
            Ok(()) => {
                self.stats.writes += 1;
                self.stats.bytes_written += bytes;
                self.inflight.push_back(InflightWrite {
                    tag,
                    submitted_at: Instant::now(),
                    last_sequence,
                    operations,
                    state: WriteState::Writing,
                });
            }
            Err(rejected) => {
                self.fail(format!("the device refused a log write at LBA {lba}: {}", rejected.error))
            }
        }
    }

    /// Handles every completion the device has. Returns whether any came.
    fn reap(&mut self) -> bool {
        let mut completions = std::mem::take(&mut self.completions);
        self.queue.process_completions(&mut completions);
        let progress = !completions.is_empty();
        for completion in completions.drain(..) {
            self.complete(completion);
        }
        self.completions = completions;
        if progress {
            self.advance_durable();
        }
        progress
    }

    fn complete(&mut self, completion: Completion) {
        let tag = completion.tag;
        if completion.result.is_err() {
            self.stats.device_errors += 1;
        }
        match tag & TAG_KIND_MASK {
            TAG_WRITE => {
                let Some(write) = self.inflight.iter_mut().find(|write| write.tag == tag) else {
                    panic!("completion of unknown log write {tag:#x}");
                };
                if let Err(error) = completion.result {
                    self.fail(format!("a log write failed: {error}"));
                    return;
                }
                write.state = match self.options.durability {
                    Durability::Flush => WriteState::Written,
                    Durability::Fua | Durability::None => WriteState::Durable,
                };
            }
            TAG_FLUSH => {
                assert_eq!(self.flush_tag, Some(tag), "completion of an unknown flush");
                self.flush_tag = None;
                if let Err(error) = completion.result {
                    self.fail(format!("a log flush failed: {error}"));
                    return;
                }
                for write in self.inflight.iter_mut().filter(|write| write.state == WriteState::Flushing) {
                    write.state = WriteState::Durable;
                }
                self.stats.flushes += 1;
            }
            TAG_CHECKPOINT => {
                let write = self.checkpoint_write.take().expect("a checkpoint write was in flight");
                assert_eq!(write.tag, tag, "completion of an unknown checkpoint write");
                if let Err(error) = completion.result {
                    self.fail(format!("a checkpoint write failed: {error}"));
                    return;
                }
                self.apply_checkpoint(write);
            }
            TAG_SNAPSHOT_WRITE => {
                if let Err(error) = completion.result {
                    self.fail(format!("a snapshot write failed: {error}"));
                    return;
                }
                let write = self.snapshot_writes.get(&tag).expect("completion of an unknown snapshot write");
                let (group, reference) = (write.group, write.reference);
                let mut payload = [0u8; snapshot_format::REF_BYTES];
                reference.encode(&mut payload);
                let ticket = self.queue_operation(
                    RecordKind::SnapshotRef,
                    group,
                    reference.index,
                    reference.term,
                    Rc::from(&payload[..]),
                );
                self.snapshot_writes.get_mut(&tag).expect("still there").reference_operation = Some(ticket.0);
            }
            TAG_SNAPSHOT_READ => {
                let (group, reference) =
                    self.snapshot_reads.remove(&tag).expect("completion of an unknown snapshot read");
                let result = match completion.result {
                    Err(error) => Err(WalError::Device { what: "reading a snapshot", source: error }),
                    Ok(()) => {
                        let buffer = completion.buffer.expect("a read returns its buffer");
                        match snapshot_format::decode_blob(&buffer, group, self.region.log_id, &reference) {
                            Ok(data) => Ok(data.to_vec()),
                            Err(reason) => {
                                let reason = format!(
                                    "the snapshot of group {group} at LBA {} is damaged: {reason}",
                                    self.region.snapshot_first_block() + reference.offset
                                );
                                self.fail(reason.clone());
                                Err(WalError::Corrupt(reason))
                            }
                        }
                    }
                };
                self.snapshot_reads_done.insert(tag, result);
                self.wake_readers(tag);
            }
            TAG_READ => {
                let read = self.reads.remove(&tag).expect("completion of an unknown read");
                let result = match completion.result {
                    Err(error) => Err(WalError::Device { what: "reading an entry", source: error }),
                    Ok(()) => self.decode_read(&read, completion.buffer.expect("a read returns its buffer")),
                };
                self.reads_done.insert(tag, result);
                self.wake_readers(tag);
            }
            _ => panic!("completion with a tag no log operation uses: {tag:#x}"),
        }
    }

    fn wake_readers(&mut self, tag: u64) {
        wake_waiting_for(&mut self.read_waiters, tag);
    }

    fn decode_read(&mut self, read: &PendingRead, buffer: DmaBuf) -> Result<Entry, WalError> {
        let decoded = format::decode_record(&buffer, self.lba_bytes);
        match decoded {
            Ok((header, payload, _))
                if header.kind == RecordKind::Entry
                    && header.sequence == read.sequence
                    && header.group == read.group
                    && header.index == read.index =>
            {
                Ok(Entry {
                    group: read.group,
                    index: read.index,
                    term: read.term,
                    payload: Rc::from(payload),
                })
            }
            other => {
                let found = match other {
                    Ok((header, _, _)) => {
                        format!("record {} of group {} index {}", header.sequence, header.group, header.index)
                    }
                    Err(error) => error.to_string(),
                };
                let reason = format!(
                    "entry {} of group {} (record {}) read back as {found}",
                    read.index, read.group, read.sequence
                );
                self.fail(reason.clone());
                Err(WalError::Corrupt(reason))
            }
        }
    }

    /// Reports writes durable in order, starts a flush when one is due, and
    /// wakes waiters.
    fn advance_durable(&mut self) {
        while self.inflight.front().is_some_and(|write| write.state == WriteState::Durable) {
            let write = self.inflight.pop_front().expect("checked");
            self.stages.device_write.record(write.submitted_at.elapsed());
            self.durable_sequence = write.last_sequence;
            for operation in write.operations {
                if operation == self.durable_operation + 1 {
                    self.durable_operation = operation;
                } else {
                    self.durable_ahead.insert(operation);
                }
            }
            while self.durable_ahead.first() == Some(&(self.durable_operation + 1)) {
                self.durable_operation += 1;
                self.durable_ahead.pop_first();
            }
        }
        if self.options.durability == Durability::Flush
            && self.flush_tag.is_none()
            && self.failed.is_none()
            && self.inflight.iter().any(|write| write.state == WriteState::Written)
        {
            let tag = TAG_FLUSH | self.take_tag();
            match self.submit(Command::Flush, tag) {
                Ok(()) => {
                    self.flush_tag = Some(tag);
                    for write in self.inflight.iter_mut().filter(|write| write.state == WriteState::Written) {
                        write.state = WriteState::Flushing;
                    }
                }
                Err(rejected) => self.fail(format!("the device refused a flush: {}", rejected.error)),
            }
        }
        self.apply_durable_snapshots();
        let mut waiters = std::mem::take(&mut self.waiters);
        waiters.retain(|(operation, waker)| {
            if self.operation_durable(*operation) {
                waker.wake_by_ref();
                false
            } else {
                true
            }
        });
        self.waiters = waiters;
        self.evict_cache();
    }

    /// Makes every snapshot whose reference record is now durable its
    /// group's current one, and frees the space of the one it replaces.
    fn apply_durable_snapshots(&mut self) {
        let done: Vec<u64> = self
            .snapshot_writes
            .iter()
            .filter(|(_, write)| {
                write.reference_operation.is_some_and(|operation| self.operation_durable(operation))
            })
            .map(|(tag, _)| *tag)
            .collect();
        for tag in done {
            let write = self.snapshot_writes.remove(&tag).expect("listed");
            let state = self.groups.entry(write.group).or_default();
            if let Some(loser) = state.offer_snapshot(write.reference) {
                self.snapshot_area.release(loser.offset);
            }
            wake_waiting_for(&mut self.snapshot_waiters, tag);
        }
    }

    fn evict_cache(&mut self) {
        while self.cache_bytes > self.options.cache_bytes_max {
            let Some(&(group, index, sequence)) = self.cache_order.front() else { break };
            if sequence > self.durable_sequence {
                break;
            }
            self.cache_order.pop_front();
            if let Some(state) = self.groups.get_mut(&group) {
                if let Some(position) = state.position(index) {
                    let entry = &mut state.entries[position];
                    if entry.placed.is_some_and(|placed| placed.sequence == sequence) {
                        if let Some(payload) = entry.cached.take() {
                            self.cache_bytes -= payload.len();
                        }
                    }
                }
            }
        }
    }

    /// Whether a durable record no longer matters for replay: an entry that
    /// was purged or truncated, or a record whose effect the checkpoint keeps.
    fn reclaimable(&self, record: &RingRecord) -> bool {
        if record.sequence > self.durable_sequence {
            return false;
        }
        match record.kind {
            RecordKind::Entry => {
                let live = self.groups.get(&record.group).is_some_and(|state| {
                    state.position(record.index).is_some_and(|position| {
                        state.entries[position]
                            .placed
                            .is_some_and(|placed| placed.sequence == record.sequence)
                    })
                });
                !live
            }
            RecordKind::Vote
            | RecordKind::Truncate
            | RecordKind::Purge
            | RecordKind::Wrap
            | RecordKind::SnapshotRef => true,
        }
    }

    /// Moves the head past records that no longer matter, through a durable
    /// checkpoint, when that frees enough of the ring to be worth a write.
    fn maybe_reclaim(&mut self) -> bool {
        if self.checkpoint_write.is_some() || self.failed.is_some() {
            return false;
        }
        // A record that became reclaimable stays so (a dead entry never
        // lives again, a durable record stays durable), so the scan goes on
        // from where the last one stopped instead of from the head.
        let (mut passed, mut freed) = self.reclaim_scan;
        while let Some(record) = self.ring.get(passed) {
            if !self.reclaimable(record) {
                break;
            }
            passed += 1;
            freed += record.blocks;
        }
        self.reclaim_scan = (passed, freed);
        let worth_it = freed >= (self.ring_blocks / 8).max(1) || (self.blocked_on_space && freed > 0);
        if passed == 0 || !worth_it {
            return false;
        }
        let (head_offset, head_sequence) = match self.ring.get(passed) {
            Some(record) => (record.offset, record.sequence),
            None => (self.tail_offset % self.ring_blocks, self.next_sequence),
        };
        let checkpoint = Checkpoint {
            shard: self.region.shard,
            generation: self.checkpoint_generation + 1,
            head_offset,
            head_sequence,
            head_previous_crc: self.ring[passed - 1].crc,
            groups: self
                .groups
                .iter()
                .filter(|(_, state)| {
                    state.vote.is_some() || state.purged.is_some() || state.snapshot.is_some()
                })
                .map(|(group, state)| GroupCheckpoint {
                    group: *group,
                    vote: state.vote.clone(),
                    purged: state.purged,
                    snapshot: state.snapshot,
                })
                .collect(),
        };
        let slot_blocks = self.region.checkpoint_blocks as usize;
        let mut buffer = self.queue.allocate(slot_blocks * self.lba_bytes);
        if let Err(reason) = checkpoint.encode(&mut buffer) {
            self.fail(reason);
            return false;
        }
        let slot = ((checkpoint.generation + 1) % 2) as usize;
        let lba = self.region.checkpoint_slot_lba(slot);
        let tag = TAG_CHECKPOINT | self.take_tag();
        let fua = self.options.durability != Durability::None;
        match self.submit(Command::Write { lba, buffer, fua }, tag) {
            Ok(()) => {
                self.checkpoint_write =
                    Some(CheckpointWrite { tag, checkpoint, records_passed: passed, blocks_freed: freed });
                true
            }
            Err(rejected) => {
                self.fail(format!("the device refused a checkpoint write: {}", rejected.error));
                false
            }
        }
    }

    fn apply_checkpoint(&mut self, write: CheckpointWrite) {
        self.ring.drain(..write.records_passed);
        let (passed, freed) = self.reclaim_scan;
        self.reclaim_scan = (passed - write.records_passed, freed - write.blocks_freed);
        self.used_blocks -= write.blocks_freed;
        self.head_offset = write.checkpoint.head_offset;
        self.head_sequence = write.checkpoint.head_sequence;
        self.head_previous_crc = write.checkpoint.head_previous_crc;
        self.checkpoint_generation = write.checkpoint.generation;
        self.stats.checkpoints += 1;
    }
}

/// Wakes and forgets the waiters of `tag`.
fn wake_waiting_for(waiters: &mut Vec<(u64, Waker)>, tag: u64) {
    waiters.retain(|(waiting, waker)| {
        if *waiting == tag {
            waker.wake_by_ref();
            false
        } else {
            true
        }
    });
}

/// Ring blocks kept for the records that free space: a thirty-second of
/// the ring, at least 16 blocks, at most a quarter of it.
fn reserve_blocks(ring_blocks: u64) -> u64 {
    (ring_blocks / 32).max(16).min(ring_blocks / 4)
}

/// A number that differs between opens of the same log.
fn new_epoch() -> u64 {
    (crate::clock::unix_nanos() as u64) ^ crate::clock::instance_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: RecordKind, group: u32, index: u64) -> Pending {
        Pending {
            operation: 0,
            queued_at: Instant::now(),
            kind,
            group,
            index,
            term: 1,
            payload: Rc::from(&[][..]),
        }
    }

    /// What may go ahead of a group's waiting records is what replay cannot
    /// tell from the order they were queued in.
    #[test]
    fn records_that_free_space_jump_only_where_replay_finds_the_same() {
        let mut waiting = Waiting::default();
        waiting.add(&record(RecordKind::Entry, 0, 10));
        waiting.add(&record(RecordKind::Entry, 0, 11));
        assert!(waiting.lets_jump(&record(RecordKind::Vote, 0, 0)));
        assert!(waiting.lets_jump(&record(RecordKind::SnapshotRef, 0, 9)));
        assert!(
            waiting.lets_jump(&record(RecordKind::Purge, 0, 9)),
            "entries above the purge point may follow it"
        );
        assert!(!waiting.lets_jump(&record(RecordKind::Purge, 0, 10)), "never ahead of an entry it removes");
        assert!(!waiting.lets_jump(&record(RecordKind::Entry, 0, 12)), "entries keep their order");
        assert!(!waiting.lets_jump(&record(RecordKind::Truncate, 0, 11)));
        waiting.add(&record(RecordKind::Vote, 0, 0));
        assert!(!waiting.lets_jump(&record(RecordKind::Vote, 0, 0)), "votes of a group keep their order");
        let mut purging = Waiting::default();
        purging.add(&record(RecordKind::Purge, 0, 5));
        assert!(!purging.lets_jump(&record(RecordKind::Purge, 0, 8)), "purges of a group keep their order");
        let mut truncating = Waiting::default();
        truncating.add(&record(RecordKind::Truncate, 0, 5));
        assert!(!truncating.lets_jump(&record(RecordKind::Purge, 0, 3)));
    }
}
