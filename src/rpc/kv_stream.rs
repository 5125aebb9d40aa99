//! The KV stream, the node's side (schema/nvkv.capnp, "The KV stream"):
//! one connection's KV calls taken straight from its messages and handed
//! to the shard's request handle, without the RPC layer's questions,
//! answers, promises and capabilities. Calls run concurrently; every reply
//! that is ready when the connection's task runs goes out in one message
//! and one write, so a connection with many calls in flight pays one read
//! and one write per reactor turn, not one per call.
//!
//! It owns the stream's framing, its bounds (one message, calls in flight
//! per connection, replies per message) and the `reply written` hop of the
//! latency budget. Limits and refusals are the KV interface's
//! (`kv::answer_request`). A message that does not decode, or is larger
//! than the node reads, closes this connection alone. It must never block
//! the reactor and never answer a call twice or not at all while the
//! connection lives.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};

use super::frames::{self, FrameError, FrameReader, FrameWriter};
use super::kv::{
    answer_request, measure_request, read_delete_range_request, read_put_request, read_range_request,
    read_txn_request, server_error, set_delete_range_result, set_error, set_put_result, set_range_result,
    set_txn_result, KvAnswer, KvRequest, ServerError,
};
use crate::kv::limits::Limits;
use crate::kv::types::{KeyValue, ResponseOp, TxnResponse};
use crate::nvkv_capnp::{kv_call, kv_calls, kv_open, kv_opened, kv_replies};
use crate::shard::requests::Requests;
use crate::shard::stages::Hop;

/// The first 8 bytes of a KV stream, from the client and back from the node.
pub const KV_STREAM_MAGIC: [u8; 8] = *b"nvkvKVS1";
/// The first 8 bytes of a KV stream that carries a session: a `KvOpen`
/// message follows them, a `KvOpened` message follows the node's.
pub const KV_STREAM_SESSION_MAGIC: [u8; 8] = *b"nvkvKVS2";

/// How a KV stream opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Version 1: acting for the connection's user.
    Plain,
    /// Version 2: a session token (or none) follows.
    Session,
}

impl Opening {
    /// The opening `first` bytes name, if they open a KV stream.
    pub fn of(first: &[u8; 8]) -> Option<Opening> {
        match *first {
            KV_STREAM_MAGIC => Some(Opening::Plain),
            KV_STREAM_SESSION_MAGIC => Some(Opening::Session),
            _ => None,
        }
    }

    /// Whether `first` (fewer than 8 bytes, maybe) may still become an opening.
    pub fn may_start(first: &[u8]) -> bool {
        [KV_STREAM_MAGIC, KV_STREAM_SESSION_MAGIC].iter().any(|magic| magic.starts_with(first))
    }
}
/// A reply message is closed once it passes this many bytes (one reply may
/// pass it alone), so one message stays well under what a client reads.
pub const REPLY_MESSAGE_BYTES_TARGET: usize = 1 << 20;

/// What a call was answered.
enum Answer {
    Kv(KvAnswer),
    Ping,
}

struct Reply {
    id: u64,
    /// When the message that carried the call was read.
    received: Instant,
    /// When its answer was ready.
    answered: Instant,
    answer: Answer,
}

type Call = Pin<Box<dyn Future<Output = Reply>>>;

/// What a KV stream starts from: its opening (its 8 bytes were read
/// already), the request handle acting for the connection's user, and how
/// long a session's `KvOpen` may take to arrive.
pub struct Spawn {
    pub opening: Opening,
    pub requests: Requests,
    pub limits: Limits,
    pub open_deadline: Duration,
    /// Calls the connection may have in flight
    /// (`limits.calls_in_flight_per_connection_max`); beyond, the node
    /// reads no more of its messages until some are answered.
    pub calls_in_flight_max: usize,
    pub peer: SocketAddr,
    pub shard: usize,
}

/// Serves one KV stream on this reactor until the client closes it (after
/// every call it sent is answered) or it fails. The node's opening is sent
/// first (with a session's `KvOpened`).
pub fn spawn<R, W>(reader: R, writer: W, spawn: Spawn)
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let Spawn { opening, requests, limits, open_deadline, calls_in_flight_max, peer, shard } = spawn;
    let options = super::server_reader_options(limits.request_bytes_max);
    let message_words_max = super::request_traversal_words(limits.request_bytes_max);
    let mut stream = StreamServer {
        reader,
        writer,
        frames: FrameReader::new(message_words_max, options),
        calls: FuturesUnordered::new(),
        outbox: Vec::new(),
        out: FrameWriter::new(KV_STREAM_MAGIC.to_vec()),
        in_write: Vec::new(),
        requests: Rc::new(requests),
        limits,
        calls_in_flight_max: calls_in_flight_max.max(1),
        source: crate::shard::propose::new_source(),
        read_closed: false,
    };
    tokio::task::spawn_local(async move {
        let served = async {
            if opening == Opening::Session {
                let open = std::future::poll_fn(|context| stream.poll_open(context));
                let token = tokio::time::timeout(open_deadline, open).await.map_err(|_| {
                    FrameError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no KvOpen within {open_deadline:?} (limits.handshake_timeout_ms)"),
                    ))
                })??;
                if let Err(refusal) = stream.open_session(&token) {
                    std::future::poll_fn(|context| stream.out.poll_out(context, &mut stream.writer)).await?;
                    return Err(FrameError::Refused(refusal));
                }
            }
            std::future::poll_fn(|context| stream.poll_serve(context)).await
        };
        match served.await {
            Ok(()) => tracing::debug!(%peer, shard, "KV stream closed"),
            Err(error) => tracing::info!(%peer, shard, "KV stream closed on an error: {error}"),
        }
    });
}

struct StreamServer<R, W> {
    reader: R,
    writer: W,
    frames: FrameReader,
    calls: FuturesUnordered<Call>,
    /// Replies ready and not yet encoded.
    outbox: Vec<Reply>,
    /// The message being written.
    out: FrameWriter,
    /// When the replies of the message being written were answered.
    in_write: Vec<Instant>,
    requests: Rc<Requests>,
    limits: Limits,
    calls_in_flight_max: usize,
    /// This connection, as the groups' proposal queues tell their sources apart.
    source: u64,
    read_closed: bool,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> StreamServer<R, W> {
    /// Reads a session stream's `KvOpen`: ready with its token.
    fn poll_open(&mut self, context: &mut Context<'_>) -> Poll<Result<String, FrameError>> {
        loop {
            if let Some((message, _)) = self.frames.next_message()? {
                let token = message
                    .get_root::<kv_open::Reader<'_>>()?
                    .get_token()?
                    .to_string()
                    .map_err(capnp::Error::from)?;
                return Poll::Ready(Ok(token));
            }
            match self.frames.poll_fill(context, &mut self.reader) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(FrameError::Truncated)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Acts for the user `token` names (an empty token: the connection's)
    /// and queues the node's opening and its `KvOpened`; a token that does
    /// not name a user is refused, the refusal queued instead.
    fn open_session(&mut self, token: &str) -> Result<(), ServerError> {
        let session = match token {
            "" => Ok(None),
            token => self.requests.session(token).map(Some).map_err(|error| server_error(&error)),
        };
        let mut message = capnp::message::Builder::new_default();
        let mut opened = message.init_root::<kv_opened::Builder<'_>>();
        match &session {
            Ok(_) => opened.set_ok(()),
            Err(refusal) => set_error(opened.init_error(), refusal),
        }
        let mut bytes = KV_STREAM_SESSION_MAGIC.to_vec();
        frames::encode(&message, &mut bytes);
        self.out = FrameWriter::new(bytes);
        if let Some(caller) = session? {
            self.requests = Rc::new(self.requests.with_caller(caller));
        }
        Ok(())
    }

    fn poll_serve(&mut self, context: &mut Context<'_>) -> Poll<Result<(), FrameError>> {
        loop {
            let mut progress = false;
            while self.calls.len() < self.calls_in_flight_max && self.frames.has_message()? {
                self.take_message()?;
                progress = true;
            }
            if !self.read_closed && self.calls.len() < self.calls_in_flight_max {
                match self.frames.poll_fill(context, &mut self.reader) {
                    Poll::Ready(Ok(0)) => self.read_closed = true,
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {}
                }
            }
            while let Poll::Ready(Some(reply)) = self.calls.poll_next_unpin(context) {
                self.outbox.push(reply);
                progress = true;
            }
            match self.poll_write(context)? {
                Poll::Ready(wrote) => progress |= wrote,
                Poll::Pending => {}
            }
            let idle = self.calls.is_empty() && self.outbox.is_empty() && self.out.is_done();
            if self.read_closed && idle && !self.frames.has_message()? {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Writes what is pending, starting the next message when the last one
    /// went out. Ready(true) when anything moved; Pending while the socket
    /// is full.
    fn poll_write(&mut self, context: &mut Context<'_>) -> Result<Poll<bool>, FrameError> {
        let mut moved = false;
        loop {
            match self.out.poll_out(context, &mut self.writer) {
                Poll::Ready(Ok(wrote)) => moved |= wrote,
                Poll::Ready(Err(error)) => return Err(error.into()),
                Poll::Pending => return Ok(Poll::Pending),
            }
            self.record_written();
            if self.outbox.is_empty() {
                return Ok(Poll::Ready(moved));
            }
            self.encode_outbox();
        }
    }

    /// The replies of the message just written are on their way.
    fn record_written(&mut self) {
        if self.in_write.is_empty() {
            return;
        }
        let now = Instant::now();
        crate::shard::local_stages().record(|stages| {
            let histogram = stages.hop_mut(Hop::ReplyWritten);
            for answered in self.in_write.drain(..) {
                histogram.record(now.saturating_duration_since(answered));
            }
        });
    }

    /// Puts ready replies into the next message, up to its size target.
    fn encode_outbox(&mut self) {
        let now = Instant::now();
        let mut bytes = 0;
        let mut taken = 0;
        for reply in &self.outbox {
            taken += 1;
            bytes += reply_bytes(&reply.answer);
            if bytes > REPLY_MESSAGE_BYTES_TARGET {
                break;
            }
        }
        let words = (bytes / 8 + 16).min(REPLY_MESSAGE_BYTES_TARGET / 8) as u32;
        let mut message =
            capnp::message::Builder::new(capnp::message::HeapAllocator::new().first_segment_words(words));
        let mut list = message.init_root::<kv_replies::Builder<'_>>().init_replies(taken as u32);
        for (position, reply) in self.outbox.drain(..taken).enumerate() {
            let mut out = list.reborrow().get(position as u32);
            out.set_id(reply.id);
            out.set_server_nanos(u64::try_from((now - reply.received).as_nanos()).unwrap_or(u64::MAX));
            match &reply.answer {
                Answer::Ping => out.set_ping(()),
                Answer::Kv(KvAnswer::Put(answer)) => set_put_result(out.init_put(), answer),
                Answer::Kv(KvAnswer::Range(answer)) => set_range_result(out.init_range(), answer),
                Answer::Kv(KvAnswer::DeleteRange(answer)) => {
                    set_delete_range_result(out.init_delete_range(), answer)
                }
                Answer::Kv(KvAnswer::Txn(answer)) => set_txn_result(out.init_txn(), answer),
            }
            self.in_write.push(reply.answered);
        }
        frames::encode(&message, self.out.next_message());
    }

    /// Takes the calls of the next message: each one checked and handed to
    /// the shard, a ping answered at once.
    fn take_message(&mut self) -> Result<(), FrameError> {
        let received = Instant::now();
        let Some((message, message_bytes)) = self.frames.next_message()? else { return Ok(()) };
        crate::reactor::note_activity();
        // A message no larger than one request may be holds no call over
        // the limit: its calls need not be measured one by one.
        let fits = (message_bytes <= self.limits.request_bytes_max).then_some(message_bytes);
        let calls = message.get_root::<kv_calls::Reader<'_>>()?.get_calls()?;
        for call in calls {
            let id = call.get_id();
            let request = match read_call(&self.limits, call, fits)? {
                Read::Ping => {
                    self.outbox.push(Reply { id, received, answered: received, answer: Answer::Ping });
                    continue;
                }
                Read::Refused(answer) => {
                    self.outbox.push(Reply { id, received, answered: received, answer: Answer::Kv(answer) });
                    continue;
                }
                Read::Request(bytes, request) => (bytes, request),
            };
            let (requests, limits) = (self.requests.clone(), self.limits);
            self.calls.push(Box::pin(crate::shard::propose::as_source(self.source, async move {
                let answer = answer_request(&requests, &limits, request.0, request.1).await;
                Reply { id, received, answered: Instant::now(), answer: Answer::Kv(answer) }
            })));
        }
        Ok(())
    }
}

/// What one call of a message asks.
enum Read {
    Ping,
    /// Refused before it was read: too large or too deeply nested.
    Refused(KvAnswer),
    /// Its size as it arrived, and the request.
    Request(usize, KvRequest),
}

/// Reads one call. `fits` is the size of its message when that is within
/// the request limit: a flat call (all but a txn, which may nest too deep
/// and is refused typed for it) is then not measured on its own.
fn read_call(limits: &Limits, call: kv_call::Reader<'_>, fits: Option<usize>) -> capnp::Result<Read> {
    use kv_call::Which;
    let which = call.which()?;
    let measured = match (fits, &which) {
        (Some(bytes), Which::Put(_) | Which::Range(_) | Which::DeleteRange(_) | Which::Ping(())) => Ok(bytes),
        _ => measure_request(limits, call.total_size())?,
    };
    let bytes = match measured {
        Ok(bytes) => bytes,
        Err(error) => {
            let refused = |error: ServerError| match which {
                Which::Put(_) => Read::Refused(KvAnswer::Put(Err(error))),
                Which::Range(_) => Read::Refused(KvAnswer::Range(Err(error))),
                Which::DeleteRange(_) => Read::Refused(KvAnswer::DeleteRange(Err(error))),
                Which::Txn(_) => Read::Refused(KvAnswer::Txn(Err(error))),
                Which::Ping(()) => Read::Ping,
            };
            return Ok(refused(error));
        }
    };
    Ok(match which {
        Which::Ping(()) => Read::Ping,
        Which::Put(put) => Read::Request(bytes, KvRequest::Put(read_put_request(put?)?)),
        Which::Range(range) => {
            let range = range?;
            Read::Request(
                bytes,
                KvRequest::Range {
                    request: read_range_request(range.get_request()?)?,
                    linearizable: !range.get_serializable(),
                },
            )
        }
        Which::DeleteRange(delete) => {
            Read::Request(bytes, KvRequest::DeleteRange(read_delete_range_request(delete?)?))
        }
        Which::Txn(txn) => Read::Request(bytes, KvRequest::Txn(read_txn_request(txn?)?)),
    })
}

/// What a reply costs in a message beside its keys and values, about.
const REPLY_FIXED_BYTES: usize = 96;

/// About how many bytes a reply takes in a message: its keys and values,
/// and a little for everything else.
fn reply_bytes(answer: &Answer) -> usize {
    REPLY_FIXED_BYTES
        + match answer {
            Answer::Ping => 0,
            Answer::Kv(KvAnswer::Put(put)) => {
                put.as_ref().map_or(0, |put| kvs_bytes(put.response.prev_kv.iter()))
            }
            Answer::Kv(KvAnswer::Range(range)) => {
                range.as_ref().map_or(0, |range| kvs_bytes(range.response.kvs.iter()))
            }
            Answer::Kv(KvAnswer::DeleteRange(delete)) => {
                delete.as_ref().map_or(0, |delete| kvs_bytes(delete.response.prev_kvs.iter()))
            }
            Answer::Kv(KvAnswer::Txn(txn)) => txn.as_ref().map_or(0, |txn| txn_bytes(&txn.response)),
        }
}

fn kvs_bytes<'a>(kvs: impl Iterator<Item = &'a KeyValue>) -> usize {
    kvs.map(|kv| kv.key.len() + kv.value.len() + REPLY_FIXED_BYTES).sum()
}

fn txn_bytes(txn: &TxnResponse) -> usize {
    let response_bytes = |response: &ResponseOp| match response {
        ResponseOp::Range(range) => kvs_bytes(range.kvs.iter()),
        ResponseOp::Put(put) => kvs_bytes(put.prev_kv.iter()),
        ResponseOp::DeleteRange(delete) => kvs_bytes(delete.prev_kvs.iter()),
        ResponseOp::Txn(nested) => txn_bytes(nested),
    };
    txn.responses.iter().map(|response| REPLY_FIXED_BYTES + response_bytes(response)).sum()
}
