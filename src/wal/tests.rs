//! Tests of the shard log: round trips, group commit, truncate and purge,
//! ring reclaim, recovery of torn tails and refusal of corruption, and a
//! property test against an in-memory model with restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::format::RecordKind;
use super::*;
use crate::nvme::memory::MemoryNamespace;
use crate::nvme::{Namespace, QueuePairConfig};

mod committed;
mod repair;
mod snapshot_repair;
mod tail;
use tail::last_record;

pub(crate) const LBA: usize = 4096;

/// A formatted namespace with one shard of `blocks` blocks in all.
pub(crate) fn format_namespace(namespace: &dyn Namespace, groups_max: u32) -> ShardRegion {
    let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
    let (superblock, _) = superblock::open_or_format(
        queue.as_mut(),
        FormatOptions { shards: 1, groups_per_shard_max: groups_max, member_id: 0 },
    )
    .expect("format");
    superblock.region(0)
}

pub(crate) fn open_log(
    namespace: &dyn Namespace,
    region: ShardRegion,
    options: LogOptions,
) -> Result<ShardLog, WalError> {
    let queue = namespace
        .open_queue_pair(&QueuePairConfig { depth: 64, registered_buffer_bytes: 1 << 20 })
        .expect("queue pair");
    ShardLog::open(queue, region, options)
}

fn small_options() -> LogOptions {
    LogOptions {
        batch_bytes_max: 64 << 10,
        inflight_writes_max: 4,
        cache_bytes_max: 0,
        ..LogOptions::default()
    }
}

fn payload(group: u32, index: u64, term: u64, len: usize) -> Vec<u8> {
    let seed = format!("g{group}i{index}t{term}|");
    seed.bytes().cycle().take(len.max(seed.len())).collect()
}

fn memory(blocks: u64) -> (Arc<MemoryNamespace>, ShardRegion) {
    let namespace = Arc::new(MemoryNamespace::new(LBA as u32, blocks));
    let region = format_namespace(namespace.as_ref(), 16);
    (namespace, region)
}

#[test]
fn round_trip_across_groups_and_a_restart() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    let mut last = None;
    for index in 1..=50u64 {
        for group in [0u32, 4, 8] {
            let bytes = payload(group, index, 1, 100 + index as usize * 37);
            last = Some(log.append(group, index, 1, &bytes).expect("append"));
        }
    }
    log.wait_durable(last.expect("appended")).expect("durable");
    drop(log);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    for group in [0u32, 4, 8] {
        assert_eq!(log.entry_range(group), Some((1, 50)));
        for index in 1..=50u64 {
            let entry = log.read_blocking(group, index).expect("read");
            assert_eq!(&entry.payload[..], &payload(group, index, 1, 100 + index as usize * 37)[..]);
            assert_eq!(entry.term, 1);
        }
    }
    assert!(log.stats().reads_from_device >= 150, "reads after a restart come from the device");
}

#[test]
fn one_tick_is_one_write_and_durability_is_reported_in_order() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, LogOptions::default()).expect("open");
    let mut tickets = Vec::new();
    for index in 1..=10u64 {
        for group in 0..3u32 {
            tickets.push(log.append(group, index, 1, &payload(group, index, 1, 2300)).expect("append"));
        }
    }
    let writes_before = log.stats().writes;
    log.tick();
    assert_eq!(log.stats().writes - writes_before, 1, "30 appends of one tick go out as one write");
    log.wait_durable(*tickets.last().expect("tickets")).expect("durable");
    for ticket in &tickets {
        assert!(log.is_durable(*ticket).expect("no failure"));
    }
    settle(&mut log);
    drop(log);
    // The ring holds the records in the order they were appended, across groups.
    let log = open_log(namespace.as_ref(), region, LogOptions::default()).expect("reopen");
    assert_eq!(log.ring.back().map(|record| record.kind), Some(RecordKind::Seal), "the idle log sealed them");
    let order: Vec<(u32, u64)> = log
        .ring
        .iter()
        .filter(|record| record.kind != RecordKind::Seal)
        .map(|record| (record.group, record.index))
        .collect();
    let expected: Vec<(u32, u64)> =
        (1..=10u64).flat_map(|index| (0..3u32).map(move |group| (group, index))).collect();
    assert_eq!(order, expected);
}

#[test]
fn appends_must_follow_the_last_index() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    log.append(1, 5, 1, b"first").expect("any index starts a log");
    let error = log.append(1, 7, 1, b"gap").unwrap_err();
    assert!(matches!(error, WalError::IndexGap { group: 1, index: 7, expected: 6 }), "{error}");
    let error = log.append(1, 2, 1, b"x".repeat(70_000).as_slice()).unwrap_err();
    assert!(matches!(error, WalError::EntryTooLarge { .. }), "{error}");
}

#[test]
fn a_truncated_entry_never_comes_back() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    for index in 1..=10 {
        log.append(3, index, 1, &payload(3, index, 1, 500)).expect("append");
    }
    log.truncate(3, 6).expect("truncate");
    assert_eq!(log.last_index(3), Some(5), "readers stop seeing truncated entries at once");
    for index in 6..=8 {
        log.append(3, index, 2, &payload(3, index, 2, 900)).expect("append after truncate");
    }
    let ticket = log.truncate(3, 8).expect("truncate again");
    log.wait_durable(ticket).expect("durable");
    drop(log);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.entry_range(3), Some((1, 7)));
    for index in 6..=7 {
        let entry = log.read_blocking(3, index).expect("read");
        assert_eq!(entry.term, 2, "entry {index} is the rewritten one");
        assert_eq!(&entry.payload[..], &payload(3, index, 2, 900)[..]);
    }
    assert!(matches!(log.read_blocking(3, 8), Err(WalError::NotFound { .. })));
}

#[test]
fn votes_survive_a_restart() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    log.save_vote(2, b"term 3 for node 1").expect("vote");
    let ticket = log.save_vote(2, b"term 4 for node 2").expect("vote");
    log.wait_durable(ticket).expect("durable");
    drop(log);
    let log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.vote(2), Some(&b"term 4 for node 2"[..]));
    assert_eq!(log.vote(3), None);
}

#[test]
fn purge_lets_the_ring_wrap_many_times() {
    // A ring of about 1 MiB, written 20 times over.
    let (namespace, region) = memory(300 + 2 + 256);
    let options = small_options();
    let mut log = open_log(namespace.as_ref(), region, options.clone()).expect("open");
    let ring_bytes = log.stats().ring_bytes;
    let entry_bytes = 3000;
    let total = 20 * ring_bytes / 4096;
    for index in 1..=total {
        let group = (index % 3) as u32;
        let group_index = index / 3 + 1;
        let ticket =
            log.append(group, group_index, 1, &payload(group, group_index, 1, entry_bytes)).expect("append");
        if group_index > 20 {
            log.purge(group, group_index - 20, 1).expect("purge");
        }
        if index % 16 == 0 {
            log.wait_durable(ticket).expect("durable");
        }
    }
    let ticket = log.save_vote(0, b"vote").expect("vote");
    log.wait_durable(ticket).expect("durable");
    let stats = log.stats();
    assert!(stats.checkpoints >= 10, "reclaim wrote {} checkpoints", stats.checkpoints);
    assert!(stats.bytes_written > 10 * ring_bytes);
    let ranges: Vec<_> = (0..3).map(|group| log.entry_range(group)).collect();
    drop(log);

    let mut log = open_log(namespace.as_ref(), region, options).expect("reopen after wrapping");
    for (group, range) in ranges.iter().enumerate() {
        assert_eq!(log.entry_range(group as u32), *range, "group {group}");
        let (first, last) = range.expect("entries");
        for index in first..=last {
            let entry = log.read_blocking(group as u32, index).expect("read");
            assert_eq!(&entry.payload[..], &payload(group as u32, index, 1, entry_bytes)[..]);
        }
    }
    assert_eq!(log.vote(0), Some(&b"vote"[..]));
}

#[test]
fn a_full_ring_is_a_clear_error() {
    let (namespace, region) = memory(300 + 2 + 256);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    let mut outcome = Ok(());
    for index in 1..=700u64 {
        let ticket = log.append(0, index, 1, &[7u8; 4000]).expect("append");
        outcome = log.wait_durable(ticket);
        if outcome.is_err() {
            break;
        }
    }
    let error = outcome.unwrap_err();
    assert!(matches!(error, WalError::Full { shard: 0, .. }), "{error}");
    assert!(error.to_string().contains("purge"), "{error}");
}

/// Ticks the log until nothing it sent is in flight any more, sealing it
/// once it is idle as the reactor does when it stays idle.
/// Appends and purges entries of group 15 (3000 bytes each) until
/// reclaim has moved the head past record `sequence`, so recovery no
/// longer replays it.
fn push_head_past(log: &mut ShardLog, sequence: u64) {
    let mut index = log.entry_range(15).map_or(0, |(_, last)| last);
    let mut appended = 0;
    while log.stats().head_sequence <= sequence {
        assert!(appended < 100_000, "the head stayed at record {}", log.stats().head_sequence);
        index += 1;
        appended += 1;
        let ticket = log.append(15, index, 1, &payload(15, index, 1, 3000)).expect("append");
        if index > 4 {
            log.purge(15, index - 4, 1).expect("purge");
        }
        if index % 16 == 0 {
            log.wait_durable(ticket).expect("durable");
            // A newer seal, so the last one, which lists the unproven
            // groups, does not hold the head.
            settle(log);
        }
    }
    let ticket = log.purge(15, index, 1).expect("purge");
    log.wait_durable(ticket).expect("durable");
}

fn settle(log: &mut ShardLog) {
    loop {
        let progress = log.tick() || log.seal_when_idle();
        if log.queue.in_flight() > 0 {
            log.queue.wait().expect("wait");
        } else if !progress {
            return;
        }
    }
}

/// wal::ring::full: entries fill the ring up to its reserve and then wait;
/// a vote, a snapshot and a purge of the group queued behind them still go
/// out (from the reserve), the purge gives the space back, and the waiting
/// entries follow. Before the reserve, the records that free space queued
/// behind the entries waiting for it, and the shard's groups stopped for
/// good.
#[test]
fn wal_ring_full_still_takes_votes_snapshots_and_purges() {
    let (namespace, region) = memory(300 + 2 + 256);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    let ring_bytes = log.stats().ring_bytes;
    let reserve = log.reserve_bytes();
    let entry_bytes = 4000;
    let entries = 2 * ring_bytes / 4096;
    let mut tickets = Vec::new();
    for index in 1..=entries {
        tickets.push(log.append(0, index, 1, &payload(0, index, 1, entry_bytes)).expect("append"));
    }
    settle(&mut log);
    let waiting = tickets.iter().filter(|ticket| !log.is_durable(**ticket).expect("no failure")).count();
    assert!(waiting > 0, "more entries than the ring holds wait for room");
    let used = log.stats().used_bytes;
    assert!(
        used <= ring_bytes - reserve,
        "entries took {used} bytes of the reserve ({reserve} of {ring_bytes})"
    );

    tracing::info!("a vote, a snapshot and a purge go ahead of the waiting entries");
    let vote = log.save_vote(0, b"term 2").expect("vote");
    let snapshot = log.write_snapshot(0, 100, 1, b"state at 100").expect("snapshot");
    settle(&mut log);
    assert!(log.is_durable(vote).expect("no failure"), "the vote went out of the reserve");
    log.wait_snapshot_durable(snapshot).expect("the snapshot's reference went out of the reserve");
    let purge = log.purge(0, 100, 1).expect("purge");
    settle(&mut log);
    assert!(log.is_durable(purge).expect("no failure"), "the purge went out of the reserve");

    tracing::info!("the purge frees the ring: the waiting entries follow, in order");
    let mut purged_up_to = 100;
    while tickets.iter().any(|ticket| !log.is_durable(*ticket).expect("no failure")) {
        let durable =
            tickets.iter().take_while(|ticket| log.is_durable(**ticket).expect("ok")).count() as u64;
        if durable > purged_up_to + 20 {
            purged_up_to = durable - 10;
            log.purge(0, purged_up_to, 1).expect("purge");
        }
        settle(&mut log);
    }
    drop(log);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    assert_eq!(log.vote(0), Some(&b"term 2"[..]));
    assert_eq!(log.snapshot(0).map(|snapshot| snapshot.index), Some(100));
    let (first, last) = log.entry_range(0).expect("entries");
    assert_eq!((first, last), (purged_up_to + 1, entries));
    for index in first..=last {
        let entry = log.read_blocking(0, index).expect("read");
        assert_eq!(&entry.payload[..], &payload(0, index, 1, entry_bytes)[..]);
    }
}

/// Two snapshots of a group, an older one built here and a newer one
/// installed from the leader, finish in the wrong order: the older one's
/// blob write is held back until the newer one is current. The newer one
/// stays current, in memory and after a restart; the older one's space is
/// free again.
#[test]
fn wal_snapshot_older_finishing_last_never_moves_the_current_one_back() {
    let memory_namespace: Arc<dyn Namespace> = Arc::new(MemoryNamespace::new(LBA as u32, 2048));
    let fault = crate::nvme::fault::FaultNamespace::new(memory_namespace.clone());
    let plan = fault.plan();
    let region = format_namespace(&fault, 16);
    let mut log = open_log(&fault, region, small_options()).expect("open");
    plan.delay_write(plan.writes() + 1, std::time::Duration::from_millis(300));
    let older = log.write_snapshot(2, 100, 1, &[1u8; 50_000]).expect("write the older");
    let newer = log.write_snapshot(2, 200, 2, &[2u8; 50_000]).expect("write the newer");
    log.wait_snapshot_durable(newer).expect("the newer is durable");
    assert_eq!(log.snapshot(2).map(|current| current.index), Some(200));
    log.wait_snapshot_durable(older).expect("the older finishes too");
    assert_eq!(log.snapshot(2).map(|current| current.index), Some(200), "the current snapshot moved back");
    let used = log.snapshot_area.used_blocks();
    assert_eq!(used, log.snapshot(2).expect("current").blocks(LBA), "the older blob's space is free");
    drop(log);
    drop(fault);

    let mut log = open_log(memory_namespace.as_ref(), region, small_options()).expect("restarts");
    let (reference, data) = log.read_snapshot_blocking(2).expect("read").expect("a snapshot");
    assert_eq!((reference.index, reference.term), (200, 2));
    assert_eq!(data, vec![2u8; 50_000]);
}

#[test]
fn a_group_past_the_checkpoint_capacity_is_refused() {
    let namespace = MemoryNamespace::new(LBA as u32, 2048);
    let region = format_namespace(&namespace, 2);
    let mut log = open_log(&namespace, region, small_options()).expect("open");
    log.append(0, 1, 1, b"a").expect("group 0");
    log.append(1, 1, 1, b"b").expect("group 1");
    assert!(matches!(log.append(2, 1, 1, b"c"), Err(WalError::TooManyGroups { max: 2, .. })));
}

/// What a shard log must hold, kept in plain maps.
#[derive(Clone, Debug, Default)]
struct Model {
    entries: BTreeMap<u32, BTreeMap<u64, (u64, Vec<u8>)>>,
    purged: BTreeMap<u32, u64>,
    votes: BTreeMap<u32, Vec<u8>>,
    /// Each group's current snapshot: the one that covers most, (index, term).
    snapshots: BTreeMap<u32, ((u64, u64), Vec<u8>)>,
}

#[derive(Clone, Debug)]
enum Operation {
    Append { group: u32, count: u8, len: u16 },
    Truncate { group: u32, back: u8 },
    Purge { group: u32, keep: u8 },
    Vote { group: u32, term: u8 },
    Snapshot { group: u32, len: u16 },
    Restart,
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (0..3u32, 1..8u8, 1..9000u16).prop_map(|(group, count, len)| Operation::Append { group, count, len }),
        1 => (0..3u32, 0..5u8).prop_map(|(group, back)| Operation::Truncate { group, back }),
        2 => (0..3u32, 0..6u8).prop_map(|(group, keep)| Operation::Purge { group, keep }),
        1 => (0..3u32, 0..200u8).prop_map(|(group, term)| Operation::Vote { group, term }),
        1 => (0..3u32, 0..40_000u16).prop_map(|(group, len)| Operation::Snapshot { group, len }),
        1 => Just(Operation::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_with_restarts_match_the_model(operations in proptest::collection::vec(operation(), 1..60)) {
        // A small ring so the sequences wrap and reclaim.
        let namespace = MemoryNamespace::new(LBA as u32, 2 + 12 + 400);
        let region = format_namespace(&namespace, 8);
        let options = LogOptions { batch_bytes_max: 64 << 10, inflight_writes_max: 2, cache_bytes_max: 32 << 10, ..LogOptions::default() };
        let mut log = open_log(&namespace, region, options.clone()).expect("open");
        let mut model = Model::default();
        let mut term = 1u64;
        for operation in operations {
            match operation {
                Operation::Append { group, count, len } => {
                    let entries = model.entries.entry(group).or_default();
                    let first = entries.keys().next_back().map(|last| last + 1)
                        .or(model.purged.get(&group).map(|purged| purged + 1)).unwrap_or(1);
                    for next in first..first + u64::from(count) {
                        let bytes = payload(group, next, term, len as usize);
                        let ticket = log.append(group, next, term, &bytes).expect("append");
                        match log.wait_durable(ticket) {
                            Ok(()) => {}
                            Err(WalError::Full { .. }) => {
                                // The model purges too little; make room the way Raft would, by purging.
                                let last = next;
                                log.purge(group, last, term).expect("purge");
                                for (other, entries) in model.entries.iter_mut() {
                                    if let Some(&other_last) = entries.keys().next_back() {
                                        log.purge(*other, other_last, term).expect("purge");
                                        model.purged.insert(*other, other_last.max(*model.purged.get(other).unwrap_or(&0)));
                                        entries.clear();
                                    }
                                }
                                model.purged.insert(group, last);
                                model.entries.entry(group).or_default().clear();
                                let ticket = log.save_vote(group, b"sync").expect("vote");
                                log.wait_durable(ticket).expect("durable after purging everything");
                                model.votes.insert(group, b"sync".to_vec());
                                break;
                            }
                            Err(error) => panic!("append failed: {error}"),
                        }
                        model.entries.entry(group).or_default().insert(next, (term, bytes));
                    }
                }
                Operation::Truncate { group, back } => {
                    let entries = model.entries.entry(group).or_default();
                    if let Some(&last) = entries.keys().next_back() {
                        let from = last.saturating_sub(u64::from(back)).max(*entries.keys().next().expect("entries"));
                        let ticket = log.truncate(group, from).expect("truncate");
                        log.wait_durable(ticket).expect("durable");
                        entries.retain(|index, _| *index < from);
                        term += 1;
                    }
                }
                Operation::Purge { group, keep } => {
                    let entries = model.entries.entry(group).or_default();
                    if let Some(&last) = entries.keys().next_back() {
                        let upto = last.saturating_sub(u64::from(keep));
                        if let Some((entry_term, _)) = entries.get(&upto).cloned() {
                            let ticket = log.purge(group, upto, entry_term).expect("purge");
                            log.wait_durable(ticket).expect("durable");
                            entries.retain(|index, _| *index > upto);
                            model.purged.insert(group, upto);
                        }
                    }
                }
                Operation::Vote { group, term: vote_term } => {
                    let vote = format!("vote {vote_term}").into_bytes();
                    let ticket = log.save_vote(group, &vote).expect("vote");
                    log.wait_durable(ticket).expect("durable");
                    model.votes.insert(group, vote);
                }
                Operation::Snapshot { group, len } => {
                    let data = payload(group, u64::from(len), term, len as usize);
                    let ticket = log.write_snapshot(group, u64::from(len), term, &data).expect("snapshot");
                    log.wait_snapshot_durable(ticket).expect("durable");
                    let covers = (u64::from(len), term);
                    if model.snapshots.get(&group).is_none_or(|(current, _)| *current <= covers) {
                        model.snapshots.insert(group, (covers, data));
                    }
                }
                Operation::Restart => {
                    drop(log);
                    log = open_log(&namespace, region, options.clone()).expect("reopen");
                }
            }
            // After every step the log answers as the model does.
            for group in 0..3u32 {
                let entries = model.entries.get(&group).cloned().unwrap_or_default();
                let expected_range = entries.keys().next().map(|first| (*first, *entries.keys().next_back().expect("last")));
                prop_assert_eq!(log.entry_range(group), expected_range, "group {}", group);
                for (index, (entry_term, bytes)) in &entries {
                    let entry = log.read_blocking(group, *index).expect("read");
                    prop_assert_eq!(entry.term, *entry_term);
                    prop_assert_eq!(&entry.payload[..], &bytes[..]);
                }
                prop_assert_eq!(log.vote(group), model.votes.get(&group).map(|vote| &vote[..]));
                let snapshot = log.read_snapshot_blocking(group).expect("read snapshot").map(|(_, data)| data);
                prop_assert_eq!(snapshot.as_ref(), model.snapshots.get(&group).map(|(_, data)| data));
            }
        }
    }
}

/// A namespace file of `bytes` on the disk (never tmpfs: O_DIRECT).
fn uring_file(directory: &tempfile::TempDir, bytes: u64) -> Arc<dyn Namespace> {
    let path = directory.path().join("namespace");
    let options =
        crate::nvme::uring::UringOptions { namespace_bytes: bytes, lba_bytes: LBA as u32, create: true };
    Arc::new(crate::nvme::uring::UringNamespace::open(&path, &options).expect("open the namespace file"))
}

fn disk_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nvkv-wal-")
        .tempdir_in(std::env::temp_dir())
        .expect("temporary directory")
}

#[test]
fn round_trip_on_the_io_uring_file_backend_in_every_durability_mode() {
    let directory = disk_tempdir();
    let create = || {
        let _ = std::fs::remove_file(directory.path().join("namespace"));
        uring_file(&directory, 16 << 20)
    };
    round_trip_in_every_durability_mode(&create, &|| uring_file(&directory, 16 << 20));
}

#[test]
#[cfg(feature = "spdk")]
fn round_trip_on_the_spdk_backend_in_every_durability_mode() {
    // Namespace 2: the namespace suite writes over namespace 1 meanwhile.
    let Some(options) = crate::nvme::spdk::test_target(2, "the shard log round trip") else { return };
    let open = || -> Arc<dyn Namespace> {
        Arc::new(crate::nvme::spdk::SpdkNamespace::open(&options).expect("open the spdk namespace"))
    };
    let create = || {
        let namespace = open();
        wipe_superblock(namespace.as_ref());
        namespace
    };
    round_trip_in_every_durability_mode(&create, &open);
}

/// Zeroes both superblock copies, so the next open formats the namespace
/// anew: a target's namespace keeps what earlier runs wrote.
#[cfg(feature = "spdk")]
fn wipe_superblock(namespace: &dyn Namespace) {
    let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
    let zeroes = queue.allocate(2 * superblock::SUPERBLOCK_BYTES);
    blocking::write(queue.as_mut(), 0, zeroes, true).expect("zero the superblock copies");
}

/// Appends in every durability mode on a namespace from `create` (blank),
/// opens it again with `reopen`, and reads every entry back.
fn round_trip_in_every_durability_mode(
    create: &dyn Fn() -> Arc<dyn Namespace>,
    reopen: &dyn Fn() -> Arc<dyn Namespace>,
) {
    for durability in [Durability::Fua, Durability::Flush, Durability::None] {
        let namespace = create();
        let region = format_namespace(namespace.as_ref(), 16);
        let options = LogOptions { durability, ..small_options() };
        let mut log = open_log(namespace.as_ref(), region, options.clone()).expect("open");
        let mut tickets = Vec::new();
        for index in 1..=200u64 {
            let group = (index % 4) as u32;
            let group_index = index / 4 + 1;
            tickets.push(
                log.append(group, group_index, 1, &payload(group, group_index, 1, 2300)).expect("append"),
            );
            if index % 7 == 0 {
                log.tick();
            }
        }
        log.wait_durable(*tickets.last().expect("tickets")).expect("durable");
        if durability == Durability::Flush {
            assert!(log.stats().flushes >= 1, "flush mode flushes");
        }
        drop(log);
        drop(namespace);
        let namespace = reopen();
        let mut log = open_log(namespace.as_ref(), region, options).expect("reopen");
        for index in 1..=200u64 {
            let group = (index % 4) as u32;
            let group_index = index / 4 + 1;
            let entry = log.read_blocking(group, group_index).expect("read");
            assert_eq!(&entry.payload[..], &payload(group, group_index, 1, 2300)[..], "{durability:?}");
        }
    }
}

#[test]
fn wal_write_fail_stops_the_log_and_nothing_after_is_durable() {
    let directory = disk_tempdir();
    let fault = crate::nvme::fault::FaultNamespace::new(uring_file(&directory, 16 << 20));
    let plan = fault.plan();
    let region = format_namespace(&fault, 16);
    let mut log = open_log(&fault, region, small_options()).expect("open");
    let first = log.append(1, 1, 1, b"one").expect("append");
    log.wait_durable(first).expect("durable");
    plan.fail_write(plan.writes() + 1);
    let second = log.append(1, 2, 1, b"two").expect("append");
    let error = log.wait_durable(second).unwrap_err();
    assert!(matches!(error, WalError::Failed { shard: 0, .. }), "{error}");
    assert!(error.to_string().contains("injected"), "{error}");
    assert!(log.is_durable(first).expect("earlier tickets stay durable"));
    assert!(log.is_durable(second).is_err(), "the failed write is never reported durable");
    assert!(
        matches!(log.append(1, 3, 1, b"three"), Err(WalError::Failed { .. })),
        "the log refuses new work"
    );
}

#[test]
fn wal_flush_fail_stops_the_log_in_flush_mode() {
    let directory = disk_tempdir();
    let fault = crate::nvme::fault::FaultNamespace::new(uring_file(&directory, 16 << 20));
    let plan = fault.plan();
    let region = format_namespace(&fault, 16);
    let options = LogOptions { durability: Durability::Flush, ..small_options() };
    let mut log = open_log(&fault, region, options).expect("open");
    plan.fail_flush(plan.flushes() + 1);
    let ticket = log.append(2, 1, 1, b"entry").expect("append");
    let error = log.wait_durable(ticket).unwrap_err();
    assert!(error.to_string().contains("flush failed"), "{error}");
    assert_eq!(plan.flushes(), 1, "the failed flush is not retried");
}

#[test]
fn wal_write_torn_by_the_device_loses_only_what_was_not_durable() {
    let directory = disk_tempdir();
    let inner = uring_file(&directory, 16 << 20);
    let fault = crate::nvme::fault::FaultNamespace::new(inner.clone());
    let plan = fault.plan();
    let region = format_namespace(&fault, 16);
    let mut log = open_log(&fault, region, small_options()).expect("open");
    for index in 1..=10 {
        let ticket = log.append(5, index, 1, &payload(5, index, 1, 3000)).expect("append");
        log.wait_durable(ticket).expect("durable");
    }
    // The next write carries entries 11..=14 (one block each); one block lands.
    plan.tear_write(plan.writes() + 1, 1);
    let mut last = None;
    for index in 11..=14 {
        last = Some(log.append(5, index, 1, &payload(5, index, 1, 3000)).expect("append"));
    }
    assert!(log.wait_durable(last.expect("ticket")).is_err(), "a torn write is never durable");
    drop(log);
    drop(fault);

    // "Restart": the same file, without the fault wrapper.
    let mut log = open_log(inner.as_ref(), region, small_options()).expect("recovers from a torn write");
    let (first, last) = log.entry_range(5).expect("entries");
    assert_eq!(first, 1);
    assert!((10..=11).contains(&last), "durable entries kept, at most the landed block added: last = {last}");
    for index in first..=last {
        assert_eq!(&log.read_blocking(5, index).expect("read").payload[..], &payload(5, index, 1, 3000)[..]);
    }
}

#[test]
fn records_of_an_earlier_format_are_not_this_logs() {
    let namespace = MemoryNamespace::new(LBA as u32, 2048);
    let region = format_namespace(&namespace, 16);
    let mut log = open_log(&namespace, region, small_options()).expect("open");
    for index in 1..=200 {
        let ticket = log.append(1, index, 1, &payload(1, index, 1, 100)).expect("append");
        log.wait_durable(ticket).expect("durable");
    }
    drop(log);
    // The operator wipes the superblock; nvkv formats the namespace anew.
    namespace.write_bytes(0, &[0u8; 2 * superblock::SUPERBLOCK_BYTES]);
    let new_region = format_namespace(&namespace, 16);
    assert_ne!(new_region.log_id, region.log_id);
    let mut log = open_log(&namespace, new_region, small_options()).expect("open the new log");
    assert_eq!(log.entry_range(1), None, "nothing of the old log is replayed");
    for index in 1..=5 {
        let ticket = log.append(1, index, 2, &payload(1, index, 2, 100)).expect("append");
        log.wait_durable(ticket).expect("durable");
    }
    let (torn_lba, _) = last_record(&log);
    drop(log);
    namespace.write_bytes(torn_lba * LBA as u64, &[0u8; LBA]);
    // The old log's records after the torn one were durable in their own
    // log, not in this one: a torn tail, not corruption.
    let log = open_log(&namespace, new_region, small_options()).expect("a torn tail of the new log");
    assert_eq!(log.entry_range(1), Some((1, 4)));
}

#[test]
fn snapshots_replace_each_other_and_survive_restarts() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    assert_eq!(log.read_snapshot_blocking(1).expect("read"), None);
    let first = vec![1u8; 300_000];
    let ticket = log.write_snapshot(1, 100, 2, &first).expect("write");
    log.wait_snapshot_durable(ticket).expect("durable");
    drop(log);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    let (reference, data) = log.read_snapshot_blocking(1).expect("read").expect("a snapshot");
    assert_eq!((reference.index, reference.term), (100, 2));
    assert_eq!(data, first);
    let used_by_one = log.snapshot_area.used_blocks();
    let second = vec![2u8; 300_000];
    let ticket = log.write_snapshot(1, 200, 3, &second).expect("write");
    assert_eq!(
        log.snapshot(1).map(|current| current.index),
        Some(100),
        "the old one stays current until then"
    );
    log.wait_snapshot_durable(ticket).expect("durable");
    assert_eq!(log.snapshot_area.used_blocks(), used_by_one, "the replaced snapshot's space is free again");
    drop(log);

    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("reopen");
    let (reference, data) = log.read_snapshot_blocking(1).expect("read").expect("a snapshot");
    assert_eq!(reference.index, 200);
    assert_eq!(data, second);
}

#[test]
fn a_snapshot_whose_reference_never_became_durable_leaves_the_previous_one() {
    let directory = disk_tempdir();
    let inner = uring_file(&directory, 16 << 20);
    let fault = crate::nvme::fault::FaultNamespace::new(inner.clone());
    let plan = fault.plan();
    let region = format_namespace(&fault, 16);
    let mut log = open_log(&fault, region, small_options()).expect("open");
    let ticket = log.write_snapshot(4, 10, 1, b"the first state").expect("write");
    log.wait_snapshot_durable(ticket).expect("durable");
    // The next write is the second snapshot's blob; the one after it, the
    // record that would make it current, fails.
    plan.fail_write(plan.writes() + 2);
    let ticket = log.write_snapshot(4, 20, 1, b"the second state").expect("write");
    assert!(log.wait_snapshot_durable(ticket).is_err(), "the snapshot never became durable");
    drop(log);
    drop(fault);

    let mut log = open_log(inner.as_ref(), region, small_options()).expect("recovers");
    let (reference, data) = log.read_snapshot_blocking(4).expect("read").expect("a snapshot");
    assert_eq!(reference.index, 10);
    assert_eq!(data, b"the first state");
}

#[test]
fn wal_snapshot_corrupt_is_refused_naming_the_lba() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    let ticket = log.write_snapshot(2, 5, 1, &[7u8; 10_000]).expect("write");
    log.wait_snapshot_durable(ticket).expect("durable");
    let lba = region.snapshot_first_block() + log.snapshot(2).expect("snapshot").offset;
    drop(log);
    namespace.write_bytes(lba * LBA as u64 + 5000, b"bit rot");
    // A member with no peer to repair it from (with one, recovery drops
    // the snapshot: see snapshot_repair.rs).
    let alone = LogOptions { repair_snapshots_from_peers: false, ..small_options() };
    let mut log = open_log(namespace.as_ref(), region, alone).expect("the log itself is fine");
    let error = log.read_snapshot_blocking(2).unwrap_err().to_string();
    assert!(error.contains(&format!("at LBA {lba}")) && error.contains("data CRC32C"), "{error}");
}

#[test]
fn snapshots_that_do_not_fit_are_refused_with_the_sizes() {
    let (namespace, region) = memory(2048);
    let mut log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    let area_bytes = region.snapshot_blocks * LBA as u64;
    let error = log.write_snapshot(1, 1, 1, &vec![0u8; area_bytes as usize]).unwrap_err();
    assert!(matches!(error, WalError::SnapshotTooLarge { group: 1, .. }), "{error}");
    let half = vec![0u8; area_bytes as usize / 2];
    let first = log.write_snapshot(1, 1, 1, &half).expect("half fits");
    let error = log.write_snapshot(2, 1, 1, &half).unwrap_err();
    assert!(matches!(error, WalError::SnapshotAreaFull { shard: 0, .. }), "{error}");
    log.wait_snapshot_durable(first).expect("durable");
}

#[test]
fn the_shared_log_appends_snapshots_and_reads_from_tasks() {
    let (namespace, region) = memory(2048);
    let log = open_log(namespace.as_ref(), region, small_options()).expect("open");
    let shared = SharedLog::new(log, std::rc::Rc::new(|| {}));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let ticker = shared.clone();
        let driving = tokio::task::spawn_local(async move {
            loop {
                ticker.tick();
                tokio::task::yield_now().await;
            }
        });
        // Appenders on two groups, concurrently, as a shard's tasks would.
        let mut appenders = Vec::new();
        for group in [0u32, 1] {
            let log = shared.clone();
            appenders.push(tokio::task::spawn_local(async move {
                for index in 1..=20 {
                    log.append(group, index, 1, &payload(group, index, 1, 500)).await.expect("append");
                }
            }));
        }
        for appender in appenders {
            appender.await.expect("appender");
        }
        shared.write_snapshot(0, 20, 1, b"group zero at 20").await.expect("snapshot");
        shared.purge(0, 20, 1).await.expect("purge");
        let (reference, data) = shared.read_snapshot(0).await.expect("read").expect("a snapshot");
        assert_eq!((reference.index, &data[..]), (20, &b"group zero at 20"[..]));
        let entry = shared.read(1, 7).await.expect("read an entry");
        assert_eq!(&entry.payload[..], &payload(1, 7, 1, 500)[..]);
        driving.abort();
    });
    assert_eq!(shared.with(|log| (log.entry_range(0), log.entry_range(1))), (None, Some((1, 20))));
}

#[test]
fn reads_wait_for_a_queue_slot_instead_of_taking_one_a_write_needs() {
    let (namespace, region) = memory(2048);
    // A queue of 8: 4 group-commit writes, a checkpoint and a flush leave 2
    // slots for reads.
    let options = LogOptions { queue_depth: 8, cache_bytes_max: 0, ..small_options() };
    let mut log = open_log(namespace.as_ref(), region, options.clone()).expect("open");
    for index in 1..=40 {
        log.append(1, index, 1, &payload(1, index, 1, 300)).expect("append");
    }
    let ticket = log.append(1, 41, 1, b"last").expect("append");
    log.wait_durable(ticket).expect("durable");
    drop(log);
    let mut log = open_log(namespace.as_ref(), region, options).expect("reopen: nothing cached");
    let tickets: Vec<_> = (1..=40)
        .map(|index| match log.read(1, index).expect("read") {
            ReadRequest::Pending(ticket) => ticket,
            ReadRequest::Ready(_) => panic!("entry {index} cannot be cached after a restart"),
        })
        .collect();
    // Appends keep going while forty reads wait for slots.
    let ticket = log.append(1, 42, 1, b"more").expect("append");
    log.wait_durable(ticket).expect("a write is never refused for want of a slot");
    for (position, ticket) in tickets.into_iter().enumerate() {
        let index = position as u64 + 1;
        let entry = loop {
            log.tick();
            if let Some(result) = log.take_read(ticket) {
                break result.expect("read");
            }
        };
        assert_eq!(&entry.payload[..], &payload(1, index, 1, 300)[..]);
    }
}
