//! Bytes a client sends on a real node's client port: the whole Cap'n
//! Proto RPC path, capnp-rpc's framing and the node's methods (kv, lease,
//! watch, cluster, maintenance) with live capabilities, dispatched on a
//! reactor as in production.
//!
//! One node runs in this process. Each input is written on a new
//! connection, which is then half-closed; the node must close it within
//! `CLOSE_WITHIN` (a hang fails the run), and every `HEALTH_EVERY` inputs a
//! real client must still get the node's status. A panic on a reactor
//! thread aborts the process (libfuzzer-sys's panic hook), which the fuzzer
//! reports as a crash. The seeds in fuzz/corpus/client_session are real
//! client sessions (put, get, prefix range, delete, txn, watch, lease
//! grant, keep-alive, time-to-live, compact, status, member list): the
//! bytes the CLI sent on its shard connection, recorded with
//! `strace -f -xx -e trace=connect,sendto`.
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
        let node = start_node("client-session", "client_address = \"127.0.0.1:0\"", "");
        let address = node.client_address();
        std::mem::forget(node);
        address
    })
}

fuzz_target!(|bytes: &[u8]| {
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    let address = node();
    send_session(address, bytes);
    if INPUTS.fetch_add(1, Ordering::Relaxed).is_multiple_of(HEALTH_EVERY) {
        check_health(address);
    }
});
