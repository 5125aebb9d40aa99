//! What a store benchmark reports: the outcome of a run (a histogram per
//! kind of operation, failures, the servers' samples before and after), its
//! latencies, the latency budget of a put by hop, and the report printed and
//! written as JSON (`BenchReport`). The workloads (`bench::workload`) fill
//! an outcome; this module only reads it.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::{LoadOptions, Workload};

/// The kinds of operation, each with its own histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Put = 0,
    Range = 1,
    Txn = 2,
    Ping = 3,
}

pub(super) const KINDS: usize = 4;

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
    pub(super) histograms: [Histogram<u64>; KINDS],
    /// Per operation whose store said how long it spent in it: the round
    /// trip minus that, the network and both ends' stacks.
    pub(super) outside: Histogram<u64>,
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
pub(super) fn budget(outcome: &Outcome) -> Vec<BudgetHop> {
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
