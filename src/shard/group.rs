//! One Raft group as a shard runs it ([`ShardGroup`]): the group's Raft
//! instance and its store as the Raft state machine (`super::machine`),
//! composed with the pieces the shard keeps beside them, each from the
//! file that owns its rules: the proposal queue (`propose`), the read
//! barrier (`barrier`), lease deadlines (`lease`), this member's removal
//! (`membership`), the NOSPACE alarms (`space`) and the wakers of watches
//! (`watch`). Those pieces take only the handles they need; this file
//! hands them out. Which groups a shard runs is `super::registry`'s; what
//! a request does with a group is its caller's.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::time::Instant;

use super::answer::RequestError;
use super::barrier::ReadBarrier;
use super::layout::GroupLayout;
use super::lease::{LeaseAnswer, LeaseDeadlines, LeaseQuery};
use super::machine::KvMachine;
use super::membership::{MembershipChange, Removal};
use super::propose::{Proposer, Proposing};
use super::space::Alarms;
use super::stages::Stages;
use super::watch::{HubWakers, WatchedGroup};
use crate::kv::group::GroupState;
use crate::raft::{GroupError, GroupId, NodeId, PeerTransport, RaftGroup, WalSnapshotStore};
use crate::wal::SharedLog;

/// One group as this shard runs it: its Raft group and store, with the
/// pieces the shard keeps beside them. The fields are this file's; the
/// shard's modules reach them through the methods below, and other layers
/// through the shard's request handles (`super::requests::Requests`,
/// `super::peer_requests::PeerRequests`).
pub struct ShardGroup {
    raft: Rc<RaftGroup>,
    machine: Rc<RefCell<KvMachine>>,
    /// Client writes on their way into `raft`, batched.
    proposer: Rc<Proposer>,
    /// Linearizable reads waiting for a shared read barrier.
    barrier: Rc<ReadBarrier>,
    /// When its leases expire, kept while this member leads the group.
    leases: RefCell<LeaseDeadlines>,
    /// This member's removal from the group, as a peer proved it.
    removal: Removal,
    /// The NOSPACE alarms of the group on this member.
    alarms: Alarms,
    /// The wakers of the pumps of watches open in the group.
    hub_wakers: HubWakers,
    /// The shard's stages, which the group's writes are recorded in.
    stages: Stages,
}

impl ShardGroup {
    /// Starts group `group` over `log` for `layout`, talking to peers
    /// through `transport`, recording in the shard's `stages`, and
    /// bootstraps it when it is new.
    pub(super) async fn start<T: PeerTransport>(
        layout: &GroupLayout,
        group: GroupId,
        log: SharedLog,
        snapshots: Rc<WalSnapshotStore>,
        transport: Rc<T>,
        stages: Stages,
    ) -> Result<ShardGroup, GroupError> {
        let auth = (group == crate::kv::auth::AUTH_GROUP).then(|| layout.auth.clone());
        let state = GroupState::hybrid(group, layout.watch);
        let machine = Rc::new(RefCell::new(KvMachine::new(group, state, auth, stages.clone())));
        let raft = RaftGroup::start(
            group,
            layout.member.id,
            &layout.raft,
            log,
            machine.clone(),
            snapshots,
            transport,
        )
        .await?;
        machine.borrow_mut().set_timeline(raft.timeline().clone());
        if !layout.join {
            raft.bootstrap(&layout.initial_members).await?;
        }
        Ok(ShardGroup {
            raft: Rc::new(raft),
            machine,
            proposer: Rc::new(Proposer::new(layout.proposal_queue_bytes_max, stages.clone())),
            barrier: Rc::new(ReadBarrier::new()),
            leases: RefCell::default(),
            removal: Removal::default(),
            alarms: Alarms::new(group, layout.member.id),
            hub_wakers: HubWakers::default(),
            stages,
        })
    }

    pub(super) fn raft(&self) -> &RaftGroup {
        &self.raft
    }

    pub(super) fn machine(&self) -> &Rc<RefCell<KvMachine>> {
        &self.machine
    }

    #[cfg(test)]
    pub(super) fn proposer(&self) -> &Proposer {
        &self.proposer
    }

    /// What proposing to the group takes (see `super::propose::propose`).
    pub(super) fn proposing(&self) -> Proposing {
        Proposing::new(self.raft.clone(), self.proposer.clone())
    }

    #[cfg(test)]
    pub(super) fn barrier(&self) -> &ReadBarrier {
        &self.barrier
    }

    /// Returns once the group may serve a linearizable read that arrived
    /// now, where this member leads (see `super::barrier`).
    pub(super) async fn linearizable(&self) -> Result<(), RequestError> {
        super::barrier::linearizable(self.raft.clone(), self.barrier.clone()).await
    }

    pub(super) fn leases(&self) -> &RefCell<LeaseDeadlines> {
        &self.leases
    }

    /// Makes the group's lease deadlines follow this member's leadership,
    /// and refuses when it does not lead (see `super::lease::lead`).
    pub(super) fn lead_leases(&self, now: Instant) -> Result<(), GroupError> {
        super::lease::lead(&self.raft, &self.machine, &self.leases, now)
    }

    /// Answers `query` about the group's leases if this member leads it
    /// (see `super::lease::lease_as_leader`).
    pub(super) async fn lease_as_leader(&self, query: LeaseQuery) -> Result<LeaseAnswer, GroupError> {
        super::lease::lease_as_leader(&self.raft, &self.machine, &self.leases, query).await
    }

    /// Applies a membership change if this member leads the group.
    pub(super) async fn change_as_leader(&self, change: MembershipChange) -> Result<(), GroupError> {
        super::membership::change_as_leader(&self.raft, change).await
    }

    #[cfg(test)]
    pub(super) fn removal(&self) -> &Removal {
        &self.removal
    }

    /// Refuses client requests where this member is not (or no longer) in
    /// the group (see `super::membership::check_serving`).
    pub(super) fn check_serving(&self, shard: usize) -> Result<(), RequestError> {
        super::membership::check_serving(&self.raft, &self.removal, shard)
    }

    /// Takes `peer`'s proof that this member was removed from the group at
    /// log index `index` (see `super::membership::removed_by_peer`).
    pub(super) fn removed_by_peer(&self, index: u64, peer: NodeId) {
        super::membership::removed_by_peer(&self.raft, &self.removal, index, peer)
    }

    pub(super) fn alarms(&self) -> &Alarms {
        &self.alarms
    }

    pub(super) fn stages(&self) -> &Stages {
        &self.stages
    }

    /// Whether the group refuses writes that add data here (NOSPACE).
    pub fn alarmed(&self) -> bool {
        self.alarms.raised()
    }
}

impl WatchedGroup for ShardGroup {
    fn group(&self) -> GroupId {
        self.raft.group()
    }

    fn with_state<R>(&self, work: impl FnOnce(&mut GroupState) -> R) -> R {
        work(&mut self.machine.borrow_mut().state)
    }

    fn term_and_member(&self) -> (u64, NodeId) {
        let metrics = self.raft.metrics();
        (metrics.term, metrics.member)
    }

    fn hub_wakers(&self) -> &HubWakers {
        &self.hub_wakers
    }
}
