//! Spreads group leaders across members, so every member carries write
//! load: group g prefers the voter at index `g mod voters` of its voters
//! sorted by id, and that member campaigns when someone else leads (after
//! a fresh start, where whoever won first leads, and after it returns from
//! a restart). openraft 0.9 has no leadership transfer, so a campaign is
//! the only lever, and each one costs the group an election.
//!
//! It owns the rule that keeps campaigns from becoming election storms: a
//! member campaigns only as a follower of a leader that has been in place,
//! at the same term, for `SETTLED`; only when it applied every entry it
//! holds; and at most once per `CAMPAIGN_EVERY` per group. A campaign that
//! loses (its log was behind after all, or a partition) is therefore not
//! repeated soon. It never campaigns where the member does not vote.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use super::registry::ShardGroups;
use crate::raft::{GroupId, GroupMetrics, NodeId};

/// How often the shard looks at its groups' leaders.
const SPREAD_TICK: Duration = Duration::from_millis(500);
/// How long a group's leader and term must stay unchanged before its
/// preferred member campaigns: several election timeouts, so no campaign
/// starts while an election is under way or has just ended.
const SETTLED: Duration = Duration::from_secs(3);
/// The least time between two campaigns for one group by this member.
const CAMPAIGN_EVERY: Duration = Duration::from_secs(10);

/// The member that should lead `group`: the voter at index `group mod
/// voters`, voters sorted by id. `None` without voters.
pub fn preferred_leader(group: GroupId, voters: &BTreeSet<NodeId>) -> Option<NodeId> {
    if voters.is_empty() {
        return None;
    }
    voters.iter().nth(group as usize % voters.len()).copied()
}

/// What this member last saw of one group's leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    term: u64,
    leader: Option<NodeId>,
    /// Since when `term` and `leader` have been what they are.
    since: Instant,
    /// When this member last campaigned for the group.
    campaigned: Option<Instant>,
}

impl Seen {
    /// Updates what was seen with `metrics` at `now`.
    pub fn observe(previous: Option<Seen>, metrics: &GroupMetrics, now: Instant) -> Seen {
        match previous {
            Some(seen) if seen.term == metrics.term && seen.leader == metrics.current_leader => seen,
            _ => Seen {
                term: metrics.term,
                leader: metrics.current_leader,
                since: now,
                campaigned: previous.and_then(|seen| seen.campaigned),
            },
        }
    }
}

/// Whether this member should campaign for the group now.
pub fn should_campaign(metrics: &GroupMetrics, seen: &Seen, now: Instant) -> bool {
    let member = metrics.member;
    let applied = metrics.last_applied.map(|log_id| log_id.index);
    preferred_leader(metrics.group, &metrics.voters) == Some(member)
        && metrics.state == ServerState::Follower
        && metrics.current_leader.is_some_and(|leader| leader != member)
        && applied == metrics.last_log_index
        && now.duration_since(seen.since) >= SETTLED
        && seen.campaigned.is_none_or(|at| now.duration_since(at) >= CAMPAIGN_EVERY)
}

/// Starts the leader-spreading task of this shard.
pub fn spawn_spread(groups: Rc<ShardGroups>) {
    tokio::task::spawn_local(async move {
        let mut seen: BTreeMap<GroupId, Seen> = BTreeMap::new();
        loop {
            tokio::time::sleep(SPREAD_TICK).await;
            let Some(entries) = groups.started() else { continue };
            for entry in entries {
                let (group, metrics, now) = (entry.raft().group(), entry.raft().metrics(), Instant::now());
                let mut current = Seen::observe(seen.get(&group).copied(), &metrics, now);
                if should_campaign(&metrics, &current, now) {
                    tracing::info!(
                        group,
                        leader = metrics.current_leader,
                        term = metrics.term,
                        "this member is the group's preferred leader: campaigning"
                    );
                    current.campaigned = Some(now);
                    if let Err(error) = entry.raft().campaign().await {
                        tracing::warn!(group, %error, "campaigning for the group's leadership failed");
                    }
                }
                seen.insert(group, current);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{LogId, Vote};

    fn metrics(member: NodeId, leader: Option<NodeId>, applied: u64, last: u64) -> GroupMetrics {
        GroupMetrics {
            group: 1,
            member,
            state: if leader == Some(member) { ServerState::Leader } else { ServerState::Follower },
            term: 4,
            current_leader: leader,
            vote: Vote::default(),
            last_log_index: Some(last),
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(4, 1), applied)),
            snapshot: None,
            purged: None,
            voters: [1, 2, 3].into(),
            learners: BTreeSet::new(),
            members: BTreeMap::new(),
            replication: BTreeMap::new(),
        }
    }

    #[test]
    fn each_group_prefers_one_voter_in_turn() {
        let voters: BTreeSet<NodeId> = [7, 3, 5].into();
        let preferred: Vec<_> = (0..4).map(|group| preferred_leader(group, &voters)).collect();
        assert_eq!(preferred, [Some(3), Some(5), Some(7), Some(3)]);
        assert_eq!(preferred_leader(0, &BTreeSet::new()), None);
    }

    #[test]
    fn the_preferred_member_campaigns_only_once_settled_caught_up_and_not_too_often() {
        let start = Instant::now();
        let later = start + SETTLED;
        // Group 1 prefers member 2; member 1 leads.
        let follower = metrics(2, Some(1), 10, 10);
        let seen = Seen::observe(None, &follower, start);
        assert!(!should_campaign(&follower, &seen, start), "the leader is not settled yet");
        assert!(should_campaign(&follower, &seen, later));
        assert!(!should_campaign(&metrics(3, Some(1), 10, 10), &seen, later), "member 3 is not preferred");
        assert!(!should_campaign(&metrics(2, Some(2), 10, 10), &seen, later), "it leads already");
        assert!(!should_campaign(&metrics(2, None, 10, 10), &seen, later), "an election is under way");
        assert!(!should_campaign(&metrics(2, Some(1), 8, 10), &seen, later), "it has not applied its log");

        let campaigned = Seen { campaigned: Some(later), ..seen };
        assert!(!should_campaign(&follower, &campaigned, later + SETTLED), "rate-limited");
        assert!(should_campaign(&follower, &campaigned, later + CAMPAIGN_EVERY));

        let new_term = GroupMetrics { term: 5, ..follower.clone() };
        let moved = Seen::observe(Some(campaigned), &new_term, later + SETTLED);
        assert_eq!(moved.since, later + SETTLED, "a new term restarts the settling time");
        assert_eq!(moved.campaigned, Some(later), "and keeps the last campaign");
    }
}
