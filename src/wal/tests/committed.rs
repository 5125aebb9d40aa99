//! The committed index a group's Raft layer notes in the log: carried by
//! the seal at no write of its own, recovered, kept within the entries the
//! group holds, and absent (not an error) in a log an older build wrote.

use super::*;
use crate::wal::format;

/// Appends entries `from..=to` of `group`, each durable before the next.
fn append_durably(log: &mut ShardLog, group: u32, from: u64, to: u64) {
    for index in from..=to {
        let ticket = log.append(group, index, 1, &payload(group, index, 1, 100)).expect("append");
        log.wait_durable(ticket).expect("durable");
    }
}

/// The ring LBA of the last seal of `log`.
fn last_seal_lba(log: &ShardLog) -> u64 {
    let seal = log.ring.iter().rev().find(|record| record.kind == RecordKind::Seal).expect("a seal");
    log.region.ring_first_block() + seal.offset
}

/// wal::seal::committed: the seal written when the log stays idle carries
/// the committed index each group noted, so it survives a restart; noting
/// one writes nothing in its turn, so one noted just before a crash is not
/// durable (what is durable lags the true committed index, never leads
/// it), and a higher one makes the idle log seal again.
#[test]
fn wal_committed_index_rides_on_the_seal_and_survives_recovery() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    append_durably(&mut log, 1, 1, 4);
    append_durably(&mut log, 2, 1, 2);
    log.set_committed(1, 4);
    log.set_committed(1, 3);
    log.set_committed(2, 1);
    assert_eq!(log.committed(1), Some(4), "a committed index never goes back");
    append_durably(&mut log, 1, 5, 5);
    settle(&mut log);
    let writes = log.stats().writes;
    log.set_committed(1, 5);
    log.tick();
    assert_eq!(log.stats().writes, writes, "noting a committed index writes nothing in the turn");
    // A crash before the log stayed idle long enough to seal again.
    drop(log);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.committed(1), Some(4), "the last seal carried 4; 5 was noted after it");
    assert_eq!(log.committed(2), Some(1));
    assert_eq!(log.committed(3), None, "a group that noted nothing");

    tracing::info!("the recovered index is carried on by the next seal, not lost with the old one");
    append_durably(&mut log, 2, 3, 3);
    settle(&mut log);
    drop(log);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!((log.committed(1), log.committed(2)), (Some(4), Some(1)));

    tracing::info!(
        "a higher index learnt after the last seal (a follower's, from a heartbeat) gets a seal of its own"
    );
    log.set_committed(1, 5);
    let writes = log.stats().writes;
    settle(&mut log);
    assert_eq!(log.stats().writes, writes + 1, "one seal for the new committed index");
    log.set_committed(1, 5);
    settle(&mut log);
    assert_eq!(log.stats().writes, writes + 1, "none for an index already sealed");
    drop(log);
    let log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.committed(1), Some(5));
}

/// wal::seal::committed past the log: recovery never reports a committed
/// index past the last entry the group holds, whatever a seal said, so the
/// Raft layer never applies an entry the member does not have.
#[test]
fn wal_a_committed_index_past_the_groups_last_entry_is_clamped_at_recovery() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    append_durably(&mut log, 1, 1, 6);
    log.set_committed(1, 6);
    let ticket = log.truncate(1, 4).expect("truncate");
    log.wait_durable(ticket).expect("durable");
    settle(&mut log);
    drop(log);

    let log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.entry_range(1), Some((1, 3)));
    assert_eq!(log.committed(1), Some(3), "clamped to the last entry the group holds");
}

/// wal::seal::version_2: a log whose last seal an older build wrote (record
/// version 2, no committed indexes in its payload) still opens, with its
/// unproven groups, and knows no committed index.
#[test]
fn wal_a_version_2_seal_opens_and_carries_no_committed_index() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    append_durably(&mut log, 1, 1, 3);
    log.set_committed(1, 2);
    settle(&mut log);
    let lba = last_seal_lba(&log);
    drop(log);

    tracing::info!("the seal rewritten as an older build wrote it: version 2, group 1 unproven after 3");
    let block = namespace.read_bytes(lba * LBA as u64, LBA);
    let (header, payload, _) = format::decode_record(&block, LBA).expect("the seal decodes");
    assert_eq!(header.kind, RecordKind::Seal);
    assert_eq!(format::decode_seal(payload).expect("payload").committed, BTreeMap::from([(1, 2)]));
    let mut old_payload = 1u32.to_le_bytes().to_vec();
    old_payload.extend_from_slice(&1u32.to_le_bytes());
    old_payload.extend_from_slice(&3u64.to_le_bytes());
    let header = format::RecordHeader { payload_len: old_payload.len() as u32, ..header };
    let mut old = vec![0u8; LBA];
    format::encode_record_version(&header, 2, &old_payload, &mut old);
    namespace.write_bytes(lba * LBA as u64, &old);

    let log = open_log(namespace.as_ref(), region, small_options()).expect("a version 2 seal opens");
    assert_eq!(log.committed(1), None, "a version 2 seal carries no committed index");
    assert_eq!(log.may_have_lost_after(1), Some(3), "its list of unproven groups is read");
    assert_eq!(log.entry_range(1), Some((1, 3)));
}
