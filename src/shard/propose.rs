//! The writes of one group on its leader, on their way into Raft. Writes
//! that reach a group while its earlier proposals are in flight wait here
//! and go to Raft together as one batch entry: one append, one commit and
//! one apply dispatch for all of them, instead of one each. Under load the
//! batches grow by themselves (everything that arrived during one round
//! trip); a lone client pays one reactor turn of waiting, no timer.
//!
//! It owns the order of a group's proposals (first come, first proposed,
//! within the fairness between sources),
//! the rule that every waiting write gets exactly one answer, the batch's
//! error included, and the request timeout of the writes it takes: a write
//! that waited longer than the group's request timeout is refused as timed
//! out instead of proposed, and a batch is refused as timed out at the
//! deadline of its oldest write. It must never retry a proposal: a write
//! that timed out may still apply.
//!
//! Writes are fair between their sources (a client connection each, see
//! [`as_source`]): while writes of more than one source wait, a batch takes
//! at most [`SOURCE_BATCH_COMMANDS_MAX`] commands (and, past the first,
//! [`SOURCE_BATCH_BYTES_MAX`] bytes) of each source, in round robin, so a
//! connection that pipelines thousands of writes does not make the next
//! batch, which a lone write of another client joins, as large as its
//! backlog. Each source's writes keep their order of arrival; a write whose
//! source is not known (forwarded from another shard or member, or from a
//! front end that does not say) counts as a source of its own.
//!
//! The queue is bounded in bytes (`store.proposal_queue_bytes_max`): a
//! write that would take it past its bound waits for the batches ahead of
//! it to be taken (back-pressure on its connection, whose calls in flight
//! are bounded too), within its request timeout; a write is always taken
//! when the queue is empty, whatever its size.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use futures::channel::oneshot;
// Tokio's clock, not the system's: request deadlines are timers, and a
// simulation's paused clock must move them (crate::clock).
use tokio::time::Instant;

use super::answer::RequestError;
use super::stages::Stages;
use crate::kv::command::{batch_overhead_bytes, encode_batch, split_batch_outcome};
use crate::raft::{RaftGroup, WritePath};

/// How many proposals of one group may be in flight at once. Two keep the
/// log busy (one entry is written while the next is gathered) without
/// splitting a burst into many small entries.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 2;

/// The most commands one batch entry carries, whatever their size: bounds
/// the work of one apply, so reads and heartbeats on the shard are not held
/// up behind it.
pub const BATCH_COMMANDS_MAX: usize = 1024;

/// While writes of several sources wait, the most commands of one source a
/// batch takes.
pub const SOURCE_BATCH_COMMANDS_MAX: usize = 32;
/// While writes of several sources wait, the most bytes of one source a
/// batch takes past its first command (which goes whatever its size).
pub const SOURCE_BATCH_BYTES_MAX: usize = 256 << 10;
/// How far into the queue one batch looks for the writes of other sources.
const SCAN_COMMANDS_MAX: usize = 8 * BATCH_COMMANDS_MAX;

tokio::task_local! {
    /// The source of the writes proposed while a future runs (`as_source`).
    static SOURCE: u64;
}

static NEXT_SOURCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A source id no other source of this process has: one per client
/// connection.
pub fn new_source() -> u64 {
    NEXT_SOURCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Runs `work` with the writes it proposes on this shard counted as
/// `source`'s (a client connection's, from [`new_source`]).
pub async fn as_source<F: std::future::Future>(source: u64, work: F) -> F::Output {
    SOURCE.scope(source, work).await
}

/// The source of the writes proposed now; `None` when not known.
fn current_source() -> Option<u64> {
    SOURCE.try_with(|source| *source).ok()
}

struct Waiting {
    command: Vec<u8>,
    since: Instant,
    /// The client connection it came from, when known.
    source: Option<u64>,
    answer: oneshot::Sender<Result<Vec<u8>, RequestError>>,
}

/// What proposing to one group takes: its Raft handle and its proposal
/// queue. The group composes it (`ShardGroup::proposing`); a clone is two
/// reference counts.
#[derive(Clone)]
pub struct Proposing {
    raft: Rc<RaftGroup>,
    proposer: Rc<Proposer>,
}

impl Proposing {
    pub fn new(raft: Rc<RaftGroup>, proposer: Rc<Proposer>) -> Proposing {
        Proposing { raft, proposer }
    }

    fn raft(&self) -> &RaftGroup {
        &self.raft
    }

    fn proposer(&self) -> &Proposer {
        &self.proposer
    }

    /// The shard's stages, where proposals are recorded.
    pub fn stages(&self) -> &Stages {
        &self.proposer.stages
    }
}

/// The proposal queue of one group.
pub struct Proposer {
    waiting: RefCell<VecDeque<Waiting>>,
    in_flight: Cell<usize>,
    /// Bytes of the commands waiting.
    waiting_bytes: Cell<usize>,
    /// The most bytes of commands that may wait.
    bytes_max: usize,
    /// Woken whenever commands are taken or a held-back write goes in.
    room: tokio::sync::Notify,
    /// Held-back writes go in first come, first served: the ticket the
    /// next one draws, the ticket whose turn it is, and the tickets of
    /// writes that timed out before their turn (skipped when it comes).
    next_ticket: Cell<u64>,
    serving: Cell<u64>,
    abandoned: RefCell<std::collections::BTreeSet<u64>>,
    /// The shard's stages, where proposals are recorded.
    stages: Stages,
}

impl Proposer {
    /// A queue that holds at most `bytes_max` bytes of waiting commands,
    /// recording its proposals in `stages`.
    pub fn new(bytes_max: usize, stages: Stages) -> Proposer {
        Proposer {
            waiting: RefCell::default(),
            in_flight: Cell::new(0),
            waiting_bytes: Cell::new(0),
            bytes_max,
            room: tokio::sync::Notify::new(),
            next_ticket: Cell::new(0),
            serving: Cell::new(0),
            abandoned: RefCell::default(),
            stages,
        }
    }

    /// Whether `bytes` more must wait for room.
    fn full_for(&self, bytes: usize) -> bool {
        let waiting = self.waiting_bytes.get();
        waiting > 0 && waiting + bytes > self.bytes_max
    }

    /// Queues `waiting`, counting its bytes.
    fn push(&self, waiting: Waiting) {
        self.waiting_bytes.set(self.waiting_bytes.get() + waiting.command.len());
        self.waiting.borrow_mut().push_back(waiting);
    }

    /// Whether writes are held back (a new one queues behind them).
    fn holding(&self) -> bool {
        self.serving.get() != self.next_ticket.get()
    }

    /// Gives the turn to the next held-back write that still waits.
    fn next_turn(&self) {
        let mut serving = self.serving.get() + 1;
        while self.abandoned.borrow_mut().remove(&serving) {
            serving += 1;
        }
        self.serving.set(serving);
        self.room.notify_waiters();
    }

    /// Takes the oldest waiting commands that fit in one entry of
    /// `entry_bytes_max` bytes (at least one, whatever its size: Raft
    /// refuses it with a typed error if it is too large), each source's
    /// share at most while other sources wait too.
    fn take(&self, entry_bytes_max: usize) -> Vec<Waiting> {
        let mut waiting = self.waiting.borrow_mut();
        let competing = match waiting.front() {
            Some(first) => waiting
                .iter()
                .take(SCAN_COMMANDS_MAX)
                .any(|other| other.source.is_none() || other.source != first.source),
            None => false,
        };
        let mut batch: Vec<Waiting> = Vec::new();
        let mut bytes = 0;
        // Each known source's commands and bytes in this batch so far.
        let mut shares: std::collections::HashMap<u64, (usize, usize)> = Default::default();
        // Writes passed over for their source's share, in their order.
        let mut passed: Vec<Waiting> = Vec::new();
        let mut scanned = 0;
        while let Some(next) = waiting.front() {
            let grown = bytes + next.command.len();
            let full = batch.len() >= BATCH_COMMANDS_MAX
                || (!batch.is_empty() && grown + batch_overhead_bytes(batch.len() + 1) > entry_bytes_max);
            if full || scanned == SCAN_COMMANDS_MAX {
                break;
            }
            scanned += 1;
            let next = waiting.pop_front().expect("the front exists");
            if let (true, Some(source)) = (competing, next.source) {
                let share = shares.entry(source).or_default();
                let over = share.0 >= SOURCE_BATCH_COMMANDS_MAX
                    || (share.0 > 0 && share.1 + next.command.len() > SOURCE_BATCH_BYTES_MAX);
                if over {
                    passed.push(next);
                    continue;
                }
                *share = (share.0 + 1, share.1 + next.command.len());
            }
            bytes = grown;
            batch.push(next);
        }
        // What was passed over goes back in front, in its order.
        for kept in passed.into_iter().rev() {
            waiting.push_front(kept);
        }
        if !batch.is_empty() {
            self.waiting_bytes.set(self.waiting_bytes.get() - bytes);
            self.room.notify_waiters();
        }
        batch
    }
}

/// Proposes `command` to the group of `entry` (on this shard) and returns
/// its encoded outcome once applied.
pub async fn propose(entry: Proposing, command: Vec<u8>) -> Result<Vec<u8>, RequestError> {
    // The shard's load, also for writes that came from another shard.
    let _counted = crate::reactor::work_in_flight(1);
    let (answer, outcome) = oneshot::channel();
    let proposer = &entry.proposer();
    let since = Instant::now();
    if proposer.holding() || proposer.full_for(command.len()) {
        wait_for_room(&entry, command.len(), since).await?;
    }
    proposer.push(Waiting { command, since, source: current_source(), answer });
    if proposer.in_flight.get() < PROPOSALS_IN_FLIGHT_MAX {
        proposer.in_flight.set(proposer.in_flight.get() + 1);
        tokio::task::spawn_local(drain(entry.clone()));
    }
    let group = entry.raft().group();
    outcome.await.map_err(|_| RequestError::Codec(format!("group {group} dropped a proposal unanswered")))?
}

/// Waits for this write's turn among the held-back ones and for `bytes`
/// more to fit the group's queue, or refuses the write as timed out once
/// it waited out its request timeout since `since`.
async fn wait_for_room(entry: &Proposing, bytes: usize, since: Instant) -> Result<(), RequestError> {
    let proposer = &entry.proposer();
    let deadline = since + entry.raft().request_timeout();
    entry.stages().record(|stages| stages.proposals_held_back += 1);
    let ticket = proposer.next_ticket.get();
    proposer.next_ticket.set(ticket + 1);
    loop {
        // Made before the check: the shard runs one task at a time, so no
        // taking can slip between the check and the wait.
        let room = proposer.room.notified();
        if proposer.serving.get() == ticket && !proposer.full_for(bytes) {
            proposer.next_turn();
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, room).await.is_err() {
            if proposer.serving.get() == ticket {
                proposer.next_turn();
            } else {
                proposer.abandoned.borrow_mut().insert(ticket);
            }
            return Err(entry.raft().timeout_error().into());
        }
    }
}

/// Proposes what waits, batch after batch, until nothing does. It runs
/// after the tasks already woken when it was spawned (every connection
/// whose bytes the same poll of the sockets brought): their writes join
/// the first batch without the drain waiting a reactor turn for them.
async fn drain(entry: Proposing) {
    let timeout = entry.raft().request_timeout();
    loop {
        let mut batch = entry.proposer().take(entry.raft().command_bytes_max());
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
                let _ = waiting.answer.send(Err(entry.raft().timeout_error().into()));
            }
            batch = on_time;
        }
        let Some(deadline) = batch.iter().map(|waiting| waiting.since + timeout).min() else { continue };
        entry.stages().record(|stages| {
            for waiting in &batch {
                stages.proposal_wait.record(taken - waiting.since);
            }
            stages.proposals += 1;
            stages.proposed_commands += batch.len() as u64;
        });
        let commands = batch.iter_mut().map(|waiting| std::mem::take(&mut waiting.command)).collect();
        let outcomes = propose_batch(&entry, commands, taken, deadline).await;
        entry.stages().record(|stages| {
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
    entry.proposer().in_flight.set(entry.proposer().in_flight.get() - 1);
}

/// One entry for `batch`, proposed at `proposed` and refused as timed out
/// at `deadline`: the command itself when alone, else a batch. Answers each
/// command's outcome, and the entry's way.
async fn propose_batch(
    entry: &Proposing,
    mut commands: Vec<Vec<u8>>,
    proposed: Instant,
    deadline: Instant,
) -> Result<(Vec<Vec<u8>>, WritePath), RequestError> {
    if commands.len() == 1 {
        let alone = commands.pop().expect("one command");
        let written = entry.raft().client_write_by(alone, Some(proposed.into_std()), deadline).await?;
        return Ok((vec![written.outcome], written.path));
    }
    let written =
        entry.raft().client_write_by(encode_batch(&commands), Some(proposed.into_std()), deadline).await?;
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
    use crate::shard::test_support::{in_shard, one_group, one_group_with};

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
            let before = group.stages().snapshot();
            const WRITES: usize = 64;
            let answers =
                futures::future::join_all((0..WRITES).map(|key| propose(group.proposing(), put(key)))).await;
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
            let after = group.stages().snapshot();
            let proposals = after.proposals - before.proposals;
            assert_eq!(after.proposed_commands - before.proposed_commands, WRITES as u64);
            assert!(
                proposals <= PROPOSALS_IN_FLIGHT_MAX as u64,
                "{WRITES} writes took {proposals} proposals"
            );
            assert_eq!(
                group.machine().borrow().state.store.revision(),
                revisions[WRITES - 1],
                "the last write's"
            );
        });
    }

    #[test]
    fn a_write_that_waited_out_its_request_timeout_is_refused_not_proposed() {
        in_shard(async {
            let group = one_group().await;
            let timeout = group.raft().request_timeout();
            let (late, late_answer) = oneshot::channel();
            let (fresh, fresh_answer) = oneshot::channel();
            let since = Instant::now().checked_sub(timeout * 2).expect("the clock is far past the timeout");
            group.proposer().push(Waiting { command: put(1), since, source: None, answer: late });
            group.proposer().push(Waiting {
                command: put(2),
                since: Instant::now(),
                source: None,
                answer: fresh,
            });
            let keys = group.machine().borrow().state.store.keys_with_history();
            group.proposer().in_flight.set(1);
            drain(group.proposing()).await;
            let refused = late_answer.await.expect("answered");
            assert!(
                matches!(refused, Err(RequestError::Group(crate::raft::GroupError::Timeout { .. }))),
                "{refused:?}"
            );
            fresh_answer.await.expect("answered").expect("the fresh write applies");
            assert_eq!(
                group.machine().borrow().state.store.keys_with_history(),
                keys + 1,
                "only the fresh write applied"
            );
            assert_eq!(group.proposer().in_flight.get(), 0);
        });
    }

    /// Request deadlines run on tokio's clock: on a paused clock moved far
    /// past the real one (a simulation), a write is still given its whole
    /// request timeout, whatever the system clock says.
    #[test]
    fn a_write_is_timed_on_tokios_clock_not_the_systems() {
        in_shard(async {
            let group = one_group().await;
            tokio::time::pause();
            tokio::time::advance(group.raft().request_timeout() * 3).await;
            let answer = propose(group.proposing(), put(1)).await;
            let outcome = decode_outcome(&answer.expect("the write applies within its timeout"));
            assert!(matches!(outcome, Ok(Ok(CommandResponse::Put(_)))), "{outcome:?}");
        });
    }

    #[test]
    fn a_batch_stops_at_the_largest_entry() {
        let proposer = Proposer::new(usize::MAX, Stages::default());
        for _ in 0..10 {
            let (answer, _) = oneshot::channel();
            proposer.push(Waiting { command: vec![0; 100], since: Instant::now(), source: None, answer });
        }
        let batch = proposer.take(batch_overhead_bytes(3) + 300);
        assert_eq!(batch.len(), 3);
        assert_eq!(proposer.take(10).len(), 1, "a command larger than an entry still goes, alone");
        assert_eq!(proposer.take(usize::MAX).len(), 6);
        assert!(proposer.take(usize::MAX).is_empty());
    }

    /// Queues `count` commands of `source`, each `bytes` long and starting
    /// with its number within the source.
    fn queue(proposer: &Proposer, source: Option<u64>, count: u32, bytes: usize) {
        for index in 0..count {
            let (answer, _) = oneshot::channel();
            let mut command = index.to_le_bytes().to_vec();
            command.resize(bytes, 0);
            proposer.push(Waiting { command, since: Instant::now(), source, answer });
        }
    }

    /// Each command of `batch` as (source, its number within the source).
    fn taken(batch: &[Waiting]) -> Vec<(Option<u64>, u32)> {
        let number = |command: &[u8]| u32::from_le_bytes(command[..4].try_into().expect("4 bytes"));
        batch.iter().map(|waiting| (waiting.source, number(&waiting.command))).collect()
    }

    /// A connection with a backlog of writes takes its share of a batch
    /// while another's lone write waits, and every write of unknown source
    /// goes; alone, it takes whole batches again; each source's writes keep
    /// their order.
    #[test]
    fn a_source_with_a_backlog_takes_only_its_share_of_a_batch_while_others_wait() {
        let proposer = Proposer::new(usize::MAX, Stages::default());
        queue(&proposer, Some(1), 200, 100);
        queue(&proposer, Some(2), 1, 100);
        queue(&proposer, None, 3, 100);
        let first = taken(&proposer.take(usize::MAX));
        let of = |batch: &[(Option<u64>, u32)], source| {
            batch.iter().filter(|(from, _)| *from == source).map(|(_, number)| *number).collect::<Vec<_>>()
        };
        let share = SOURCE_BATCH_COMMANDS_MAX as u32;
        assert_eq!(of(&first, Some(1)), (0..share).collect::<Vec<_>>(), "the backlog's share, in order");
        assert_eq!(of(&first, Some(2)), vec![0], "the lone write joins the first batch");
        assert_eq!(of(&first, None), vec![0, 1, 2], "writes of unknown source are not held to a share");
        let second = taken(&proposer.take(usize::MAX));
        assert_eq!(of(&second, Some(1)), (share..200).collect::<Vec<_>>(), "alone, the rest in one batch");
        assert!(proposer.take(usize::MAX).is_empty());
        assert_eq!(proposer.waiting_bytes.get(), 0);
    }

    /// While others wait, large writes of one source fill a batch up to
    /// their byte share, and the first always goes.
    #[test]
    fn a_source_of_large_writes_takes_its_share_of_a_batch_in_bytes() {
        let proposer = Proposer::new(usize::MAX, Stages::default());
        let large = 64 << 10;
        queue(&proposer, Some(1), 10, large);
        queue(&proposer, Some(2), 1, 100);
        let first = taken(&proposer.take(usize::MAX));
        let from_one = first.iter().filter(|(source, _)| *source == Some(1)).count();
        assert_eq!(from_one, SOURCE_BATCH_BYTES_MAX / large, "{first:?}");
        assert!(first.contains(&(Some(2), 0)), "{first:?}");
        let proposer = Proposer::new(usize::MAX, Stages::default());
        queue(&proposer, Some(1), 2, SOURCE_BATCH_BYTES_MAX * 2);
        queue(&proposer, Some(2), 1, 100);
        assert_eq!(
            taken(&proposer.take(usize::MAX)),
            vec![(Some(1), 0), (Some(2), 0)],
            "the first goes, alone"
        );
    }

    #[test]
    fn writes_count_as_the_source_their_future_runs_as() {
        in_shard(async {
            assert_eq!(current_source(), None);
            let (one, two) = (new_source(), new_source());
            assert_ne!(one, two);
            assert_eq!(as_source(one, async { current_source() }).await, Some(one));
            assert_eq!(
                as_source(two, async { as_source(one, async { current_source() }).await }).await,
                Some(one)
            );
        });
    }

    /// A queue bounded to two writes' bytes: the writes beyond wait for the
    /// batches ahead to be taken instead of queueing, and every one of them
    /// still applies, once, in order of arrival.
    #[test]
    fn a_full_queue_holds_writes_back_until_the_batches_ahead_are_taken() {
        in_shard(async {
            let bound = 2 * put(0).len();
            let group = one_group_with(|layout| layout.proposal_queue_bytes_max = bound).await;
            let before = group.stages().snapshot();
            const WRITES: usize = 40;
            let answers =
                futures::future::join_all((0..WRITES).map(|key| propose(group.proposing(), put(key)))).await;
            let revisions: Vec<i64> = answers
                .into_iter()
                .map(|answer| match decode_outcome(&answer.expect("the write applies")).expect("decodes") {
                    Ok(CommandResponse::Put(put)) => put.revision,
                    other => panic!("a put answered {other:?}"),
                })
                .collect();
            assert!(revisions.windows(2).all(|pair| pair[0] < pair[1]), "applied in order: {revisions:?}");
            let after = group.stages().snapshot();
            assert_eq!(after.proposed_commands - before.proposed_commands, WRITES as u64);
            assert!(
                after.proposals_held_back - before.proposals_held_back
                    >= (WRITES - 2 - PROPOSALS_IN_FLIGHT_MAX) as u64,
                "held back {} of {WRITES}",
                after.proposals_held_back - before.proposals_held_back
            );
            assert!(group.proposer().waiting_bytes.get() == 0, "the queue is empty again");
        });
    }
}
