//! The Watch interface of `schema/nvkv.capnp`: the server that opens a
//! watch through the shard's requests and calls the client's `Watcher` with
//! what the groups send, and the conversions between schema and store types
//! of watches (used by the server and the client library alike).
//!
//! The client's `Watcher` is a capnp client object, which is not `Send`: it
//! stays on the connection's shard, in a forwarding task that reads the
//! watch's feed (plain data, filled by a pump on each owning shard). The
//! forwarder awaits each streaming call, so the client's pace reaches the
//! pumps through the feed's bounded channel (see `shard::watch`). The watch
//! ends when the client cancels or drops its handle, when the connection
//! closes (which drops the handle), or when a group cancels it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::kv::{limit_error, server_error, set_error, set_header, set_key_value, ErrorCode, ServerError};
use crate::config::StoreConfig;
use crate::kv::limits::Limits;
use crate::kv::types::{Event, EventKind};
use crate::kv::watch::{CancelReason, WatchRequest};
use crate::nvkv_capnp::{event, watch, watch_create, watch_handle, watcher, EventKind as SchemaEventKind};
use crate::shard::answer::Answered;
use crate::shard::requests::Requests;
use crate::shard::watch::{WatchBatch, WatchBody, WatchBudget, WatchFeed, WatchOptions};

/// How a node serves watches, from its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchSettings {
    pub options: WatchOptions,
    pub watches_per_connection_max: usize,
}

impl WatchSettings {
    pub fn from_config(store: &StoreConfig) -> WatchSettings {
        WatchSettings {
            options: WatchOptions {
                progress_interval: Duration::from_millis(store.watch_progress_interval_ms),
                connection_bytes_max: store.watch_connection_bytes_max as usize,
                ..WatchOptions::default()
            },
            watches_per_connection_max: store.watches_per_connection_max as usize,
        }
    }
}

/// The watches of one client connection: how many are open, the next id,
/// and the byte budget their events share (made with the first watch).
#[derive(Debug, Default)]
pub struct ConnectionWatches {
    open: Cell<usize>,
    next_id: Cell<i64>,
    budget: std::cell::OnceCell<WatchBudget>,
}

impl ConnectionWatches {
    /// Watches open now.
    pub fn open(&self) -> usize {
        self.open.get()
    }
}

/// One open watch's place in its connection's count, given back on drop.
struct WatchSlot(Rc<ConnectionWatches>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// Serves the Watch interface on one connection, through its shard.
pub struct WatchServer {
    requests: Requests,
    settings: WatchSettings,
    connection: Rc<ConnectionWatches>,
    limits: Limits,
}

impl WatchServer {
    pub fn new(
        requests: Requests,
        settings: WatchSettings,
        connection: Rc<ConnectionWatches>,
        limits: Limits,
    ) -> WatchServer {
        WatchServer { requests, settings, connection, limits }
    }
}

impl watch::Server for WatchServer {
    async fn watch(
        self: capnp::capability::Rc<Self>,
        params: watch::WatchParams,
        mut results: watch::WatchResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let request = read_watch_create(params.get_request()?)?;
        let watcher = params.get_watcher()?;
        let mut result = results.get().init_result();
        if let Err(error) = self.limits.check_key(&request.key) {
            set_error(result.init_error(), &limit_error(&error));
            return Ok(());
        }
        let max = self.settings.watches_per_connection_max;
        if self.connection.open.get() >= max {
            let message = format!(
                "this connection already has {max} watches open (store.watches_per_connection_max); \
                 cancel one, or open another connection"
            );
            set_error(result.init_error(), &plain_error(ErrorCode::Unavailable, message));
            return Ok(());
        }
        // Counted before the wait, so concurrent calls cannot pass the limit together.
        self.connection.open.set(self.connection.open.get() + 1);
        let slot = WatchSlot(Rc::clone(&self.connection));
        let budget =
            self.connection.budget.get_or_init(|| WatchBudget::for_connection(&self.settings.options));
        match self.requests.watch(request, self.settings.options, budget.clone()).await {
            Ok(feed) => {
                let id = self.connection.next_id.get() + 1;
                self.connection.next_id.set(id);
                let forwarder = tokio::task::spawn_local(forward(feed, watcher, id, slot));
                let handle: watch_handle::Client =
                    capnp_rpc::new_client(WatchHandleServer { forwarder: forwarder.abort_handle() });
                result.set_handle(handle);
                result.set_watch_id(id);
            }
            Err(error) => set_error(result.init_error(), &server_error(&error)),
        }
        Ok(())
    }
}

/// Ends its watch when cancelled, or when the client lets go of it.
struct WatchHandleServer {
    forwarder: tokio::task::AbortHandle,
}

impl Drop for WatchHandleServer {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl watch_handle::Server for WatchHandleServer {
    async fn cancel(
        self: capnp::capability::Rc<Self>,
        _: watch_handle::CancelParams,
        _: watch_handle::CancelResults,
    ) -> Result<(), capnp::Error> {
        // The forwarder is not running while this runs (one thread), so it
        // makes no call to the watcher after this returns; dropping it drops
        // the feed, which cancels the hub watches.
        self.forwarder.abort();
        Ok(())
    }
}

fn plain_error(code: ErrorCode, message: String) -> ServerError {
    ServerError { code, message, leader_hint: 0, compact_revision: 0 }
}

/// The typed error a group's cancellation reaches the client as.
fn cancel_error(reason: &CancelReason) -> ServerError {
    match reason {
        CancelReason::Compacted { compact_revision } => ServerError {
            compact_revision: *compact_revision,
            ..plain_error(ErrorCode::Compacted, reason.to_string())
        },
        CancelReason::TooSlow { .. } => plain_error(ErrorCode::Unavailable, reason.to_string()),
    }
}

/// Calls the watcher with everything the feed brings, each streaming call
/// awaited before the next batch is read, until the watch ends.
async fn forward(mut feed: WatchFeed, watcher: watcher::Client, watch_id: i64, _slot: WatchSlot) {
    while let Some(batch) = feed.next().await {
        let sent = match &batch.body {
            WatchBody::Events(events) => {
                let mut request = watcher.events_request();
                let mut params = request.get();
                params.set_watch_id(watch_id);
                set_batch_header(params.reborrow().init_header(), &batch);
                let mut list = params.init_events(events.len() as u32);
                for (position, event) in events.iter().enumerate() {
                    set_event(list.reborrow().get(position as u32), event);
                }
                request.send().await
            }
            WatchBody::Progress => {
                let mut request = watcher.progress_request();
                request.get().set_watch_id(watch_id);
                set_batch_header(request.get().init_header(), &batch);
                request.send().await
            }
            WatchBody::Cancelled(reason) => {
                cancelled(&watcher, watch_id, batch.group, &cancel_error(reason)).await;
                return;
            }
        };
        if let Err(error) = sent {
            tracing::debug!(watch_id, %error, "the watcher failed a call; the watch ends");
            return;
        }
    }
    let error = plain_error(
        ErrorCode::Unavailable,
        "the node is stopping; watch again (from the revision after the last event) once it serves".into(),
    );
    cancelled(&watcher, watch_id, 0, &error).await;
}

async fn cancelled(watcher: &watcher::Client, watch_id: i64, group: u32, error: &ServerError) {
    let mut request = watcher.cancelled_request();
    request.get().set_watch_id(watch_id);
    request.get().set_group(group);
    set_error(request.get().init_error(), error);
    if let Err(failure) = request.send().promise.await {
        tracing::debug!(watch_id, %failure, "the watcher did not take its cancellation");
    }
}

fn set_batch_header(builder: crate::nvkv_capnp::response_header::Builder<'_>, batch: &WatchBatch) {
    let answer = Answered { group: batch.group, term: batch.term, member: batch.member, response: () };
    set_header(builder, &answer, batch.revision);
}

pub fn set_event(mut builder: event::Builder<'_>, event: &Event) {
    builder.set_kind(match event.kind {
        EventKind::Put => SchemaEventKind::Put,
        EventKind::Delete => SchemaEventKind::Delete,
    });
    set_key_value(builder.reborrow().init_kv(), &event.kv);
    if let Some(previous) = &event.prev_kv {
        builder.set_has_prev_kv(true);
        set_key_value(builder.init_prev_kv(), previous);
    }
}

pub fn read_event(reader: event::Reader<'_>) -> capnp::Result<Event> {
    let kind = match reader.get_kind()? {
        SchemaEventKind::Put => EventKind::Put,
        SchemaEventKind::Delete => EventKind::Delete,
    };
    let prev_kv =
        if reader.get_has_prev_kv() { Some(super::kv::read_key_value(reader.get_prev_kv()?)?) } else { None };
    Ok(Event { kind, kv: super::kv::read_key_value(reader.get_kv()?)?, prev_kv })
}

pub fn set_watch_create(mut builder: watch_create::Builder<'_>, request: &WatchRequest) {
    builder.set_key(&request.key);
    builder.set_range_end(&request.range_end);
    builder.set_start_revision(request.start_revision);
    builder.set_prev_kv(request.prev_kv);
    builder.set_no_put(request.no_put);
    builder.set_no_delete(request.no_delete);
    builder.set_progress_notify(request.progress_notify);
}

pub fn read_watch_create(reader: watch_create::Reader<'_>) -> capnp::Result<WatchRequest> {
    Ok(WatchRequest {
        key: reader.get_key()?.to_vec(),
        range_end: reader.get_range_end()?.to_vec(),
        start_revision: reader.get_start_revision(),
        prev_kv: reader.get_prev_kv(),
        no_put: reader.get_no_put(),
        no_delete: reader.get_no_delete(),
        progress_notify: reader.get_progress_notify(),
    })
}
