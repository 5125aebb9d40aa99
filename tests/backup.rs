//! Backup and restore through the real binary: `nvkv snapshot save` from a
//! running node, `nvkv snapshot restore` into a new data directory with no
//! daemon, then `nvkv serve` on it. A restored store answers every key as
//! the backup had it (value, create and mod revision, version, lease), old
//! revisions above each group's compaction alike, and every lease with its
//! keys; a damaged backup, a layout that differs from the config and a
//! data directory in use are refused with errors that say which.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::cluster::*;
use common::*;
use nvkv::kv::partition::Partitioner;
use nvkv::kv::types::RangeRequest;
use nvkv::rpc::client::{KeyValueView, ShardedClient};

/// Two shards of four groups: eight groups, each with keys of its own.
const LAYOUT: &str = "[reactor]\nshards = 2\n\n[log]\ngroups_per_shard = 4\n";
const GROUPS: u32 = 8;
const PARTITION_DEPTH: usize = 2;
const KEYS_PER_PREFIX: usize = 150;

/// Runs `work` with a client of the node at `port`.
fn with_client<T>(port: u16, work: impl AsyncFnOnce(ShardedClient) -> T) -> T {
    runtime().block_on(tokio::task::LocalSet::new().run_until(async {
        let client = ShardedClient::open(&format!("127.0.0.1:{port}")).await.expect("connect");
        work(client).await
    }))
}

/// Runs the CLI with `args`: its exit status, stdout and stderr.
fn nvkv(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_nvkv")).args(args).output().expect("nvkv runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn save(port: u16, file: &Path, extra: &[&str]) -> (bool, String, String) {
    let endpoint = format!("127.0.0.1:{port}");
    let mut args = vec!["--endpoints", &endpoint, "snapshot", "save", file.to_str().expect("path")];
    args.extend_from_slice(extra);
    nvkv(&args)
}

fn restore(file: &Path, data_dir: &Path, config: &Path) -> (bool, String, String) {
    nvkv(&[
        "snapshot",
        "restore",
        file.to_str().expect("path"),
        "--data-dir",
        data_dir.to_str().expect("path"),
        "--config",
        config.to_str().expect("path"),
    ])
}

/// Prefixes (`/bk/pN`) until every group holds two of them.
fn prefixes() -> Vec<String> {
    let partitioner = Partitioner::new(GROUPS, PARTITION_DEPTH).expect("partitioner");
    let mut per_group: BTreeMap<u32, usize> = BTreeMap::new();
    let mut chosen = Vec::new();
    for index in 0.. {
        let prefix = format!("/bk/p{index}/");
        let group = partitioner.group_of(prefix.as_bytes());
        let count = per_group.entry(group).or_default();
        if *count < 2 {
            *count += 1;
            chosen.push(prefix);
        }
        if per_group.len() == GROUPS as usize && per_group.values().all(|count| *count == 2) {
            return chosen;
        }
    }
    unreachable!()
}

fn everything() -> RangeRequest {
    RangeRequest { key: vec![0], range_end: vec![0], ..RangeRequest::default() }
}

fn prefix_range(prefix: &str, revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: nvkv::kv::types::prefix_range_end(prefix.as_bytes()),
        revision,
        ..RangeRequest::default()
    }
}

/// What a user would compare of a store: every key, each prefix at old
/// revisions above its group's compaction (and a refusal below it), every
/// lease with its granted TTL and keys.
#[derive(Debug, PartialEq)]
struct Observed {
    keys: Vec<KeyValueView>,
    /// (prefix, revision) -> the keys then, or the refusal's text
    /// without the endpoint.
    history: BTreeMap<(String, i64), Result<Vec<KeyValueView>, String>>,
    /// lease id -> (granted TTL, keys)
    leases: BTreeMap<i64, (i64, Vec<Vec<u8>>)>,
}

/// Each group's revision and compact revision, by prefix.
type Revisions = BTreeMap<String, (i64, i64)>;

async fn observe(client: &ShardedClient, revisions: &Revisions) -> Observed {
    let keys = client.range(&everything(), false).await.expect("range everything").kvs;
    let mut history = BTreeMap::new();
    for (prefix, (revision, compacted)) in revisions {
        for at in [compacted - 1, compacted + 1, (compacted + revision) / 2, *revision] {
            if at <= 0 {
                continue;
            }
            let answer =
                client.range(&prefix_range(prefix, at), false).await.map(|answer| answer.kvs).map_err(
                    |error| match error {
                        nvkv::rpc::client::ClientError::Refused { error, .. } => format!("{:?}", error.code),
                        other => panic!("range {prefix} at {at}: {other}"),
                    },
                );
            history.insert((prefix.clone(), at), answer);
        }
    }
    let mut leases = BTreeMap::new();
    for lease in client.main().lease_list().await.expect("lease list").leases {
        let live = client.main().lease_time_to_live(lease.id, true).await.expect("lease ttl");
        leases.insert(lease.id, (live.granted_ttl, live.keys));
    }
    Observed { keys, history, leases }
}

/// Fills the node at `port` with keys in every group, several versions of
/// some, deletes, a compaction of every group with history above it, and
/// two leases with keys; returns each prefix's group revisions.
fn fill(port: u16) -> Revisions {
    let prefixes = prefixes();
    with_client(port, async |client| {
        let first = client.main().lease_grant(600, 0).await.expect("grant").id;
        let second = client.main().lease_grant(900, 0).await.expect("grant").id;
        // Every key once, a prefix at a time (its writes go out together).
        for prefix in &prefixes {
            let puts = (0..KEYS_PER_PREFIX).map(|index| {
                let key = format!("{prefix}k{index:04}");
                let value = format!("v1-{key}");
                let lease = if index % 50 == 7 { first } else { 0 };
                let client = &client;
                async move { client.put(key.as_bytes(), value.as_bytes(), lease, false).await.expect("put") }
            });
            futures::future::join_all(puts).await;
        }
        // Later versions of the first keys of each prefix.
        for round in 2..=3 {
            for prefix in &prefixes {
                for index in 0..10 {
                    let key = format!("{prefix}k{index:04}");
                    let value = format!("v{round}-{key}");
                    client.put(key.as_bytes(), value.as_bytes(), 0, false).await.expect("overwrite");
                }
            }
        }
        // Compact every group at its revision now.
        let mut compacted = BTreeMap::new();
        for prefix in &prefixes {
            let header = client.range(&prefix_range(prefix, 0), false).await.expect("range").header;
            if compacted.insert(header.group, header.revision).is_none() {
                client.compact(header.group, header.revision).await.expect("compact");
            }
        }
        // History above the compaction: overwrites, deletes, leased keys.
        for prefix in &prefixes {
            for index in 10..15 {
                let key = format!("{prefix}k{index:04}");
                client.put(key.as_bytes(), b"after compaction", second, false).await.expect("put");
            }
            for index in 15..20 {
                let key = format!("{prefix}k{index:04}");
                client.delete_range(key.as_bytes(), &[], false).await.expect("delete");
            }
        }
        let mut revisions = Revisions::new();
        for prefix in &prefixes {
            let header = client.range(&prefix_range(prefix, 0), false).await.expect("range").header;
            revisions.insert(prefix.clone(), (header.revision, compacted[&header.group]));
        }
        revisions
    })
}

fn stop(mut daemon: Daemon) {
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "the daemon stops cleanly: {stderr}");
}

#[test]
fn a_restored_store_answers_every_key_revision_and_lease_as_the_backup_had_them() {
    eprintln!("a store with keys in every group, history, a compaction and leases");
    let source = Setup::new(LAYOUT);
    let mut daemon = Daemon::start(&source.config);
    let port = ready_port(&daemon.wait_ready());
    let revisions = fill(port);
    let before = with_client(port, async |client| observe(&client, &revisions).await);
    assert_eq!(before.keys.len(), prefixes().len() * (KEYS_PER_PREFIX - 5), "every key but the deleted");
    assert_eq!(before.leases.len(), 2);
    assert!(before.history.values().any(Result::is_err), "a revision below a compaction is refused");

    eprintln!("save, then stop the node: the backup alone must carry the store");
    let file = source.directory.path().join("store.backup");
    let (saved, stdout, stderr) = save(port, &file, &[]);
    assert!(saved, "save: {stderr}");
    assert!(stdout.contains(&format!("{GROUPS} groups")), "{stdout}");
    assert!(!nvkv::backup::temporary_path(&file).exists(), "no FILE.tmp is left");
    stop(daemon);

    eprintln!("restore into a new data directory, with no daemon, and serve it");
    let target = Setup::new(LAYOUT);
    let (restored, stdout, stderr) = restore(&file, &target.data_dir(), &target.config);
    assert!(restored, "restore: {stderr}");
    assert!(stdout.contains(&format!("{GROUPS} groups")), "{stdout}");
    let mut daemon = Daemon::start(&target.config);
    let port = ready_port(&daemon.wait_ready());
    let after = with_client(port, async |client| observe(&client, &revisions).await);
    assert_eq!(after.keys, before.keys, "every key with its value, revisions, version and lease");
    assert_eq!(after.history, before.history, "old revisions answer the same");
    assert_eq!(after.leases, before.leases, "every lease with its TTL and keys");

    eprintln!("the restored store takes writes at the next revision of its group");
    let prefix = prefixes()[0].clone();
    let key = format!("{prefix}k0000");
    let put =
        with_client(port, async |client| client.put(key.as_bytes(), b"v4", 0, false).await.expect("put"));
    assert!(
        put.header.revision > revisions[&prefix].0,
        "{} after {}",
        put.header.revision,
        revisions[&prefix].0
    );
    stop(daemon);
}

#[test]
fn damaged_backups_layout_mismatches_and_used_directories_are_refused() {
    eprintln!("a small store and its backup");
    let source = Setup::new(LAYOUT);
    let mut daemon = Daemon::start(&source.config);
    let port = ready_port(&daemon.wait_ready());
    for index in 0..20 {
        client(port, &["put", &format!("/small/p{index}/key"), "value"]).expect("put");
    }
    let file = source.directory.path().join("small.backup");
    let (saved, _, stderr) = save(port, &file, &[]);
    assert!(saved, "save: {stderr}");

    eprintln!("an existing file is kept unless --force");
    let (saved, _, stderr) = save(port, &file, &[]);
    assert!(!saved && stderr.contains("already exists") && stderr.contains("--force"), "{stderr}");
    let (saved, _, stderr) = save(port, &file, &["--force"]);
    assert!(saved, "save --force: {stderr}");
    stop(daemon);
    let bytes = std::fs::read(&file).expect("read the backup");
    let target = Setup::new(LAYOUT);
    let refused = |name: &str, content: &[u8], config: &Path| -> String {
        let damaged = source.directory.path().join(name);
        std::fs::write(&damaged, content).expect("write");
        let (restored, _, stderr) = restore(&damaged, &target.data_dir(), config);
        assert!(!restored, "{name} must be refused");
        assert!(!target.data_dir().exists(), "{name}: nothing is left in the data directory");
        stderr
    };

    eprintln!("truncated files name where they end");
    let stderr = refused("half.backup", &bytes[..bytes.len() / 2], &target.config);
    assert!(stderr.contains("is truncated") && stderr.contains("inside the part of group"), "{stderr}");
    let stderr = refused("short.backup", &bytes[..bytes.len() - 1], &target.config);
    assert!(stderr.contains("is truncated") && stderr.contains("inside the trailer"), "{stderr}");

    eprintln!("one flipped byte in a group's store names the group and both checksums");
    // Header (48 bytes), then group 0's part header (36 bytes), then its store.
    let mut flipped = bytes.clone();
    flipped[48 + 36 + 20] ^= 0x40;
    let stderr = refused("flipped.backup", &flipped, &target.config);
    assert!(stderr.contains("is corrupt: the store of group 0"), "{stderr}");
    assert!(stderr.contains("has checksum 0x") && stderr.contains(", expected 0x"), "{stderr}");
    let mut flipped = bytes.clone();
    flipped[13] ^= 0x01;
    let stderr = refused("header.backup", &flipped, &target.config);
    assert!(stderr.contains("is corrupt: the header"), "{stderr}");

    eprintln!("a layout that differs from the config names both values");
    let other = Setup::new("[reactor]\nshards = 2\n\n[log]\ngroups_per_shard = 2\n");
    let (restored, _, stderr) = restore(&file, &other.data_dir(), &other.config);
    assert!(!restored);
    assert!(stderr.contains("the backup holds 8 groups") && stderr.contains("makes 4"), "{stderr}");
    let deeper = Setup::new(&format!("{LAYOUT}\n[store]\npartition_depth = 3\n"));
    let (restored, _, stderr) = restore(&file, &deeper.data_dir(), &deeper.config);
    assert!(!restored);
    assert!(stderr.contains("partition_depth = 2") && stderr.contains("sets 3"), "{stderr}");
    assert!(!other.data_dir().exists() && !deeper.data_dir().exists());

    eprintln!("a data directory that holds anything is refused");
    std::fs::create_dir_all(target.data_dir()).expect("mkdir");
    std::fs::write(target.data_dir().join("something"), b"x").expect("write");
    let (restored, _, stderr) = restore(&file, &target.data_dir(), &target.config);
    assert!(!restored && stderr.contains("is not empty"), "{stderr}");

    eprintln!("the whole file still restores");
    let fresh = Setup::new(LAYOUT);
    let (restored, _, stderr) = restore(&file, &fresh.data_dir(), &fresh.config);
    assert!(restored, "{stderr}");
}

#[test]
fn every_member_of_a_new_cluster_restores_the_same_backup_and_serves_it() {
    eprintln!("a one-node store of four groups and its backup");
    let source = Setup::new("[reactor]\nshards = 1\n\n[log]\ngroups_per_shard = 4\n");
    let mut daemon = Daemon::start(&source.config);
    let port = ready_port(&daemon.wait_ready());
    let lease = with_client(port, async |client| {
        let lease = client.main().lease_grant(600, 0).await.expect("grant").id;
        for index in 0..40 {
            let key = format!("/cluster/p{index}/key");
            client
                .put(key.as_bytes(), key.as_bytes(), if index % 10 == 0 { lease } else { 0 }, false)
                .await
                .expect("put");
            client
                .put(key.as_bytes(), b"second", if index % 10 == 0 { lease } else { 0 }, false)
                .await
                .expect("put");
        }
        lease
    });
    let before =
        with_client(port, async |client| client.range(&everything(), false).await.expect("range").kvs);
    let file = source.directory.path().join("cluster.backup");
    let (saved, _, stderr) = save(port, &file, &[]);
    assert!(saved, "save: {stderr}");
    stop(daemon);

    eprintln!("three members restore the same file, each with its own config, and start");
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), 4);
    for member in &members {
        let data_dir = directory.path().join(format!("data{}", member.id));
        let (restored, stdout, stderr) = restore(&file, &data_dir, &member.config);
        assert!(restored, "restore member {}: {stderr}", member.id);
        assert!(stdout.contains("members [1, 2, 3]"), "{stdout}");
    }
    let mut daemons: Vec<Daemon> = members.iter().map(|member| Daemon::start(&member.config)).collect();
    for daemon in &mut daemons {
        daemon.wait_ready();
    }
    let seen: Vec<Vec<u64>> = members
        .iter()
        .map(|member| member.client_port)
        .map(|port| {
            eventually("every group elects a leader", || {
                let leaders = leaders(port);
                if leaders.iter().all(|leader| *leader != 0) {
                    Ok(leaders)
                } else {
                    Err(format!("{leaders:?}"))
                }
            })
        })
        .collect();
    let agreed = eventually("the members agree on the leaders", || agreed_leaders(&seen));

    eprintln!("every member answers every key as the backup had it");
    for member in &members {
        let after = eventually("a linearizable read of every key", || {
            runtime().block_on(tokio::task::LocalSet::new().run_until(async {
                let client = ShardedClient::open(&format!("127.0.0.1:{}", member.client_port))
                    .await
                    .map_err(|error| error.to_string())?;
                client
                    .range(&everything(), false)
                    .await
                    .map(|answer| answer.kvs)
                    .map_err(|error| error.to_string())
            }))
        });
        assert_eq!(after, before, "member {}", member.id);
    }
    let keys = with_client(members[1].client_port, async |client| {
        client.main().lease_time_to_live(lease, true).await.expect("lease ttl").keys
    });
    assert_eq!(keys.len(), 4, "the lease and its keys exist in the new cluster");

    eprintln!("a save from a follower of a group holds a write acknowledged just before");
    let key = b"/cluster/p0/key";
    let group = Partitioner::new(4, PARTITION_DEPTH).expect("partitioner").group_of(key);
    let follower = members.iter().find(|member| member.id != agreed[group as usize]).expect("a follower");
    with_client(members[0].client_port, async |client| {
        client.put(key, b"third", 0, false).await.expect("put")
    });
    let again = directory.path().join("again.backup");
    let (saved, _, stderr) = save(follower.client_port, &again, &[]);
    assert!(saved, "save from member {}: {stderr}", follower.id);
    let mut reader = nvkv::backup::BackupReader::open(&again).expect("open the backup");
    let part = std::iter::from_fn(|| reader.next_part().expect("a whole part"))
        .find(|part| part.group == group)
        .expect("the key's group");
    let store = nvkv::kv::snapshot::decode(&part.store).expect("the store decodes");
    let range = RangeRequest { key: key.to_vec(), ..RangeRequest::default() };
    let found = store.range(&range).expect("range").kvs;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].value, b"third", "the write acknowledged before the save is in it");
    for daemon in daemons {
        stop(daemon);
    }
}
