//! What a request to a shard answers: the response with the header every
//! answer carries ([`Answered`]), or why it failed ([`RequestError`]).
//! Plain data: both cross shards, and reach the client typed.

use crate::kv::types::KvError;
use crate::raft::{GroupError, GroupId, NodeId};

/// Why a request failed, as the client is told. Plain data: it crosses
/// shards.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("shard {shard} is not serving yet (its groups are starting); retry shortly")]
    Starting { shard: usize },
    #[error("shard {shard} could not take the request: {reason}")]
    Overloaded { shard: usize, reason: String },
    #[error("the answer could not be read: {0}")]
    Codec(String),
    #[error(
        "the transaction touches keys of groups {groups:?}; a transaction must stay within one group \
         (keys sharing their first store.partition_depth path segments): split it"
    )]
    TxnSpansGroups { groups: Vec<GroupId> },
    #[error("group {group} does not exist: this node has groups 0 to {last}")]
    NoSuchGroup { group: GroupId, last: GroupId },
    #[error(transparent)]
    Watch(#[from] crate::kv::watch::WatchError),
    #[error(transparent)]
    Auth(#[from] crate::kv::auth::AuthError),
    #[error(
        "member {member} is not a member of group {group} yet: it was started in join mode; add it with \
         `nvkv member add {member} ...` on a member of the cluster, or send the request to another member"
    )]
    Joining { member: NodeId, group: GroupId },
    #[error(
        "member {member} was removed from the cluster (group {group} no longer names it) and serves no \
         client requests; send them to another member, and stop this one"
    )]
    Removed { member: NodeId, group: GroupId },
}

/// A response with the header every answer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered<T> {
    pub group: GroupId,
    pub term: u64,
    pub member: NodeId,
    pub response: T,
}
