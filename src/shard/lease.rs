//! Leases across the groups of a node: granting and revoking them in every
//! group, renewing them, answering how long they have left, and expiring
//! them.
//!
//! A lease is global, like etcd's: it exists in every group, so a key of any
//! group can be attached to it. A grant goes to group 0 first (which picks
//! the id when none is given), then with that id to every other group at
//! once; if one refuses, the groups that granted it revoke it again and the
//! grant fails. A revoke goes to every group, each deleting its attached
//! keys at its own revision. That costs a Raft write per group for each
//! grant and revoke, and a deadline per group for each lease; what it buys
//! is that a put never leaves its key's group to check its lease.
//!
//! Expiry is not replicated data: each group's leader keeps a deadline per
//! lease in memory ([`LeaseDeadlines`]), starting every lease afresh with a
//! full TTL when it takes over (after a restart too: it cannot know how long
//! the old leader's clients waited), as etcd does. A keep-alive renews the
//! deadline at every group's leader without a Raft write. One task per
//! shard proposes a revoke through Raft for each lease that expired in a
//! group this member leads, so every replica deletes the same keys at the
//! same revision; a revoke that finds the lease already gone (a client
//! revoked it meanwhile) changes nothing. Remaining TTLs are group 0's.
//!
//! Renewals, time-to-live and listings are answered by the group's leader:
//! a member that follows the group asks its leader over the peer transport
//! (`forward::leases_at_leader`), so a client may keep a lease alive through any
//! member, as with etcd.
//!
//! This module must never decide an expiry where this member does not lead
//! the group, and never delete a key except through a Raft write.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::answer::{Answered, RequestError};
use super::group::ShardGroup;
use super::registry::{group_on, on_shard, ShardGroups};
use super::requests::{answered, write_here, Requests};
use crate::kv::auth::Need;
use crate::kv::command::{encode_command, encode_stamped_command, Command, CommandResponse};
use crate::kv::lease::LeaseTable;
use crate::kv::types::{KvError, LeaseGrantResponse, LeaseRevokeResponse};
use crate::raft::{GroupError, GroupId};

/// The longest the expiry task sleeps: new leaders, grants and revokes are
/// noticed within it (etcd checks every 500 ms too).
const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// Most key bytes a time-to-live answer carries; the rest are left out and
/// the answer says so. Keeps the answer well under the message limit.
pub const LEASE_KEYS_BYTES_MAX: usize = 4 << 20;

/// Most leases a listing carries; the rest are left out and it says so.
pub const LEASES_LISTED_MAX: usize = 100_000;

/// The deadlines of one group's leases at its leader.
///
/// Only a member that leads the group has deadlines: following the
/// leadership empties the table when this member stops leading, and starts
/// every lease with a full TTL when it leads in a new term.
#[derive(Debug, Default)]
pub struct LeaseDeadlines {
    /// The term this member leads in and set these deadlines in; `None`
    /// while it does not lead.
    term: Option<u64>,
    deadlines: BTreeMap<i64, Instant>,
}

fn deadline_after(now: Instant, ttl_seconds: i64) -> Instant {
    let ttl = Duration::from_secs(u64::try_from(ttl_seconds).unwrap_or(0));
    // The store caps TTLs at 9e9 s, which an Instant holds; saturate anyway.
    now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}

/// Seconds from `now` to `deadline`, rounded up: 0 only once it passed.
pub fn remaining_seconds(deadline: Instant, now: Instant) -> i64 {
    let left = deadline.saturating_duration_since(now);
    i64::try_from(left.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
}

impl LeaseDeadlines {
    /// Follows this member's leadership of the group: `leading_term` is the
    /// term it leads in, or `None`. A new term restarts every lease of
    /// `leases` with a full TTL from `now`; losing the lead forgets them.
    pub fn follow(&mut self, leading_term: Option<u64>, leases: &LeaseTable, now: Instant) {
        if self.term == leading_term {
            return;
        }
        self.term = leading_term;
        self.deadlines.clear();
        if leading_term.is_some() {
            for lease in leases.list() {
                self.deadlines.insert(lease.id, deadline_after(now, lease.ttl_seconds));
            }
        }
    }

    pub fn leading(&self) -> bool {
        self.term.is_some()
    }

    /// The deadline of lease `id`, granted `ttl_seconds`: a lease granted
    /// since the table last looked at the store starts with a full TTL.
    pub fn deadline(&mut self, id: i64, ttl_seconds: i64, now: Instant) -> Instant {
        *self.deadlines.entry(id).or_insert_with(|| deadline_after(now, ttl_seconds))
    }

    /// Gives lease `id` a full TTL from `now`, unless it already expired
    /// (its revoke is under way: etcd refuses to renew it too). Returns the
    /// new deadline, or `None` when it expired.
    pub fn renew(&mut self, id: i64, ttl_seconds: i64, now: Instant) -> Option<Instant> {
        if self.deadline(id, ttl_seconds, now) <= now {
            return None;
        }
        let deadline = deadline_after(now, ttl_seconds);
        self.deadlines.insert(id, deadline);
        Some(deadline)
    }

    /// Matches the table to the store's `leases` (revoked ones go, granted
    /// ones start with a full TTL) and returns the ids that expired by
    /// `now`, and the earliest deadline still ahead.
    pub fn expire(&mut self, leases: &LeaseTable, now: Instant) -> (Vec<i64>, Option<Instant>) {
        if !self.leading() {
            return (Vec::new(), None);
        }
        self.deadlines.retain(|id, _| leases.contains(*id));
        for lease in leases.list() {
            self.deadline(lease.id, lease.ttl_seconds, now);
        }
        let expired = self.deadlines.iter().filter(|(_, deadline)| **deadline <= now).map(|(id, _)| *id);
        let next = self.deadlines.values().filter(|deadline| **deadline > now).min().copied();
        (expired.collect(), next)
    }
}

/// One lease as its group-0 leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseTtl {
    pub id: i64,
    pub granted_ttl: i64,
    /// Seconds left, rounded up; 0 once expired (its revoke is under way).
    pub remaining_ttl: i64,
}

/// One lease at one group's leader.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseReading {
    /// The group's store revision.
    pub revision: i64,
    pub lease: LeaseTtl,
}

/// A lease's time to live, with its attached keys when asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseReport {
    /// Group 0's store revision.
    pub revision: i64,
    pub lease: LeaseTtl,
    /// The attached keys of every group, in key order.
    pub keys: Vec<Vec<u8>>,
    /// Keys were left out past `LEASE_KEYS_BYTES_MAX`.
    pub more_keys: bool,
}

/// Every lease, as group 0's leader sees them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseList {
    pub revision: i64,
    pub leases: Vec<LeaseTtl>,
    /// Leases were left out past `LEASES_LISTED_MAX`.
    pub more: bool,
}

/// Makes this member's deadlines of `entry` follow its leadership, and
/// refuses when it does not lead.
fn lead(entry: &ShardGroup, now: Instant) -> Result<(), GroupError> {
    let metrics = entry.raft().metrics();
    let leading = (metrics.state == openraft::ServerState::Leader).then_some(metrics.term);
    let machine = entry.machine().borrow();
    entry.leases().borrow_mut().follow(leading, machine.state.store.leases(), now);
    match leading {
        Some(_) => Ok(()),
        None => Err(GroupError::NotLeader {
            group: metrics.group,
            member: metrics.member,
            leader: metrics.current_leader,
            leader_address: None,
        }),
    }
}

/// What a group's leader is asked about its leases.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LeaseQuery {
    /// Lease `id`, renewed first when `renew`.
    Lease { id: i64, renew: bool },
    /// Every lease (asked of group 0).
    List,
}

/// A group leader's answer to a [`LeaseQuery`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LeaseAnswer {
    Lease(LeaseReading),
    List(LeaseList),
    /// The group has no such lease, or it expired before a renewal.
    NotFound(i64),
}

/// Answers `query` about `entry`'s group if this member leads it, after a
/// read barrier (so it still leads); else refuses with notLeader, and the
/// asker tries the leader it learns of next.
pub(super) async fn lease_as_leader(
    entry: Rc<ShardGroup>,
    query: LeaseQuery,
) -> Result<LeaseAnswer, GroupError> {
    entry.raft().ensure_linearizable().await?;
    let now = Instant::now();
    lead(&entry, now)?;
    let machine = entry.machine().borrow();
    let store = &machine.state.store;
    let mut deadlines = entry.leases().borrow_mut();
    match query {
        LeaseQuery::Lease { id, renew } => {
            let Some(granted_ttl) = store.leases().ttl_seconds(id) else {
                return Ok(LeaseAnswer::NotFound(id));
            };
            let deadline = if renew {
                match deadlines.renew(id, granted_ttl, now) {
                    Some(deadline) => deadline,
                    None => return Ok(LeaseAnswer::NotFound(id)),
                }
            } else {
                deadlines.deadline(id, granted_ttl, now)
            };
            let lease = LeaseTtl { id, granted_ttl, remaining_ttl: remaining_seconds(deadline, now) };
            Ok(LeaseAnswer::Lease(LeaseReading { revision: store.revision(), lease }))
        }
        LeaseQuery::List => {
            let all = store.lease_list();
            let more = all.len() > LEASES_LISTED_MAX;
            let leases = all
                .into_iter()
                .take(LEASES_LISTED_MAX)
                .map(|lease| LeaseTtl {
                    id: lease.id,
                    granted_ttl: lease.ttl_seconds,
                    remaining_ttl: remaining_seconds(
                        deadlines.deadline(lease.id, lease.ttl_seconds, now),
                        now,
                    ),
                })
                .collect();
            Ok(LeaseAnswer::List(LeaseList { revision: store.revision(), leases, more }))
        }
    }
}

/// Asks `group`'s (on this shard) leader `query`: this member when it
/// leads, else the leader over the peer transport.
async fn ask_leader(
    groups: Rc<ShardGroups>,
    group: GroupId,
    query: LeaseQuery,
) -> Result<Answered<LeaseAnswer>, RequestError> {
    let entry = group_on(&groups, group)?;
    let answer = super::forward::leases_at_leader(entry.clone(), &groups.leaders, query).await?;
    Ok(answered(&entry, group, answer))
}

/// Lease `id` of `group` (on this shard) at its leader, renewed first when
/// `renew`. A lease the group does not have, or that expired before a
/// renewal, is not found.
async fn lease_here(
    groups: Rc<ShardGroups>,
    group: GroupId,
    id: i64,
    renew: bool,
) -> Result<Answered<LeaseReading>, RequestError> {
    let answer = ask_leader(groups, group, LeaseQuery::Lease { id, renew }).await?;
    let reading = match answer.response {
        LeaseAnswer::Lease(reading) => reading,
        LeaseAnswer::NotFound(id) => return Err(KvError::LeaseNotFound(id).into()),
        other => return Err(RequestError::Codec(format!("lease {id:x} was answered with {other:?}"))),
    };
    Ok(Answered { group: answer.group, term: answer.term, member: answer.member, response: reading })
}

/// Grants lease `id` in `group` (on this shard) and starts its deadline
/// at once, if this member leads.
async fn grant_here(
    groups: Rc<ShardGroups>,
    group: GroupId,
    id: i64,
    ttl_seconds: i64,
) -> Result<Answered<LeaseGrantResponse>, RequestError> {
    let command = encode_command(&Command::LeaseGrant { id, ttl_seconds });
    let answer = write_here(groups.clone(), group, command).await?;
    let CommandResponse::LeaseGrant(response) = answer.response else {
        return Err(RequestError::Codec(format!("a lease grant was answered with {:?}", answer.response)));
    };
    let entry = group_on(&groups, group)?;
    let now = Instant::now();
    if lead(&entry, now).is_ok() {
        entry.leases().borrow_mut().renew(response.id, response.ttl_seconds, now);
    }
    Ok(Answered { group: answer.group, term: answer.term, member: answer.member, response })
}

/// The attached keys of lease `id` in `group` (on this shard), as this
/// member's store has them; none where the group lacks the lease.
async fn keys_here(groups: Rc<ShardGroups>, group: GroupId, id: i64) -> Result<Vec<Vec<u8>>, RequestError> {
    let entry = group_on(&groups, group)?;
    let machine = entry.machine().borrow();
    Ok(machine.state.store.lease_time_to_live(id).map(|lease| lease.keys).unwrap_or_default())
}

/// Every lease of group 0 (on this shard) at its leader.
async fn list_here(groups: Rc<ShardGroups>) -> Result<Answered<LeaseList>, RequestError> {
    let answer = ask_leader(groups, 0, LeaseQuery::List).await?;
    let list = match answer.response {
        LeaseAnswer::List(list) => list,
        other => return Err(RequestError::Codec(format!("a lease listing was answered with {other:?}"))),
    };
    Ok(Answered { group: answer.group, term: answer.term, member: answer.member, response: list })
}

impl Requests {
    fn every_group(&self) -> impl Iterator<Item = GroupId> {
        0..self.layout.groups()
    }

    async fn grant_in(
        &self,
        group: GroupId,
        id: i64,
        ttl_seconds: i64,
    ) -> Result<Answered<LeaseGrantResponse>, RequestError> {
        let shard = self.layout.shard_of(group);
        on_shard(&self.context, shard, move |groups| grant_here(groups, group, id, ttl_seconds)).await
    }

    async fn revoke_in(
        &self,
        group: GroupId,
        id: i64,
    ) -> Result<Answered<LeaseRevokeResponse>, RequestError> {
        let answer = self.write(group, Command::LeaseRevoke { id }).await?;
        match answer.response {
            CommandResponse::LeaseRevoke(response) => {
                Ok(Answered { group: answer.group, term: answer.term, member: answer.member, response })
            }
            other => Err(RequestError::Codec(format!("a lease revoke was answered with {other:?}"))),
        }
    }

    async fn lease_in(
        &self,
        group: GroupId,
        id: i64,
        renew: bool,
    ) -> Result<Answered<LeaseReading>, RequestError> {
        let shard = self.layout.shard_of(group);
        on_shard(&self.context, shard, move |groups| lease_here(groups, group, id, renew)).await
    }

    /// Grants a lease of `ttl_seconds` in every group; `id` 0 lets group 0
    /// pick it. Answers with group 0's header.
    pub async fn lease_grant(
        &self,
        ttl_seconds: i64,
        id: i64,
    ) -> Result<Answered<LeaseGrantResponse>, RequestError> {
        // Any user may hold leases; what a lease's keys need is checked
        // when they are put and when the lease is revoked.
        self.layout.auth.authenticate(&self.caller)?;
        let first = self.grant_in(0, id, ttl_seconds).await?;
        let id = first.response.id;
        let others =
            join_all(self.every_group().skip(1).map(|group| self.grant_in(group, id, ttl_seconds))).await;
        let Some(refusal) = others.iter().find_map(|answer| answer.as_ref().err()).cloned() else {
            return Ok(first);
        };
        // Undo it where it was granted, so no group keeps a lease the
        // client was told does not exist.
        let granted = std::iter::once(0)
            .chain(others.iter().filter_map(|answer| answer.as_ref().ok().map(|a| a.group)));
        let undone =
            join_all(granted.map(|group| async move { (group, self.revoke_in(group, id).await) })).await;
        for (group, outcome) in undone {
            if let Err(error) = outcome {
                tracing::warn!(
                    group,
                    "lease {id:x} stays granted in group {group} after a failed grant: {error}; revoke it"
                );
            }
        }
        Err(refusal)
    }

    /// Revokes lease `id` in every group, deleting its attached keys (each
    /// group at its own revision). Not found only when no group had it, so
    /// a revoke that failed halfway can be repeated.
    pub async fn lease_revoke(&self, id: i64) -> Result<Answered<LeaseRevokeResponse>, RequestError> {
        // A revoke deletes the lease's keys: the caller must be allowed to
        // write each of them (etcd's rule), checked in every group before
        // any revokes, so a refusal leaves the lease whole.
        for group in self.every_group() {
            let shard = self.layout.shard_of(group);
            let caller = self.caller.clone();
            on_shard(&self.context, shard, move |groups| async move {
                if groups.layout.auth.with(|view| view.enabled()) {
                    let keys = keys_here(groups.clone(), group, id).await?;
                    groups.layout.auth.authorize(&caller, || {
                        keys.into_iter().map(|key| Need::Write { key, range_end: Vec::new() }).collect()
                    })?;
                }
                Ok(())
            })
            .await?;
        }
        let answers = join_all(self.every_group().map(|group| self.revoke_in(group, id))).await;
        let mut total: Option<Answered<LeaseRevokeResponse>> = None;
        for answer in answers {
            match answer {
                Ok(answer) => match &mut total {
                    None => total = Some(answer),
                    Some(sum) => sum.response.deleted += answer.response.deleted,
                },
                Err(RequestError::Kv(KvError::LeaseNotFound(_))) => {}
                Err(error) => return Err(error),
            }
        }
        total.ok_or(RequestError::Kv(KvError::LeaseNotFound(id)))
    }

    /// Renews lease `id` at every group's leader. Refused (not found) when
    /// any group lacks it or had it expire: it is being revoked.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<Answered<LeaseReading>, RequestError> {
        self.layout.auth.authenticate(&self.caller)?;
        let answers = join_all(self.every_group().map(|group| self.lease_in(group, id, true))).await;
        let mut answers = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(answers.swap_remove(0))
    }

    /// How long lease `id` has left at group 0's leader, and with `keys` the
    /// attached keys of every group.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<Answered<LeaseReport>, RequestError> {
        self.layout.auth.authenticate(&self.caller)?;
        let answer = self.lease_in(0, id, false).await?;
        let LeaseReading { revision, lease } = answer.response;
        let mut report = LeaseReport { revision, lease, keys: Vec::new(), more_keys: false };
        if keys {
            let every = join_all(self.every_group().map(|group| {
                let shard = self.layout.shard_of(group);
                on_shard(&self.context, shard, move |groups| keys_here(groups, group, id))
            }))
            .await;
            let mut all = Vec::new();
            for part in every {
                all.extend(part?);
            }
            all.sort();
            // Listing keys reads their names.
            self.layout.auth.authorize(&self.caller, || {
                all.iter().map(|key| Need::Read { key: key.clone(), range_end: Vec::new() }).collect()
            })?;
            let mut bytes = 0;
            for key in all {
                bytes += key.len();
                if bytes > LEASE_KEYS_BYTES_MAX {
                    report.more_keys = true;
                    break;
                }
                report.keys.push(key);
            }
        }
        Ok(Answered { group: answer.group, term: answer.term, member: answer.member, response: report })
    }

    /// Every lease, as group 0's leader sees them.
    pub async fn lease_list(&self) -> Result<Answered<LeaseList>, RequestError> {
        self.layout.auth.authenticate(&self.caller)?;
        on_shard(&self.context, self.layout.shard_of(0), list_here).await
    }
}

/// Starts the task that revokes the expired leases of the groups this
/// member leads on this shard.
pub fn spawn_expiry(groups: Rc<ShardGroups>) {
    tokio::task::spawn_local(async move {
        loop {
            let wake = expire_due(&groups).await;
            tokio::time::sleep_until(wake).await;
        }
    });
}

/// Proposes a revoke for every expired lease of every group this member
/// leads here; returns when to look again.
async fn expire_due(groups: &Rc<ShardGroups>) -> Instant {
    let now = Instant::now();
    let mut wake = now + EXPIRY_TICK;
    let entries: Vec<(GroupId, Rc<ShardGroup>)> = match groups.groups.borrow().as_ref() {
        Some(map) => map.iter().map(|(group, entry)| (*group, entry.clone())).collect(),
        None => return wake,
    };
    for (group, entry) in entries {
        if lead(&entry, now).is_err() {
            continue;
        }
        let (expired, next) = {
            let machine = entry.machine().borrow();
            entry.leases().borrow_mut().expire(machine.state.store.leases(), now)
        };
        if let Some(next) = next {
            wake = wake.min(next);
        }
        for id in expired {
            let command =
                encode_stamped_command(&Command::LeaseRevoke { id }, super::requests::revision_stamp());
            match write_here(groups.clone(), group, command).await {
                Ok(answer) => {
                    let deleted = match answer.response {
                        CommandResponse::LeaseRevoke(response) => response.deleted,
                        _ => 0,
                    };
                    tracing::info!(group, deleted, "lease {id:x} expired: revoked");
                }
                // A client revoked it meanwhile: nothing left to do.
                Err(RequestError::Kv(KvError::LeaseNotFound(_))) => {}
                Err(error) => {
                    tracing::warn!(group, "lease {id:x} expired but its revoke failed: {error}; retrying")
                }
            }
        }
    }
    wake
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(leases: &[(i64, i64)]) -> LeaseTable {
        let mut table = LeaseTable::default();
        for (id, ttl) in leases {
            table.grant(*id, *ttl).unwrap();
        }
        table
    }

    #[test]
    fn a_new_leader_gives_every_lease_a_full_ttl_and_a_follower_keeps_none() {
        let leases = table(&[(1, 10), (2, 60)]);
        let start = Instant::now();
        let mut deadlines = LeaseDeadlines::default();
        deadlines.follow(None, &leases, start);
        assert_eq!(deadlines.expire(&leases, start + Duration::from_secs(100)), (vec![], None));

        deadlines.follow(Some(3), &leases, start);
        let late = start + Duration::from_secs(30);
        assert_eq!(deadlines.expire(&leases, late), (vec![1], Some(start + Duration::from_secs(60))));

        // Leading again in a later term, as after a restart: full TTLs anew.
        deadlines.follow(None, &leases, late);
        deadlines.follow(Some(5), &leases, late);
        assert_eq!(deadlines.expire(&leases, late), (vec![], Some(late + Duration::from_secs(10))));
        // The same term again changes nothing.
        deadlines.follow(Some(5), &leases, late + Duration::from_secs(9));
        assert_eq!(deadlines.deadline(1, 10, late + Duration::from_secs(9)), late + Duration::from_secs(10));
    }

    #[test]
    fn renewals_push_the_deadline_but_an_expired_lease_stays_expired() {
        let leases = table(&[(7, 10)]);
        let start = Instant::now();
        let mut deadlines = LeaseDeadlines::default();
        deadlines.follow(Some(1), &leases, start);
        let renewed = deadlines.renew(7, 10, start + Duration::from_secs(8));
        assert_eq!(renewed, Some(start + Duration::from_secs(18)));
        assert_eq!(deadlines.expire(&leases, start + Duration::from_secs(17)).0, Vec::<i64>::new());
        assert_eq!(deadlines.expire(&leases, start + Duration::from_secs(18)).0, vec![7]);
        assert_eq!(deadlines.renew(7, 10, start + Duration::from_secs(19)), None, "too late");
    }

    #[test]
    fn the_table_follows_grants_and_revokes_in_the_store() {
        let mut leases = table(&[(1, 5)]);
        let start = Instant::now();
        let mut deadlines = LeaseDeadlines::default();
        deadlines.follow(Some(1), &leases, start);
        // Granted after the leader took over: a full TTL from when it is seen.
        leases.grant(2, 5).unwrap();
        let later = start + Duration::from_secs(3);
        assert_eq!(deadlines.expire(&leases, later), (vec![], Some(start + Duration::from_secs(5))));
        // Revoked by a client: never reported as expired.
        leases.remove(1).unwrap();
        let after = start + Duration::from_secs(6);
        assert_eq!(deadlines.expire(&leases, after), (vec![], Some(later + Duration::from_secs(5))));
        assert_eq!(deadlines.expire(&leases, later + Duration::from_secs(5)).0, vec![2]);
    }

    #[test]
    fn remaining_seconds_round_up_and_reach_zero_only_at_the_deadline() {
        let now = Instant::now();
        assert_eq!(remaining_seconds(now + Duration::from_millis(1), now), 1);
        assert_eq!(remaining_seconds(now + Duration::from_millis(2000), now), 2);
        assert_eq!(remaining_seconds(now + Duration::from_millis(2001), now), 3);
        assert_eq!(remaining_seconds(now, now), 0);
        assert_eq!(remaining_seconds(now, now + Duration::from_secs(1)), 0);
    }
}
