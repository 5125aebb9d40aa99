//! The types openraft runs with in nvkv: node ids, the member record that
//! says where a peer listens, and opaque commands and responses (the state
//! machine gives them meaning, this layer never looks inside).
//!
//! The group id travels beside openraft, never inside it: one openraft
//! instance is one group, and the log store, state machine and network of a
//! group each carry its id.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A member of the cluster; stable for the member's life, never reused.
pub type NodeId = u64;

/// A Raft group; group g lives on shard g mod shards on every node.
pub type GroupId = u32;

/// A member as the group's membership records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// Where the member's peer (Raft) port listens, as the transport dials it.
    pub peer_address: String,
    /// The member's name and where its clients connect, for status and
    /// `member list`; empty when not known (memberships written before
    /// they were recorded have neither).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub client_address: String,
}

impl Member {
    pub fn new(id: NodeId, peer_address: impl Into<String>) -> Member {
        Member { id, peer_address: peer_address.into(), ..Member::default() }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "member {} at {}", self.id, self.peer_address)
    }
}

/// A command for the group's state machine, opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(pub Vec<u8>);

/// What the state machine answered to a command, opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(pub Vec<u8>);

openraft::declare_raft_types!(
    /// openraft's type configuration for every nvkv group.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = super::runtime::RaftRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Membership = openraft::Membership<NodeId, Member>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
