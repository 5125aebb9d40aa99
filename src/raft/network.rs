//! The peer transport a group needs, as a trait: every message is tagged
//! with its group, so one transport (one connection per peer node per shard)
//! carries every group of a shard. The RPC layer implements
//! [`PeerTransport`] over Cap'n Proto; `LocalRouter` (cargo feature
//! `testing`) implements it in process for tests, calling the target's
//! `Raft` directly.
//!
//! This module adapts a transport to openraft's network traits. It must
//! never know how bytes travel (no sockets, no schema types here).

use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use openraft::error::{Fatal, RPCError, RaftError, ReplicationClosed, StreamingError};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use super::timeline::Timeline;
use super::types::{GroupId, Member, NodeId, Snapshot, TypeConfig, Vote};

pub type RpcError<E = RaftError<NodeId>> = RPCError<NodeId, Member, E>;
/// How sending a whole snapshot fails: openraft's streaming error, where a
/// peer's own failure is fatal (its group stopped).
pub type SnapshotStreamError = StreamingError<TypeConfig, Fatal<NodeId>>;

/// Sends a group's Raft messages to a peer member and returns its answer.
///
/// An implementation answers `RPCError::Unreachable` when the peer cannot be
/// reached (openraft then backs off before retrying), `RPCError::Network`
/// for a failure worth retrying at once, and `RPCError::RemoteError` with
/// the peer's own `RaftError`. A snapshot goes whole to
/// [`PeerTransport::full_snapshot`]: the transport cuts it up and streams it
/// as it sees fit, and the target installs it with
/// `Raft::install_full_snapshot` once every byte arrived.
// Futures stay on the shard thread: no Send bound on purpose.
#[allow(async_fn_in_trait)]
pub trait PeerTransport: 'static {
    async fn append_entries(
        &self,
        group: GroupId,
        target: &Member,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendAnswer, RpcError>;

    async fn vote(
        &self,
        group: GroupId,
        target: &Member,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError>;

    /// Sends `snapshot` of `group` to `target` as the leader of `vote`, and
    /// returns once the target installed it (or refused it for a newer
    /// vote, which the response carries). Stops with `Closed` as soon as
    /// `cancel` is ready (the leader gave up on this follower). The whole
    /// transfer may take far longer than `option.hard_ttl()`, which bounds
    /// each step of it (a chunk accepted, the install at the end) instead.
    async fn full_snapshot(
        &self,
        group: GroupId,
        target: &Member,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotStreamError>;
}

/// A follower's answer to an AppendEntries, and the time it said it took
/// from taking the call to answering (when its transport tells).
#[derive(Debug, PartialEq, Eq)]
pub struct AppendAnswer {
    pub response: AppendEntriesResponse<NodeId>,
    pub took: Option<Duration>,
}

/// openraft's network factory for one group over a shared transport.
pub struct GroupNetworkFactory<T> {
    group: GroupId,
    transport: Rc<T>,
    unreachable_backoff: Duration,
    timeline: Rc<Timeline>,
}

impl<T: PeerTransport> GroupNetworkFactory<T> {
    /// `unreachable_backoff` is how long replication to a peer that could
    /// not be reached waits before trying again; answered appends are
    /// marked in `timeline`.
    pub fn new(
        group: GroupId,
        transport: Rc<T>,
        unreachable_backoff: Duration,
        timeline: Rc<Timeline>,
    ) -> GroupNetworkFactory<T> {
        GroupNetworkFactory { group, transport, unreachable_backoff, timeline }
    }
}

impl<T: PeerTransport> RaftNetworkFactory<TypeConfig> for GroupNetworkFactory<T> {
    type Network = GroupNetwork<T>;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> GroupNetwork<T> {
        debug_assert_eq!(target, node.id, "a membership names member {} under id {target}", node.id);
        GroupNetwork {
            group: self.group,
            target: node.clone(),
            transport: self.transport.clone(),
            unreachable_backoff: self.unreachable_backoff,
            timeline: self.timeline.clone(),
        }
    }
}

/// openraft's connection from one group to one peer member.
pub struct GroupNetwork<T> {
    group: GroupId,
    target: Member,
    transport: Rc<T>,
    unreachable_backoff: Duration,
    timeline: Rc<Timeline>,
}

impl<T: PeerTransport> RaftNetwork<TypeConfig> for GroupNetwork<T> {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let carried = request.entries.first().zip(request.entries.last());
        let carried = carried.map(|(first, last)| (first.log_id.index, last.log_id.index));
        let sent = carried.map(|_| Instant::now());
        let answer = self.transport.append_entries(self.group, &self.target, request, option).await?;
        if let (Some((first, last)), Some(sent), Some(took), AppendEntriesResponse::Success) =
            (carried, sent, answer.took, &answer.response)
        {
            self.timeline.acknowledged(first, last, sent, Instant::now(), took);
        }
        Ok(answer.response)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotStreamError> {
        self.transport.full_snapshot(self.group, &self.target, vote, snapshot, cancel, option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        self.transport.vote(self.group, &self.target, request, option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.unreachable_backoff))
    }
}
