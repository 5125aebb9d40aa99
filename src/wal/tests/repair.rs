//! Damage in the middle of the log: a record later records prove durable
//! is skipped, the groups that may have lost entries with it are cut there
//! and refuse votes, the cut survives restarts, and damage that cannot be
//! skipped safely still stops the shard, naming the record.

use super::*;

/// Appends one record per write, so each later record proves the earlier
/// ones durable; returns the LBA of the record.
fn append_alone(log: &mut ShardLog, group: u32, index: u64, term: u64) -> u64 {
    let ticket = log.append(group, index, term, &payload(group, index, term, 100)).expect("append");
    log.wait_durable(ticket).expect("durable");
    last_record(log).0
}

fn vote_alone(log: &mut ShardLog, group: u32, vote: &[u8]) {
    let ticket = log.save_vote(group, vote).expect("vote");
    log.wait_durable(ticket).expect("durable");
}

/// wal::record::corrupt in the middle: a bit flip in an entry of group 1
/// that later records prove durable. Recovery goes on past it; group 1,
/// whose next entry skips the lost one, is cut at its last entry before the
/// hole; group 3, with no entry after it, may have lost one too; group 2,
/// which continues and voted after the hole, keeps everything and votes;
/// group 4 continues but may have lost its vote. After the leader's
/// repaired entries are appended, a second recovery (which meets the same
/// damaged record again) replays them, not calling them orphans.
#[test]
fn wal_record_damaged_mid_log_is_skipped_and_the_groups_that_lost_entries_are_cut() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    for index in 1..=3 {
        append_alone(&mut log, 1, index, 1);
    }
    append_alone(&mut log, 2, 1, 1);
    append_alone(&mut log, 2, 2, 1);
    append_alone(&mut log, 3, 1, 1);
    append_alone(&mut log, 4, 1, 1);
    append_alone(&mut log, 4, 2, 1);
    let damaged = append_alone(&mut log, 1, 4, 1);
    let sequence = log.ring.back().expect("record").sequence;
    append_alone(&mut log, 1, 5, 1);
    append_alone(&mut log, 1, 6, 1);
    append_alone(&mut log, 2, 3, 1);
    vote_alone(&mut log, 2, b"vote of group 2");
    append_alone(&mut log, 4, 3, 1);
    settle(&mut log);
    drop(log);
    namespace.write_bytes(damaged * LBA as u64 + 100, &[0x55]);

    let mut log =
        open_log(namespace.as_ref(), region, small_options()).expect("the damaged record is skipped");
    let repaired = log.repaired().expect("the skip is reported").clone();
    assert_eq!((repaired.sequence, repaired.lba), (sequence, damaged));
    assert_eq!(repaired.cut, BTreeMap::from([(1, 3), (3, 1)]), "the groups cut, each after its last entry");
    assert_eq!(repaired.vote_unknown, BTreeMap::from([(4, 3)]));
    assert_eq!(log.stats().records_repaired, 1);
    assert_eq!(log.entry_range(1), Some((1, 3)), "group 1's entries after the hole are dropped");
    assert_eq!(log.entry_range(2), Some((1, 3)), "group 2 keeps everything");
    assert_eq!(log.entry_range(3), Some((1, 1)));
    assert_eq!(log.entry_range(4), Some((1, 3)), "group 4 keeps every entry");
    assert_eq!(&log.read_blocking(1, 3).expect("read").payload[..], &payload(1, 3, 1, 100)[..]);
    assert_eq!(log.may_have_lost_after(1), Some(3));
    assert_eq!(log.may_have_lost_after(2), None, "continued and voted after the hole");
    assert_eq!(log.may_have_lost_after(3), Some(1));
    assert_eq!(log.may_have_lost_after(4), Some(3));
    assert_eq!(log.may_have_lost_after(9), Some(0), "the hole may have held a new group's first record");
    for group in [1, 3, 4, 9] {
        assert!(log.loss_is_known(group), "group {group}: a known loss");
    }
    assert!(!log.loss_is_known(2));
    assert_eq!(log.unproven_tail(), None);

    // The leader repairs group 1 with entries of a later term.
    for index in 4..=7 {
        append_alone(&mut log, 1, index, 2);
    }
    log.mark_proven(1);
    settle(&mut log);
    drop(log);

    let log =
        open_log(namespace.as_ref(), region, small_options()).expect("the repaired entries are replayed");
    assert_eq!(log.entry_range(1), Some((1, 7)));
    for index in 4..=7 {
        assert_eq!(log.term_of(1, index), Some(2), "entry {index} is the repaired one");
    }
    assert_eq!(log.term_of(1, 3), Some(1));
    assert_eq!(log.entry_range(2), Some((1, 3)));
    let again = log.repaired().expect("the same record is skipped again");
    assert_eq!(again.lba, damaged);
}

/// A group cut at a damaged record whose log was purged past the cut
/// later (a snapshot holds what the hole held): the cut's truncation stays
/// above the purge point, and the group goes on after it.
#[test]
fn wal_record_damaged_before_a_purge_past_it_cuts_above_the_purge() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    for index in 1..=3 {
        append_alone(&mut log, 1, index, 1);
    }
    let damaged = append_alone(&mut log, 1, 4, 1);
    append_alone(&mut log, 1, 5, 1);
    let ticket = log.purge(1, 6, 1).expect("purge");
    log.wait_durable(ticket).expect("durable");
    append_alone(&mut log, 2, 1, 1);
    settle(&mut log);
    drop(log);
    namespace.write_bytes(damaged * LBA as u64 + 100, &[0x55]);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("skipped");
    assert_eq!(log.repaired().expect("reported").cut.get(&1), Some(&3));
    assert_eq!(log.purged(1), Some((6, 1)));
    append_alone(&mut log, 1, 7, 2);
    settle(&mut log);
    drop(log);
    let log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.entry_range(1), Some((7, 7)));
}

/// A group whose loss the skipped record made known keeps refusing votes
/// (whatever the policy for unproven tails) after the head has passed the
/// damaged record, which recovery then no longer meets: the seal carries
/// the known loss. Before, only the seal's unproven list was left, and a
/// member with `raft.refuse_votes_after_unproven_tail` off voted.
#[test]
fn wal_known_loss_survives_the_head_passing_the_damaged_record() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    append_alone(&mut log, 2, 1, 1);
    let ticket = log.purge(2, 1, 1).expect("purge");
    log.wait_durable(ticket).expect("durable");
    let damaged = append_alone(&mut log, 1, 1, 1);
    let sequence = log.ring.back().expect("record").sequence;
    append_alone(&mut log, 3, 1, 1);
    append_alone(&mut log, 3, 2, 1);
    settle(&mut log);
    drop(log);
    namespace.write_bytes(damaged * LBA as u64 + 100, &[0x55]);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("skipped");
    assert!(log.loss_is_known(2), "cut: no entry after the hole");
    assert!(log.loss_is_known(3), "its first entry skips index 0, which the hole may have held");
    settle(&mut log);
    // Group 3's entries, held by a snapshot now, no longer hold the head.
    let ticket = log.purge(3, 2, 1).expect("purge");
    log.wait_durable(ticket).expect("durable");
    push_head_past(&mut log, sequence);
    settle(&mut log);
    drop(log);

    let log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.repaired(), None, "the damaged record is behind the head");
    for (group, after) in [(2, 1), (3, 0)] {
        assert_eq!(log.may_have_lost_after(group), Some(after));
        assert!(log.loss_is_known(group), "group {group} still refuses whatever the policy");
    }
    assert!(!log.loss_is_known(15));
}

/// Writes entries 1 to 6 of group 1, each in a record of its own, and
/// returns the LBA of each record.
fn six_entries_alone(namespace: &dyn Namespace, region: ShardRegion) -> Vec<u64> {
    let mut log = open_log(namespace, region, small_options()).expect("open");
    (1..=6).map(|index| append_alone(&mut log, 1, index, 1)).collect()
}

/// A damaged record with nothing before it in the ring (the first after
/// the checkpoint) cannot be skipped: nothing says what each group held.
/// The shard stops, naming the record and its LBA.
#[test]
fn wal_record_damaged_at_the_head_is_fatal_and_names_the_lba() {
    let (namespace, region) = memory(2048);
    let lbas = six_entries_alone(namespace.as_ref(), region);
    namespace.write_bytes(lbas[0] * LBA as u64 + 80, b"bit rot");
    let error = open_log(namespace.as_ref(), region, small_options()).err().expect("refused");
    let message = error.to_string();
    assert!(matches!(error, WalError::Corrupt(_)), "{message}");
    assert!(message.contains(&format!("record 1 at LBA {}", lbas[0])), "{message}");
}

/// Two damaged records in one log: the second is not skipped.
#[test]
fn wal_second_damaged_record_is_fatal() {
    let (namespace, region) = memory(2048);
    let lbas = six_entries_alone(namespace.as_ref(), region);
    namespace.write_bytes(lbas[2] * LBA as u64 + 80, b"bit rot");
    namespace.write_bytes(lbas[4] * LBA as u64 + 80, b"bit rot");
    let error = open_log(namespace.as_ref(), region, small_options()).err().expect("refused");
    let message = error.to_string();
    assert!(message.contains(&format!("record 5 at LBA {}", lbas[4])), "{message}");
}

/// The checkpoints are not skipped: with both slots damaged the shard stops.
#[test]
fn wal_checkpoint_damaged_is_still_fatal() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    for index in 1..=3 {
        append_alone(&mut log, 1, index, 1);
    }
    drop(log);
    for slot in 0..2 {
        namespace.write_bytes(region.checkpoint_slot_lba(slot) * LBA as u64 + 40, b"bit rot");
    }
    let error = open_log(namespace.as_ref(), region, small_options()).err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("no valid checkpoint"), "{message}");
}
