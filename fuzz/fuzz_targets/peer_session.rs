//! Bytes another member sends on a real node's peer port: capnp-rpc's
//! framing, the hello that checks the cluster's identity, and the peer
//! session's methods (Raft votes, appends and streamed snapshots,
//! forwarded writes, read index, lease questions) with live capabilities.
//!
//! The node is member 1 of a two-member cluster (cluster "nvkv", one
//! shard, two groups) whose member 2 never runs, so it listens on its peer
//! port and campaigns without a quorum. Each input is written on a new
//! connection to shard 0's peer port and half-closed; the node must close
//! it within `CLOSE_WITHIN`, and every `HEALTH_EVERY` inputs a real client
//! must still get its status. The seeds in fuzz/corpus/peer_session are
//! the first 2, 4, ... 109 writes member 2 of a real two-member cluster
//! with the same identity sent to member 1 (hello, votes, appends with
//! puts and a lease grant), recorded with
//! `strace -f -xx -e trace=connect,sendto`.
#![no_main]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nvkv_fuzz::{check_health, free_port_block, send_session, start_node};

const HEALTH_EVERY: u64 = 256;

/// The node's (client address, shard 0's peer address).
fn node() -> (SocketAddr, SocketAddr) {
    static NODE: OnceLock<(SocketAddr, SocketAddr)> = OnceLock::new();
    *NODE.get_or_init(|| {
        // Client port, its shard's port (client + 1), peer port, and the
        // absent member's client and peer ports.
        let base = free_port_block(5);
        let (client, peer, absent_client, absent_peer) = (base, base + 2, base + 3, base + 4);
        let node = format!(
            "member_id = 1\nname = \"n1\"\nclient_address = \"127.0.0.1:{client}\"\npeer_address = \"127.0.0.1:{peer}\""
        );
        let members = format!(
            "[[cluster.members]]\nid = 1\nname = \"n1\"\nclient_address = \"127.0.0.1:{client}\"\n\
             peer_address = \"127.0.0.1:{peer}\"\n\
             [[cluster.members]]\nid = 2\nname = \"n2\"\nclient_address = \"127.0.0.1:{absent_client}\"\n\
             peer_address = \"127.0.0.1:{absent_peer}\"\n"
        );
        let node = start_node("peer-session", &node, &members);
        let address = node.client_address();
        std::mem::forget(node);
        (address, SocketAddr::from(([127, 0, 0, 1], peer)))
    })
}

fuzz_target!(|bytes: &[u8]| {
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    let (client, peer) = node();
    send_session(peer, bytes);
    if INPUTS.fetch_add(1, Ordering::Relaxed).is_multiple_of(HEALTH_EVERY) {
        check_health(client);
    }
});
