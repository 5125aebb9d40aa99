//! The MVCC store of one group: every key's history since the last
//! compaction, the revision counter, and the lease table, with etcd's
//! semantics for range, put, delete, txn, compact and leases.
//!
//! The store is a deterministic state machine: it must never read a clock,
//! draw a random number or iterate a hash map, so the same writes in the
//! same order leave byte-identical state (and snapshots) on every replica.
//! It knows nothing of Raft, logs or RPC; the caller applies writes in log
//! order and hands each write's events to the watch hub.
//!
//! # Revisions
//!
//! As in etcd, a fresh store is at revision 1 and the first write happens at
//! revision 2. Every write that changes something takes the next revision;
//! the events of one write (all keys of a delete range, all writes of a txn,
//! all keys of a revoked lease) share it and are ordered by a sub-revision.
//! A delete range that matches nothing and a txn that writes nothing leave
//! the revision alone; so do lease grants and compaction.
//!
//! Revision numbers (hybrid ones in every group of a node) are
//! `kv::revision`'s.
//!
//! # Layout
//!
//! `keys` maps each key to its history, oldest first: one entry per write
//! of the key, a put (with value, create revision, version and lease) or a
//! tombstone. A key is written at most once per revision (the txn duplicate
//! rule guarantees it), so entries increase strictly in main revision.
//! `positions` indexes every entry by (revision, sub-revision) so a watch
//! replays history in revision order without scanning every key.
//!
//! # Compaction
//!
//! `compact(r)` keeps, for each key, the newest entry at or below `r` if it
//! is a put (it is the key's value at `r`) and drops everything older, and
//! the tombstone too if the newest entry is one. Reads at `r` or later give
//! the same answers as before; reads below `r` are refused as compacted.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::auth::{AuthChange, AuthState};
use super::lease::LeaseTable;
use super::revision::{
    hybrid_revision, revision_clock, Revision, GROUP_BITS, HYBRID_GROUPS_MAX, REVISION_INITIAL,
};
use super::types::{
    range_contains, Applied, Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse,
    Event, EventKind, KeyValue, KvError, LeaseGrantResponse, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLive, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest,
    TxnResponse,
};

/// The deepest nesting of transactions a txn may have; deeper ones are
/// refused before anything is evaluated, so recursion stays bounded.
pub const TXN_DEPTH_MAX: usize = 32;

/// A key's value as one put left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) value: Vec<u8>,
    pub(crate) create_revision: i64,
    pub(crate) version: i64,
    pub(crate) lease: i64,
}

/// One write of one key: a put, or a tombstone when `live` is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) revision: Revision,
    pub(crate) live: Option<Live>,
}

impl Entry {
    fn key_value(&self, key: &[u8]) -> Option<KeyValue> {
        self.live.as_ref().map(|live| KeyValue {
            key: key.to_vec(),
            value: live.value.clone(),
            create_revision: live.create_revision,
            mod_revision: self.revision.main,
            version: live.version,
            lease: live.lease,
        })
    }
}

/// The newest entry at or below revision `at`.
fn entry_at(entries: &[Entry], at: i64) -> Option<&Entry> {
    let newer = entries.partition_point(|entry| entry.revision.main <= at);
    newer.checked_sub(1).map(|index| &entries[index])
}

/// The BTreeMap bounds of etcd's range convention (see `range_contains`).
fn bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if range_end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if range_end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else if range_end <= key {
        // Empty; BTreeMap::range panics on a start above the end.
        (Bound::Included(key), Bound::Excluded(key))
    } else {
        (Bound::Included(key), Bound::Excluded(range_end))
    }
}

/// A write in progress: its revision, the next sub-revision, its events
/// (kept only when someone watches: building them copies every key and
/// value written).
struct Write {
    main: i64,
    sub: i64,
    events: Vec<Event>,
    keep_events: bool,
}

impl Write {
    fn next_position(&mut self) -> Revision {
        let position = Revision { main: self.main, sub: self.sub };
        self.sub += 1;
        position
    }

    fn wrote(&self) -> bool {
        self.sub > 0
    }
}

/// Which branch each transaction takes, decided before anything is written.
struct Path {
    succeeded: bool,
    /// The paths of the nested transactions of the chosen branch, in order.
    nested: Vec<Path>,
}

/// The keys one transaction branch writes, for the duplicate-key rule.
#[derive(Default)]
struct BranchWrites {
    puts: BTreeSet<Vec<u8>>,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl BranchWrites {
    fn check_put(&self, key: &[u8]) -> Result<(), KvError> {
        let deleted = self.deletes.iter().any(|(start, end)| range_contains(start, end, key));
        if self.puts.contains(key) || deleted {
            return Err(KvError::DuplicateKeyInTxn(key.to_vec()));
        }
        Ok(())
    }

    fn check_delete(&self, key: &[u8], range_end: &[u8]) -> Result<(), KvError> {
        match self.puts.range::<[u8], _>(bounds(key, range_end)).next() {
            Some(put) => Err(KvError::DuplicateKeyInTxn(put.clone())),
            None => Ok(()),
        }
    }

    /// The writes of `ops`. A key may be put once, and not both put and
    /// deleted, anywhere in a branch including its nested transactions
    /// (whose two branches exclude each other). Stricter than etcd in one
    /// case: etcd lets two sibling nested transactions put and delete the
    /// same key; here that is refused too, so a key is written at most once
    /// per revision.
    fn of(ops: &[RequestOp]) -> Result<BranchWrites, KvError> {
        let mut writes = BranchWrites::default();
        for op in ops {
            match op {
                RequestOp::Range(_) => {}
                RequestOp::Put(put) => {
                    writes.check_put(&put.key)?;
                    writes.puts.insert(put.key.clone());
                }
                RequestOp::DeleteRange(delete) => {
                    writes.check_delete(&delete.key, &delete.range_end)?;
                    writes.deletes.push((delete.key.clone(), delete.range_end.clone()));
                }
                RequestOp::Txn(txn) => {
                    let success = BranchWrites::of(&txn.success)?;
                    let failure = BranchWrites::of(&txn.failure)?;
                    let puts: BTreeSet<Vec<u8>> = success.puts.union(&failure.puts).cloned().collect();
                    let deletes: Vec<_> = success.deletes.into_iter().chain(failure.deletes).collect();
                    for key in &puts {
                        writes.check_put(key)?;
                    }
                    for (key, range_end) in &deletes {
                        writes.check_delete(key, range_end)?;
                    }
                    writes.puts.extend(puts);
                    writes.deletes.extend(deletes);
                }
            }
        }
        Ok(writes)
    }
}

fn check_depth(txn: &TxnRequest, depth: usize) -> Result<(), KvError> {
    if depth > TXN_DEPTH_MAX {
        return Err(KvError::InvalidArgument(format!(
            "transactions nested {depth} deep; nest at most {TXN_DEPTH_MAX} deep"
        )));
    }
    for op in txn.success.iter().chain(&txn.failure) {
        if let RequestOp::Txn(nested) = op {
            check_depth(nested, depth + 1)?;
        }
    }
    Ok(())
}

fn compare_holds(compare: &Compare, kv: Option<&KeyValue>) -> bool {
    let number = |field: fn(&KeyValue) -> i64| kv.map_or(0, field);
    let ordering = match &compare.target {
        CompareTarget::Value(value) => match kv {
            Some(kv) => kv.value.as_slice().cmp(value.as_slice()),
            None => return false,
        },
        CompareTarget::Version(operand) => number(|kv| kv.version).cmp(operand),
        CompareTarget::CreateRevision(operand) => number(|kv| kv.create_revision).cmp(operand),
        CompareTarget::ModRevision(operand) => number(|kv| kv.mod_revision).cmp(operand),
        CompareTarget::Lease(operand) => number(|kv| kv.lease).cmp(operand),
    };
    match compare.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Less => ordering.is_lt(),
        CompareResult::Greater => ordering.is_gt(),
    }
}

fn set_revision(response: &mut TxnResponse, revision: i64) {
    response.revision = revision;
    for op in &mut response.responses {
        match op {
            ResponseOp::Range(range) => range.revision = revision,
            ResponseOp::Put(put) => put.revision = revision,
            ResponseOp::DeleteRange(delete) => delete.revision = revision,
            ResponseOp::Txn(txn) => set_revision(txn, revision),
        }
    }
}

#[derive(Clone, Debug)]
pub struct MvccStore {
    pub(crate) keys: BTreeMap<Vec<u8>, Vec<Entry>>,
    /// Every entry of `keys`, by position: the revision index watches replay.
    pub(crate) positions: BTreeMap<Revision, Vec<u8>>,
    pub(crate) revision: i64,
    /// The last compaction's revision; 0 before the first.
    pub(crate) compact_revision: i64,
    pub(crate) leases: LeaseTable,
    /// The group whose hybrid revisions this store makes; `None`: it counts.
    /// Not in snapshots: the state machine that restores one knows its group.
    pub(crate) hybrid_group: Option<u32>,
    /// The stamp of the command being applied (see `set_stamp`).
    pub(crate) stamp: u64,
    /// Users and roles: group 0's store holds the cluster's (see `auth`);
    /// every other group's stays empty.
    pub(crate) auth: AuthState,
    /// Whether writes return their events (see [`MvccStore::keep_events`]).
    /// Not state: no snapshot or hash sees it.
    keep_events: bool,
    /// What `keys` takes in a snapshot (`kv::snapshot::keys_bytes`), kept
    /// as keys and entries come and go: the quota and snapshot checks ask
    /// for the store's size often, and walking a large store each time
    /// stalled its shard. Derived from `keys`, so not compared.
    pub(crate) keys_bytes: u64,
}

/// Stores are equal when everything but whether they keep events is.
impl PartialEq for MvccStore {
    fn eq(&self, other: &MvccStore) -> bool {
        self.keys == other.keys
            && self.positions == other.positions
            && self.revision == other.revision
            && self.compact_revision == other.compact_revision
            && self.leases == other.leases
            && self.hybrid_group == other.hybrid_group
            && self.stamp == other.stamp
            && self.auth == other.auth
    }
}

impl Eq for MvccStore {}

impl Default for MvccStore {
    fn default() -> Self {
        MvccStore {
            keys: BTreeMap::new(),
            positions: BTreeMap::new(),
            revision: REVISION_INITIAL,
            compact_revision: 0,
            leases: LeaseTable::default(),
            hybrid_group: None,
            stamp: 0,
            auth: AuthState::default(),
            keep_events: true,
            keys_bytes: 0,
        }
    }
}

impl MvccStore {
    /// A store that counts revisions 1, 2, 3.
    pub fn new() -> MvccStore {
        MvccStore::default()
    }

    /// A store of `group` that makes hybrid revisions (module comment).
    pub fn hybrid(group: u32) -> MvccStore {
        let mut store = MvccStore::default();
        store.make_hybrid(group);
        store
    }

    /// From now on, makes `group`'s hybrid revisions; a fresh store starts
    /// at its group's first one. For a store restored from a snapshot,
    /// which does not record it.
    pub fn make_hybrid(&mut self, group: u32) {
        assert!(group < HYBRID_GROUPS_MAX, "group {group} does not fit {GROUP_BITS} bits");
        self.hybrid_group = Some(group);
        if self.revision == REVISION_INITIAL && self.positions.is_empty() && self.compact_revision == 0 {
            self.revision = hybrid_revision(1, group);
        }
    }

    /// The group of a hybrid store.
    pub fn hybrid_group(&self) -> Option<u32> {
        self.hybrid_group
    }

    /// The stamp the next write takes its hybrid revision from (0: none, the
    /// next time after the last). Set before each command is applied.
    pub fn set_stamp(&mut self, stamp: u64) {
        self.stamp = stamp;
    }

    /// The revision the next write takes.
    fn next_revision(&self) -> i64 {
        match self.hybrid_group {
            None => self.revision + 1,
            Some(group) => {
                let time = revision_clock(self.revision).saturating_add(1).max(self.stamp);
                hybrid_revision(time, group)
            }
        }
    }

    /// The revision `writes` writes before the current one (those that
    /// changed something), or `None` when history holds fewer: what a
    /// compaction that keeps that many revisions compacts at.
    pub fn revision_writes_ago(&self, writes: u64) -> Option<i64> {
        let mut seen = 0u64;
        let mut last = None;
        for position in self.positions.keys().rev() {
            if last != Some(position.main) {
                if seen == writes {
                    return Some(position.main);
                }
                seen += 1;
                last = Some(position.main);
            }
        }
        None
    }

    /// The revision of the last write (etcd's header revision).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision of the last compaction; 0 if there was none.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Users, roles and whether they are checked (group 0's store).
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    /// Applies one change to the users and roles; it makes no revision.
    pub fn auth_apply(&mut self, change: &AuthChange) -> Result<u64, KvError> {
        self.auth.apply(change).map_err(KvError::Auth)
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// How many keys have history, live or deleted since the compaction.
    pub fn keys_with_history(&self) -> usize {
        self.keys.len()
    }

    #[cfg(test)]
    /// How many entries history holds in all: what compaction frees.
    pub fn history_entries(&self) -> usize {
        self.positions.len()
    }

    /// The revision a read asking for `requested` is served at.
    fn read_revision(&self, requested: i64) -> Result<i64, KvError> {
        if requested < 0 {
            return Err(KvError::InvalidArgument(format!(
                "revision {requested} is negative; ask for 0 (current) or a positive revision"
            )));
        }
        if requested == 0 {
            return Ok(self.revision);
        }
        if requested > self.revision {
            return Err(KvError::FutureRevision { requested, current: self.revision });
        }
        if requested < self.compact_revision {
            return Err(KvError::Compacted { requested, compact_revision: self.compact_revision });
        }
        Ok(requested)
    }

    fn check_range(&self, request: &RangeRequest) -> Result<i64, KvError> {
        if request.limit < 0 {
            return Err(KvError::InvalidArgument(format!(
                "range limit {} is negative; give 0 for no limit or a positive count",
                request.limit
            )));
        }
        self.read_revision(request.revision)
    }

    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, KvError> {
        let at = self.check_range(request)?;
        Ok(self.range_at(request, at))
    }

    fn range_at(&self, request: &RangeRequest, at: i64) -> RangeResponse {
        let limit = if request.limit == 0 { usize::MAX } else { request.limit as usize };
        let mut response = RangeResponse { revision: self.revision, ..RangeResponse::default() };
        for (key, entries) in self.keys.range::<[u8], _>(bounds(&request.key, &request.range_end)) {
            // Values are copied only for the keys the answer carries.
            let Some(entry) = entry_at(entries, at).filter(|entry| entry.live.is_some()) else {
                continue;
            };
            response.count += 1;
            if request.count_only {
                continue;
            }
            if response.kvs.len() == limit {
                response.more = true;
                continue;
            }
            let mut kv = entry.key_value(key).expect("filtered to live entries");
            if request.keys_only {
                kv.value = Vec::new();
            }
            response.kvs.push(kv);
        }
        response
    }

    /// The live keys in a range now, with their values.
    fn live(&self, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
        self.keys
            .range::<[u8], _>(bounds(key, range_end))
            .filter_map(|(key, entries)| entries.last().and_then(|entry| entry.key_value(key)))
            .collect()
    }

    fn check_lease(&self, lease: i64) -> Result<(), KvError> {
        if lease != 0 && !self.leases.contains(lease) {
            return Err(KvError::LeaseNotFound(lease));
        }
        Ok(())
    }

    /// Whether the writes from now on return their events (the default).
    /// Whoever hands events to watchers turns it off while nobody watches:
    /// the state and the answers are the same either way.
    pub fn keep_events(&mut self, keep: bool) {
        self.keep_events = keep;
    }

    fn begin(&self) -> Write {
        Write { main: self.next_revision(), sub: 0, events: Vec::new(), keep_events: self.keep_events }
    }

    fn commit(&mut self, write: &Write) -> i64 {
        if write.wrote() {
            self.revision = write.main;
        }
        self.revision
    }

    /// Puts `key`; returns the key as it was when `want_previous` or an
    /// event needs it (a copy of its value), else `None`.
    fn write_put(
        &mut self,
        write: &mut Write,
        key: &[u8],
        value: &[u8],
        lease: i64,
        want_previous: bool,
    ) -> Option<KeyValue> {
        let position = write.next_position();
        // An overwrite (the common put) finds its key without copying it.
        let entries = match self.keys.get_mut(key) {
            Some(entries) => entries,
            None => {
                self.keys_bytes += super::snapshot::key_bytes(key);
                self.keys.entry(key.to_vec()).or_default()
            }
        };
        assert!(
            entries.last().is_none_or(|entry| entry.revision.main < position.main),
            "key {} written twice at revision {}",
            super::types::ShowKey(key),
            position.main
        );
        let live_before = entries.last().and_then(|entry| entry.live.as_ref());
        let (create_revision, version, lease_before) = match live_before {
            Some(before) => (before.create_revision, before.version + 1, Some(before.lease)),
            None => (position.main, 1, None),
        };
        let previous = if want_previous || write.keep_events {
            entries.last().and_then(|entry| entry.key_value(key))
        } else {
            None
        };
        let live = Live { value: value.to_vec(), create_revision, version, lease };
        let entry = Entry { revision: position, live: Some(live) };
        self.keys_bytes += super::snapshot::entry_bytes(&entry);
        entries.push(entry);
        if write.keep_events {
            let kv = entries.last().and_then(|entry| entry.key_value(key)).expect("just put");
            write.events.push(Event { kind: EventKind::Put, kv, prev_kv: previous.clone() });
        }
        self.positions.insert(position, key.to_vec());
        if let Some(lease_before) = lease_before {
            self.leases.detach(lease_before, key);
        }
        self.leases.attach(lease, key);
        previous
    }

    /// Deletes `key`, which is live; returns it as it was.
    fn write_delete(&mut self, write: &mut Write, key: &[u8]) -> KeyValue {
        let position = write.next_position();
        let entries = self.keys.get_mut(key).expect("only live keys are deleted");
        let previous =
            entries.last().and_then(|entry| entry.key_value(key)).expect("only live keys are deleted");
        assert!(previous.mod_revision < position.main, "key {} written twice", super::types::ShowKey(key));
        let entry = Entry { revision: position, live: None };
        self.keys_bytes += super::snapshot::entry_bytes(&entry);
        entries.push(entry);
        self.positions.insert(position, key.to_vec());
        self.leases.detach(previous.lease, key);
        if write.keep_events {
            let kv = KeyValue { key: key.to_vec(), mod_revision: position.main, ..KeyValue::default() };
            write.events.push(Event { kind: EventKind::Delete, kv, prev_kv: Some(previous.clone()) });
        }
        previous
    }

    fn write_delete_range(&mut self, write: &mut Write, request: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed = self.live(&request.key, &request.range_end);
        let mut response = DeleteRangeResponse { deleted: doomed.len() as i64, ..Default::default() };
        for kv in doomed {
            let previous = self.write_delete(write, &kv.key);
            if request.prev_kv {
                response.prev_kvs.push(previous);
            }
        }
        response
    }

    pub fn put(&mut self, request: &PutRequest) -> Result<Applied<PutResponse>, KvError> {
        self.check_lease(request.lease)?;
        let mut write = self.begin();
        let previous =
            self.write_put(&mut write, &request.key, &request.value, request.lease, request.prev_kv);
        let revision = self.commit(&write);
        let prev_kv = previous.filter(|_| request.prev_kv);
        Ok(Applied { response: PutResponse { revision, prev_kv }, events: write.events })
    }

    pub fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<Applied<DeleteRangeResponse>, KvError> {
        let mut write = self.begin();
        let mut response = self.write_delete_range(&mut write, request);
        response.revision = self.commit(&write);
        Ok(Applied { response, events: write.events })
    }

    /// Evaluates the compares against the store as it is, then runs one
    /// branch at one revision. Nested transactions pick their branch against
    /// the store as it was before this transaction wrote anything (etcd's
    /// rule). Everything that can be refused is checked before the first
    /// write, so a refused transaction changes nothing.
    pub fn txn(&mut self, request: &TxnRequest) -> Result<Applied<TxnResponse>, KvError> {
        check_depth(request, 1)?;
        BranchWrites::of(&request.success)?;
        BranchWrites::of(&request.failure)?;
        let path = self.plan(request);
        self.check_path(request, &path)?;
        let mut write = self.begin();
        let mut response = self.execute(&mut write, request, &path);
        let revision = self.commit(&write);
        set_revision(&mut response, revision);
        Ok(Applied { response, events: write.events })
    }

    fn compare(&self, compare: &Compare) -> bool {
        let kvs = self.live(&compare.key, &compare.range_end);
        if kvs.is_empty() {
            return compare_holds(compare, None);
        }
        kvs.iter().all(|kv| compare_holds(compare, Some(kv)))
    }

    fn plan(&self, txn: &TxnRequest) -> Path {
        let succeeded = txn.compares.iter().all(|compare| self.compare(compare));
        let branch = if succeeded { &txn.success } else { &txn.failure };
        let nested = branch
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(nested) => Some(self.plan(nested)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }

    fn check_path(&self, txn: &TxnRequest, path: &Path) -> Result<(), KvError> {
        let branch = if path.succeeded { &txn.success } else { &txn.failure };
        let mut nested = path.nested.iter();
        for op in branch {
            match op {
                RequestOp::Range(range) => {
                    self.check_range(range)?;
                }
                RequestOp::Put(put) => self.check_lease(put.lease)?,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(inner) => self.check_path(inner, nested.next().expect("one path per txn"))?,
            }
        }
        Ok(())
    }

    fn execute(&mut self, write: &mut Write, txn: &TxnRequest, path: &Path) -> TxnResponse {
        let branch = if path.succeeded { &txn.success } else { &txn.failure };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match op {
                RequestOp::Range(range) => {
                    // A range inside a txn sees the txn's own earlier writes.
                    let current = if write.wrote() { write.main } else { self.revision };
                    let at = if range.revision == 0 { current } else { range.revision };
                    ResponseOp::Range(self.range_at(range, at))
                }
                RequestOp::Put(put) => {
                    let previous = self.write_put(write, &put.key, &put.value, put.lease, put.prev_kv);
                    ResponseOp::Put(PutResponse { revision: 0, prev_kv: previous.filter(|_| put.prev_kv) })
                }
                RequestOp::DeleteRange(delete) => {
                    ResponseOp::DeleteRange(self.write_delete_range(write, delete))
                }
                RequestOp::Txn(inner) => {
                    ResponseOp::Txn(self.execute(write, inner, nested.next().expect("one path per txn")))
                }
            };
            responses.push(response);
        }
        TxnResponse { revision: 0, succeeded: path.succeeded, responses }
    }

    /// Forgets history below `revision` (see the module comment). Refuses a
    /// revision already compacted and one in the future.
    pub fn compact(&mut self, revision: i64) -> Result<(), KvError> {
        if revision < 1 {
            return Err(KvError::InvalidArgument(format!(
                "compaction revision {revision} is not positive; give a revision from 1 to {}",
                self.revision
            )));
        }
        if revision <= self.compact_revision {
            return Err(KvError::Compacted { requested: revision, compact_revision: self.compact_revision });
        }
        if revision > self.revision {
            return Err(KvError::FutureRevision { requested: revision, current: self.revision });
        }
        let mut emptied = Vec::new();
        for (key, entries) in self.keys.iter_mut() {
            let at_or_below = entries.partition_point(|entry| entry.revision.main <= revision);
            let Some(newest) = at_or_below.checked_sub(1) else { continue };
            let dropped = if entries[newest].live.is_some() { newest } else { newest + 1 };
            for entry in entries.drain(..dropped) {
                self.keys_bytes -= super::snapshot::entry_bytes(&entry);
                self.positions.remove(&entry.revision);
            }
            if entries.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.keys_bytes -= super::snapshot::key_bytes(&key);
            self.keys.remove(&key);
        }
        self.compact_revision = revision;
        Ok(())
    }

    /// Grants a lease (`id` 0 picks the next free id). Changes no key, so
    /// the revision stays.
    pub fn lease_grant(&mut self, id: i64, ttl_seconds: i64) -> Result<LeaseGrantResponse, KvError> {
        let id = self.leases.grant(id, ttl_seconds)?;
        Ok(LeaseGrantResponse { revision: self.revision, id, ttl_seconds })
    }

    /// Revokes a lease and deletes every key attached to it, all at one
    /// revision, in key order.
    pub fn lease_revoke(&mut self, id: i64) -> Result<Applied<LeaseRevokeResponse>, KvError> {
        let keys = self.leases.remove(id)?;
        let mut write = self.begin();
        for key in &keys {
            self.write_delete(&mut write, key);
        }
        let revision = self.commit(&write);
        Ok(Applied {
            response: LeaseRevokeResponse { revision, deleted: keys.len() as i64 },
            events: write.events,
        })
    }

    pub fn lease_list(&self) -> Vec<LeaseStatus> {
        self.leases.list()
    }

    pub fn lease_time_to_live(&self, id: i64) -> Result<LeaseTimeToLive, KvError> {
        self.leases.time_to_live(id)
    }

    /// History from position `from` on, in revision order, restricted to a
    /// key range: what a watch replays. Every event carries its `prev_kv`.
    /// Complete only from above the compact revision; the watch hub checks.
    pub fn events_since<'a>(
        &'a self,
        from: Revision,
        key: &'a [u8],
        range_end: &'a [u8],
    ) -> impl Iterator<Item = (Revision, Event)> + 'a {
        self.positions
            .range(from..)
            .filter(move |(_, candidate)| range_contains(key, range_end, candidate))
            .map(move |(&position, key)| (position, self.event_at(key, position)))
    }

    fn event_at(&self, key: &[u8], position: Revision) -> Event {
        let entries = &self.keys[key];
        let index = entries
            .binary_search_by(|entry| entry.revision.cmp(&position))
            .expect("the revision index names only entries that exist");
        let prev_kv = index.checked_sub(1).and_then(|previous| entries[previous].key_value(key));
        match entries[index].key_value(key) {
            Some(kv) => Event { kind: EventKind::Put, kv, prev_kv },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue { key: key.to_vec(), mod_revision: position.main, ..KeyValue::default() },
                prev_kv,
            },
        }
    }

    /// Checks every invariant the store relies on; a snapshot that decodes
    /// into a store failing this is refused. Says which key broke which rule.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.revision < REVISION_INITIAL || self.revision == i64::MAX {
            return Err(format!("revision {} is outside {REVISION_INITIAL}..{}", self.revision, i64::MAX));
        }
        if self.compact_revision < 0 || self.compact_revision > self.revision {
            return Err(format!(
                "compact revision {} is outside 0..={}",
                self.compact_revision, self.revision
            ));
        }
        if self.leases.next_id < 1 {
            return Err(format!("next lease id {} is not positive", self.leases.next_id));
        }
        let mut positions = 0;
        for (key, entries) in &self.keys {
            let show = super::types::ShowKey(key);
            let Some(first) = entries.first() else { return Err(format!("key {show} has no history")) };
            let Some(first_live) = &first.live else {
                return Err(format!("history of key {show} starts with a delete"));
            };
            if first_live.version == 1 && first_live.create_revision != first.revision.main {
                return Err(format!("key {show} at version 1 is not created by its first put"));
            }
            for (index, entry) in entries.iter().enumerate() {
                let position = entry.revision;
                if position.main < 1 || position.main > self.revision || position.sub < 0 {
                    return Err(format!(
                        "key {show} has an entry at {position:?}, outside 1..={}",
                        self.revision
                    ));
                }
                if index > 0 && position.main <= self.compact_revision {
                    return Err(format!("key {show} keeps compacted history at {}", position.main));
                }
                if self.positions.get(&position).map(Vec::as_slice) != Some(key.as_slice()) {
                    return Err(format!("entry of key {show} at {position:?} is missing from the index"));
                }
                positions += 1;
                if let Some(live) = &entry.live {
                    // Every version took a revision of its own since the create.
                    let versions_max = position.main - live.create_revision + 1;
                    if live.create_revision < 1 || !(1..=versions_max).contains(&live.version) {
                        return Err(format!(
                            "key {show} written at {} claims version {} created at {}",
                            position.main, live.version, live.create_revision
                        ));
                    }
                }
                let Some(previous) = index.checked_sub(1).map(|previous| &entries[previous]) else {
                    continue;
                };
                if previous.revision.main >= position.main {
                    return Err(format!("history of key {show} is out of order at {}", position.main));
                }
                match (&previous.live, &entry.live) {
                    (None, None) => return Err(format!("key {show} is deleted twice in a row")),
                    (_, None) => {}
                    (None, Some(live)) if live.version != 1 || live.create_revision != position.main => {
                        return Err(format!("key {show} recreated at {} is not at version 1", position.main))
                    }
                    (Some(before), Some(live))
                        if Some(live.version) != before.version.checked_add(1)
                            || live.create_revision != before.create_revision =>
                    {
                        return Err(format!(
                            "key {show} at {} does not follow its previous version",
                            position.main
                        ))
                    }
                    _ => {}
                }
            }
            if let Some(live) = entries.last().and_then(|entry| entry.live.as_ref()) {
                let attached =
                    self.leases.leases.get(&live.lease).is_some_and(|lease| lease.keys.contains(key));
                if live.lease != 0 && !attached {
                    return Err(format!("key {show} names lease {} that does not hold it", live.lease));
                }
            }
        }
        if positions != self.positions.len() {
            return Err(format!(
                "the revision index holds {} entries but history {positions}",
                self.positions.len()
            ));
        }
        let keys_bytes = super::snapshot::keys_bytes(&self.keys);
        if keys_bytes != self.keys_bytes {
            return Err(format!("the keys take {keys_bytes} bytes but the store counts {}", self.keys_bytes));
        }
        for (id, lease) in &self.leases.leases {
            if *id < 1 || lease.ttl_seconds < 1 {
                return Err(format!("lease {id} has TTL {} seconds", lease.ttl_seconds));
            }
            for key in &lease.keys {
                let holder = self
                    .keys
                    .get(key)
                    .and_then(|entries| entries.last())
                    .and_then(|entry| entry.live.as_ref());
                if holder.map(|live| live.lease) != Some(*id) {
                    return Err(format!(
                        "lease {id} holds key {} that is not live on it",
                        super::types::ShowKey(key)
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
