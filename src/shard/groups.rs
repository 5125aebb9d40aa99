//! The Raft groups of one shard, each replicating one partition of the
//! key-value store, and the shard's request handle: the calls the RPC
//! layer makes, routed to the shard that owns the key's group (through its
//! mailbox when that is another shard) and answered where they came from.
//!
//! Group g lives on shard `g mod shards` on every node. Everything here runs
//! on reactor threads; only plain data (requests, encoded commands and
//! answers) crosses between shards.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use super::auth::{AuthCell, Caller};
use crate::kv::auth::Need;
use crate::kv::command::{decode_outcome, encode_stamped_command, Command, CommandOutcome, CommandResponse};
use crate::kv::group::GroupState;
use crate::kv::partition::{GroupSet, Partitioner};
use crate::kv::types::{
    DeleteRangeRequest, DeleteRangeResponse, KvError, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse,
};
use crate::kv::watch::WatchLimits;
use crate::raft::network::{RpcError, SnapshotStreamError};
use crate::raft::{
    GroupConfig, GroupError, GroupId, GroupStateMachine, Member, NodeId, PeerTransport, RaftGroup,
    TypeConfig, WalSnapshotStore,
};
use crate::reactor::ReactorContext;
use crate::wal::SharedLog;

/// The store of one group as its Raft state machine.
pub struct KvMachine {
    group: GroupId,
    pub state: GroupState,
    /// Group 0's: where the users and roles it applies are published for
    /// every shard of this member (see `super::auth`).
    auth: Option<Arc<AuthCell>>,
    /// Where each entry is marked applied, once the group runs.
    timeline: Option<Rc<crate::raft::Timeline>>,
}

impl KvMachine {
    fn publish_auth(&self) {
        if let Some(cell) = &self.auth {
            let state = self.state.store.auth();
            // Every change raises the revision, which a group's history
            // never lowers.
            if cell.with(|view| view.state.revision() != state.revision()) {
                cell.publish(state);
            }
        }
    }
}

impl GroupStateMachine for KvMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let started = std::time::Instant::now();
        match self.state.apply_command(command) {
            Ok(outcome) => {
                let finished = std::time::Instant::now();
                super::stages::record(|stages| stages.apply.record(finished - started));
                if let Some(timeline) = &self.timeline {
                    timeline.applied(index, started, finished);
                }
                self.publish_auth();
                outcome
            }
            // Every replica applies the same entry: skipping it here would
            // fork this replica's state from the others'. Stop instead.
            Err(error) => panic!(
                "group {} cannot apply entry {index}: {error}; this nvkv cannot serve this log, upgrade it",
                self.group
            ),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.state.restore(snapshot).map_err(|error| error.to_string())?;
        self.publish_auth();
        Ok(())
    }
}

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
impl super::forward::LeaderLink for NoPeers {
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

/// One group as this shard runs it.
pub struct ShardGroup {
    pub raft: RaftGroup,
    pub machine: Rc<RefCell<KvMachine>>,
    /// Client writes on their way into `raft`, batched.
    pub proposer: super::propose::Proposer,
    /// Linearizable reads waiting for a shared read barrier.
    pub barrier: super::barrier::ReadBarrier,
    /// When its leases expire, kept while this member leads the group.
    pub leases: RefCell<super::lease::LeaseDeadlines>,
    /// Whether the refusal of a removed member was logged already: once
    /// is enough.
    pub removal_logged: std::cell::Cell<bool>,
    /// The index of a committed membership that leaves this member out, as
    /// a peer proved it (`RaftGroup::removal_proof`) when this member asked
    /// for its vote after missing its own removal. Kept in memory only: after
    /// a restart the next vote it asks for proves it again.
    pub removed_at: std::cell::Cell<Option<u64>>,
    /// The NOSPACE alarm of the group on this member (see `super::space`).
    pub no_space: std::cell::Cell<Option<super::space::NoSpace>>,
    /// The quota alarm of the group on this member (see `super::space`).
    pub over_quota: std::cell::Cell<Option<super::space::OverQuota>>,
}

impl ShardGroup {
    /// Whether the group refuses writes that add data here (NOSPACE).
    pub fn alarmed(&self) -> bool {
        self.no_space.get().is_some() || self.over_quota.get().is_some()
    }
}

/// How the groups of a node are laid out and run.
#[derive(Clone, Debug)]
pub struct GroupLayout {
    pub shards: usize,
    pub groups_per_shard: u32,
    pub partition_depth: usize,
    pub member: Member,
    /// The members that form every group at bootstrap.
    pub initial_members: Vec<Member>,
    /// Join mode: the groups are never bootstrapped here; they wait until
    /// the cluster's leaders add this member (`nvkv member add`).
    pub join: bool,
    pub raft: GroupConfig,
    pub watch: WatchLimits,
    /// The bytes a group's store may take (its snapshot's encoding) before
    /// it raises its NOSPACE alarm (`store.quota_bytes`).
    pub quota_bytes: u64,
    /// The bytes of client writes one group's proposal queue may hold
    /// (`store.proposal_queue_bytes_max`); past it writes wait for room.
    pub proposal_queue_bytes_max: usize,
    /// When groups snapshot, purge and compact (see `super::snapshots`).
    pub snapshots: super::snapshots::SnapshotPolicy,
    /// The users and roles every shard of this member checks requests
    /// against, as group 0 publishes them.
    pub auth: Arc<AuthCell>,
}

impl GroupLayout {
    pub fn groups(&self) -> u32 {
        self.shards as u32 * self.groups_per_shard
    }

    /// The key-to-group function of this layout. The config checks
    /// groups and depth are positive, so this cannot fail on a served node.
    pub fn partitioner(&self) -> Partitioner {
        Partitioner::new(self.groups(), self.partition_depth.max(1))
            .expect("a layout has at least one group and a positive depth")
    }

    pub fn shard_of(&self, group: GroupId) -> usize {
        group as usize % self.shards
    }
}

/// Starts every group `shard` owns over its log, talking to peers through
/// `transport`, and bootstraps them when they are new.
pub async fn start_groups<T: PeerTransport>(
    layout: &GroupLayout,
    shard: usize,
    log: SharedLog,
    transport: Rc<T>,
) -> Result<BTreeMap<GroupId, Rc<ShardGroup>>, GroupError> {
    let snapshots = Rc::new(WalSnapshotStore::new(log.clone()));
    let mut groups = BTreeMap::new();
    for group in (0..layout.groups()).filter(|group| layout.shard_of(*group) == shard) {
        let auth = (group == crate::kv::auth::AUTH_GROUP).then(|| layout.auth.clone());
        let machine = Rc::new(RefCell::new(KvMachine {
            group,
            state: GroupState::hybrid(group, layout.watch),
            auth,
            timeline: None,
        }));
        let raft = RaftGroup::start(
            group,
            layout.member.id,
            &layout.raft,
            log.clone(),
            machine.clone(),
            snapshots.clone(),
            transport.clone(),
        )
        .await?;
        machine.borrow_mut().timeline = Some(raft.timeline().clone());
        if !layout.join {
            raft.bootstrap(&layout.initial_members).await?;
        }
        groups.insert(
            group,
            Rc::new(ShardGroup {
                raft,
                machine,
                proposer: super::propose::Proposer::new(layout.proposal_queue_bytes_max),
                barrier: super::barrier::ReadBarrier::new(),
                leases: RefCell::default(),
                removal_logged: std::cell::Cell::new(false),
                removed_at: std::cell::Cell::new(None),
                no_space: std::cell::Cell::new(None),
                over_quota: std::cell::Cell::new(None),
            }),
        );
    }
    Ok(groups)
}

/// Why a request failed, as the client is told. Plain data: it crosses
/// shards.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("shard {shard} is not serving yet (its groups are starting); retry shortly")]
    Starting { shard: usize },
    #[error("shard {shard} could not take the request: {reason}")]
    Overloaded { shard: usize, reason: String },
    #[error("the answer could not be read: {0}")]
    Codec(String),
    #[error(
        "the transaction touches keys of groups {groups:?}; a transaction must stay within one group \
         (keys sharing their first store.partition_depth path segments): split it"
    )]
    TxnSpansGroups { groups: Vec<GroupId> },
    #[error("group {group} does not exist: this node has groups 0 to {last}")]
    NoSuchGroup { group: GroupId, last: GroupId },
    #[error(transparent)]
    Watch(#[from] crate::kv::watch::WatchError),
    #[error(transparent)]
    Auth(#[from] crate::kv::auth::AuthError),
    #[error(
        "member {member} is not a member of group {group} yet: it was started in join mode; add it with \
         `nvkv member add {member} ...` on a member of the cluster, or send the request to another member"
    )]
    Joining { member: NodeId, group: GroupId },
    #[error(
        "member {member} was removed from the cluster (group {group} no longer names it) and serves no \
         client requests; send them to another member, and stop this one"
    )]
    Removed { member: NodeId, group: GroupId },
}

/// A response with the header every answer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered<T> {
    pub group: GroupId,
    pub term: u64,
    pub member: NodeId,
    pub response: T,
}

/// What this thread's shard serves: its groups, once started.
pub struct ShardGroups {
    pub layout: GroupLayout,
    pub groups: RefCell<Option<BTreeMap<GroupId, Rc<ShardGroup>>>>,
    /// Where writes and linearizable reads go when another member leads.
    pub leaders: Rc<dyn super::forward::LeaderLink>,
}

thread_local! {
    static GROUPS: RefCell<Option<Rc<ShardGroups>>> = const { RefCell::new(None) };
}

/// Makes `groups` this thread's. Called once per reactor thread.
pub fn set_local_groups(groups: Rc<ShardGroups>) {
    GROUPS.with(|local| *local.borrow_mut() = Some(groups));
}

/// Exchanges this thread's groups with `groups` (see `super::ThreadShard`).
#[cfg(any(test, feature = "testing"))]
pub(super) fn swap_local_groups(groups: &mut Option<Rc<ShardGroups>>) {
    GROUPS.with(|local| std::mem::swap(&mut *local.borrow_mut(), groups));
}

fn local_groups(shard: usize) -> Result<Rc<ShardGroups>, RequestError> {
    GROUPS.with(|local| local.borrow().clone()).ok_or(RequestError::Starting { shard })
}

/// Runs `work` on `shard` (here or through its mailbox) and returns its
/// answer here.
pub(super) async fn on_shard<T, F, Fut>(
    context: &ReactorContext,
    shard: usize,
    work: F,
) -> Result<T, RequestError>
where
    T: Send + 'static,
    F: FnOnce(Rc<ShardGroups>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, RequestError>> + 'static,
{
    if shard == context.shard() {
        return work(local_groups(shard)?).await;
    }
    let (sender, receiver) = futures::channel::oneshot::channel();
    context
        .mailbox(shard)
        .try_send(move |target: &ReactorContext| {
            let shard = target.shard();
            tokio::task::spawn_local(async move {
                let answer = match local_groups(shard) {
                    Ok(groups) => work(groups).await,
                    Err(error) => Err(error),
                };
                let _ = sender.send(answer);
            });
        })
        .map_err(|refused| RequestError::Overloaded { shard, reason: refused.error.to_string() })?;
    receiver.await.map_err(|_| RequestError::Overloaded { shard, reason: "it stopped".into() })?
}

/// Runs `report` on every shard's thread (this one's included) and gathers
/// the answers in shard order.
pub async fn on_every_shard<T: Send + 'static>(
    context: &ReactorContext,
    report: fn(&ReactorContext) -> T,
) -> Result<Vec<T>, RequestError> {
    let mut pending = Vec::new();
    for target in 0..context.mailboxes().len() {
        let (sender, receiver) = futures::channel::oneshot::channel();
        context
            .mailbox(target)
            .try_send(move |shard: &ReactorContext| {
                let _ = sender.send(report(shard));
            })
            .map_err(|refused| RequestError::Overloaded {
                shard: target,
                reason: refused.error.to_string(),
            })?;
        pending.push((target, receiver));
    }
    let mut answers = Vec::with_capacity(pending.len());
    for (target, receiver) in pending {
        answers.push(receiver.await.map_err(|_| RequestError::Overloaded {
            shard: target,
            reason: "it stopped before it answered".into(),
        })?);
    }
    Ok(answers)
}

/// The group a client request goes to, once this member may serve it (see
/// [`super::membership::check_serving`]).
pub(super) fn group_on(groups: &ShardGroups, group: GroupId) -> Result<Rc<ShardGroup>, RequestError> {
    let entry = group_entry(groups, group)?;
    super::membership::check_serving(&entry, groups.layout.shard_of(group))?;
    Ok(entry)
}

/// The group as this shard runs it, whatever this member's standing in it.
pub(super) fn group_entry(groups: &ShardGroups, group: GroupId) -> Result<Rc<ShardGroup>, RequestError> {
    let shard = groups.layout.shard_of(group);
    let borrowed = groups.groups.borrow();
    let map = borrowed.as_ref().ok_or(RequestError::Starting { shard })?;
    Ok(map.get(&group).expect("a group is routed to the shard that runs it").clone())
}

pub(super) fn answered<T>(entry: &ShardGroup, group: GroupId, response: T) -> Answered<T> {
    let (_, term) = entry.raft.leadership();
    Answered { group, term, member: entry.raft.member(), response }
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
    let bytes = super::forward::write(entry.clone(), &groups.leaders, command).await?;
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
    groups.layout.auth.authorize(&caller, || {
        vec![Need::Read { key: request.key.clone(), range_end: request.range_end.clone() }]
    })?;
    let entry = group_on(&groups, group)?;
    if linearizable {
        super::forward::linearizable(entry.clone(), &groups.leaders).await?;
    }
    let response = entry.machine.borrow().state.store.range(&request)?;
    Ok(answered(&entry, group, response))
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
            let checked = groups.layout.auth.authorize(&caller, || super::auth::command_needs(&command));
            let bytes = encode_stamped_command(&command, stamp);
            async move {
                checked?;
                write_here(groups, group, bytes).await
            }
        })
        .await;
        super::stages::record_since(started, |stages| &mut stages.end_to_end);
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
                groups.layout.auth.authorize(&caller, || {
                    vec![Need::Read { key: request.key.clone(), range_end: request.range_end.clone() }]
                })?;
                Ok(super::watch::open_here(group_on(&groups, group)?, request, options, sender)?)
            })
            .await?;
            feed.started_after = feed.started_after.max(revision);
        }
        Ok(feed)
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
    let groups = GROUPS.with(|local| local.borrow().clone())?;
    Some(Requests::new(context.clone(), groups.layout.clone()))
}

/// Starts this shard's groups in the background (they need the reactor
/// running), with `transport` for Raft and `leaders` for requests another
/// member leads, and reports on `ready` once each has a leader, or why not.
pub fn spawn_groups<T: PeerTransport>(
    layout: GroupLayout,
    shard: usize,
    log: SharedLog,
    transport: Rc<T>,
    leaders: Rc<dyn super::forward::LeaderLink>,
    ready: crossbeam_channel::Sender<Result<usize, String>>,
) {
    let shard_groups = Rc::new(ShardGroups { layout: layout.clone(), groups: RefCell::new(None), leaders });
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
        *shard_groups.groups.borrow_mut() = Some(started);
        super::lease::spawn_expiry(shard_groups.clone());
        super::spread::spawn_spread(shard_groups.clone());
        super::space::spawn_quota(shard_groups.clone());
        if layout.raft.snapshot_on_demand {
            super::snapshots::spawn_snapshots(shard_groups.clone(), snapshot_log);
        }
        // A node says it is ready once it can answer: every group has a leader.
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        // A joining member's groups have no members yet, and no leader
        // until the cluster adds this member.
        handles.retain(|group| group.raft.has_state());
        while handles.iter().any(|group| group.raft.metrics().current_leader.is_none()) {
            if tokio::time::Instant::now() >= deadline {
                let waiting: Vec<GroupId> = handles
                    .iter()
                    .filter(|group| group.raft.metrics().current_leader.is_none())
                    .map(|group| group.raft.group())
                    .collect();
                tracing::warn!(shard, ?waiting, "groups still have no leader; serving anyway");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let _ = ready.send(Ok(shard));
        if let Some(first_group) = first_group {
            super::membership::report_config_against_cluster(&layout, &first_group);
        }
    });
}

/// How long a starting shard waits for its groups to elect leaders before
/// it says it serves anyway.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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

/// The report of every group this thread's shard runs, in group order;
/// empty while its groups are starting.
pub fn local_group_reports() -> Vec<super::GroupReport> {
    each_local_group(|shard_groups, group, entry| {
        let metrics = entry.raft.metrics();
        let machine = entry.machine.borrow();
        let store = &machine.state.store;
        super::GroupReport {
            group: *group,
            shard: shard_groups.layout.shard_of(*group) as u32,
            leader: metrics.current_leader.unwrap_or(0),
            term: metrics.term,
            applied_index: metrics.last_applied.map_or(0, |log_id| log_id.index),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            snapshot_index: metrics.snapshot.map_or(0, |log_id| log_id.index),
            purged_index: metrics.purged.map_or(0, |log_id| log_id.index),
            revision: store.revision(),
            compact_revision: store.compact_revision(),
            keys: store.keys_with_history() as u64,
            watchers: machine.state.hub.len() as u32,
            leases: store.leases().len() as u32,
            members: metrics
                .replication
                .iter()
                .map(|(member, matched)| super::MemberProgress {
                    member_id: *member,
                    matched_index: matched.unwrap_or(0),
                })
                .collect(),
            // Hashing encodes the whole store on this thread: bounded so
            // a status call never stalls a shard with a large store.
            state_hash: if crate::kv::snapshot::encoded_len(store) <= STATE_HASH_STORE_BYTES_MAX {
                crate::kv::snapshot::state_hash(store)
            } else {
                0
            },
            leader_changes: entry.raft.leader_changes(),
            no_space: entry.alarmed(),
        }
    })
}

/// Who leads each group this thread's shard runs, as this member knows it:
/// (group, leader, term, the leader's client address), in group order;
/// cheap (no store is read), for the partition map clients route by.
pub fn local_group_leaders() -> Vec<(GroupId, Option<NodeId>, u64, String)> {
    each_local_group(|_, group, entry| {
        let leader = entry.raft.leader();
        let (_, term) = entry.raft.leadership();
        let address = leader.as_ref().map(|member| member.client_address.clone()).unwrap_or_default();
        (*group, leader.map(|member| member.id), term, address)
    })
}

/// `each` of every group this thread's shard runs, in group order; empty
/// while its groups are starting.
fn each_local_group<T>(mut each: impl FnMut(&ShardGroups, &GroupId, &Rc<ShardGroup>) -> T) -> Vec<T> {
    let Some(shard_groups) = GROUPS.with(|local| local.borrow().clone()) else {
        return Vec::new();
    };
    let borrowed = shard_groups.groups.borrow();
    let Some(map) = borrowed.as_ref() else {
        return Vec::new();
    };
    map.iter().map(|(group, entry)| each(&shard_groups, group, entry)).collect()
}

/// Whether this thread's shard serves: its groups started, and which of
/// them have no working leader. Cheap enough for a probe every second.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardReadiness {
    /// The shard's groups have started (its log is recovered).
    pub started: bool,
    pub groups: Vec<GroupId>,
    /// Groups that know no leader, or that this member leads without a
    /// quorum's answer for twice the longest election timeout (openraft 0.9
    /// keeps such a leader until a newer one shows up).
    pub leaderless: Vec<GroupId>,
    /// Groups whose NOSPACE alarm is raised, for room or quota (they refuse
    /// writes that add data).
    pub no_space: Vec<GroupId>,
    /// Groups whose Raft core stopped for good here, with the reason.
    pub stopped: Vec<(GroupId, String)>,
}

/// Whether `entry`'s group has a leader that works, as this member sees it.
fn has_working_leader(entry: &ShardGroup, election_timeout_max_ms: u64) -> bool {
    let metrics = entry.raft.raft().metrics().borrow().clone();
    match metrics.current_leader {
        None => false,
        Some(leader) if leader == metrics.id => {
            metrics.millis_since_quorum_ack.is_some_and(|millis| millis <= 2 * election_timeout_max_ms)
        }
        Some(_) => true,
    }
}

pub fn local_readiness() -> ShardReadiness {
    let Some(shard_groups) = GROUPS.with(|local| local.borrow().clone()) else {
        return ShardReadiness::default();
    };
    let borrowed = shard_groups.groups.borrow();
    let Some(map) = borrowed.as_ref() else {
        return ShardReadiness::default();
    };
    ShardReadiness {
        started: true,
        groups: map.keys().copied().collect(),
        leaderless: map
            .iter()
            .filter(|(_, entry)| !has_working_leader(entry, shard_groups.layout.raft.election_timeout_max_ms))
            .map(|(group, _)| *group)
            .collect(),
        no_space: map.iter().filter(|(_, entry)| entry.alarmed()).map(|(group, _)| *group).collect(),
        stopped: map.iter().filter_map(|(group, entry)| Some((*group, entry.raft.failure()?))).collect(),
    }
}

/// The largest store whose state hash a group report carries (0 beyond).
pub const STATE_HASH_STORE_BYTES_MAX: u64 = 4 << 20;

/// Every member the membership of this thread's shard's groups names.
pub fn local_membership() -> Vec<super::MembershipEntry> {
    let Some(shard_groups) = GROUPS.with(|local| local.borrow().clone()) else {
        return Vec::new();
    };
    let borrowed = shard_groups.groups.borrow();
    let mut members: BTreeMap<NodeId, super::MembershipEntry> = BTreeMap::new();
    for entry in borrowed.iter().flat_map(|map| map.values()) {
        let metrics = entry.raft.metrics();
        for (id, member) in metrics.members {
            let voter = metrics.voters.contains(&id);
            members
                .entry(id)
                .and_modify(|known| known.voter |= voter)
                .or_insert(super::MembershipEntry { member, voter });
        }
    }
    members.into_values().collect()
}

/// Group `group` as this thread's shard runs it; `None` when the shard does
/// not run it or its groups are still starting. The peer server hands Raft
/// messages and forwarded requests to it.
pub fn local_group(group: GroupId) -> Option<Rc<ShardGroup>> {
    let shard_groups = GROUPS.with(|local| local.borrow().clone())?;
    let borrowed = shard_groups.groups.borrow();
    borrowed.as_ref()?.get(&group).cloned()
}
