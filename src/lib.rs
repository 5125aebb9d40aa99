//! nvkv: a strongly consistent, replicated key-value store that writes its
//! Raft logs straight to NVMe. docs/architecture.md describes the layers
//! and README.md how to run it.
//!
//! Layers look down only (tests/layers.rs checks it): `node` → `rpc` →
//! `shard` → `raft` → `wal` → `nvme`, with `kv` under `shard` and `raft`,
//! `reactor` under `shard`, and `config` plain data at the bottom. Only
//! `nvme` and `reactor` hold unsafe code (system calls, io_uring, SPDK,
//! DMA memory), each block with the argument that makes it sound; every
//! other module forbids it.

#[forbid(unsafe_code)]
pub mod backup;
#[forbid(unsafe_code)]
pub mod bench;
#[forbid(unsafe_code)]
pub mod clock;
#[forbid(unsafe_code)]
pub mod config;
pub mod data_dir;
#[cfg(feature = "etcd")]
#[forbid(unsafe_code)]
pub mod etcd;
#[forbid(unsafe_code)]
pub mod kv;
#[forbid(unsafe_code)]
pub mod latency;
#[cfg(any(test, feature = "testing"))]
#[forbid(unsafe_code)]
pub mod lincheck;
#[forbid(unsafe_code)]
pub mod little_endian;
#[forbid(unsafe_code)]
pub mod logging;
#[forbid(unsafe_code)]
pub mod node;
pub mod nvme;
#[forbid(unsafe_code)]
pub mod progress;
#[forbid(unsafe_code)]
pub mod raft;
pub mod reactor;
#[forbid(unsafe_code)]
pub mod rpc;
#[forbid(unsafe_code)]
pub mod shard;
#[forbid(unsafe_code)]
pub mod systemd;
#[forbid(unsafe_code)]
pub mod topology;
#[forbid(unsafe_code)]
pub mod txn_text;
#[forbid(unsafe_code)]
pub mod wal;

/// Code generated from `schema/nvkv.capnp`.
#[allow(clippy::all, dead_code, unused_imports)]
#[forbid(unsafe_code)]
pub mod nvkv_capnp {
    include!(concat!(env!("OUT_DIR"), "/nvkv_capnp.rs"));
}
