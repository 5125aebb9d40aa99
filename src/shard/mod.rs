//! A shard: the pieces one reactor thread owns, wired together: its log
//! over its queue pair, the Raft groups it runs (`group`, `start`,
//! `registry`) and the handles the RPC layer calls (`requests` for
//! clients, `peer_requests` for peers).
//!
//! The shard maps the node's configuration onto the layers below (the log
//! knows nothing of config files) and never touches another shard's state.

pub mod answer;
pub mod auth;
pub mod backup;
pub mod barrier;
pub mod credentials;
pub mod forward;
pub mod group;
pub mod layout;
pub mod lease;
pub mod membership;
pub mod peer_requests;
pub mod propose;
pub mod registry;
pub mod requests;
pub mod settings;
pub mod snapshots;
pub mod space;
pub mod spread;
pub mod stages;
pub mod start;
#[cfg(test)]
mod test_support;
pub mod watch;

use std::os::fd::RawFd;
use std::path::Path;
use std::rc::Rc;

use crate::config::{self, Config};
use crate::nvme::open::{Backend, NamespaceSettings};
use crate::nvme::{Namespace, QueuePairConfig};
use crate::reactor::{ReactorContext, ShardDriver};
use crate::wal::{Durability, LogOptions, ShardLog, ShardRegion, SharedLog, WalError};

/// The log's durability for the config's.
pub fn durability(durability: config::Durability) -> Durability {
    match durability {
        config::Durability::Fua => Durability::Fua,
        config::Durability::Flush => Durability::Flush,
        config::Durability::None => Durability::None,
    }
}

/// Where and how the config says to open the namespace (a namespace file
/// without a path of its own lives in `data_dir`).
pub fn namespace_settings(config: &Config, data_dir: &Path) -> NamespaceSettings {
    NamespaceSettings {
        backend: match config.namespace.backend {
            config::Backend::Uring => Backend::Uring,
            config::Backend::Spdk => Backend::Spdk,
        },
        path: config.namespace.resolved_path(data_dir),
        namespace_bytes: config.namespace.namespace_bytes,
        lba_bytes: config.namespace.lba_bytes,
        spdk: settings::spdk_options(&config.namespace),
    }
}

/// The log options a config asks for.
pub fn log_options(config: &Config) -> LogOptions {
    LogOptions {
        durability: durability(config.log.durability),
        batch_bytes_max: config.log.batch_bytes_max as usize,
        inflight_writes_max: config.log.inflight_writes_max as usize,
        queue_depth: config.namespace.queue_depth as usize,
        ..LogOptions::default()
    }
}

/// Opens the log of `region` on the calling (reactor) thread, with its own
/// queue pair, and shares it with the reactor's tasks. New work wakes the
/// reactor through `context`.
pub fn open_shared_log(
    context: &ReactorContext,
    namespace: &dyn Namespace,
    queue_pair: &QueuePairConfig,
    region: ShardRegion,
    options: LogOptions,
) -> Result<SharedLog, WalError> {
    let queue = namespace
        .open_queue_pair(queue_pair)
        .map_err(|source| WalError::Device { what: "opening the shard's queue pair", source })?;
    let log = ShardLog::open(queue, region, options)?;
    let notify = context.notify().clone();
    Ok(SharedLog::new(log, Rc::new(move || notify.notify_one())))
}

/// Drives a shard's log from its reactor: every turn of the loop reaps
/// completions and sends what the shard's tasks queued as one write.
pub struct LogDriver {
    log: SharedLog,
}

impl LogDriver {
    pub fn new(log: SharedLog) -> LogDriver {
        LogDriver { log }
    }
}

impl ShardDriver for LogDriver {
    fn poll(&mut self) -> bool {
        self.log.tick()
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        self.log.with(|log| log.completion_fd().into_iter().collect())
    }

    fn idle(&self) -> bool {
        self.log.with(|log| log.is_idle())
    }
}

/// What the tasks of one reactor thread reach of their shard, without a
/// lock: set once by the shard's driver factory on its own thread.
#[derive(Clone)]
pub struct ShardState {
    pub shard: usize,
    pub core: usize,
    pub log: SharedLog,
}

pub use peer_requests::PeerRequests;
#[cfg(any(test, feature = "testing"))]
pub use registry::ThreadShard;
pub use registry::{local, set_local};

/// One shard's numbers, as the status of a node reports them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ShardReport {
    pub shard: u32,
    pub core: u32,
    pub groups: u32,
    pub log_head_sequence: u64,
    pub log_tail_sequence: u64,
    pub log_used_bytes: u64,
    pub log_capacity_bytes: u64,
    pub queue_wait_p50_us: f64,
    pub queue_wait_p99_us: f64,
    pub device_write_p50_us: f64,
    pub device_write_p99_us: f64,
    /// Group-commit writes since the log opened, and the records they
    /// carried: their ratio is how well group commit batches.
    pub log_writes: u64,
    pub log_records_written: u64,
    /// The stages above the log (see [`stages`]), p50 and p99 in µs.
    pub proposal_wait_p50_us: f64,
    pub proposal_wait_p99_us: f64,
    pub raft_p50_us: f64,
    pub raft_p99_us: f64,
    pub apply_p50_us: f64,
    pub apply_p99_us: f64,
    pub end_to_end_p50_us: f64,
    pub end_to_end_p99_us: f64,
    /// Raft entries proposed for client writes, and the writes they carried.
    pub proposals: u64,
    pub proposed_commands: u64,
    /// The device since the log opened (see `wal::LogStats`).
    pub device_written_bytes: u64,
    pub device_flushes: u64,
    pub device_errors: u64,
    pub snapshots_written: u64,
    pub snapshot_written_bytes: u64,
    /// The reactor's time running and asleep since it started; filled by
    /// whoever has its `ReactorContext` (0 from [`local_report`]).
    pub reactor_busy_seconds: f64,
    pub reactor_idle_seconds: f64,
    /// The latency budget's hops on this shard (see [`stages::Hop`]).
    pub hops: Vec<stages::HopReport>,
}

/// The report of this thread's shard.
pub fn local_report() -> Option<ShardReport> {
    let state = local()?;
    let (stats, groups, queue_wait, device_write) = state.log.with(|log| {
        let stages = log.stages();
        let quantiles = |histogram: &crate::wal::StageHistogram| {
            (histogram.quantile_us(0.5), histogram.quantile_us(0.99))
        };
        (log.stats(), log.groups().len(), quantiles(&stages.queue_wait), quantiles(&stages.device_write))
    });
    stages::read(|above| {
        Some(ShardReport {
            shard: state.shard as u32,
            core: state.core as u32,
            groups: groups as u32,
            log_head_sequence: stats.head_sequence,
            log_tail_sequence: stats.next_sequence,
            log_used_bytes: stats.used_bytes,
            log_capacity_bytes: stats.ring_bytes,
            queue_wait_p50_us: queue_wait.0,
            queue_wait_p99_us: queue_wait.1,
            device_write_p50_us: device_write.0,
            device_write_p99_us: device_write.1,
            log_writes: stats.writes,
            log_records_written: stats.records_written,
            proposal_wait_p50_us: above.proposal_wait.quantile_us(0.5),
            proposal_wait_p99_us: above.proposal_wait.quantile_us(0.99),
            raft_p50_us: above.raft.quantile_us(0.5),
            raft_p99_us: above.raft.quantile_us(0.99),
            apply_p50_us: above.apply.quantile_us(0.5),
            apply_p99_us: above.apply.quantile_us(0.99),
            end_to_end_p50_us: above.end_to_end.quantile_us(0.5),
            end_to_end_p99_us: above.end_to_end.quantile_us(0.99),
            proposals: above.proposals,
            proposed_commands: above.proposed_commands,
            device_written_bytes: stats.bytes_written,
            device_flushes: stats.flushes,
            device_errors: stats.device_errors,
            snapshots_written: stats.snapshots_written,
            snapshot_written_bytes: stats.snapshot_bytes_written,
            reactor_busy_seconds: 0.0,
            reactor_idle_seconds: 0.0,
            hops: above.hop_reports(),
        })
    })
}

/// One shard's numbers for the metrics endpoint: its log's counters and
/// every stage's histogram (the log's own and those above it), cumulative
/// since the shard started.
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    pub shard: u32,
    pub core: u32,
    pub log: crate::wal::LogStats,
    /// (stage name, histogram) in the order a write passes them.
    pub stages: Vec<(&'static str, crate::wal::StageHistogram)>,
    /// (hop name, histogram) of the latency budget, in the order a write
    /// passes them.
    pub hops: Vec<(&'static str, crate::wal::StageHistogram)>,
    pub proposals: u64,
    pub proposed_commands: u64,
    /// Writes that waited for room in a full proposal queue.
    pub proposals_held_back: u64,
}

/// The metrics of this thread's shard.
pub fn local_metrics() -> Option<ShardMetrics> {
    let state = local()?;
    let (log, below) = state.log.with(|log| (log.stats(), log.stages().clone()));
    let above = stages::snapshot();
    let hops = stages::Hop::ALL.iter().map(|hop| (hop.name(), above.hop(*hop).clone())).collect();
    Some(ShardMetrics {
        shard: state.shard as u32,
        core: state.core as u32,
        log,
        stages: vec![
            ("proposal_wait", above.proposal_wait),
            ("queue_wait", below.queue_wait),
            ("device_write", below.device_write),
            ("raft", above.raft),
            ("apply", above.apply),
            ("end_to_end", above.end_to_end),
        ],
        hops,
        proposals: above.proposals,
        proposed_commands: above.proposed_commands,
        proposals_held_back: above.proposals_held_back,
    })
}

/// One group as this member sees it, as the status of a node reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupReport {
    pub group: u32,
    pub shard: u32,
    /// The leader's member id; 0 when none is known.
    pub leader: u64,
    pub term: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// The log index the last snapshot covers; 0 before the first.
    pub snapshot_index: u64,
    /// The log is purged up to this index; 0 while nothing was purged.
    pub purged_index: u64,
    pub revision: i64,
    pub compact_revision: i64,
    /// Keys with history: live, or deleted since the last compaction.
    pub keys: u64,
    pub watchers: u32,
    pub leases: u32,
    /// Each member's matched log index, where this member leads (itself
    /// included); empty on a follower.
    pub members: Vec<MemberProgress>,
    /// The store's fingerprint, so replicas can be compared once they
    /// applied the same index: a partition test (or an operator) checks
    /// they did not diverge. Computing it encodes the whole store.
    pub state_hash: u64,
    /// Leaderships this member saw the group take since it started.
    pub leader_changes: u64,
    /// The group's NOSPACE alarm is raised on this member (see `space`).
    pub no_space: bool,
}

/// How much of a group's log one member has, as its leader tracks it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemberProgress {
    pub member_id: u64,
    /// The last log index known to be on that member; 0 for none yet.
    pub matched_index: u64,
}

/// A member as one shard's groups record it in their membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipEntry {
    pub member: crate::raft::Member,
    /// A voter in at least one of the shard's groups.
    pub voter: bool,
}
