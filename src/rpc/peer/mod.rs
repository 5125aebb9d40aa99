//! The peer transport over Cap'n Proto: shard s of a member listens on its
//! peer port + s ([`shard_peer_address`]) and talks only to shard s of the
//! other members, one connection per member pair per shard, shared by all
//! of the shard's groups (`PeerPort` and `PeerSession` of
//! `schema/nvkv.capnp`).
//!
//! The server side hands each call to the group it names on this shard;
//! the client side ([`PeerClient`]) implements `raft::PeerTransport` and
//! the shard's `LeaderLink` (forwarded writes, read index): it connects
//! lazily, says hello (both ends check cluster name and layout, so a member
//! of another cluster is refused on every connection), reconnects after a
//! failure with a doubling backoff, bounds each call by openraft's TTL and
//! reports a down peer as unreachable.
//!
//! openraft's messages travel as Data encoded with postcard, each answer a
//! postcard `Result`. Every message is bounded by [`PEER_MESSAGE_BYTES_MAX`]:
//! the reader refuses more, and an append of several entries that would
//! encode larger than [`APPEND_BYTES_TARGET`] is answered `PayloadTooLarge`
//! so openraft sends fewer entries. A snapshot
//! is streamed whole: a `SnapshotSink` per snapshot, chunks of
//! [`SNAPSHOT_CHUNK_BYTES`] sent under Cap'n Proto's flow control (at most
//! [`SNAPSHOT_WINDOW_BYTES`] unacknowledged), then a finish that installs
//! it. This module never blocks a reactor thread and never touches another
//! shard's groups.
//!
//! Here: the limits, the shard's peer addresses and this member's identity
//! with the checks of a hello; `server` answers peers, `dial` connects to
//! them (and introduces a member that knows no cluster yet), `client` keeps
//! the links and makes the calls.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capnp::message::ReaderOptions;
use capnp_rpc::{rpc_twoparty_capnp, RpcSystem};
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use openraft::error::{
    NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::RPCTypes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::member_identity::PeerCertificate;
use crate::nvkv_capnp::{peer_hello, peer_port, peer_session, snapshot_sink};
use crate::raft::network::{RpcError, SnapshotStreamError};
use crate::raft::types::{Snapshot, SnapshotMeta, Vote};
use crate::raft::{AppendAnswer, GroupError, GroupId, Member, NodeId, PeerTransport, Reception, TypeConfig};
use crate::reactor::ReactorContext;
use crate::shard::forward::LeaderLink;
use crate::shard::leader_link::FORWARD_BATCH_WRITES_MAX;
use crate::shard::lease::{LeaseAnswer, LeaseQuery};
use crate::shard::membership::MembershipChange;
use crate::shard::PeerRequests;

/// Largest peer message, either way: an append of many entries is split
/// below [`APPEND_BYTES_TARGET`] (one entry is at most `log.batch_bytes_max`,
/// 4 MiB), a snapshot chunk is [`SNAPSHOT_CHUNK_BYTES`].
pub const PEER_MESSAGE_BYTES_MAX: usize = 16 << 20;
/// An append of several entries is cut below this size: openraft waits
/// only one heartbeat interval for an append's answer, and a catch-up
/// append of its default 300 entries of tens of KiB each took longer than
/// that on a busy machine, every time it was sent again.
pub const APPEND_BYTES_TARGET: usize = 1 << 20;
const _: () = assert!(APPEND_BYTES_TARGET <= PEER_MESSAGE_BYTES_MAX);
/// The data of one chunk of a streamed snapshot: well under a message, so
/// a chunk never nears the reader's limit, and small enough that the
/// window below keeps several in flight.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How many bytes of a snapshot stream may be sent and not yet taken by
/// the receiver (Cap'n Proto's flow-control window; it lets one chunk more
/// through): what a slow receiver has queued at most.
pub const SNAPSHOT_WINDOW_BYTES: usize = 4 << 20;
const _: () = assert!(SNAPSHOT_CHUNK_BYTES * 4 <= PEER_MESSAGE_BYTES_MAX);
/// How long dialing a peer and saying hello may take.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The wait before redialing a peer after the first failure; it doubles
/// with each failure in a row, up to [`PEER_BACKOFF_MAX`].
pub const PEER_BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const PEER_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The limits of a peer connection's message readers: one message, twice
/// (a Data field is bounds-checked, then read), plus framing.
fn peer_reader_options() -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(2 * PEER_MESSAGE_BYTES_MAX / 8 + super::REQUEST_HEADROOM_WORDS))
        .nesting_limit(super::NESTING_MAX);
    options
}

/// Where shard `shard` of the member whose peer address is `base` listens.
pub fn shard_peer_address(base: SocketAddr, shard: usize) -> Result<SocketAddr, String> {
    let port = usize::from(base.port()) + shard;
    let port = u16::try_from(port)
        .map_err(|_| format!("peer address {base} leaves no port for shard {shard}; use a lower port"))?;
    Ok(SocketAddr::new(base.ip(), port))
}

/// Who this member is to its peers; the same on every shard.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    /// The peer port's TLS (`[tls]` peer keys); `None`: plaintext.
    pub tls: Option<super::tls::PeerTls>,
    pub cluster_name: String,
    pub member_id: NodeId,
    pub shards: u32,
    pub groups: u32,
    /// How long a forwarded write or read index may take.
    pub request_timeout: Duration,
    /// This member's superblock: its namespace, its cluster, and the
    /// namespaces of the peers it met (see `super::incarnation`).
    pub keeper: Arc<crate::wal::superblock::SuperblockKeeper>,
    /// The members' names as `cluster.members` lists them: what their peer
    /// certificates must name (see `super::member_identity`).
    pub member_names: std::collections::BTreeMap<NodeId, String>,
    /// Set when a peer proves this member, bootstrapped blind, lost its
    /// data (see `super::incarnation::Halt`).
    pub halt: Arc<super::incarnation::Halt>,
}

impl PeerIdentity {
    fn write_hello(&self, mut hello: peer_hello::Builder<'_>, shard: usize) {
        hello.set_cluster_name(&self.cluster_name);
        hello.set_member_id(self.member_id);
        hello.set_shard(shard as u32);
        hello.set_shards(self.shards);
        hello.set_groups(self.groups);
        super::incarnation::write(&self.keeper, &mut hello);
    }

    /// The name of `member`: as `cluster.members` lists it, else as this
    /// shard's groups' membership records it (a member added later).
    fn member_name(&self, member: NodeId) -> Option<String> {
        if let Some(name) = self.member_names.get(&member) {
            return Some(name.clone());
        }
        crate::shard::registry::local_membership()
            .into_iter()
            .find(|known| known.member.id == member)
            .map(|known| known.member.name)
    }

    /// Why the holder of `certificate` (none over plaintext) may not speak
    /// as `member`, if it may not.
    fn check_certificate(&self, member: NodeId, certificate: Option<&PeerCertificate>) -> Result<(), String> {
        let Some(certificate) = certificate else { return Ok(()) };
        super::member_identity::check(certificate, member, self.member_name(member).as_deref())
            .map_err(|refusal| format!("member {} refuses peer member {member}: {refusal}", self.member_id))
    }

    /// Why the member that said `hello` over a connection whose other end
    /// presented `certificate` may not talk to shard `shard` of this one,
    /// if it may not.
    fn check_hello(
        &self,
        hello: peer_hello::Reader<'_>,
        shard: usize,
        certificate: Option<&PeerCertificate>,
    ) -> capnp::Result<()> {
        let name = hello.get_cluster_name()?.to_str()?;
        let member = hello.get_member_id();
        self.check_certificate(member, certificate).map_err(capnp::Error::failed)?;
        let refused = |what: String| {
            Err(capnp::Error::failed(format!(
                "member {} refuses peer member {member}: {what}",
                self.member_id
            )))
        };
        if name != self.cluster_name {
            return refused(format!(
                "it is in cluster {name:?}, this member in {:?}; check cluster.name and cluster.members of both",
                self.cluster_name
            ));
        }
        if member == self.member_id {
            return refused(format!(
                "both are member {member}; every member needs its own node.member_id and peer address"
            ));
        }
        if hello.get_shard() as usize != shard {
            return refused(format!(
                "it is shard {}, this is shard {shard}; shards pair by index",
                hello.get_shard()
            ));
        }
        if hello.get_shards() != self.shards || hello.get_groups() != self.groups {
            return refused(format!(
                "it runs {} shards and {} groups, this member {} and {}; every member needs the same \
                 reactor.shards and log.groups_per_shard",
                hello.get_shards(),
                hello.get_groups(),
                self.shards,
                self.groups
            ));
        }
        let peer = super::incarnation::Incarnation::read(hello)?;
        // Without TLS nothing else proves a peer belongs here: a member that
        // knows its cluster takes hellos only from members of the same one
        // (every running member knows its own: from its bootstrap, or asked
        // of the cluster before it started).
        if peer.cluster.is_none() && self.keeper.identity().cluster_id != super::incarnation::NO_CLUSTER {
            return refused(
                "it names no cluster id in its hello, and this member admits only members of its own cluster; \
                 start it in join mode so it learns the cluster's id, or upgrade it"
                    .to_string(),
            );
        }
        super::incarnation::judge(&self.keeper, peer, || voter_here(member))
            .or_else(|refusal| refused(refusal.to_string()))
    }
}

/// Whether `member` votes in this shard's groups; `None` while they start.
fn voter_here(member: NodeId) -> Option<bool> {
    let members = crate::shard::registry::local_membership();
    (!members.is_empty()).then(|| members.iter().any(|known| known.member.id == member && known.voter))
}

mod client;
mod dial;
mod server;
#[cfg(test)]
mod tests;

use dial::*;
use server::*;

pub use client::{PeerClient, PEER_UNREACHED_WARN_AFTER};
pub use dial::introduce;
pub use server::spawn_peer_acceptor;
