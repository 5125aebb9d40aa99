//! openraft's log storage for one group, over the shard log that every group
//! of the shard shares.
//!
//! It owns two encodings:
//! - the entry payload the shard log keeps for each Raft entry (the shard
//!   log's own header keeps the index and the leader's term; the payload
//!   adds what else the log id needs, the leader's node id, the entry's
//!   kind and body, and the committed index this member knew when it
//!   appended the entry);
//! - the group's vote slot (at most `checkpoint::VOTE_BYTES_MAX` bytes): the
//!   vote, plus the leader node ids of the last two purge points, because the
//!   shard log keeps only the index and term of the purge point and openraft
//!   needs its full log id back after a restart.
//!
//! It must never report an append durable before the shard log does, and
//! never swallow a shard log failure: every one becomes a `StorageError`, on
//! which openraft stops the group.
//!
//! The committed index is kept without a write of its own (a record per
//! commit would double the device writes of a put): each appended entry
//! carries the committed index known when it was appended (the commit of
//! the entries before it), and the shard log's seal, written when the log
//! goes idle, carries the latest. At a restart the group applies its log up
//! to the higher of the two, so a member restarted without a quorum serves
//! reads of every write committed before its last appends; the commit of
//! the very last appends before the stop is durable only if a seal or
//! another append followed it. It must never persist an index that was
//! not committed, nor give openraft one past the entries the log holds.

use std::cell::RefCell;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::rc::Rc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, EntryPayload, LeaderId, RaftLogReader, StorageIOError};

use super::types::{Command, Entry, GroupId, LogId, Membership, NodeId, StorageError, TypeConfig, Vote};
use crate::wal::checkpoint::VOTE_BYTES_MAX;
use crate::wal::{SharedLog, WalError};

/// Version of the entry payload encoding this build writes: version 2
/// adds the committed index to version 1. A reader takes both and refuses
/// any other.
pub const ENTRY_FORMAT_VERSION: u8 = 2;
/// The oldest entry payload version this build reads.
const ENTRY_FORMAT_VERSION_OLDEST: u8 = 1;
/// Version of the vote slot encoding; a reader refuses any other.
pub const VOTE_FORMAT_VERSION: u8 = 1;

const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;
/// Version, kind, leader node id, committed index: what an entry costs
/// beside its command.
pub const ENTRY_HEADER_BYTES: usize = 1 + 1 + 8 + 8;
/// The header of a version 1 entry: no committed index.
const ENTRY_HEADER_BYTES_V1: usize = 1 + 1 + 8;

/// Purge points whose leader node ids the vote slot remembers: the current
/// one and the one before, because the slot is rewritten (durably) before
/// the shard log's purge record, and a crash between the two leaves the log
/// at the earlier point.
const PURGE_POINTS_KEPT: usize = 2;
/// Version, flags, vote term, vote node id, purge point count, then per
/// purge point its index and leader node id.
const VOTE_SLOT_BYTES_MAX: usize = 1 + 1 + 8 + 8 + 1 + PURGE_POINTS_KEPT * 16;
const _: () = assert!(VOTE_SLOT_BYTES_MAX <= VOTE_BYTES_MAX, "the vote slot must fit the shard log's vote");

const FLAG_VOTE: u8 = 1;
const FLAG_COMMITTED: u8 = 2;

/// Encodes `entry` as the payload the shard log keeps, with `committed`,
/// the committed index known when it is appended: stored as the index plus
/// one, 0 for none (index 0 is a real entry).
pub fn encode_entry(entry: &Entry, committed: Option<u64>) -> Vec<u8> {
    let (kind, body): (u8, std::borrow::Cow<'_, [u8]>) = match &entry.payload {
        EntryPayload::Blank => (KIND_BLANK, std::borrow::Cow::Borrowed(&[])),
        EntryPayload::Normal(command) => (KIND_NORMAL, std::borrow::Cow::Borrowed(&command.0)),
        EntryPayload::Membership(membership) => (
            KIND_MEMBERSHIP,
            std::borrow::Cow::Owned(
                // Membership changes are rare, so JSON's size does not matter;
                // a failure here would be a bug in a derived serializer.
                serde_json::to_vec(membership).expect("a membership always serializes"),
            ),
        ),
    };
    let mut bytes = Vec::with_capacity(ENTRY_HEADER_BYTES + body.len());
    bytes.push(ENTRY_FORMAT_VERSION);
    bytes.push(kind);
    bytes.extend_from_slice(&entry.log_id.leader_id.node_id.to_le_bytes());
    bytes.extend_from_slice(&committed.map_or(0, |index| index.saturating_add(1)).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// The bytes [`encode_entry`] makes of `entry`: what its record carries in
/// the shard log (a follower judges by it whether its leader's entries fit
/// its ring).
pub fn encoded_entry_bytes(entry: &Entry) -> usize {
    ENTRY_HEADER_BYTES
        + match &entry.payload {
            EntryPayload::Blank => 0,
            EntryPayload::Normal(command) => command.0.len(),
            EntryPayload::Membership(membership) => {
                serde_json::to_vec(membership).map_or(0, |json| json.len())
            }
        }
}

/// The length of the header of an entry payload of `version` at `index`,
/// or why the payload is not one this build reads.
fn entry_header_bytes(index: u64, bytes: &[u8]) -> Result<usize, String> {
    let Some(&version) = bytes.first() else {
        return Err(format!("entry {index} is empty"));
    };
    let header = match version {
        ENTRY_FORMAT_VERSION_OLDEST => ENTRY_HEADER_BYTES_V1,
        ENTRY_FORMAT_VERSION => ENTRY_HEADER_BYTES,
        _ => {
            return Err(format!(
                "entry {index} has format version {version}, this nvkv reads versions \
                 {ENTRY_FORMAT_VERSION_OLDEST} to {ENTRY_FORMAT_VERSION}; run the nvkv that wrote it"
            ))
        }
    };
    if bytes.len() < header {
        return Err(format!(
            "entry {index} holds {} bytes, fewer than the {header}-byte entry header of version {version}",
            bytes.len()
        ));
    }
    Ok(header)
}

/// The committed index the entry payload at `index` carries: the one its
/// member knew when it appended the entry; none in a version 1 payload.
pub fn entry_committed(index: u64, bytes: &[u8]) -> Result<Option<u64>, String> {
    let header = entry_header_bytes(index, bytes)?;
    if header == ENTRY_HEADER_BYTES_V1 {
        return Ok(None);
    }
    Ok(crate::little_endian::u64_at(bytes, 10).checked_sub(1))
}

/// Decodes a payload written by [`encode_entry`], for the entry at `index`
/// whose leader's term the shard log kept.
pub fn decode_entry(index: u64, term: u64, bytes: &[u8]) -> Result<Entry, String> {
    let header = entry_header_bytes(index, bytes)?;
    let node_id = crate::little_endian::u64_at(bytes, 2);
    let body = &bytes[header..];
    let payload = match bytes[1] {
        KIND_BLANK if body.is_empty() => EntryPayload::Blank,
        KIND_BLANK => return Err(format!("blank entry {index} carries {} bytes", body.len())),
        KIND_NORMAL => EntryPayload::Normal(Command(body.to_vec())),
        KIND_MEMBERSHIP => {
            let membership: Membership = serde_json::from_slice(body)
                .map_err(|error| format!("membership entry {index} does not decode: {error}"))?;
            EntryPayload::Membership(membership)
        }
        kind => return Err(format!("entry {index} has unknown kind {kind}")),
    };
    Ok(Entry { log_id: LogId::new(LeaderId::new(term, node_id), index), payload })
}

/// What the group keeps in the shard log's vote slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VoteSlot {
    pub vote: Option<Vote>,
    /// (index, leader node id) of the latest purge points, oldest first.
    pub purge_points: Vec<(u64, NodeId)>,
}

impl VoteSlot {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(VOTE_SLOT_BYTES_MAX);
        bytes.push(VOTE_FORMAT_VERSION);
        let (flags, term, node_id) = match &self.vote {
            None => (0, 0, 0),
            Some(vote) => {
                let committed = if vote.committed { FLAG_COMMITTED } else { 0 };
                (FLAG_VOTE | committed, vote.leader_id.term, vote.leader_id.node_id)
            }
        };
        bytes.push(flags);
        bytes.extend_from_slice(&term.to_le_bytes());
        bytes.extend_from_slice(&node_id.to_le_bytes());
        assert!(
            self.purge_points.len() <= PURGE_POINTS_KEPT,
            "the vote slot keeps {PURGE_POINTS_KEPT} purge points"
        );
        bytes.push(self.purge_points.len() as u8);
        for (index, node_id) in &self.purge_points {
            bytes.extend_from_slice(&index.to_le_bytes());
            bytes.extend_from_slice(&node_id.to_le_bytes());
        }
        assert!(bytes.len() <= VOTE_SLOT_BYTES_MAX);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<VoteSlot, String> {
        let fixed = 1 + 1 + 8 + 8 + 1;
        if bytes.len() < fixed {
            return Err(format!("the vote slot holds {} bytes, fewer than {fixed}", bytes.len()));
        }
        if bytes[0] != VOTE_FORMAT_VERSION {
            return Err(format!(
                "the vote slot has format version {}, this nvkv reads version {VOTE_FORMAT_VERSION}",
                bytes[0]
            ));
        }
        let flags = bytes[1];
        let term = crate::little_endian::u64_at(bytes, 2);
        let node_id = crate::little_endian::u64_at(bytes, 10);
        let count = bytes[18] as usize;
        if count > PURGE_POINTS_KEPT || bytes.len() != fixed + count * 16 {
            return Err(format!(
                "the vote slot names {count} purge points in {} bytes; it keeps at most {PURGE_POINTS_KEPT} \
                 of 16 bytes each",
                bytes.len()
            ));
        }
        let purge_points = bytes[fixed..]
            .chunks_exact(16)
            .map(|chunk| {
                let index = crate::little_endian::u64_at(chunk, 0);
                let node_id = crate::little_endian::u64_at(chunk, 8);
                (index, node_id)
            })
            .collect();
        let vote = (flags & FLAG_VOTE != 0).then(|| {
            let mut vote = Vote::new(term, node_id);
            vote.committed = flags & FLAG_COMMITTED != 0;
            vote
        });
        Ok(VoteSlot { vote, purge_points })
    }
}

/// The log of one group, as openraft stores and reads it. Clones share the
/// vote slot, so the store and its readers agree.
#[derive(Clone)]
pub struct GroupLogStore {
    group: GroupId,
    log: SharedLog,
    slot: Rc<RefCell<VoteSlot>>,
    /// Where appends are marked durable for the latency budget.
    timeline: Option<Rc<super::timeline::Timeline>>,
    /// Whether `read_committed` answers what the log kept
    /// (`GroupConfig::apply_committed_at_start`); else it answers none.
    committed_at_start: bool,
}

fn wal_error(group: GroupId, what: &str, error: &WalError) -> AnyError {
    AnyError::error(format!("group {group}: {what}: {error}"))
}

impl GroupLogStore {
    /// The store of `group` in `log`, with the vote slot the log recovered.
    pub fn open(log: SharedLog, group: GroupId) -> Result<GroupLogStore, StorageError> {
        let slot = match log.with(|log| log.vote(group).map(<[u8]>::to_vec)) {
            None => VoteSlot::default(),
            Some(bytes) => VoteSlot::decode(&bytes).map_err(|reason| {
                StorageIOError::read_vote(AnyError::error(format!("group {group}: {reason}")))
            })?,
        };
        Ok(GroupLogStore {
            group,
            log,
            slot: Rc::new(RefCell::new(slot)),
            timeline: None,
            committed_at_start: true,
        })
    }

    /// Marks every append durable in `timeline` when it is.
    pub fn with_timeline(self, timeline: Rc<super::timeline::Timeline>) -> GroupLogStore {
        GroupLogStore { timeline: Some(timeline), ..self }
    }

    /// Whether openraft applies up to the committed index the log kept
    /// when the group starts (`GroupConfig::apply_committed_at_start`; on
    /// for a store opened without it).
    pub fn applying_committed_at_start(self, on: bool) -> GroupLogStore {
        GroupLogStore { committed_at_start: on, ..self }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    #[cfg(test)]
    /// The vote as the shard log holds it now (for checks and status).
    pub fn persisted_vote(&self) -> Option<Vote> {
        self.slot.borrow().vote
    }

    async fn write_slot(&self, slot: VoteSlot) -> Result<(), StorageError> {
        let bytes = slot.encode();
        *self.slot.borrow_mut() = slot;
        self.log.save_vote(self.group, &bytes).await.map_err(|error| {
            StorageIOError::write_vote(wal_error(self.group, "saving the vote", &error)).into()
        })
    }

    /// The log id of the last purged entry: its index and term from the
    /// shard log, its leader node id from the vote slot.
    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        let Some((index, term)) = self.log.with(|log| log.purged(self.group)) else {
            return Ok(None);
        };
        let slot = self.slot.borrow();
        let Some(&(_, node_id)) = slot.purge_points.iter().find(|(purged, _)| *purged == index) else {
            return Err(StorageIOError::read_logs(AnyError::error(format!(
                "group {}: the log is purged up to entry {index} but the vote slot names no leader for it \
                 (it knows {:?}); the log is damaged: remove this member, clear its data and add it again",
                self.group, slot.purge_points
            )))
            .into());
        };
        Ok(Some(LogId::new(LeaderId::new(term, node_id), index)))
    }

    async fn read_entry(&self, index: u64) -> Result<Entry, StorageError> {
        Ok(self.read_entry_and_committed(index).await?.0)
    }

    /// The entry at `index` and the committed index it carries.
    async fn read_entry_and_committed(&self, index: u64) -> Result<(Entry, Option<u64>), StorageError> {
        let entry = self.log.read(self.group, index).await.map_err(|error| {
            StorageIOError::read_log_at_index(index, wal_error(self.group, "reading an entry", &error))
        })?;
        let decoded = decode_entry(index, entry.term, &entry.payload)
            .and_then(|decoded| Ok((decoded, entry_committed(index, &entry.payload)?)));
        decoded.map_err(|reason| {
            StorageIOError::read_log_at_index(
                index,
                AnyError::error(format!("group {}: {reason}", self.group)),
            )
            .into()
        })
    }
}

impl RaftLogReader<TypeConfig> for GroupLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some((first, last)) = self.log.with(|log| log.entry_range(self.group)) else {
            return Ok(Vec::new());
        };
        let start = match range.start_bound() {
            Bound::Included(&start) => start,
            Bound::Excluded(&start) => start.saturating_add(1),
            Bound::Unbounded => first,
        }
        .max(first);
        let end = match range.end_bound() {
            Bound::Included(&end) => end,
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&end) => end - 1,
            Bound::Unbounded => last,
        }
        .min(last);
        let mut entries = Vec::with_capacity(end.saturating_sub(start) as usize + 1);
        for index in start..=end {
            entries.push(self.read_entry(index).await?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for GroupLogStore {
    type LogReader = GroupLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = match self.log.with(|log| log.entry_range(self.group)) {
            Some((_, last)) => Some(self.read_entry(last).await?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> GroupLogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let slot = VoteSlot { vote: Some(*vote), ..self.slot.borrow().clone() };
        self.write_slot(slot).await
    }

    /// The vote as an uncommitted one: openraft reads it only at startup,
    /// and a member that restarts holding its own committed vote would
    /// resume leading in the same term without knowing what that term
    /// committed (the stored committed index may lag the last entries that
    /// were committed before the stop), so the read index it
    /// gives (its term's first entry) misses writes acknowledged before the
    /// restart and reads are stale. Uncommitted, the member starts as a
    /// follower and a leader of a newer term serves reads only once its
    /// own first entry is committed. A vote given to another member loses
    /// nothing by it: that leader's messages carry the committed vote.
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.slot.borrow().vote.map(|vote| Vote::new(vote.leader_id().term, vote.leader_id().node_id)))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        // Every entry is queued now, so all of them join this tick's group
        // commit; the shard log reports durability in order, so the last
        // one being durable means all are.
        let mut last = None;
        let mut indexes = None;
        // The commit of the entries before these rides on them: no write
        // of its own.
        let committed = self.log.with(|log| log.committed(self.group));
        for entry in entries {
            let index = entry.log_id.index;
            indexes = Some(indexes.map_or((index, index), |(first, _)| (first, index)));
            let payload = encode_entry(&entry, committed);
            let ticket = self
                .log
                .queue_append(self.group, entry.log_id.index, entry.log_id.leader_id.term, &payload)
                .map_err(|error| {
                    StorageIOError::write_log_entry(entry.log_id, wal_error(self.group, "appending", &error))
                })?;
            last = Some(ticket);
        }
        let Some(ticket) = last else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let durable = self.log.durable(ticket);
        let group = self.group;
        let timeline = self.timeline.clone().zip(indexes);
        tokio::task::spawn_local(async move {
            let result = durable.await;
            if let (Ok(()), Some((timeline, (first, last)))) = (&result, timeline) {
                timeline.durable(first, last, std::time::Instant::now());
            }
            let result = result.map_err(|error| {
                io::Error::other(format!(
                    "group {group}: the shard log failed before the append was durable: {error}"
                ))
            });
            callback.log_io_completed(result);
        });
        Ok(())
    }

    /// Notes the committed index in the shard log's memory: the next
    /// append and the next seal carry it (see the module doc). openraft
    /// calls this only with an index a quorum holds.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(committed) = committed {
            self.log.with(|log| log.set_committed(self.group, committed.index));
        }
        Ok(())
    }

    /// The higher of the committed index the last seal carried and the one
    /// the group's last entry carries, never past that last entry: openraft
    /// applies the log up to it before the group serves anything. Why that
    /// is safe: see `clamp_committed` in the shard log's recovery; the same
    /// bound holds here, as an entry carries only an index its member
    /// knew committed, and a committed entry is never overwritten.
    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if !self.committed_at_start {
            return Ok(None);
        }
        let (sealed, range) = self.log.with(|log| (log.committed(self.group), log.entry_range(self.group)));
        let last_purged = self.last_purged()?;
        let (last_entry, carried) = match range {
            Some((_, last)) => {
                let (entry, carried) = self.read_entry_and_committed(last).await?;
                (Some(entry.log_id), carried)
            }
            None => (None, None),
        };
        let Some(committed) = sealed.max(carried) else {
            return Ok(None);
        };
        let Some(last) = last_entry.or(last_purged) else {
            return Ok(None);
        };
        let committed = committed.min(last.index);
        // The next seal carries it again, so it outlives the records that
        // carried it.
        self.log.with(|log| log.set_committed(self.group, committed));
        if committed == last.index {
            return Ok(Some(last));
        }
        match last_purged {
            // Within the snapshot: openraft starts from what the state
            // machine applied, which is at least this.
            Some(purged) if committed <= purged.index => Ok(Some(purged)),
            _ => Ok(Some(self.read_entry(committed).await?.log_id)),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.log.truncate(self.group, log_id.index).await.map_err(|error| {
            StorageIOError::write_logs(wal_error(self.group, &format!("truncating from {log_id}"), &error))
                .into()
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The slot names the new purge point before the shard log moves to
        // it: both are durable in the order they are queued.
        let mut slot = self.slot.borrow().clone();
        slot.purge_points.retain(|(index, _)| *index < log_id.index);
        slot.purge_points.push((log_id.index, log_id.leader_id.node_id));
        let excess = slot.purge_points.len().saturating_sub(PURGE_POINTS_KEPT);
        slot.purge_points.drain(..excess);
        self.write_slot(slot).await?;
        self.log.purge(self.group, log_id.index, log_id.leader_id.term).await.map_err(|error| {
            StorageIOError::write_logs(wal_error(self.group, &format!("purging up to {log_id}"), &error))
                .into()
        })
    }
}
