//! One Raft group as a shard runs it ([`ShardGroup`]): the group's Raft
//! instance, its store as the Raft state machine ([`KvMachine`]), and the
//! pieces the shard keeps beside them (the proposal queue, the read
//! barrier, lease deadlines, alarms and removal state), and how one group
//! starts. Which groups a shard runs is `super::registry`'s; what a request
//! does with a group is its caller's.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use super::auth::AuthCell;
use super::barrier::ReadBarrier;
use super::layout::GroupLayout;
use super::lease::LeaseDeadlines;
use super::propose::Proposer;
use super::space::{NoSpace, OverQuota};
use crate::kv::group::GroupState;
use crate::raft::{GroupError, GroupId, GroupStateMachine, PeerTransport, RaftGroup, WalSnapshotStore};
use crate::wal::SharedLog;

/// The store of one group as its Raft state machine.
pub struct KvMachine {
    group: GroupId,
    pub state: GroupState,
    /// Group 0's: where the users and roles it applies are published for
    /// every shard of this member (see `super::auth`).
    auth: Option<Arc<AuthCell>>,
    /// Where each entry is marked applied, once the group runs.
    timeline: Option<Rc<crate::raft::Timeline>>,
}

impl KvMachine {
    fn publish_auth(&self) {
        if let Some(cell) = &self.auth {
            let state = self.state.store.auth();
            // Every change raises the revision, which a group's history
            // never lowers.
            if cell.with(|view| view.state.revision() != state.revision()) {
                cell.publish(state);
            }
        }
    }
}

impl GroupStateMachine for KvMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let started = std::time::Instant::now();
        match self.state.apply_command(command) {
            Ok(outcome) => {
                let finished = std::time::Instant::now();
                super::stages::record(|stages| stages.apply.record(finished - started));
                if let Some(timeline) = &self.timeline {
                    timeline.applied(index, started, finished);
                }
                self.publish_auth();
                outcome
            }
            // Every replica applies the same entry: skipping it here would
            // fork this replica's state from the others'. Stop instead.
            Err(error) => panic!(
                "group {} cannot apply entry {index}: {error}; this nvkv cannot serve this log, upgrade it",
                self.group
            ),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.state.restore(snapshot).map_err(|error| error.to_string())?;
        self.publish_auth();
        Ok(())
    }
}

/// One group as this shard runs it: its Raft group and store, with the
/// pieces the shard keeps beside them. The fields are this file's; the
/// shard's modules reach them through the methods below, and other layers
/// through the shard's request handles (`super::requests::Requests`,
/// `super::peer_requests::PeerRequests`).
pub struct ShardGroup {
    raft: RaftGroup,
    machine: Rc<RefCell<KvMachine>>,
    /// Client writes on their way into `raft`, batched.
    proposer: Proposer,
    /// Linearizable reads waiting for a shared read barrier.
    barrier: ReadBarrier,
    /// When its leases expire, kept while this member leads the group.
    leases: RefCell<LeaseDeadlines>,
    /// Whether the refusal of a removed member was logged already: once
    /// is enough.
    removal_logged: Cell<bool>,
    /// The index of a committed membership that leaves this member out, as
    /// a peer proved it (`RaftGroup::removal_proof`) when this member asked
    /// for its vote after missing its own removal. Kept in memory only: after
    /// a restart the next vote it asks for proves it again.
    removed_at: Cell<Option<u64>>,
    /// The NOSPACE alarm of the group on this member (see `super::space`).
    no_space: Cell<Option<NoSpace>>,
    /// The quota alarm of the group on this member (see `super::space`).
    over_quota: Cell<Option<OverQuota>>,
}

impl ShardGroup {
    /// Starts group `group` over `log` for `layout`, talking to peers
    /// through `transport`, and bootstraps it when it is new.
    pub(super) async fn start<T: PeerTransport>(
        layout: &GroupLayout,
        group: GroupId,
        log: SharedLog,
        snapshots: Rc<WalSnapshotStore>,
        transport: Rc<T>,
    ) -> Result<ShardGroup, GroupError> {
        let auth = (group == crate::kv::auth::AUTH_GROUP).then(|| layout.auth.clone());
        let machine = Rc::new(RefCell::new(KvMachine {
            group,
            state: GroupState::hybrid(group, layout.watch),
            auth,
            timeline: None,
        }));
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
        machine.borrow_mut().timeline = Some(raft.timeline().clone());
        if !layout.join {
            raft.bootstrap(&layout.initial_members).await?;
        }
        Ok(ShardGroup {
            raft,
            machine,
            proposer: Proposer::new(layout.proposal_queue_bytes_max),
            barrier: ReadBarrier::new(),
            leases: RefCell::default(),
            removal_logged: Cell::new(false),
            removed_at: Cell::new(None),
            no_space: Cell::new(None),
            over_quota: Cell::new(None),
        })
    }

    pub(super) fn raft(&self) -> &RaftGroup {
        &self.raft
    }

    pub(super) fn machine(&self) -> &Rc<RefCell<KvMachine>> {
        &self.machine
    }

    pub(super) fn proposer(&self) -> &Proposer {
        &self.proposer
    }

    pub(super) fn barrier(&self) -> &ReadBarrier {
        &self.barrier
    }

    pub(super) fn leases(&self) -> &RefCell<LeaseDeadlines> {
        &self.leases
    }

    pub(super) fn removal_logged(&self) -> &Cell<bool> {
        &self.removal_logged
    }

    pub(super) fn removed_at(&self) -> &Cell<Option<u64>> {
        &self.removed_at
    }

    pub(super) fn no_space(&self) -> &Cell<Option<NoSpace>> {
        &self.no_space
    }

    pub(super) fn over_quota(&self) -> &Cell<Option<OverQuota>> {
        &self.over_quota
    }

    /// Whether the group refuses writes that add data here (NOSPACE).
    pub fn alarmed(&self) -> bool {
        self.no_space.get().is_some() || self.over_quota.get().is_some()
    }
}
