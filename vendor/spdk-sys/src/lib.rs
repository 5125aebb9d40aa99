//! Raw bindings to SPDK's NVMe driver and env layer, for nvkv's `spdk` backend.
//!
//! Empty unless the `bindings` feature is on; see build.rs for what it needs
//! and which items it binds.

#![cfg_attr(feature = "bindings", allow(non_camel_case_types, non_snake_case, non_upper_case_globals))]
#![cfg_attr(feature = "bindings", allow(clippy::all, missing_docs))]

#[cfg(feature = "bindings")]
include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
