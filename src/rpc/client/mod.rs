//! The Rust client library: connects to a node's client port and calls it.
//! Runs on a single-threaded tokio runtime inside a `LocalSet` (capnp-rpc is
//! single-threaded), like the server.
//!
//! Here: the connection to one node and its KV, watch and cluster calls;
//! `sharded` sends KV calls straight to each key's shard, `answers` reads
//! results and status, `lease` and `backup` the rest.

use std::time::Duration;

use capnp_rpc::{rpc_twoparty_capnp, RpcSystem};

use super::kv::KvRequest;
use super::kv_stream_client::{KvStream, OpenError, Replied, Served, StreamCall};
pub use super::tls::ClientTls;
use crate::nvkv_capnp::node;
use crate::shard::ShardReport;

/// How long connecting may take before the endpoint counts as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {source}; is `nvkv serve` running there?")]
    Connect { endpoint: String, source: std::io::Error },
    #[error("connecting to {endpoint} timed out after {seconds} s")]
    ConnectTimeout { endpoint: String, seconds: u64 },
    #[error("TLS handshake with {endpoint} failed: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("{endpoint} failed the request: {source}")]
    Rpc { endpoint: String, source: capnp::Error },
    #[error("{endpoint} refused the request: {error}")]
    Refused { endpoint: String, error: super::kv::ServerError },
    #[error("{reason}; the call may or may not have taken effect, reconnect and check")]
    Stream { endpoint: String, reason: String },
}

/// A key as `-w json` shows it: the store's `KeyValue` with key and value
/// rendered as text (the store's type stays free of presentation).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyValueView {
    #[serde(serialize_with = "as_text")]
    pub key: Vec<u8>,
    #[serde(serialize_with = "as_text")]
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

fn as_text<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(bytes))
}

impl From<crate::kv::types::KeyValue> for KeyValueView {
    fn from(kv: crate::kv::types::KeyValue) -> KeyValueView {
        KeyValueView {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PutAnswer {
    pub header: super::kv::Header,
    pub prev_kv: Option<KeyValueView>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RangeAnswer {
    pub header: super::kv::Header,
    pub kvs: Vec<KeyValueView>,
    pub count: i64,
    pub more: bool,
}

/// A transaction's answer: whether the compares held, and each operation's
/// response (in the store's types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnAnswer {
    pub header: super::kv::Header,
    pub response: crate::kv::types::TxnResponse,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeleteAnswer {
    pub header: super::kv::Header,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValueView>,
}

/// A node's status, as the client sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NodeStatus {
    pub endpoint: String,
    pub member_id: u64,
    pub version: String,
    pub namespace: String,
    pub backend: String,
    pub durability: String,
    pub uptime_ms: u64,
    /// CPU time (user and system) the node's process used since it started.
    pub process_cpu_seconds: f64,
    pub shards: Vec<ShardReport>,
    /// Every group of the node, in group order: its leader, its log and
    /// store, and (where this node leads) each member's matched index.
    pub groups: Vec<crate::shard::GroupReport>,
    /// Every member the node knows, with its addresses.
    pub members: Vec<super::cluster::MemberInfo>,
}

/// A connection to one node. Clones share it.
#[derive(Clone)]
pub struct Connection {
    endpoint: String,
    /// Whether the connection speaks TLS (errors of a plaintext one hint at --cacert).
    tls: bool,
    node: node::Client,
    kv: crate::nvkv_capnp::k_v::Client,
    cluster: crate::nvkv_capnp::cluster::Client,
    maintenance: crate::nvkv_capnp::maintenance::Client,
    lease: crate::nvkv_capnp::lease::Client,
    /// The KV stream the KV calls use, when one is open.
    stream: Option<KvStream>,
    /// How this connection was dialed, to open its KV stream again for a session.
    dialing: ClientTls,
    /// The session token its calls act with, once one was used.
    token: Option<String>,
    /// What keeps the connection from idling out, while a clone lives.
    liveness: std::rc::Rc<keepalive::Liveness>,
}

/// A fresh connection to a node, in plaintext or TLS.
enum Dialed {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// Connects to `endpoint` within [`CONNECT_TIMEOUT`], with the TLS
/// handshake when `tls` is on.
async fn dial(endpoint: &str, tls: &ClientTls) -> Result<Dialed, ClientError> {
    let timed_out =
        || ClientError::ConnectTimeout { endpoint: endpoint.to_string(), seconds: CONNECT_TIMEOUT.as_secs() };
    let connecting = tokio::net::TcpStream::connect(endpoint);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| timed_out())?
        .map_err(|source| ClientError::Connect { endpoint: endpoint.to_string(), source })?;
    let _ = stream.set_nodelay(true);
    let Some(connector) = tls.connector() else { return Ok(Dialed::Plain(stream)) };
    let tls_error = |reason| ClientError::Tls { endpoint: endpoint.to_string(), reason };
    let name = super::tls::server_name(endpoint).map_err(tls_error)?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, super::tls::connect(connector, name, stream))
        .await
        .map_err(|_| timed_out())?
        .map_err(tls_error)?;
    Ok(Dialed::Tls(Box::new(stream)))
}

impl Connection {
    /// Connects to `endpoint` (host:port) in plaintext. Must be called
    /// inside a `LocalSet`.
    pub async fn open(endpoint: &str) -> Result<Connection, ClientError> {
        Connection::open_with(endpoint, &ClientTls::plaintext()).await
    }

    /// Connects to `endpoint` (host:port), over TLS when `tls` is on (the
    /// node's certificate must name the endpoint's host). Must be called
    /// inside a `LocalSet`.
    pub async fn open_with(endpoint: &str, tls: &ClientTls) -> Result<Connection, ClientError> {
        let mut system = match dial(endpoint, tls).await? {
            Dialed::Plain(stream) => {
                let network = super::buffered_network(
                    stream,
                    rpc_twoparty_capnp::Side::Client,
                    super::reader_options(),
                );
                RpcSystem::new(Box::new(network), None)
            }
            Dialed::Tls(stream) => {
                let network = super::buffered_stream_network(
                    *stream,
                    rpc_twoparty_capnp::Side::Client,
                    super::reader_options(),
                );
                RpcSystem::new(Box::new(network), None)
            }
        };
        let node: node::Client = system.bootstrap(rpc_twoparty_capnp::Side::Server);
        let shown = endpoint.to_string();
        tokio::task::spawn_local(async move {
            if let Err(error) = system.await {
                tracing::debug!(endpoint = %shown, %error, "connection closed");
            }
        });
        // Pipelined: the first KV call does not wait for this answer.
        let kv = node.kv_request().send().pipeline.get_kv();
        let cluster = node.cluster_request().send().pipeline.get_cluster();
        let maintenance = node.maintenance_request().send().pipeline.get_maintenance();
        let lease = node.lease_request().send().pipeline.get_lease();
        let liveness = std::rc::Rc::default();
        keepalive::start(&liveness, node.clone(), endpoint);
        Ok(Connection {
            endpoint: endpoint.to_string(),
            tls: tls.is_on(),
            node,
            kv,
            cluster,
            maintenance,
            lease,
            stream: None,
            dialing: tls.clone(),
            token: None,
            liveness,
        })
    }

    /// Also opens a KV stream to the same endpoint, which the KV calls of
    /// this connection use from then on (see `kv_stream_client`), acting
    /// with this connection's session when it has one. A node that does not
    /// take KV streams keeps serving them over RPC; a node that refuses the
    /// session's token answers its typed refusal.
    pub async fn open_kv_stream(&mut self) -> Result<(), ClientError> {
        let token = self.token.as_deref();
        let opened = match dial(&self.endpoint, &self.dialing).await? {
            Dialed::Plain(stream) => {
                let (reader, writer) = stream.into_split();
                KvStream::open(reader, writer, &self.endpoint, CONNECT_TIMEOUT, token).await
            }
            Dialed::Tls(stream) => {
                let (reader, writer) = tokio::io::split(*stream);
                KvStream::open(reader, writer, &self.endpoint, CONNECT_TIMEOUT, token).await
            }
        };
        match opened {
            Ok(stream) => {
                self.liveness.set_stream(Some(&stream));
                self.stream = Some(stream);
            }
            Err(OpenError::Refused(error)) => {
                return Err(ClientError::Refused { endpoint: self.endpoint.clone(), error })
            }
            Err(OpenError::Failed(reason)) => {
                tracing::debug!(endpoint = %self.endpoint, "KV calls go over RPC: {reason}")
            }
        }
        Ok(())
    }

    /// Whether the KV calls of this connection go over a KV stream.
    pub fn has_kv_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Sends a KV call over this connection's KV stream; `None` without one.
    async fn stream_call(&self, call: StreamCall) -> Option<Result<Served, ClientError>> {
        let stream = self.stream.as_ref()?;
        Some(
            stream
                .call(call)
                .await
                .map_err(|reason| ClientError::Stream { endpoint: self.endpoint.clone(), reason }),
        )
    }

    /// A round trip of the KV stream that touches no group, and the time
    /// the node said it spent on it; `None` without a KV stream.
    pub async fn ping(&self) -> Option<Result<Duration, ClientError>> {
        Some(self.stream_call(StreamCall::Ping).await?.map(|(_, served)| served))
    }

    pub(super) fn node(&self) -> &node::Client {
        &self.node
    }

    /// Makes `node` (the session of `token`) the one every later call goes
    /// through, the KV stream's too: opened again with the token.
    pub(super) async fn set_session(&mut self, node: node::Client, token: &str) -> Result<(), ClientError> {
        self.token = Some(token.to_string());
        self.liveness.set_stream(None);
        if self.stream.take().is_some() {
            self.open_kv_stream().await?;
        }
        self.kv = node.kv_request().send().pipeline.get_kv();
        self.cluster = node.cluster_request().send().pipeline.get_cluster();
        self.maintenance = node.maintenance_request().send().pipeline.get_maintenance();
        self.lease = node.lease_request().send().pipeline.get_lease();
        self.node = node;
        Ok(())
    }

    pub(super) fn rpc_error(&self, mut source: capnp::Error) -> ClientError {
        let closed =
            matches!(source.kind, capnp::ErrorKind::Disconnected | capnp::ErrorKind::PrematureEndOfFile);
        if !self.tls && closed {
            // A node that speaks TLS closes a plaintext connection at its
            // first bytes: say what to do about it.
            source.extra.push_str(&format!(
                " (if {} serves TLS, pass --cacert with the CA that signed its certificate)",
                self.endpoint
            ));
        } else if self.tls && source.extra.contains("received fatal alert") {
            // TLS 1.3 tells a client that its certificate was refused (or
            // missing) only after the handshake, at its first request.
            source.extra.push_str(
                " (the node refused this client's certificate or wanted one: pass --cert and --key with a \
                 certificate signed by the node's tls.client_ca_file)",
            );
        }
        ClientError::Rpc { endpoint: self.endpoint.clone(), source }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sets `key` to `value`.
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        prev_kv: bool,
    ) -> Result<PutAnswer, ClientError> {
        Ok(self.put_served(key, value, lease, prev_kv).await?.0)
    }

    /// [`Connection::put`], and the time the node said the put spent in it
    /// (known over a KV stream only).
    pub async fn put_served(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        prev_kv: bool,
    ) -> Result<(PutAnswer, Option<Duration>), ClientError> {
        let put = crate::kv::types::PutRequest { key: key.to_vec(), value: value.to_vec(), lease, prev_kv };
        if let Some(served) = self.stream_call(StreamCall::Kv(KvRequest::Put(put))).await {
            return match served? {
                (Replied::Put(answer), served) => Ok((self.refused(answer)?, Some(served))),
                (other, _) => Err(self.mismatched("a put", &other)),
            };
        }
        let mut request = self.kv.put_request();
        {
            let mut params = request.get();
            params.set_key(key);
            params.set_value(value);
            params.set_lease(lease);
            params.set_prev_kv(prev_kv);
        }
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        Ok((self.answer(response.get().and_then(|results| read_put_result(results.get_result()?)))?, None))
    }

    fn refused<T>(&self, answer: Result<T, super::kv::ServerError>) -> Result<T, ClientError> {
        answer.map_err(|error| ClientError::Refused { endpoint: self.endpoint.clone(), error })
    }

    fn mismatched(&self, call: &str, reply: &Replied) -> ClientError {
        let reason = format!("the KV stream to {} answered {call} with {reply:?}", self.endpoint);
        ClientError::Stream { endpoint: self.endpoint.clone(), reason }
    }

    /// Reads a key or a range; `serializable` reads this member's state as
    /// it is instead of passing a read barrier first.
    pub async fn range(
        &self,
        query: &crate::kv::types::RangeRequest,
        serializable: bool,
    ) -> Result<RangeAnswer, ClientError> {
        let call = KvRequest::Range { request: query.clone(), linearizable: !serializable };
        if let Some(served) = self.stream_call(StreamCall::Kv(call)).await {
            return match served? {
                (Replied::Range(answer), _) => self.refused(answer),
                (other, _) => Err(self.mismatched("a range", &other)),
            };
        }
        let mut request = self.kv.range_request();
        {
            let mut params = request.get();
            params.set_key(&query.key);
            params.set_range_end(&query.range_end);
            params.set_limit(query.limit);
            params.set_revision(query.revision);
            params.set_count_only(query.count_only);
            params.set_keys_only(query.keys_only);
            params.set_serializable(serializable);
        }
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| read_range_result(results.get_result()?)))
    }

    /// Deletes a key or a range.
    pub async fn delete_range(
        &self,
        key: &[u8],
        range_end: &[u8],
        prev_kv: bool,
    ) -> Result<DeleteAnswer, ClientError> {
        let delete = crate::kv::types::DeleteRangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            prev_kv,
        };
        if let Some(served) = self.stream_call(StreamCall::Kv(KvRequest::DeleteRange(delete))).await {
            return match served? {
                (Replied::DeleteRange(answer), _) => self.refused(answer),
                (other, _) => Err(self.mismatched("a delete", &other)),
            };
        }
        let mut request = self.kv.delete_range_request();
        {
            let mut params = request.get();
            params.set_key(key);
            params.set_range_end(range_end);
            params.set_prev_kv(prev_kv);
        }
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| read_delete_range_result(results.get_result()?)))
    }

    /// Runs a transaction (all its keys in one group).
    pub async fn txn(&self, txn: &crate::kv::types::TxnRequest) -> Result<TxnAnswer, ClientError> {
        if let Some(served) = self.stream_call(StreamCall::Kv(KvRequest::Txn(txn.clone()))).await {
            return match served? {
                (Replied::Txn(answer), _) => self.refused(answer),
                (other, _) => Err(self.mismatched("a txn", &other)),
            };
        }
        let mut request = self.kv.txn_request();
        super::kv::write_txn_request(request.get().init_request(), txn);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| read_txn_result(results.get_result()?)))
    }

    /// Forgets the history of `group` below `revision`.
    pub async fn compact(&self, group: u32, revision: i64) -> Result<super::kv::Header, ClientError> {
        let mut request = self.kv.compact_request();
        request.get().set_group(group);
        request.get().set_revision(revision);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| read_compact_result(results.get_result()?)))
    }

    pub(super) fn answer<T>(
        &self,
        decoded: capnp::Result<Result<T, super::kv::ServerError>>,
    ) -> Result<T, ClientError> {
        match decoded {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(ClientError::Refused { endpoint: self.endpoint.clone(), error }),
            Err(error) => Err(self.rpc_error(error)),
        }
    }

    /// The node's status: who it is, how it runs, each shard's log, every
    /// group, and the members it knows.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        let response =
            self.node.status_request().send().promise.await.map_err(|error| self.rpc_error(error))?;
        let decode = || -> capnp::Result<NodeStatus> {
            let status = response.get()?.get_status()?;
            let text = |reader: capnp::Result<capnp::text::Reader<'_>>| -> capnp::Result<String> {
                Ok(reader?.to_string()?)
            };
            let mut shards = Vec::new();
            for shard in status.get_shards()? {
                shards.push(ShardReport {
                    shard: shard.get_shard(),
                    core: shard.get_core(),
                    groups: shard.get_groups(),
                    log_head_sequence: shard.get_log_head_sequence(),
                    log_tail_sequence: shard.get_log_tail_sequence(),
                    log_used_bytes: shard.get_log_used_bytes(),
                    log_capacity_bytes: shard.get_log_capacity_bytes(),
                    queue_wait_p50_us: shard.get_queue_wait_p50_us(),
                    queue_wait_p99_us: shard.get_queue_wait_p99_us(),
                    device_write_p50_us: shard.get_device_write_p50_us(),
                    device_write_p99_us: shard.get_device_write_p99_us(),
                    log_writes: shard.get_log_writes(),
                    log_records_written: shard.get_log_records_written(),
                    proposal_wait_p50_us: shard.get_proposal_wait_p50_us(),
                    proposal_wait_p99_us: shard.get_proposal_wait_p99_us(),
                    raft_p50_us: shard.get_raft_p50_us(),
                    raft_p99_us: shard.get_raft_p99_us(),
                    apply_p50_us: shard.get_apply_p50_us(),
                    apply_p99_us: shard.get_apply_p99_us(),
                    end_to_end_p50_us: shard.get_end_to_end_p50_us(),
                    end_to_end_p99_us: shard.get_end_to_end_p99_us(),
                    proposals: shard.get_proposals(),
                    proposed_commands: shard.get_proposed_commands(),
                    device_written_bytes: shard.get_device_written_bytes(),
                    device_flushes: shard.get_device_flushes(),
                    device_errors: shard.get_device_errors(),
                    snapshots_written: shard.get_snapshots_written(),
                    snapshot_written_bytes: shard.get_snapshot_written_bytes(),
                    reactor_busy_seconds: shard.get_reactor_busy_seconds(),
                    reactor_idle_seconds: shard.get_reactor_idle_seconds(),
                    hops: shard
                        .get_hops()?
                        .iter()
                        .map(|hop| {
                            Ok(crate::shard::stages::HopReport {
                                name: text(hop.get_name())?,
                                count: hop.get_count(),
                                sum_us: hop.get_sum_us(),
                                p50_us: hop.get_p50_us(),
                                p99_us: hop.get_p99_us(),
                                histogram: hop.get_histogram()?.to_vec(),
                            })
                        })
                        .collect::<capnp::Result<_>>()?,
                });
            }
            let mut groups = Vec::new();
            for group in status.get_groups()? {
                groups.push(super::cluster::read_group_status(group)?);
            }
            Ok(NodeStatus {
                endpoint: self.endpoint.clone(),
                member_id: status.get_member_id(),
                version: text(status.get_version())?,
                namespace: text(status.get_namespace())?,
                backend: text(status.get_backend())?,
                durability: text(status.get_durability())?,
                uptime_ms: status.get_uptime_ms(),
                process_cpu_seconds: status.get_process_cpu_seconds(),
                shards,
                groups,
                members: Vec::new(),
            })
        };
        let mut status = decode().map_err(|error| self.rpc_error(error))?;
        status.members = self.members().await?;
        Ok(status)
    }

    /// The members of the cluster as this node knows them.
    pub async fn members(&self) -> Result<Vec<super::cluster::MemberInfo>, ClientError> {
        let response =
            self.cluster.members_request().send().promise.await.map_err(|error| self.rpc_error(error))?;
        let decode = || -> capnp::Result<Vec<super::cluster::MemberInfo>> {
            response.get()?.get_members()?.iter().map(super::cluster::read_member).collect()
        };
        decode().map_err(|error| self.rpc_error(error))
    }

    /// Adds `member` to every group as a learner; with `as_learner` false
    /// the node then promotes it once it caught up.
    pub async fn add_member(
        &self,
        member: &super::cluster::MemberInfo,
        as_learner: bool,
    ) -> Result<super::cluster::MemberChanged, ClientError> {
        let mut request = self.cluster.add_member_request();
        super::cluster::set_member(request.get().init_member(), member);
        request.get().set_as_learner(as_learner);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.member_changed(response.get().and_then(|answer| answer.get_result()))
    }

    /// Makes learner `id` a voter in every group.
    pub async fn promote_member(&self, id: u64) -> Result<super::cluster::MemberChanged, ClientError> {
        let mut request = self.cluster.promote_member_request();
        request.get().set_id(id);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.member_changed(response.get().and_then(|answer| answer.get_result()))
    }

    /// Takes member `id` out of every group.
    pub async fn remove_member(&self, id: u64) -> Result<super::cluster::MemberChanged, ClientError> {
        let mut request = self.cluster.remove_member_request();
        request.get().set_id(id);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.member_changed(response.get().and_then(|answer| answer.get_result()))
    }

    fn member_changed(
        &self,
        result: capnp::Result<crate::nvkv_capnp::member_change_result::Reader<'_>>,
    ) -> Result<super::cluster::MemberChanged, ClientError> {
        super::cluster::read_member_change(result.map_err(|error| self.rpc_error(error))?)
            .map_err(|error| self.rpc_error(error))?
            .map_err(|error| ClientError::Refused { endpoint: self.endpoint.clone(), error })
    }

    /// Every group of the node as it sees them (Maintenance.groups).
    pub async fn groups(&self) -> Result<Vec<crate::shard::GroupReport>, ClientError> {
        let response =
            self.maintenance.groups_request().send().promise.await.map_err(|error| self.rpc_error(error))?;
        let decode = || -> capnp::Result<Vec<crate::shard::GroupReport>> {
            response.get()?.get_groups()?.iter().map(super::cluster::read_group_status).collect()
        };
        decode().map_err(|error| self.rpc_error(error))
    }

    /// Forgets the history of `group` below `revision`, through the
    /// Maintenance interface (the same as `compact`, for operators' tools).
    pub async fn maintenance_compact(
        &self,
        group: u32,
        revision: i64,
    ) -> Result<super::kv::Header, ClientError> {
        let mut request = self.maintenance.compact_request();
        request.get().set_group(group);
        request.get().set_revision(revision);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| read_compact_result(results.get_result()?)))
    }
}

mod answers;
mod backup;
mod keepalive;
mod lease;
mod sharded;
pub mod watch;

pub(in crate::rpc) use answers::*;
pub(in crate::rpc) use sharded::open_shards;
pub use sharded::{GroupLeader, PartitionMap, ShardedClient};
