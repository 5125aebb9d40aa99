//! The outcome codec: what applying a command answered (a response or a
//! typed refusal), encoded as the log's apply hands it back to the proposer
//! and decoded where the proposer waits.

use super::*;

pub(super) fn write_kv(writer: &mut Writer, kv: &KeyValue) {
    writer.blob(&kv.key);
    writer.blob(&kv.value);
    writer.i64(kv.create_revision);
    writer.i64(kv.mod_revision);
    writer.i64(kv.version);
    writer.i64(kv.lease);
}

pub(super) fn write_kvs(writer: &mut Writer, kvs: &[KeyValue]) {
    writer.u32(count(kvs.len()));
    for kv in kvs {
        write_kv(writer, kv);
    }
}

pub(super) fn write_put_response(writer: &mut Writer, put: &PutResponse) {
    writer.i64(put.revision);
    writer.bool(put.prev_kv.is_some());
    if let Some(kv) = &put.prev_kv {
        write_kv(writer, kv);
    }
}

pub(super) fn write_delete_range_response(writer: &mut Writer, delete: &DeleteRangeResponse) {
    writer.i64(delete.revision);
    writer.i64(delete.deleted);
    write_kvs(writer, &delete.prev_kvs);
}

pub(super) fn write_txn_response(writer: &mut Writer, txn: &TxnResponse) {
    writer.i64(txn.revision);
    writer.bool(txn.succeeded);
    writer.u32(count(txn.responses.len()));
    for response in &txn.responses {
        match response {
            ResponseOp::Range(range) => {
                writer.u8(OP_RANGE);
                writer.i64(range.revision);
                write_kvs(writer, &range.kvs);
                writer.i64(range.count);
                writer.bool(range.more);
            }
            ResponseOp::Put(put) => {
                writer.u8(OP_PUT);
                write_put_response(writer, put);
            }
            ResponseOp::DeleteRange(delete) => {
                writer.u8(OP_DELETE_RANGE);
                write_delete_range_response(writer, delete);
            }
            ResponseOp::Txn(txn) => {
                writer.u8(OP_TXN);
                write_txn_response(writer, txn);
            }
        }
    }
}

pub fn encode_outcome(outcome: &CommandOutcome) -> Vec<u8> {
    // Room for a put's answer without its previous key (the most common).
    let mut writer = Writer::with_capacity(32);
    writer.u8(OUTCOME_FORMAT_VERSION);
    match outcome {
        Err(error) => {
            writer.u8(0);
            match error {
                KvError::Compacted { requested, compact_revision } => {
                    writer.u8(1);
                    writer.i64(*requested);
                    writer.i64(*compact_revision);
                }
                KvError::FutureRevision { requested, current } => {
                    writer.u8(2);
                    writer.i64(*requested);
                    writer.i64(*current);
                }
                KvError::LeaseNotFound(id) => {
                    writer.u8(3);
                    writer.i64(*id);
                }
                KvError::LeaseExists(id) => {
                    writer.u8(4);
                    writer.i64(*id);
                }
                KvError::DuplicateKeyInTxn(key) => {
                    writer.u8(5);
                    writer.blob(key);
                }
                KvError::InvalidArgument(message) => {
                    writer.u8(6);
                    writer.blob(message.as_bytes());
                }
                KvError::Auth(error) => {
                    writer.u8(7);
                    crate::kv::auth::write_error(&mut writer, error);
                }
            }
        }
        Ok(response) => {
            writer.u8(1);
            match response {
                CommandResponse::Put(put) => {
                    writer.u8(KIND_PUT);
                    write_put_response(&mut writer, put);
                }
                CommandResponse::DeleteRange(delete) => {
                    writer.u8(KIND_DELETE_RANGE);
                    write_delete_range_response(&mut writer, delete);
                }
                CommandResponse::Txn(txn) => {
                    writer.u8(KIND_TXN);
                    write_txn_response(&mut writer, txn);
                }
                CommandResponse::Compact { revision } => {
                    writer.u8(KIND_COMPACT);
                    writer.i64(*revision);
                }
                CommandResponse::LeaseGrant(grant) => {
                    writer.u8(KIND_LEASE_GRANT);
                    writer.i64(grant.revision);
                    writer.i64(grant.id);
                    writer.i64(grant.ttl_seconds);
                }
                CommandResponse::LeaseRevoke(revoke) => {
                    writer.u8(KIND_LEASE_REVOKE);
                    writer.i64(revoke.revision);
                    writer.i64(revoke.deleted);
                }
                CommandResponse::Auth { revision } => {
                    writer.u8(KIND_AUTH);
                    writer.u64(*revision);
                }
            }
        }
    }
    writer.bytes
}

pub(super) fn read_kv(reader: &mut Reader) -> Result<KeyValue, Malformed> {
    Ok(KeyValue {
        key: reader.blob("a key")?,
        value: reader.blob("a value")?,
        create_revision: reader.i64("a create revision")?,
        mod_revision: reader.i64("a mod revision")?,
        version: reader.i64("a version")?,
        lease: reader.i64("a lease")?,
    })
}

pub(super) fn read_kvs(reader: &mut Reader) -> Result<Vec<KeyValue>, Malformed> {
    let total = reader.u32("a key count")?;
    let mut kvs = Vec::new();
    for _ in 0..total {
        kvs.push(read_kv(reader)?);
    }
    Ok(kvs)
}

pub(super) fn read_put_response(reader: &mut Reader) -> Result<PutResponse, Malformed> {
    let revision = reader.i64("a revision")?;
    let prev_kv = if reader.bool("the prev_kv flag")? { Some(read_kv(reader)?) } else { None };
    Ok(PutResponse { revision, prev_kv })
}

pub(super) fn read_delete_range_response(reader: &mut Reader) -> Result<DeleteRangeResponse, Malformed> {
    Ok(DeleteRangeResponse {
        revision: reader.i64("a revision")?,
        deleted: reader.i64("a deleted count")?,
        prev_kvs: read_kvs(reader)?,
    })
}

pub(super) fn read_txn_response(reader: &mut Reader, depth: usize) -> Result<TxnResponse, Malformed> {
    check_depth(reader, depth)?;
    let revision = reader.i64("a revision")?;
    let succeeded = reader.bool("the succeeded flag")?;
    let total = reader.u32("a response count")?;
    let mut responses = Vec::new();
    for _ in 0..total {
        let response = match reader.u8("a response kind")? {
            OP_RANGE => ResponseOp::Range(RangeResponse {
                revision: reader.i64("a revision")?,
                kvs: read_kvs(reader)?,
                count: reader.i64("a count")?,
                more: reader.bool("the more flag")?,
            }),
            OP_PUT => ResponseOp::Put(read_put_response(reader)?),
            OP_DELETE_RANGE => ResponseOp::DeleteRange(read_delete_range_response(reader)?),
            OP_TXN => ResponseOp::Txn(read_txn_response(reader, depth + 1)?),
            kind => return Err(reader.malformed(format!("response kind {kind} is not 1 to 4"))),
        };
        responses.push(response);
    }
    Ok(TxnResponse { revision, succeeded, responses })
}

pub(super) fn read_error(reader: &mut Reader) -> Result<KvError, Malformed> {
    Ok(match reader.u8("an error kind")? {
        1 => KvError::Compacted {
            requested: reader.i64("a revision")?,
            compact_revision: reader.i64("a compact revision")?,
        },
        2 => KvError::FutureRevision {
            requested: reader.i64("a revision")?,
            current: reader.i64("a revision")?,
        },
        3 => KvError::LeaseNotFound(reader.i64("a lease id")?),
        4 => KvError::LeaseExists(reader.i64("a lease id")?),
        5 => KvError::DuplicateKeyInTxn(reader.blob("a key")?),
        6 => {
            let message = reader.blob("a message")?;
            let message =
                String::from_utf8(message).map_err(|_| reader.malformed("the message is not UTF-8"))?;
            KvError::InvalidArgument(message)
        }
        7 => KvError::Auth(crate::kv::auth::read_error(reader)?),
        kind => return Err(reader.malformed(format!("error kind {kind} is not 1 to 7"))),
    })
}

pub fn decode_outcome(bytes: &[u8]) -> Result<CommandOutcome, CommandCodecError> {
    const WHAT: &str = "command outcome";
    let mut reader = Reader { bytes, offset: 0 };
    read_version(&mut reader, WHAT, OUTCOME_FORMAT_VERSION, OUTCOME_FORMAT_VERSION)?;
    let outcome = (|| {
        if !reader.bool("the success flag")? {
            return Ok(Err(read_error(&mut reader)?));
        }
        Ok(Ok(match reader.u8("a response kind")? {
            KIND_PUT => CommandResponse::Put(read_put_response(&mut reader)?),
            KIND_DELETE_RANGE => CommandResponse::DeleteRange(read_delete_range_response(&mut reader)?),
            KIND_TXN => CommandResponse::Txn(read_txn_response(&mut reader, 1)?),
            KIND_COMPACT => CommandResponse::Compact { revision: reader.i64("a revision")? },
            KIND_LEASE_GRANT => CommandResponse::LeaseGrant(LeaseGrantResponse {
                revision: reader.i64("a revision")?,
                id: reader.i64("a lease id")?,
                ttl_seconds: reader.i64("a TTL")?,
            }),
            KIND_LEASE_REVOKE => CommandResponse::LeaseRevoke(LeaseRevokeResponse {
                revision: reader.i64("a revision")?,
                deleted: reader.i64("a deleted count")?,
            }),
            KIND_AUTH => CommandResponse::Auth { revision: reader.u64("an auth revision")? },
            kind => return Err(reader.malformed(format!("response kind {kind} is not 1 to 8"))),
        }))
    })();
    finish(&reader, WHAT, outcome)
}
