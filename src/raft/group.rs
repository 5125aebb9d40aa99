//! A running Raft group on this member: openraft built from the group's log
//! store, state machine and network, with the calls the shard makes on the
//! request path (write, linearizable read barrier, status) and typed errors
//! a client can act on.
//!
//! It owns the group's bootstrap rule (its configuration is `config.rs`): a group is
//! initialized once, and never again once its log holds any state. It must
//! never retry a write on its own (a write that timed out may still apply)
//! and never hide that the group stopped.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, SnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{ChangeMembers, ServerState};

use super::config::GroupConfig;
use super::log_store::{GroupLogStore, ENTRY_HEADER_BYTES};
use super::network::{GroupNetworkFactory, PeerTransport};
use super::peer_gate::PeerGate;
use super::snapshot_inbox::{Reception, SnapshotInbox, SnapshotReceiveError};
use super::state_machine::{GroupStateMachine, GroupStateMachineStore, SnapshotStore};
use super::timeline::{Timeline, WritePath};
use super::types::{Command, GroupId, LogId, Member, NodeId, Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};
use super::wal_snapshots::SNAPSHOT_ENVELOPE_BYTES_MAX;
use crate::wal::SharedLog;

/// Why a group refused or could not finish a request.
// Serde: a follower that forwarded a write hands the leader's error on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum GroupError {
    /// Expected: this member is not the leader. The hint names the leader
    /// when this member knows it.
    #[error(
        "group {group}: member {member} is not the leader; {}",
        match (leader, leader_address) {
            (Some(leader), Some(address)) => format!("send the request to member {leader} at {address}"),
            (Some(leader), None) => format!("send the request to member {leader}"),
            _ => "no leader is known yet, retry shortly".to_string(),
        }
    )]
    NotLeader { group: GroupId, member: NodeId, leader: Option<NodeId>, leader_address: Option<String> },
    /// Expected: the leader could not hear from a quorum.
    #[error("group {group}: no quorum answered member {member} ({reason}); retry when a majority is up")]
    Unavailable { group: GroupId, member: NodeId, reason: String },
    /// Expected: no answer within the request timeout. A write may still
    /// be applied later.
    #[error(
        "group {group}: no answer within {timeout_ms} ms; the request may still take effect, \
         check before retrying a write that is not idempotent"
    )]
    Timeout { group: GroupId, timeout_ms: u64 },
    /// Expected: the command is larger than one log entry holds.
    #[error(
        "group {group}: a command of {bytes} bytes is larger than a log entry holds ({max} bytes); \
         split it, or raise the log's batch_bytes_max"
    )]
    CommandTooLarge { group: GroupId, bytes: usize, max: usize },
    /// Expected: a membership change was refused (one is in progress, the
    /// new voters are not learners yet, or none would be left).
    #[error("group {group}: membership change refused: {reason}")]
    MembershipChange { group: GroupId, reason: String },
    /// Fatal for the group: it stopped (shut down, or its storage failed).
    #[error("group {group} on member {member} stopped: {reason}; the shard must restart it")]
    Stopped { group: GroupId, member: NodeId, reason: String },
    /// The group could not be built or bootstrapped.
    #[error("group {group} on member {member} could not start: {reason}")]
    Start { group: GroupId, member: NodeId, reason: String },
    /// Expected: a learner to be promoted has not caught up with the
    /// leader's log yet.
    #[error(
        "group {group}: learner {learner} is {behind} entries behind the leader (it has {matched} of {last}; \
         at most {lag_max} may be missing, and it must have acknowledged some): wait until `nvkv status -w json` \
         shows it caught up, then promote again"
    )]
    NotCaughtUp { group: GroupId, learner: NodeId, matched: u64, last: u64, behind: u64, lag_max: u64 },
    // Last, so the variants before it keep their encoding between members.
    /// Expected: a request this member meant to forward never reached the
    /// leader it knew (no link to it, or it no longer leads): it did not
    /// take effect, so sending it again is safe.
    #[error(
        "group {group}: the request was not taken by member {leader} ({reason}); it did not take effect, \
         retry when the group has a leader"
    )]
    NotSent { group: GroupId, leader: NodeId, reason: String },
    /// Expected: the group is out of space (etcd's NOSPACE alarm): its
    /// store, even with all history compacted, is larger than its shard's
    /// snapshot area has room for, so it cannot snapshot and its log can
    /// only grow. Writes that add data are refused until space is back;
    /// deletes, compaction and lease revocations still go through.
    #[error(
        "group {group} is out of space (alarm NOSPACE on member {member}): its store takes {snapshot_bytes} bytes \
         as a snapshot with all history compacted, and its shard's snapshot area has {room_bytes} free, so it \
         refuses writes that add data; delete keys (deletes and compaction still work, and the alarm clears by \
         itself once the store fits again), or give the node a larger namespace_bytes"
    )]
    NoSpace { group: GroupId, member: NodeId, snapshot_bytes: u64, room_bytes: u64 },
    #[error(
        "group {group} is over its quota (alarm NOSPACE on member {member}): its store takes {store_bytes} bytes \
         and store.quota_bytes is {quota_bytes}, so it refuses writes that add data; delete keys and compact \
         (both still work, and the alarm clears by itself within a second once the store is under the quota), \
         or raise store.quota_bytes"
    )]
    OverQuota { group: GroupId, member: NodeId, store_bytes: u64, quota_bytes: u64 },
}

/// Where a member stands in the latest membership of a group, as this
/// member knows it (the latest is the effective one: appended, maybe not
/// yet committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The group has no membership at all: a member started in join mode
    /// that nobody added yet.
    Unconfigured,
    Voter,
    Learner,
    /// A change under way (joint consensus) leaves it out of the next
    /// voters: it is being removed.
    Leaving,
    /// The membership does not name it: it was removed.
    Absent,
}

/// What the group looks like from this member, for status and routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetrics {
    pub group: GroupId,
    pub member: NodeId,
    pub state: ServerState,
    pub term: u64,
    pub current_leader: Option<NodeId>,
    pub vote: Vote,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<LogId>,
    pub snapshot: Option<LogId>,
    pub purged: Option<LogId>,
    /// The members that vote, and the learners, as of the last membership
    /// this member knows.
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Every member of that membership, with where it listens.
    pub members: BTreeMap<NodeId, Member>,
    /// Where this member leads: the last log index known to be on each
    /// member, itself included (`None`: nothing matched yet). Empty on a
    /// follower, which does not track the others.
    pub replication: BTreeMap<NodeId, Option<u64>>,
}

/// Counts into `changes` every (leader, term) the group's server metrics
/// show, until the group shuts down and its metrics sender goes. openraft
/// sends server metrics only when they change (vote, state, leader,
/// membership), not at every turn of its core as the whole metrics, so this
/// task wakes on leadership events alone.
fn count_leader_changes(
    mut metrics: tokio::sync::watch::Receiver<openraft::metrics::RaftServerMetrics<NodeId, Member>>,
    changes: Rc<Cell<u64>>,
) {
    tokio::task::spawn_local(async move {
        let mut seen: Option<(NodeId, u64)> = None;
        loop {
            let current = {
                let metrics = metrics.borrow_and_update();
                metrics.current_leader.map(|leader| (leader, metrics.vote.leader_id().get_term()))
            };
            if current.is_some() && current != seen {
                seen = current;
                changes.set(changes.get() + 1);
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

/// One group as run by one member.
pub struct RaftGroup {
    group: GroupId,
    member: NodeId,
    raft: Raft,
    log: SharedLog,
    request_timeout: Duration,
    inbox: SnapshotInbox,
    /// Leaderships this member has seen the group take (a leader in a term
    /// it had not seen led), counted by a task that watches openraft's
    /// metrics, so none is missed between two reads.
    leader_changes: Rc<Cell<u64>>,
    /// When recent entries passed each point of their way (the budget).
    timeline: Rc<Timeline>,
    /// Where peers' appends and votes enter the group: it keeps a member
    /// whose log may have lost acknowledged records from voting.
    gate: Rc<PeerGate>,
}

/// A write's outcome as the state machine answered it, and where the write
/// spent its time on the way (see [`Timeline`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub outcome: Vec<u8>,
    pub path: WritePath,
}

impl RaftGroup {
    /// Starts `group` as member `member`: its log lives in the shard's
    /// `log`, its state in `machine` (empty: it is restored from the stored
    /// snapshot and the log replays onto it), its snapshots in `snapshots`,
    /// and it talks to peers through `transport`. Must run inside the
    /// shard's `LocalSet`.
    pub async fn start<M, S, T>(
        group: GroupId,
        member: NodeId,
        config: &GroupConfig,
        log: SharedLog,
        machine: Rc<RefCell<M>>,
        snapshots: Rc<S>,
        transport: Rc<T>,
    ) -> Result<RaftGroup, GroupError>
    where
        M: GroupStateMachine + 'static,
        S: SnapshotStore + 'static,
        T: PeerTransport,
    {
        let start_error = |reason: String| GroupError::Start { group, member, reason };
        let raft_config = config.openraft_config().map_err(start_error)?;
        let timeline = Rc::new(Timeline::new());
        let log_store = GroupLogStore::open(log.clone(), group)
            .map_err(|error| start_error(error.to_string()))?
            .with_timeline(timeline.clone())
            .applying_committed_at_start(config.apply_committed_at_start);
        let state_machine = GroupStateMachineStore::open(group, machine, snapshots)
            .await
            .map_err(|error| start_error(error.to_string()))?;
        let purged = log.with(|log| log.purged(group));
        if let Some((purged_index, _)) = purged {
            // The log replays onto the state machine from the snapshot on:
            // a purge past it means entries nobody can replay any more.
            let applied = state_machine.applied().map(|applied| applied.index);
            if applied.is_none_or(|applied| applied < purged_index) {
                return Err(start_error(format!(
                    "its log is purged up to entry {purged_index} but the snapshot store covers only up to \
                     {applied:?}; the snapshot was lost: remove this member, clear its data and add it again, and \
                     it catches up from the others"
                )));
            }
        }
        let network = GroupNetworkFactory::new(
            group,
            transport,
            Duration::from_millis(config.unreachable_backoff_ms),
            timeline.clone(),
        );
        let raft = Raft::new(member, Arc::new(raft_config), network, log_store, state_machine)
            .await
            .map_err(|error| start_error(error.to_string()))?;
        let leader_changes = Rc::new(Cell::new(0));
        count_leader_changes(raft.server_metrics(), leader_changes.clone());
        let mut unproven_after = log.with(|log| log.may_have_lost_after(group));
        let sole_voter = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            metrics.membership_config.membership().voter_ids().eq([member])
        };
        if let (Some(index), true) = (unproven_after, sole_voter) {
            // No other member holds what may have been lost, and refusing to
            // elect itself would only stop the group for good.
            tracing::error!(
                group,
                member,
                index,
                "the shard log dropped records that may have been acknowledged, and this member is the group's \
                 only voter: entries after {index} may be lost"
            );
            unproven_after = None;
        }
        // A known loss (recovery skipped a damaged record that had been
        // durable) is refused whatever the policy for unproven tails says:
        // voting with a vote or an acknowledged entry known to be lost can
        // elect a second leader in a term or one that lacks a committed
        // entry, and so lose committed writes.
        let known = log.with(|log| log.loss_is_known(group));
        if let (Some(index), false, false) = (unproven_after, known, config.refuse_votes_after_unproven_tail)
        {
            tracing::warn!(
                group,
                member,
                index,
                "the shard log dropped records that may have been acknowledged: entries of this group after \
                 {index} may be lost on this member (raft.refuse_votes_after_unproven_tail is off, so it votes)"
            );
            unproven_after = None;
        }
        if let Some(index) = unproven_after {
            tracing::warn!(
                group,
                member,
                index,
                "the shard log dropped records that may have been acknowledged: this member grants no vote and \
                 starts no election in the group until a leader has brought its log past entry {index}"
            );
        }
        let gate = Rc::new(PeerGate::new(group, member, raft.clone(), log.clone(), unproven_after));
        Ok(RaftGroup {
            group,
            member,
            raft,
            log,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            inbox: SnapshotInbox::new(group),
            leader_changes,
            timeline,
            gate,
        })
    }

    /// Where the group's entries mark their way: its state machine marks
    /// each entry applied here.
    pub fn timeline(&self) -> &Rc<Timeline> {
        &self.timeline
    }

    /// Leaderships this member has seen the group take since it started.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.get()
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn member(&self) -> NodeId {
        self.member
    }

    /// openraft's handle, for what this type does not wrap (metrics
    /// streams, runtime switches) and for tests.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Makes `members` the group's first membership, if the group has never
    /// had any state on this member. Call it on every member with the same
    /// list; returns whether this call initialized the group. After a
    /// restart (the log holds a vote or entries) it does nothing.
    pub async fn bootstrap(&self, members: &[Member]) -> Result<bool, GroupError> {
        if self.has_state() {
            return Ok(false);
        }
        let members: BTreeMap<NodeId, Member> =
            members.iter().map(|member| (member.id, member.clone())).collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            // Another member's leader reached this one first.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(error @ InitializeError::NotInMembers(_))) => {
                Err(GroupError::Start { group: self.group, member: self.member, reason: error.to_string() })
            }
            Err(RaftError::Fatal(fatal)) => Err(self.stopped(fatal.to_string())),
        }
    }

    /// Whether this member's log holds anything of the group (a vote or
    /// entries): false only before its first membership arrives. Unlike
    /// the metrics, this holds from the start, before openraft loaded the
    /// log.
    pub fn has_state(&self) -> bool {
        self.log.with(|log| log.last_index(self.group).is_some() || log.vote(self.group).is_some())
    }

    /// The largest command one log entry holds.
    pub fn command_bytes_max(&self) -> usize {
        self.log.with(|log| log.entry_bytes_max()) - ENTRY_HEADER_BYTES
    }

    /// Replicates `command`, applies it, and returns the state machine's
    /// answer, with the write's way when `proposed` says when it was
    /// proposed. Only the leader takes writes.
    pub async fn client_write(
        &self,
        command: Vec<u8>,
        proposed: Option<Instant>,
    ) -> Result<Written, GroupError> {
        self.client_write_by(command, proposed, tokio::time::Instant::now() + self.request_timeout).await
    }

    /// [`RaftGroup::client_write`], refused as timed out at `deadline`
    /// (the earliest of the request deadlines of a batch's writes).
    pub async fn client_write_by(
        &self,
        command: Vec<u8>,
        proposed: Option<Instant>,
        deadline: tokio::time::Instant,
    ) -> Result<Written, GroupError> {
        // Checked here: the log refusing an entry would stop the group.
        let max = self.command_bytes_max();
        if command.len() > max {
            return Err(GroupError::CommandTooLarge { group: self.group, bytes: command.len(), max });
        }
        let result = tokio::time::timeout_at(deadline, self.raft.client_write(Command(command)))
            .await
            .map_err(|_| self.timed_out())?;
        let response = self.written(result)?;
        let path = match proposed {
            Some(proposed) => {
                let followers_needed = {
                    let metrics = self.raft.metrics();
                    let voters = metrics.borrow().membership_config.membership().voter_ids().count();
                    voters / 2
                };
                self.timeline.path(response.log_id.index, proposed, Instant::now(), followers_needed)
            }
            None => WritePath::default(),
        };
        Ok(Written { outcome: response.data.0, path })
    }

    /// Adds `member` as a learner: it receives the log but does not vote.
    /// Returns once the change is committed, not once the learner caught up
    /// (the leader's metrics show its progress).
    pub async fn add_learner(&self, member: Member) -> Result<(), GroupError> {
        let change = self.raft.add_learner(member.id, member, false);
        let result =
            tokio::time::timeout(self.request_timeout, change).await.map_err(|_| self.timed_out())?;
        self.written(result).map(|_| ())
    }

    /// Makes `voters` the voting members (through joint consensus); members
    /// left out stay as learners with `keep_as_learners`, else leave. Every
    /// new voter must be a learner already.
    pub async fn change_voters(
        &self,
        voters: BTreeSet<NodeId>,
        keep_as_learners: bool,
    ) -> Result<(), GroupError> {
        let change = self.raft.change_membership(voters, keep_as_learners);
        let result =
            tokio::time::timeout(self.request_timeout, change).await.map_err(|_| self.timed_out())?;
        self.written(result).map(|_| ())
    }

    /// Where `member` stands in this group's latest membership.
    pub fn standing(&self, member: NodeId) -> Standing {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let joint = membership.get_joint_config();
        if joint.is_empty() || (membership.nodes().next().is_none()) {
            return Standing::Unconfigured;
        }
        if membership.get_node(&member).is_none() {
            return Standing::Absent;
        }
        let next_voters = joint.last().expect("a joint config holds at least one config");
        if next_voters.contains(&member) {
            Standing::Voter
        } else if joint.iter().any(|voters| voters.contains(&member)) {
            Standing::Leaving
        } else {
            Standing::Learner
        }
    }

    /// The log index of the latest membership this member knows (0: none).
    pub fn membership_index(&self) -> u64 {
        let metrics = self.raft.metrics();
        let index = metrics.borrow().membership_config.log_id().map_or(0, |log_id| log_id.index);
        index
    }

    /// Proof for `candidate` that it was removed: the log index of this
    /// member's membership when that membership leaves it out and is
    /// applied here (so committed: it can never be undone by a new leader).
    /// A member whose own latest membership is older than that index
    /// missed its removal (it was down, or cut away, meanwhile).
    pub fn removal_proof(&self, candidate: NodeId) -> Option<u64> {
        if self.standing(candidate) != Standing::Absent {
            return None;
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.log_id().as_ref()?.index;
        let applied = metrics.last_applied.as_ref()?.index;
        (membership <= applied).then_some(membership)
    }

    /// On the leader: adds `member` as a learner unless the membership
    /// already names it (so a change retried after a partial failure
    /// passes the groups it already reached).
    pub async fn add_learner_once(&self, member: Member) -> Result<(), GroupError> {
        if self.standing(member.id) != Standing::Absent {
            return Ok(());
        }
        self.add_learner(member).await
    }

    /// On the leader: makes learner `learner` a voter, once it is at most
    /// `lag_max` entries behind this member's log. A voter already is left
    /// as it is.
    pub async fn promote(&self, learner: NodeId, lag_max: u64) -> Result<(), GroupError> {
        match self.standing(learner) {
            Standing::Voter => return Ok(()),
            Standing::Learner => {}
            Standing::Leaving => {
                return Err(GroupError::MembershipChange {
                    group: self.group,
                    reason: format!("member {learner} is being removed; wait for that change to finish"),
                })
            }
            Standing::Unconfigured | Standing::Absent => {
                return Err(GroupError::MembershipChange {
                    group: self.group,
                    reason: format!(
                        "member {learner} is not a learner of this group; add it first with `nvkv member add`"
                    ),
                })
            }
        }
        let metrics = self.metrics();
        if metrics.current_leader != Some(self.member) {
            return Err(GroupError::NotLeader {
                group: self.group,
                member: self.member,
                leader: metrics.current_leader,
                leader_address: None,
            });
        }
        let last = metrics.last_log_index.unwrap_or(0);
        // A learner that acknowledged nothing yet (never reached, or its
        // peers refuse it) is not caught up, however short the log.
        let acknowledged = metrics.replication.get(&learner).copied().flatten();
        let matched = acknowledged.unwrap_or(0);
        let behind = last.saturating_sub(matched);
        if behind > lag_max || acknowledged.is_none() {
            return Err(GroupError::NotCaughtUp {
                group: self.group,
                learner,
                matched,
                last,
                behind,
                lag_max,
            });
        }
        let change = self.raft.change_membership(ChangeMembers::AddVoterIds([learner].into()), false);
        let result =
            tokio::time::timeout(self.request_timeout, change).await.map_err(|_| self.timed_out())?;
        self.written(result).map(|_| ())
    }

    /// On the leader: takes `member` out of the group, as a voter (through
    /// joint consensus) or as a learner. A member the membership does not
    /// name is gone already.
    pub async fn remove(&self, member: NodeId) -> Result<(), GroupError> {
        let change = match self.standing(member) {
            Standing::Absent => return Ok(()),
            Standing::Unconfigured => {
                return Err(GroupError::MembershipChange {
                    group: self.group,
                    reason: "this member has no membership of the group yet".into(),
                })
            }
            Standing::Voter | Standing::Leaving => ChangeMembers::RemoveVoters([member].into()),
            Standing::Learner => ChangeMembers::RemoveNodes([member].into()),
        };
        let change = self.raft.change_membership(change, false);
        let result =
            tokio::time::timeout(self.request_timeout, change).await.map_err(|_| self.timed_out())?;
        self.written(result).map(|_| ())
    }

    fn written(
        &self,
        result: Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, Member>>>,
    ) -> Result<ClientWriteResponse<TypeConfig>, GroupError> {
        match result {
            Ok(response) => Ok(response),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(self.not_leader(forward))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(GroupError::MembershipChange { group: self.group, reason: error.to_string() })
            }
            Err(RaftError::Fatal(fatal)) => Err(self.stopped(fatal.to_string())),
        }
    }

    /// Takes an append-entries message a peer sent this group (through the
    /// gate of a member whose log may have lost acknowledged records).
    pub async fn handle_append_entries(
        &self,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.gate.append_entries(request).await
    }

    /// The index after which this member may have lost acknowledged entries
    /// (see [`PeerGate`]), while it refuses votes.
    pub fn unproven_after(&self) -> Option<u64> {
        self.gate.unproven_after()
    }

    /// What [`RaftGroup::unproven_after`] was when the group started: a test
    /// reads it after a leader may already have repaired the group.
    #[cfg(test)]
    pub fn unproven_after_at_start(&self) -> Option<u64> {
        self.gate.unproven_after_at_start
    }

    /// Takes a vote request a peer sent this group; a member whose log may
    /// have lost acknowledged records refuses it (see [`PeerGate`]).
    pub async fn handle_vote(
        &self,
        request: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.gate.vote(request).await
    }

    /// What peers' appends and votes go through: the in-process router of
    /// tests hands them here, as the peer server does.
    pub fn peer_gate(&self) -> Rc<PeerGate> {
        self.gate.clone()
    }

    /// Starts receiving a snapshot of `bytes` bytes that a peer streams to
    /// this group, if the shard's snapshot area has room for it now.
    pub fn receive_snapshot(
        &self,
        meta: SnapshotMeta,
        bytes: u64,
    ) -> Result<Reception, SnapshotReceiveError> {
        self.inbox.begin(meta, bytes, self.snapshot_room())
    }

    /// Installs the snapshot `reception` received in full, as the leader
    /// of `vote` sent it (a vote older than this member's is answered with
    /// its own, and nothing is installed).
    pub async fn install_received_snapshot(
        &self,
        reception: &Reception,
        vote: Vote,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotReceiveError> {
        let (meta, data) = reception.finish()?;
        // Checked again: another group's snapshot may have taken the room
        // meanwhile, and a save that fails stops the group.
        let (bytes, room) = (data.len() as u64, self.snapshot_room());
        if bytes > room {
            return Err(SnapshotReceiveError::TooLarge { group: self.group, bytes, room });
        }
        let snapshot = Snapshot { meta, snapshot: Box::new(std::io::Cursor::new(data)) };
        self.raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|fatal| SnapshotReceiveError::Stopped { group: self.group, reason: fatal.to_string() })
    }

    /// The largest snapshot this group could store now, in bytes of state.
    fn snapshot_room(&self) -> u64 {
        self.log.with(|log| log.snapshot_room_bytes()).saturating_sub(SNAPSHOT_ENVELOPE_BYTES_MAX)
    }

    /// Returns once this member may serve a linearizable read from its
    /// state machine: it is the leader, a quorum confirmed it, and
    /// everything committed before the call is applied (read index).
    pub async fn ensure_linearizable(&self) -> Result<(), GroupError> {
        let result = tokio::time::timeout(self.request_timeout, self.raft.ensure_linearizable())
            .await
            .map_err(|_| self.timed_out())?;
        self.leadership_checked(result).map(|_| ())
    }

    /// On the leader: the log index a linearizable read must see applied
    /// (the read index), once a quorum confirmed this member still leads.
    /// A follower asks its leader for it, then waits with
    /// [`RaftGroup::wait_applied`].
    pub async fn read_index(&self) -> Result<u64, GroupError> {
        let result = tokio::time::timeout(self.request_timeout, self.raft.get_read_log_id())
            .await
            .map_err(|_| self.timed_out())?;
        let (read, _applied) = self.leadership_checked(result)?;
        Ok(read.map_or(0, |log_id| log_id.index))
    }

    /// Returns once this member applied the log up to `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), GroupError> {
        let waited = self
            .raft
            .wait(Some(self.request_timeout))
            .applied_index_at_least(Some(index), "read index")
            .await;
        match waited {
            Ok(_) => Ok(()),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(self.timed_out()),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(self.stopped("shutting down".into())),
        }
    }

    /// Whether this member leads the group as far as it knows, and the
    /// current term: what every answer's header needs, read without copying
    /// the metrics (the request path asks once per request).
    pub fn leadership(&self) -> (bool, u64) {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.current_leader == Some(self.member), metrics.current_term)
    }

    /// The member this member believes leads the group, if it knows one.
    ///
    /// A group whose Raft core stopped knows no leader: its metrics froze
    /// when it stopped and may still name one, even this member.
    pub fn leader(&self) -> Option<Member> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.running_state.is_err() {
            return None;
        }
        let leader = metrics.current_leader?;
        let known = metrics.membership_config.membership().get_node(&leader).cloned();
        Some(known.unwrap_or_else(|| Member::new(leader, "")))
    }

    /// The leader, once one is known: waits for an election for up to the
    /// request timeout. A member that learns of no leader in that time
    /// cannot reach a quorum (a partition's minority side, or a majority
    /// down), so it answers unavailable rather than notLeader with no
    /// leader to name.
    pub async fn wait_for_leader(&self) -> Result<Member, GroupError> {
        if let Some(leader) = self.leader() {
            return Ok(leader);
        }
        if let Some(reason) = self.failure() {
            return Err(self.stopped(reason));
        }
        let _ = self
            .raft
            .wait(Some(self.request_timeout))
            .metrics(|metrics| metrics.current_leader.is_some(), "a leader is known")
            .await;
        self.leader().ok_or_else(|| GroupError::Unavailable {
            group: self.group,
            member: self.member,
            reason: format!("no leader became known within {} ms", self.request_timeout.as_millis()),
        })
    }

    /// How long a request may wait for the group.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The error of a request that did not finish within the timeout.
    pub fn timeout_error(&self) -> GroupError {
        self.timed_out()
    }

    /// Runs `request`, several steps each bounded on its own (wait for a
    /// leader, forward to it, wait to apply), under one request timeout,
    /// so a client hears within it.
    pub async fn within_request_timeout<T, E: From<GroupError>>(
        &self,
        request: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        tokio::time::timeout(self.request_timeout, request).await.map_err(|_| E::from(self.timed_out()))?
    }

    fn leadership_checked<T>(
        &self,
        result: Result<T, RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>>,
    ) -> Result<T, GroupError> {
        match result {
            Ok(checked) => Ok(checked),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(self.not_leader(forward))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(error))) => {
                Err(GroupError::Unavailable {
                    group: self.group,
                    member: self.member,
                    reason: error.to_string(),
                })
            }
            Err(RaftError::Fatal(fatal)) => Err(self.stopped(fatal.to_string())),
        }
    }

    pub fn metrics(&self) -> GroupMetrics {
        let metrics = self.raft.metrics().borrow().clone();
        GroupMetrics {
            group: self.group,
            member: self.member,
            state: metrics.state,
            term: metrics.current_term,
            current_leader: metrics.current_leader,
            vote: metrics.vote,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied,
            snapshot: metrics.snapshot,
            purged: metrics.purged,
            voters: metrics.membership_config.membership().voter_ids().collect(),
            learners: metrics.membership_config.membership().learner_ids().collect(),
            members: metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, member)| (*id, member.clone()))
                .collect(),
            replication: metrics
                .replication
                .iter()
                .flatten()
                .map(|(id, matched)| (*id, matched.map(|log_id| log_id.index)))
                .collect(),
        }
    }

    /// Entries applied since the last snapshot (all of them when there is
    /// none).
    pub fn entries_since_snapshot(&self) -> u64 {
        let metrics = self.raft.metrics().borrow().clone();
        let applied = metrics.last_applied.map_or(0, |applied| applied.index);
        applied.saturating_sub(metrics.snapshot.map_or(0, |snapshot| snapshot.index))
    }

    /// Asks the group to purge its log up to `index` (at most its snapshot):
    /// a group that snapshots on demand is purged this way only (its owner
    /// keeps `max_in_snapshot_log_to_keep` entries behind a snapshot, or
    /// none when large entries cannot afford them). Returns at once; a
    /// leader purges once no replication needs the entries.
    pub async fn purge_log_to(&self, index: u64) -> Result<(), GroupError> {
        self.raft.trigger().purge_log(index).await.map_err(|fatal| self.stopped(fatal.to_string()))
    }

    /// Asks the group to build a snapshot now; returns at once (the
    /// snapshot index in [`RaftGroup::metrics`] moves when it is stored).
    pub async fn snapshot_now(&self) -> Result<(), GroupError> {
        self.raft.trigger().snapshot().await.map_err(|fatal| self.stopped(fatal.to_string()))
    }

    /// Makes this member stand for election now, whoever leads. The
    /// caller decides when that is worth an election (a campaign unseats a
    /// healthy leader; one by a member whose log is behind loses and only
    /// costs the group an election). Returns at once.
    pub async fn campaign(&self) -> Result<(), GroupError> {
        self.raft.trigger().elect().await.map_err(|fatal| self.stopped(fatal.to_string()))
    }

    /// Stops the group's tasks. The log and state machine stay as they are.
    pub async fn shutdown(&self) -> Result<(), GroupError> {
        self.raft.shutdown().await.map_err(|error| self.stopped(format!("shutting down: {error}")))
    }

    fn not_leader(&self, forward: ForwardToLeader<NodeId, Member>) -> GroupError {
        GroupError::NotLeader {
            group: self.group,
            member: self.member,
            leader: forward.leader_id,
            leader_address: forward.leader_node.map(|node| node.peer_address),
        }
    }

    fn timed_out(&self) -> GroupError {
        GroupError::Timeout { group: self.group, timeout_ms: self.request_timeout.as_millis() as u64 }
    }

    /// Why this member's Raft core of the group stopped for good (its
    /// storage failed, say an entry it must send could not be read), if it
    /// did. The group then serves nothing here and applies nothing more: a
    /// member in that state must be said loudly, never pass for one that
    /// follows its leader.
    pub fn failure(&self) -> Option<String> {
        self.raft.metrics().borrow().running_state.as_ref().err().map(|fatal| fatal.to_string())
    }

    fn stopped(&self, reason: String) -> GroupError {
        GroupError::Stopped { group: self.group, member: self.member, reason }
    }
}
