//! The link a follower's shard asks the leader's member through
//! ([`LeaderLink`]): forwarded writes, read indexes, lease queries and
//! membership changes. The shard does not know how the link travels: the
//! node hands it one that the RPC layer implements (a node without peers
//! has `super::start::NoPeers`). What is asked when is `super::forward`'s.

use futures::future::LocalBoxFuture;

use super::lease::{LeaseAnswer, LeaseQuery};
use super::membership::MembershipChange;
use crate::raft::{GroupError, GroupId, Member};

/// Carries a follower's requests to the same shard of the leader's member.
pub trait LeaderLink {
    /// Has `leader` propose `command` to `group`; answers the store's
    /// encoded outcome.
    fn forward_write(
        &self,
        group: GroupId,
        leader: &Member,
        command: Vec<u8>,
    ) -> LocalBoxFuture<'static, Result<Vec<u8>, GroupError>>;

    /// Asks `leader` for the read index of `group`.
    fn read_index(&self, group: GroupId, leader: &Member)
        -> LocalBoxFuture<'static, Result<u64, GroupError>>;

    /// Asks `leader` about the leases of `group`.
    fn lease(
        &self,
        group: GroupId,
        leader: &Member,
        query: LeaseQuery,
    ) -> LocalBoxFuture<'static, Result<LeaseAnswer, GroupError>>;

    /// Has `leader` apply a membership change to `group`.
    fn forward_membership(
        &self,
        group: GroupId,
        leader: &Member,
        change: MembershipChange,
    ) -> LocalBoxFuture<'static, Result<(), GroupError>>;
}
