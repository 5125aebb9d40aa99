//! Load generators that print numbers: `nvkv bench device` (the shard log's
//! append path) and `nvkv bench put` (puts against a running node).

pub mod device;
pub mod put;
