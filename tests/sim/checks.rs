//! The checks at the end of a run, once the cluster healed:
//!
//! - every member is back (a member that stopped for good, although its
//!   peers hold good copies of what it lost, is a failure, unless its
//!   disk corrupts and the operator restored it: `World::restore_stopped`);
//! - every group converges, and every member's store of it has the same
//!   state hash;
//! - the history of the checked keys, final reads included, is
//!   linearizable (`nvkv::lincheck`), and no acknowledged write is lost;
//! - no member granted its vote to two candidates in one term of a group;
//! - every watcher saw each acknowledged write under its prefix once, in
//!   revision order, unless the group cancelled the watch explicitly;
//! - leases end: once every lease had time to expire, no key attached to
//!   one is left;
//! - every group still takes writes: a wedged shard (its log ring full of
//!   entries, the records that would free it queued behind them) answers
//!   reads and agrees with its peers, yet refuses every write for good.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use nvkv::kv::types::RangeRequest;
use nvkv::lincheck::{Operation, Outcome, Record, Returned, Verdict};
use nvkv::raft::{GroupId, NodeId};
use tokio::time::Instant;

use crate::member::Stopped;
use crate::world::World;

/// How long the healed cluster may take to converge.
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);
/// How long a group may take to take one write after the other checks.
const WRITE_WITHIN: Duration = Duration::from_secs(40);
/// Search steps per key for the linearizability checker.
const STEPS_PER_KEY: u64 = 5_000_000;

/// One group as one member holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupView {
    leader: Option<NodeId>,
    leading: bool,
    last_log: u64,
    applied: u64,
    hash: u64,
    voters: Vec<NodeId>,
}

impl World {
    /// Runs `work` on member `id`'s tasks; `None` if it does not run.
    pub async fn on_member<R: 'static>(
        &self,
        id: NodeId,
        work: impl FnOnce() -> futures::future::LocalBoxFuture<'static, R> + 'static,
    ) -> Option<R> {
        let (sender, receiver) = futures::channel::oneshot::channel();
        self.running.borrow().get(&id)?.local.spawn_local(async move {
            let _ = sender.send(work().await);
        });
        receiver.await.ok()
    }

    /// What member `id` holds of every group.
    async fn views(&self, id: NodeId) -> Option<BTreeMap<GroupId, GroupView>> {
        self.on_member(id, || {
            async {
                let groups =
                    (0..64).filter_map(|group| Some((group, nvkv::shard::PeerRequests::local(group)?)));
                groups
                    .map(|(group, entry)| {
                        let metrics = entry.metrics();
                        let hash = entry.state_hash();
                        let view = GroupView {
                            leader: metrics.current_leader,
                            leading: metrics.state == openraft::ServerState::Leader,
                            last_log: metrics.last_log_index.unwrap_or(0),
                            applied: metrics.last_applied.map_or(0, |applied| applied.index),
                            hash,
                            voters: metrics.voters.iter().copied().collect(),
                        };
                        (group, view)
                    })
                    .collect()
            }
            .boxed_local()
        })
        .await
    }
}

/// Everything the checks found, one line each.
pub async fn check(world: &Rc<World>) -> Vec<String> {
    let mut failures = Vec::new();
    for (id, running) in world.running.borrow().iter() {
        if let Some(Stopped::Unrecoverable(reason)) = &*running.stopped.borrow() {
            failures.push(format!(
                "member {id} stopped for good although its peers hold good copies of its data: {reason}"
            ));
        }
    }
    converge(world, &mut failures).await;
    final_reads(world).await;
    {
        let history = world.history.borrow();
        linearizable(&history.records, &mut failures);
        acknowledged_writes_kept(&history, &mut failures);
        watches_gap_free(&history, &mut failures);
    }
    for found in world.net.double_votes.borrow().iter() {
        failures.push(format!("a member went back on its vote: {found}"));
    }
    leases_end(world, &mut failures).await;
    // Last, so that it moves none of the checks above.
    writes_go_through(world, &mut failures).await;
    failures
}

/// Every group takes a write once the cluster healed: a delete of a key of
/// its own (not a checked one, so that no history changes), which adds no
/// data and so passes a NOSPACE alarm and ring admission below nine tenths.
/// Only a shard that cannot write at all (a wedged ring) refuses it for
/// good.
async fn writes_go_through(world: &Rc<World>, failures: &mut Vec<String>) {
    let groups = world.scenario.groups_per_shard;
    let partitioner = match nvkv::kv::partition::Partitioner::new(groups, 1) {
        Ok(partitioner) => partitioner,
        Err(error) => {
            failures.push(format!("the probe of writes after the heal has no partitioner: {error}"));
            return;
        }
    };
    for group in 0..groups {
        let Some(key) = (0..10_000u32)
            .map(|n| format!("/probe{n}/x").into_bytes())
            .find(|key| partitioner.group_of(key) == group)
        else {
            failures.push(format!("no probe key falls in group {group}"));
            continue;
        };
        let deadline = Instant::now() + WRITE_WITHIN;
        let mut attempt = 0;
        let mut last = String::from("no member serves");
        let written = loop {
            let members = world.member_ids();
            let member = members[attempt % members.len()];
            attempt += 1;
            if let Some(handle) = world.requests_of(member) {
                let request = nvkv::kv::types::DeleteRangeRequest { key: key.clone(), ..Default::default() };
                let answer = world.on_member(member, move || {
                    async move {
                        let requests = handle.borrow().clone()?;
                        Some(
                            requests
                                .delete_range(request)
                                .await
                                .map(|_| ())
                                .map_err(|error| error.to_string()),
                        )
                    }
                    .boxed_local()
                });
                match tokio::time::timeout(Duration::from_secs(5), answer).await {
                    Ok(Some(Some(Ok(())))) => break true,
                    Ok(Some(Some(Err(error)))) => last = format!("member {member}: {error}"),
                    Ok(_) => last = format!("member {member} does not serve"),
                    Err(_) => last = format!("member {member} did not answer within 5 s"),
                }
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if !written {
            let rings = rings_described(world);
            failures.push(format!(
                "group {group} takes no write after the heal: a delete of {} through every member failed for \
                 {WRITE_WITHIN:?} (a wedged shard?); the last error: {last}; the shard's log ring: {}",
                String::from_utf8_lossy(&key),
                rings
            ));
        }
    }
}

/// Waits until every serving member applied its groups' whole logs, and
/// compares their state hashes.
async fn converge(world: &Rc<World>, failures: &mut Vec<String>) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    let mut last;
    loop {
        let members: Vec<NodeId> = world
            .running
            .borrow()
            .iter()
            .filter(|(_, running)| running.stopped.borrow().is_none())
            .map(|(id, _)| *id)
            .collect();
        let mut views: BTreeMap<NodeId, BTreeMap<GroupId, GroupView>> = BTreeMap::new();
        for id in &members {
            if let Some(view) = world.views(*id).await {
                views.insert(*id, view);
            }
        }
        match converged(&views) {
            Ok(()) => {
                world.trace.note(format!("converged: {} members agree", views.len()));
                return;
            }
            Err(reason) => last = reason,
        }
        if Instant::now() > deadline {
            let rings = rings_described(world);
            failures.push(format!(
                "the healed cluster did not converge within {CONVERGE_WITHIN:?}: {last}; the shard's log ring: {}",
                rings
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn converged(views: &BTreeMap<NodeId, BTreeMap<GroupId, GroupView>>) -> Result<(), String> {
    let Some(first) = views.values().next() else { return Err("no member serves".into()) };
    for group in first.keys() {
        let of_group: BTreeMap<NodeId, &GroupView> =
            views.iter().filter_map(|(id, groups)| Some((*id, groups.get(group)?))).collect();
        let leaders: Vec<NodeId> =
            of_group.iter().filter(|(_, view)| view.leading).map(|(id, _)| *id).collect();
        let [leader] = leaders[..] else {
            return Err(format!("group {group} has leaders {leaders:?}"));
        };
        let target = of_group[&leader].last_log;
        for (id, view) in &of_group {
            let voter = of_group[&leader].voters.contains(id);
            if !voter {
                continue;
            }
            if view.applied < target || view.leader != Some(leader) {
                return Err(format!(
                    "group {group}: member {id} applied {} of {target} (leader {:?}, it knows {:?})",
                    view.applied, leader, view.leader
                ));
            }
        }
        let hashes: BTreeMap<NodeId, u64> = of_group
            .iter()
            .filter(|(id, _)| of_group[&leader].voters.contains(id))
            .map(|(id, view)| (*id, view.hash))
            .collect();
        if hashes.values().any(|hash| *hash != hashes[&leader]) {
            return Err(format!("group {group}: the members' stores differ, state hashes {hashes:x?}"));
        }
    }
    Ok(())
}

/// A linearizable read of `request` through the members in turn, until
/// one answers (at most `attempts` tries): the response, and when it was
/// asked and answered.
async fn read_through_any(
    world: &Rc<World>,
    request: RangeRequest,
    attempts: usize,
) -> Option<(nvkv::kv::types::RangeResponse, u64, u64)> {
    let micros = || Instant::now().duration_since(world.start).as_micros() as u64;
    for attempt in 0..attempts {
        let members = world.member_ids();
        let member = members[attempt % members.len()];
        if let Some(handle) = world.requests_of(member) {
            let invoked = micros();
            let request = request.clone();
            let read = world
                .on_member(member, move || {
                    async move {
                        let requests = handle.borrow().clone()?;
                        requests.range(request, true).await.ok()
                    }
                    .boxed_local()
                })
                .await
                .flatten();
            if let Some(answer) = read {
                return Some((answer.response, invoked, micros()));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// A linearizable read of every checked key, recorded as the clients'.
async fn final_reads(world: &Rc<World>) {
    for index in 0..world.scenario.workload.keys {
        let key = crate::workload::key(index);
        let request = RangeRequest { key: key.clone(), ..Default::default() };
        if let Some((response, invoked, returned)) = read_through_any(world, request, 30).await {
            let value = response.kvs.first().map(|kv| kv.value.clone());
            world.history.borrow_mut().records.push(Record {
                client: u32::MAX,
                operation: Operation::Get { key },
                invoked,
                returned: Some(Returned { at: returned, outcome: Outcome::Read(value) }),
            });
        }
    }
}

fn linearizable(records: &[Record], failures: &mut Vec<String>) {
    match nvkv::lincheck::check(records, STEPS_PER_KEY) {
        Err(error) => failures.push(format!("the history does not make sense: {error}")),
        Ok(report) => match report.verdict {
            Verdict::Linearizable => {}
            Verdict::GaveUp { keys, steps } => {
                // Not a pass, not a failure: said, so a person can look.
                eprintln!(
                    "sim: the linearizability search of keys {} gave up after {steps} steps",
                    shown_keys(&keys)
                );
            }
            Verdict::Violation { keys, records, linearized_most, stuck_at } => {
                let shown: Vec<String> = records
                    .iter()
                    .enumerate()
                    .map(|(index, record)| {
                        format!("{}{record}", if index == stuck_at { "  >> " } else { "     " })
                    })
                    .collect();
                let tail = shown.len().saturating_sub(40);
                failures.push(format!(
                    "the history of keys {} is not linearizable (at most {linearized_most} of {} operations fit one \
                     order; the first that did not is marked):\n{}",
                    shown_keys(&keys),
                    records.len(),
                    shown[tail.min(stuck_at.saturating_sub(20))..].join("\n")
                ));
            }
        },
    }
}

/// Keys as a person reads them: `a, b`.
fn shown_keys(keys: &[Vec<u8>]) -> String {
    let shown: Vec<String> = keys.iter().map(|key| String::from_utf8_lossy(key).into_owned()).collect();
    shown.join(", ")
}

/// The final read of a key whose last acknowledged write has nothing after
/// it (nor anything concurrent that may have taken effect later) must see
/// that write.
fn acknowledged_writes_kept(history: &crate::workload::History, failures: &mut Vec<String>) {
    let mut by_key: BTreeMap<&[u8], Vec<&Record>> = BTreeMap::new();
    for record in &history.records {
        // The workload's operations each touch one key.
        let Some(key) = record.operation.key() else { continue };
        by_key.entry(key).or_default().push(record);
    }
    for (key, records) in by_key {
        let Some(last_read) = records.iter().rfind(|record| record.client == u32::MAX) else {
            continue;
        };
        let writes: Vec<&&Record> =
            records.iter().filter(|record| !matches!(record.operation, Operation::Get { .. })).collect();
        let acknowledged = writes.iter().filter(|record| {
            matches!(
                record.returned.as_ref().map(|returned| &returned.outcome),
                Some(Outcome::Written | Outcome::Swapped(true))
            )
        });
        let Some(last) =
            acknowledged.max_by_key(|record| record.returned.as_ref().map(|returned| returned.at))
        else {
            continue;
        };
        let last_returned = last.returned.as_ref().map_or(0, |returned| returned.at);
        let overtaken = writes.iter().any(|record| {
            !std::ptr::eq(**record, **last)
                && record.returned.as_ref().is_none_or(|returned| returned.at > last.invoked)
                && !matches!(
                    record.returned.as_ref().map(|returned| &returned.outcome),
                    Some(Outcome::Swapped(false))
                )
        });
        if overtaken || last_read.invoked < last_returned {
            continue;
        }
        let expected = match &last.operation {
            Operation::Put { value, .. } | Operation::Cas { new: value, .. } => Some(value.clone()),
            _ => None,
        };
        let Some(Returned { outcome: Outcome::Read(seen), .. }) = &last_read.returned else { continue };
        if *seen != expected {
            failures.push(format!(
                "an acknowledged write was lost: key {} was last written by {last} and nothing came after it, but \
                 the final read saw {}",
                String::from_utf8_lossy(key),
                seen.as_deref().map_or("no key".to_string(), |value| String::from_utf8_lossy(value).into_owned())
            ));
        }
    }
}

fn watches_gap_free(history: &crate::workload::History, failures: &mut Vec<String>) {
    for log in &history.watches {
        let log = log.borrow();
        let prefix = String::from_utf8_lossy(&log.prefix).into_owned();
        let Some(started_after) = log.started_after else { continue };
        let mut previous = started_after;
        for event in &log.events {
            if event.revision <= previous {
                failures.push(format!(
                    "the watcher of {prefix} got revision {} after {previous}: a duplicate or out of order; its \
                     sessions (member, start revision, events before): {:?}; event {} of {}",
                    event.revision,
                    log.sessions,
                    log.events.iter().position(|seen| std::ptr::eq(seen, event)).unwrap_or(0),
                    log.events.len()
                ));
                break;
            }
            previous = event.revision;
        }
        let by_revision: BTreeMap<i64, &crate::workload::Seen> =
            log.events.iter().map(|event| (event.revision, event)).collect();
        for acked in &history.acked {
            if !acked.key.starts_with(&log.prefix)
                || acked.revision <= started_after
                || acked.revision > log.seen_up_to
                || log.excused.iter().any(|(from, to)| (*from..*to).contains(&acked.revision))
            {
                continue;
            }
            match by_revision.get(&acked.revision) {
                Some(seen) if seen.key == acked.key && seen.value == acked.value => {}
                Some(seen) => failures.push(format!(
                    "the watcher of {prefix} saw revision {} as a write of {} but client {} was told it wrote {}",
                    acked.revision,
                    String::from_utf8_lossy(&seen.key),
                    acked.client,
                    String::from_utf8_lossy(&acked.key)
                )),
                None => failures.push(format!(
                    "the watcher of {prefix} missed revision {} (an acknowledged write of {} by client {}), though it \
                     saw every revision up to {}; its sessions (member, start revision, events before): {:?}; the \
                     events around it: {:?}",
                    acked.revision,
                    String::from_utf8_lossy(&acked.key),
                    acked.client,
                    log.seen_up_to,
                    log.sessions,
                    log.events
                        .iter()
                        .enumerate()
                        .filter(|(_, seen)| (seen.revision - acked.revision).abs() < 3_000_000_000)
                        .map(|(index, seen)| (index, seen.revision))
                        .collect::<Vec<_>>()
                )),
            }
        }
    }
}

/// Once every lease had time to expire, no key attached to one is left.
async fn leases_end(world: &Rc<World>, failures: &mut Vec<String>) {
    if world.history.borrow().leases.is_empty() {
        return;
    }
    // The longest TTL, a leader change, and the expiry task's tick.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let request =
        RangeRequest { key: b"/lease/".to_vec(), range_end: b"/lease0".to_vec(), ..Default::default() };
    match read_through_any(world, request, 20).await {
        None => failures.push("no member answered the read of the lease keys after the heal".into()),
        Some((response, _, _)) => {
            if let Some(kv) = response.kvs.first() {
                failures.push(format!(
                    "{} keys attached to leases outlive them, {} with lease {:x} among them",
                    response.kvs.len(),
                    String::from_utf8_lossy(&kv.key),
                    kv.lease
                ));
            }
        }
    }
}

/// How full each member's log ring is, for a failure a full ring may explain.
fn rings_described(world: &World) -> String {
    world
        .ring_use()
        .into_iter()
        .map(|(member, used, capacity)| format!("member {member} {used} of {capacity} bytes"))
        .collect::<Vec<_>>()
        .join(", ")
}
