//! The Cap'n Proto RPC layer: the client port of a node, the `Node`
//! interface of `schema/nvkv.capnp`, and the client library that speaks to
//! it. Conversions between schema types and Rust types live here, in one
//! place, for the server and the client alike.
//!
//! capnp-rpc is single-threaded: every connection runs on one shard's
//! reactor thread, in its `LocalSet`. This layer calls into shards only
//! through their mailboxes and `shard::local`; it never touches another
//! shard's state.

pub mod client;
pub mod kv;
pub mod server;
pub mod watch;
pub mod watch_client;

use capnp::message::ReaderOptions;

/// Largest message a peer may send, in 8-byte words (8 MiB): a request
/// beyond it fails its connection, not the node.
pub const MESSAGE_WORDS_MAX: usize = 1 << 20;
/// Deepest pointer nesting a message may have.
pub const NESTING_MAX: i32 = 64;

/// The limits every message reader of nvkv uses, on both ends.
pub fn reader_options() -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(Some(MESSAGE_WORDS_MAX)).nesting_limit(NESTING_MAX);
    options
}
