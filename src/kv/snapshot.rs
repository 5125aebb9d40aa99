//! The snapshot format of one group's store: every key's history since the
//! compact revision, the revision counters and the lease table, encoded so
//! that equal stores give equal bytes on every replica and every build.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0 magic u32 "NVKS"    4 format_version u16    6 reserved u16 (0)
//! 8 sections, each: tag u32, payload_bytes u64, payload
//!   tag 1 header: revision i64, compact_revision i64, next_lease_id i64,
//!                 keys u64, entries u64, leases u64
//!   tag 2 keys:   per key, ascending: key_bytes u32, key,
//!                 entries u32, per entry, oldest first:
//!                   main i64, sub i64, kind u8 (0 delete, 1 put),
//!                   put only: create_revision i64, version i64, lease i64,
//!                             value_bytes u32, value
//!   tag 3 leases: per lease, ascending id: id i64, ttl_seconds i64,
//!                 keys u32, per key, ascending: key_bytes u32, key
//!   tag 4 auth:   format version 2 only: the users and roles
//!                 (`auth::write_state`: enabled u8, revision u64, token key
//!                 blob, users u32, each name, password option, roles u32
//!                 and their names; roles u32, each name, permissions u32,
//!                 each kind u8, key and range end blobs)
//! end crc u32: CRC32C of every byte before it
//! ```
//!
//! The first three sections come exactly once, in this order; the auth
//! section follows them in format version 2, which a store with users or
//! roles (group 0's, once any were added) is written in, so a store without
//! them gives the bytes it always gave. A reader refuses a
//! newer format version by name, checks the CRC before parsing, never
//! trusts a count or length beyond the bytes it holds, and refuses a store
//! that breaks an invariant (`MvccStore::check_invariants`). This module
//! encodes and decodes only; where the bytes are stored is the caller's
//! business.

use std::collections::{BTreeMap, BTreeSet};

use super::codec::{Malformed, Reader, Writer};
use super::lease::{Lease, LeaseTable};
use super::revision::Revision;
use super::store::{Entry, Live, MvccStore};

pub const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"NVKS");
pub const SNAPSHOT_FORMAT_VERSION: u16 = 2;
/// The format of a store without users or roles: no auth section.
const SNAPSHOT_FORMAT_WITHOUT_AUTH: u16 = 1;
const PREAMBLE_BYTES: usize = 8;
const SECTION_HEADER_BYTES: usize = 12;
const CRC_BYTES: usize = 4;
/// The fewest bytes a snapshot can have: preamble, the three section
/// headers, the header section's payload, and the CRC.
pub const SNAPSHOT_BYTES_MIN: usize =
    PREAMBLE_BYTES + 3 * SECTION_HEADER_BYTES + HEADER_PAYLOAD_BYTES + CRC_BYTES;
const HEADER_PAYLOAD_BYTES: usize = 6 * 8;

const TAG_HEADER: u32 = 1;
const TAG_KEYS: u32 = 2;
const TAG_LEASES: u32 = 3;
const TAG_AUTH: u32 = 4;

const KIND_DELETE: u8 = 0;
const KIND_PUT: u8 = 1;

impl From<Malformed> for SnapshotError {
    fn from(malformed: Malformed) -> Self {
        SnapshotError::Malformed { offset: malformed.offset, reason: malformed.reason }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "snapshot of {bytes} bytes is shorter than the {SNAPSHOT_BYTES_MIN} bytes any snapshot has; \
         it is truncated, fetch it again"
    )]
    TooShort { bytes: usize },
    #[error("not an nvkv snapshot: magic {found:#010x}, expected {SNAPSHOT_MAGIC:#010x}")]
    BadMagic { found: u32 },
    #[error(
        "snapshot format version {found} is newer than this nvkv reads (version {supported}); \
         upgrade nvkv on this node"
    )]
    NewerVersion { found: u16, supported: u16 },
    #[error("snapshot format version {found} is not one this nvkv reads (version {supported})")]
    UnknownVersion { found: u16, supported: u16 },
    #[error(
        "snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}; \
         the snapshot is corrupt or truncated, fetch it again"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("snapshot malformed at byte {offset}: {reason}; the snapshot is corrupt, fetch it again")]
    Malformed { offset: usize, reason: String },
    #[error("snapshot decodes to an inconsistent store: {0}; the snapshot is corrupt, fetch it again")]
    Inconsistent(String),
}

/// Encodes the whole store. Equal stores give equal bytes.
pub fn encode(store: &MvccStore) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u32(SNAPSHOT_MAGIC);
    let with_auth = !store.auth.is_empty();
    writer.u16(if with_auth { SNAPSHOT_FORMAT_VERSION } else { SNAPSHOT_FORMAT_WITHOUT_AUTH });
    writer.u16(0);
    writer.section(TAG_HEADER, |writer| {
        writer.i64(store.revision);
        writer.i64(store.compact_revision);
        writer.i64(store.leases.next_id);
        writer.u64(store.keys.len() as u64);
        writer.u64(store.positions.len() as u64);
        writer.u64(store.leases.leases.len() as u64);
    });
    writer.section(TAG_KEYS, |writer| {
        for (key, entries) in &store.keys {
            writer.blob(key);
            writer.u32(u32::try_from(entries.len()).expect("a key's history has fewer than 2^32 entries"));
            for entry in entries {
                writer.i64(entry.revision.main);
                writer.i64(entry.revision.sub);
                match &entry.live {
                    None => writer.u8(KIND_DELETE),
                    Some(live) => {
                        writer.u8(KIND_PUT);
                        writer.i64(live.create_revision);
                        writer.i64(live.version);
                        writer.i64(live.lease);
                        writer.blob(&live.value);
                    }
                }
            }
        }
    });
    writer.section(TAG_LEASES, |writer| {
        for (id, lease) in &store.leases.leases {
            writer.i64(*id);
            writer.i64(lease.ttl_seconds);
            writer.u32(u32::try_from(lease.keys.len()).expect("a lease holds fewer than 2^32 keys"));
            for key in &lease.keys {
                writer.blob(key);
            }
        }
    });
    if with_auth {
        writer.section(TAG_AUTH, |writer| super::auth::write_state(writer, &store.auth));
    }
    let crc = crc32c::crc32c(&writer.bytes);
    writer.u32(crc);
    writer.bytes
}

const BLOB_LENGTH_BYTES: u64 = 4;

/// What a snapshot spends on a key before its entries.
pub(crate) fn key_bytes(key: &[u8]) -> u64 {
    BLOB_LENGTH_BYTES + key.len() as u64 + 4
}

/// What a snapshot spends on one entry of a key's history.
pub(crate) fn entry_bytes(entry: &Entry) -> u64 {
    8 + 8 + 1 + entry.live.as_ref().map_or(0, |live| 8 + 8 + 8 + BLOB_LENGTH_BYTES + live.value.len() as u64)
}

/// What a snapshot spends besides keys: its framing and the lease table.
fn fixed_bytes(store: &MvccStore) -> u64 {
    const SECTION: u64 = 4 + 8;
    let mut bytes = 4 + 2 + 2 + SECTION + 6 * 8 + SECTION + SECTION + CRC_BYTES as u64;
    for lease in store.leases.leases.values() {
        bytes += 8 + 8 + 4 + lease.keys.iter().map(|key| BLOB_LENGTH_BYTES + key.len() as u64).sum::<u64>();
    }
    if !store.auth.is_empty() {
        bytes += SECTION + super::auth::state_bytes(&store.auth);
    }
    bytes
}

/// The length of `encode(store)`, without encoding: what a shard checks
/// against its free snapshot space before it asks for a snapshot.
pub fn encoded_len(store: &MvccStore) -> u64 {
    fixed_bytes(store) + store.keys_bytes
}

/// What `keys` takes in a snapshot, counted by walking it: what
/// `MvccStore::keys_bytes` keeps up to date as the store changes.
pub(crate) fn keys_bytes(keys: &BTreeMap<Vec<u8>, Vec<Entry>>) -> u64 {
    keys.iter().map(|(key, entries)| key_bytes(key) + entries.iter().map(entry_bytes).sum::<u64>()).sum()
}

/// How small compaction can make a store's snapshot, against a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionFit {
    /// The snapshot fits the budget as the store is.
    Fits,
    /// Compacting at this revision (and no lower one) makes it fit.
    At(i64),
    /// Even compacting at the current revision leaves this many bytes:
    /// the live keys alone are larger than the budget.
    Never { bytes: u64 },
}

/// The lowest revision to compact `store` at so that its snapshot takes at
/// most `budget` bytes: compaction drops the oldest history first, so this
/// keeps as much of it as the budget allows. One pass over the history:
/// each entry is dropped by every compaction at or above the revision that
/// supersedes it (the next write of its key; a tombstone by its own), and a
/// key goes once all its entries do.
pub fn compaction_for_size(store: &MvccStore, budget: u64) -> CompactionFit {
    let mut total = fixed_bytes(store);
    // (revision from which compaction drops it, bytes it frees)
    let mut dropped_at: Vec<(i64, u64)> = Vec::new();
    for (key, entries) in &store.keys {
        total += key_bytes(key);
        let mut key_dropped_at = Some(i64::MIN);
        for (position, entry) in entries.iter().enumerate() {
            let bytes = entry_bytes(entry);
            total += bytes;
            let superseded = match (&entry.live, entries.get(position + 1)) {
                (None, _) => Some(entry.revision.main),
                (Some(_), Some(next)) => Some(next.revision.main),
                (Some(_), None) => None,
            };
            match superseded {
                Some(revision) => dropped_at.push((revision, bytes)),
                None => key_dropped_at = None,
            }
            key_dropped_at = key_dropped_at.zip(superseded).map(|(key, entry)| key.max(entry));
        }
        if let Some(revision) = key_dropped_at.filter(|revision| *revision != i64::MIN) {
            dropped_at.push((revision, key_bytes(key)));
        }
    }
    if total <= budget {
        return CompactionFit::Fits;
    }
    dropped_at.sort_unstable();
    let mut left = total;
    for (position, (revision, bytes)) in dropped_at.iter().enumerate() {
        left -= bytes;
        // Everything dropped at one revision goes at once.
        let last_at_revision = dropped_at.get(position + 1).is_none_or(|(next, _)| next != revision);
        if last_at_revision && left <= budget {
            return CompactionFit::At(*revision);
        }
    }
    CompactionFit::Never { bytes: left }
}

/// A fingerprint of the store's whole state for comparing replicas at the
/// same revision: the CRC32C of its snapshot in the low 32 bits, the
/// snapshot's length (mod 2^32) in the high ones. It detects divergence; it
/// is no defence against anyone crafting a collision.
pub fn state_hash(store: &MvccStore) -> u64 {
    let bytes = encode(store);
    let body = &bytes[..bytes.len() - CRC_BYTES];
    ((body.len() as u32 as u64) << 32) | u64::from(crc32c::crc32c(body))
}

/// Decodes a snapshot into a store, refusing anything it cannot trust.
pub fn decode(bytes: &[u8]) -> Result<MvccStore, SnapshotError> {
    if bytes.len() < SNAPSHOT_BYTES_MIN {
        return Err(SnapshotError::TooShort { bytes: bytes.len() });
    }
    let magic = crate::little_endian::u32_at(bytes, 0);
    if magic != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic { found: magic });
    }
    let version = crate::little_endian::u16_at(bytes, 4);
    if version > SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::NewerVersion { found: version, supported: SNAPSHOT_FORMAT_VERSION });
    }
    if version < SNAPSHOT_FORMAT_WITHOUT_AUTH {
        return Err(SnapshotError::UnknownVersion { found: version, supported: SNAPSHOT_FORMAT_VERSION });
    }
    let (body, stored) = bytes.split_at(bytes.len() - CRC_BYTES);
    let stored = crate::little_endian::u32_at(stored, 0);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    let mut reader = Reader { bytes: body, offset: PREAMBLE_BYTES };
    if body[6..8] != [0, 0] {
        return Err(SnapshotError::Malformed { offset: 6, reason: "reserved bytes are not zero".into() });
    }

    let mut header = reader.section(TAG_HEADER, "header")?;
    let revision = header.i64("the revision")?;
    let compact_revision = header.i64("the compact revision")?;
    let next_lease_id = header.i64("the next lease id")?;
    let key_count = header.u64("the key count")?;
    let entry_count = header.u64("the entry count")?;
    let lease_count = header.u64("the lease count")?;
    if !header.done() {
        return Err(header.malformed("the header section has bytes left over").into());
    }

    let mut section = reader.section(TAG_KEYS, "keys")?;
    let mut keys: BTreeMap<Vec<u8>, Vec<Entry>> = BTreeMap::new();
    let mut positions: BTreeMap<Revision, Vec<u8>> = BTreeMap::new();
    while !section.done() {
        let key = section.blob("a key")?;
        if keys.last_key_value().is_some_and(|(last, _)| *last >= key) {
            return Err(section.malformed("keys are not in strictly ascending order").into());
        }
        let entry_total = section.u32("an entry count")?;
        let mut entries = Vec::new();
        for _ in 0..entry_total {
            let revision = Revision { main: section.i64("a revision")?, sub: section.i64("a sub-revision")? };
            let live = match section.u8("an entry kind")? {
                KIND_DELETE => None,
                KIND_PUT => Some(Live {
                    create_revision: section.i64("a create revision")?,
                    version: section.i64("a version")?,
                    lease: section.i64("a lease")?,
                    value: section.blob("a value")?,
                }),
                kind => {
                    return Err(section.malformed(format!("entry kind {kind} is neither 0 nor 1")).into())
                }
            };
            if positions.insert(revision, key.clone()).is_some() {
                return Err(SnapshotError::Inconsistent(format!("two entries at {revision:?}")));
            }
            entries.push(Entry { revision, live });
        }
        keys.insert(key, entries);
    }

    let mut section = reader.section(TAG_LEASES, "leases")?;
    let mut leases = BTreeMap::new();
    while !section.done() {
        let id = section.i64("a lease id")?;
        if leases.last_key_value().is_some_and(|(&last, _)| last >= id) {
            return Err(section.malformed("lease ids are not in strictly ascending order").into());
        }
        let ttl_seconds = section.i64("a lease TTL")?;
        let key_total = section.u32("a lease key count")?;
        let mut lease_keys = BTreeSet::new();
        for _ in 0..key_total {
            let key = section.blob("a lease key")?;
            if lease_keys.last().is_some_and(|last| *last >= key) {
                return Err(section.malformed("lease keys are not in strictly ascending order").into());
            }
            lease_keys.insert(key);
        }
        leases.insert(id, Lease { ttl_seconds, keys: lease_keys });
    }
    let mut auth = crate::kv::auth::AuthState::default();
    if version >= SNAPSHOT_FORMAT_VERSION {
        let mut section = reader.section(TAG_AUTH, "auth")?;
        auth = super::auth::read_state(&mut section)?;
        if !section.done() {
            return Err(section.malformed("the auth section has bytes left over").into());
        }
    }
    if !reader.done() {
        return Err(reader.malformed("bytes follow the last section").into());
    }

    let counted = (keys.len() as u64, positions.len() as u64, leases.len() as u64);
    if counted != (key_count, entry_count, lease_count) {
        return Err(SnapshotError::Inconsistent(format!(
            "the header counts {key_count} keys, {entry_count} entries and {lease_count} leases \
             but the sections hold {} keys, {} entries and {} leases",
            counted.0, counted.1, counted.2
        )));
    }
    let mut store = MvccStore::new();
    store.keys_bytes = keys_bytes(&keys);
    (store.keys, store.positions, store.revision, store.compact_revision) =
        (keys, positions, revision, compact_revision);
    store.leases = LeaseTable { leases, next_id: next_lease_id };
    store.auth = auth;
    store.check_invariants().map_err(SnapshotError::Inconsistent)?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kv::types::{DeleteRangeRequest, PutRequest, RangeRequest};

    /// The revision `compaction_for_size` names is the lowest that brings
    /// the snapshot within the budget: compacting there fits, one lower
    /// does not.
    #[test]
    fn compaction_for_size_finds_the_least_compaction_that_fits() {
        let mut store = MvccStore::new();
        for round in 0..50 {
            for key in ["/a", "/b", "/c"] {
                let value = vec![b'x'; 100 + round];
                store.put(&PutRequest { key: key.into(), value, lease: 0, prev_kv: false }).unwrap();
            }
            if round % 7 == 0 {
                store
                    .delete_range(&DeleteRangeRequest { key: b"/b".to_vec(), ..Default::default() })
                    .unwrap();
            }
        }
        let full = encoded_len(&store);
        assert_eq!(compaction_for_size(&store, full), CompactionFit::Fits);
        for budget in [full - 1, full / 2, full / 5, 2_000] {
            let CompactionFit::At(revision) = compaction_for_size(&store, budget) else {
                panic!("a budget of {budget} of {full} bytes can be met by compaction");
            };
            let mut compacted = store.clone();
            compacted.compact(revision).unwrap();
            assert!(encoded_len(&compacted) <= budget, "compacting at {revision} fits {budget}");
            if revision - 1 > store.compact_revision() {
                let mut less = store.clone();
                less.compact(revision - 1).unwrap();
                assert!(
                    encoded_len(&less) > budget,
                    "compacting at {} would have fitted {budget} too",
                    revision - 1
                );
            }
        }
        let mut all = store.clone();
        all.compact(store.revision()).unwrap();
        let live = encoded_len(&all);
        assert_eq!(compaction_for_size(&store, live - 1), CompactionFit::Never { bytes: live });
    }

    /// A store with every kind of thing a snapshot carries: live and
    /// deleted keys, history below and above a compaction, leases with keys.
    pub(crate) fn sample_store() -> MvccStore {
        let mut store = MvccStore::new();
        let lease = store.lease_grant(0, 60).unwrap().id;
        store.lease_grant(7, 5).unwrap();
        let put = |store: &mut MvccStore, key: &str, value: &str, lease| {
            let request = PutRequest { key: key.into(), value: value.into(), lease, prev_kv: false };
            store.put(&request).unwrap();
        };
        put(&mut store, "/registry/pods/a", "1", 0);
        put(&mut store, "/registry/pods/a", "2", lease);
        put(&mut store, "/registry/pods/b", "1", 0);
        put(&mut store, "binary\x00\u{ff}", "", 7);
        store
            .delete_range(&DeleteRangeRequest { key: b"/registry/pods/b".to_vec(), ..Default::default() })
            .unwrap();
        put(&mut store, "c", "gone at compaction", 0);
        store.delete_range(&DeleteRangeRequest { key: b"c".to_vec(), ..Default::default() }).unwrap();
        store.compact(store.revision()).unwrap();
        put(&mut store, "/registry/pods/a", "3", lease);
        put(&mut store, "/registry/pods/b", "again", 0);
        store.check_invariants().unwrap();
        store
    }

    fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
        let body = bytes.len() - CRC_BYTES;
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// The sample store with users and roles, as group 0's carries them.
    fn store_with_auth() -> MvccStore {
        use crate::kv::auth::{AuthChange, Permission, PermissionKind};
        let mut store = sample_store();
        for change in [
            AuthChange::UserAdd { name: "root".into(), password_hash: Some("$argon2id$v=19$...".into()) },
            AuthChange::UserAdd { name: "cn-user".into(), password_hash: None },
            AuthChange::RoleAdd { name: "root".into() },
            AuthChange::RoleAdd { name: "pods".into() },
            AuthChange::RoleGrantPermission {
                name: "pods".into(),
                permission: Permission {
                    kind: PermissionKind::Read,
                    key: b"/registry/pods/".to_vec(),
                    range_end: b"/registry/pods0".to_vec(),
                },
            },
            AuthChange::UserGrantRole { name: "root".into(), role: "root".into() },
            AuthChange::UserGrantRole { name: "cn-user".into(), role: "pods".into() },
            AuthChange::Enable { token_key: vec![9; crate::kv::auth::TOKEN_KEY_BYTES] },
        ] {
            store.auth_apply(&change).unwrap();
        }
        store
    }

    #[test]
    fn a_store_round_trips_to_an_equal_store_and_the_same_bytes() {
        for store in [MvccStore::new(), sample_store(), store_with_auth()] {
            let bytes = encode(&store);
            assert_eq!(encoded_len(&store), bytes.len() as u64, "the length is known before encoding");
            assert_eq!(store.keys_bytes, keys_bytes(&store.keys), "kept up to date as the store changed");
            let decoded = decode(&bytes).unwrap();
            assert_eq!(encoded_len(&decoded), bytes.len() as u64, "a decoded store knows its length");
            assert_eq!(decoded, store);
            assert_eq!(encode(&decoded), bytes);
            assert_eq!(state_hash(&decoded), state_hash(&store));
        }
        assert_eq!(encode(&MvccStore::new()).len(), SNAPSHOT_BYTES_MIN);
        let version = |store: &MvccStore| crate::little_endian::u16_at(&encode(store), 4);
        assert_eq!(version(&sample_store()), 1, "a store without users keeps the first format");
        assert_eq!(version(&store_with_auth()), SNAPSHOT_FORMAT_VERSION);
        assert_ne!(state_hash(&sample_store()), state_hash(&store_with_auth()));
    }

    #[test]
    fn a_decoded_store_behaves_like_the_original() {
        let mut original = sample_store();
        let mut decoded = decode(&encode(&original)).unwrap();
        for store in [&mut original, &mut decoded] {
            let request = PutRequest {
                key: b"/registry/pods/a".to_vec(),
                value: b"4".to_vec(),
                lease: 1,
                ..Default::default()
            };
            store.put(&request).unwrap();
            store.lease_revoke(7).unwrap();
            store.lease_grant(0, 9).unwrap();
        }
        assert_eq!(encode(&decoded), encode(&original));
        let all = RangeRequest { key: vec![0], range_end: vec![0], ..RangeRequest::default() };
        assert_eq!(decoded.range(&all), original.range(&all));
        assert_eq!(decoded.lease_list(), original.lease_list());
    }

    #[test]
    fn different_states_hash_differently() {
        let store = sample_store();
        let mut changed = store.clone();
        changed.put(&PutRequest { key: b"x".to_vec(), ..Default::default() }).unwrap();
        assert_ne!(state_hash(&store), state_hash(&changed));
    }

    #[test]
    fn a_newer_format_version_is_refused_naming_both_versions() {
        let mut bytes = encode(&sample_store());
        bytes[4..6].copy_from_slice(&(SNAPSHOT_FORMAT_VERSION + 1).to_le_bytes());
        let error = decode(&with_crc(bytes)).unwrap_err();
        assert_eq!(error, SnapshotError::NewerVersion { found: 3, supported: 2 });
        let message = error.to_string();
        assert!(message.contains("version 3") && message.contains("version 2"), "{message}");
    }

    #[test]
    fn foreign_bytes_are_refused_by_magic() {
        let mut bytes = encode(&sample_store());
        bytes[0] = b'X';
        assert!(matches!(decode(&bytes), Err(SnapshotError::BadMagic { .. })));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode(&sample_store());
        for length in 0..bytes.len() {
            let error = decode(&bytes[..length]).unwrap_err();
            assert!(
                matches!(error, SnapshotError::TooShort { .. } | SnapshotError::Checksum { .. }),
                "cut at {length}: {error}"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let bytes = encode(&sample_store());
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&flipped).is_err(), "bit {bit} flipped went unnoticed");
        }
    }

    #[test]
    fn a_well_formed_snapshot_of_an_inconsistent_store_is_refused() {
        let mut store = sample_store();
        store.compact_revision = store.revision + 1;
        assert!(
            matches!(decode(&encode(&store)), Err(SnapshotError::Inconsistent(message)) if message.contains("compact"))
        );
        let mut store = sample_store();
        store.leases.leases.remove(&7);
        let error = decode(&encode(&store)).unwrap_err();
        assert!(error.to_string().contains("lease 7"), "{error}");
        let mut bytes = encode(&sample_store());
        let header_keys = PREAMBLE_BYTES + SECTION_HEADER_BYTES + 24;
        bytes[header_keys] += 1;
        assert!(
            matches!(decode(&with_crc(bytes)), Err(SnapshotError::Inconsistent(message)) if message.contains("header counts"))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(decode(&bytes).is_err());
        }

        /// Damage behind a valid preamble and CRC reaches the parser and the
        /// invariant checks: they refuse it or yield a store that holds.
        #[test]
        fn damaged_bodies_with_a_valid_crc_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = encode(&sample_store());
            let body = bytes.len() - CRC_BYTES;
            for (at, value) in edits {
                let at = PREAMBLE_BYTES + at.index(body - PREAMBLE_BYTES);
                bytes[at] = value;
            }
            if truncate {
                let keep = PREAMBLE_BYTES + cut.index(body - PREAMBLE_BYTES);
                bytes.drain(keep..body);
            }
            if let Ok(store) = decode(&with_crc(bytes)) {
                prop_assert!(store.check_invariants().is_ok());
                let _ = encode(&store);
            }
        }
    }
}
