//! Kubernetes' traffic through the etcd API, the way kube-apiserver's
//! storage layer sends it, checked afterwards: several resource types
//! written concurrently (create with a lease through `mod_revision == 0`,
//! optimistic update and delete on `mod_revision`), paged lists (limit and
//! continue at the first page's revision), a watch per type from its list's
//! revision + 1 with prev_kv and progress requests, and the compactor
//! (compare-and-swap of `compact_rev_key`, then Compact) every second.
//!
//! The checker verifies: every list is the state of its prefix at its
//! revision; every watch delivers every change of its prefix exactly once,
//! in revision order; a progress revision never runs ahead of what its
//! watch delivered; Compacted is answered only below a compaction the
//! compactor asked for; every acknowledged write is there.
//!
//! It runs against nvkv (one member; three members with the leader of the
//! pods group SIGKILLed twice) and against a real etcd, so it tests the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{cluster_configs, free_ports, Member as ClusterMember};
use common::etcd::Etcd;
use common::*;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

const RESOURCES: [&str; 3] = ["pods", "configmaps", "events"];
const KEYS_PER_RESOURCE: usize = 6;
const PAGE: i64 = 2;
const COMPACT_REV_KEY: &str = "compact_rev_key";

/// What one run saw and was told.
#[derive(Default)]
struct History {
    /// Acknowledged writes: (key, revision, value; `None` for a delete).
    acked: Vec<(String, i64, Option<String>)>,
    /// Per resource: the watch's starting list (revision, state), its
    /// events in arrival order (revision, key, value or None), and its
    /// progress notifications (events delivered before it, revision).
    watches: BTreeMap<String, WatchRecord>,
    /// Lists: (resource, revision, state).
    lists: Vec<(String, i64, BTreeMap<String, String>)>,
    /// Compactions the compactor asked for, and the answers saying Compacted:
    /// (revision asked for, highest compaction asked for until then).
    compactions: Vec<i64>,
    compacted_answers: Vec<(i64, i64)>,
    /// Writers that stopped: once all have, their last writes are known.
    writers_done: usize,
}

#[derive(Default, Clone)]
struct WatchRecord {
    start: i64,
    initial: BTreeMap<String, String>,
    events: Vec<(i64, String, Option<String>)>,
    progress: Vec<(usize, i64)>,
}

type Shared = Arc<Mutex<History>>;

fn prefix(resource: &str) -> String {
    format!("/registry/{resource}/")
}

fn is_compacted(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.message().contains("has been compacted"))
}

/// A paged list of `resource` at one revision (the first page's), as
/// kube-apiserver lists: limit, and the next page from the last key + "\0".
async fn list(
    client: &mut Client,
    resource: &str,
) -> Result<(i64, BTreeMap<String, String>), etcd_client::Error> {
    let start = prefix(resource);
    let end = format!("/registry/{resource}0");
    let mut state = BTreeMap::new();
    let mut from = start.clone();
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new().with_range(end.as_str()).with_limit(PAGE);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let page = client.get(from.as_str(), Some(options)).await?;
        if revision == 0 {
            revision = page.header().expect("header").revision();
        }
        for kv in page.kvs() {
            state.insert(kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string());
        }
        if !page.more() {
            return Ok((revision, state));
        }
        let last = page.kvs().last().expect("more means a page had keys").key_str().unwrap();
        from = format!("{last}\0");
    }
}

/// One resource's writer: a single writer per resource, so what it knows
/// of each key's mod revision is exact, unless an answer was lost; then it
/// reads the key again.
async fn writer(mut client: Client, resource: &'static str, deadline: Instant, history: Shared) {
    let lease = loop {
        match client.lease_grant(3600, None).await {
            Ok(granted) => break granted.id(),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut known: BTreeMap<String, i64> = BTreeMap::new();
    let mut counter = 0u64;
    while Instant::now() < deadline {
        counter += 1;
        let key = format!("{}k{}", prefix(resource), counter as usize % KEYS_PER_RESOURCE);
        let value = format!("{resource}-{counter}");
        let current = known.get(&key).copied().unwrap_or(0);
        let (compare, operation, written) = if current == 0 {
            let put = TxnOp::put(key.as_str(), value.as_str(), Some(PutOptions::new().with_lease(lease)));
            (Compare::mod_revision(key.as_str(), CompareOp::Equal, 0), put, Some(value.clone()))
        } else if counter % 4 == 0 {
            (
                Compare::mod_revision(key.as_str(), CompareOp::Equal, current),
                TxnOp::delete(key.as_str(), None),
                None,
            )
        } else {
            let put = TxnOp::put(key.as_str(), value.as_str(), None);
            (Compare::mod_revision(key.as_str(), CompareOp::Equal, current), put, Some(value.clone()))
        };
        let txn = Txn::new().when([compare]).and_then([operation]).or_else([TxnOp::get(key.as_str(), None)]);
        match client.txn(txn).await {
            Ok(answer) if answer.succeeded() => {
                let revision = answer.header().expect("header").revision();
                known.insert(key.clone(), if written.is_some() { revision } else { 0 });
                history.lock().unwrap().acked.push((key, revision, written));
            }
            Ok(answer) => {
                // Someone else's view was newer: ours was lost with an answer.
                let found = answer.op_responses().into_iter().find_map(|response| match response {
                    TxnOpResponse::Get(get) => Some(get.kvs().first().map_or(0, |kv| kv.mod_revision())),
                    _ => None,
                });
                known.insert(key, found.unwrap_or(0));
            }
            Err(_) => {
                // Outcome unknown: read the key before the next write to it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Ok(read) = client.get(key.as_str(), None).await {
                    known.insert(key, read.kvs().first().map_or(0, |kv| kv.mod_revision()));
                } else {
                    known.remove(&key);
                }
            }
        }
    }
    history.lock().unwrap().writers_done += 1;
}

/// One resource's watch: lists, then watches from the list's revision + 1
/// with prev_kv and progress notifications, asks for progress every 200 ms,
/// and after a broken stream watches again from the last event's revision + 1.
async fn watcher(mut client: Client, resource: &'static str, deadline: Instant, history: Shared) {
    let (start, initial) = loop {
        match list(&mut client, resource).await {
            Ok(listed) => break listed,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut record = WatchRecord { start: start + 1, initial, ..WatchRecord::default() };
    let mut next = start + 1;
    // Once every writer stopped, it keeps watching until it delivered what
    // they wrote (a progress at or past their last revision).
    let mut caught_up_to: Option<i64> = None;
    'streams: loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_progress_notify()
            .with_start_revision(next);
        let Ok(mut stream) = client.watch(prefix(resource), Some(options)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        loop {
            let writers_done = history.lock().unwrap().writers_done == RESOURCES.len();
            if Instant::now() >= deadline && writers_done && caught_up_to.is_none() {
                let last = history
                    .lock()
                    .unwrap()
                    .acked
                    .iter()
                    .filter(|(key, ..)| key.starts_with(&prefix(resource)))
                    .map(|(_, revision, _)| *revision)
                    .max()
                    .unwrap_or(0);
                caught_up_to = Some(last);
            }
            tokio::select! {
                _ = ticker.tick() => {
                    if stream.request_progress().await.is_err() {
                        continue 'streams;
                    }
                }
                message = stream.message() => {
                    let Ok(Some(response)) = message else { continue 'streams };
                    if response.canceled() {
                        panic!("the watch of {resource} from {next} was cancelled: {:?} (compact revision {})",
                            response.cancel_reason(), response.compact_revision());
                    }
                    if response.created() {
                        continue;
                    }
                    if response.events().is_empty() {
                        let revision = response.header().expect("header").revision();
                        record.progress.push((record.events.len(), revision));
                        if caught_up_to.is_some_and(|last| revision >= last) {
                            break 'streams;
                        }
                        continue;
                    }
                    for event in response.events() {
                        let kv = event.kv().expect("kv");
                        let value = (event.event_type() == EventType::Put).then(|| kv.value_str().unwrap().to_string());
                        record.events.push((kv.mod_revision(), kv.key_str().unwrap().to_string(), value));
                        next = kv.mod_revision() + 1;
                    }
                }
            }
        }
    }
    history.lock().unwrap().watches.insert(resource.to_string(), record);
}

/// Lists every resource now and then, each list at one revision.
async fn lister(mut client: Client, deadline: Instant, history: Shared) {
    while Instant::now() < deadline {
        for resource in RESOURCES {
            match list(&mut client, resource).await {
                Ok((revision, state)) => {
                    history.lock().unwrap().lists.push((resource.to_string(), revision, state))
                }
                Err(error) if is_compacted(&error) => {
                    // Only a page at an old revision can be refused so.
                    let highest = history.lock().unwrap().compactions.iter().copied().max().unwrap_or(0);
                    history.lock().unwrap().compacted_answers.push((0, highest));
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// kube-apiserver's compactor: compare-and-swap `compact_rev_key` on its
/// version, then compact at the revision the previous round's swap made.
async fn compactor(mut client: Client, deadline: Instant, history: Shared) {
    let mut version = 0;
    let mut previous: Option<i64> = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let swap = Txn::new()
            .when([Compare::version(COMPACT_REV_KEY, CompareOp::Equal, version)])
            .and_then([TxnOp::put(COMPACT_REV_KEY, "compactor", None)])
            .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
        let Ok(answer) = client.txn(swap).await else { continue };
        let revision = answer.header().expect("header").revision();
        if !answer.succeeded() {
            version = answer
                .op_responses()
                .into_iter()
                .find_map(|response| match response {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.version()),
                    _ => None,
                })
                .unwrap_or(0);
            continue;
        }
        version += 1;
        if let Some(at) = previous {
            history.lock().unwrap().compactions.push(at);
            if let Err(error) = client.compact(at, None).await {
                assert!(
                    !is_compacted(&error) || at <= *history.lock().unwrap().compactions.iter().max().unwrap()
                );
            }
        }
        previous = Some(revision);
    }
}

/// Runs the traffic against `endpoints` for `seconds`, while `faults` runs.
fn traffic(endpoints: Vec<String>, seconds: u64, faults: impl FnOnce() + Send + 'static) -> History {
    let history: Shared = Arc::default();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let shared = history.clone();
    let faults = std::thread::spawn(faults);
    runtime.block_on(async move {
        let connect = || async {
            let options = etcd_client::ConnectOptions::new()
                .with_timeout(Duration::from_secs(3))
                .with_connect_timeout(Duration::from_secs(2));
            Client::connect(endpoints.clone(), Some(options)).await.expect("connect")
        };
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for resource in RESOURCES {
            tasks.push(tokio::spawn(watcher(connect().await, resource, deadline, shared.clone())));
        }
        // Watches list first: give them a moment so they start before writes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for resource in RESOURCES {
            tasks.push(tokio::spawn(writer(connect().await, resource, deadline, shared.clone())));
        }
        tasks.push(tokio::spawn(lister(connect().await, deadline, shared.clone())));
        tasks.push(tokio::spawn(compactor(connect().await, deadline, shared.clone())));
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(seconds + 60), task)
                .await
                .expect("the traffic ends within a minute of its deadline")
                .expect("a traffic task panicked");
        }
    });
    faults.join().expect("the fault thread");
    Arc::try_unwrap(history).ok().expect("tasks done").into_inner().unwrap()
}

/// The state of a prefix at `revision`, from its watch's starting list
/// and events.
fn state_at(record: &WatchRecord, revision: i64) -> BTreeMap<String, String> {
    let mut state = record.initial.clone();
    for (at, key, value) in &record.events {
        if *at > revision {
            break;
        }
        match value {
            Some(value) => state.insert(key.clone(), value.clone()),
            None => state.remove(key),
        };
    }
    state
}

fn check(history: &History) {
    assert!(history.acked.len() > 30, "the traffic wrote: {} acknowledged writes", history.acked.len());
    for resource in RESOURCES {
        let record = &history.watches[resource];
        eprintln!(
            "{resource}: {} events, {} progress notifications, watch from {}",
            record.events.len(),
            record.progress.len(),
            record.start
        );
        let revisions: Vec<i64> = record.events.iter().map(|event| event.0).collect();
        assert!(
            revisions.windows(2).all(|pair| pair[0] < pair[1]),
            "{resource}: events in revision order, each once: {revisions:?}"
        );
        assert!(
            revisions.first().is_none_or(|first| *first >= record.start),
            "{resource}: none before the start"
        );
        let delivered: BTreeMap<i64, (&String, &Option<String>)> =
            record.events.iter().map(|(revision, key, value)| (*revision, (key, value))).collect();
        for (key, revision, value) in
            history.acked.iter().filter(|(key, ..)| key.starts_with(&prefix(resource)))
        {
            assert_eq!(
                delivered.get(revision),
                Some(&(key, value)),
                "{resource}: the acknowledged write of {key} at {revision} was delivered once, as written"
            );
        }
        for (position, revision) in &record.progress {
            assert!(
                record.events[*position..].iter().all(|event| event.0 > *revision),
                "{resource}: progress {revision} sent before an event at or below it"
            );
        }
        assert!(!record.progress.is_empty(), "{resource}: progress was answered");
    }
    let mut lists = 0;
    for (resource, revision, state) in &history.lists {
        let record = &history.watches[resource.as_str()];
        if *revision < record.start - 1 {
            continue;
        }
        assert_eq!(
            &state_at(record, *revision),
            state,
            "{resource}: the list at {revision} is the state then"
        );
        lists += 1;
    }
    assert!(lists > 10, "lists were checked: {lists}");
    for (asked, highest) in &history.compacted_answers {
        assert!(*asked < *highest || *asked == 0 && *highest > 0, "Compacted below a compaction only");
    }
    eprintln!(
        "{} acknowledged writes, {lists} lists checked, {} compactions",
        history.acked.len(),
        history.compactions.len()
    );
    assert!(history.compactions.len() >= 2, "the compactor ran");
}

#[test]
fn kubernetes_traffic_against_one_nvkv_member() {
    let setup = Setup::new("");
    let mut daemon = Daemon::start(&setup.config);
    let endpoint = ready_etcd_endpoint(&daemon.wait_ready());
    let history = traffic(vec![endpoint], 8, || {});
    check(&history);
    drop(daemon);
}

#[test]
fn kubernetes_traffic_against_etcd() {
    let etcd = Etcd::start();
    let history = traffic(vec![format!("127.0.0.1:{}", etcd.client_port)], 8, || {});
    check(&history);
}

/// Starts a member of the cluster with its etcd API on `etcd_port`.
fn start_member(member: &ClusterMember, etcd_port: u16) -> Daemon {
    let address = format!("127.0.0.1:{etcd_port}");
    let mut daemon = Daemon::start_with_args(&member.config, &["--etcd-listen", &address]);
    daemon.wait_ready();
    daemon
}

#[test]
fn kubernetes_traffic_against_three_nvkv_members_with_the_leader_killed_twice() {
    let directory = tempfile::tempdir().expect("temp dir");
    let members = cluster_configs(directory.path(), 4);
    let etcd_ports: Vec<u16> = members.iter().map(|_| free_ports(1)).collect();
    let daemons: Vec<Daemon> = std::thread::scope(|scope| {
        let started: Vec<_> = members
            .iter()
            .zip(&etcd_ports)
            .map(|(member, port)| scope.spawn(move || start_member(member, *port)))
            .collect();
        started.into_iter().map(|thread| thread.join().expect("a member starts")).collect()
    });
    let daemons = Arc::new(Mutex::new(daemons));
    let endpoints: Vec<String> = etcd_ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let pods_group =
        nvkv::kv::partition::Partitioner::new(4, 2).unwrap().group_of(b"/registry/pods/") as usize;
    let client_ports: Vec<u16> = members.iter().map(|member| member.client_port).collect();
    let configs: Vec<(std::path::PathBuf, u16)> =
        members.iter().zip(&etcd_ports).map(|(member, port)| (member.config.clone(), *port)).collect();
    let faults_daemons = daemons.clone();
    let faults = move || {
        for round in 0..2 {
            std::thread::sleep(Duration::from_secs(3));
            let leader = cluster_leader(&client_ports, pods_group);
            eprintln!("fault {round}: SIGKILL member {leader}, the leader of the pods group {pods_group}");
            let index = leader as usize - 1;
            faults_daemons.lock().unwrap()[index].signal(libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(1500));
            let (config, port) = &configs[index];
            let address = format!("127.0.0.1:{port}");
            let mut restarted = Daemon::start_with_args(config, &["--etcd-listen", &address]);
            restarted.wait_ready();
            faults_daemons.lock().unwrap()[index] = restarted;
        }
    };
    let history = traffic(endpoints, 12, faults);
    check(&history);
    let leaders: BTreeSet<u64> = (0..3)
        .map(|_| cluster_leader(&members.iter().map(|m| m.client_port).collect::<Vec<_>>(), pods_group))
        .collect();
    assert_eq!(leaders.len(), 1, "one leader at the end");
    drop(daemons);
}

/// The member that leads `group`, as a live member reports it.
fn cluster_leader(client_ports: &[u16], group: usize) -> u64 {
    common::cluster::eventually("a live member names the group's leader", || {
        for port in client_ports {
            if let Ok(status) = try_status_json(*port) {
                let leader = status[0]["groups"][group]["leader"].as_u64().unwrap_or(0);
                if leader != 0 {
                    return Ok(leader);
                }
            }
        }
        Err("no live member names a leader".to_string())
    })
}
