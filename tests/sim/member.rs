//! One simulated member: the real shard log, Raft groups, store and request
//! handle of a one-shard node, started the way `node` starts a member
//! (superblock, identity and cluster, log, groups), on a `LocalSet` of its
//! own that the simulator drives like a reactor thread.
//!
//! Every member runs on the simulator's one thread: the thread-local state
//! of "the shard this thread runs" (`shard::ThreadShard`) is swapped in
//! around each poll of the member's tasks. A crash drops the member's tasks
//! and memory; its disk stays.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nvkv::nvme::{Namespace, QueuePairConfig};
use nvkv::raft::{GroupConfig, Member, NodeId};
use nvkv::reactor::DetachedShard;
use nvkv::rpc::incarnation;
use nvkv::shard::forward::LeaderLink;
use nvkv::shard::layout::GroupLayout;
use nvkv::shard::requests::Requests;
use nvkv::shard::{ShardState, ThreadShard};
use nvkv::wal::superblock::{self, FormatOptions, SuperblockKeeper};
use nvkv::wal::{LogOptions, ShardLog, SharedLog};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, LocalSet};

use crate::disk::SimDisk;
use crate::network::{Endpoint, Net, SimTransport, SimTransportLink};
use crate::world::Trace;

/// How a member is configured; the same for every start of it.
#[derive(Clone)]
pub struct MemberSetup {
    pub id: NodeId,
    pub cluster_name: String,
    /// Every member of the cluster as bootstrapped.
    pub members: Vec<Member>,
    pub groups_per_shard: u32,
    pub partition_depth: usize,
    pub raft: GroupConfig,
    pub log: LogOptions,
    pub snapshots: nvkv::shard::snapshots::SnapshotPolicy,
    pub watch_events_pending_max: usize,
}

impl MemberSetup {
    pub fn member(&self) -> Member {
        self.members.iter().find(|member| member.id == self.id).expect("a member of the cluster").clone()
    }
}

/// Why a member is not serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It refused to start: its peers know it by another namespace.
    Refused(String),
    /// Its log could not be opened or recovered.
    Unrecoverable(String),
}

/// What the world sees of a running member.
pub struct Running {
    task: JoinHandle<()>,
    pub local: Rc<LocalSet>,
    /// Set once its groups serve.
    pub requests: Rc<RefCell<Option<Requests>>>,
    /// Set when it stopped on its own (refused or unrecoverable).
    pub stopped: Rc<RefCell<Option<Stopped>>>,
    /// Its shard log once open, for the world to see how full its ring is.
    pub log: Rc<RefCell<Option<SharedLog>>>,
    pause: Rc<Pause>,
}

impl Running {
    pub fn pause(&self) {
        self.pause.paused.set(true);
    }

    pub fn resume(&self) {
        self.pause.paused.set(false);
        if let Some(waker) = self.pause.waker.take() {
            waker.wake();
        }
    }

    /// Kills the member: its tasks and memory go at once.
    pub fn kill(self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Pause {
    paused: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// The member's tasks, polled with its thread-local shard swapped in; not
/// polled at all while paused (as a SIGSTOPped process).
struct MemberRun {
    shard: ThreadShard,
    pause: Rc<Pause>,
    run: Pin<Box<dyn Future<Output = ()>>>,
}

impl Future for MemberRun {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.pause.paused.get() {
            self.pause.waker.set(Some(context.waker().clone()));
            return Poll::Pending;
        }
        let this = &mut *self;
        this.shard.swap();
        let polled = this.run.as_mut().poll(context);
        this.shard.swap();
        polled
    }
}

/// Starts member `setup.id` on `disk`; `join` starts it in join mode.
pub fn start(
    setup: &MemberSetup,
    disk: &SimDisk,
    net: &Rc<Net>,
    incarnation: u64,
    join: bool,
    trace: &Trace,
) -> Running {
    let local = Rc::new(LocalSet::new());
    let requests = Rc::new(RefCell::new(None));
    let stopped = Rc::new(RefCell::new(None));
    let shared_log = Rc::new(RefCell::new(None));
    let pause = Rc::new(Pause::default());
    let main = {
        let log_slot = shared_log.clone();
        let (setup, disk, net, requests, stopped, trace, local_handle) = (
            setup.clone(),
            disk.clone(),
            net.clone(),
            requests.clone(),
            stopped.clone(),
            trace.clone(),
            Rc::downgrade(&local),
        );
        async move {
            let outcome = run_member(
                setup.clone(),
                disk,
                net.clone(),
                incarnation,
                join,
                requests,
                log_slot,
                local_handle,
            )
            .await;
            if let Err(reason) = outcome {
                trace.note(format!("member {} stops: {reason:?}", setup.id));
                net.detach(setup.id);
                *stopped.borrow_mut() = Some(reason);
            }
        }
    };
    local.spawn_local(main);
    let runner = local.clone();
    let run = MemberRun {
        shard: ThreadShard::default(),
        pause: pause.clone(),
        run: Box::pin(async move { runner.run_until(std::future::pending::<()>()).await }),
    };
    let task = tokio::task::spawn_local(run);
    Running { task, local, requests, stopped, log: shared_log, pause }
}

/// Queue pairs of a simulated member: deep enough for the log's writes and
/// reads, buffers registered up to 1 MiB.
const QUEUE_PAIR: QueuePairConfig = QueuePairConfig { depth: 64, registered_buffer_bytes: 1 << 20 };

#[allow(clippy::too_many_arguments)]
async fn run_member(
    setup: MemberSetup,
    disk: SimDisk,
    net: Rc<Net>,
    incarnation: u64,
    join: bool,
    requests: Rc<RefCell<Option<Requests>>>,
    log_slot: Rc<RefCell<Option<SharedLog>>>,
    local: std::rc::Weak<LocalSet>,
) -> Result<(), Stopped> {
    let namespace: Arc<dyn Namespace> = Arc::new(disk.clone());
    let unrecoverable =
        |what: &str, error: &dyn std::fmt::Display| Stopped::Unrecoverable(format!("{what}: {error}"));
    let mut queue = namespace
        .open_queue_pair(&QUEUE_PAIR)
        .map_err(|error| unrecoverable("opening a queue pair", &error))?;
    let options = FormatOptions { shards: 1, groups_per_shard_max: 16, member_id: setup.id };
    let (superblock, _) = superblock::open_or_format(queue.as_mut(), options)
        .map_err(|error| unrecoverable("reading the superblock", &error))?;
    drop(queue);
    let keeper = Arc::new(SuperblockKeeper::new(namespace.clone(), QUEUE_PAIR, superblock.clone()));
    // node::own_namespace
    let formatted_by = keeper.identity().member_id;
    if formatted_by != 0 && formatted_by != setup.id {
        return Err(Stopped::Unrecoverable(format!("the namespace belongs to member {formatted_by}")));
    }
    keeper
        .update(|identity| {
            let unnamed = identity.member_id == 0;
            identity.member_id = setup.id;
            unnamed
        })
        .map_err(|error| unrecoverable("naming the namespace", &error))?;
    let halt = Arc::new(incarnation::Halt::default());
    net.attach(setup.id, Endpoint { incarnation, local, keeper: keeper.clone(), halt: halt.clone() });
    // node::join_cluster
    let identity = keeper.identity();
    if identity.cluster_id != incarnation::NO_CLUSTER {
        if identity.bootstrapped_blind {
            halt.bootstrapped_blind();
        }
    } else {
        let peers: Vec<NodeId> =
            setup.members.iter().map(|member| member.id).filter(|id| *id != setup.id).collect();
        let asked_at = tokio::time::Instant::now();
        let learned = loop {
            let answers = net.introduce(setup.id, &keeper, &peers).await;
            match incarnation::decide(setup.id, keeper.namespace_id(), &answers, join) {
                Err(incarnation::StartRefusal::PeerStarting { .. })
                    if asked_at.elapsed() < incarnation::UNSURE_WAIT =>
                {
                    tokio::time::sleep(incarnation::UNSURE_RETRY).await;
                }
                decided => break decided.map_err(|refusal| Stopped::Refused(refusal.to_string()))?,
            }
        };
        if learned.is_none() {
            halt.bootstrapped_blind();
        }
        let cluster = learned.unwrap_or_else(|| bootstrap_cluster_id(&setup));
        keeper
            .update(|identity| {
                identity.cluster_id = cluster;
                identity.bootstrapped_blind = learned.is_none();
                true
            })
            .map_err(|error| unrecoverable("recording the cluster", &error))?;
    }
    let queue = namespace
        .open_queue_pair(&QUEUE_PAIR)
        .map_err(|error| unrecoverable("opening a queue pair", &error))?;
    let log = ShardLog::open(queue, superblock.region(0), setup.log.clone())
        .map_err(|error| unrecoverable("opening the shard log", &error))?;
    let notify = Rc::new(Notify::new());
    let detached = DetachedShard::new(notify.clone(), 1024)
        .map_err(|error| unrecoverable("making the shard", &error))?;
    let kick = notify.clone();
    let log = SharedLog::new(log, Rc::new(move || kick.notify_one()));
    nvkv::shard::set_local(ShardState::new(0, 0, log.clone()));
    *log_slot.borrow_mut() = Some(log.clone());
    let layout = GroupLayout {
        shards: 1,
        groups_per_shard: setup.groups_per_shard,
        partition_depth: setup.partition_depth,
        member: setup.member(),
        initial_members: setup.members.clone(),
        join,
        raft: setup.raft.clone(),
        watch: nvkv::kv::watch::WatchLimits {
            watch_events_pending_max: setup.watch_events_pending_max,
            ..Default::default()
        },
        snapshots: setup.snapshots,
        quota_bytes: nvkv::config::StoreConfig::default().quota_bytes,
        proposal_queue_bytes_max: nvkv::config::StoreConfig::default().proposal_queue_bytes_max as usize,
        auth: Default::default(),
    };
    let transport = Rc::new(SimTransport {
        me: setup.id,
        net: net.clone(),
        request_timeout: Duration::from_millis(setup.raft.request_timeout_ms),
    });
    let leaders: Rc<dyn LeaderLink> = Rc::new(SimTransportLink(transport.clone()));
    let (ready_sender, ready) = crossbeam_channel::bounded(1);
    nvkv::shard::start::spawn_groups(layout.clone(), 0, log.clone(), transport, leaders, ready_sender);
    let handle = Requests::new(detached.context().clone(), layout);
    // The member's reactor: tick the log, run the mailbox, sleep until new
    // work or the disk's next completion.
    // As the reactor does: the log seals once it has gone
    // reactor::IDLE_WORK_AFTER without progress (virtual time, so it replays).
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let mut progress = log.tick();
        progress |= detached.run_mailbox() > 0;
        if !progress && log.wants_seal() && last_progress.elapsed() >= nvkv::reactor::IDLE_WORK_AFTER {
            progress = log.seal_when_idle();
        }
        if progress {
            last_progress = tokio::time::Instant::now();
        }
        if requests.borrow().is_none() {
            match ready.try_recv() {
                Ok(Ok(_)) => *requests.borrow_mut() = Some(handle.clone()),
                Ok(Err(reason)) => {
                    return Err(Stopped::Unrecoverable(format!("its groups did not start: {reason}")))
                }
                Err(_) => {}
            }
        }
        if let Some(refusal) = halt.refusal() {
            return Err(Stopped::Refused(refusal.to_string()));
        }
        if progress {
            tokio::task::yield_now().await;
            continue;
        }
        // A group whose Raft core stopped (its storage failed) makes the
        // member unready, as /readyz says to the operator: it stops here
        // for good, to be restored from its peers.
        if requests.borrow().is_some() {
            if let Some((group, reason)) = nvkv::shard::registry::local_readiness().stopped.into_iter().next()
            {
                return Err(Stopped::Unrecoverable(format!("group {group} stopped: {reason}")));
            }
        }
        // The seal of a log that stays idle is due then.
        // (Not when it is past: the log could not seal, its ring too full.)
        let seal_at = Some(last_progress + nvkv::reactor::IDLE_WORK_AFTER)
            .filter(|at| log.wants_seal() && *at > tokio::time::Instant::now());
        match disk.next_ready() {
            Some(ready_at) => {
                tokio::select! {
                    biased;
                    _ = notify.notified() => {}
                    _ = halt.halted() => {}
                    _ = tokio::time::sleep_until(ready_at) => {}
                    _ = tokio::time::sleep_until(seal_at.unwrap_or(ready_at)), if seal_at.is_some() => {}
                }
            }
            None => {
                // Groups start in the background: look again soon.
                tokio::select! {
                    biased;
                    _ = notify.notified() => {}
                    _ = halt.halted() => {}
                    _ = tokio::time::sleep(Duration::from_millis(5)), if requests.borrow().is_none() => {}
                    _ = tokio::time::sleep_until(seal_at.unwrap_or(last_progress)), if seal_at.is_some() => {}
                }
            }
        }
    }
}

/// `config::ClusterConfig::bootstrap_cluster_id` of the simulated cluster.
fn bootstrap_cluster_id(setup: &MemberSetup) -> [u8; 16] {
    let mut config = nvkv::config::ClusterConfig { name: setup.cluster_name.clone(), ..Default::default() };
    config.members = setup
        .members
        .iter()
        .map(|member| nvkv::config::MemberConfig {
            id: member.id,
            peer_address: member.peer_address.parse().expect("simulated peer addresses are socket addresses"),
            name: member.name.clone(),
            client_address: member
                .client_address
                .parse()
                .expect("simulated client addresses are socket addresses"),
        })
        .collect();
    let own = config.members.iter().find(|member| member.id == setup.id).expect("listed").peer_address;
    config.bootstrap_cluster_id((setup.id, own))
}
