//! etcd's Watch service on one shard: one bidirectional stream carries
//! many watches (create, cancel, progress requests in; created, events,
//! progress, cancelled out). Each watch is a feed of the shard layer
//! (`shard::watch`), one hub watch per group its range reaches.
//!
//! Progress is answered per watch (etcd answers a stream once, with the
//! store's revision, and only when every watch on it is synced): a
//! RequestProgress asks every group of every watch for a progress batch,
//! which a group sends after every event up to the revision it reports;
//! a watch answers with its group's revision, or, over several groups,
//! with the lowest of theirs once each answered. So a progress revision
//! never runs ahead of what the watch delivered.
//!
//! This module must never let one slow watch grow memory: responses wait
//! for room in the stream's bounded queue, which holds back the feed, which
//! holds back the groups' pumps (see `shard::watch`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, status};
use super::kv::ShardLocal;
use super::proto::etcdserverpb as pb;
use crate::kv::watch::{CancelReason, WatchRequest};
use crate::raft::GroupId;
use crate::shard::watch::{ProgressHandle, WatchBatch, WatchBody, WatchBudget, WatchFeed};

/// Responses queued on one stream before its watches wait.
const RESPONSES_QUEUED: usize = 64;

/// Watches one stream may hold.
const WATCHES_PER_STREAM_MAX: usize = 10_000;

pub struct EtcdWatch {
    shard: ShardLocal,
}

impl EtcdWatch {
    pub fn new(shard: ShardLocal) -> EtcdWatch {
        EtcdWatch { shard }
    }
}

type Responses = mpsc::Sender<Result<pb::WatchResponse, Status>>;

type WatchStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for EtcdWatch {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let shard = self.shard.acting_for(&request)?;
        let incoming = request.into_inner();
        let (sender, mut receiver) = mpsc::channel(RESPONSES_QUEUED);
        let budget = WatchBudget::for_connection(&shard.info.watch);
        let stream = WatchStreamTask { shard, responses: sender, watches: Rc::default(), budget };
        tokio::task::spawn_local(stream.run(incoming));
        let responses = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
        Ok(Response::new(Box::pin(responses)))
    }
}

/// One watch of a stream, as the stream's task keeps it.
struct OpenWatch {
    /// Dropping it ends the watch's task, which drops the feed (cancelling
    /// the watch in every group).
    _stop: tokio::sync::oneshot::Sender<()>,
    progress: ProgressHandle,
}

/// The task that reads one stream's requests.
struct WatchStreamTask {
    shard: ShardLocal,
    responses: Responses,
    watches: Rc<RefCell<BTreeMap<i64, OpenWatch>>>,
    /// The bytes the events of the stream's watches may take on their way
    /// to the client, shared by its watches.
    budget: WatchBudget,
}

impl WatchStreamTask {
    async fn run(self, mut incoming: Streaming<pb::WatchRequest>) {
        let mut next_id = 0i64;
        loop {
            let request = tokio::select! {
                message = incoming.message() => message,
                _ = self.responses.closed() => return,
            };
            let request = match request {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(error) => {
                    tracing::debug!(%error, "an etcd watch stream ended");
                    return;
                }
            };
            use pb::watch_request::RequestUnion;
            match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => {
                    let id = if create.watch_id != 0 { create.watch_id } else { self.free_id(&mut next_id) };
                    if let Err(refusal) = self.create(id, create).await {
                        let _ = self.responses.send(Err(refusal)).await;
                        return;
                    }
                }
                Some(RequestUnion::CancelRequest(cancel)) => {
                    let removed = self.watches.borrow_mut().remove(&cancel.watch_id);
                    if removed.is_some() {
                        let _ = self.responses.send(Ok(cancelled(&self.shard, cancel.watch_id, None))).await;
                    }
                }
                Some(RequestUnion::ProgressRequest(_)) => {
                    self.watches.borrow().values().for_each(|watch| watch.progress.request());
                }
                None => {}
            }
        }
    }

    /// The lowest watch id from `next` on that no watch of the stream has.
    fn free_id(&self, next: &mut i64) -> i64 {
        let watches = self.watches.borrow();
        while watches.contains_key(next) {
            *next += 1;
        }
        let id = *next;
        *next += 1;
        id
    }

    /// Opens a watch and answers `created`; a refusal the client can fix
    /// (a bad range, too many watches) answers a cancelled watch instead, as
    /// etcd does. Err ends the stream.
    async fn create(&self, id: i64, create: pb::WatchCreateRequest) -> Result<(), Status> {
        if self.watches.borrow().contains_key(&id) {
            let reason = format!("watch id {id} is in use on this stream; give another id or 0 for any");
            return self.refuse(id, reason).await;
        }
        if self.watches.borrow().len() >= WATCHES_PER_STREAM_MAX {
            let reason =
                format!("a stream holds at most {WATCHES_PER_STREAM_MAX} watches; open another stream");
            return self.refuse(id, reason).await;
        }
        if create.key.is_empty() {
            return self.refuse(id, "etcdserver: key is not provided".into()).await;
        }
        let filters =
            |filter: pb::watch_create_request::FilterType| create.filters.contains(&(filter as i32));
        let request = WatchRequest {
            key: create.key.clone(),
            range_end: create.range_end.clone(),
            start_revision: create.start_revision,
            prev_kv: create.prev_kv,
            no_put: filters(pb::watch_create_request::FilterType::Noput),
            no_delete: filters(pb::watch_create_request::FilterType::Nodelete),
            progress_notify: create.progress_notify,
        };
        let groups = self.shard.requests()?.groups_of_range(&request.key, &request.range_end);
        let feed =
            match self.shard.requests()?.watch(request, self.shard.info.watch, self.budget.clone()).await {
                Ok(feed) => feed,
                Err(error) => return self.refuse(id, status(error).message().to_string()).await,
            };
        let created = pb::WatchResponse {
            header: convert::header(&self.shard.info, 0, feed.started_after),
            watch_id: id,
            created: true,
            ..pb::WatchResponse::default()
        };
        self.responses.send(Ok(created)).await.map_err(|_| Status::cancelled("the stream closed"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let progress = feed.progress_requests();
        self.watches.borrow_mut().insert(id, OpenWatch { _stop: stop, progress });
        let forward = Forward {
            shard: self.shard.clone(),
            id,
            responses: self.responses.clone(),
            fragment: create.fragment,
            progress: groups.into_iter().map(|group| (group, None)).collect(),
            watches: Rc::clone(&self.watches),
        };
        tokio::task::spawn_local(async move {
            tokio::select! {
                _ = forward.run(feed) => {}
                _ = stopped => {}
            }
        });
        Ok(())
    }

    async fn refuse(&self, id: i64, reason: String) -> Result<(), Status> {
        let created = pb::WatchResponse {
            header: convert::header(&self.shard.info, 0, 0),
            watch_id: id,
            created: true,
            ..pb::WatchResponse::default()
        };
        let closed = |_| Status::cancelled("the stream closed");
        self.responses.send(Ok(created)).await.map_err(closed)?;
        self.responses.send(Ok(cancelled(&self.shard, id, Some(reason)))).await.map_err(closed)
    }
}

fn cancelled(shard: &ShardLocal, id: i64, reason: Option<String>) -> pb::WatchResponse {
    pb::WatchResponse {
        header: convert::header(&shard.info, 0, 0),
        watch_id: id,
        canceled: true,
        cancel_reason: reason.unwrap_or_default(),
        ..pb::WatchResponse::default()
    }
}

/// Sends one watch's batches to its stream.
struct Forward {
    shard: ShardLocal,
    id: i64,
    responses: Responses,
    fragment: bool,
    /// The groups of the watch, with the progress each reported since the
    /// watch last reported one.
    progress: BTreeMap<GroupId, Option<i64>>,
    watches: Rc<RefCell<BTreeMap<i64, OpenWatch>>>,
}

impl Forward {
    async fn run(mut self, mut feed: WatchFeed) {
        loop {
            let Some(batch) = feed.next().await else {
                let reason = "the member is stopping; watch again from the revision after the last event";
                let _ = self.responses.send(Ok(cancelled(&self.shard, self.id, Some(reason.into())))).await;
                self.watches.borrow_mut().remove(&self.id);
                return;
            };
            if !self.forward(batch).await {
                self.watches.borrow_mut().remove(&self.id);
                return;
            }
        }
    }

    /// Sends one batch's responses; false once the watch or stream ended.
    async fn forward(&mut self, batch: WatchBatch) -> bool {
        // The batch's room in the stream's budget is given back once its
        // responses are queued for the client.
        let WatchBatch { group, revision, term, body, held: _held, .. } = batch;
        match body {
            WatchBody::Events(events) => {
                let response = pb::WatchResponse {
                    header: convert::header(&self.shard.info, term, revision),
                    watch_id: self.id,
                    events: events.into_iter().map(convert::event).collect(),
                    ..pb::WatchResponse::default()
                };
                for part in self.fragments(response) {
                    if self.responses.send(Ok(part)).await.is_err() {
                        return false;
                    }
                }
                true
            }
            WatchBody::Progress => {
                self.progress.insert(group, Some(revision));
                if self.progress.values().any(Option::is_none) {
                    return true;
                }
                let lowest = self.progress.values().flatten().copied().min().unwrap_or(revision);
                self.progress.values_mut().for_each(|reported| *reported = None);
                let response = pb::WatchResponse {
                    header: convert::header(&self.shard.info, term, lowest),
                    watch_id: self.id,
                    ..pb::WatchResponse::default()
                };
                self.responses.send(Ok(response)).await.is_ok()
            }
            WatchBody::Cancelled(reason) => {
                let mut response = cancelled(&self.shard, self.id, Some(reason.to_string()));
                if let CancelReason::Compacted { compact_revision } = reason {
                    response.compact_revision = compact_revision;
                    response.cancel_reason = convert::ERROR_COMPACTED.to_string();
                }
                let _ = self.responses.send(Ok(response)).await;
                false
            }
        }
    }

    /// A response split into fragments of at most `store.request_bytes_max`
    /// each (whole events), when the watch asked for fragments; every
    /// fragment but the last says more follow (etcd's `fragment`).
    fn fragments(&self, response: pb::WatchResponse) -> Vec<pb::WatchResponse> {
        use prost::Message;
        let limit = self.shard.info.limits.request_bytes_max;
        if !self.fragment || response.encoded_len() <= limit {
            return vec![response];
        }
        let mut template = response;
        let events = std::mem::take(&mut template.events);
        let mut parts = vec![template.clone()];
        let mut bytes = 0;
        for event in events {
            let size = event.encoded_len();
            let current = parts.last_mut().expect("one part at least");
            if !current.events.is_empty() && bytes + size > limit {
                parts.push(template.clone());
                bytes = 0;
            }
            bytes += size;
            parts.last_mut().expect("one part at least").events.push(event);
        }
        let last = parts.len() - 1;
        for (index, part) in parts.iter_mut().enumerate() {
            part.fragment = index < last;
        }
        parts
    }
}
