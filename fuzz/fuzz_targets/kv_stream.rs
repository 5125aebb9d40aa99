//! Bytes a client sends on a real node's client port after the KV stream's
//! opening (schema/nvkv.capnp, "The KV stream"): the framing, the calls'
//! decoding and limits, and the shard's request handle, as in production.
//!
//! The harness is client_session's: one node in this process, each input
//! (behind the opening "nvkvKVS1") written on a new connection that is then
//! half-closed; the node must answer what it read and close the connection
//! within `CLOSE_WITHIN`, and every `HEALTH_EVERY` inputs a real client must
//! still get the node's status. The seed in fuzz/corpus/kv_stream is a
//! message of every kind of call (put, range, ping, delete range, txn),
//! written with `capnp encode`.
#![no_main]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nvkv_fuzz::{check_health, send_session, start_node};

const HEALTH_EVERY: u64 = 256;

fn node() -> SocketAddr {
    static NODE: OnceLock<SocketAddr> = OnceLock::new();
    *NODE.get_or_init(|| {
        let node = start_node("kv-stream", "client_address = \"127.0.0.1:0\"", "");
        let address = node.client_address();
        std::mem::forget(node);
        address
    })
}

fuzz_target!(|bytes: &[u8]| {
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    let address = node();
    // Seeds start with the opening; other inputs get it in front.
    let opening = b"nvkvKVS1";
    let session = if bytes.starts_with(opening) { bytes.to_vec() } else { [opening, bytes].concat() };
    send_session(address, &session);
    if INPUTS.fetch_add(1, Ordering::Relaxed).is_multiple_of(HEALTH_EVERY) {
        check_health(address);
    }
});
