//! Linearizable reads of one group on its leader share their read
//! barriers. A read may be served once a barrier that began after the read
//! arrived has confirmed this member still leads and everything committed
//! before it is applied (read index). Reads that arrive while a barrier is
//! in flight wait for the next one, which starts as soon as the current
//! one ends and serves all of them: one leadership check (a heartbeat round
//! in a cluster) per burst instead of one per read.
//!
//! It owns that rule: a read is never answered by a barrier that started
//! before it arrived.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::channel::oneshot;

use super::answer::RequestError;
use crate::raft::RaftGroup;

/// The reads of one group waiting for a barrier.
#[derive(Default)]
pub struct ReadBarrier {
    waiting: RefCell<Vec<oneshot::Sender<Result<(), RequestError>>>>,
    running: Cell<bool>,
    /// Barriers run, and reads they served, since the group started.
    barriers: Cell<u64>,
    reads: Cell<u64>,
}

impl ReadBarrier {
    pub fn new() -> ReadBarrier {
        ReadBarrier::default()
    }

    /// Barriers run and the reads they served.
    pub fn counts(&self) -> (u64, u64) {
        (self.barriers.get(), self.reads.get())
    }
}

/// Returns once the group of `raft` (whose reads wait at `barrier`) may
/// serve a linearizable read that arrived now.
pub async fn linearizable(raft: Rc<RaftGroup>, barrier: Rc<ReadBarrier>) -> Result<(), RequestError> {
    let (answer, done) = oneshot::channel();
    barrier.waiting.borrow_mut().push(answer);
    if !barrier.running.get() {
        barrier.running.set(true);
        tokio::task::spawn_local(run(raft.clone(), barrier.clone()));
    }
    let group = raft.group();
    done.await.map_err(|_| RequestError::Codec(format!("group {group} dropped a read unanswered")))?
}

async fn run(raft: Rc<RaftGroup>, barrier: Rc<ReadBarrier>) {
    // Let the other reads this reactor turn brought in share the barrier.
    tokio::task::yield_now().await;
    loop {
        // Taken right before the barrier starts: every read taken arrived
        // before it.
        let reads = std::mem::take(&mut *barrier.waiting.borrow_mut());
        if reads.is_empty() {
            break;
        }
        let result = raft.ensure_linearizable().await.map_err(RequestError::from);
        barrier.barriers.set(barrier.barriers.get() + 1);
        barrier.reads.set(barrier.reads.get() + reads.len() as u64);
        for read in reads {
            let _ = read.send(result.clone());
        }
    }
    barrier.running.set(false);
}

#[cfg(test)]
mod tests {
    use crate::shard::test_support::{in_shard, one_group};

    #[test]
    fn reads_that_arrive_together_share_one_barrier_and_later_reads_get_a_new_one() {
        in_shard(async {
            let group = one_group().await;
            let reads = futures::future::join_all((0..32).map(|_| group.linearizable())).await;
            assert!(reads.iter().all(Result::is_ok), "{reads:?}");
            assert_eq!(group.barrier().counts(), (1, 32), "32 reads of one turn share one barrier");
            group.linearizable().await.expect("a later read");
            assert_eq!(group.barrier().counts(), (2, 33), "a read after the barrier ended gets its own");
        });
    }
}
