//! What the shard's unit tests share: a group running over a memory
//! namespace, on a current-thread runtime with a LocalSet as a reactor runs.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use super::group::ShardGroup;
use super::layout::GroupLayout;
use super::start::start_groups;
use crate::nvme::memory::MemoryNamespace;
use crate::nvme::{Namespace, QueuePairConfig};
use crate::raft::{GroupConfig, Member};
use crate::wal::superblock::{self, FormatOptions};
use crate::wal::{LogOptions, ShardLog, SharedLog};

/// Runs `future` as a shard runs its tasks.
pub fn in_shard<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

/// One shard with one group over a memory namespace, its log ticked as
/// a reactor would.
pub async fn one_group() -> Rc<ShardGroup> {
    one_group_with(|_| {}).await
}

/// [`one_group`] with its layout changed by `change` first.
pub async fn one_group_with(change: impl FnOnce(&mut GroupLayout)) -> Rc<ShardGroup> {
    one_group_and_log_with(change).await.0
}

/// [`one_group_with`], and the shard log its group writes to.
pub async fn one_group_and_log_with(change: impl FnOnce(&mut GroupLayout)) -> (Rc<ShardGroup>, SharedLog) {
    let namespace: Arc<dyn Namespace> = Arc::new(MemoryNamespace::new(512, 1 << 15));
    let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
    let (superblock, _) = superblock::open_or_format(
        queue.as_mut(),
        FormatOptions { shards: 1, groups_per_shard_max: 4, member_id: 0 },
    )
    .expect("format");
    let queue = namespace
        .open_queue_pair(&QueuePairConfig { depth: 64, registered_buffer_bytes: 1 << 20 })
        .expect("queue pair");
    let log = ShardLog::open(queue, superblock.region(0), LogOptions::default()).expect("log");
    let log = SharedLog::new(log, Rc::new(|| {}));
    let ticked = log.clone();
    tokio::task::spawn_local(async move {
        loop {
            if !ticked.tick() {
                ticked.seal_when_idle();
            }
            tokio::task::yield_now().await;
        }
    });
    let member = Member::new(1, "127.0.0.1:1");
    let mut layout = GroupLayout {
        shards: 1,
        groups_per_shard: 1,
        partition_depth: 2,
        member: member.clone(),
        initial_members: vec![member],
        join: false,
        raft: GroupConfig {
            election_timeout_min_ms: 50,
            election_timeout_max_ms: 100,
            heartbeat_ms: 10,
            ..GroupConfig::default()
        },
        watch: Default::default(),
        quota_bytes: crate::config::StoreConfig::default().quota_bytes,
        proposal_queue_bytes_max: crate::config::StoreConfig::default().proposal_queue_bytes_max as usize,
        snapshots: super::snapshots::SnapshotPolicy {
            every_entries: 10_000,
            after_bytes: 1 << 40,
            compact_keep_revisions: 0,
        },
        auth: Default::default(),
    };
    change(&mut layout);
    let groups = start_groups(&layout, 0, log.clone(), Rc::new(super::start::NoPeers))
        .await
        .expect("the group starts");
    let group = groups[&0].clone();
    while group.raft().metrics().current_leader.is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    (group, log)
}

/// Proposes 32 KiB puts under `/fill/` through `entry` (its group's leader)
/// until `log`'s ring is at least `percent` full, as a group out of snapshot
/// space that cannot purge keeps it; then makes `log` this thread's shard
/// log, where `super::space` reads how full it is.
pub async fn fill_ring(entry: &Rc<ShardGroup>, log: &SharedLog, percent: u64) {
    use crate::kv::command::{encode_command, Command};
    use crate::kv::types::PutRequest;
    tracing::info!("fill the ring to {percent}%, as a group that cannot purge does");
    let mut filler = 0;
    while log.with(|log| log.used_percent()) < percent {
        let key = format!("/fill/{filler}").into_bytes();
        let put = Command::Put(PutRequest { key, value: vec![1; 32 << 10], ..PutRequest::default() });
        super::propose::propose(entry.proposing(), encode_command(&put)).await.expect("proposed");
        filler += 1;
        assert!(filler < 10_000, "the ring never filled: {}% used", log.with(|log| log.used_percent()));
    }
    super::registry::set_local(super::registry::ShardState::new(0, 0, log.clone()));
}
