//! When the recent entries of one group passed each point of their way
//! through Raft on this member, so a write's time can be split into the
//! hops of the latency budget (README, "The latency budget"): the log
//! store marks an entry durable, the network marks the AppendEntries that
//! carried it sent and answered (with the time the follower said it took),
//! the state machine marks it applied. [`WritePath`] reads them back for a
//! write the leader proposed, once its outcome is known.
//!
//! It keeps the last [`TIMELINE_ENTRIES_MAX`] indexes and forgets older
//! ones; a mark for an index it no longer holds is dropped. It only
//! measures: nothing on the write path waits for it or reads it to decide
//! anything, and a lost mark only leaves a hop out of the budget.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Entries whose marks a group keeps: far more than are ever in flight.
pub const TIMELINE_ENTRIES_MAX: usize = 4096;
/// Follower answers kept per entry: enough for the quorum of five members.
const ACKS_KEPT: usize = 2;

#[derive(Clone, Copy, Debug)]
struct Ack {
    sent: Instant,
    answered: Instant,
    /// What the follower said it took, from taking the call to answering.
    follower: Duration,
}

#[derive(Clone, Copy, Debug, Default)]
struct Marks {
    durable: Option<Instant>,
    /// Follower answers, earliest first.
    acks: [Option<Ack>; ACKS_KEPT],
    apply_started: Option<Instant>,
    applied: Option<Instant>,
}

/// The marks of one group's recent entries.
#[derive(Debug, Default)]
pub struct Timeline {
    inner: RefCell<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// The index of `marks[0]`.
    first: u64,
    marks: VecDeque<Marks>,
}

impl Entries {
    /// The marks of `index`, made room for when it is newer than any held.
    fn at(&mut self, index: u64) -> Option<&mut Marks> {
        if self.marks.is_empty() || index >= self.first + TIMELINE_ENTRIES_MAX as u64 * 2 {
            self.first = index;
            self.marks.clear();
        }
        if index < self.first {
            return None;
        }
        while index >= self.first + self.marks.len() as u64 {
            if self.marks.len() == TIMELINE_ENTRIES_MAX {
                self.marks.pop_front();
                self.first += 1;
            }
            self.marks.push_back(Marks::default());
        }
        self.marks.get_mut((index - self.first) as usize)
    }

    fn get(&self, index: u64) -> Option<&Marks> {
        index.checked_sub(self.first).and_then(|offset| self.marks.get(offset as usize))
    }
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// Entries `first..=last` are durable in this member's log.
    pub fn durable(&self, first: u64, last: u64, at: Instant) {
        let mut entries = self.inner.borrow_mut();
        for index in first..=last {
            if let Some(marks) = entries.at(index) {
                marks.durable = Some(at);
            }
        }
    }

    /// A follower took entries `first..=last` in an AppendEntries sent at
    /// `sent` and answered at `answered`, saying it took `follower`.
    pub fn acknowledged(&self, first: u64, last: u64, sent: Instant, answered: Instant, follower: Duration) {
        let mut entries = self.inner.borrow_mut();
        let ack = Ack { sent, answered, follower };
        for index in first..=last {
            let Some(marks) = entries.at(index) else { continue };
            // Keep the earliest answers: they are the ones a quorum waits for.
            let slot = marks.acks.iter().position(|kept| kept.is_none_or(|kept| kept.answered > answered));
            if let Some(slot) = slot {
                marks.acks.copy_within(slot..ACKS_KEPT - 1, slot + 1);
                marks.acks[slot] = Some(ack);
            }
        }
    }

    /// Entry `index` was applied from `started` to `finished`.
    pub fn applied(&self, index: u64, started: Instant, finished: Instant) {
        if let Some(marks) = self.inner.borrow_mut().at(index) {
            marks.apply_started = Some(started);
            marks.applied = Some(finished);
        }
    }

    /// The way of the write proposed at `proposed` as entry `index`, whose
    /// outcome came back at `answered`, on a group where `followers_needed`
    /// followers complete a quorum (0 for a single member). A hop whose
    /// marks are missing is `None`.
    pub fn path(
        &self,
        index: u64,
        proposed: Instant,
        answered: Instant,
        followers_needed: usize,
    ) -> WritePath {
        let entries = self.inner.borrow();
        let Some(marks) = entries.get(index) else { return WritePath::default() };
        let since = |from: Option<Instant>, to: Option<Instant>| Some(to?.saturating_duration_since(from?));
        // Committed once durable on a majority: this member (the leader,
        // whose own append may finish after its followers') and
        // `followers_needed` others, or one more follower instead of it.
        let mut durable_at: Vec<Instant> =
            marks.durable.into_iter().chain(marks.acks.iter().flatten().map(|ack| ack.answered)).collect();
        durable_at.sort();
        let quorum = durable_at.get(followers_needed).copied();
        // The follower answer the quorum waited for (else the first one).
        let ack = marks
            .acks
            .iter()
            .flatten()
            .find(|ack| Some(ack.answered) == quorum)
            .or_else(|| marks.acks.iter().flatten().next())
            .copied()
            .filter(|_| followers_needed > 0);
        let network = ack.map(|ack| (ack.answered - ack.sent).saturating_sub(ack.follower) / 2);
        WritePath {
            leader_append: since(Some(proposed), marks.durable),
            sent: ack.map(|ack| ack.sent.saturating_duration_since(proposed)),
            to_follower: network,
            follower_append: ack.map(|ack| ack.follower),
            ack_back: network,
            commit: since(quorum, marks.apply_started),
            apply: since(marks.apply_started, marks.applied),
            handback: since(marks.applied, Some(answered)),
        }
    }
}

/// Where one write spent its time in Raft on the leader, hop by hop (see
/// the module doc). The replication hops run beside the leader's append;
/// commit starts when the later of the two branches ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WritePath {
    /// From the proposal to the entry durable in the leader's log.
    pub leader_append: Option<Duration>,
    /// From the proposal to the AppendEntries that carried it to the
    /// quorum's follower leaving.
    pub sent: Option<Duration>,
    /// The network to the follower and back: half each of the round trip
    /// outside the follower.
    pub to_follower: Option<Duration>,
    /// What the follower took: the entry received, made durable, answered.
    pub follower_append: Option<Duration>,
    pub ack_back: Option<Duration>,
    /// From durable on a quorum to the apply starting.
    pub commit: Option<Duration>,
    pub apply: Option<Duration>,
    /// From applied to the outcome reaching the proposer.
    pub handback: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_splits_into_its_hops() {
        let timeline = Timeline::new();
        let start = Instant::now();
        let at = |micros: u64| start + Duration::from_micros(micros);
        timeline.durable(7, 8, at(40));
        timeline.acknowledged(7, 8, at(10), at(90), Duration::from_micros(50));
        timeline.acknowledged(8, 8, at(12), at(70), Duration::from_micros(40));
        timeline.applied(8, at(100), at(105));
        let path = timeline.path(8, at(0), at(110), 1);
        let micros = |value: u64| Some(Duration::from_micros(value));
        assert_eq!(path.leader_append, micros(40));
        assert_eq!(path.sent, micros(12), "the earlier answer makes the quorum");
        assert_eq!(
            (path.to_follower, path.follower_append, path.ack_back),
            (micros(9), micros(40), micros(9))
        );
        assert_eq!(path.commit, micros(30), "quorum at 70, apply at 100");
        assert_eq!((path.apply, path.handback), (micros(5), micros(5)));
        timeline.durable(9, 9, at(80));
        timeline.acknowledged(9, 9, at(5), at(40), Duration::from_micros(20));
        timeline.acknowledged(9, 9, at(6), at(50), Duration::from_micros(20));
        timeline.applied(9, at(60), at(62));
        let followers_first = timeline.path(9, at(0), at(70), 1);
        assert_eq!(
            followers_first.commit,
            micros(10),
            "two followers made the quorum (at 50) before the leader's append"
        );
        assert_eq!(followers_first.sent, micros(6), "the second answer completed it");
        let alone = timeline.path(8, at(0), at(110), 0);
        assert_eq!((alone.commit, alone.sent), (micros(60), None), "one member commits once durable");
        assert_eq!(timeline.path(10, at(0), at(110), 0), WritePath::default(), "nothing marked");
    }

    #[test]
    fn it_keeps_only_recent_entries() {
        let timeline = Timeline::new();
        let now = Instant::now();
        timeline.durable(1, TIMELINE_ENTRIES_MAX as u64 + 10, now);
        assert!(timeline.path(5, now, now, 0).leader_append.is_none(), "forgotten");
        assert!(timeline.path(TIMELINE_ENTRIES_MAX as u64, now, now, 0).leader_append.is_some());
        timeline.durable(1 << 40, 1 << 40, now);
        assert!(timeline.path(1 << 40, now, now, 0).leader_append.is_some(), "a jump starts over");
    }
}
