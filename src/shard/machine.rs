//! A group's store as its Raft state machine ([`KvMachine`]): applies
//! committed entries to the store, records each apply in the shard's
//! stages, and publishes group 0's users and roles to every shard of this
//! member. It must never skip an entry it cannot apply: every replica
//! applies the same log, so it stops instead of forking its state.

use std::rc::Rc;
use std::sync::Arc;

use super::auth::AuthCell;
use super::stages::Stages;
use crate::kv::group::GroupState;
use crate::raft::{GroupId, GroupStateMachine};

/// The store of one group as its Raft state machine.
pub struct KvMachine {
    group: GroupId,
    pub state: GroupState,
    /// Group 0's: where the users and roles it applies are published for
    /// every shard of this member (see `super::auth`).
    auth: Option<Arc<AuthCell>>,
    /// Where each entry is marked applied, once the group runs.
    timeline: Option<Rc<crate::raft::Timeline>>,
    /// The shard's stages, where each apply is recorded.
    stages: Stages,
}

impl KvMachine {
    /// The state machine of `group` over `state`; `auth` is where group 0
    /// publishes the users and roles it applies (`None` for other groups).
    pub fn new(group: GroupId, state: GroupState, auth: Option<Arc<AuthCell>>, stages: Stages) -> KvMachine {
        KvMachine { group, state, auth, timeline: None, stages }
    }

    /// Marks applied entries on `timeline` from now on (once the group's
    /// Raft instance, which owns it, runs).
    pub fn set_timeline(&mut self, timeline: Rc<crate::raft::Timeline>) {
        self.timeline = Some(timeline);
    }

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
                self.stages.record(|stages| stages.apply.record(finished - started));
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
