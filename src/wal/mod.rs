//! The per-shard durable log.
//!
//! Each shard owns a region of the namespace: two checkpoint slots and a
//! ring of block-aligned records (`format`). Every group on the shard
//! appends to the same ring, and everything appended during one reactor
//! tick goes out as one write (group commit). The caller learns its entry is
//! durable only when the write that carries it, and every write before it,
//! has completed durably.
//!
//! This layer knows positions (group, index, term) and opaque payloads; it
//! knows nothing of keys or of Raft's rules beyond "an index follows the
//! last one". The committed index a group's Raft layer notes is such a
//! position: kept in memory, carried by the next seal, never written on its
//! own and never reported past the group's last entry.

pub mod blocking;
pub mod checkpoint;
pub mod format;
mod log;
mod recovery;
pub mod shared;
pub mod snapshot;
mod snapshot_repair;
pub mod superblock;

#[cfg(test)]
mod tests;

pub use log::{
    Entry, LogOptions, LogStages, LogStats, ReadRequest, ReadTicket, RepairedRecord, ShardLog,
    SnapshotTicket, StageHistogram, Ticket, UnprovenTail,
};
pub use shared::SharedLog;
pub use superblock::{FormatOptions, ShardRegion, Superblock};

use crate::nvme::NvmeError;

/// When a write counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every group-commit write carries FUA: durable when it completes.
    Fua,
    /// A plain write, then a flush; durable when the flush completes.
    Flush,
    /// Durable when the write completes, with no FUA and no flush: a power
    /// loss can lose acknowledged entries. For benchmarks only.
    None,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Fua => "fua",
            Durability::Flush => "flush",
            Durability::None => "none",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The device failed a write or flush: the shard's log can no longer
    /// promise anything and stops. Never retried.
    #[error("the log of shard {shard} failed and stopped: {reason}")]
    Failed { shard: u32, reason: String },
    #[error("device error while {what}: {source}")]
    Device { what: &'static str, source: NvmeError },
    #[error("the log is corrupt: {0}")]
    Corrupt(String),
    #[error("layout: {0}")]
    Layout(String),
    #[error("group {group}: append of index {index} refused, the next index is {expected}")]
    IndexGap { group: u32, index: u64, expected: u64 },
    #[error("group {group}: entry {index} is not in the log (it holds {first}..={last})")]
    NotFound { group: u32, index: u64, first: u64, last: u64 },
    #[error("group {group}: cannot truncate at {index}, entries up to {purged} are purged")]
    TruncatePurged { group: u32, index: u64, purged: u64 },
    #[error("entry of {bytes} bytes is larger than the log takes ({max} bytes; raise batch_bytes_max)")]
    EntryTooLarge { bytes: usize, max: usize },
    #[error("vote of {bytes} bytes is larger than the log keeps ({max} bytes)")]
    VoteTooLarge { bytes: usize, max: usize },
    #[error("shard {shard} already holds {max} groups, the most its checkpoint has room for")]
    TooManyGroups { shard: u32, max: u32 },
    #[error(
        "the snapshot of group {group} is {bytes} bytes, larger than the whole snapshot area of its shard \
         ({area_bytes} bytes, a quarter of the shard's region); make namespace_bytes larger"
    )]
    SnapshotTooLarge { group: u32, bytes: u64, area_bytes: u64 },
    #[error(
        "the snapshot area of shard {shard} has no room for {bytes} more bytes ({used_bytes} of {area_bytes} \
         bytes hold current snapshots or ones being written); retry after pending snapshots finish, or make \
         namespace_bytes larger"
    )]
    SnapshotAreaFull { shard: u32, bytes: u64, used_bytes: u64, area_bytes: u64 },
    #[error(
        "the log ring of shard {shard} is full ({ring_bytes} bytes) and no group has purged enough to free space; \
         purge (snapshot) more often or make namespace_bytes larger"
    )]
    Full { shard: u32, ring_bytes: u64 },
}
