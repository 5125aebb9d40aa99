//! One group's leases at its leader: the deadline of each lease
//! ([`LeaseDeadlines`]) and the leader's answers about them
//! ([`lease_as_leader`]). How leases work across the groups of a node
//! (grants and revokes in every group, keep-alives, the expiry task) is
//! `super::lease_requests`'s.
//!
//! Expiry is not replicated data: each group's leader keeps a deadline per
//! lease in memory, starting every lease afresh with a full TTL when it
//! takes over (after a restart too: it cannot know how long the old
//! leader's clients waited), as etcd does. A keep-alive renews the deadline
//! at every group's leader without a Raft write.
//!
//! This module must never decide an expiry where this member does not lead
//! the group, and never changes the store: a lease ends only through a Raft
//! write (`super::lease_requests`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::machine::KvMachine;
use crate::kv::lease::LeaseTable;
use crate::raft::{GroupError, RaftGroup};

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

/// Every lease, as group 0's leader sees them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseList {
    pub revision: i64,
    pub leases: Vec<LeaseTtl>,
    /// Leases were left out past `LEASES_LISTED_MAX`.
    pub more: bool,
}

/// Makes this member's deadlines of the group (`leases`, its store in
/// `machine`) follow its leadership as `raft` knows it, and refuses when it
/// does not lead.
pub fn lead(
    raft: &RaftGroup,
    machine: &RefCell<KvMachine>,
    leases: &RefCell<LeaseDeadlines>,
    now: Instant,
) -> Result<(), GroupError> {
    let metrics = raft.metrics();
    let leading = (metrics.state == openraft::ServerState::Leader).then_some(metrics.term);
    let machine = machine.borrow();
    leases.borrow_mut().follow(leading, machine.state.store.leases(), now);
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

/// Answers `query` about the group of `raft` (its store in `machine`, its
/// deadlines in `leases`) if this member leads it, after a read barrier (so
/// it still leads); else refuses with notLeader, and the asker tries the
/// leader it learns of next.
pub async fn lease_as_leader(
    raft: &RaftGroup,
    machine: &RefCell<KvMachine>,
    leases: &RefCell<LeaseDeadlines>,
    query: LeaseQuery,
) -> Result<LeaseAnswer, GroupError> {
    raft.ensure_linearizable().await?;
    let now = Instant::now();
    lead(raft, machine, leases, now)?;
    let machine = machine.borrow();
    let store = &machine.state.store;
    let mut deadlines = leases.borrow_mut();
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
