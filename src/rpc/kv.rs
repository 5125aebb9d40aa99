//! The KV interface of `schema/nvkv.capnp`: the server that turns calls into
//! the shard's requests, and the conversions between schema and store types
//! (used by the server and the client library alike). Every refusal reaches
//! the client as a typed `Error`, never as a dropped connection.

use crate::kv::limits::{LimitError, Limits};
use crate::kv::types::{DeleteRangeRequest, KeyValue, KvError, PutRequest, RangeRequest};
use crate::nvkv_capnp::{k_v as kv, key_value, response_header, ErrorCode as SchemaErrorCode};
use crate::raft::GroupError;
use crate::shard::groups::{Answered, RequestError, Requests};

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
        RequestError::Group(_) | RequestError::Starting { .. } | RequestError::Overloaded { .. } => {
            plain(ErrorCode::Unavailable)
        }
        RequestError::Kv(KvError::Compacted { compact_revision, .. }) => {
            ServerError { compact_revision: *compact_revision, ..plain(ErrorCode::Compacted) }
        }
        RequestError::Kv(KvError::LeaseNotFound(_)) => plain(ErrorCode::LeaseNotFound),
        RequestError::Kv(_) | RequestError::Codec(_) => plain(ErrorCode::InvalidArgument),
    }
}

fn limit_error(error: &LimitError) -> ServerError {
    let code = match error {
        LimitError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
        LimitError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
        LimitError::TooManyTxnOps { .. } => ErrorCode::RequestTooLarge,
        LimitError::EmptyKey { .. } => ErrorCode::InvalidArgument,
    };
    ServerError { code, message: error.to_string(), leader_hint: 0, compact_revision: 0 }
}

fn set_error(mut builder: crate::nvkv_capnp::error::Builder<'_>, error: &ServerError) {
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

fn set_header<T>(mut builder: response_header::Builder<'_>, answer: &Answered<T>, revision: i64) {
    builder.set_group(answer.group);
    builder.set_revision(revision);
    builder.set_raft_term(answer.term);
    builder.set_member_id(answer.member);
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

/// Serves the KV interface on one connection, through its shard.
pub struct KvServer {
    requests: Requests,
    limits: Limits,
}

impl KvServer {
    pub fn new(requests: Requests) -> KvServer {
        KvServer { requests, limits: Limits::default() }
    }
}

impl kv::Server for KvServer {
    async fn put(
        self: capnp::capability::Rc<Self>,
        params: kv::PutParams,
        mut results: kv::PutResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let request = PutRequest {
            key: params.get_key()?.to_vec(),
            value: params.get_value()?.to_vec(),
            lease: params.get_lease(),
            prev_kv: params.get_prev_kv(),
        };
        let result = results.get().init_result();
        if let Err(error) = self.limits.check_put(&request) {
            set_error(result.init_error(), &limit_error(&error));
            return Ok(());
        }
        match self.requests.put(request).await {
            Ok(answer) => {
                let mut ok = result.init_ok();
                set_header(ok.reborrow().init_header(), &answer, answer.response.revision);
                if let Some(previous) = &answer.response.prev_kv {
                    ok.set_has_prev_kv(true);
                    set_key_value(ok.init_prev_kv(), previous);
                }
            }
            Err(error) => set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }

    async fn range(
        self: capnp::capability::Rc<Self>,
        params: kv::RangeParams,
        mut results: kv::RangeResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let request = RangeRequest {
            key: params.get_key()?.to_vec(),
            range_end: params.get_range_end()?.to_vec(),
            limit: params.get_limit(),
            revision: params.get_revision(),
            count_only: params.get_count_only(),
            keys_only: params.get_keys_only(),
        };
        let serializable = params.get_serializable();
        let result = results.get().init_result();
        if let Err(error) = self.limits.check_key(&request.key) {
            set_error(result.init_error(), &limit_error(&error));
            return Ok(());
        }
        match self.requests.range(request, !serializable).await {
            Ok(answer) => {
                let mut ok = result.init_ok();
                set_header(ok.reborrow().init_header(), &answer, answer.response.revision);
                ok.set_count(answer.response.count);
                ok.set_more(answer.response.more);
                let mut kvs = ok.init_kvs(answer.response.kvs.len() as u32);
                for (position, kv) in answer.response.kvs.iter().enumerate() {
                    set_key_value(kvs.reborrow().get(position as u32), kv);
                }
            }
            Err(error) => set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }

    async fn delete_range(
        self: capnp::capability::Rc<Self>,
        params: kv::DeleteRangeParams,
        mut results: kv::DeleteRangeResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let request = DeleteRangeRequest {
            key: params.get_key()?.to_vec(),
            range_end: params.get_range_end()?.to_vec(),
            prev_kv: params.get_prev_kv(),
        };
        let result = results.get().init_result();
        if let Err(error) = self.limits.check_key(&request.key) {
            set_error(result.init_error(), &limit_error(&error));
            return Ok(());
        }
        match self.requests.delete_range(request).await {
            Ok(answer) => {
                let mut ok = result.init_ok();
                set_header(ok.reborrow().init_header(), &answer, answer.response.revision);
                ok.set_deleted(answer.response.deleted);
                let mut previous = ok.init_prev_kvs(answer.response.prev_kvs.len() as u32);
                for (position, kv) in answer.response.prev_kvs.iter().enumerate() {
                    set_key_value(previous.reborrow().get(position as u32), kv);
                }
            }
            Err(error) => set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }
}
