//! etcd's v3 gRPC API (placeholder while it is built).
pub mod proto;
