//! A damaged snapshot: recovery drops it with its group's log (the entries
//! after it cannot be applied without it), keeps the vote, makes the drop
//! durable with a reset record, and the group refuses votes until a
//! leader has brought it past the last index it held, across restarts;
//! the other groups keep everything.

use super::*;

fn append_all(log: &mut ShardLog, group: u32, indexes: std::ops::RangeInclusive<u64>, term: u64) {
    let mut ticket = None;
    for index in indexes {
        ticket = Some(log.append(group, index, term, &payload(group, index, term, 100)).expect("append"));
    }
    log.wait_durable(ticket.expect("at least one entry")).expect("durable");
}

fn snapshot(log: &mut ShardLog, group: u32, index: u64, term: u64, data: &[u8]) {
    let ticket = log.write_snapshot(group, index, term, data).expect("write");
    log.wait_snapshot_durable(ticket).expect("durable");
}

/// wal::snapshot::corrupt at rest: a bit flip in the blob of group 1's
/// snapshot. Before, the group's start stopped the shard naming the LBA;
/// now recovery succeeds, group 1 is empty but for its vote and may have
/// lost everything up to its last entry (10), known, so it refuses votes
/// whatever the policy for unproven tails; group 2 keeps its snapshot and
/// entries. A second recovery before any repair still refuses. The leader's
/// repair (a snapshot covering less than the damaged one, and entries after
/// it) is what later recoveries replay, and once a committed index past
/// the loss is known the group votes again after a restart.
#[test]
fn wal_snapshot_damaged_drops_the_group_to_be_repaired_by_its_leader() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    append_all(&mut log, 1, 1..=10, 1);
    append_all(&mut log, 2, 1..=10, 1);
    let ticket = log.save_vote(1, b"vote of group 1").expect("vote");
    log.wait_durable(ticket).expect("durable");
    snapshot(&mut log, 1, 8, 1, &[1u8; 10_000]);
    log.purge(1, 5, 1).expect("purge");
    snapshot(&mut log, 2, 6, 1, &[2u8; 10_000]);
    log.set_committed(1, 10);
    log.set_committed(2, 10);
    settle(&mut log);
    let damaged = log.snapshot(1).expect("snapshot");
    let lba = region.snapshot_first_block() + damaged.offset;
    drop(log);
    namespace.write_bytes(lba * LBA as u64 + 5000, b"bit rot");

    let mut log =
        open_log(namespace.as_ref(), region, small_options()).expect("a damaged snapshot is dropped");
    assert_eq!(log.stats().snapshots_repaired, 1);
    assert_eq!(log.snapshot(1), None, "the damaged snapshot is dropped");
    assert_eq!(log.entry_range(1), None, "and the entries that cannot stand without it");
    assert_eq!(log.committed(1), None);
    assert_eq!(log.vote(1), Some(&b"vote of group 1"[..]), "the vote is kept");
    assert_eq!(log.may_have_lost_after(1), Some(10), "lost up to its last entry");
    assert!(log.loss_is_known(1), "refused whatever the policy for unproven tails");
    assert_eq!(log.snapshot(2).map(|reference| reference.index), Some(6), "group 2 keeps its snapshot");
    assert_eq!(log.entry_range(2), Some((1, 10)), "and its entries");
    assert_eq!(log.committed(2), Some(10));
    assert_eq!(log.may_have_lost_after(2), None);
    assert!(!log.loss_is_known(2));
    settle(&mut log);
    drop(log);

    // A restart before any leader repaired it.
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open again");
    assert_eq!(log.stats().snapshots_repaired, 0, "the reset record, not the blob, says it now");
    assert_eq!(log.snapshot(1), None);
    assert_eq!(log.entry_range(1), None);
    assert_eq!(log.may_have_lost_after(1), Some(10));
    assert!(log.loss_is_known(1), "a second recovery still refuses votes");
    assert_eq!(log.entry_range(2), Some((1, 10)));

    // The head passes the reset record (group 2's entries, held by its
    // snapshot now, no longer hold it): the seal keeps the known loss.
    let reset = log.ring.iter().find(|record| record.kind == RecordKind::Reset).expect("a reset").sequence;
    let ticket = log.purge(2, 10, 1).expect("purge");
    log.wait_durable(ticket).expect("durable");
    push_head_past(&mut log, reset);
    settle(&mut log);
    drop(log);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open past the reset");
    assert!(log.ring.iter().all(|record| record.kind != RecordKind::Reset), "the reset is behind the head");
    assert_eq!(log.snapshot(1), None);
    assert_eq!(log.may_have_lost_after(1), Some(10));
    assert!(log.loss_is_known(1), "the seal carries the known loss");

    // The leader sends its snapshot (older than the damaged one), the
    // purge that follows its install, and the entries after it.
    snapshot(&mut log, 1, 7, 2, b"the leader's state");
    log.purge(1, 7, 2).expect("purge");
    append_all(&mut log, 1, 8..=10, 2);
    settle(&mut log);
    drop(log);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open after the repair");
    let (reference, data) = log.read_snapshot_blocking(1).expect("read").expect("the leader's snapshot");
    assert_eq!((reference.index, &data[..]), (7, &b"the leader's state"[..]));
    assert_eq!(log.entry_range(1), Some((8, 10)), "the leader's entries");
    assert_eq!(&log.read_blocking(1, 9).expect("read").payload[..], &payload(1, 9, 2, 100)[..]);
    assert!(log.loss_is_known(1), "no committed index past the loss is known yet");

    // The leader's commit reaches past the loss, and its Raft layer says so.
    append_all(&mut log, 1, 11..=11, 2);
    log.set_committed(1, 11);
    log.mark_proven(1);
    settle(&mut log);
    drop(log);
    let log = open_log(namespace.as_ref(), region, small_options()).expect("open after the proof");
    assert_eq!(log.may_have_lost_after(1), None, "it votes again");
    assert!(!log.loss_is_known(1));
    assert_eq!(log.entry_range(1), Some((8, 11)));
    assert_eq!(log.entry_range(2), None, "purged");
}
