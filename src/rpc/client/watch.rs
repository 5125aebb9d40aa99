//! Watches in the client library: the `Watcher` the node calls lives here
//! and pushes what it receives into a bounded channel that the caller reads
//! with [`Watch::next`]. The channel is the client's end of flow control:
//! while it is full the `Watcher` does not return, so the node sends no
//! more (see `rpc::watch` and `shard::watch` for the rest of the path).

use std::cell::RefCell;

use tokio::sync::mpsc;

use super::{ClientError, Connection};
use crate::kv::types::Event;
use crate::kv::watch::WatchRequest;
use crate::nvkv_capnp::{watch_handle, watch_result, watcher};
use crate::rpc::kv::{read_error, read_header, Header, ServerError};

/// Messages a watch holds for its caller before the node is held back.
pub const WATCH_MESSAGES_BUFFERED: usize = 64;

/// What a watch hands its caller. Order holds within a group (the header
/// names it), not across groups: revisions are per group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// The next events of one group, in revision order; `header.revision`
    /// is the group's store revision when they were sent.
    Events { header: Header, events: Vec<Event> },
    /// Every event of `header.group` up to `header.revision` has been sent.
    Progress { header: Header },
    /// The watch ended and nothing follows; `error` says why (code
    /// `Compacted` with `compact_revision` when the history it needs is
    /// gone), `group` which group ended it (0 when the node stopped).
    Cancelled { group: u32, error: ServerError },
}

/// An open watch. Dropping it (or [`Watch::cancel`]) ends it on the node.
pub struct Watch {
    id: i64,
    handle: watch_handle::Client,
    receiver: mpsc::Receiver<WatchMessage>,
}

impl Watch {
    /// The node's name for this watch on its connection.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The next message, waiting for it; `None` once the connection closed
    /// (after `Cancelled`, nothing more comes either).
    pub async fn next(&mut self) -> Option<WatchMessage> {
        self.receiver.recv().await
    }

    /// Ends the watch and waits until the node confirms it sends nothing more.
    pub async fn cancel(self) -> Result<(), capnp::Error> {
        self.handle.cancel_request().send().promise.await.map(|_| ())
    }
}

/// The `Watcher` the node calls: hands each call to the caller's channel.
struct WatcherServer {
    /// Taken away on cancellation, so the caller's `next` ends after it.
    sender: RefCell<Option<mpsc::Sender<WatchMessage>>>,
}

impl WatcherServer {
    async fn push(&self, message: WatchMessage) -> Result<(), capnp::Error> {
        let sender = self.sender.borrow().clone();
        let Some(sender) = sender else {
            return Err(capnp::Error::failed("this watch was already cancelled".into()));
        };
        // Waits while the caller is behind: this is what holds the node back.
        sender.send(message).await.map_err(|_| capnp::Error::disconnected("the watch was dropped".into()))
    }
}

impl watcher::Server for WatcherServer {
    async fn events(
        self: capnp::capability::Rc<Self>,
        params: watcher::EventsParams,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let mut events = Vec::new();
        for event in params.get_events()? {
            events.push(crate::rpc::watch::read_event(event)?);
        }
        self.push(WatchMessage::Events { header: read_header(params.get_header()?), events }).await
    }

    async fn progress(
        self: capnp::capability::Rc<Self>,
        params: watcher::ProgressParams,
    ) -> Result<(), capnp::Error> {
        let header = read_header(params.get()?.get_header()?);
        self.push(WatchMessage::Progress { header }).await
    }

    async fn cancelled(
        self: capnp::capability::Rc<Self>,
        params: watcher::CancelledParams,
        _: watcher::CancelledResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let message =
            WatchMessage::Cancelled { group: params.get_group(), error: read_error(params.get_error()?)? };
        let pushed = self.push(message).await;
        self.sender.borrow_mut().take();
        pushed
    }
}

impl Connection {
    /// Opens a watch served by this connection's shard (which reaches the
    /// groups of the range on their own shards). Must be called inside the
    /// `LocalSet` the connection was opened in.
    pub async fn watch(&self, request: &WatchRequest) -> Result<Watch, ClientError> {
        let (sender, receiver) = mpsc::channel(WATCH_MESSAGES_BUFFERED);
        let watcher: watcher::Client =
            capnp_rpc::new_client(WatcherServer { sender: RefCell::new(Some(sender)) });
        // Pipelined: one round trip for the Watch capability and the call.
        let service = self.node().watch_request().send().pipeline.get_watch();
        let mut call = service.watch_request();
        crate::rpc::watch::set_watch_create(call.get().init_request(), request);
        call.get().set_watcher(watcher);
        let response = call.send().promise.await.map_err(|error| self.rpc_error(error))?;
        let decode = || -> capnp::Result<Result<Watch, ServerError>> {
            let result = response.get()?.get_result()?;
            Ok(match result.which()? {
                watch_result::Handle(handle) => {
                    Ok(Watch { id: result.get_watch_id(), handle: handle?, receiver })
                }
                watch_result::Error(error) => Err(read_error(error?)?),
            })
        };
        self.answer(decode())
    }
}
