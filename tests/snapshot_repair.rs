//! A member whose snapshot is damaged at rest (a bit flip in the blob of a
//! group's current snapshot) starts again instead of stopping for good:
//! recovery drops the snapshot and the group's log after it, the member
//! refuses votes in that group, and the group's leader sends it a snapshot,
//! so the member's own store (a serializable read) ends up holding every
//! key. The cluster serves throughout.

mod common;

use common::cluster::*;
use common::*;
use nvkv::little_endian::{u32_at, u64_at};

const GROUPS: usize = 2;
/// Keys written before the damage, and again while the member is down:
/// enough for every group to snapshot and purge its log more than once.
const KEYS: usize = 80;
const SNAPSHOT_MAGIC: &[u8; 8] = b"NVKVSNAP";
const RECORD_MAGIC: &[u8; 4] = b"NVKL";

/// The log id of the newest log record in the namespace file (records and
/// blobs start on a block boundary, 512 bytes at least; layouts of
/// `wal::format` and `wal::snapshot`).
fn current_log_id(namespace: &[u8]) -> u64 {
    (0..namespace.len() - 4096)
        .step_by(512)
        .filter(|at| &namespace[*at..*at + 4] == RECORD_MAGIC)
        .max_by_key(|at| u64_at(namespace, at + 8))
        .map(|at| u64_at(namespace, at + 64))
        .expect("log records in the namespace")
}

/// A snapshot blob found in the namespace file: where it starts, its group
/// and index, and the bytes of its data.
struct Blob {
    byte: u64,
    group: u32,
    index: u64,
    data_bytes: u64,
}

fn blobs_in(namespace: &[u8], log_id: u64) -> Vec<Blob> {
    (0..namespace.len() - 4096)
        .step_by(512)
        .filter(|at| &namespace[*at..*at + 8] == SNAPSHOT_MAGIC && u64_at(namespace, at + 40) == log_id)
        .map(|at| Blob {
            byte: at as u64,
            group: u32_at(namespace, at + 12),
            index: u64_at(namespace, at + 16),
            data_bytes: u64_at(namespace, at + 32),
        })
        .collect()
}

#[test]
fn a_member_with_a_damaged_snapshot_starts_and_its_leader_sends_it_one() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), GROUPS);
    for member in &members {
        let mut text = std::fs::read_to_string(&member.config).expect("config");
        text.push_str(
            "\n[raft]\nsnapshot_after_entries = 20\nentries_kept_after_snapshot = 4\npurge_batch_entries = 4\n",
        );
        std::fs::write(&member.config, text).expect("config");
    }
    let mut daemons: Vec<Daemon> = members.iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }

    eprintln!("phase: {KEYS} keys written, every member holds them and has snapshotted");
    put_keys_through(&members[0], "before", KEYS);
    stores_converge(&members);
    // A member applies the keys before it writes the snapshot that covers
    // them: wait for member 3's status to report a snapshot of every group.
    eventually("member 3 reporting a snapshot of every group", || {
        let status = try_status_json(members[2].client_port)?;
        let indexes: Vec<u64> = (0..GROUPS)
            .map(|group| status[0]["groups"][group]["snapshot_index"].as_u64().unwrap_or(0))
            .collect();
        if indexes.iter().all(|index| *index > 0) {
            Ok(())
        } else {
            Err(format!("snapshot index per group: {indexes:?}"))
        }
    });

    eprintln!("phase: member 3 killed, every snapshot blob of one group on its namespace damaged");
    daemons[2].signal(libc::SIGKILL);
    daemons[2].wait_exit();
    let path = directory.path().join("data3").join("namespace");
    let mut namespace = std::fs::read(&path).expect("read the namespace file");
    let log_id = current_log_id(&namespace);
    let blobs = blobs_in(&namespace, log_id);
    let group = blobs.iter().map(|blob| blob.group).min().expect("member 3 holds snapshots");
    // Every blob of the group, so the current one is among them whichever
    // it is (released blobs stay on the device until overwritten).
    let damaged: Vec<&Blob> = blobs.iter().filter(|blob| blob.group == group).collect();
    for blob in &damaged {
        eprintln!("damaging the snapshot of group {group} at index {} at byte {}", blob.index, blob.byte);
        // A byte in the middle of the data: the data CRC no longer holds.
        namespace[(blob.byte + 64 + blob.data_bytes / 2) as usize] ^= 0x40;
    }
    std::fs::write(&path, &namespace).expect("write the namespace file");
    drop(namespace);

    eprintln!("phase: the other two keep serving while member 3 is down");
    put_keys_through(&members[0], "while-down", KEYS);

    eprintln!("phase: member 3 starts, takes a snapshot from the leader, and its own store holds every key");
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
        .find(|line| line.contains("the group's snapshot is damaged"))
        .unwrap_or_else(|| panic!("member 3 logs the repair; stderr:\n{stderr}"));
    eprintln!("member 3 said: {line}");
    assert!(line.contains(&format!("group={group}")), "{line}");
    assert!(
        damaged.iter().any(|blob| [512, 4096].iter().any(|lba_bytes| {
            line.contains(&format!("lba={}", blob.byte / lba_bytes))
                && line.contains(&format!("snapshot_index={}", blob.index))
        })),
        "{line}"
    );
    // The group refused votes from the start until its leader's appends
    // (after the snapshot: the leader's log is purged far past the empty
    // log member 3 restarted with) brought it past the loss.
    let cleared = stderr
        .lines()
        .find(|line| line.contains("this member votes again") && line.contains(&format!("group={group} ")))
        .unwrap_or_else(|| panic!("member 3's group {group} votes again once repaired; stderr:\n{stderr}"));
    eprintln!("member 3 said: {cleared}");
}
