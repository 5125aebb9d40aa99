//! The peer transport a group needs, as a trait: every message is tagged
//! with its group, so one transport (one connection per peer node per shard)
//! carries every group of a shard. The RPC layer implements
//! [`PeerTransport`] over Cap'n Proto; [`LocalRouter`] implements it in
//! process for tests, calling the target's `Raft` directly.
//!
//! This module adapts a transport to openraft's network traits. It must
//! never know how bytes travel (no sockets, no schema types here).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use openraft::error::{
    Fatal, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use super::timeline::Timeline;
use super::types::{GroupId, Member, NodeId, Raft, Snapshot, TypeConfig, Vote};

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

#[derive(Debug, thiserror::Error)]
#[error("group {group}: {target} is not reachable in process (it is stopped or was never added)")]
struct NotRouted {
    group: GroupId,
    target: Member,
}

#[derive(Debug, thiserror::Error)]
#[error("group {group}: {target} stopped while answering")]
struct StoppedWhileAnswering {
    group: GroupId,
    target: Member,
}

/// An in-process transport: a table of the `Raft` of every (member, group)
/// that is up, whose messages are handed straight to the target's `Raft`.
/// A member is "down" while it is not in the table. Clones share the table.
#[derive(Clone, Default)]
pub struct LocalRouter {
    rafts: Rc<RefCell<HashMap<(NodeId, GroupId), Raft>>>,
}

impl LocalRouter {
    pub fn new() -> LocalRouter {
        LocalRouter::default()
    }

    pub fn add(&self, node: NodeId, group: GroupId, raft: Raft) {
        self.rafts.borrow_mut().insert((node, group), raft);
    }

    /// Takes every group of `node` off the table: messages to it fail as
    /// unreachable.
    pub fn remove_node(&self, node: NodeId) {
        self.rafts.borrow_mut().retain(|(member, _), _| *member != node);
    }

    fn route(&self, group: GroupId, target: &Member) -> Result<Raft, Unreachable> {
        // The table is borrowed only to clone the handle: the call itself
        // may reach back into the router.
        let raft = self.rafts.borrow().get(&(target.id, group)).cloned();
        raft.ok_or_else(|| Unreachable::new(&NotRouted { group, target: target.clone() }))
    }

    fn answer<R, E>(
        group: GroupId,
        target: &Member,
        result: Result<R, RaftError<NodeId, E>>,
    ) -> Result<R, RpcError<RaftError<NodeId, E>>>
    where
        E: std::error::Error,
    {
        match result {
            Ok(response) => Ok(response),
            // A stopped target is as good as unreachable: the sender backs
            // off instead of retrying at once.
            Err(RaftError::Fatal(_)) => {
                Err(RPCError::Unreachable(Unreachable::new(&StoppedWhileAnswering {
                    group,
                    target: target.clone(),
                })))
            }
            Err(error) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(target.id, target.clone(), error)))
            }
        }
    }
}

impl PeerTransport for LocalRouter {
    async fn append_entries(
        &self,
        group: GroupId,
        target: &Member,
        request: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendAnswer, RpcError> {
        let raft = self.route(group, target)?;
        let response = LocalRouter::answer(group, target, raft.append_entries(request).await)?;
        Ok(AppendAnswer { response, took: None })
    }

    async fn vote(
        &self,
        group: GroupId,
        target: &Member,
        request: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let raft = self.route(group, target)?;
        LocalRouter::answer(group, target, raft.vote(request).await)
    }

    /// Hands the whole snapshot to the target's `Raft` at once: in process
    /// there is nothing to stream.
    async fn full_snapshot(
        &self,
        group: GroupId,
        target: &Member,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotStreamError> {
        let raft = self.route(group, target)?;
        let installed = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            installed = raft.install_full_snapshot(vote, snapshot) => installed,
        };
        installed.map_err(|_| {
            StreamingError::Unreachable(Unreachable::new(&StoppedWhileAnswering {
                group,
                target: target.clone(),
            }))
        })
    }
}
