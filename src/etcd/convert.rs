//! Between etcd's messages and nvkv's kv types, in one place: keys and
//! values, headers, ranges (with the sorting and revision filters etcd
//! applies after reading), transactions, and the errors etcd clients
//! recognise.
//!
//! An error an etcd client branches on (ErrCompacted, ErrFutureRev, lease
//! not found, ...) carries etcd's exact message, because the clients map
//! errors by their text (kube-apiserver turns ErrCompacted into 410 Gone);
//! every other refusal carries nvkv's own message, which names the value
//! and what to do.

use tonic::Status;

use super::proto::etcdserverpb as pb;
use super::proto::mvccpb;
use super::EtcdInfo;
use crate::kv::auth::AuthError;
use crate::kv::limits::LimitError;
use crate::kv::types::{self as kv, KvError};
use crate::raft::GroupError;
use crate::shard::answer::{Answered, RequestError};

/// What the etcd port reads of a request beyond `store.request_bytes_max`:
/// gRPC framing and a request a little over the limit, which is refused
/// with etcd's "request is too large" instead of a reset stream.
pub const REQUEST_HEADROOM_BYTES: usize = 64 << 10;

pub const ERROR_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub const ERROR_FUTURE_REVISION: &str = "etcdserver: mvcc: required revision is a future revision";
pub const ERROR_LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const ERROR_LEASE_EXISTS: &str = "etcdserver: lease already exists";
const ERROR_DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
const ERROR_EMPTY_KEY: &str = "etcdserver: key is not provided";
const ERROR_KEY_NOT_FOUND: &str = "etcdserver: key not found";
const ERROR_TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const ERROR_REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
const ERROR_NO_LEADER: &str = "etcdserver: no leader";
const ERROR_TIMEOUT: &str = "etcdserver: request timed out";
/// What etcd answers a write while its NOSPACE alarm is raised (its
/// clients, etcdctl among them, recognise this text).
pub const ERROR_NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

pub fn key_not_found() -> Status {
    Status::invalid_argument(ERROR_KEY_NOT_FOUND)
}

pub fn empty_key() -> Status {
    Status::invalid_argument(ERROR_EMPTY_KEY)
}

/// The status an etcd client gets for a refused request.
pub fn status(error: RequestError) -> Status {
    match error {
        RequestError::Kv(error) => kv_status(error),
        RequestError::Auth(error) => auth_status(&error),
        RequestError::Group(error) => group_status(error),
        error @ (RequestError::TxnSpansGroups { .. } | RequestError::NoSuchGroup { .. }) => {
            Status::invalid_argument(error.to_string())
        }
        error @ RequestError::Watch(_) => Status::resource_exhausted(error.to_string()),
        error @ (RequestError::Starting { .. }
        | RequestError::Overloaded { .. }
        | RequestError::Joining { .. }
        | RequestError::Removed { .. }) => Status::unavailable(error.to_string()),
        error @ RequestError::Codec(_) => Status::internal(error.to_string()),
    }
}

fn kv_status(error: KvError) -> Status {
    match error {
        KvError::Compacted { .. } => Status::out_of_range(ERROR_COMPACTED),
        KvError::FutureRevision { .. } => Status::out_of_range(ERROR_FUTURE_REVISION),
        KvError::LeaseNotFound(_) => Status::not_found(ERROR_LEASE_NOT_FOUND),
        KvError::LeaseExists(_) => Status::failed_precondition(ERROR_LEASE_EXISTS),
        KvError::DuplicateKeyInTxn(_) => Status::invalid_argument(ERROR_DUPLICATE_KEY),
        error @ KvError::InvalidArgument(_) => Status::invalid_argument(error.to_string()),
        KvError::Auth(error) => auth_status(&error),
    }
}

/// etcd's answer to an auth refusal: its exact text, which its clients map
/// back to their errors (etcdctl's `auth enable` adds the root role when it
/// reads "root user does not have root role").
pub fn auth_status(error: &AuthError) -> Status {
    match error {
        AuthError::UserExists(_) => Status::failed_precondition("etcdserver: user name already exists"),
        AuthError::UserNotFound(_) => Status::failed_precondition("etcdserver: user name not found"),
        AuthError::RoleExists(_) => Status::failed_precondition("etcdserver: role name already exists"),
        AuthError::RoleNotFound(_) => Status::failed_precondition("etcdserver: role name not found"),
        AuthError::RoleNotGranted { .. } => {
            Status::failed_precondition("etcdserver: role is not granted to the user")
        }
        AuthError::PermissionNotGranted { .. } => {
            Status::failed_precondition("etcdserver: permission is not granted to the role")
        }
        AuthError::RootUserMissing => Status::failed_precondition("etcdserver: root user does not exist"),
        AuthError::RootRoleMissing => {
            Status::failed_precondition("etcdserver: root user does not have root role")
        }
        AuthError::RootProtected(_) => Status::invalid_argument("etcdserver: invalid auth management"),
        AuthError::InvalidName { name, .. } if name.is_empty() => {
            Status::invalid_argument("etcdserver: user name is empty")
        }
        error @ (AuthError::InvalidName { .. } | AuthError::TooMany { .. } | AuthError::Invalid(_)) => {
            Status::invalid_argument(error.to_string())
        }
        AuthError::Unauthenticated => Status::invalid_argument("etcdserver: user name is empty"),
        AuthError::InvalidCredentials(_) => {
            Status::invalid_argument("etcdserver: authentication failed, invalid user ID or password")
        }
        AuthError::InvalidToken(_) => Status::unauthenticated("etcdserver: invalid auth token"),
        AuthError::PermissionDenied { .. } => Status::permission_denied("etcdserver: permission denied"),
    }
}

fn group_status(error: GroupError) -> Status {
    match error {
        GroupError::Timeout { .. } => Status::unavailable(ERROR_TIMEOUT),
        GroupError::NotLeader { leader: None, .. } | GroupError::Unavailable { .. } => {
            Status::unavailable(ERROR_NO_LEADER)
        }
        GroupError::CommandTooLarge { .. } => Status::invalid_argument(ERROR_REQUEST_TOO_LARGE),
        GroupError::NoSpace { .. } | GroupError::OverQuota { .. } => {
            Status::resource_exhausted(ERROR_NO_SPACE)
        }
        error @ (GroupError::MembershipChange { .. } | GroupError::NotCaughtUp { .. }) => {
            Status::failed_precondition(error.to_string())
        }
        error => Status::unavailable(error.to_string()),
    }
}

pub fn limit_status(error: LimitError) -> Status {
    match error {
        LimitError::EmptyKey { .. } => empty_key(),
        LimitError::TooManyTxnOps { .. } => Status::invalid_argument(ERROR_TOO_MANY_OPS),
        LimitError::RequestTooLarge { .. } => Status::invalid_argument(ERROR_REQUEST_TOO_LARGE),
        error => Status::invalid_argument(error.to_string()),
    }
}

/// A response header for an answer of `group` at `revision`.
pub fn header(info: &EtcdInfo, term: u64, revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: info.cluster_id,
        member_id: info.member_id,
        revision,
        raft_term: term,
    })
}

pub fn answered_header<T>(
    info: &EtcdInfo,
    answer: &Answered<T>,
    revision: i64,
) -> Option<pb::ResponseHeader> {
    header(info, answer.term, revision)
}

pub fn key_value(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event(event: kv::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match event.kind {
            kv::EventKind::Put => mvccpb::event::EventType::Put as i32,
            kv::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(key_value(event.kv)),
        prev_kv: event.prev_kv.map(key_value),
    }
}

/// Whether a range needs every key of its interval read before etcd's
/// sorting and filters pick and cut the answer.
fn reads_everything(request: &pb::RangeRequest) -> bool {
    request.sort_order != pb::range_request::SortOrder::None as i32
        || request.sort_target != pb::range_request::SortTarget::Key as i32
        || request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0
}

/// The store's range for an etcd range: the limit and keys_only go down
/// unless sorting or filters must see everything first (etcd's rule).
pub fn range_request(request: &pb::RangeRequest) -> Result<kv::RangeRequest, Status> {
    if request.key.is_empty() {
        return Err(empty_key());
    }
    if request.limit < 0 {
        return Err(Status::invalid_argument(format!(
            "range limit {} is negative; give 0 for no limit or a positive count",
            request.limit
        )));
    }
    let everything = reads_everything(request) && !request.count_only;
    let sort_by_value = request.sort_target == pb::range_request::SortTarget::Value as i32;
    Ok(kv::RangeRequest {
        key: request.key.clone(),
        range_end: request.range_end.clone(),
        limit: if everything { 0 } else { request.limit },
        revision: request.revision,
        count_only: request.count_only,
        keys_only: request.keys_only && !(everything && sort_by_value),
    })
}

/// etcd's answer to `request` from the store's answer to `range_request(request)`:
/// revision filters, then sorting, then the limit (etcd's order; `count`
/// stays the count of the whole interval, as etcd's does).
pub fn range_response(
    info: &EtcdInfo,
    term: u64,
    request: &pb::RangeRequest,
    response: kv::RangeResponse,
) -> pb::RangeResponse {
    let mut kvs = response.kvs;
    let mut more = response.more;
    if reads_everything(request) && !request.count_only {
        let keep = |kv: &kv::KeyValue| {
            (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
                && (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
                && (request.max_create_revision == 0 || kv.create_revision <= request.max_create_revision)
                && (request.min_create_revision == 0 || kv.create_revision >= request.min_create_revision)
        };
        kvs.retain(keep);
        sort(request, &mut kvs);
        more = false;
        if request.limit > 0 && kvs.len() > request.limit as usize {
            kvs.truncate(request.limit as usize);
            more = true;
        }
        if request.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
    }
    pb::RangeResponse {
        header: header(info, term, response.revision),
        kvs: kvs.into_iter().map(key_value).collect(),
        more,
        count: response.count,
    }
}

/// etcd's sorting: by the target, ascending unless asked otherwise; the
/// key order the store gives breaks ties (the sort is stable).
fn sort(request: &pb::RangeRequest, kvs: &mut [kv::KeyValue]) {
    use pb::range_request::{SortOrder, SortTarget};
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order == SortOrder::None {
        return;
    }
    let compare = |left: &kv::KeyValue, right: &kv::KeyValue| match target {
        SortTarget::Key => left.key.cmp(&right.key),
        SortTarget::Version => left.version.cmp(&right.version),
        SortTarget::Create => left.create_revision.cmp(&right.create_revision),
        SortTarget::Mod => left.mod_revision.cmp(&right.mod_revision),
        SortTarget::Value => left.value.cmp(&right.value),
    };
    if order == SortOrder::Descend {
        kvs.sort_by(|left, right| compare(right, left));
    } else {
        kvs.sort_by(compare);
    }
}

pub fn put_request(request: &pb::PutRequest) -> Result<kv::PutRequest, Status> {
    if request.key.is_empty() {
        return Err(empty_key());
    }
    Ok(kv::PutRequest {
        key: request.key.clone(),
        value: request.value.clone(),
        lease: request.lease,
        prev_kv: request.prev_kv,
    })
}

pub fn delete_request(request: &pb::DeleteRangeRequest) -> Result<kv::DeleteRangeRequest, Status> {
    if request.key.is_empty() {
        return Err(empty_key());
    }
    Ok(kv::DeleteRangeRequest {
        key: request.key.clone(),
        range_end: request.range_end.clone(),
        prev_kv: request.prev_kv,
    })
}

pub fn delete_response(
    info: &EtcdInfo,
    term: u64,
    response: kv::DeleteRangeResponse,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(info, term, response.revision),
        deleted: response.deleted,
        prev_kvs: response.prev_kvs.into_iter().map(key_value).collect(),
    }
}

pub fn put_response(info: &EtcdInfo, term: u64, response: kv::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: header(info, term, response.revision),
        prev_kv: response.prev_kv.map(key_value),
    }
}

fn compare(compare: &pb::Compare) -> Result<kv::Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let result = match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => kv::CompareResult::Equal,
        Ok(CompareResult::Greater) => kv::CompareResult::Greater,
        Ok(CompareResult::Less) => kv::CompareResult::Less,
        Ok(CompareResult::NotEqual) => kv::CompareResult::NotEqual,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "compare result {} is not one of EQUAL (0), GREATER (1), LESS (2), NOT_EQUAL (3)",
                compare.result
            )))
        }
    };
    let operand = compare.target_union.clone();
    let number = |value: Option<TargetUnion>| match value {
        Some(TargetUnion::Version(operand))
        | Some(TargetUnion::CreateRevision(operand))
        | Some(TargetUnion::ModRevision(operand))
        | Some(TargetUnion::Lease(operand)) => operand,
        _ => 0,
    };
    let target = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Version) => kv::CompareTarget::Version(number(operand)),
        Ok(CompareTarget::Create) => kv::CompareTarget::CreateRevision(number(operand)),
        Ok(CompareTarget::Mod) => kv::CompareTarget::ModRevision(number(operand)),
        Ok(CompareTarget::Lease) => kv::CompareTarget::Lease(number(operand)),
        Ok(CompareTarget::Value) => kv::CompareTarget::Value(match operand {
            Some(TargetUnion::Value(value)) => value,
            _ => Vec::new(),
        }),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "compare target {} is not one of VERSION (0), CREATE (1), MOD (2), VALUE (3), LEASE (4)",
                compare.target
            )))
        }
    };
    Ok(kv::Compare { key: compare.key.clone(), range_end: compare.range_end.clone(), target, result })
}

/// The store's transaction for an etcd txn, refusing what etcd refuses
/// (empty keys; too many operations is `store.txn_ops_max`, checked by the
/// caller) and what nvkv cannot do atomically inside a transaction (a put
/// that keeps the value or lease it finds).
pub fn txn_request(request: &pb::TxnRequest) -> Result<kv::TxnRequest, Status> {
    let ops = |ops: &[pb::RequestOp]| ops.iter().map(request_op).collect::<Result<Vec<_>, _>>();
    Ok(kv::TxnRequest {
        compares: request.compare.iter().map(compare).collect::<Result<_, _>>()?,
        success: ops(&request.success)?,
        failure: ops(&request.failure)?,
    })
}

fn request_op(op: &pb::RequestOp) -> Result<kv::RequestOp, Status> {
    use pb::request_op::Request;
    match &op.request {
        Some(Request::RequestRange(range)) => Ok(kv::RequestOp::Range(range_request(range)?)),
        Some(Request::RequestPut(put)) if put.ignore_value || put.ignore_lease => Err(Status::invalid_argument(
            "a put with ignore_value or ignore_lease inside a txn is not supported by nvkv (it cannot read \
             the value or lease it keeps within the txn); send it as a put of its own",
        )),
        Some(Request::RequestPut(put)) => Ok(kv::RequestOp::Put(put_request(put)?)),
        Some(Request::RequestDeleteRange(delete)) => Ok(kv::RequestOp::DeleteRange(delete_request(delete)?)),
        Some(Request::RequestTxn(txn)) => Ok(kv::RequestOp::Txn(txn_request(txn)?)),
        None => Err(Status::invalid_argument("a txn operation carries no request; give a range, put, delete or txn")),
    }
}

/// etcd's txn answer: every nested answer with the txn's header.
pub fn txn_response(
    info: &EtcdInfo,
    term: u64,
    request: &pb::TxnRequest,
    response: kv::TxnResponse,
) -> pb::TxnResponse {
    let branch = if response.succeeded { &request.success } else { &request.failure };
    pb::TxnResponse {
        header: header(info, term, response.revision),
        succeeded: response.succeeded,
        responses: response
            .responses
            .into_iter()
            .zip(branch)
            .map(|(answer, asked)| response_op(info, term, asked, answer))
            .collect(),
    }
}

fn response_op(info: &EtcdInfo, term: u64, asked: &pb::RequestOp, answer: kv::ResponseOp) -> pb::ResponseOp {
    use pb::request_op::Request;
    use pb::response_op::Response;
    let response = match (answer, &asked.request) {
        (kv::ResponseOp::Range(range), Some(Request::RequestRange(request))) => {
            Response::ResponseRange(range_response(info, term, request, range))
        }
        (kv::ResponseOp::Range(range), _) => {
            Response::ResponseRange(range_response(info, term, &pb::RangeRequest::default(), range))
        }
        (kv::ResponseOp::Put(put), _) => Response::ResponsePut(put_response(info, term, put)),
        (kv::ResponseOp::DeleteRange(delete), _) => {
            Response::ResponseDeleteRange(delete_response(info, term, delete))
        }
        (kv::ResponseOp::Txn(txn), Some(Request::RequestTxn(request))) => {
            Response::ResponseTxn(txn_response(info, term, request, txn))
        }
        (kv::ResponseOp::Txn(txn), _) => {
            Response::ResponseTxn(txn_response(info, term, &pb::TxnRequest::default(), txn))
        }
    };
    pb::ResponseOp { response: Some(response) }
}
