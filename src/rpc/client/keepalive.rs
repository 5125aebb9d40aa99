//! Keeping an idle connection open: a node closes a client connection that
//! holds no watch and sends nothing for `limits.idle_timeout_ms`, and the
//! client library does not reconnect. So every connection pings its node
//! (`Node.ping`, which answers that timeout) and its KV stream, if it has
//! one, three times per idle timeout, whether or not it is busy: a ping is
//! a few bytes, and an idle connection stays as ready as a busy one.
//!
//! The pinging task holds the connection weakly: it ends at its next ping
//! once every clone of the `Connection` is gone, or once the node closed
//! the connection.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::nvkv_capnp::node;
use crate::rpc::kv_stream_client::{KvStream, WeakKvStream};

/// The pause between pings when the node does not say its idle timeout
/// (a node without `Node.ping`): a third of the default timeout.
const PING_EVERY_UNKNOWN: Duration = Duration::from_secs(200);
/// The shortest pause between pings, whatever the node says.
const PING_EVERY_MIN: Duration = Duration::from_millis(100);

/// What the pinging task of one connection reaches, shared by its clones.
#[derive(Default)]
pub(super) struct Liveness {
    stream: RefCell<Option<WeakKvStream>>,
}

impl Liveness {
    /// The KV stream to ping from now on, or none.
    pub(super) fn set_stream(&self, stream: Option<&KvStream>) {
        self.stream.replace(stream.map(KvStream::downgrade));
    }
}

/// Starts pinging the connection of `node` (at `endpoint`) while
/// `liveness` lives.
pub(super) fn start(liveness: &Rc<Liveness>, node: node::Client, endpoint: &str) {
    let (liveness, endpoint) = (Rc::downgrade(liveness), endpoint.to_string());
    tokio::task::spawn_local(ping_while_alive(liveness, node, endpoint));
}

async fn ping_while_alive(liveness: Weak<Liveness>, node: node::Client, endpoint: String) {
    loop {
        let every = match node.ping_request().send().promise.await {
            Ok(response) => match response.get().map(|answer| answer.get_idle_timeout_ms()) {
                Ok(0) | Err(_) => PING_EVERY_UNKNOWN,
                Ok(idle_ms) => Duration::from_millis(idle_ms / 3),
            },
            // An older node answers that it has no such call: the bytes
            // still count as traffic.
            Err(error) if error.kind == capnp::ErrorKind::Unimplemented => PING_EVERY_UNKNOWN,
            Err(error) => {
                tracing::debug!(%endpoint, "the connection stopped; no more pings: {error}");
                return;
            }
        };
        tokio::time::sleep(every.max(PING_EVERY_MIN)).await;
        let Some(liveness) = liveness.upgrade() else { return };
        let stream = liveness.stream.borrow().as_ref().and_then(WeakKvStream::upgrade);
        if let Some(stream) = stream {
            stream.keep_alive();
        }
    }
}
