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
//! - Every record reported durable is proven durable on the device by a
//!   later record's `durable_before`: while the log is busy each write
//!   proves the ones before it, and once it has stayed idle a while it
//!   writes a seal ([`ShardLog::seal_when_idle`]), never a seal while
//!   anything is queued or in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use super::checkpoint::{self, Checkpoint, GroupCheckpoint};
use super::format::{self, RecordHeader, RecordKind, HEADER_BYTES};
pub use super::recovery::{RepairedRecord, UnprovenTail};
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
    /// Whether recovery drops a group's damaged snapshot and log for a
    /// leader to repair (`super::recovery`): not without a peer, where the
    /// group would wait for ever; its start then stops, naming the snapshot.
    pub repair_snapshots_from_peers: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Fua,
            batch_bytes_max: 1 << 20,
            inflight_writes_max: 4,
            cache_bytes_max: 64 << 20,
            queue_depth: 64,
            repair_snapshots_from_peers: true,
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
    /// Seal records written (one each time the log goes idle after writes).
    pub seals: u64,
    pub reads_from_device: u64,
    pub snapshots_written: u64,
    pub snapshot_bytes_written: u64,
    /// Device commands that failed (an error completion) or that the
    /// device refused to take.
    pub device_errors: u64,
    /// Damaged records in the middle of the log that recovery skipped,
    /// leaving the groups that may have lost entries to be repaired by
    /// their leaders (at most one per open).
    pub records_repaired: u64,
    /// Groups whose current snapshot recovery found damaged and dropped,
    /// with their log, leaving them to be repaired by their leaders.
    pub snapshots_repaired: u64,
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
            RecordKind::Truncate | RecordKind::Purge | RecordKind::Reset => self.truncation_or_purge = true,
            RecordKind::Vote => self.vote = true,
            RecordKind::SnapshotRef | RecordKind::Wrap | RecordKind::Seal => {}
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
            RecordKind::Entry | RecordKind::Truncate | RecordKind::Reset => false,
            RecordKind::Wrap | RecordKind::Seal => false,
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
    /// The shard's queue pair: every write, flush and read of the log.
    pub(super) queue: Box<dyn QueuePair>,
    /// Where the shard's checkpoint slots, ring and snapshot area lie.
    pub(super) region: ShardRegion,
    pub(super) options: LogOptions,
    /// The namespace's block size.
    pub(super) lba_bytes: usize,
    /// Blocks of the ring.
    pub(super) ring_blocks: u64,
    /// Differs between opens of this log: records name the open that wrote
    /// them, so recovery tells a stale record from a current one.
    pub(super) epoch: u64,
    /// Each group's entries (index, term, where they lie), vote, purge point
    /// and current snapshot.
    pub(super) groups: BTreeMap<u32, GroupState>,
    /// Operations queued and not yet placed in the ring, in queue order.
    pending: VecDeque<Pending>,
    /// The number the next queued operation gets (its [`Ticket`]).
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
    /// The sequence number the next record placed gets.
    pub(super) next_sequence: u64,
    /// Every record below this sequence number is durable.
    pub(super) durable_sequence: u64,
    /// The CRC of the last record placed, which the next one chains to.
    pub(super) last_crc: u32,
    /// The log knows something no seal says yet (a record other than a
    /// seal placed after the last seal, a group proven, a higher committed
    /// index): it writes a seal once it stays idle
    /// ([`ShardLog::seal_when_idle`]).
    pub(super) unsealed: bool,
    /// Where the next record goes (ring block offset).
    pub(super) tail_offset: u64,
    /// The oldest record still needed (ring block offset), as the durable
    /// checkpoint names it.
    pub(super) head_offset: u64,
    /// The sequence number of the record at the head.
    pub(super) head_sequence: u64,
    /// The CRC the record at the head chains to.
    pub(super) head_previous_crc: u32,
    /// Ring blocks between head and tail.
    pub(super) used_blocks: u64,
    /// Every record between head and tail, oldest first.
    pub(super) ring: VecDeque<RingRecord>,
    /// The generation of the durable checkpoint; the next one writes the
    /// other slot with the next generation.
    pub(super) checkpoint_generation: u64,
    /// Group-commit writes submitted, oldest first, until durable in order.
    inflight: VecDeque<InflightWrite>,
    /// The tag of the flush in flight (durability `flush`), if any.
    flush_tag: Option<u64>,
    /// The checkpoint write in flight, if any: the head moves when it is
    /// durable.
    checkpoint_write: Option<CheckpointWrite>,
    /// The tag the next device command gets (its kind in the high bits).
    next_tag: u64,
    /// Cached entries, oldest first, to evict past `options.cache_bytes_max`
    /// once their records are durable (a payload is read back from memory
    /// until then).
    cache_order: VecDeque<CachedEntry>,
    /// Bytes of entry payloads cached in memory.
    cache_bytes: usize,
    /// Entry reads from the device in flight, by tag.
    reads: HashMap<u64, PendingRead>,
    /// Entry reads finished and not yet taken, by tag.
    reads_done: HashMap<u64, Result<Entry, WalError>>,
    /// Which extents of the snapshot area current snapshots and snapshot
    /// writes hold.
    pub(super) snapshot_area: SnapshotArea,
    /// Snapshot writes in flight, by tag.
    snapshot_writes: BTreeMap<u64, SnapshotWrite>,
    /// Per group, the snapshots refused for lack of room, so whoever asked
    /// for one learns it will not come.
    snapshots_refused: BTreeMap<u32, u64>,
    /// Snapshot reads in flight, by tag: the group and the snapshot read.
    snapshot_reads: HashMap<u64, (u32, SnapshotRef)>,
    /// Snapshot reads finished and not yet taken, by tag.
    snapshot_reads_done: HashMap<u64, Result<Vec<u8>, WalError>>,
    /// Set by recovery when it dropped a damaged tail that no record proves
    /// was never reported durable (see `super::recovery`).
    pub(super) unproven_tail: Option<UnprovenTail>,
    /// Set by recovery when it skipped a damaged record in the middle of
    /// the log (see `super::recovery`): where, and which groups it cut.
    pub(super) repaired: Option<RepairedRecord>,
    /// The groups that recovery knows may have lost acknowledged records or
    /// a vote in this open (a skipped damaged record): they refuse votes
    /// whatever the option about unproven tails says, until marked proven.
    pub(super) known_loss: std::collections::BTreeSet<u32>,
    /// A skipped damaged record may have held the only record of a group
    /// with no state in the log now.
    pub(super) known_loss_others: bool,
    /// The groups a reset record (or this recovery) emptied after their
    /// snapshot was found damaged, with the last index each held before:
    /// they refuse votes until a leader has brought them past it.
    pub(super) snapshot_resets: BTreeMap<u32, u64>,
    /// Reset records recovery queued, until durable: no checkpoint (which
    /// carries the emptied groups) before, or a crash could keep it and lose
    /// the reset, leaving a group's entries without snapshot or refusal.
    pub(super) resets_not_durable: Vec<u64>,
    /// The groups that may have lost acknowledged records in a recovery
    /// (this one or an earlier one), with the index after which they may
    /// have: every seal carries them, so they survive restarts until
    /// [`ShardLog::mark_proven`] takes a group off.
    pub(super) unproven: BTreeMap<u32, u64>,
    /// Recovery dropped an unproven tail in this open: a group with no
    /// state in the log may have lost all it had. Not carried by seals (a
    /// group whose every record was in that tail is one created just
    /// before the crash).
    pub(super) unproven_others: bool,
    /// Per group, the highest committed index its Raft layer reported
    /// ([`ShardLog::set_committed`]), or the one recovery found. Kept in
    /// memory only: every seal carries it, so it costs no write of its own.
    pub(super) committed: BTreeMap<u32, u64>,
    /// The sequence number of the last seal placed: while groups are listed
    /// unproven it is kept from reclaim, so the list always survives.
    pub(super) last_seal: Option<u64>,
    /// Why the log stopped for good, once it has (a failed write or flush).
    failed: Option<String>,
    /// A buffer the device's completions are reaped into, kept between ticks.
    completions: Vec<Completion>,
    /// Wakers of tasks waiting for an operation to be durable, by operation.
    waiters: Vec<(u64, Waker)>,
    /// Wakers of tasks waiting for an entry or snapshot read, by tag.
    read_waiters: Vec<(u64, Waker)>,
    /// Waiters for snapshot writes, by their tag.
    snapshot_waiters: Vec<(u64, Waker)>,
    /// The ring had no room for the first pending record at the last try:
    /// reclaim runs as soon as any space can be freed.
    blocked_on_space: bool,
    /// Leading ring records known reclaimable, and the blocks they hold.
    reclaim_scan: ReclaimScan,
    /// Reads and snapshot writes waiting for a queue slot.
    deferred: VecDeque<(Command, u64)>,
    /// Counters `nvkv status` shows.
    pub(super) stats: LogStats,
    /// Per-stage histograms (queue wait, device write, ...).
    stages: LogStages,
}

/// An entry whose payload is cached in memory.
#[derive(Clone, Copy, Debug)]
struct CachedEntry {
    group: u32,
    index: u64,
    /// The sequence number of the record that holds it: it stays cached
    /// until that record is durable, and an entry since truncated and
    /// written again by a later record is not the one to evict.
    sequence: u64,
}

/// How far the last reclaim scan got: the leading ring records known
/// reclaimable and the ring blocks they hold.
#[derive(Clone, Copy, Debug, Default)]
struct ReclaimScan {
    records: usize,
    blocks: u64,
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
            unsealed: false,
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
            unproven_tail: None,
            repaired: None,
            known_loss: std::collections::BTreeSet::new(),
            known_loss_others: false,
            snapshot_resets: BTreeMap::new(),
            resets_not_durable: Vec::new(),
            unproven: BTreeMap::new(),
            unproven_others: false,
            committed: BTreeMap::new(),
            last_seal: None,
            failed: None,
            completions: Vec::new(),
            waiters: Vec::new(),
            read_waiters: Vec::new(),
            snapshot_waiters: Vec::new(),
            blocked_on_space: false,
            reclaim_scan: ReclaimScan::default(),
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

    /// What recovery dropped at the tail of the log that may have been
    /// reported durable, if it dropped any such record.
    pub fn unproven_tail(&self) -> Option<&UnprovenTail> {
        self.unproven_tail.as_ref()
    }

    /// When a recovery (this one, or an earlier one since which `group` was
    /// not marked proven) dropped records that may have been reported
    /// durable: the index after which `group` may have lost entries (the
    /// last one it held then, 0 when it held none). Its last vote may have
    /// been lost too. Which group the dropped records belonged to is
    /// unknown, so every group of the shard answers.
    pub fn may_have_lost_after(&self, group: u32) -> Option<u64> {
        self.unproven
            .get(&group)
            .copied()
            .or_else(|| (self.unproven_other_group(group)).then(|| self.last_index(group).unwrap_or(0)))
    }

    /// What recovery skipped in the middle of the log, if it skipped a
    /// damaged record (a record later records prove was durable).
    pub fn repaired(&self) -> Option<&RepairedRecord> {
        self.repaired.as_ref()
    }

    /// Whether `group`'s possible loss ([`ShardLog::may_have_lost_after`])
    /// is known, not merely possible: recovery skipped a damaged record
    /// that had been durable, so the member may have acknowledged entries or
    /// given a vote it no longer holds. Such a group must not vote until a
    /// leader has repaired it, whatever the policy for unproven tails.
    pub fn loss_is_known(&self, group: u32) -> bool {
        self.may_have_lost_after(group).is_some()
            && (self.known_loss.contains(&group)
                || (self.known_loss_others && !self.groups.contains_key(&group)))
    }

    fn unproven_other_group(&self, group: u32) -> bool {
        self.unproven_others && !self.groups.contains_key(&group)
    }

    /// Takes `group` off the groups that may have lost acknowledged
    /// records: its Raft layer saw a leader bring it past that point. The
    /// next seal no longer lists it.
    pub fn mark_proven(&mut self, group: u32) {
        let listed = self.unproven.remove(&group).is_some();
        self.known_loss.remove(&group);
        if listed || self.unproven_other_group(group) {
            // A group with no state that gets some is listed by no seal.
            self.unsealed = true;
        }
    }

    /// Notes that `index` of `group` is committed (known so by its Raft
    /// layer: never an index that was not). Nothing is written for it: the
    /// next seal carries the highest one noted, so what is durable may lag
    /// the true committed index, never lead it.
    ///
    /// A higher index makes the log want a seal again: a follower learns the
    /// commit of its last entries from the leader's next heartbeat, which
    /// writes nothing, often after the log sealed them; without a seal of
    /// its own that commit would reach the device only with the next
    /// append, and a restart before one would apply less than it knew.
    pub fn set_committed(&mut self, group: u32, index: u64) {
        let committed = self.committed.entry(group).or_insert(0);
        if index > *committed {
            *committed = index;
            self.unsealed = true;
        }
    }

    /// The highest committed index of `group` noted since the open, or
    /// recovered from the last seal that carried one (never past the last
    /// entry the group holds after recovery).
    pub fn committed(&self, group: u32) -> Option<u64> {
        self.committed.get(&group).copied()
    }

    /// The LBA of the last record that is not a seal, and the LBAs of the
    /// seals after it: what a test damages to play a crash before the seal
    /// landed and damage to the last record.
    #[cfg(test)]
    pub fn last_record_and_seals(&self) -> (Option<u64>, Vec<u64>) {
        let first = self.region.ring_first_block();
        let seals = self
            .ring
            .iter()
            .rev()
            .take_while(|record| record.kind == RecordKind::Seal)
            .map(|record| first + record.offset)
            .collect();
        let last = self.ring.iter().rev().find(|record| record.kind != RecordKind::Seal);
        (last.map(|record| first + record.offset), seals)
    }

    /// The LBA of each entry record of `group` in the ring, by index: what a
    /// test damages to play a bit flip in the middle of the log.
    #[cfg(test)]
    pub fn entry_lbas(&self, group: u32) -> Vec<(u64, u64)> {
        let first = self.region.ring_first_block();
        self.ring
            .iter()
            .filter(|record| record.kind == RecordKind::Entry && record.group == group)
            .map(|record| (record.index, first + record.offset))
            .collect()
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
        let record = self.ring.get(self.reclaim_scan.records)?;
        (record.kind == RecordKind::Entry && record.sequence <= self.durable_sequence).then_some(record.group)
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

mod complete;
mod read;
mod reclaim;
#[cfg(test)]
mod tests;
mod write;
