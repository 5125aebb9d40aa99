//! The store benchmarks (`nvkv bench put|range|txn|mixed|watch`), written once
//! against the [`StoreTarget`] trait so that every store's driver runs the
//! very same loop: nvkv's over its client library (`bench::nvkv`), and
//! another store's (etcd's gRPC API, for the comparison) beside it.
//!
//! C clients share K connections, round robin. Each client draws a key from
//! the key space, sends one operation, waits for the answer, records the
//! latency (from send to answer) and goes again, until the time or the total
//! runs out; with `--rate` every send first waits for its slot from the one
//! [`Limiter`] of the run. All clients run on one thread (Cap'n Proto RPC is
//! single-threaded), so shared counters are `Cell`s and no lock is taken.
//!
//! The watch workload (`bench::watch`) adds watchers to this loop's puts:
//! it shares the gate ([`Shared::admit`]), the limiter and the report.
//!
//! This module owns the workloads (what a run's outcome is made of is
//! `bench::report`'s); it must never know how a store is reached (that is a driver's business) nor print anything but
//! its progress bars and the one line that says a preload is running.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::keys::{distinct_keys, key_of, Chooser};
use super::limiter::Limiter;
use super::report::{new_histogram, Kind, Outcome, ServerSample, KINDS};

/// How a read is served: `l` passes a read barrier (etcd's default), `s`
/// reads the member's state as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Serializable,
}

impl Consistency {
    /// The flag's spelling, as `--consistency` takes it and the report shows it.
    pub fn flag(self) -> &'static str {
        match self {
            Consistency::Linearizable => "l",
            Consistency::Serializable => "s",
        }
    }
}

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Puts of random keys (etcd's `benchmark put`).
    Put,
    /// Gets of random keys (etcd's `benchmark range`): `limit` 1 reads the
    /// key alone, more reads that many keys from it on.
    Range { consistency: Consistency, limit: i64, preload: bool },
    /// Compare-and-swap: `if mod_revision(k) == r then put(k, v)`, with r
    /// the last revision of k the generator saw.
    Txn,
    /// Single-key gets (a `read_ratio` of the operations) and puts.
    Mixed { read_ratio: f64, consistency: Consistency, preload: bool },
    /// Puts of watched keys, and the latency from each put's send to each
    /// of its events arriving at a watcher (etcd's `benchmark watch-latency`).
    Watch { watchers: u32 },
    /// Round trips that do no work at the store (nvkv's KV stream ping): the
    /// floor under every other operation's latency.
    Ping,
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range { .. } => "range",
            Workload::Txn => "txn",
            Workload::Mixed { .. } => "mixed",
            Workload::Watch { .. } => "watch",
            Workload::Ping => "ping",
        }
    }

    fn preloads(&self) -> bool {
        match self {
            Workload::Range { preload, .. } | Workload::Mixed { preload, .. } => *preload,
            Workload::Put | Workload::Txn | Workload::Watch { .. } | Workload::Ping => false,
        }
    }

    fn validate(&self) -> Result<(), String> {
        match *self {
            Workload::Range { limit, .. } if !(1..=RANGE_LIMIT_MAX).contains(&limit) => {
                Err(format!("--limit {limit} must be from 1 (the key alone) to {RANGE_LIMIT_MAX}"))
            }
            Workload::Mixed { read_ratio, .. } if !(0.0..=1.0).contains(&read_ratio) => {
                Err(format!("--read-ratio {read_ratio} must be from 0.0 (puts only) to 1.0 (gets only)"))
            }
            Workload::Watch { watchers } if !(1..=WATCHERS_MAX).contains(&watchers) => {
                Err(format!("--watchers {watchers} must be from 1 to {WATCHERS_MAX}"))
            }
            _ => Ok(()),
        }
    }
}

/// The most keys one get of `bench range --limit` may ask for.
pub const RANGE_LIMIT_MAX: i64 = 10_000;
/// The most watchers `bench watch --watchers` may open.
pub const WATCHERS_MAX: u32 = 10_000;
/// The most operations per second `--rate` may ask for.
pub const RATE_MAX: u64 = 10_000_000;
/// The most threads `--threads` may ask for.
pub const THREADS_MAX: u32 = 256;
/// The most key revisions the txn workload remembers; beyond it, a key it
/// has not seen costs a read first.
const REMEMBERED_REVISIONS_MAX: usize = 1 << 20;

/// The flags every store workload shares.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub clients: u32,
    pub connections: u32,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub key_space: u64,
    pub seconds: f64,
    /// Stop after this many operations in all, if reached first.
    pub total: Option<u64>,
    /// Operations per second over all clients; 0 for as fast as they go.
    pub rate: u64,
    /// Show progress bars on stderr (when it is a terminal).
    pub progress: bool,
    /// Threads the generator runs its clients on, each with its own share
    /// of the clients and connections (and of `total` and `rate`).
    pub threads: u32,
    /// The user every connection acts as (`--user`), if any.
    pub user: Option<BenchUser>,
}

/// A user name and its password; shown without the password. The first
/// connection that logs in keeps its session token here for the others
/// (one password check per run, not one per connection).
#[derive(Clone)]
pub struct BenchUser {
    pub name: String,
    pub password: String,
    pub token: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl BenchUser {
    pub fn new(name: String, password: String) -> BenchUser {
        BenchUser { name, password, token: Default::default() }
    }

    /// The session token a connection logged in with already, if any.
    pub fn token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn keep_token(&self, token: String) {
        *self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(token);
    }
}

impl std::fmt::Debug for BenchUser {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("BenchUser").field("name", &self.name).finish_non_exhaustive()
    }
}

impl LoadOptions {
    pub fn validate(&self, workload: &Workload) -> Result<(), String> {
        if self.clients == 0 || self.clients > 100_000 {
            return Err(format!("--clients {} must be from 1 to 100000", self.clients));
        }
        if self.connections == 0 || self.connections > self.clients {
            return Err(format!(
                "--conns {} must be from 1 to the number of clients ({})",
                self.connections, self.clients
            ));
        }
        if self.key_bytes == 0 || self.key_bytes > 1536 {
            return Err(format!("--key-bytes {} must be from 1 to 1536", self.key_bytes));
        }
        if self.value_bytes > 1536 * 1024 {
            return Err(format!("--value-bytes {} must be at most 1572864", self.value_bytes));
        }
        if self.key_space == 0 {
            return Err("--key-space 0: give at least 1".into());
        }
        if self.key_space > distinct_keys(self.key_bytes) {
            return Err(format!(
                "--key-space {} has more keys than {} digits can name ({}): raise --key-bytes or lower --key-space",
                self.key_space,
                self.key_bytes,
                distinct_keys(self.key_bytes)
            ));
        }
        if !(self.seconds > 0.0 && self.seconds <= 86_400.0) {
            return Err(format!("--seconds {} must be more than 0 and at most 86400", self.seconds));
        }
        if self.total == Some(0) {
            return Err("--total 0: give at least 1, or leave it out to run for --seconds".into());
        }
        if self.rate > RATE_MAX {
            return Err(format!("--rate {} must be at most {RATE_MAX} (0: unlimited)", self.rate));
        }
        if self.threads == 0 || self.threads > self.connections.min(THREADS_MAX) {
            return Err(format!(
                "--threads {} must be from 1 to the number of connections ({}), at most {THREADS_MAX}",
                self.threads, self.connections
            ));
        }
        if self.total.is_some_and(|total| total < u64::from(self.threads)) {
            return Err(format!(
                "--threads {} is more than the --total of {} operations: give at most one thread per operation",
                self.threads,
                self.total.unwrap_or(0)
            ));
        }
        if self.threads > 1 && matches!(workload, Workload::Watch { .. }) {
            return Err(format!(
                "--threads {}: the watch workload runs on one thread (its watchers time events against its \
                 puts' sends); give --threads 1",
                self.threads
            ));
        }
        workload.validate()?;
        if let Workload::Watch { watchers } = *workload {
            super::watch::validate(self, watchers)?;
        }
        Ok(())
    }
}

/// What a get saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeRead {
    /// Keys returned.
    pub keys: u64,
    /// The mod revision of the first key returned; 0 when none was.
    pub mod_revision: i64,
}

/// What a compare-and-swap did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Swap {
    /// Whether the compare held and the put was made.
    pub succeeded: bool,
    /// The key's mod revision afterwards: the put's when it succeeded, the
    /// one that beat the compare (0: no such key) when it did not.
    pub mod_revision: i64,
}

/// A store the workloads drive: one value per connection. A driver
/// implements it for its store's client; errors are the store's messages.
#[allow(async_fn_in_trait)]
pub trait StoreTarget: Sized {
    /// Opens one connection to `endpoint` (host:port). Runs inside a `LocalSet`.
    /// `tls` is the client's `--cacert`/`--cert`/`--key`; a driver that
    /// cannot speak TLS refuses it when it is on.
    async fn connect(endpoint: &str, tls: &crate::rpc::client::ClientTls) -> Result<Self, String>;
    /// Acts as `user` from now on; a target without users refuses.
    async fn log_in(&mut self, user: &BenchUser) -> Result<(), String> {
        Err(format!("this target takes no --user (user {:?}); run it without", user.name))
    }
    /// Sets `key` to `value`; answers the time the put spent in the store
    /// when the store says (nvkv's KV stream does).
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<Option<Duration>, String>;
    /// A round trip that does no work at the store, to the part of it that
    /// serves `key`; answers the time it spent in the store when it says.
    async fn ping(&self, key: &[u8]) -> Result<Option<Duration>, String>;
    /// What the store's servers at `endpoints` report of themselves now:
    /// their CPU time and, where the store measures it, the latency budget.
    async fn sample_servers(
        endpoints: &[String],
        tls: &crate::rpc::client::ClientTls,
    ) -> Result<ServerSample, String>;
    /// Reads [key, range_end) (etcd's convention: empty is the key alone,
    /// `[0]` every key from it on), at most `limit` keys.
    async fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        limit: i64,
        consistency: Consistency,
    ) -> Result<RangeRead, String>;
    /// `if mod_revision(key) == mod_revision then put(key, value)`, and the
    /// key's mod revision either way (a missing key's is 0).
    async fn compare_and_swap(&self, key: &[u8], mod_revision: i64, value: &[u8]) -> Result<Swap, String>;
    /// What [`StoreTarget::watch`] returns.
    type Watch: WatchStream;
    /// Watches [key, range_end) (the convention of `range`) from the next
    /// write on; returns once the store will deliver every later write.
    async fn watch(&self, key: &[u8], range_end: &[u8]) -> Result<Self::Watch, String>;
}

/// An open watch's events, in revision order; dropping it ends the watch.
#[allow(async_fn_in_trait)]
pub trait WatchStream {
    /// The next events (progress and other bookkeeping skipped), or why the
    /// watch ended: the store cancelled it or the connection closed.
    async fn next(&mut self) -> Result<Vec<WatchedEvent>, String>;
}

/// One change a watch delivered, as every store's watch API has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedEvent {
    /// A delete (else a put).
    pub deleted: bool,
    pub key: Vec<u8>,
    /// The value put (empty for a delete).
    pub value: Vec<u8>,
    /// The revision of the write: it only grows within a watch of one key.
    pub revision: i64,
}

/// Threads enough that the generator is not a run's limit: one per
/// connection, up to the CPUs this process may use and the `total`; one
/// for the watch workload.
pub fn default_threads(workload: &Workload, connections: u32, total: Option<u64>) -> u32 {
    if matches!(workload, Workload::Watch { .. }) {
        return 1;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get()) as u32;
    let total = total.map_or(u32::MAX, |total| u32::try_from(total).unwrap_or(u32::MAX));
    connections.min(cpus).min(total).clamp(1, THREADS_MAX)
}

/// One generator thread's part of a run (see `LoadOptions::share`).
#[derive(Clone, Debug)]
pub struct Part {
    /// The number of this thread's first client and first connection in
    /// the whole run: clients draw their keys by their number, connections
    /// go round robin over the endpoints by theirs.
    pub first_client: u32,
    pub first_connection: u32,
    /// This thread fills the key space before the run, for all of them.
    pub preloads: bool,
    /// Where the threads wait for each other (and for the run's samples)
    /// between connecting and running.
    pub gate: Option<std::sync::Arc<Gate>>,
}

impl Part {
    /// The whole run on one thread, with nobody to wait for.
    pub fn whole() -> Part {
        Part { first_client: 0, first_connection: 0, preloads: true, gate: None }
    }
}

/// The two meeting points of a run's threads and the thread that samples
/// the servers: every thread connected (and preloaded), then go.
#[derive(Debug)]
pub struct Gate {
    pub ready: std::sync::Barrier,
    pub start: std::sync::Barrier,
}

impl Gate {
    /// A gate for `threads` generator threads and the one that samples.
    pub fn new(threads: u32) -> Gate {
        let parties = threads as usize + 1;
        Gate { ready: std::sync::Barrier::new(parties), start: std::sync::Barrier::new(parties) }
    }
}

impl LoadOptions {
    /// Thread `thread`'s share of a run's clients, connections, total and
    /// rate (the first threads take one more where they do not divide).
    pub fn share(&self, thread: u32) -> (LoadOptions, Part) {
        let threads = self.threads;
        let split = |whole: u64| {
            whole / u64::from(threads) + u64::from(u64::from(thread) < whole % u64::from(threads))
        };
        let before = |whole: u64| {
            (0..thread)
                .map(|earlier| {
                    whole / u64::from(threads) + u64::from(u64::from(earlier) < whole % u64::from(threads))
                })
                .sum::<u64>()
        };
        let options = LoadOptions {
            clients: split(u64::from(self.clients)) as u32,
            connections: split(u64::from(self.connections)) as u32,
            total: self.total.map(split),
            rate: if self.rate == 0 { 0 } else { split(self.rate).max(1) },
            threads: 1,
            // One bar for the run: the first thread's.
            progress: self.progress && thread == 0,
            ..self.clone()
        };
        let part = Part {
            first_client: before(u64::from(self.clients)) as u32,
            first_connection: before(u64::from(self.connections)) as u32,
            preloads: thread == 0,
            gate: None,
        };
        (options, part)
    }
}

/// Connects `options.connections` targets of type `T` (round robin over
/// `endpoints`), preloads the key space when the workload reads and this
/// part preloads, waits at the part's gate, and runs the workload. Must run
/// inside a `LocalSet`.
pub async fn run_against<T: StoreTarget + 'static>(
    workload: &Workload,
    options: &LoadOptions,
    endpoints: &[String],
    tls: &crate::rpc::client::ClientTls,
    part: &Part,
) -> Result<Outcome, String> {
    let prepared = prepare::<T>(workload, options, endpoints, tls, part).await;
    if let Some(gate) = &part.gate {
        // Blocking here is fine: this thread has nothing else to run yet.
        // A part that failed to prepare still passes, so nobody waits for it.
        gate.ready.wait();
        gate.start.wait();
    }
    let (targets, preloaded) = prepared?;
    let mut outcome = match *workload {
        Workload::Watch { watchers } => super::watch::drive(options, watchers, targets).await?,
        _ => drive(workload, options, targets, part.first_client).await,
    };
    outcome.preloaded = preloaded;
    Ok(outcome)
}

/// Connects this part's targets and preloads the key space if it should.
async fn prepare<T: StoreTarget + 'static>(
    workload: &Workload,
    options: &LoadOptions,
    endpoints: &[String],
    tls: &crate::rpc::client::ClientTls,
    part: &Part,
) -> Result<(Vec<Rc<T>>, u64), String> {
    if endpoints.is_empty() {
        return Err("no endpoint to send to: give --endpoints".into());
    }
    let mut targets = Vec::new();
    for connection in part.first_connection..part.first_connection + options.connections {
        let endpoint = &endpoints[connection as usize % endpoints.len()];
        let mut target = T::connect(endpoint, tls).await?;
        if let Some(user) = &options.user {
            target.log_in(user).await?;
        }
        targets.push(Rc::new(target));
    }
    let preloaded = if workload.preloads() && part.preloads { preload(options, &targets).await? } else { 0 };
    Ok((targets, preloaded))
}

/// Puts every key of the key space once, so that gets find what they ask
/// for; every client takes part, without a rate limit. Returns the keys put.
pub async fn preload<T: StoreTarget + 'static>(
    options: &LoadOptions,
    targets: &[Rc<T>],
) -> Result<u64, String> {
    let keys = options.key_space;
    eprintln!("preloading {keys} keys before the run (--no-preload skips this)");
    let next = Rc::new(Cell::new(0u64));
    let value: Rc<[u8]> = vec![b'v'; options.value_bytes].into();
    let bar = crate::progress::bar(
        options.progress,
        keys,
        "{spinner} preloading [{bar:40}] {pos}/{len} keys {elapsed_precise}",
    );
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        let target = targets[client as usize % targets.len()].clone();
        let (next, value, bar, key_bytes) = (next.clone(), value.clone(), bar.clone(), options.key_bytes);
        tasks.push(tokio::task::spawn_local(async move {
            while next.get() < keys {
                let number = next.get();
                next.set(number + 1);
                let key = key_of(number, key_bytes);
                target
                    .put(&key, &value)
                    .await
                    .map_err(|error| format!("preloading key {}: {error}", String::from_utf8_lossy(&key)))?;
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            }
            Ok::<(), String>(())
        }));
    }
    let mut first_error = None;
    for task in tasks {
        if let Err(error) = task.await.map_err(|error| error.to_string()).and_then(|result| result) {
            first_error.get_or_insert(error);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    first_error.map_or(Ok(keys), Err)
}

/// The revisions the txn workload last saw, by key number, shared by all
/// clients (so a conflict means another client or writer got there first).
struct Revisions {
    known: HashMap<u64, i64>,
}

impl Revisions {
    fn remember(&mut self, number: u64, mod_revision: i64) {
        let full = self.known.len() >= REMEMBERED_REVISIONS_MAX;
        match self.known.get_mut(&number) {
            // Answers may arrive out of order: a key's revision only grows.
            Some(known) => *known = (*known).max(mod_revision),
            None if !full => {
                self.known.insert(number, mod_revision);
            }
            None => {}
        }
    }
}

/// What the clients of one run share.
pub(super) struct Shared {
    pub(super) histograms: RefCell<[Histogram<u64>; KINDS]>,
    outside: RefCell<Histogram<u64>>,
    pub(super) errors: Cell<u64>,
    /// Operations started, so a total is never overshot by clients in flight.
    issued: Cell<u64>,
    txn_succeeded: Cell<u64>,
    txn_failed: Cell<u64>,
    txn_revision_reads: Cell<u64>,
    revisions: RefCell<Revisions>,
    limiter: Option<RefCell<Limiter>>,
}

impl Shared {
    pub(super) fn new(options: &LoadOptions) -> Shared {
        Shared {
            histograms: RefCell::new(std::array::from_fn(|_| new_histogram())),
            outside: RefCell::new(new_histogram()),
            errors: Cell::new(0),
            issued: Cell::new(0),
            txn_succeeded: Cell::new(0),
            txn_failed: Cell::new(0),
            txn_revision_reads: Cell::new(0),
            revisions: RefCell::new(Revisions { known: HashMap::new() }),
            limiter: Limiter::new(options.rate).map(RefCell::new),
        }
    }

    /// Whether a client may send one more operation, after waiting for its
    /// slot under `--rate`: not once the total is issued or the time is up.
    pub(super) async fn admit(&self, options: &LoadOptions, deadline: Instant) -> bool {
        if options.total.is_some_and(|total| self.issued.get() >= total) {
            return false;
        }
        self.issued.set(self.issued.get() + 1);
        if let Some(limiter) = &self.limiter {
            let slot = limiter.borrow_mut().reserve(Instant::now());
            if slot >= deadline {
                return false;
            }
            tokio::time::sleep_until(slot.into()).await;
        } else if Instant::now() >= deadline {
            return false;
        }
        true
    }

    /// Records an operation sent at `start`: its latency (and, when the
    /// store said how long it spent in it, the rest of the round trip), or
    /// its failure.
    pub(super) fn record(&self, kind: Kind, start: Instant, answer: Result<Option<Duration>, String>) {
        match answer {
            Ok(served) => {
                let round_trip = start.elapsed();
                let nanos =
                    |duration: Duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX).max(1);
                self.histograms.borrow_mut()[kind as usize].saturating_record(nanos(round_trip));
                if let Some(served) = served {
                    self.outside.borrow_mut().saturating_record(nanos(round_trip.saturating_sub(served)));
                }
            }
            Err(error) => self.fail(&error),
        }
    }

    /// Counts one failure, logging the first.
    pub(super) fn fail(&self, error: &str) {
        if self.errors.get() == 0 {
            tracing::warn!(%error, "an operation failed (further failures are only counted)");
        }
        self.errors.set(self.errors.get() + 1);
    }

    fn ops(&self) -> u64 {
        self.histograms.borrow().iter().map(Histogram::len).sum()
    }

    /// What the clients measured in `elapsed`, the watchers' part left out.
    pub(super) fn outcome(&self, elapsed: Duration) -> Outcome {
        Outcome {
            histograms: self.histograms.borrow().clone(),
            outside: self.outside.borrow().clone(),
            errors: self.errors.get(),
            txn_succeeded: self.txn_succeeded.get(),
            txn_failed: self.txn_failed.get(),
            txn_revision_reads: self.txn_revision_reads.get(),
            elapsed,
            preloaded: 0,
            watch: None,
            generator_cpu_seconds: 0.0,
            servers: None,
        }
    }
}

/// The progress bar of a measured run and the task that moves it.
pub(super) struct Ticker {
    bar: Option<indicatif::ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ticker {
    /// Shows the time passed and the operations done, every 100 ms, when
    /// `options.progress` and stderr is a terminal.
    pub(super) fn start(name: &str, options: &LoadOptions, shared: &Rc<Shared>, started: Instant) -> Ticker {
        let template = format!("{{spinner}} {name} [{{bar:40}}] {{elapsed_precise}} {{msg}}");
        let bar = crate::progress::bar(options.progress, (options.seconds * 1000.0) as u64, &template);
        let task = bar.clone().map(|bar| {
            let shared = shared.clone();
            tokio::task::spawn_local(async move {
                loop {
                    bar.set_position(started.elapsed().as_millis() as u64);
                    bar.set_message(format!("{} ops", shared.ops()));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        Ticker { bar, task }
    }

    pub(super) fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs the workload against `targets` (one per connection) until the time
/// or the total runs out. Must run inside a `LocalSet`. The watch workload
/// has watchers besides its clients: it runs through `bench::watch::drive`
/// (as `run_against` does), never here.
pub async fn drive<T: StoreTarget + 'static>(
    workload: &Workload,
    options: &LoadOptions,
    targets: Vec<Rc<T>>,
    first_client: u32,
) -> Outcome {
    let shared = Rc::new(Shared::new(options));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let value: Rc<[u8]> = vec![b'v'; options.value_bytes].into();
    let ticker = Ticker::start(workload.name(), options, &shared, started);
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        let target = targets[client as usize % targets.len()].clone();
        let (shared, value, workload, options) = (shared.clone(), value.clone(), *workload, options.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut chooser = Chooser::for_client(first_client + client);
            while shared.admit(&options, deadline).await {
                let number = chooser.number_below(options.key_space);
                let key = key_of(number, options.key_bytes);
                let start = Instant::now();
                let (kind, answer) = match workload {
                    Workload::Put => (Kind::Put, target.put(&key, &value).await),
                    Workload::Range { consistency, limit, .. } => {
                        (Kind::Range, get(&*target, &key, limit, consistency).await.map(|()| None))
                    }
                    Workload::Mixed { read_ratio, consistency, .. } => {
                        if chooser.fraction() < read_ratio {
                            (Kind::Range, get(&*target, &key, 1, consistency).await.map(|()| None))
                        } else {
                            (Kind::Put, target.put(&key, &value).await)
                        }
                    }
                    Workload::Txn => {
                        (Kind::Txn, swap(&*target, &shared, number, &key, &value).await.map(|()| None))
                    }
                    Workload::Ping => (Kind::Ping, target.ping(&key).await),
                    Workload::Watch { .. } => unreachable!("bench::watch drives the watch workload"),
                };
                shared.record(kind, start, answer);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    ticker.finish();
    shared.outcome(elapsed)
}

/// A get of `key` alone (`limit` 1) or of `limit` keys from it on.
async fn get<T: StoreTarget>(
    target: &T,
    key: &[u8],
    limit: i64,
    consistency: Consistency,
) -> Result<(), String> {
    let range_end: &[u8] = if limit == 1 { &[] } else { &[0] };
    target.range(key, range_end, limit, consistency).await.map(|_| ())
}

/// One compare-and-swap of key `number`, reading its revision first when
/// the generator has not seen it yet. A conflict is an answer, not an error.
async fn swap<T: StoreTarget>(
    target: &T,
    shared: &Shared,
    number: u64,
    key: &[u8],
    value: &[u8],
) -> Result<(), String> {
    let known = shared.revisions.borrow().known.get(&number).copied();
    let expected = match known {
        Some(revision) => revision,
        None => {
            shared.txn_revision_reads.set(shared.txn_revision_reads.get() + 1);
            target.range(key, &[], 1, Consistency::Linearizable).await?.mod_revision
        }
    };
    let swap = target.compare_and_swap(key, expected, value).await?;
    shared.revisions.borrow_mut().remember(number, swap.mod_revision);
    let counter = if swap.succeeded { &shared.txn_succeeded } else { &shared.txn_failed };
    counter.set(counter.get() + 1);
    Ok(())
}

#[cfg(test)]
mod tests;
