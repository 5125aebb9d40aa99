//! openraft's state machine for one group, over a [`GroupStateMachine`] the
//! shard implements with the key-value store, and the group's snapshots in a
//! [`SnapshotStore`].
//!
//! It owns the applied position (last applied log id and last membership)
//! and reports it honestly: a state machine starts empty, so after a restart
//! the applied position is the one of the stored snapshot it was restored
//! from, or nothing, and openraft replays the log from there. It must never
//! claim an entry applied that the state machine has not seen, and never
//! hand openraft a snapshot (after which it purges the log) before the
//! snapshot store holds it durably.

use std::cell::RefCell;
use std::io::Cursor;
use std::rc::Rc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};

use super::types::{
    Entry, GroupId, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The state a group replicates: the shard implements it with the key-value
/// store. It lives on one shard thread, so it need not be `Send`.
pub trait GroupStateMachine {
    /// Applies the command of entry `index`. Must be deterministic: every
    /// replica applies the same commands in the same order and must reach
    /// the same state and give the same answer.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;
    /// The whole state, as bytes [`GroupStateMachine::restore`] takes back.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

/// A group's snapshot: what it covers, and the state machine's bytes.
#[derive(Clone, Debug)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Rc<[u8]>,
}

#[derive(Debug, thiserror::Error)]
#[error("the snapshot store failed while {what} for group {group}: {reason}")]
pub struct SnapshotStoreError {
    pub group: GroupId,
    pub what: &'static str,
    pub reason: String,
    /// Nothing failed: the store had no room for the snapshot right now
    /// (its space is shared, and the snapshot grew after room was checked).
    pub no_room: bool,
}

/// Where a shard keeps the current snapshot of each of its groups. `save`
/// finishes only when the snapshot is durable, because the group purges its
/// log up to the snapshot right after. A store on the namespace (no
/// filesystem) replaces the in-memory one without changing this trait.
// Futures stay on the shard thread: no Send bound on purpose.
#[allow(async_fn_in_trait)]
pub trait SnapshotStore {
    /// Replaces the group's current snapshot with `snapshot`, durably.
    async fn save(&self, group: GroupId, snapshot: StoredSnapshot) -> Result<(), SnapshotStoreError>;
    /// The group's current snapshot, if it has one.
    async fn load(&self, group: GroupId) -> Result<Option<StoredSnapshot>, SnapshotStoreError>;
}

/// Snapshots in memory: survives a group's restart while the value lives,
/// not a process restart. For tests (cargo feature `testing`); a node keeps
/// its snapshots on the namespace.
#[cfg(any(test, feature = "testing"))]
#[derive(Default)]
pub struct MemorySnapshotStore {
    snapshots: RefCell<std::collections::HashMap<GroupId, StoredSnapshot>>,
}

#[cfg(any(test, feature = "testing"))]
impl MemorySnapshotStore {
    pub fn new() -> MemorySnapshotStore {
        MemorySnapshotStore::default()
    }
}

#[cfg(any(test, feature = "testing"))]
impl SnapshotStore for MemorySnapshotStore {
    async fn save(&self, group: GroupId, snapshot: StoredSnapshot) -> Result<(), SnapshotStoreError> {
        self.snapshots.borrow_mut().insert(group, snapshot);
        Ok(())
    }

    async fn load(&self, group: GroupId) -> Result<Option<StoredSnapshot>, SnapshotStoreError> {
        Ok(self.snapshots.borrow().get(&group).cloned())
    }
}

fn snapshot_error(meta: &SnapshotMeta, error: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(Some(meta.signature()), AnyError::error(error.to_string())).into()
}

/// openraft's state machine of one group.
pub struct GroupStateMachineStore<M, S> {
    group: GroupId,
    machine: Rc<RefCell<M>>,
    snapshots: Rc<S>,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// Snapshots built by this value, to make snapshot ids unique.
    snapshots_built: u64,
}

impl<M: GroupStateMachine + 'static, S: SnapshotStore + 'static> GroupStateMachineStore<M, S> {
    /// The state machine of `group`. `machine` must be empty: it is
    /// restored from the group's stored snapshot if there is one, and the
    /// applied position starts there (or at nothing).
    pub async fn open(
        group: GroupId,
        machine: Rc<RefCell<M>>,
        snapshots: Rc<S>,
    ) -> Result<GroupStateMachineStore<M, S>, StorageError> {
        let mut store = GroupStateMachineStore {
            group,
            machine,
            snapshots,
            applied: None,
            membership: StoredMembership::default(),
            snapshots_built: 0,
        };
        let stored = store.snapshots.load(group).await.map_err(|error| {
            StorageError::from(StorageIOError::read_snapshot(None, AnyError::error(error.to_string())))
        })?;
        if let Some(stored) = stored {
            store.restore(&stored.meta, &stored.data)?;
        }
        Ok(store)
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The last applied log id, as reported to openraft.
    pub fn applied(&self) -> Option<LogId> {
        self.applied
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        self.machine.borrow_mut().restore(data).map_err(|reason| {
            snapshot_error(
                meta,
                format!(
                    "group {}: the state machine refused snapshot {}: {reason}",
                    self.group, meta.snapshot_id
                ),
            )
        })?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }
}

/// Builds a snapshot from a copy taken when openraft asked for the builder,
/// so entries applied meanwhile do not leak into it.
pub struct GroupSnapshotBuilder<S> {
    group: GroupId,
    snapshots: Rc<S>,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl<S: SnapshotStore + 'static> RaftSnapshotBuilder<TypeConfig> for GroupSnapshotBuilder<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = std::mem::take(&mut self.data);
        let stored = StoredSnapshot { meta: self.meta.clone(), data: Rc::from(data.as_slice()) };
        match self.snapshots.save(self.group, stored).await {
            Ok(()) => Ok(Snapshot { meta: self.meta.clone(), snapshot: Box::new(Cursor::new(data)) }),
            // A failed save would stop the group; a snapshot with no room
            // is declined instead: openraft takes a snapshot that covers no
            // more than its current one as nothing new, keeps its log, and
            // the shard asks again once there is room.
            Err(error) if error.no_room => {
                tracing::info!(group = self.group, %error, "declined a snapshot: no room for it now");
                let declined = SnapshotMeta {
                    last_log_id: None,
                    last_membership: self.meta.last_membership.clone(),
                    snapshot_id: format!("{}-declined", self.meta.snapshot_id),
                };
                Ok(Snapshot { meta: declined, snapshot: Box::new(Cursor::new(Vec::new())) })
            }
            Err(error) => Err(snapshot_error(&self.meta, error)),
        }
    }
}

impl<M: GroupStateMachine + 'static, S: SnapshotStore + 'static> RaftStateMachine<TypeConfig>
    for GroupStateMachineStore<M, S>
{
    type SnapshotBuilder = GroupSnapshotBuilder<S>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut machine = self.machine.borrow_mut();
        let mut responses = Vec::new();
        for entry in entries {
            let response = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(command) => machine.apply(entry.log_id.index, &command.0),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            self.applied = Some(entry.log_id);
            responses.push(Response(response));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> GroupSnapshotBuilder<S> {
        self.snapshots_built += 1;
        let snapshot_id = match self.applied {
            Some(applied) => format!(
                "group{}-{}-{}-{}-{}",
                self.group,
                applied.leader_id.term,
                applied.leader_id.node_id,
                applied.index,
                self.snapshots_built
            ),
            None => format!("group{}-empty-{}", self.group, self.snapshots_built),
        };
        GroupSnapshotBuilder {
            group: self.group,
            snapshots: self.snapshots.clone(),
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data: self.machine.borrow().snapshot(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data: Rc<[u8]> = Rc::from(snapshot.into_inner());
        // Stored first: the log is purged up to the snapshot right after.
        self.snapshots
            .save(self.group, StoredSnapshot { meta: meta.clone(), data: data.clone() })
            .await
            .map_err(|error| snapshot_error(meta, error))?;
        self.restore(meta, &data)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = self.snapshots.load(self.group).await.map_err(|error| {
            StorageError::from(StorageIOError::read_snapshot(None, AnyError::error(error.to_string())))
        })?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data.to_vec())),
        }))
    }
}
