//! A client of every shard of a node ([`ShardedClient`]): the partition map
//! that names each group's shard and leader, and KV calls sent straight to
//! the shard that serves their key.

use super::*;

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
/// the way `endpoint` (the node that gave the map) was, acting with the
/// session `token` when there is one.
pub(in crate::rpc) async fn open_shards(
    endpoint: &str,
    map: &PartitionMap,
    tls: &ClientTls,
    token: Option<&str>,
) -> Result<Vec<Connection>, ClientError> {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    let mut shards = Vec::with_capacity(map.shard_endpoints.len());
    for shard_endpoint in &map.shard_endpoints {
        // The node names its shards by the address it bound (maybe
        // 0.0.0.0); reach them the way the main endpoint was reached.
        let port = shard_endpoint.rsplit_once(':').map_or("", |(_, port)| port);
        let mut shard = Connection::open_with(&format!("{host}:{port}"), tls).await?;
        if let Some(token) = token {
            shard.use_session(token).await?;
        }
        shard.open_kv_stream().await?;
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
    routes: crate::rpc::routing::Routes,
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
        let shards = open_shards(endpoint, &map, tls, None).await?;
        let partitioner = crate::kv::partition::Partitioner::new(map.groups, map.partition_depth as usize)
            .map_err(|error| ClientError::Rpc {
                endpoint: endpoint.to_string(),
                source: capnp::Error::failed(format!("the node sent an unusable partition map: {error}")),
            })?;
        let routes = crate::rpc::routing::Routes::new(main.clone(), &map, tls.clone());
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
    fn answered(&self, group: Option<u32>, header: &crate::rpc::kv::Header) {
        if let Some(group) = group {
            self.routes.saw_term(group, header.raft_term);
        }
    }

    pub fn partition_map(&self) -> &PartitionMap {
        &self.map
    }

    /// Logs in as `name` on the main connection and makes every shard
    /// connection act as that user too (one password check, one token).
    /// Answers the session token, for other clients of the same cluster.
    /// Links to other members' leaders opened after the token expired log
    /// in again with the same name and password.
    pub async fn login(&mut self, name: &str, password: &str) -> Result<String, ClientError> {
        let token = self.main.authenticate(name, password).await?;
        self.use_session(&token).await?;
        self.routes.remember_login(name, password);
        Ok(token)
    }

    /// Makes every connection of this client, its KV streams included,
    /// act as the user session `token` names (from [`ShardedClient::login`]
    /// of any client of the cluster).
    pub async fn use_session(&mut self, token: &str) -> Result<(), ClientError> {
        self.main.use_session(token).await?;
        for shard in &mut self.shards {
            shard.use_session(token).await?;
        }
        if !token.is_empty() {
            self.routes.use_session(token);
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
    pub async fn compact(&self, group: u32, revision: i64) -> Result<crate::rpc::kv::Header, ClientError> {
        self.main.compact(group, revision).await
    }

    /// Opens a watch on the shard of its range's group, or on the main port
    /// when the range spans groups (that shard reaches every group).
    pub async fn watch(
        &self,
        request: &crate::kv::watch::WatchRequest,
    ) -> Result<super::watch::Watch, ClientError> {
        self.for_range(&request.key, &request.range_end).watch(request).await
    }
}
