//! The values, requests, responses and errors of the MVCC store, shaped after
//! etcd's `mvccpb` and `etcdserverpb` so the RPC layer maps them one to one.
//!
//! Plain data and the key-range convention shared by range, delete, compare
//! and watch. This module must never hold state or decide anything about
//! revisions: that is `store`'s job.

use std::fmt;

/// A key at one revision, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision of the put that created this generation of the key.
    pub create_revision: i64,
    /// The revision of the last write to the key.
    pub mod_revision: i64,
    /// Puts since the key was created (1 after the first put); a delete resets it.
    pub version: i64,
    /// The lease the key is attached to; 0 for none.
    pub lease: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key. A delete's `kv` carries only the key and the
/// revision of the delete in `mod_revision`, as etcd sends it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key as it was before this event, if it was live.
    pub prev_kv: Option<KeyValue>,
}

/// etcd's key-range convention: an empty `range_end` means the single key
/// `key`; `range_end == [0]` means every key at or above `key`; otherwise the
/// half-open interval `[key, range_end)`.
pub fn range_contains(key: &[u8], range_end: &[u8], candidate: &[u8]) -> bool {
    if range_end.is_empty() {
        candidate == key
    } else if range_end == [0] {
        candidate >= key
    } else {
        candidate >= key && candidate < range_end
    }
}

/// The `range_end` that selects every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff
/// incremented and the rest cut off; `[0]` (all keys) when there is none.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("not empty") += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// A key shown to a person: printable ASCII as is, other bytes escaped.
pub struct ShowKey<'a>(pub &'a [u8]);

impl fmt::Display for ShowKey<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "\"{}\"", self.0.escape_ascii())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// The most keys returned; 0 for no limit. `count` still counts them all.
    pub limit: i64,
    /// The revision to read at; 0 for the current one.
    pub revision: i64,
    pub count_only: bool,
    pub keys_only: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's revision when the range was served (etcd's header revision).
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// How many keys the range selects, whatever the limit.
    pub count: i64,
    /// Whether the limit left keys out.
    pub more: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The lease to attach the key to; 0 for none.
    pub lease: i64,
    /// Whether the response carries the key as it was before.
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub revision: i64,
    pub deleted: i64,
    /// The deleted keys as they were, when the request asked for them.
    pub prev_kvs: Vec<KeyValue>,
}

/// What a compare looks at, with the operand to compare it against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Lease(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// One guard of a transaction. Over a range it holds when it holds for every
/// key in the range. A missing key compares as version, create revision,
/// mod revision and lease 0, and fails every value compare (etcd's rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub target: CompareTarget,
    pub result: CompareResult,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compares: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub revision: i64,
    /// Whether every compare held, so the success branch ran.
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    pub revision: i64,
    pub id: i64,
    pub ttl_seconds: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRevokeResponse {
    pub revision: i64,
    /// How many attached keys the revoke deleted.
    pub deleted: i64,
}

/// A lease as every replica knows it: when it expires is the leader's
/// business, so only the granted TTL is here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    pub id: i64,
    pub ttl_seconds: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    pub id: i64,
    pub ttl_seconds: i64,
    /// The keys attached to the lease, in key order.
    pub keys: Vec<Vec<u8>>,
}

/// A write's answer and the events it produced, for the watch hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<R> {
    pub response: R,
    /// In the order they happened; all share one revision.
    pub events: Vec<Event>,
}

/// The expected refusals of the store. None of them changes state: a
/// refused write leaves the store exactly as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error(
        "revision {requested} is compacted (compact revision {compact_revision}); \
         read at revision {compact_revision} or later, and compact only above it"
    )]
    Compacted { requested: i64, compact_revision: i64 },
    #[error(
        "revision {requested} is in the future (current revision {current}); \
         ask for a revision of at most {current}"
    )]
    FutureRevision { requested: i64, current: i64 },
    /// Lease ids show in hexadecimal wherever a person reads them, as
    /// etcdctl shows them and as `nvkv lease` takes them.
    #[error(
        "lease {0:x} does not exist (never granted, expired or revoked); grant it first or use no lease"
    )]
    LeaseNotFound(i64),
    #[error("lease {0:x} already exists; grant without an id to get a fresh one")]
    LeaseExists(i64),
    #[error(
        "key {} is written more than once in one transaction; \
         put or delete each key at most once per branch",
        ShowKey(.0)
    )]
    DuplicateKeyInTxn(Vec<u8>),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Auth(#[from] super::auth::AuthError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_convention_single_key_all_above_and_interval() {
        assert!(range_contains(b"a", b"", b"a"));
        assert!(!range_contains(b"a", b"", b"ab"));
        assert!(range_contains(b"b", &[0], b"zzz"));
        assert!(!range_contains(b"b", &[0], b"a"));
        assert!(range_contains(b"a", b"c", b"b"));
        assert!(!range_contains(b"a", b"c", b"c"));
    }

    #[test]
    fn prefix_range_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_range_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_range_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_range_end(&[0xff, 0xff]), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }

    #[test]
    fn errors_name_the_value_and_what_to_do() {
        let message = KvError::DuplicateKeyInTxn(b"k\x01".to_vec()).to_string();
        assert!(message.contains("\"k\\x01\""), "{message}");
        let message = KvError::Compacted { requested: 3, compact_revision: 7 }.to_string();
        assert!(message.contains('3') && message.contains("revision 7 or later"), "{message}");
    }
}
