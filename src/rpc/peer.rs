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
use crate::shard::groups::local_group;
use crate::shard::lease::{LeaseAnswer, LeaseQuery};
use crate::shard::membership::MembershipChange;

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
        crate::shard::groups::local_membership()
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
    let members = crate::shard::groups::local_membership();
    (!members.is_empty()).then(|| members.iter().any(|known| known.member.id == member && known.voter))
}

/// Starts accepting peer connections on `listener` for the calling shard.
pub fn spawn_peer_acceptor(
    context: &ReactorContext,
    listener: std::net::TcpListener,
    identity: Arc<PeerIdentity>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let shard = context.shard();
    tokio::task::spawn_local(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, shard, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(tls) = identity.tls.clone() else {
                let port: peer_port::Client = capnp_rpc::new_client(PeerPortServer {
                    shard,
                    identity: identity.clone(),
                    certificate: None,
                });
                let network =
                    super::buffered_network(stream, rpc_twoparty_capnp::Side::Server, peer_reader_options());
                run_peer_connection(network, port, peer, shard);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let identity = identity.clone();
            // The handshake runs on its own task: a stalled peer holds
            // only its connection, never the acceptor.
            tokio::task::spawn_local(async move {
                match super::tls::accept(&tls.acceptor, stream).await {
                    Ok(stream) => {
                        // What the certificate names is checked against the
                        // member its hello claims to be.
                        let certificate = PeerCertificate::of(stream.get_ref().1);
                        let port: peer_port::Client =
                            capnp_rpc::new_client(PeerPortServer { shard, identity, certificate });
                        let network = super::buffered_stream_network(
                            stream,
                            rpc_twoparty_capnp::Side::Server,
                            peer_reader_options(),
                        );
                        run_peer_connection(network, port, peer, shard);
                    }
                    Err(reason) => tracing::info!(%peer, shard, "peer TLS handshake failed: {reason}"),
                }
            });
        }
    });
    Ok(())
}

fn run_peer_connection<R>(
    network: capnp_rpc::twoparty::VatNetwork<R>,
    port: peer_port::Client,
    peer: SocketAddr,
    shard: usize,
) where
    R: futures::AsyncRead + Unpin + 'static,
{
    let system = RpcSystem::new(Box::new(network), Some(port.client));
    super::spawn_connection(system, "peer", peer, shard);
}

struct PeerPortServer {
    shard: usize,
    identity: Arc<PeerIdentity>,
    /// What the connection's TLS certificate names; `None` over plaintext.
    certificate: Option<PeerCertificate>,
}

impl peer_port::Server for PeerPortServer {
    async fn hello(
        self: capnp::capability::Rc<Self>,
        params: peer_port::HelloParams,
        mut results: peer_port::HelloResults,
    ) -> Result<(), capnp::Error> {
        let hello = params.get()?.get_hello()?;
        if let Err(error) = self.identity.check_hello(hello, self.shard, self.certificate.as_ref()) {
            tracing::warn!(shard = self.shard, "{}", error.extra);
            return Err(error);
        }
        let mut answer = results.get();
        self.identity.write_hello(answer.reborrow().init_hello(), self.shard);
        let session = PeerSessionServer { shard: self.shard, member: self.identity.member_id };
        answer.set_session(capnp_rpc::new_client(session));
        Ok(())
    }

    async fn introduce(
        self: capnp::capability::Rc<Self>,
        params: peer_port::IntroduceParams,
        mut results: peer_port::IntroduceResults,
    ) -> Result<(), capnp::Error> {
        let hello = params.get()?.get_hello()?;
        let name = hello.get_cluster_name()?.to_str()?;
        if name != self.identity.cluster_name {
            return Err(capnp::Error::failed(format!(
                "member {} is in cluster {:?}, the asker in {name:?}; check cluster.name",
                self.identity.member_id, self.identity.cluster_name
            )));
        }
        let peer = super::incarnation::Incarnation::read(hello)?;
        self.identity
            .check_certificate(peer.member, self.certificate.as_ref())
            .map_err(capnp::Error::failed)?;
        super::incarnation::answer(
            &self.identity.keeper,
            peer,
            || voter_here(peer.member),
            results.get().init_introduction(),
        );
        Ok(())
    }
}

struct PeerSessionServer {
    shard: usize,
    member: NodeId,
}

impl PeerSessionServer {
    fn group(&self, group: GroupId) -> capnp::Result<Rc<crate::shard::groups::ShardGroup>> {
        local_group(group).ok_or_else(|| {
            capnp::Error::failed(format!(
                "group {group} does not run on shard {} of member {} (it is starting, or the members' \
                 layouts differ)",
                self.shard, self.member
            ))
        })
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> capnp::Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|error| capnp::Error::failed(format!("a peer sent {what} that does not decode: {error}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("openraft's messages and nvkv's errors always serialize")
}

impl peer_session::Server for PeerSessionServer {
    async fn append_entries(
        self: capnp::capability::Rc<Self>,
        params: peer_session::AppendEntriesParams,
        mut results: peer_session::AppendEntriesResults,
    ) -> Result<(), capnp::Error> {
        let taken = Instant::now();
        crate::reactor::note_activity();
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let request: AppendEntriesRequest<TypeConfig> = decode(params.get_request()?, "an append")?;
        let answer = entry.raft.handle_append_entries(request).await;
        let mut results = results.get();
        results.set_response(&encode(&answer));
        results.set_answer_nanos(u64::try_from(taken.elapsed().as_nanos()).unwrap_or(u64::MAX));
        Ok(())
    }

    async fn vote(
        self: capnp::capability::Rc<Self>,
        params: peer_session::VoteParams,
        mut results: peer_session::VoteResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let request: VoteRequest<NodeId> = decode(params.get_request()?, "a vote request")?;
        let proof =
            request.vote.leader_id().voted_for().and_then(|candidate| entry.raft.removal_proof(candidate));
        let answer = entry.raft.handle_vote(request).await;
        results.get().set_response(&encode(&answer));
        results.get().set_removed_at(proof.unwrap_or(0));
        Ok(())
    }

    async fn install_snapshot(
        self: capnp::capability::Rc<Self>,
        params: peer_session::InstallSnapshotParams,
        mut results: peer_session::InstallSnapshotResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let meta: SnapshotMeta = decode(params.get_meta()?, "snapshot metadata")?;
        let reception = entry.raft.receive_snapshot(meta, params.get_bytes()).map_err(refused)?;
        results.get().set_sink(capnp_rpc::new_client(SnapshotSinkServer { entry, reception }));
        Ok(())
    }

    async fn forward_write(
        self: capnp::capability::Rc<Self>,
        params: peer_session::ForwardWriteParams,
        mut results: peer_session::ForwardWriteResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let command = params.get_command()?.to_vec();
        let answer = crate::shard::forward::write_as_leader(entry, command).await;
        results.get().set_outcome(&encode(&answer));
        Ok(())
    }

    async fn read_index(
        self: capnp::capability::Rc<Self>,
        params: peer_session::ReadIndexParams,
        mut results: peer_session::ReadIndexResults,
    ) -> Result<(), capnp::Error> {
        let entry = self.group(params.get()?.get_group())?;
        let answer = entry.raft.read_index().await;
        results.get().set_index(&encode(&answer));
        Ok(())
    }

    async fn lease_at_leader(
        self: capnp::capability::Rc<Self>,
        params: peer_session::LeaseAtLeaderParams,
        mut results: peer_session::LeaseAtLeaderResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let query: LeaseQuery = decode(params.get_query()?, "a lease query")?;
        let answer = crate::shard::lease::lease_as_leader(entry, query).await;
        results.get().set_answer(&encode(&answer));
        Ok(())
    }

    async fn change_membership(
        self: capnp::capability::Rc<Self>,
        params: peer_session::ChangeMembershipParams,
        mut results: peer_session::ChangeMembershipResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let entry = self.group(params.get_group())?;
        let change: MembershipChange = decode(params.get_change()?, "a membership change")?;
        let answer = crate::shard::membership::change_as_leader(entry, change).await;
        results.get().set_outcome(&encode(&answer));
        Ok(())
    }
}

fn refused(error: crate::raft::SnapshotReceiveError) -> capnp::Error {
    capnp::Error::failed(error.to_string())
}

/// One snapshot arriving for a group. Dropped (the sender released it, or
/// the connection closed) before `finish`, it frees what it buffered.
struct SnapshotSinkServer {
    entry: Rc<crate::shard::groups::ShardGroup>,
    reception: Reception,
}

impl snapshot_sink::Server for SnapshotSinkServer {
    async fn chunk(
        self: capnp::capability::Rc<Self>,
        params: snapshot_sink::ChunkParams,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        self.reception.chunk(params.get_offset(), params.get_data()?).map_err(refused)
    }

    async fn finish(
        self: capnp::capability::Rc<Self>,
        params: snapshot_sink::FinishParams,
        mut results: snapshot_sink::FinishResults,
    ) -> Result<(), capnp::Error> {
        let vote: Vote = decode(params.get()?.get_vote()?, "a leader's vote")?;
        let answer =
            self.entry.raft.install_received_snapshot(&self.reception, vote).await.map_err(refused)?;
        results.get().set_response(&encode(&answer));
        Ok(())
    }
}

/// Connects to the peer port at `address` (over TLS when the identity has
/// it) and returns its bootstrap capability and the RPC system that must run
/// for it to answer.
async fn open_port(
    address: SocketAddr,
    identity: &PeerIdentity,
) -> Result<(peer_port::Client, RpcSystem<rpc_twoparty_capnp::Side>, Option<PeerCertificate>), String> {
    let stream =
        tokio::net::TcpStream::connect(address).await.map_err(|error| format!("{address}: {error}"))?;
    let mut certificate = None;
    let mut system = match &identity.tls {
        None => {
            let mut network =
                super::buffered_network(stream, rpc_twoparty_capnp::Side::Client, peer_reader_options());
            // This end streams snapshots; the window bounds each stream.
            network.set_window_size(SNAPSHOT_WINDOW_BYTES);
            RpcSystem::new(Box::new(network), None)
        }
        Some(tls) => {
            let _ = stream.set_nodelay(true);
            // Peers verify each other against the peer address they dial.
            let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
            let stream = super::tls::connect(&tls.connector, name, stream)
                .await
                .map_err(|reason| format!("TLS handshake with {address} failed: {reason}"))?;
            certificate = PeerCertificate::of(stream.get_ref().1);
            let mut network = super::buffered_stream_network(
                stream,
                rpc_twoparty_capnp::Side::Client,
                peer_reader_options(),
            );
            network.set_window_size(SNAPSHOT_WINDOW_BYTES);
            RpcSystem::new(Box::new(network), None)
        }
    };
    let port: peer_port::Client = system.bootstrap(rpc_twoparty_capnp::Side::Server);
    Ok((port, system, certificate))
}

/// Asks every member of `peers` (shard 0 of each, at once) to introduce
/// this member, which knows no cluster yet, before the reactors start. Each
/// answer, or why none came within [`super::incarnation::INTRODUCE_TIMEOUT`].
/// It runs on a thread of its own: the caller may be inside a runtime.
pub fn introduce(
    identity: &PeerIdentity,
    peers: &[Member],
) -> Vec<(NodeId, Result<super::incarnation::Introduction, String>)> {
    std::thread::scope(|scope| {
        scope.spawn(|| introduce_here(identity, peers)).join().unwrap_or_else(|_| {
            peers.iter().map(|peer| (peer.id, Err("asking it panicked".to_string()))).collect()
        })
    })
}

fn introduce_here(
    identity: &PeerIdentity,
    peers: &[Member],
) -> Vec<(NodeId, Result<super::incarnation::Introduction, String>)> {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            return peers
                .iter()
                .map(|peer| (peer.id, Err(format!("no runtime to ask it: {error}"))))
                .collect()
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let asks = peers.iter().map(|peer| async move {
            let ask = async {
                let address = super::incarnation::introduction_address(peer)?;
                let (port, system, certificate) = open_port(address, identity).await?;
                identity.check_certificate(peer.id, certificate.as_ref())?;
                let running = tokio::task::spawn_local(system);
                let mut request = port.introduce_request();
                identity.write_hello(request.get().init_hello(), 0);
                let answer = request.send().promise.await.map_err(|error| error.to_string())?;
                let introduction = answer
                    .get()
                    .and_then(|answer| super::incarnation::read(answer.get_introduction()?))
                    .map_err(|error| error.to_string());
                running.abort();
                introduction
            };
            let answer = tokio::time::timeout(super::incarnation::INTRODUCE_TIMEOUT, ask)
                .await
                .unwrap_or_else(|_| Err("no answer in time".to_string()));
            (peer.id, answer)
        });
        futures::future::join_all(asks).await
    })
}

/// Why a call to a peer got no answer.
enum CallFailed {
    /// No session to the peer: the call never left this member.
    NotSent(String),
    /// The call was sent (and may have been acted on), but the link failed.
    Unreachable(String),
    Timeout(Duration),
}

type Connecting = Shared<LocalBoxFuture<'static, Result<peer_session::Client, String>>>;

enum LinkState {
    Connecting(Connecting),
    Up { session: peer_session::Client, connection: u64 },
    Down { retry_at: Instant, backoff: Duration, reason: String },
}

/// This shard's connection to the same shard of one peer member.
struct Link {
    address: String,
    state: LinkState,
    /// The last TLS failure logged as a warning: an operator must see a
    /// certificate problem, once, not at every redial.
    tls_warned: Option<String>,
    /// Whether this link was ever up, and since when its dials fail.
    reached: bool,
    outage: Option<Instant>,
    /// Whether this outage was logged as a warning (once, then once more
    /// at INFO when the member is back).
    outage_warned: bool,
}

/// How long dials to a member that was never reached may fail before it
/// is a warning: the members of a new cluster start one after the other.
pub const PEER_UNREACHED_WARN_AFTER: Duration = Duration::from_secs(30);

impl Link {
    /// Says, once per outage, that a member is unreachable (at WARN: at
    /// once for a member that was reached before, after
    /// [`PEER_UNREACHED_WARN_AFTER`] for one never reached, which at the
    /// start of a cluster is only a member that has not started yet), and
    /// that it is back (at INFO). Every failed dial in between is at DEBUG.
    fn report_reachability(&mut self, target: &Member, shard: usize, failure: Option<&String>) {
        let now = Instant::now();
        match failure {
            None => {
                if let (true, Some(since)) = (self.outage_warned, self.outage) {
                    tracing::info!(
                        shard,
                        "{target} is reachable again, after {:.1} s",
                        now.duration_since(since).as_secs_f64()
                    );
                }
                self.reached = true;
                self.outage = None;
                self.outage_warned = false;
            }
            Some(reason) => {
                let since = *self.outage.get_or_insert(now);
                let overdue = now.duration_since(since) >= PEER_UNREACHED_WARN_AFTER;
                if !self.outage_warned && (self.reached || overdue) {
                    let how_long = if self.reached { "" } else { " since this member started" };
                    tracing::warn!(
                        shard,
                        "{reason}{how_long}; its groups go on without it while the other members keep a \
                         quorum, and this member keeps trying to reach it"
                    );
                    self.outage_warned = true;
                }
            }
        }
    }
}

struct Links {
    shard: usize,
    identity: Arc<PeerIdentity>,
    links: RefCell<HashMap<NodeId, Link>>,
    /// Numbers connections, so a closed one only takes down its own link.
    connections: std::cell::Cell<u64>,
}

/// The client side of one shard's peer connections; clones share them.
#[derive(Clone)]
pub struct PeerClient {
    links: Rc<Links>,
}

impl PeerClient {
    /// The peer connections of `shard`. Must be made on its reactor thread.
    pub fn new(shard: usize, identity: Arc<PeerIdentity>) -> PeerClient {
        PeerClient {
            links: Rc::new(Links {
                shard,
                identity,
                links: RefCell::default(),
                connections: std::cell::Cell::new(0),
            }),
        }
    }

    /// The session with `target`: the open one, the one being opened, or a
    /// new one unless the last failure's backoff still runs.
    async fn session(&self, target: &Member) -> Result<peer_session::Client, String> {
        let connecting = {
            let mut links = self.links.links.borrow_mut();
            let link = links.entry(target.id).or_insert_with(|| Link {
                address: target.peer_address.clone(),
                state: LinkState::Down {
                    retry_at: Instant::now(),
                    backoff: Duration::ZERO,
                    reason: String::new(),
                },
                tls_warned: None,
                reached: false,
                outage: None,
                outage_warned: false,
            });
            if link.address != target.peer_address {
                link.address = target.peer_address.clone();
                link.state = LinkState::Down {
                    retry_at: Instant::now(),
                    backoff: Duration::ZERO,
                    reason: String::new(),
                };
            }
            match &link.state {
                LinkState::Up { session, .. } => return Ok(session.clone()),
                LinkState::Connecting(connecting) => connecting.clone(),
                LinkState::Down { retry_at, reason, .. } if Instant::now() < *retry_at => {
                    return Err(reason.clone())
                }
                LinkState::Down { backoff, .. } => {
                    let connecting = self.clone().connect(target.clone(), *backoff).boxed_local().shared();
                    link.state = LinkState::Connecting(connecting.clone());
                    connecting
                }
            }
        };
        connecting.await
    }

    /// Dials `target`, says hello and records the outcome in its link.
    async fn connect(self, target: Member, backoff: Duration) -> Result<peer_session::Client, String> {
        let connection = self.links.connections.get() + 1;
        self.links.connections.set(connection);
        let result = tokio::time::timeout(PEER_CONNECT_TIMEOUT, self.dial(&target, connection))
            .await
            .unwrap_or_else(|_| Err(format!("no hello within {} ms", PEER_CONNECT_TIMEOUT.as_millis())))
            .map_err(|reason| format!("{target} (shard {}) is unreachable: {reason}", self.links.shard));
        let mut links = self.links.links.borrow_mut();
        if let Some(link) = links.get_mut(&target.id) {
            link.report_reachability(&target, self.links.shard, result.as_ref().err());
            link.state = match &result {
                Ok(session) => {
                    link.tls_warned = None;
                    LinkState::Up { session: session.clone(), connection }
                }
                Err(reason) if reason.contains("TLS") && link.tls_warned.as_ref() != Some(reason) => {
                    tracing::warn!(shard = self.links.shard, "{reason}; retrying");
                    link.tls_warned = Some(reason.clone());
                    let backoff = (backoff * 2).clamp(PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
                    LinkState::Down { retry_at: Instant::now() + backoff, backoff, reason: reason.clone() }
                }
                Err(reason) => {
                    let backoff = (backoff * 2).clamp(PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
                    tracing::debug!(
                        shard = self.links.shard,
                        "{reason}; retrying in {} ms",
                        backoff.as_millis()
                    );
                    LinkState::Down { retry_at: Instant::now() + backoff, backoff, reason: reason.clone() }
                }
            };
        }
        result
    }

    async fn dial(&self, target: &Member, connection: u64) -> Result<peer_session::Client, String> {
        let shard = self.links.shard;
        let base: SocketAddr = target
            .peer_address
            .parse()
            .map_err(|_| format!("its peer address {:?} is no IP address and port", target.peer_address))?;
        let address = shard_peer_address(base, shard)?;
        let (port, system, certificate) = open_port(address, &self.links.identity).await?;
        let links = Rc::downgrade(&self.links);
        let target_id = target.id;
        tokio::task::spawn_local(async move {
            let reason = match system.await {
                Ok(()) => "the connection closed".to_string(),
                Err(error) => format!("the connection failed: {error}"),
            };
            tracing::debug!(shard, member = target_id, "{reason}");
            // The next call redials at once.
            if let Some(links) = links.upgrade() {
                if let Some(link) = links.links.borrow_mut().get_mut(&target_id) {
                    if matches!(link.state, LinkState::Up { connection: up, .. } if up == connection) {
                        link.state =
                            LinkState::Down { retry_at: Instant::now(), backoff: Duration::ZERO, reason };
                    }
                }
            }
        });
        let mut request = port.hello_request();
        self.links.identity.write_hello(request.get().init_hello(), shard);
        let response = request.send().promise.await.map_err(|error| {
            if error.extra.contains("received fatal alert") {
                // TLS 1.3: the other end checks this member's
                // certificate after the handshake, and says no here.
                format!(
                    "TLS: it refused this member's certificate ({}); check that tls.peer_cert_file is \
                         signed by the CA in its tls.peer_ca_file",
                    error.extra
                )
            } else {
                format!("it refused the hello: {}", error.extra)
            }
        })?;
        let answer = response.get().map_err(|error| error.to_string())?;
        let hello = answer.get_hello().map_err(|error| error.to_string())?;
        // The member that answers at the address must be the one dialed,
        // and its certificate must name it.
        if hello.get_member_id() != target.id {
            return Err(format!(
                "member {} answers at its peer address, not member {}; check cluster.members",
                hello.get_member_id(),
                target.id
            ));
        }
        self.links.identity.check_hello(hello, shard, certificate.as_ref()).map_err(|error| error.extra)?;
        answer.get_session().map_err(|error| error.to_string())
    }

    /// Marks the link to `target` down after a failed call; the next call
    /// redials after the shortest backoff.
    fn failed(&self, target: &Member, reason: &str) {
        if let Some(link) = self.links.links.borrow_mut().get_mut(&target.id) {
            if matches!(link.state, LinkState::Up { .. }) {
                link.state = LinkState::Down {
                    retry_at: Instant::now() + PEER_BACKOFF_MIN,
                    backoff: PEER_BACKOFF_MIN,
                    reason: reason.to_string(),
                };
            }
        }
    }

    /// Sends one call to `target` with `send`, within `timeout`, and
    /// returns the answer's bytes.
    async fn call<F>(&self, target: &Member, timeout: Duration, send: F) -> Result<Vec<u8>, CallFailed>
    where
        F: FnOnce(peer_session::Client) -> LocalBoxFuture<'static, capnp::Result<Vec<u8>>>,
    {
        let exchange = async {
            let session = self.session(target).await.map_err(CallFailed::NotSent)?;
            send(session).await.map_err(|error| {
                let reason = format!("{target} (shard {}) failed the call: {error}", self.links.shard);
                if error.kind == capnp::ErrorKind::Disconnected {
                    self.failed(target, &reason);
                }
                CallFailed::Unreachable(reason)
            })
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(CallFailed::Timeout(timeout)))
    }

    /// One Raft call: sent, answered, and the answer mapped onto openraft's
    /// errors (a peer whose group stopped counts as unreachable).
    async fn raft_call<Response, E, F>(
        &self,
        action: RPCTypes,
        target: &Member,
        option: &RPCOption,
        send: F,
    ) -> Result<Response, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Response: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(peer_session::Client) -> LocalBoxFuture<'static, capnp::Result<Vec<u8>>>,
    {
        let timeout = option.hard_ttl();
        let bytes = self.call(target, timeout, send).await.map_err(|failed| match failed {
            CallFailed::NotSent(reason) | CallFailed::Unreachable(reason) => {
                RPCError::Unreachable(Unreachable::new(&PeerFailure(reason)))
            }
            CallFailed::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.links.identity.member_id,
                target: target.id,
                timeout,
            }),
        })?;
        let answer: Result<Response, RaftError<NodeId, E>> =
            postcard::from_bytes(&bytes).map_err(|error| {
                RPCError::Network(NetworkError::new(&PeerFailure(format!(
                    "{target} answered garbled: {error}"
                ))))
            })?;
        match answer {
            Ok(response) => Ok(response),
            Err(RaftError::Fatal(fatal)) => Err(RPCError::Unreachable(Unreachable::new(&PeerFailure(
                format!("{target}: its group stopped: {fatal}"),
            )))),
            Err(error) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(target.id, target.clone(), error)))
            }
        }
    }

    /// A forwarded request's answer, or the group error it becomes.
    async fn leader_call<T, F>(&self, group: GroupId, leader: &Member, send: F) -> Result<T, GroupError>
    where
        T: DeserializeOwned,
        F: FnOnce(peer_session::Client) -> LocalBoxFuture<'static, capnp::Result<Vec<u8>>>,
    {
        let timeout = self.links.identity.request_timeout;
        let unavailable = |reason: String| GroupError::Unavailable { group, member: leader.id, reason };
        let bytes = self.call(leader, timeout, send).await.map_err(|failed| match failed {
            CallFailed::NotSent(reason) => GroupError::NotSent { group, leader: leader.id, reason },
            CallFailed::Unreachable(reason) => unavailable(reason),
            CallFailed::Timeout(timeout) => {
                GroupError::Timeout { group, timeout_ms: timeout.as_millis() as u64 }
            }
        })?;
        postcard::from_bytes::<Result<T, GroupError>>(&bytes)
            .map_err(|error| unavailable(format!("{leader} answered garbled: {error}")))?
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PeerFailure(String);

/// `future`'s outcome, or a timeout once `step` passed without it.
async fn within<T>(
    step: Duration,
    future: impl std::future::Future<Output = capnp::Result<T>>,
) -> Result<capnp::Result<T>, CallFailed> {
    tokio::time::timeout(step, future).await.map_err(|_| CallFailed::Timeout(step))
}

impl PeerTransport for PeerClient {
    async fn append_entries(
        &self,
        group: GroupId,
        target: &Member,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendAnswer, RpcError> {
        let entries = request.entries.len() as u64;
        let bytes = encode(&request);
        if bytes.len() > APPEND_BYTES_TARGET && entries > 1 {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)));
        }
        // A member that does not say how long it took answers 0.
        let took = Rc::new(std::cell::Cell::new(0));
        let answer_nanos = took.clone();
        let response = self
            .raft_call(RPCTypes::AppendEntries, target, &option, move |session: peer_session::Client| {
                let mut call = session.append_entries_request();
                call.get().set_group(group);
                call.get().set_request(&bytes);
                Box::pin(async move {
                    let answer = call.send().promise.await?;
                    answer_nanos.set(answer.get()?.get_answer_nanos());
                    Ok(answer.get()?.get_response()?.to_vec())
                }) as LocalBoxFuture<'static, _>
            })
            .await?;
        let took = (took.get() > 0).then(|| Duration::from_nanos(took.get()));
        Ok(AppendAnswer { response, took })
    }

    async fn vote(
        &self,
        group: GroupId,
        target: &Member,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let bytes = encode(&request);
        let removed_at = Rc::new(std::cell::Cell::new(0));
        let proof = removed_at.clone();
        let answer = self
            .raft_call(RPCTypes::Vote, target, &option, move |session: peer_session::Client| {
                let mut call = session.vote_request();
                call.get().set_group(group);
                call.get().set_request(&bytes);
                Box::pin(async move {
                    let answer = call.send().promise.await?;
                    proof.set(answer.get()?.get_removed_at());
                    Ok(answer.get()?.get_response()?.to_vec())
                }) as LocalBoxFuture<'static, _>
            })
            .await;
        if let (index @ 1.., Some(entry)) = (removed_at.get(), local_group(group)) {
            crate::shard::membership::removed_by_peer(&entry, index, target.id);
        }
        answer
    }

    async fn full_snapshot(
        &self,
        group: GroupId,
        target: &Member,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, SnapshotStreamError> {
        let stream = self.stream_snapshot(group, target, &vote, snapshot, option.hard_ttl());
        let failed = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            streamed = stream => match streamed {
                Ok(response) => return Ok(response),
                Err(failed) => failed,
            },
        };
        Err(match failed {
            CallFailed::NotSent(reason) | CallFailed::Unreachable(reason) => {
                StreamingError::Unreachable(Unreachable::new(&PeerFailure(reason)))
            }
            CallFailed::Timeout(timeout) => StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: self.links.identity.member_id,
                target: target.id,
                timeout,
            }),
        })
    }
}

impl PeerClient {
    /// Streams `snapshot` of `group` to `target`: a sink, the chunks as
    /// fast as flow control lets them go, then the finish that installs
    /// it. Each of those steps must progress within `step`.
    async fn stream_snapshot(
        &self,
        group: GroupId,
        target: &Member,
        vote: &Vote,
        snapshot: Snapshot,
        step: Duration,
    ) -> Result<SnapshotResponse<NodeId>, CallFailed> {
        let shard = self.links.shard;
        let session = self.session(target).await.map_err(CallFailed::NotSent)?;
        let failed = |error: capnp::Error| {
            let reason = format!("{target} (shard {shard}) failed a snapshot of group {group}: {error}");
            if error.kind == capnp::ErrorKind::Disconnected {
                self.failed(target, &reason);
            }
            CallFailed::Unreachable(reason)
        };
        let data = snapshot.snapshot.into_inner();
        let mut begin = session.install_snapshot_request();
        begin.get().set_group(group);
        begin.get().set_meta(&encode(&snapshot.meta));
        begin.get().set_bytes(data.len() as u64);
        let began = async { begin.send().promise.await?.get()?.get_sink() };
        let sink = within(step, began).await?.map_err(&failed)?;
        for (index, chunk) in data.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
            let mut call = sink.chunk_request();
            call.get().set_offset((index * SNAPSHOT_CHUNK_BYTES) as u64);
            call.get().set_data(chunk);
            // Ready once the window has room again, not once this chunk
            // is answered.
            within(step, call.send()).await?.map_err(&failed)?;
        }
        let mut finish = sink.finish_request();
        finish.get().set_vote(&encode(vote));
        let finished = async { Ok(finish.send().promise.await?.get()?.get_response()?.to_vec()) };
        let bytes = within(step, finished).await?.map_err(&failed)?;
        postcard::from_bytes(&bytes).map_err(|error| {
            CallFailed::Unreachable(format!("{target} answered a snapshot garbled: {error}"))
        })
    }
}

impl LeaderLink for PeerClient {
    fn forward_write(
        &self,
        group: GroupId,
        leader: &Member,
        command: Vec<u8>,
    ) -> LocalBoxFuture<'static, Result<Vec<u8>, GroupError>> {
        let (client, leader) = (self.clone(), leader.clone());
        Box::pin(async move {
            client
                .leader_call(group, &leader, move |session: peer_session::Client| {
                    let mut call = session.forward_write_request();
                    call.get().set_group(group);
                    call.get().set_command(&command);
                    Box::pin(async move { Ok(call.send().promise.await?.get()?.get_outcome()?.to_vec()) })
                        as LocalBoxFuture<'static, _>
                })
                .await
        })
    }

    fn read_index(
        &self,
        group: GroupId,
        leader: &Member,
    ) -> LocalBoxFuture<'static, Result<u64, GroupError>> {
        let (client, leader) = (self.clone(), leader.clone());
        Box::pin(async move {
            client
                .leader_call(group, &leader, move |session: peer_session::Client| {
                    let mut call = session.read_index_request();
                    call.get().set_group(group);
                    Box::pin(async move { Ok(call.send().promise.await?.get()?.get_index()?.to_vec()) })
                        as LocalBoxFuture<'static, _>
                })
                .await
        })
    }

    fn lease(
        &self,
        group: GroupId,
        leader: &Member,
        query: LeaseQuery,
    ) -> LocalBoxFuture<'static, Result<LeaseAnswer, GroupError>> {
        let (client, leader, query) = (self.clone(), leader.clone(), encode(&query));
        Box::pin(async move {
            client
                .leader_call(group, &leader, move |session: peer_session::Client| {
                    let mut call = session.lease_at_leader_request();
                    call.get().set_group(group);
                    call.get().set_query(&query);
                    Box::pin(async move { Ok(call.send().promise.await?.get()?.get_answer()?.to_vec()) })
                        as LocalBoxFuture<'static, _>
                })
                .await
        })
    }

    fn forward_membership(
        &self,
        group: GroupId,
        leader: &Member,
        change: MembershipChange,
    ) -> LocalBoxFuture<'static, Result<(), GroupError>> {
        let (client, leader, change) = (self.clone(), leader.clone(), encode(&change));
        Box::pin(async move {
            client
                .leader_call(group, &leader, move |session: peer_session::Client| {
                    let mut call = session.change_membership_request();
                    call.get().set_group(group);
                    call.get().set_change(&change);
                    Box::pin(async move { Ok(call.send().promise.await?.get()?.get_outcome()?.to_vec()) })
                        as LocalBoxFuture<'static, _>
                })
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_listen_from_the_peer_port_up() {
        let base: SocketAddr = "127.0.0.1:7479".parse().expect("address");
        assert_eq!(shard_peer_address(base, 0).expect("shard 0").port(), 7479);
        assert_eq!(shard_peer_address(base, 3).expect("shard 3").port(), 7482);
        let top: SocketAddr = "127.0.0.1:65535".parse().expect("address");
        let error = shard_peer_address(top, 1).expect_err("no port above 65535");
        assert!(error.contains("leaves no port for shard 1"), "{error}");
    }

    #[test]
    fn raft_messages_and_group_errors_survive_the_codec() {
        let error = GroupError::NotLeader {
            group: 3,
            member: 2,
            leader: Some(1),
            leader_address: Some("a:1".into()),
        };
        let answer: Result<Vec<u8>, GroupError> = Err(error.clone());
        let decoded: Result<Vec<u8>, GroupError> = postcard::from_bytes(&encode(&answer)).expect("decodes");
        assert_eq!(decoded, Err(error));
        let vote = VoteRequest::<NodeId>::new(openraft::Vote::new(4, 2), None);
        let decoded: VoteRequest<NodeId> = postcard::from_bytes(&encode(&vote)).expect("decodes");
        assert_eq!(decoded, vote);
    }
}
