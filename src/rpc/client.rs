//! The Rust client library: connects to a node's client port and calls it.
//! Runs on a single-threaded tokio runtime inside a `LocalSet` (capnp-rpc is
//! single-threaded), like the server.

use std::time::Duration;

use capnp_rpc::{rpc_twoparty_capnp, RpcSystem};

use super::kv::KvRequest;
use super::kv_stream_client::{KvStream, Replied, Served, StreamCall};
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
        Ok(Connection {
            endpoint: endpoint.to_string(),
            tls: tls.is_on(),
            node,
            kv,
            cluster,
            maintenance,
            lease,
            stream: None,
        })
    }

    /// Also opens a KV stream to the same endpoint, which the KV calls of
    /// this connection use from then on (see `kv_stream_client`). A node
    /// that does not take KV streams keeps serving them over RPC.
    pub async fn open_kv_stream(&mut self, tls: &ClientTls) -> Result<(), ClientError> {
        let opened = match dial(&self.endpoint, tls).await? {
            Dialed::Plain(stream) => {
                let (reader, writer) = stream.into_split();
                KvStream::open(reader, writer, &self.endpoint, CONNECT_TIMEOUT).await
            }
            Dialed::Tls(stream) => {
                let (reader, writer) = tokio::io::split(*stream);
                KvStream::open(reader, writer, &self.endpoint, CONNECT_TIMEOUT).await
            }
        };
        match opened {
            Ok(stream) => self.stream = Some(stream),
            Err(reason) => tracing::debug!(endpoint = %self.endpoint, "KV calls go over RPC: {reason}"),
        }
        Ok(())
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

    /// Makes `node` (a session's) the one every later call goes through.
    pub(super) fn set_node(&mut self, node: node::Client) {
        // The KV stream carries no session: KV calls go through the
        // session's capabilities from now on.
        self.stream = None;
        self.kv = node.kv_request().send().pipeline.get_kv();
        self.cluster = node.cluster_request().send().pipeline.get_cluster();
        self.maintenance = node.maintenance_request().send().pipeline.get_maintenance();
        self.lease = node.lease_request().send().pipeline.get_lease();
        self.node = node;
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

impl NodeStatus {
    /// The status as a person reads it.
    pub fn human(&self) -> String {
        let mut text = format!(
            "member {} at {} (nvkv {}), up {:.1} s\nnamespace {} ({}), durability {}\n",
            self.member_id,
            self.endpoint,
            self.version,
            self.uptime_ms as f64 / 1000.0,
            self.namespace,
            self.backend,
            self.durability
        );
        text.push_str(
            "shard  core  groups  log records (head..tail)   log used / capacity   \
             queue wait p50/p99 us   device write p50/p99 us   records/write\n",
        );
        for shard in &self.shards {
            text.push_str(&format!(
                "{:>5}  {:>4}  {:>6}  {:>12}..{:<12}  {:>7} / {:<7} MiB   {:>8.1} / {:<8.1}      {:>8.1} / {:<8.1}      {:>6.1}\n",
                shard.shard,
                shard.core,
                shard.groups,
                shard.log_head_sequence,
                shard.log_tail_sequence,
                shard.log_used_bytes >> 20,
                shard.log_capacity_bytes >> 20,
                shard.queue_wait_p50_us,
                shard.queue_wait_p99_us,
                shard.device_write_p50_us,
                shard.device_write_p99_us,
                shard.log_records_written as f64 / shard.log_writes.max(1) as f64,
            ));
        }
        text.push_str(
            "shard  proposal wait p50/p99 us   raft p50/p99 us         apply p50/p99 us      \
             write end to end p50/p99 us   writes/proposal\n",
        );
        for shard in &self.shards {
            text.push_str(&format!(
                "{:>5}  {:>9.1} / {:<9.1}      {:>8.1} / {:<8.1}   {:>7.1} / {:<7.1}     {:>9.1} / {:<9.1}       {:>6.1}\n",
                shard.shard,
                shard.proposal_wait_p50_us,
                shard.proposal_wait_p99_us,
                shard.raft_p50_us,
                shard.raft_p99_us,
                shard.apply_p50_us,
                shard.apply_p99_us,
                shard.end_to_end_p50_us,
                shard.end_to_end_p99_us,
                shard.proposed_commands as f64 / shard.proposals.max(1) as f64,
            ));
        }
        text.push_str(
            "shard  device written MiB   flushes  device errors  snapshots  snapshot MiB   reactor busy / idle s\n",
        );
        for shard in &self.shards {
            text.push_str(&format!(
                "{:>5}  {:>18.1}  {:>8}  {:>13}  {:>9}  {:>12.1}   {:>9.1} / {:<9.1}\n",
                shard.shard,
                shard.device_written_bytes as f64 / (1u64 << 20) as f64,
                shard.device_flushes,
                shard.device_errors,
                shard.snapshots_written,
                shard.snapshot_written_bytes as f64 / (1u64 << 20) as f64,
                shard.reactor_busy_seconds,
                shard.reactor_idle_seconds,
            ));
        }
        text.push_str(&budget_table(&self.shards));
        text.push_str(
            "group  shard  leader  term   applied  last log  snapshot    purged  revision  compacted      keys  watchers  leases  leader changes  alarm\n",
        );
        for group in &self.groups {
            text.push_str(&format!(
                "{:>5}  {:>5}  {:>6}  {:>4}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}  {:>8}  {:>8}  {:>6}  {:>14}  {}\n",
                group.group,
                group.shard,
                group.leader,
                group.term,
                group.applied_index,
                group.last_log_index,
                group.snapshot_index,
                group.purged_index,
                group.revision,
                group.compact_revision,
                group.keys,
                group.watchers,
                group.leases,
                group.leader_changes,
                if group.no_space { "NOSPACE" } else { "-" },
            ));
        }
        text
    }
}

type Decoded<T> = capnp::Result<Result<T, super::kv::ServerError>>;

/// Reads a `...Result` union of the schema (module `$result`): its `ok`
/// side as `$read_ok` reads it, or its typed error.
macro_rules! read_result {
    ($reader:expr, $result:ident, |$ok:ident| $read_ok:expr) => {{
        use crate::nvkv_capnp::$result::Which;
        Ok(match $reader.which()? {
            Which::Ok($ok) => {
                let $ok = $ok?;
                Ok($read_ok)
            }
            Which::Error(error) => Err(super::kv::read_error(error?)?),
        })
    }};
}

/// A put's answer as the schema carries it (the KV interface and the KV stream alike).
pub(super) fn read_put_result(reader: crate::nvkv_capnp::put_result::Reader<'_>) -> Decoded<PutAnswer> {
    read_result!(reader, put_result, |ok| PutAnswer {
        header: super::kv::read_header(ok.get_header()?),
        prev_kv: if ok.get_has_prev_kv() {
            Some(super::kv::read_key_value(ok.get_prev_kv()?)?.into())
        } else {
            None
        },
    })
}

pub(super) fn read_range_result(reader: crate::nvkv_capnp::range_result::Reader<'_>) -> Decoded<RangeAnswer> {
    read_result!(reader, range_result, |ok| RangeAnswer {
        header: super::kv::read_header(ok.get_header()?),
        kvs: read_key_value_views(ok.get_kvs()?)?,
        count: ok.get_count(),
        more: ok.get_more(),
    })
}

pub(super) fn read_delete_range_result(
    reader: crate::nvkv_capnp::delete_range_result::Reader<'_>,
) -> Decoded<DeleteAnswer> {
    read_result!(reader, delete_range_result, |ok| DeleteAnswer {
        header: super::kv::read_header(ok.get_header()?),
        deleted: ok.get_deleted(),
        prev_kvs: read_key_value_views(ok.get_prev_kvs()?)?,
    })
}

pub(super) fn read_txn_result(reader: crate::nvkv_capnp::txn_result::Reader<'_>) -> Decoded<TxnAnswer> {
    read_result!(reader, txn_result, |ok| TxnAnswer {
        header: super::kv::read_header(ok.get_header()?),
        response: super::kv::read_txn_response(ok)?,
    })
}

fn read_key_value_views(
    list: capnp::struct_list::Reader<'_, crate::nvkv_capnp::key_value::Owned>,
) -> capnp::Result<Vec<KeyValueView>> {
    list.iter().map(|kv| Ok(super::kv::read_key_value(kv)?.into())).collect()
}

/// The latency budget of every shard, a hop a line (p50 / p99 in µs, and
/// how many writes each measured), for `status`.
fn budget_table(shards: &[ShardReport]) -> String {
    let mut text = format!("{:<26}", "latency budget p50/p99 us");
    for shard in shards {
        text.push_str(&format!("  {:>28}", format!("shard {} (count)", shard.shard)));
    }
    text.push('\n');
    let names: Vec<&str> = shards
        .first()
        .map(|shard| shard.hops.iter().map(|hop| hop.name.as_str()).collect())
        .unwrap_or_default();
    for (position, name) in names.iter().enumerate() {
        text.push_str(&format!("{name:<26}"));
        for shard in shards {
            let cell = shard.hops.get(position).map_or(String::new(), |hop| {
                format!("{:.1} / {:.1} ({})", hop.p50_us, hop.p99_us, hop.count)
            });
            text.push_str(&format!("  {cell:>28}"));
        }
        text.push('\n');
    }
    text
}

/// A compaction's answer: its header, or its typed refusal.
fn read_compact_result(reader: crate::nvkv_capnp::compact_result::Reader<'_>) -> Decoded<super::kv::Header> {
    read_result!(reader, compact_result, |ok| super::kv::read_header(ok))
}

/// How a node maps keys to groups and groups to shards, and where each
/// shard takes connections.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionMap {
    pub groups: u32,
    pub partition_depth: u32,
    pub shards: u32,
    pub shard_endpoints: Vec<String>,
    /// Each group's leader as the node knows it, in group order (empty from
    /// a node that does not say).
    pub leaders: Vec<GroupLeader>,
    /// The member that answered.
    pub member: u64,
}

/// Who leads a group, as a partition map names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupLeader {
    /// 0 when no leader is known.
    pub member: u64,
    pub term: u64,
    /// Where its clients connect; empty when not known.
    pub client_address: String,
}

/// Connects to every shard `map` names, each with its KV stream, reached
/// the way `endpoint` (the node that gave the map) was.
pub(super) async fn open_shards(
    endpoint: &str,
    map: &PartitionMap,
    tls: &ClientTls,
) -> Result<Vec<Connection>, ClientError> {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    let mut shards = Vec::with_capacity(map.shard_endpoints.len());
    for shard_endpoint in &map.shard_endpoints {
        // The node names its shards by the address it bound (maybe
        // 0.0.0.0); reach them the way the main endpoint was reached.
        let port = shard_endpoint.rsplit_once(':').map_or("", |(_, port)| port);
        let mut shard = Connection::open_with(&format!("{host}:{port}"), tls).await?;
        shard.open_kv_stream(tls).await?;
        shards.push(shard);
    }
    Ok(shards)
}

impl Connection {
    /// The node's partition map.
    pub async fn partition_map(&self) -> Result<PartitionMap, ClientError> {
        let response =
            self.node.partition_map_request().send().promise.await.map_err(|error| self.rpc_error(error))?;
        let decode = || -> capnp::Result<PartitionMap> {
            let map = response.get()?.get_map()?;
            let mut shard_endpoints = Vec::new();
            for endpoint in map.get_shard_endpoints()? {
                shard_endpoints.push(endpoint?.to_string()?);
            }
            let mut leaders = Vec::new();
            for leader in map.get_leaders()? {
                leaders.push(GroupLeader {
                    member: leader.get_member(),
                    term: leader.get_term(),
                    client_address: leader.get_client_address()?.to_string()?,
                });
            }
            Ok(PartitionMap {
                groups: map.get_groups(),
                partition_depth: map.get_partition_depth(),
                shards: map.get_shards(),
                shard_endpoints,
                leaders,
                member: map.get_member(),
            })
        };
        decode().map_err(|error| self.rpc_error(error))
    }
}

/// A client that learns a node's partition map and sends each request
/// straight to the shard that owns its key's group, so the node never hops
/// between shards for it; on a cluster, a KV call goes to that shard of the
/// member leading the group (see `routing`). A range that spans groups goes
/// to the main port, whose shard fans it out.
pub struct ShardedClient {
    main: Connection,
    shards: Vec<Connection>,
    partitioner: crate::kv::partition::Partitioner,
    map: PartitionMap,
    routes: super::routing::Routes,
}

impl ShardedClient {
    /// Connects to `endpoint`, reads its partition map and connects to every
    /// shard. Must be called inside a `LocalSet`.
    pub async fn open(endpoint: &str) -> Result<ShardedClient, ClientError> {
        ShardedClient::open_with(endpoint, &ClientTls::plaintext()).await
    }

    /// [`ShardedClient::open`] over TLS when `tls` is on: every shard
    /// connection too, each verified against the main endpoint's host.
    pub async fn open_with(endpoint: &str, tls: &ClientTls) -> Result<ShardedClient, ClientError> {
        let main = Connection::open_with(endpoint, tls).await?;
        let map = main.partition_map().await?;
        let shards = open_shards(endpoint, &map, tls).await?;
        let partitioner = crate::kv::partition::Partitioner::new(map.groups, map.partition_depth as usize)
            .map_err(|error| ClientError::Rpc {
                endpoint: endpoint.to_string(),
                source: capnp::Error::failed(format!("the node sent an unusable partition map: {error}")),
            })?;
        let routes = super::routing::Routes::new(main.clone(), &map, tls.clone());
        Ok(ShardedClient { main, shards, partitioner, map, routes })
    }

    /// Where a KV call about [key, range_end) goes: the shard of its group
    /// on the member leading the group when that link is open, else on the
    /// endpoint's member; the main port when it spans groups. With the
    /// group, to check the answer's term against.
    fn kv_route(&self, key: &[u8], range_end: &[u8]) -> (Connection, Option<u32>) {
        match self.partitioner.groups_for_range(key, range_end) {
            crate::kv::partition::GroupSet::One(group) if !self.shards.is_empty() => {
                if let Some(leader) = self.routes.leader_shards(group) {
                    if let Some(shard) = leader.get(group as usize % leader.len().max(1)) {
                        return (shard.clone(), Some(group));
                    }
                }
                (self.shards[group as usize % self.shards.len()].clone(), Some(group))
            }
            _ => (self.main.clone(), None),
        }
    }

    /// Notes the term an answer about `group` carried (leadership may have
    /// moved).
    fn answered(&self, group: Option<u32>, header: &super::kv::Header) {
        if let Some(group) = group {
            self.routes.saw_term(group, header.raft_term);
        }
    }

    pub fn partition_map(&self) -> &PartitionMap {
        &self.map
    }

    /// Logs in as `name` on the main connection and makes every shard
    /// connection act as that user too (one password check, one token).
    pub async fn login(&mut self, name: &str, password: &str) -> Result<(), ClientError> {
        let token = self.main.login(name, password).await?;
        for shard in &mut self.shards {
            shard.use_session(&token).await?;
        }
        Ok(())
    }

    pub fn main(&self) -> &Connection {
        &self.main
    }

    /// The connection to the shard that runs `group`.
    pub fn for_group(&self, group: u32) -> &Connection {
        if self.shards.is_empty() {
            return &self.main;
        }
        &self.shards[group as usize % self.shards.len()]
    }

    fn for_range(&self, key: &[u8], range_end: &[u8]) -> &Connection {
        match self.partitioner.groups_for_range(key, range_end) {
            crate::kv::partition::GroupSet::One(group) if !self.shards.is_empty() => {
                &self.shards[group as usize % self.shards.len()]
            }
            _ => &self.main,
        }
    }

    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        prev_kv: bool,
    ) -> Result<PutAnswer, ClientError> {
        Ok(self.put_served(key, value, lease, prev_kv).await?.0)
    }

    pub async fn range(
        &self,
        query: &crate::kv::types::RangeRequest,
        serializable: bool,
    ) -> Result<RangeAnswer, ClientError> {
        let (connection, group) = self.kv_route(&query.key, &query.range_end);
        let answer = connection.range(query, serializable).await?;
        self.answered(group, &answer.header);
        Ok(answer)
    }

    /// [`ShardedClient::put`], and the time the node said the put spent in
    /// it (known over a KV stream only).
    pub async fn put_served(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        prev_kv: bool,
    ) -> Result<(PutAnswer, Option<Duration>), ClientError> {
        let (connection, group) = self.kv_route(key, &[]);
        let answer = connection.put_served(key, value, lease, prev_kv).await?;
        self.answered(group, &answer.0.header);
        Ok(answer)
    }

    /// A round trip to the shard of `key`'s group that touches no group,
    /// and the time the node said it spent on it; `None` when that shard's
    /// connection has no KV stream.
    pub async fn ping(&self, key: &[u8]) -> Option<Result<Duration, ClientError>> {
        self.for_range(key, &[]).ping().await
    }

    pub async fn delete_range(
        &self,
        key: &[u8],
        range_end: &[u8],
        prev_kv: bool,
    ) -> Result<DeleteAnswer, ClientError> {
        let (connection, group) = self.kv_route(key, range_end);
        let answer = connection.delete_range(key, range_end, prev_kv).await?;
        self.answered(group, &answer.header);
        Ok(answer)
    }

    /// Runs a transaction on the shard of its first key's group (the node
    /// refuses one that spans groups).
    pub async fn txn(&self, txn: &crate::kv::types::TxnRequest) -> Result<TxnAnswer, ClientError> {
        use crate::kv::types::RequestOp;
        let first = txn.compares.first().map(|compare| compare.key.as_slice()).or_else(|| {
            txn.success.iter().chain(&txn.failure).find_map(|operation| match operation {
                RequestOp::Put(put) => Some(put.key.as_slice()),
                RequestOp::Range(range) => Some(range.key.as_slice()),
                RequestOp::DeleteRange(delete) => Some(delete.key.as_slice()),
                RequestOp::Txn(_) => None,
            })
        });
        let Some(key) = first else { return self.main.txn(txn).await };
        let (connection, group) = self.kv_route(key, &[]);
        let answer = connection.txn(txn).await?;
        self.answered(group, &answer.header);
        Ok(answer)
    }

    /// Forgets the history of `group` below `revision`.
    pub async fn compact(&self, group: u32, revision: i64) -> Result<super::kv::Header, ClientError> {
        self.main.compact(group, revision).await
    }

    /// Opens a watch on the shard of its range's group, or on the main port
    /// when the range spans groups (that shard reaches every group).
    pub async fn watch(
        &self,
        request: &crate::kv::watch::WatchRequest,
    ) -> Result<super::watch_client::Watch, ClientError> {
        self.for_range(&request.key, &request.range_end).watch(request).await
    }
}

/// Leases: every call goes to one node, whose shard reaches every group
/// (see `shard::lease`). The Lease capability is fetched once per
/// connection, so keep-alives are one call each on it.
impl Connection {
    /// Grants a lease of `ttl` seconds; `id` 0 lets the node pick it.
    pub async fn lease_grant(
        &self,
        ttl: i64,
        id: i64,
    ) -> Result<super::lease::LeaseGrantAnswer, ClientError> {
        let mut request = self.lease.grant_request();
        request.get().set_ttl(ttl);
        request.get().set_id(id);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| super::lease::read::grant(results.get_result()?)))
    }

    /// Revokes lease `id`, deleting its keys in every group.
    pub async fn lease_revoke(&self, id: i64) -> Result<super::lease::LeaseRevokeAnswer, ClientError> {
        let mut request = self.lease.revoke_request();
        request.get().set_id(id);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| super::lease::read::revoke(results.get_result()?, id)))
    }

    /// Renews lease `id` once at every group's leader.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<super::lease::LeaseKeepAliveAnswer, ClientError> {
        let mut request = self.lease.keep_alive_request();
        request.get().set_id(id);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| super::lease::read::keep_alive(results.get_result()?)))
    }

    /// How long lease `id` has left; with `keys`, its keys in every group.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<super::lease::LeaseTimeToLiveAnswer, ClientError> {
        let mut request = self.lease.time_to_live_request();
        request.get().set_id(id);
        request.get().set_keys(keys);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(
            response.get().and_then(|results| super::lease::read::time_to_live(results.get_result()?)),
        )
    }

    /// Every lease, with the time each has left.
    pub async fn lease_list(&self) -> Result<super::lease::LeaseListAnswer, ClientError> {
        let response =
            self.lease.leases_request().send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| super::lease::read::list(results.get_result()?)))
    }
}

/// Receives the chunks of one group's backup, up to a bound, and tells the
/// caller how many bytes came.
struct BackupSinkServer {
    received: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
    bytes_max: u64,
    progress: std::rc::Rc<dyn Fn(u64)>,
}

impl crate::nvkv_capnp::backup_sink::Server for BackupSinkServer {
    async fn chunk(
        self: capnp::capability::Rc<Self>,
        params: crate::nvkv_capnp::backup_sink::ChunkParams,
    ) -> Result<(), capnp::Error> {
        let data = params.get()?.get_data()?;
        let mut received = self.received.borrow_mut();
        if received.len() as u64 + data.len() as u64 > self.bytes_max {
            return Err(capnp::Error::failed(format!(
                "the group's backup grew past {} bytes, the most a backup part may hold",
                self.bytes_max
            )));
        }
        received.extend_from_slice(data);
        (self.progress)(data.len() as u64);
        Ok(())
    }
}

impl Connection {
    /// A consistent copy of one group's store (Maintenance.backupGroup):
    /// what it is, and its bytes, checked against the length and CRC32C
    /// the node announced. `progress` hears of every chunk's bytes as
    /// they arrive; a copy larger than `bytes_max` is refused.
    pub async fn backup_group(
        &self,
        group: u32,
        bytes_max: u64,
        progress: std::rc::Rc<dyn Fn(u64)>,
    ) -> Result<(super::cluster::GroupBackupInfo, Vec<u8>), ClientError> {
        let received = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink: crate::nvkv_capnp::backup_sink::Client =
            capnp_rpc::new_client(BackupSinkServer { received: received.clone(), bytes_max, progress });
        let mut request = self.maintenance.backup_group_request();
        request.get().set_group(group);
        request.get().set_sink(sink);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        let info = self.answer(
            response.get().and_then(|results| super::cluster::read_group_backup(results.get_result()?)),
        )?;
        let bytes = std::mem::take(&mut *received.borrow_mut());
        let crc = crc32c::crc32c(&bytes);
        if info.group != group || bytes.len() as u64 != info.bytes || crc != info.crc32c {
            return Err(self.rpc_error(capnp::Error::failed(format!(
                "the backup of group {group} arrived damaged: the node announced group {} with {} bytes of \
                 CRC32C {:#010x}, {} bytes of CRC32C {crc:#010x} arrived; run the save again",
                info.group,
                info.bytes,
                info.crc32c,
                bytes.len()
            ))));
        }
        Ok((info, bytes))
    }
}
