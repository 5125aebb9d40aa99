//! etcd's KV service on one shard: range, put, delete range, txn and
//! compact through the shard's request handle, with etcd's answers.
//!
//! Compaction spans the store: `Compact(r)` compacts every group to what
//! it held when revision `r` was current (hybrid revisions are comparable
//! across groups as times; see docs/etcd.md), so a watch cache that prunes
//! every resource below `r` (kube-apiserver's) prunes exactly what the
//! store forgot.

use std::cell::OnceCell;
use std::rc::Rc;

use futures::future::join_all;
use send_wrapper::SendWrapper;
use tonic::{Request, Response, Status};

use super::convert::{self, status};
use super::proto::etcdserverpb as pb;
use super::SharedInfo;
use crate::kv::auth::AuthError;
use crate::kv::revision::revision_group;
use crate::kv::types::{self as kv, KvError};
use crate::reactor::ReactorContext;
use crate::shard::answer::{Answered, RequestError};
use crate::shard::auth::Caller;
use crate::shard::requests::Requests;

/// What the services of one shard reach: its request handle (made once its
/// groups run) and the member's etcd settings. Made on the shard's thread
/// and never used on another (see the module comment of `etcd`).
#[derive(Clone)]
pub struct ShardLocal {
    local: SendWrapper<Rc<LocalState>>,
    pub info: SharedInfo,
    /// Who the calls act for (see [`ShardLocal::acting_for`]).
    caller: Caller,
}

struct LocalState {
    context: ReactorContext,
    requests: OnceCell<Requests>,
}

impl ShardLocal {
    pub fn new(context: ReactorContext, info: SharedInfo) -> ShardLocal {
        ShardLocal {
            local: SendWrapper::new(Rc::new(LocalState { context, requests: OnceCell::new() })),
            info,
            caller: Caller::Anonymous,
        }
    }

    /// This shard acting for the caller of `request`: the user its `token`
    /// metadata names (etcd's clients send the token Authenticate gave
    /// them), else the user its connection's client certificate names,
    /// else nobody.
    pub fn acting_for<T>(&self, request: &Request<T>) -> Result<ShardLocal, Status> {
        let token = request.metadata().get("token").map(|token| token.as_bytes());
        self.acting_as(token, request.extensions().get::<Caller>())
    }

    /// [`ShardLocal::acting_for`] from a call's parts: the bytes of its
    /// `token` header, and the caller its connection carries. The direct
    /// unary path (`etcd::unary`) reads them from the HTTP request itself.
    pub fn acting_as(&self, token: Option<&[u8]>, connection: Option<&Caller>) -> Result<ShardLocal, Status> {
        let caller = match token {
            Some(token) => {
                // What `to_str` of an HTTP header value takes: visible
                // ASCII and tabs.
                let text = token
                    .iter()
                    .all(|byte| *byte == b'\t' || (32..127).contains(byte))
                    .then(|| std::str::from_utf8(token).ok())
                    .flatten()
                    .ok_or_else(|| convert::auth_status(&AuthError::InvalidToken("not text".into())))?;
                self.handle()?.session(text).map_err(status)?
            }
            None => connection.cloned().unwrap_or_default(),
        };
        Ok(ShardLocal { caller, ..self.clone() })
    }

    /// The shard's request handle, once its groups run, acting for this
    /// caller.
    pub fn requests(&self) -> Result<Requests, Status> {
        Ok(self.handle()?.with_caller(self.caller.clone()))
    }

    fn handle(&self) -> Result<&Requests, Status> {
        let local: &LocalState = &self.local;
        if let Some(requests) = local.requests.get() {
            return Ok(requests);
        }
        let requests = crate::shard::requests::local_requests(&local.context).ok_or_else(|| {
            Status::unavailable(format!(
                "shard {} is still starting its groups; retry shortly",
                local.context.shard()
            ))
        })?;
        Ok(local.requests.get_or_init(|| requests))
    }

    pub fn context(&self) -> &ReactorContext {
        &self.local.context
    }

    /// Checks a request's encoded size against `store.request_bytes_max`.
    pub fn check_size(&self, message: &impl prost::Message) -> Result<(), Status> {
        self.info.limits.check_request_bytes(message.encoded_len()).map_err(convert::limit_status)
    }
}

/// Runs a call's future, which holds the shard's `Rc` state, where tonic
/// wants a `Send` one: it stays on this reactor thread (module comment of
/// `etcd`).
pub fn on_this_shard<F: std::future::Future>(future: F) -> SendWrapper<F> {
    SendWrapper::new(future)
}

pub struct EtcdKv {
    shard: ShardLocal,
}

impl EtcdKv {
    pub fn new(shard: ShardLocal) -> EtcdKv {
        EtcdKv { shard }
    }
}

type RangeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::RangeStreamResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::kv_server::Kv for EtcdKv {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        on_this_shard(range(&shard, &request.into_inner())).await.map(Response::new)
    }

    type RangeStreamStream = RangeStream;

    async fn range_stream(
        &self,
        _: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        // etcd before 3.7 answers the same; kube-apiserver then lists in pages.
        Err(Status::unimplemented(
            "KV.RangeStream (etcd 3.7) is not served by nvkv's etcd API; list with Range and a limit",
        ))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        on_this_shard(put(&shard, &request.into_inner())).await.map(Response::new)
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        on_this_shard(delete_range(&shard, &request.into_inner())).await.map(Response::new)
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        on_this_shard(txn(&shard, &request.into_inner())).await.map(Response::new)
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let request = request.into_inner();
        on_this_shard(async {
            let answer =
                compact_everywhere(&shard.requests()?, request.revision, self.shard.info.groups).await?;
            Ok(Response::new(pb::CompactionResponse {
                header: convert::answered_header(&self.shard.info, &answer, answer.response),
            }))
        })
        .await
    }
}

// The calls of the KV service, each in one place: the tonic service above
// and the direct unary path (`etcd::unary`) both run these, for the caller
// `shard` acts for. Each counts as the reactor's load while it runs
// (`reactor::work_in_flight`).

/// etcd's Range.
pub async fn range(shard: &ShardLocal, request: &pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
    let _counted = crate::reactor::work_in_flight(1);
    shard.check_size(request)?;
    let range = convert::range_request(request)?;
    shard.info.limits.check_key(&range.key).map_err(convert::limit_status)?;
    let answer = shard.requests()?.range(range, !request.serializable).await.map_err(status)?;
    Ok(convert::range_response(&shard.info, answer.term, request, answer.response))
}

/// etcd's Put.
pub async fn put(shard: &ShardLocal, request: &pb::PutRequest) -> Result<pb::PutResponse, Status> {
    let _counted = crate::reactor::work_in_flight(1);
    shard.check_size(request)?;
    let put = convert::put_request(request)?;
    shard.info.limits.check_put(&put).map_err(convert::limit_status)?;
    let requests = &shard.requests()?;
    if request.ignore_value || request.ignore_lease {
        return put_keeping(shard, requests, request).await;
    }
    let answer = requests.put(put).await.map_err(status)?;
    Ok(convert::put_response(&shard.info, answer.term, answer.response))
}

/// etcd's DeleteRange.
pub async fn delete_range(
    shard: &ShardLocal,
    request: &pb::DeleteRangeRequest,
) -> Result<pb::DeleteRangeResponse, Status> {
    let _counted = crate::reactor::work_in_flight(1);
    shard.check_size(request)?;
    let delete = convert::delete_request(request)?;
    let answer = shard.requests()?.delete_range(delete).await.map_err(status)?;
    Ok(convert::delete_response(&shard.info, answer.term, answer.response))
}

/// etcd's Txn.
pub async fn txn(shard: &ShardLocal, request: &pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
    let _counted = crate::reactor::work_in_flight(1);
    shard.check_size(request)?;
    let txn = convert::txn_request(request)?;
    shard.info.limits.check_txn(&txn).map_err(convert::limit_status)?;
    let answer = shard.requests()?.txn(txn).await.map_err(status)?;
    Ok(convert::txn_response(&shard.info, answer.term, request, answer.response))
}

/// A put that keeps the key's value or lease (etcd's `ignore_value`,
/// `ignore_lease`): read the key, then write it in a txn guarded by the
/// mod revision read, again until no other write came between.
async fn put_keeping(
    shard: &ShardLocal,
    requests: &Requests,
    request: &pb::PutRequest,
) -> Result<pb::PutResponse, Status> {
    if request.ignore_value && !request.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    loop {
        let read = kv::RangeRequest { key: request.key.clone(), ..kv::RangeRequest::default() };
        let current = requests.range(read, true).await.map_err(status)?;
        let Some(found) = current.response.kvs.into_iter().next() else {
            return Err(convert::key_not_found());
        };
        let put = kv::PutRequest {
            key: request.key.clone(),
            value: if request.ignore_value { found.value.clone() } else { request.value.clone() },
            lease: if request.ignore_lease { found.lease } else { request.lease },
            prev_kv: false,
        };
        let txn = kv::TxnRequest {
            compares: vec![kv::Compare {
                key: request.key.clone(),
                range_end: Vec::new(),
                target: kv::CompareTarget::ModRevision(found.mod_revision),
                result: kv::CompareResult::Equal,
            }],
            success: vec![kv::RequestOp::Put(put)],
            failure: Vec::new(),
        };
        let answer = requests.txn(txn).await.map_err(status)?;
        if answer.response.succeeded {
            let response = kv::PutResponse {
                revision: answer.response.revision,
                prev_kv: request.prev_kv.then_some(found),
            };
            return Ok(convert::put_response(&shard.info, answer.term, response));
        }
    }
}

/// Compacts every group at `revision` (see the module comment): the group
/// that made it exactly as etcd would (a future or compacted revision is
/// refused), every other group at that revision, or at its own current
/// revision when it has written nothing since, and not at all when it is
/// compacted that far already. Answers with the revision's group's header.
async fn compact_everywhere(
    requests: &Requests,
    revision: i64,
    groups: u32,
) -> Result<Answered<i64>, Status> {
    let own = revision_group(revision);
    if revision <= 0 || own >= groups {
        return Err(Status::invalid_argument(format!(
            "compaction revision {revision} is not a revision of this store (its low bits name group {own}, the \
             store has groups 0 to {}); compact at a revision an answer of this store carried",
            groups - 1
        )));
    }
    let first = requests.compact(own, revision).await.map_err(status)?;
    let others = join_all((0..groups).filter(|group| *group != own).map(|group| async move {
        match requests.compact(group, revision).await {
            Err(RequestError::Kv(KvError::FutureRevision { current, .. })) => {
                match requests.compact(group, current).await {
                    Err(RequestError::Kv(KvError::Compacted { .. })) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
            Err(RequestError::Kv(KvError::Compacted { .. })) => Ok(()),
            other => other.map(|_| ()),
        }
    }))
    .await;
    for outcome in others {
        outcome.map_err(status)?;
    }
    Ok(first)
}
