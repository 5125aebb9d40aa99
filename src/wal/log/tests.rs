//! Unit tests of the log's own rules (the log's behaviour on devices is
//! tested in wal::tests).

use super::*;

fn record(kind: RecordKind, group: u32, index: u64) -> Pending {
    Pending {
        operation: 0,
        queued_at: Instant::now(),
        kind,
        group,
        index,
        term: 1,
        payload: Rc::from(&[][..]),
    }
}

/// What may go ahead of a group's waiting records is what replay cannot
/// tell from the order they were queued in.
#[test]
fn records_that_free_space_jump_only_where_replay_finds_the_same() {
    let mut waiting = Waiting::default();
    waiting.add(&record(RecordKind::Entry, 0, 10));
    waiting.add(&record(RecordKind::Entry, 0, 11));
    assert!(waiting.lets_jump(&record(RecordKind::Vote, 0, 0)));
    assert!(waiting.lets_jump(&record(RecordKind::SnapshotRef, 0, 9)));
    assert!(
        waiting.lets_jump(&record(RecordKind::Purge, 0, 9)),
        "entries above the purge point may follow it"
    );
    assert!(!waiting.lets_jump(&record(RecordKind::Purge, 0, 10)), "never ahead of an entry it removes");
    assert!(!waiting.lets_jump(&record(RecordKind::Entry, 0, 12)), "entries keep their order");
    assert!(!waiting.lets_jump(&record(RecordKind::Truncate, 0, 11)));
    waiting.add(&record(RecordKind::Vote, 0, 0));
    assert!(!waiting.lets_jump(&record(RecordKind::Vote, 0, 0)), "votes of a group keep their order");
    let mut purging = Waiting::default();
    purging.add(&record(RecordKind::Purge, 0, 5));
    assert!(!purging.lets_jump(&record(RecordKind::Purge, 0, 8)), "purges of a group keep their order");
    let mut truncating = Waiting::default();
    truncating.add(&record(RecordKind::Truncate, 0, 5));
    assert!(!truncating.lets_jump(&record(RecordKind::Purge, 0, 3)));
}
