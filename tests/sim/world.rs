//! One simulated run: the cluster a seed chooses, its clients, the faults
//! it injects (the nemesis), the heal phase that ends every run, and the
//! checks of what the clients saw and what the members hold.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use nvkv::raft::{GroupConfig, Member, NodeId};
use nvkv::shard::requests::Requests;
use nvkv::wal::{Durability, LogOptions};
use tokio::time::Instant;

use crate::disk::{DiskFaults, SimDisk};
use crate::entropy::Rng;
use crate::member::{self, MemberSetup, Running};
use crate::network::{Net, NetFaults};
use crate::workload::{History, WorkloadShape};

/// Faults injected, by kind; shared with the disks (which need `Send`).
#[derive(Clone, Default)]
pub struct Counts(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl Counts {
    pub fn add(&self, kind: &'static str) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entry(kind).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// The last things that happened, on the simulated clock, for a person
/// reading a failure.
#[derive(Clone)]
pub struct Trace {
    lines: Rc<RefCell<VecDeque<String>>>,
    start: Instant,
    /// A digest of every line ever noted: two runs of one seed must agree.
    digest: Rc<Cell<u32>>,
    /// Every line goes to stderr as it is noted (`SIM_TRACE=1`).
    pub live: bool,
}

const TRACE_LINES_KEPT: usize = 300;

impl Trace {
    pub fn new(start: Instant) -> Trace {
        Trace {
            lines: Rc::default(),
            start,
            digest: Rc::default(),
            live: std::env::var_os("SIM_TRACE").is_some(),
        }
    }

    pub fn note(&self, line: String) {
        let elapsed = Instant::now().duration_since(self.start).as_secs_f64();
        let line = format!("{elapsed:>10.6}s {line}");
        self.digest.set(crc32c::crc32c_append(self.digest.get(), line.as_bytes()));
        if self.live {
            eprintln!("sim: {line}");
        }
        let mut lines = self.lines.borrow_mut();
        if lines.len() == TRACE_LINES_KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.borrow().iter().cloned().collect()
    }

    pub fn digest(&self) -> u32 {
        self.digest.get()
    }
}

/// How many milliseconds a power cut waits at most for a write in flight.
const CUT_WAIT_TICKS_MAX: usize = 200;
/// How many times a waiting power cut lets the other tasks of a tick run
/// before it looks at the disks again.
const CUT_YIELDS_PER_TICK: usize = 16;

/// How often a ring-filling run looks at how full its members' rings are.
const RING_LOOK_EVERY: Duration = Duration::from_millis(20);

/// The nemesis's actions, each a fault kind.
const ACTIONS: &[&str] = &[
    "crash",
    "power_cut",
    "cluster_power_cut",
    "partition",
    "pause",
    "wipe",
    "bit_flip",
    "latent_read_error",
];

/// The fault kinds a run may inject: the nemesis's actions and the faults
/// of the disks and the network.
pub fn fault_kinds() -> Vec<&'static str> {
    let mut kinds = ACTIONS.to_vec();
    kinds.extend(["misdirected_write", "torn_write", "net_drop", "net_duplicate", "net_delay"]);
    kinds
}

/// Everything a seed decides about a run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub seconds: u64,
    pub members: usize,
    pub groups_per_shard: u32,
    pub lba_bytes: u32,
    pub namespace_blocks: u64,
    pub durability: Durability,
    pub disk: DiskFaults,
    pub net: NetFaults,
    /// Members whose disks may corrupt (a minority).
    pub corruptible: BTreeSet<NodeId>,
    /// Milliseconds between two faults (low, high).
    pub fault_every_ms: (u64, u64),
    /// Weights of the nemesis's actions, by kind.
    pub weights: BTreeMap<&'static str, u64>,
    pub workload: WorkloadShape,
    pub request_timeout_ms: u64,
    pub snapshot_after_entries: u64,
    pub batch_bytes_max: usize,
    pub cache_bytes_max: usize,
    /// Power cuts wait for a write in flight on a disk they hit, so that
    /// they tear it (off with `--disable torn_write`).
    pub cuts_tear_writes: bool,
    /// The ring-filling shape ([`Scenario::fill_the_ring`]).
    pub fills_ring: bool,
    /// The ring-filling shape whose stores outgrow the snapshot area
    /// ([`Scenario::outgrow_the_snapshot_area`]).
    pub outgrows_snapshot_area: bool,
    /// Revisions a leader keeps at most when it compacts for room
    /// (`store.compact_under_pressure_keep_revisions`; 0: never on its own).
    pub compact_keep_revisions: u64,
}

/// One seed in this many fills its shard's log ring ([`Scenario::fill_the_ring`]).
const RING_FILLING_ONE_IN: u64 = 8;
/// One ring-filling seed in this many outgrows its snapshot area
/// ([`Scenario::outgrow_the_snapshot_area`]).
const OUTGROWN_STORE_ONE_IN: u64 = 3;

impl Scenario {
    /// The scenario of `seed`; with `fill_rings`, one seed in
    /// [`RING_FILLING_ONE_IN`] takes the ring-filling shape instead.
    pub fn from_seed(seed: u64, seconds: u64, disabled: &BTreeSet<String>, fill_rings: bool) -> Scenario {
        let mut rng = Rng::new(seed).split("scenario");
        let members = if rng.chance(0.2) { 5 } else { 3 };
        let lba_bytes = if rng.chance(0.5) { 512 } else { 4096 };
        let namespace_bytes: u64 = *rng.pick(&[4 << 20, 6 << 20, 16 << 20]);
        // Data is lost (corrupted, wiped) on a minority only, so a quorum
        // always holds a good copy of what was acknowledged.
        let minority = (members - 1) / 2;
        let faulty = rng.between(1, minority as u64) as usize;
        let mut corruptible = BTreeSet::new();
        while corruptible.len() < faulty {
            corruptible.insert(rng.between(1, members as u64));
        }
        let mut weights: BTreeMap<&'static str, u64> = BTreeMap::new();
        for kind in ACTIONS.iter().copied() {
            let weight = match kind {
                "cluster_power_cut" | "wipe" => rng.between(0, 2),
                _ => rng.between(0, 6),
            };
            weights.insert(kind, weight);
        }
        weights.insert("heal", 6);
        let mut net = NetFaults {
            delay_us: (50, rng.between(200, 3_000)),
            long_delay_chance: if rng.chance(0.5) { rng.between(1, 20) as f64 / 1000.0 } else { 0.0 },
            long_delay_ms: rng.between(20, 400),
            drop_chance: if rng.chance(0.5) { rng.between(1, 20) as f64 / 1000.0 } else { 0.0 },
            duplicate_chance: if rng.chance(0.5) { rng.between(1, 30) as f64 / 1000.0 } else { 0.0 },
        };
        let mut disk = DiskFaults {
            latency_us: (10, rng.between(50, 500)),
            slow_chance: rng.between(0, 10) as f64 / 1000.0,
            slow_us: rng.between(1_000, 50_000),
            misdirect_chance: if rng.chance(0.5) { rng.between(1, 10) as f64 / 10_000.0 } else { 0.0 },
        };
        // Faults named on the command line are off.
        for kind in disabled {
            match kind.as_str() {
                "net_drop" => net.drop_chance = 0.0,
                "net_duplicate" => net.duplicate_chance = 0.0,
                "net_delay" => net.long_delay_chance = 0.0,
                "misdirected_write" => disk.misdirect_chance = 0.0,
                // Read below: cuts then fall wherever the nemesis draws them.
                "torn_write" => {}
                other => {
                    weights.remove(other);
                }
            }
        }
        if disabled.contains("bit_flip")
            && disabled.contains("latent_read_error")
            && disk.misdirect_chance == 0.0
        {
            corruptible.clear();
        }
        let value_bytes_max = if rng.chance(0.3) { rng.between(4 << 10, 64 << 10) as usize } else { 256 };
        let mut scenario = Scenario {
            seed,
            seconds,
            members,
            groups_per_shard: rng.between(1, 3) as u32,
            lba_bytes,
            namespace_blocks: namespace_bytes / u64::from(lba_bytes),
            durability: if rng.chance(0.5) { Durability::Fua } else { Durability::Flush },
            disk,
            net,
            corruptible,
            fault_every_ms: (100, rng.between(300, 2_000)),
            weights,
            workload: WorkloadShape {
                clients: rng.between(2, 5) as usize,
                watchers: rng.between(1, 3) as usize,
                keys: rng.between(2, 6) as usize,
                value_bytes_max,
                long_value_chance: 0.2,
                think_ms: (0, rng.between(5, 60)),
                lease_chance: 0.5,
            },
            request_timeout_ms: 5_000,
            snapshot_after_entries: rng.between(20, 400),
            batch_bytes_max: 256 << 10,
            cache_bytes_max: *rng.pick(&[16 << 10, 1 << 20]),
            cuts_tear_writes: !disabled.contains("torn_write"),
            fills_ring: false,
            outgrows_snapshot_area: false,
            compact_keep_revisions: 0,
        };
        // Drawn apart from the rest, so that the other seeds keep the
        // scenarios (and the regressions) they had.
        let mut ring = Rng::new(seed).split("full-ring");
        if fill_rings && ring.below(RING_FILLING_ONE_IN) == 0 {
            scenario.fill_the_ring(&mut ring);
        }
        scenario
    }

    /// The shape that brings a shard's ring near full, where it once wedged
    /// for good (the records that would free space queued behind entries
    /// waiting for it): the smallest namespace a shard fits (a 1.5 MiB
    /// ring), one group, many writers of large values with no pause
    /// between them (together more than the quarter of the ring admission
    /// keeps free), and snapshots only when the group's entries take their
    /// share of the ring, never by count. The live keys (at most two
    /// checked keys and their siblings; no leases, whose keys live on
    /// until they expire) stay inside the snapshot area: a store that
    /// outgrows it raises NOSPACE, which is another shape. Leaders compact
    /// for room as nvkv's default configuration lets them (a Raft entry of
    /// their own that needs ring space before any snapshot can free some).
    fn fill_the_ring(&mut self, rng: &mut Rng) {
        self.fills_ring = true;
        self.compact_keep_revisions = 10_000;
        self.namespace_blocks = (2 << 20) / u64::from(self.lba_bytes);
        self.groups_per_shard = 1;
        self.snapshot_after_entries = 1_000_000;
        self.workload.clients = rng.between(8, 10) as usize;
        self.workload.keys = rng.between(1, 2) as usize;
        self.workload.value_bytes_max = rng.between(40 << 10, 56 << 10) as usize;
        self.workload.long_value_chance = 0.8;
        self.workload.lease_chance = 0.0;
        self.workload.think_ms = (0, rng.between(1, 4));
        // Drawn apart again, so that the seeds of the first shape keep it.
        let mut outgrown = Rng::new(self.seed).split("outgrown-store");
        if outgrown.below(OUTGROWN_STORE_ONE_IN) == 0 {
            self.outgrow_the_snapshot_area(&mut outgrown);
        }
    }

    /// The ring-filling shape whose live keys outgrow the snapshot area, so
    /// that its groups raise NOSPACE and cannot purge their logs until
    /// deletes shrink their stores: more and larger keys, in up to three
    /// groups, and leases. It once wedged its shard: writes admitted just
    /// under three quarters carried the ring past nine tenths, where the
    /// deletes that would have cleared the alarm waited for ever.
    fn outgrow_the_snapshot_area(&mut self, rng: &mut Rng) {
        self.outgrows_snapshot_area = true;
        self.groups_per_shard = rng.between(1, 3) as u32;
        self.workload.clients = rng.between(6, 8) as usize;
        self.workload.keys = rng.between(3, 6) as usize;
        self.workload.value_bytes_max = rng.between(48 << 10, 128 << 10) as usize;
        self.workload.lease_chance = 0.5;
    }

    pub fn describe(&self) -> String {
        format!(
            "{} members ({} groups), {}-byte blocks, {} KiB namespaces, durability {}, corruptible {:?}, \
             faults every {:?} ms, weights {:?}, net {:?}, disk {:?}, workload {:?}, snapshots every {} entries{}",
            self.members,
            self.groups_per_shard,
            self.lba_bytes,
            self.namespace_blocks * u64::from(self.lba_bytes) / 1024,
            self.durability.name(),
            self.corruptible,
            self.fault_every_ms,
            self.weights,
            self.net,
            self.disk,
            self.workload,
            self.snapshot_after_entries,
            match (self.fills_ring, self.outgrows_snapshot_area) {
                (true, true) => " (the ring-filling shape, stores outgrowing the snapshot area)",
                (true, false) => " (the ring-filling shape)",
                _ => "",
            }
        )
    }
}

/// A simulated cluster and its clients.
pub struct World {
    pub scenario: Scenario,
    pub start: Instant,
    pub net: Rc<Net>,
    pub counts: Counts,
    pub trace: Trace,
    pub history: RefCell<History>,
    disks: BTreeMap<NodeId, SimDisk>,
    setups: BTreeMap<NodeId, MemberSetup>,
    pub running: RefCell<BTreeMap<NodeId, Running>>,
    incarnations: Cell<u64>,
    /// Members whose data was wiped and who start in join mode, once removed.
    rejoining: RefCell<BTreeSet<NodeId>>,
    /// Members whose data was wiped and who did not rejoin yet: refused at
    /// their start, or (started while their peers were down) by every
    /// peer's hello.
    wiped: RefCell<BTreeSet<NodeId>>,
    rng: RefCell<Rng>,
}

impl World {
    pub fn new(scenario: Scenario) -> Rc<World> {
        let start = Instant::now();
        let mut rng = Rng::new(scenario.seed);
        let counts = Counts::default();
        let trace = Trace::new(start);
        let net = Net::new(rng.split("net"), scenario.net, counts.clone(), trace.clone());
        let members: Vec<Member> = (1..=scenario.members as NodeId)
            .map(|id| Member {
                id,
                peer_address: format!("10.0.0.{id}:2380"),
                name: format!("m{id}"),
                client_address: format!("10.0.0.{id}:2379"),
            })
            .collect();
        let raft = GroupConfig {
            cluster_name: "sim".into(),
            snapshot_logs_since_last: scenario.snapshot_after_entries,
            max_in_snapshot_log_to_keep: rng.between(0, 50),
            purge_batch_size: rng.between(1, 32),
            snapshot_on_demand: true,
            request_timeout_ms: scenario.request_timeout_ms,
            ..GroupConfig::default()
        };
        let log = LogOptions {
            durability: scenario.durability,
            batch_bytes_max: scenario.batch_bytes_max,
            inflight_writes_max: 4,
            cache_bytes_max: scenario.cache_bytes_max,
            queue_depth: 64,
            repair_snapshots_from_peers: scenario.members > 1,
        };
        // As node::snapshot_policy picks it.
        let probe = SimDisk::new(
            0,
            scenario.lba_bytes,
            scenario.namespace_blocks,
            scenario.disk,
            false,
            Rng::new(0),
            Counts::default(),
        );
        let ring_bytes = ring_bytes(&probe);
        let snapshots = nvkv::shard::snapshots::SnapshotPolicy {
            every_entries: scenario.snapshot_after_entries,
            after_bytes: (ring_bytes / 4 / u64::from(scenario.groups_per_shard)).max(1),
            compact_keep_revisions: scenario.compact_keep_revisions,
        };
        let mut disks = BTreeMap::new();
        let mut setups = BTreeMap::new();
        for member in &members {
            let corruptible = scenario.corruptible.contains(&member.id);
            disks.insert(
                member.id,
                SimDisk::new(
                    member.id,
                    scenario.lba_bytes,
                    scenario.namespace_blocks,
                    scenario.disk,
                    corruptible,
                    rng.split("disk"),
                    counts.clone(),
                ),
            );
            setups.insert(
                member.id,
                MemberSetup {
                    id: member.id,
                    cluster_name: "sim".into(),
                    members: members.clone(),
                    groups_per_shard: scenario.groups_per_shard,
                    partition_depth: 1,
                    raft: raft.clone(),
                    log: log.clone(),
                    snapshots,
                    watch_events_pending_max: 64,
                },
            );
        }
        Rc::new(World {
            scenario,
            start,
            net,
            counts,
            trace,
            history: RefCell::default(),
            disks,
            setups,
            running: RefCell::default(),
            incarnations: Cell::new(0),
            rejoining: RefCell::default(),
            wiped: RefCell::default(),
            rng: RefCell::new(rng.split("nemesis")),
        })
    }

    pub fn member_ids(&self) -> Vec<NodeId> {
        self.setups.keys().copied().collect()
    }

    pub fn requests_of(&self, member: NodeId) -> Option<Rc<RefCell<Option<Requests>>>> {
        self.running.borrow().get(&member).map(|running| running.requests.clone())
    }

    fn start_member(&self, id: NodeId, join: bool) {
        let incarnation = self.incarnations.get() + 1;
        self.incarnations.set(incarnation);
        self.trace.note(format!("member {id} starts{}", if join { " in join mode" } else { "" }));
        let running =
            member::start(&self.setups[&id], &self.disks[&id], &self.net, incarnation, join, &self.trace);
        self.running.borrow_mut().insert(id, running);
    }

    /// Kills member `id`; with `power`, its disk loses power too.
    fn kill(&self, id: NodeId, power: bool) {
        let Some(running) = self.running.borrow_mut().remove(&id) else { return };
        self.net.detach(id);
        running.kill();
        if power {
            self.disks[&id].power_cut();
        } else {
            self.disks[&id].process_crash();
        }
    }

    /// Runs the whole simulation and returns what the checks found.
    pub async fn run(self: &Rc<Self>) -> Vec<String> {
        self.trace.note(format!("scenario: {}", self.scenario.describe()));
        if self.trace.live {
            // The simulated clock, once a simulated second, to see a slow run move.
            let start = self.start;
            tokio::task::spawn_local(async move {
                let real = std::time::Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    eprintln!(
                        "sim: {:>10.6}s (real {:.1} s)",
                        Instant::now().duration_since(start).as_secs_f64(),
                        real.elapsed().as_secs_f64()
                    );
                }
            });
        }
        for id in self.member_ids() {
            self.start_member(id, false);
        }
        if self.scenario.fills_ring {
            self.watch_ring_use();
        }
        let until = self.start + Duration::from_secs(self.scenario.seconds);
        let mut rng = self.rng.borrow_mut().split("clients");
        let mut tasks = Vec::new();
        for client in 0..self.scenario.workload.clients {
            tasks.push(tokio::task::spawn_local(self.clone().client(
                client as u32,
                rng.split("client"),
                until,
            )));
        }
        for watcher in 0..self.scenario.workload.watchers {
            let index = watcher % self.scenario.workload.keys;
            tasks.push(tokio::task::spawn_local(self.clone().watcher(index, rng.split("watcher"), until)));
        }
        self.nemesis(until).await;
        self.heal().await;
        for task in tasks {
            let _ = task.await;
        }
        crate::checks::check(self).await
    }

    /// Injects faults until `until`.
    async fn nemesis(self: &Rc<Self>, until: Instant) {
        // Let the cluster elect its first leaders in peace.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while Instant::now() < until {
            let (pause, action, target) = {
                let mut rng = self.rng.borrow_mut();
                let pause = rng.between(self.scenario.fault_every_ms.0, self.scenario.fault_every_ms.1);
                let total: u64 = self.scenario.weights.values().sum();
                let mut draw = rng.below(total.max(1));
                let mut action = "heal";
                for (kind, weight) in &self.scenario.weights {
                    if draw < *weight {
                        action = kind;
                        break;
                    }
                    draw -= weight;
                }
                let target = rng.between(1, self.scenario.members as u64);
                (pause, action, target)
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            self.act(action, target).await;
        }
    }

    async fn act(self: &Rc<Self>, action: &'static str, target: NodeId) {
        let up = self.running.borrow().contains_key(&target);
        match action {
            "crash" | "power_cut" if up => {
                if action == "power_cut" {
                    self.cut_during_a_write(&[target]).await;
                }
                self.counts.add(action);
                self.trace.note(format!("{action}: member {target}"));
                self.kill(target, action == "power_cut");
                self.restart_later(target, self.draw(100, 3_000));
            }
            "cluster_power_cut" => {
                self.cut_during_a_write(&self.member_ids()).await;
                self.counts.add(action);
                self.trace.note("power cut: the whole cluster".into());
                for id in self.member_ids() {
                    self.kill(id, true);
                }
                for id in self.member_ids() {
                    self.restart_later(id, self.draw(100, 2_000));
                }
            }
            "partition" => {
                self.counts.add(action);
                let members = self.member_ids();
                let mut rng = self.rng.borrow_mut();
                if rng.chance(0.3) {
                    // One way only.
                    let from = *rng.pick(&members);
                    let to = *rng.pick(&members);
                    if from != to {
                        self.trace.note(format!("partition: link {from} -> {to} cut"));
                        self.net.cut(from, to);
                    }
                } else {
                    let side: BTreeSet<NodeId> =
                        members.iter().copied().filter(|_| rng.chance(0.5)).collect();
                    self.trace.note(format!("partition: {side:?} apart from the rest"));
                    for a in &members {
                        for b in &members {
                            if side.contains(a) != side.contains(b) {
                                self.net.cut(*a, *b);
                            }
                        }
                    }
                }
            }
            "heal" => {
                self.trace.note("heal: every link works again".into());
                self.net.heal();
                for running in self.running.borrow().values() {
                    running.resume();
                }
            }
            "pause" if up => {
                self.counts.add(action);
                self.trace.note(format!("pause: member {target} stops running (SIGSTOP)"));
                self.running.borrow()[&target].pause();
                let world = self.clone();
                let resume_after = Duration::from_millis(self.draw(200, 4_000));
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(resume_after).await;
                    if let Some(running) = world.running.borrow().get(&target) {
                        world.trace.note(format!("member {target} runs again (SIGCONT)"));
                        running.resume();
                    }
                });
            }
            "wipe" if up && self.scenario.corruptible.contains(&target) => {
                self.counts.add(action);
                self.trace.note(format!("wipe: member {target} loses its data and restarts"));
                self.kill(target, true);
                self.disks[&target].wipe();
                self.wiped.borrow_mut().insert(target);
                self.restart_later(target, self.draw(100, 2_000));
            }
            "bit_flip" => {
                if let Some(lba) = self.disks[&target].flip_bit() {
                    self.counts.add(action);
                    self.trace.note(format!("bit flip: member {target} LBA {lba}"));
                }
            }
            "latent_read_error" => {
                if let Some(lba) = self.disks[&target].latent_error() {
                    self.counts.add(action);
                    self.trace.note(format!("latent read error: member {target} LBA {lba}"));
                }
            }
            _ => {}
        }
    }

    /// Holds a power cut of `targets` until one of their disks has a write
    /// in flight (one not yet reported durable), for up to
    /// [`CUT_WAIT_TICKS_MAX`] milliseconds, so that the cut tears it: the
    /// disk keeps any subset of its blocks. Drawn on their own, faults fall
    /// on whole milliseconds of the paused clock, and so do the wake-ups of
    /// the members that reap their disks: a write submitted in one tick is
    /// done by the next, and a cut at a tick almost never found one in
    /// flight. Within a tick, the members that run before this task have
    /// submitted theirs, so it looks after letting them run.
    async fn cut_during_a_write(&self, targets: &[NodeId]) {
        if !self.scenario.cuts_tear_writes {
            return;
        }
        for _ in 0..CUT_WAIT_TICKS_MAX {
            for _ in 0..CUT_YIELDS_PER_TICK {
                tokio::task::yield_now().await;
                let now = tokio::time::Instant::now();
                if targets.iter().any(|id| self.disks[id].writes_in_flight(now) > 0) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn draw(&self, low: u64, high: u64) -> u64 {
        self.rng.borrow_mut().between(low, high)
    }

    /// Starts member `id` again after `millis`, unless it runs by then.
    fn restart_later(self: &Rc<Self>, id: NodeId, millis: u64) {
        let world = self.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            if !world.running.borrow().contains_key(&id) {
                world.start_member(id, world.rejoining.borrow().contains(&id));
            }
        });
    }

    /// Ends the faults: links heal, paused members run, members that are
    /// down start again (a wiped one rejoins the way an operator makes it:
    /// removed, started in join mode, added back and promoted), and the
    /// clients finish.
    async fn heal(self: &Rc<Self>) {
        self.trace.note("heal phase: no more faults".into());
        self.net.heal();
        self.net.calm();
        for disk in self.disks.values() {
            disk.heal();
        }
        for running in self.running.borrow().values() {
            running.resume();
        }
        // Let restarts scheduled by the nemesis happen.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for id in self.member_ids() {
            if !self.running.borrow().contains_key(&id) {
                self.start_member(id, self.rejoining.borrow().contains(&id));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // A member may find damage only when it starts again to rejoin:
        // restored in turn, a few rounds.
        for _ in 0..3 {
            self.restore_stopped();
            let wiped: Vec<NodeId> = self.wiped.borrow().iter().copied().collect();
            if wiped.is_empty() {
                break;
            }
            for id in wiped {
                self.rejoin(id).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A member on a corrupting disk that stopped for good (its log
    /// damaged, as it should stop rather than serve from it) is
    /// restored from its peers the way its message tells the operator:
    /// its data cleared, then it rejoins as a wiped member does. Counted as
    /// `operator_restore`: nvkv repairs one damaged record in the middle of
    /// a shard's log and a damaged snapshot from its peers by itself, but
    /// still stops on damage it cannot bound (the checkpoints, the first
    /// record after them, a second damaged record). A member whose disk cannot corrupt and that stops
    /// for good is left as it is, a failure of the checks.
    fn restore_stopped(&self) {
        let stopped: Vec<NodeId> = self
            .running
            .borrow()
            .iter()
            .filter(|(id, running)| {
                self.scenario.corruptible.contains(id)
                    && matches!(&*running.stopped.borrow(), Some(crate::member::Stopped::Unrecoverable(_)))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stopped {
            self.counts.add("operator_restore");
            self.trace
                .note(format!("member {id} stopped for good: the operator clears its data to restore it"));
            self.kill(id, false);
            self.disks[&id].wipe();
            self.wiped.borrow_mut().insert(id);
            self.start_member(id, false);
        }
    }

    /// The operator's way back for a member whose data was lost: remove it
    /// through a running member, start it in join mode, add it as a learner
    /// and promote it once it caught up.
    async fn rejoin(self: &Rc<Self>, id: NodeId) {
        self.trace.note(format!("member {id} lost its data: it rejoins as a new member"));
        self.counts.add("rejoin");
        let change = |change: nvkv::shard::membership::MembershipChange| {
            let world = self.clone();
            async move {
                for _ in 0..20 {
                    for via in world.member_ids().into_iter().filter(|via| *via != id) {
                        let Some(handle) = world.requests_of(via) else { continue };
                        let change = change.clone();
                        let call = world.net.client_call(via, move || {
                            async move {
                                let Some(requests) = handle.borrow().clone() else { return false };
                                requests.change_membership(change).await.is_ok()
                            }
                            .boxed_local()
                        });
                        let timeout = Duration::from_millis(world.scenario.request_timeout_ms * 2);
                        if let Ok(Some(true)) = tokio::time::timeout(timeout, call).await {
                            return true;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                false
            }
        };
        if !change(nvkv::shard::membership::MembershipChange::Remove(id)).await {
            self.trace.note(format!("member {id} could not be removed"));
            return;
        }
        self.kill(id, false);
        self.wiped.borrow_mut().remove(&id);
        self.rejoining.borrow_mut().insert(id);
        self.net.forget_votes_of(id);
        self.start_member(id, true);
        let member = self.setups[&id].member();
        if !change(nvkv::shard::membership::MembershipChange::AddLearner(member)).await {
            self.trace.note(format!("member {id} could not be added back"));
            return;
        }
        if !change(nvkv::shard::membership::MembershipChange::Promote(id)).await {
            self.trace.note(format!("member {id} could not be promoted"));
        }
    }

    /// How full each running member's shard log ring is: (member, used
    /// bytes, ring bytes).
    pub fn ring_use(&self) -> Vec<(NodeId, u64, u64)> {
        self.running
            .borrow()
            .iter()
            .filter_map(|(id, running)| {
                let log = running.log.borrow().clone()?;
                let stats = log.with(|log| log.stats());
                Some((*id, stats.used_bytes, stats.ring_bytes))
            })
            .collect()
    }

    /// Notes, once a run, that a member's ring was seen past three
    /// quarters and past nine tenths full (`ring.past_75_percent`,
    /// `ring.past_90_percent` in the summary), so that the ring-filling
    /// shape shows it does fill rings. Reads the logs only: the members'
    /// schedules stay as they were.
    fn watch_ring_use(self: &Rc<Self>) {
        let world = self.clone();
        tokio::task::spawn_local(async move {
            let mut most = 0;
            loop {
                tokio::time::sleep(RING_LOOK_EVERY).await;
                for (id, used, ring) in world.ring_use() {
                    let percent = used * 100 / ring.max(1);
                    for (mark, kind) in [(75, "ring.past_75_percent"), (90, "ring.past_90_percent")] {
                        if percent >= mark && most < mark {
                            world.counts.add(kind);
                            world.trace.note(format!("member {id}'s log ring is {percent}% full"));
                        }
                    }
                    most = most.max(percent);
                }
            }
        });
    }

    pub fn disk_digests(&self) -> Vec<u32> {
        self.disks.values().map(SimDisk::digest).collect()
    }
}

/// The ring of shard 0 of a namespace laid out like `disk`.
fn ring_bytes(disk: &SimDisk) -> u64 {
    use nvkv::nvme::Namespace;
    let mut queue = disk.open_queue_pair(&nvkv::nvme::QueuePairConfig::default()).expect("queue pair");
    let options = nvkv::wal::superblock::FormatOptions { shards: 1, groups_per_shard_max: 16, member_id: 0 };
    let (superblock, _) =
        nvkv::wal::superblock::open_or_format(queue.as_mut(), options).expect("a blank disk formats");
    let region = superblock.region(0);
    region.ring_blocks() * u64::from(superblock.lba_bytes)
}
