//! An in-process [`PeerTransport`] for tests: a table of the peer gate of
//! every (member, group) that is up, whose messages are handed straight to
//! the target's gate (`RaftGroup::peer_gate`), as the peer server does. Test tool only (cargo feature `testing`): a real node
//! reaches its peers through the RPC layer's transport.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use openraft::error::{RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest, VoteResponse};

use super::network::{AppendAnswer, PeerTransport, RpcError, SnapshotStreamError};
use super::peer_gate::PeerGate;
use super::types::{GroupId, Member, NodeId, Snapshot, TypeConfig, Vote};

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

/// An in-process transport: a table of the peer gate of every (member,
/// group) that is up, whose messages are handed straight to the target's.
/// A member is "down" while it is not in the table. Clones share the table.
/// The gate of every (member, group) that is up.
type Gates = HashMap<(NodeId, GroupId), Rc<PeerGate>>;

#[derive(Clone, Default)]
pub struct LocalRouter {
    gates: Rc<RefCell<Gates>>,
}

impl LocalRouter {
    pub fn new() -> LocalRouter {
        LocalRouter::default()
    }

    /// Routes messages for `group` on `node` through `gate`, as the peer
    /// server of a real member does (`RaftGroup::peer_gate`).
    pub fn add(&self, node: NodeId, group: GroupId, gate: Rc<PeerGate>) {
        self.gates.borrow_mut().insert((node, group), gate);
    }

    /// Takes every group of `node` off the table: messages to it fail as
    /// unreachable.
    pub fn remove_node(&self, node: NodeId) {
        self.gates.borrow_mut().retain(|(member, _), _| *member != node);
    }

    fn route(&self, group: GroupId, target: &Member) -> Result<Rc<PeerGate>, Unreachable> {
        // The table is borrowed only to clone the handle: the call itself
        // may reach back into the router.
        let raft = self.gates.borrow().get(&(target.id, group)).cloned();
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
            installed = raft.raft().install_full_snapshot(vote, snapshot) => installed,
        };
        installed.map_err(|_| {
            StreamingError::Unreachable(Unreachable::new(&StoppedWhileAnswering {
                group,
                target: target.clone(),
            }))
        })
    }
}
