//! How a node's groups are laid out over its shards and run
//! ([`GroupLayout`]): plain settings every shard holds a copy of, and the
//! key-to-group and group-to-shard functions they imply.

use std::sync::Arc;

use super::auth::AuthCell;
use crate::kv::partition::Partitioner;
use crate::kv::watch::WatchLimits;
use crate::raft::{GroupConfig, GroupId, Member};

/// How the groups of a node are laid out and run.
#[derive(Clone, Debug)]
pub struct GroupLayout {
    pub shards: usize,
    pub groups_per_shard: u32,
    pub partition_depth: usize,
    pub member: Member,
    /// The members that form every group at bootstrap.
    pub initial_members: Vec<Member>,
    /// Join mode: the groups are never bootstrapped here; they wait until
    /// the cluster's leaders add this member (`nvkv member add`).
    pub join: bool,
    pub raft: GroupConfig,
    pub watch: WatchLimits,
    /// The bytes a group's store may take (its snapshot's encoding) before
    /// it raises its NOSPACE alarm (`store.quota_bytes`).
    pub quota_bytes: u64,
    /// The bytes of client writes one group's proposal queue may hold
    /// (`store.proposal_queue_bytes_max`); past it writes wait for room.
    pub proposal_queue_bytes_max: usize,
    /// When groups snapshot, purge and compact (see `super::snapshots`).
    pub snapshots: SnapshotPolicy,
    /// The users and roles every shard of this member checks requests
    /// against, as group 0 publishes them.
    pub auth: Arc<AuthCell>,
}

impl GroupLayout {
    pub fn groups(&self) -> u32 {
        self.shards as u32 * self.groups_per_shard
    }

    /// The key-to-group function of this layout. The config checks
    /// groups and depth are positive, so this cannot fail on a served node.
    pub fn partitioner(&self) -> Partitioner {
        Partitioner::new(self.groups(), self.partition_depth.max(1))
            .expect("a layout has at least one group and a positive depth")
    }

    pub fn shard_of(&self, group: GroupId) -> usize {
        group as usize % self.shards
    }
}

/// When the groups of a shard snapshot and compact (see `super::snapshots`,
/// whose task follows it).
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    /// Entries applied since the last snapshot that make one due.
    pub every_entries: u64,
    /// Ring bytes a group's entries may take before a snapshot is due.
    pub after_bytes: u64,
    /// Revisions a leader keeps at most when it compacts for room (0: it
    /// never compacts on its own).
    pub compact_keep_revisions: u64,
}
