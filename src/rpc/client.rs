//! The Rust client library: connects to a node's client port and calls it.
//! Runs on a single-threaded tokio runtime inside a `LocalSet` (capnp-rpc is
//! single-threaded), like the server.

use std::time::Duration;

use capnp_rpc::{rpc_twoparty_capnp, twoparty, RpcSystem};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

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
    #[error("{endpoint} failed the request: {source}")]
    Rpc { endpoint: String, source: capnp::Error },
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
    pub shards: Vec<ShardReport>,
}

/// A connection to one node.
pub struct Connection {
    endpoint: String,
    node: node::Client,
}

impl Connection {
    /// Connects to `endpoint` (host:port). Must be called inside a `LocalSet`.
    pub async fn open(endpoint: &str) -> Result<Connection, ClientError> {
        let connecting = tokio::net::TcpStream::connect(endpoint);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                endpoint: endpoint.to_string(),
                seconds: CONNECT_TIMEOUT.as_secs(),
            })?
            .map_err(|source| ClientError::Connect { endpoint: endpoint.to_string(), source })?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let network = twoparty::VatNetwork::new(
            reader.compat(),
            writer.compat_write(),
            rpc_twoparty_capnp::Side::Client,
            super::reader_options(),
        );
        let mut system = RpcSystem::new(Box::new(network), None);
        let node: node::Client = system.bootstrap(rpc_twoparty_capnp::Side::Server);
        let shown = endpoint.to_string();
        tokio::task::spawn_local(async move {
            if let Err(error) = system.await {
                tracing::debug!(endpoint = %shown, %error, "connection closed");
            }
        });
        Ok(Connection { endpoint: endpoint.to_string(), node })
    }

    fn rpc_error(&self, source: capnp::Error) -> ClientError {
        ClientError::Rpc { endpoint: self.endpoint.clone(), source }
    }

    /// The node's status: who it is, how it runs, and each shard's log.
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
                });
            }
            Ok(NodeStatus {
                endpoint: self.endpoint.clone(),
                member_id: status.get_member_id(),
                version: text(status.get_version())?,
                namespace: text(status.get_namespace())?,
                backend: text(status.get_backend())?,
                durability: text(status.get_durability())?,
                uptime_ms: status.get_uptime_ms(),
                shards,
            })
        };
        decode().map_err(|error| self.rpc_error(error))
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
             queue wait p50/p99 us   device write p50/p99 us\n",
        );
        for shard in &self.shards {
            text.push_str(&format!(
                "{:>5}  {:>4}  {:>6}  {:>12}..{:<12}  {:>7} / {:<7} MiB   {:>8.1} / {:<8.1}      {:>8.1} / {:<8.1}\n",
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
            ));
        }
        text
    }
}
