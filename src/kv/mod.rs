//! The key-value layer: one group's MVCC store with etcd's semantics
//! (`store`), its leases (`lease`), the users and roles group 0 keeps
//! (`auth`), its watch hub (`watch`), the encodings
//! of its snapshots (`snapshot`) and of the commands that change it
//! (`command`), store and hub wired together for a state machine (`group`), the
//! request size limits (`limits`), and the function that maps keys to
//! groups (`partition`).
//!
//! A deterministic state machine plus queries: everything that changes it
//! arrives as a command the caller applies in log order, and the same
//! commands give byte-identical state on every replica. This layer must
//! never know of Raft, the log's records, RPC or devices, and never read a
//! clock, draw a random number, or let hash-map order reach its results.

pub mod auth;
mod codec;
pub mod command;
pub mod group;
pub mod lease;
pub mod limits;
pub mod partition;
pub mod revision;
pub mod snapshot;
pub mod store;
pub mod types;
pub mod watch;

pub use command::{apply, Command, CommandOutcome, CommandResponse};
pub use group::GroupState;
pub use lease::LeaseTable;
pub use limits::{LimitError, Limits};
pub use partition::{GroupSet, PartitionError, Partitioner};
pub use revision::Revision;
pub use store::MvccStore;
pub use types::*;
pub use watch::{CancelReason, WatchError, WatchHub, WatchId, WatchLimits, WatchPoll, WatchRequest};

#[cfg(test)]
mod tests;
