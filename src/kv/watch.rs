//! The watch hub of one group: who watches which keys from which revision,
//! and the events each watcher has not taken yet.
//!
//! A watcher is either catching up, reading the store's history from its
//! next position on every poll (nothing is buffered, however far behind it
//! is), or synced, receiving each write's events as the caller publishes
//! them into a buffer of at most `watch_events_pending_max` events and
//! `watch_pending_bytes_max` bytes (or one write's events, if a single write
//! has more). The events are shared: a write's event is made once and every
//! buffer that holds it holds the same copy, so a thousand watchers of one
//! prefix pin a write's bytes once, and the distinct bytes all buffers of
//! the hub pin stay under `group_pending_bytes_max` (the watchers holding
//! the most are cancelled first when a write would pass it). A synced
//! watcher whose buffer would overflow is cancelled as too slow rather than
//! allowed to grow memory; a watcher whose next position falls to the
//! compact revision or below is cancelled as compacted. Either way a watcher
//! sees every matching event once, in revision order, or learns why not.
//!
//! The RPC layer pulls: `poll` hands out events, `ready` (or the ready
//! hook) says which watchers have something to hand out. The hub is
//! single-threaded and must never block, keep a clock, or reach into Raft.
//!
//! Contract with the caller: publish the events of every applied write, in
//! apply order, before the next write is applied. A watcher that catches up
//! past a write not published yet skips that write's later publication, so
//! nothing is delivered twice either way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::revision::Revision;
use super::store::MvccStore;
use super::types::{range_contains, Event, EventKind};

/// Names one watcher of one hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub i64);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub key: Vec<u8>,
    /// etcd's range convention (see `types::range_contains`).
    pub range_end: Vec<u8>,
    /// The first revision to deliver; 0 for the next write.
    pub start_revision: i64,
    /// Whether events carry the key as it was before.
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    /// Whether the RPC layer should send this watcher progress notifications.
    pub progress_notify: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchLimits {
    /// Watchers one group's hub holds at once.
    pub watchers_max: usize,
    /// Events a synced watcher may hold before it is cancelled as too slow.
    pub watch_events_pending_max: usize,
    /// Bytes (keys and values) a synced watcher may hold before it is
    /// cancelled as too slow.
    pub watch_pending_bytes_max: usize,
    /// Bytes of distinct events every synced watcher of the hub holds,
    /// each event counted once however many hold it.
    pub group_pending_bytes_max: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            watchers_max: 10_000,
            watch_events_pending_max: 1024,
            watch_pending_bytes_max: 1 << 20,
            group_pending_bytes_max: 16 << 20,
        }
    }
}

/// Why the hub ended a watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CancelReason {
    #[error(
        "the history the watch needs is compacted (compact revision {compact_revision}); \
         read the current state and watch again from after it"
    )]
    Compacted { compact_revision: i64 },
    #[error(
        "the watcher fell more than {watch_events_pending_max} events or {watch_pending_bytes_max} bytes behind \
         (or its group's watchers held too many bytes); watch again from the revision after the last event it \
         received"
    )]
    TooSlow { watch_events_pending_max: usize, watch_pending_bytes_max: usize },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("watch {0:?} does not exist (never created, cancelled, or already reported cancelled)")]
    UnknownWatch(WatchId),
    #[error("the group holds {watchers_max} watches already (store.watches_per_group_max); cancel one, or raise it")]
    TooManyWatchers { watchers_max: usize },
    #[error("invalid watch: {0}")]
    InvalidArgument(String),
}

/// What one poll hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchPoll {
    /// The next events, in order; empty when there is nothing new.
    Events(Vec<Event>),
    /// The watcher is gone, for this reason; later polls say it is unknown.
    Cancelled(CancelReason),
}

enum State {
    /// Reads history from `next` on each poll.
    CatchingUp {
        next: Revision,
    },
    /// Receives published writes from revision `next_main` on.
    Synced {
        next_main: i64,
        /// Shared with every other watcher that wants the same events.
        pending: VecDeque<Arc<Event>>,
        /// Their keys and values, counted for this watcher.
        pending_bytes: usize,
    },
    Cancelled(CancelReason),
}

struct Watcher {
    request: WatchRequest,
    state: State,
}

fn wants(request: &WatchRequest, event: &Event) -> bool {
    let wanted_kind = match event.kind {
        EventKind::Put => !request.no_put,
        EventKind::Delete => !request.no_delete,
    };
    wanted_kind && range_contains(&request.key, &request.range_end, &event.kv.key)
}

fn shaped(request: &WatchRequest, event: &Event) -> Event {
    Event {
        kind: event.kind,
        kv: event.kv.clone(),
        prev_kv: if request.prev_kv { event.prev_kv.clone() } else { None },
    }
}

/// The bytes an event pins: its keys and values.
pub fn event_bytes(event: &Event) -> usize {
    let prev = event.prev_kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len());
    event.kv.key.len() + event.kv.value.len() + prev
}

impl Watcher {
    fn ready(&self) -> bool {
        match &self.state {
            State::CatchingUp { .. } | State::Cancelled(_) => true,
            State::Synced { pending, .. } => !pending.is_empty(),
        }
    }
}

/// Called with a watcher that has become ready to poll.
pub type ReadyHook = Box<dyn FnMut(WatchId)>;

pub struct WatchHub {
    limits: WatchLimits,
    next_id: i64,
    watchers: BTreeMap<WatchId, Watcher>,
    ready: BTreeSet<WatchId>,
    ready_hook: Option<ReadyHook>,
    /// The revision of the last write published.
    published_revision: i64,
    /// Bytes of the distinct events the synced watchers hold.
    pinned_bytes: usize,
}

impl WatchHub {
    pub fn new(limits: WatchLimits) -> WatchHub {
        WatchHub {
            limits,
            next_id: 1,
            watchers: BTreeMap::new(),
            ready: BTreeSet::new(),
            ready_hook: None,
            published_revision: 0,
            pinned_bytes: 0,
        }
    }

    /// Bytes of the distinct events the synced watchers hold now.
    pub fn pinned_bytes(&self) -> usize {
        self.pinned_bytes
    }

    /// Lets go of one buffered event: the last holder unpins its bytes.
    fn release(pinned_bytes: &mut usize, event: Arc<Event>) {
        if Arc::strong_count(&event) == 1 {
            *pinned_bytes -= event_bytes(&event);
        }
    }

    /// Cancels a watcher's state as too slow, unpinning what it held.
    fn too_slow(&mut self, id: WatchId) {
        let limits = self.limits;
        let Some(watcher) = self.watchers.get_mut(&id) else { return };
        let reason = CancelReason::TooSlow {
            watch_events_pending_max: limits.watch_events_pending_max,
            watch_pending_bytes_max: limits.watch_pending_bytes_max,
        };
        if let State::Synced { pending, .. } = std::mem::replace(&mut watcher.state, State::Cancelled(reason))
        {
            for event in pending {
                Self::release(&mut self.pinned_bytes, event);
            }
        }
    }

    /// Calls `hook` whenever a watcher becomes ready, so an RPC task can wake.
    pub fn set_ready_hook(&mut self, hook: ReadyHook) {
        self.ready_hook = Some(hook);
    }

    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    fn mark(&mut self, id: WatchId) {
        let ready = self.watchers.get(&id).is_some_and(Watcher::ready);
        if !ready {
            self.ready.remove(&id);
        } else if self.ready.insert(id) {
            if let Some(hook) = &mut self.ready_hook {
                hook(id);
            }
        }
    }

    /// Starts a watcher. One whose start revision is compacted is created
    /// cancelled, and its first poll says so with the compact revision.
    pub fn watch(&mut self, store: &MvccStore, request: WatchRequest) -> Result<WatchId, WatchError> {
        if self.watchers.len() >= self.limits.watchers_max {
            return Err(WatchError::TooManyWatchers { watchers_max: self.limits.watchers_max });
        }
        if request.start_revision < 0 {
            return Err(WatchError::InvalidArgument(format!(
                "start revision {} is negative; give 0 for the next write or a positive revision",
                request.start_revision
            )));
        }
        let start = if request.start_revision == 0 { store.revision() + 1 } else { request.start_revision };
        // The start must be above the compact revision: compaction forgets a
        // delete at exactly that revision, so a replay from it could miss one.
        let state = if store.compact_revision() > 0 && start <= store.compact_revision() {
            State::Cancelled(CancelReason::Compacted { compact_revision: store.compact_revision() })
        } else if start > store.revision() {
            State::Synced { next_main: start, pending: VecDeque::new(), pending_bytes: 0 }
        } else {
            State::CatchingUp { next: Revision::start_of(start) }
        };
        let id = WatchId(self.next_id);
        self.next_id += 1;
        self.watchers.insert(id, Watcher { request, state });
        self.mark(id);
        Ok(id)
    }

    /// Hands the events of one applied write (all of one revision, as the
    /// store returned them) to every synced watcher that wants them.
    pub fn publish(&mut self, events: &[Event]) {
        let Some(first) = events.first() else { return };
        let revision = first.kv.mod_revision;
        assert!(
            events.iter().all(|event| event.kv.mod_revision == revision),
            "publish takes the events of one write, all at one revision"
        );
        assert!(
            revision > self.published_revision,
            "revision {revision} published after {}: writes are published in order",
            self.published_revision
        );
        self.published_revision = revision;
        let limits = self.limits;
        // Each event is made shared the first time a watcher wants it.
        let mut shared: Vec<Option<Arc<Event>>> = vec![None; events.len()];
        let mut touched = Vec::new();
        let mut slow = Vec::new();
        for (&id, Watcher { request, state }) in &mut self.watchers {
            let State::Synced { next_main, pending, pending_bytes } = state else { continue };
            if revision < *next_main {
                continue;
            }
            *next_main = revision + 1;
            let wanted: Vec<usize> =
                (0..events.len()).filter(|&index| wants(request, &events[index])).collect();
            let wanted_bytes: usize = wanted.iter().map(|&index| event_bytes(&events[index])).sum();
            // An empty buffer takes one write however large, so a big delete
            // range cancels no watcher that was keeping up.
            let overflows = pending.len() + wanted.len() > limits.watch_events_pending_max
                || *pending_bytes + wanted_bytes > limits.watch_pending_bytes_max;
            if !pending.is_empty() && overflows {
                slow.push(id);
            } else {
                for index in wanted {
                    let event = shared[index].get_or_insert_with(|| {
                        self.pinned_bytes += event_bytes(&events[index]);
                        Arc::new(events[index].clone())
                    });
                    pending.push_back(Arc::clone(event));
                }
                *pending_bytes += wanted_bytes;
            }
            touched.push(id);
        }
        drop(shared);
        for id in slow {
            self.too_slow(id);
        }
        // Over the group's bytes: the watchers holding the most go first
        // (they read history instead, holding nothing).
        if self.pinned_bytes > limits.group_pending_bytes_max {
            let mut holders: Vec<(usize, WatchId)> = self
                .watchers
                .iter()
                .filter_map(|(&id, watcher)| match &watcher.state {
                    State::Synced { pending_bytes, .. } if *pending_bytes > 0 => Some((*pending_bytes, id)),
                    _ => None,
                })
                .collect();
            holders.sort_unstable_by(|left, right| right.cmp(left));
            for (_, id) in holders {
                if self.pinned_bytes <= limits.group_pending_bytes_max {
                    break;
                }
                self.too_slow(id);
                touched.push(id);
            }
        }
        for id in touched {
            self.mark(id);
        }
    }

    /// Takes the next events of watcher `id`, reading history if it is
    /// catching up: up to `events_max`, but always whole revisions, so a
    /// revision larger than `events_max` comes whole. A watcher that resumes
    /// from the revision after the last event it took misses nothing and
    /// repeats nothing. A cancelled watcher reports why, once, and is gone.
    pub fn poll(
        &mut self,
        store: &MvccStore,
        id: WatchId,
        events_max: usize,
    ) -> Result<WatchPoll, WatchError> {
        let watcher = self.watchers.get_mut(&id).ok_or(WatchError::UnknownWatch(id))?;
        if let State::CatchingUp { next } = watcher.state {
            if next.main <= store.compact_revision() {
                let reason = CancelReason::Compacted { compact_revision: store.compact_revision() };
                watcher.state = State::Cancelled(reason);
            }
        }
        let events = match &mut watcher.state {
            State::Cancelled(reason) => {
                let reason = *reason;
                self.watchers.remove(&id);
                self.ready.remove(&id);
                return Ok(WatchPoll::Cancelled(reason));
            }
            State::Synced { pending, pending_bytes, .. } => {
                let mut events: Vec<Event> = Vec::new();
                while let Some(front) = pending.front() {
                    if !fits(&events, front, events_max) {
                        break;
                    }
                    let event = pending.pop_front().expect("the front exists");
                    *pending_bytes -= event_bytes(&event);
                    events.push(shaped(&watcher.request, &event));
                    Self::release(&mut self.pinned_bytes, event);
                }
                events
            }
            State::CatchingUp { next } => {
                let next = *next;
                let (events, state) = catch_up(&watcher.request, store, next, events_max);
                watcher.state = state;
                events
            }
        };
        self.mark(id);
        Ok(WatchPoll::Events(events))
    }

    /// Tells the hub its store was replaced wholesale (a snapshot from the
    /// leader installed): no events were published for the jump, so every
    /// synced watcher goes back to reading history from the first revision
    /// it has not taken, or is cancelled as compacted if the new store's
    /// history starts after that.
    pub fn store_replaced(&mut self) {
        for watcher in self.watchers.values_mut() {
            if let State::Synced { next_main, pending, .. } = &watcher.state {
                let next = pending.front().map_or(*next_main, |event| event.kv.mod_revision);
                let state = std::mem::replace(
                    &mut watcher.state,
                    State::CatchingUp { next: Revision::start_of(next) },
                );
                if let State::Synced { pending, .. } = state {
                    for event in pending {
                        Self::release(&mut self.pinned_bytes, event);
                    }
                }
            }
        }
        let ids: Vec<WatchId> = self.watchers.keys().copied().collect();
        for id in ids {
            self.mark(id);
        }
    }

    pub fn cancel(&mut self, id: WatchId) -> Result<(), WatchError> {
        let watcher = self.watchers.remove(&id).ok_or(WatchError::UnknownWatch(id))?;
        if let State::Synced { pending, .. } = watcher.state {
            for event in pending {
                Self::release(&mut self.pinned_bytes, event);
            }
        }
        self.ready.remove(&id);
        Ok(())
    }

    /// Whether watcher `id` has something to poll.
    pub fn is_ready(&self, id: WatchId) -> bool {
        self.ready.contains(&id)
    }

    /// The watchers with something to poll, in id order. A watcher stays
    /// here (and the ready hook stays quiet about it) until a poll leaves it
    /// with nothing more to hand out.
    pub fn ready(&self) -> Vec<WatchId> {
        self.ready.iter().copied().collect()
    }

    /// The revision up to which watcher `id` has been handed every matching
    /// event: what a progress notification reports.
    pub fn progress(&self, store: &MvccStore, id: WatchId) -> Result<i64, WatchError> {
        let watcher = self.watchers.get(&id).ok_or(WatchError::UnknownWatch(id))?;
        Ok(match &watcher.state {
            State::CatchingUp { next } => next.main - 1,
            State::Synced { pending, next_main, .. } => match pending.front() {
                Some(event) => event.kv.mod_revision - 1,
                None => store.revision().min((next_main - 1).max(self.published_revision)),
            },
            State::Cancelled(_) => return Err(WatchError::UnknownWatch(id)),
        })
    }

    #[cfg(test)]
    /// The watchers that asked for progress notifications, in id order.
    pub fn progress_notify_watchers(&self) -> Vec<WatchId> {
        self.watchers
            .iter()
            .filter(|(_, watcher)| watcher.request.progress_notify)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// Whether `event` goes into the poll answer `events`: while there is room,
/// and always when it completes the revision the answer ends with, so a
/// revision is never split between two polls.
fn fits(events: &[Event], event: &Event, events_max: usize) -> bool {
    events.len() < events_max
        || events.last().is_some_and(|last| last.kv.mod_revision == event.kv.mod_revision)
}

/// Reads history from `next` until `events_max` wanted events are found or
/// history ends; at its end the watcher is synced.
fn catch_up(
    request: &WatchRequest,
    store: &MvccStore,
    next: Revision,
    events_max: usize,
) -> (Vec<Event>, State) {
    let mut events = Vec::new();
    for (position, event) in store.events_since(next, &request.key, &request.range_end) {
        if !wants(request, &event) {
            continue;
        }
        if !fits(&events, &event, events_max) {
            return (events, State::CatchingUp { next: position });
        }
        events.push(shaped(request, &event));
    }
    // A start past the store's revision stays the start: a store replaced
    // by a snapshot that still ends before it must not hand out the writes
    // between the two.
    let next_main = (store.revision() + 1).max(next.main);
    (events, State::Synced { next_main, pending: VecDeque::new(), pending_bytes: 0 })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::kv::types::{DeleteRangeRequest, PutRequest};

    /// A store and a hub wired the way the state machine wires them.
    struct Group {
        store: MvccStore,
        hub: WatchHub,
    }

    impl Group {
        fn new(limits: WatchLimits) -> Group {
            Group { store: MvccStore::new(), hub: WatchHub::new(limits) }
        }

        fn put(&mut self, key: &str, value: &str) {
            let request = PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() };
            let applied = self.store.put(&request).unwrap();
            self.hub.publish(&applied.events);
        }

        fn delete(&mut self, key: &str, range_end: &str) {
            let request = DeleteRangeRequest { key: key.into(), range_end: range_end.into(), prev_kv: false };
            let applied = self.store.delete_range(&request).unwrap();
            self.hub.publish(&applied.events);
        }

        fn watch(&mut self, request: WatchRequest) -> WatchId {
            self.hub.watch(&self.store, request).unwrap()
        }

        fn poll(&mut self, id: WatchId, events_max: usize) -> WatchPoll {
            self.hub.poll(&self.store, id, events_max).unwrap()
        }

        fn events(&mut self, id: WatchId, events_max: usize) -> Vec<(i64, String)> {
            match self.poll(id, events_max) {
                WatchPoll::Events(events) => events.iter().map(describe).collect(),
                WatchPoll::Cancelled(reason) => panic!("watch cancelled: {reason}"),
            }
        }
    }

    fn describe(event: &Event) -> (i64, String) {
        let kind = match event.kind {
            EventKind::Put => "put",
            EventKind::Delete => "delete",
        };
        (event.kv.mod_revision, format!("{kind} {}", String::from_utf8_lossy(&event.kv.key)))
    }

    fn from(key: &str, range_end: &str, start_revision: i64) -> WatchRequest {
        WatchRequest {
            key: key.into(),
            range_end: range_end.into(),
            start_revision,
            ..WatchRequest::default()
        }
    }

    #[test]
    fn replay_then_live_events_arrive_once_in_order_across_small_polls() {
        let mut group = Group::new(WatchLimits::default());
        group.put("a", "1"); // 2
        group.put("b", "1"); // 3
        group.delete("a", "c"); // 4: a and b
        let id = group.watch(from("a", "c", 3));
        let mut seen = group.events(id, 1);
        group.put("a", "2"); // 5, published while the watcher catches up: read from history
        seen.extend(group.events(id, 2));
        seen.extend(group.events(id, 10));
        assert!(group.hub.ready().is_empty(), "caught up and nothing pending");
        group.put("z", "out of range"); // 6
        group.put("b", "2"); // 7
        seen.extend(group.events(id, 10));
        let expected = [(3, "put b"), (4, "delete a"), (4, "delete b"), (5, "put a"), (7, "put b")];
        assert_eq!(seen, expected.map(|(revision, what)| (revision, what.to_string())));
    }

    #[test]
    fn a_watcher_that_catches_up_past_an_unpublished_write_skips_its_publication() {
        let mut group = Group::new(WatchLimits::default());
        group.put("a", "1");
        let id = group.watch(from("a", "", 2));
        let applied = group
            .store
            .put(&PutRequest { key: b"a".to_vec(), value: b"2".to_vec(), ..PutRequest::default() })
            .unwrap();
        assert_eq!(group.events(id, 10), vec![(2, "put a".into()), (3, "put a".into())]);
        group.hub.publish(&applied.events);
        assert_eq!(group.events(id, 10), Vec::new());
    }

    #[test]
    fn filters_and_prev_kv_shape_the_events() {
        let mut group = Group::new(WatchLimits::default());
        let puts_only = group.watch(WatchRequest { no_delete: true, prev_kv: true, ..from("k", "", 0) });
        let deletes_only = group.watch(WatchRequest { no_put: true, ..from("k", "", 0) });
        group.put("k", "1");
        group.put("k", "2");
        group.delete("k", "");
        let WatchPoll::Events(puts) = group.poll(puts_only, 10) else { panic!("events") };
        assert_eq!(
            puts.iter().map(describe).collect::<Vec<_>>(),
            vec![(2, "put k".into()), (3, "put k".into())]
        );
        assert_eq!(puts[0].prev_kv, None);
        assert_eq!(puts[1].prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b"1".to_vec()));
        let WatchPoll::Events(deletes) = group.poll(deletes_only, 10) else { panic!("events") };
        assert_eq!(deletes.iter().map(describe).collect::<Vec<_>>(), vec![(4, "delete k".into())]);
        assert_eq!(deletes[0].prev_kv, None, "prev_kv was not asked for");
    }

    #[test]
    fn a_compacted_start_cancels_the_watch_with_the_compact_revision() {
        let mut group = Group::new(WatchLimits::default());
        for value in ["1", "2", "3", "4"] {
            group.put("a", value);
        }
        group.store.compact(3).unwrap();
        let id = group.watch(from("a", "", 3));
        assert_eq!(group.poll(id, 10), WatchPoll::Cancelled(CancelReason::Compacted { compact_revision: 3 }));
        assert_eq!(group.hub.poll(&group.store, id, 10), Err(WatchError::UnknownWatch(id)));
        let id = group.watch(from("a", "", 4));
        assert_eq!(group.events(id, 1), vec![(4, "put a".into())]);
        group.store.compact(5).unwrap();
        assert_eq!(group.poll(id, 1), WatchPoll::Cancelled(CancelReason::Compacted { compact_revision: 5 }));
    }

    #[test]
    fn a_slow_watcher_is_cancelled_before_its_buffer_outgrows_the_limit() {
        let mut group = Group::new(WatchLimits {
            watchers_max: 4,
            watch_events_pending_max: 3,
            ..WatchLimits::default()
        });
        let slow = group.watch(from("a", "z", 0));
        let fast = group.watch(from("a", "z", 0));
        for key in ["a", "b", "c"] {
            group.put(key, "v");
            assert_eq!(group.events(fast, 10).len(), 1);
        }
        group.put("d", "v");
        assert_eq!(group.events(fast, 10).len(), 1);
        let reason = CancelReason::TooSlow { watch_events_pending_max: 3, watch_pending_bytes_max: 1 << 20 };
        assert_eq!(group.poll(slow, 10), WatchPoll::Cancelled(reason));
        assert!(reason.to_string().contains("more than 3 events"), "{reason}");
        assert_eq!(group.hub.len(), 1);
    }

    #[test]
    fn events_are_shared_between_buffers_and_bytes_are_bounded_per_watcher_and_per_group() {
        let limits = WatchLimits {
            watchers_max: 100,
            watch_events_pending_max: 1000,
            watch_pending_bytes_max: 1000,
            group_pending_bytes_max: 2500,
        };
        let mut group = Group::new(limits);
        let many: Vec<WatchId> = (0..50).map(|_| group.watch(from("a", "z", 0))).collect();
        let value = "v".repeat(99); // 100 bytes with the key
        group.put("a", &value);
        assert_eq!(group.hub.pinned_bytes(), 100, "50 watchers hold one write's event once");
        for key in ["b", "c", "d", "e", "f", "g", "h", "i"] {
            group.put(key, &value);
        }
        assert_eq!(group.hub.pinned_bytes(), 900);
        group.put("j", &value);
        assert_eq!(group.hub.pinned_bytes(), 1000, "every watcher at its limit, nobody over");
        group.put("k", &value);
        assert_eq!(group.hub.pinned_bytes(), 0, "over their 1000 bytes, all were cancelled and hold nothing");
        for id in &many {
            assert!(matches!(group.poll(*id, 100), WatchPoll::Cancelled(CancelReason::TooSlow { .. })));
        }
        // Watchers of different keys pin different events: the group's
        // bytes bound them together, the largest holders cancelled first.
        let ids: Vec<WatchId> = ["m", "n", "o"].iter().map(|key| group.watch(from(key, "", 0))).collect();
        for _ in 0..8 {
            for key in ["m", "n", "o"] {
                group.put(key, &value);
            }
        }
        assert!(group.hub.pinned_bytes() <= 2500, "{}", group.hub.pinned_bytes());
        let cancelled = ids
            .iter()
            .filter(|id| matches!(group.poll(**id, 100), WatchPoll::Cancelled(CancelReason::TooSlow { .. })))
            .count();
        assert!(cancelled >= 1, "the group's limit cancelled a watcher");
        assert_eq!(group.hub.pinned_bytes(), 0, "what was polled or cancelled is unpinned");
    }

    #[test]
    fn a_revision_is_never_split_between_polls_nor_refused_by_an_empty_buffer() {
        let mut group = Group::new(WatchLimits {
            watchers_max: 4,
            watch_events_pending_max: 3,
            ..WatchLimits::default()
        });
        for key in ["a", "b", "c", "d", "e"] {
            group.put(key, "v"); // 2..=6
        }
        let replaying = group.watch(from("a", "z", 2));
        let live = group.watch(from("a", "z", 0));
        group.delete("a", "z"); // 7: five deletes, more than the buffer holds
        assert_eq!(group.events(live, 2).len(), 5, "one write, handed out whole");
        let first = group.events(replaying, 2);
        assert_eq!(first.iter().map(|(revision, _)| *revision).collect::<Vec<_>>(), vec![2, 3]);
        group.events(replaying, 3);
        let deletes = group.events(replaying, 1);
        assert_eq!((deletes.len(), deletes[0].0), (5, 7));
    }

    #[test]
    fn after_a_snapshot_is_installed_watchers_read_the_jump_from_history() {
        let mut group = Group::new(WatchLimits::default());
        group.put("a", "1"); // 2
        let taken = group.watch(from("a", "z", 0));
        let pending = group.watch(from("a", "z", 0));
        group.put("b", "1"); // 3, pending for both
        assert_eq!(group.events(taken, 10), vec![(3, "put b".into())]);
        // The leader went on to revision 6 and compacted at 3; this replica
        // installs its snapshot instead of applying 4 to 6.
        let mut leader = group.store.clone();
        for key in ["c", "d", "e"] {
            leader
                .put(&PutRequest { key: key.into(), value: b"v".to_vec(), ..PutRequest::default() })
                .unwrap();
        }
        leader.compact(3).unwrap();
        group.store = crate::kv::snapshot::decode(&crate::kv::snapshot::encode(&leader)).unwrap();
        group.hub.store_replaced();
        let revisions =
            |events: Vec<(i64, String)>| events.into_iter().map(|(revision, _)| revision).collect::<Vec<_>>();
        assert_eq!(revisions(group.events(taken, 10)), vec![4, 5, 6]);
        let reason = CancelReason::Compacted { compact_revision: 3 };
        assert_eq!(group.poll(pending, 10), WatchPoll::Cancelled(reason), "its event at 3 is compacted away");
        group.put("f", "v"); // 7
        assert_eq!(revisions(group.events(taken, 10)), vec![7]);
    }

    #[test]
    fn a_future_start_skips_earlier_writes() {
        let mut group = Group::new(WatchLimits::default());
        let id = group.watch(from("a", "", 4));
        group.put("a", "1"); // 2
        group.put("a", "2"); // 3
        group.put("a", "3"); // 4
        assert_eq!(group.events(id, 10), vec![(4, "put a".into())]);
    }

    #[test]
    fn a_future_start_holds_when_the_store_is_replaced_before_it() {
        let mut group = Group::new(WatchLimits::default());
        group.put("a", "1"); // 2
        let id = group.watch(from("a", "", 5));
        // A snapshot installed that still ends before the start.
        group.hub.store_replaced();
        assert_eq!(group.events(id, 10), Vec::<(i64, String)>::new());
        group.put("a", "2"); // 3
        group.put("a", "3"); // 4
        group.put("a", "4"); // 5
        assert_eq!(group.events(id, 10), vec![(5, "put a".into())], "nothing before the start revision");
    }

    #[test]
    fn progress_reports_the_revision_everything_before_has_been_handed_out() {
        let mut group = Group::new(WatchLimits::default());
        group.put("a", "1"); // 2
        group.put("b", "1"); // 3
        let id = group.watch(WatchRequest { progress_notify: true, ..from("a", "", 2) });
        let quiet = group.watch(from("b", "", 0));
        assert_eq!(group.hub.progress_notify_watchers(), vec![id]);
        assert_eq!(group.hub.progress(&group.store, id), Ok(1), "catching up, nothing handed out");
        group.events(id, 10);
        assert_eq!(group.hub.progress(&group.store, id), Ok(3));
        group.put("a", "2"); // 4
        assert_eq!(group.hub.progress(&group.store, id), Ok(3), "an event of 4 is pending");
        group.events(id, 10);
        group.put("z", "1"); // 5
        assert_eq!(group.hub.progress(&group.store, id), Ok(5));
        assert_eq!(group.hub.progress(&group.store, quiet), Ok(5));
        group.hub.cancel(id).unwrap();
        assert_eq!(group.hub.progress(&group.store, id), Err(WatchError::UnknownWatch(id)));
    }

    #[test]
    fn the_ready_hook_fires_once_per_watcher_until_it_is_drained() {
        let mut group = Group::new(WatchLimits {
            watchers_max: 2,
            watch_events_pending_max: 8,
            ..WatchLimits::default()
        });
        let woken = Rc::new(RefCell::new(Vec::new()));
        let log = Rc::clone(&woken);
        group.hub.set_ready_hook(Box::new(move |id| log.borrow_mut().push(id)));
        let id = group.watch(from("a", "", 0));
        group.put("a", "1");
        group.put("a", "2");
        assert_eq!(*woken.borrow(), vec![id]);
        assert_eq!(group.hub.ready(), vec![id]);
        group.events(id, 10);
        assert!(group.hub.ready().is_empty());
        group.put("a", "3");
        assert_eq!(*woken.borrow(), vec![id, id]);
        group.watch(from("b", "", 0));
        let error = group.hub.watch(&group.store, from("c", "", 0)).unwrap_err();
        assert_eq!(error, WatchError::TooManyWatchers { watchers_max: 2 });
    }
}
