//! nvkv: a strongly consistent, replicated key-value store that writes its
//! Raft logs straight to NVMe. See DESIGN.md in the shared folder for the
//! architecture and README.md for how to run it.
//!
//! Layers look down only: `node` → `reactor`, `raft` → `wal` → `nvme`.

pub mod backup;
pub mod bench;
pub mod config;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod kv;
pub mod lincheck;
pub mod node;
pub mod nvme;
pub mod raft;
pub mod reactor;
pub mod rpc;
pub mod shard;
pub mod systemd;
pub mod topology;
pub mod txn_text;
pub mod wal;

/// Code generated from `schema/nvkv.capnp`.
#[allow(clippy::all, dead_code, unused_imports)]
pub mod nvkv_capnp {
    include!(concat!(env!("OUT_DIR"), "/nvkv_capnp.rs"));
}
