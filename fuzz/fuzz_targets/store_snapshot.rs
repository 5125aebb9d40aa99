//! A group's store snapshot, as a follower installs one from a peer or a
//! restart reads one from the snapshot area. A snapshot that decodes must
//! encode to bytes that decode to the same store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::kv::snapshot::{decode, encode};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(store) = decode(bytes) {
        let again = encode(&store);
        let decoded = decode(&again).expect("an encoded store decodes");
        assert_eq!(encode(&decoded), again, "encode and decode agree");
    }
});
