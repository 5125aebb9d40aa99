//! The thread-per-core runtime: one reactor thread per shard, pinned to its
//! core, running a single-threaded tokio runtime and a `LocalSet`.
//!
//! A reactor owns its shard's [`ShardDriver`] (the I/O work: the log over the
//! shard's queue pair) and its inbox; it polls the driver, runs the tasks
//! other shards sent through [`Mailbox`]es, and lets local tasks (spawned
//! with `tokio::task::spawn_local`, sharing state through `Rc`/`RefCell`)
//! run between polls. In `adaptive` mode it sleeps when idle until a wake
//! fd, a mailbox doorbell, a local [`ReactorContext::wake`] or a timer wakes
//! it; in `busy` mode it never sleeps.
//!
//! This module must never know what the work is (no logs, no Raft, no
//! devices) and never share a shard's state across threads: only
//! [`MailboxTask`]s (which are `Send`) cross, and a driver is created on its
//! own reactor thread by a `Send` factory, so the driver itself need not be
//! `Send`.

pub mod admission;
mod eventfd;
#[forbid(unsafe_code)]
mod mailbox;

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::config::{PollMode, ReactorConfig};

pub use eventfd::EventFd;
pub use mailbox::{Mailbox, MailboxError, MailboxTask, Mailboxes, Refused};

use mailbox::{Doorbell, Inbox};

/// One shard's I/O work, driven by its reactor thread. Not `Send`: it is
/// created on the reactor thread by a [`DriverFactory`], which is.
pub trait ShardDriver {
    /// Polls the device and submits queued work, without blocking. Returns
    /// true when it made progress (completions seen, commands submitted).
    fn poll(&mut self) -> bool;

    /// fds that become readable when this driver has work (e.g. the queue
    /// pair's completion eventfd). Asked once, after the factory; they must
    /// stay open as long as the driver lives. The reactor empties them when
    /// it wakes, so they must be eventfds (or anything a read of 8 bytes
    /// resets). Without any, a driver that is not
    /// [`idle`](ShardDriver::idle) is polled without sleeping.
    fn wake_fds(&self) -> Vec<RawFd>;

    /// True when nothing is in flight or queued: the reactor may stop (and,
    /// for a driver without wake fds, sleep).
    fn idle(&self) -> bool;

    /// Whether the driver has work it does only once it has stayed idle
    /// (the shard log's seal): the reactor then sleeps at most until
    /// [`IDLE_WORK_AFTER`] has passed since its last progress, and calls
    /// [`ShardDriver::idle_work`].
    fn wants_idle_work(&self) -> bool {
        false
    }

    /// Does the work of a driver that has stayed idle for
    /// [`IDLE_WORK_AFTER`]: called only then, and before the reactor stops.
    /// Returns whether it started anything (which is progress).
    fn idle_work(&mut self) -> bool {
        false
    }
}

/// How long a reactor goes without progress before its driver does its idle
/// work (the shard log's seal, [`crate::wal::ShardLog::seal_when_idle`]).
/// Longer than the gap between two puts of one client, at one member (a
/// network round trip and the client's turn) and at three (the leader's
/// log idles while the followers append, the followers' while the leader
/// commits and answers: about a put's latency), so that a steady load, even
/// a lone client's, never pays for a seal; short enough that the last
/// records of a burst are proven within milliseconds.
pub const IDLE_WORK_AFTER: Duration = Duration::from_millis(2);

thread_local! {
    /// Messages this reactor's tasks took from clients and peers (see
    /// [`note_activity`]).
    static ACTIVITY: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Says a task of this reactor took a message from a client or a peer:
/// more are likely soon (the next call of a client, the next AppendEntries
/// of a leader), so an adaptive reactor keeps polling for
/// `adaptive_poll_us` from now, as after its own progress, instead of going
/// to sleep and paying a wake-up for the next one.
pub fn note_activity() {
    ACTIVITY.with(|activity| activity.set(activity.get().wrapping_add(1)));
}

thread_local! {
    /// Requests this reactor's tasks hold in flight (see [`work_in_flight`]).
    static WORK_IN_FLIGHT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// When this reactor last held more than [`POLL_WORK_MAX`] requests.
    static LOADED_AT: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Above this many requests in flight an adaptive reactor sleeps when idle
/// instead of polling for `adaptive_poll_us`.
///
/// Polling buys a lightly loaded shard its latency: the next call of its
/// few clients, or the completion of its one write, is taken without a
/// wake-up. A loaded shard gains little from it: its next completion or
/// message is on the way and wakes it, and each wake-up serves a whole batch.
/// But every microsecond it polls is taken from whatever else could run on
/// the core: measured on two cores shared with a load generator at 256
/// clients, polling cost 3-8 us of server CPU per put and lowered puts/s.
pub const POLL_WORK_MAX: usize = 8;

/// How long a reactor counts as loaded after it last held more than
/// [`POLL_WORK_MAX`] requests: a follower holds its leader's batch only
/// while it appends it, and the next one arrives within a round trip.
const LOADED_MEMORY: Duration = Duration::from_millis(2);

/// Requests held in flight by a task of this reactor; counted until dropped.
#[must_use = "the requests count only while the guard lives"]
pub struct WorkInFlight(usize);

/// Counts `requests` requests in flight on this reactor until the guard is
/// dropped: an adaptive reactor that held more than [`POLL_WORK_MAX`] within
/// the last few milliseconds sleeps when idle instead of polling.
pub fn work_in_flight(requests: usize) -> WorkInFlight {
    let held = WORK_IN_FLIGHT.with(|work| {
        work.set(work.get() + requests);
        work.get()
    });
    if held > POLL_WORK_MAX {
        LOADED_AT.with(|at| at.set(Some(Instant::now())));
    }
    WorkInFlight(requests)
}

impl Drop for WorkInFlight {
    fn drop(&mut self) {
        WORK_IN_FLIGHT.with(|work| work.set(work.get().saturating_sub(self.0)));
    }
}

/// Whether this reactor's work is light enough that polling pays.
fn light_load() -> bool {
    if WORK_IN_FLIGHT.with(std::cell::Cell::get) > POLL_WORK_MAX {
        return false;
    }
    LOADED_AT.with(std::cell::Cell::get).is_none_or(|at| at.elapsed() >= LOADED_MEMORY)
}

/// Why a driver could not start (e.g. its queue pair did not open).
pub type DriverError = Box<dyn std::error::Error + Send + Sync>;

/// Builds a shard's driver on its reactor thread, inside its runtime and
/// `LocalSet` (so it may `spawn_local` tasks and register fds with tokio).
pub type DriverFactory = Box<dyn FnOnce(&ReactorContext) -> Result<Box<dyn ShardDriver>, DriverError> + Send>;

/// How reactors run, from `[reactor]` of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReactorSettings {
    pub poll_mode: PollMode,
    /// How long an adaptive reactor keeps polling after its last progress.
    pub adaptive_poll: Duration,
    pub mailbox_capacity: usize,
}

impl ReactorSettings {
    pub fn from_config(config: &ReactorConfig) -> ReactorSettings {
        ReactorSettings {
            poll_mode: config.poll_mode,
            adaptive_poll: Duration::from_micros(config.adaptive_poll_us),
            mailbox_capacity: config.mailbox_capacity,
        }
    }
}

impl Default for ReactorSettings {
    fn default() -> Self {
        ReactorSettings::from_config(&ReactorConfig::default())
    }
}

/// Counters of one reactor, written by its thread only, readable anywhere.
#[derive(Debug, Default)]
pub struct ReactorStats {
    iterations: AtomicU64,
    busy_nanos: AtomicU64,
    idle_nanos: AtomicU64,
    sleeps: AtomicU64,
    mailbox_tasks: AtomicU64,
}

/// A copy of a reactor's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Turns of the loop: poll, mailbox, local tasks.
    pub iterations: u64,
    /// Time spent running the loop, spinning included.
    pub busy_nanos: u64,
    /// Time spent asleep (adaptive mode only).
    pub idle_nanos: u64,
    /// Times the reactor went to sleep.
    pub sleeps: u64,
    /// Mailbox tasks run.
    pub mailbox_tasks: u64,
}

impl ReactorStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            iterations: self.iterations.load(Ordering::Relaxed),
            busy_nanos: self.busy_nanos.load(Ordering::Relaxed),
            idle_nanos: self.idle_nanos.load(Ordering::Relaxed),
            sleeps: self.sleeps.load(Ordering::Relaxed),
            mailbox_tasks: self.mailbox_tasks.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, amount: u64) {
        // Single writer: a load and a store are enough, and cheaper than an
        // atomic read-modify-write on every turn of the loop.
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(amount), Ordering::Relaxed);
    }
}

/// What a shard's code knows of its reactor. Cheap to clone; stays on the
/// reactor thread (not `Send`).
#[derive(Clone, Debug)]
pub struct ReactorContext {
    shard: usize,
    core: usize,
    notify: Rc<Notify>,
    mailboxes: Mailboxes,
    stats: Arc<ReactorStats>,
    stop: Arc<AtomicBool>,
}

impl ReactorContext {
    /// This shard's index.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The CPU this reactor is pinned to.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Wakes the reactor loop (or makes its next sleep return at once): call
    /// after a local task queued work for the driver.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// The handle behind [`wake`](ReactorContext::wake), for tasks that keep
    /// it.
    pub fn notify(&self) -> &Rc<Notify> {
        &self.notify
    }

    /// Every shard's mailbox, this one's included.
    pub fn mailboxes(&self) -> &Mailboxes {
        &self.mailboxes
    }

    /// The mailbox of `shard`.
    pub fn mailbox(&self, shard: usize) -> &Mailbox {
        self.mailboxes.get(shard)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// True once the node asked the reactors to stop: finish what is in
    /// flight, take no new work. The reactor exits when the driver is idle
    /// and the mailbox empty.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// One shard run by its caller instead of a reactor thread: the context its
/// tasks see and the inbox of its mailbox, which the caller drains. The
/// simulator runs the shards of several members on one thread this way,
/// each member on a `LocalSet` of its own. Test tool only (cargo feature
/// `testing`): a serving node runs [`Reactors`].
#[cfg(any(test, feature = "testing"))]
pub struct DetachedShard {
    context: ReactorContext,
    inbox: Inbox,
}

#[cfg(any(test, feature = "testing"))]
impl DetachedShard {
    /// Shard 0 of a node of one shard, whose reactor wakes through `notify`.
    pub fn new(notify: Rc<Notify>, mailbox_capacity: usize) -> Result<DetachedShard, ReactorError> {
        let (mailboxes, mut inboxes) = mailbox::create(1, mailbox_capacity).map_err(ReactorError::EventFd)?;
        let context = ReactorContext {
            shard: 0,
            core: 0,
            notify,
            mailboxes,
            stats: Arc::new(ReactorStats::default()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        Ok(DetachedShard { context, inbox: inboxes.remove(0) })
    }

    pub fn context(&self) -> &ReactorContext {
        &self.context
    }

    /// Runs the tasks waiting in the shard's mailbox, as a reactor's turn
    /// does; returns how many ran.
    pub fn run_mailbox(&self) -> usize {
        let mut ran = 0;
        while let Some(task) = self.inbox.try_receive() {
            task(&self.context);
            ran += 1;
        }
        ran
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReactorError {
    #[error("cannot create the mailboxes' eventfds: {0}; raise the open-files limit (ulimit -n)")]
    EventFd(io::Error),
    #[error("cannot start the reactor thread of shard {shard}: {source}")]
    Spawn { shard: usize, source: io::Error },
    #[error("cannot build the async runtime of shard {shard}: {source}")]
    Runtime { shard: usize, source: io::Error },
    #[error("shard {shard} cannot watch wake fd {fd}: {source}")]
    WakeFd { shard: usize, fd: RawFd, source: io::Error },
    #[error("shard {shard} on CPU {core} could not start its driver: {message}")]
    Driver { shard: usize, core: usize, message: String },
    #[error("the reactor of shard {shard} panicked (see the log above)")]
    Panicked { shard: usize },
    #[error("{factories} driver factories for {cores} cores: give one per shard")]
    Mismatch { factories: usize, cores: usize },
}

struct ShardHandle {
    core: usize,
    thread: Option<JoinHandle<Result<(), ReactorError>>>,
    stop: Arc<AtomicBool>,
    doorbell: Arc<Doorbell>,
    stats: Arc<ReactorStats>,
}

/// The running reactors of a node. Dropping it stops them.
pub struct Reactors {
    shards: Vec<ShardHandle>,
    mailboxes: Mailboxes,
}

impl Reactors {
    /// Starts one reactor per entry of `cores` (shard i on `cores[i]`), each
    /// building its driver with `factories[i]`, and returns when every one
    /// is running, or stops them all and returns the first failure.
    pub fn start(
        settings: &ReactorSettings,
        cores: &[usize],
        factories: Vec<DriverFactory>,
    ) -> Result<Reactors, ReactorError> {
        if factories.len() != cores.len() {
            return Err(ReactorError::Mismatch { factories: factories.len(), cores: cores.len() });
        }
        let (mailboxes, inboxes) =
            mailbox::create(cores.len(), settings.mailbox_capacity).map_err(ReactorError::EventFd)?;
        let mut reactors = Reactors { shards: Vec::with_capacity(cores.len()), mailboxes: mailboxes.clone() };
        let (started_sender, started_receiver) = crossbeam_channel::bounded(cores.len());
        for (shard, ((core, factory), inbox)) in cores.iter().copied().zip(factories).zip(inboxes).enumerate()
        {
            let stop = Arc::new(AtomicBool::new(false));
            let stats = Arc::new(ReactorStats::default());
            let doorbell = inbox.doorbell.clone();
            let shard_thread = ShardThread {
                shard,
                core,
                settings: settings.clone(),
                mailboxes: mailboxes.clone(),
                inbox,
                stop: stop.clone(),
                stats: stats.clone(),
            };
            let started = started_sender.clone();
            let thread = std::thread::Builder::new()
                .name(format!("nvkv-shard-{shard}"))
                .spawn(move || shard_thread.run(factory, started))
                .map_err(|source| ReactorError::Spawn { shard, source })?;
            reactors.shards.push(ShardHandle { core, thread: Some(thread), stop, doorbell, stats });
        }
        drop(started_sender);
        for _ in 0..cores.len() {
            match started_receiver.recv() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error),
                // A thread died before reporting: join it to learn how.
                Err(_) => {
                    return Err(reactors.stop_all().err().unwrap_or(ReactorError::Panicked { shard: 0 }))
                }
            }
        }
        Ok(reactors)
    }

    /// Every shard's mailbox, for threads outside the reactors (the node,
    /// the RPC acceptor).
    pub fn mailboxes(&self) -> &Mailboxes {
        &self.mailboxes
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The CPU of each shard, in shard order.
    pub fn cores(&self) -> Vec<usize> {
        self.shards.iter().map(|shard| shard.core).collect()
    }

    /// Each reactor's counters, in shard order.
    pub fn stats(&self) -> Vec<StatsSnapshot> {
        self.shards.iter().map(|shard| shard.stats.snapshot()).collect()
    }

    /// Asks every reactor to stop, waits until each has finished its
    /// in-flight work and queued mailbox tasks and exited, and returns their
    /// final counters.
    pub fn stop(mut self) -> Result<Vec<StatsSnapshot>, ReactorError> {
        self.stop_all()?;
        Ok(self.stats())
    }

    fn stop_all(&mut self) -> Result<(), ReactorError> {
        for shard in &self.shards {
            shard.stop.store(true, Ordering::SeqCst);
            shard.doorbell.ring();
        }
        let mut first_error = None;
        for (index, shard) in self.shards.iter_mut().enumerate() {
            let Some(thread) = shard.thread.take() else { continue };
            let outcome = thread.join().unwrap_or(Err(ReactorError::Panicked { shard: index }));
            if let Err(error) = outcome {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Reactors {
    fn drop(&mut self) {
        if let Err(error) = self.stop_all() {
            tracing::error!("stopping the reactors: {error}");
        }
    }
}

/// Everything a reactor thread takes with it.
struct ShardThread {
    shard: usize,
    core: usize,
    settings: ReactorSettings,
    mailboxes: Mailboxes,
    inbox: Inbox,
    stop: Arc<AtomicBool>,
    stats: Arc<ReactorStats>,
}

/// Mailbox tasks run per turn at most, so a flood of messages cannot starve
/// the driver's polling.
const MAILBOX_TASKS_PER_TURN: usize = 256;

/// How long a stopping shard drains its work before it stops anyway.
const STOP_DRAIN_MAX: Duration = Duration::from_secs(10);

/// Turns between updates of `busy_nanos` while the reactor does not sleep.
const BUSY_TIME_FLUSH_TURNS: u64 = 1024;

// Mailboxes cross threads; the context must not.
const _: fn() = || {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Mailboxes>();
    send_and_sync::<Mailbox>();
    send_and_sync::<ReactorStats>();
};

impl ShardThread {
    fn run(
        self,
        factory: DriverFactory,
        started: crossbeam_channel::Sender<Result<(), ReactorError>>,
    ) -> Result<(), ReactorError> {
        // Taken (and so dropped) once reported: a thread that panics before
        // reporting drops it too, so `Reactors::start` never waits forever.
        let started = std::cell::Cell::new(Some(started));
        let report_running = || {
            if let Some(started) = started.take() {
                let _ = started.send(Ok(()));
            }
        };
        let outcome = self.run_reactor(factory, report_running);
        match (outcome, started.take()) {
            // A failure before the reactor ran goes to `Reactors::start`,
            // which reports the first one.
            (Err(error), Some(started)) => {
                let _ = started.send(Err(error));
                Ok(())
            }
            (outcome, _) => outcome,
        }
    }

    fn run_reactor(&self, factory: DriverFactory, report_running: impl FnOnce()) -> Result<(), ReactorError> {
        let shard = self.shard;
        if !core_affinity::set_for_current(core_affinity::CoreId { id: self.core }) {
            tracing::warn!(
                shard,
                core = self.core,
                "cannot pin the reactor thread to its CPU; it runs unpinned"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ReactorError::Runtime { shard, source })?;
        let local = tokio::task::LocalSet::new();
        let context = ReactorContext {
            shard,
            core: self.core,
            notify: Rc::new(Notify::new()),
            mailboxes: self.mailboxes.clone(),
            stats: self.stats.clone(),
            stop: self.stop.clone(),
        };
        local.block_on(&runtime, async {
            let driver = factory(&context).map_err(|error| ReactorError::Driver {
                shard,
                core: self.core,
                message: error.to_string(),
            })?;
            let mut wake_fds = Vec::new();
            for fd in std::iter::once(self.inbox.doorbell.eventfd.as_raw_fd()).chain(driver.wake_fds()) {
                // SAFETY: each fd stays open while its AsyncFd lives: the
                // doorbell's is owned by the inbox, which outlives the loop,
                // and the driver's by the driver, which `run_loop` drops only
                // after dropping the AsyncFds (the trait requires it).
                let watched = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(|error| ReactorError::WakeFd { shard, fd, source: io::Error::from(error) })?;
                wake_fds.push(watched);
            }
            report_running();
            tracing::debug!(shard, core = self.core, "reactor running");
            self.run_loop(&context, driver, wake_fds).await;
            tracing::debug!(shard, "reactor stopped");
            Ok(())
        })
    }

    async fn run_loop(
        &self,
        context: &ReactorContext,
        mut driver: Box<dyn ShardDriver>,
        wake_fds: Vec<AsyncFd<RawFd>>,
    ) {
        // The driver's own fds come after the doorbell's.
        let driver_has_fds = wake_fds.len() > 1;
        let mut last_progress = Instant::now();
        let mut busy_since = Instant::now();
        let mut turns: u64 = 0;
        let mut stop_seen: Option<Instant> = None;
        let mut activity_seen = ACTIVITY.with(std::cell::Cell::get);
        loop {
            ReactorStats::add(&self.stats.iterations, 1);
            turns += 1;
            if turns % BUSY_TIME_FLUSH_TURNS == 0 {
                // A reactor that never sleeps still reports its busy time.
                let now = Instant::now();
                ReactorStats::add(&self.stats.busy_nanos, duration_nanos(now - busy_since));
                busy_since = now;
            }
            let mut progress = driver.poll();
            let mut tasks = 0;
            while tasks < MAILBOX_TASKS_PER_TURN {
                let Some(task) = self.inbox.try_receive() else { break };
                task(context);
                tasks += 1;
            }
            if tasks > 0 {
                ReactorStats::add(&self.stats.mailbox_tasks, tasks as u64);
                progress = true;
            }
            let stopping = self.stop.load(Ordering::Acquire);
            if stopping && !progress && driver.idle() && self.inbox.is_empty() {
                // The log's seal before it stops: a clean stop leaves every
                // record proven.
                if driver.idle_work() {
                    continue;
                }
                break;
            }
            if stopping {
                // Work that cannot finish (appends waiting for log space no
                // purge will free, say) must not hold the process past its
                // stop: nothing pending was acknowledged to anyone.
                let since = *stop_seen.get_or_insert_with(Instant::now);
                if since.elapsed() >= STOP_DRAIN_MAX {
                    tracing::warn!(
                        shard = context.shard(),
                        log_idle = driver.idle(),
                        mailbox_empty = self.inbox.is_empty(),
                        "the shard stops with work still pending after {STOP_DRAIN_MAX:?}; none of it was \
                         acknowledged"
                    );
                    break;
                }
            }
            // Lets local tasks (RPC, timers, Raft) run between polls.
            tokio::task::yield_now().await;
            let activity = ACTIVITY.with(std::cell::Cell::get);
            if activity != activity_seen {
                activity_seen = activity;
                progress = true;
            }
            if progress {
                last_progress = Instant::now();
                continue;
            }
            if self.settings.poll_mode == PollMode::Busy
                || stopping
                || (last_progress.elapsed() < self.settings.adaptive_poll && light_load())
            {
                // Spinning without progress: give the core to whatever else
                // is runnable on it first. The kernel finishes our own I/O
                // there (ksoftirqd completes the block request on the core
                // its interrupt lands on), and a reactor that never yields
                // holds that off for a whole scheduler slice: measured here,
                // a shard on the disk interrupt's core saw durable writes
                // take 330-540 us instead of 120-160 us. A polled device
                // (SPDK: no completion fd) with commands in flight is the
                // other way round: nothing but this loop finishes them, and
                // on a loaded core each yield can cost a whole slice.
                if driver_has_fds || driver.idle() {
                    std::thread::yield_now();
                }
                if driver.idle() && last_progress.elapsed() >= IDLE_WORK_AFTER && driver.idle_work() {
                    last_progress = Instant::now();
                }
                continue;
            }
            if !driver.idle() && !driver_has_fds {
                // In-flight work that cannot wake us: keep polling.
                continue;
            }
            // Idle work waits until the reactor has gone IDLE_WORK_AFTER
            // without progress: the sleep ends then at the latest.
            let mut sleep_at_most = None;
            if driver.idle() && driver.wants_idle_work() {
                match IDLE_WORK_AFTER.checked_sub(last_progress.elapsed()) {
                    Some(left) if !left.is_zero() => sleep_at_most = Some(left),
                    _ => {
                        if driver.idle_work() {
                            last_progress = Instant::now();
                            continue;
                        }
                    }
                }
            }
            if !self.inbox.prepare_to_sleep() {
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                self.inbox.woke();
                continue;
            }
            let asleep_since = Instant::now();
            ReactorStats::add(&self.stats.busy_nanos, duration_nanos(asleep_since - busy_since));
            ReactorStats::add(&self.stats.sleeps, 1);
            let woken = match sleep_at_most {
                Some(limit) => {
                    tokio::time::timeout(limit, sleep_until_woken(&wake_fds, &context.notify)).await.is_ok()
                }
                None => {
                    sleep_until_woken(&wake_fds, &context.notify).await;
                    true
                }
            };
            self.inbox.woke();
            for fd in &wake_fds {
                eventfd::drain(*fd.get_ref());
            }
            busy_since = Instant::now();
            ReactorStats::add(&self.stats.idle_nanos, duration_nanos(busy_since - asleep_since));
            if woken {
                last_progress = busy_since;
            }
        }
        ReactorStats::add(&self.stats.busy_nanos, duration_nanos(busy_since.elapsed()));
        // Deregister the fds before the driver (which may own them) closes them.
        drop(wake_fds);
        drop(driver);
    }
}

/// CPU time (user and system) this process used so far, every thread's:
/// what a node reports so that its CPU per operation can be measured.
pub fn process_cpu_time() -> Duration {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `time` is a valid, writable timespec for the duration of the
    // call, and CLOCK_PROCESS_CPUTIME_ID is a clock every Linux has.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) };
    if read != 0 {
        return Duration::ZERO;
    }
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until one of the fds is readable or the notify fires. Timers need
/// no branch here: tokio runs the local tasks whose timers fire while this
/// future waits, and a task that queues work calls `ReactorContext::wake`.
async fn sleep_until_woken(wake_fds: &[AsyncFd<RawFd>], notify: &Notify) {
    let mut notified = pin!(notify.notified());
    std::future::poll_fn(|context| {
        if notified.as_mut().poll(context).is_ready() {
            return Poll::Ready(());
        }
        let mut ready = false;
        for fd in wake_fds {
            if let Poll::Ready(result) = fd.poll_read_ready(context) {
                // The caller drains the fd; forget this readiness so the
                // next sleep waits for a new edge.
                if let Ok(mut guard) = result {
                    guard.clear_ready();
                }
                ready = true;
            }
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
#[forbid(unsafe_code)]
pub(crate) mod tests;
