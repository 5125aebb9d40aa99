//! The registry of what a reactor thread runs of its shard: the groups it
//! serves ([`ShardGroups`], found through one thread-local), how work
//! reaches the shard that owns a group ([`on_shard`], [`on_every_shard`]),
//! and the reports read from every group this thread runs. The one
//! thread-local of the shard layer is here ([`ShardState`], the groups, the
//! stages); the pieces below a group never look it up: they get the
//! handles they need when their group starts.
//!
//! Group g lives on shard `g mod shards` on every node. Everything here runs
//! on reactor threads; only plain data crosses between shards.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::answer::RequestError;
use super::group::ShardGroup;
use super::layout::GroupLayout;
use super::leader_link::LeaderLink;
use super::report::{GroupReport, MemberProgress, MembershipEntry};
use super::space::RingAdmission;
use super::stages::Stages;
use crate::raft::{GroupId, NodeId};
use crate::reactor::ReactorContext;
use crate::wal::SharedLog;

/// What the tasks of one reactor thread reach of their shard, without a
/// lock: set once by the shard's driver factory on its own thread.
#[derive(Clone)]
pub struct ShardState {
    pub shard: usize,
    pub core: usize,
    pub log: SharedLog,
    /// The client writes admitted to the log's ring (`super::space`).
    pub admission: Rc<RingAdmission>,
}

impl ShardState {
    /// Shard `shard` on `core`, writing `log`, with no write admitted yet.
    pub fn new(shard: usize, core: usize, log: SharedLog) -> ShardState {
        ShardState { shard, core, log, admission: Rc::default() }
    }
}

/// What this thread's shard serves: its groups, once started. The fields
/// are this file's: the shard's tasks read them through the methods below.
pub struct ShardGroups {
    layout: GroupLayout,
    groups: RefCell<Option<BTreeMap<GroupId, Rc<ShardGroup>>>>,
    /// Where writes and linearizable reads go when another member leads.
    leaders: Rc<dyn LeaderLink>,
}

impl ShardGroups {
    /// The groups of a shard laid out by `layout`, not started yet.
    pub(super) fn new(layout: GroupLayout, leaders: Rc<dyn LeaderLink>) -> ShardGroups {
        ShardGroups { layout, groups: RefCell::new(None), leaders }
    }

    pub(super) fn layout(&self) -> &GroupLayout {
        &self.layout
    }

    /// Where requests go that another member's leader must serve.
    pub(super) fn leaders(&self) -> &Rc<dyn LeaderLink> {
        &self.leaders
    }

    /// The shard's groups have started: from now on they serve.
    pub(super) fn set_started(&self, groups: BTreeMap<GroupId, Rc<ShardGroup>>) {
        *self.groups.borrow_mut() = Some(groups);
    }

    /// Every group of the shard, in group order; `None` while they start.
    /// A copy: the caller may await while it goes through them.
    pub(super) fn started(&self) -> Option<Vec<Rc<ShardGroup>>> {
        self.groups.borrow().as_ref().map(|map| map.values().cloned().collect())
    }
}

/// Everything a reactor thread holds of the shard it runs, in the one
/// thread-local of the shard layer. Each part has its own cell, so a
/// borrow of one (a stage recorded while a group is read) never conflicts
/// with another.
struct ThisThread {
    state: RefCell<Option<ShardState>>,
    groups: RefCell<Option<Rc<ShardGroups>>>,
    stages: RefCell<Stages>,
}

thread_local! {
    static THIS_THREAD: ThisThread = ThisThread {
        state: RefCell::new(None),
        groups: RefCell::new(None),
        stages: RefCell::new(Stages::default()),
    };
}

/// Makes `state` this thread's shard. Called once per reactor thread.
pub fn set_local(state: ShardState) {
    THIS_THREAD.with(|this| *this.state.borrow_mut() = Some(state));
}

/// This thread's shard, if this is a reactor thread with one.
pub fn local() -> Option<ShardState> {
    THIS_THREAD.with(|this| this.state.borrow().clone())
}

/// Makes `groups` this thread's. Called once per reactor thread.
pub(super) fn set_local_groups(groups: Rc<ShardGroups>) {
    THIS_THREAD.with(|this| *this.groups.borrow_mut() = Some(groups));
}

/// This thread's groups, once its shard set them.
pub(super) fn this_thread_groups() -> Option<Rc<ShardGroups>> {
    THIS_THREAD.with(|this| this.groups.borrow().clone())
}

pub(super) fn local_groups(shard: usize) -> Result<Rc<ShardGroups>, RequestError> {
    this_thread_groups().ok_or(RequestError::Starting { shard })
}

/// This thread's stages (see `super::stages`): its groups record into them
/// through the handle they got when they started; the request handle and
/// the RPC layer's connections through this.
pub fn local_stages() -> Stages {
    THIS_THREAD.with(|this| this.stages.borrow().clone())
}

/// Everything a thread holds of the shard it runs (its log, its groups, its
/// stages), out of the thread. A driver that runs the shards of several
/// members on one thread (the simulator) keeps one per member and swaps it
/// in around each poll of that member's tasks, so every member's code finds
/// its own shard. Test tool only (cargo feature
/// `testing`): a reactor thread runs one shard for its whole life.
#[cfg(any(test, feature = "testing"))]
#[derive(Default)]
pub struct ThreadShard {
    state: Option<ShardState>,
    groups: Option<Rc<ShardGroups>>,
    stages: Stages,
}

#[cfg(any(test, feature = "testing"))]
impl ThreadShard {
    /// Exchanges what this holds with what the thread holds.
    pub fn swap(&mut self) {
        THIS_THREAD.with(|this| {
            std::mem::swap(&mut *this.state.borrow_mut(), &mut self.state);
            std::mem::swap(&mut *this.groups.borrow_mut(), &mut self.groups);
            std::mem::swap(&mut *this.stages.borrow_mut(), &mut self.stages);
        });
    }
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
/// `super::membership::check_serving`).
pub(super) fn group_on(groups: &ShardGroups, group: GroupId) -> Result<Rc<ShardGroup>, RequestError> {
    let entry = group_entry(groups, group)?;
    entry.check_serving(groups.layout.shard_of(group))?;
    Ok(entry)
}

/// The group as this shard runs it, whatever this member's standing in it.
pub(super) fn group_entry(groups: &ShardGroups, group: GroupId) -> Result<Rc<ShardGroup>, RequestError> {
    let shard = groups.layout.shard_of(group);
    let borrowed = groups.groups.borrow();
    let map = borrowed.as_ref().ok_or(RequestError::Starting { shard })?;
    Ok(map.get(&group).expect("a group is routed to the shard that runs it").clone())
}

/// The report of every group this thread's shard runs, in group order;
/// empty while its groups are starting.
pub fn local_group_reports() -> Vec<GroupReport> {
    each_local_group(|shard_groups, group, entry| {
        let metrics = entry.raft().metrics();
        let machine = entry.machine().borrow();
        let store = &machine.state.store;
        GroupReport {
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
                .map(|(member, matched)| MemberProgress {
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
            leader_changes: entry.raft().leader_changes(),
            no_space: entry.alarmed(),
        }
    })
}

/// Who leads each group this thread's shard runs, as this member knows it:
/// (group, leader, term, the leader's client address), in group order;
/// cheap (no store is read), for the partition map clients route by.
pub fn local_group_leaders() -> Vec<(GroupId, Option<NodeId>, u64, String)> {
    each_local_group(|_, group, entry| {
        let leader = entry.raft().leader();
        let (_, term) = entry.raft().leadership();
        let address = leader.as_ref().map(|member| member.client_address.clone()).unwrap_or_default();
        (*group, leader.map(|member| member.id), term, address)
    })
}

/// `each` of every group this thread's shard runs, in group order; empty
/// while its groups are starting.
fn each_local_group<T>(mut each: impl FnMut(&ShardGroups, &GroupId, &Rc<ShardGroup>) -> T) -> Vec<T> {
    let Some(shard_groups) = this_thread_groups() else {
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
    let metrics = entry.raft().raft().metrics().borrow().clone();
    match metrics.current_leader {
        None => false,
        Some(leader) if leader == metrics.id => {
            metrics.millis_since_quorum_ack.is_some_and(|millis| millis <= 2 * election_timeout_max_ms)
        }
        Some(_) => true,
    }
}

pub fn local_readiness() -> ShardReadiness {
    let Some(shard_groups) = this_thread_groups() else {
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
        stopped: map.iter().filter_map(|(group, entry)| Some((*group, entry.raft().failure()?))).collect(),
    }
}

/// The largest store whose state hash a group report carries (0 beyond).
pub const STATE_HASH_STORE_BYTES_MAX: u64 = 4 << 20;

/// The membership as this member tells its clients: what
/// [`local_membership`] says, unless one of this shard's groups knows this
/// member was removed (it applied its removal, or a peer proved it): then
/// the error that says so, as every client request gets. A membership
/// change goes to every group, so one group's word is the member's; its old
/// membership would name members that are gone and leave out new ones.
pub fn served_membership() -> Result<Vec<MembershipEntry>, RequestError> {
    if let Some(shard_groups) = this_thread_groups() {
        let borrowed = shard_groups.groups.borrow();
        for (group, entry) in borrowed.iter().flat_map(|map| map.iter()) {
            if let Err(error @ RequestError::Removed { .. }) =
                entry.check_serving(shard_groups.layout.shard_of(*group))
            {
                return Err(error);
            }
        }
    }
    Ok(local_membership())
}

/// Every member the membership of this thread's shard's groups names.
pub fn local_membership() -> Vec<MembershipEntry> {
    let Some(shard_groups) = this_thread_groups() else {
        return Vec::new();
    };
    let borrowed = shard_groups.groups.borrow();
    let mut members: BTreeMap<NodeId, MembershipEntry> = BTreeMap::new();
    for entry in borrowed.iter().flat_map(|map| map.values()) {
        let metrics = entry.raft().metrics();
        for (id, member) in metrics.members {
            let voter = metrics.voters.contains(&id);
            members
                .entry(id)
                .and_modify(|known| known.voter |= voter)
                .or_insert(MembershipEntry { member, voter });
        }
    }
    members.into_values().collect()
}

/// Group `group` as this thread's shard runs it; `None` when the shard does
/// not run it or its groups are still starting (see
/// `super::peer_requests`).
pub(super) fn local_group(group: GroupId) -> Option<Rc<ShardGroup>> {
    let shard_groups = this_thread_groups()?;
    let borrowed = shard_groups.groups.borrow();
    borrowed.as_ref()?.get(&group).cloned()
}
