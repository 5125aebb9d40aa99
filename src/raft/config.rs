//! How a Raft group runs ([`GroupConfig`]): plain settings, and the
//! openraft configuration made from them, checked. It must never start
//! anything; `group.rs` runs a group with it.

use openraft::{Config, SnapshotPolicy};

/// How a group runs. Times are in milliseconds.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// Names the cluster in openraft's logs.
    pub cluster_name: String,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_ms: u64,
    /// A snapshot is built once this many entries were applied since the
    /// last one (unless `snapshot_on_demand`).
    pub snapshot_logs_since_last: u64,
    /// The group never snapshots on its own: its owner calls
    /// [`RaftGroup::snapshot_now`] when it sees fit (a shard checks its
    /// snapshot space first, since a snapshot that cannot be stored stops
    /// the group).
    pub snapshot_on_demand: bool,
    /// Entries kept in the log behind a snapshot, so a follower a little
    /// behind catches up from the log rather than from a whole snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// Entries purged at once, at least.
    pub purge_batch_size: u64,
    /// How long replication to an unreachable peer waits before retrying.
    pub unreachable_backoff_ms: u64,
    /// How long a client write or read barrier may wait for the group
    /// before it is refused as timed out.
    pub request_timeout_ms: u64,
    /// How long a snapshot streamed to a follower may go without progress
    /// (a chunk taken, or the install at its end) before the leader gives
    /// up and starts over. The whole transfer may take much longer.
    pub snapshot_step_timeout_ms: u64,
    /// Whether a member whose shard log dropped an unproven tail (records
    /// that may have been acknowledged, see `wal::recovery`) grants no vote
    /// and starts no election in the group until a leader has brought its
    /// log past the loss (`PeerGate`). Safe against a lost vote or a lost
    /// acknowledged entry, but a write torn by a power cut looks the same on
    /// disk: after a cut of the whole cluster during writes, a majority may
    /// refuse and the group stays without a leader. Off: the dropped tail is
    /// logged and the member votes as before.
    pub refuse_votes_after_unproven_tail: bool,
    /// On: a restarted member applies its log up to the committed index its
    /// log kept (carried by entries and the idle seal) before it serves, so
    /// its serializable reads do not go back to its last snapshot. Off: it
    /// applies from its snapshot only as a leader commits again.
    pub apply_committed_at_start: bool,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            cluster_name: "nvkv".into(),
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_ms: 100,
            snapshot_logs_since_last: 10_000,
            snapshot_on_demand: false,
            max_in_snapshot_log_to_keep: 1_000,
            purge_batch_size: 256,
            unreachable_backoff_ms: 200,
            request_timeout_ms: 5_000,
            snapshot_step_timeout_ms: 10_000,
            refuse_votes_after_unproven_tail: false,
            apply_committed_at_start: true,
        }
    }
}

impl GroupConfig {
    /// openraft's configuration, checked.
    pub fn openraft_config(&self) -> Result<Config, String> {
        Config {
            cluster_name: self.cluster_name.clone(),
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            heartbeat_interval: self.heartbeat_ms,
            snapshot_policy: if self.snapshot_on_demand {
                SnapshotPolicy::Never
            } else {
                SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last)
            },
            // A group snapshotting on demand has its owner purge too: were
            // openraft to purge after its snapshots as well, its own purge
            // point could fall behind one its owner asked for, which it
            // never allows (a debug assertion).
            max_in_snapshot_log_to_keep: if self.snapshot_on_demand {
                u64::MAX
            } else {
                self.max_in_snapshot_log_to_keep
            },
            purge_batch_size: self.purge_batch_size,
            // openraft hands this to `full_snapshot` as its `hard_ttl`; the
            // transport applies it per step of the stream.
            install_snapshot_timeout: self.snapshot_step_timeout_ms,
            ..Config::default()
        }
        .validate()
        .map_err(|error| {
            format!(
                "{error} (election_timeout_min_ms = {}, election_timeout_max_ms = {}, heartbeat_ms = {}); \
                 the heartbeat must be shorter than the election timeout, and the minimum below the maximum",
                self.election_timeout_min_ms, self.election_timeout_max_ms, self.heartbeat_ms
            )
        })
    }
}
