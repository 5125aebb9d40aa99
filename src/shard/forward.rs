//! Client requests that reach a member which does not lead their group:
//! writes are forwarded to the leader, and linearizable reads wait for the
//! leader's read index, both over the peer transport, so a client may send
//! anything to any member.
//!
//! It owns the rule that a forwarded request is forwarded once: the leader
//! side proposes or answers notLeader, never passes it on, so a request
//! cannot circle between members that disagree on the leader. It never
//! retries a write that reached a leader (it may still apply). The shard
//! does not know how the link travels: the node hands it one that the RPC
//! layer implements.

use std::rc::Rc;

use futures::future::LocalBoxFuture;

use super::groups::{RequestError, ShardGroup};
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

    /// Has `leader` apply a membership change to `group`.
    fn forward_membership(
        &self,
        group: GroupId,
        leader: &Member,
        change: super::membership::MembershipChange,
    ) -> LocalBoxFuture<'static, Result<(), GroupError>>;
}

/// Writes `command` through the group's leader: proposed here when this
/// member leads, else forwarded to the leader (waiting for an election
/// when none is known). Answers within the group's request timeout.
pub async fn write(
    entry: Rc<ShardGroup>,
    link: &Rc<dyn LeaderLink>,
    command: Vec<u8>,
) -> Result<Vec<u8>, RequestError> {
    let group = entry.clone();
    group
        .raft
        .within_request_timeout(async move {
            let leader = entry.raft.wait_for_leader().await?;
            if leader.id == entry.raft.member() {
                return super::propose::propose(entry, command).await;
            }
            Ok(link.forward_write(entry.raft.group(), &leader, command).await?)
        })
        .await
}

/// Returns once this member may serve a linearizable read of the group: a
/// read barrier where it leads, else the leader's read index applied here.
/// Answers within the group's request timeout.
pub async fn linearizable(entry: Rc<ShardGroup>, link: &Rc<dyn LeaderLink>) -> Result<(), RequestError> {
    let group = entry.clone();
    group
        .raft
        .within_request_timeout(async move {
            let leader = entry.raft.wait_for_leader().await?;
            if leader.id == entry.raft.member() {
                return super::barrier::linearizable(entry).await;
            }
            let index = link.read_index(entry.raft.group(), &leader).await?;
            Ok(entry.raft.wait_applied(index).await?)
        })
        .await
}

/// The leader's side of [`LeaderLink::forward_write`]: proposes the write
/// if this member leads the group, else refuses with notLeader.
pub async fn write_as_leader(entry: Rc<ShardGroup>, command: Vec<u8>) -> Result<Vec<u8>, GroupError> {
    let (group, member) = (entry.raft.group(), entry.raft.member());
    let leader = entry.raft.leader();
    if leader.as_ref().is_none_or(|leader| leader.id != member) {
        return Err(GroupError::NotLeader {
            group,
            member,
            leader: leader.as_ref().map(|leader| leader.id),
            leader_address: leader.map(|leader| leader.peer_address),
        });
    }
    super::propose::propose(entry, command).await.map_err(|error| match error {
        RequestError::Group(error) => error,
        other => GroupError::Unavailable { group, member, reason: other.to_string() },
    })
}
