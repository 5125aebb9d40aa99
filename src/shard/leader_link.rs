//! The link a follower's shard asks the leader's member through
//! ([`LeaderLink`]): forwarded writes, read indexes, lease queries and
//! membership changes. The shard does not know how the link travels: the
//! node hands it one that the RPC layer implements (a node without peers
//! has `super::start::NoPeers`). What is asked when is `super::forward`'s.

use futures::future::{join_all, FutureExt, LocalBoxFuture};

use super::lease::{LeaseAnswer, LeaseQuery};
use super::membership::MembershipChange;
use crate::raft::{GroupError, GroupId, Member};

/// Most writes one batch of forwarded writes carries (the leader refuses
/// a longer list): enough to carry a whole round of a busy shard's writes,
/// few enough that one batch never holds up many callers behind its
/// slowest write.
pub const FORWARD_BATCH_WRITES_MAX: usize = 128;
/// Most bytes of commands one batch carries, unless its one write is
/// larger: well under a peer message (16 MiB), with its framing.
pub const FORWARD_BATCH_BYTES_MAX: usize = 4 << 20;

/// Carries a follower's requests to the same shard of the leader's member.
pub trait LeaderLink {
    /// Has `leader` propose `command` to `group`; answers the store's
    /// encoded outcome.
    fn forward_write(
        &self,
        group: GroupId,
        leader: &Member,
        command: Vec<u8>,
    ) -> LocalBoxFuture<'static, Result<Vec<u8>, GroupError>>;

    /// Has `leader` propose each of `writes` (group, command) to its group,
    /// in one exchange where the link can: answers each write's outcome
    /// separately, in the order given. A link without a batch call sends
    /// them one by one, concurrently. Callers keep a batch within
    /// [`FORWARD_BATCH_WRITES_MAX`] writes and [`FORWARD_BATCH_BYTES_MAX`]
    /// bytes of commands (one write may be larger on its own).
    fn forward_writes(
        &self,
        leader: &Member,
        writes: Vec<(GroupId, Vec<u8>)>,
    ) -> LocalBoxFuture<'static, Vec<Result<Vec<u8>, GroupError>>> {
        let sent: Vec<_> =
            writes.into_iter().map(|(group, command)| self.forward_write(group, leader, command)).collect();
        join_all(sent).boxed_local()
    }

    /// Asks `leader` for the read index of `group`.
    fn read_index(&self, group: GroupId, leader: &Member)
        -> LocalBoxFuture<'static, Result<u64, GroupError>>;

    /// Asks `leader` about the leases of `group`.
    fn lease(
        &self,
        group: GroupId,
        leader: &Member,
        query: LeaseQuery,
    ) -> LocalBoxFuture<'static, Result<LeaseAnswer, GroupError>>;

    /// Has `leader` apply a membership change to `group`.
    fn forward_membership(
        &self,
        group: GroupId,
        leader: &Member,
        change: MembershipChange,
    ) -> LocalBoxFuture<'static, Result<(), GroupError>>;
}
