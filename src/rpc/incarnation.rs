//! Who a peer is beyond its member id: the namespace it runs on and the
//! cluster it belongs to, checked against what this member remembers of it
//! (the identity part of the superblock, `wal::superblock::Identity`).
//!
//! A member whose data was wiped comes back with a new namespace and no
//! memory of its votes or of the entries it acknowledged; as a voter it
//! could vote twice in a term or shrink a commit quorum and lose a committed
//! write. So a peer that a member knew by another namespace is refused while
//! it is still a voter of the member's groups, with what to do (remove it,
//! add it back as a new member in join mode, as etcd asks). Once removed
//! (or a learner), its new namespace is remembered instead. A member that
//! knows no cluster yet asks its peers first ([`introduce`]): it learns the
//! cluster's id, or that it must not start.
//!
//! This module never decides membership: it reads this shard's groups'
//! membership and refuses connections.

use std::net::SocketAddr;
use std::time::Duration;

use crate::nvkv_capnp::{introduction, peer_hello, IntroductionVerdict};
use crate::raft::{Member, NodeId};
use crate::wal::superblock::{hex, SuperblockKeeper};

/// A cluster id no member has: "none yet".
pub const NO_CLUSTER: [u8; 16] = [0; 16];

/// Why a peer may not talk to this member, beyond its cluster name and
/// layout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IncarnationRefusal {
    #[error(
        "it belongs to cluster {theirs}, this member to cluster {ours}; a member of another cluster (or of an \
         earlier one of the same name) never joins this one: check cluster.members, or start it on a new \
         namespace in join mode"
    )]
    OtherCluster { ours: String, theirs: String },
    #[error(
        "member {member} votes in this member's groups but came back with namespace {now} instead of {known}: \
         it lost its data (its votes and the entries it acknowledged) and must not vote. Remove it \
         (`nvkv member remove {member}` on a running member), start it with cluster.join = true, and add it \
         back (`nvkv member add {member} ...`): it catches up from the others as a new member"
    )]
    Wiped { member: NodeId, known: String, now: String },
    #[error(
        "member {member} came back with a new namespace and this member's groups are still starting, so it \
         cannot tell yet whether member {member} may vote; it is asked again shortly"
    )]
    Starting { member: NodeId },
    #[error("remembering member {member}'s namespace in the superblock failed: {reason}")]
    Record { member: NodeId, reason: String },
}

/// What a peer says of itself in its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incarnation {
    pub member: NodeId,
    /// `None` from a member that does not say.
    pub namespace: Option<[u8; 16]>,
    /// `None` while it knows no cluster.
    pub cluster: Option<[u8; 16]>,
}

fn id_of(bytes: &[u8]) -> Option<[u8; 16]> {
    <[u8; 16]>::try_from(bytes).ok().filter(|id| *id != NO_CLUSTER)
}

impl Incarnation {
    pub fn read(hello: peer_hello::Reader<'_>) -> capnp::Result<Incarnation> {
        Ok(Incarnation {
            member: hello.get_member_id(),
            namespace: id_of(hello.get_namespace_id()?),
            cluster: id_of(hello.get_cluster_id()?),
        })
    }
}

/// Writes this member's namespace and cluster into `hello`.
pub fn write(keeper: &SuperblockKeeper, hello: &mut peer_hello::Builder<'_>) {
    let superblock = keeper.superblock();
    hello.set_namespace_id(&superblock.namespace_id);
    if superblock.identity.cluster_id != NO_CLUSTER {
        hello.set_cluster_id(&superblock.identity.cluster_id);
    }
}

/// Judges `peer` against what this member remembers, and remembers it when
/// it may talk. `voter` says whether the peer votes in this shard's groups
/// (`None`: the groups are still starting).
pub fn judge(
    keeper: &SuperblockKeeper,
    peer: Incarnation,
    voter: impl FnOnce() -> Option<bool>,
) -> Result<(), IncarnationRefusal> {
    let identity = keeper.identity();
    if let Some(theirs) = peer.cluster {
        if identity.cluster_id != NO_CLUSTER && identity.cluster_id != theirs {
            return Err(IncarnationRefusal::OtherCluster {
                ours: hex(&identity.cluster_id),
                theirs: hex(&theirs),
            });
        }
    }
    let Some(namespace) = peer.namespace else { return Ok(()) };
    match identity.peer_namespace(peer.member) {
        Some(known) if known == namespace => return Ok(()),
        Some(known) => match voter() {
            None => return Err(IncarnationRefusal::Starting { member: peer.member }),
            Some(true) => {
                return Err(IncarnationRefusal::Wiped {
                    member: peer.member,
                    known: hex(&known),
                    now: hex(&namespace),
                })
            }
            Some(false) => tracing::info!(
                member = peer.member,
                "member {} comes back with namespace {} (it had {}) and no longer votes: remembered as a new member",
                peer.member,
                hex(&namespace),
                hex(&known)
            ),
        },
        None => {}
    }
    keeper
        .update(|identity| {
            identity.meet(peer.member, namespace);
            true
        })
        .map_err(|error| IncarnationRefusal::Record { member: peer.member, reason: error.to_string() })
}

/// What a peer answered a member that asked to be introduced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Introduction {
    /// Nothing against starting; the cluster's id, if the peer knows one.
    Welcome { cluster: Option<[u8; 16]> },
    /// The asker votes there and came back with another namespace.
    Wiped { known: [u8; 16] },
    /// The peer's groups are still starting.
    Unsure,
}

/// The server's answer to an introduction.
pub fn answer(
    keeper: &SuperblockKeeper,
    peer: Incarnation,
    voter: impl FnOnce() -> Option<bool>,
    mut out: introduction::Builder<'_>,
) {
    let identity = keeper.identity();
    if identity.cluster_id != NO_CLUSTER {
        out.set_cluster_id(&identity.cluster_id);
    }
    let verdict = match judge(keeper, peer, voter) {
        Ok(()) | Err(IncarnationRefusal::OtherCluster { .. } | IncarnationRefusal::Record { .. }) => {
            IntroductionVerdict::Welcome
        }
        Err(IncarnationRefusal::Wiped { .. }) => {
            let known = identity.peer_namespace(peer.member).unwrap_or(NO_CLUSTER);
            out.set_known_namespace(&known);
            IntroductionVerdict::Wiped
        }
        Err(IncarnationRefusal::Starting { .. }) => IntroductionVerdict::Unsure,
    };
    out.set_verdict(verdict);
}

/// Reads an introduction answer.
pub fn read(reader: introduction::Reader<'_>) -> capnp::Result<Introduction> {
    Ok(match reader.get_verdict()? {
        IntroductionVerdict::Welcome => Introduction::Welcome { cluster: id_of(reader.get_cluster_id()?) },
        IntroductionVerdict::Wiped => {
            Introduction::Wiped { known: id_of(reader.get_known_namespace()?).unwrap_or(NO_CLUSTER) }
        }
        IntroductionVerdict::Unsure => Introduction::Unsure,
    })
}

/// Why a member may not start, learned from its peers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartRefusal {
    #[error(
        "member {member}'s namespace ({now}) is blank or new, but member {peer} knew it by namespace {known} and \
         it still votes: its data was lost, with its votes and the entries it acknowledged, so it must not \
         vote again. To rejoin: on a running member run `nvkv member remove {member}`; set cluster.join = true \
         in this member's config and start it; then run `nvkv member add {member} ...` and, once it caught up, \
         `nvkv member promote {member}`"
    )]
    Wiped { member: NodeId, peer: NodeId, known: String, now: String },
    #[error(
        "members {first} and {second} belong to different clusters ({first_cluster} and {second_cluster}); \
         check cluster.members"
    )]
    Disagree { first: NodeId, second: NodeId, first_cluster: String, second_cluster: String },
    #[error(
        "this member starts in join mode but no member of the cluster answered ({reasons}); start it once \
         the cluster serves, with cluster.members naming its running members"
    )]
    NobodyAnswered { reasons: String },
    #[error(
        "member {peer} knew member {member} by another namespace, and member {peer}'s groups were still \
         starting after {waited_s} s of asking, so it cannot tell yet whether member {member} lost its data; \
         member {member} does not start on a guess: start it again once member {peer} serves"
    )]
    PeerStarting { member: NodeId, peer: NodeId, waited_s: u64 },
}

/// A member that bootstrapped its cluster while no peer answered (after a
/// power cut of the whole cluster, say) cannot tell a new cluster from one
/// it lost its data in; its peers can, once they are back. A peer that then
/// refuses it as wiped (it knew this member by another namespace, and this
/// member still votes) proves it is the member the start-up check would
/// have refused: it must stop, or it keeps campaigning with its blank log,
/// and a member that never knew its old namespace (one added since) grants
/// it votes whose higher terms depose every leader the others elect. It
/// stops as at start: with [`StartRefusal::Wiped`] (`node::serve` exits
/// with it).
///
/// Only a blind bootstrap counts: a member that learned its cluster from a
/// peer was admitted by one, and a peer that still calls it wiped lags
/// behind its removal and re-addition.
#[derive(Debug, Default)]
pub struct Halt {
    bootstrapped_blind: std::sync::atomic::AtomicBool,
    refusal: std::sync::Mutex<Option<StartRefusal>>,
    notify: tokio::sync::Notify,
}

impl Halt {
    /// This member bootstrapped its cluster with no peer's answer.
    pub fn bootstrapped_blind(&self) {
        self.bootstrapped_blind.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a peer's word that this member was wiped stops it.
    pub fn is_blind(&self) -> bool {
        self.bootstrapped_blind.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the member with `refusal` (the first one counts), if it
    /// bootstrapped blind; says whether it did.
    pub fn halt(&self, refusal: StartRefusal) -> bool {
        if !self.is_blind() {
            return false;
        }
        let mut held = self.refusal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.is_none() {
            tracing::error!("{refusal}; this member bootstrapped while no peer answered, and stops now");
            *held = Some(refusal);
        }
        self.notify.notify_one();
        true
    }

    /// Why the member must stop, once it must.
    pub fn refusal(&self) -> Option<StartRefusal> {
        self.refusal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Waits until the member must stop.
    pub async fn halted(&self) -> StartRefusal {
        loop {
            if let Some(refusal) = self.refusal() {
                return refusal;
            }
            self.notify.notified().await;
        }
    }
}

/// How long one introduction may take.
pub const INTRODUCE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a member asks again while a peer answers
/// [`Introduction::Unsure`], and for how long in all before it refuses to
/// start ([`StartRefusal::PeerStarting`]): a peer's groups start within
/// seconds of it.
pub const UNSURE_RETRY: Duration = Duration::from_millis(500);
pub const UNSURE_WAIT: Duration = Duration::from_secs(20);

/// Stops a member that bootstrapped blind ([`Halt::halt`]) and forgets its
/// cluster id, so that its next start asks its peers again and is refused
/// there while one of them answers, instead of running as the voter it was
/// until a peer refuses it once more. Returns whether it stopped.
pub fn halt_wiped(keeper: &SuperblockKeeper, halt: &Halt, refusal: StartRefusal) -> bool {
    if !halt.halt(refusal) {
        return false;
    }
    let forgotten = keeper.update(|identity| {
        let known = identity.cluster_id != NO_CLUSTER;
        identity.cluster_id = NO_CLUSTER;
        known
    });
    if let Err(error) = forgotten {
        tracing::error!(%error, "forgetting the cluster id of a member that stops as wiped failed");
    }
    true
}

/// Decides, from what each peer answered, the cluster a member without one
/// joins: `None` when no peer knows one (a new cluster), or why it must not
/// start. [`StartRefusal::PeerStarting`] says to ask again shortly
/// ([`UNSURE_RETRY`], up to [`UNSURE_WAIT`]): a peer knew this member by
/// another namespace and cannot tell yet whether it still votes.
pub fn decide(
    member: NodeId,
    own_namespace: [u8; 16],
    answers: &[(NodeId, Result<Introduction, String>)],
    join: bool,
) -> Result<Option<[u8; 16]>, StartRefusal> {
    let mut cluster: Option<(NodeId, [u8; 16])> = None;
    let mut starting = None;
    for (peer, answer) in answers {
        match answer {
            Ok(Introduction::Wiped { known }) => {
                return Err(StartRefusal::Wiped {
                    member,
                    peer: *peer,
                    known: hex(known),
                    now: hex(&own_namespace),
                })
            }
            Ok(Introduction::Welcome { cluster: Some(theirs) }) => match cluster {
                Some((first, ours)) if ours != *theirs => {
                    return Err(StartRefusal::Disagree {
                        first,
                        second: *peer,
                        first_cluster: hex(&ours),
                        second_cluster: hex(theirs),
                    })
                }
                _ => cluster = Some((*peer, *theirs)),
            },
            // The peer knew this member by another namespace: once its
            // groups run it says whether this member still votes there (it
            // lost its data) or not. Never a blind bootstrap on it.
            Ok(Introduction::Unsure) => starting = starting.or(Some(*peer)),
            Ok(Introduction::Welcome { cluster: None }) | Err(_) => {}
        }
    }
    if let Some(peer) = starting {
        return Err(StartRefusal::PeerStarting { member, peer, waited_s: 0 });
    }
    if cluster.is_none() && join {
        let reasons = answers
            .iter()
            .map(|(peer, answer)| match answer {
                Ok(answer) => format!("member {peer}: {answer:?}"),
                Err(reason) => format!("member {peer}: {reason}"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(StartRefusal::NobodyAnswered { reasons });
    }
    Ok(cluster.map(|(_, id)| id))
}

/// Where to ask `member`: shard 0 of its peer port.
pub fn introduction_address(member: &Member) -> Result<SocketAddr, String> {
    member
        .peer_address
        .parse()
        .map_err(|_| format!("its peer address {:?} is no IP address and port", member.peer_address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_member_that_bootstrapped_blind_halts_and_the_first_refusal_counts() {
        let wiped = |peer| StartRefusal::Wiped { member: 3, peer, known: "old".into(), now: "new".into() };
        let halt = Halt::default();
        assert!(!halt.halt(wiped(1)), "a member that learned its cluster from a peer does not halt");
        assert_eq!(halt.refusal(), None);
        halt.bootstrapped_blind();
        assert!(halt.halt(wiped(1)));
        assert!(halt.halt(wiped(2)));
        assert_eq!(halt.refusal(), Some(wiped(1)));
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        assert_eq!(runtime.block_on(halt.halted()), wiped(1));
    }

    #[test]
    fn a_wiped_voter_stops_a_start_and_a_known_cluster_is_joined() {
        let own = [9; 16];
        let welcome = |cluster| Ok(Introduction::Welcome { cluster });
        assert_eq!(
            decide(3, own, &[(1, welcome(Some([1; 16]))), (2, Err("down".into()))], false),
            Ok(Some([1; 16]))
        );
        assert_eq!(decide(3, own, &[(1, welcome(None)), (2, Err("down".into()))], false), Ok(None));
        let error = decide(
            3,
            own,
            &[(1, welcome(Some([1; 16]))), (2, Ok(Introduction::Wiped { known: [4; 16] }))],
            false,
        )
        .unwrap_err();
        assert!(matches!(error, StartRefusal::Wiped { member: 3, peer: 2, .. }), "{error}");
        assert!(error.to_string().contains("nvkv member remove 3"), "{error}");
        let error =
            decide(3, own, &[(1, welcome(Some([1; 16]))), (2, welcome(Some([2; 16])))], false).unwrap_err();
        assert!(matches!(error, StartRefusal::Disagree { .. }), "{error}");
        let error = decide(3, own, &[(1, Err("connection refused".into()))], true).unwrap_err();
        assert!(error.to_string().contains("connection refused"), "{error}");
    }

    /// A peer whose groups are starting and that knew the asker by another
    /// namespace (Unsure) is asked again, never taken for a new cluster,
    /// even when every other peer is down; a peer that says wiped wins.
    #[test]
    fn an_unsure_peer_is_asked_again_never_taken_for_a_new_cluster() {
        let own = [9; 16];
        let unsure = Ok(Introduction::Unsure);
        let error = decide(3, own, &[(1, Err("down".into())), (2, unsure.clone())], false).unwrap_err();
        assert!(matches!(error, StartRefusal::PeerStarting { member: 3, peer: 2, .. }), "{error}");
        let error = decide(
            3,
            own,
            &[(1, Ok(Introduction::Welcome { cluster: Some([1; 16]) })), (2, unsure.clone())],
            false,
        )
        .unwrap_err();
        assert!(matches!(error, StartRefusal::PeerStarting { peer: 2, .. }), "{error}");
        let error = decide(3, own, &[(1, unsure), (2, Ok(Introduction::Wiped { known: [4; 16] }))], false)
            .unwrap_err();
        assert!(matches!(error, StartRefusal::Wiped { peer: 2, .. }), "{error}");
    }
}
