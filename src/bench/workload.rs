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
//! This module owns the workloads and the report; it must never know how a
//! store is reached (that is a driver's business) nor print anything but
//! its progress bars and the one line that says a preload is running.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::keys::{distinct_keys, key_of, Chooser};
use super::limiter::Limiter;

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

/// The kinds of operation, each with its own histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Put = 0,
    Range = 1,
    Txn = 2,
    Ping = 3,
}

const KINDS: usize = 4;

/// What the servers of a store said of themselves at one moment: summed
/// over every server asked.
#[derive(Clone, Debug, Default)]
pub struct ServerSample {
    pub servers: usize,
    pub cpu_seconds: f64,
    /// The latency budget's hops (nvkv's), in the order a write passes
    /// them: each hop's histogram (nanoseconds, since the servers started),
    /// added up over every shard of every server.
    pub hops: Vec<(String, Histogram<u64>)>,
}

impl ServerSample {
    /// Adds one shard's hops to the sum.
    pub fn add_hops(&mut self, shard_hops: &[crate::shard::stages::HopReport]) -> Result<(), String> {
        for hop in shard_hops {
            let histogram = hop.decode_histogram()?;
            match self.hops.iter_mut().find(|(name, _)| *name == hop.name) {
                Some((_, known)) => {
                    known.add(&histogram).map_err(|error| format!("hop {:?}: {error:?}", hop.name))?
                }
                None => self.hops.push((hop.name.clone(), histogram)),
            }
        }
        Ok(())
    }
}

/// What a run measured, before it becomes a report.
pub struct Outcome {
    histograms: [Histogram<u64>; KINDS],
    /// Per operation whose store said how long it spent in it: the round
    /// trip minus that, the network and both ends' stacks.
    outside: Histogram<u64>,
    pub errors: u64,
    pub txn_succeeded: u64,
    pub txn_failed: u64,
    /// Gets the txn workload made for keys whose revision it did not know.
    pub txn_revision_reads: u64,
    pub elapsed: Duration,
    /// Keys put before the measured run.
    pub preloaded: u64,
    /// What the watchers of a watch run received.
    pub watch: Option<super::watch::Received>,
    /// CPU time the generator's process used during the measured run.
    pub generator_cpu_seconds: f64,
    /// What the store's servers said of themselves just before the measured
    /// run and just after, when they could be asked.
    pub servers: Option<(ServerSample, ServerSample)>,
}

impl Outcome {
    /// Operations answered, of every kind (conflicting swaps included).
    pub fn ops(&self) -> u64 {
        self.histograms.iter().map(Histogram::len).sum()
    }

    fn overall(&self) -> Histogram<u64> {
        let mut overall = new_histogram();
        for histogram in &self.histograms {
            overall.add(histogram).expect("histograms of one shape add up");
        }
        overall
    }

    /// Adds the outcome of another thread of the same run.
    pub fn merge(&mut self, other: &Outcome) {
        for (mine, theirs) in self.histograms.iter_mut().zip(&other.histograms) {
            mine.add(theirs).expect("histograms of one shape add up");
        }
        self.outside.add(&other.outside).expect("histograms of one shape add up");
        self.errors += other.errors;
        self.txn_succeeded += other.txn_succeeded;
        self.txn_failed += other.txn_failed;
        self.txn_revision_reads += other.txn_revision_reads;
        self.elapsed = self.elapsed.max(other.elapsed);
        self.preloaded += other.preloaded;
    }
}

pub(super) fn new_histogram() -> Histogram<u64> {
    crate::latency::histogram()
}

/// The latencies of some operations, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latencies {
    pub ops: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latencies {
    fn of(histogram: &Histogram<u64>) -> Latencies {
        let micros = |nanos: u64| nanos as f64 / 1000.0;
        Latencies {
            ops: histogram.len(),
            p50_us: micros(histogram.value_at_quantile(0.5)),
            p99_us: micros(histogram.value_at_quantile(0.99)),
            p999_us: micros(histogram.value_at_quantile(0.999)),
            max_us: micros(histogram.max()),
            mean_us: histogram.mean() / 1000.0,
        }
    }

    fn human(&self) -> String {
        format!(
            "p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            self.p50_us, self.p99_us, self.p999_us, self.max_us, self.mean_us
        )
    }
}

/// One run, as `--json` prints it. The fields up to `target` are common to
/// every workload (scripts read them); the rest belong to one workload and
/// are left out of the others.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub workload: &'static str,
    #[serde(flatten)]
    pub latencies: Latencies,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub clients: u32,
    pub connections: u32,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub key_space: u64,
    pub total: Option<u64>,
    /// The rate asked for (0: unlimited), not the one reached.
    pub rate: u64,
    pub endpoints: Vec<String>,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preloaded_keys: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_succeeded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_failed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_revision_reads: Option<u64>,
    /// The gets of a mixed run alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<Latencies>,
    /// The puts of a mixed run alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub put: Option<Latencies>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchers: Option<u32>,
    /// Events the watchers received, each once (a watch run's percentiles
    /// are over these: from its put's send to its arrival at the watcher).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Events over the time from the start to the last event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_sec: Option<f64>,
    /// Events of acknowledged puts that a watcher of the key never received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_missing: Option<u64>,
    /// Events a watcher received again (a revision not above its last one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_duplicated: Option<u64>,
    /// Events that match no put of this run to the watcher's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_unexpected: Option<u64>,
    /// A watch run's puts, from send to answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub put_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub put_p99_us: Option<f64>,
    /// Threads the generator ran its clients on.
    pub threads: u32,
    /// CPU time of the generator's process per operation, in µs: next to
    /// the server's, it says whether a run measured the store or the
    /// generator.
    pub generator_cpu_us_per_op: f64,
    /// The servers asked (the endpoints), and their CPU time (user and
    /// system, summed over them) during the run, and per operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_op: Option<f64>,
    /// The latency budget of the run's writes, hop by hop in the order a
    /// put passes them, where the store measures it (nvkv over its KV
    /// stream): the client's own two hops and the servers'.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub budget: Vec<BudgetHop>,
}

/// One hop of the latency budget over one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetHop {
    pub name: String,
    /// Times it was measured during the run, and their mean and
    /// percentiles, in µs.
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// The client's hops, each estimated as half of the round trip minus the
/// time the store said it spent on the operation.
pub const CLIENT_TO_SHARD: &str = "client send to shard receive";
pub const SHARD_TO_CLIENT: &str = "reply written to client receive";

/// The budget of a run: the client's hops around the servers' (their
/// counts and sums between the samples before and after the run).
fn budget(outcome: &Outcome) -> Vec<BudgetHop> {
    let mut hops = Vec::new();
    let outside = &outcome.outside;
    let half = |nanos: f64| nanos / 2000.0;
    let client_hop = |name: &str| BudgetHop {
        name: name.to_string(),
        count: outside.len(),
        mean_us: half(outside.mean()),
        p50_us: half(outside.value_at_quantile(0.5) as f64),
        p99_us: half(outside.value_at_quantile(0.99) as f64),
    };
    if !outside.is_empty() {
        hops.push(client_hop(CLIENT_TO_SHARD));
    }
    if let Some((before, after)) = &outcome.servers {
        for (name, histogram) in &after.hops {
            // The run's own part of the histogram: after it, less before it.
            let mut window = histogram.clone();
            if let Some((_, earlier)) = before.hops.iter().find(|(earlier, _)| earlier == name) {
                if window.subtract(earlier).is_err() {
                    tracing::warn!(
                        "hop {name:?} counted less after the run than before it; left out of the budget"
                    );
                    continue;
                }
            }
            let micros = |nanos: u64| nanos as f64 / 1000.0;
            hops.push(BudgetHop {
                name: name.clone(),
                count: window.len(),
                mean_us: if window.is_empty() { 0.0 } else { window.mean() / 1000.0 },
                p50_us: micros(window.value_at_quantile(0.5)),
                p99_us: micros(window.value_at_quantile(0.99)),
            });
        }
    }
    if !outside.is_empty() {
        hops.push(client_hop(SHARD_TO_CLIENT));
    }
    if hops.iter().all(|hop| hop.count == 0) {
        hops.clear();
    }
    hops
}

impl BenchReport {
    pub fn new(
        workload: &Workload,
        options: &LoadOptions,
        outcome: &Outcome,
        target: &str,
        endpoints: &[String],
    ) -> BenchReport {
        let seconds = outcome.elapsed.as_secs_f64();
        let kind = |kind: Kind| Latencies::of(&outcome.histograms[kind as usize]);
        let (consistency, limit, read_ratio, mixed) = match *workload {
            Workload::Range { consistency, limit, .. } => {
                (Some(consistency.flag()), Some(limit), None, false)
            }
            Workload::Mixed { consistency, read_ratio, .. } => {
                (Some(consistency.flag()), None, Some(read_ratio), true)
            }
            Workload::Put | Workload::Txn | Workload::Watch { .. } | Workload::Ping => {
                (None, None, None, false)
            }
        };
        let watchers = match *workload {
            Workload::Watch { watchers } => Some(watchers),
            _ => None,
        };
        let received = outcome.watch.as_ref();
        let puts = kind(Kind::Put);
        // A watch run's percentiles are its events'; its ops stay its puts.
        let latencies = match received {
            Some(received) => Latencies { ops: outcome.ops(), ..Latencies::of(&received.latencies) },
            None => Latencies::of(&outcome.overall()),
        };
        let txn = |count: u64| (*workload == Workload::Txn).then_some(count);
        BenchReport {
            workload: workload.name(),
            latencies,
            errors: outcome.errors,
            seconds,
            ops_per_sec: outcome.ops() as f64 / seconds,
            clients: options.clients,
            connections: options.connections,
            key_bytes: options.key_bytes,
            value_bytes: options.value_bytes,
            key_space: options.key_space,
            total: options.total,
            rate: options.rate,
            endpoints: endpoints.to_vec(),
            target: target.to_string(),
            consistency,
            limit,
            preloaded_keys: matches!(workload, Workload::Range { .. } | Workload::Mixed { .. })
                .then_some(outcome.preloaded),
            read_ratio,
            txn_succeeded: txn(outcome.txn_succeeded),
            txn_failed: txn(outcome.txn_failed),
            txn_revision_reads: txn(outcome.txn_revision_reads),
            range: mixed.then(|| kind(Kind::Range)),
            put: mixed.then(|| puts.clone()),
            watchers,
            events: received.map(|received| received.events),
            events_per_sec: received.map(|received| {
                received.events as f64 / received.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
            }),
            events_missing: received.map(|received| received.missing),
            events_duplicated: received.map(|received| received.duplicated),
            events_unexpected: received.map(|received| received.unexpected),
            put_p50_us: received.map(|_| puts.p50_us),
            put_p99_us: received.map(|_| puts.p99_us),
            threads: options.threads,
            generator_cpu_us_per_op: outcome.generator_cpu_seconds * 1e6 / outcome.ops().max(1) as f64,
            servers: outcome.servers.as_ref().map(|(_, after)| after.servers),
            server_cpu_seconds: outcome
                .servers
                .as_ref()
                .map(|(before, after)| after.cpu_seconds - before.cpu_seconds),
            server_cpu_us_per_op: outcome.servers.as_ref().map(|(before, after)| {
                (after.cpu_seconds - before.cpu_seconds) * 1e6 / outcome.ops().max(1) as f64
            }),
            budget: budget(outcome),
        }
    }

    /// The report as a person reads it.
    pub fn human(&self) -> String {
        let rate = match self.rate {
            0 => String::new(),
            rate => format!(", at most {rate} ops/s"),
        };
        let mut text = format!(
            "nvkv bench {}: {} clients over {} connections, {}-byte keys from {} and {}-byte values, {} at {}{rate}\n",
            self.workload,
            self.clients,
            self.connections,
            self.key_bytes,
            self.key_space,
            self.value_bytes,
            self.target,
            self.endpoints.join(","),
        );
        if let Some(preloaded) = self.preloaded_keys.filter(|&keys| keys > 0) {
            text.push_str(&format!("preloaded    {preloaded} keys\n"));
        }
        text.push_str(&format!(
            "ops          {} in {:.2} s ({} failed)\nops/s        {:.0}\nlatency us   {}",
            self.latencies.ops,
            self.seconds,
            self.errors,
            self.ops_per_sec,
            self.latencies.human()
        ));
        if let (Some(succeeded), Some(failed), Some(reads)) =
            (self.txn_succeeded, self.txn_failed, self.txn_revision_reads)
        {
            text.push_str(&format!(
                "\nswaps        {succeeded} succeeded, {failed} conflicted; {reads} revisions read first"
            ));
        }
        if let (
            Some(watchers),
            Some(events),
            Some(per_sec),
            Some(missing),
            Some(duplicated),
            Some(unexpected),
        ) = (
            self.watchers,
            self.events,
            self.events_per_sec,
            self.events_missing,
            self.events_duplicated,
            self.events_unexpected,
        ) {
            text.push_str(&format!(
                " (of events)\nevents       {events} at {watchers} watchers ({per_sec:.0}/s); \
                 {missing} missing, {duplicated} duplicated, {unexpected} unexpected"
            ));
        }
        if let (Some(p50), Some(p99)) = (self.put_p50_us, self.put_p99_us) {
            text.push_str(&format!("\nputs us      p50 {p50:.1}  p99 {p99:.1}"));
        }
        for (name, latencies) in [("gets", &self.range), ("puts", &self.put)] {
            if let Some(latencies) = latencies {
                text.push_str(&format!("\n{name:<12} {:>8}   {}", latencies.ops, latencies.human()));
            }
        }
        if let (Some(servers), Some(seconds), Some(per_op)) =
            (self.servers, self.server_cpu_seconds, self.server_cpu_us_per_op)
        {
            text.push_str(&format!(
                "\nserver cpu   {per_op:.2} us/op ({seconds:.2} s over {servers} server{})",
                if servers == 1 { "" } else { "s" }
            ));
        }
        text.push_str(&format!(
            "\nbench cpu    {:.2} us/op ({} thread{})",
            self.generator_cpu_us_per_op,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        ));
        if !self.budget.is_empty() {
            text.push_str("\nlatency budget (mean over the run; p50 / p99)");
            for hop in &self.budget {
                text.push_str(&format!(
                    "\n  {:<32} {:>9.1} us   {:>8.1} / {:<8.1} ({})",
                    hop.name, hop.mean_us, hop.p50_us, hop.p99_us, hop.count
                ));
            }
        }
        text
    }
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
        targets.push(Rc::new(T::connect(endpoint, tls).await?));
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
mod tests {
    use super::*;

    /// A store in memory with etcd's revision rules, shared by the targets
    /// (connections) of a test. Each call yields once before it acts, so
    /// clients interleave the way they do over a network.
    #[derive(Default)]
    struct Model {
        mod_revisions: RefCell<HashMap<Vec<u8>, i64>>,
        revision: Cell<i64>,
        puts: Cell<u64>,
        gets: Cell<u64>,
        swaps: Cell<u64>,
        /// The watched keys and where their events go.
        watches: RefCell<Vec<(Vec<u8>, tokio::sync::mpsc::UnboundedSender<WatchedEvent>)>>,
        /// Drop every this many'th event (0: none), to be found missing;
        /// deliver every this many'th twice.
        lose_every: u64,
        repeat_every: u64,
        events_sent: Cell<u64>,
    }

    struct ModelTarget(Rc<Model>);

    impl Model {
        fn write(&self, key: &[u8], value: &[u8]) -> i64 {
            self.revision.set(self.revision.get() + 1);
            self.mod_revisions.borrow_mut().insert(key.to_vec(), self.revision.get());
            for (watched, sender) in self.watches.borrow().iter().filter(|(watched, _)| watched == key) {
                self.events_sent.set(self.events_sent.get() + 1);
                let nth = |every: u64| every > 0 && self.events_sent.get() % every == 0;
                let event = WatchedEvent {
                    deleted: false,
                    key: watched.clone(),
                    value: value.to_vec(),
                    revision: self.revision.get(),
                };
                let copies = if nth(self.lose_every) {
                    0
                } else if nth(self.repeat_every) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    sender.send(event.clone()).expect("the watcher outlives the run");
                }
            }
            self.revision.get()
        }
    }

    struct ModelWatch(tokio::sync::mpsc::UnboundedReceiver<WatchedEvent>);

    impl WatchStream for ModelWatch {
        async fn next(&mut self) -> Result<Vec<WatchedEvent>, String> {
            self.0.recv().await.map(|event| vec![event]).ok_or_else(|| "the model closed".to_string())
        }
    }

    impl StoreTarget for ModelTarget {
        async fn connect(endpoint: &str, _: &crate::rpc::client::ClientTls) -> Result<ModelTarget, String> {
            Err(format!("a model is not reached at {endpoint}: the test makes its targets"))
        }

        async fn put(&self, key: &[u8], value: &[u8]) -> Result<Option<Duration>, String> {
            tokio::task::yield_now().await;
            assert_eq!((key.len(), value.len()), (8, 16));
            self.0.write(key, value);
            self.0.puts.set(self.0.puts.get() + 1);
            Ok(None)
        }

        async fn ping(&self, _: &[u8]) -> Result<Option<Duration>, String> {
            Ok(Some(Duration::ZERO))
        }

        async fn sample_servers(
            _: &[String],
            _: &crate::rpc::client::ClientTls,
        ) -> Result<ServerSample, String> {
            Ok(ServerSample::default())
        }

        async fn range(
            &self,
            key: &[u8],
            range_end: &[u8],
            limit: i64,
            _: Consistency,
        ) -> Result<RangeRead, String> {
            tokio::task::yield_now().await;
            assert_eq!((range_end, limit), (&[][..], 1), "single-key gets");
            self.0.gets.set(self.0.gets.get() + 1);
            let mod_revision = self.0.mod_revisions.borrow().get(key).copied().unwrap_or(0);
            Ok(RangeRead { keys: u64::from(mod_revision > 0), mod_revision })
        }

        async fn compare_and_swap(
            &self,
            key: &[u8],
            mod_revision: i64,
            value: &[u8],
        ) -> Result<Swap, String> {
            tokio::task::yield_now().await;
            self.0.swaps.set(self.0.swaps.get() + 1);
            let current = self.0.mod_revisions.borrow().get(key).copied().unwrap_or(0);
            if current == mod_revision {
                Ok(Swap { succeeded: true, mod_revision: self.0.write(key, value) })
            } else {
                Ok(Swap { succeeded: false, mod_revision: current })
            }
        }

        type Watch = ModelWatch;

        async fn watch(&self, key: &[u8], range_end: &[u8]) -> Result<ModelWatch, String> {
            assert!(range_end.is_empty(), "watches of one key");
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
            self.0.watches.borrow_mut().push((key.to_vec(), sender));
            Ok(ModelWatch(receiver))
        }
    }

    fn options(total: Option<u64>, seconds: f64, rate: u64) -> LoadOptions {
        LoadOptions {
            clients: 8,
            connections: 2,
            key_bytes: 8,
            value_bytes: 16,
            key_space: 100,
            seconds,
            total,
            rate,
            progress: false,
            threads: 1,
        }
    }

    /// Runs `workload` against a fresh model over two connections.
    fn run_on_model(workload: Workload, options: &LoadOptions) -> (Outcome, Rc<Model>) {
        let model = Rc::new(Model::default());
        let targets = vec![Rc::new(ModelTarget(model.clone())), Rc::new(ModelTarget(model.clone()))];
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        let outcome = local.block_on(&runtime, drive(&workload, options, targets, 0));
        (outcome, model)
    }

    #[test]
    fn puts_stop_at_their_total_and_every_one_reaches_the_store() {
        let (outcome, model) = run_on_model(Workload::Put, &options(Some(1000), 60.0, 0));
        assert_eq!((outcome.ops(), outcome.errors), (1000, 0));
        assert_eq!(model.puts.get(), 1000, "every put reached the store");
        assert_eq!(model.gets.get() + model.swaps.get(), 0, "puts only");
    }

    #[test]
    fn swaps_count_successes_and_conflicts_and_only_successes_write() {
        let mut options = options(Some(2000), 60.0, 0);
        options.key_space = 4;
        let (outcome, model) = run_on_model(Workload::Txn, &options);
        assert_eq!(outcome.errors, 0);
        assert_eq!(outcome.txn_succeeded + outcome.txn_failed, 2000, "every swap is one or the other");
        assert_eq!(outcome.ops(), 2000);
        assert_eq!(model.puts.get(), 0);
        assert_eq!(
            model.revision.get() as u64,
            outcome.txn_succeeded,
            "a write per success, none per conflict"
        );
        assert!(outcome.txn_failed > 0, "8 clients on 4 keys collide");
        assert!(outcome.txn_succeeded > 0, "a remembered revision wins");
        assert!(
            (1..=32).contains(&outcome.txn_revision_reads),
            "a key's revision is read only until someone saw it: {} reads",
            outcome.txn_revision_reads
        );
        assert_eq!(model.gets.get(), outcome.txn_revision_reads);
    }

    #[test]
    fn mixed_runs_keep_to_the_read_ratio_and_measure_each_kind_apart() {
        let workload =
            Workload::Mixed { read_ratio: 0.25, consistency: Consistency::Serializable, preload: false };
        let (outcome, model) = run_on_model(workload, &options(Some(4000), 60.0, 0));
        assert_eq!(outcome.ops(), 4000);
        let (gets, puts) =
            (outcome.histograms[Kind::Range as usize].len(), outcome.histograms[Kind::Put as usize].len());
        assert_eq!((gets, puts), (model.gets.get(), model.puts.get()));
        assert!((800..1200).contains(&gets), "{gets} gets of 4000 at a read ratio of 0.25");
        let report = BenchReport::new(&workload, &options(Some(4000), 60.0, 0), &outcome, "model", &[]);
        assert_eq!(report.range.as_ref().map(|range| range.ops), Some(gets));
        assert_eq!(report.put.as_ref().map(|put| put.ops), Some(puts));
        assert_eq!((report.consistency, report.read_ratio), (Some("s"), Some(0.25)));
    }

    #[test]
    fn a_rate_keeps_the_clients_to_it() {
        let (outcome, _) = run_on_model(Workload::Put, &options(None, 0.5, 200));
        assert!(
            (1..=101).contains(&outcome.ops()),
            "{} puts in 0.5 s at 200 ops/s: at most rate x seconds + 1",
            outcome.ops()
        );
    }

    /// Runs the watch workload with `watchers` against `model` over two connections.
    fn watch_on_model(model: &Rc<Model>, watchers: u32, options: &LoadOptions) -> Outcome {
        let targets = vec![Rc::new(ModelTarget(model.clone())), Rc::new(ModelTarget(model.clone()))];
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, super::super::watch::drive(options, watchers, targets)).expect("watch run")
    }

    #[test]
    fn every_put_reaches_every_watcher_of_its_key_once() {
        let mut options = options(Some(500), 60.0, 0);
        options.key_space = 4;
        let model = Rc::new(Model::default());
        let outcome = watch_on_model(&model, 10, &options);
        let received = outcome.watch.as_ref().expect("a watch outcome");
        assert_eq!((outcome.ops(), outcome.errors, model.puts.get()), (500, 0, 500));
        // Keys 0 and 1 have three watchers each, keys 2 and 3 two.
        let counts = model.mod_revisions.borrow().len();
        assert_eq!(counts, 4, "every key was put");
        assert_eq!(received.events, model.events_sent.get(), "each event taken once");
        assert!((1000..=1500).contains(&received.events), "500 puts x 2 or 3 watchers: {}", received.events);
        assert_eq!((received.missing, received.duplicated, received.unexpected), (0, 0, 0));
        assert_eq!(received.latencies.len(), received.events);
        let report = BenchReport::new(&Workload::Watch { watchers: 10 }, &options, &outcome, "model", &[]);
        assert_eq!(
            (report.latencies.ops, report.events, report.watchers),
            (500, Some(received.events), Some(10))
        );
        assert!(report.put_p50_us.is_some_and(|p50| p50 > 0.0));
    }

    #[test]
    fn lost_and_repeated_events_are_counted_as_errors() {
        let mut options = options(Some(200), 60.0, 0);
        options.key_space = 1;
        let model = Rc::new(Model { lose_every: 10, repeat_every: 7, ..Model::default() });
        let outcome = watch_on_model(&model, 3, &options);
        let received = outcome.watch.as_ref().expect("a watch outcome");
        let sent = model.events_sent.get();
        assert_eq!(sent, 600, "200 puts of the one key x 3 watchers");
        let lost = sent / 10;
        let repeated = sent / 7 - sent / 70;
        assert_eq!((received.missing, received.duplicated), (lost, repeated));
        assert_eq!(received.events, sent - lost);
        assert_eq!(outcome.errors, lost + repeated, "put errors none, the rest are the watchers'");
    }

    #[test]
    fn preload_puts_every_key_once() {
        let model = Rc::new(Model::default());
        let targets = vec![Rc::new(ModelTarget(model.clone()))];
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        let keys = local.block_on(&runtime, preload(&options(None, 1.0, 0), &targets)).expect("preload");
        assert_eq!(keys, 100);
        assert_eq!(model.puts.get(), 100);
        assert_eq!(model.mod_revisions.borrow().len(), 100, "each key of the space, once");
    }

    #[test]
    fn threads_share_clients_connections_total_and_rate_without_losing_any() {
        let mut whole = options(Some(1001), 1.0, 301);
        (whole.clients, whole.connections, whole.threads) = (256, 26, 3);
        let shares: Vec<(LoadOptions, Part)> = (0..3).map(|thread| whole.share(thread)).collect();
        let sum = |field: fn(&LoadOptions) -> u64| shares.iter().map(|(share, _)| field(share)).sum::<u64>();
        assert_eq!(sum(|share| u64::from(share.clients)), 256);
        assert_eq!(sum(|share| u64::from(share.connections)), 26);
        assert_eq!(sum(|share| share.total.unwrap_or(0)), 1001);
        assert_eq!(sum(|share| share.rate), 301);
        let firsts: Vec<(u32, u32)> =
            shares.iter().map(|(_, part)| (part.first_client, part.first_connection)).collect();
        assert_eq!(firsts, vec![(0, 0), (86, 9), (171, 18)], "each thread starts where the one before ends");
        assert!(shares.iter().all(|(share, _)| share.threads == 1));
        assert_eq!(shares.iter().filter(|(_, part)| part.preloads).count(), 1, "one thread preloads");
        let mut too_many = options(Some(2), 1.0, 0);
        too_many.threads = 2;
        assert_eq!(too_many.validate(&Workload::Put), Ok(()));
        too_many.threads = 3;
        assert!(too_many
            .validate(&Workload::Put)
            .expect_err("3 threads, 2 connections")
            .starts_with("--threads 3"));
        assert_eq!(default_threads(&Workload::Put, 26, Some(1)), 1, "no more threads than operations");
        assert_eq!(default_threads(&Workload::Watch { watchers: 10 }, 26, None), 1);
    }

    #[test]
    fn the_budget_puts_the_client_hops_around_the_servers_between_the_samples() {
        let shard = |micros: &[u64]| {
            let mut histogram = crate::wal::StageHistogram::new();
            for micros in micros {
                histogram.record(Duration::from_micros(*micros));
            }
            vec![crate::shard::stages::HopReport::of("leader append durable", &histogram)]
        };
        let mut before = ServerSample::default();
        before.add_hops(&shard(&[1000, 1000])).expect("decodes");
        let mut after = ServerSample { servers: 1, cpu_seconds: 2.0, ..ServerSample::default() };
        // Two shards: their histograms add up; the run's part is after less before.
        after.add_hops(&shard(&[1000, 1000, 40, 50])).expect("decodes");
        after.add_hops(&shard(&[60])).expect("decodes");
        let (mut outcome, _) = run_on_model(Workload::Put, &options(Some(10), 60.0, 0));
        for micros in [10, 20, 30] {
            outcome.outside.record(micros * 1000).expect("in range");
        }
        outcome.servers = Some((before, after));
        let budget = budget(&outcome);
        let names: Vec<&str> = budget.iter().map(|hop| hop.name.as_str()).collect();
        assert_eq!(names, vec![CLIENT_TO_SHARD, "leader append durable", SHARD_TO_CLIENT]);
        let hop = &budget[1];
        assert_eq!(hop.count, 3, "the two slow appends were before the run");
        let near = |value: f64, expected: f64| (value - expected).abs() < expected / 100.0;
        assert!(near(hop.mean_us, 50.0) && near(hop.p50_us, 50.0) && near(hop.p99_us, 60.0), "{hop:?}");
        assert_eq!(budget[0].count, 3);
        assert!(
            (budget[0].p50_us - 10.0).abs() < 0.02,
            "half the 20 µs outside the store: {}",
            budget[0].p50_us
        );
        let report = BenchReport::new(&Workload::Put, &options(Some(10), 60.0, 0), &outcome, "model", &[]);
        assert_eq!(report.server_cpu_seconds, Some(2.0));
        assert_eq!(report.server_cpu_us_per_op, Some(2e6 / 10.0));
    }

    #[test]
    fn bad_options_are_refused_naming_the_value() {
        let range = Workload::Range { consistency: Consistency::Linearizable, limit: 1, preload: true };
        /// Spoils one option of good ones.
        type Spoil = fn(&mut LoadOptions);
        let cases: Vec<(Spoil, Workload, &str)> = vec![
            (|o| o.clients = 0, Workload::Put, "--clients 0"),
            (|o| o.connections = 9, Workload::Put, "--conns 9"),
            (|o| o.key_bytes = 0, Workload::Put, "--key-bytes 0"),
            (|o| o.value_bytes = 2 << 20, Workload::Put, "--value-bytes 2097152"),
            (|o| o.key_space = 0, Workload::Put, "--key-space 0"),
            (|o| (o.key_bytes, o.key_space) = (2, 101), Workload::Put, "--key-space 101"),
            (|o| o.seconds = 0.0, Workload::Put, "--seconds 0"),
            (|o| o.seconds = f64::NAN, Workload::Put, "--seconds NaN"),
            (|o| o.total = Some(0), Workload::Put, "--total 0"),
            (|o| o.rate = RATE_MAX + 1, Workload::Put, "--rate 10000001"),
            (
                |_| {},
                Workload::Range { consistency: Consistency::Linearizable, limit: 0, preload: true },
                "--limit 0",
            ),
            (
                |_| {},
                Workload::Mixed { read_ratio: 1.5, consistency: Consistency::Linearizable, preload: true },
                "--read-ratio 1.5",
            ),
            (|_| {}, Workload::Watch { watchers: 0 }, "--watchers 0"),
            (|_| {}, Workload::Watch { watchers: WATCHERS_MAX + 1 }, "--watchers 10001"),
            (|o| o.key_space = 101, Workload::Watch { watchers: 100 }, "--key-space 101"),
            (|o| (o.key_space, o.value_bytes) = (1, 15), Workload::Watch { watchers: 1 }, "--value-bytes 15"),
        ];
        for (change, workload, named) in cases {
            let mut options = options(None, 1.0, 0);
            change(&mut options);
            let error = options.validate(&workload).expect_err(named);
            assert!(error.starts_with(named), "{error:?} should name {named:?}");
        }
        assert_eq!(options(None, 1.0, 0).validate(&range), Ok(()));
    }
}
