//! The shard's request handle ([`Requests`]): the calls the RPC layer
//! makes, routed to the shard that owns the key's group (through its
//! mailbox when that is another shard) and answered where they came from,
//! and the errors they answer with. Only plain data (requests, encoded
//! commands and answers) crosses between shards.
//!
//! The handle's other calls sit in the files of their concern, above this
//! one (`super::lease_requests`, `super::credentials`, `super::backup`):
//! nothing below the registry extends the handle.

use std::rc::Rc;

use super::answer::{Answered, RequestError};
use super::auth::Caller;
use super::group::ShardGroup;
use super::layout::GroupLayout;
use super::membership::MembershipChange;
use super::registry::{group_entry, group_on, local_stages, on_shard, this_thread_groups, ShardGroups};
use crate::kv::auth::Need;
use crate::kv::command::{decode_outcome, encode_stamped_command, Command, CommandOutcome, CommandResponse};
use crate::kv::partition::{GroupSet, Partitioner};
use crate::kv::types::{
    DeleteRangeRequest, DeleteRangeResponse, KvError, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse,
};
use crate::raft::{GroupError, GroupId, NodeId};
use crate::reactor::ReactorContext;

/// How often a membership change is retried on a group whose leader moved
/// under it.
const LEADER_ATTEMPTS: usize = 3;

pub(super) fn answered<T>(entry: &ShardGroup, group: GroupId, response: T) -> Answered<T> {
    let (_, term) = entry.raft().leadership();
    Answered { group, term, member: entry.raft().member(), response }
}

/// Proposes `command` to `group` (on this shard) and waits for its outcome.
pub(super) async fn write_here(
    groups: Rc<ShardGroups>,
    group: GroupId,
    command: Vec<u8>,
) -> Result<Answered<CommandResponse>, RequestError> {
    // The map is not borrowed across the wait: other requests on this shard
    // reach their groups meanwhile.
    let entry = group_on(&groups, group)?;
    let bytes = super::forward::write(entry.clone(), groups.leaders(), command).await?;
    let outcome: CommandOutcome =
        decode_outcome(&bytes).map_err(|error| RequestError::Codec(error.to_string()))?;
    Ok(answered(&entry, group, outcome?))
}

/// Reads a range of `group` (on this shard) for `caller`: after a read
/// barrier when `linearizable`, else from this member's store as it is.
async fn range_here(
    groups: Rc<ShardGroups>,
    group: GroupId,
    request: RangeRequest,
    linearizable: bool,
    caller: Caller,
) -> Result<Answered<RangeResponse>, RequestError> {
    groups.layout().auth.authorize(&caller, || {
        vec![Need::Read { key: request.key.clone(), range_end: request.range_end.clone() }]
    })?;
    let entry = group_on(&groups, group)?;
    if linearizable {
        super::forward::linearizable(entry.clone(), groups.leaders()).await?;
    }
    let response = entry.machine().borrow().state.store.range(&request)?;
    Ok(answered(&entry, group, response))
}

/// Applies `change` to `group` (on this shard) through its leader.
async fn change_here(
    groups: Rc<ShardGroups>,
    group: GroupId,
    change: MembershipChange,
) -> Result<(), RequestError> {
    let entry = group_entry(&groups, group)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let leader = entry.raft().wait_for_leader().await?;
        let outcome = if leader.id == entry.raft().member() {
            entry.change_as_leader(change.clone()).await
        } else {
            groups.leaders().forward_membership(group, &leader, change.clone()).await
        };
        match outcome {
            Err(GroupError::NotLeader { .. }) if attempt < LEADER_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            outcome => return Ok(outcome?),
        }
    }
}

/// The request handle of a shard: what the RPC layer calls. Each call runs
/// on the shard that owns the key's group and answers here.
#[derive(Clone)]
pub struct Requests {
    pub(super) context: ReactorContext,
    /// Shared: a handle is cloned per caller (`with_caller`), per request.
    pub(super) layout: Rc<GroupLayout>,
    partitioner: Rc<Partitioner>,
    /// Who the requests come from (see `super::auth`): anonymous until a
    /// front end says otherwise.
    pub(super) caller: Caller,
}

impl Requests {
    pub fn new(context: ReactorContext, layout: GroupLayout) -> Requests {
        let partitioner = Rc::new(layout.partitioner());
        Requests { context, layout: Rc::new(layout), partitioner, caller: Caller::Anonymous }
    }

    pub fn member(&self) -> NodeId {
        self.layout.member.id
    }

    pub(super) async fn write(
        &self,
        group: GroupId,
        command: Command,
    ) -> Result<Answered<CommandResponse>, RequestError> {
        let started = std::time::Instant::now();
        let stamp = revision_stamp();
        let shard = self.layout.shard_of(group);
        let caller = self.caller.clone();
        let answer = on_shard(&self.context, shard, move |groups| {
            // Checked where it is served, against this member's users.
            let checked = groups.layout().auth.authorize(&caller, || super::auth::command_needs(&command));
            let bytes = encode_stamped_command(&command, stamp);
            async move {
                checked?;
                write_here(groups, group, bytes).await
            }
        })
        .await;
        local_stages().record_since(started, |stages| &mut stages.end_to_end);
        answer
    }

    pub async fn put(&self, request: PutRequest) -> Result<Answered<PutResponse>, RequestError> {
        let group = self.partitioner.group_of(&request.key);
        let answer = self.write(group, Command::Put(request)).await?;
        match answer.response {
            CommandResponse::Put(response) => {
                Ok(Answered { group: answer.group, term: answer.term, member: answer.member, response })
            }
            other => Err(RequestError::Codec(format!("a put was answered with {other:?}"))),
        }
    }

    /// Deletes a range. A range that spans groups is deleted group by group
    /// (not at one revision); the answer's header is the last group's.
    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<Answered<DeleteRangeResponse>, RequestError> {
        let groups = self.groups_of(&request.key, &request.range_end);
        let mut total: Option<Answered<DeleteRangeResponse>> = None;
        for group in groups {
            let answer = self.write(group, Command::DeleteRange(request.clone())).await?;
            let CommandResponse::DeleteRange(response) = answer.response else {
                return Err(RequestError::Codec("a delete was answered with another kind".into()));
            };
            total = Some(match total {
                None => Answered { group: answer.group, term: answer.term, member: answer.member, response },
                Some(mut sum) => {
                    sum.response.deleted += response.deleted;
                    sum.response.prev_kvs.extend(response.prev_kvs);
                    sum.response.revision = response.revision;
                    sum.group = answer.group;
                    sum.term = answer.term;
                    sum
                }
            });
        }
        Ok(total.expect("a range selects at least one group"))
    }

    /// Reads a range. A range within one group is one consistent read; one
    /// that spans groups is read group by group and merged in key order (not
    /// one snapshot: each group at its own revision).
    pub async fn range(
        &self,
        request: RangeRequest,
        linearizable: bool,
    ) -> Result<Answered<RangeResponse>, RequestError> {
        let groups = self.groups_of(&request.key, &request.range_end);
        if groups.len() == 1 {
            let group = groups[0];
            let shard = self.layout.shard_of(group);
            let caller = self.caller.clone();
            return on_shard(&self.context, shard, move |shard_groups| {
                range_here(shard_groups, group, request, linearizable, caller)
            })
            .await;
        }
        // Each group returns up to the limit; the merge keeps the first ones.
        let mut merged: Option<Answered<RangeResponse>> = None;
        for group in groups {
            let shard = self.layout.shard_of(group);
            let part = request.clone();
            let caller = self.caller.clone();
            let answer = match on_shard(&self.context, shard, move |shard_groups| {
                range_here(shard_groups, group, part, linearizable, caller)
            })
            .await
            {
                // A revision another group made, beyond this group's last
                // write: this group held then what it holds now (hybrid
                // revisions compare as times; see `kv::store`).
                Err(RequestError::Kv(KvError::FutureRevision { current, .. }))
                    if crate::kv::revision::revision_group(request.revision) != group =>
                {
                    let part = RangeRequest { revision: current, ..request.clone() };
                    let caller = self.caller.clone();
                    on_shard(&self.context, shard, move |shard_groups| {
                        range_here(shard_groups, group, part, linearizable, caller)
                    })
                    .await?
                }
                answer => answer?,
            };
            merged = Some(match merged {
                None => answer,
                Some(mut sum) => {
                    sum.response.kvs.extend(answer.response.kvs);
                    sum.response.count += answer.response.count;
                    sum.response.more |= answer.response.more;
                    sum.response.revision = sum.response.revision.max(answer.response.revision);
                    sum
                }
            });
        }
        let mut answer = merged.expect("a range selects at least one group");
        answer.response.kvs.sort_by(|left, right| left.key.cmp(&right.key));
        if request.limit > 0 && answer.response.kvs.len() > request.limit as usize {
            answer.response.kvs.truncate(request.limit as usize);
            answer.response.more = true;
        }
        Ok(answer)
    }

    /// Runs a transaction in the one group all its keys belong to.
    pub async fn txn(&self, request: TxnRequest) -> Result<Answered<TxnResponse>, RequestError> {
        let mut groups = std::collections::BTreeSet::new();
        collect_txn_groups(self, &request, &mut groups);
        if groups.len() != 1 {
            return Err(RequestError::TxnSpansGroups { groups: groups.into_iter().collect() });
        }
        let group = *groups.first().expect("one group");
        let answer = self.write(group, Command::Txn(request)).await?;
        match answer.response {
            CommandResponse::Txn(response) => {
                Ok(Answered { group: answer.group, term: answer.term, member: answer.member, response })
            }
            other => Err(RequestError::Codec(format!("a txn was answered with {other:?}"))),
        }
    }

    /// Forgets the history of `group` below `revision`.
    pub async fn compact(&self, group: GroupId, revision: i64) -> Result<Answered<i64>, RequestError> {
        if group >= self.layout.groups() {
            return Err(RequestError::NoSuchGroup { group, last: self.layout.groups() - 1 });
        }
        let answer = self.write(group, Command::Compact { revision }).await?;
        match answer.response {
            CommandResponse::Compact { revision } => Ok(Answered {
                group: answer.group,
                term: answer.term,
                member: answer.member,
                response: revision,
            }),
            other => Err(RequestError::Codec(format!("a compaction was answered with {other:?}"))),
        }
    }

    /// Opens a watch in every group its range maps to, each on the shard
    /// that owns the group (see `super::watch`); every write a group applies
    /// after this returns reaches the feed, its events counted against
    /// `budget` (the caller's connection's).
    pub async fn watch(
        &self,
        request: crate::kv::watch::WatchRequest,
        options: super::watch::WatchOptions,
        budget: super::watch::WatchBudget,
    ) -> Result<super::watch::WatchFeed, RequestError> {
        let (sender, mut feed) = super::watch::feed(&options, budget);
        for group in self.groups_of(&request.key, &request.range_end) {
            let (request, sender, caller) = (request.clone(), sender.clone(), self.caller.clone());
            let revision = on_shard(&self.context, self.layout.shard_of(group), move |groups| async move {
                // The whole range, in every group it reaches.
                groups.layout().auth.authorize(&caller, || {
                    vec![Need::Read { key: request.key.clone(), range_end: request.range_end.clone() }]
                })?;
                Ok(super::watch::open_here(group_on(&groups, group)?, request, options, sender)?)
            })
            .await?;
            feed.started_after = feed.started_after.max(revision);
        }
        Ok(feed)
    }

    /// Applies `change` to every group of the cluster, in group order;
    /// returns how many groups there are. Stops at the first group that
    /// refuses, naming it: the groups before it changed, and running the
    /// same change again finishes the rest.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<u32, RequestError> {
        for group in 0..self.layout.groups() {
            let (change, caller) = (change.clone(), self.caller.clone());
            on_shard(&self.context, self.layout.shard_of(group), move |groups| async move {
                groups.layout().auth.require_root(&caller, "membership changes")?;
                change_here(groups, group, change).await
            })
            .await?;
        }
        Ok(self.layout.groups())
    }

    /// The groups a range (etcd's convention) reaches, in group order.
    pub fn groups_of_range(&self, key: &[u8], range_end: &[u8]) -> Vec<GroupId> {
        self.groups_of(key, range_end)
    }

    fn groups_of(&self, key: &[u8], range_end: &[u8]) -> Vec<GroupId> {
        match self.partitioner.groups_for_range(key, range_end) {
            GroupSet::One(group) => vec![group],
            GroupSet::All => (0..self.layout.groups()).collect(),
        }
    }
}

/// The stamp of a write made now: what its hybrid revision is taken from
/// (see `kv::store`, "Hybrid revisions"). The wall clock of the member the
/// request reached; a clock before 2025 stamps 0 (the next revision).
pub fn revision_stamp() -> u64 {
    let unix_micros = u64::try_from(crate::clock::unix_nanos() / 1000).unwrap_or(u64::MAX);
    crate::kv::revision::revision_time(unix_micros)
}

/// The request handle of this thread's shard, once its groups exist.
pub fn local_requests(context: &ReactorContext) -> Option<Requests> {
    let groups = this_thread_groups()?;
    Some(Requests::new(context.clone(), groups.layout().clone()))
}

/// Every group a transaction's compares and operations reach, nested
/// transactions included.
fn collect_txn_groups(
    requests: &Requests,
    request: &TxnRequest,
    groups: &mut std::collections::BTreeSet<GroupId>,
) {
    for compare in &request.compares {
        groups.extend(requests.groups_of(&compare.key, &compare.range_end));
    }
    for operation in request.success.iter().chain(&request.failure) {
        match operation {
            RequestOp::Range(range) => groups.extend(requests.groups_of(&range.key, &range.range_end)),
            RequestOp::Put(put) => groups.extend(requests.groups_of(&put.key, &[])),
            RequestOp::DeleteRange(delete) => {
                groups.extend(requests.groups_of(&delete.key, &delete.range_end))
            }
            RequestOp::Txn(nested) => collect_txn_groups(requests, nested, groups),
        }
    }
}
