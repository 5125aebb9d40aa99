//! `nvkv bench device`: the shard log's append path under load.
//!
//! One reactor, pinned like a shard of `nvkv serve`, owns the log on the
//! namespace; A appender tasks on it each append an entry, wait until the
//! log reports it durable, record the latency, and go again. Everything the
//! appenders queue in one reactor turn goes out as one group-commit write,
//! exactly as in the daemon. Appenders spread over groups; each group purges
//! old entries as Raft would after a snapshot, so the ring wraps and
//! reclaims for as long as the run lasts.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{Durability as ConfigDurability, PollMode, ReactorConfig};
use crate::nvme::open::{open_namespace, Backend, NamespaceSettings, SpdkOptions};
use crate::nvme::{Namespace, QueuePairConfig};
use crate::reactor::{DriverFactory, ReactorSettings, Reactors, ShardDriver};
use crate::shard::{open_shared_log, LogDriver};
use crate::wal::{superblock, FormatOptions, LogOptions, LogStages, LogStats};

/// Most groups the appenders spread over.
const GROUPS_MAX: u32 = 64;
/// Entries a group keeps before it purges, and how often it purges, at
/// most: a small ring shared by many groups gets less (see [`retention`]).
const KEEP_ENTRIES: u64 = 1024;
const PURGE_EVERY: u64 = 256;
/// A run in which no append finishes for this long has stalled.
const STALL_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct DeviceBenchOptions {
    pub namespace: PathBuf,
    pub namespace_bytes: u64,
    pub lba_bytes: u32,
    pub appenders: u32,
    pub entry_bytes: usize,
    pub seconds: f64,
    /// Stop after this many appends in all, if reached before `seconds`.
    pub count: Option<u64>,
    pub durability: ConfigDurability,
    pub poll_mode: PollMode,
    pub batch_bytes_max: usize,
    pub inflight_writes_max: usize,
    pub queue_depth: u32,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
    /// Append through the spdk backend to this controller and namespace
    /// instead of `namespace`.
    pub spdk: Option<SpdkOptions>,
}

#[derive(Debug, Serialize)]
pub struct DeviceBenchReport {
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub appenders: u32,
    pub entry_bytes: usize,
    pub groups: u32,
    pub durability: String,
    pub poll_mode: String,
    pub backend: String,
    pub namespace: String,
    pub namespace_bytes: u64,
    pub lba_bytes: u32,
    pub batch_bytes_max: usize,
    pub inflight_writes_max: usize,
    pub device_writes: u64,
    pub device_bytes_written: u64,
    pub entries_per_write: f64,
    pub checkpoints: u64,
    pub core: usize,
    /// Where the time of an append goes inside the log: waiting to be
    /// written (end of tick, in-flight slots), then the device write.
    pub queue_wait_p50_us: f64,
    pub queue_wait_p99_us: f64,
    pub device_write_p50_us: f64,
    pub device_write_p99_us: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceBenchError {
    #[error("invalid option: {0}")]
    Invalid(String),
    #[error(transparent)]
    Namespace(#[from] crate::nvme::NvmeError),
    #[error(transparent)]
    Log(#[from] crate::wal::WalError),
    #[error(transparent)]
    Reactor(#[from] crate::reactor::ReactorError),
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    #[error("the benchmark's appenders failed: {0}")]
    Appenders(String),
}

/// What the appender tasks hand back to the bench thread at the end.
struct Outcome {
    histogram: Histogram<u64>,
    ops: u64,
    elapsed: Duration,
    stats: LogStats,
    stages: Option<LogStages>,
    error: Option<String>,
}

impl DeviceBenchOptions {
    fn validate(&self) -> Result<(), DeviceBenchError> {
        let invalid = |message: String| Err(DeviceBenchError::Invalid(message));
        if let Some(spdk) = &self.spdk {
            if spdk.transport.trim().is_empty() || spdk.transport.len() > 1024 {
                return invalid(format!(
                    "--spdk-transport {:?} must be an SPDK transport id of 1 to 1024 bytes",
                    spdk.transport
                ));
            }
            if spdk.nsid == 0 || spdk.nsid == u32::MAX {
                return invalid(format!("--spdk-nsid {} must be from 1 to 4294967294", spdk.nsid));
            }
        }
        if self.appenders == 0 || self.appenders > 4096 {
            return invalid(format!("--appenders {} must be from 1 to 4096", self.appenders));
        }
        if self.entry_bytes == 0 || self.entry_bytes > self.batch_bytes_max / 2 {
            return invalid(format!(
                "--entry-bytes {} must be from 1 to half of the batch size ({} bytes)",
                self.entry_bytes,
                self.batch_bytes_max / 2
            ));
        }
        if !(self.seconds > 0.0 && self.seconds <= 86_400.0) {
            return invalid(format!("--seconds {} must be more than 0 and at most 86400", self.seconds));
        }
        if self.count == Some(0) {
            return invalid("--count 0: give at least 1".into());
        }
        Ok(())
    }
}

/// How many entries each group keeps and how often it purges, so that the
/// live entries of all `groups` fill at most half the ring (the rest covers
/// purges still riding to the device and the reclaim that waits for an
/// eighth of the ring to be free). A 1 GiB ring keeps [`KEEP_ENTRIES`]; a
/// 64 MiB one shared by 64 groups far fewer, or its ring fills before any
/// group purges and every append waits for space for ever.
fn retention(ring_blocks: u64, groups: u32, record_blocks: u64) -> Result<(u64, u64), DeviceBenchError> {
    let entries = ring_blocks / record_blocks.max(1);
    let budget = entries / (2 * u64::from(groups));
    if budget < 4 {
        return Err(DeviceBenchError::Invalid(format!(
            "the namespace's log ring holds {entries} entries of this size, too few for {groups} groups of \
             appenders to keep 4 each in half of it: use a larger namespace, fewer --appenders or smaller \
             --entry-bytes"
        )));
    }
    let keep = (budget * 3 / 4).min(KEEP_ENTRIES);
    let every = (budget / 4).clamp(1, PURGE_EVERY);
    Ok((keep, every))
}

/// Runs the benchmark and returns its report.
pub fn run(options: &DeviceBenchOptions) -> Result<DeviceBenchReport, DeviceBenchError> {
    options.validate()?;
    if options.durability == ConfigDurability::None {
        tracing::warn!(
            "durability = none: appends are not durable; the numbers say nothing about a real log"
        );
    }
    let namespace = open_namespace(&NamespaceSettings {
        backend: if options.spdk.is_some() { Backend::Spdk } else { Backend::Uring },
        path: options.namespace.clone(),
        namespace_bytes: options.namespace_bytes,
        lba_bytes: options.lba_bytes,
        spdk: options.spdk.clone().unwrap_or_default(),
    })?;
    let queue_pair = QueuePairConfig { depth: options.queue_depth, registered_buffer_bytes: 16 << 20 };
    let region = {
        let mut queue = namespace.open_queue_pair(&queue_pair)?;
        // A log left by an earlier run (or by a test) would be recovered and
        // its records, which no appender here purges, could fill the ring:
        // every run starts on an empty log.
        let superblock = superblock::format_anew(
            queue.as_mut(),
            FormatOptions { shards: 1, groups_per_shard_max: GROUPS_MAX, member_id: 0 },
        )?;
        superblock.region(0)
    };
    let reactor_config =
        ReactorConfig { shards: 1, poll_mode: options.poll_mode, ..ReactorConfig::default() };
    let cores = crate::topology::choose_cores(&reactor_config, namespace.info().pci_address.as_deref(), 0)?;
    let core = cores[0];
    let log_options = LogOptions {
        durability: crate::shard::durability(options.durability),
        batch_bytes_max: options.batch_bytes_max,
        inflight_writes_max: options.inflight_writes_max,
        cache_bytes_max: 16 << 20,
        queue_depth: options.queue_depth as usize,
        repair_snapshots_from_peers: false,
    };
    let groups = options.appenders.min(GROUPS_MAX);
    let (outcome_sender, outcome_receiver) = crossbeam_channel::bounded::<Outcome>(1);
    let deadline_after = Duration::from_secs_f64(options.seconds);
    let count = options.count;
    let appenders = options.appenders;
    let entry_bytes = options.entry_bytes;
    let (keep_entries, purge_every) = retention(
        region.ring_blocks(),
        groups,
        crate::wal::format::record_blocks(entry_bytes, namespace.info().lba_bytes as usize) as u64,
    )?;
    let factory_namespace: Arc<dyn Namespace> = namespace.clone();
    // Appends finished so far, watched by this thread: a run that stops
    // making progress ends with an error instead of hanging.
    let finished_appends = Arc::new(AtomicU64::new(0));
    let appends_counter = finished_appends.clone();
    let factory: DriverFactory = Box::new(move |context| {
        let log = open_shared_log(context, factory_namespace.as_ref(), &queue_pair, region, log_options)?;
        let next_index: Rc<RefCell<Vec<u64>>> = Rc::new(RefCell::new(
            (0..groups)
                .map(|group| log.with(|log| log.last_index(group)).map_or(1, |last| last + 1))
                .collect(),
        ));
        let shared = Rc::new(RefCell::new(Outcome {
            histogram: crate::latency::histogram(),
            ops: 0,
            elapsed: Duration::ZERO,
            stats: LogStats::default(),
            stages: None,
            error: None,
        }));
        let payload: Rc<[u8]> = (0..entry_bytes).map(|byte| (byte % 251) as u8).collect();
        let started = Instant::now();
        let deadline = started + deadline_after;
        let remaining = Rc::new(RefCell::new(appenders));
        for appender in 0..appenders {
            let counter = appends_counter.clone();
            let (log, next_index, shared, payload, remaining, sender) = (
                log.clone(),
                next_index.clone(),
                shared.clone(),
                payload.clone(),
                remaining.clone(),
                outcome_sender.clone(),
            );
            tokio::task::spawn_local(async move {
                let group = appender % groups;
                loop {
                    if Instant::now() >= deadline || count.is_some_and(|count| shared.borrow().ops >= count) {
                        break;
                    }
                    let index = {
                        let mut next = next_index.borrow_mut();
                        let index = next[group as usize];
                        next[group as usize] += 1;
                        index
                    };
                    let start = Instant::now();
                    if let Err(error) = log.append(group, index, 1, &payload).await {
                        shared.borrow_mut().error.get_or_insert(error.to_string());
                        break;
                    }
                    let nanos = start.elapsed().as_nanos() as u64;
                    counter.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut outcome = shared.borrow_mut();
                        outcome.histogram.saturating_record(nanos.max(1));
                        outcome.ops += 1;
                    }
                    if index % purge_every == 0 && index > keep_entries {
                        // Not awaited: a purge rides along with the next write.
                        let purge = log.with(|log| log.purge(group, index - keep_entries, 1));
                        if let Err(error) = purge {
                            shared.borrow_mut().error.get_or_insert(error.to_string());
                            break;
                        }
                    }
                }
                let mut left = remaining.borrow_mut();
                *left -= 1;
                if *left == 0 {
                    let mut outcome = shared.borrow_mut();
                    outcome.elapsed = started.elapsed();
                    outcome.stats = log.with(|log| log.stats());
                    outcome.stages = Some(log.with(|log| log.stages().clone()));
                    let finished = Outcome {
                        histogram: outcome.histogram.clone(),
                        ops: outcome.ops,
                        elapsed: outcome.elapsed,
                        stats: outcome.stats.clone(),
                        stages: outcome.stages.take(),
                        error: outcome.error.take(),
                    };
                    let _ = sender.send(finished);
                }
            });
        }
        Ok(Box::new(LogDriver::new(log)) as Box<dyn ShardDriver>)
    });
    let settings = ReactorSettings { poll_mode: options.poll_mode, ..ReactorSettings::default() };
    let reactors = Reactors::start(&settings, &[core], vec![factory])?;

    let progress = crate::progress::bar(
        options.progress,
        (options.seconds * 1000.0) as u64,
        "{spinner} appending [{bar:40}] {elapsed_precise} of {msg}",
    );
    if let Some(bar) = &progress {
        bar.set_message(format!("{:.0}s", options.seconds));
    }
    let mut last_seen = (0, Instant::now());
    let outcome = loop {
        match outcome_receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(outcome) => break outcome,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let done = finished_appends.load(Ordering::Relaxed);
                if done != last_seen.0 {
                    last_seen = (done, Instant::now());
                } else if last_seen.1.elapsed() >= STALL_AFTER {
                    let stopped = reactors.stop();
                    return Err(DeviceBenchError::Appenders(format!(
                        "no append finished in {STALL_AFTER:?} ({done} finished before): the log stalled, on a \
                         device command that never completed or on a full ring ({stopped:?})"
                    )));
                }
                if let Some(bar) = &progress {
                    bar.set_position(
                        bar.position().saturating_add(100).min(bar.length().unwrap_or(u64::MAX)),
                    );
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                let stopped = reactors.stop();
                return Err(DeviceBenchError::Appenders(format!(
                    "the reactor ended before the appenders reported ({stopped:?})"
                )));
            }
        }
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    reactors.stop()?;
    if let Some(error) = outcome.error {
        return Err(DeviceBenchError::Appenders(error));
    }
    let seconds = outcome.elapsed.as_secs_f64();
    let stages = outcome.stages.unwrap_or_default();
    let micros = |nanos: u64| nanos as f64 / 1000.0;
    let histogram = &outcome.histogram;
    let info = namespace.info();
    Ok(DeviceBenchReport {
        ops: outcome.ops,
        seconds,
        ops_per_sec: outcome.ops as f64 / seconds,
        mb_per_sec: (outcome.ops as f64 * options.entry_bytes as f64) / seconds / 1e6,
        p50_us: micros(histogram.value_at_quantile(0.5)),
        p99_us: micros(histogram.value_at_quantile(0.99)),
        p999_us: micros(histogram.value_at_quantile(0.999)),
        max_us: micros(histogram.max()),
        mean_us: histogram.mean() / 1000.0,
        appenders: options.appenders,
        entry_bytes: options.entry_bytes,
        groups,
        durability: options.durability.to_string(),
        poll_mode: options.poll_mode.to_string(),
        backend: info.backend.to_string(),
        namespace: options.namespace.display().to_string(),
        namespace_bytes: info.capacity_bytes(),
        lba_bytes: info.lba_bytes,
        batch_bytes_max: options.batch_bytes_max,
        inflight_writes_max: options.inflight_writes_max,
        device_writes: outcome.stats.writes,
        device_bytes_written: outcome.stats.bytes_written,
        entries_per_write: if outcome.stats.writes == 0 {
            0.0
        } else {
            outcome.ops as f64 / outcome.stats.writes as f64
        },
        checkpoints: outcome.stats.checkpoints,
        core,
        queue_wait_p50_us: stages.queue_wait.quantile_us(0.5),
        queue_wait_p99_us: stages.queue_wait.quantile_us(0.99),
        device_write_p50_us: stages.device_write.quantile_us(0.5),
        device_write_p99_us: stages.device_write.quantile_us(0.99),
    })
}

impl DeviceBenchReport {
    /// The report as a person reads it.
    pub fn human(&self) -> String {
        format!(
            "nvkv bench device: {} appenders x {}-byte entries, durability {}, {} poll, {} ({} backend)\n\
             appends      {} in {:.2} s\n\
             appends/s    {:.0}\n\
             MB/s         {:.1}\n\
             latency us   p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}\n\
             stages us    queue wait p50 {:.1} p99 {:.1}, device write p50 {:.1} p99 {:.1}\n\
             device       {} writes, {:.1} entries per write, {} checkpoints, core {}",
            self.appenders,
            self.entry_bytes,
            self.durability,
            self.poll_mode,
            self.namespace,
            self.backend,
            self.ops,
            self.seconds,
            self.ops_per_sec,
            self.mb_per_sec,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.mean_us,
            self.queue_wait_p50_us,
            self.queue_wait_p99_us,
            self.device_write_p50_us,
            self.device_write_p99_us,
            self.device_writes,
            self.entries_per_write,
            self.checkpoints,
            self.core,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_fits_the_groups_into_half_the_ring() {
        // A 1 GiB ring and one group keep the most.
        assert_eq!(retention(250_000, 1, 1).expect("fits"), (KEEP_ENTRIES, PURGE_EVERY));
        // 64 groups on a 64 MiB namespace's ring: far fewer, within half.
        let (keep, every) = retention(12_282, 64, 1).expect("fits");
        assert!(64 * (keep + every) <= 12_282 / 2, "keep {keep} every {every}");
        assert!(keep >= 3 && every >= 1);
        let error = retention(12_282, 4096, 1).expect_err("4096 groups cannot keep 4 entries each");
        assert!(error.to_string().contains("12282 entries"), "{error}");
    }

    /// Options for `appenders` appending `count` entries of 2300 bytes
    /// with FUA writes.
    fn options(appenders: u32, count: u64) -> DeviceBenchOptions {
        DeviceBenchOptions {
            namespace: PathBuf::new(),
            namespace_bytes: 64 << 20,
            lba_bytes: 4096,
            appenders,
            entry_bytes: 2300,
            seconds: 600.0,
            count: Some(count),
            durability: ConfigDurability::Fua,
            poll_mode: PollMode::Adaptive,
            batch_bytes_max: 1 << 20,
            inflight_writes_max: 4,
            queue_depth: 128,
            progress: false,
            spdk: None,
        }
    }

    /// Runs the bench on its own thread, failing after `limit` instead of
    /// hanging, and checks that every append finished and the log wrapped.
    fn run_past_wraps(options: DeviceBenchOptions, limit: Duration) -> DeviceBenchReport {
        let count = options.count.expect("a count");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(run(&options).map_err(|error| error.to_string()));
        });
        let report = receiver
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("the device bench stalled: no report after {limit:?}"))
            .unwrap_or_else(|error| panic!("the device bench failed: {error}"));
        eprintln!(
            "device bench ({}): {} appends by {} appenders in {:.1} s, p50 {:.1} us, {} checkpoints",
            report.backend, report.ops, report.appenders, report.seconds, report.p50_us, report.checkpoints
        );
        assert!(report.ops >= count, "{} of {count} appends finished", report.ops);
        assert!(report.checkpoints >= 2, "the log wrapped and reclaimed: {} checkpoints", report.checkpoints);
        report
    }

    /// Bug: 64 appenders on a 64 MiB namespace filled the log ring before
    /// any group purged (each kept 1024 entries), and the run stalled after
    /// about 12k appends, waiting for space for ever. Two wraps of the ring.
    #[test]
    fn many_appenders_wrap_a_small_log_without_stalling() {
        let directory = tempfile::tempdir().expect("tempdir");
        let options =
            DeviceBenchOptions { namespace: directory.path().join("bench.img"), ..options(64, 30_000) };
        run_past_wraps(options, Duration::from_secs(120));
    }

    /// The same on the spdk backend (namespace 4 of the target: the other
    /// spdk tests write over 1 to 3 meanwhile), which first showed it;
    /// `format_anew` also keeps a log left there by an earlier run from
    /// filling the ring.
    #[test]
    #[cfg(feature = "spdk")]
    fn the_device_bench_wraps_the_log_on_the_spdk_backend() {
        let Some(spdk) = crate::nvme::spdk::test_target(4, "the device bench past a ring wrap") else {
            return;
        };
        let options = DeviceBenchOptions { spdk: Some(spdk), ..options(64, 30_000) };
        let report = run_past_wraps(options, Duration::from_secs(120));
        assert_eq!(report.backend, "spdk");
    }
}
