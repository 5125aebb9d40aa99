//! The namespace's fixed blocks as a restart reads them: the superblock, a
//! shard's checkpoint, and a snapshot's reference.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = nvkv::wal::Superblock::decode(bytes);
    let _ = nvkv::wal::checkpoint::Checkpoint::decode(bytes);
    let _ = nvkv::wal::snapshot::SnapshotRef::decode(bytes);
});
