//! The shard log's record decoders, as recovery meets them on a torn or
//! foreign namespace: a header, then a whole record, at both block sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::wal::format::{decode_header, decode_record};

fuzz_target!(|bytes: &[u8]| {
    for lba_bytes in [512, 4096] {
        let _ = decode_header(bytes, lba_bytes);
        let _ = decode_record(bytes, lba_bytes);
    }
    // The Raft entry and vote slot inside records.
    let _ = nvkv::raft::log_store::decode_entry(1, 1, bytes);
    let _ = nvkv::raft::log_store::VoteSlot::decode(bytes);
});
