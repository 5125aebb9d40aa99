//! A backup file, as `nvkv snapshot restore` and `status` read one: bytes
//! copied between machines and kept for months. Reading must refuse damage
//! with an error, never panic, and never allocate past what the bytes
//! hold; a part it returns is a store that decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::backup::BackupReader;

fuzz_target!(|bytes: &[u8]| {
    let Ok(mut reader) = BackupReader::from_bytes(bytes.to_vec()) else { return };
    while let Ok(Some(part)) = reader.next_part() {
        nvkv::kv::snapshot::decode(&part.store).expect("a part the reader returns is a store");
    }
});
