//! The etcd driver of the store benchmarks: [`StoreTarget`] over etcd's v3
//! gRPC API (the `etcd-client` crate), so `nvkv bench --target etcd://...`
//! runs the very workloads nvkv's driver (`bench::nvkv`) runs, with the same
//! semantics: puts, gets (linearizable: etcd's default read barrier;
//! serializable: the member's own state), a compare-and-swap transaction
//! whose failure branch reads the key, and watches of one key each.
//!
//! One [`EtcdConnection`] is one gRPC channel (one HTTP/2 connection) to one
//! member, as one `--conns` connection of etcd's own benchmark tool is; the
//! clients that share it multiplex their calls on it. It only translates;
//! the workloads live in `bench::workload`.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
    WatchClient, WatchOptions, WatchStream as EtcdWatchStream,
};

use super::report::ServerSample;
use super::workload::{Consistency, RangeRead, StoreTarget, Swap, WatchStream, WatchedEvent};

/// How long opening a connection may take, its first answer included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One gRPC channel to one etcd member.
pub struct EtcdConnection {
    endpoint: String,
    kv: KvClient,
    watch: WatchClient,
}

impl EtcdConnection {
    /// Names the endpoint and what failed there: a refusal and a broken
    /// connection both arrive as gRPC errors.
    fn failed(&self, what: &str, error: etcd_client::Error) -> String {
        format!("{what} at etcd {} failed: {error}", self.endpoint)
    }
}

impl StoreTarget for EtcdConnection {
    async fn connect(endpoint: &str, tls: &crate::rpc::client::ClientTls) -> Result<EtcdConnection, String> {
        if tls.is_on() {
            return Err("the etcd driver speaks plaintext only: leave out --cacert, --cert and --key".into());
        }
        let unreachable = |error: &dyn std::fmt::Display| {
            format!("cannot reach etcd at {endpoint}: {error}; is it serving its client URL there?")
        };
        let options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
        // The channel connects lazily: one status call proves the member
        // answers, so a wrong address fails here and not as every operation.
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut client = Client::connect([format!("http://{endpoint}")], Some(options)).await?;
            client.status().await?;
            Ok::<Client, etcd_client::Error>(client)
        })
        .await
        .map_err(|_| unreachable(&format!("no answer in {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|error| unreachable(&error))?;
        Ok(EtcdConnection {
            endpoint: endpoint.to_string(),
            kv: opened.kv_client(),
            watch: opened.watch_client(),
        })
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<Option<Duration>, String> {
        self.kv.clone().put(key, value, None).await.map(|_| None).map_err(|error| self.failed("a put", error))
    }

    async fn ping(&self, _: &[u8]) -> Result<Option<Duration>, String> {
        Err(format!(
            "etcd at {} has no call that does no work; bench ping drives nvkv's KV stream only",
            self.endpoint
        ))
    }

    /// Each member's `process_cpu_seconds_total`, from the Prometheus
    /// metrics etcd serves on its client URL.
    async fn sample_servers(
        endpoints: &[String],
        _: &crate::rpc::client::ClientTls,
    ) -> Result<ServerSample, String> {
        let mut sample = ServerSample::default();
        let mut distinct: Vec<&String> = endpoints.iter().collect();
        distinct.sort();
        distinct.dedup();
        for endpoint in distinct {
            let metrics = tokio::time::timeout(CONNECT_TIMEOUT, http_get(endpoint, "/metrics"))
                .await
                .map_err(|_| {
                    format!("etcd at {endpoint} served no /metrics within {} s", CONNECT_TIMEOUT.as_secs())
                })?
                .map_err(|error| format!("reading /metrics of etcd at {endpoint}: {error}"))?;
            let seconds = metrics
                .lines()
                .find_map(|line| line.strip_prefix("process_cpu_seconds_total "))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .ok_or_else(|| {
                    format!("etcd at {endpoint} reports no process_cpu_seconds_total in /metrics")
                })?;
            sample.servers += 1;
            sample.cpu_seconds += seconds;
        }
        Ok(sample)
    }

    async fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        limit: i64,
        consistency: Consistency,
    ) -> Result<RangeRead, String> {
        let mut options = GetOptions::new().with_range(range_end).with_limit(limit);
        if consistency == Consistency::Serializable {
            options = options.with_serializable();
        }
        let answer =
            self.kv.clone().get(key, Some(options)).await.map_err(|error| self.failed("a get", error))?;
        Ok(RangeRead {
            keys: answer.kvs().len() as u64,
            mod_revision: answer.kvs().first().map_or(0, |kv| kv.mod_revision()),
        })
    }

    async fn compare_and_swap(&self, key: &[u8], mod_revision: i64, value: &[u8]) -> Result<Swap, String> {
        // As nvkv's driver does: the failure branch reads the key, so a
        // conflict tells the revision that won without another round trip.
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let answer = self.kv.clone().txn(txn).await.map_err(|error| self.failed("a transaction", error))?;
        // A transaction that wrote has the revision of its one put.
        let revision = answer.header().map_or(0, |header| header.revision());
        match answer.op_responses().first() {
            Some(TxnOpResponse::Put(_)) if answer.succeeded() => Ok(Swap { succeeded: true, mod_revision: revision }),
            Some(TxnOpResponse::Get(get)) if !answer.succeeded() => Ok(Swap {
                succeeded: false,
                mod_revision: get.kvs().first().map_or(0, |kv| kv.mod_revision()),
            }),
            other => Err(format!(
                "etcd at {} answered a compare-and-swap (succeeded: {}) with {other:?} instead of its branch's one response",
                self.endpoint,
                answer.succeeded()
            )),
        }
    }

    type Watch = EtcdWatch;

    async fn watch(&self, key: &[u8], range_end: &[u8]) -> Result<EtcdWatch, String> {
        let options = WatchOptions::new().with_range(range_end);
        let mut stream = self
            .watch
            .clone()
            .watch(key, Some(options))
            .await
            .map_err(|error| self.failed("a watch", error))?;
        // etcd sends every event after the watch's creation, which it
        // confirms first on the stream: past that, no later write is missed.
        match stream.message().await.map_err(|error| self.failed("a watch", error))? {
            Some(created) if created.created() && !created.canceled() => {
                Ok(EtcdWatch { endpoint: self.endpoint.clone(), id: created.watch_id(), stream })
            }
            Some(other) => Err(format!(
                "etcd at {} did not create a watch: it answered {other:?} (cancel reason {:?})",
                self.endpoint,
                other.cancel_reason()
            )),
            None => Err(format!("etcd at {} closed a watch stream before creating its watch", self.endpoint)),
        }
    }
}

/// One watch on its own gRPC stream (of its connection's channel).
pub struct EtcdWatch {
    endpoint: String,
    id: i64,
    stream: EtcdWatchStream,
}

impl WatchStream for EtcdWatch {
    async fn next(&mut self) -> Result<Vec<WatchedEvent>, String> {
        loop {
            let message = self
                .stream
                .message()
                .await
                .map_err(|error| format!("watch {} at etcd {} failed: {error}", self.id, self.endpoint))?
                .ok_or_else(|| format!("etcd at {} closed the stream of watch {}", self.endpoint, self.id))?;
            if message.canceled() {
                return Err(format!(
                    "etcd at {} cancelled watch {}: {:?} (compacted at {})",
                    self.endpoint,
                    self.id,
                    message.cancel_reason(),
                    message.compact_revision()
                ));
            }
            // A response without events is progress or bookkeeping.
            if message.events().is_empty() {
                continue;
            }
            return Ok(message
                .events()
                .iter()
                .filter_map(|event| {
                    let kv = event.kv()?;
                    Some(WatchedEvent {
                        deleted: event.event_type() == EventType::Delete,
                        key: kv.key().to_vec(),
                        value: kv.value().to_vec(),
                        revision: kv.mod_revision(),
                    })
                })
                .collect());
        }
    }
}

/// The body of `GET path` at `endpoint` (host:port), over HTTP/1.0: what
/// reading etcd's metrics needs, no more. At most 16 MiB are read.
async fn http_get(endpoint: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(endpoint).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").as_bytes()).await?;
    let mut response = Vec::new();
    stream.take(16 << 20).read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or("no answer");
        return Err(std::io::Error::other(format!("GET {path} answered {status}")));
    }
    Ok(body.to_string())
}
