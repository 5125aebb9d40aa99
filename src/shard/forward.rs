//! Client requests that reach a member which does not lead their group:
//! writes are forwarded to the leader, and linearizable reads wait for the
//! leader's read index, both over the peer transport, so a client may send
//! anything to any member.
//!
//! It owns the rule that a forwarded request is forwarded once: the leader
//! side proposes or answers notLeader, never passes it on, so a request
//! cannot circle between members that disagree on the leader. It never
//! retries a write that reached a leader (it may still apply); one that
//! never did (no link to the leader this member knew, typically a leader
//! that just died, or a member that no longer leads and refused it before
//! proposing) is sent again to the next leader, within the group's request
//! timeout (long enough for the group to notice a dead leader and elect
//! another: about a second by default). The link itself is
//! `super::leader_link`'s.

use std::rc::Rc;
use std::time::Duration;

use super::answer::RequestError;
use super::group::ShardGroup;
/// The link is its own file, below the registry that keeps it.
pub use super::leader_link::LeaderLink;
use super::lease::{LeaseAnswer, LeaseQuery};
use super::registry::local;
use super::space;
use super::stages::Hop;
use crate::raft::GroupError;

/// The pause between two tries, while this member still names the old leader.
const FORWARD_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Writes `command` through the group's leader: proposed here when this
/// member leads, else forwarded to the leader (waiting for an election
/// when none is known, and trying the next leader while the write was
/// not sent). Answers within the group's request timeout.
pub async fn write(
    entry: Rc<ShardGroup>,
    link: &Rc<dyn LeaderLink>,
    command: Vec<u8>,
) -> Result<Vec<u8>, RequestError> {
    if entry.raft().leadership().0 {
        // Refused when out of space or over the quota, and waiting while
        // the ring is nearly full, as everywhere a write is proposed; within
        // the request timeout, as on the other paths: a group out of
        // snapshot space can keep the ring that full for good.
        entry.alarms().check_room(&command)?;
        let admitted = match admit_now(&entry, &command) {
            Some(admitted) => admitted,
            None => {
                Box::pin(
                    entry
                        .raft()
                        .within_request_timeout(async { Ok::<_, GroupError>(admit(&entry, &command).await) }),
                )
                .await?
            }
        };
        // The proposer answers within the request timeout on its own (see
        // `propose`): the common case pays no timer of its own. The write's
        // share of the ring is held until its proposal ends.
        let answer = super::propose::propose(entry.proposing(), command).await;
        drop(admitted);
        return answer;
    }
    // Forwarding, or waiting out an election, is boxed: the common case's
    // future (every put's) then carries none of its state, which is several
    // times the size of a proposal's and is copied into every call's box.
    let group = entry.clone();
    Box::pin(group.raft().within_request_timeout(async move {
        loop {
            let leader = entry.raft().wait_for_leader().await?;
            if leader.id == entry.raft().member() {
                entry.alarms().check_room(&command)?;
                let admitted = admit(&entry, &command).await;
                let answer = super::propose::propose(entry.proposing(), command).await;
                drop(admitted);
                return answer;
            }
            let started = std::time::Instant::now();
            match link.forward_write(entry.raft().group(), &leader, command.clone()).await {
                Err(GroupError::NotSent { .. }) => tokio::time::sleep(FORWARD_RETRY_PAUSE).await,
                answer => {
                    entry.stages().record_since(started, |stages| stages.hop_mut(Hop::Forwarded));
                    return Ok(answer?);
                }
            }
        }
    }))
    .await
}

/// Returns once this member may serve a linearizable read of the group: a
/// read barrier where it leads, else the leader's read index applied here.
/// A read changes nothing, so one that met a member no longer leading (an
/// election under way) is tried again, within the group's request timeout.
pub async fn linearizable(entry: Rc<ShardGroup>, link: &Rc<dyn LeaderLink>) -> Result<(), RequestError> {
    let group = entry.clone();
    group
        .raft()
        .within_request_timeout(async move {
            loop {
                match linearizable_once(entry.clone(), link).await {
                    Err(RequestError::Group(GroupError::NotLeader { .. } | GroupError::NotSent { .. })) => {
                        tokio::time::sleep(FORWARD_RETRY_PAUSE).await
                    }
                    answer => return answer,
                }
            }
        })
        .await
}

async fn linearizable_once(entry: Rc<ShardGroup>, link: &Rc<dyn LeaderLink>) -> Result<(), RequestError> {
    let leader = entry.raft().wait_for_leader().await?;
    if leader.id == entry.raft().member() {
        return entry.linearizable().await;
    }
    let index = link.read_index(entry.raft().group(), &leader).await?;
    Ok(entry.raft().wait_applied(index).await?)
}

/// Answers `query` about the group's leases at its leader: here when this
/// member leads, else asked of the leader. An answer from a member that no
/// longer leads (an election under way) is asked again of the next, within
/// the group's request timeout; a renewal sent twice renews twice, which
/// is harmless.
pub async fn leases_at_leader(
    entry: Rc<ShardGroup>,
    link: &Rc<dyn LeaderLink>,
    query: LeaseQuery,
) -> Result<LeaseAnswer, RequestError> {
    let group = entry.clone();
    group
        .raft()
        .within_request_timeout(async move {
            loop {
                let leader = entry.raft().wait_for_leader().await?;
                let answer = if leader.id == entry.raft().member() {
                    entry.lease_as_leader(query.clone()).await
                } else {
                    link.lease(entry.raft().group(), &leader, query.clone()).await
                };
                match answer {
                    Err(GroupError::NotLeader { .. } | GroupError::NotSent { .. }) => {
                        tokio::time::sleep(FORWARD_RETRY_PAUSE).await
                    }
                    answer => return Ok(answer?),
                }
            }
        })
        .await
}

/// The leader's side of [`LeaderLink::forward_write`]: proposes the write
/// if this member leads the group, else refuses it unproposed (the sender
/// may try the next leader).
pub(super) async fn write_as_leader(entry: Rc<ShardGroup>, command: Vec<u8>) -> Result<Vec<u8>, GroupError> {
    let (group, member) = (entry.raft().group(), entry.raft().member());
    let leader = entry.raft().leader();
    if leader.as_ref().is_none_or(|leader| leader.id != member) {
        let known = leader.map_or("none known".to_string(), |leader| format!("member {}", leader.id));
        return Err(GroupError::NotSent {
            group,
            leader: member,
            reason: format!("member {member} does not lead the group; its leader: {known}"),
        });
    }
    entry.alarms().check_room(&command)?;
    // The member that forwarded it waits within its own request timeout;
    // this one never waits longer.
    let admitted = match admit_now(&entry, &command) {
        Some(admitted) => admitted,
        None => {
            entry
                .raft()
                .within_request_timeout(async { Ok::<_, GroupError>(admit(&entry, &command).await) })
                .await?
        }
    };
    let answer = super::propose::propose(entry.proposing(), command).await;
    drop(admitted);
    answer.map_err(|error| match error {
        RequestError::Group(error) => error,
        other => GroupError::Unavailable { group, member, reason: other.to_string() },
    })
}

/// Admits client write `command` to this shard's ring if it has room now
/// (see `space::RingAdmission`), or `None` when it must wait. Off a reactor
/// thread, which has no shard, every write is admitted with no share.
fn admit_now(entry: &ShardGroup, command: &[u8]) -> Option<Option<space::Admitted>> {
    let Some(shard) = local() else { return Some(None) };
    let (used_bytes, ring_bytes) = shard.log.with(|log| log.ring_use());
    shard.admission.try_admit(used_bytes, ring_bytes, command, entry.alarms()).map(Some)
}

/// Returns once this shard's ring has room for client write `command`,
/// with the write's share of it (at once and none off a reactor thread).
async fn admit(entry: &ShardGroup, command: &[u8]) -> Option<space::Admitted> {
    let shard = local()?;
    Some(shard.admission.admit(&shard.log, command, entry.alarms()).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::{encode_command, Command};
    use crate::kv::types::{DeleteRangeRequest, PutRequest};
    use crate::raft::GroupConfig;
    use crate::shard::start::NoPeers;
    use crate::shard::test_support::{fill_ring, in_shard, one_group_and_log_with};

    /// A write that adds data to a leader whose shard's ring stays three
    /// quarters full (a group out of snapshot space that cannot purge) is
    /// refused as timed out, never left waiting for ever; a delete goes on.
    #[test]
    fn a_write_waiting_for_a_full_ring_on_its_leader_times_out() {
        in_shard(async {
            let (entry, log) = one_group_and_log_with(|layout| {
                layout.raft = GroupConfig { request_timeout_ms: 1_000, ..layout.raft.clone() }
            })
            .await;
            fill_ring(&entry, &log, 80).await;

            tracing::info!("a put on the leader waits for the ring, then is refused as timed out");
            let put = Command::Put(PutRequest { key: b"/more".to_vec(), ..PutRequest::default() });
            let link: Rc<dyn LeaderLink> = Rc::new(NoPeers);
            let answer = tokio::time::timeout(
                Duration::from_secs(60),
                write(entry.clone(), &link, encode_command(&put)),
            )
            .await
            .expect("the write answers within its request timeout");
            assert!(
                matches!(answer, Err(RequestError::Group(GroupError::Timeout { timeout_ms: 1_000, .. }))),
                "refused as timed out: {answer:?}"
            );

            tracing::info!("a delete goes on below nine tenths: it can shrink a store out of space");
            let delete = Command::DeleteRange(DeleteRangeRequest {
                key: b"/fill/0".to_vec(),
                ..DeleteRangeRequest::default()
            });
            let answer = tokio::time::timeout(
                Duration::from_secs(60),
                write(entry.clone(), &link, encode_command(&delete)),
            )
            .await
            .expect("the write answers within its request timeout");
            assert!(answer.is_ok(), "the delete was applied: {answer:?}");
        });
    }
}
