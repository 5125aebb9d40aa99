//! Whole-cluster faults on three real `nvkv serve` processes over loopback
//! sockets, each test accounting for every acknowledged write and every
//! watch event: a watch across the SIGKILL and restart of its group's
//! leader, leases renewed and left to expire across a leader failover, all
//! three members SIGKILLed at once during puts and transactions, and a
//! leader paused with SIGSTOP while the others elect a new one, then
//! resumed.
//!
//! Every key is written once, so an acknowledged write must be found
//! afterwards at exactly the revision its answer named: a write lost shows,
//! and so does one acknowledged from a stale view and then overwritten by
//! another leader's log. A write that was not acknowledged may be there or
//! not, but a transaction is there whole or not at all.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use nvkv::kv::partition::Partitioner;
use nvkv::kv::types::{prefix_range_end, EventKind, PutRequest, RangeRequest, RequestOp, TxnRequest};
use nvkv::kv::watch::WatchRequest;
use nvkv::rpc::client::watch::WatchMessage;
use nvkv::rpc::client::{ClientError, Connection, ShardedClient};
use nvkv::rpc::kv::ErrorCode;

/// Groups of the test clusters: one shard per member, two groups each.
const GROUPS: usize = 2;
/// The store's default partition depth (`store.partition_depth`).
const PARTITION_DEPTH: usize = 2;
/// Past this a write counts as not acknowledged and the writer moves on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// What a new leader must take over within: the election timeout (300-600
/// ms) plus the leader lease and a wide margin for a machine shared with
/// other builds. A bound that catches a group that never recovers, not a
/// speed target.
const TAKEOVER_BOUND: Duration = Duration::from_secs(15);
/// How long a watch may bring nothing (not even progress, which it asks for
/// every 500 ms) before the watcher calls it stalled and opens it again.
const WATCH_STALL: Duration = Duration::from_secs(15);

/// A key prefix `/<name>/<n>/` whose keys all fall in `group`.
fn prefix_in_group(name: &str, group: u32) -> String {
    let partitioner = Partitioner::new(GROUPS as u32, PARTITION_DEPTH).expect("a valid partitioner");
    (0..1000)
        .map(|n| format!("/{name}/{n}/"))
        .find(|prefix| partitioner.group_of(prefix.as_bytes()) == group)
        .expect("some prefix falls in every group")
}

fn members_with_watch_progress(directory: &std::path::Path) -> Vec<Member> {
    let members = cluster_configs(directory, GROUPS);
    for member in &members {
        let mut text = std::fs::read_to_string(&member.config).expect("config");
        text.push_str("\n[store]\nwatch_progress_interval_ms = 500\n");
        std::fs::write(&member.config, text).expect("config");
    }
    members
}

/// A write the cluster acknowledged: one key of it, and the revision its
/// answer named.
#[derive(Clone, Debug)]
struct Acked {
    key: String,
    revision: i64,
    at: Instant,
}

/// What one writer did: every write it sent (the keys of each: one for a
/// put, two for a transaction), and the keys acknowledged.
#[derive(Debug, Default)]
struct Load {
    sent: Vec<Vec<String>>,
    acked: Vec<Acked>,
}

/// Writes `keys` (each with its own name as value): a put for one key, a
/// transaction of puts for more (all in one group). Ok with the revision.
async fn write(client: &ShardedClient, keys: &[String]) -> Result<i64, String> {
    let attempt = async {
        if let [key] = keys {
            let answer = client.put(key.as_bytes(), key.as_bytes(), 0, false).await?;
            return Ok::<_, ClientError>(answer.header.revision);
        }
        let puts = keys
            .iter()
            .map(|key| {
                RequestOp::Put(PutRequest {
                    key: key.clone().into_bytes(),
                    value: key.clone().into_bytes(),
                    ..PutRequest::default()
                })
            })
            .collect();
        let answer = client.txn(&TxnRequest { success: puts, ..TxnRequest::default() }).await?;
        assert!(answer.response.succeeded, "a transaction without compares succeeds: {answer:?}");
        Ok(answer.header.revision)
    };
    match tokio::time::timeout(WRITE_TIMEOUT, attempt).await {
        Ok(Ok(revision)) => Ok(revision),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
    }
}

/// One writer: until `stop`, writes `keys(sequence)` for sequence 1, 2,
/// ... (never the same key twice) through the members in turn, the next
/// one after a failure, and records what it sent and what was acknowledged.
fn write_load(
    writer: usize,
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
    keys: impl Fn(u64) -> Vec<String>,
) -> Load {
    block_on(async move {
        let mut load = Load::default();
        let mut node = writer % endpoints.len();
        let mut connection: Option<ShardedClient> = None;
        let mut sequence = 0;
        while !stop.load(Ordering::Relaxed) {
            let Some(client) = &connection else {
                connection = connect_next(&endpoints, &mut node, WRITE_TIMEOUT).await;
                continue;
            };
            sequence += 1;
            let keys = keys(sequence);
            load.sent.push(keys.clone());
            match write(client, &keys).await {
                Ok(revision) => {
                    let at = Instant::now();
                    load.acked.extend(keys.into_iter().map(|key| Acked { key, revision, at }));
                }
                Err(_) => {
                    connection = None;
                    node = (node + 1) % endpoints.len();
                }
            }
        }
        load
    })
}

/// Starts the writers numbered `writers`, each writing `keys(writer,
/// sequence)` through `endpoints` (writers of two numbers never write the
/// same key).
fn start_writers(
    writers: std::ops::Range<usize>,
    endpoints: &[String],
    stop: &Arc<AtomicBool>,
    keys: fn(usize, u64) -> Vec<String>,
) -> Vec<std::thread::JoinHandle<Load>> {
    writers
        .map(|writer| {
            let (endpoints, stop) = (endpoints.to_vec(), Arc::clone(stop));
            std::thread::spawn(move || write_load(writer, endpoints, stop, move |seq| keys(writer, seq)))
        })
        .collect()
}

fn join_writers(writers: Vec<std::thread::JoinHandle<Load>>) -> Vec<Load> {
    writers.into_iter().map(|writer| writer.join().expect("a writer panicked")).collect()
}

/// A store as a map: key → (value, last revision).
fn as_map(store: &Store) -> BTreeMap<String, (String, i64)> {
    store
        .iter()
        .map(|(key, value, revision)| {
            (
                String::from_utf8_lossy(key).into_owned(),
                (String::from_utf8_lossy(value).into_owned(), *revision),
            )
        })
        .collect()
}

/// Checks `store` against what the writers did: every acknowledged key is
/// there, with its own name as value, at the revision its answer named;
/// every write sent is there whole (all its keys, at one revision) or not
/// at all. Returns (acknowledged, sent) counts.
fn account(store: &BTreeMap<String, (String, i64)>, loads: &[Load]) -> (usize, usize) {
    let mut acked = 0;
    let mut sent = 0;
    let mut wrong = Vec::new();
    for load in loads {
        for write in &load.sent {
            sent += 1;
            let found: Vec<&(String, i64)> = write.iter().filter_map(|key| store.get(key)).collect();
            assert!(
                found.is_empty() || found.len() == write.len(),
                "a write of {write:?} is there in part: {found:?}"
            );
            for (key, (value, _)) in write.iter().zip(&found) {
                assert_eq!(value, key, "{key} holds another value");
            }
            assert!(
                found.windows(2).all(|pair| pair[0].1 == pair[1].1),
                "the keys of one transaction {write:?} hold different revisions: {found:?}"
            );
        }
        for Acked { key, revision, .. } in &load.acked {
            acked += 1;
            match store.get(key) {
                Some((_, found)) if found == revision => {}
                Some((_, found)) => {
                    wrong.push(format!("{key}: acknowledged at revision {revision}, there at {found}"))
                }
                None => wrong.push(format!("{key}: acknowledged at revision {revision}, lost")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {acked} acknowledged keys are not as acknowledged:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    (acked, sent)
}

/// Checks a linearizable read of everything through each member against
/// the writers' (a serializable one may lag after a restart, until a leader
/// commits in its term), then waits until every member's own store is the
/// same. Returns that store.
fn converge_and_account(members: &[Member], loads: &[Load]) -> BTreeMap<String, (String, i64)> {
    for member in members {
        let store =
            eventually(&format!("a linearizable read of everything through member {}", member.id), || {
                read_all(member, false)
            });
        account(&as_map(&store), loads);
    }
    let store = as_map(&stores_converge(members));
    let (acked, sent) = account(&store, loads);
    eprintln!(
        "every member holds the same {} keys; {acked} acknowledged keys of {sent} writes sent are all there",
        store.len()
    );
    store
}

/// Waits for a leader of `group` other than `old` that the running
/// members agree on; returns it and when it was seen.
fn new_leader(members: &[Member], daemons: &[Option<Daemon>], group: usize, old: u64) -> (u64, Instant) {
    let leader = eventually(&format!("a member other than {old} taking over group {group}"), || {
        match agreed_leader(members, daemons, group) {
            Ok(new) if new != old => Ok(new),
            Ok(old) => Err(format!("member {old} still named the leader")),
            Err(reason) => Err(reason),
        }
    });
    (leader, Instant::now())
}

/// What one watcher saw: each event's revision and key, in the order they
/// came, and why it had to open its watch again (if ever).
#[derive(Debug, Default)]
struct WatchLog {
    events: Vec<(i64, String)>,
    reopened: Vec<String>,
}

/// Watches `prefix` (in `group`) from revision `start` through the members
/// of `endpoints`, starting at `node`, until it has seen revision `until`
/// (once that is set above 0). When the watch ends (its member died,
/// closed the connection, or cancelled it), it opens it again from the
/// revision after the last event seen, on the next member for a connection
/// lost. A compaction would lose events; it panics, as none happens here.
fn watch_prefix(
    endpoints: Vec<String>,
    mut node: usize,
    prefix: String,
    group: u32,
    start: i64,
    until: Arc<AtomicI64>,
) -> WatchLog {
    block_on(async move {
        let started = Instant::now();
        let mut log = WatchLog::default();
        let mut next_revision = start;
        let done = |next: i64| {
            let target = until.load(Ordering::Relaxed);
            target > 0 && next > target
        };
        // Once the target is known (the writes stopped), the watch must
        // reach it within the deadline: a watch that lost events would
        // otherwise wait for ever, hearing only progress.
        let mut target_known: Option<Instant> = None;
        let mut in_time = |log: &WatchLog, next_revision: i64| {
            assert!(started.elapsed() < Duration::from_secs(240), "the watcher ran for 4 minutes: {log:?}");
            let target = until.load(Ordering::Relaxed);
            if target > 0 {
                let since = *target_known.get_or_insert_with(Instant::now);
                assert!(
                    since.elapsed() < DEADLINE,
                    "the watch did not reach revision {target} within {DEADLINE:?} of the writes stopping: \
                     it waits for revision {next_revision} after {} events, opened again {:?}",
                    log.events.len(),
                    log.reopened
                );
            }
        };
        'open: while !done(next_revision) {
            in_time(&log, next_revision);
            let client =
                match tokio::time::timeout(WRITE_TIMEOUT, ShardedClient::open(&endpoints[node])).await {
                    Ok(Ok(client)) => client,
                    _ => {
                        node = (node + 1) % endpoints.len();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
            let request = WatchRequest {
                key: prefix.clone().into_bytes(),
                range_end: prefix_range_end(prefix.as_bytes()),
                start_revision: next_revision,
                progress_notify: true,
                ..WatchRequest::default()
            };
            let mut watch = match client.watch(&request).await {
                Ok(watch) => watch,
                Err(error) => {
                    log.reopened.push(format!("{}: watch refused: {error}", endpoints[node]));
                    node = (node + 1) % endpoints.len();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while !done(next_revision) {
                in_time(&log, next_revision);
                match tokio::time::timeout(WATCH_STALL, watch.next()).await {
                    Ok(Some(WatchMessage::Events { header, events })) => {
                        assert_eq!(header.group, group, "an event of another group");
                        for event in events {
                            assert_eq!(event.kind, EventKind::Put, "only puts are written here");
                            let revision = event.kv.mod_revision;
                            log.events.push((revision, String::from_utf8_lossy(&event.kv.key).into_owned()));
                            next_revision = next_revision.max(revision + 1);
                        }
                    }
                    Ok(Some(WatchMessage::Progress { header })) => {
                        // Everything up to the header's revision was sent.
                        let target = until.load(Ordering::Relaxed);
                        assert!(
                            target == 0 || header.revision < target || next_revision > target,
                            "{}: progress says every event up to revision {} was sent, but the last event \
                             seen was before revision {next_revision} and the last write is at {target}",
                            endpoints[node],
                            header.revision
                        );
                    }
                    Ok(Some(WatchMessage::Cancelled { group, error })) => {
                        assert_ne!(error.code, ErrorCode::Compacted, "nothing compacts here: {error}");
                        log.reopened.push(format!(
                            "{}: cancelled in group {group} at revision {next_revision}: {error}",
                            endpoints[node]
                        ));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'open;
                    }
                    Ok(None) => {
                        log.reopened.push(format!(
                            "{}: connection lost at revision {next_revision}",
                            endpoints[node]
                        ));
                        node = (node + 1) % endpoints.len();
                        continue 'open;
                    }
                    Err(_) => {
                        log.reopened.push(format!(
                            "{}: nothing for {WATCH_STALL:?} at revision {next_revision}",
                            endpoints[node]
                        ));
                        node = (node + 1) % endpoints.len();
                        continue 'open;
                    }
                }
            }
        }
        log
    })
}

/// A linearizable range of `prefix` through `member`, retried until a
/// leader answers: key → (value, mod revision).
fn read_prefix(member: &Member, prefix: &str) -> BTreeMap<String, (String, i64)> {
    eventually(&format!("a linearizable range of {prefix} through member {}", member.id), || {
        block_on(async {
            let client = ShardedClient::open(&endpoint(member)).await.map_err(|error| error.to_string())?;
            let query = RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_range_end(prefix.as_bytes()),
                ..RangeRequest::default()
            };
            let answer = client.range(&query, false).await.map_err(|error| error.to_string())?;
            Ok(answer
                .kvs
                .into_iter()
                .map(|kv| {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    (key, (String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision))
                })
                .collect())
        })
    })
}

#[test]
fn a_watch_across_a_leader_kill_and_restart_sees_every_write_once_in_order() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = members_with_watch_progress(directory.path());
    let mut daemons = start_all(&members);
    let endpoints: Vec<String> = members.iter().map(endpoint).collect();
    let group = 0;
    let leader = eventually("group 0 having one leader", || agreed_leader(&members, &daemons, group));
    let victim = members.iter().position(|member| member.id == leader).expect("a member leads");
    let follower = (victim + 1) % members.len();
    let prefix = prefix_in_group("watched", group as u32);

    eprintln!(
        "phase: a marker put; watchers on member {leader} (the leader) and member {} from its revision",
        members[follower].id
    );
    let start = block_on(async {
        let client = ShardedClient::open(&endpoints[follower]).await.expect("connect");
        let marker = format!("{prefix}marker");
        client
            .put(marker.as_bytes(), marker.as_bytes(), 0, false)
            .await
            .expect("the marker put")
            .header
            .revision
    });
    let until = Arc::new(AtomicI64::new(0));
    let watchers: Vec<_> = [victim, follower]
        .into_iter()
        .map(|node| {
            let (endpoints, prefix, until) = (endpoints.clone(), prefix.clone(), Arc::clone(&until));
            std::thread::spawn(move || watch_prefix(endpoints, node, prefix, group as u32, start, until))
        })
        .collect();

    eprintln!("phase: 3 writers put under {prefix} through all members");
    let stop = Arc::new(AtomicBool::new(false));
    fn keys(writer: usize, sequence: u64) -> Vec<String> {
        vec![format!("{}w{writer}-{sequence:07}", prefix_in_group("watched", 0))]
    }
    let writers = start_writers(0..3, &endpoints, &stop, keys);
    std::thread::sleep(Duration::from_millis(1500));

    eprintln!("phase: kill -9 member {leader}, group {group}'s leader");
    daemons[victim].take().expect("running").signal(libc::SIGKILL);
    let killed_at = Instant::now();
    let (successor, took_over) = new_leader(&members, &daemons, group, leader);
    eprintln!("member {successor} leads group {group} {:?} after the kill", took_over - killed_at);
    assert!(took_over - killed_at < TAKEOVER_BOUND, "no new leader within {TAKEOVER_BOUND:?}");
    std::thread::sleep(Duration::from_secs(2));

    eprintln!("phase: restart member {leader}; the writes go on");
    let mut restarted = Daemon::start(&members[victim].config);
    restarted.wait_ready();
    daemons[victim] = Some(restarted);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let loads = join_writers(writers);

    let written = read_prefix(&members[follower], &prefix);
    let last = written.values().map(|(_, revision)| *revision).max().expect("the marker at least");
    eprintln!(
        "phase: {} keys under the prefix, the last at revision {last}; the watchers read up to it",
        written.len()
    );
    until.store(last, Ordering::Relaxed);
    let logs: Vec<WatchLog> =
        watchers.into_iter().map(|watcher| watcher.join().expect("a watcher panicked")).collect();

    // The group's history as one fresh watch replays it, from a member that
    // never stopped; it must be the store's keys, each once, in order.
    let history = watch_prefix(
        endpoints.clone(),
        follower,
        prefix.clone(),
        group as u32,
        start,
        Arc::new(AtomicI64::new(last)),
    );
    assert!(history.reopened.is_empty(), "the history watch ran uninterrupted: {:?}", history.reopened);
    let mut from_store: Vec<(i64, String)> =
        written.iter().map(|(key, (_, revision))| (*revision, key.clone())).collect();
    from_store.sort();
    assert_eq!(
        history.events, from_store,
        "the history replays every key of the store once, in revision order"
    );

    for (watcher, log) in ["on the killed leader", "on a follower"].iter().zip(&logs) {
        eprintln!(
            "watcher {watcher}: {} events, opened again {} times: {:?}",
            log.events.len(),
            log.reopened.len(),
            log.reopened
        );
        assert_eq!(
            log.events, history.events,
            "watcher {watcher}: every write once, in revision order, no gap"
        );
    }
    assert!(!logs[0].reopened.is_empty(), "the watch on the killed leader had to be opened again");
    // The follower's member never stopped: its watch may be cancelled, but
    // never silently dropped or stalled.
    assert!(
        logs[1].reopened.iter().all(|reason| reason.contains(": cancelled in group ")),
        "the watch on member {} ended without a cancellation: {:?}",
        members[follower].id,
        logs[1].reopened
    );

    let store = converge_and_account(&members, &loads);
    let seen: BTreeMap<&str, i64> =
        history.events.iter().map(|(revision, key)| (key.as_str(), *revision)).collect();
    let acked: Vec<&Acked> = loads.iter().flat_map(|load| &load.acked).collect();
    for write in &acked {
        assert_eq!(
            seen.get(write.key.as_str()),
            Some(&write.revision),
            "{} in the watch at its revision",
            write.key
        );
    }
    let after_takeover = acked.iter().filter(|write| write.at > took_over).count();
    eprintln!(
        "{} acknowledged puts ({after_takeover} after the takeover) all seen at their revisions; {} keys in all",
        acked.len(),
        store.len()
    );
    assert!(after_takeover > 0, "no put was acknowledged after the new leader took over");
}

/// Lease TTLs of the lease test: ten renewals apart at one keep-alive a
/// second, and long against the failover itself.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How long past its deadline an expired lease's keys may stay: the expiry
/// task's tick (500 ms), a Raft write per group, and a wide margin for a
/// loaded machine.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// One key per group under `/<name>/<n>/`, each put with `lease`.
async fn attach_keys(client: &ShardedClient, name: &str, lease: i64) -> Vec<String> {
    let mut keys = Vec::new();
    for group in 0..GROUPS as u32 {
        let key = format!("{}k", prefix_in_group(name, group));
        let answer = client.put(key.as_bytes(), b"v", lease, false).await.expect("a put with the lease");
        assert_eq!(answer.header.group, group);
        keys.push(key);
    }
    keys
}

/// Which of `keys` a linearizable read through `client` finds, and when the
/// answers came; Err when a read was refused (no leader yet).
async fn present(client: &ShardedClient, keys: &[String]) -> Result<(Vec<bool>, Instant), String> {
    let mut found = Vec::new();
    for key in keys {
        let query = RangeRequest { key: key.clone().into_bytes(), ..RangeRequest::default() };
        let read = tokio::time::timeout(WRITE_TIMEOUT, client.range(&query, false)).await;
        match read {
            Ok(Ok(answer)) => found.push(!answer.kvs.is_empty()),
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err(format!("no answer within {WRITE_TIMEOUT:?}")),
        }
    }
    Ok((found, Instant::now()))
}

/// (leader, term) of every group as `port`'s member sees them.
fn group_leaderships(port: u16) -> Result<Vec<(u64, u64)>, String> {
    let status = try_status_json(port)?;
    let groups = status[0]["groups"].as_array().ok_or(format!("no groups in {status}"))?;
    Ok(groups
        .iter()
        .map(|group| (group["leader"].as_u64().unwrap_or(0), group["term"].as_u64().unwrap_or(0)))
        .collect())
}

/// Renews lease `id` every second through the members in turn (the next
/// one after a failure) until `stop`; returns when each renewal was
/// answered, and the failures.
fn keep_alive(id: i64, endpoints: Vec<String>, stop: Arc<AtomicBool>) -> (Vec<Instant>, Vec<String>) {
    block_on(async move {
        let (mut renewed, mut failed) = (Vec::new(), Vec::new());
        let mut node = 0;
        let mut connection: Option<Connection> = None;
        while !stop.load(Ordering::Relaxed) {
            let Some(open) = &connection else {
                match tokio::time::timeout(WRITE_TIMEOUT, Connection::open(&endpoints[node])).await {
                    Ok(Ok(opened)) => connection = Some(opened),
                    _ => {
                        node = (node + 1) % endpoints.len();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            };
            match tokio::time::timeout(WRITE_TIMEOUT, open.lease_keep_alive(id)).await {
                Ok(Ok(answer)) => {
                    assert_eq!(answer.ttl, LEASE_TTL.as_secs() as i64, "a renewal grants the full TTL");
                    renewed.push(Instant::now());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                outcome => {
                    failed.push(format!("{}: {outcome:?}", endpoints[node]));
                    connection = None;
                    node = (node + 1) % endpoints.len();
                }
            }
        }
        (renewed, failed)
    })
}

#[test]
fn a_kept_lease_keeps_its_keys_across_a_leader_failover_and_an_unrenewed_one_expires() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), GROUPS);
    let mut daemons = start_all(&members);
    let endpoints: Vec<String> = members.iter().map(endpoint).collect();
    let leader = eventually("group 0 having one leader", || agreed_leader(&members, &daemons, 0));
    let victim = members.iter().position(|member| member.id == leader).expect("a member leads");
    let survivor = (victim + 1) % members.len();
    let ttl = LEASE_TTL.as_secs() as i64;

    eprintln!(
        "phase: two leases of {ttl} s through member {}, each holding a key in every group",
        members[survivor].id
    );
    let survivor_endpoint = endpoints[survivor].clone();
    let (kept, dropped, granted, kept_keys, dropped_keys) = block_on(async {
        let client = ShardedClient::open(&survivor_endpoint).await.expect("connect");
        let kept = client.main().lease_grant(ttl, 0).await.expect("grant").id;
        let granted = Instant::now();
        let dropped = client.main().lease_grant(ttl, 0).await.expect("grant").id;
        let kept_keys = attach_keys(&client, "kept", kept).await;
        let dropped_keys = attach_keys(&client, "dropped", dropped).await;
        (kept, dropped, granted, kept_keys, dropped_keys)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let renewer = {
        let (endpoints, stop) = (endpoints.clone(), Arc::clone(&stop));
        std::thread::spawn(move || keep_alive(kept, endpoints, stop))
    };

    eprintln!("phase: kill -9 member {leader}, group 0's leader (which answers remaining TTLs)");
    daemons[victim].take().expect("running").signal(libc::SIGKILL);
    let killed_at = Instant::now();
    let (successor, took_over) = new_leader(&members, &daemons, 0, leader);
    eprintln!("member {successor} leads group 0 {:?} after the kill", took_over - killed_at);
    assert!(took_over - killed_at < TAKEOVER_BOUND, "no new leader within {TAKEOVER_BOUND:?}");

    // Each leader of a group starts every lease afresh when it takes over,
    // and leaders may move again after the takeover (to their preferred
    // member): the bounds run from the last leadership change seen.
    eprintln!(
        "phase: read both leases' keys until the unrenewed one expired and the kept one outlived its TTL \
         after the last leadership change"
    );
    let survivor_port = members[survivor].client_port;
    let (gone_at, reads, changed_at, leaderships) = block_on(async {
        let client = ShardedClient::open(&survivor_endpoint).await.expect("connect");
        let (mut gone_at, mut reads) = (None, 0);
        let mut leaderships = group_leaderships(survivor_port).expect("the survivor's status");
        let mut changed_at = took_over;
        loop {
            match group_leaderships(survivor_port) {
                Ok(now) if now != leaderships && now.iter().all(|(leader, _)| *leader != 0) => {
                    eprintln!(
                        "leaders and terms by group: {now:?}, {:?} after the kill",
                        killed_at.elapsed()
                    );
                    leaderships = now;
                    changed_at = Instant::now();
                }
                _ => {}
            }
            let (keep_until, expire_by) =
                (changed_at + LEASE_TTL + Duration::from_secs(3), changed_at + LEASE_TTL + EXPIRY_MARGIN);
            if gone_at.is_some() && Instant::now() > keep_until {
                break;
            }
            assert!(Instant::now() < expire_by.max(keep_until) + TAKEOVER_BOUND, "the read loop overran");
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Ok((found, at)) = present(&client, &kept_keys).await {
                reads += 1;
                assert!(
                    found.iter().all(|there| *there),
                    "the kept lease's keys {kept_keys:?}: {found:?} at {:?} after the kill",
                    at - killed_at
                );
            }
            if gone_at.is_some() {
                continue;
            }
            if let Ok((found, at)) = present(&client, &dropped_keys).await {
                if found.iter().any(|there| !there) {
                    assert!(
                        at >= granted + LEASE_TTL,
                        "keys of the unrenewed lease went {:?} after its grant, before its TTL: {found:?}",
                        at - granted
                    );
                }
                if found.iter().all(|there| !there) {
                    gone_at = Some(at);
                }
                assert!(
                    at < expire_by || gone_at.is_some(),
                    "the unrenewed lease's keys {found:?} still there {:?} after the last leadership change",
                    at - changed_at
                );
            }
        }
        (gone_at.expect("the loop ends once they are gone"), reads, changed_at, leaderships)
    });
    eprintln!(
        "the unrenewed lease's keys went {:?} after the last leadership change ({:?} after the kill, to {leaderships:?}), \
         {:?} after the grant (TTL {LEASE_TTL:?}); the kept ones were there in {reads} reads",
        gone_at.saturating_duration_since(changed_at),
        changed_at - killed_at,
        gone_at - granted
    );

    eprintln!("phase: the kept lease is alive with time left; the unrenewed one is gone");
    let (alive, refused) = block_on(async {
        let client = Connection::open(&survivor_endpoint).await.expect("connect");
        let alive = client.lease_time_to_live(kept, true).await.expect("the kept lease's time to live");
        let refused = client.lease_time_to_live(dropped, false).await.expect_err("the dropped lease is gone");
        (alive, refused)
    });
    assert!(alive.ttl > 0 && alive.granted_ttl == ttl, "{alive:?}");
    let mut sorted: Vec<Vec<u8>> = kept_keys.iter().map(|key| key.clone().into_bytes()).collect();
    sorted.sort();
    assert_eq!(alive.keys, sorted, "the kept lease's keys in every group");
    assert!(refused.to_string().contains("LeaseNotFound"), "{refused}");
    stop.store(true, Ordering::Relaxed);
    let (renewed, failed) = renewer.join().expect("the keep-alive thread");
    let renewed_after = renewed.iter().filter(|at| **at > took_over).count();
    eprintln!("{} renewals ({renewed_after} after the takeover), failures: {failed:?}", renewed.len());
    assert!(renewed_after > 0, "the kept lease was renewed after the failover");

    eprintln!("phase: restart member {leader}; every member holds the kept keys and not the others");
    let mut restarted = Daemon::start(&members[victim].config);
    restarted.wait_ready();
    daemons[victim] = Some(restarted);
    let store = as_map(&stores_converge(&members));
    for key in &kept_keys {
        assert!(store.contains_key(key), "kept key {key} is on every member");
    }
    for key in &dropped_keys {
        assert!(!store.contains_key(key), "expired key {key} is on no member");
    }

    eprintln!("phase: a revoke after the failover deletes the kept keys in every group");
    let revoked = block_on(async {
        let client = Connection::open(&endpoints[victim]).await.expect("connect");
        client.lease_revoke(kept).await.expect("revoke")
    });
    assert_eq!(revoked.deleted, GROUPS as i64, "{revoked:?}");
    let store = as_map(&stores_converge(&members));
    assert!(kept_keys.iter().all(|key| !store.contains_key(key)), "revoked keys are gone");
}

#[test]
fn the_whole_cluster_killed_at_once_during_writes_keeps_every_acknowledged_one() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), GROUPS);
    let mut daemons = start_all(&members);
    let endpoints: Vec<String> = members.iter().map(endpoint).collect();
    // Every third write a transaction of two keys in one group (the first
    // two segments pick the group), the others puts spread over the groups.
    fn keys(writer: usize, sequence: u64) -> Vec<String> {
        if sequence % 3 == 0 {
            let base = format!("/crash-txn/w{writer}-{sequence:07}");
            vec![format!("{base}/a"), format!("{base}/b")]
        } else {
            vec![format!("/crash-{}/w{writer}/{sequence:07}", sequence % 4)]
        }
    }
    let mut loads = Vec::new();
    for round in 1..=2 {
        eventually("every group having a leader", || {
            (0..GROUPS).map(|group| agreed_leader(&members, &daemons, group)).collect::<Result<Vec<_>, _>>()
        });
        let transactions_before = read_prefix(&members[0], "/crash-txn/").len();
        eprintln!("phase (round {round}): 3 writers put and run transactions through all members");
        let stop = Arc::new(AtomicBool::new(false));
        // New writer numbers each round: no key is written twice.
        let writers = start_writers(round * 3..round * 3 + 3, &endpoints, &stop, keys);
        // The kill must land among acknowledged writes, on a slow machine
        // too: 2 s, and at least five more transactions in the store.
        std::thread::sleep(Duration::from_secs(2));
        eventually("five more transactions committed", || {
            let now = read_prefix(&members[0], "/crash-txn/").len();
            if now >= transactions_before + 10 {
                Ok(())
            } else {
                Err(format!("{} transaction keys, {transactions_before} before the round", now))
            }
        });

        eprintln!("phase (round {round}): kill -9 all three members at once");
        let running: Vec<Daemon> = daemons.iter_mut().map(|daemon| daemon.take().expect("running")).collect();
        for daemon in &running {
            daemon.signal(libc::SIGKILL);
        }
        let killed_at = Instant::now();
        for mut daemon in running {
            daemon.wait_exit();
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let round_loads = join_writers(writers);
        let before_kill =
            round_loads.iter().flat_map(|load| &load.acked).filter(|write| write.at < killed_at).count();
        let sent: usize = round_loads.iter().map(|load| load.sent.len()).sum();
        eprintln!("{before_kill} keys acknowledged before the kill, {sent} writes sent");
        // A bound that catches a cluster that took no write, not a speed
        // target: one writer slowed by a loaded machine may have had none.
        assert!(
            round_loads.iter().flat_map(|load| &load.acked).any(|write| write.key.ends_with("/b")),
            "no transaction was acknowledged before the kill"
        );
        loads.extend(round_loads);

        eprintln!("phase (round {round}): restart all three; every acknowledged write is there, no transaction in part");
        daemons = start_all(&members);
        converge_and_account(&members, &loads);
    }
    eventually("a put after the restarts", || client(members[0].client_port, &["put", "/crash-after", "1"]));
}

#[test]
fn a_paused_old_leader_neither_acknowledges_nor_reads_from_its_stale_view() {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = cluster_configs(directory.path(), GROUPS);
    let mut daemons = start_all(&members);
    let endpoints: Vec<String> = members.iter().map(endpoint).collect();
    let group = 0;
    let leader = eventually("group 0 having one leader", || agreed_leader(&members, &daemons, group));
    let victim = members.iter().position(|member| member.id == leader).expect("a member leads");
    let survivor = (victim + 1) % members.len();
    let prefix = prefix_in_group("paused", group as u32);
    // Keys written before the pause and again during it, read through the
    // paused member afterwards; and keys written through it.
    let rewritten: Vec<String> = (0..4).map(|index| format!("{prefix}rewritten-{index}")).collect();
    let through_old: Vec<String> = (0..4).map(|index| format!("{prefix}through-old-{index}")).collect();

    eprintln!("phase: 2 writers put through all members; {} keys written 'before' through member {leader}, the leader", rewritten.len());
    let stop = Arc::new(AtomicBool::new(false));
    fn keys(writer: usize, sequence: u64) -> Vec<String> {
        vec![format!("/paused-load-{}/w{writer}/{sequence:07}", sequence % 4)]
    }
    let writers = start_writers(0..2, &endpoints, &stop, keys);
    let old_endpoint = endpoints[victim].clone();
    let survivor_endpoint = endpoints[survivor].clone();
    let rewrites = block_on(async {
        let old = Connection::open(&old_endpoint).await.expect("connect to the leader");
        for key in &rewritten {
            old.put(key.as_bytes(), b"before", 0, false).await.expect("a put before the pause");
        }
        std::thread::sleep(Duration::from_secs(1));

        eprintln!("phase: SIGSTOP member {leader}");
        let paused = daemons[victim].take().expect("running");
        paused.signal(libc::SIGSTOP);
        let stopped_at = Instant::now();
        let (successor, took_over) = new_leader(&members, &daemons, group, leader);
        eprintln!("member {successor} leads group {group} {:?} after the pause", took_over - stopped_at);
        assert!(took_over - stopped_at < TAKEOVER_BOUND, "no new leader within {TAKEOVER_BOUND:?}");

        eprintln!("phase: the new leader takes 'during' for every rewritten key");
        let client = ShardedClient::open(&survivor_endpoint).await.expect("connect");
        let mut rewrites = BTreeMap::new();
        for key in &rewritten {
            let deadline = Instant::now() + DEADLINE;
            let revision = loop {
                match tokio::time::timeout(WRITE_TIMEOUT, client.put(key.as_bytes(), b"during", 0, false))
                    .await
                {
                    Ok(Ok(answer)) => break answer.header.revision,
                    outcome => {
                        assert!(Instant::now() < deadline, "a put of {key} during the pause: {outcome:?}")
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            rewrites.insert(key.clone(), revision);
        }

        eprintln!(
            "phase: reads of those keys and puts sent to member {leader} while it is stopped, then SIGCONT"
        );
        let queued: Vec<_> = rewritten
            .iter()
            .zip(&through_old)
            .map(|(read, written)| {
                let (old, read, written) = (old.clone(), read.clone(), written.clone());
                tokio::task::spawn_local(async move {
                    let query = RangeRequest { key: read.clone().into_bytes(), ..RangeRequest::default() };
                    let reading = tokio::time::timeout(DEADLINE, old.range(&query, false));
                    let writing = tokio::time::timeout(
                        DEADLINE,
                        old.put(written.as_bytes(), written.as_bytes(), 0, false),
                    );
                    let (read_answer, write_answer) = futures::join!(reading, writing);
                    (read, read_answer, written, write_answer)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        paused.signal(libc::SIGCONT);
        let continued_at = Instant::now();
        daemons[victim] = Some(paused);
        let mut answered = (0, 0);
        let mut acked_through_old = Vec::new();
        for call in queued {
            let (read, read_answer, written, write_answer) = call.await.expect("the queued calls");
            match read_answer
                .expect("the read through the resumed member answers or fails within the deadline")
            {
                Ok(answer) => {
                    answered.0 += 1;
                    let values: Vec<String> =
                        answer.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect();
                    eprintln!("through member {leader}: get {read}: {values:?} ({:?})", answer.header);
                    assert_eq!(
                        values,
                        ["during"],
                        "a linearizable read of {read} through the resumed old leader"
                    );
                }
                Err(error) => eprintln!("through member {leader}: get {read} refused: {error}"),
            }
            match write_answer
                .expect("the put through the resumed member answers or fails within the deadline")
            {
                Ok(answer) => {
                    answered.1 += 1;
                    eprintln!("through member {leader}: put {written} acknowledged ({:?})", answer.header);
                    acked_through_old.push(Acked {
                        key: written,
                        revision: answer.header.revision,
                        at: Instant::now(),
                    });
                }
                Err(error) => eprintln!("through member {leader}: put {written} refused: {error}"),
            }
        }
        eprintln!(
            "of the calls queued at the paused member, {} reads and {} puts were answered",
            answered.0, answered.1
        );

        eprintln!("phase: linearizable reads through member {leader} for 3 s after SIGCONT");
        let mut reads = 0;
        while continued_at.elapsed() < Duration::from_secs(3) {
            let query = RangeRequest { key: rewritten[0].clone().into_bytes(), ..RangeRequest::default() };
            if let Ok(Ok(answer)) = tokio::time::timeout(WRITE_TIMEOUT, old.range(&query, false)).await {
                reads += 1;
                let values: Vec<&[u8]> = answer.kvs.iter().map(|kv| kv.value.as_slice()).collect();
                assert_eq!(
                    values,
                    vec![b"during".as_slice()],
                    "a linearizable read through the resumed old leader"
                );
            }
        }
        eprintln!("{reads} reads through member {leader} after SIGCONT, none stale");
        (rewrites, acked_through_old)
    });
    let (rewrites, acked_through_old) = rewrites;
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let mut loads = join_writers(writers);
    loads.push(Load {
        sent: through_old.iter().map(|key| vec![key.clone()]).collect(),
        acked: acked_through_old,
    });

    eprintln!("phase: every member converges; every acknowledged write is there at its revision");
    let store = converge_and_account(&members, &loads);
    for (key, revision) in &rewrites {
        assert_eq!(
            store.get(key),
            Some(&("during".to_string(), *revision)),
            "{key} as the new leader wrote it"
        );
    }
    eventually("one leader per group, the same on every member", || {
        agreed_leaders(&members.iter().map(|member| leaders(member.client_port)).collect::<Vec<_>>())
    });
}
