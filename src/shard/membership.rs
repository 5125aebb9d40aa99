//! Membership changes of the whole cluster: `nvkv member add | promote |
//! remove`, applied to every group of the node, each through its leader
//! (proposed here where this member leads, else forwarded to the leader
//! over the peer link, like a write). A change is a Raft log entry in each
//! group, so it is durable and a restarted member sees it.
//!
//! Groups change one after the other, and each change is idempotent: a
//! change that failed part way (a leader lost, a timeout) is finished by
//! running it again. The request handle's call
//! (`super::requests::Requests::change_membership`) goes through the groups;
//! this module has what one group does: the leader's side of a change, and
//! this member's standing in the group ([`Removal`]). It never looks up a
//! group or a shard.

use std::cell::Cell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::answer::RequestError;
use super::layout::GroupLayout;
use crate::raft::{GroupError, Member, NodeId, RaftGroup};

/// How many entries a learner may miss and still be promoted. A learner
/// further behind would make the group wait for it to catch up before the
/// new quorum commits anything; under steady writes a caught-up learner
/// trails by a few batches.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 256;

/// One membership change, as sent to a group's leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a member as a learner: it receives the log but does not vote.
    AddLearner(Member),
    /// Makes a caught-up learner a voter.
    Promote(NodeId),
    /// Takes a member (voter or learner) out.
    Remove(NodeId),
}

/// The leader's side of a change: applies it if this member leads the
/// group of `raft` (openraft answers notLeader otherwise).
pub async fn change_as_leader(raft: &RaftGroup, change: MembershipChange) -> Result<(), GroupError> {
    match change {
        MembershipChange::AddLearner(member) => raft.add_learner_once(member).await,
        MembershipChange::Promote(learner) => raft.promote(learner, PROMOTE_LAG_ENTRIES_MAX).await,
        MembershipChange::Remove(member) => raft.remove(member).await,
    }
}

/// What this member knows of its removal from one group beyond its own
/// log: a peer's proof, and whether the refusal was logged.
#[derive(Debug, Default)]
pub struct Removal {
    /// Whether the refusal of a removed member was logged already: once
    /// is enough.
    logged: Cell<bool>,
    /// The index of a committed membership that leaves this member out, as
    /// a peer proved it (`RaftGroup::removal_proof`) when this member asked
    /// for its vote after missing its own removal. Kept in memory only: after
    /// a restart the next vote it asks for proves it again.
    at: Cell<Option<u64>>,
}

impl Removal {
    /// The index of the membership a peer proved this member's removal at.
    pub fn proven_at(&self) -> Option<u64> {
        self.at.get()
    }
}

/// Refuses client requests on a member that is not (or no longer) in the
/// membership of `raft`'s group (on `shard`), as it stands and as peers
/// proved it (`removal`): a removed member stops serving, and a joining one
/// serves once it was added.
pub fn check_serving(raft: &RaftGroup, removal: &Removal, shard: usize) -> Result<(), RequestError> {
    let (group, member) = (raft.group(), raft.member());
    let standing = raft.standing(member);
    if let Some(index) = removal.at.get() {
        // A peer's proof counts until this member's own membership is newer
        // and names it again: it was added back (a member that rejoins is
        // told of its removal while it waits to be added, and may lead the
        // group afterwards, its lease expiries and every request refused).
        let named = matches!(standing, crate::raft::Standing::Voter | crate::raft::Standing::Learner);
        if !named || raft.membership_index() <= index {
            return Err(RequestError::Removed { member, group });
        }
        removal.at.set(None);
        removal.logged.set(false);
        tracing::info!(member, group, "this member was added back to group {group}: it serves again");
    }
    match standing {
        crate::raft::Standing::Voter | crate::raft::Standing::Learner => Ok(()),
        // openraft has not loaded the membership from the log yet.
        crate::raft::Standing::Unconfigured if raft.has_state() => Err(RequestError::Starting { shard }),
        crate::raft::Standing::Unconfigured => Err(RequestError::Joining { member, group }),
        crate::raft::Standing::Leaving | crate::raft::Standing::Absent => {
            if !removal.logged.replace(true) {
                tracing::warn!(
                    member,
                    group,
                    "this member was removed from group {group}; it refuses client requests from now on"
                );
            }
            Err(RequestError::Removed { member, group })
        }
    }
}

/// Takes a peer's proof that this member was removed from `group` while it
/// was away: the peer applied a membership at `index` that leaves it out.
/// Only a membership newer than this member's own counts (its own may name
/// it again, as when it was added back and caught up). From then on the
/// group refuses client requests here, as on a member that applied its
/// removal.
pub fn removed_by_peer(raft: &RaftGroup, removal: &Removal, index: u64, peer: NodeId) {
    if index <= raft.membership_index() || removal.at.get().is_some() {
        return;
    }
    removal.at.set(Some(index));
    removal.logged.set(true);
    tracing::warn!(
        member = raft.member(),
        group = raft.group(),
        "member {peer} applied a membership (log index {index}) that no longer names this member: it was \
         removed from group {} while away, and refuses client requests from now on",
        raft.group()
    );
}

/// Says at start how this member's config stands to the cluster's
/// membership, as group 0 has it here (a membership change goes to every
/// group, so one group speaks for all): a joining member that waits to be
/// added, a config that still names the members the cluster started with
/// after `nvkv member add` or `remove` changed them (a warning: the config
/// no longer describes the cluster, and a member set up from it would not
/// be either), and join mode on a member that was added already (only a new
/// data directory reads it).
pub fn report_config_against_cluster(layout: &GroupLayout, group: &RaftGroup) {
    let me = &layout.member;
    if !group.has_state() {
        if layout.join {
            tracing::info!(
                "join mode (cluster.join = true): waiting to be added to the cluster; on a member of it, run \
                 `nvkv member add {} --name {} --peer-urls {} --client-urls {} --learner`, then \
                 `nvkv member promote {}`",
                me.id,
                me.name,
                me.peer_address,
                me.client_address,
                me.id
            );
        }
        return;
    }
    let metrics = group.metrics();
    if metrics.members.is_empty() {
        return;
    }
    if layout.join {
        tracing::info!(
            "join mode (cluster.join = true), but this member is in the cluster already (group 0 names it): \
             join mode only matters to a new data directory"
        );
    }
    let configured: BTreeMap<NodeId, &str> =
        layout.initial_members.iter().map(|member| (member.id, member.peer_address.as_str())).collect();
    let cluster: BTreeMap<NodeId, &str> =
        metrics.members.values().map(|member| (member.id, member.peer_address.as_str())).collect();
    if configured == cluster {
        return;
    }
    let listed = |members: &BTreeMap<NodeId, &str>| {
        members
            .iter()
            .map(|(id, address)| {
                let learner = if metrics.learners.contains(id) { ", learner" } else { "" };
                format!("{id} ({address}{learner})")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let configured_text = if layout.initial_members.len() == 1 && layout.initial_members[0].id == me.id {
        format!("this member alone, {}", listed(&configured))
    } else {
        listed(&configured)
    };
    tracing::warn!(
        "the config's cluster.members lists {configured_text}, but the cluster's members are {} (group 0, \
         membership at log index {}): after `nvkv member add`, `promote` or `remove`, list the cluster's \
         members in cluster.members of every member's config (docs/cluster.md, \"After a membership change\")",
        listed(&cluster),
        group.membership_index()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Member;
    use crate::shard::test_support::{in_shard, one_group};

    /// A member that rejoins is told by its peers that it was removed while
    /// it waits to be added: once added back (its own membership newer than
    /// the proof names it), it serves again, and may lead.
    #[test]
    fn a_member_told_of_its_removal_serves_again_once_added_back() {
        in_shard(async {
            let entry = one_group().await;
            entry.check_serving(0).expect("a voter serves");
            let proof = entry.raft().membership_index() + 1;
            entry.removed_by_peer(proof, 9);
            let refused = entry.check_serving(0);
            assert!(matches!(refused, Err(RequestError::Removed { .. })), "{refused:?}");
            for learner in [9, 10] {
                entry
                    .raft()
                    .add_learner(Member::new(learner, "10.0.0.9:2380"))
                    .await
                    .expect("a learner is added");
            }
            assert!(entry.raft().membership_index() > proof);
            entry.check_serving(0).expect("added back: it serves again");
            assert_eq!(entry.removal().proven_at(), None);
            entry.removed_by_peer(proof, 9);
            entry.check_serving(0).expect("an older proof than its own membership does not count");
        });
    }
}
