//! The backup format: what is written reads back, and every truncation,
//! every flipped bit and every lie in a header is refused with an error
//! that names it.

use super::*;
use crate::kv::store::MvccStore;
use crate::kv::types::PutRequest;

fn store(keys: usize) -> MvccStore {
    let mut store = MvccStore::new();
    for index in 0..keys {
        let request = PutRequest {
            key: format!("/k/{index}").into_bytes(),
            value: vec![index as u8; 3],
            ..Default::default()
        };
        store.put(&request).unwrap();
    }
    store
}

fn header() -> BackupHeader {
    BackupHeader { groups: 2, partition_depth: 2, shards: 1, groups_per_shard: 2, created_unix_ms: 7 }
}

/// A backup of two groups in `directory`, and its bytes.
fn sample(directory: &Path) -> (PathBuf, Vec<u8>) {
    let path = directory.join("backup");
    let mut writer = BackupWriter::create(&path, header(), false).unwrap();
    for (group, keys) in [(0u32, 3usize), (1, 5)] {
        let store = store(keys);
        let bytes = crate::kv::snapshot::encode(&store);
        writer.write_part(group, store.revision(), store.compact_revision(), &bytes).unwrap();
    }
    let length = writer.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(length, bytes.len() as u64);
    (path, bytes)
}

#[test]
fn a_backup_reads_back_part_by_part() {
    let directory = tempfile::tempdir().unwrap();
    let (path, _) = sample(directory.path());
    assert!(!temporary_path(&path).exists(), "FILE.tmp is renamed into place");
    let mut reader = BackupReader::open(&path).unwrap();
    assert_eq!(reader.header(), &header());
    let first = reader.next_part().unwrap().unwrap();
    assert_eq!((first.group, first.revision, first.keys_with_history), (0, 4, 3));
    assert_eq!(crate::kv::snapshot::decode(&first.store).unwrap(), store(3));
    let second = reader.next_part().unwrap().unwrap();
    assert_eq!((second.group, second.keys_with_history), (1, 5));
    assert!(reader.next_part().unwrap().is_none());
    reader.finish().unwrap();
    let mut in_memory = BackupReader::from_bytes(std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(in_memory.next_part().unwrap().unwrap(), first, "the same bytes read the same from memory");
    let summary = verify(&path, |_| {}).unwrap();
    assert_eq!(summary.revisions, vec![(4, 0), (6, 0)]);
    assert_eq!(summary.keys_with_history, 8);
}

#[test]
fn an_existing_file_is_kept_unless_forced_and_an_unfinished_one_never_appears() {
    let directory = tempfile::tempdir().unwrap();
    let (path, bytes) = sample(directory.path());
    assert!(matches!(BackupWriter::create(&path, header(), false), Err(BackupError::Exists { .. })));
    let writer = BackupWriter::create(&path, header(), true).unwrap();
    assert!(temporary_path(&path).exists());
    drop(writer);
    assert!(!temporary_path(&path).exists(), "an abandoned save removes FILE.tmp");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "and leaves FILE as it was");
}

#[test]
fn every_truncation_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let (_, bytes) = sample(directory.path());
    let cut = directory.path().join("cut");
    for length in 0..bytes.len() {
        std::fs::write(&cut, &bytes[..length]).unwrap();
        let error = verify(&cut, |_| {}).unwrap_err();
        assert!(
            matches!(error, BackupError::Truncated { .. } | BackupError::BadMagic { .. }),
            "cut at {length}: {error}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&cut, &longer).unwrap();
    assert!(verify(&cut, |_| {}).is_err(), "a byte past the trailer");
}

#[test]
fn a_flipped_bit_in_any_byte_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let (_, bytes) = sample(directory.path());
    let damaged = directory.path().join("damaged");
    for position in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[position] ^= 1 << (position % 8);
        std::fs::write(&damaged, &flipped).unwrap();
        assert!(verify(&damaged, |_| {}).is_err(), "byte {position} flipped went unnoticed");
    }
}

#[test]
fn a_huge_length_behind_a_valid_crc_allocates_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let (path, mut bytes) = sample(directory.path());
    let part = HEADER_BYTES;
    bytes[part + 24..part + 32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let crc = crc32c::crc32c(&bytes[part..part + 32]);
    bytes[part + 32..part + 36].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let error = verify(&path, |_| {}).unwrap_err().to_string();
    assert!(error.contains("more than the"), "{error}");
    bytes[part + 24..part + 32].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let crc = crc32c::crc32c(&bytes[part..part + 32]);
    bytes[part + 32..part + 36].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let error = verify(&path, |_| {}).unwrap_err().to_string();
    assert!(error.contains("declares 1048576 bytes but only"), "{error}");
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let directory = tempfile::tempdir().unwrap();
    let (path, mut bytes) = sample(directory.path());
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let error = verify(&path, |_| {}).unwrap_err().to_string();
    assert!(error.contains("format version 2") && error.contains("(version 1)"), "{error}");
}

#[test]
fn a_missing_directory_is_named() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("backups");
    let path = missing.join("nvkv.backup");
    let error = BackupWriter::create(&path, header(), false).err().expect("no directory to write into");
    let message = error.to_string();
    assert!(matches!(error, BackupError::NoDirectory { .. }), "{message}");
    assert!(message.contains(&format!("its directory {} does not exist", missing.display())), "{message}");
    assert!(!message.contains("nvkv.backup.tmp"), "{message}");
}
