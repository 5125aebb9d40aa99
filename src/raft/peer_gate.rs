//! Where a peer's appends and votes enter a group on this member
//! ([`PeerGate`]): straight into openraft, except while the shard log's
//! recovery says this member may have lost records it acknowledged
//! (`wal::ShardLog::may_have_lost_after`). Then the member grants no vote
//! and stands for no election, until a leader's append has brought its log
//! past the point of the loss.
//!
//! It must never grant a vote while that point stands, and never clear it on
//! anything but a successful append of a leader that reaches the leader's
//! commit point in the leader's own term.

use std::cell::Cell;

use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};

use super::types::{GroupId, LogId, NodeId, Raft, TypeConfig};
use crate::wal::SharedLog;

pub struct PeerGate {
    group: GroupId,
    member: NodeId,
    raft: Raft,
    log: SharedLog,
    /// The index after which this member may have lost entries it
    /// acknowledged; its vote may be older than one it gave too.
    unproven_after: Cell<Option<u64>>,
    /// `unproven_after` as the group started, for tests.
    #[cfg(test)]
    pub(super) unproven_after_at_start: Option<u64>,
}

impl PeerGate {
    /// The gate of `group` on `member`; with `unproven_after`, closed for
    /// votes (and elections) until a leader brings the log past it.
    pub(super) fn new(
        group: GroupId,
        member: NodeId,
        raft: Raft,
        log: SharedLog,
        unproven_after: Option<u64>,
    ) -> PeerGate {
        if unproven_after.is_some() {
            raft.runtime_config().elect(false);
        }
        PeerGate {
            group,
            member,
            raft,
            log,
            unproven_after: Cell::new(unproven_after),
            #[cfg(test)]
            unproven_after_at_start: unproven_after,
        }
    }

    /// The index after which this member may have lost acknowledged
    /// entries, while it refuses votes.
    pub fn unproven_after(&self) -> Option<u64> {
        self.unproven_after.get()
    }

    /// The group's Raft, for what does not pass the gate (snapshots).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Takes an append-entries message a peer sent this group.
    pub async fn append_entries(
        &self,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let Some(unproven_after) = self.unproven_after.get() else {
            return self.raft.append_entries(request).await;
        };
        let leader_term = request.vote.leader_id().term;
        let leader_commit = request.leader_commit;
        let matched = request.entries.last().map(|entry| entry.log_id).or(request.prev_log_id);
        let response = self.raft.append_entries(request).await?;
        if response.is_success() {
            self.maybe_proven_again(unproven_after, leader_term, leader_commit, matched);
        }
        Ok(response)
    }

    /// Clears the refusal of a member whose log may have lost acknowledged
    /// entries after `unproven_after`, once a leader's append proves the
    /// loss repaired: the append succeeded, so this log now matches the
    /// leader's through `matched`; that reaches the leader's commit point,
    /// which is past `unproven_after` and an entry of the leader's own term.
    /// A leader commits an entry of its term only after every entry
    /// committed before its election (all in its log, since it was elected
    /// without this member's vote, or with it before the loss), and one that
    /// led before the loss has a commit point past every entry that counted
    /// this member's acknowledgement. So every committed entry this member
    /// may have acknowledged and lost is back, and its vote is now the
    /// leader's, at least as new as any it may have lost unless a leader of
    /// an older term still led (the case the refusal cannot see: a stale
    /// leader that kept committing with this member alone).
    fn maybe_proven_again(
        &self,
        unproven_after: u64,
        leader_term: u64,
        leader_commit: Option<LogId>,
        matched: Option<LogId>,
    ) {
        let Some(commit) = leader_commit else { return };
        let proven = commit.leader_id.term == leader_term
            && commit.index > unproven_after
            && matched.is_some_and(|matched| matched.index >= commit.index);
        if proven {
            tracing::info!(
                group = self.group,
                member = self.member,
                index = commit.index,
                "a leader brought the log past the records recovery dropped: this member votes again"
            );
            self.unproven_after.set(None);
            self.log.mark_proven(self.group);
            self.raft.runtime_config().elect(true);
        }
    }

    /// Takes a vote request a peer sent this group. A member whose log may
    /// have lost acknowledged records refuses every vote until a leader has
    /// brought it past them: its recovered vote may be older than one it
    /// gave (granting again would vote twice in a term), and its log shorter
    /// than the one it acknowledged (granting would let a candidate that
    /// lacks a committed entry win).
    pub async fn vote(
        &self,
        request: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        if let Some(index) = self.unproven_after.get() {
            tracing::info!(
                group = self.group,
                member = self.member,
                candidate = ?request.vote.leader_id().voted_for(),
                candidate_last_log = ?request.last_log_id,
                index,
                "refused a vote: this member's log may have lost acknowledged records after entry {index}"
            );
            let vote = self.raft.metrics().borrow().vote;
            // Its own vote, which the candidate takes for a refusal; no log
            // id, since this log is not offered for comparison.
            return Ok(VoteResponse { vote, vote_granted: false, last_log_id: None });
        }
        self.raft.vote(request).await
    }
}
