//! SIGKILL under write load, twice: a real node (2 shards, 3 groups each)
//! that snapshots and purges its groups' logs every few dozen entries takes
//! puts from concurrent writers until the per-group status shows a
//! snapshot, then dies by SIGKILL mid-load. After each restart every
//! acknowledged put is there with the revision it was acknowledged at, a
//! put that was never acknowledged is absent or whole, and no two keys of
//! a group share a revision.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use nvkv::rpc::client::ShardedClient;

const WRITERS: usize = 4;
/// Puts each writer keeps in flight at once.
const IN_FLIGHT: usize = 4;
/// Acknowledged puts a round waits for before it looks for a snapshot.
const ACKS_BEFORE_KILL: usize = 600;

/// A put the node acknowledged: where and at which revision.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    group: u32,
    revision: i64,
}

/// What the writers saw: puts sent, and puts acknowledged.
#[derive(Default)]
struct Ledger {
    sent: BTreeSet<String>,
    acked: Vec<Ack>,
}

/// Every key's value is a function of the key, 100 to 2,000 bytes long, so
/// a partial value cannot pass for a whole one.
fn value_of(key: &str) -> Vec<u8> {
    let length = 100 + (spread(key.as_bytes()) % 1900) as usize;
    key.as_bytes().iter().copied().cycle().take(length).collect()
}

/// A stable spread of lengths (FNV-1a; nothing here needs a real CRC).
fn spread(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193))
}

fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(tokio::task::LocalSet::new().run_until(future))
}

/// One writer thread: its own runtime and client, IN_FLIGHT tasks putting
/// unique keys until `stop` or the node goes away.
fn writer(address: String, round: usize, writer: usize, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    run(async move {
        let client = match ShardedClient::open(&address).await {
            Ok(client) => std::rc::Rc::new(client),
            Err(error) => panic!("writer {writer} cannot connect: {error}"),
        };
        let mut tasks = Vec::new();
        for lane in 0..IN_FLIGHT {
            let client = client.clone();
            let ledger = ledger.clone();
            let stop = stop.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // 12 prefixes spread the keys over the groups.
                    let key = format!("/load{}/r{round}-w{writer}-l{lane}-{sequence}", sequence % 12);
                    sequence += 1;
                    ledger.lock().expect("ledger").sent.insert(key.clone());
                    match client.put(key.as_bytes(), &value_of(&key), 0, false).await {
                        Ok(answer) => ledger.lock().expect("ledger").acked.push(Ack {
                            key,
                            group: answer.header.group,
                            revision: answer.header.revision,
                        }),
                        // The node was killed: this put may or may not have
                        // been applied; it stays "sent".
                        Err(_) => break,
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("a writer task ends");
        }
    });
}

/// The largest snapshot index of any group, from `nvkv status -w json`.
fn snapshot_index(port: u16) -> u64 {
    let status = status_json(port);
    status[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| group["snapshot_index"].as_u64().expect("snapshot index"))
        .max()
        .unwrap_or(0)
}

/// Checks every key the writers sent against the restarted node.
fn check_after_restart(address: &str, ledger: &Ledger) {
    let acked: BTreeMap<&str, &Ack> = ledger.acked.iter().map(|ack| (ack.key.as_str(), ack)).collect();
    run(async {
        let client = ShardedClient::open(address).await.expect("connect after the restart");
        let mut revisions: BTreeMap<u32, BTreeMap<i64, String>> = BTreeMap::new();
        let (mut found_unacked, mut absent_unacked) = (0, 0);
        for key in &ledger.sent {
            let request =
                nvkv::kv::types::RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() };
            let answer = client.range(&request, false).await.expect("get after the restart");
            let found = answer.kvs.first();
            match (acked.get(key.as_str()), found) {
                (Some(ack), Some(kv)) => {
                    assert_eq!(kv.value, value_of(key), "{key}: the acknowledged value, whole");
                    assert_eq!(
                        kv.mod_revision, ack.revision,
                        "{key}: at the revision it was acknowledged at"
                    );
                    assert_eq!(answer.header.group, ack.group, "{key}: in the group that acknowledged it");
                }
                (Some(ack), None) => {
                    panic!("{key} was acknowledged at revision {} and is gone", ack.revision)
                }
                (None, Some(kv)) => {
                    assert_eq!(kv.value, value_of(key), "{key}: an unacknowledged put is whole or absent");
                    found_unacked += 1;
                }
                (None, None) => absent_unacked += 1,
            }
            if let Some(kv) = found {
                let group = revisions.entry(answer.header.group).or_default();
                if let Some(other) = group.insert(kv.mod_revision, key.clone()) {
                    panic!(
                        "{key} and {other} share revision {} of group {}",
                        kv.mod_revision, answer.header.group
                    );
                }
            }
        }
        eprintln!(
            "after the restart: {} acknowledged puts all there, {found_unacked} unacknowledged puts applied \
             whole, {absent_unacked} absent, {} groups with distinct revisions",
            acked.len(),
            revisions.len()
        );
    });
}

#[test]
fn acknowledged_puts_survive_sigkill_under_load_with_snapshots_and_purges() {
    let setup = Setup::new(
        "[reactor]\nshards = 2\n\n[log]\ngroups_per_shard = 3\n\n\
         [raft]\nsnapshot_after_entries = 50\nentries_kept_after_snapshot = 10\npurge_batch_entries = 10",
    );
    let mut ledger = Ledger::default();
    for round in 0..2 {
        eprintln!(
            "phase: round {round}: start the node and put from {WRITERS} writers until a snapshot is taken"
        );
        let mut daemon = Daemon::start(&setup.config);
        let port = ready_port(&daemon.wait_ready());
        let address = format!("127.0.0.1:{port}");
        if round > 0 {
            check_after_restart(&address, &ledger);
        }
        let shared = Arc::new(Mutex::new(std::mem::take(&mut ledger)));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..WRITERS)
            .map(|index| {
                let (address, shared, stop) = (address.clone(), shared.clone(), stop.clone());
                std::thread::spawn(move || writer(address, round, index, shared, stop))
            })
            .collect();
        let acked_at_start = shared.lock().expect("ledger").acked.len();
        let deadline = Instant::now() + Duration::from_secs(120);
        let snapshot = loop {
            let acked = shared.lock().expect("ledger").acked.len() - acked_at_start;
            let snapshot = snapshot_index(port);
            if acked >= ACKS_BEFORE_KILL && snapshot > 0 {
                break snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "after {acked} puts no group took a snapshot (index {snapshot})"
            );
            std::thread::sleep(Duration::from_millis(100));
        };

        eprintln!("phase: round {round}: SIGKILL mid-load");
        daemon.signal(libc::SIGKILL);
        let (exit, _) = daemon.wait_exit();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&exit), Some(libc::SIGKILL));
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().expect("a writer thread ends");
        }
        ledger = Arc::try_unwrap(shared).ok().expect("writers are done").into_inner().expect("ledger");
        eprintln!(
            "round {round}: {} puts acknowledged ({} in all), {} sent; snapshot index {snapshot} seen before the kill",
            ledger.acked.len() - acked_at_start,
            ledger.acked.len(),
            ledger.sent.len()
        );
    }

    eprintln!("phase: restart after the second kill: every acknowledged put of both rounds is there");
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());
    check_after_restart(&format!("127.0.0.1:{port}"), &ledger);
    let status = status_json(port);
    let groups = status[0]["groups"].as_array().expect("groups");
    for (what, field) in [
        ("a snapshot survived the kills", "snapshot_index"),
        ("the logs were purged behind it", "purged_index"),
    ] {
        assert!(groups.iter().any(|group| group[field].as_u64().expect(field) > 0), "{what}: {status}");
    }
    daemon.signal(libc::SIGTERM);
    let (exit, stderr) = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "{stderr}");
}
