//! Leases through a connection: every call goes to one node, whose shard
//! reaches every group.

use super::*;

/// Leases: every call goes to one node, whose shard reaches every group
/// (see `shard::lease`). The Lease capability is fetched once per
/// connection, so keep-alives are one call each on it.
impl Connection {
    /// Grants a lease of `ttl` seconds; `id` 0 lets the node pick it.
    pub async fn lease_grant(
        &self,
        ttl: i64,
        id: i64,
    ) -> Result<crate::rpc::lease::LeaseGrantAnswer, ClientError> {
        let mut request = self.lease.grant_request();
        request.get().set_ttl(ttl);
        request.get().set_id(id);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| crate::rpc::lease::read::grant(results.get_result()?)))
    }

    /// Revokes lease `id`, deleting its keys in every group.
    pub async fn lease_revoke(&self, id: i64) -> Result<crate::rpc::lease::LeaseRevokeAnswer, ClientError> {
        let mut request = self.lease.revoke_request();
        request.get().set_id(id);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(
            response.get().and_then(|results| crate::rpc::lease::read::revoke(results.get_result()?, id)),
        )
    }

    /// Renews lease `id` once at every group's leader.
    pub async fn lease_keep_alive(
        &self,
        id: i64,
    ) -> Result<crate::rpc::lease::LeaseKeepAliveAnswer, ClientError> {
        let mut request = self.lease.keep_alive_request();
        request.get().set_id(id);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(
            response.get().and_then(|results| crate::rpc::lease::read::keep_alive(results.get_result()?)),
        )
    }

    /// How long lease `id` has left; with `keys`, its keys in every group.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<crate::rpc::lease::LeaseTimeToLiveAnswer, ClientError> {
        let mut request = self.lease.time_to_live_request();
        request.get().set_id(id);
        request.get().set_keys(keys);
        let response = request.send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(
            response.get().and_then(|results| crate::rpc::lease::read::time_to_live(results.get_result()?)),
        )
    }

    /// Every lease, with the time each has left.
    pub async fn lease_list(&self) -> Result<crate::rpc::lease::LeaseListAnswer, ClientError> {
        let response =
            self.lease.leases_request().send().promise.await.map_err(|error| self.rpc_error(error))?;
        self.answer(response.get().and_then(|results| crate::rpc::lease::read::list(results.get_result()?)))
    }
}
