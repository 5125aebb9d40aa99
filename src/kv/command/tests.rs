//! Commands and outcomes round trip, refuse what they cannot read, and
//! apply as the store says.

use proptest::prelude::*;

use super::*;
use crate::kv::types::{Event, EventKind};

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..6)
}
/// Out of space, a store refuses what can grow it and takes the rest.
#[test]
fn only_commands_that_can_grow_the_store_add_data() {
    let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), lease: 0, prev_kv: false };
    let delete = DeleteRangeRequest { key: b"k".to_vec(), ..Default::default() };
    let txn =
        |operations: Vec<RequestOp>| TxnRequest { compares: vec![], success: operations, failure: vec![] };
    let deleting = txn(vec![RequestOp::DeleteRange(delete.clone())]);
    let nested_put = txn(vec![RequestOp::Txn(txn(vec![RequestOp::Put(put.clone())]))]);
    for (command, grows) in [
        (Command::Put(put.clone()), true),
        (Command::LeaseGrant { id: 0, ttl_seconds: 5 }, true),
        (Command::Txn(nested_put), true),
        (Command::Txn(deleting), false),
        (Command::DeleteRange(delete), false),
        (Command::Compact { revision: 3 }, false),
        (Command::LeaseRevoke { id: 1 }, false),
    ] {
        assert_eq!(adds_data(&encode_command(&command)), grows, "{command:?}");
    }
}

fn kv() -> impl Strategy<Value = KeyValue> {
    (bytes(), bytes(), any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()).prop_map(
        |(key, value, create_revision, mod_revision, version, lease)| KeyValue {
            key,
            value,
            create_revision,
            mod_revision,
            version,
            lease,
        },
    )
}

fn put() -> impl Strategy<Value = PutRequest> {
    (bytes(), bytes(), any::<i64>(), any::<bool>()).prop_map(|(key, value, lease, prev_kv)| PutRequest {
        key,
        value,
        lease,
        prev_kv,
    })
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        bytes().prop_map(CompareTarget::Value),
        any::<i64>().prop_map(CompareTarget::Version),
        any::<i64>().prop_map(CompareTarget::CreateRevision),
        any::<i64>().prop_map(CompareTarget::ModRevision),
        any::<i64>().prop_map(CompareTarget::Lease),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Less,
        CompareResult::Greater,
    ]);
    (bytes(), bytes(), target, result).prop_map(|(key, range_end, target, result)| Compare {
        key,
        range_end,
        target,
        result,
    })
}

fn txn() -> impl Strategy<Value = TxnRequest> {
    let range = (bytes(), bytes(), any::<i64>(), any::<i64>(), any::<bool>(), any::<bool>()).prop_map(
        |(key, range_end, limit, revision, count_only, keys_only)| {
            RequestOp::Range(RangeRequest { key, range_end, limit, revision, count_only, keys_only })
        },
    );
    let leaf = prop_oneof![range, put().prop_map(RequestOp::Put), delete().prop_map(RequestOp::DeleteRange)];
    let op = leaf.prop_recursive(3, 24, 4, |inner| {
        (
            prop::collection::vec(compare(), 0..2),
            prop::collection::vec(inner.clone(), 0..3),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(compares, success, failure)| {
                RequestOp::Txn(TxnRequest { compares, success, failure })
            })
    });
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..4),
    )
        .prop_map(|(compares, success, failure)| TxnRequest { compares, success, failure })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        put().prop_map(Command::Put),
        delete().prop_map(Command::DeleteRange),
        txn().prop_map(Command::Txn),
        any::<i64>().prop_map(|revision| Command::Compact { revision }),
        (any::<i64>(), any::<i64>()).prop_map(|(id, ttl_seconds)| Command::LeaseGrant { id, ttl_seconds }),
        any::<i64>().prop_map(|id| Command::LeaseRevoke { id }),
        (".{0,8}", prop::option::of(".{1,8}")).prop_map(|(name, password_hash)| Command::Auth(
            crate::kv::auth::AuthChange::UserAdd { name, password_hash }
        )),
        (".{0,8}", bytes(), bytes()).prop_map(|(name, key, range_end)| Command::Auth(
            crate::kv::auth::AuthChange::RoleGrantPermission {
                name,
                permission: crate::kv::auth::Permission {
                    kind: crate::kv::auth::PermissionKind::ReadWrite,
                    key,
                    range_end
                },
            }
        )),
        bytes().prop_map(|token_key| Command::Auth(crate::kv::auth::AuthChange::Enable { token_key })),
    ]
}

fn txn_response() -> impl Strategy<Value = TxnResponse> {
    let put = (any::<i64>(), prop::option::of(kv()))
        .prop_map(|(revision, prev_kv)| PutResponse { revision, prev_kv });
    let delete = (any::<i64>(), any::<i64>(), prop::collection::vec(kv(), 0..3))
        .prop_map(|(revision, deleted, prev_kvs)| DeleteRangeResponse { revision, deleted, prev_kvs });
    let range = (any::<i64>(), prop::collection::vec(kv(), 0..3), any::<i64>(), any::<bool>()).prop_map(
        |(revision, kvs, count, more)| ResponseOp::Range(RangeResponse { revision, kvs, count, more }),
    );
    let leaf = prop_oneof![range, put.prop_map(ResponseOp::Put), delete.prop_map(ResponseOp::DeleteRange)];
    let op = leaf.prop_recursive(3, 24, 4, |inner| {
        (any::<i64>(), any::<bool>(), prop::collection::vec(inner, 0..3)).prop_map(
            |(revision, succeeded, responses)| {
                ResponseOp::Txn(TxnResponse { revision, succeeded, responses })
            },
        )
    });
    (any::<i64>(), any::<bool>(), prop::collection::vec(op, 0..4))
        .prop_map(|(revision, succeeded, responses)| TxnResponse { revision, succeeded, responses })
}

fn outcome() -> impl Strategy<Value = CommandOutcome> {
    let error = prop_oneof![
        (any::<i64>(), any::<i64>())
            .prop_map(|(requested, compact_revision)| KvError::Compacted { requested, compact_revision }),
        (any::<i64>(), any::<i64>())
            .prop_map(|(requested, current)| KvError::FutureRevision { requested, current }),
        any::<i64>().prop_map(KvError::LeaseNotFound),
        any::<i64>().prop_map(KvError::LeaseExists),
        bytes().prop_map(KvError::DuplicateKeyInTxn),
        ".{0,8}".prop_map(KvError::InvalidArgument),
        ".{0,8}".prop_map(|name| KvError::Auth(crate::kv::auth::AuthError::UserNotFound(name))),
    ];
    let response = prop_oneof![
        (any::<i64>(), prop::option::of(kv()))
            .prop_map(|(revision, prev_kv)| CommandResponse::Put(PutResponse { revision, prev_kv })),
        (any::<i64>(), any::<i64>(), prop::collection::vec(kv(), 0..3)).prop_map(
            |(revision, deleted, prev_kvs)| {
                CommandResponse::DeleteRange(DeleteRangeResponse { revision, deleted, prev_kvs })
            }
        ),
        txn_response().prop_map(CommandResponse::Txn),
        any::<i64>().prop_map(|revision| CommandResponse::Compact { revision }),
        (any::<i64>(), any::<i64>(), any::<i64>()).prop_map(|(revision, id, ttl_seconds)| {
            CommandResponse::LeaseGrant(LeaseGrantResponse { revision, id, ttl_seconds })
        }),
        (any::<i64>(), any::<i64>()).prop_map(|(revision, deleted)| CommandResponse::LeaseRevoke(
            LeaseRevokeResponse { revision, deleted }
        )),
        any::<u64>().prop_map(|revision| CommandResponse::Auth { revision }),
    ];
    prop_oneof![error.prop_map(Err), response.prop_map(Ok)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn commands_round_trip_and_every_truncation_is_refused(command in command()) {
        let bytes = encode_command(&command);
        prop_assert_eq!(decode_command(&bytes), Ok(command));
        for length in 0..bytes.len() {
            prop_assert!(decode_command(&bytes[..length]).is_err(), "cut at {}", length);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(decode_command(&longer).is_err());
    }

    #[test]
    fn outcomes_round_trip_and_every_truncation_is_refused(outcome in outcome()) {
        let bytes = encode_outcome(&outcome);
        prop_assert_eq!(decode_outcome(&bytes), Ok(outcome));
        for length in 0..bytes.len() {
            prop_assert!(decode_outcome(&bytes[..length]).is_err(), "cut at {}", length);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..64), kind in 1u8..7) {
        let _ = decode_command(&bytes);
        let _ = decode_outcome(&bytes);
        let framed = [&[COMMAND_FORMAT_VERSION, kind][..], &bytes].concat();
        let _ = decode_command(&framed);
        let framed = [&[OUTCOME_FORMAT_VERSION, 1, kind][..], &bytes].concat();
        let _ = decode_outcome(&framed);
    }
}

#[test]
fn a_newer_format_version_is_refused_naming_both_versions() {
    let mut bytes = encode_command(&Command::Compact { revision: 5 });
    bytes[0] = COMMAND_FORMAT_VERSION + 1;
    let error = decode_command(&bytes).unwrap_err();
    assert_eq!(error, CommandCodecError::NewerVersion { what: "log command", found: 3, supported: 2 });
    assert!(error.to_string().contains("version 3") && error.to_string().contains("version 2"), "{error}");
}

#[test]
fn a_stamp_travels_with_its_command_and_version_1_commands_read_as_unstamped() {
    let put = Command::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..PutRequest::default() });
    let bytes = encode_stamped_command(&put, 123_456);
    assert_eq!(decode_stamped_command(&bytes), Ok((put.clone(), 123_456)));
    // The same command as nvkv wrote it before stamps: version 1, no stamp.
    let mut version_1 = vec![COMMAND_FORMAT_UNSTAMPED, KIND_PUT];
    version_1.extend_from_slice(&bytes[10..]);
    assert_eq!(decode_stamped_command(&version_1), Ok((put, 0)));
}

proptest! {
    #[test]
    fn batches_round_trip_and_every_truncation_is_refused(
        commands in prop::collection::vec(command(), 1..6),
        outcomes in prop::collection::vec(outcome(), 1..6),
    ) {
        let encoded: Vec<Vec<u8>> = commands.iter().map(encode_command).collect();
        let batch = encode_batch(&encoded);
        let split = split_batch(&batch).unwrap().map(|commands| commands.iter().map(|command| command.to_vec()).collect());
        prop_assert_eq!(split, Some(encoded.clone()));
        prop_assert_eq!(split_batch(&encoded[0]).unwrap(), None, "one command is no batch");
        prop_assert_eq!(command_count(&batch), encoded.len());
        prop_assert_eq!(command_count(&encoded[0]), 1);
        for cut in 2..batch.len() {
            prop_assert!(split_batch(&batch[..cut]).is_err(), "cut at {}", cut);
        }
        let overhead = batch_overhead_bytes(encoded.len());
        prop_assert_eq!(batch.len(), overhead + encoded.iter().map(Vec::len).sum::<usize>());
        let encoded: Vec<Vec<u8>> = outcomes.iter().map(encode_outcome).collect();
        let outcome = encode_batch_outcome(&encoded);
        prop_assert_eq!(split_batch_outcome(&outcome).unwrap(), encoded);
        for cut in 0..outcome.len() {
            prop_assert!(split_batch_outcome(&outcome[..cut]).is_err(), "cut at {}", cut);
        }
    }
}

#[test]
fn a_batch_inside_a_batch_or_where_one_command_belongs_is_refused() {
    let inner = encode_batch(&[encode_command(&Command::Compact { revision: 1 })]);
    assert!(split_batch(&encode_batch(std::slice::from_ref(&inner))).is_err());
    assert!(decode_command(&inner).is_err());
}

#[test]
fn nesting_deeper_than_the_store_takes_is_refused_without_recursing_further() {
    let mut txn = TxnRequest::default();
    for _ in 0..TXN_DEPTH_MAX {
        txn = TxnRequest { success: vec![RequestOp::Txn(txn)], ..TxnRequest::default() };
    }
    let error = decode_command(&encode_command(&Command::Txn(txn))).unwrap_err();
    assert!(error.to_string().contains(&format!("deeper than {TXN_DEPTH_MAX}")), "{error}");
    // Ten thousand nested levels of garbage: refused at the limit.
    let mut bytes = vec![COMMAND_FORMAT_VERSION, KIND_TXN];
    bytes.extend_from_slice(&0u64.to_le_bytes());
    for _ in 0..10_000 {
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.push(OP_TXN);
    }
    assert!(decode_command(&bytes).is_err());
}

#[test]
fn applying_commands_answers_like_the_store_and_returns_the_events() {
    let mut store = MvccStore::new();
    let granted = apply(&mut store, &Command::LeaseGrant { id: 0, ttl_seconds: 30 }, 0);
    assert_eq!(
        granted.response,
        Ok(CommandResponse::LeaseGrant(LeaseGrantResponse { revision: 1, id: 1, ttl_seconds: 30 }))
    );
    let put = Command::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), lease: 1, prev_kv: false });
    let applied = apply(&mut store, &put, 0);
    assert_eq!(applied.response, Ok(CommandResponse::Put(PutResponse { revision: 2, prev_kv: None })));
    assert_eq!(
        applied.events.iter().map(|event: &Event| event.kind).collect::<Vec<_>>(),
        vec![EventKind::Put]
    );
    let refused = apply(&mut store, &Command::Compact { revision: 9 }, 0);
    assert_eq!(refused.response, Err(KvError::FutureRevision { requested: 9, current: 2 }));
    assert_eq!(
        apply(&mut store, &Command::Compact { revision: 2 }, 0).response,
        Ok(CommandResponse::Compact { revision: 2 })
    );
    let revoked = apply(&mut store, &Command::LeaseRevoke { id: 1 }, 0);
    assert_eq!(
        revoked.response,
        Ok(CommandResponse::LeaseRevoke(LeaseRevokeResponse { revision: 3, deleted: 1 }))
    );
    assert_eq!(revoked.events.len(), 1);
    let outcome = decode_outcome(&encode_outcome(&revoked.response)).unwrap();
    assert_eq!(outcome, revoked.response);
}
