//! The on-disk record of the shard log: one block-aligned, self-describing,
//! CRC32C-checked record per entry, vote, truncation, purge, wrap, seal or
//! reset.
//!
//! Layout of a record (little-endian), padded with zeroes to whole blocks:
//!
//! ```text
//!  0 magic u32 "NVKL"     4 version u16     6 kind u8       7 flags u8 (0)
//!  8 sequence u64        16 epoch u64      24 durable_before u64
//! 32 group u32           36 blocks u32     40 index u64    48 term u64
//! 56 payload_len u32     60 previous_crc u32
//! 64 log_id u64
//! 72 crc u32             76 reserved u32 (0)
//! 80 payload ...
//! ```
//!
//! `crc` is CRC32C over bytes 0..72 and the payload. `log_id` names the
//! shard log (namespace and shard) that wrote the record, so records left on
//! a device by an earlier format are never taken for this log's own. `previous_crc` chains a
//! record to the one before it, so a stale record left behind by an older
//! write can never pass for the successor of a newer one. `durable_before`
//! says every record with a smaller sequence number was durable when this one
//! was written: recovery uses it to tell a torn tail from corruption in the
//! middle. `epoch` changes at every open, so a rewrite never matches a stale
//! record byte for byte.
//!
//! `version` is the format version that introduced the record's kind (or
//! its current payload), not the version of the build that wrote it:
//! version 1 has every kind but the seal, version 2 adds the seal, version 3
//! adds the committed indexes to the seal's payload, version 4 adds the
//! reset and the seal's list of groups whose loss is known. This build
//! writes seals and resets as version 4 and reads all four. An older build
//! that meets a seal of a version it does not know at the very end of the
//! log takes it for a torn tail and loses no entry, vote or snapshot (a
//! seal holds only what can be learned again: proof, the groups still
//! unproven and those of them whose loss is known, committed indexes); one
//! that meets such a seal with records after it refuses the log as corrupt,
//! naming the version, instead of dropping those records. An older build
//! that meets a reset does the same; one that drops it as a torn tail meets
//! the damaged snapshot it was written for again and stops there, so no
//! build replays a group's entries without their snapshot.
//!
//! This module only encodes and decodes; it never does I/O.

pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"NVKL");
/// The newest record format version this build writes and reads.
pub const RECORD_VERSION: u16 = 4;
/// The oldest record format version this build reads.
pub const RECORD_VERSION_OLDEST: u16 = 1;
pub const HEADER_BYTES: usize = 80;
/// The bytes the CRC covers before the payload.
const CRC_COVERED_HEADER_BYTES: usize = 72;

const _: () = assert!(HEADER_BYTES % 8 == 0);
const _: () = assert!(CRC_COVERED_HEADER_BYTES + 8 == HEADER_BYTES);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A Raft log entry of `group` at `index` and `term`; payload is the entry.
    Entry = 1,
    /// The vote of `group`; payload is the encoded vote.
    Vote = 2,
    /// Removes every entry of `group` at `index` and above.
    Truncate = 3,
    /// Removes every entry of `group` at `index` and below; `term` is the
    /// term of the entry at `index`.
    Purge = 4,
    /// The rest of the ring after this record is unused; the next record is
    /// at the start of the ring.
    Wrap = 5,
    /// Makes the snapshot blob the payload points at (an encoded
    /// `snapshot::SnapshotRef`) the current snapshot of `group`.
    SnapshotRef = 6,
    /// Written when the log goes idle after appends: its `durable_before`
    /// covers every record before it, which proves them durable, so
    /// recovery treats later damage to any of them as corruption rather than
    /// a torn tail. `group`, `index` and `term` are zero; the payload
    /// ([`encode_seal`]) lists the groups that may have lost acknowledged
    /// records in an earlier recovery and have not been brought past that
    /// point since, so the restriction that follows survives a restart, and
    /// (from version 3) the committed index each group knew when the seal
    /// was written, so a restarted member applies its log that far before
    /// it serves a read (12 bytes a group), and (from version 4) which of
    /// the groups that may have lost records are known to have (4 bytes a
    /// group), so they refuse votes whatever the policy for unproven tails
    /// even once the head has passed the records that showed the loss.
    Seal = 7,
    /// Forgets everything of `group` but its vote: its snapshot, its purge
    /// point and its entries. Written by recovery when the group's current
    /// snapshot failed its checksum (the entries after it cannot stand
    /// alone), before the group starts, so a later recovery replays the
    /// records a leader sends to repair it from an empty group. `index` is
    /// the last index the group held before it (the point it lost); the
    /// group refuses votes until a leader has brought it past that point,
    /// after every recovery that replays this record. No payload.
    Reset = 8,
}

impl RecordKind {
    pub fn from_byte(byte: u8) -> Option<RecordKind> {
        Some(match byte {
            1 => RecordKind::Entry,
            2 => RecordKind::Vote,
            3 => RecordKind::Truncate,
            4 => RecordKind::Purge,
            5 => RecordKind::Wrap,
            6 => RecordKind::SnapshotRef,
            7 => RecordKind::Seal,
            8 => RecordKind::Reset,
            _ => return None,
        })
    }

    /// The record format version a record of this kind is written with:
    /// the one that introduced the kind, or its current payload.
    pub fn version(self) -> u16 {
        match self {
            RecordKind::Seal | RecordKind::Reset => 4,
            _ => 1,
        }
    }

    /// Whether a record of this kind may carry `version`: the one it is
    /// written with, or for a seal also versions 2 and 3 (a seal without
    /// committed indexes, or without known losses, which an older build
    /// wrote).
    pub fn reads_version(self, version: u16) -> bool {
        version == self.version() || (self == RecordKind::Seal && (version == 2 || version == 3))
    }
}

/// Bytes of one group in either list of a seal's payload: group u32,
/// index u64.
const SEAL_GROUP_BYTES: usize = 12;

/// What a seal's payload holds (see [`encode_seal`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealPayload {
    /// Per group, the index after which it may have lost entries.
    pub unproven: std::collections::BTreeMap<u32, u64>,
    /// Per group, a committed index it knew when the seal was written
    /// (empty in a version 2 seal).
    pub committed: std::collections::BTreeMap<u32, u64>,
    /// The groups of `unproven` whose loss is known, not merely possible
    /// (empty in a seal of version 3 or older).
    pub known_loss: std::collections::BTreeSet<u32>,
}

/// The payload of a seal: two lists, each a count u32, then per group its
/// id u32 and an index u64, in group order, then (version 4) a count u32
/// and group ids u32 in order. The first list names the groups that may
/// have lost entries, with the index after which they may have; the second
/// (version 3) the committed index of each group; the third (version 4)
/// the groups of the first whose loss is known. A version 3 seal ends after
/// the second list, a version 2 seal after the first (or has nothing: no
/// group).
pub fn encode_seal(
    unproven: &std::collections::BTreeMap<u32, u64>,
    committed: &std::collections::BTreeMap<u32, u64>,
    known_loss: &std::collections::BTreeSet<u32>,
) -> Vec<u8> {
    assert!(
        known_loss.iter().all(|group| unproven.contains_key(group)),
        "a seal's known losses {known_loss:?} must be among its unproven groups {unproven:?}"
    );
    let mut payload =
        Vec::with_capacity(12 + (unproven.len() + committed.len()) * SEAL_GROUP_BYTES + known_loss.len() * 4);
    for list in [unproven, committed] {
        payload.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for (group, index) in list {
            payload.extend_from_slice(&group.to_le_bytes());
            payload.extend_from_slice(&index.to_le_bytes());
        }
    }
    payload.extend_from_slice(&(known_loss.len() as u32).to_le_bytes());
    for group in known_loss {
        payload.extend_from_slice(&group.to_le_bytes());
    }
    payload
}

/// Decodes a seal's payload (see [`encode_seal`]) of any version: an
/// empty payload lists no group, a payload that ends after the first list
/// (version 2) knows no committed index, and one that ends after the second
/// (version 3) no known loss.
pub fn decode_seal(payload: &[u8]) -> Result<SealPayload, DecodeError> {
    let mut seal = SealPayload::default();
    let mut at = 0;
    for list in [&mut seal.unproven, &mut seal.committed] {
        if at == payload.len() {
            break;
        }
        if payload.len() < at + 4 {
            return Err(DecodeError::BadField("seal payload"));
        }
        let count = crate::little_endian::u32_at(payload, at) as usize;
        at += 4;
        let end = count
            .checked_mul(SEAL_GROUP_BYTES)
            .and_then(|bytes| bytes.checked_add(at))
            .filter(|end| *end <= payload.len())
            .ok_or(DecodeError::BadField("seal payload"))?;
        for entry in (at..end).step_by(SEAL_GROUP_BYTES) {
            list.insert(
                crate::little_endian::u32_at(payload, entry),
                crate::little_endian::u64_at(payload, entry + 4),
            );
        }
        at = end;
    }
    if at < payload.len() {
        if payload.len() < at + 4 {
            return Err(DecodeError::BadField("seal payload"));
        }
        let count = crate::little_endian::u32_at(payload, at) as usize;
        at += 4;
        let end = count
            .checked_mul(4)
            .and_then(|bytes| bytes.checked_add(at))
            .filter(|end| *end <= payload.len())
            .ok_or(DecodeError::BadField("seal payload"))?;
        for entry in (at..end).step_by(4) {
            let group = crate::little_endian::u32_at(payload, entry);
            if !seal.unproven.contains_key(&group) {
                return Err(DecodeError::BadField("seal known loss"));
            }
            seal.known_loss.insert(group);
        }
        at = end;
    }
    if at != payload.len() {
        return Err(DecodeError::BadField("seal payload"));
    }
    Ok(seal)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub sequence: u64,
    pub epoch: u64,
    pub durable_before: u64,
    pub group: u32,
    /// Length of the whole record in blocks, header and padding included.
    pub blocks: u32,
    pub index: u64,
    pub term: u64,
    pub payload_len: u32,
    pub previous_crc: u32,
    pub log_id: u64,
}

/// Blocks a record with `payload_len` payload bytes takes.
pub fn record_blocks(payload_len: usize, lba_bytes: usize) -> usize {
    (HEADER_BYTES + payload_len).div_ceil(lba_bytes)
}

/// Encodes `header` and `payload` into `out`, which must be exactly
/// `header.blocks` blocks long and zeroed past the payload. Returns the CRC.
pub fn encode_record(header: &RecordHeader, payload: &[u8], out: &mut [u8]) -> u32 {
    encode_record_as(header, header.kind.version(), payload, out)
}

#[cfg(test)]
/// [`encode_record`] with another format `version`: a record as an older
/// build wrote it.
pub fn encode_record_version(header: &RecordHeader, version: u16, payload: &[u8], out: &mut [u8]) -> u32 {
    encode_record_as(header, version, payload, out)
}

fn encode_record_as(header: &RecordHeader, version: u16, payload: &[u8], out: &mut [u8]) -> u32 {
    assert_eq!(header.payload_len as usize, payload.len(), "record payload length disagrees with its header");
    assert!(out.len() >= HEADER_BYTES + payload.len(), "record buffer too small for its payload");
    out[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    out[4..6].copy_from_slice(&version.to_le_bytes());
    out[6] = header.kind as u8;
    out[7] = 0;
    out[8..16].copy_from_slice(&header.sequence.to_le_bytes());
    out[16..24].copy_from_slice(&header.epoch.to_le_bytes());
    out[24..32].copy_from_slice(&header.durable_before.to_le_bytes());
    out[32..36].copy_from_slice(&header.group.to_le_bytes());
    out[36..40].copy_from_slice(&header.blocks.to_le_bytes());
    out[40..48].copy_from_slice(&header.index.to_le_bytes());
    out[48..56].copy_from_slice(&header.term.to_le_bytes());
    out[56..60].copy_from_slice(&header.payload_len.to_le_bytes());
    out[60..64].copy_from_slice(&header.previous_crc.to_le_bytes());
    out[64..72].copy_from_slice(&header.log_id.to_le_bytes());
    out[HEADER_BYTES..HEADER_BYTES + payload.len()].copy_from_slice(payload);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..CRC_COVERED_HEADER_BYTES]), payload);
    out[72..76].copy_from_slice(&crc.to_le_bytes());
    out[76..80].copy_from_slice(&0u32.to_le_bytes());
    crc
}

/// Why bytes read back are not the structure nvkv wrote: a log record, a
/// superblock copy, a checkpoint slot, a snapshot reference or a snapshot
/// blob. Every on-disk decoder returns it, so recovery and its tests branch
/// on the kind of damage, not on words of a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a record at all (no magic): unused space, or garbage.
    #[error("no record magic")]
    NoMagic,
    /// A record of a format version this build does not know.
    #[error(
        "record format version {0}, this build reads versions {RECORD_VERSION_OLDEST} to {RECORD_VERSION}"
    )]
    UnknownVersion(u16),
    /// Magic present but a field is impossible.
    #[error("impossible value in field {0}")]
    BadField(&'static str),
    /// The header names more bytes than were given.
    #[error("record needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    /// The CRC does not match: a torn or corrupted record.
    #[error("CRC32C stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// Fewer bytes than the structure's fixed part.
    #[error("{what} of {available} bytes is too small ({needed} needed)")]
    TooShort { what: Structure, needed: usize, available: usize },
    /// A structure of a format version this build does not read.
    #[error("{what} format version {found}, this build of nvkv reads {}", versions(.reads))]
    Version { what: Structure, found: u32, reads: &'static [u32] },
    /// A checksum over the structure (or a part of it) does not match.
    #[error("{what} CRC32C stored {stored:#010x}, computed {computed:#010x}")]
    Crc { what: Structure, stored: u32, computed: u32 },
    /// A count or length field larger than the structure holds.
    #[error("{what} names {count} {field}, more than the {max} it holds")]
    TooMany { what: Structure, field: &'static str, count: u64, max: u64 },
    /// A snapshot blob that is not the one its reference points at.
    #[error(
        "snapshot blob holds (group, index, term, bytes, log) {found:?}, its reference expects {expected:?}"
    )]
    WrongBlob { found: BlobIdentity, expected: BlobIdentity },
}

/// A snapshot blob's (group, index, term, data bytes, log id).
pub type BlobIdentity = (u32, u64, u64, u64, u64);

/// The on-disk structures a [`DecodeError`] can be about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    Superblock,
    Checkpoint,
    SnapshotRef,
    SnapshotHeader,
    SnapshotData,
}

impl std::fmt::Display for Structure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Structure::Superblock => "superblock copy",
            Structure::Checkpoint => "checkpoint slot",
            Structure::SnapshotRef => "snapshot reference",
            Structure::SnapshotHeader => "snapshot blob header",
            Structure::SnapshotData => "snapshot data",
        })
    }
}

/// "version 1" or "versions 1 and 2".
fn versions(reads: &[u32]) -> String {
    match reads {
        [only] => format!("version {only}"),
        [first @ .., last] => {
            let first: Vec<String> = first.iter().map(u32::to_string).collect();
            format!("versions {} and {last}", first.join(", "))
        }
        [] => "no version".to_string(),
    }
}

/// Decodes the header at the start of `bytes` without checking the CRC
/// (the payload may not have been read yet).
pub fn decode_header(bytes: &[u8], lba_bytes: usize) -> Result<RecordHeader, DecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::Truncated { needed: HEADER_BYTES, available: bytes.len() });
    }
    let u32_at = |offset: usize| crate::little_endian::u32_at(bytes, offset);
    let u64_at = |offset: usize| crate::little_endian::u64_at(bytes, offset);
    if u32_at(0) != RECORD_MAGIC {
        return Err(DecodeError::NoMagic);
    }
    let version = crate::little_endian::u16_at(bytes, 4);
    if !(RECORD_VERSION_OLDEST..=RECORD_VERSION).contains(&version) {
        return Err(DecodeError::UnknownVersion(version));
    }
    let kind = RecordKind::from_byte(bytes[6]).ok_or(DecodeError::BadField("kind"))?;
    if !kind.reads_version(version) {
        // A kind is always written with the version that introduced it (or
        // its payload): any other pairing is damage.
        return Err(DecodeError::BadField("version"));
    }
    let header = RecordHeader {
        kind,
        sequence: u64_at(8),
        epoch: u64_at(16),
        durable_before: u64_at(24),
        group: u32_at(32),
        blocks: u32_at(36),
        index: u64_at(40),
        term: u64_at(48),
        payload_len: u32_at(56),
        previous_crc: u32_at(60),
        log_id: u64_at(64),
    };
    if bytes[7] != 0 || u32_at(76) != 0 {
        return Err(DecodeError::BadField("reserved"));
    }
    if header.blocks == 0 {
        return Err(DecodeError::BadField("blocks"));
    }
    if kind != RecordKind::Wrap
        && record_blocks(header.payload_len as usize, lba_bytes) != header.blocks as usize
    {
        return Err(DecodeError::BadField("payload_len"));
    }
    if header.durable_before > header.sequence {
        return Err(DecodeError::BadField("durable_before"));
    }
    Ok(header)
}

/// The stored CRC of the record at the start of `bytes`.
pub fn stored_crc(bytes: &[u8]) -> u32 {
    crate::little_endian::u32_at(bytes, 72)
}

/// Decodes and checks a whole record. `bytes` must hold at least the
/// record's blocks. Returns the header, the payload and the CRC.
pub fn decode_record(bytes: &[u8], lba_bytes: usize) -> Result<(RecordHeader, &[u8], u32), DecodeError> {
    let header = decode_header(bytes, lba_bytes)?;
    let needed = HEADER_BYTES + header.payload_len as usize;
    if bytes.len() < needed {
        return Err(DecodeError::Truncated { needed, available: bytes.len() });
    }
    let payload = &bytes[HEADER_BYTES..needed];
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[..CRC_COVERED_HEADER_BYTES]), payload);
    let stored = stored_crc(bytes);
    if stored != computed {
        return Err(DecodeError::CrcMismatch { stored, computed });
    }
    Ok((header, payload, stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: usize) -> RecordHeader {
        RecordHeader {
            kind: RecordKind::Entry,
            sequence: 42,
            epoch: 7,
            durable_before: 40,
            group: 3,
            blocks: record_blocks(payload_len, 4096) as u32,
            index: 1000,
            term: 5,
            payload_len: payload_len as u32,
            previous_crc: 0xdead_beef,
            log_id: 0x1234_5678_9abc_def0,
        }
    }

    #[test]
    fn round_trip() {
        let payload = vec![9u8; 5000];
        let header = header(payload.len());
        let mut bytes = vec![0u8; header.blocks as usize * 4096];
        let crc = encode_record(&header, &payload, &mut bytes);
        let (decoded, decoded_payload, decoded_crc) = decode_record(&bytes, 4096).expect("decodes");
        assert_eq!(decoded, header);
        assert_eq!(decoded_payload, &payload[..]);
        assert_eq!(decoded_crc, crc);
        assert_eq!(header.blocks, 2);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let payload = b"hello".to_vec();
        let header = header(payload.len());
        let mut bytes = vec![0u8; 4096];
        encode_record(&header, &payload, &mut bytes);
        for position in 0..HEADER_BYTES + payload.len() {
            let mut corrupted = bytes.clone();
            corrupted[position] ^= 0x40;
            assert!(decode_record(&corrupted, 4096).is_err(), "flip at byte {position} went unnoticed");
        }
    }

    #[test]
    fn a_seal_is_version_4_reads_versions_2_and_3_and_other_kinds_stay_version_1() {
        let mut bytes = vec![0u8; 4096];
        encode_record(&header(0), &[], &mut bytes);
        assert_eq!(crate::little_endian::u16_at(&bytes, 4), 1, "an entry reads the same in an older build");
        let seal = RecordHeader { kind: RecordKind::Seal, group: 0, index: 0, term: 0, ..header(0) };
        encode_record(&seal, &[], &mut bytes);
        assert_eq!(crate::little_endian::u16_at(&bytes, 4), 4);
        assert_eq!(decode_record(&bytes, 4096).expect("a seal decodes").0, seal);
        for older in [2, 3] {
            encode_record_version(&seal, older, &[], &mut bytes);
            assert_eq!(decode_record(&bytes, 4096).expect("an older build's seal decodes").0, seal);
        }
        let reset = RecordHeader { kind: RecordKind::Reset, ..header(0) };
        encode_record(&reset, &[], &mut bytes);
        assert_eq!(crate::little_endian::u16_at(&bytes, 4), 4);
        assert_eq!(decode_record(&bytes, 4096).expect("a reset decodes").0, reset);
        encode_record_version(&reset, 3, &[], &mut bytes);
        assert_eq!(decode_header(&bytes, 4096), Err(DecodeError::BadField("version")), "resets came in 4");
        encode_record_version(&seal, 1, &[], &mut bytes);
        assert_eq!(decode_header(&bytes, 4096), Err(DecodeError::BadField("version")));
        encode_record_version(&header(0), 3, &[], &mut bytes);
        assert_eq!(
            decode_header(&bytes, 4096),
            Err(DecodeError::BadField("version")),
            "entries stay version 1"
        );
    }

    #[test]
    fn a_seal_payload_round_trips_and_a_wrong_length_is_refused() {
        let unproven = std::collections::BTreeMap::from([(0, 7), (3, 0), (9, u64::MAX)]);
        let committed = std::collections::BTreeMap::from([(0, 12), (4, 99)]);
        let known_loss = std::collections::BTreeSet::from([3, 9]);
        let payload = encode_seal(&unproven, &committed, &known_loss);
        assert_eq!(
            decode_seal(&payload),
            Ok(SealPayload { unproven: unproven.clone(), committed: committed.clone(), known_loss })
        );
        assert_eq!(decode_seal(&[]), Ok(SealPayload::default()));
        let none_known = encode_seal(&unproven, &committed, &Default::default());
        assert_eq!(
            decode_seal(&none_known[..none_known.len() - 4]),
            Ok(SealPayload { unproven: unproven.clone(), committed, known_loss: Default::default() }),
            "a version 3 seal (no third list) knows no loss"
        );
        let mut stranger = encode_seal(&unproven, &Default::default(), &Default::default());
        let at = stranger.len() - 4;
        stranger[at..].copy_from_slice(&1u32.to_le_bytes());
        stranger.extend_from_slice(&5u32.to_le_bytes());
        assert_eq!(
            decode_seal(&stranger),
            Err(DecodeError::BadField("seal known loss")),
            "a known loss of a group not listed unproven"
        );
        for cut in [1, 4, 6] {
            assert_eq!(
                decode_seal(&payload[..payload.len() - cut]),
                Err(DecodeError::BadField("seal payload")),
                "cut by {cut}"
            );
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(decode_seal(&longer), Err(DecodeError::BadField("seal payload")));
    }

    #[test]
    fn a_version_2_seal_payload_knows_no_committed_index() {
        // What an older build wrote: the count, then the unproven groups.
        let mut payload = 1u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&5u32.to_le_bytes());
        payload.extend_from_slice(&40u64.to_le_bytes());
        let seal = decode_seal(&payload).expect("an older build's seal payload decodes");
        assert_eq!(seal.unproven, std::collections::BTreeMap::from([(5, 40)]));
        assert!(seal.committed.is_empty());
    }

    #[test]
    fn zeroes_are_not_a_record() {
        assert_eq!(decode_header(&[0u8; 4096], 4096), Err(DecodeError::NoMagic));
    }

    #[test]
    fn a_newer_version_is_named() {
        let payload = b"x".to_vec();
        let mut bytes = vec![0u8; 4096];
        encode_record(&header(1), &payload, &mut bytes);
        bytes[4] = 9;
        assert_eq!(decode_header(&bytes, 4096), Err(DecodeError::UnknownVersion(9)));
    }
}
