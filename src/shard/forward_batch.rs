//! Forwarded writes coalesced per leader ([`BatchingLink`]): a follower
//! under load forwards many writes to the same member, and one peer call
//! each costs both members a message, a dispatch and a wake-up per write.
//! Writes for a leader go out at once while fewer than
//! [`BATCHES_IN_FLIGHT_MAX`] calls to it are in flight; those that arrive
//! while that many are in flight wait, and go out together in the next
//! batch when one comes back. The leader proposes them as if each had
//! come alone and answers each separately.
//!
//! It never changes what a write means: each caller gets its own write's
//! outcome, a write whose caller gave up before it was sent is not sent,
//! and a batch that was never sent answers every write of it `NotSent`
//! (so `forward::write` may try the next leader). What waits here is
//! bounded by the callers: each waits for its own write, and the client
//! ports bound the calls in flight.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::LocalBoxFuture;

use super::leader_link::{LeaderLink, FORWARD_BATCH_BYTES_MAX, FORWARD_BATCH_WRITES_MAX};
use super::lease::{LeaseAnswer, LeaseQuery};
use super::membership::MembershipChange;
use crate::raft::{GroupError, GroupId, Member, NodeId};

/// Calls of forwarded writes in flight to one leader before writes wait to
/// be batched: the second goes out while the first waits on the leader's
/// log, so a lone client's writes never wait behind a batch.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;

type Outcome = Result<Vec<u8>, GroupError>;

/// A [`LeaderLink`] that batches forwarded writes per leader over another
/// link; every other request passes straight through. Made on a shard's
/// reactor thread, whose LocalSet runs its batches.
pub struct BatchingLink {
    state: Rc<State>,
}

struct State {
    link: Rc<dyn LeaderLink>,
    leaders: RefCell<HashMap<NodeId, Queue>>,
}

/// The forwarded writes of one leader.
#[derive(Default)]
struct Queue {
    in_flight: usize,
    waiting: VecDeque<Waiting>,
}

struct Waiting {
    group: GroupId,
    command: Vec<u8>,
    answer: oneshot::Sender<Outcome>,
}

impl BatchingLink {
    pub fn new(link: Rc<dyn LeaderLink>) -> BatchingLink {
        BatchingLink { state: Rc::new(State { link, leaders: RefCell::default() }) }
    }
}

impl State {
    /// Sends the next batch of `leader`'s waiting writes, if there are any
    /// and a call may go out.
    fn send_next(state: &Rc<State>, leader: &Member) {
        let batch = {
            let mut leaders = state.leaders.borrow_mut();
            let Some(queue) = leaders.get_mut(&leader.id) else { return };
            if queue.in_flight >= BATCHES_IN_FLIGHT_MAX {
                return;
            }
            let batch = take_batch(&mut queue.waiting);
            if batch.is_empty() {
                if queue.in_flight == 0 {
                    leaders.remove(&leader.id);
                }
                return;
            }
            queue.in_flight += 1;
            batch
        };
        let writes = batch.len() as u64;
        super::local_stages().record(|stages| {
            stages.forwarded_write_calls += 1;
            stages.forwarded_writes += writes;
        });
        let (state, leader) = (state.clone(), leader.clone());
        tokio::task::spawn_local(async move {
            let (writes, answers): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|waiting| ((waiting.group, waiting.command), waiting.answer)).unzip();
            let groups: Vec<GroupId> = writes.iter().map(|(group, _)| *group).collect();
            let mut outcomes = match <[_; 1]>::try_from(writes) {
                // A lone write is the call it always was.
                Ok([(group, command)]) => vec![state.link.forward_write(group, &leader, command).await],
                Err(writes) => state.link.forward_writes(&leader, writes).await,
            }
            .into_iter();
            for (answer, group) in answers.into_iter().zip(groups) {
                let outcome = outcomes.next().unwrap_or_else(|| {
                    Err(GroupError::Unavailable {
                        group,
                        member: leader.id,
                        reason: format!(
                            "{leader} answered a batch of forwarded writes with too few outcomes"
                        ),
                    })
                });
                // A caller that gave up no longer listens.
                let _ = answer.send(outcome);
            }
            if let Some(queue) = state.leaders.borrow_mut().get_mut(&leader.id) {
                queue.in_flight -= 1;
            }
            State::send_next(&state, &leader);
        });
    }
}

/// The next batch of `waiting`: writes in order, up to
/// [`FORWARD_BATCH_WRITES_MAX`] of them and [`FORWARD_BATCH_BYTES_MAX`]
/// bytes of commands (always at least one), leaving out those whose caller
/// gave up.
fn take_batch(waiting: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(next) = waiting.front() {
        if next.answer.is_canceled() {
            waiting.pop_front();
            continue;
        }
        let full = batch.len() >= FORWARD_BATCH_WRITES_MAX
            || (!batch.is_empty() && bytes + next.command.len() > FORWARD_BATCH_BYTES_MAX);
        if full {
            break;
        }
        bytes += next.command.len();
        batch.extend(waiting.pop_front());
    }
    batch
}

impl LeaderLink for BatchingLink {
    fn forward_write(
        &self,
        group: GroupId,
        leader: &Member,
        command: Vec<u8>,
    ) -> LocalBoxFuture<'static, Result<Vec<u8>, GroupError>> {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting { group, command, answer };
        self.state.leaders.borrow_mut().entry(leader.id).or_default().waiting.push_back(waiting);
        State::send_next(&self.state, leader);
        let member = leader.id;
        Box::pin(async move {
            answered.await.unwrap_or_else(|_| {
                // Only when the shard's tasks are being dropped: the batch
                // may have been sent.
                Err(GroupError::Unavailable {
                    group,
                    member,
                    reason: "the shard stopped while the write was forwarded".to_string(),
                })
            })
        })
    }

    fn forward_writes(
        &self,
        leader: &Member,
        writes: Vec<(GroupId, Vec<u8>)>,
    ) -> LocalBoxFuture<'static, Vec<Result<Vec<u8>, GroupError>>> {
        self.state.link.forward_writes(leader, writes)
    }

    fn read_index(
        &self,
        group: GroupId,
        leader: &Member,
    ) -> LocalBoxFuture<'static, Result<u64, GroupError>> {
        self.state.link.read_index(group, leader)
    }

    fn lease(
        &self,
        group: GroupId,
        leader: &Member,
        query: LeaseQuery,
    ) -> LocalBoxFuture<'static, Result<LeaseAnswer, GroupError>> {
        self.state.link.lease(group, leader, query)
    }

    fn forward_membership(
        &self,
        group: GroupId,
        leader: &Member,
        change: MembershipChange,
    ) -> LocalBoxFuture<'static, Result<(), GroupError>> {
        self.state.link.forward_membership(group, leader, change)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use futures::future::join_all;
    use futures::FutureExt;

    use super::*;

    /// A leader that answers each write with its command, and records the
    /// size of every call it got; its calls complete when `open` says so.
    #[derive(Default)]
    struct Recording {
        calls: RefCell<Vec<usize>>,
        open: Rc<Cell<bool>>,
    }

    impl Recording {
        fn answer(&self, commands: Vec<(GroupId, Vec<u8>)>) -> LocalBoxFuture<'static, Vec<Outcome>> {
            self.calls.borrow_mut().push(commands.len());
            let open = self.open.clone();
            async move {
                while !open.get() {
                    tokio::task::yield_now().await;
                }
                commands.into_iter().map(|(_, command)| Ok(command)).collect()
            }
            .boxed_local()
        }
    }

    impl LeaderLink for Recording {
        fn forward_write(
            &self,
            group: GroupId,
            _: &Member,
            command: Vec<u8>,
        ) -> LocalBoxFuture<'static, Outcome> {
            self.answer(vec![(group, command)]).map(|mut outcomes| outcomes.remove(0)).boxed_local()
        }
        fn forward_writes(
            &self,
            _: &Member,
            writes: Vec<(GroupId, Vec<u8>)>,
        ) -> LocalBoxFuture<'static, Vec<Outcome>> {
            self.answer(writes)
        }
        // Every other call answers that it passed, by name.
        fn read_index(
            &self,
            group: GroupId,
            leader: &Member,
        ) -> LocalBoxFuture<'static, Result<u64, GroupError>> {
            futures::future::ready(Err(passed(group, leader, "read index".into()))).boxed_local()
        }
        fn lease(
            &self,
            group: GroupId,
            leader: &Member,
            query: LeaseQuery,
        ) -> LocalBoxFuture<'static, Result<LeaseAnswer, GroupError>> {
            futures::future::ready(Err(passed(group, leader, format!("{query:?}")))).boxed_local()
        }
        fn forward_membership(
            &self,
            group: GroupId,
            leader: &Member,
            change: MembershipChange,
        ) -> LocalBoxFuture<'static, Result<(), GroupError>> {
            futures::future::ready(Err(passed(group, leader, format!("{change:?}")))).boxed_local()
        }
    }

    fn passed(group: GroupId, leader: &Member, call: String) -> GroupError {
        GroupError::Unavailable { group, member: leader.id, reason: call }
    }

    /// Reads, leases and membership changes go to the leader as they come,
    /// one call each, never into a batch of writes.
    #[tokio::test(flavor = "current_thread")]
    async fn calls_other_than_writes_pass_through_alone() {
        let recording = Rc::new(Recording::default());
        let link = BatchingLink::new(recording.clone());
        let leader = leader();
        assert_eq!(link.read_index(4, &leader).await, Err(passed(4, &leader, "read index".into())));
        let query = LeaseQuery::Lease { id: 9, renew: true };
        assert_eq!(
            link.lease(0, &leader, query.clone()).await,
            Err(passed(0, &leader, format!("{query:?}")))
        );
        let change = MembershipChange::Remove(3);
        assert_eq!(
            link.forward_membership(1, &leader, change.clone()).await,
            Err(passed(1, &leader, format!("{change:?}")))
        );
        assert!(recording.calls.borrow().is_empty(), "no write was sent");
    }

    fn leader() -> Member {
        Member {
            id: 2,
            peer_address: "127.0.0.1:1".into(),
            name: "two".into(),
            client_address: String::new(),
        }
    }

    /// Writes that arrive while two calls are in flight wait, then go out in
    /// batches within the limit, each answered with its own outcome.
    #[tokio::test(flavor = "current_thread")]
    async fn writes_waiting_behind_calls_in_flight_go_out_together() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let recording = Rc::new(Recording::default());
                let link = BatchingLink::new(recording.clone());
                let leader = leader();
                let writes = FORWARD_BATCH_WRITES_MAX + 10;
                let counted = || {
                    crate::shard::local_stages()
                        .read(|stages| (stages.forwarded_write_calls, stages.forwarded_writes))
                };
                let before = counted();
                let answers: Vec<_> = (0..writes)
                    .map(|index| {
                        link.forward_write(index as GroupId % 3, &leader, index.to_le_bytes().to_vec())
                    })
                    .collect();
                // The first two go out alone; the rest wait for them.
                tokio::task::yield_now().await;
                assert_eq!(*recording.calls.borrow(), vec![1, 1]);
                recording.open.set(true);
                let outcomes = join_all(answers).await;
                for (index, outcome) in outcomes.into_iter().enumerate() {
                    assert_eq!(outcome, Ok(index.to_le_bytes().to_vec()), "write {index}");
                }
                let calls = recording.calls.borrow().clone();
                assert_eq!(
                    calls,
                    vec![1, 1, FORWARD_BATCH_WRITES_MAX, writes - 2 - FORWARD_BATCH_WRITES_MAX]
                );
                // The shard's counters (this thread's stages) say the same.
                let after = counted();
                assert_eq!(
                    (after.0 - before.0, after.1 - before.1),
                    (4, writes as u64),
                    "calls and the writes they carried are counted"
                );
                assert!(link.state.leaders.borrow().is_empty(), "an idle leader's queue is dropped");
            })
            .await;
    }

    /// A write whose caller gave up before its batch went out is not sent.
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_given_up_before_it_is_sent_is_left_out() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let recording = Rc::new(Recording::default());
                let link = BatchingLink::new(recording.clone());
                let leader = leader();
                let first: Vec<_> = (0..2u8).map(|byte| link.forward_write(0, &leader, vec![byte])).collect();
                let given_up = link.forward_write(0, &leader, vec![2]);
                let kept = link.forward_write(0, &leader, vec![3]);
                drop(given_up);
                recording.open.set(true);
                assert_eq!(join_all(first).await, vec![Ok(vec![0]), Ok(vec![1])]);
                assert_eq!(kept.await, Ok(vec![3]));
                assert_eq!(*recording.calls.borrow(), vec![1, 1, 1]);
            })
            .await;
    }
}
