//! The store's semantics, one rule per test: revisions, versions, ranges,
//! compaction, txns, leases, events and hybrid revisions.

use super::*;

fn put(store: &mut MvccStore, key: &str, value: &str) -> i64 {
    let request = PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() };
    store.put(&request).expect("put").response.revision
}

fn get_at(store: &MvccStore, key: &str, revision: i64) -> Result<Option<KeyValue>, KvError> {
    let request = RangeRequest { key: key.into(), revision, ..RangeRequest::default() };
    store.range(&request).map(|response| response.kvs.into_iter().next())
}

fn keys(response: &RangeResponse) -> Vec<String> {
    response.kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect()
}

fn delete(key: &str, range_end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest { key: key.into(), range_end: range_end.into(), prev_kv: true }
}

#[test]
fn a_fresh_store_is_at_revision_1_and_the_first_put_gets_2() {
    let mut store = MvccStore::new();
    assert_eq!(store.revision(), 1);
    assert_eq!(put(&mut store, "a", "1"), 2);
    let kv = get_at(&store, "a", 0).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version, kv.lease), (2, 2, 1, 0));
    store.check_invariants().unwrap();
}

#[test]
fn versions_count_puts_and_a_delete_starts_a_new_generation() {
    let mut store = MvccStore::new();
    put(&mut store, "a", "1");
    put(&mut store, "a", "2");
    let kv = get_at(&store, "a", 0).unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version), (&b"2"[..], 2, 3, 2));
    let deleted = store.delete_range(&delete("a", "")).unwrap();
    assert_eq!(deleted.response.revision, 4);
    assert_eq!(deleted.response.prev_kvs, vec![kv.clone()]);
    assert_eq!(deleted.events[0].kind, EventKind::Delete);
    assert_eq!(deleted.events[0].kv.mod_revision, 4);
    assert_eq!(get_at(&store, "a", 0).unwrap(), None);
    put(&mut store, "a", "3");
    let kv = get_at(&store, "a", 0).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    assert_eq!(get_at(&store, "a", 3).unwrap().unwrap().value, b"2");
    assert_eq!(get_at(&store, "a", 4).unwrap(), None);
    store.check_invariants().unwrap();
}

#[test]
fn range_serves_one_key_an_interval_everything_above_with_limit_count_and_keys_only() {
    let mut store = MvccStore::new();
    for key in ["a", "b", "b/1", "b/2", "c"] {
        put(&mut store, key, "value");
    }
    let all = RangeRequest { key: b"\0".to_vec(), range_end: vec![0], ..RangeRequest::default() };
    assert_eq!(keys(&store.range(&all).unwrap()), vec!["a", "b", "b/1", "b/2", "c"]);
    let prefix = RangeRequest {
        key: b"b/".to_vec(),
        range_end: super::super::types::prefix_range_end(b"b/"),
        ..RangeRequest::default()
    };
    assert_eq!(keys(&store.range(&prefix).unwrap()), vec!["b/1", "b/2"]);
    let limited = store.range(&RangeRequest { limit: 2, keys_only: true, ..all.clone() }).unwrap();
    assert_eq!((keys(&limited), limited.count, limited.more), (vec!["a".into(), "b".into()], 5, true));
    assert!(limited.kvs.iter().all(|kv| kv.value.is_empty()));
    let counted = store.range(&RangeRequest { count_only: true, ..all.clone() }).unwrap();
    assert_eq!((counted.kvs.len(), counted.count, counted.revision), (0, 5, 6));
    let backwards = RangeRequest { key: b"c".to_vec(), range_end: b"a".to_vec(), ..RangeRequest::default() };
    assert_eq!(store.range(&backwards).unwrap().count, 0);
    let negative = RangeRequest { limit: -1, ..all };
    assert!(
        matches!(store.range(&negative), Err(KvError::InvalidArgument(message)) if message.contains("-1"))
    );
}

#[test]
fn reads_refuse_future_negative_and_compacted_revisions() {
    let mut store = MvccStore::new();
    put(&mut store, "a", "1");
    put(&mut store, "a", "2");
    assert_eq!(get_at(&store, "a", 9), Err(KvError::FutureRevision { requested: 9, current: 3 }));
    assert!(matches!(get_at(&store, "a", -1), Err(KvError::InvalidArgument(_))));
    store.compact(3).unwrap();
    assert_eq!(get_at(&store, "a", 2), Err(KvError::Compacted { requested: 2, compact_revision: 3 }));
    assert_eq!(get_at(&store, "a", 3).unwrap().unwrap().value, b"2");
    assert_eq!(store.compact(3), Err(KvError::Compacted { requested: 3, compact_revision: 3 }));
    assert_eq!(store.compact(4), Err(KvError::FutureRevision { requested: 4, current: 3 }));
}

#[test]
fn compaction_keeps_the_value_at_the_compact_revision_and_drops_deleted_keys() {
    let mut store = MvccStore::new();
    put(&mut store, "a", "1"); // 2
    put(&mut store, "a", "2"); // 3
    put(&mut store, "b", "1"); // 4
    store.delete_range(&delete("b", "")).unwrap(); // 5
    put(&mut store, "a", "3"); // 6
    store.compact(5).unwrap();
    assert_eq!(store.keys_with_history(), 1, "b was deleted at or below 5: gone entirely");
    assert_eq!(store.history_entries(), 2, "a keeps its value at 3 and its put at 6");
    let at_5 = get_at(&store, "a", 5).unwrap().unwrap();
    assert_eq!((at_5.value.as_slice(), at_5.version, at_5.create_revision), (&b"2"[..], 2, 2));
    assert_eq!(get_at(&store, "b", 5).unwrap(), None);
    assert_eq!(get_at(&store, "a", 0).unwrap().unwrap().version, 3);
    store.check_invariants().unwrap();
}

#[test]
fn deleting_nothing_and_a_txn_without_writes_keep_the_revision() {
    let mut store = MvccStore::new();
    put(&mut store, "a", "1");
    let nothing = store.delete_range(&delete("x", "z")).unwrap();
    assert_eq!((nothing.response.revision, nothing.response.deleted, nothing.events.len()), (2, 0, 0));
    let read_only = TxnRequest {
        success: vec![RequestOp::Range(RangeRequest { key: b"a".to_vec(), ..RangeRequest::default() })],
        ..TxnRequest::default()
    };
    let applied = store.txn(&read_only).unwrap();
    assert_eq!((applied.response.revision, applied.events.len(), store.revision()), (2, 0, 2));
}

fn compare(key: &str, target: CompareTarget, result: CompareResult) -> Compare {
    Compare { key: key.into(), range_end: Vec::new(), target, result }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest { key: key.into(), value: value.into(), lease: 0, prev_kv: true })
}

#[test]
fn a_txn_writes_at_one_revision_and_reads_its_own_writes() {
    let mut store = MvccStore::new();
    put(&mut store, "a", "1");
    let txn = TxnRequest {
        compares: vec![compare("a", CompareTarget::Value(b"1".to_vec()), CompareResult::Equal)],
        success: vec![
            put_op("b", "2"),
            RequestOp::Range(RangeRequest { key: b"b".to_vec(), ..RangeRequest::default() }),
            RequestOp::DeleteRange(delete("a", "")),
            put_op("c", "3"),
        ],
        failure: vec![put_op("z", "never")],
    };
    let applied = store.txn(&txn).unwrap();
    assert!(applied.response.succeeded);
    assert_eq!(applied.response.revision, 3);
    assert_eq!(applied.events.len(), 3);
    assert!(applied.events.iter().all(|event| event.kv.mod_revision == 3));
    let ResponseOp::Range(seen) = &applied.response.responses[1] else { panic!("a range answer") };
    assert_eq!((keys(seen), seen.revision), (vec!["b".to_string()], 3));
    let positions: Vec<Revision> = store.positions.keys().copied().collect();
    assert_eq!(
        positions[1..],
        [Revision { main: 3, sub: 0 }, Revision { main: 3, sub: 1 }, Revision { main: 3, sub: 2 }]
    );

    let failing = TxnRequest {
        compares: vec![compare("a", CompareTarget::Version(0), CompareResult::Greater)],
        success: vec![put_op("z", "never")],
        failure: vec![put_op("d", "4")],
    };
    let applied = store.txn(&failing).unwrap();
    assert!(!applied.response.succeeded);
    assert_eq!(get_at(&store, "z", 0).unwrap(), None);
    assert_eq!(get_at(&store, "d", 0).unwrap().unwrap().mod_revision, 4);
}

#[test]
fn compares_on_missing_keys_and_ranges_follow_etcd() {
    let mut store = MvccStore::new();
    put(&mut store, "k/1", "x");
    put(&mut store, "k/2", "x");
    let holds = |store: &MvccStore, compare: Compare| store.compare(&compare);
    assert!(!holds(&store, compare("missing", CompareTarget::Value(Vec::new()), CompareResult::Equal)));
    assert!(holds(&store, compare("missing", CompareTarget::Version(0), CompareResult::Equal)));
    assert!(holds(&store, compare("missing", CompareTarget::Lease(0), CompareResult::Equal)));
    assert!(holds(&store, compare("k/1", CompareTarget::ModRevision(3), CompareResult::Less)));
    assert!(holds(&store, compare("k/1", CompareTarget::CreateRevision(2), CompareResult::Equal)));
    let mut over_range = compare("k/", CompareTarget::Value(b"x".to_vec()), CompareResult::Equal);
    over_range.range_end = b"k0".to_vec();
    assert!(holds(&store, over_range.clone()));
    over_range.target = CompareTarget::ModRevision(3);
    assert!(!holds(&store, over_range), "k/2 has mod revision 3");
}

#[test]
fn nested_txns_choose_their_branch_on_the_store_before_the_outer_txn_wrote() {
    let mut store = MvccStore::new();
    put(&mut store, "a", "1");
    let inner = TxnRequest {
        compares: vec![compare("a", CompareTarget::Value(b"1".to_vec()), CompareResult::Equal)],
        success: vec![put_op("b", "before")],
        failure: vec![put_op("b", "after")],
    };
    let outer = TxnRequest {
        success: vec![
            put_op("a", "2"),
            RequestOp::Txn(inner),
            RequestOp::Range(RangeRequest { key: b"b".to_vec(), ..RangeRequest::default() }),
        ],
        ..TxnRequest::default()
    };
    let applied = store.txn(&outer).unwrap();
    let ResponseOp::Txn(nested) = &applied.response.responses[1] else { panic!("a txn answer") };
    assert!(nested.succeeded, "a was still 1 when the txn began");
    assert_eq!(nested.revision, 3);
    let ResponseOp::Range(seen) = &applied.response.responses[2] else { panic!("a range answer") };
    assert_eq!(seen.kvs[0].value, b"before");
    assert_eq!(applied.events.len(), 2);
    assert_eq!(store.revision(), 3);
}

#[test]
fn a_txn_writing_a_key_twice_is_refused_and_changes_nothing() {
    let mut store = MvccStore::new();
    put(&mut store, "a", "1");
    let twice = TxnRequest { success: vec![put_op("k", "1"), put_op("k", "2")], ..TxnRequest::default() };
    assert_eq!(store.txn(&twice).map(|_| ()), Err(KvError::DuplicateKeyInTxn(b"k".to_vec())));
    let put_then_delete = TxnRequest {
        failure: vec![put_op("k", "1"), RequestOp::DeleteRange(delete("a", "z"))],
        ..TxnRequest::default()
    };
    assert_eq!(store.txn(&put_then_delete).map(|_| ()), Err(KvError::DuplicateKeyInTxn(b"k".to_vec())));
    let nested = |ops| RequestOp::Txn(TxnRequest { success: ops, ..TxnRequest::default() });
    let siblings = TxnRequest {
        success: vec![nested(vec![put_op("k", "1")]), nested(vec![RequestOp::DeleteRange(delete("k", ""))])],
        ..TxnRequest::default()
    };
    assert_eq!(store.txn(&siblings).map(|_| ()), Err(KvError::DuplicateKeyInTxn(b"k".to_vec())));
    let exclusive = TxnRequest {
        success: vec![RequestOp::Txn(TxnRequest {
            compares: Vec::new(),
            success: vec![put_op("k", "1")],
            failure: vec![put_op("k", "2")],
        })],
        ..TxnRequest::default()
    };
    assert!(store.txn(&exclusive).is_ok(), "the two branches of a nested txn exclude each other");
    let overlapping_deletes = TxnRequest {
        success: vec![RequestOp::DeleteRange(delete("a", "c")), RequestOp::DeleteRange(delete("a", ""))],
        ..TxnRequest::default()
    };
    let applied = store.txn(&overlapping_deletes).unwrap();
    assert_eq!(applied.events.len(), 1, "the second delete finds a already gone");
    store.check_invariants().unwrap();
}

#[test]
fn a_txn_refused_late_changes_nothing() {
    let mut store = MvccStore::new();
    put(&mut store, "a", "1");
    let before = store.clone();
    let unknown_lease = TxnRequest {
        success: vec![
            put_op("b", "1"),
            RequestOp::Put(PutRequest { key: b"c".to_vec(), value: Vec::new(), lease: 42, prev_kv: false }),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(store.txn(&unknown_lease).map(|_| ()), Err(KvError::LeaseNotFound(42)));
    let future_read = TxnRequest {
        success: vec![
            put_op("b", "1"),
            RequestOp::Range(RangeRequest { key: b"a".to_vec(), revision: 7, ..RangeRequest::default() }),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(
        store.txn(&future_read).map(|_| ()),
        Err(KvError::FutureRevision { requested: 7, current: 2 })
    );
    let mut deep = TxnRequest::default();
    for _ in 0..TXN_DEPTH_MAX {
        deep = TxnRequest { success: vec![RequestOp::Txn(deep)], ..TxnRequest::default() };
    }
    assert!(
        matches!(store.txn(&deep), Err(KvError::InvalidArgument(message)) if message.contains("33 deep"))
    );
    assert_eq!(store, before);
}

#[test]
fn leases_attach_on_put_move_on_overwrite_and_a_revoke_deletes_at_one_revision() {
    let mut store = MvccStore::new();
    let first = store.lease_grant(0, 10).unwrap();
    assert_eq!((first.id, first.revision), (1, 1));
    let second = store.lease_grant(0, 20).unwrap().id;
    let with = |key: &str, lease| PutRequest { key: key.into(), value: b"v".to_vec(), lease, prev_kv: false };
    assert_eq!(store.put(&with("x", 99)).map(|_| ()), Err(KvError::LeaseNotFound(99)));
    store.put(&with("a", first.id)).unwrap();
    store.put(&with("b", first.id)).unwrap();
    store.put(&with("c", first.id)).unwrap();
    store.put(&with("c", second)).unwrap();
    store.delete_range(&delete("b", "")).unwrap();
    assert_eq!(store.lease_time_to_live(first.id).unwrap().keys, vec![b"a".to_vec()]);
    assert_eq!(store.lease_time_to_live(second).unwrap().keys, vec![b"c".to_vec()]);
    store.put(&with("d", second)).unwrap();
    let revoked = store.lease_revoke(second).unwrap();
    assert_eq!((revoked.response.deleted, revoked.response.revision), (2, 8));
    let deleted: Vec<_> = revoked.events.iter().map(|event| (event.kind, event.kv.key.clone())).collect();
    assert_eq!(deleted, vec![(EventKind::Delete, b"c".to_vec()), (EventKind::Delete, b"d".to_vec())]);
    assert_eq!(store.lease_revoke(second).map(|_| ()), Err(KvError::LeaseNotFound(second)));
    assert_eq!(store.lease_list(), vec![LeaseStatus { id: first.id, ttl_seconds: 10 }]);
    let empty = store.lease_grant(0, 5).unwrap().id;
    assert_eq!(store.lease_revoke(empty).unwrap().response.revision, 8, "nothing deleted, no revision");
    store.check_invariants().unwrap();
}

#[test]
fn history_replays_in_revision_order_with_previous_values() {
    let mut store = MvccStore::new();
    put(&mut store, "a", "1"); // 2
    put(&mut store, "b", "1"); // 3
    put(&mut store, "a", "2"); // 4
    store.delete_range(&delete("a", "c")).unwrap(); // 5: a then b
    let events: Vec<_> = store.events_since(Revision::start_of(3), b"a", b"c").collect();
    let shown: Vec<_> = events
        .iter()
        .map(|(position, event)| {
            (position.main, position.sub, event.kind, event.prev_kv.as_ref().map(|kv| kv.value.clone()))
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (3, 0, EventKind::Put, None),
            (4, 0, EventKind::Put, Some(b"1".to_vec())),
            (5, 0, EventKind::Delete, Some(b"2".to_vec())),
            (5, 1, EventKind::Delete, Some(b"1".to_vec())),
        ]
    );
    assert_eq!(store.events_since(Revision::start_of(3), b"b", b"").count(), 2);
}
