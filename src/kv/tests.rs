//! The MVCC store (nested txns included), its watch hub and its snapshots
//! against a plain model: a BTreeMap of whole key histories that never
//! forgets anything, so every answer the store gives after compaction is
//! checked against the truth.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::snapshot::{decode, encode, state_hash};
use super::types::*;
use super::watch::{WatchHub, WatchLimits, WatchPoll, WatchRequest};
use super::MvccStore;

const KEYS: [&str; 6] = ["a", "b", "c", "d", "e/1", "e/2"];
/// Range ends: one key, intervals, a prefix end, every key above, an end
/// below some starts (an empty range).
const ENDS: [&str; 6] = ["", "c", "e/", "e0", "\0", "b"];
const LEASES: i64 = 3;

fn key(index: usize) -> Vec<u8> {
    KEYS[index].as_bytes().to_vec()
}

fn end(index: usize) -> Vec<u8> {
    ENDS[index].as_bytes().to_vec()
}

#[derive(Clone, Debug)]
enum TxnOp {
    Put {
        key: usize,
        value: u8,
    },
    Delete {
        key: usize,
        end: usize,
    },
    Range {
        key: usize,
        end: usize,
    },
    /// A txn inside a txn; the strategy nests one level.
    Nested(Box<NestedTxn>),
}

#[derive(Clone, Debug)]
struct NestedTxn {
    key: usize,
    target: Target,
    result: CompareResult,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

#[derive(Clone, Debug)]
enum Target {
    Value(u8),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Lease(i64),
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        value: u8,
        lease: i64,
    },
    Delete {
        key: usize,
        end: usize,
    },
    Txn {
        key: usize,
        target: Target,
        result: CompareResult,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    /// Compacts at this percentage of the current revision.
    Compact {
        percent: i64,
    },
    Grant {
        id: i64,
    },
    Revoke {
        id: i64,
    },
    /// Reads at this percentage of the current revision (0: current; above
    /// 100: in the future).
    RangeAt {
        key: usize,
        end: usize,
        percent: i64,
        limit: i64,
    },
    /// Replaces the store with its snapshot decoded.
    Restart,
    /// Takes what the live watchers have.
    PollLive,
}

fn leaf_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        3 => (0..KEYS.len(), 0..3u8).prop_map(|(key, value)| TxnOp::Put { key, value }),
        1 => (0..KEYS.len(), 0..ENDS.len()).prop_map(|(key, end)| TxnOp::Delete { key, end }),
        1 => (0..KEYS.len(), 0..ENDS.len()).prop_map(|(key, end)| TxnOp::Range { key, end }),
    ]
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    let nested = (
        0..KEYS.len(),
        target(),
        result(),
        prop::collection::vec(leaf_op(), 0..3),
        prop::collection::vec(leaf_op(), 0..3),
    )
        .prop_map(|(key, target, result, success, failure)| {
            TxnOp::Nested(Box::new(NestedTxn { key, target, result, success, failure }))
        });
    prop_oneof![5 => leaf_op(), 1 => nested]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0..3u8).prop_map(Target::Value),
        (0..4i64).prop_map(Target::Version),
        (0..12i64).prop_map(Target::CreateRevision),
        (0..12i64).prop_map(Target::ModRevision),
        (0..LEASES).prop_map(Target::Lease),
    ]
}

fn result() -> impl Strategy<Value = CompareResult> {
    prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Less,
        CompareResult::Greater,
    ])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..KEYS.len(), 0..3u8, prop::sample::select(vec![0i64, 0, 1, 2])).prop_map(|(key, value, lease)| Op::Put { key, value, lease }),
        3 => (0..KEYS.len(), 0..ENDS.len()).prop_map(|(key, end)| Op::Delete { key, end }),
        4 => (0..KEYS.len(), target(), result(), prop::collection::vec(txn_op(), 0..4), prop::collection::vec(txn_op(), 0..3))
            .prop_map(|(key, target, result, success, failure)| Op::Txn { key, target, result, success, failure }),
        1 => (0..=100i64).prop_map(|percent| Op::Compact { percent }),
        1 => (1..LEASES).prop_map(|id| Op::Grant { id }),
        1 => (1..LEASES).prop_map(|id| Op::Revoke { id }),
        3 => (0..KEYS.len(), 0..ENDS.len(), 0..=110i64, 0..3i64)
            .prop_map(|(key, end, percent, limit)| Op::RangeAt { key, end, percent, limit }),
        1 => Just(Op::Restart),
        1 => Just(Op::PollLive),
    ]
}

/// One write of a key in the model: its revision, and its value and lease,
/// or none for a delete.
type ModelWrite = (i64, Option<(Vec<u8>, i64)>);

/// The truth: every write ever made, never compacted.
#[derive(Default)]
struct Model {
    revision: i64,
    compact_revision: i64,
    /// Per key, every write, oldest first.
    histories: BTreeMap<Vec<u8>, Vec<ModelWrite>>,
    leases: BTreeSet<i64>,
    /// Every event, in the order the writes happened.
    events: Vec<Event>,
}

impl Model {
    fn new() -> Model {
        Model { revision: 1, ..Model::default() }
    }

    fn kv_at(&self, key: &[u8], at: i64) -> Option<KeyValue> {
        let history: Vec<_> =
            self.histories.get(key)?.iter().filter(|(revision, _)| *revision <= at).collect();
        let (mod_revision, write) = history.last()?;
        let (value, lease) = write.as_ref()?;
        let generation: Vec<_> = history.iter().rev().take_while(|(_, write)| write.is_some()).collect();
        Some(KeyValue {
            key: key.to_vec(),
            value: value.clone(),
            create_revision: generation.last().expect("the put itself").0,
            mod_revision: *mod_revision,
            version: generation.len() as i64,
            lease: *lease,
        })
    }

    fn range(&self, key: &[u8], range_end: &[u8], at: i64) -> Vec<KeyValue> {
        self.histories
            .keys()
            .filter(|candidate| range_contains(key, range_end, candidate))
            .filter_map(|candidate| self.kv_at(candidate, at))
            .collect()
    }

    fn write(&mut self, revision: i64, key: &[u8], value: Option<(Vec<u8>, i64)>) {
        let prev_kv = self.kv_at(key, revision - 1);
        let deleted = value.is_none();
        self.histories.entry(key.to_vec()).or_default().push((revision, value));
        let event = if deleted {
            let kv = KeyValue { key: key.to_vec(), mod_revision: revision, ..KeyValue::default() };
            Event { kind: EventKind::Delete, kv, prev_kv }
        } else {
            Event { kind: EventKind::Put, kv: self.kv_at(key, revision).expect("just put"), prev_kv }
        };
        self.events.push(event);
    }

    /// Deletes the live keys of a range at `revision`; returns them as they were.
    fn delete(&mut self, revision: i64, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
        let doomed = self.range(key, range_end, revision);
        for kv in &doomed {
            self.write(revision, &kv.key, None);
        }
        doomed
    }
}

fn compare_request(key: usize, target: &Target, result: CompareResult) -> Compare {
    let target = match target {
        Target::Value(value) => CompareTarget::Value(vec![b'0' + value]),
        Target::Version(operand) => CompareTarget::Version(*operand),
        Target::CreateRevision(operand) => CompareTarget::CreateRevision(*operand),
        Target::ModRevision(operand) => CompareTarget::ModRevision(*operand),
        Target::Lease(operand) => CompareTarget::Lease(*operand),
    };
    Compare { key: self::key(key), range_end: Vec::new(), target, result }
}

fn model_compare(compare: &Compare, kv: Option<&KeyValue>) -> bool {
    let (actual, operand) = match (&compare.target, kv) {
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(value), Some(kv)) => {
            return match compare.result {
                CompareResult::Equal => kv.value == *value,
                CompareResult::NotEqual => kv.value != *value,
                CompareResult::Less => kv.value < *value,
                CompareResult::Greater => kv.value > *value,
            }
        }
        (CompareTarget::Version(operand), kv) => (kv.map_or(0, |kv| kv.version), *operand),
        (CompareTarget::CreateRevision(operand), kv) => (kv.map_or(0, |kv| kv.create_revision), *operand),
        (CompareTarget::ModRevision(operand), kv) => (kv.map_or(0, |kv| kv.mod_revision), *operand),
        (CompareTarget::Lease(operand), kv) => (kv.map_or(0, |kv| kv.lease), *operand),
    };
    match compare.result {
        CompareResult::Equal => actual == operand,
        CompareResult::NotEqual => actual != operand,
        CompareResult::Less => actual < operand,
        CompareResult::Greater => actual > operand,
    }
}

fn request_ops(ops: &[TxnOp]) -> Vec<RequestOp> {
    ops.iter()
        .map(|op| match *op {
            TxnOp::Put { key, value } => RequestOp::Put(PutRequest {
                key: self::key(key),
                value: vec![b'0' + value],
                lease: 0,
                prev_kv: true,
            }),
            TxnOp::Delete { key, end } => RequestOp::DeleteRange(DeleteRangeRequest {
                key: self::key(key),
                range_end: self::end(end),
                prev_kv: true,
            }),
            TxnOp::Range { key, end } => RequestOp::Range(RangeRequest {
                key: self::key(key),
                range_end: self::end(end),
                ..RangeRequest::default()
            }),
            TxnOp::Nested(ref nested) => RequestOp::Txn(TxnRequest {
                compares: vec![compare_request(nested.key, &nested.target, nested.result)],
                success: request_ops(&nested.success),
                failure: request_ops(&nested.failure),
            }),
        })
        .collect()
}

/// The keys a branch puts, and the ranges it deletes.
type Writes = (BTreeSet<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

/// The duplicate-key rule, written out plainly: in a branch, with a nested
/// txn counting as all the writes of both its branches, a key is put at
/// most once and never both put and deleted. Answers the offending key.
fn model_writes(ops: &[TxnOp]) -> Result<Writes, Vec<u8>> {
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut deletes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for op in ops {
        let (new_puts, new_deletes) = match op {
            TxnOp::Put { key, .. } => (BTreeSet::from([self::key(*key)]), Vec::new()),
            TxnOp::Delete { key, end } => (BTreeSet::new(), vec![(self::key(*key), self::end(*end))]),
            TxnOp::Range { .. } => continue,
            TxnOp::Nested(nested) => {
                let (mut then_puts, mut then_deletes) = model_writes(&nested.success)?;
                let (else_puts, else_deletes) = model_writes(&nested.failure)?;
                then_puts.extend(else_puts);
                then_deletes.extend(else_deletes);
                (then_puts, then_deletes)
            }
        };
        for key in &new_puts {
            if puts.contains(key) || deletes.iter().any(|(start, end)| range_contains(start, end, key)) {
                return Err(key.clone());
            }
        }
        for (start, end) in &new_deletes {
            if let Some(put) = puts.iter().find(|put| range_contains(start, end, put)) {
                return Err(put.clone());
            }
        }
        puts.extend(new_puts);
        deletes.extend(new_deletes);
    }
    Ok((puts, deletes))
}

/// Runs the ops of a branch on the model at `revision`, which is not
/// committed yet: compares of nested txns read `model.revision`, the store
/// as the outer txn found it.
fn model_ops(model: &mut Model, ops: &[TxnOp], revision: i64, wrote: &mut bool) -> Vec<ResponseOp> {
    let mut responses = Vec::new();
    for op in ops {
        match op {
            TxnOp::Put { key, value } => {
                let key = self::key(*key);
                let prev_kv = model.kv_at(&key, revision - 1);
                model.write(revision, &key, Some((vec![b'0' + value], 0)));
                *wrote = true;
                responses.push(ResponseOp::Put(PutResponse { revision: 0, prev_kv }));
            }
            TxnOp::Delete { key, end } => {
                let prev_kvs = model.delete(revision, &self::key(*key), &self::end(*end));
                *wrote |= !prev_kvs.is_empty();
                let deleted = prev_kvs.len() as i64;
                responses.push(ResponseOp::DeleteRange(DeleteRangeResponse {
                    revision: 0,
                    deleted,
                    prev_kvs,
                }));
            }
            TxnOp::Range { key, end } => {
                let at = if *wrote { revision } else { model.revision };
                let kvs = model.range(&self::key(*key), &self::end(*end), at);
                let count = kvs.len() as i64;
                responses.push(ResponseOp::Range(RangeResponse { revision: 0, kvs, count, more: false }));
            }
            TxnOp::Nested(nested) => {
                let compare = compare_request(nested.key, &nested.target, nested.result);
                let succeeded = model_holds(model, &compare);
                let branch = if succeeded { &nested.success } else { &nested.failure };
                let inner = model_ops(model, branch, revision, wrote);
                responses.push(ResponseOp::Txn(TxnResponse { revision: 0, succeeded, responses: inner }));
            }
        }
    }
    responses
}

fn model_holds(model: &Model, compare: &Compare) -> bool {
    let current = model.range(&compare.key, &compare.range_end, model.revision);
    model_compare(compare, current.first())
}

fn stamp(responses: &mut [ResponseOp], revision: i64) {
    for response in responses {
        match response {
            ResponseOp::Put(put) => put.revision = revision,
            ResponseOp::DeleteRange(delete) => delete.revision = revision,
            ResponseOp::Range(range) => range.revision = revision,
            ResponseOp::Txn(txn) => {
                txn.revision = revision;
                stamp(&mut txn.responses, revision);
            }
        }
    }
}

/// Runs a txn on the model; returns the response it expects.
fn model_txn(
    model: &mut Model,
    compare: &Compare,
    success: &[TxnOp],
    failure: &[TxnOp],
) -> Result<TxnResponse, KvError> {
    model_writes(success).map_err(KvError::DuplicateKeyInTxn)?;
    model_writes(failure).map_err(KvError::DuplicateKeyInTxn)?;
    let succeeded = model_holds(model, compare);
    let revision = model.revision + 1;
    let mut wrote = false;
    let mut responses = model_ops(model, if succeeded { success } else { failure }, revision, &mut wrote);
    if wrote {
        model.revision = revision;
    }
    stamp(&mut responses, model.revision);
    Ok(TxnResponse { revision: model.revision, succeeded, responses })
}

fn range_request(key: &[u8], range_end: &[u8], revision: i64) -> RangeRequest {
    RangeRequest { key: key.to_vec(), range_end: range_end.to_vec(), revision, ..RangeRequest::default() }
}

/// Watch ranges the checks replay: everything, a prefix, one key.
fn watch_ranges() -> [(Vec<u8>, Vec<u8>); 3] {
    [(Vec::new(), vec![0]), (b"e/".to_vec(), b"e0".to_vec()), (b"b".to_vec(), Vec::new())]
}

/// Every range at every revision the store still has agrees with the model.
fn check_every_range(store: &MvccStore, model: &Model) -> Result<(), TestCaseError> {
    for at in model.compact_revision.max(1)..=model.revision {
        for key in 0..KEYS.len() {
            for end in 0..ENDS.len() {
                let response = store.range(&range_request(&self::key(key), &self::end(end), at));
                let expected = model.range(&self::key(key), &self::end(end), at);
                prop_assert_eq!(response.map(|response| response.kvs), Ok(expected), "at {}", at);
            }
        }
    }
    Ok(())
}

/// A watch from every start the store can replay gives exactly the model's
/// events from there; a start at the compact revision is cancelled.
fn check_every_replay(store: &MvccStore, model: &Model) -> Result<(), TestCaseError> {
    let mut hub = WatchHub::new(WatchLimits::default());
    for (key, range_end) in watch_ranges() {
        for start in (model.compact_revision + 1).max(2)..=model.revision + 1 {
            let request = WatchRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                start_revision: start,
                prev_kv: true,
                ..WatchRequest::default()
            };
            let id = hub.watch(store, request).expect("watch");
            let mut seen = Vec::new();
            for _ in 0..=model.events.len() + 1 {
                match hub.poll(store, id, 2).expect("poll") {
                    WatchPoll::Events(events) => {
                        if let (Some(last), Some(first)) = (seen.last(), events.first()) {
                            let (last, first): (&Event, &Event) = (last, first);
                            prop_assert_ne!(last.kv.mod_revision, first.kv.mod_revision, "a revision split");
                        }
                        seen.extend(events);
                    }
                    WatchPoll::Cancelled(reason) => {
                        return Err(TestCaseError::fail(format!("cancelled: {reason}")))
                    }
                }
                if !hub.ready().contains(&id) {
                    break;
                }
            }
            let expected: Vec<Event> = model
                .events
                .iter()
                .filter(|event| {
                    event.kv.mod_revision >= start && range_contains(&key, &range_end, &event.kv.key)
                })
                .cloned()
                .collect();
            prop_assert_eq!(seen, expected, "watch from {}", start);
            hub.cancel(id).expect("cancel");
        }
    }
    if model.compact_revision > 0 {
        let request = WatchRequest {
            key: b"a".to_vec(),
            start_revision: model.compact_revision,
            ..WatchRequest::default()
        };
        let id = hub.watch(store, request).expect("watch");
        let cancelled = WatchPoll::Cancelled(super::watch::CancelReason::Compacted {
            compact_revision: model.compact_revision,
        });
        prop_assert_eq!(hub.poll(store, id, 10).expect("poll"), cancelled);
    }
    Ok(())
}

/// Live watchers that see every write from the start.
struct Live {
    hub: WatchHub,
    everything: super::watch::WatchId,
    prefix_puts: super::watch::WatchId,
    seen_everything: Vec<Event>,
    seen_prefix_puts: Vec<Event>,
}

impl Live {
    fn new(store: &MvccStore) -> Live {
        let mut hub = WatchHub::new(WatchLimits {
            watchers_max: 2,
            watch_events_pending_max: 100_000,
            ..WatchLimits::default()
        });
        let all =
            WatchRequest { key: Vec::new(), range_end: vec![0], prev_kv: true, ..WatchRequest::default() };
        let everything = hub.watch(store, all).expect("watch");
        let prefix = WatchRequest {
            key: b"e/".to_vec(),
            range_end: b"e0".to_vec(),
            no_delete: true,
            ..WatchRequest::default()
        };
        let prefix_puts = hub.watch(store, prefix).expect("watch");
        Live { hub, everything, prefix_puts, seen_everything: Vec::new(), seen_prefix_puts: Vec::new() }
    }

    fn poll(&mut self, store: &MvccStore) {
        for (id, seen) in
            [(self.everything, &mut self.seen_everything), (self.prefix_puts, &mut self.seen_prefix_puts)]
        {
            while let WatchPoll::Events(events) = self.hub.poll(store, id, 3).expect("poll") {
                if events.is_empty() {
                    break;
                }
                seen.extend(events);
            }
        }
    }

    fn check(&mut self, store: &MvccStore, model: &Model) -> Result<(), TestCaseError> {
        self.poll(store);
        prop_assert_eq!(&self.seen_everything, &model.events);
        let prefix_puts: Vec<Event> = model
            .events
            .iter()
            .filter(|event| event.kind == EventKind::Put && event.kv.key.starts_with(b"e/"))
            .map(|event| Event { prev_kv: None, ..event.clone() })
            .collect();
        prop_assert_eq!(&self.seen_prefix_puts, &prefix_puts);
        Ok(())
    }
}

fn apply(store: &mut MvccStore, model: &mut Model, live: &mut Live, op: &Op) -> Result<(), TestCaseError> {
    let events_before = model.events.len();
    let mut events = Vec::new();
    match op {
        Op::Put { key, value, lease } => {
            let request =
                PutRequest { key: self::key(*key), value: vec![b'0' + value], lease: *lease, prev_kv: true };
            let outcome = store.put(&request);
            if *lease != 0 && !model.leases.contains(lease) {
                prop_assert_eq!(outcome, Err(KvError::LeaseNotFound(*lease)));
            } else {
                let prev_kv = model.kv_at(&request.key, model.revision);
                model.revision += 1;
                model.write(model.revision, &request.key, Some((request.value.clone(), *lease)));
                let applied = outcome.expect("put");
                prop_assert_eq!(applied.response, PutResponse { revision: model.revision, prev_kv });
                events = applied.events;
            }
        }
        Op::Delete { key, end } => {
            let request =
                DeleteRangeRequest { key: self::key(*key), range_end: self::end(*end), prev_kv: true };
            let applied = store.delete_range(&request).expect("delete");
            let prev_kvs = model.delete(model.revision + 1, &request.key, &request.range_end);
            if !prev_kvs.is_empty() {
                model.revision += 1;
            }
            let expected =
                DeleteRangeResponse { revision: model.revision, deleted: prev_kvs.len() as i64, prev_kvs };
            prop_assert_eq!(applied.response, expected);
            events = applied.events;
        }
        Op::Txn { key, target, result, success, failure } => {
            let compare = compare_request(*key, target, *result);
            let request = TxnRequest {
                compares: vec![compare.clone()],
                success: request_ops(success),
                failure: request_ops(failure),
            };
            let outcome = store.txn(&request);
            let expected = model_txn(model, &compare, success, failure);
            match expected {
                Ok(expected) => {
                    let applied = outcome.expect("txn");
                    prop_assert_eq!(applied.response, expected);
                    events = applied.events;
                }
                Err(error) => prop_assert_eq!(outcome.map(|_| ()), Err(error)),
            }
        }
        Op::Compact { percent } => {
            let revision = (model.revision * percent / 100).max(1);
            let outcome = store.compact(revision);
            if revision <= model.compact_revision {
                let compact_revision = model.compact_revision;
                prop_assert_eq!(outcome, Err(KvError::Compacted { requested: revision, compact_revision }));
            } else {
                prop_assert_eq!(outcome, Ok(()));
                model.compact_revision = revision;
            }
        }
        Op::Grant { id } => {
            let outcome = store.lease_grant(*id, 10).map(|granted| granted.id);
            if model.leases.insert(*id) {
                prop_assert_eq!(outcome, Ok(*id));
            } else {
                prop_assert_eq!(outcome, Err(KvError::LeaseExists(*id)));
            }
        }
        Op::Revoke { id } => {
            let outcome = store.lease_revoke(*id);
            if model.leases.remove(id) {
                let attached: Vec<Vec<u8>> = model
                    .range(b"", &[0], model.revision)
                    .into_iter()
                    .filter(|kv| kv.lease == *id)
                    .map(|kv| kv.key)
                    .collect();
                let revision = model.revision + 1;
                for key in &attached {
                    model.write(revision, key, None);
                }
                if !attached.is_empty() {
                    model.revision = revision;
                }
                let applied = outcome.expect("revoke");
                let expected =
                    LeaseRevokeResponse { revision: model.revision, deleted: attached.len() as i64 };
                prop_assert_eq!(applied.response, expected);
                events = applied.events;
            } else {
                prop_assert_eq!(outcome.map(|_| ()), Err(KvError::LeaseNotFound(*id)));
            }
        }
        Op::RangeAt { key, end, percent, limit } => {
            let at = if *percent == 0 { 0 } else { (model.revision * percent / 100).max(1) };
            let request =
                RangeRequest { limit: *limit, ..range_request(&self::key(*key), &self::end(*end), at) };
            let outcome = store.range(&request);
            if at > model.revision {
                prop_assert_eq!(
                    outcome,
                    Err(KvError::FutureRevision { requested: at, current: model.revision })
                );
            } else if at != 0 && at < model.compact_revision {
                let compact_revision = model.compact_revision;
                prop_assert_eq!(outcome, Err(KvError::Compacted { requested: at, compact_revision }));
            } else {
                let all =
                    model.range(&request.key, &request.range_end, if at == 0 { model.revision } else { at });
                let shown = if *limit == 0 { all.len() } else { all.len().min(*limit as usize) };
                let expected = RangeResponse {
                    revision: model.revision,
                    kvs: all[..shown].to_vec(),
                    count: all.len() as i64,
                    more: shown < all.len(),
                };
                prop_assert_eq!(outcome, Ok(expected));
            }
        }
        Op::Restart => {
            let bytes = encode(store);
            let decoded = decode(&bytes).expect("a snapshot of a good store decodes");
            prop_assert_eq!(&decoded, &*store);
            prop_assert_eq!(state_hash(&decoded), state_hash(store));
            *store = decoded;
        }
        Op::PollLive => live.poll(store),
    }
    prop_assert_eq!(&events[..], &model.events[events_before..], "events of {:?}", op);
    live.hub.publish(&events);
    prop_assert_eq!(store.revision(), model.revision);
    prop_assert_eq!(store.compact_revision(), model.compact_revision);
    prop_assert_eq!(store.check_invariants(), Ok(()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_writes_compactions_reads_and_watches_agree_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut store = MvccStore::new();
        let mut model = Model::new();
        let mut live = Live::new(&store);
        for op in &ops {
            apply(&mut store, &mut model, &mut live, op)?;
        }
        check_every_range(&store, &model)?;
        check_every_replay(&store, &model)?;
        live.check(&store, &model)?;

        // A replica restored from the snapshot serves the same reads and,
        // given the same writes, ends in the same state.
        let mut restored = decode(&encode(&store)).expect("decode");
        check_every_range(&restored, &model)?;
        check_every_replay(&restored, &model)?;
        let more = PutRequest { key: b"e/1".to_vec(), value: b"after".to_vec(), ..PutRequest::default() };
        prop_assert_eq!(restored.put(&more), store.put(&more));
        prop_assert_eq!(restored.lease_grant(0, 5), store.lease_grant(0, 5));
        prop_assert_eq!(encode(&restored), encode(&store));
    }
}
