//! The KV interface of `schema/nvkv.capnp`: the server that turns calls into
//! the shard's requests, and the conversions between schema and store types
//! (used by the server and the client library alike). Every refusal reaches
//! the client as a typed `Error`, never as a dropped connection.

use std::cell::Cell;
use std::rc::Rc;

use crate::kv::auth::AuthError;
use crate::kv::limits::{LimitError, Limits};
use crate::kv::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue, KvError,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use crate::kv::watch::WatchError;
use crate::nvkv_capnp::{
    compare, delete_range_request, delete_range_result, k_v as kv, key_value, put_request, put_result,
    range_request, range_result, request_op, response_header, response_op, txn_request, txn_response,
    txn_result, CompareResult as SchemaCompareResult, ErrorCode as SchemaErrorCode,
};
use crate::raft::GroupError;
use crate::shard::answer::{Answered, RequestError};
use crate::shard::requests::Requests;

/// A typed refusal as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ServerError {
    pub code: ErrorCode,
    pub message: String,
    pub leader_hint: u64,
    pub compact_revision: i64,
}

/// The schema's error codes, as plain Rust.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ErrorCode {
    Unavailable,
    NotLeader,
    Compacted,
    KeyTooLarge,
    ValueTooLarge,
    RequestTooLarge,
    TxnSpansGroups,
    LeaseNotFound,
    InvalidArgument,
    LeaseExists,
    NotMember,
    NotCaughtUp,
    NoSpace,
    PermissionDenied,
    Unauthenticated,
    AuthRefused,
}

impl From<SchemaErrorCode> for ErrorCode {
    fn from(code: SchemaErrorCode) -> ErrorCode {
        use SchemaErrorCode as Schema;
        match code {
            Schema::Unavailable => ErrorCode::Unavailable,
            Schema::NotLeader => ErrorCode::NotLeader,
            Schema::Compacted => ErrorCode::Compacted,
            Schema::KeyTooLarge => ErrorCode::KeyTooLarge,
            Schema::ValueTooLarge => ErrorCode::ValueTooLarge,
            Schema::RequestTooLarge => ErrorCode::RequestTooLarge,
            Schema::TxnSpansGroups => ErrorCode::TxnSpansGroups,
            Schema::LeaseNotFound => ErrorCode::LeaseNotFound,
            Schema::InvalidArgument => ErrorCode::InvalidArgument,
            Schema::LeaseExists => ErrorCode::LeaseExists,
            Schema::NotMember => ErrorCode::NotMember,
            Schema::NotCaughtUp => ErrorCode::NotCaughtUp,
            Schema::NoSpace => ErrorCode::NoSpace,
            Schema::PermissionDenied => ErrorCode::PermissionDenied,
            Schema::Unauthenticated => ErrorCode::Unauthenticated,
            Schema::AuthRefused => ErrorCode::AuthRefused,
        }
    }
}

/// The typed error of a refused request, in one place for every method.
pub fn server_error(error: &RequestError) -> ServerError {
    let plain = |code| ServerError { code, message: error.to_string(), leader_hint: 0, compact_revision: 0 };
    match error {
        RequestError::Group(GroupError::NotLeader { leader, .. }) => {
            ServerError { leader_hint: leader.unwrap_or(0), ..plain(ErrorCode::NotLeader) }
        }
        RequestError::Group(GroupError::CommandTooLarge { .. }) => plain(ErrorCode::RequestTooLarge),
        RequestError::Group(GroupError::NotCaughtUp { .. }) => plain(ErrorCode::NotCaughtUp),
        RequestError::Group(GroupError::NoSpace { .. } | GroupError::OverQuota { .. }) => {
            plain(ErrorCode::NoSpace)
        }
        RequestError::Joining { .. } | RequestError::Removed { .. } => plain(ErrorCode::NotMember),
        RequestError::Auth(refusal) | RequestError::Kv(KvError::Auth(refusal)) => plain(auth_code(refusal)),
        RequestError::Group(_) | RequestError::Starting { .. } | RequestError::Overloaded { .. } => {
            plain(ErrorCode::Unavailable)
        }
        RequestError::Kv(KvError::Compacted { compact_revision, .. }) => {
            ServerError { compact_revision: *compact_revision, ..plain(ErrorCode::Compacted) }
        }
        RequestError::Kv(KvError::LeaseNotFound(_)) => plain(ErrorCode::LeaseNotFound),
        RequestError::Kv(KvError::LeaseExists(_)) => plain(ErrorCode::LeaseExists),
        RequestError::TxnSpansGroups { .. } => plain(ErrorCode::TxnSpansGroups),
        RequestError::Watch(WatchError::TooManyWatchers { .. }) => plain(ErrorCode::Unavailable),
        RequestError::Watch(_) => plain(ErrorCode::InvalidArgument),
        RequestError::Kv(_) | RequestError::Codec(_) | RequestError::NoSuchGroup { .. } => {
            plain(ErrorCode::InvalidArgument)
        }
    }
}

/// The code of an auth refusal: a request that may not run, a caller that
/// is nobody, or a change of users and roles that does not apply.
pub fn auth_code(refusal: &AuthError) -> ErrorCode {
    match refusal {
        AuthError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
        AuthError::Unauthenticated | AuthError::InvalidCredentials(_) | AuthError::InvalidToken(_) => {
            ErrorCode::Unauthenticated
        }
        _ => ErrorCode::AuthRefused,
    }
}

/// An auth refusal as the client sees it.
pub fn auth_error(refusal: &AuthError) -> ServerError {
    ServerError {
        code: auth_code(refusal),
        message: refusal.to_string(),
        leader_hint: 0,
        compact_revision: 0,
    }
}

pub fn limit_error(error: &LimitError) -> ServerError {
    let code = match error {
        LimitError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
        LimitError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
        LimitError::TooManyTxnOps { .. } | LimitError::RequestTooLarge { .. } => ErrorCode::RequestTooLarge,
        LimitError::EmptyKey { .. } => ErrorCode::InvalidArgument,
    };
    ServerError { code, message: error.to_string(), leader_hint: 0, compact_revision: 0 }
}

pub fn set_error(mut builder: crate::nvkv_capnp::error::Builder<'_>, error: &ServerError) {
    use SchemaErrorCode as Schema;
    builder.set_code(match error.code {
        ErrorCode::Unavailable => Schema::Unavailable,
        ErrorCode::NotLeader => Schema::NotLeader,
        ErrorCode::Compacted => Schema::Compacted,
        ErrorCode::KeyTooLarge => Schema::KeyTooLarge,
        ErrorCode::ValueTooLarge => Schema::ValueTooLarge,
        ErrorCode::RequestTooLarge => Schema::RequestTooLarge,
        ErrorCode::TxnSpansGroups => Schema::TxnSpansGroups,
        ErrorCode::LeaseNotFound => Schema::LeaseNotFound,
        ErrorCode::InvalidArgument => Schema::InvalidArgument,
        ErrorCode::LeaseExists => Schema::LeaseExists,
        ErrorCode::NotMember => Schema::NotMember,
        ErrorCode::NotCaughtUp => Schema::NotCaughtUp,
        ErrorCode::NoSpace => Schema::NoSpace,
        ErrorCode::PermissionDenied => Schema::PermissionDenied,
        ErrorCode::Unauthenticated => Schema::Unauthenticated,
        ErrorCode::AuthRefused => Schema::AuthRefused,
    });
    builder.set_message(&error.message);
    builder.set_leader_hint(error.leader_hint);
    builder.set_compact_revision(error.compact_revision);
}

/// Reads an `Error` of the schema.
pub fn read_error(reader: crate::nvkv_capnp::error::Reader<'_>) -> capnp::Result<ServerError> {
    Ok(ServerError {
        code: reader.get_code()?.into(),
        message: reader.get_message()?.to_string()?,
        leader_hint: reader.get_leader_hint(),
        compact_revision: reader.get_compact_revision(),
    })
}

pub fn set_header<T>(mut builder: response_header::Builder<'_>, answer: &Answered<T>, revision: i64) {
    builder.set_group(answer.group);
    builder.set_revision(revision);
    builder.set_raft_term(answer.term);
    builder.set_member_id(answer.member);
}

/// Answers a compaction (of KV or Maintenance) with its header or its
/// typed error.
pub fn set_compact_result(
    result: crate::nvkv_capnp::compact_result::Builder<'_>,
    answer: &Result<Answered<i64>, RequestError>,
) {
    match answer {
        Ok(answer) => set_header(result.init_ok(), answer, answer.response),
        Err(error) => set_error(result.init_error(), &server_error(error)),
    }
}

/// The header of a response, as plain Rust.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    pub group: u32,
    pub revision: i64,
    pub raft_term: u64,
    pub member_id: u64,
}

pub fn read_header(reader: response_header::Reader<'_>) -> Header {
    Header {
        group: reader.get_group(),
        revision: reader.get_revision(),
        raft_term: reader.get_raft_term(),
        member_id: reader.get_member_id(),
    }
}

pub fn set_key_value(mut builder: key_value::Builder<'_>, kv: &KeyValue) {
    builder.set_key(&kv.key);
    builder.set_value(&kv.value);
    builder.set_create_revision(kv.create_revision);
    builder.set_mod_revision(kv.mod_revision);
    builder.set_version(kv.version);
    builder.set_lease(kv.lease);
}

pub fn read_key_value(reader: key_value::Reader<'_>) -> capnp::Result<KeyValue> {
    Ok(KeyValue {
        key: reader.get_key()?.to_vec(),
        value: reader.get_value()?.to_vec(),
        create_revision: reader.get_create_revision(),
        mod_revision: reader.get_mod_revision(),
        version: reader.get_version(),
        lease: reader.get_lease(),
    })
}

/// A KV call as the shard takes it: read from the schema, not yet checked.
#[derive(Clone, Debug)]
pub enum KvRequest {
    Put(PutRequest),
    /// A range, and whether it passes a read barrier first.
    Range {
        request: RangeRequest,
        linearizable: bool,
    },
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// A KV call's answer, or its typed refusal.
#[derive(Clone, Debug)]
pub enum KvAnswer {
    Put(Result<Answered<PutResponse>, ServerError>),
    Range(Result<Answered<RangeResponse>, ServerError>),
    DeleteRange(Result<Answered<DeleteRangeResponse>, ServerError>),
    Txn(Result<Answered<TxnResponse>, ServerError>),
}

impl KvRequest {
    /// The answer of this kind that refuses it with `error`.
    fn refused(&self, error: ServerError) -> KvAnswer {
        match self {
            KvRequest::Put(_) => KvAnswer::Put(Err(error)),
            KvRequest::Range { .. } => KvAnswer::Range(Err(error)),
            KvRequest::DeleteRange(_) => KvAnswer::DeleteRange(Err(error)),
            KvRequest::Txn(_) => KvAnswer::Txn(Err(error)),
        }
    }
}

/// Checks a call against the node's limits, then has the shard answer it.
/// `bytes` is the call's size as it arrived (see [`measure_request`]).
pub async fn answer_request(
    requests: &Requests,
    limits: &Limits,
    bytes: usize,
    request: KvRequest,
) -> KvAnswer {
    let checked = match &request {
        KvRequest::Put(put) => limits.check_put(put),
        KvRequest::Range { request, .. } => limits.check_key(&request.key),
        KvRequest::DeleteRange(delete) => limits.check_key(&delete.key),
        KvRequest::Txn(txn) => limits.check_txn(txn),
    }
    .and_then(|()| limits.check_request_bytes(bytes));
    if let Err(error) = checked {
        return request.refused(limit_error(&error));
    }
    let refused = |error: RequestError| server_error(&error);
    let _counted = crate::reactor::work_in_flight(1);
    // This future is as large as its largest kind's, and a KV stream copies
    // it into a box per call: ranges and deletes (whose futures walk several
    // groups, several times a write's) are boxed on their own, so a put's or
    // a txn's call carries only its own state.
    match request {
        KvRequest::Put(put) => KvAnswer::Put(requests.put(put).await.map_err(refused)),
        KvRequest::Range { request, linearizable } => {
            KvAnswer::Range(Box::pin(requests.range(request, linearizable)).await.map_err(refused))
        }
        KvRequest::DeleteRange(delete) => {
            KvAnswer::DeleteRange(Box::pin(requests.delete_range(delete)).await.map_err(refused))
        }
        KvRequest::Txn(txn) => KvAnswer::Txn(requests.txn(txn).await.map_err(refused)),
    }
}

/// The size of a request, measured before its fields are read, or why it
/// is refused without reading them: too deeply nested, or so far over
/// `request_bytes_max` that reading it again would pass the reader's
/// traversal limit (which fails the call untyped).
pub fn measure_request(
    limits: &Limits,
    size: capnp::Result<capnp::MessageSize>,
) -> capnp::Result<Result<usize, ServerError>> {
    match size {
        Ok(size) => {
            let bytes = usize::try_from(size.word_count).unwrap_or(usize::MAX).saturating_mul(8);
            let readable_bytes = super::request_traversal_words(limits.request_bytes_max) * 8;
            if bytes > limits.request_bytes_max && bytes.saturating_mul(2) > readable_bytes {
                let error =
                    LimitError::RequestTooLarge { bytes, request_bytes_max: limits.request_bytes_max };
                return Ok(Err(limit_error(&error)));
            }
            Ok(Ok(bytes))
        }
        Err(error) if error.kind == capnp::ErrorKind::MessageIsTooDeeplyNested => Ok(Err(ServerError {
            code: ErrorCode::InvalidArgument,
            message: format!(
                "the request nests pointers deeper than {}; nest transactions at most {} deep",
                super::NESTING_MAX,
                crate::kv::store::TXN_DEPTH_MAX
            ),
            leader_hint: 0,
            compact_revision: 0,
        })),
        Err(error) => Err(error),
    }
}

pub fn set_put_result(result: put_result::Builder<'_>, answer: &Result<Answered<PutResponse>, ServerError>) {
    match answer {
        Ok(answer) => {
            let mut ok = result.init_ok();
            set_header(ok.reborrow().init_header(), answer, answer.response.revision);
            if let Some(previous) = &answer.response.prev_kv {
                ok.set_has_prev_kv(true);
                set_key_value(ok.init_prev_kv(), previous);
            }
        }
        Err(error) => set_error(result.init_error(), error),
    }
}

pub fn set_range_result(
    result: range_result::Builder<'_>,
    answer: &Result<Answered<RangeResponse>, ServerError>,
) {
    match answer {
        Ok(answer) => {
            let mut ok = result.init_ok();
            set_header(ok.reborrow().init_header(), answer, answer.response.revision);
            ok.set_count(answer.response.count);
            ok.set_more(answer.response.more);
            set_key_values(ok.init_kvs(answer.response.kvs.len() as u32), &answer.response.kvs);
        }
        Err(error) => set_error(result.init_error(), error),
    }
}

pub fn set_delete_range_result(
    result: delete_range_result::Builder<'_>,
    answer: &Result<Answered<DeleteRangeResponse>, ServerError>,
) {
    match answer {
        Ok(answer) => {
            let mut ok = result.init_ok();
            set_header(ok.reborrow().init_header(), answer, answer.response.revision);
            ok.set_deleted(answer.response.deleted);
            set_key_values(
                ok.init_prev_kvs(answer.response.prev_kvs.len() as u32),
                &answer.response.prev_kvs,
            );
        }
        Err(error) => set_error(result.init_error(), error),
    }
}

pub fn set_txn_result(result: txn_result::Builder<'_>, answer: &Result<Answered<TxnResponse>, ServerError>) {
    match answer {
        Ok(answer) => write_txn_response(result.init_ok(), answer, &answer.response),
        Err(error) => set_error(result.init_error(), error),
    }
}

/// Serves the KV interface on one connection, through its shard.
pub struct KvServer {
    requests: Requests,
    limits: Limits,
    calls: CallsInFlight,
}

/// The calls one connection has in flight, shared by its KV capabilities;
/// at most `max` at once (`limits.calls_in_flight_per_connection_max`).
#[derive(Clone, Debug)]
pub struct CallsInFlight {
    open: Rc<Cell<usize>>,
    max: usize,
    /// The connection, as the groups' proposal queues tell their sources apart.
    source: u64,
}

impl CallsInFlight {
    pub fn new(max: usize) -> CallsInFlight {
        CallsInFlight { open: Rc::default(), max, source: crate::shard::propose::new_source() }
    }

    /// A place for one more call, or the typed refusal that answers it.
    fn enter(&self) -> Result<InFlight, ServerError> {
        if self.open.get() >= self.max {
            return Err(ServerError {
                code: ErrorCode::Unavailable,
                message: format!(
                    "this connection has {} calls in flight already (limits.calls_in_flight_per_connection_max); \
                     wait for answers before sending more, or open another connection",
                    self.max
                ),
                leader_hint: 0,
                compact_revision: 0,
            });
        }
        self.open.set(self.open.get() + 1);
        Ok(InFlight(Rc::clone(&self.open)))
    }
}

/// One call's place in its connection's count, given back on drop.
pub struct InFlight(Rc<Cell<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl KvServer {
    /// Checks every request against `limits`; the connection's message
    /// reader must use `server_reader_options(limits.request_bytes_max)`.
    pub fn new(requests: Requests, limits: Limits, calls: CallsInFlight) -> KvServer {
        KvServer { requests, limits, calls }
    }

    /// Answers `request` with its writes counted as this connection's.
    async fn answer(&self, bytes: usize, request: KvRequest) -> KvAnswer {
        let answering = answer_request(&self.requests, &self.limits, bytes, request);
        crate::shard::propose::as_source(self.calls.source, answering).await
    }
}

/// Answers a refused request with its typed error and returns from the
/// method; otherwise gives the value.
macro_rules! or_refuse {
    ($checked:expr, $result:expr) => {
        match $checked {
            Ok(value) => value,
            Err(error) => {
                set_error($result.init_error(), &error);
                return Ok(());
            }
        }
    };
}

impl kv::Server for KvServer {
    async fn txn(
        self: capnp::capability::Rc<Self>,
        params: kv::TxnParams,
        mut results: kv::TxnResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let result = results.get().init_result();
        let _call = or_refuse!(self.calls.enter(), result);
        let bytes = or_refuse!(measure_request(&self.limits, params.total_size())?, result);
        let request = KvRequest::Txn(read_txn_request(params.get_request()?)?);
        if let KvAnswer::Txn(answer) = self.answer(bytes, request).await {
            set_txn_result(result, &answer);
        }
        Ok(())
    }

    async fn compact(
        self: capnp::capability::Rc<Self>,
        params: kv::CompactParams,
        mut results: kv::CompactResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let answer = self.requests.compact(params.get_group(), params.get_revision()).await;
        set_compact_result(results.get().init_result(), &answer);
        Ok(())
    }

    async fn put(
        self: capnp::capability::Rc<Self>,
        params: kv::PutParams,
        mut results: kv::PutResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let result = results.get().init_result();
        let _call = or_refuse!(self.calls.enter(), result);
        let bytes = or_refuse!(measure_request(&self.limits, params.total_size())?, result);
        let request = KvRequest::Put(PutRequest {
            key: params.get_key()?.to_vec(),
            value: params.get_value()?.to_vec(),
            lease: params.get_lease(),
            prev_kv: params.get_prev_kv(),
        });
        if let KvAnswer::Put(answer) = self.answer(bytes, request).await {
            set_put_result(result, &answer);
        }
        Ok(())
    }

    async fn range(
        self: capnp::capability::Rc<Self>,
        params: kv::RangeParams,
        mut results: kv::RangeResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let result = results.get().init_result();
        let _call = or_refuse!(self.calls.enter(), result);
        let bytes = or_refuse!(measure_request(&self.limits, params.total_size())?, result);
        let request = KvRequest::Range {
            request: RangeRequest {
                key: params.get_key()?.to_vec(),
                range_end: params.get_range_end()?.to_vec(),
                limit: params.get_limit(),
                revision: params.get_revision(),
                count_only: params.get_count_only(),
                keys_only: params.get_keys_only(),
            },
            linearizable: !params.get_serializable(),
        };
        if let KvAnswer::Range(answer) = self.answer(bytes, request).await {
            set_range_result(result, &answer);
        }
        Ok(())
    }

    async fn delete_range(
        self: capnp::capability::Rc<Self>,
        params: kv::DeleteRangeParams,
        mut results: kv::DeleteRangeResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let result = results.get().init_result();
        let _call = or_refuse!(self.calls.enter(), result);
        let bytes = or_refuse!(measure_request(&self.limits, params.total_size())?, result);
        let request = KvRequest::DeleteRange(DeleteRangeRequest {
            key: params.get_key()?.to_vec(),
            range_end: params.get_range_end()?.to_vec(),
            prev_kv: params.get_prev_kv(),
        });
        if let KvAnswer::DeleteRange(answer) = self.answer(bytes, request).await {
            set_delete_range_result(result, &answer);
        }
        Ok(())
    }
}

/// Reads a transaction of the schema. Nesting is bounded by the message
/// reader's nesting limit, and again by the store's transaction depth.
pub fn read_txn_request(reader: txn_request::Reader<'_>) -> capnp::Result<TxnRequest> {
    let mut compares = Vec::new();
    for item in reader.get_compares()? {
        let target = match item.get_target().which()? {
            compare::target::Value(value) => CompareTarget::Value(value?.to_vec()),
            compare::target::Version(version) => CompareTarget::Version(version),
            compare::target::CreateRevision(revision) => CompareTarget::CreateRevision(revision),
            compare::target::ModRevision(revision) => CompareTarget::ModRevision(revision),
            compare::target::Lease(lease) => CompareTarget::Lease(lease),
        };
        let result = match item.get_result()? {
            SchemaCompareResult::Equal => CompareResult::Equal,
            SchemaCompareResult::NotEqual => CompareResult::NotEqual,
            SchemaCompareResult::Less => CompareResult::Less,
            SchemaCompareResult::Greater => CompareResult::Greater,
        };
        compares.push(Compare {
            key: item.get_key()?.to_vec(),
            range_end: item.get_range_end()?.to_vec(),
            target,
            result,
        });
    }
    Ok(TxnRequest {
        compares,
        success: read_request_ops(reader.get_success()?)?,
        failure: read_request_ops(reader.get_failure()?)?,
    })
}

fn read_request_ops(
    list: capnp::struct_list::Reader<'_, request_op::Owned>,
) -> capnp::Result<Vec<RequestOp>> {
    let mut operations = Vec::with_capacity(list.len() as usize);
    for operation in list {
        operations.push(match operation.which()? {
            request_op::Range(range) => RequestOp::Range(read_range_request(range?)?),
            request_op::Put(put) => RequestOp::Put(read_put_request(put?)?),
            request_op::DeleteRange(delete) => RequestOp::DeleteRange(read_delete_range_request(delete?)?),
            request_op::Txn(nested) => RequestOp::Txn(read_txn_request(nested?)?),
        });
    }
    Ok(operations)
}

pub fn read_put_request(put: put_request::Reader<'_>) -> capnp::Result<PutRequest> {
    Ok(PutRequest {
        key: put.get_key()?.to_vec(),
        value: put.get_value()?.to_vec(),
        lease: put.get_lease(),
        prev_kv: put.get_prev_kv(),
    })
}

pub fn read_range_request(range: range_request::Reader<'_>) -> capnp::Result<RangeRequest> {
    Ok(RangeRequest {
        key: range.get_key()?.to_vec(),
        range_end: range.get_range_end()?.to_vec(),
        limit: range.get_limit(),
        revision: range.get_revision(),
        count_only: range.get_count_only(),
        keys_only: range.get_keys_only(),
    })
}

pub fn read_delete_range_request(
    delete: delete_range_request::Reader<'_>,
) -> capnp::Result<DeleteRangeRequest> {
    Ok(DeleteRangeRequest {
        key: delete.get_key()?.to_vec(),
        range_end: delete.get_range_end()?.to_vec(),
        prev_kv: delete.get_prev_kv(),
    })
}

pub fn set_put_request(mut out: put_request::Builder<'_>, put: &PutRequest) {
    out.set_key(&put.key);
    out.set_value(&put.value);
    out.set_lease(put.lease);
    out.set_prev_kv(put.prev_kv);
}

pub fn set_range_request(mut out: range_request::Builder<'_>, range: &RangeRequest) {
    out.set_key(&range.key);
    out.set_range_end(&range.range_end);
    out.set_limit(range.limit);
    out.set_revision(range.revision);
    out.set_count_only(range.count_only);
    out.set_keys_only(range.keys_only);
}

pub fn set_delete_range_request(mut out: delete_range_request::Builder<'_>, delete: &DeleteRangeRequest) {
    out.set_key(&delete.key);
    out.set_range_end(&delete.range_end);
    out.set_prev_kv(delete.prev_kv);
}

/// Writes a transaction into the schema (the client side).
pub fn write_txn_request(mut builder: txn_request::Builder<'_>, request: &TxnRequest) {
    let mut compares = builder.reborrow().init_compares(request.compares.len() as u32);
    for (position, item) in request.compares.iter().enumerate() {
        let mut out = compares.reborrow().get(position as u32);
        out.set_key(&item.key);
        out.set_range_end(&item.range_end);
        out.set_result(match item.result {
            CompareResult::Equal => SchemaCompareResult::Equal,
            CompareResult::NotEqual => SchemaCompareResult::NotEqual,
            CompareResult::Less => SchemaCompareResult::Less,
            CompareResult::Greater => SchemaCompareResult::Greater,
        });
        let mut target = out.init_target();
        match &item.target {
            CompareTarget::Value(value) => target.set_value(value),
            CompareTarget::Version(version) => target.set_version(*version),
            CompareTarget::CreateRevision(revision) => target.set_create_revision(*revision),
            CompareTarget::ModRevision(revision) => target.set_mod_revision(*revision),
            CompareTarget::Lease(lease) => target.set_lease(*lease),
        }
    }
    write_request_ops(builder.reborrow().init_success(request.success.len() as u32), &request.success);
    write_request_ops(builder.init_failure(request.failure.len() as u32), &request.failure);
}

fn write_request_ops(mut list: capnp::struct_list::Builder<'_, request_op::Owned>, operations: &[RequestOp]) {
    for (position, operation) in operations.iter().enumerate() {
        let out = list.reborrow().get(position as u32);
        match operation {
            RequestOp::Range(range) => set_range_request(out.init_range(), range),
            RequestOp::Put(put) => set_put_request(out.init_put(), put),
            RequestOp::DeleteRange(delete) => set_delete_range_request(out.init_delete_range(), delete),
            RequestOp::Txn(nested) => write_txn_request(out.init_txn(), nested),
        }
    }
}

fn set_key_values(mut list: capnp::struct_list::Builder<'_, key_value::Owned>, kvs: &[KeyValue]) {
    for (position, kv) in kvs.iter().enumerate() {
        set_key_value(list.reborrow().get(position as u32), kv);
    }
}

/// Writes a transaction's answer into the schema (the server side); nested
/// responses carry the outer answer's group, term and member.
pub fn write_txn_response<T>(
    mut builder: txn_response::Builder<'_>,
    answer: &Answered<T>,
    response: &TxnResponse,
) {
    set_header(builder.reborrow().init_header(), answer, response.revision);
    builder.set_succeeded(response.succeeded);
    let mut list = builder.init_responses(response.responses.len() as u32);
    for (position, operation) in response.responses.iter().enumerate() {
        let out = list.reborrow().get(position as u32);
        match operation {
            ResponseOp::Range(range) => {
                let mut out = out.init_range();
                set_header(out.reborrow().init_header(), answer, range.revision);
                out.set_count(range.count);
                out.set_more(range.more);
                set_key_values(out.init_kvs(range.kvs.len() as u32), &range.kvs);
            }
            ResponseOp::Put(put) => {
                let mut out = out.init_put();
                set_header(out.reborrow().init_header(), answer, put.revision);
                if let Some(previous) = &put.prev_kv {
                    out.set_has_prev_kv(true);
                    set_key_value(out.init_prev_kv(), previous);
                }
            }
            ResponseOp::DeleteRange(delete) => {
                let mut out = out.init_delete_range();
                set_header(out.reborrow().init_header(), answer, delete.revision);
                out.set_deleted(delete.deleted);
                set_key_values(out.init_prev_kvs(delete.prev_kvs.len() as u32), &delete.prev_kvs);
            }
            ResponseOp::Txn(nested) => write_txn_response(out.init_txn(), answer, nested),
        }
    }
}

fn read_key_values(list: capnp::struct_list::Reader<'_, key_value::Owned>) -> capnp::Result<Vec<KeyValue>> {
    list.iter().map(read_key_value).collect()
}

/// Reads a transaction's answer (the client side).
pub fn read_txn_response(reader: txn_response::Reader<'_>) -> capnp::Result<TxnResponse> {
    let mut responses = Vec::new();
    for operation in reader.get_responses()? {
        responses.push(match operation.which()? {
            response_op::Range(range) => {
                let range = range?;
                ResponseOp::Range(RangeResponse {
                    revision: range.get_header()?.get_revision(),
                    kvs: read_key_values(range.get_kvs()?)?,
                    count: range.get_count(),
                    more: range.get_more(),
                })
            }
            response_op::Put(put) => {
                let put = put?;
                let prev_kv =
                    if put.get_has_prev_kv() { Some(read_key_value(put.get_prev_kv()?)?) } else { None };
                ResponseOp::Put(PutResponse { revision: put.get_header()?.get_revision(), prev_kv })
            }
            response_op::DeleteRange(delete) => {
                let delete = delete?;
                ResponseOp::DeleteRange(DeleteRangeResponse {
                    revision: delete.get_header()?.get_revision(),
                    deleted: delete.get_deleted(),
                    prev_kvs: read_key_values(delete.get_prev_kvs()?)?,
                })
            }
            response_op::Txn(nested) => ResponseOp::Txn(read_txn_response(nested?)?),
        });
    }
    Ok(TxnResponse {
        revision: reader.get_header()?.get_revision(),
        succeeded: reader.get_succeeded(),
        responses,
    })
}
