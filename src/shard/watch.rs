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
//! Bytes: what leaves a hub on its way to a client is counted against the
//! byte budget of the watch's connection ([`WatchBudget`], shared by every
//! watch of one client connection): a pump takes events only once the
//! budget lends it room for them, and the batch carries the room until the
//! front end has the client's acknowledgement, so a client that does not
//! read holds at most its budget between the hubs and its socket, however
//! many watches it has. The hubs bound what waits inside them
//! (`kv::watch::WatchLimits`).
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

use crate::kv::group::GroupState;
use crate::kv::types::Event;
use crate::kv::watch::{event_bytes, CancelReason, WatchError, WatchId, WatchPoll, WatchRequest};
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
    /// Bytes (keys and values) the events of one connection's watches may
    /// take between the hubs and the client ([`WatchBudget`]).
    pub connection_bytes_max: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            progress_interval: Duration::from_secs(600),
            batch_events_max: 512,
            batch_bytes_max: 1 << 20,
            batches_in_flight: 16,
            connection_bytes_max: 8 << 20,
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
    /// The room this batch's events take in its connection's budget, given
    /// back when the front end drops it (once the client took the batch).
    pub held: Held,
}

/// The byte budget of one client connection's watches: what their events
/// may take between the groups' hubs and the client, in bytes (keys and
/// values). Cheap to clone; shared by the connection's watches on every
/// shard.
#[derive(Clone, Debug)]
pub struct WatchBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    total: usize,
}

impl WatchBudget {
    /// The budget of a new connection, as `options` size it.
    pub fn for_connection(options: &WatchOptions) -> WatchBudget {
        WatchBudget::new(options.connection_bytes_max)
    }

    pub fn new(bytes_max: usize) -> WatchBudget {
        let total = bytes_max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        WatchBudget { bytes: Arc::new(tokio::sync::Semaphore::new(total)), total }
    }

    /// Bytes lent out now (batches not yet acknowledged by the client).
    pub fn lent(&self) -> usize {
        self.total - self.bytes.available_permits()
    }

    /// Waits for room for `bytes` (at most the whole budget).
    async fn lend(&self, bytes: usize) -> Held {
        let wanted = u32::try_from(bytes.clamp(1, self.total)).unwrap_or(u32::MAX);
        Held(Arc::clone(&self.bytes).acquire_many_owned(wanted).await.ok())
    }
}

/// Room lent by a [`WatchBudget`], given back on drop. A batch compares
/// equal whatever room it holds, and a clone holds none.
#[derive(Debug, Default)]
pub struct Held(Option<tokio::sync::OwnedSemaphorePermit>);

impl Held {
    /// The room held, in bytes.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |permit| permit.num_permits())
    }

    fn keep(&mut self, bytes: usize) {
        if let Some(permit) = &mut self.0 {
            let keep = bytes.clamp(1, permit.num_permits());
            // Gives back what the batch does not use.
            drop(permit.split(permit.num_permits() - keep));
        }
    }
}

impl Clone for Held {
    fn clone(&self) -> Held {
        Held(None)
    }
}

impl PartialEq for Held {
    fn eq(&self, _: &Held) -> bool {
        true
    }
}

impl Eq for Held {}

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
    budget: WatchBudget,
}

/// A new feed whose events count against `budget`, and the sender each
/// group's pump gets a clone of.
pub fn feed(options: &WatchOptions, budget: WatchBudget) -> (FeedSender, WatchFeed) {
    let (sender, receiver) = mpsc::channel(options.batches_in_flight.max(1));
    let progress = Arc::new(ProgressRequests::default());
    (
        FeedSender { sender, progress: progress.clone(), budget },
        WatchFeed { receiver, progress, started_after: 0 },
    )
}

/// A group as a watch sees it: its store and hub, what batch headers say,
/// and where its pumps' wakers are kept. The shard's group implements it
/// (`super::group`), as a test's group without Raft does.
pub trait WatchedGroup: 'static {
    fn group(&self) -> GroupId;
    fn with_state<R>(&self, work: impl FnOnce(&mut GroupState) -> R) -> R;
    /// The group's Raft term and this member, for batch headers.
    fn term_and_member(&self) -> (u64, NodeId);
    /// The wakers of the pumps of the group's hub.
    fn hub_wakers(&self) -> &HubWakers;
}

/// The pumps of one group's hub, by the hub watch each drains.
type Wakers = RefCell<BTreeMap<WatchId, Rc<Notify>>>;

/// The wakers of one group's pumps, kept with the group; empty until the
/// first watch opens in it and installs the hub's ready hook.
#[derive(Default)]
pub struct HubWakers {
    wakers: RefCell<Option<Rc<Wakers>>>,
}

/// The wakers of `group`, installing the hub's ready hook the first time.
fn wakers_of(group: &impl WatchedGroup) -> Rc<Wakers> {
    if let Some(wakers) = group.hub_wakers().wakers.borrow().clone() {
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
    *group.hub_wakers().wakers.borrow_mut() = Some(Rc::clone(&wakers));
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
    let FeedSender { sender, progress, budget } = sender;
    let pump = Pump { group, wakers, id, request, options, sender, notify, progress, answered, budget };
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
    /// The byte budget of the watch's connection.
    budget: WatchBudget,
}

impl<G: WatchedGroup> Pump<G> {
    fn batch(&self, revision: i64, body: WatchBody) -> WatchBatch {
        let (term, member) = self.group.term_and_member();
        WatchBatch { group: self.group.group(), revision, term, member, body, held: Held::default() }
    }

    async fn run(mut self) {
        let mut last_sent = Instant::now();
        loop {
            // Flow control: take nothing from the hub until the feed has
            // room, and the connection's budget room for the bytes.
            let Ok(permit) = self.sender.reserve().await else { break };
            let mut held = if self.group.with_state(|state| state.hub.is_ready(self.id)) {
                self.budget.lend(self.options.batch_bytes_max).await
            } else {
                Held::default()
            };
            let lent = held.bytes();
            let (id, events_max) = (self.id, self.options.batch_events_max);
            let taken = self.group.with_state(|state| take(state, id, events_max, lent.max(1)));
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
                let bytes: usize = events.iter().map(event_bytes).sum();
                held.keep(bytes);
                let mut batch = self.batch(revision, WatchBody::Events(events));
                batch.held = held;
                permit.send(batch);
                last_sent = Instant::now();
            } else {
                drop(held);
                drop(permit);
            }
            match cancelled {
                Some(reason @ CancelReason::TooSlow { .. }) if self.reopen(&reason) => continue,
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
    fn reopen(&mut self, reason: &CancelReason) -> bool {
        self.wakers.borrow_mut().remove(&self.id);
        let request = self.request.clone();
        match self.group.with_state(|state| state.hub.watch(&state.store, request)) {
            Ok(id) => {
                // Worth a line: a client that keeps falling behind costs
                // history reads on the group's shard.
                tracing::info!(
                    "a watch of group {} fell behind its client ({reason}; store.watch_events_pending_max, \
                     store.watch_pending_bytes_max, store.watch_group_pending_bytes_max); it reads the group's \
                     history from revision {} now",
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
        wakers: HubWakers,
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

        fn hub_wakers(&self) -> &HubWakers {
            &self.wakers
        }
    }

    impl TestGroup {
        fn new(watch_events_pending_max: usize) -> Rc<TestGroup> {
            let limits = WatchLimits { watch_events_pending_max, ..WatchLimits::default() };
            Rc::new(TestGroup { state: RefCell::new(GroupState::new(limits)), wakers: HubWakers::default() })
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
            let (sender, mut feed) = feed(&options, WatchBudget::for_connection(&options));
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
            let (sender, mut feed) = feed(&options, WatchBudget::for_connection(&options));
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
    fn the_watches_of_a_connection_hold_at_most_its_byte_budget_until_its_client_reads() {
        run(async {
            let group = TestGroup::new(1024);
            let options = WatchOptions { batch_events_max: 1, ..WatchOptions::default() };
            let budget = WatchBudget::new(100);
            let (sender, mut first) = feed(&options, budget.clone());
            open_here(group.clone(), prefix("/a/"), options, sender).unwrap();
            let (sender, mut second) = feed(&options, budget.clone());
            open_here(group.clone(), prefix("/a/"), options, sender).unwrap();
            let value = "v".repeat(36); // 40 bytes with its key
            for index in 0..10 {
                group.put(&format!("/a/{index}"), &value);
                tokio::task::yield_now().await;
            }
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            // 800 bytes of events wanted; what both feeds hold now (taken
            // without letting the pumps run) fits the budget.
            use futures::FutureExt;
            let events = |batch: WatchBatch| match batch.body {
                WatchBody::Events(events) => events,
                other => panic!("expected events, got {other:?}"),
            };
            let mut queued = [Vec::new(), Vec::new()];
            for (feed, queued) in [&mut first, &mut second].into_iter().zip(&mut queued) {
                while let Some(Some(batch)) = feed.next().now_or_never() {
                    queued.push(batch);
                }
            }
            let bytes: usize = queued.iter().flatten().map(|batch| batch.held.bytes()).sum();
            assert!((40..=100).contains(&bytes), "{bytes} bytes lent to batches under a budget of 100");
            let [early_first, early_second] =
                queued.map(|batches| batches.into_iter().flat_map(events).count());
            let (got_first, got_second) = tokio::join!(
                revisions(&mut first, 10 - early_first),
                revisions(&mut second, 10 - early_second)
            );
            assert_eq!(got_first.last(), Some(&11), "nothing lost once read");
            assert_eq!(got_second.last(), Some(&11), "nothing lost once read");
            tokio::task::yield_now().await;
            assert_eq!(budget.lent(), 0, "read batches give their room back");
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
            let (sender, mut feed) = feed(&options, WatchBudget::for_connection(&options));
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
            let (sender, mut feed) = feed(&options, WatchBudget::for_connection(&options));
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
            let (sender, mut silent) = super::feed(&options, WatchBudget::for_connection(&options));
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
            let (sender, mut feed) = feed(&options, WatchBudget::for_connection(&options));
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
