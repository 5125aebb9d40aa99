//! The shard's handle for the peer server ([`PeerRequests`]): what another
//! member asks of a group this shard runs. Raft's own messages (appends,
//! votes, snapshots) and the requests a follower forwards to its leader
//! (writes, read indexes, leases, membership changes). The RPC layer
//! reaches a group only through this handle: it decodes a message, calls
//! one method, and encodes the answer; it never sees the group itself.

use std::rc::Rc;

use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use super::group::ShardGroup;
use super::lease::{LeaseAnswer, LeaseQuery};
use super::membership::MembershipChange;
use crate::raft::types::{SnapshotMeta, Vote};
use crate::raft::{GroupError, GroupId, GroupMetrics, NodeId, Reception, SnapshotReceiveError, TypeConfig};

/// One group of this thread's shard, as peers reach it.
#[derive(Clone)]
pub struct PeerRequests {
    entry: Rc<ShardGroup>,
}

impl PeerRequests {
    /// Group `group` as this thread's shard runs it; `None` when the shard
    /// does not run it or its groups are still starting.
    pub fn local(group: GroupId) -> Option<PeerRequests> {
        super::registry::local_group(group).map(|entry| PeerRequests { entry })
    }

    /// Takes an append-entries message a peer sent this group, or refuses
    /// it before Raft sees it (the outer `Err`, which the leader takes as a
    /// failed call and sends again) while its entries do not fit this
    /// shard's ring. Raft waits inside the group for an append to be
    /// durable before it does anything else, snapshots and purges included;
    /// an append waiting there for ring space that only this group's purge
    /// can free would wait for ever. Refused, the group stays free to
    /// snapshot and purge, and the leader's next try fits.
    ///
    /// A refused append still counts as word from the leader: the group
    /// takes it without its entries, as the heartbeat it would be (the
    /// leader's vote, where its log matches, its commit), so its election
    /// timer does not run out while the leader sends it again. Otherwise a
    /// follower with a full ring started elections, each a vote record in
    /// the ring's reserve, until not even a vote fitted. The leader is told
    /// only that the call failed: nothing it counts changes.
    pub async fn handle_append_entries(
        &self,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>, String> {
        if let Some(refusal) = ring_refusal(self.entry.raft().group(), &request) {
            let heartbeat = AppendEntriesRequest {
                vote: request.vote,
                prev_log_id: request.prev_log_id,
                leader_commit: request.leader_commit,
                entries: Vec::new(),
            };
            let _ = self.entry.raft().handle_append_entries(heartbeat).await;
            return Err(refusal);
        }
        Ok(self.entry.raft().handle_append_entries(request).await)
    }

    /// The index of a committed membership that leaves `candidate` out,
    /// when it asks for a vote after missing its own removal.
    pub fn removal_proof(&self, candidate: NodeId) -> Option<u64> {
        self.entry.raft().removal_proof(candidate)
    }

    pub async fn handle_vote(
        &self,
        request: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.entry.raft().handle_vote(request).await
    }

    /// Takes a voter's answer to this member's vote request in `group`:
    /// `index`, the removal proof `peer` answered with (0: none), makes the
    /// group refuse client requests on this thread's shard from now on (see
    /// [`PeerRequests::removed_by_peer`]).
    pub fn removal_proven(group: GroupId, index: u64, peer: NodeId) {
        if let (index @ 1.., Some(entry)) = (index, PeerRequests::local(group)) {
            entry.removed_by_peer(index, peer);
        }
    }

    /// Starts taking a snapshot of `bytes` from the leader.
    pub fn receive_snapshot(
        &self,
        meta: SnapshotMeta,
        bytes: u64,
    ) -> Result<Reception, SnapshotReceiveError> {
        self.entry.raft().receive_snapshot(meta, bytes)
    }

    /// Installs a snapshot whose every chunk arrived.
    pub async fn install_received_snapshot(
        &self,
        reception: &Reception,
        vote: Vote,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotReceiveError> {
        self.entry.raft().install_received_snapshot(reception, vote).await
    }

    /// A write a follower forwarded, proposed here as the leader.
    pub async fn write_as_leader(&self, command: Vec<u8>) -> Result<Vec<u8>, GroupError> {
        super::forward::write_as_leader(self.entry.clone(), command).await
    }

    /// The read index a follower asks for before a linearizable read.
    pub async fn read_index(&self) -> Result<u64, GroupError> {
        self.entry.raft().read_index().await
    }

    /// A lease request a follower forwarded, served here as the leader.
    pub async fn lease_as_leader(&self, query: LeaseQuery) -> Result<LeaseAnswer, GroupError> {
        self.entry.lease_as_leader(query).await
    }

    /// A membership change a member forwarded, made here as the leader.
    pub async fn change_as_leader(&self, change: MembershipChange) -> Result<(), GroupError> {
        self.entry.change_as_leader(change).await
    }

    /// Notes that `peer` proved this member was removed from the group at
    /// log index `index` (its answer to this member's vote request).
    pub fn removed_by_peer(&self, index: u64, peer: NodeId) {
        self.entry.removed_by_peer(index, peer)
    }

    /// The group's Raft metrics as this member sees them.
    pub fn metrics(&self) -> GroupMetrics {
        self.entry.raft().metrics()
    }

    /// The fingerprint of the group's store on this member
    /// (`kv::snapshot::state_hash`): replicas that applied the same index
    /// hash alike.
    pub fn state_hash(&self) -> u64 {
        crate::kv::snapshot::state_hash(&self.entry.machine().borrow().state.store)
    }
}

/// Why this shard's ring cannot take the entries of `request` now, if it
/// cannot (see [`PeerRequests::handle_append_entries`]). The common case,
/// a ring less than half full, reads two numbers.
fn ring_refusal(group: GroupId, request: &AppendEntriesRequest<TypeConfig>) -> Option<String> {
    if request.entries.is_empty() {
        return None;
    }
    let shard = super::registry::local()?;
    shard.log.with(|log| {
        let (used_bytes, ring_bytes) = log.ring_use();
        if used_bytes.saturating_mul(2) < ring_bytes {
            return None;
        }
        // Only an append whose first entry does not fit is refused: a batch
        // that fits in part is taken, and its rest waits for the room that
        // applying and purging its first entries makes (a leader sends the
        // same batch again after a refusal, so refusing every batch larger
        // than the room left would refuse a follower that could catch up
        // entry by entry).
        let first = request.entries.first()?;
        let needed = log.entry_record_bytes(crate::raft::log_store::encoded_entry_bytes(first));
        let room = log.entry_room_bytes();
        (needed > room).then(|| {
            format!(
                "group {group}: this member's shard log ring has room for {room} bytes of entries and the first \
                 entry of the append needs {needed}; refused until a snapshot and a purge free space, so the \
                 leader sends it again"
            )
        })
    })
}
