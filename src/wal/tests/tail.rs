//! The tail of the log at recovery: records proven by a later one or by
//! the idle log's seal, unproven tails dropped and reported, torn writes,
//! and damage in the middle.

use super::*;

/// The ring LBA and length of the last record of a log that is not a seal.
pub(super) fn last_record(log: &ShardLog) -> (u64, u64) {
    let record = log.ring.iter().rev().find(|record| record.kind != RecordKind::Seal).expect("records");
    (log.region.ring_first_block() + record.offset, record.blocks)
}

/// Drops `log` as a crash would before the seal of its last writes landed:
/// settles it, then zeroes every seal after its last other record.
fn crash_before_the_seal(mut log: ShardLog, namespace: &dyn Fn(u64, &[u8])) {
    settle(&mut log);
    let seals: Vec<u64> = log
        .ring
        .iter()
        .rev()
        .take_while(|record| record.kind == RecordKind::Seal)
        .map(|record| log.region.ring_first_block() + record.offset)
        .collect();
    drop(log);
    for lba in seals {
        namespace(lba * LBA as u64, &[0u8; LBA]);
    }
}

/// wal::record::corrupt at the tail: the log goes idle after its last
/// appends and seals them, so damage to the last acknowledged entry is
/// known damage: recovery skips it, cuts the group there and keeps it from
/// voting until a leader repairs it, never a torn tail dropped in silence.
/// Without the seal nothing after the entry proved it durable, and recovery
/// dropped it (and an acknowledged write with it).
#[test]
fn wal_idle_seal_makes_damage_to_the_last_acknowledged_record_known() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    for index in 1..=3 {
        let ticket = log.append(1, index, 1, &payload(1, index, 1, 100)).expect("append");
        log.wait_durable(ticket).expect("durable");
    }
    settle(&mut log);
    assert!(log.stats().seals >= 1, "the idle log wrote a seal");
    let sequence =
        log.ring.iter().rev().find(|record| record.kind == RecordKind::Entry).expect("entry").sequence;
    let (damaged, _) = last_record(&log);
    let writes = log.stats().writes;
    settle(&mut log);
    assert_eq!(log.stats().writes, writes, "one seal per idle period, not one per turn");
    drop(log);
    namespace.write_bytes(damaged * LBA as u64 + 80, b"bit rot");

    let log = open_log(namespace.as_ref(), region, small_options()).expect("known damage is skipped");
    let repaired = log.repaired().expect("the skip is reported");
    assert_eq!((repaired.sequence, repaired.lba), (sequence, damaged));
    assert_eq!(repaired.cut, BTreeMap::from([(1, 2)]));
    assert_eq!(log.unproven_tail(), None);
    assert_eq!(log.entry_range(1), Some((1, 2)));
    assert_eq!(log.may_have_lost_after(1), Some(2));
    assert!(log.loss_is_known(1), "a known loss, refused whatever the policy for unproven tails");
}

/// wal::record::corrupt past the last proof: a crash before the seal
/// landed leaves the last entry unproven; damaged, it is dropped (a torn
/// write looks the same), and recovery says so for every group, with the
/// last index each still holds. A tail where no record was begun is clean.
#[test]
fn wal_unproven_tail_dropped_is_reported_per_group() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    let ticket = log.append(2, 1, 1, &payload(2, 1, 1, 100)).expect("append");
    log.wait_durable(ticket).expect("durable");
    for index in 1..=3 {
        let ticket = log.append(1, index, 1, &payload(1, index, 1, 100)).expect("append");
        log.wait_durable(ticket).expect("durable");
    }
    let (damaged, _) = last_record(&log);
    let write = |offset: u64, bytes: &[u8]| namespace.write_bytes(offset, bytes);
    crash_before_the_seal(log, &write);

    let log = open_log(namespace.as_ref(), region, small_options()).expect("clean tail");
    assert_eq!(log.unproven_tail(), None, "zeroes where the seal was: nothing begun, nothing lost");
    assert_eq!(log.may_have_lost_after(1), None);
    assert_eq!(log.entry_range(1), Some((1, 3)));
    crash_before_the_seal(log, &write);
    namespace.write_bytes(damaged * LBA as u64 + 80, b"bit rot");

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("an unproven tail is dropped");
    assert_eq!(log.entry_range(1), Some((1, 2)));
    let tail = log.unproven_tail().expect("the drop is reported");
    assert_eq!(tail.lba, damaged);
    assert_eq!(log.may_have_lost_after(1), Some(2));
    assert_eq!(log.may_have_lost_after(2), Some(1), "which group lost a record is unknown");
    assert_eq!(log.may_have_lost_after(7), Some(0));

    // A restart before a leader brought the groups past that point keeps
    // them listed (the seal of the idle log carries them), until each is
    // marked proven.
    settle(&mut log);
    drop(log);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.unproven_tail(), None, "this recovery dropped nothing");
    assert_eq!(log.may_have_lost_after(1), Some(2));
    assert_eq!(log.may_have_lost_after(2), Some(1));
    assert_eq!(log.may_have_lost_after(7), None, "a group with no state is listed for one open only");
    log.mark_proven(1);
    settle(&mut log);
    drop(log);
    let log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.may_have_lost_after(1), None);
    assert_eq!(log.may_have_lost_after(2), Some(1));
}

#[test]
fn wal_write_torn_tail_is_dropped() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    for index in 1..=5 {
        let ticket = log.append(1, index, 1, &payload(1, index, 1, 6000)).expect("append");
        log.wait_durable(ticket).expect("durable");
    }
    let (lba, blocks) = last_record(&log);
    assert_eq!(blocks, 2);
    crash_before_the_seal(log, &|offset, bytes| namespace.write_bytes(offset, bytes));
    // Only the first block of the last record reached the medium.
    namespace.write_bytes((lba + 1) * LBA as u64, &[0u8; LBA]);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("a torn tail is not fatal");
    assert_eq!(log.entry_range(1), Some((1, 4)));
    let ticket = log.append(1, 5, 2, b"rewritten").expect("append at the tail");
    log.wait_durable(ticket).expect("durable");
    drop(log);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(&log.read_blocking(1, 5).expect("read").payload[..], b"rewritten");
}

#[test]
fn stale_records_of_a_torn_write_are_not_resurrected() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    let ticket = log.append(1, 1, 1, &payload(1, 1, 1, 100)).expect("append");
    log.wait_durable(ticket).expect("durable");
    // Entries 2 and 3 go out in one write of which only entry 3 lands.
    log.append(1, 2, 1, &payload(1, 2, 1, 100)).expect("append");
    let ticket = log.append(1, 3, 1, &payload(1, 3, 1, 100)).expect("append");
    log.wait_durable(ticket).expect("durable");
    let entry_two = log.region.ring_first_block()
        + log
            .ring
            .iter()
            .find(|record| record.kind == RecordKind::Entry && record.index == 2)
            .expect("entry 2")
            .offset;
    drop(log);
    namespace.write_bytes(entry_two * LBA as u64, &[0u8; LBA]);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("torn, not corrupt");
    assert_eq!(log.entry_range(1), Some((1, 1)));
    // The new entry 2 has the size of the old one, so the stale entry 3 sits
    // exactly where the next record would be.
    let ticket = log.append(1, 2, 2, &payload(1, 2, 2, 100)).expect("append");
    log.wait_durable(ticket).expect("durable");
    drop(log);
    let log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.entry_range(1), Some((1, 2)), "the stale entry 3 stays dead");
    assert_eq!(
        log.unproven_tail(),
        None,
        "a leftover of a dropped tail is not damage to an acknowledged record"
    );
    assert_eq!(log.term_of(1, 2), Some(2));
}
