//! The key-value layer: one group's MVCC store with etcd's semantics, its
//! leases, its watch hub, its snapshot encoding, and the function that maps
//! keys to groups.
//!
//! A deterministic state machine plus queries: everything that changes it
//! arrives as a command the caller applies in log order. This layer must
//! never know of Raft, logs, RPC or devices, and never read a clock.

mod codec;
pub mod command;
pub mod lease;
pub mod limits;
pub mod partition;
pub mod snapshot;
pub mod store;
pub mod types;
pub mod watch;

pub use command::{apply, Command, CommandOutcome, CommandResponse};
pub use lease::LeaseTable;
pub use limits::{LimitError, Limits};
pub use partition::{GroupSet, PartitionError, Partitioner};
pub use store::{MvccStore, Revision};
pub use types::*;
pub use watch::{CancelReason, WatchError, WatchHub, WatchId, WatchLimits, WatchPoll, WatchRequest};

#[cfg(test)]
mod tests;
