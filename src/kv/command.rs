//! The commands a group's log carries to its store, the outcome applying
//! one gives, and the byte encodings of both: the state machine of a Raft
//! group decodes a committed entry, applies it, and encodes the outcome for
//! the proposer.
//!
//! Layouts (little-endian; a blob is a u32 length and its bytes; a flag is
//! a u8 of 0 or 1):
//!
//! ```text
//! command: format_version u8, kind u8, [version 2: stamp u64, and not in
//!          a batch header], then by kind
//!   1 put:          key, value (blobs), lease i64, prev_kv flag
//!   2 delete range: key, range_end (blobs), prev_kv flag
//!   3 txn:          txn
//!   4 compact:      revision i64
//!   5 lease grant:  id i64, ttl_seconds i64
//!   6 lease revoke: id i64
//!   8 auth:         an auth change (`auth::write_change`: a code u8, then
//!                   its names, hashes and keys as blobs)
//!   7 batch:        count u32, then count blobs, each a whole command
//!                   (version byte included) that is not itself a batch
//! txn:     compares u32, compare..., success u32, op..., failure u32, op...
//! compare: key, range_end (blobs), result u8 (0 =, 1 !=, 2 <, 3 >),
//!          target u8 (0 value: blob; 1 version, 2 create revision,
//!          3 mod revision, 4 lease: i64)
//! op:      kind u8 (1 range, 2 put, 3 delete range, 4 txn), then
//!          range: key, range_end (blobs), limit i64, revision i64,
//!                 count_only flag, keys_only flag; others as above
//!
//! outcome: format_version u8, then 0 and an error, or 1 and a response
//!   error:    kind u8: 1 compacted (requested i64, compact_revision i64),
//!             2 future revision (requested i64, current i64), 3 lease not
//!             found (i64), 4 lease exists (i64), 5 duplicate key (blob),
//!             6 invalid argument (blob, UTF-8), 7 auth refusal (code
//!             u8 and three blobs, `auth::write_error`)
//!   response: the command's kind u8, then by kind
//!             put: revision i64, prev_kv option;
//!             delete range: revision i64, deleted i64, kvs u32, kv...;
//!             txn: txn response; compact: revision i64;
//!             lease grant: revision, id, ttl_seconds (i64);
//!             lease revoke: revision i64, deleted i64;
//!             auth: the auth revision after it u64
//!   txn response: revision i64, succeeded flag, responses u32, each kind
//!             u8 (as op) then range: revision, kvs u32, kv..., count i64,
//!             more flag; or the put, delete range or txn response
//!   kv:       key, value (blobs), create_revision, mod_revision, version,
//!             lease (i64); an option is a flag, then the kv if 1
//! batch outcome: format_version u8, count u32, then count blobs, each a
//!             whole outcome, in the order of the batch's commands
//! ```
//!
//! A batch is how a shard puts many clients' writes to one group into one
//! log entry: its commands apply one after the other, each at its own
//! revision, exactly as if each had an entry of its own.
//!
//! The stamp (format version 2) is the time the write was made, in the
//! microseconds of `revision::revision_time`: a group whose store makes hybrid
//! revisions takes the revision of a write from it (see `store`, "Hybrid
//! revisions"), so it travels in the log and every replica applies the
//! same revision. Version 1 commands (written before stamps) read as
//! stamp 0, "no time": they take the next revision after the last.
//!
//! Decoding refuses a newer format version by name, nesting deeper than
//! the store takes (`TXN_DEPTH_MAX`), trailing bytes, and anything that
//! runs past its input; it never panics. Checksums are the log's business.

use super::auth::AuthChange;
use super::codec::{Malformed, Reader, Writer};
use super::store::{MvccStore, TXN_DEPTH_MAX};
use super::types::{
    Applied, Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue,
    KvError, LeaseGrantResponse, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseOp, TxnRequest, TxnResponse,
};

/// The format of commands this nvkv writes; it reads this one and version 1.
pub const COMMAND_FORMAT_VERSION: u8 = 2;
/// The format of outcomes (and batch headers, which carry no stamp).
pub const OUTCOME_FORMAT_VERSION: u8 = 1;
/// The command format before stamps.
const COMMAND_FORMAT_UNSTAMPED: u8 = 1;

/// One write to a group's store, as its log carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl_seconds: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// A change to the users and roles (group 0 only).
    Auth(AuthChange),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    /// The store's revision, which compaction leaves as it was.
    Compact {
        revision: i64,
    },
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    /// The auth state's revision after the change.
    Auth {
        revision: u64,
    },
}

/// What applying a command gives the proposer: an answer or a refusal.
/// A refusal changed nothing, on every replica alike.
pub type CommandOutcome = Result<CommandResponse, KvError>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandCodecError {
    #[error(
        "{what} format version {found} is newer than this nvkv reads (version {supported}); \
         upgrade nvkv on this node before it applies the log"
    )]
    NewerVersion { what: &'static str, found: u8, supported: u8 },
    #[error("{what} format version {found} is not one this nvkv reads (version {supported})")]
    UnknownVersion { what: &'static str, found: u8, supported: u8 },
    #[error("{what} malformed at byte {offset}: {reason}")]
    Malformed { what: &'static str, offset: usize, reason: String },
}

/// Applies one committed command made at `stamp` (0: no time; see the
/// module comment). The events go to the watch hub, in order.
pub fn apply(store: &mut MvccStore, command: &Command, stamp: u64) -> Applied<CommandOutcome> {
    store.set_stamp(stamp);
    fn answer<R>(
        result: Result<Applied<R>, KvError>,
        wrap: fn(R) -> CommandResponse,
    ) -> Applied<CommandOutcome> {
        match result {
            Ok(applied) => Applied { response: Ok(wrap(applied.response)), events: applied.events },
            Err(error) => Applied { response: Err(error), events: Vec::new() },
        }
    }
    let without_events = |response| Applied { response, events: Vec::new() };
    match command {
        Command::Put(request) => answer(store.put(request), CommandResponse::Put),
        Command::DeleteRange(request) => answer(store.delete_range(request), CommandResponse::DeleteRange),
        Command::Txn(request) => answer(store.txn(request), CommandResponse::Txn),
        Command::Compact { revision } => without_events(
            store.compact(*revision).map(|()| CommandResponse::Compact { revision: store.revision() }),
        ),
        Command::LeaseGrant { id, ttl_seconds } => {
            without_events(store.lease_grant(*id, *ttl_seconds).map(CommandResponse::LeaseGrant))
        }
        Command::LeaseRevoke { id } => answer(store.lease_revoke(*id), CommandResponse::LeaseRevoke),
        Command::Auth(change) => {
            without_events(store.auth_apply(change).map(|revision| CommandResponse::Auth { revision }))
        }
    }
}

const KIND_PUT: u8 = 1;
const KIND_DELETE_RANGE: u8 = 2;
const KIND_TXN: u8 = 3;
const KIND_COMPACT: u8 = 4;
const KIND_LEASE_GRANT: u8 = 5;
const KIND_LEASE_REVOKE: u8 = 6;
const KIND_BATCH: u8 = 7;
const KIND_AUTH: u8 = 8;

const OP_RANGE: u8 = 1;
const OP_PUT: u8 = 2;
const OP_DELETE_RANGE: u8 = 3;
const OP_TXN: u8 = 4;

fn write_put(writer: &mut Writer, put: &PutRequest) {
    writer.blob(&put.key);
    writer.blob(&put.value);
    writer.i64(put.lease);
    writer.bool(put.prev_kv);
}

fn write_delete_range(writer: &mut Writer, delete: &DeleteRangeRequest) {
    writer.blob(&delete.key);
    writer.blob(&delete.range_end);
    writer.bool(delete.prev_kv);
}

fn count(length: usize) -> u32 {
    u32::try_from(length).expect("request sizes are bounded far below 2^32 items")
}

fn write_ops(writer: &mut Writer, ops: &[RequestOp]) {
    writer.u32(count(ops.len()));
    for op in ops {
        match op {
            RequestOp::Range(range) => {
                writer.u8(OP_RANGE);
                writer.blob(&range.key);
                writer.blob(&range.range_end);
                writer.i64(range.limit);
                writer.i64(range.revision);
                writer.bool(range.count_only);
                writer.bool(range.keys_only);
            }
            RequestOp::Put(put) => {
                writer.u8(OP_PUT);
                write_put(writer, put);
            }
            RequestOp::DeleteRange(delete) => {
                writer.u8(OP_DELETE_RANGE);
                write_delete_range(writer, delete);
            }
            RequestOp::Txn(txn) => {
                writer.u8(OP_TXN);
                write_txn(writer, txn);
            }
        }
    }
}

fn write_txn(writer: &mut Writer, txn: &TxnRequest) {
    writer.u32(count(txn.compares.len()));
    for compare in &txn.compares {
        writer.blob(&compare.key);
        writer.blob(&compare.range_end);
        writer.u8(match compare.result {
            CompareResult::Equal => 0,
            CompareResult::NotEqual => 1,
            CompareResult::Less => 2,
            CompareResult::Greater => 3,
        });
        match &compare.target {
            CompareTarget::Value(value) => {
                writer.u8(0);
                writer.blob(value);
            }
            CompareTarget::Version(operand) => {
                writer.u8(1);
                writer.i64(*operand);
            }
            CompareTarget::CreateRevision(operand) => {
                writer.u8(2);
                writer.i64(*operand);
            }
            CompareTarget::ModRevision(operand) => {
                writer.u8(3);
                writer.i64(*operand);
            }
            CompareTarget::Lease(operand) => {
                writer.u8(4);
                writer.i64(*operand);
            }
        }
    }
    write_ops(writer, &txn.success);
    write_ops(writer, &txn.failure);
}

/// `command` without a stamp (stamp 0): for commands that make no revision
/// (compaction, lease grants) and for stores that count revisions.
pub fn encode_command(command: &Command) -> Vec<u8> {
    encode_stamped_command(command, 0)
}

/// `command` made at `stamp` (microseconds of `revision::revision_time`).
pub fn encode_stamped_command(command: &Command, stamp: u64) -> Vec<u8> {
    // Room for a put whole (the most common command); others grow.
    let mut writer = Writer::with_capacity(match command {
        Command::Put(put) => 40 + put.key.len() + put.value.len(),
        _ => 64,
    });
    writer.u8(COMMAND_FORMAT_VERSION);
    let kind = match command {
        Command::Put(_) => KIND_PUT,
        Command::DeleteRange(_) => KIND_DELETE_RANGE,
        Command::Txn(_) => KIND_TXN,
        Command::Compact { .. } => KIND_COMPACT,
        Command::LeaseGrant { .. } => KIND_LEASE_GRANT,
        Command::LeaseRevoke { .. } => KIND_LEASE_REVOKE,
        Command::Auth(_) => KIND_AUTH,
    };
    writer.u8(kind);
    writer.u64(stamp);
    match command {
        Command::Put(put) => {
            write_put(&mut writer, put);
        }
        Command::DeleteRange(delete) => write_delete_range(&mut writer, delete),
        Command::Txn(txn) => write_txn(&mut writer, txn),
        Command::Compact { revision } => writer.i64(*revision),
        Command::LeaseGrant { id, ttl_seconds } => {
            writer.i64(*id);
            writer.i64(*ttl_seconds);
        }
        Command::LeaseRevoke { id } => writer.i64(*id),
        Command::Auth(change) => super::auth::write_change(&mut writer, change),
    }
    writer.bytes
}

fn read_put(reader: &mut Reader) -> Result<PutRequest, Malformed> {
    Ok(PutRequest {
        key: reader.blob("a key")?,
        value: reader.blob("a value")?,
        lease: reader.i64("a lease")?,
        prev_kv: reader.bool("the prev_kv flag")?,
    })
}

fn read_delete_range(reader: &mut Reader) -> Result<DeleteRangeRequest, Malformed> {
    Ok(DeleteRangeRequest {
        key: reader.blob("a key")?,
        range_end: reader.blob("a range end")?,
        prev_kv: reader.bool("the prev_kv flag")?,
    })
}

fn check_depth(reader: &Reader, depth: usize) -> Result<(), Malformed> {
    if depth > TXN_DEPTH_MAX {
        return Err(reader.malformed(format!("transactions nest deeper than {TXN_DEPTH_MAX}")));
    }
    Ok(())
}

fn read_ops(reader: &mut Reader, depth: usize) -> Result<Vec<RequestOp>, Malformed> {
    let total = reader.u32("an op count")?;
    let mut ops = Vec::new();
    for _ in 0..total {
        let op = match reader.u8("an op kind")? {
            OP_RANGE => RequestOp::Range(RangeRequest {
                key: reader.blob("a key")?,
                range_end: reader.blob("a range end")?,
                limit: reader.i64("a limit")?,
                revision: reader.i64("a revision")?,
                count_only: reader.bool("the count_only flag")?,
                keys_only: reader.bool("the keys_only flag")?,
            }),
            OP_PUT => RequestOp::Put(read_put(reader)?),
            OP_DELETE_RANGE => RequestOp::DeleteRange(read_delete_range(reader)?),
            OP_TXN => RequestOp::Txn(read_txn(reader, depth + 1)?),
            kind => return Err(reader.malformed(format!("op kind {kind} is not 1 to 4"))),
        };
        ops.push(op);
    }
    Ok(ops)
}

fn read_compare_result(reader: &mut Reader) -> Result<CompareResult, Malformed> {
    Ok(match reader.u8("a compare result")? {
        0 => CompareResult::Equal,
        1 => CompareResult::NotEqual,
        2 => CompareResult::Less,
        3 => CompareResult::Greater,
        other => return Err(reader.malformed(format!("compare result {other} is not 0 to 3"))),
    })
}

fn read_txn(reader: &mut Reader, depth: usize) -> Result<TxnRequest, Malformed> {
    check_depth(reader, depth)?;
    let total = reader.u32("a compare count")?;
    let mut compares = Vec::new();
    for _ in 0..total {
        let key = reader.blob("a compare key")?;
        let range_end = reader.blob("a compare range end")?;
        let result = read_compare_result(reader)?;
        let target = match reader.u8("a compare target")? {
            0 => CompareTarget::Value(reader.blob("a compare value")?),
            1 => CompareTarget::Version(reader.i64("a compare operand")?),
            2 => CompareTarget::CreateRevision(reader.i64("a compare operand")?),
            3 => CompareTarget::ModRevision(reader.i64("a compare operand")?),
            4 => CompareTarget::Lease(reader.i64("a compare operand")?),
            other => return Err(reader.malformed(format!("compare target {other} is not 0 to 4"))),
        };
        compares.push(Compare { key, range_end, target, result });
    }
    let success = read_ops(reader, depth)?;
    let failure = read_ops(reader, depth)?;
    Ok(TxnRequest { compares, success, failure })
}

/// Reads the format version and checks it is one of `oldest..=supported`.
fn read_version(
    reader: &mut Reader,
    what: &'static str,
    oldest: u8,
    supported: u8,
) -> Result<u8, CommandCodecError> {
    let found = reader.u8("the format version").map_err(|malformed| codec_error(what, malformed))?;
    if found > supported {
        return Err(CommandCodecError::NewerVersion { what, found, supported });
    }
    if found < oldest {
        return Err(CommandCodecError::UnknownVersion { what, found, supported });
    }
    Ok(found)
}

fn codec_error(what: &'static str, malformed: Malformed) -> CommandCodecError {
    CommandCodecError::Malformed { what, offset: malformed.offset, reason: malformed.reason }
}

fn finish<T>(
    reader: &Reader,
    what: &'static str,
    value: Result<T, Malformed>,
) -> Result<T, CommandCodecError> {
    let value = value.map_err(|malformed| codec_error(what, malformed))?;
    if !reader.done() {
        return Err(codec_error(what, reader.malformed("bytes follow the end")));
    }
    Ok(value)
}

/// One log entry carrying `commands` (each from [`encode_command`]).
pub fn encode_batch(commands: &[Vec<u8>]) -> Vec<u8> {
    let bytes = commands.iter().map(Vec::len).sum::<usize>() + batch_overhead_bytes(commands.len());
    let mut writer = Writer::with_capacity(bytes);
    writer.u8(COMMAND_FORMAT_VERSION);
    writer.u8(KIND_BATCH);
    writer.u32(count(commands.len()));
    for command in commands {
        writer.blob(command);
    }
    writer.bytes
}

/// The bytes [`encode_batch`] adds to its commands': what a proposer counts
/// against the largest entry.
pub fn batch_overhead_bytes(commands: usize) -> usize {
    2 + 4 + 4 * commands
}

/// The commands of a batch entry, or `None` when `bytes` is one command.
pub fn split_batch(bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>, CommandCodecError> {
    const WHAT: &str = "batch command";
    let mut reader = Reader { bytes, offset: 0 };
    read_version(&mut reader, WHAT, COMMAND_FORMAT_UNSTAMPED, COMMAND_FORMAT_VERSION)?;
    if bytes.get(1) != Some(&KIND_BATCH) {
        return Ok(None);
    }
    let commands = (|| {
        reader.u8("the batch kind")?;
        let count = reader.u32("a command count")?;
        let mut commands = Vec::new();
        for _ in 0..count {
            let command = reader.blob("a command")?;
            if command.get(1) == Some(&KIND_BATCH) {
                return Err(reader.malformed("a batch inside a batch"));
            }
            commands.push(command);
        }
        Ok(commands)
    })();
    finish(&reader, WHAT, commands).map(Some)
}

/// The outcome of a batch: one outcome (from [`encode_outcome`]) per command.
pub fn encode_batch_outcome(outcomes: &[Vec<u8>]) -> Vec<u8> {
    let mut writer =
        Writer::with_capacity(5 + outcomes.iter().map(|outcome| 4 + outcome.len()).sum::<usize>());
    writer.u8(OUTCOME_FORMAT_VERSION);
    writer.u32(count(outcomes.len()));
    for outcome in outcomes {
        writer.blob(outcome);
    }
    writer.bytes
}

/// The outcomes of a batch, each still encoded, in command order.
pub fn split_batch_outcome(bytes: &[u8]) -> Result<Vec<Vec<u8>>, CommandCodecError> {
    const WHAT: &str = "batch outcome";
    let mut reader = Reader { bytes, offset: 0 };
    read_version(&mut reader, WHAT, OUTCOME_FORMAT_VERSION, OUTCOME_FORMAT_VERSION)?;
    let outcomes = (|| {
        let count = reader.u32("an outcome count")?;
        (0..count).map(|_| reader.blob("an outcome")).collect::<Result<Vec<_>, _>>()
    })();
    finish(&reader, WHAT, outcomes)
}

/// Whether an encoded command can make the store larger: a put, a txn
/// with a put in any branch, a lease grant. What a store out of space
/// refuses, while deletes, compaction and lease revocations still go
/// through (etcd's NOSPACE alarm draws the same line). A command that does
/// not decode counts as one that does: applying it would refuse it anyway.
pub fn adds_data(bytes: &[u8]) -> bool {
    fn txn_puts(txn: &TxnRequest) -> bool {
        txn.success.iter().chain(&txn.failure).any(|operation| match operation {
            RequestOp::Put(_) => true,
            RequestOp::Txn(nested) => txn_puts(nested),
            RequestOp::Range(_) | RequestOp::DeleteRange(_) => false,
        })
    }
    match bytes.get(1) {
        // A change of users and roles is small, and an operator may need
        // one to clear the alarm.
        Some(&(KIND_DELETE_RANGE | KIND_COMPACT | KIND_LEASE_REVOKE | KIND_AUTH)) => false,
        Some(&KIND_TXN) => match decode_command(bytes) {
            Ok(Command::Txn(txn)) => txn_puts(&txn),
            _ => true,
        },
        _ => true,
    }
}

pub fn decode_command(bytes: &[u8]) -> Result<Command, CommandCodecError> {
    decode_stamped_command(bytes).map(|(command, _)| command)
}

/// A command and its stamp (0 for a version 1 command, which has none).
pub fn decode_stamped_command(bytes: &[u8]) -> Result<(Command, u64), CommandCodecError> {
    const WHAT: &str = "log command";
    let mut reader = Reader { bytes, offset: 0 };
    let version = read_version(&mut reader, WHAT, COMMAND_FORMAT_UNSTAMPED, COMMAND_FORMAT_VERSION)?;
    let command = (|| {
        let kind = reader.u8("a command kind")?;
        let stamp = if version == COMMAND_FORMAT_UNSTAMPED { 0 } else { reader.u64("a stamp")? };
        let command = match kind {
            KIND_PUT => Command::Put(read_put(&mut reader)?),
            KIND_DELETE_RANGE => Command::DeleteRange(read_delete_range(&mut reader)?),
            KIND_TXN => Command::Txn(read_txn(&mut reader, 1)?),
            KIND_COMPACT => Command::Compact { revision: reader.i64("a revision")? },
            KIND_LEASE_GRANT => {
                Command::LeaseGrant { id: reader.i64("a lease id")?, ttl_seconds: reader.i64("a TTL")? }
            }
            KIND_LEASE_REVOKE => Command::LeaseRevoke { id: reader.i64("a lease id")? },
            KIND_AUTH => Command::Auth(super::auth::read_change(&mut reader)?),
            KIND_BATCH => return Err(reader.malformed("a batch where one command belongs (see split_batch)")),
            kind => return Err(reader.malformed(format!("command kind {kind} is not 1 to 8"))),
        };
        Ok((command, stamp))
    })();
    finish(&reader, WHAT, command)
}

fn write_kv(writer: &mut Writer, kv: &KeyValue) {
    writer.blob(&kv.key);
    writer.blob(&kv.value);
    writer.i64(kv.create_revision);
    writer.i64(kv.mod_revision);
    writer.i64(kv.version);
    writer.i64(kv.lease);
}

fn write_kvs(writer: &mut Writer, kvs: &[KeyValue]) {
    writer.u32(count(kvs.len()));
    for kv in kvs {
        write_kv(writer, kv);
    }
}

fn write_put_response(writer: &mut Writer, put: &PutResponse) {
    writer.i64(put.revision);
    writer.bool(put.prev_kv.is_some());
    if let Some(kv) = &put.prev_kv {
        write_kv(writer, kv);
    }
}

fn write_delete_range_response(writer: &mut Writer, delete: &DeleteRangeResponse) {
    writer.i64(delete.revision);
    writer.i64(delete.deleted);
    write_kvs(writer, &delete.prev_kvs);
}

fn write_txn_response(writer: &mut Writer, txn: &TxnResponse) {
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
                    super::auth::write_error(&mut writer, error);
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

fn read_kv(reader: &mut Reader) -> Result<KeyValue, Malformed> {
    Ok(KeyValue {
        key: reader.blob("a key")?,
        value: reader.blob("a value")?,
        create_revision: reader.i64("a create revision")?,
        mod_revision: reader.i64("a mod revision")?,
        version: reader.i64("a version")?,
        lease: reader.i64("a lease")?,
    })
}

fn read_kvs(reader: &mut Reader) -> Result<Vec<KeyValue>, Malformed> {
    let total = reader.u32("a key count")?;
    let mut kvs = Vec::new();
    for _ in 0..total {
        kvs.push(read_kv(reader)?);
    }
    Ok(kvs)
}

fn read_put_response(reader: &mut Reader) -> Result<PutResponse, Malformed> {
    let revision = reader.i64("a revision")?;
    let prev_kv = if reader.bool("the prev_kv flag")? { Some(read_kv(reader)?) } else { None };
    Ok(PutResponse { revision, prev_kv })
}

fn read_delete_range_response(reader: &mut Reader) -> Result<DeleteRangeResponse, Malformed> {
    Ok(DeleteRangeResponse {
        revision: reader.i64("a revision")?,
        deleted: reader.i64("a deleted count")?,
        prev_kvs: read_kvs(reader)?,
    })
}

fn read_txn_response(reader: &mut Reader, depth: usize) -> Result<TxnResponse, Malformed> {
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

fn read_error(reader: &mut Reader) -> Result<KvError, Malformed> {
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
        7 => KvError::Auth(super::auth::read_error(reader)?),
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kv::types::{Event, EventKind};

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..6)
    }
    /// Out of space, a store refuses what can grow it and takes the rest.
    #[test]
    fn only_commands_that_can_grow_the_store_add_data() {
        let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), lease: 0, prev_kv: false };
        let delete = DeleteRangeRequest { key: b"k".to_vec(), ..Default::default() };
        let txn = |operations: Vec<RequestOp>| TxnRequest {
            compares: vec![],
            success: operations,
            failure: vec![],
        };
        let deleting = txn(vec![RequestOp::DeleteRange(delete.clone())]);
        let nested_put = txn(vec![RequestOp::Txn(txn(vec![RequestOp::Put(put.clone())]))]);
        for (command, grows) in [
            (Command::Put(put.clone()), true),
            (Command::LeaseGrant { id: 0, ttl_seconds: 5 }, true),
            (Command::Txn(nested_put), true),
            (Command::Txn(deleting), false),
            (Command::DeleteRange(delete), false),
            (Command::Compact { revision: 3 }, false),
            (Command::LeaseRevoke { id: 1 }, false),
        ] {
            assert_eq!(adds_data(&encode_command(&command)), grows, "{command:?}");
        }
    }

    fn kv() -> impl Strategy<Value = KeyValue> {
        (bytes(), bytes(), any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()).prop_map(
            |(key, value, create_revision, mod_revision, version, lease)| KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
                version,
                lease,
            },
        )
    }

    fn put() -> impl Strategy<Value = PutRequest> {
        (bytes(), bytes(), any::<i64>(), any::<bool>()).prop_map(|(key, value, lease, prev_kv)| PutRequest {
            key,
            value,
            lease,
            prev_kv,
        })
    }

    fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
        (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        })
    }

    fn compare() -> impl Strategy<Value = Compare> {
        let target = prop_oneof![
            bytes().prop_map(CompareTarget::Value),
            any::<i64>().prop_map(CompareTarget::Version),
            any::<i64>().prop_map(CompareTarget::CreateRevision),
            any::<i64>().prop_map(CompareTarget::ModRevision),
            any::<i64>().prop_map(CompareTarget::Lease),
        ];
        let result = prop::sample::select(vec![
            CompareResult::Equal,
            CompareResult::NotEqual,
            CompareResult::Less,
            CompareResult::Greater,
        ]);
        (bytes(), bytes(), target, result).prop_map(|(key, range_end, target, result)| Compare {
            key,
            range_end,
            target,
            result,
        })
    }

    fn txn() -> impl Strategy<Value = TxnRequest> {
        let range = (bytes(), bytes(), any::<i64>(), any::<i64>(), any::<bool>(), any::<bool>()).prop_map(
            |(key, range_end, limit, revision, count_only, keys_only)| {
                RequestOp::Range(RangeRequest { key, range_end, limit, revision, count_only, keys_only })
            },
        );
        let leaf =
            prop_oneof![range, put().prop_map(RequestOp::Put), delete().prop_map(RequestOp::DeleteRange)];
        let op = leaf.prop_recursive(3, 24, 4, |inner| {
            (
                prop::collection::vec(compare(), 0..2),
                prop::collection::vec(inner.clone(), 0..3),
                prop::collection::vec(inner, 0..3),
            )
                .prop_map(|(compares, success, failure)| {
                    RequestOp::Txn(TxnRequest { compares, success, failure })
                })
        });
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(op.clone(), 0..4),
            prop::collection::vec(op, 0..4),
        )
            .prop_map(|(compares, success, failure)| TxnRequest { compares, success, failure })
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            put().prop_map(Command::Put),
            delete().prop_map(Command::DeleteRange),
            txn().prop_map(Command::Txn),
            any::<i64>().prop_map(|revision| Command::Compact { revision }),
            (any::<i64>(), any::<i64>())
                .prop_map(|(id, ttl_seconds)| Command::LeaseGrant { id, ttl_seconds }),
            any::<i64>().prop_map(|id| Command::LeaseRevoke { id }),
            (".{0,8}", prop::option::of(".{1,8}")).prop_map(|(name, password_hash)| Command::Auth(
                crate::kv::auth::AuthChange::UserAdd { name, password_hash }
            )),
            (".{0,8}", bytes(), bytes()).prop_map(|(name, key, range_end)| Command::Auth(
                crate::kv::auth::AuthChange::RoleGrantPermission {
                    name,
                    permission: crate::kv::auth::Permission {
                        kind: crate::kv::auth::PermissionKind::ReadWrite,
                        key,
                        range_end
                    },
                }
            )),
            bytes().prop_map(|token_key| Command::Auth(crate::kv::auth::AuthChange::Enable { token_key })),
        ]
    }

    fn txn_response() -> impl Strategy<Value = TxnResponse> {
        let put = (any::<i64>(), prop::option::of(kv()))
            .prop_map(|(revision, prev_kv)| PutResponse { revision, prev_kv });
        let delete = (any::<i64>(), any::<i64>(), prop::collection::vec(kv(), 0..3))
            .prop_map(|(revision, deleted, prev_kvs)| DeleteRangeResponse { revision, deleted, prev_kvs });
        let range = (any::<i64>(), prop::collection::vec(kv(), 0..3), any::<i64>(), any::<bool>()).prop_map(
            |(revision, kvs, count, more)| ResponseOp::Range(RangeResponse { revision, kvs, count, more }),
        );
        let leaf =
            prop_oneof![range, put.prop_map(ResponseOp::Put), delete.prop_map(ResponseOp::DeleteRange)];
        let op = leaf.prop_recursive(3, 24, 4, |inner| {
            (any::<i64>(), any::<bool>(), prop::collection::vec(inner, 0..3)).prop_map(
                |(revision, succeeded, responses)| {
                    ResponseOp::Txn(TxnResponse { revision, succeeded, responses })
                },
            )
        });
        (any::<i64>(), any::<bool>(), prop::collection::vec(op, 0..4))
            .prop_map(|(revision, succeeded, responses)| TxnResponse { revision, succeeded, responses })
    }

    fn outcome() -> impl Strategy<Value = CommandOutcome> {
        let error = prop_oneof![
            (any::<i64>(), any::<i64>())
                .prop_map(|(requested, compact_revision)| KvError::Compacted { requested, compact_revision }),
            (any::<i64>(), any::<i64>())
                .prop_map(|(requested, current)| KvError::FutureRevision { requested, current }),
            any::<i64>().prop_map(KvError::LeaseNotFound),
            any::<i64>().prop_map(KvError::LeaseExists),
            bytes().prop_map(KvError::DuplicateKeyInTxn),
            ".{0,8}".prop_map(KvError::InvalidArgument),
            ".{0,8}".prop_map(|name| KvError::Auth(crate::kv::auth::AuthError::UserNotFound(name))),
        ];
        let response = prop_oneof![
            (any::<i64>(), prop::option::of(kv()))
                .prop_map(|(revision, prev_kv)| CommandResponse::Put(PutResponse { revision, prev_kv })),
            (any::<i64>(), any::<i64>(), prop::collection::vec(kv(), 0..3)).prop_map(
                |(revision, deleted, prev_kvs)| {
                    CommandResponse::DeleteRange(DeleteRangeResponse { revision, deleted, prev_kvs })
                }
            ),
            txn_response().prop_map(CommandResponse::Txn),
            any::<i64>().prop_map(|revision| CommandResponse::Compact { revision }),
            (any::<i64>(), any::<i64>(), any::<i64>()).prop_map(|(revision, id, ttl_seconds)| {
                CommandResponse::LeaseGrant(LeaseGrantResponse { revision, id, ttl_seconds })
            }),
            (any::<i64>(), any::<i64>()).prop_map(|(revision, deleted)| CommandResponse::LeaseRevoke(
                LeaseRevokeResponse { revision, deleted }
            )),
            any::<u64>().prop_map(|revision| CommandResponse::Auth { revision }),
        ];
        prop_oneof![error.prop_map(Err), response.prop_map(Ok)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn commands_round_trip_and_every_truncation_is_refused(command in command()) {
            let bytes = encode_command(&command);
            prop_assert_eq!(decode_command(&bytes), Ok(command));
            for length in 0..bytes.len() {
                prop_assert!(decode_command(&bytes[..length]).is_err(), "cut at {}", length);
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(decode_command(&longer).is_err());
        }

        #[test]
        fn outcomes_round_trip_and_every_truncation_is_refused(outcome in outcome()) {
            let bytes = encode_outcome(&outcome);
            prop_assert_eq!(decode_outcome(&bytes), Ok(outcome));
            for length in 0..bytes.len() {
                prop_assert!(decode_outcome(&bytes[..length]).is_err(), "cut at {}", length);
            }
        }

        #[test]
        fn random_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..64), kind in 1u8..7) {
            let _ = decode_command(&bytes);
            let _ = decode_outcome(&bytes);
            let framed = [&[COMMAND_FORMAT_VERSION, kind][..], &bytes].concat();
            let _ = decode_command(&framed);
            let framed = [&[OUTCOME_FORMAT_VERSION, 1, kind][..], &bytes].concat();
            let _ = decode_outcome(&framed);
        }
    }

    #[test]
    fn a_newer_format_version_is_refused_naming_both_versions() {
        let mut bytes = encode_command(&Command::Compact { revision: 5 });
        bytes[0] = COMMAND_FORMAT_VERSION + 1;
        let error = decode_command(&bytes).unwrap_err();
        assert_eq!(error, CommandCodecError::NewerVersion { what: "log command", found: 3, supported: 2 });
        assert!(
            error.to_string().contains("version 3") && error.to_string().contains("version 2"),
            "{error}"
        );
    }

    #[test]
    fn a_stamp_travels_with_its_command_and_version_1_commands_read_as_unstamped() {
        let put =
            Command::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..PutRequest::default() });
        let bytes = encode_stamped_command(&put, 123_456);
        assert_eq!(decode_stamped_command(&bytes), Ok((put.clone(), 123_456)));
        // The same command as nvkv wrote it before stamps: version 1, no stamp.
        let mut version_1 = vec![COMMAND_FORMAT_UNSTAMPED, KIND_PUT];
        version_1.extend_from_slice(&bytes[10..]);
        assert_eq!(decode_stamped_command(&version_1), Ok((put, 0)));
    }

    proptest! {
        #[test]
        fn batches_round_trip_and_every_truncation_is_refused(
            commands in prop::collection::vec(command(), 1..6),
            outcomes in prop::collection::vec(outcome(), 1..6),
        ) {
            let encoded: Vec<Vec<u8>> = commands.iter().map(encode_command).collect();
            let batch = encode_batch(&encoded);
            prop_assert_eq!(split_batch(&batch).unwrap(), Some(encoded.clone()));
            prop_assert_eq!(split_batch(&encoded[0]).unwrap(), None, "one command is no batch");
            for cut in 2..batch.len() {
                prop_assert!(split_batch(&batch[..cut]).is_err(), "cut at {}", cut);
            }
            let overhead = batch_overhead_bytes(encoded.len());
            prop_assert_eq!(batch.len(), overhead + encoded.iter().map(Vec::len).sum::<usize>());
            let encoded: Vec<Vec<u8>> = outcomes.iter().map(encode_outcome).collect();
            let outcome = encode_batch_outcome(&encoded);
            prop_assert_eq!(split_batch_outcome(&outcome).unwrap(), encoded);
            for cut in 0..outcome.len() {
                prop_assert!(split_batch_outcome(&outcome[..cut]).is_err(), "cut at {}", cut);
            }
        }
    }

    #[test]
    fn a_batch_inside_a_batch_or_where_one_command_belongs_is_refused() {
        let inner = encode_batch(&[encode_command(&Command::Compact { revision: 1 })]);
        assert!(split_batch(&encode_batch(std::slice::from_ref(&inner))).is_err());
        assert!(decode_command(&inner).is_err());
    }

    #[test]
    fn nesting_deeper_than_the_store_takes_is_refused_without_recursing_further() {
        let mut txn = TxnRequest::default();
        for _ in 0..TXN_DEPTH_MAX {
            txn = TxnRequest { success: vec![RequestOp::Txn(txn)], ..TxnRequest::default() };
        }
        let error = decode_command(&encode_command(&Command::Txn(txn))).unwrap_err();
        assert!(error.to_string().contains(&format!("deeper than {TXN_DEPTH_MAX}")), "{error}");
        // Ten thousand nested levels of garbage: refused at the limit.
        let mut bytes = vec![COMMAND_FORMAT_VERSION, KIND_TXN];
        bytes.extend_from_slice(&0u64.to_le_bytes());
        for _ in 0..10_000 {
            bytes.extend_from_slice(&0u32.to_le_bytes());
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.push(OP_TXN);
        }
        assert!(decode_command(&bytes).is_err());
    }

    #[test]
    fn applying_commands_answers_like_the_store_and_returns_the_events() {
        let mut store = MvccStore::new();
        let granted = apply(&mut store, &Command::LeaseGrant { id: 0, ttl_seconds: 30 }, 0);
        assert_eq!(
            granted.response,
            Ok(CommandResponse::LeaseGrant(LeaseGrantResponse { revision: 1, id: 1, ttl_seconds: 30 }))
        );
        let put =
            Command::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), lease: 1, prev_kv: false });
        let applied = apply(&mut store, &put, 0);
        assert_eq!(applied.response, Ok(CommandResponse::Put(PutResponse { revision: 2, prev_kv: None })));
        assert_eq!(
            applied.events.iter().map(|event: &Event| event.kind).collect::<Vec<_>>(),
            vec![EventKind::Put]
        );
        let refused = apply(&mut store, &Command::Compact { revision: 9 }, 0);
        assert_eq!(refused.response, Err(KvError::FutureRevision { requested: 9, current: 2 }));
        assert_eq!(
            apply(&mut store, &Command::Compact { revision: 2 }, 0).response,
            Ok(CommandResponse::Compact { revision: 2 })
        );
        let revoked = apply(&mut store, &Command::LeaseRevoke { id: 1 }, 0);
        assert_eq!(
            revoked.response,
            Ok(CommandResponse::LeaseRevoke(LeaseRevokeResponse { revision: 3, deleted: 1 }))
        );
        assert_eq!(revoked.events.len(), 1);
        let outcome = decode_outcome(&encode_outcome(&revoked.response)).unwrap();
        assert_eq!(outcome, revoked.response);
    }
}
