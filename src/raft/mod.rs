//! Raft groups: openraft (0.9, single-threaded, storage v2) instantiated for
//! nvkv, with its log over the shard log, its state machine over a trait the
//! shard implements with the key-value store, and its peer transport over a
//! trait the RPC layer implements.
//!
//! This layer owns the mapping between openraft's storage and network
//! contracts and nvkv's pieces: entry and vote encodings, durability of
//! appends, snapshot bookkeeping, and typed errors for the request path. It
//! must never import the RPC layer or the key-value store (they sit beside or
//! above it), never share a group between threads, and never report a log
//! write durable before the shard log says it is.

//!
//! # How a shard runs its groups
//!
//! On its reactor thread, inside its `LocalSet`, a shard:
//! 1. opens its `SharedLog` (`shard::open_shared_log`) and lets `LogDriver`
//!    tick it; every group of the shard shares that one log;
//! 2. builds one transport for the shard (`Rc<T: PeerTransport>`, the
//!    Cap'n Proto client side: one connection per peer node, each message
//!    tagged with its group) and one snapshot store (`Rc<S: SnapshotStore>`);
//! 3. for every group g it owns (g mod shards == its index), creates an empty
//!    state machine `Rc<RefCell<M: GroupStateMachine>>` (keeping a clone to
//!    serve reads from) and calls [`RaftGroup::start`]; then, if this member
//!    is in the configured initial members, [`RaftGroup::bootstrap`] with
//!    them (a no-op after a restart; a member joining later skips it and is
//!    added with [`RaftGroup::add_learner`] and [`RaftGroup::change_voters`]);
//! 4. hands incoming peer messages for group g to its
//!    `RaftGroup::handle_append_entries` and `handle_vote`, and a streamed
//!    snapshot to `receive_snapshot`, chunk by chunk to the `Reception`
//!    it returns, then to `install_received_snapshot`;
//! 5. serves writes with [`RaftGroup::client_write`] and linearizable reads
//!    with [`RaftGroup::ensure_linearizable`] followed by a read of its state
//!    machine; a `GroupError::NotLeader` carries the leader to forward to.

// openraft's traits return its own error types, which are large; boxing them
// here would only mean unboxing them again at the trait boundary.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod group;
#[cfg(any(test, feature = "testing"))]
pub mod local_router;
pub mod log_store;
pub mod network;
pub mod peer_gate;
pub mod runtime;
pub mod snapshot_inbox;
pub mod state_machine;
pub mod timeline;
pub mod types;
pub mod wal_snapshots;

#[cfg(test)]
mod tests;

pub use config::GroupConfig;
pub use group::{GroupError, GroupMetrics, RaftGroup, Standing, Written};
#[cfg(any(test, feature = "testing"))]
pub use local_router::LocalRouter;
pub use log_store::GroupLogStore;
pub use network::{AppendAnswer, GroupNetwork, GroupNetworkFactory, PeerTransport};
pub use peer_gate::PeerGate;
pub use snapshot_inbox::{Reception, SnapshotReceiveError};
#[cfg(any(test, feature = "testing"))]
pub use state_machine::MemorySnapshotStore;
pub use state_machine::{
    GroupStateMachine, GroupStateMachineStore, SnapshotStore, SnapshotStoreError, StoredSnapshot,
};
pub use timeline::{Timeline, WritePath};
pub use types::{Command, GroupId, Member, NodeId, Response, TypeConfig};
pub use wal_snapshots::WalSnapshotStore;
