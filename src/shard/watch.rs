//! The shard side of watches: a watch is registered in the hub of a group on
//! the shard that owns the group, and a pump task there drains it whenever
//! the hub's ready hook fires, sending batches of plain data over a bounded
//! channel to the feed the RPC layer reads (maybe on another shard, where
//! the client's connection lives). A range that spans groups has one hub
//! watch and one pump per group, all sending to one feed; order holds within
//! a group, never across groups (revisions are per group).
//!
//! Flow control: a pump takes events from the hub only once the channel has
//! room for them, so the events of a slow client wait in the hub. The hub
//! keeps at most `watch_events_pending_max` of them live and then cancels
//! the watcher as too slow; the pump opens it again at once from the
//! revision after the last event it sent, and the new watcher reads the
//! group's history instead of buffering. So a slow watcher never blocks an
//! apply, never grows memory without bound, and loses nothing, unless the
//! history it needs is compacted meanwhile: then it is cancelled as
//! compacted (etcd's rule). Dropping the feed cancels every hub watch behind
//! it.
//!
//! This module must never hold a borrow of a group's state across an await,
//! and its ready hook only wakes pumps (the hub calls it while borrowed).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::groups::ShardGroup;
use crate::kv::group::GroupState;
use crate::kv::types::Event;
use crate::kv::watch::{CancelReason, WatchError, WatchId, WatchPoll, WatchRequest};
use crate::raft::{GroupId, NodeId};

/// How the watches of a node run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// How long a watch that asked for progress notifications may go
    /// without a batch before it is sent one.
    pub progress_interval: Duration,
    /// Events and bytes (keys and values) one batch carries at most; a
    /// revision is never split, so one larger revision goes alone.
    pub batch_events_max: usize,
    pub batch_bytes_max: usize,
    /// Batches queued between a watch's pumps and its feed.
    pub batches_in_flight: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            progress_interval: Duration::from_secs(600),
            batch_events_max: 512,
            batch_bytes_max: 1 << 20,
            batches_in_flight: 16,
        }
    }
}

/// One message of a watch, as its group sent it. Plain data: crosses shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub group: GroupId,
    /// For events, the group's store revision when they were taken; for
    /// progress, the revision up to which every event has been sent.
    pub revision: i64,
    pub term: u64,
    pub member: NodeId,
    pub body: WatchBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchBody {
    /// The next events of the group, in revision order.
    Events(Vec<Event>),
    Progress,
    /// The group ended the watch; nothing follows from it.
    Cancelled(CancelReason),
}

/// The receiving end of a watch. Dropping it cancels the watch in every
/// group.
pub struct WatchFeed {
    receiver: mpsc::Receiver<WatchBatch>,
    progress: Arc<ProgressRequests>,
    /// The revision the watch started after, in the group with the latest:
    /// the revision of the store it saw when it was made (etcd's header
    /// revision of a created watch).
    pub started_after: i64,
}

impl WatchFeed {
    /// The next batch of any group; `None` once every group's pump is gone
    /// without cancelling (its shard stopped).
    pub async fn next(&mut self) -> Option<WatchBatch> {
        self.receiver.recv().await
    }

    /// Asks every group of the watch for a progress batch: each sends one,
    /// after every event up to the revision it reports (etcd's
    /// RequestProgress), whether or not the watch asked for notifications.
    pub fn request_progress(&self) {
        self.progress.request();
    }

    /// What asks for progress while another task waits on the feed.
    pub fn progress_requests(&self) -> ProgressHandle {
        ProgressHandle(Arc::clone(&self.progress))
    }
}

/// Asks a watch's groups for progress (see [`WatchFeed::request_progress`]).
#[derive(Clone)]
pub struct ProgressHandle(Arc<ProgressRequests>);

impl ProgressHandle {
    pub fn request(&self) {
        self.0.request();
    }
}

/// Progress asked of a watch's pumps, which may run on other shards: a
/// generation each pump compares with the last one it answered.
#[derive(Default)]
struct ProgressRequests {
    generation: AtomicU64,
    notify: Notify,
}

impl ProgressRequests {
    fn request(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

/// What the pumps of one watch share with its feed.
#[derive(Clone)]
pub struct FeedSender {
    sender: mpsc::Sender<WatchBatch>,
    progress: Arc<ProgressRequests>,
}

/// A new feed, and the sender each group's pump gets a clone of.
pub fn feed(options: &WatchOptions) -> (FeedSender, WatchFeed) {
    let (sender, receiver) = mpsc::channel(options.batches_in_flight.max(1));
    let progress = Arc::new(ProgressRequests::default());
    (FeedSender { sender, progress: progress.clone() }, WatchFeed { receiver, progress, started_after: 0 })
}

/// A group as a watch sees it: its store and hub, and what batch headers say.
pub trait WatchedGroup: 'static {
    fn group(&self) -> GroupId;
    fn with_state<R>(&self, work: impl FnOnce(&mut GroupState) -> R) -> R;
    /// The group's Raft term and this member, for batch headers.
    fn term_and_member(&self) -> (u64, NodeId);
}

impl WatchedGroup for ShardGroup {
    fn group(&self) -> GroupId {
        self.raft.group()
    }

    fn with_state<R>(&self, work: impl FnOnce(&mut GroupState) -> R) -> R {
        work(&mut self.machine.borrow_mut().state)
    }

    fn term_and_member(&self) -> (u64, NodeId) {
        let metrics = self.raft.metrics();
        (metrics.term, metrics.member)
    }
}

/// The pumps of one group's hub, by the hub watch each drains.
type Wakers = RefCell<BTreeMap<WatchId, Rc<Notify>>>;

/// The wakers of every group of a shard that a watch opened in.
pub(super) type GroupWakers = BTreeMap<GroupId, Rc<Wakers>>;

thread_local! {
    /// Per group of this shard, once a watch opened there: the hub's ready
    /// hook wakes the pump through it.
    static WAKERS: RefCell<GroupWakers> = const { RefCell::new(BTreeMap::new()) };
}

/// Exchanges this thread's wakers with `wakers` (see `super::ThreadShard`).
#[cfg(any(test, feature = "testing"))]
pub(super) fn swap_wakers(wakers: &mut GroupWakers) {
    WAKERS.with(|all| std::mem::swap(&mut *all.borrow_mut(), wakers));
}

/// The wakers of `group`, installing the hub's ready hook the first time.
fn wakers_of(group: &impl WatchedGroup) -> Rc<Wakers> {
    let id = group.group();
    if let Some(wakers) = WAKERS.with(|all| all.borrow().get(&id).cloned()) {
        return wakers;
    }
    let wakers: Rc<Wakers> = Rc::default();
    let hooked = Rc::clone(&wakers);
    group.with_state(|state| {
        state.hub.set_ready_hook(Box::new(move |watch| {
            // A hub watch the pump has not registered yet is polled by the
            // pump before it first waits, so it needs no wake.
            if let Some(notify) = hooked.borrow().get(&watch) {
                notify.notify_one();
            }
        }))
    });
    WAKERS.with(|all| all.borrow_mut().insert(id, Rc::clone(&wakers)));
    wakers
}

/// Opens `request` in `group`'s hub (on this, its owning shard) and starts
/// the pump that sends its batches to `sender`. A start revision of 0 means
/// the group's next write, fixed here, before the caller is answered.
/// Returns the group's revision when the watch was opened.
pub fn open_here<G: WatchedGroup>(
    group: Rc<G>,
    mut request: WatchRequest,
    options: WatchOptions,
    sender: FeedSender,
) -> Result<i64, WatchError> {
    let wakers = wakers_of(&*group);
    let (id, revision) = group.with_state(|state| {
        let revision = state.store.revision();
        if request.start_revision == 0 {
            // The next revision the group's hybrid clock can make.
            request.start_revision = revision + 1;
        }
        state.hub.watch(&state.store, request.clone()).map(|id| (id, revision))
    })?;
    let notify = Rc::new(Notify::new());
    wakers.borrow_mut().insert(id, Rc::clone(&notify));
    let answered = sender.progress.generation.load(Ordering::Acquire);
    let FeedSender { sender, progress } = sender;
    let pump = Pump { group, wakers, id, request, options, sender, notify, progress, answered };
    tokio::task::spawn_local(pump.run());
    Ok(revision)
}

/// Drains one hub watch into the feed.
struct Pump<G: WatchedGroup> {
    group: Rc<G>,
    wakers: Rc<Wakers>,
    id: WatchId,
    /// The request as the hub has it; `start_revision` advances past every
    /// event sent, so reopening from it repeats and misses nothing.
    request: WatchRequest,
    options: WatchOptions,
    sender: mpsc::Sender<WatchBatch>,
    notify: Rc<Notify>,
    /// Progress the feed asks for, and the last generation answered.
    progress: Arc<ProgressRequests>,
    answered: u64,
}

impl<G: WatchedGroup> Pump<G> {
    fn batch(&self, revision: i64, body: WatchBody) -> WatchBatch {
        let (term, member) = self.group.term_and_member();
        WatchBatch { group: self.group.group(), revision, term, member, body }
    }

    async fn run(mut self) {
        let mut last_sent = Instant::now();
        loop {
            // Flow control: take nothing from the hub until the feed has room.
            let Ok(permit) = self.sender.reserve().await else { break };
            let (id, events_max, bytes_max) =
                (self.id, self.options.batch_events_max, self.options.batch_bytes_max);
            let taken = self.group.with_state(|state| take(state, id, events_max, bytes_max));
            let (events, cancelled) = match taken {
                Ok(taken) => taken,
                Err(error) => {
                    tracing::warn!(group = self.group.group(), %error, "a watch pump lost its hub watch");
                    break;
                }
            };
            let took_events = !events.is_empty();
            if let Some(last) = events.last() {
                self.request.start_revision = last.kv.mod_revision + 1;
                let revision = self.group.with_state(|state| state.store.revision());
                permit.send(self.batch(revision, WatchBody::Events(events)));
                last_sent = Instant::now();
            } else {
                drop(permit);
            }
            match cancelled {
                Some(CancelReason::TooSlow { watch_events_pending_max })
                    if self.reopen(watch_events_pending_max) =>
                {
                    continue
                }
                Some(reason) => {
                    // The hub already forgot this watch.
                    self.wakers.borrow_mut().remove(&self.id);
                    let _ = self.sender.send(self.batch(0, WatchBody::Cancelled(reason))).await;
                    return;
                }
                None if took_events => continue,
                None => {}
            }
            let progress_due = last_sent + self.options.progress_interval;
            // Enabled before the generation is read, so a request made
            // between the two still wakes this wait.
            let progress = Arc::clone(&self.progress);
            let requested = progress.notify.notified();
            tokio::pin!(requested);
            requested.as_mut().enable();
            if self.answer_progress_request().await {
                continue;
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = self.sender.closed() => break,
                _ = &mut requested => {}
                _ = tokio::time::sleep_until(progress_due), if self.request.progress_notify => {
                    self.send_progress();
                    last_sent = Instant::now();
                }
            }
        }
        // The feed is gone: nobody reads this watch any more.
        let id = self.id;
        tracing::debug!(group = self.group.group(), ?id, "a watch ended; its hub watch is cancelled");
        self.wakers.borrow_mut().remove(&id);
        self.group.with_state(|state| {
            let _ = state.hub.cancel(id);
        });
    }

    /// Answers a progress request of the feed not answered yet, waiting
    /// for room (it must not be lost: the client waits for it); true if
    /// there was one.
    async fn answer_progress_request(&mut self) -> bool {
        let generation = self.progress.generation.load(Ordering::Acquire);
        if generation == self.answered {
            return false;
        }
        self.answered = generation;
        let id = self.id;
        // No await between reading the progress and queueing it behind the
        // events sent before: the revision covers exactly those.
        let Ok(permit) = self.sender.reserve().await else { return true };
        if let Ok(revision) = self.group.with_state(|state| state.hub.progress(&state.store, id)) {
            permit.send(self.batch(revision, WatchBody::Progress));
        }
        true
    }

    /// Tells the feed how far this group's events have all been sent, if it
    /// has room; a full feed has batches on their way anyway.
    fn send_progress(&self) {
        let id = self.id;
        if let Ok(revision) = self.group.with_state(|state| state.hub.progress(&state.store, id)) {
            let _ = self.sender.try_send(self.batch(revision, WatchBody::Progress));
        }
    }

    /// Opens the watch again from the revision after the last event sent,
    /// after the hub cancelled it as too slow; false if the hub refuses.
    fn reopen(&mut self, watch_events_pending_max: usize) -> bool {
        self.wakers.borrow_mut().remove(&self.id);
        let request = self.request.clone();
        match self.group.with_state(|state| state.hub.watch(&state.store, request)) {
            Ok(id) => {
                // Worth a line: a client that keeps falling behind costs
                // history reads on the group's shard.
                tracing::info!(
                    "a watch of group {} fell more than {watch_events_pending_max} events behind its client; \
                     it reads the group's history from revision {} now",
                    self.group.group(),
                    self.request.start_revision
                );
                self.id = id;
                self.wakers.borrow_mut().insert(id, Rc::clone(&self.notify));
                true
            }
            Err(error) => {
                tracing::warn!(group = self.group.group(), %error, "a watch that fell behind cannot reopen");
                false
            }
        }
    }
}

/// Bytes an event stands for in a batch: its keys and values.
fn event_bytes(event: &Event) -> usize {
    let prev = event.prev_kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len());
    event.kv.key.len() + event.kv.value.len() + prev
}

/// Takes the next events of hub watch `id`, whole revisions, until
/// `events_max` events or `bytes_max` bytes are taken, and the reason if the
/// hub ended the watch.
fn take(
    state: &mut GroupState,
    id: WatchId,
    events_max: usize,
    bytes_max: usize,
) -> Result<(Vec<Event>, Option<CancelReason>), WatchError> {
    let mut events = Vec::new();
    let mut bytes = 0;
    while events.len() < events_max && bytes < bytes_max {
        // One revision at a time, so the byte budget is checked between revisions.
        match state.hub.poll(&state.store, id, 1)? {
            WatchPoll::Events(revision) if revision.is_empty() => break,
            WatchPoll::Events(revision) => {
                bytes += revision.iter().map(event_bytes).sum::<usize>();
                events.extend(revision);
            }
            WatchPoll::Cancelled(reason) => return Ok((events, Some(reason))),
        }
    }
    Ok((events, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::{encode_command, Command};
    use crate::kv::types::{EventKind, PutRequest};
    use crate::kv::watch::WatchLimits;

    /// A group without Raft: commands applied straight to its state.
    struct TestGroup {
        state: RefCell<GroupState>,
    }

    impl WatchedGroup for TestGroup {
        fn group(&self) -> GroupId {
            7
        }

        fn with_state<R>(&self, work: impl FnOnce(&mut GroupState) -> R) -> R {
            work(&mut self.state.borrow_mut())
        }

        fn term_and_member(&self) -> (u64, NodeId) {
            (1, 1)
        }
    }

    impl TestGroup {
        fn new(watch_events_pending_max: usize) -> Rc<TestGroup> {
            let limits = WatchLimits { watch_events_pending_max, ..WatchLimits::default() };
            Rc::new(TestGroup { state: RefCell::new(GroupState::new(limits)) })
        }

        fn put(&self, key: &str, value: &str) {
            let command =
                Command::Put(PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() });
            self.state.borrow_mut().apply_command(&encode_command(&command)).expect("applies");
        }

        fn watches(&self) -> usize {
            self.state.borrow().hub.len()
        }
    }

    fn prefix(key: &str) -> WatchRequest {
        WatchRequest {
            key: key.into(),
            range_end: crate::kv::types::prefix_range_end(key.as_bytes()),
            ..WatchRequest::default()
        }
    }

    /// Reads batches until `count` events came, and returns their revisions.
    async fn revisions(feed: &mut WatchFeed, count: usize) -> Vec<i64> {
        let mut seen = Vec::new();
        while seen.len() < count {
            match feed.next().await.expect("the feed stays open").body {
                WatchBody::Events(events) => {
                    assert!(events.iter().all(|event| event.kind == EventKind::Put));
                    seen.extend(events.iter().map(|event| event.kv.mod_revision));
                }
                other => panic!("expected events, got {other:?}"),
            }
        }
        seen
    }

    fn run(test: impl std::future::Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build();
        tokio::task::LocalSet::new().block_on(&runtime.expect("runtime"), test);
    }

    #[test]
    fn events_reach_the_feed_in_order_and_dropping_it_cancels_the_hub_watch() {
        run(async {
            let group = TestGroup::new(1024);
            group.put("/a/0", "before");
            let options = WatchOptions::default();
            let (sender, mut feed) = feed(&options);
            open_here(group.clone(), prefix("/a/"), options, sender).unwrap();
            for value in ["1", "2", "3"] {
                group.put("/a/k", value);
                group.put("/b/k", value);
            }
            assert_eq!(revisions(&mut feed, 3).await, vec![3, 5, 7], "only /a/, from the next write");
            assert_eq!(group.watches(), 1);
            drop(feed);
            tokio::task::yield_now().await;
            assert_eq!(group.watches(), 0, "the pump cancelled its hub watch");
        });
    }

    #[test]
    fn a_feed_nobody_reads_for_a_while_loses_nothing_and_keeps_the_hub_small() {
        run(async {
            let group = TestGroup::new(4);
            let options =
                WatchOptions { batch_events_max: 3, batches_in_flight: 1, ..WatchOptions::default() };
            let (sender, mut feed) = feed(&options);
            open_here(group.clone(), prefix("/a/"), options, sender).unwrap();
            tokio::task::yield_now().await;
            // 200 writes while the pump may run between them but the feed
            // holds one batch: the hub cancels the live watcher as too slow
            // and the pump goes on from history.
            for index in 0..200 {
                group.put(&format!("/a/{index}"), "v");
                if index % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            assert_eq!(revisions(&mut feed, 200).await, (2..202).collect::<Vec<_>>());
            assert_eq!(group.watches(), 1, "one hub watch, reopened in place");
            group.put("/a/late", "v");
            assert_eq!(revisions(&mut feed, 1).await, vec![202], "live again once caught up");
        });
    }

    #[test]
    fn a_compacted_start_revision_cancels_with_the_compact_revision() {
        run(async {
            let group = TestGroup::new(1024);
            for value in ["1", "2", "3", "4"] {
                group.put("/a/k", value);
            }
            group.state.borrow_mut().store.compact(4).unwrap();
            let options = WatchOptions::default();
            let (sender, mut feed) = feed(&options);
            let request = WatchRequest { start_revision: 3, ..prefix("/a/") };
            open_here(group.clone(), request, options, sender).unwrap();
            let batch = feed.next().await.expect("a cancellation");
            assert_eq!(batch.body, WatchBody::Cancelled(CancelReason::Compacted { compact_revision: 4 }));
            assert_eq!(group.watches(), 0);
        });
    }

    #[test]
    fn a_quiet_watch_that_asked_for_progress_hears_its_revision() {
        run(async {
            let group = TestGroup::new(1024);
            let options =
                WatchOptions { progress_interval: Duration::from_secs(10), ..WatchOptions::default() };
            let (sender, mut feed) = feed(&options);
            let request = WatchRequest { progress_notify: true, ..prefix("/a/") };
            open_here(group.clone(), request, options, sender).unwrap();
            group.put("/a/k", "1"); // 2
            assert_eq!(revisions(&mut feed, 1).await, vec![2]);
            group.put("/b/k", "1"); // 3, not watched
            let started = Instant::now();
            let batch = feed.next().await.expect("a progress notification");
            assert_eq!((batch.group, batch.revision, batch.body), (7, 3, WatchBody::Progress));
            assert!(started.elapsed() >= Duration::from_secs(9), "not before the interval");
            let quiet = WatchRequest { start_revision: 0, ..prefix("/c/") };
            let (sender, mut silent) = super::feed(&options);
            open_here(group.clone(), quiet, options, sender).unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert!(silent.receiver.try_recv().is_err(), "no progress for a watch that did not ask");
        });
    }

    #[test]
    fn a_requested_progress_comes_after_every_event_it_covers_even_without_progress_notify() {
        run(async {
            let group = TestGroup::new(1024);
            let options =
                WatchOptions { batches_in_flight: 1, batch_events_max: 1, ..WatchOptions::default() };
            let (sender, mut feed) = feed(&options);
            open_here(group.clone(), prefix("/a/"), options, sender).unwrap();
            for value in ["1", "2", "3"] {
                group.put("/a/k", value); // 2, 3, 4: one event per batch, one batch in flight
            }
            feed.request_progress();
            let mut seen = Vec::new();
            loop {
                let batch = feed.next().await.expect("the feed stays open");
                match batch.body {
                    WatchBody::Events(events) => {
                        seen.extend(events.iter().map(|event| event.kv.mod_revision))
                    }
                    WatchBody::Progress => {
                        assert_eq!(seen, [2, 3, 4], "every event up to the progress came before it");
                        assert_eq!(batch.revision, 4);
                        break;
                    }
                    WatchBody::Cancelled(reason) => panic!("cancelled: {reason:?}"),
                }
            }
            feed.progress_requests().request();
            let batch = feed.next().await.expect("a second answer");
            assert_eq!((batch.revision, batch.body), (4, WatchBody::Progress), "asked again, answered again");
        });
    }
}
