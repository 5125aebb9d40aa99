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
//! Layout of a superblock copy (little-endian):
//!
//! ```text
//!  0 magic u64 "NVKVSUPR"  8 version u32  12 lba_bytes u32
//! 16 capacity_blocks u64  24 namespace_id [u8; 16]  40 generation u64
//! 48 shards u32  52 groups_per_shard_max u32  56 checkpoint_blocks u32
//! 60 zero u32  64 first_region_block u64  72 region_blocks u64
//! 80 snapshot_blocks u64 (per shard)
//! 88 crc u32: CRC32C of bytes 0..88
//! ```
//!
//! The format is the same on a file, a raw block device and an SPDK
//! namespace.

use super::checkpoint::{self, Checkpoint};
use super::{blocking, WalError};
use crate::nvme::QueuePair;

pub const SUPERBLOCK_MAGIC: u64 = u64::from_le_bytes(*b"NVKVSUPR");
pub const SUPERBLOCK_VERSION: u32 = 1;
/// Bytes reserved for each superblock copy; the largest LBA size we accept.
pub const SUPERBLOCK_BYTES: usize = 4096;
const ENCODED_BYTES: usize = 92;
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
#[derive(Clone, Copy, Debug)]
pub struct FormatOptions {
    pub shards: u32,
    pub groups_per_shard_max: u32,
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
        let crc = crc32c::crc32c(&out[..88]);
        out[88..92].copy_from_slice(&crc.to_le_bytes());
    }

    /// `Ok(None)` when the bytes hold no superblock (never written).
    pub fn decode(bytes: &[u8]) -> Result<Option<Superblock>, String> {
        if bytes.len() < ENCODED_BYTES {
            return Err(format!(
                "a superblock copy of {} bytes is too small ({ENCODED_BYTES} needed)",
                bytes.len()
            ));
        }
        let u32_at = |offset: usize| crate::little_endian::u32_at(bytes, offset);
        let u64_at = |offset: usize| crate::little_endian::u64_at(bytes, offset);
        if u64_at(0) != SUPERBLOCK_MAGIC {
            return Ok(None);
        }
        let version = u32_at(8);
        let stored = u32_at(88);
        let computed = crc32c::crc32c(&bytes[..88]);
        if stored != computed {
            return Err(format!("superblock CRC32C stored {stored:#010x}, computed {computed:#010x}"));
        }
        if version != SUPERBLOCK_VERSION {
            return Err(format!(
                "superblock format version {version}, this build of nvkv reads version {SUPERBLOCK_VERSION}"
            ));
        }
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
        }))
    }

    pub fn namespace_id_hex(&self) -> String {
        self.namespace_id.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// A namespace id unique enough to tell two formatted namespaces apart:
/// the time, the process and the address space layout, mixed by CRC32C.
fn new_namespace_id() -> [u8; 16] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let stack_address = &nanos as *const u128 as usize as u64;
    let seed =
        [nanos.to_le_bytes().as_slice(), &std::process::id().to_le_bytes(), &stack_address.to_le_bytes()]
            .concat();
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

    const OPTIONS: FormatOptions = FormatOptions { shards: 2, groups_per_shard_max: 16 };

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
            assert!(error.contains("too small"), "{error}");
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
        assert!(error.contains("version 7") && error.contains("version 1"), "{error}");
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

    #[test]
    fn a_namespace_too_small_names_the_size_needed() {
        let error = Superblock::plan(4096, 100, OPTIONS).unwrap_err().to_string();
        assert!(error.contains("too small for 2 shards"), "{error}");
    }
}
