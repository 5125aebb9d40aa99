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

// openraft's traits return its own error types, which are large; boxing them
// here would only mean unboxing them again at the trait boundary.
#![allow(clippy::result_large_err)]

pub mod group;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod tests;

pub use group::{GroupConfig, GroupError, GroupMetrics, RaftGroup};
pub use log_store::GroupLogStore;
pub use network::{GroupNetwork, GroupNetworkFactory, LocalRouter, PeerTransport};
pub use state_machine::{
    GroupStateMachine, GroupStateMachineStore, MemorySnapshotStore, SnapshotStore, SnapshotStoreError,
    StoredSnapshot,
};
pub use types::{Command, GroupId, Member, NodeId, Response, TypeConfig};
