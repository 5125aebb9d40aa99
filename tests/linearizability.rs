//! Linearizability under leader loss and partitions: several clients do
//! random put, delete, get (linearizable), compare-and-swap, transactions on
//! two keys and range reads of every key, on a few keys of one group (so a
//! transaction stays inside one Raft group), through every member of a real 3-node cluster while a nemesis
//! strikes. Each operation's invocation and return instants and its outcome
//! are recorded (a write that failed or timed out has an unknown outcome:
//! it may have taken effect or not; a failed read is dropped), and the
//! history is checked with `nvkv::lincheck`.
//!
//! Two settings: on loopback the nemesis SIGKILLs the group's leader and
//! restarts it, SIGSTOPs the leader and wakes it after the others elected,
//! replaces a follower (member remove, its data wiped, started in join mode,
//! member add as a learner, promote: a membership change under load), and
//! kills the leader again; in network namespaces (one per member, real sockets
//! cut by taking a member's bridge port down, as tests/partition.rs does)
//! it cuts the leader away and heals, kills the new leader and restarts it,
//! then cuts a follower away and heals. There each client runs inside a
//! member's namespace and starts with that member, so a client stays with
//! its member while it is cut away: whatever a cut-away former leader
//! answers is in the history.
//!
//! Each seed runs a fresh cluster. `NVKV_LINCHECK_SEEDS` sets how many
//! seeds run per setting (2 unless set; `tests/lincheck.sh --seeds N` runs
//! many), and `NVKV_LINCHECK_SEED` the first one (a new one each run unless
//! set), so a failing seed can be run again. The namespaces need root:
//! without them the partition setting fails, saying so, unless
//! NVKV_TEST_SKIP_NETNS=1 opts into skipping it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::netns::{Network, SKIP_VARIABLE};
use common::*;
use nvkv::bench::keys::Chooser;
use nvkv::kv::partition::Partitioner;
use nvkv::kv::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use nvkv::lincheck::{
    check, Compare as Condition, Operation, Outcome, Record, Returned, Verdict, Write,
    STEPS_PER_COMPONENT_DEFAULT,
};
use nvkv::rpc::client::{ClientError, ShardedClient};

/// Groups in the cluster: the keys share one, the other stays idle.
const GROUPS: usize = 2;
/// Few keys, so clients contend on each.
const KEYS: u64 = 3;
/// Keys with one partition prefix (`/lincheck/keys/`), so all live in one group.
const KEY_PREFIX: &str = "/lincheck/keys/k";
const CLIENTS: u32 = 4;
/// In namespaces: the members' client port, each on its own address, and
/// the namespace the test watches the cluster from (never cut).
const NAMESPACE_CLIENT_PORT: u16 = 7000;
const OBSERVER: u64 = 9;
/// Past this an operation counts as unknown and the client moves on: well
/// above an election (300-600 ms) plus a forward, so most writes during a
/// failover still get their answer.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
/// Operations shown on each side of where a violation was found.
const VIOLATION_CONTEXT: usize = 15;
/// How long a client waits after a failed operation before the next one.
const FAILURE_PAUSE: Duration = Duration::from_millis(300);

/// The seeds to run: (first, count), from the environment.
fn seeds() -> (u32, u32) {
    let read = |name: &str| -> Option<u32> {
        let text = std::env::var(name).ok()?;
        Some(text.trim().parse().unwrap_or_else(|_| {
            panic!("{name}={text:?} is not a number from 0 to {}; give a whole number", u32::MAX)
        }))
    };
    let count = read("NVKV_LINCHECK_SEEDS").unwrap_or(2);
    let first = read("NVKV_LINCHECK_SEED").unwrap_or_else(|| {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
        now.subsec_nanos() ^ now.as_secs() as u32
    });
    (first, count)
}

/// One cluster at a time: two on two cores would turn every election
/// into a contest for the CPU.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

#[test]
fn histories_under_leader_kills_are_linearizable() {
    let _alone = ONE_CLUSTER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (first, count) = seeds();
    eprintln!(
        "loopback, leader kills: {count} seed(s) from {first} (NVKV_LINCHECK_SEED={first} \
         NVKV_LINCHECK_SEEDS={count})"
    );
    for index in 0..count {
        run_seed(
            first.wrapping_add(index),
            None,
            &[Fault::KillLeader, Fault::PauseLeader, Fault::ReplaceFollower, Fault::KillLeader],
        );
    }
}

#[test]
fn histories_under_partitions_and_leader_kills_are_linearizable() {
    let _alone = ONE_CLUSTER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (first, count) = seeds();
    for index in 0..count {
        let seed = first.wrapping_add(index);
        let network = match Network::new(&[1, 2, 3, OBSERVER]) {
            Ok(network) => network,
            Err(reason) if std::env::var(SKIP_VARIABLE).as_deref() == Ok("1") => {
                eprintln!(
                    "SKIPPED (no partition was in any history): network namespaces are not available \
                     here ({reason}); {SKIP_VARIABLE}=1 opted into skipping"
                );
                return;
            }
            Err(reason) => panic!(
                "the partition histories need network namespaces (run as root with iproute2), and making \
                 them failed: {reason}; set {SKIP_VARIABLE}=1 to skip them where that is impossible"
            ),
        };
        if index == 0 {
            eprintln!(
                "partitions and leader kills: {count} seed(s) from {first} (NVKV_LINCHECK_SEED={first} \
                 NVKV_LINCHECK_SEEDS={count}); method: {}; a cut takes a member's bridge port down",
                network.describe()
            );
        }
        // The test's own thread, in the observer's namespace: the harness
        // thread may run other tests afterwards.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    network.enter(OBSERVER);
                    run_seed(
                        seed,
                        Some(&network),
                        &[Fault::CutLeader, Fault::KillLeader, Fault::CutFollower],
                    );
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
    }
}

/// What the nemesis does in one round, each undone before the next.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL the group's leader, then restart it.
    KillLeader,
    /// Cut the group's leader away from the others, then heal.
    CutLeader,
    /// Cut a member that does not lead the group away, then heal.
    CutFollower,
    /// SIGSTOP the group's leader (it stays a member, its sockets open, its
    /// clocks frozen while the others elect), then SIGCONT it: it wakes up
    /// believing it leads.
    PauseLeader,
    /// A membership change under load: remove a member that does not lead
    /// the group, wipe it, start it in join mode, add it back as a learner
    /// and promote it once it caught up (the way back for a wiped member).
    ReplaceFollower,
}

/// Runs one seed: a fresh cluster (on loopback, or in `network`'s
/// namespaces), the clients, `faults` in turn, and the check.
fn run_seed(seed: u32, network: Option<&Network>, faults: &[Fault]) {
    let directory = tempfile::tempdir().expect("tempdir");
    let members = match network {
        None => cluster_configs(directory.path(), GROUPS),
        Some(_) => {
            let hosts: Vec<_> = (1..=3).map(|id| (id, Network::address(id), NAMESPACE_CLIENT_PORT)).collect();
            member_configs(directory.path(), GROUPS, &hosts)
        }
    };
    let endpoints: Vec<String> = members
        .iter()
        .map(|member| match network {
            None => format!("127.0.0.1:{}", member.client_port),
            Some(_) => format!("{}:{}", Network::address(member.id), member.client_port),
        })
        .collect();
    let start_member = |member: &Member| match network {
        None => Daemon::start(&member.config),
        Some(network) => {
            let mut command = network.command(member.id, env!("CARGO_BIN_EXE_nvkv"));
            command.args(["serve", "--config"]).arg(&member.config);
            Daemon::spawn(command)
        }
    };
    let mut daemons: Vec<Option<Daemon>> = members.iter().map(|member| Some(start_member(member))).collect();
    for daemon in daemons.iter_mut().flatten() {
        daemon.wait_ready();
    }
    let group = key_group(&endpoints[0]);
    eprintln!("seed {seed}: phase: the keys' group {group} elects a leader");
    leader_of(&members, &endpoints, &daemons, group);

    eprintln!(
        "seed {seed}: phase: {CLIENTS} clients record put/delete/get/cas/txn/range on {KEYS} keys through all \
         members"
    );
    let start = Instant::now();
    let stop = AtomicBool::new(false);
    let mut nemesis = Chooser::for_client(seed.wrapping_mul(CLIENTS + 1));
    let pause = |chooser: &mut Chooser, least_ms: u64| {
        std::thread::sleep(Duration::from_millis(least_ms + chooser.number_below(1000)));
    };
    let mut last_healed = 0;
    let history: Vec<Record> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (endpoints, stop, members) = (&endpoints, &stop, &members);
                // In namespaces, client c lives with member c mod 3 and
                // starts there; on loopback it just starts there.
                let home = client as usize % endpoints.len();
                scope.spawn(move || {
                    if let Some(network) = network {
                        network.enter(members[home].id);
                    }
                    record(seed, client, endpoints, home, start, stop)
                })
            })
            .collect();
        for (round, fault) in faults.iter().enumerate() {
            pause(&mut nemesis, 1000);
            let leader = leader_of(&members, &endpoints, &daemons, group);
            let target = match fault {
                Fault::KillLeader | Fault::CutLeader | Fault::PauseLeader => leader,
                Fault::CutFollower | Fault::ReplaceFollower => {
                    let followers: Vec<u64> =
                        members.iter().map(|member| member.id).filter(|id| *id != leader).collect();
                    followers[nemesis.number_below(followers.len() as u64) as usize]
                }
            };
            let victim = members.iter().position(|member| member.id == target).expect("a member");
            eprintln!(
                "seed {seed}: phase: round {} of {}: {fault:?} hits member {target} (leader {leader})",
                round + 1,
                faults.len()
            );
            match (fault, network) {
                (Fault::KillLeader, _) => {
                    let killed = daemons[victim].take().expect("the leader runs");
                    killed.signal(libc::SIGKILL);
                    drop(killed);
                    pause(&mut nemesis, 1000);
                    eprintln!("seed {seed}: phase: restart member {target}");
                    let mut restarted = start_member(&members[victim]);
                    restarted.wait_ready();
                    daemons[victim] = Some(restarted);
                }
                (Fault::PauseLeader, _) => {
                    let paused = daemons[victim].as_ref().expect("the leader runs");
                    paused.signal(libc::SIGSTOP);
                    pause(&mut nemesis, 1500);
                    eprintln!("seed {seed}: phase: wake member {target}");
                    paused.signal(libc::SIGCONT);
                }
                (Fault::ReplaceFollower, None) => {
                    daemons[victim] =
                        Some(replace(seed, directory.path(), &members, victim, daemons[victim].take()));
                }
                (Fault::CutLeader | Fault::CutFollower, Some(network)) => {
                    network.cut(target);
                    pause(&mut nemesis, 1500);
                    eprintln!("seed {seed}: phase: heal member {target}");
                    network.heal(target);
                }
                (Fault::CutLeader | Fault::CutFollower, None) => panic!("{fault:?} needs network namespaces"),
                (Fault::ReplaceFollower, Some(_)) => panic!("{fault:?} runs on loopback only"),
            }
            last_healed = micros_since(start);
        }
        pause(&mut nemesis, 1500);
        stop.store(true, Ordering::Relaxed);
        clients.into_iter().flat_map(|client| client.join().expect("a client thread panicked")).collect()
    });

    let unknown = history.iter().filter(|record| record.returned.is_none()).count();
    eprintln!(
        "seed {seed}: phase: check the history: {} operations, {unknown} with unknown outcome",
        history.len()
    );
    let served_after_healing = history.iter().any(|record| {
        record.invoked > last_healed
            && matches!(
                record.returned,
                Some(Returned { outcome: Outcome::Written | Outcome::Swapped(true), .. })
            )
    });
    assert!(
        served_after_healing,
        "seed {seed}: no write succeeded after the last fault was undone (at {last_healed} us): the cluster \
         did not recover"
    );
    let report =
        check(&history, STEPS_PER_COMPONENT_DEFAULT).expect("the recorder writes well-formed records");
    match report.verdict {
        Verdict::Linearizable => {
            eprintln!(
                "seed {seed}: linearizable ({} operations on {} keys, searched in {} component(s))",
                report.operations, report.keys, report.components
            )
        }
        Verdict::Violation { keys, records, linearized_most, stuck_at } => {
            // The operations around the one the search could not place;
            // the whole key's history is rarely readable.
            let window =
                stuck_at.saturating_sub(VIOLATION_CONTEXT)..(stuck_at + VIOLATION_CONTEXT).min(records.len());
            let shown: String = records[window.clone()]
                .iter()
                .zip(window.clone())
                .map(|(record, index)| format!("{} {record}\n", if index == stuck_at { "->" } else { "  " }))
                .collect();
            panic!(
                "seed {seed}: the history of keys {} is not linearizable ({} operations; the longest linearizable \
                 part found has {linearized_most}); operations {window:?} by invocation, times in us since the \
                 start, -> marks the first one no order could place; rerun with NVKV_LINCHECK_SEED={seed}:\n{shown}",
                shown_keys(&keys),
                records.len()
            );
        }
        Verdict::GaveUp { keys, steps } => panic!(
            "seed {seed}: the checker gave up on keys {} after {steps} steps, so the history is not verified; \
             rerun with NVKV_LINCHECK_SEED={seed}",
            shown_keys(&keys)
        ),
    }
}

/// [`Fault::ReplaceFollower`] on loopback: removes `members[victim]`
/// through another member, stops it, wipes its data, starts it in join
/// mode, adds it back as a learner and promotes it once it caught up in
/// every group. Returns the new daemon.
fn replace(
    seed: u32,
    directory: &std::path::Path,
    members: &[Member],
    victim: usize,
    running: Option<Daemon>,
) -> Daemon {
    let member = &members[victim];
    let id = member.id.to_string();
    let via = members[(victim + 1) % members.len()].client_port;
    eprintln!("seed {seed}: phase: member remove {id}");
    eventually(&format!("member remove {id}"), || client(via, &["member", "remove", &id]));
    let mut stopped = running.expect("the follower runs");
    stopped.signal(libc::SIGKILL);
    let _ = stopped.wait_exit();
    std::fs::remove_dir_all(directory.join(format!("data{id}"))).expect("wipe the removed member");
    let config = std::fs::read_to_string(&member.config).expect("config");
    let joining = config
        .replace("[cluster]\nname = \"test-cluster\"\n", "[cluster]\nname = \"test-cluster\"\njoin = true\n");
    assert_ne!(config, joining, "the config names its cluster as member_configs writes it");
    std::fs::write(&member.config, joining).expect("config");
    let mut rejoined = Daemon::start(&member.config);
    rejoined.wait_ready();
    eprintln!("seed {seed}: phase: member add {id} as a learner, then promote it");
    let (peer, client_address) =
        (format!("127.0.0.1:{}", member.peer_port), format!("127.0.0.1:{}", member.client_port));
    let name = format!("node{id}");
    let add = [
        "member",
        "add",
        &id,
        "--name",
        &name,
        "--peer-urls",
        &peer,
        "--client-urls",
        &client_address,
        "--learner",
    ];
    eventually(&format!("member add {id}"), || client(via, &add));
    for group in 0..GROUPS {
        eventually(&format!("member {id} catching up in group {group}"), || {
            caught_up(members, group, member.id)
        });
    }
    eventually(&format!("member promote {id}"), || client(via, &["member", "promote", &id]));
    rejoined
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).expect("a test runs for less than 2^64 us")
}

/// Keys as a person reads them: `a, b`.
fn shown_keys(keys: &[Vec<u8>]) -> String {
    let shown: Vec<String> = keys.iter().map(|key| String::from_utf8_lossy(key).into_owned()).collect();
    shown.join(", ")
}

fn key(number: u64) -> Vec<u8> {
    format!("{KEY_PREFIX}{number}").into_bytes()
}

/// The group that holds the test's keys, by the node's partition map.
fn key_group(endpoint: &str) -> u32 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let map = tokio::task::LocalSet::new().block_on(&runtime, async {
        let connection = nvkv::rpc::client::Connection::open(endpoint).await.expect("connect");
        connection.partition_map().await.expect("the partition map")
    });
    let partitioner = Partitioner::new(map.groups, map.partition_depth as usize).expect("a usable map");
    let groups: Vec<u32> = (0..KEYS).map(|number| partitioner.group_of(&key(number))).collect();
    assert!(groups.iter().all(|group| *group == groups[0]), "the keys share one group: {groups:?}");
    groups[0]
}

/// The leader of `group` that a running member reports, once it is a
/// running member too.
fn leader_of(members: &[Member], endpoints: &[String], daemons: &[Option<Daemon>], group: u32) -> u64 {
    let running: Vec<(&Member, &String)> = members
        .iter()
        .zip(endpoints)
        .zip(daemons)
        .filter(|(_, daemon)| daemon.is_some())
        .map(|(member, _)| member)
        .collect();
    eventually(&format!("a running member leading group {group}"), || {
        let mut seen = Vec::new();
        for (member, endpoint) in &running {
            let status = try_status_json_at(endpoint)?;
            let leader = status[0]["groups"][group as usize]["leader"].as_u64().unwrap_or(0);
            if running.iter().any(|(candidate, _)| candidate.id == leader) {
                return Ok(leader);
            }
            seen.push((member.id, leader));
        }
        Err(format!("leaders as (member, its leader): {seen:?}"))
    })
}

/// One client: random operations until `stop`, through `endpoints` in
/// turn from `endpoints[first]` (the next one after any failure), each
/// recorded with its instants in microseconds since `start`.
fn record(
    seed: u32,
    client: u32,
    endpoints: &[String],
    first: usize,
    start: Instant,
    stop: &AtomicBool,
) -> Vec<Record> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut chooser = Chooser::for_client(seed.wrapping_mul(CLIENTS + 1).wrapping_add(client + 1));
        let mut history = Vec::new();
        let mut node = first;
        let mut connection: Option<ShardedClient> = None;
        // The last value this client saw per key: what its cas expects.
        let mut last_seen: Vec<Option<Vec<u8>>> = vec![None; KEYS as usize];
        let mut sequence = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Some(sharded) = &connection else {
                connection = common::cluster::connect_next(endpoints, &mut node, OPERATION_TIMEOUT).await;
                continue;
            };
            let number = chooser.number_below(KEYS);
            sequence += 1;
            let value = format!("{client}.{sequence}").into_bytes();
            let choice = chooser.fraction();
            let operation = if choice < 0.25 {
                Operation::Put { key: key(number), value }
            } else if choice < 0.32 {
                Operation::Delete { key: key(number) }
            } else if choice < 0.58 {
                Operation::Get { key: key(number) }
            } else if choice < 0.8 {
                let expected =
                    if chooser.fraction() < 0.2 { None } else { last_seen[number as usize].clone() };
                Operation::Cas { key: key(number), expected, new: value }
            } else if choice < 0.92 {
                // Writes two keys at once when the first holds what this
                // client saw last, and (sometimes) deletes the second when
                // not: a read seeing half of it is a violation.
                let other = (number + 1 + chooser.number_below(KEYS - 1)) % KEYS;
                let failure = if chooser.fraction() < 0.5 {
                    vec![Write::Delete { key: key(other) }]
                } else {
                    Vec::new()
                };
                Operation::Txn {
                    compares: vec![Condition { key: key(number), value: last_seen[number as usize].clone() }],
                    success: vec![
                        Write::Put { key: key(number), value: value.clone() },
                        Write::Put { key: key(other), value },
                    ],
                    failure,
                }
            } else {
                Operation::Range { start: key(0), end: key(KEYS) }
            };
            let invoked = micros_since(start);
            let answer = tokio::time::timeout(OPERATION_TIMEOUT, perform(sharded, &operation)).await;
            let returned = micros_since(start);
            match answer {
                Ok(Ok(outcome)) => {
                    match (&operation, &outcome) {
                        (Operation::Put { value, .. }, _)
                        | (Operation::Cas { new: value, .. }, Outcome::Swapped(true)) => {
                            last_seen[number as usize] = Some(value.clone())
                        }
                        (Operation::Delete { .. }, _) => last_seen[number as usize] = None,
                        (_, Outcome::Read(seen)) => last_seen[number as usize].clone_from(seen),
                        (Operation::Txn { success, failure, .. }, Outcome::Branch(succeeded)) => {
                            for write in if *succeeded { success } else { failure } {
                                let written = match write {
                                    Write::Put { key, value } => (key, Some(value.clone())),
                                    Write::Delete { key } => (key, None),
                                };
                                if let Some(seen) = (0..KEYS).position(|number| key(number) == *written.0) {
                                    last_seen[seen] = written.1;
                                }
                            }
                        }
                        (_, Outcome::Listed(found)) => {
                            for (number, seen) in last_seen.iter_mut().enumerate() {
                                let name = key(number as u64);
                                *seen = found
                                    .iter()
                                    .find(|(listed, _)| *listed == name)
                                    .map(|(_, value)| value.clone());
                            }
                        }
                        _ => {}
                    }
                    history.push(Record {
                        client,
                        operation,
                        invoked,
                        returned: Some(Returned { at: returned, outcome }),
                    });
                }
                Ok(Err(_)) | Err(_) => {
                    // A failed read is dropped; a failed write may still
                    // take effect, so it stays open to the end.
                    if !matches!(operation, Operation::Get { .. } | Operation::Range { .. }) {
                        history.push(Record { client, operation, invoked, returned: None });
                    }
                    connection = None;
                    node = (node + 1) % endpoints.len();
                    // Every open write multiplies the orders the checker
                    // must try: wait out most of an election rather than
                    // pile up failed writes while there is no leader.
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
        }
        history
    })
}

/// Runs `operation` on the cluster: a get is a linearizable range of one
/// key; a cas is a transaction comparing the value (or, for an absent key,
/// version 0) and putting the new value when it holds; a transaction's
/// compares are made the same way.
async fn perform(client: &ShardedClient, operation: &Operation) -> Result<Outcome, ClientError> {
    match operation {
        Operation::Put { key, value } => client.put(key, value, 0, false).await.map(|_| Outcome::Written),
        Operation::Delete { key } => client.delete_range(key, &[], false).await.map(|_| Outcome::Written),
        Operation::Get { key } => {
            let query = RangeRequest { key: key.clone(), ..RangeRequest::default() };
            let answer = client.range(&query, false).await?;
            Ok(Outcome::Read(answer.kvs.into_iter().next().map(|found| found.value)))
        }
        Operation::Cas { key, expected, new } => {
            let target = match expected {
                Some(value) => CompareTarget::Value(value.clone()),
                None => CompareTarget::Version(0),
            };
            let txn = TxnRequest {
                compares: vec![Compare {
                    key: key.clone(),
                    range_end: Vec::new(),
                    target,
                    result: CompareResult::Equal,
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: key.clone(),
                    value: new.clone(),
                    lease: 0,
                    prev_kv: false,
                })],
                failure: Vec::new(),
            };
            Ok(Outcome::Swapped(client.txn(&txn).await?.response.succeeded))
        }
        Operation::Txn { compares, success, failure } => {
            let compare = |condition: &Condition| Compare {
                key: condition.key.clone(),
                range_end: Vec::new(),
                target: match &condition.value {
                    Some(value) => CompareTarget::Value(value.clone()),
                    None => CompareTarget::Version(0),
                },
                result: CompareResult::Equal,
            };
            let request = |write: &Write| match write {
                Write::Put { key, value } => RequestOp::Put(PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    lease: 0,
                    prev_kv: false,
                }),
                Write::Delete { key } => RequestOp::DeleteRange(DeleteRangeRequest {
                    key: key.clone(),
                    range_end: Vec::new(),
                    prev_kv: false,
                }),
            };
            let txn = TxnRequest {
                compares: compares.iter().map(compare).collect(),
                success: success.iter().map(request).collect(),
                failure: failure.iter().map(request).collect(),
            };
            Ok(Outcome::Branch(client.txn(&txn).await?.response.succeeded))
        }
        Operation::Range { start, end } => {
            let query =
                RangeRequest { key: start.clone(), range_end: end.clone(), ..RangeRequest::default() };
            let answer = client.range(&query, false).await?;
            Ok(Outcome::Listed(answer.kvs.into_iter().map(|found| (found.key, found.value)).collect()))
        }
    }
}
