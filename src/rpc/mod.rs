//! The Cap'n Proto RPC layer: the client port of a node, the `Node`
//! interface of `schema/nvkv.capnp`, and the client library that speaks to
//! it. Conversions between schema types and Rust types live here, in one
//! place, for the server and the client alike.
//!
//! capnp-rpc is single-threaded: every connection runs on one shard's
//! reactor thread, in its `LocalSet`. This layer calls into shards only
//! through their mailboxes and `shard::local`; it never touches another
//! shard's state.

pub mod auth;
pub mod auth_client;
pub mod client;
pub mod frames;
pub mod incarnation;
pub mod kv;
pub mod kv_stream;
pub mod kv_stream_client;
pub mod lease;
pub mod member_identity;
pub mod metrics;
pub mod peer;
pub mod routing;
pub mod server;
pub mod tls;
pub mod watch;

pub mod cluster;

use capnp::message::ReaderOptions;

/// Largest message the client library reads, in 8-byte words (8 MiB): an
/// answer beyond it fails its connection.
pub const MESSAGE_WORDS_MAX: usize = 1 << 20;
/// Deepest pointer nesting a message may have: room for the store's
/// deepest transaction (`kv::store::TXN_DEPTH_MAX`, three pointers a level)
/// and the RPC framing around it.
pub const NESTING_MAX: i32 = 128;
/// What a node reads of a request beyond twice `request_bytes_max`, in
/// words (512 KiB): the RPC framing, and a request a little over the
/// limit, which is refused with a typed error instead of a closed
/// connection.
pub const REQUEST_HEADROOM_WORDS: usize = 1 << 16;

/// The limits the client library's message readers use.
pub fn reader_options() -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(Some(MESSAGE_WORDS_MAX)).nesting_limit(NESTING_MAX);
    options
}

/// How many words a node reads of one request message at most. A request
/// is read twice (its size is measured before its fields are read), so
/// this is twice `request_bytes_max` plus headroom; a message larger than
/// this closes its connection when it arrives.
pub fn request_traversal_words(request_bytes_max: usize) -> usize {
    2 * request_bytes_max.div_ceil(8) + REQUEST_HEADROOM_WORDS
}

/// The limits a node's message readers use for its clients' requests.
pub fn server_reader_options(request_bytes_max: usize) -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(request_traversal_words(request_bytes_max)))
        .nesting_limit(NESTING_MAX);
    options
}

/// The Cap'n Proto network of one TCP connection, buffered as capnp-rpc
/// advises: unbuffered, every message costs a write call for its segment
/// table and one per segment, and a read call for each.
pub fn buffered_network(
    stream: tokio::net::TcpStream,
    side: capnp_rpc::rpc_twoparty_capnp::Side,
    options: ReaderOptions,
) -> capnp_rpc::twoparty::VatNetwork<
    futures::io::BufReader<tokio_util::compat::Compat<tokio::net::tcp::OwnedReadHalf>>,
> {
    use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    capnp_rpc::twoparty::VatNetwork::new(
        futures::io::BufReader::new(reader.compat()),
        futures::io::BufWriter::new(writer.compat_write()),
        side,
        options,
    )
}

/// The Cap'n Proto network of any byte stream (a TLS stream), buffered
/// like [`buffered_network`]. The stream is split with `tokio::io::split`,
/// which a plain TCP stream does not need (it splits for free).
pub fn buffered_stream_network<S>(
    stream: S,
    side: capnp_rpc::rpc_twoparty_capnp::Side,
    options: ReaderOptions,
) -> capnp_rpc::twoparty::VatNetwork<futures::io::BufReader<tokio_util::compat::Compat<tokio::io::ReadHalf<S>>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    buffered_halves_network(reader, writer, side, options)
}

/// The Cap'n Proto network of a byte stream's two halves, buffered like
/// [`buffered_network`].
pub fn buffered_halves_network<R, W>(
    reader: R,
    writer: W,
    side: capnp_rpc::rpc_twoparty_capnp::Side,
    options: ReaderOptions,
) -> capnp_rpc::twoparty::VatNetwork<futures::io::BufReader<tokio_util::compat::Compat<R>>>
where
    R: tokio::io::AsyncRead + Unpin + 'static,
    W: tokio::io::AsyncWrite + Unpin + 'static,
{
    use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
    capnp_rpc::twoparty::VatNetwork::new(
        futures::io::BufReader::new(reader.compat()),
        futures::io::BufWriter::new(writer.compat_write()),
        side,
        options,
    )
}

/// Runs an accepted connection's RPC system on this reactor until it ends,
/// and says how it ended: a TLS peer that left without close_notify is an
/// ordinary close, not an error.
pub fn spawn_connection(
    system: capnp_rpc::RpcSystem<capnp_rpc::rpc_twoparty_capnp::Side>,
    kind: &'static str,
    peer: std::net::SocketAddr,
    shard: usize,
) {
    tokio::task::spawn_local(async move {
        match system.await {
            Ok(()) => tracing::debug!(%peer, shard, "{kind} connection closed"),
            Err(error) if tls::closed_without_notify(&error) => {
                tracing::debug!(%peer, shard, "{kind} connection closed (TLS, no close_notify)")
            }
            Err(error) => tracing::info!(%peer, shard, %error, "{kind} connection closed on an error"),
        }
    });
}
