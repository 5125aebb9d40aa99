//! The clients of a simulated cluster: puts, deletes, compare-and-swaps
//! (single-key transactions), multi-key transactions, reads of one key and
//! of prefixes, leases with keys attached, and watches, sent to any member
//! through the simulated network, with what came back recorded.
//!
//! Every operation on a checked key is recorded for the linearizability
//! checker with its invocation and return on the simulated clock; one
//! whose answer was lost, or whose error leaves open whether it took
//! effect, is recorded as unknown. An error that proves the request never
//! took effect (it was refused before it reached Raft) leaves no record.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use nvkv::kv::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use nvkv::lincheck::{Operation, Outcome, Record, Returned};
use nvkv::raft::{GroupError, NodeId};
use nvkv::shard::answer::RequestError;
use nvkv::shard::requests::Requests;
use nvkv::shard::watch::{WatchBody, WatchOptions};
use tokio::time::Instant;

use crate::entropy::Rng;
use crate::world::World;

/// What the clients do, as the seed chose.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadShape {
    pub clients: usize,
    pub watchers: usize,
    /// Checked keys, one per top-level prefix (so each lives in one group).
    pub keys: usize,
    /// Values are this long at most; some seeds write large ones to press
    /// the log ring.
    pub value_bytes_max: usize,
    /// The share of writes whose value is long (up to `value_bytes_max`);
    /// the others carry only their name.
    pub long_value_chance: f64,
    /// Pause between two operations of a client, in milliseconds.
    pub think_ms: (u64, u64),
    pub lease_chance: f64,
}

/// An acknowledged write of a checked key, with the revision it answered.
#[derive(Clone, Debug)]
pub struct Acked {
    pub key: Vec<u8>,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
    pub revision: i64,
    pub client: u32,
}

/// One event a watcher received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub revision: i64,
    pub key: Vec<u8>,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// What one watcher of one prefix saw, in order, and how far it saw.
#[derive(Debug, Default)]
pub struct WatchLog {
    pub prefix: Vec<u8>,
    /// The revision its first watch started after.
    pub started_after: Option<i64>,
    pub events: Vec<Seen>,
    /// Every revision up to this one has been delivered (events or
    /// progress), in the watcher's own order.
    pub seen_up_to: i64,
    /// Windows the group cancelled explicitly (compacted): (from, to).
    pub excused: Vec<(i64, i64)>,
    pub reopened: u64,
    /// Each session: the member, the revision it asked to start from, and
    /// the events it delivered, for a person reading a failure.
    pub sessions: Vec<(NodeId, i64, usize)>,
}

/// Everything the clients recorded.
#[derive(Default)]
pub struct History {
    pub records: Vec<Record>,
    pub acked: Vec<Acked>,
    pub watches: Vec<Rc<RefCell<WatchLog>>>,
    /// Leases granted (and their ids), for the final lease check.
    pub leases: Vec<i64>,
    pub operations: BTreeMap<&'static str, u64>,
}

/// The checked key of prefix `index`.
pub fn key(index: usize) -> Vec<u8> {
    format!("/k{index}/v").into_bytes()
}

pub fn prefix(index: usize) -> Vec<u8> {
    format!("/k{index}/").into_bytes()
}

/// Whether `error` proves the request never took effect.
fn never_applied(error: &RequestError) -> bool {
    match error {
        RequestError::Group(group) => matches!(
            group,
            GroupError::NotSent { .. }
                | GroupError::CommandTooLarge { .. }
                | GroupError::NoSpace { .. }
                | GroupError::MembershipChange { .. }
        ),
        RequestError::Kv(_)
        | RequestError::Starting { .. }
        | RequestError::Overloaded { .. }
        | RequestError::TxnSpansGroups { .. }
        | RequestError::NoSuchGroup { .. }
        | RequestError::Joining { .. }
        | RequestError::Removed { .. } => true,
        RequestError::Codec(_) | RequestError::Watch(_) | RequestError::Auth(_) => false,
    }
}

/// What came of one request.
enum Answer<T> {
    Done(T),
    /// Refused before it could take effect.
    Refused,
    /// It may or may not have taken effect.
    Unknown,
}

impl World {
    fn micros(&self) -> u64 {
        Instant::now().duration_since(self.start).as_micros() as u64
    }

    /// Sends `request` to `member`'s request handle, answered within the
    /// client's timeout.
    async fn request<T: 'static>(
        &self,
        member: NodeId,
        request: impl FnOnce(Requests) -> futures::future::LocalBoxFuture<'static, Result<T, RequestError>>
            + 'static,
    ) -> Answer<T> {
        let timeout = Duration::from_millis(self.scenario.request_timeout_ms + 2_000);
        self.request_within(member, timeout, request).await
    }

    async fn request_within<T: 'static>(
        &self,
        member: NodeId,
        timeout: Duration,
        request: impl FnOnce(Requests) -> futures::future::LocalBoxFuture<'static, Result<T, RequestError>>
            + 'static,
    ) -> Answer<T> {
        let Some(handle) = self.requests_of(member) else { return Answer::Refused };
        let call = self.net.client_call(member, move || {
            async move {
                let Some(requests) = handle.borrow().clone() else {
                    return Err(RequestError::Starting { shard: 0 });
                };
                request(requests).await
            }
            .boxed_local()
        });
        match tokio::time::timeout(timeout, call).await {
            Ok(Some(Ok(answer))) => Answer::Done(answer),
            Ok(Some(Err(error))) if never_applied(&error) => Answer::Refused,
            _ => Answer::Unknown,
        }
    }

    fn record(&self, client: u32, operation: Operation, invoked: u64, outcome: Option<Outcome>) {
        let returned = outcome.map(|outcome| Returned { at: self.micros().max(invoked), outcome });
        self.history.borrow_mut().records.push(Record { client, operation, invoked, returned });
    }

    fn count(&self, what: &'static str) {
        *self.history.borrow_mut().operations.entry(what).or_default() += 1;
    }

    fn acked(&self, client: u32, key: Vec<u8>, value: Option<Vec<u8>>, revision: i64) {
        self.history.borrow_mut().acked.push(Acked { key, value, revision, client });
    }

    /// One client: operations until `until`, each to a member drawn anew.
    pub async fn client(self: Rc<Self>, client: u32, mut rng: Rng, until: Instant) {
        let shape = self.scenario.workload;
        let mut written = 0u64;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(rng.between(shape.think_ms.0, shape.think_ms.1))).await;
            let member = *rng.pick(&self.member_ids());
            let index = rng.below(shape.keys as u64) as usize;
            let key = key(index);
            written += 1;
            let value = {
                let base = format!("c{client}-{written}");
                let length = if rng.chance(shape.long_value_chance) {
                    rng.between(0, shape.value_bytes_max as u64) as usize
                } else {
                    0
                };
                let mut value = base.into_bytes();
                value.resize(value.len() + length, b'.');
                value
            };
            let invoked = self.micros();
            match rng.below(100) {
                0..=34 => {
                    self.count("put");
                    let request = PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
                    let operation = Operation::Put { key: key.clone(), value: value.clone() };
                    match self
                        .request(member, move |requests| {
                            async move { requests.put(request).await }.boxed_local()
                        })
                        .await
                    {
                        Answer::Done(answer) => {
                            self.record(client, operation, invoked, Some(Outcome::Written));
                            self.acked(client, key, Some(value), answer.response.revision);
                        }
                        Answer::Refused => {}
                        Answer::Unknown => self.record(client, operation, invoked, None),
                    }
                }
                35..=44 => {
                    self.count("delete");
                    let request = DeleteRangeRequest { key: key.clone(), ..Default::default() };
                    let operation = Operation::Delete { key: key.clone() };
                    match self
                        .request(member, move |requests| {
                            async move { requests.delete_range(request).await }.boxed_local()
                        })
                        .await
                    {
                        Answer::Done(answer) => {
                            self.record(client, operation, invoked, Some(Outcome::Written));
                            // A delete that found nothing makes no revision.
                            if answer.response.deleted > 0 {
                                self.acked(client, key, None, answer.response.revision);
                            }
                        }
                        Answer::Refused => {}
                        Answer::Unknown => self.record(client, operation, invoked, None),
                    }
                }
                45..=59 => {
                    self.count("cas");
                    // Compare with what one of the last writes may have left.
                    let expected = if rng.chance(0.3) {
                        None
                    } else {
                        let history = self.history.borrow();
                        let known: Vec<&Vec<u8>> = history
                            .acked
                            .iter()
                            .rev()
                            .take(20)
                            .filter(|acked| acked.key == key)
                            .filter_map(|acked| acked.value.as_ref())
                            .collect();
                        if known.is_empty() {
                            None
                        } else {
                            Some((*rng.pick(&known)).clone())
                        }
                    };
                    let compare = match &expected {
                        Some(value) => Compare {
                            key: key.clone(),
                            range_end: Vec::new(),
                            target: CompareTarget::Value(value.clone()),
                            result: CompareResult::Equal,
                        },
                        None => Compare {
                            key: key.clone(),
                            range_end: Vec::new(),
                            target: CompareTarget::Version(0),
                            result: CompareResult::Equal,
                        },
                    };
                    let request = TxnRequest {
                        compares: vec![compare],
                        success: vec![RequestOp::Put(PutRequest {
                            key: key.clone(),
                            value: value.clone(),
                            ..Default::default()
                        })],
                        failure: Vec::new(),
                    };
                    let operation = Operation::Cas { key: key.clone(), expected, new: value.clone() };
                    match self
                        .request(member, move |requests| {
                            async move { requests.txn(request).await }.boxed_local()
                        })
                        .await
                    {
                        Answer::Done(answer) => {
                            let swapped = answer.response.succeeded;
                            self.record(client, operation, invoked, Some(Outcome::Swapped(swapped)));
                            if swapped {
                                self.acked(client, key, Some(value), answer.response.revision);
                            }
                        }
                        Answer::Refused => {}
                        Answer::Unknown => self.record(client, operation, invoked, None),
                    }
                }
                60..=84 => {
                    self.count("get");
                    let request = RangeRequest { key: key.clone(), ..Default::default() };
                    let operation = Operation::Get { key: key.clone() };
                    if let Answer::Done(answer) = self
                        .request(member, move |requests| {
                            async move { requests.range(request, true).await }.boxed_local()
                        })
                        .await
                    {
                        let value = answer.response.kvs.first().map(|kv| kv.value.clone());
                        self.record(client, operation, invoked, Some(Outcome::Read(value)));
                    }
                }
                85..=89 => {
                    // A range over every key: its answer is not checked
                    // against the history (it spans groups), only that it
                    // is served.
                    self.count("range");
                    let request =
                        RangeRequest { key: b"/".to_vec(), range_end: vec![0], ..Default::default() };
                    let linearizable = rng.chance(0.5);
                    let _ = self
                        .request(member, move |requests| {
                            async move { requests.range(request, linearizable).await }.boxed_local()
                        })
                        .await;
                }
                _ if rng.chance(shape.lease_chance) => {
                    self.lease_round(client, member, &mut rng, &value).await
                }
                _ => {
                    // A multi-key transaction within one group: the key and
                    // a sibling under its prefix.
                    self.count("txn");
                    let sibling = format!("/k{index}/side").into_bytes();
                    let request = TxnRequest {
                        compares: Vec::new(),
                        success: vec![
                            RequestOp::Put(PutRequest {
                                key: sibling.clone(),
                                value: value.clone(),
                                ..Default::default()
                            }),
                            RequestOp::Range(RangeRequest { key: sibling, ..Default::default() }),
                        ],
                        failure: Vec::new(),
                    };
                    let _ = self
                        .request(member, move |requests| {
                            async move { requests.txn(request).await }.boxed_local()
                        })
                        .await;
                }
            }
        }
    }

    /// Grants a lease, attaches a key to it, keeps it alive a few times and
    /// lets it expire or revokes it.
    async fn lease_round(&self, client: u32, member: NodeId, rng: &mut Rng, value: &[u8]) {
        self.count("lease");
        let ttl = rng.between(2, 6) as i64;
        let granted = self
            .request(member, move |requests| async move { requests.lease_grant(ttl, 0).await }.boxed_local())
            .await;
        let Answer::Done(granted) = granted else { return };
        let id = granted.response.id;
        self.history.borrow_mut().leases.push(id);
        let key = format!("/lease/{client}/{id:x}").into_bytes();
        let request = PutRequest { key, value: value.to_vec(), lease: id, prev_kv: false };
        let _ = self
            .request(member, move |requests| async move { requests.put(request).await }.boxed_local())
            .await;
        for _ in 0..rng.below(4) {
            tokio::time::sleep(Duration::from_millis(rng.between(200, 1500))).await;
            let _ = self
                .request(member, move |requests| {
                    async move { requests.lease_keep_alive(id).await }.boxed_local()
                })
                .await;
        }
        if rng.chance(0.5) {
            let _ = self
                .request(member, move |requests| async move { requests.lease_revoke(id).await }.boxed_local())
                .await;
        }
        let _ = client;
    }

    /// One watcher of prefix `index`: watches through a member for a
    /// while or until its feed ends, then opens it again through another
    /// from the revision after the last one it was sure of. Sessions never
    /// overlap: a new one starts once the last one's reader is gone.
    pub async fn watcher(self: Rc<Self>, index: usize, mut rng: Rng, until: Instant) {
        let log = Rc::new(RefCell::new(WatchLog { prefix: prefix(index), ..Default::default() }));
        self.history.borrow_mut().watches.push(log.clone());
        while Instant::now() < until {
            let member = *rng.pick(&self.member_ids());
            let start_revision = {
                let log = log.borrow();
                if log.started_after.is_some() {
                    log.seen_up_to + 1
                } else {
                    0
                }
            };
            let window = Duration::from_millis(rng.between(500, 4_000));
            let reading = Rc::new(std::cell::Cell::new(true));
            let session = Session { log: log.clone(), reading: reading.clone() };
            let prefix = prefix(index);
            let watched = self
                .request_within(member, window + Duration::from_secs(10), move |requests| {
                    async move {
                        let session = session;
                        let request = nvkv::kv::watch::WatchRequest {
                            key: prefix.clone(),
                            range_end: nvkv::kv::types::prefix_range_end(&prefix),
                            start_revision,
                            progress_notify: true,
                            ..Default::default()
                        };
                        let options = WatchOptions {
                            progress_interval: Duration::from_millis(500),
                            ..Default::default()
                        };
                        let budget = nvkv::shard::watch::WatchBudget::for_connection(&options);
                        let mut feed = requests.watch(request, options, budget).await?;
                        {
                            let mut log = session.log.borrow_mut();
                            let events = log.events.len();
                            log.sessions.push((member, start_revision, events));
                            if log.started_after.is_none() {
                                log.started_after = Some(feed.started_after);
                                log.seen_up_to = feed.started_after;
                            } else {
                                log.reopened += 1;
                            }
                        }
                        let _ = tokio::time::timeout(window, session.read(&mut feed)).await;
                        Ok(())
                    }
                    .boxed_local()
                })
                .await;
            if let Answer::Unknown = watched {
                self.trace
                    .note(format!("the watch of /k{index}/ through member {member} was lost; reopening"));
            }
            // The reader runs on the member: wait until it is gone.
            while reading.get() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.between(10, 300))).await;
        }
    }
}

/// One watch session's reader, on the member; says it is gone when dropped.
struct Session {
    log: Rc<RefCell<WatchLog>>,
    reading: Rc<std::cell::Cell<bool>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reading.set(false);
    }
}

impl Session {
    /// Reads until the feed ends (its member stopped) or is cancelled.
    async fn read(&self, feed: &mut nvkv::shard::watch::WatchFeed) {
        while let Some(batch) = feed.next().await {
            let mut log = self.log.borrow_mut();
            match batch.body {
                WatchBody::Events(events) => {
                    for event in events {
                        let value = (event.kind == EventKind::Put).then(|| event.kv.value.clone());
                        let revision = event.kv.mod_revision;
                        log.events.push(Seen { revision, key: event.kv.key.clone(), value });
                        log.seen_up_to = log.seen_up_to.max(revision);
                    }
                }
                WatchBody::Progress => log.seen_up_to = log.seen_up_to.max(batch.revision),
                WatchBody::Cancelled(nvkv::kv::watch::CancelReason::Compacted { compact_revision }) => {
                    let from = log.seen_up_to + 1;
                    log.excused.push((from, compact_revision));
                    log.seen_up_to = log.seen_up_to.max(compact_revision - 1);
                    return;
                }
                WatchBody::Cancelled(_) => return,
            }
        }
    }
}
