//! Backups of a whole store (`nvkv snapshot save` / `nvkv snapshot
//! restore`): the file format, its writer and its checking reader here;
//! taking one from a running node in [`save`], and making a new data
//! directory from one, with no daemon running, in [`restore`].
//!
//! A backup holds every group's store as `kv::snapshot` encodes it. Groups
//! are independent Raft groups with their own revisions, so each part is
//! consistent at its own revision (taken at a linearizable point of its
//! group), not all groups at one instant.
//!
//! File layout (all integers little-endian):
//!
//! ```text
//! header (48 bytes):
//!   0 magic "NVKVBKUP"   8 format_version u16   10 reserved u16 (0)
//!   12 groups u32        16 partition_depth u32
//!   20 shards u32        24 groups_per_shard u32   (shards × groups_per_shard = groups)
//!   28 created_unix_ms u64   36 reserved u64 (0)
//!   44 crc u32: CRC32C of bytes 0..44
//! one part per group, in group order 0, 1, ...:
//!   0 magic "PART"   4 group u32   8 revision i64   16 compact_revision i64
//!   24 store_bytes u64   32 crc u32: CRC32C of the part's bytes 0..32
//!   36 store (store_bytes bytes: a `kv::snapshot` encoding, which carries
//!      its own version and CRC too)
//!   36+store_bytes crc u32: CRC32C of the store bytes
//! trailer (24 bytes):
//!   0 magic "TAIL"   4 parts u32   8 file_bytes u64 (the whole file's length)
//!   16 reserved u32 (0)   20 crc u32: CRC32C of every byte of the file before it
//! ```
//!
//! The header's and each part header's own CRC are checked before any
//! length they hold is trusted, and a part may never claim more bytes than
//! the file has left, nor more than [`PART_BYTES_MAX`]: a damaged header
//! cannot make a reader allocate more than the file holds. The writer writes
//! `FILE.tmp`, syncs it and renames it into place, so a save that fails
//! never leaves a file that looks whole. This module never talks to a node
//! and never touches a data directory; `save` and `restore` do.

pub mod restore;
pub mod save;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::kv::snapshot::SnapshotError;
use crate::little_endian::{u16_at, u32_at, u64_at};

pub const BACKUP_MAGIC: [u8; 8] = *b"NVKVBKUP";
pub const BACKUP_FORMAT_VERSION: u16 = 1;
const PART_MAGIC: [u8; 4] = *b"PART";
const TRAILER_MAGIC: [u8; 4] = *b"TAIL";
pub const HEADER_BYTES: usize = 48;
const PART_HEADER_BYTES: usize = 36;
const TRAILER_BYTES: usize = 24;
/// The most store bytes one part may hold. A group's store must fit its
/// shard's snapshot area on restore anyway; this only bounds what a reader
/// allocates for a part whose header passed its CRC.
pub const PART_BYTES_MAX: u64 = 64 << 30;
/// The most groups a backup may hold: every shard a node may run, each
/// with every group a shard log may hold.
pub const GROUPS_MAX: u32 = crate::config::SHARDS_LIMIT as u32 * crate::config::GROUPS_PER_SHARD_LIMIT;

/// What a backup says of the store it came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupHeader {
    pub groups: u32,
    pub partition_depth: u32,
    pub shards: u32,
    pub groups_per_shard: u32,
    pub created_unix_ms: u64,
}

/// One group's part, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub group: u32,
    pub revision: i64,
    pub compact_revision: i64,
    /// `kv::snapshot::encode` of the group's store.
    pub store: Vec<u8>,
    /// Keys with history in the store: live, or deleted since its compaction.
    pub keys_with_history: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "cannot write {path}: its directory {directory} does not exist; create it (mkdir -p {directory}) or \
         name a file in an existing directory"
    )]
    NoDirectory { path: PathBuf, directory: PathBuf },
    #[error("{path} already exists; choose another file name, or pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("{path} is not an nvkv backup: it starts with {found:?}, not {BACKUP_MAGIC:?}")]
    BadMagic { path: PathBuf, found: Vec<u8> },
    #[error(
        "{path} is a backup of format version {found}, newer than this nvkv reads (version {supported}); \
         restore it with a newer nvkv"
    )]
    NewerVersion { path: PathBuf, found: u16, supported: u16 },
    #[error(
        "{path} is truncated: it ends at byte {file_bytes}, inside {inside}; the file was cut short \
         (copy it again, or take a new backup)"
    )]
    Truncated { path: PathBuf, file_bytes: u64, inside: String },
    #[error(
        "{path} is corrupt: {what} at byte {offset} has checksum {found:#010x}, expected {expected:#010x}; \
         the file was damaged (copy it again, or take a new backup)"
    )]
    Checksum { path: PathBuf, what: String, offset: u64, expected: u32, found: u32 },
    #[error("{path} is corrupt: {reason}; the file was damaged (copy it again, or take a new backup)")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path} is corrupt: the store of group {group} does not decode: {source}")]
    Store { path: PathBuf, group: u32, source: SnapshotError },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io { what, path, source }
}

/// `FILE.tmp`, where a backup is written before it is renamed to `FILE`.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

impl BackupHeader {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..8].copy_from_slice(&BACKUP_MAGIC);
        bytes[8..10].copy_from_slice(&BACKUP_FORMAT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.groups.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.partition_depth.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.shards.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.groups_per_shard.to_le_bytes());
        bytes[28..36].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..44]);
        bytes[44..48].copy_from_slice(&crc.to_le_bytes());
        bytes
    }
}

/// Writes a backup to `FILE.tmp`; [`BackupWriter::finish`] makes it `FILE`.
/// Dropped unfinished, it removes `FILE.tmp`.
pub struct BackupWriter {
    path: PathBuf,
    temporary: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    crc: u32,
    bytes: u64,
    parts: u32,
    header: BackupHeader,
}

impl BackupWriter {
    /// Starts the backup of a store laid out as `header` says. Refuses an
    /// existing `path` unless `force`.
    pub fn create(path: &Path, header: BackupHeader, force: bool) -> Result<BackupWriter, BackupError> {
        if !force && path.exists() {
            return Err(BackupError::Exists { path: path.to_path_buf() });
        }
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !directory.is_dir() {
            return Err(BackupError::NoDirectory {
                path: path.to_path_buf(),
                directory: directory.to_path_buf(),
            });
        }
        let temporary = temporary_path(path);
        let file = std::fs::File::create(&temporary).map_err(io_error("create", &temporary))?;
        let mut writer = BackupWriter {
            path: path.to_path_buf(),
            temporary,
            file: Some(std::io::BufWriter::new(file)),
            crc: 0,
            bytes: 0,
            parts: 0,
            header: header.clone(),
        };
        writer.write(&header.encode())?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        let file = self.file.as_mut().expect("writing an unfinished backup");
        file.write_all(bytes).map_err(io_error("write", &self.temporary))?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Appends the next group's part; groups come in order from 0.
    pub fn write_part(
        &mut self,
        group: u32,
        revision: i64,
        compact_revision: i64,
        store: &[u8],
    ) -> Result<(), BackupError> {
        assert_eq!(group, self.parts, "backup parts are written in group order");
        assert!(
            group < self.header.groups,
            "group {group} is beyond the header's {} groups",
            self.header.groups
        );
        assert!(store.len() as u64 <= PART_BYTES_MAX, "a part beyond PART_BYTES_MAX");
        let mut head = [0u8; PART_HEADER_BYTES];
        head[0..4].copy_from_slice(&PART_MAGIC);
        head[4..8].copy_from_slice(&group.to_le_bytes());
        head[8..16].copy_from_slice(&revision.to_le_bytes());
        head[16..24].copy_from_slice(&compact_revision.to_le_bytes());
        head[24..32].copy_from_slice(&(store.len() as u64).to_le_bytes());
        let crc = crc32c::crc32c(&head[..32]);
        head[32..36].copy_from_slice(&crc.to_le_bytes());
        self.write(&head)?;
        self.write(store)?;
        self.write(&crc32c::crc32c(store).to_le_bytes())?;
        self.parts += 1;
        Ok(())
    }

    /// Writes the trailer, syncs the file, renames it to `FILE` and syncs
    /// the directory: once this returns, the backup is whole and durable.
    /// Returns the file's length.
    pub fn finish(mut self) -> Result<u64, BackupError> {
        assert_eq!(self.parts, self.header.groups, "a backup holds one part per group");
        let mut tail = [0u8; TRAILER_BYTES];
        tail[0..4].copy_from_slice(&TRAILER_MAGIC);
        tail[4..8].copy_from_slice(&self.parts.to_le_bytes());
        let file_bytes = self.bytes + TRAILER_BYTES as u64;
        tail[8..16].copy_from_slice(&file_bytes.to_le_bytes());
        self.write(&tail[..20])?;
        let crc = self.crc;
        self.write(&crc.to_le_bytes())?;
        let file = self.file.take().expect("finished once");
        let file = file.into_inner().map_err(|error| BackupError::Io {
            what: "write",
            path: self.temporary.clone(),
            source: error.into_error(),
        })?;
        file.sync_all().map_err(io_error("sync", &self.temporary))?;
        drop(file);
        std::fs::rename(&self.temporary, &self.path).map_err(io_error("rename into place", &self.path))?;
        crate::data_dir::sync_parent(&self.path).map_err(io_error("sync the directory of", &self.path))?;
        Ok(file_bytes)
    }
}

impl Drop for BackupWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// Reads a backup part by part, checking every checksum and bound as it
/// goes; [`BackupReader::finish`] checks the trailer and the whole file's
/// checksum. Nothing it returns may be trusted until `finish` succeeded:
/// [`verify`] reads the file through once before anyone uses a part.
pub struct BackupReader {
    path: PathBuf,
    file: Box<dyn Read>,
    file_bytes: u64,
    offset: u64,
    crc: u32,
    header: BackupHeader,
    next_group: u32,
}

impl BackupReader {
    pub fn open(path: &Path) -> Result<BackupReader, BackupError> {
        let file = std::fs::File::open(path).map_err(io_error("open", path))?;
        let file_bytes = file.metadata().map_err(io_error("read the size of", path))?.len();
        BackupReader::from_reader(path, Box::new(std::io::BufReader::new(file)), file_bytes)
    }

    /// A backup held in memory (the fuzz target reads them so).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<BackupReader, BackupError> {
        let length = bytes.len() as u64;
        BackupReader::from_reader(Path::new("<memory>"), Box::new(std::io::Cursor::new(bytes)), length)
    }

    /// Reads a backup of `file_bytes` bytes from `file`; `path` names it
    /// in errors.
    fn from_reader(path: &Path, file: Box<dyn Read>, file_bytes: u64) -> Result<BackupReader, BackupError> {
        let mut reader = BackupReader {
            path: path.to_path_buf(),
            file,
            file_bytes,
            offset: 0,
            crc: 0,
            header: BackupHeader {
                groups: 0,
                partition_depth: 0,
                shards: 0,
                groups_per_shard: 0,
                created_unix_ms: 0,
            },
            next_group: 0,
        };
        let mut bytes = [0u8; HEADER_BYTES];
        let magic_bytes = bytes.len().min(file_bytes as usize);
        reader.read(&mut bytes[..magic_bytes.min(8)], "the header")?;
        if bytes[..8] != BACKUP_MAGIC {
            return Err(BackupError::BadMagic {
                path: path.to_path_buf(),
                found: bytes[..magic_bytes.min(8)].to_vec(),
            });
        }
        reader.read(&mut bytes[8..], "the header")?;
        let (expected, found) = (u32_at(&bytes, 44), crc32c::crc32c(&bytes[..44]));
        if expected != found {
            return Err(reader.checksum("the header", 0, expected, found));
        }
        let version = u16_at(&bytes, 8);
        if version != BACKUP_FORMAT_VERSION {
            return Err(BackupError::NewerVersion {
                path: path.to_path_buf(),
                found: version,
                supported: BACKUP_FORMAT_VERSION,
            });
        }
        let header = BackupHeader {
            groups: u32_at(&bytes, 12),
            partition_depth: u32_at(&bytes, 16),
            shards: u32_at(&bytes, 20),
            groups_per_shard: u32_at(&bytes, 24),
            created_unix_ms: u64_at(&bytes, 28),
        };
        if header.groups == 0
            || header.groups > GROUPS_MAX
            || u64::from(header.shards) * u64::from(header.groups_per_shard) != u64::from(header.groups)
        {
            return Err(reader.malformed(format!(
                "the header names {} groups as {} shards × {} groups per shard; a backup holds 1 to \
                 {GROUPS_MAX} groups, shards × groups per shard of them",
                header.groups, header.shards, header.groups_per_shard
            )));
        }
        reader.header = header;
        Ok(reader)
    }

    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    fn read(&mut self, out: &mut [u8], inside: &str) -> Result<(), BackupError> {
        if self.offset + out.len() as u64 > self.file_bytes {
            return Err(BackupError::Truncated {
                path: self.path.clone(),
                file_bytes: self.file_bytes,
                inside: inside.to_string(),
            });
        }
        self.file.read_exact(out).map_err(io_error("read", &self.path))?;
        self.crc = crc32c::crc32c_append(self.crc, out);
        self.offset += out.len() as u64;
        Ok(())
    }

    fn checksum(&self, what: &str, offset: u64, expected: u32, found: u32) -> BackupError {
        BackupError::Checksum { path: self.path.clone(), what: what.to_string(), offset, expected, found }
    }

    fn malformed(&self, reason: String) -> BackupError {
        BackupError::Malformed { path: self.path.clone(), reason }
    }

    /// The next group's part, checked against its checksums and decoded
    /// as a store; `None` once every group's part was read.
    pub fn next_part(&mut self) -> Result<Option<Part>, BackupError> {
        if self.next_group == self.header.groups {
            return Ok(None);
        }
        let group = self.next_group;
        let start = self.offset;
        let inside = format!("the part of group {group} (of {})", self.header.groups);
        let mut head = [0u8; PART_HEADER_BYTES];
        self.read(&mut head, &inside)?;
        let (expected, found) = (u32_at(&head, 32), crc32c::crc32c(&head[..32]));
        if expected != found {
            return Err(self.checksum(
                &format!("the header of the part of group {group}"),
                start,
                expected,
                found,
            ));
        }
        if head[0..4] != PART_MAGIC || u32_at(&head, 4) != group {
            return Err(self.malformed(format!(
                "at byte {start} the part of group {group} was expected, found magic {:?} and group {}",
                &head[0..4],
                u32_at(&head, 4)
            )));
        }
        let revision = u64_at(&head, 8) as i64;
        let compact_revision = u64_at(&head, 16) as i64;
        let store_bytes = u64_at(&head, 24);
        let left = self.file_bytes - self.offset;
        if store_bytes > PART_BYTES_MAX {
            return Err(self.malformed(format!(
                "the part of group {group} declares {store_bytes} bytes, more than the {PART_BYTES_MAX} a part \
                 may hold"
            )));
        }
        if store_bytes > left {
            return Err(BackupError::Truncated {
                path: self.path.clone(),
                file_bytes: self.file_bytes,
                inside: format!("{inside}, which declares {store_bytes} bytes but only {left} follow"),
            });
        }
        let mut store = vec![0u8; store_bytes as usize];
        let store_offset = self.offset;
        self.read(&mut store, &inside)?;
        let mut crc = [0u8; 4];
        self.read(&mut crc, &inside)?;
        let (expected, found) = (u32::from_le_bytes(crc), crc32c::crc32c(&store));
        if expected != found {
            return Err(self.checksum(&format!("the store of group {group}"), store_offset, expected, found));
        }
        let decoded = crate::kv::snapshot::decode(&store).map_err(|source| BackupError::Store {
            path: self.path.clone(),
            group,
            source,
        })?;
        if decoded.revision() != revision || decoded.compact_revision() != compact_revision {
            return Err(self.malformed(format!(
                "the part of group {group} names revision {revision} (compacted at {compact_revision}) but its \
                 store is at revision {} (compacted at {})",
                decoded.revision(),
                decoded.compact_revision()
            )));
        }
        self.next_group += 1;
        let keys_with_history = decoded.keys_with_history() as u64;
        Ok(Some(Part { group, revision, compact_revision, store, keys_with_history }))
    }

    /// Checks the trailer after the last part: the part count, the file's
    /// length and the whole file's checksum.
    pub fn finish(mut self) -> Result<(), BackupError> {
        assert_eq!(self.next_group, self.header.groups, "every part is read before the trailer");
        let start = self.offset;
        let mut tail = [0u8; TRAILER_BYTES];
        self.read(&mut tail[..20], "the trailer")?;
        let found = self.crc;
        self.read(&mut tail[20..], "the trailer")?;
        let expected = u32_at(&tail, 20);
        if expected != found {
            return Err(self.checksum("the whole file", start + 20, expected, found));
        }
        if tail[0..4] != TRAILER_MAGIC
            || u32_at(&tail, 4) != self.header.groups
            || u64_at(&tail, 8) != self.file_bytes
        {
            return Err(self.malformed(format!(
                "the trailer at byte {start} names {} parts in {} bytes; the file holds {} parts in {} bytes",
                u32_at(&tail, 4),
                u64_at(&tail, 8),
                self.header.groups,
                self.file_bytes
            )));
        }
        if self.offset != self.file_bytes {
            return Err(self.malformed(format!(
                "{} bytes follow the trailer at byte {start}",
                self.file_bytes - self.offset
            )));
        }
        Ok(())
    }
}

/// What a checked backup holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupSummary {
    pub header: BackupHeader,
    pub file_bytes: u64,
    /// Each group's revision and compact revision, in group order.
    pub revisions: Vec<(i64, i64)>,
    /// Keys with history over every group: live, or deleted since the
    /// group's compaction.
    pub keys_with_history: u64,
}

/// Reads the whole backup and checks every checksum, bound and store in
/// it; `on_part` hears of each part's bytes as it is read.
pub fn verify(path: &Path, mut on_part: impl FnMut(u64)) -> Result<BackupSummary, BackupError> {
    let mut reader = BackupReader::open(path)?;
    let header = reader.header().clone();
    let file_bytes = reader.file_bytes();
    let mut revisions = Vec::with_capacity(header.groups as usize);
    let mut keys_with_history = 0;
    while let Some(part) = reader.next_part()? {
        keys_with_history += part.keys_with_history;
        revisions.push((part.revision, part.compact_revision));
        on_part(part.store.len() as u64);
    }
    reader.finish()?;
    Ok(BackupSummary { header, file_bytes, revisions, keys_with_history })
}

#[cfg(test)]
mod tests;
