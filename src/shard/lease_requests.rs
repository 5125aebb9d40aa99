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
//! lease in memory (`super::lease`, which says how). One task per
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

use std::rc::Rc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::answer::{Answered, RequestError};
use super::group::ShardGroup;
use super::lease::{LeaseAnswer, LeaseList, LeaseQuery, LeaseReading, LeaseTtl};
use super::registry::{group_on, on_shard, ShardGroups};
use super::requests::{answered, write_here, Requests};
use crate::kv::auth::Need;
use crate::kv::command::{
    decode_outcome, encode_command, encode_stamped_command, Command, CommandOutcome, CommandResponse,
};
use crate::kv::types::{KvError, LeaseGrantResponse, LeaseRevokeResponse};
use crate::raft::GroupId;

/// The longest the expiry task sleeps: new leaders, grants and revokes are
/// noticed within it (etcd checks every 500 ms too).
const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// Most key bytes a time-to-live answer carries; the rest are left out and
/// the answer says so. Keeps the answer well under the message limit.
pub const LEASE_KEYS_BYTES_MAX: usize = 4 << 20;

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

/// Asks `group`'s (on this shard) leader `query`: this member when it
/// leads, else the leader over the peer transport.
async fn ask_leader(
    groups: Rc<ShardGroups>,
    group: GroupId,
    query: LeaseQuery,
) -> Result<Answered<LeaseAnswer>, RequestError> {
    let entry = group_on(&groups, group)?;
    let answer = super::forward::leases_at_leader(entry.clone(), groups.leaders(), query).await?;
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
    if entry.lead_leases(now).is_ok() {
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
                if groups.layout().auth.with(|view| view.enabled()) {
                    let keys = keys_here(groups.clone(), group, id).await?;
                    groups.layout().auth.authorize(&caller, || {
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

/// Proposes the revoke of lease `id`, expired in the group of `entry`,
/// which this member leads; answers how many keys it deleted.
///
/// It is the leader's own proposal, like the snapshot task's compaction,
/// not a client write: never forwarded (only a leader decides an expiry),
/// and never held back while the shard's ring is three quarters full
/// (`space::RingAdmission`). A revoke only deletes, and a group out of snapshot
/// space (NOSPACE) keeps the ring that full until deletes shrink its store:
/// a revoke waiting for the ring there would wait for ever, and this
/// shard's expiry task with it, so no lease of any of its groups would
/// expire again. Revokes are few (one per expired lease of a group this
/// member leads, each time the task looks), so they cannot take the room
/// that waiting keeps for the snapshot task.
async fn revoke_expired(entry: &ShardGroup, id: i64) -> Result<i64, RequestError> {
    let command = encode_stamped_command(&Command::LeaseRevoke { id }, super::requests::revision_stamp());
    let bytes = super::propose::propose(entry.proposing(), command).await?;
    let outcome: CommandOutcome =
        decode_outcome(&bytes).map_err(|error| RequestError::Codec(error.to_string()))?;
    match outcome? {
        CommandResponse::LeaseRevoke(response) => Ok(response.deleted),
        other => Err(RequestError::Codec(format!("a lease revoke was answered with {other:?}"))),
    }
}

/// Proposes a revoke for every expired lease of every group this member
/// leads here; returns when to look again.
async fn expire_due(groups: &Rc<ShardGroups>) -> Instant {
    let now = Instant::now();
    let mut wake = now + EXPIRY_TICK;
    let Some(entries) = groups.started() else { return wake };
    for entry in entries {
        let group = entry.raft().group();
        if entry.lead_leases(now).is_err() {
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
            match revoke_expired(&entry, id).await {
                Ok(deleted) => tracing::info!(group, deleted, "lease {id:x} expired: revoked"),
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::kv::types::{DeleteRangeRequest, PutRequest, RangeRequest};
    use crate::shard::start::NoPeers;
    use crate::shard::test_support::{fill_ring, in_shard, one_group_and_log_with};

    async fn apply(entry: &ShardGroup, command: Command) -> CommandResponse {
        let bytes = super::super::propose::propose(entry.proposing(), encode_command(&command))
            .await
            .expect("proposed");
        decode_outcome(&bytes).expect("decodes").expect("applies")
    }

    /// A group out of snapshot space keeps its shard's ring three quarters
    /// full, where client writes wait (`space::RingAdmission`); the revoke of an
    /// expired lease must not wait there, or the expiry task stops for good.
    #[test]
    fn an_expired_lease_is_revoked_while_the_ring_holds_client_writes_back() {
        in_shard(async {
            let mut laid_out = None;
            let (entry, log) = one_group_and_log_with(|layout| laid_out = Some(layout.clone())).await;
            let layout = laid_out.expect("the group was laid out");
            apply(&entry, Command::LeaseGrant { id: 7, ttl_seconds: 1 }).await;
            let held = PutRequest {
                key: b"/lease/7".to_vec(),
                value: b"held".to_vec(),
                lease: 7,
                ..PutRequest::default()
            };
            apply(&entry, Command::Put(held)).await;

            fill_ring(&entry, &log, 80).await;
            let put = crate::kv::command::encode_command(&Command::Put(PutRequest {
                key: b"/more".to_vec(),
                ..PutRequest::default()
            }));
            let delete = crate::kv::command::encode_command(&Command::DeleteRange(DeleteRangeRequest {
                key: b"/fill/".to_vec(),
                range_end: b"/fill0".to_vec(),
                ..DeleteRangeRequest::default()
            }));
            let admission = Rc::new(super::super::space::RingAdmission::default());
            let (used_bytes, ring_bytes) = log.with(|log| log.ring_use());
            assert!(
                admission.try_admit(used_bytes, ring_bytes, &put, entry.alarms()).is_none(),
                "client writes that add data wait now"
            );
            assert!(
                admission.try_admit(used_bytes, ring_bytes, &delete, entry.alarms()).is_some(),
                "a delete goes on below nine tenths: it is how an operator shrinks a store out of space"
            );

            tracing::info!("lease 7's deadline passed: the expiry task revokes it all the same");
            let groups = Rc::new(ShardGroups::new(layout, Rc::new(NoPeers)));
            groups.set_started(BTreeMap::from([(0, entry.clone())]));
            let term = entry.raft().metrics().term;
            let taken_over = Instant::now() - Duration::from_secs(2);
            entry.leases().borrow_mut().follow(
                Some(term),
                entry.machine().borrow().state.store.leases(),
                taken_over,
            );
            tokio::time::timeout(Duration::from_secs(30), expire_due(&groups))
                .await
                .expect("the expiry task does not wait for the ring");
            let machine = entry.machine().borrow();
            assert!(!machine.state.store.leases().contains(7), "lease 7 is revoked");
            let request = RangeRequest { key: b"/lease/7".to_vec(), ..RangeRequest::default() };
            let range = machine.state.store.range(&request).expect("the key reads");
            assert!(range.kvs.is_empty(), "the key of the expired lease is deleted: {:?}", range.kvs);
        });
    }
}
