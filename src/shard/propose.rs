//! The writes of one group on its leader, on their way into Raft. Writes
//! that reach a group while its earlier proposals are in flight wait here
//! and go to Raft together as one batch entry: one append, one commit and
//! one apply dispatch for all of them, instead of one each. Under load the
//! batches grow by themselves (everything that arrived during one round
//! trip); a lone client pays one reactor turn of waiting, no timer.
//!
//! It owns the order of a group's proposals (first come, first proposed),
//! the rule that every waiting write gets exactly one answer, the batch's
//! error included, and the request timeout of the writes it takes: a write
//! that waited longer than the group's request timeout is refused as timed
//! out instead of proposed, and a batch is refused as timed out at the
//! deadline of its oldest write. It must never retry a proposal: a write
//! that timed out may still apply.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;

use super::groups::{RequestError, ShardGroup};
use super::stages;
use crate::kv::command::{batch_overhead_bytes, encode_batch, split_batch_outcome};
use crate::raft::WritePath;

/// How many proposals of one group may be in flight at once. Two keep the
/// log busy (one entry is written while the next is gathered) without
/// splitting a burst into many small entries.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 2;

/// The most commands one batch entry carries, whatever their size: bounds
/// the work of one apply, so reads and heartbeats on the shard are not held
/// up behind it.
pub const BATCH_COMMANDS_MAX: usize = 1024;

struct Waiting {
    command: Vec<u8>,
    since: Instant,
    answer: oneshot::Sender<Result<Vec<u8>, RequestError>>,
}

/// The proposal queue of one group.
#[derive(Default)]
pub struct Proposer {
    waiting: RefCell<VecDeque<Waiting>>,
    in_flight: Cell<usize>,
}

impl Proposer {
    pub fn new() -> Proposer {
        Proposer::default()
    }

    /// Takes the oldest waiting commands that fit in one entry of
    /// `entry_bytes_max` bytes (at least one, whatever its size: Raft
    /// refuses it with a typed error if it is too large).
    fn take(&self, entry_bytes_max: usize) -> Vec<Waiting> {
        let mut waiting = self.waiting.borrow_mut();
        let mut batch: Vec<Waiting> = Vec::new();
        let mut bytes = 0;
        while let Some(next) = waiting.front() {
            let grown = bytes + next.command.len();
            let full = batch.len() >= BATCH_COMMANDS_MAX
                || (!batch.is_empty() && grown + batch_overhead_bytes(batch.len() + 1) > entry_bytes_max);
            if full {
                break;
            }
            bytes = grown;
            batch.push(waiting.pop_front().expect("the front exists"));
        }
        batch
    }
}

/// Proposes `command` to the group of `entry` (on this shard) and returns
/// its encoded outcome once applied.
pub async fn propose(entry: Rc<ShardGroup>, command: Vec<u8>) -> Result<Vec<u8>, RequestError> {
    let (answer, outcome) = oneshot::channel();
    let proposer = &entry.proposer;
    proposer.waiting.borrow_mut().push_back(Waiting { command, since: Instant::now(), answer });
    if proposer.in_flight.get() < PROPOSALS_IN_FLIGHT_MAX {
        proposer.in_flight.set(proposer.in_flight.get() + 1);
        tokio::task::spawn_local(drain(entry.clone()));
    }
    let group = entry.raft.group();
    outcome.await.map_err(|_| RequestError::Codec(format!("group {group} dropped a proposal unanswered")))?
}

/// Proposes what waits, batch after batch, until nothing does. It runs
/// after the tasks already woken when it was spawned (every connection
/// whose bytes the same poll of the sockets brought): their writes join
/// the first batch without the drain waiting a reactor turn for them.
async fn drain(entry: Rc<ShardGroup>) {
    let timeout = entry.raft.request_timeout();
    loop {
        let mut batch = entry.proposer.take(entry.raft.command_bytes_max());
        if batch.is_empty() {
            break;
        }
        let taken = Instant::now();
        // Writes that waited out their request timeout are not proposed.
        if batch.iter().any(|waiting| taken.saturating_duration_since(waiting.since) >= timeout) {
            let (late, on_time): (Vec<Waiting>, Vec<Waiting>) = batch
                .into_iter()
                .partition(|waiting| taken.saturating_duration_since(waiting.since) >= timeout);
            for waiting in late {
                let _ = waiting.answer.send(Err(entry.raft.timeout_error().into()));
            }
            batch = on_time;
        }
        let Some(deadline) = batch.iter().map(|waiting| waiting.since + timeout).min() else { continue };
        stages::record(|stages| {
            for waiting in &batch {
                stages.proposal_wait.record(taken - waiting.since);
            }
            stages.proposals += 1;
            stages.proposed_commands += batch.len() as u64;
        });
        let commands = batch.iter_mut().map(|waiting| std::mem::take(&mut waiting.command)).collect();
        let outcomes = propose_batch(&entry, commands, taken, deadline).await;
        stages::record(|stages| {
            stages.raft.record(taken.elapsed());
            if let Ok((_, path)) = &outcomes {
                stages.record_path(path);
            }
        });
        match outcomes.map(|(outcomes, _)| outcomes) {
            Ok(outcomes) => {
                for (waiting, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = waiting.answer.send(Ok(outcome));
                }
            }
            Err(error) => {
                for waiting in batch {
                    let _ = waiting.answer.send(Err(error.clone()));
                }
            }
        }
    }
    entry.proposer.in_flight.set(entry.proposer.in_flight.get() - 1);
}

/// One entry for `batch`, proposed at `proposed` and refused as timed out
/// at `deadline`: the command itself when alone, else a batch. Answers each
/// command's outcome, and the entry's way.
async fn propose_batch(
    entry: &ShardGroup,
    mut commands: Vec<Vec<u8>>,
    proposed: Instant,
    deadline: Instant,
) -> Result<(Vec<Vec<u8>>, WritePath), RequestError> {
    if commands.len() == 1 {
        let alone = commands.pop().expect("one command");
        let written = entry.raft.client_write_by(alone, Some(proposed), deadline).await?;
        return Ok((vec![written.outcome], written.path));
    }
    let written = entry.raft.client_write_by(encode_batch(&commands), Some(proposed), deadline).await?;
    let outcomes =
        split_batch_outcome(&written.outcome).map_err(|error| RequestError::Codec(error.to_string()))?;
    if outcomes.len() != commands.len() {
        return Err(RequestError::Codec(format!(
            "a batch of {} commands was answered with {} outcomes",
            commands.len(),
            outcomes.len()
        )));
    }
    Ok((outcomes, written.path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::{decode_outcome, encode_command, Command, CommandResponse};
    use crate::kv::types::PutRequest;
    use crate::shard::test_support::{in_shard, one_group};

    fn put(key: usize) -> Vec<u8> {
        encode_command(&Command::Put(PutRequest {
            key: format!("k{key}").into_bytes(),
            value: vec![7; 100],
            ..PutRequest::default()
        }))
    }

    #[test]
    fn writes_that_arrive_together_share_proposals_and_each_gets_its_own_revision() {
        in_shard(async {
            let group = one_group().await;
            let before = stages::snapshot();
            const WRITES: usize = 64;
            let answers =
                futures::future::join_all((0..WRITES).map(|key| propose(group.clone(), put(key)))).await;
            let mut revisions: Vec<i64> = answers
                .into_iter()
                .map(|answer| match decode_outcome(&answer.expect("the write applies")).expect("decodes") {
                    Ok(CommandResponse::Put(put)) => put.revision,
                    other => panic!("a put answered {other:?}"),
                })
                .collect();
            revisions.sort();
            revisions.dedup();
            assert_eq!(revisions.len(), WRITES, "every write has a revision of its own");
            let after = stages::snapshot();
            let proposals = after.proposals - before.proposals;
            assert_eq!(after.proposed_commands - before.proposed_commands, WRITES as u64);
            assert!(
                proposals <= PROPOSALS_IN_FLIGHT_MAX as u64,
                "{WRITES} writes took {proposals} proposals"
            );
            assert_eq!(
                group.machine.borrow().state.store.revision(),
                revisions[WRITES - 1],
                "the last write's"
            );
        });
    }

    #[test]
    fn a_write_that_waited_out_its_request_timeout_is_refused_not_proposed() {
        in_shard(async {
            let group = one_group().await;
            let timeout = group.raft.request_timeout();
            let (late, late_answer) = oneshot::channel();
            let (fresh, fresh_answer) = oneshot::channel();
            {
                let mut waiting = group.proposer.waiting.borrow_mut();
                let since =
                    Instant::now().checked_sub(timeout * 2).expect("the clock is far past the timeout");
                waiting.push_back(Waiting { command: put(1), since, answer: late });
                waiting.push_back(Waiting { command: put(2), since: Instant::now(), answer: fresh });
            }
            let keys = group.machine.borrow().state.store.keys_with_history();
            group.proposer.in_flight.set(1);
            drain(group.clone()).await;
            let refused = late_answer.await.expect("answered");
            assert!(
                matches!(refused, Err(RequestError::Group(crate::raft::GroupError::Timeout { .. }))),
                "{refused:?}"
            );
            fresh_answer.await.expect("answered").expect("the fresh write applies");
            assert_eq!(
                group.machine.borrow().state.store.keys_with_history(),
                keys + 1,
                "only the fresh write applied"
            );
            assert_eq!(group.proposer.in_flight.get(), 0);
        });
    }

    #[test]
    fn a_batch_stops_at_the_largest_entry() {
        let proposer = Proposer::new();
        for _ in 0..10 {
            let (answer, _) = oneshot::channel();
            proposer.waiting.borrow_mut().push_back(Waiting {
                command: vec![0; 100],
                since: Instant::now(),
                answer,
            });
        }
        let batch = proposer.take(batch_overhead_bytes(3) + 300);
        assert_eq!(batch.len(), 3);
        assert_eq!(proposer.take(10).len(), 1, "a command larger than an entry still goes, alone");
        assert_eq!(proposer.take(usize::MAX).len(), 6);
        assert!(proposer.take(usize::MAX).is_empty());
    }
}
