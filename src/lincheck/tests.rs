//! Known histories the checker must reject and accept, and a property:
//! every history produced by a sequential model run, with each operation's
//! interval stretched around its linearization point, is accepted. The
//! brute-force reference and the properties judged against it are in
//! `reference`.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

mod reference;

const STEPS: u64 = 1_000_000;

fn bytes(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

fn put(client: u32, key: &str, value: &str, invoked: u64, returned: u64) -> Record {
    Record {
        client,
        operation: Operation::Put { key: bytes(key), value: bytes(value) },
        invoked,
        returned: Some(Returned { at: returned, outcome: Outcome::Written }),
    }
}

fn get(client: u32, key: &str, seen: Option<&str>, invoked: u64, returned: u64) -> Record {
    Record {
        client,
        operation: Operation::Get { key: bytes(key) },
        invoked,
        returned: Some(Returned { at: returned, outcome: Outcome::Read(seen.map(bytes)) }),
    }
}

fn cas(client: u32, key: &str, expected: Option<&str>, new: &str, swapped: bool, span: (u64, u64)) -> Record {
    Record {
        client,
        operation: Operation::Cas { key: bytes(key), expected: expected.map(bytes), new: bytes(new) },
        invoked: span.0,
        returned: Some(Returned { at: span.1, outcome: Outcome::Swapped(swapped) }),
    }
}

fn unknown(mut record: Record) -> Record {
    record.returned = None;
    record
}

fn verdict(history: &[Record]) -> Verdict {
    check(history, STEPS).expect("a well-formed history").verdict
}

fn assert_rejected(history: &[Record]) {
    match verdict(history) {
        Verdict::Violation { .. } => {}
        other => panic!("must be rejected, got {other:?} for:\n{}", shown(history)),
    }
}

fn assert_accepted(history: &[Record]) {
    assert_eq!(verdict(history), Verdict::Linearizable, "must be accepted:\n{}", shown(history));
}

fn shown(history: &[Record]) -> String {
    history.iter().map(|record| format!("  {record}\n")).collect()
}

#[test]
fn a_stale_read_after_a_completed_write_is_rejected() {
    assert_rejected(&[put(1, "x", "1", 0, 10), put(1, "x", "2", 20, 30), get(2, "x", Some("1"), 40, 50)]);
}

#[test]
fn a_read_of_absent_after_a_completed_write_is_rejected() {
    assert_rejected(&[put(1, "x", "1", 0, 10), get(2, "x", None, 20, 30)]);
}

#[test]
fn two_successful_cas_from_the_same_expected_value_lose_an_update() {
    assert_rejected(&[
        put(1, "x", "0", 0, 10),
        cas(2, "x", Some("0"), "1", true, (20, 40)),
        cas(3, "x", Some("0"), "2", true, (25, 45)),
    ]);
}

#[test]
fn a_read_of_a_value_never_written_is_rejected() {
    assert_rejected(&[get(1, "x", Some("9"), 0, 10)]);
    assert_rejected(&[put(1, "x", "1", 0, 100), get(2, "x", Some("9"), 10, 20)]);
}

#[test]
fn a_read_going_back_in_time_is_rejected() {
    // Once a read saw 2, the overlapping write of 2 has taken effect; a
    // later read cannot see the 1 it overwrote.
    assert_rejected(&[
        put(1, "x", "1", 0, 10),
        put(1, "x", "2", 20, 100),
        get(2, "x", Some("2"), 30, 35),
        get(3, "x", Some("1"), 40, 45),
    ]);
}

#[test]
fn a_failed_cas_that_should_have_succeeded_is_rejected() {
    assert_rejected(&[put(1, "x", "0", 0, 10), cas(2, "x", Some("0"), "1", false, (20, 30))]);
}

#[test]
fn an_unknown_write_cannot_be_undone() {
    // It may take effect late, but once seen it stays.
    assert_rejected(&[
        unknown(put(1, "x", "1", 0, 0)),
        get(2, "x", Some("1"), 10, 20),
        get(2, "x", None, 30, 40),
    ]);
}

#[test]
fn overlapping_operations_are_accepted_in_either_order() {
    // A read during a write may see the key before or after it.
    assert_accepted(&[put(1, "x", "1", 0, 100), get(2, "x", None, 10, 20), get(2, "x", Some("1"), 30, 40)]);
    // Two overlapping writes: a later read may see either as the last.
    for last in ["1", "2"] {
        assert_accepted(&[
            put(1, "x", "1", 0, 50),
            put(2, "x", "2", 10, 60),
            get(3, "x", Some(last), 70, 80),
        ]);
    }
    // Two overlapping cas from the same value: exactly one wins, either one.
    for winner in [1, 2] {
        assert_accepted(&[
            put(1, "x", "0", 0, 10),
            cas(1, "x", Some("0"), "1", winner == 1, (20, 40)),
            cas(2, "x", Some("0"), "2", winner == 2, (25, 45)),
        ]);
    }
}

#[test]
fn an_unknown_write_may_or_may_not_have_happened() {
    let lost = unknown(put(1, "x", "1", 0, 0));
    assert_accepted(&[lost.clone(), get(2, "x", None, 10, 20)]);
    assert_accepted(&[lost.clone(), get(2, "x", Some("1"), 10, 20)]);
    // Taking effect long after the client gave up is allowed too.
    assert_accepted(&[lost, get(2, "x", None, 10, 20), get(2, "x", Some("1"), 1000, 1010)]);
    // An unknown cas: applied or not.
    let maybe = unknown(cas(1, "x", None, "a", false, (0, 0)));
    assert_accepted(&[maybe.clone(), get(2, "x", None, 10, 20)]);
    assert_accepted(&[maybe, get(2, "x", Some("a"), 10, 20)]);
}

#[test]
fn an_unknown_write_before_the_invocation_is_not_visible() {
    assert_rejected(&[get(2, "x", Some("1"), 0, 10), unknown(put(1, "x", "1", 20, 0))]);
}

#[test]
fn cas_from_absent_holds_only_on_an_absent_key() {
    assert_accepted(&[cas(1, "x", None, "a", true, (0, 10)), cas(2, "x", None, "b", false, (20, 30))]);
    assert_rejected(&[put(1, "x", "0", 0, 10), cas(2, "x", None, "b", true, (20, 30))]);
}

#[test]
fn each_key_is_checked_alone_and_the_failing_key_is_named() {
    let history = [
        put(1, "a", "1", 0, 10),
        get(2, "a", Some("1"), 20, 30),
        put(1, "b", "1", 0, 10),
        put(1, "b", "2", 20, 30),
        get(2, "b", Some("1"), 40, 50),
    ];
    match verdict(&history) {
        Verdict::Violation { keys, records, stuck_at, .. } => {
            assert_eq!(keys, [bytes("b")]);
            assert_eq!(records.len(), 3, "only b's operations: {records:?}");
            assert_eq!(
                records[stuck_at],
                get(2, "b", Some("1"), 40, 50),
                "the stale read is where it got stuck"
            );
        }
        other => panic!("b's stale read must be found, got {other:?}"),
    }
    // The shortest failing key is the one reported.
    let mut longer = history.to_vec();
    longer.extend([put(3, "c", "1", 0, 10), get(3, "c", Some("9"), 20, 30)]);
    match verdict(&longer) {
        Verdict::Violation { keys, .. } => assert_eq!(keys, [bytes("c")]),
        other => panic!("c's impossible read must be found, got {other:?}"),
    }
}

#[test]
fn a_search_over_budget_gives_up_and_never_passes() {
    // Many concurrent writes and a read no order explains: the search must
    // try many orders, more than a budget of 100 steps allows.
    let mut history: Vec<Record> = (0..12).map(|index| put(index, "x", &index.to_string(), 0, 100)).collect();
    history.push(get(99, "x", Some("13"), 200, 210));
    let report = check(&history, 100).expect("well-formed");
    assert_eq!(report.verdict, Verdict::GaveUp { keys: vec![bytes("x")], steps: 100 });
    // With enough budget the same history is rejected.
    assert!(matches!(verdict(&history), Verdict::Violation { .. }));
}

#[test]
fn malformed_records_are_refused_with_the_record_named() {
    let mut wrong = get(1, "x", None, 0, 10);
    wrong.returned = Some(Returned { at: 10, outcome: Outcome::Written });
    let error = check(&[wrong], STEPS).unwrap_err();
    assert!(error.to_string().contains("record 0 (client 1 [0, 10] get(x) = ok)"), "{error}");
    let backwards = put(1, "x", "1", 20, 10);
    assert!(matches!(check(&[backwards], STEPS), Err(HistoryError::ReturnedBeforeInvoked { .. })));
    let never = put(1, "x", "1", 0, u64::MAX);
    assert!(matches!(check(&[never], STEPS), Err(HistoryError::ReturnedNever { .. })));
}

#[test]
fn the_report_counts_keys_components_and_operations() {
    let report =
        check(&[put(1, "a", "1", 0, 10), unknown(get(1, "a", None, 20, 0)), get(2, "b", None, 0, 10)], STEPS)
            .expect("well-formed");
    assert_eq!(report, Report { verdict: Verdict::Linearizable, keys: 2, components: 2, operations: 2 });
}

/// One operation of a generated sequential run, before it is given times.
#[derive(Clone, Debug)]
enum Planned {
    Put { key: u8, value: u8 },
    Delete { key: u8 },
    Get { key: u8 },
    Cas { key: u8, expected: Option<u8>, new: u8 },
}

/// How a planned operation ends: with its answer, unknown after taking
/// effect, or unknown without ever taking effect.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Answered,
    UnknownApplied,
    UnknownNeverApplied,
}

fn planned() -> impl Strategy<Value = Planned> {
    prop_oneof![
        3 => (0..3u8, 0..4u8).prop_map(|(key, value)| Planned::Put { key, value }),
        1 => (0..3u8).prop_map(|key| Planned::Delete { key }),
        3 => (0..3u8).prop_map(|key| Planned::Get { key }),
        3 => (0..3u8, proptest::option::of(0..4u8), 0..4u8).prop_map(|(key, expected, new)| Planned::Cas {
            key,
            expected,
            new
        }),
    ]
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![8 => Just(Ending::Answered), 1 => Just(Ending::UnknownApplied), 1 => Just(Ending::UnknownNeverApplied)]
}

/// Runs `plan` in order on a map (operation i takes effect at instant
/// 1000 + 10 i) and records each with an interval stretched by its slack
/// around that instant, so intervals overlap at random.
fn history_of(plan: &[(Planned, Ending, u64, u64)]) -> Vec<Record> {
    let mut model: HashMap<u8, u8> = HashMap::new();
    let name = |number: u8| vec![b'0' + number];
    let key_of = |number: u8| vec![b'k', b'0' + number];
    let mut history = Vec::new();
    for (index, (operation, ending, before, after)) in plan.iter().enumerate() {
        let point = 1000 + 10 * index as u64;
        let applied = !matches!(ending, Ending::UnknownNeverApplied);
        let (operation, outcome) = match *operation {
            Planned::Put { key, value } => {
                if applied {
                    model.insert(key, value);
                }
                (Operation::Put { key: key_of(key), value: name(value) }, Outcome::Written)
            }
            Planned::Delete { key } => {
                if applied {
                    model.remove(&key);
                }
                (Operation::Delete { key: key_of(key) }, Outcome::Written)
            }
            Planned::Get { key } => {
                (Operation::Get { key: key_of(key) }, Outcome::Read(model.get(&key).copied().map(name)))
            }
            Planned::Cas { key, expected, new } => {
                let found = model.get(&key).copied() == expected;
                if found && applied {
                    model.insert(key, new);
                }
                (
                    Operation::Cas { key: key_of(key), expected: expected.map(name), new: name(new) },
                    Outcome::Swapped(found),
                )
            }
        };
        let returned = match ending {
            Ending::Answered => Some(Returned { at: point + after, outcome }),
            Ending::UnknownApplied | Ending::UnknownNeverApplied => None,
        };
        history.push(Record { client: index as u32 % 4, operation, invoked: point - before, returned });
    }
    history
}

proptest! {
    #[test]
    fn every_history_of_a_sequential_run_is_accepted(
        plan in proptest::collection::vec((planned(), ending(), 0..60u64, 0..60u64), 0..40)
    ) {
        let history = history_of(&plan);
        let report = check(&history, STEPS).expect("well-formed");
        prop_assert_eq!(report.verdict, Verdict::Linearizable, "history:\n{}", shown(&history));
    }

    #[test]
    fn a_read_of_a_value_no_one_wrote_is_always_rejected(
        plan in proptest::collection::vec((planned(), ending(), 0..60u64, 0..60u64), 1..30)
    ) {
        let mut history = history_of(&plan);
        history.push(get(9, "k0", Some("9"), 0, 5000));
        let report = check(&history, STEPS).expect("well-formed");
        prop_assert!(matches!(report.verdict, Verdict::Violation { .. }), "history:\n{}", shown(&history));
    }
}

fn txn(
    client: u32,
    compares: &[(&str, Option<&str>)],
    success: &[(&str, Option<&str>)],
    ran: bool,
    span: (u64, u64),
) -> Record {
    let writes = |writes: &[(&str, Option<&str>)]| -> Vec<Write> {
        writes
            .iter()
            .map(|&(key, value)| match value {
                Some(value) => Write::Put { key: bytes(key), value: bytes(value) },
                None => Write::Delete { key: bytes(key) },
            })
            .collect()
    };
    Record {
        client,
        operation: Operation::Txn {
            compares: compares
                .iter()
                .map(|&(key, value)| Compare { key: bytes(key), value: value.map(bytes) })
                .collect(),
            success: writes(success),
            failure: Vec::new(),
        },
        invoked: span.0,
        returned: Some(Returned { at: span.1, outcome: Outcome::Branch(ran) }),
    }
}

fn range(client: u32, start: &str, end: &str, found: &[(&str, &str)], span: (u64, u64)) -> Record {
    Record {
        client,
        operation: Operation::Range { start: bytes(start), end: bytes(end) },
        invoked: span.0,
        returned: Some(Returned {
            at: span.1,
            outcome: Outcome::Listed(found.iter().map(|&(key, value)| (bytes(key), bytes(value))).collect()),
        }),
    }
}

#[test]
fn a_range_seeing_half_of_a_transaction_is_rejected() {
    let moved = txn(1, &[("a", Some("1"))], &[("a", None), ("b", Some("1"))], true, (20, 30));
    let before = [put(1, "a", "1", 0, 10)];
    // During the transaction a range sees it whole or not at all.
    for found in [&[("a", "1")][..], &[("b", "1")][..]] {
        let mut history = before.to_vec();
        history.extend([moved.clone(), range(2, "a", "c", found, (25, 35))]);
        assert_accepted(&history);
    }
    for found in [&[][..], &[("a", "1"), ("b", "1")][..]] {
        let mut history = before.to_vec();
        history.extend([moved.clone(), range(2, "a", "c", found, (25, 35))]);
        assert_rejected(&history);
    }
    // Nor may two gets see it half done, one after the other.
    let mut history = before.to_vec();
    history.extend([moved, get(2, "b", Some("1"), 22, 24), get(2, "a", Some("1"), 26, 28)]);
    assert_rejected(&history);
}

#[test]
fn a_transaction_takes_the_branch_its_compares_decide() {
    let set = [put(1, "a", "1", 0, 10), put(1, "b", "2", 0, 10)];
    let both = [("a", Some("1")), ("b", Some("2"))];
    let mut history = set.to_vec();
    history.push(txn(2, &both, &[("c", Some("3"))], true, (20, 30)));
    history.push(get(2, "c", Some("3"), 40, 50));
    assert_accepted(&history);
    let mut wrong_branch = set.to_vec();
    wrong_branch.push(txn(2, &both, &[("c", Some("3"))], false, (20, 30)));
    assert_rejected(&wrong_branch);
    // A compare on an absent key holds only while it is absent.
    let mut absent = set.to_vec();
    absent.push(txn(2, &[("c", None)], &[("c", Some("3"))], true, (20, 30)));
    absent.push(txn(3, &[("c", None)], &[("c", Some("4"))], true, (20, 30)));
    assert_rejected(&absent);
}

#[test]
fn a_range_sees_every_key_inside_it_and_none_outside() {
    let writes = [put(1, "a", "1", 0, 10), put(1, "b", "2", 0, 10), put(1, "c", "3", 0, 10)];
    let mut history = writes.to_vec();
    history.push(range(2, "a", "c", &[("a", "1"), ("b", "2")], (20, 30)));
    assert_accepted(&history);
    // Missing b, which was written before.
    let mut missing = writes.to_vec();
    missing.push(range(2, "a", "c", &[("a", "1")], (20, 30)));
    assert_rejected(&missing);
    // A key no one wrote.
    let mut invented = writes.to_vec();
    invented.push(range(2, "a", "z", &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")], (20, 30)));
    assert_rejected(&invented);
    // A range over no key of the history found nothing, rightly.
    let mut empty = writes.to_vec();
    empty.push(range(2, "x", "z", &[], (20, 30)));
    assert_accepted(&empty);
}

#[test]
fn multi_key_operations_join_their_keys_into_one_component() {
    let history = [
        put(1, "a", "1", 0, 10),
        put(1, "b", "1", 0, 10),
        put(1, "c", "1", 0, 10),
        put(1, "d", "1", 0, 10),
        put(1, "e", "1", 0, 10),
        // Joins a and c.
        txn(2, &[("a", Some("1"))], &[("c", Some("2"))], true, (20, 30)),
        // Joins d and e (the keys of the history in [d, f)).
        range(3, "d", "f", &[("d", "1"), ("e", "1")], (20, 30)),
        // A stale read of b, alone in its component.
        put(1, "b", "2", 40, 50),
        get(2, "b", Some("1"), 60, 70),
    ];
    let report = check(&history, STEPS).expect("well-formed");
    assert_eq!((report.keys, report.components, report.operations), (5, 3, 9));
    match report.verdict {
        Verdict::Violation { keys, records, .. } => {
            assert_eq!(keys, [bytes("b")]);
            assert_eq!(records.len(), 3);
        }
        other => panic!("b's stale read must be found, got {other:?}"),
    }
    // A violation across keys names the whole component.
    let across = [
        put(1, "a", "1", 0, 10),
        txn(2, &[("a", Some("1"))], &[("a", Some("2")), ("b", Some("2"))], true, (20, 30)),
        get(3, "b", Some("2"), 40, 50),
        get(3, "a", Some("1"), 60, 70),
    ];
    match verdict(&across) {
        Verdict::Violation { keys, .. } => assert_eq!(keys, [bytes("a"), bytes("b")]),
        other => panic!("the read of a's old value must be found, got {other:?}"),
    }
}

#[test]
fn a_range_listing_a_key_outside_it_is_refused() {
    let outside = range(1, "a", "c", &[("c", "1")], (0, 10));
    assert!(matches!(check(&[outside], STEPS), Err(HistoryError::ListedOutOfRange { .. })));
    let unordered = range(1, "a", "c", &[("b", "1"), ("a", "1")], (0, 10));
    assert!(matches!(check(&[unordered], STEPS), Err(HistoryError::ListedOutOfRange { .. })));
}
