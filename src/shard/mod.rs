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
pub mod forward_batch;
pub mod group;
pub mod layout;
pub mod leader_link;
pub mod lease;
pub mod lease_requests;
pub mod machine;
pub mod membership;
pub mod peer_requests;
pub mod propose;
pub mod quota;
pub mod registry;
pub mod report;
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
        // The members the cluster started with: a member alone has no
        // peer to take a snapshot from. (A cluster grown from one member
        // keeps the stop; one shrunk to one would wait for a leader.)
        repair_snapshots_from_peers: config.cluster.members.len() > 1,
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

    fn wants_idle_work(&self) -> bool {
        self.log.wants_seal()
    }

    fn idle_work(&mut self) -> bool {
        self.log.seal_when_idle()
    }
}

pub use peer_requests::PeerRequests;
#[cfg(any(test, feature = "testing"))]
pub use registry::ThreadShard;
pub use registry::{local, local_stages, set_local, ShardState};
pub use report::{GroupReport, MemberProgress, MembershipEntry, ShardMetrics, ShardReport};

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
    local_stages().read(|above| {
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

/// The metrics of this thread's shard.
pub fn local_metrics() -> Option<ShardMetrics> {
    let state = local()?;
    let (log, below) = state.log.with(|log| (log.stats(), log.stages().clone()));
    let above = local_stages().snapshot();
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
        etcd_direct_calls: above.etcd_direct_calls,
        forwarded_write_calls: above.forwarded_write_calls,
        forwarded_writes: above.forwarded_writes,
    })
}
