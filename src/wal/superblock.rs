//! The superblock: what a namespace holds and where each shard's log lives.
//! Two copies, at bytes 0 and 4096, each with its CRC; the one with the
//! higher generation wins and a damaged copy is rewritten from the other.
//!
//! Layout of the namespace:
//!
//! ```text
//! [superblock A | superblock B | shard 0 region | shard 1 region | ...]
//! shard region: [checkpoint slot A | checkpoint slot B | snapshot area | ring of records]
//! ```
//!
//! Layout of a superblock copy (little-endian), version 2:
//!
//! ```text
//!  0 magic u64 "NVKVSUPR"  8 version u32  12 lba_bytes u32
//! 16 capacity_blocks u64  24 namespace_id [u8; 16]  40 generation u64
//! 48 shards u32  52 groups_per_shard_max u32  56 checkpoint_blocks u32
//! 60 zero u32  64 first_region_block u64  72 region_blocks u64
//! 80 snapshot_blocks u64 (per shard)
//! 88 member_id u64 (0: not yet known)  96 cluster_id [u8; 16] (zeroes: none yet)
//! 112 peer_count u32  116 flags u32 (bit 0: bootstrapped blind)
//! 120 peers: peer_count x (member_id u64, namespace_id [u8; 16])
//! then crc u32: CRC32C of every byte before it
//! ```
//!
//! Version 1 ended at byte 88 with its CRC there; it is read as a namespace
//! whose member, cluster and peers are not known yet, and the next write
//! makes it version 2. Builds before the flags wrote zero at byte 116 and
//! ignore it on read (so such a build forgets the flags when it writes).
//!
//! The identity part says whose data this is: the member that formatted it,
//! the cluster it belongs to (fixed when the member first joins one), and,
//! for every peer this member has met, the namespace that peer had. A peer
//! whose namespace changed while it is still a voter lost its data: it
//! remembers none of its votes and acknowledged entries, and is refused (see
//! `rpc::peer`).
//!
//! The format is the same on a file, a raw block device and an SPDK
//! namespace.

use std::sync::{Arc, Mutex, MutexGuard};

use super::checkpoint::{self, Checkpoint};
use super::format::{DecodeError, Structure};
use super::{blocking, WalError};
use crate::nvme::{Namespace, QueuePair, QueuePairConfig};

pub const SUPERBLOCK_MAGIC: u64 = u64::from_le_bytes(*b"NVKVSUPR");
pub const SUPERBLOCK_VERSION: u32 = 2;
/// The version before the identity part.
const SUPERBLOCK_VERSION_1: u32 = 1;
/// Bytes reserved for each superblock copy; the largest LBA size we accept.
pub const SUPERBLOCK_BYTES: usize = 4096;
/// Version 1's length, CRC included: the least a copy holds.
const ENCODED_BYTES: usize = 92;
const IDENTITY_AT: usize = 88;
const PEERS_AT: usize = 120;
const PEER_BYTES: usize = 24;
/// Bit of the identity's flags (byte 116): see [`Identity::bootstrapped_blind`].
const FLAG_BOOTSTRAPPED_BLIND: u32 = 1;
/// Peers the superblock remembers; a member meets at most the members its
/// cluster has had, and the cluster lists at most nine at once.
pub const PEERS_MAX: usize = 128;
const _: () = assert!(PEERS_AT + PEERS_MAX * PEER_BYTES + 4 <= 512 * 8, "the peers fit a copy");
const _: () = assert!(PEERS_AT + PEERS_MAX * PEER_BYTES + 4 <= SUPERBLOCK_BYTES);
/// A shard's snapshot area is this fraction of what its checkpoints leave.
const SNAPSHOT_AREA_DIVISOR: u64 = 4;
/// The smallest ring a shard may have, in bytes.
pub const RING_BYTES_MIN: u64 = 1 << 20;

const _: () = assert!(ENCODED_BYTES <= 512, "a superblock copy must fit the smallest LBA");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub lba_bytes: u32,
    pub capacity_blocks: u64,
    pub namespace_id: [u8; 16],
    pub generation: u64,
    pub shards: u32,
    pub groups_per_shard_max: u32,
    pub checkpoint_blocks: u32,
    pub first_region_block: u64,
    pub region_blocks: u64,
    pub snapshot_blocks: u64,
    pub identity: Identity,
}

/// Whose data a namespace holds (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The member that formatted it; 0 when formatted by a tool or by a
    /// version that did not say.
    pub member_id: u64,
    /// The cluster it belongs to; zeroes until it joins one.
    pub cluster_id: [u8; 16],
    /// Every peer met, with the namespace it had, in the order they were met.
    pub peers: Vec<(u64, [u8; 16])>,
    /// This member bootstrapped its cluster while no peer answered: it
    /// cannot tell a new cluster from one it lost its data in, so a peer
    /// that calls it wiped stops it (`rpc::incarnation::Halt`), also after
    /// a restart. Cleared when it learns its cluster from a peer.
    pub bootstrapped_blind: bool,
}

impl Identity {
    /// The namespace `member` had when this member last met it.
    pub fn peer_namespace(&self, member: u64) -> Option<[u8; 16]> {
        self.peers.iter().find(|(id, _)| *id == member).map(|(_, namespace)| *namespace)
    }

    /// Remembers that `member` has `namespace` now; the oldest peer is
    /// forgotten once more than [`PEERS_MAX`] were met.
    pub fn meet(&mut self, member: u64, namespace: [u8; 16]) {
        self.peers.retain(|(id, _)| *id != member);
        self.peers.push((member, namespace));
        let excess = self.peers.len().saturating_sub(PEERS_MAX);
        self.peers.drain(..excess);
    }
}

/// A 16-byte id as people read it.
pub fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Where one shard's log lives on the namespace, in blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardRegion {
    pub shard: u32,
    /// Written into every record of this shard's log, so that records of
    /// another namespace or shard (an earlier format of the same device)
    /// are never read as this log's.
    pub log_id: u64,
    pub first_block: u64,
    pub blocks: u64,
    pub checkpoint_blocks: u32,
    pub snapshot_blocks: u64,
    pub groups_max: u32,
}

impl ShardRegion {
    pub fn checkpoint_slot_lba(&self, slot: usize) -> u64 {
        self.first_block + slot as u64 * u64::from(self.checkpoint_blocks)
    }

    pub fn snapshot_first_block(&self) -> u64 {
        self.first_block + 2 * u64::from(self.checkpoint_blocks)
    }

    pub fn ring_first_block(&self) -> u64 {
        self.snapshot_first_block() + self.snapshot_blocks
    }

    pub fn ring_blocks(&self) -> u64 {
        self.blocks - 2 * u64::from(self.checkpoint_blocks) - self.snapshot_blocks
    }
}

/// What a new namespace is formatted with.
#[derive(Clone, Copy, Debug, Default)]
pub struct FormatOptions {
    pub shards: u32,
    pub groups_per_shard_max: u32,
    /// The member formatting it (0: a tool or a test).
    pub member_id: u64,
}

impl Superblock {
    /// Lays out `shards` regions over a namespace.
    pub fn plan(
        lba_bytes: u32,
        capacity_blocks: u64,
        options: FormatOptions,
    ) -> Result<Superblock, WalError> {
        if !lba_bytes.is_power_of_two() || !(512..=SUPERBLOCK_BYTES as u32).contains(&lba_bytes) {
            return Err(WalError::Layout(format!(
                "LBA size {lba_bytes} is not supported: nvkv needs a power of two from 512 to {SUPERBLOCK_BYTES}"
            )));
        }
        if options.shards == 0 {
            return Err(WalError::Layout("a namespace needs at least one shard".into()));
        }
        let checkpoint_blocks =
            checkpoint::slot_bytes(options.groups_per_shard_max).div_ceil(lba_bytes as usize) as u32;
        let first_region_block = (2 * SUPERBLOCK_BYTES / lba_bytes as usize) as u64;
        let region_blocks = capacity_blocks.saturating_sub(first_region_block) / u64::from(options.shards);
        let ring_blocks_min = RING_BYTES_MIN / u64::from(lba_bytes);
        let after_checkpoints = region_blocks.saturating_sub(2 * u64::from(checkpoint_blocks));
        let snapshot_blocks = after_checkpoints / SNAPSHOT_AREA_DIVISOR;
        if after_checkpoints - snapshot_blocks < ring_blocks_min {
            let needed = (first_region_block
                + u64::from(options.shards)
                    * (2 * u64::from(checkpoint_blocks)
                        + ring_blocks_min * SNAPSHOT_AREA_DIVISOR / (SNAPSHOT_AREA_DIVISOR - 1)
                        + 1))
                * u64::from(lba_bytes);
            return Err(WalError::Layout(format!(
                "the namespace of {} bytes is too small for {} shards: it needs at least {needed} bytes \
                 (a {RING_BYTES_MIN}-byte ring per shard); make namespace_bytes larger or use fewer shards",
                capacity_blocks * u64::from(lba_bytes),
                options.shards
            )));
        }
        Ok(Superblock {
            lba_bytes,
            capacity_blocks,
            namespace_id: new_namespace_id(),
            generation: 1,
            shards: options.shards,
            groups_per_shard_max: options.groups_per_shard_max,
            checkpoint_blocks,
            first_region_block,
            region_blocks,
            snapshot_blocks,
            identity: Identity { member_id: options.member_id, ..Identity::default() },
        })
    }

    pub fn region(&self, shard: u32) -> ShardRegion {
        assert!(shard < self.shards, "shard {shard} of a namespace with {} shards", self.shards);
        let namespace_bits = crate::little_endian::u64_at(&self.namespace_id, 0);
        ShardRegion {
            shard,
            log_id: namespace_bits ^ u64::from(shard).rotate_right(8) ^ u64::from(shard),
            first_block: self.first_region_block + u64::from(shard) * self.region_blocks,
            blocks: self.region_blocks,
            checkpoint_blocks: self.checkpoint_blocks,
            snapshot_blocks: self.snapshot_blocks,
            groups_max: self.groups_per_shard_max,
        }
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&SUPERBLOCK_MAGIC.to_le_bytes());
        out[8..12].copy_from_slice(&SUPERBLOCK_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.lba_bytes.to_le_bytes());
        out[16..24].copy_from_slice(&self.capacity_blocks.to_le_bytes());
        out[24..40].copy_from_slice(&self.namespace_id);
        out[40..48].copy_from_slice(&self.generation.to_le_bytes());
        out[48..52].copy_from_slice(&self.shards.to_le_bytes());
        out[52..56].copy_from_slice(&self.groups_per_shard_max.to_le_bytes());
        out[56..60].copy_from_slice(&self.checkpoint_blocks.to_le_bytes());
        out[60..64].copy_from_slice(&0u32.to_le_bytes());
        out[64..72].copy_from_slice(&self.first_region_block.to_le_bytes());
        out[72..80].copy_from_slice(&self.region_blocks.to_le_bytes());
        out[80..88].copy_from_slice(&self.snapshot_blocks.to_le_bytes());
        let identity = &self.identity;
        assert!(identity.peers.len() <= PEERS_MAX, "the superblock keeps {PEERS_MAX} peers");
        out[IDENTITY_AT..IDENTITY_AT + 8].copy_from_slice(&identity.member_id.to_le_bytes());
        out[96..112].copy_from_slice(&identity.cluster_id);
        out[112..116].copy_from_slice(&(identity.peers.len() as u32).to_le_bytes());
        out[116..120].copy_from_slice(&u32::from(identity.bootstrapped_blind).to_le_bytes());
        let mut at = PEERS_AT;
        for (member, namespace) in &identity.peers {
            out[at..at + 8].copy_from_slice(&member.to_le_bytes());
            out[at + 8..at + PEER_BYTES].copy_from_slice(namespace);
            at += PEER_BYTES;
        }
        let crc = crc32c::crc32c(&out[..at]);
        out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// `Ok(None)` when the bytes hold no superblock (never written).
    pub fn decode(bytes: &[u8]) -> Result<Option<Superblock>, DecodeError> {
        const WHAT: Structure = Structure::Superblock;
        if bytes.len() < ENCODED_BYTES {
            return Err(DecodeError::TooShort { what: WHAT, needed: ENCODED_BYTES, available: bytes.len() });
        }
        let u32_at = |offset: usize| crate::little_endian::u32_at(bytes, offset);
        let u64_at = |offset: usize| crate::little_endian::u64_at(bytes, offset);
        if u64_at(0) != SUPERBLOCK_MAGIC {
            return Ok(None);
        }
        let version = u32_at(8);
        let crc_at = match version {
            SUPERBLOCK_VERSION_1 => IDENTITY_AT,
            SUPERBLOCK_VERSION => {
                let peers = u32_at(112) as usize;
                if bytes.len() < PEERS_AT + 4 {
                    return Err(DecodeError::TooShort {
                        what: WHAT,
                        needed: PEERS_AT + 4,
                        available: bytes.len(),
                    });
                }
                let room = ((bytes.len() - PEERS_AT - 4) / PEER_BYTES).min(PEERS_MAX);
                if peers > room {
                    return Err(DecodeError::TooMany {
                        what: WHAT,
                        field: "peers",
                        count: peers as u64,
                        max: room as u64,
                    });
                }
                PEERS_AT + peers * PEER_BYTES
            }
            _ => {
                return Err(DecodeError::Version {
                    what: WHAT,
                    found: version,
                    reads: &[SUPERBLOCK_VERSION_1, SUPERBLOCK_VERSION],
                })
            }
        };
        let stored = u32_at(crc_at);
        let computed = crc32c::crc32c(&bytes[..crc_at]);
        if stored != computed {
            return Err(DecodeError::Crc { what: WHAT, stored, computed });
        }
        let identity = match version {
            SUPERBLOCK_VERSION_1 => Identity::default(),
            _ => Identity {
                member_id: u64_at(IDENTITY_AT),
                cluster_id: bytes[96..112].try_into().expect("16 bytes"),
                peers: bytes[PEERS_AT..crc_at]
                    .chunks_exact(PEER_BYTES)
                    .map(|peer| {
                        (
                            crate::little_endian::u64_at(peer, 0),
                            peer[8..PEER_BYTES].try_into().expect("16 bytes"),
                        )
                    })
                    .collect(),
                bootstrapped_blind: u32_at(116) & FLAG_BOOTSTRAPPED_BLIND != 0,
            },
        };
        Ok(Some(Superblock {
            lba_bytes: u32_at(12),
            capacity_blocks: u64_at(16),
            namespace_id: bytes[24..40].try_into().expect("16 bytes"),
            generation: u64_at(40),
            shards: u32_at(48),
            groups_per_shard_max: u32_at(52),
            checkpoint_blocks: u32_at(56),
            first_region_block: u64_at(64),
            region_blocks: u64_at(72),
            snapshot_blocks: u64_at(80),
            identity,
        }))
    }

    pub fn namespace_id_hex(&self) -> String {
        self.namespace_id.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// A namespace id unique enough to tell two formatted namespaces apart:
/// the time, the process and the address space layout, mixed by CRC32C.
fn new_namespace_id() -> [u8; 16] {
    let nanos = crate::clock::unix_nanos();
    let seed = [nanos.to_le_bytes().as_slice(), &crate::clock::instance_bits().to_le_bytes()].concat();
    let mut id = [0u8; 16];
    for (lane, chunk) in id.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&crc32c::crc32c_append(lane as u32, &seed).to_le_bytes());
    }
    id
}

/// Reads the superblock, or formats the namespace when it holds none.
///
/// A namespace that was formatted is never reformatted: a damaged
/// superblock (both copies bad) or one of a newer format is an error.
pub fn open_or_format(
    queue: &mut dyn QueuePair,
    options: FormatOptions,
) -> Result<(Superblock, bool), WalError> {
    let info = queue.info().clone();
    let copy_blocks = SUPERBLOCK_BYTES / info.lba_bytes as usize;
    let mut copies = Vec::with_capacity(2);
    let mut blank = true;
    for copy in 0..2 {
        let lba = (copy * copy_blocks) as u64;
        let bytes = blocking::read(queue, lba, copy_blocks)
            .map_err(|source| WalError::Device { what: "reading the superblock", source })?;
        blank &= bytes.iter().all(|byte| *byte == 0);
        copies.push(Superblock::decode(&bytes));
    }
    let newest = copies
        .iter()
        .filter_map(|copy| copy.as_ref().ok().and_then(|copy| copy.clone()))
        .max_by_key(|copy| copy.generation);
    let Some(superblock) = newest else {
        if let Some(Err(reason)) = copies.iter().find(|copy| copy.is_err()) {
            return Err(WalError::Corrupt(format!(
                "no valid superblock copy on {}: {reason}; the namespace is damaged or was written by a newer nvkv",
                info.description
            )));
        }
        if !blank {
            // Never format over data nvkv did not write: on a raw device it
            // may be someone's filesystem.
            return Err(WalError::Layout(format!(
                "{} holds data that is not an nvkv superblock; if it may be overwritten, zero its first \
                 {} bytes (dd if=/dev/zero of={} bs=4096 count={} conv=notrunc) and start again",
                info.description,
                2 * SUPERBLOCK_BYTES,
                info.description,
                2 * SUPERBLOCK_BYTES / 4096
            )));
        }
        let superblock = Superblock::plan(info.lba_bytes, info.capacity_blocks, options)?;
        format(queue, &superblock)?;
        return Ok((superblock, true));
    };
    if superblock.lba_bytes != info.lba_bytes {
        return Err(WalError::Layout(format!(
            "namespace {} was formatted with {}-byte blocks, the device now has {}-byte blocks",
            info.description, superblock.lba_bytes, info.lba_bytes
        )));
    }
    if superblock.capacity_blocks > info.capacity_blocks {
        return Err(WalError::Layout(format!(
            "namespace {} was formatted with {} blocks but now has only {}",
            info.description, superblock.capacity_blocks, info.capacity_blocks
        )));
    }
    // Repair a damaged or stale copy from the good one, so one more bad
    // write cannot lose both.
    for (copy, decoded) in copies.iter().enumerate() {
        if decoded.as_ref().ok().and_then(|decoded| decoded.as_ref()) != Some(&superblock) {
            tracing::warn!(copy, namespace = %info.description, "superblock copy is damaged or stale; rewriting it");
            write_copy(queue, &superblock, copy)?;
        }
    }
    Ok((superblock, false))
}

/// The superblock of a running node, shared by its shards: the identity
/// part changes while it runs (a peer met, a cluster joined), and each change
/// is written through a queue pair of its own before it counts. Changes are
/// rare (a peer's first hello), so one lock for the whole node is enough;
/// no request ever waits on it.
pub struct SuperblockKeeper {
    namespace: Arc<dyn Namespace>,
    queue_pair: QueuePairConfig,
    superblock: Mutex<Superblock>,
}

impl std::fmt::Debug for SuperblockKeeper {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SuperblockKeeper").field("superblock", &*self.lock()).finish()
    }
}

impl SuperblockKeeper {
    pub fn new(namespace: Arc<dyn Namespace>, queue_pair: QueuePairConfig, superblock: Superblock) -> Self {
        SuperblockKeeper { namespace, queue_pair, superblock: Mutex::new(superblock) }
    }

    fn lock(&self) -> MutexGuard<'_, Superblock> {
        // A panic while holding it happened before a write or after one:
        // the superblock in memory is still one that was (or will be) valid.
        self.superblock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The superblock as it is now.
    pub fn superblock(&self) -> Superblock {
        self.lock().clone()
    }

    pub fn namespace_id(&self) -> [u8; 16] {
        self.lock().namespace_id
    }

    pub fn identity(&self) -> Identity {
        self.lock().identity.clone()
    }

    /// Changes the identity with `change` and writes the superblock, unless
    /// `change` returns false (nothing changed).
    pub fn update(&self, change: impl FnOnce(&mut Identity) -> bool) -> Result<(), WalError> {
        let mut superblock = self.lock();
        let mut changed = superblock.clone();
        if !change(&mut changed.identity) {
            return Ok(());
        }
        let mut queue = self
            .namespace
            .open_queue_pair(&self.queue_pair)
            .map_err(|source| WalError::Device { what: "opening a queue pair for the superblock", source })?;
        rewrite(queue.as_mut(), &mut changed)?;
        *superblock = changed;
        Ok(())
    }
}

/// Writes `superblock` with a new generation: copy A, then copy B, each
/// durable before the next, so a crash leaves one whole copy of either the
/// old or the new one (the newest valid generation wins on reading).
pub fn rewrite(queue: &mut dyn QueuePair, superblock: &mut Superblock) -> Result<(), WalError> {
    superblock.generation += 1;
    write_copy(queue, superblock, 0)?;
    write_copy(queue, superblock, 1)
}

fn write_copy(queue: &mut dyn QueuePair, superblock: &Superblock, copy: usize) -> Result<(), WalError> {
    let copy_blocks = SUPERBLOCK_BYTES / superblock.lba_bytes as usize;
    let mut buffer = queue.allocate(SUPERBLOCK_BYTES);
    superblock.encode(&mut buffer);
    blocking::write(queue, (copy * copy_blocks) as u64, buffer, true)
        .map_err(|source| WalError::Device { what: "writing the superblock", source })?;
    Ok(())
}

/// Writes empty checkpoints for every shard, then both superblock copies:
/// the superblock is the commit point of formatting.
/// Opens the namespace like [`open_or_format`] (so it refuses data nvkv did
/// not write), then formats it anew if it held a log: for tools that own
/// the namespace for one run and must not inherit an earlier run's records
/// (a full ring of them stalls appends nobody purges).
pub fn format_anew(queue: &mut dyn QueuePair, options: FormatOptions) -> Result<Superblock, WalError> {
    let (old, formatted) = open_or_format(queue, options)?;
    if formatted {
        return Ok(old);
    }
    let info = queue.info().clone();
    let mut superblock = Superblock::plan(info.lba_bytes, info.capacity_blocks, options)?;
    // Newer than either old copy, so no reader prefers a stale one.
    superblock.generation = superblock.generation.max(old.generation + 1);
    format(queue, &superblock)?;
    Ok(superblock)
}

fn format(queue: &mut dyn QueuePair, superblock: &Superblock) -> Result<(), WalError> {
    let lba_bytes = superblock.lba_bytes as usize;
    for shard in 0..superblock.shards {
        let region = superblock.region(shard);
        for slot in 0..2 {
            let mut buffer = queue.allocate(region.checkpoint_blocks as usize * lba_bytes);
            if slot == 0 {
                Checkpoint::empty(shard).encode(&mut buffer).map_err(WalError::Layout)?;
            }
            blocking::write(queue, region.checkpoint_slot_lba(slot), buffer, true)
                .map_err(|source| WalError::Device { what: "writing an initial checkpoint", source })?;
        }
        // A ring that held records of an earlier format would be scanned;
        // zero its first block so the scan of a new log ends at once.
        let buffer = queue.allocate(lba_bytes);
        blocking::write(queue, region.ring_first_block(), buffer, true)
            .map_err(|source| WalError::Device { what: "clearing the ring", source })?;
    }
    write_copy(queue, superblock, 0)?;
    write_copy(queue, superblock, 1)?;
    tracing::info!(shards = superblock.shards, namespace_id = %superblock.namespace_id_hex(), "formatted the namespace");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::memory::MemoryNamespace;
    use crate::nvme::{Namespace, QueuePairConfig};

    const OPTIONS: FormatOptions = FormatOptions { shards: 2, groups_per_shard_max: 16, member_id: 1 };

    #[test]
    fn formats_once_then_reads_back() {
        let namespace = MemoryNamespace::new(4096, 2048);
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let (first, formatted) = open_or_format(queue.as_mut(), OPTIONS).expect("formats");
        assert!(formatted);
        let (second, formatted) = open_or_format(queue.as_mut(), OPTIONS).expect("opens");
        assert!(!formatted);
        assert_eq!(first, second);
        let last = second.region(1);
        assert!(last.first_block + last.blocks <= 2048);
    }

    #[test]
    fn format_anew_replaces_an_earlier_log_and_refuses_foreign_data() {
        let namespace = MemoryNamespace::new(4096, 2048);
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let (first, _) = open_or_format(queue.as_mut(), OPTIONS).expect("formats");
        let anew = format_anew(queue.as_mut(), OPTIONS).expect("formats anew");
        assert_ne!(anew.namespace_id, first.namespace_id, "a new log, not the old one");
        assert!(anew.generation > first.generation);
        let (reopened, formatted) = open_or_format(queue.as_mut(), OPTIONS).expect("opens");
        assert!(!formatted);
        assert_eq!(reopened, anew);
        let foreign = MemoryNamespace::new(4096, 2048);
        foreign.write_bytes(100, &[0xab; 8]);
        let mut queue = foreign.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let error = format_anew(queue.as_mut(), OPTIONS).expect_err("foreign data is never formatted over");
        assert!(matches!(error, WalError::Layout(_)), "{error}");
    }

    #[test]
    fn one_damaged_copy_is_repaired() {
        let namespace = MemoryNamespace::new(4096, 2048);
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let (superblock, _) = open_or_format(queue.as_mut(), OPTIONS).expect("formats");
        namespace.write_bytes(20, &[0xff; 4]);
        let (reopened, _) = open_or_format(queue.as_mut(), OPTIONS).expect("opens from copy B");
        assert_eq!(reopened, superblock);
        assert_eq!(Superblock::decode(&namespace.read_bytes(0, 4096)).expect("repaired"), Some(superblock));
    }

    #[test]
    fn both_copies_damaged_is_an_error_not_a_reformat() {
        let namespace = MemoryNamespace::new(4096, 2048);
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        open_or_format(queue.as_mut(), OPTIONS).expect("formats");
        namespace.write_bytes(20, &[0xff; 4]);
        namespace.write_bytes(4096 + 20, &[0xff; 4]);
        let error = open_or_format(queue.as_mut(), OPTIONS).unwrap_err().to_string();
        assert!(error.contains("no valid superblock"), "{error}");
    }

    /// Found by the superblock fuzz target (fuzz/): an empty slice panicked.
    #[test]
    fn a_short_copy_is_an_error_not_a_panic() {
        for length in [0, 8, ENCODED_BYTES - 1] {
            let error = Superblock::decode(&vec![0u8; length]).expect_err("too small");
            assert!(matches!(error, DecodeError::TooShort { what: Structure::Superblock, .. }), "{error}");
        }
    }

    #[test]
    fn a_newer_format_is_refused_naming_both_versions() {
        let namespace = MemoryNamespace::new(4096, 2048);
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let (mut superblock, _) = open_or_format(queue.as_mut(), OPTIONS).expect("formats");
        superblock.generation += 1;
        let mut bytes = vec![0u8; 4096];
        superblock.encode(&mut bytes);
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..88]);
        bytes[88..92].copy_from_slice(&crc.to_le_bytes());
        namespace.write_bytes(0, &bytes);
        namespace.write_bytes(4096, &bytes);
        let error = open_or_format(queue.as_mut(), OPTIONS).unwrap_err().to_string();
        assert!(error.contains("version 7") && error.contains("versions 1 and 2"), "{error}");
    }

    #[test]
    fn foreign_data_is_never_formatted_over() {
        let namespace = MemoryNamespace::new(4096, 2048);
        namespace.write_bytes(1024, b"someone's filesystem");
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let error = open_or_format(queue.as_mut(), OPTIONS).unwrap_err().to_string();
        assert!(error.contains("not an nvkv superblock"), "{error}");
        assert_eq!(namespace.read_bytes(1024, 20), b"someone's filesystem");
    }

    /// The identity part round-trips, survives a rewrite, and a copy in the
    /// first format (no identity) is still read, as a namespace whose member
    /// and cluster are not known yet.
    #[test]
    fn the_identity_round_trips_and_version_1_copies_still_read() {
        let namespace = MemoryNamespace::new(4096, 2048);
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let (mut superblock, _) = open_or_format(queue.as_mut(), OPTIONS).expect("formats");
        assert_eq!(superblock.identity.member_id, 1, "formatted by member 1");
        superblock.identity.cluster_id = [7; 16];
        superblock.identity.bootstrapped_blind = true;
        for member in 2..=200u64 {
            superblock.identity.meet(member, [member as u8; 16]);
        }
        superblock.identity.meet(5, [55; 16]);
        assert_eq!(superblock.identity.peers.len(), PEERS_MAX, "the oldest peers are forgotten");
        assert_eq!(superblock.identity.peer_namespace(5), Some([55; 16]), "meeting again replaces");
        rewrite(queue.as_mut(), &mut superblock).expect("rewrite");
        let (read, formatted) = open_or_format(queue.as_mut(), OPTIONS).expect("opens");
        assert!(!formatted);
        assert_eq!(read, superblock);
        assert!(read.identity.bootstrapped_blind, "the flag is kept");

        let mut old = vec![0u8; 4096];
        superblock.encode(&mut old);
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&old[..88]);
        old[88..92].copy_from_slice(&crc.to_le_bytes());
        let version_1 = Superblock::decode(&old).expect("decodes").expect("a superblock");
        assert_eq!(version_1.identity, Identity::default());
        assert_eq!(version_1.namespace_id, superblock.namespace_id);
    }

    #[test]
    fn a_namespace_too_small_names_the_size_needed() {
        let error = Superblock::plan(4096, 100, OPTIONS).unwrap_err().to_string();
        assert!(error.contains("too small for 2 shards"), "{error}");
    }
}
