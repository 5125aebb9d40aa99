//! etcd's Lease service on one shard: grant, revoke, keep-alive (a
//! stream), time to live and the list of leases, through the shard's
//! request handle. A lease lives in every group (see `shard::lease`); the
//! headers carry group 0's revision, where leases are granted first.

use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, status};
use super::kv::{on_this_shard, ShardLocal};
use super::proto::etcdserverpb as pb;
use crate::kv::types::KvError;
use crate::shard::answer::RequestError;

/// Keep-alive answers queued for a slow client before its stream waits.
const KEEP_ALIVE_ANSWERS_QUEUED: usize = 16;

pub struct EtcdLease {
    shard: ShardLocal,
}

impl EtcdLease {
    pub fn new(shard: ShardLocal) -> EtcdLease {
        EtcdLease { shard }
    }
}

type KeepAliveStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>,
>;

fn not_found(error: &RequestError) -> bool {
    matches!(error, RequestError::Kv(KvError::LeaseNotFound(_)))
}

/// Renews lease `id` once, as etcd answers it: TTL 0 when it does not exist.
async fn keep_alive_once(shard: &ShardLocal, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    match shard.requests()?.lease_keep_alive(id).await {
        Ok(answer) => Ok(pb::LeaseKeepAliveResponse {
            header: convert::answered_header(&shard.info, &answer, answer.response.revision),
            id,
            ttl: answer.response.lease.granted_ttl,
        }),
        Err(error) if not_found(&error) => {
            Ok(pb::LeaseKeepAliveResponse { header: convert::header(&shard.info, 0, 0), id, ttl: 0 })
        }
        Err(error) => Err(status(error)),
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for EtcdLease {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        on_this_shard(async {
            if request.ttl <= 0 {
                return Err(Status::invalid_argument(format!(
                    "lease TTL {} s is not positive; give a TTL of 1 s or more",
                    request.ttl
                )));
            }
            let answer = shard.requests()?.lease_grant(request.ttl, request.id).await.map_err(status)?;
            Ok(Response::new(pb::LeaseGrantResponse {
                header: convert::answered_header(&self.shard.info, &answer, answer.response.revision),
                id: answer.response.id,
                ttl: answer.response.ttl_seconds,
                error: String::new(),
            }))
        })
        .await
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        on_this_shard(async {
            let answer = shard.requests()?.lease_revoke(request.id).await.map_err(status)?;
            Ok(Response::new(pb::LeaseRevokeResponse {
                header: convert::answered_header(&self.shard.info, &answer, answer.response.revision),
            }))
        })
        .await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let mut requests = request.into_inner();
        let (sender, mut receiver) = tokio::sync::mpsc::channel(KEEP_ALIVE_ANSWERS_QUEUED);
        // One renewal at a time, in the order asked: the stream is the
        // client's keep-alive loop, one message per lease per interval.
        tokio::task::spawn_local(async move {
            loop {
                let next = match requests.message().await {
                    Ok(Some(next)) => next,
                    Ok(None) => return,
                    Err(error) => {
                        tracing::debug!(%error, "a lease keep-alive stream ended");
                        return;
                    }
                };
                let answer = keep_alive_once(&shard, next.id).await;
                let failed = answer.is_err();
                if sender.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        let answers = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        on_this_shard(async {
            match shard.requests()?.lease_time_to_live(request.id, request.keys).await {
                Ok(answer) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: convert::answered_header(&self.shard.info, &answer, answer.response.revision),
                    id: request.id,
                    ttl: answer.response.lease.remaining_ttl,
                    granted_ttl: answer.response.lease.granted_ttl,
                    keys: answer.response.keys,
                })),
                // etcd answers a lease it does not know with TTL -1.
                Err(error) if not_found(&error) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: convert::header(&self.shard.info, 0, 0),
                    id: request.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                })),
                Err(error) => Err(status(error)),
            }
        })
        .await
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        on_this_shard(async {
            let answer = shard.requests()?.lease_list().await.map_err(status)?;
            Ok(Response::new(pb::LeaseLeasesResponse {
                header: convert::answered_header(&self.shard.info, &answer, answer.response.revision),
                leases: answer.response.leases.iter().map(|lease| pb::LeaseStatus { id: lease.id }).collect(),
            }))
        })
        .await
    }
}
