//! The checkpoint of a shard log: where the live part of the ring starts and
//! the per-group state folded out of the records before it (vote, purge
//! point). Two slots per shard, written alternately with a growing
//! generation, so a torn checkpoint write always leaves the previous one.
//!
//! Layout (little-endian), padded with zeroes to the slot size:
//!
//! ```text
//!  0 magic u64 "NVKVCKPT"   8 version u32   12 shard u32   16 generation u64
//! 24 head_offset u64 (blocks into the ring)  32 head_sequence u64
//! 40 head_previous_crc u32  44 group_count u32
//! 48 groups: group_count × 128 bytes
//!      0 group u32  4 flags u8 (1 vote, 2 purged, 4 snapshot)  5 vote_len u8  6 zero u16
//!      8 purged_index u64  16 purged_term u64  24 vote [u8; 64]
//!     88 snapshot reference (40 bytes, see `snapshot::SnapshotRef`)
//! then crc u32: CRC32C of everything before it
//! ```
//!
//! This module only encodes and decodes; it never does I/O.

use super::format::{DecodeError, Structure};
use super::snapshot::{SnapshotRef, REF_BYTES};

pub const CHECKPOINT_MAGIC: u64 = u64::from_le_bytes(*b"NVKVCKPT");
pub const CHECKPOINT_VERSION: u32 = 1;
pub const VOTE_BYTES_MAX: usize = 64;
const FIXED_BYTES: usize = 48;
const GROUP_BYTES: usize = 128;
const FLAG_VOTE: u8 = 1;
const FLAG_PURGED: u8 = 2;
const FLAG_SNAPSHOT: u8 = 4;
const SNAPSHOT_AT: usize = 24 + VOTE_BYTES_MAX;

const _: () = assert!(GROUP_BYTES == SNAPSHOT_AT + REF_BYTES);
const _: () = assert!(VOTE_BYTES_MAX <= u8::MAX as usize);

/// Bytes of one checkpoint slot that holds up to `groups_max` groups.
pub fn slot_bytes(groups_max: u32) -> usize {
    FIXED_BYTES + groups_max as usize * GROUP_BYTES + 4
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupCheckpoint {
    pub group: u32,
    pub vote: Option<Vec<u8>>,
    /// The last purged entry (index, term).
    pub purged: Option<(u64, u64)>,
    /// The group's current snapshot.
    pub snapshot: Option<SnapshotRef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub shard: u32,
    pub generation: u64,
    pub head_offset: u64,
    pub head_sequence: u64,
    pub head_previous_crc: u32,
    pub groups: Vec<GroupCheckpoint>,
}

impl Checkpoint {
    /// The checkpoint of an empty, just formatted shard log.
    pub fn empty(shard: u32) -> Checkpoint {
        Checkpoint {
            shard,
            generation: 1,
            head_offset: 0,
            head_sequence: 1,
            head_previous_crc: 0,
            groups: Vec::new(),
        }
    }

    /// Encodes into `out` (one slot, zeroed). Fails if the groups do not fit.
    pub fn encode(&self, out: &mut [u8]) -> Result<(), String> {
        let needed = FIXED_BYTES + self.groups.len() * GROUP_BYTES + 4;
        if needed > out.len() {
            return Err(format!(
                "checkpoint of shard {} has {} groups, the slot of {} bytes holds {}",
                self.shard,
                self.groups.len(),
                out.len(),
                (out.len() - FIXED_BYTES - 4) / GROUP_BYTES
            ));
        }
        out[0..8].copy_from_slice(&CHECKPOINT_MAGIC.to_le_bytes());
        out[8..12].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.shard.to_le_bytes());
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..32].copy_from_slice(&self.head_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.head_sequence.to_le_bytes());
        out[40..44].copy_from_slice(&self.head_previous_crc.to_le_bytes());
        out[44..48].copy_from_slice(&(self.groups.len() as u32).to_le_bytes());
        for (position, group) in self.groups.iter().enumerate() {
            let at = FIXED_BYTES + position * GROUP_BYTES;
            let slot = &mut out[at..at + GROUP_BYTES];
            slot[0..4].copy_from_slice(&group.group.to_le_bytes());
            let mut flags = 0;
            if let Some(vote) = &group.vote {
                if vote.len() > VOTE_BYTES_MAX {
                    return Err(format!(
                        "vote of group {} is {} bytes, at most {VOTE_BYTES_MAX}",
                        group.group,
                        vote.len()
                    ));
                }
                flags |= FLAG_VOTE;
                slot[5] = vote.len() as u8;
                slot[24..24 + vote.len()].copy_from_slice(vote);
            }
            if let Some((index, term)) = group.purged {
                flags |= FLAG_PURGED;
                slot[8..16].copy_from_slice(&index.to_le_bytes());
                slot[16..24].copy_from_slice(&term.to_le_bytes());
            }
            if let Some(reference) = &group.snapshot {
                flags |= FLAG_SNAPSHOT;
                reference.encode(&mut slot[SNAPSHOT_AT..SNAPSHOT_AT + REF_BYTES]);
            }
            slot[4] = flags;
        }
        let crc_at = FIXED_BYTES + self.groups.len() * GROUP_BYTES;
        let crc = crc32c::crc32c(&out[..crc_at]);
        out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Decodes a slot. `Ok(None)` for a slot never written (no magic).
    pub fn decode(bytes: &[u8]) -> Result<Option<Checkpoint>, DecodeError> {
        const WHAT: Structure = Structure::Checkpoint;
        if bytes.len() < FIXED_BYTES + 4 {
            return Err(DecodeError::TooShort {
                what: WHAT,
                needed: FIXED_BYTES + 4,
                available: bytes.len(),
            });
        }
        let u32_at = |offset: usize| crate::little_endian::u32_at(bytes, offset);
        let u64_at = |offset: usize| crate::little_endian::u64_at(bytes, offset);
        if u64_at(0) != CHECKPOINT_MAGIC {
            return Ok(None);
        }
        let version = u32_at(8);
        if version != CHECKPOINT_VERSION {
            return Err(DecodeError::Version { what: WHAT, found: version, reads: &[CHECKPOINT_VERSION] });
        }
        let group_count = u32_at(44) as usize;
        let crc_at = FIXED_BYTES + group_count.saturating_mul(GROUP_BYTES);
        if crc_at + 4 > bytes.len() {
            let max = (bytes.len() - FIXED_BYTES - 4) / GROUP_BYTES;
            return Err(DecodeError::TooMany {
                what: WHAT,
                field: "groups",
                count: group_count as u64,
                max: max as u64,
            });
        }
        let stored = u32_at(crc_at);
        let computed = crc32c::crc32c(&bytes[..crc_at]);
        if stored != computed {
            return Err(DecodeError::Crc { what: WHAT, stored, computed });
        }
        let mut groups = Vec::with_capacity(group_count);
        for position in 0..group_count {
            let at = FIXED_BYTES + position * GROUP_BYTES;
            let slot = &bytes[at..at + GROUP_BYTES];
            let flags = slot[4];
            let vote_len = slot[5] as usize;
            if vote_len > VOTE_BYTES_MAX {
                return Err(DecodeError::TooMany {
                    what: WHAT,
                    field: "vote bytes",
                    count: vote_len as u64,
                    max: VOTE_BYTES_MAX as u64,
                });
            }
            groups.push(GroupCheckpoint {
                group: crate::little_endian::u32_at(slot, 0),
                vote: (flags & FLAG_VOTE != 0).then(|| slot[24..24 + vote_len].to_vec()),
                purged: (flags & FLAG_PURGED != 0)
                    .then(|| (crate::little_endian::u64_at(slot, 8), crate::little_endian::u64_at(slot, 16))),
                snapshot: match flags & FLAG_SNAPSHOT {
                    0 => None,
                    _ => Some(SnapshotRef::decode(&slot[SNAPSHOT_AT..SNAPSHOT_AT + REF_BYTES])?),
                },
            });
        }
        Ok(Some(Checkpoint {
            shard: u32_at(12),
            generation: u64_at(16),
            head_offset: u64_at(24),
            head_sequence: u64_at(32),
            head_previous_crc: u32_at(40),
            groups,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            shard: 2,
            generation: 9,
            head_offset: 123,
            head_sequence: 4567,
            head_previous_crc: 0xabcd,
            groups: vec![
                GroupCheckpoint {
                    group: 2,
                    vote: Some(vec![1, 2, 3]),
                    purged: Some((10, 3)),
                    snapshot: Some(SnapshotRef { offset: 4, bytes: 5000, index: 10, term: 3, crc: 9 }),
                },
                GroupCheckpoint { group: 6, vote: None, purged: None, snapshot: None },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let mut slot = vec![0u8; slot_bytes(4)];
        sample().encode(&mut slot).expect("fits");
        assert_eq!(Checkpoint::decode(&slot).expect("valid"), Some(sample()));
    }

    #[test]
    fn a_flipped_byte_is_refused() {
        let mut slot = vec![0u8; slot_bytes(4)];
        sample().encode(&mut slot).expect("fits");
        slot[30] ^= 1;
        assert!(matches!(
            Checkpoint::decode(&slot),
            Err(DecodeError::Crc { what: Structure::Checkpoint, .. })
        ));
    }

    #[test]
    fn an_unwritten_slot_is_none() {
        assert_eq!(Checkpoint::decode(&[0u8; 4096]).expect("decodes"), None);
    }

    #[test]
    fn too_many_groups_are_refused() {
        let mut slot = vec![0u8; slot_bytes(1)];
        assert!(sample().encode(&mut slot).unwrap_err().contains("2 groups"));
    }
}
