//! A member whose shard log has a damaged record in the middle (a bit flip
//! at rest in a record that later records prove was durable) starts again
//! instead of stopping for good: recovery skips the record, cuts the groups
//! that may have lost entries with it, and their leaders repair them, so
//! the member's own store (a serializable read) ends up holding every key.
//! The cluster serves throughout.

mod common;

use common::cluster::*;
use common::*;
use nvkv::little_endian::u64_at;

const GROUPS: usize = 2;
/// Keys written before the damage, and again while the member is down.
const KEYS: usize = 60;
const RECORD_MAGIC: &[u8; 4] = b"NVKL";
const ENTRY_KIND: u8 = 1;

/// A log record found in a namespace file: where it starts, its sequence
/// number and kind, and the log it belongs to.
struct Found {
    byte: u64,
    sequence: u64,
    kind: u8,
    log_id: u64,
}

/// Every log record header in the namespace file (records start on a block
/// boundary, 512 bytes at least), by the record layout of `wal::format`.
fn records_in(namespace: &[u8]) -> Vec<Found> {
    (0..namespace.len() - 4096)
        .step_by(512)
        .filter(|at| &namespace[*at..*at + 4] == RECORD_MAGIC)
        .map(|at| Found {
            byte: at as u64,
            sequence: u64_at(namespace, at + 8),
            kind: namespace[at + 6],
            log_id: u64_at(namespace, at + 64),
        })
        .collect()
}

#[test]
fn a_member_with_a_damaged_record_mid_log_starts_and_its_peers_repair_it() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), GROUPS);
    let mut daemons: Vec<Daemon> = members.iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }

    eprintln!("phase: {KEYS} keys written, every member holds them");
    put_keys_through(&members[0], "before", KEYS);
    stores_converge(&members);

    eprintln!("phase: member 3 killed, one entry in the middle of its log damaged");
    daemons[2].signal(libc::SIGKILL);
    daemons[2].wait_exit();
    let path = directory.path().join("data3").join("namespace");
    let mut namespace = std::fs::read(&path).expect("read the namespace file");
    let records = records_in(&namespace);
    let log_id = records.iter().max_by_key(|record| record.sequence).expect("records").log_id;
    let mut entries: Vec<&Found> =
        records.iter().filter(|record| record.log_id == log_id && record.kind == ENTRY_KIND).collect();
    entries.sort_by_key(|record| record.sequence);
    assert!(entries.len() >= KEYS, "{} entries found in member 3's log", entries.len());
    let damaged = entries[entries.len() / 2];
    eprintln!("damaging record {} at byte {}", damaged.sequence, damaged.byte);
    // The first byte of the entry's payload: the record's CRC no longer holds.
    namespace[damaged.byte as usize + 80] ^= 0x40;
    std::fs::write(&path, &namespace).expect("write the namespace file");
    drop(namespace);

    eprintln!("phase: the other two keep serving while member 3 is down");
    put_keys_through(&members[0], "while-down", KEYS);

    eprintln!("phase: member 3 starts, is repaired, and its own store holds every key");
    daemons[2] = Daemon::start(&members[2].config);
    daemons[2].wait_ready();
    let store = stores_converge(&members);
    assert_eq!(store.len(), 2 * KEYS, "every key written is in every member's store");
    let own = store_of(&members[2]).expect("a serializable read on member 3");
    assert_eq!(own, store);
    eprintln!("phase: writes after the repair reach every member");
    put_keys_through(&members[1], "after", KEYS);
    let store = stores_converge(&members);
    assert_eq!(store.len(), 3 * KEYS);

    daemons[2].signal(libc::SIGTERM);
    let (_, stderr) = daemons[2].wait_exit();
    let line = stderr
        .lines()
        .find(|line| line.contains("skipped a damaged record in the middle of the log"))
        .unwrap_or_else(|| panic!("member 3 logs the repair; stderr:\n{stderr}"));
    eprintln!("member 3 said: {line}");
    assert!(line.contains(&format!("sequence={}", damaged.sequence)), "{line}");
    assert!(
        [512, 4096].iter().any(|lba_bytes| line.contains(&format!("lba={}", damaged.byte / lba_bytes))),
        "{line}"
    );
}
