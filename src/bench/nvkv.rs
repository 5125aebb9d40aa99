//! The nvkv driver of the store benchmarks: [`StoreTarget`] over the client
//! library's [`ShardedClient`], which sends each request straight to the
//! shard of its key's group. It only translates; the workloads live in
//! `bench::workload`.

use crate::kv::types::{
    Compare, CompareResult, CompareTarget, EventKind, PutRequest, RangeRequest, RequestOp, ResponseOp,
    TxnRequest,
};
use crate::kv::watch::WatchRequest;
use std::time::Duration;

use crate::rpc::client::watch::{Watch, WatchMessage};
use crate::rpc::client::{ClientTls, Connection, ShardedClient};

use super::report::ServerSample;
use super::workload::{BenchUser, Consistency, RangeRead, StoreTarget, Swap, WatchStream, WatchedEvent};

impl StoreTarget for ShardedClient {
    async fn connect(endpoint: &str, tls: &ClientTls) -> Result<ShardedClient, String> {
        ShardedClient::open_with(endpoint, tls).await.map_err(|error| error.to_string())
    }

    async fn log_in(&mut self, user: &BenchUser) -> Result<(), String> {
        if let Some(token) = user.token() {
            return self.use_session(&token).await.map_err(|error| error.to_string());
        }
        let token = self.login(&user.name, &user.password).await.map_err(|error| error.to_string())?;
        user.keep_token(token);
        Ok(())
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<Option<Duration>, String> {
        let served = ShardedClient::put_served(self, key, value, 0, false).await;
        served.map(|(_, served)| served).map_err(|error| error.to_string())
    }

    async fn ping(&self, key: &[u8]) -> Result<Option<Duration>, String> {
        match ShardedClient::ping(self, key).await {
            Some(served) => served.map(Some).map_err(|error| error.to_string()),
            None => Err(format!(
                "{} serves no KV stream, whose ping this workload times; run a node of this version",
                self.main().endpoint()
            )),
        }
    }

    /// Each endpoint's status: its process's CPU time and every shard's
    /// latency budget.
    async fn sample_servers(endpoints: &[String], tls: &ClientTls) -> Result<ServerSample, String> {
        let mut sample = ServerSample::default();
        let mut distinct: Vec<&String> = endpoints.iter().collect();
        distinct.sort();
        distinct.dedup();
        for endpoint in distinct {
            let connection = Connection::open_with(endpoint, tls).await.map_err(|error| error.to_string())?;
            let status = connection.status().await.map_err(|error| error.to_string())?;
            sample.servers += 1;
            sample.cpu_seconds += status.process_cpu_seconds;
            for shard in &status.shards {
                sample.add_hops(&shard.hops).map_err(|error| format!("{endpoint}: {error}"))?;
            }
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
        let query = RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            limit,
            ..RangeRequest::default()
        };
        let answer = ShardedClient::range(self, &query, consistency == Consistency::Serializable)
            .await
            .map_err(|error| error.to_string())?;
        Ok(RangeRead {
            keys: answer.kvs.len() as u64,
            mod_revision: answer.kvs.first().map_or(0, |kv| kv.mod_revision),
        })
    }

    async fn compare_and_swap(&self, key: &[u8], mod_revision: i64, value: &[u8]) -> Result<Swap, String> {
        // The failure branch reads the key, so a conflict tells the revision
        // that won without another round trip.
        let txn = TxnRequest {
            compares: vec![Compare {
                key: key.to_vec(),
                range_end: Vec::new(),
                target: CompareTarget::ModRevision(mod_revision),
                result: CompareResult::Equal,
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..PutRequest::default()
            })],
            failure: vec![RequestOp::Range(RangeRequest { key: key.to_vec(), ..RangeRequest::default() })],
        };
        let answer = self.txn(&txn).await.map_err(|error| error.to_string())?;
        match answer.response.responses.first() {
            Some(ResponseOp::Put(put)) if answer.response.succeeded => {
                Ok(Swap { succeeded: true, mod_revision: put.revision })
            }
            Some(ResponseOp::Range(range)) if !answer.response.succeeded => Ok(Swap {
                succeeded: false,
                mod_revision: range.kvs.first().map_or(0, |kv| kv.mod_revision),
            }),
            other => Err(format!(
                "{} answered a compare-and-swap (succeeded: {}) with {other:?} instead of its branch's one response",
                self.main().endpoint(),
                answer.response.succeeded
            )),
        }
    }

    type Watch = Watch;

    async fn watch(&self, key: &[u8], range_end: &[u8]) -> Result<Watch, String> {
        let request =
            WatchRequest { key: key.to_vec(), range_end: range_end.to_vec(), ..WatchRequest::default() };
        ShardedClient::watch(self, &request).await.map_err(|error| error.to_string())
    }
}

impl WatchStream for Watch {
    async fn next(&mut self) -> Result<Vec<WatchedEvent>, String> {
        loop {
            match Watch::next(self).await {
                Some(WatchMessage::Events { events, .. }) => {
                    return Ok(events
                        .into_iter()
                        .map(|event| WatchedEvent {
                            deleted: event.kind == EventKind::Delete,
                            key: event.kv.key,
                            value: event.kv.value,
                            revision: event.kv.mod_revision,
                        })
                        .collect())
                }
                Some(WatchMessage::Progress { .. }) => continue,
                Some(WatchMessage::Cancelled { group, error }) => {
                    return Err(format!("group {group} cancelled watch {}: {error}", self.id()))
                }
                None => return Err(format!("the connection of watch {} closed", self.id())),
            }
        }
    }
}
