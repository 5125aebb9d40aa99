//! Tests of Raft groups over the shard log (the harness here; the tests in
//! `cluster`, three members carrying two groups in one process through
//! elections, leader loss, restarts and catch-up, and `storage`, the
//! encodings, openraft's storage suite and concurrent snapshots).
//!
//! Every test runs in a current-thread runtime with a `LocalSet`, as a
//! shard does; a small task per member ticks its shard log the way the
//! reactor's `LogDriver` does.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{EntryPayload, LeaderId, ServerState};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::log_store::{decode_entry, encode_entry, entry_committed, VoteSlot};
use super::types::{Entry, LogId, Membership, Vote};
use super::*;
use crate::nvme::fault::FaultNamespace;
use crate::nvme::memory::MemoryNamespace;
use crate::nvme::{Namespace, QueuePairConfig};
use crate::wal::checkpoint::VOTE_BYTES_MAX;
use crate::wal::superblock::{self, FormatOptions};
use crate::wal::{LogOptions, ShardLog, ShardRegion, SharedLog};

const LBA_BYTES: u32 = 4096;
/// 16 MiB: a ring of well over the 1 MiB minimum.
const NAMESPACE_BLOCKS: u64 = 4096;
/// Two groups with ids that are not positions, as groups of one shard are.
const GROUPS: [GroupId; 2] = [3, 7];
const WAIT_MAX: Duration = Duration::from_secs(5);

fn run<F: Future>(future: F) -> F::Output {
    run_with_clock(false, future)
}

/// Runs `future` as a shard runs its tasks; with `paused_clock`, time moves
/// only when every task waits, so sleeps take no real time.
fn run_with_clock<F: Future>(paused_clock: bool, future: F) -> F::Output {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(paused_clock)
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

/// A state machine that keeps every command in order and a running hash.
#[derive(Default)]
struct TestMachine {
    commands: Vec<(u64, Vec<u8>)>,
    hash: u64,
    restores: u32,
}

fn fold(mut hash: u64, index: u64, command: &[u8]) -> u64 {
    // FNV-1a over the index and the command.
    for byte in index.to_le_bytes().iter().chain(command) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl GroupStateMachine for TestMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        self.hash = fold(self.hash, index, command);
        self.commands.push((index, command.to_vec()));
        self.hash.to_le_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = self.hash.to_le_bytes().to_vec();
        for (index, command) in &self.commands {
            bytes.extend_from_slice(&index.to_le_bytes());
            bytes.extend_from_slice(&(command.len() as u32).to_le_bytes());
            bytes.extend_from_slice(command);
        }
        bytes
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let take = |at: &mut usize, count: usize| -> Result<&[u8], String> {
            let bytes = snapshot.get(*at..*at + count).ok_or(format!("snapshot cut short at byte {at}"))?;
            *at += count;
            Ok(bytes)
        };
        let mut at = 0;
        let hash = u64::from_le_bytes(take(&mut at, 8)?.try_into().expect("8 bytes"));
        let mut commands = Vec::new();
        let mut check = 0;
        while at < snapshot.len() {
            let index = u64::from_le_bytes(take(&mut at, 8)?.try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes")) as usize;
            let command = take(&mut at, len)?.to_vec();
            check = fold(check, index, &command);
            commands.push((index, command));
        }
        if check != hash {
            return Err(format!("snapshot hash {hash:#x} does not match its commands ({check:#x})"));
        }
        self.commands = commands;
        self.hash = hash;
        self.restores += 1;
        Ok(())
    }
}

/// What survives a member's restart: its namespace and its snapshots.
struct Disk {
    namespace: Arc<dyn Namespace>,
    region: ShardRegion,
    snapshots: Rc<MemorySnapshotStore>,
}

impl Disk {
    fn new(namespace: Arc<dyn Namespace>) -> Disk {
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let (superblock, _) = superblock::open_or_format(
            queue.as_mut(),
            FormatOptions { shards: 1, groups_per_shard_max: 16, member_id: 0 },
        )
        .expect("format");
        Disk { namespace, region: superblock.region(0), snapshots: Rc::new(MemorySnapshotStore::new()) }
    }

    fn memory() -> Disk {
        Disk::new(Arc::new(MemoryNamespace::new(LBA_BYTES, NAMESPACE_BLOCKS)))
    }

    /// Opens the shard log and starts ticking it, as a reactor would.
    fn open_log(&self) -> (SharedLog, JoinHandle<()>) {
        let queue = self
            .namespace
            .open_queue_pair(&QueuePairConfig { depth: 64, registered_buffer_bytes: 1 << 20 })
            .expect("queue pair");
        // A cache of a few dozen entries, so catching up reads entries back
        // from the device.
        let options = LogOptions { cache_bytes_max: 2 << 10, ..LogOptions::default() };
        let log = ShardLog::open(queue, self.region, options).expect("open the shard log");
        let kick = Rc::new(Notify::new());
        let notify = kick.clone();
        let log = SharedLog::new(log, Rc::new(move || notify.notify_one()));
        let ticked = log.clone();
        let ticker = tokio::task::spawn_local(async move {
            loop {
                // Seals as soon as the log is idle: the strictest timing.
                let progress = ticked.tick() || ticked.seal_when_idle();
                if !progress && ticked.with(|log| log.is_idle()) {
                    kick.notified().await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        });
        (log, ticker)
    }
}

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {WAIT_MAX:?} for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fast_config() -> GroupConfig {
    GroupConfig {
        cluster_name: "test".into(),
        election_timeout_min_ms: 80,
        election_timeout_max_ms: 160,
        heartbeat_ms: 20,
        unreachable_backoff_ms: 20,
        request_timeout_ms: 3_000,
        refuse_votes_after_unproven_tail: true,
        apply_committed_at_start: true,
        ..GroupConfig::default()
    }
}

struct Running {
    group: RaftGroup,
    machine: Rc<RefCell<TestMachine>>,
}

struct Node {
    disk: Disk,
    log: SharedLog,
    ticker: JoinHandle<()>,
    groups: BTreeMap<GroupId, Running>,
}

/// Three members, each with its own namespace and one shard log shared by
/// both groups, talking through an in-process router.
struct Cluster {
    config: GroupConfig,
    router: Rc<LocalRouter>,
    members: Vec<Member>,
    up: BTreeMap<NodeId, Node>,
    down: BTreeMap<NodeId, Disk>,
}

impl Cluster {
    async fn new(config: GroupConfig) -> Cluster {
        let members: Vec<Member> = (1..=3).map(|id| Member::new(id, format!("10.0.0.{id}:2380"))).collect();
        let mut cluster = Cluster {
            config,
            router: Rc::new(LocalRouter::new()),
            members: members.clone(),
            up: BTreeMap::new(),
            down: BTreeMap::new(),
        };
        for member in &members {
            cluster.start(member.id, Disk::memory(), true).await;
        }
        cluster
    }

    /// Starts member `id` on `disk`; with `bootstrap`, it offers the first
    /// membership (a member joining later must not).
    async fn start(&mut self, id: NodeId, disk: Disk, bootstrap: bool) {
        let (log, ticker) = disk.open_log();
        let mut groups = BTreeMap::new();
        for group in GROUPS {
            let machine = Rc::new(RefCell::new(TestMachine::default()));
            let raft_group = RaftGroup::start(
                group,
                id,
                &self.config,
                log.clone(),
                machine.clone(),
                disk.snapshots.clone(),
                self.router.clone(),
            )
            .await
            .expect("start a group");
            if bootstrap {
                raft_group.bootstrap(&self.members).await.expect("bootstrap");
            }
            self.router.add(id, group, raft_group.peer_gate());
            groups.insert(group, Running { group: raft_group, machine });
        }
        self.up.insert(id, Node { disk, log, ticker, groups });
    }

    /// Stops member `id` as a crash would: its groups stop, nothing reaches
    /// it, its shard log is dropped; its namespace and snapshots stay.
    async fn stop(&mut self, id: NodeId) {
        let node = self.up.remove(&id).expect("the member is up");
        self.router.remove_node(id);
        for running in node.groups.values() {
            running.group.shutdown().await.expect("shutdown");
        }
        node.ticker.abort();
        drop(node.log);
        self.down.insert(id, node.disk);
    }

    async fn restart(&mut self, id: NodeId) {
        let disk = self.down.remove(&id).expect("the member is down");
        self.start(id, disk, true).await;
    }

    fn running(&self, id: NodeId, group: GroupId) -> &Running {
        &self.up[&id].groups[&group]
    }

    /// The member that leads `group`, once one does.
    async fn leader(&self, group: GroupId) -> NodeId {
        wait_for(&format!("a leader of group {group}"), || {
            self.up.iter().find_map(|(id, node)| {
                let metrics = node.groups[&group].group.metrics();
                (metrics.state == ServerState::Leader && metrics.current_leader == Some(*id)).then_some(*id)
            })
        })
        .await
    }

    /// The leader of `group` once every member that is up agrees on it.
    async fn agreed_leader(&self, group: GroupId) -> NodeId {
        wait_for(&format!("every member to agree on the leader of group {group}"), || {
            let leaders: Vec<_> =
                self.up.values().map(|node| node.groups[&group].group.metrics().current_leader).collect();
            let leader = leaders[0]?;
            let leading = self.up.get(&leader)?.groups[&group].group.metrics().state == ServerState::Leader;
            (leading && leaders.iter().all(|known| *known == Some(leader))).then_some(leader)
        })
        .await
    }

    /// A member that leads no group.
    async fn plain_follower(&self) -> NodeId {
        let mut leaders = Vec::new();
        for group in GROUPS {
            leaders.push(self.agreed_leader(group).await);
        }
        *self.up.keys().find(|id| !leaders.contains(id)).expect("three members, two groups")
    }

    /// Writes through the leader, following leader hints; returns the
    /// state machine's answer.
    async fn write(&self, group: GroupId, command: Vec<u8>) -> Vec<u8> {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let leader = self.leader(group).await;
            match self.running(leader, group).group.client_write(command.clone(), None).await {
                Ok(written) => return written.outcome,
                Err(GroupError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(error) => panic!("write to group {group} through member {leader}: {error}"),
            }
        }
    }

    async fn write_many(&self, group: GroupId, from: usize, count: usize) -> Vec<u8> {
        let mut last = Vec::new();
        for number in from..from + count {
            last = self.write(group, format!("group {group} command {number}").into_bytes()).await;
        }
        last
    }

    /// Waits until every member that is up has applied `commands` commands
    /// of `group`, all the same and in the same order.
    async fn converged(&self, group: GroupId, commands: usize) -> u64 {
        wait_for(&format!("every member to apply {commands} commands of group {group} alike"), || {
            let machines: Vec<_> = self.up.values().map(|node| node.groups[&group].machine.clone()).collect();
            let first = machines[0].borrow();
            let agree = machines.iter().all(|machine| {
                let machine = machine.borrow();
                machine.commands.len() == commands && machine.commands == first.commands
            });
            agree.then_some(first.hash)
        })
        .await
    }

    fn persisted_vote(&self, id: NodeId, group: GroupId) -> Option<Vote> {
        persisted_vote(&self.up[&id].log, group)
    }
}

fn persisted_vote(log: &SharedLog, group: GroupId) -> Option<Vote> {
    let bytes = log.with(|log| log.vote(group).map(<[u8]>::to_vec))?;
    VoteSlot::decode(&bytes).expect("the vote slot decodes").vote
}

mod cluster;
mod storage;
