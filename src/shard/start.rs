//! How a shard starts the groups it owns: in the background, reporting once
//! each has a leader, then starting the shard's background tasks (lease
//! expiry, leader spread, quota, snapshots). Also the transport of a node
//! without peers ([`NoPeers`]).

use std::collections::BTreeMap;
use std::rc::Rc;

use super::group::ShardGroup;
use super::layout::GroupLayout;
use super::leader_link::LeaderLink;
use super::registry::{local_stages, set_local_groups, ShardGroups};
use crate::raft::network::{RpcError, SnapshotStreamError};
use crate::raft::{GroupError, GroupId, Member, NodeId, PeerTransport, TypeConfig, WalSnapshotStore};
use crate::wal::SharedLog;

/// Starts every group `shard` owns over its log, talking to peers through
/// `transport`, and bootstraps them when they are new.
pub async fn start_groups<T: PeerTransport>(
    layout: &GroupLayout,
    shard: usize,
    log: SharedLog,
    transport: Rc<T>,
) -> Result<BTreeMap<GroupId, Rc<ShardGroup>>, GroupError> {
    let snapshots = Rc::new(WalSnapshotStore::new(log.clone()));
    let stages = local_stages();
    let mut groups = BTreeMap::new();
    for group in (0..layout.groups()).filter(|group| layout.shard_of(*group) == shard) {
        let started = ShardGroup::start(
            layout,
            group,
            log.clone(),
            snapshots.clone(),
            transport.clone(),
            stages.clone(),
        )
        .await?;
        groups.insert(group, Rc::new(started));
    }
    Ok(groups)
}

/// Starts this shard's groups in the background (they need the reactor
/// running), with `transport` for Raft and `leaders` for requests another
/// member leads, and reports on `ready` once each has a leader, or why not.
pub fn spawn_groups<T: PeerTransport>(
    layout: GroupLayout,
    shard: usize,
    log: SharedLog,
    transport: Rc<T>,
    leaders: Rc<dyn LeaderLink>,
    ready: crossbeam_channel::Sender<Result<usize, String>>,
) {
    let shard_groups = Rc::new(ShardGroups::new(layout.clone(), leaders));
    set_local_groups(shard_groups.clone());
    tokio::task::spawn_local(async move {
        let snapshot_log = log.clone();
        let started = match start_groups(&layout, shard, log, transport).await {
            Ok(started) => started,
            Err(error) => {
                let _ = ready.send(Err(format!("shard {shard}: {error}")));
                return;
            }
        };
        let mut handles: Vec<Rc<ShardGroup>> = started.values().cloned().collect();
        let first_group = started.get(&0).cloned();
        shard_groups.set_started(started);
        super::lease_requests::spawn_expiry(shard_groups.clone());
        super::spread::spawn_spread(shard_groups.clone());
        super::quota::spawn_quota(shard_groups.clone());
        if layout.raft.snapshot_on_demand {
            super::snapshots::spawn_snapshots(shard_groups.clone(), snapshot_log);
        }
        // A node says it is ready once it can answer: every group has a leader.
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        // A joining member's groups have no members yet, and no leader
        // until the cluster adds this member.
        handles.retain(|group| group.raft().has_state());
        while handles.iter().any(|group| group.raft().metrics().current_leader.is_none()) {
            if tokio::time::Instant::now() >= deadline {
                let waiting: Vec<GroupId> = handles
                    .iter()
                    .filter(|group| group.raft().metrics().current_leader.is_none())
                    .map(|group| group.raft().group())
                    .collect();
                tracing::warn!(shard, ?waiting, "groups still have no leader; serving anyway");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let _ = ready.send(Ok(shard));
        if let Some(first_group) = first_group {
            super::membership::report_config_against_cluster(&layout, first_group.raft());
        }
    });
}

/// How long a starting shard waits for its groups to elect leaders before
/// it says it serves anyway.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The peer transport of a node that has no peers: one member per group,
/// as the embedded default runs. Every peer is unreachable. (The cluster
/// brings the Cap'n Proto transport.)
pub struct NoPeers;

fn unreachable(target: &Member) -> openraft::error::Unreachable {
    openraft::error::Unreachable::new(&openraft::AnyError::error(format!(
        "member {} at {} is not reachable: this node runs without peers",
        target.id, target.peer_address
    )))
}

impl PeerTransport for NoPeers {
    async fn append_entries(
        &self,
        _: GroupId,
        target: &Member,
        _: openraft::raft::AppendEntriesRequest<TypeConfig>,
        _: openraft::network::RPCOption,
    ) -> Result<crate::raft::AppendAnswer, RpcError> {
        Err(openraft::error::RPCError::Unreachable(unreachable(target)))
    }

    async fn vote(
        &self,
        _: GroupId,
        target: &Member,
        _: openraft::raft::VoteRequest<NodeId>,
        _: openraft::network::RPCOption,
    ) -> Result<openraft::raft::VoteResponse<NodeId>, RpcError> {
        Err(openraft::error::RPCError::Unreachable(unreachable(target)))
    }

    async fn full_snapshot(
        &self,
        _: GroupId,
        target: &Member,
        _: crate::raft::types::Vote,
        _: crate::raft::types::Snapshot,
        _: impl std::future::Future<Output = openraft::error::ReplicationClosed> + 'static,
        _: openraft::network::RPCOption,
    ) -> Result<openraft::raft::SnapshotResponse<NodeId>, SnapshotStreamError> {
        Err(openraft::error::StreamingError::Unreachable(unreachable(target)))
    }
}

/// Without peers this member leads every group, so nothing is forwarded;
/// a leader elsewhere is unreachable.
impl LeaderLink for NoPeers {
    fn forward_write(
        &self,
        group: GroupId,
        leader: &Member,
        _: Vec<u8>,
    ) -> futures::future::LocalBoxFuture<'static, Result<Vec<u8>, GroupError>> {
        let error = no_peer(group, leader);
        Box::pin(async move { Err(error) })
    }

    fn read_index(
        &self,
        group: GroupId,
        leader: &Member,
    ) -> futures::future::LocalBoxFuture<'static, Result<u64, GroupError>> {
        let error = no_peer(group, leader);
        Box::pin(async move { Err(error) })
    }

    fn lease(
        &self,
        group: GroupId,
        leader: &Member,
        _: super::lease::LeaseQuery,
    ) -> futures::future::LocalBoxFuture<'static, Result<super::lease::LeaseAnswer, GroupError>> {
        let error = no_peer(group, leader);
        Box::pin(async move { Err(error) })
    }

    fn forward_membership(
        &self,
        group: GroupId,
        leader: &Member,
        _: super::membership::MembershipChange,
    ) -> futures::future::LocalBoxFuture<'static, Result<(), GroupError>> {
        let error = no_peer(group, leader);
        Box::pin(async move { Err(error) })
    }
}

fn no_peer(group: GroupId, leader: &Member) -> GroupError {
    GroupError::Unavailable { group, member: leader.id, reason: unreachable(leader).to_string() }
}
