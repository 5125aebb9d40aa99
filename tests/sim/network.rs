//! The simulated network between members, and from clients to members:
//! every message takes a delay the seed draws (some much longer, so
//! messages overtake each other), may be lost with the connection it
//! travelled on, may arrive twice (Raft messages, which must bear it), and
//! never crosses a link a partition cut. A connection starts with the
//! members' hellos, in which each judges the other's incarnation as the
//! real peer port does (`rpc::incarnation`): a member whose data was wiped
//! is refused while it still votes.
//!
//! What arrives runs on the target member's own tasks (its `LocalSet`),
//! through the same calls the peer port makes (`rpc::peer`): append
//! entries and votes into the group's Raft, snapshots through its inbox,
//! forwarded writes, read indexes, lease queries and membership changes
//! into the shard. Failures map onto openraft's and the shard's errors the
//! way the peer client maps them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use nvkv::raft::network::{RpcError, SnapshotStreamError};
use nvkv::raft::types::{Snapshot, Vote};
use nvkv::raft::{AppendAnswer, GroupError, GroupId, Member, NodeId, PeerTransport, TypeConfig};
use nvkv::rpc::incarnation::{self, Incarnation, IncarnationRefusal, Introduction};
use nvkv::shard::forward::LeaderLink;
use nvkv::shard::lease::{LeaseAnswer, LeaseQuery};
use nvkv::shard::membership::MembershipChange;
use nvkv::wal::superblock::SuperblockKeeper;
use openraft::error::{
    RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest, VoteResponse};
use tokio::task::LocalSet;

use crate::entropy::Rng;
use crate::world::{Counts, Trace};

/// The rates of the network's faults.
#[derive(Clone, Copy, Debug)]
pub struct NetFaults {
    /// One-way delay of a message, in microseconds (low, high).
    pub delay_us: (u64, u64),
    /// Chance a message takes up to `long_delay_ms` instead (and is
    /// overtaken by later ones).
    pub long_delay_chance: f64,
    pub long_delay_ms: u64,
    /// Chance a message is lost and its connection reset.
    pub drop_chance: f64,
    /// Chance a Raft message is delivered a second time, later.
    pub duplicate_chance: f64,
}

/// How long a dial to a member behind a cut link waits before it gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A member as the network reaches it, while it runs.
#[derive(Clone)]
pub struct Endpoint {
    /// Bumped at every start: messages of an older connection are lost.
    pub incarnation: u64,
    /// Where its tasks run; weak, so a killed member's tasks go with it
    /// even while messages to it are on their way.
    pub local: std::rc::Weak<LocalSet>,
    pub keeper: Arc<SuperblockKeeper>,
    /// Stops the member once a peer proves it lost its data after it
    /// bootstrapped blind (`rpc::peer`'s dial asks the refusing peer; here
    /// the refusal is at hand).
    pub halt: Arc<incarnation::Halt>,
}

/// Why a message did not get an answer.
#[derive(Debug)]
enum Failed {
    /// No connection: it never reached the target.
    NotSent(String),
    /// The connection broke: it may or may not have been handled.
    Unreachable(String),
}

struct NetState {
    rng: Rng,
    faults: NetFaults,
    /// Cut links, one way each: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    endpoints: BTreeMap<NodeId, Endpoint>,
    /// Open connections with the incarnations of both ends at their hello.
    connections: BTreeMap<(NodeId, NodeId), (u64, u64)>,
}

/// A refused hello: who refused whom, between which incarnations.
type Refusal = (NodeId, NodeId, (u64, u64));

/// What a Raft message's work answers on its target: the group's own
/// answer, or why the group could not be asked.
type RaftWork<Response, E> =
    Rc<dyn Fn() -> LocalBoxFuture<'static, Result<Result<Response, RaftError<NodeId, E>>, String>>>;

/// The network of one simulated cluster.
pub struct Net {
    state: RefCell<NetState>,
    counts: Counts,
    trace: Trace,
    /// The last vote each member granted in each group, as (term,
    /// candidate), in the order it granted them.
    votes: RefCell<BTreeMap<(NodeId, GroupId), (u64, NodeId)>>,
    /// Votes granted against an earlier one, as found.
    pub double_votes: RefCell<Vec<String>>,
    refusals_noted: RefCell<BTreeSet<Refusal>>,
}

impl Net {
    pub fn new(rng: Rng, faults: NetFaults, counts: Counts, trace: Trace) -> Rc<Net> {
        Rc::new(Net {
            state: RefCell::new(NetState {
                rng,
                faults,
                cut: BTreeSet::new(),
                endpoints: BTreeMap::new(),
                connections: BTreeMap::new(),
            }),
            counts,
            trace,
            votes: RefCell::default(),
            double_votes: RefCell::default(),
            refusals_noted: RefCell::default(),
        })
    }

    pub fn attach(&self, member: NodeId, endpoint: Endpoint) {
        self.state.borrow_mut().endpoints.insert(member, endpoint);
    }

    pub fn detach(&self, member: NodeId) {
        let mut state = self.state.borrow_mut();
        state.endpoints.remove(&member);
        state.connections.retain(|(from, to), _| *from != member && *to != member);
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.state.borrow_mut().cut.insert((from, to));
    }

    /// Every link works again.
    pub fn heal(&self) {
        self.state.borrow_mut().cut.clear();
    }

    /// No more lost or duplicated messages, and no long delays.
    pub fn calm(&self) {
        let mut state = self.state.borrow_mut();
        state.faults.drop_chance = 0.0;
        state.faults.duplicate_chance = 0.0;
        state.faults.long_delay_chance = 0.0;
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.state.borrow().cut.contains(&(from, to))
    }

    fn delay(&self) -> Duration {
        let mut state = self.state.borrow_mut();
        let faults = state.faults;
        if state.rng.chance(faults.long_delay_chance) {
            self.counts.add("net.long_delay");
            return Duration::from_micros(state.rng.between(faults.delay_us.1, faults.long_delay_ms * 1000));
        }
        Duration::from_micros(state.rng.between(faults.delay_us.0, faults.delay_us.1))
    }

    fn draw(&self, chance: impl FnOnce(&NetFaults) -> f64) -> bool {
        let mut state = self.state.borrow_mut();
        let chance = chance(&state.faults);
        state.rng.chance(chance)
    }

    fn endpoint(&self, member: NodeId) -> Option<Endpoint> {
        self.state.borrow().endpoints.get(&member).cloned()
    }

    /// Runs `work` on `member`'s tasks and returns its answer; `None` if the
    /// member stopped before it answered.
    async fn run_on<R: 'static>(
        endpoint: &Endpoint,
        work: impl FnOnce() -> LocalBoxFuture<'static, R> + 'static,
    ) -> Option<R> {
        let (sender, receiver) = futures::channel::oneshot::channel();
        endpoint.local.upgrade()?.spawn_local(async move {
            let _ = sender.send(work().await);
        });
        receiver.await.ok()
    }

    /// Opens the connection from `from` to `to` unless one is open between
    /// their current incarnations: a dial, then both hellos.
    async fn connect(&self, from: NodeId, to: NodeId) -> Result<(u64, u64), Failed> {
        tokio::time::sleep(self.delay()).await;
        let Some(target) = self.endpoint(to) else {
            return Err(Failed::NotSent(format!("member {to} is down (connection refused)")));
        };
        let Some(caller) = self.endpoint(from) else {
            return Err(Failed::NotSent(format!("member {from} stopped while dialling")));
        };
        if self.is_cut(from, to) || self.is_cut(to, from) {
            tokio::time::sleep(CONNECT_TIMEOUT).await;
            return Err(Failed::NotSent(format!("member {to}: no hello within {CONNECT_TIMEOUT:?}")));
        }
        let current = (caller.incarnation, target.incarnation);
        if self.state.borrow().connections.get(&(from, to)) == Some(&current) {
            return Ok(current);
        }
        let said = said_by(&caller.keeper, from);
        let target_said = said_by(&target.keeper, to);
        let keeper = target.keeper.clone();
        let refused = Net::run_on(&target, move || async move { judge_here(&keeper, said) }.boxed_local())
            .await
            .ok_or_else(|| Failed::NotSent(format!("member {to} stopped during the hello")))?;
        if let Err(refusal) = refused {
            self.refused(to, from, current, &refusal);
            if let IncarnationRefusal::Wiped { known, now, .. } = &refusal {
                let wiped = incarnation::StartRefusal::Wiped {
                    member: from,
                    peer: to,
                    known: known.clone(),
                    now: now.clone(),
                };
                if incarnation::halt_wiped(&caller.keeper, &caller.halt, wiped) {
                    self.trace.note(format!("member {from} learns from member {to} that it lost its data"));
                }
            }
            return Err(Failed::NotSent(format!("member {to} refused the hello: {refusal}")));
        }
        if let Err(refusal) = judge_here(&caller.keeper, target_said) {
            self.refused(from, to, current, &refusal);
            return Err(Failed::NotSent(format!("member {from} refused the hello of {to}: {refusal}")));
        }
        self.state.borrow_mut().connections.insert((from, to), current);
        Ok(current)
    }

    /// Counts a refused hello, and notes it once per pair of incarnations.
    fn refused(&self, judge: NodeId, peer: NodeId, incarnations: (u64, u64), refusal: &IncarnationRefusal) {
        self.counts.add("net.hello_refused");
        if self.refusals_noted.borrow_mut().insert((judge, peer, incarnations)) {
            self.trace.note(format!("member {judge} refuses member {peer}: {refusal}"));
        }
    }

    /// One call from `from` to `to`: `work` runs on `to` and its answer
    /// comes back. A lost message leaves the caller waiting for its own
    /// timeout.
    async fn exchange<R: 'static>(
        self: &Rc<Self>,
        from: NodeId,
        to: NodeId,
        duplicable: bool,
        work: Rc<dyn Fn() -> LocalBoxFuture<'static, R>>,
    ) -> Result<R, Failed> {
        let connection = self.connect(from, to).await?;
        tokio::time::sleep(self.delay()).await;
        if self.is_cut(from, to) {
            self.counts.add("net.lost_to_partition");
            return std::future::pending().await;
        }
        if self.draw(|faults| faults.drop_chance) {
            self.counts.add("net.dropped");
            self.state.borrow_mut().connections.remove(&(from, to));
            return Err(Failed::Unreachable(format!("the connection from member {from} to {to} was reset")));
        }
        let target = match self.endpoint(to) {
            Some(target) if target.incarnation == connection.1 => target,
            _ => {
                return Err(Failed::Unreachable(format!("member {to} closed the connection (it restarted)")))
            }
        };
        if duplicable && self.draw(|faults| faults.duplicate_chance) {
            self.counts.add("net.duplicated");
            let (again, delay) = (work.clone(), self.delay());
            if let Some(local) = target.local.upgrade() {
                local.spawn_local(async move {
                    tokio::time::sleep(delay).await;
                    let _ = again().await;
                });
            }
        }
        let answer = Net::run_on(&target, move || work())
            .await
            .ok_or_else(|| Failed::Unreachable(format!("member {to} stopped before it answered")))?;
        tokio::time::sleep(self.delay()).await;
        if self.is_cut(to, from) {
            self.counts.add("net.lost_to_partition");
            return std::future::pending().await;
        }
        Ok(answer)
    }

    /// A client's call to `member`: `None` when it never reached it or the
    /// answer was lost (the outcome is unknown).
    pub async fn client_call<R: 'static>(
        &self,
        member: NodeId,
        work: impl FnOnce() -> LocalBoxFuture<'static, R> + 'static,
    ) -> Option<R> {
        tokio::time::sleep(self.delay()).await;
        let endpoint = self.endpoint(member)?;
        if self.draw(|faults| faults.drop_chance) {
            self.counts.add("net.client_dropped");
            return None;
        }
        let answer = Net::run_on(&endpoint, work).await?;
        tokio::time::sleep(self.delay()).await;
        if self.draw(|faults| faults.drop_chance) {
            self.counts.add("net.client_dropped");
            return None;
        }
        Some(answer)
    }

    /// What `peers` answer a member without a cluster that asks to be
    /// introduced (the introductions of `node::join_cluster`).
    pub async fn introduce(
        &self,
        from: NodeId,
        keeper: &SuperblockKeeper,
        peers: &[NodeId],
    ) -> Vec<(NodeId, Result<Introduction, String>)> {
        let mut answers = Vec::new();
        for peer in peers {
            tokio::time::sleep(self.delay()).await;
            let answer = match self.endpoint(*peer) {
                Some(endpoint) if !self.is_cut(from, *peer) && !self.is_cut(*peer, from) => {
                    let said = said_by(keeper, from);
                    let target = endpoint.keeper.clone();
                    let judged = Net::run_on(&endpoint, move || {
                        async move { introduction_here(&target, said) }.boxed_local()
                    })
                    .await;
                    judged.ok_or_else(|| format!("member {peer} stopped"))
                }
                Some(_) => {
                    Err(format!("member {peer}: no answer within {:?}", incarnation::INTRODUCE_TIMEOUT))
                }
                None => Err(format!("member {peer}: connection refused")),
            };
            answers.push((*peer, answer));
        }
        answers
    }

    /// Records a vote `voter` granted, in the order it granted them, and
    /// says so when it goes back on an earlier one. openraft names a leader
    /// by (term, member), ordered, and several candidates of one term may
    /// win a vote in turn (a higher member id beats a lower one); what a
    /// voter must never do is grant a vote below one it granted before,
    /// the same term to another member included once it went higher.
    pub fn granted(&self, voter: NodeId, group: GroupId, term: u64, candidate: NodeId) {
        let mut votes = self.votes.borrow_mut();
        let vote = (term, candidate);
        match votes.get(&(voter, group)) {
            Some(earlier) if vote < *earlier => {
                let found = format!(
                    "member {voter} granted its vote in group {group} to member {candidate} in term {term} after it \
                     had granted it to member {} in term {}",
                    earlier.1, earlier.0
                );
                self.trace.note(found.clone());
                self.double_votes.borrow_mut().push(found);
            }
            _ => {
                votes.insert((voter, group), vote);
            }
        }
    }

    /// Forgets the votes of the groups a wiped member may vote again in
    /// after it rejoined as a new member (its earlier life is another
    /// member as far as Raft is concerned).
    pub fn forget_votes_of(&self, member: NodeId) {
        self.votes.borrow_mut().retain(|(voter, _), _| *voter != member);
    }
}

/// What a member says of itself in a hello.
fn said_by(keeper: &SuperblockKeeper, member: NodeId) -> Incarnation {
    let superblock = keeper.superblock();
    let cluster = superblock.identity.cluster_id;
    Incarnation {
        member,
        namespace: Some(superblock.namespace_id),
        cluster: (cluster != incarnation::NO_CLUSTER).then_some(cluster),
    }
}

/// `rpc::peer`'s check of a hello, run on the member that hears it.
fn judge_here(keeper: &SuperblockKeeper, peer: Incarnation) -> Result<(), IncarnationRefusal> {
    incarnation::judge(keeper, peer, || voter_here(peer.member))
}

/// `rpc::incarnation::answer`'s verdict, run on the member asked.
fn introduction_here(keeper: &SuperblockKeeper, peer: Incarnation) -> Introduction {
    let identity = keeper.identity();
    match judge_here(keeper, peer) {
        Ok(()) | Err(IncarnationRefusal::OtherCluster { .. } | IncarnationRefusal::Record { .. }) => {
            Introduction::Welcome {
                cluster: (identity.cluster_id != incarnation::NO_CLUSTER).then_some(identity.cluster_id),
            }
        }
        Err(IncarnationRefusal::Wiped { .. }) => Introduction::Wiped {
            known: identity.peer_namespace(peer.member).unwrap_or(incarnation::NO_CLUSTER),
        },
        Err(IncarnationRefusal::Starting { .. }) => Introduction::Unsure,
    }
}

/// Whether `member` votes in this member's groups; `None` while they start.
fn voter_here(member: NodeId) -> Option<bool> {
    let members = nvkv::shard::registry::local_membership();
    (!members.is_empty()).then(|| members.iter().any(|known| known.member.id == member && known.voter))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SimFailure(String);

fn not_running(group: GroupId) -> String {
    format!("group {group} does not run here (it is starting)")
}

/// The transport of one member: its Raft messages and forwarded requests.
pub struct SimTransport {
    pub me: NodeId,
    pub net: Rc<Net>,
    pub request_timeout: Duration,
}

impl SimTransport {
    /// One Raft call, answered within `option`'s hard TTL, its failures
    /// mapped as the peer client maps them.
    async fn raft_call<Response: 'static, E: std::error::Error + 'static>(
        &self,
        action: RPCTypes,
        target: &Member,
        option: &RPCOption,
        work: RaftWork<Response, E>,
    ) -> Result<Response, RPCError<NodeId, Member, RaftError<NodeId, E>>> {
        let timeout = option.hard_ttl();
        let exchanged =
            tokio::time::timeout(timeout, self.net.exchange(self.me, target.id, true, work)).await;
        let unreachable = |reason: String| RPCError::Unreachable(Unreachable::new(&SimFailure(reason)));
        match exchanged {
            Err(_) => Err(RPCError::Timeout(Timeout { action, id: self.me, target: target.id, timeout })),
            Ok(Err(Failed::NotSent(reason) | Failed::Unreachable(reason))) => Err(unreachable(reason)),
            Ok(Ok(Err(reason))) => Err(unreachable(reason)),
            Ok(Ok(Ok(Ok(response)))) => Ok(response),
            Ok(Ok(Ok(Err(RaftError::Fatal(fatal))))) => {
                Err(unreachable(format!("{target}: its group stopped: {fatal}")))
            }
            Ok(Ok(Ok(Err(error)))) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(target.id, target.clone(), error)))
            }
        }
    }

    /// A request forwarded to `leader`, its failures mapped as the peer
    /// client maps them.
    async fn leader_call<T: 'static>(
        &self,
        group: GroupId,
        leader: &Member,
        work: Rc<dyn Fn() -> LocalBoxFuture<'static, Result<T, GroupError>>>,
    ) -> Result<T, GroupError> {
        let timeout = self.request_timeout;
        match tokio::time::timeout(timeout, self.net.exchange(self.me, leader.id, false, work)).await {
            Err(_) => Err(GroupError::Timeout { group, timeout_ms: timeout.as_millis() as u64 }),
            Ok(Err(Failed::NotSent(reason))) => Err(GroupError::NotSent { group, leader: leader.id, reason }),
            Ok(Err(Failed::Unreachable(reason))) => {
                Err(GroupError::Unavailable { group, member: leader.id, reason })
            }
            Ok(Ok(answer)) => answer,
        }
    }
}

fn group_here(group: GroupId) -> Result<nvkv::shard::PeerRequests, String> {
    nvkv::shard::PeerRequests::local(group).ok_or_else(|| not_running(group))
}

impl PeerTransport for SimTransport {
    async fn append_entries(
        &self,
        group: GroupId,
        target: &Member,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendAnswer, RpcError> {
        let work = Rc::new(move || {
            let request = request.clone();
            async move {
                let entry = group_here(group)?;
                entry.handle_append_entries(request).await
            }
            .boxed_local()
        });
        let response = self.raft_call(RPCTypes::AppendEntries, target, &option, work).await?;
        Ok(AppendAnswer { response, took: None })
    }

    async fn vote(
        &self,
        group: GroupId,
        target: &Member,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let proof = Rc::new(std::cell::Cell::new(0u64));
        let (found, asked, net, voter) = (proof.clone(), request.clone(), self.net.clone(), target.id);
        let work = Rc::new(move || {
            let (request, found, net) = (asked.clone(), found.clone(), net.clone());
            async move {
                let entry = group_here(group)?;
                let leader = *request.vote.leader_id();
                if let Some(index) = leader.voted_for().and_then(|candidate| entry.removal_proof(candidate)) {
                    found.set(index);
                }
                let answer = entry.handle_vote(request).await;
                if let (Ok(response), Some(candidate)) = (&answer, leader.voted_for()) {
                    // Recorded here, on the voter, in the order it granted.
                    if response.vote_granted {
                        net.granted(voter, group, leader.term, candidate);
                    }
                }
                Ok(answer)
            }
            .boxed_local()
        });
        let answer = self.raft_call(RPCTypes::Vote, target, &option, work).await;
        nvkv::shard::PeerRequests::removal_proven(group, proof.get(), target.id);
        answer
    }

    async fn full_snapshot(
        &self,
        group: GroupId,
        target: &Member,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotStreamError> {
        let meta = snapshot.meta.clone();
        let data = Rc::new(snapshot.snapshot.into_inner());
        let work = Rc::new(move || {
            let (meta, data) = (meta.clone(), data.clone());
            async move {
                let entry = group_here(group)?;
                let reception =
                    entry.receive_snapshot(meta, data.len() as u64).map_err(|error| error.to_string())?;
                reception.chunk(0, &data).map_err(|error| error.to_string())?;
                entry.install_received_snapshot(&reception, vote).await.map_err(|error| error.to_string())
            }
            .boxed_local()
        });
        let timeout = option.hard_ttl();
        let send = tokio::time::timeout(timeout, self.net.exchange(self.me, target.id, true, work));
        let exchanged = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            exchanged = send => exchanged,
        };
        let unreachable = |reason: String| StreamingError::Unreachable(Unreachable::new(&SimFailure(reason)));
        match exchanged {
            Err(_) => Err(StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: self.me,
                target: target.id,
                timeout,
            })),
            Ok(Err(Failed::NotSent(reason) | Failed::Unreachable(reason))) | Ok(Ok(Err(reason))) => {
                Err(unreachable(reason))
            }
            Ok(Ok(Ok(response))) => Ok(response),
        }
    }
}

impl SimTransportLink {
    /// Forwards to `leader` a request that `answer` serves there with the
    /// leader's group entry.
    fn forward<T: 'static, Q: Clone + 'static, F>(
        &self,
        group: GroupId,
        leader: &Member,
        request: Q,
        answer: F,
    ) -> LocalBoxFuture<'static, Result<T, GroupError>>
    where
        F: Fn(nvkv::shard::PeerRequests, Q) -> LocalBoxFuture<'static, Result<T, GroupError>> + 'static,
    {
        let (transport, leader) = (self.0.clone(), leader.clone());
        let answer = Rc::new(answer);
        Box::pin(async move {
            let work = Rc::new(move || {
                let (request, answer) = (request.clone(), answer.clone());
                async move {
                    let entry = group_here(group).map_err(|reason| GroupError::Unavailable {
                        group,
                        member: 0,
                        reason,
                    })?;
                    answer(entry, request).await
                }
                .boxed_local()
            });
            transport.leader_call(group, &leader, work).await
        })
    }
}

impl LeaderLink for SimTransportLink {
    fn forward_write(
        &self,
        group: GroupId,
        leader: &Member,
        command: Vec<u8>,
    ) -> LocalBoxFuture<'static, Result<Vec<u8>, GroupError>> {
        self.forward(group, leader, command, |entry, command| {
            async move { entry.write_as_leader(command).await }.boxed_local()
        })
    }

    fn read_index(
        &self,
        group: GroupId,
        leader: &Member,
    ) -> LocalBoxFuture<'static, Result<u64, GroupError>> {
        self.forward(group, leader, (), |entry, ()| async move { entry.read_index().await }.boxed_local())
    }

    fn lease(
        &self,
        group: GroupId,
        leader: &Member,
        query: LeaseQuery,
    ) -> LocalBoxFuture<'static, Result<LeaseAnswer, GroupError>> {
        self.forward(group, leader, query, |entry, query| {
            async move { entry.lease_as_leader(query).await }.boxed_local()
        })
    }

    fn forward_membership(
        &self,
        group: GroupId,
        leader: &Member,
        change: MembershipChange,
    ) -> LocalBoxFuture<'static, Result<(), GroupError>> {
        self.forward(group, leader, change, |entry, change| {
            async move { entry.change_as_leader(change).await }.boxed_local()
        })
    }
}

/// The leader link of a member: its transport, shared.
pub struct SimTransportLink(pub Rc<SimTransport>);
