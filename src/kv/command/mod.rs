//! The commands a group's log carries to its store, the outcome applying
//! one gives, and the byte encodings of both: the state machine of a Raft
//! group decodes a committed entry, applies it, and encodes the outcome for
//! the proposer. The outcome's codec is `outcome`'s.
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

/// How many commands an entry's bytes carry: a batch's count (read from its
/// header, not checked), else 1.
pub fn command_count(bytes: &[u8]) -> usize {
    match bytes {
        [_, KIND_BATCH, ..] if bytes.len() >= 6 => crate::little_endian::u32_at(bytes, 2) as usize,
        _ => 1,
    }
}

/// The commands of a batch entry, or `None` when `bytes` is one command.
/// Each command is borrowed from `bytes`: applying a batch copies none of them.
pub fn split_batch(bytes: &[u8]) -> Result<Option<Vec<&[u8]>>, CommandCodecError> {
    const WHAT: &str = "batch command";
    let mut reader = Reader { bytes, offset: 0 };
    read_version(&mut reader, WHAT, COMMAND_FORMAT_UNSTAMPED, COMMAND_FORMAT_VERSION)?;
    if bytes.get(1) != Some(&KIND_BATCH) {
        return Ok(None);
    }
    let commands = (|| {
        reader.u8("the batch kind")?;
        let count = reader.u32("a command count")?;
        let mut commands = Vec::with_capacity((count as usize).min(bytes.len() / 4));
        for _ in 0..count {
            let command = reader.blob_slice("a command")?;
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

mod outcome;
#[cfg(test)]
mod tests;

pub use outcome::{decode_outcome, encode_outcome};
