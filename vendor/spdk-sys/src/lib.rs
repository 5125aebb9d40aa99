//! Raw bindings to SPDK's NVMe driver and env layer, for nvkv's `spdk` backend.
//!
//! Empty unless the `bindings` feature is on; see build.rs for what it needs.
