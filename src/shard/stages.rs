//! Where the writes of one shard spend their time above the log, per
//! stage, since the shard started: the log keeps its own stages (queue
//! wait, device write); these are the ones Raft and the store add. Kept per
//! reactor thread, so recording takes no lock.
//!
//! - proposal wait: from a write reaching its group's proposer to the batch
//!   that carries it being proposed;
//! - raft: from the proposal to its outcome (append, the log's stages,
//!   commit, apply, and the wake-ups between them);
//! - apply: one entry applied to the store (a batch entry counts once);
//! - end to end: from the request handle taking a write on the shard the
//!   client reached to its answer there (a forward between shards
//!   included; Cap'n Proto decoding and the network not).

use std::cell::RefCell;
use std::time::Instant;

use crate::wal::StageHistogram;

#[derive(Clone, Debug, Default)]
pub struct ShardStages {
    pub proposal_wait: StageHistogram,
    pub raft: StageHistogram,
    pub apply: StageHistogram,
    pub end_to_end: StageHistogram,
    /// Raft entries proposed for client writes, and the writes they
    /// carried: their ratio is how well proposals batch.
    pub proposals: u64,
    pub proposed_commands: u64,
}

thread_local! {
    static STAGES: RefCell<ShardStages> = RefCell::new(ShardStages::default());
}

/// Exchanges this thread's stages with `stages` (see `super::ThreadShard`).
#[cfg(any(test, feature = "testing"))]
pub(super) fn swap(stages: &mut ShardStages) {
    STAGES.with(|all| std::mem::swap(&mut *all.borrow_mut(), stages));
}

/// Records into this thread's stages.
pub fn record(update: impl FnOnce(&mut ShardStages)) {
    STAGES.with(|stages| update(&mut stages.borrow_mut()));
}

/// A copy of this thread's stages.
pub fn snapshot() -> ShardStages {
    STAGES.with(|stages| stages.borrow().clone())
}

/// Records the time since `started` in the stage `pick` chooses.
pub fn record_since(started: Instant, pick: fn(&mut ShardStages) -> &mut StageHistogram) {
    let elapsed = started.elapsed();
    record(|stages| pick(stages).record(elapsed));
}
