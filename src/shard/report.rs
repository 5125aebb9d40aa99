//! What a shard reports of itself and its groups: plain data for the
//! status of a node and the metrics endpoint, filled by the registry
//! (`super::registry`) and the shard module. Nothing here reads a group.

use super::stages;

/// One shard's numbers, as the status of a node reports them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ShardReport {
    pub shard: u32,
    pub core: u32,
    pub groups: u32,
    pub log_head_sequence: u64,
    pub log_tail_sequence: u64,
    pub log_used_bytes: u64,
    pub log_capacity_bytes: u64,
    pub queue_wait_p50_us: f64,
    pub queue_wait_p99_us: f64,
    pub device_write_p50_us: f64,
    pub device_write_p99_us: f64,
    /// Group-commit writes since the log opened, and the records they
    /// carried: their ratio is how well group commit batches.
    pub log_writes: u64,
    pub log_records_written: u64,
    /// The stages above the log (see [`stages`]), p50 and p99 in µs.
    pub proposal_wait_p50_us: f64,
    pub proposal_wait_p99_us: f64,
    pub raft_p50_us: f64,
    pub raft_p99_us: f64,
    pub apply_p50_us: f64,
    pub apply_p99_us: f64,
    pub end_to_end_p50_us: f64,
    pub end_to_end_p99_us: f64,
    /// Raft entries proposed for client writes, and the writes they carried.
    pub proposals: u64,
    pub proposed_commands: u64,
    /// The device since the log opened (see `wal::LogStats`).
    pub device_written_bytes: u64,
    pub device_flushes: u64,
    pub device_errors: u64,
    pub snapshots_written: u64,
    pub snapshot_written_bytes: u64,
    /// The reactor's time running and asleep since it started; filled by
    /// whoever has its `ReactorContext` (0 from [`super::local_report`]).
    pub reactor_busy_seconds: f64,
    pub reactor_idle_seconds: f64,
    /// The latency budget's hops on this shard (see [`stages::Hop`]).
    pub hops: Vec<stages::HopReport>,
}

/// One shard's numbers for the metrics endpoint: its log's counters and
/// every stage's histogram (the log's own and those above it), cumulative
/// since the shard started.
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    pub shard: u32,
    pub core: u32,
    pub log: crate::wal::LogStats,
    /// (stage name, histogram) in the order a write passes them.
    pub stages: Vec<(&'static str, crate::wal::StageHistogram)>,
    /// (hop name, histogram) of the latency budget, in the order a write
    /// passes them.
    pub hops: Vec<(&'static str, crate::wal::StageHistogram)>,
    pub proposals: u64,
    pub proposed_commands: u64,
    /// Writes that waited for room in a full proposal queue.
    pub proposals_held_back: u64,
    /// etcd KV calls answered by the etcd port's direct unary path.
    pub etcd_direct_calls: u64,
    /// Calls that forwarded writes to a leader, and the writes they carried.
    pub forwarded_write_calls: u64,
    pub forwarded_writes: u64,
}

/// One group as this member sees it, as the status of a node reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupReport {
    pub group: u32,
    pub shard: u32,
    /// The leader's member id; 0 when none is known.
    pub leader: u64,
    pub term: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// The log index the last snapshot covers; 0 before the first.
    pub snapshot_index: u64,
    /// The log is purged up to this index; 0 while nothing was purged.
    pub purged_index: u64,
    pub revision: i64,
    pub compact_revision: i64,
    /// Keys with history: live, or deleted since the last compaction.
    pub keys: u64,
    pub watchers: u32,
    pub leases: u32,
    /// Each member's matched log index, where this member leads (itself
    /// included); empty on a follower.
    pub members: Vec<MemberProgress>,
    /// The store's fingerprint, so replicas can be compared once they
    /// applied the same index: a partition test (or an operator) checks
    /// they did not diverge. Computing it encodes the whole store.
    pub state_hash: u64,
    /// Leaderships this member saw the group take since it started.
    pub leader_changes: u64,
    /// The group's NOSPACE alarm is raised on this member (see `space`).
    pub no_space: bool,
}

/// How much of a group's log one member has, as its leader tracks it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemberProgress {
    pub member_id: u64,
    /// The last log index known to be on that member; 0 for none yet.
    pub matched_index: u64,
}

/// A member as one shard's groups record it in their membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipEntry {
    pub member: crate::raft::Member,
    /// A voter in at least one of the shard's groups.
    pub voter: bool,
}
