//! Load generators that print numbers: `nvkv bench device` (the shard log's
//! append path) and the store benchmarks `nvkv bench put|range|txn|mixed|watch`
//! (operations against a running store: the workloads in `workload`, the
//! nvkv driver in `nvkv`, etcd's in `etcd`, the choice of store in `target`).

pub mod device;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod keys;
pub mod limiter;
pub mod nvkv;
pub mod report;
pub mod target;
pub mod watch;
pub mod workload;
