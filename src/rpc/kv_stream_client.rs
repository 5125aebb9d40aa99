//! The KV stream, the client's side (schema/nvkv.capnp, "The KV stream"):
//! calls made on one connection by any number of tasks of this thread are
//! gathered, and every call queued when the stream's task runs goes out in
//! one message and one write; replies are matched back to their callers by
//! id. The client library uses it for the KV calls of a shard connection,
//! so concurrent clients share messages without knowing it.
//!
//! It owns the ids of its calls and the rule that every call gets exactly
//! one answer: its reply, or the stream's failure once the connection
//! fails (a call may then have taken effect on the node; the caller cannot
//! know, as with any lost connection).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::client::{DeleteAnswer, PutAnswer, RangeAnswer, TxnAnswer};
use super::frames::{self, FrameError, FrameReader, FrameWriter};
use super::kv::{self, KvRequest, ServerError};
use super::kv_stream::{KV_STREAM_MAGIC, KV_STREAM_SESSION_MAGIC};
use crate::nvkv_capnp::{kv_calls, kv_open, kv_opened, kv_replies, kv_reply};

/// Calls one message carries at most; more wait for the next.
pub const CALLS_PER_MESSAGE_MAX: usize = 1024;
/// A call message is closed once it passes this many bytes (a single call
/// may pass it alone: the node's limit on one call still holds).
pub const CALL_MESSAGE_BYTES_TARGET: usize = 256 << 10;

/// A call as the stream sends it.
#[derive(Clone, Debug)]
pub enum StreamCall {
    Kv(KvRequest),
    Ping,
}

/// A reply, decoded.
#[derive(Debug)]
pub enum Replied {
    Put(Result<PutAnswer, ServerError>),
    Range(Result<RangeAnswer, ServerError>),
    DeleteRange(Result<DeleteAnswer, ServerError>),
    Txn(Result<TxnAnswer, ServerError>),
    Ping,
}

/// A reply and the time the node said the call spent in it.
pub type Served = (Replied, Duration);

type Answer = Result<Served, String>;

struct State {
    endpoint: String,
    next_id: Cell<u64>,
    /// Calls not yet encoded.
    outbox: RefCell<Vec<(u64, StreamCall)>>,
    /// Where each sent call's answer goes.
    waiting: RefCell<HashMap<u64, oneshot::Sender<Answer>>>,
    /// The stream's task, to wake when a call is queued.
    task: RefCell<Option<Waker>>,
    /// Why the stream stopped, once it did.
    failed: RefCell<Option<String>>,
}

impl Drop for State {
    fn drop(&mut self) {
        // The stream's task ends once it sees the last handle gone.
        if let Some(task) = self.task.get_mut().take() {
            task.wake();
        }
    }
}

/// One KV stream to a node. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct KvStream {
    state: Rc<State>,
}

impl KvStream {
    /// Opens a KV stream over a fresh connection's halves: sends the
    /// opening bytes and waits for the node's within `timeout` (a node that
    /// does not speak KV streams closes the connection instead). With a
    /// session `token` the stream acts for its user (version 2 of the
    /// opening); without, for the connection's (version 1, which every
    /// node speaks). Must run inside a `LocalSet`: the stream's task runs
    /// there.
    pub async fn open<R, W>(
        mut reader: R,
        mut writer: W,
        endpoint: &str,
        timeout: Duration,
        token: Option<&str>,
    ) -> Result<KvStream, OpenError>
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let mut frames = FrameReader::new(super::MESSAGE_WORDS_MAX, super::reader_options());
        let magic = if token.is_some() { KV_STREAM_SESSION_MAGIC } else { KV_STREAM_MAGIC };
        let opening = async {
            let mut first = magic.to_vec();
            if let Some(token) = token {
                let mut message = capnp::message::Builder::new_default();
                message.init_root::<kv_open::Builder<'_>>().set_token(token);
                frames::encode(&message, &mut first);
            }
            writer.write_all(&first).await.map_err(|error| error.to_string())?;
            writer.flush().await.map_err(|error| error.to_string())?;
            let mut answer = [0u8; 8];
            reader.read_exact(&mut answer).await.map_err(|error| error.to_string())?;
            if answer != magic {
                return Err(format!("it answered the opening with {answer:?}"));
            }
            if token.is_none() {
                return Ok(Ok(()));
            }
            std::future::poll_fn(|context| poll_opened(&mut frames, context, &mut reader))
                .await
                .map_err(|error| error.to_string())
        };
        let failed =
            |reason: String| OpenError::Failed(format!("{endpoint} did not open a KV stream: {reason}"));
        match tokio::time::timeout(timeout, opening).await {
            Err(_) => return Err(failed(format!("no answer within {} ms", timeout.as_millis()))),
            Ok(Err(reason)) => return Err(failed(reason)),
            Ok(Ok(Err(refusal))) => return Err(OpenError::Refused(refusal)),
            Ok(Ok(Ok(()))) => {}
        }
        let state = Rc::new(State {
            endpoint: endpoint.to_string(),
            next_id: Cell::new(0),
            outbox: RefCell::default(),
            waiting: RefCell::default(),
            task: RefCell::default(),
            failed: RefCell::default(),
        });
        let mut driver = Driver {
            state: Rc::downgrade(&state),
            reader,
            writer,
            frames,
            out: FrameWriter::new(Vec::new()),
        };
        let shown = endpoint.to_string();
        tokio::task::spawn_local(async move {
            if let Err(reason) = std::future::poll_fn(|context| driver.poll_drive(context)).await {
                tracing::debug!(endpoint = %shown, "KV stream stopped: {reason}");
                driver.fail(&reason);
            }
        });
        Ok(KvStream { state })
    }

    /// A handle that does not keep the stream open.
    pub fn downgrade(&self) -> WeakKvStream {
        WeakKvStream(Rc::downgrade(&self.state))
    }

    /// Sends a ping whose reply nobody waits for: traffic that keeps an
    /// idle stream open (see `limits.idle_timeout_ms`).
    pub fn keep_alive(&self) {
        if self.state.failed.borrow().is_some() {
            return;
        }
        let id = self.state.next_id.get();
        self.state.next_id.set(id + 1);
        // The receiver is gone: the reply is matched and dropped.
        let (sender, _) = oneshot::channel();
        self.state.waiting.borrow_mut().insert(id, sender);
        self.state.outbox.borrow_mut().push((id, StreamCall::Ping));
        if let Some(task) = self.state.task.borrow().as_ref() {
            task.wake_by_ref();
        }
    }

    /// Sends `call` with the others queued now and waits for its reply.
    pub async fn call(&self, call: StreamCall) -> Answer {
        if let Some(reason) = self.state.failed.borrow().as_ref() {
            return Err(reason.clone());
        }
        let id = self.state.next_id.get();
        self.state.next_id.set(id + 1);
        let (sender, receiver) = oneshot::channel();
        self.state.waiting.borrow_mut().insert(id, sender);
        self.state.outbox.borrow_mut().push((id, call));
        if let Some(task) = self.state.task.borrow().as_ref() {
            task.wake_by_ref();
        }
        receiver.await.unwrap_or_else(|_| Err(format!("the KV stream to {} stopped", self.state.endpoint)))
    }
}

/// A KV stream, if it is still open somewhere.
#[derive(Clone)]
pub struct WeakKvStream(std::rc::Weak<State>);

impl WeakKvStream {
    pub fn upgrade(&self) -> Option<KvStream> {
        self.0.upgrade().map(|state| KvStream { state })
    }
}

/// Why a KV stream did not open.
#[derive(Debug)]
pub enum OpenError {
    /// The node refused its session (typed: a bad or expired token).
    Refused(ServerError),
    /// The node did not open it (an older node, say): KV calls may go over RPC.
    Failed(String),
}

/// Reads the node's `KvOpened`: ready with its refusal, if any.
fn poll_opened<R: AsyncRead + Unpin>(
    frames: &mut FrameReader,
    context: &mut Context<'_>,
    reader: &mut R,
) -> Poll<Result<Result<(), ServerError>, FrameError>> {
    loop {
        if let Some((message, _)) = frames.next_message()? {
            use crate::nvkv_capnp::kv_opened::Which;
            let opened = message.get_root::<kv_opened::Reader<'_>>()?;
            return Poll::Ready(Ok(match opened.which().map_err(capnp::Error::from)? {
                Which::Ok(()) => Ok(()),
                Which::Error(error) => Err(kv::read_error(error?)?),
            }));
        }
        match frames.poll_fill(context, reader) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(FrameError::Truncated)),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// The stream's task: writes queued calls, reads replies. Holds the state
/// weakly, so dropping every `KvStream` ends it.
struct Driver<R, W> {
    state: std::rc::Weak<State>,
    reader: R,
    writer: W,
    frames: FrameReader,
    out: FrameWriter,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Driver<R, W> {
    fn poll_drive(&mut self, context: &mut Context<'_>) -> Poll<Result<(), String>> {
        loop {
            let Some(state) = self.state.upgrade() else { return Poll::Ready(Ok(())) };
            state.task.replace(Some(context.waker().clone()));
            let mut progress = false;
            while let Some((message, _)) = self.frames.next_message().map_err(|error| error.to_string())? {
                deliver(&state, &message).map_err(|error| format!("a reply does not decode: {error}"))?;
                progress = true;
            }
            match self.frames.poll_fill(context, &mut self.reader) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err("the node closed the connection".into())),
                Poll::Ready(Ok(_)) => progress = true,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error.to_string())),
                Poll::Pending => {}
            }
            match self.poll_write(context, &state) {
                Ok(Poll::Ready(wrote)) => progress |= wrote,
                Ok(Poll::Pending) => {}
                Err(error) => return Poll::Ready(Err(error.to_string())),
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    fn poll_write(&mut self, context: &mut Context<'_>, state: &State) -> Result<Poll<bool>, FrameError> {
        let mut moved = false;
        loop {
            match self.out.poll_out(context, &mut self.writer) {
                Poll::Ready(Ok(wrote)) => moved |= wrote,
                Poll::Ready(Err(error)) => return Err(error.into()),
                Poll::Pending => return Ok(Poll::Pending),
            }
            if state.outbox.borrow().is_empty() {
                return Ok(Poll::Ready(moved));
            }
            encode_calls(&mut state.outbox.borrow_mut(), self.out.next_message());
        }
    }

    /// Answers every waiting call with the stream's failure.
    fn fail(&mut self, reason: &str) {
        let Some(state) = self.state.upgrade() else { return };
        let reason = format!("the KV stream to {} failed: {reason}", state.endpoint);
        state.failed.replace(Some(reason.clone()));
        state.outbox.borrow_mut().clear();
        for (_, waiting) in state.waiting.borrow_mut().drain() {
            let _ = waiting.send(Err(reason.clone()));
        }
    }
}

/// Moves queued calls into one message, up to its bounds.
fn encode_calls(outbox: &mut Vec<(u64, StreamCall)>, out: &mut Vec<u8>) {
    let mut taken = 0;
    let mut bytes = 0;
    for (_, call) in outbox.iter() {
        taken += 1;
        bytes += call_bytes(call);
        if taken == CALLS_PER_MESSAGE_MAX || bytes > CALL_MESSAGE_BYTES_TARGET {
            break;
        }
    }
    let words = (bytes / 8 + 16).min(CALL_MESSAGE_BYTES_TARGET / 8) as u32;
    let mut message =
        capnp::message::Builder::new(capnp::message::HeapAllocator::new().first_segment_words(words));
    let mut list = message.init_root::<kv_calls::Builder<'_>>().init_calls(taken as u32);
    for (position, (id, call)) in outbox.drain(..taken).enumerate() {
        let mut out = list.reborrow().get(position as u32);
        out.set_id(id);
        match call {
            StreamCall::Ping => out.set_ping(()),
            StreamCall::Kv(KvRequest::Put(put)) => kv::set_put_request(out.init_put(), &put),
            StreamCall::Kv(KvRequest::Range { request, linearizable }) => {
                let mut range = out.init_range();
                kv::set_range_request(range.reborrow().init_request(), &request);
                range.set_serializable(!linearizable);
            }
            StreamCall::Kv(KvRequest::DeleteRange(delete)) => {
                kv::set_delete_range_request(out.init_delete_range(), &delete)
            }
            StreamCall::Kv(KvRequest::Txn(txn)) => kv::write_txn_request(out.init_txn(), &txn),
        }
    }
    frames::encode(&message, out);
}

/// About how many bytes a call takes in a message.
fn call_bytes(call: &StreamCall) -> usize {
    const FIXED_BYTES: usize = 64;
    FIXED_BYTES
        + match call {
            StreamCall::Ping => 0,
            StreamCall::Kv(KvRequest::Put(put)) => put.key.len() + put.value.len(),
            StreamCall::Kv(KvRequest::Range { request, .. }) => request.key.len() + request.range_end.len(),
            StreamCall::Kv(KvRequest::DeleteRange(delete)) => delete.key.len() + delete.range_end.len(),
            // A transaction's size is not worth walking for: it counts as
            // a large call, so it travels with few others.
            StreamCall::Kv(KvRequest::Txn(_)) => CALL_MESSAGE_BYTES_TARGET / 8,
        }
}

/// Hands every reply of `message` to the call that waits for it.
fn deliver<S: capnp::message::ReaderSegments>(
    state: &State,
    message: &capnp::message::Reader<S>,
) -> capnp::Result<()> {
    let replies = message.get_root::<kv_replies::Reader<'_>>()?.get_replies()?;
    for reply in replies {
        let Some(waiting) = state.waiting.borrow_mut().remove(&reply.get_id()) else {
            return Err(capnp::Error::failed(format!(
                "{} replied to call {}, which is not waiting for a reply",
                state.endpoint,
                reply.get_id()
            )));
        };
        let served = Duration::from_nanos(reply.get_server_nanos());
        let _ = waiting.send(Ok((read_reply(reply)?, served)));
    }
    Ok(())
}

fn read_reply(reply: kv_reply::Reader<'_>) -> capnp::Result<Replied> {
    use kv_reply::Which;
    Ok(match reply.which()? {
        Which::Ping(()) => Replied::Ping,
        Which::Put(result) => Replied::Put(super::client::read_put_result(result?)?),
        Which::Range(result) => Replied::Range(super::client::read_range_result(result?)?),
        Which::DeleteRange(result) => Replied::DeleteRange(super::client::read_delete_range_result(result?)?),
        Which::Txn(result) => Replied::Txn(super::client::read_txn_result(result?)?),
    })
}
