//! etcd's v3 gRPC API, served beside the native Cap'n Proto API so that
//! etcdctl, etcd's client libraries and kube-apiserver work with nvkv
//! unchanged: the services KV, Watch, Lease, Cluster, Maintenance and Auth
//! (users and roles in the same model as the native API's, checked on the
//! same shards). The wire
//! contract is etcd's own .proto files (proto/, compiled by build.rs).
//!
//! # How the gRPC server meets the shards
//!
//! One listener (`[etcd] address`), accepted on shard 0, which deals the
//! connections to the shards in turn through their mailboxes, as the
//! native client port does. Each shard serves its connections with hyper's
//! HTTP/2 server on its own reactor thread, in its LocalSet (hyper spawns
//! every gRPC stream through an executor that is `spawn_local`), routing
//! calls to tonic's generated services. A call reaches the shard that owns
//! its key through the same request handle (`shard::requests::Requests`) the
//! native API uses: directly when that is this shard, through one mailbox
//! hop otherwise. The hot KV calls (Range, Put, DeleteRange, Txn) skip
//! tonic's router and codec: the direct unary path (`unary`) reads, runs
//! and answers them with the same functions tonic's service calls. No gRPC thread pool stands between the client and the
//! shards, and gRPC's work spreads over the reactors with the connections.
//!
//! tonic's generated services want `Send` futures, and the request handle
//! is `Rc` (a shard's state never crosses threads). The futures are
//! wrapped in [`send_wrapper::SendWrapper`]: they never leave the reactor
//! thread, and SendWrapper panics rather than let one be polled or dropped
//! elsewhere. The other way, a `Send` front runtime handing every call to a
//! shard mailbox, would put a thread hop and a second scheduler on every
//! request of the common single-key case. (tonic's own server is not used:
//! it spawns connections on tokio's scheduler, outside the LocalSet, where
//! the shard's tasks cannot be reached.)
//!
//! # Revisions
//!
//! The revisions an etcd client sees are the store's hybrid revisions
//! (`kv::store`, "Hybrid revisions"): unique across groups, growing within
//! one. What that means for ranges, watches, progress and compaction across
//! groups is written down in docs/etcd.md and implemented here.
//!
//! This layer must never touch a shard's state except through the request
//! handle, never block a reactor, and never import the native RPC layer
//! (`rpc`): it is its sibling.

mod auth;
mod cluster;
mod convert;
mod kv;
mod lease;
pub mod proto;
mod server;
mod unary;
mod watch;

pub use server::spawn_acceptor;

use std::sync::Arc;

use crate::kv::limits::Limits;

/// The etcd version nvkv's etcd API reports (Maintenance.Status): the
/// release whose API it serves. kube-apiserver enables watch progress
/// requests (consistent reads from its cache) from 3.5.13 on.
pub const ETCD_VERSION: &str = "3.5.17";

/// What the etcd API of a member says of it; the same on every shard.
#[derive(Clone)]
pub struct EtcdInfo {
    /// etcd's cluster id: derived from `cluster.name`, the same on every member.
    pub cluster_id: u64,
    pub member_id: u64,
    pub name: String,
    /// Where this member serves the etcd API, as a URL (`http://` or `https://`).
    pub client_url: String,
    /// `http://` or `https://`, for the peer URLs of members.
    pub peer_scheme: &'static str,
    pub groups: u32,
    /// What one request may carry (`[store]`).
    pub limits: Limits,
    pub watch: crate::shard::watch::WatchOptions,
    /// The etcd port's TLS (the client port's keys, ALPN h2); `None`: plaintext.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The client connections the node holds (all its client ports).
    pub admission: Arc<crate::reactor::admission::Admission>,
}

impl EtcdInfo {
    /// etcd's cluster id for a cluster named `name`.
    pub fn cluster_id(name: &str) -> u64 {
        // Two CRCs of the name: stable across members and versions.
        (u64::from(crc32c::crc32c(name.as_bytes())) << 32)
            | u64::from(crc32c::crc32c_append(0x5eed, name.as_bytes()))
    }
}

/// The etcd API's settings for every shard.
pub type SharedInfo = Arc<EtcdInfo>;
