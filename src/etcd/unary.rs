//! The etcd port's direct unary path: the KV calls a client makes most
//! (Range, Put, DeleteRange, Txn) are read, run and answered here, beside
//! tonic's service rather than through it. Through tonic, a call passes
//! its router (axum, tower), its codec with its own buffers, a boxed
//! `async_trait` future and a streaming response body: a share of every
//! call's work as large as the gRPC framing itself. Here the call's body
//! is collected, its one message decoded with prost, the same function the
//! tonic service calls (`kv::put`, ...) run, and the answer sent as one
//! DATA frame and a trailers frame.
//!
//! A client must never see a difference: the direct path answers only
//! what it is sure of (a POST of one uncompressed message within the size
//! limit that decodes), with tonic's headers, trailers and statuses
//! (`Status::into_http`, as tonic answers an error), and hands everything
//! else to tonic with the body it read put back in front of the rest:
//! other paths, a `grpc-encoding` other than identity, a compressed
//! message, a message over the limit (tonic's error), a body that does
//! not decode (tonic's error), a body that failed.

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};
use prost::Message;
use tonic::Status;

use super::convert::REQUEST_HEADROOM_BYTES;
use super::kv::{self, ShardLocal};
use super::proto::etcdserverpb as pb;
use super::server::RESPONSE_BYTES_MAX;
use crate::shard::auth::Caller;

/// What both paths answer with.
pub type Body = tonic::body::Body;

/// gRPC's length prefix of a message: a compressed flag and a big-endian
/// length.
const PREFIX_BYTES: usize = 5;

/// The calls the direct path serves.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    Range,
    Put,
    DeleteRange,
    Txn,
}

impl Call {
    /// The call a request is, if the direct path serves it: a POST to one
    /// of its paths with no `grpc-encoding` but identity. Reads only the
    /// request's head, so that tonic gets every other request untouched.
    pub fn of<B>(request: &http::Request<B>) -> Option<Call> {
        if request.method() != http::Method::POST {
            return None;
        }
        let call = match request.uri().path() {
            "/etcdserverpb.KV/Range" => Call::Range,
            "/etcdserverpb.KV/Put" => Call::Put,
            "/etcdserverpb.KV/DeleteRange" => Call::DeleteRange,
            "/etcdserverpb.KV/Txn" => Call::Txn,
            _ => return None,
        };
        let identity = request.headers().get("grpc-encoding").is_none_or(|encoding| encoding == "identity");
        identity.then_some(call)
    }
}

/// What the direct path made of a call: its answer, or the request (its
/// body whole again) for tonic.
pub enum Served {
    Answered(http::Response<Body>),
    ToTonic(http::Request<Body>),
}

/// Serves `call` for the caller `request` carries, on the shard `shard`
/// is: its answer, or the request back for tonic (see the module
/// comment).
pub async fn serve(call: Call, shard: &ShardLocal, request: http::Request<Incoming>) -> Served {
    let (parts, body) = request.into_parts();
    let limit = shard.info.limits.request_bytes_max + REQUEST_HEADROOM_BYTES;
    let message = match read_message(body, limit).await {
        Ok(message) => message,
        Err(body) => return Served::ToTonic(http::Request::from_parts(parts, body)),
    };
    let token = parts.headers.get("token").map(|token| token.as_bytes());
    let connection = parts.extensions.get::<Caller>();
    // Decoded first, as tonic does (a message that does not decode is
    // tonic's error, whoever sends it), then the caller, then the call.
    macro_rules! run {
        ($request:ty, $call:path) => {{
            let Ok(decoded) = <$request>::decode(message.slice(PREFIX_BYTES..)) else {
                let body = Body::new(http_body_util::Full::new(message));
                return Served::ToTonic(http::Request::from_parts(parts, body));
            };
            let acting = shard.acting_as(token, connection);
            // Neither is needed while the call runs: the message may hold
            // a share of the connection's read buffer.
            drop((message, parts));
            match acting {
                // Boxed: the call's future is most of this one's size
                // (KiBs), and hyper moves this future (inside the
                // service's) into the stream's task, a copy of all of it
                // per move (memmove was an eighth of the CPU).
                Ok(acting) => answer(Box::pin($call(&acting, &decoded)).await),
                Err(refused) => refused.into_http(),
            }
        }};
    }
    let response = match call {
        Call::Range => run!(pb::RangeRequest, kv::range),
        Call::Put => run!(pb::PutRequest, kv::put),
        Call::DeleteRange => run!(pb::DeleteRangeRequest, kv::delete_range),
        Call::Txn => run!(pb::TxnRequest, kv::txn),
    };
    crate::shard::local_stages().record(|stages| stages.etcd_direct_calls += 1);
    Served::Answered(response)
}

/// Reads a call's body: its one message with its prefix, uncompressed and
/// of at most `limit` bytes; or, for anything else, a body that gives
/// what was read and then the rest, for tonic.
async fn read_message(mut body: Incoming, limit: usize) -> Result<Bytes, Body> {
    // The common call comes in one DATA frame, kept as it is; a call in
    // several is joined.
    let mut first = Bytes::new();
    let mut joined = BytesMut::new();
    let whole = |first: Bytes, joined: BytesMut| if joined.is_empty() { first } else { joined.freeze() };
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Err(put_back(whole(first, joined), Some(Err(error)), body)),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            // Trailers on a request: not a unary call this path knows.
            Err(frame) => return Err(put_back(whole(first, joined), Some(Ok(frame)), body)),
        };
        if first.is_empty() && joined.is_empty() {
            first = data;
        } else {
            if joined.is_empty() {
                joined.extend_from_slice(&first);
            }
            joined.extend_from_slice(&data);
        }
        let so_far = if joined.is_empty() { &first[..] } else { &joined[..] };
        let over = match declared_length(so_far) {
            Some(length) => length > limit || so_far.len() > PREFIX_BYTES + length,
            None => false,
        };
        if over {
            return Err(put_back(whole(first, joined), None, body));
        }
    }
    let message = whole(first, joined);
    let expected = declared_length(&message).map(|length| PREFIX_BYTES + length);
    if message.first() == Some(&0) && expected == Some(message.len()) {
        Ok(message)
    } else {
        Err(Body::new(http_body_util::Full::new(message)))
    }
}

/// The length a message's prefix declares, once the prefix is read.
fn declared_length(read: &[u8]) -> Option<usize> {
    let length = read.get(1..PREFIX_BYTES)?;
    let length = u32::from_be_bytes(length.try_into().ok()?);
    usize::try_from(length).ok()
}

/// A body for tonic: `read`, then `next` (the frame or error that stopped
/// the reading), then what `rest` still holds.
fn put_back(read: Bytes, next: Option<Result<Frame<Bytes>, hyper::Error>>, rest: Incoming) -> Body {
    let read = (!read.is_empty()).then(|| Ok(Frame::data(read)));
    let frames = stream::iter(read.into_iter().chain(next));
    Body::new(StreamBody::new(futures::StreamExt::chain(frames, BodyStream::new(rest))))
}

/// A call's answer as tonic gives it: a message in one DATA frame and a
/// `grpc-status: 0` trailer, or a refusal in the headers alone.
fn answer(outcome: Result<impl Message, Status>) -> http::Response<Body> {
    let reply = match outcome {
        Ok(reply) => reply,
        Err(refused) => return refused.into_http(),
    };
    let length = reply.encoded_len();
    let prefix_length = match u32::try_from(length) {
        Ok(prefix_length) if length <= RESPONSE_BYTES_MAX => prefix_length,
        // tonic's words for the same refusal.
        _ => {
            return Status::out_of_range(format!(
                "Error, encoded message length too large: found {length} bytes, the limit is: \
                 {RESPONSE_BYTES_MAX} bytes"
            ))
            .into_http()
        }
    };
    let mut data = BytesMut::with_capacity(PREFIX_BYTES + length);
    data.put_u8(0);
    data.put_u32(prefix_length);
    reply.encode_raw(&mut data);
    let mut trailers = http::HeaderMap::with_capacity(1);
    trailers.insert(http::HeaderName::from_static("grpc-status"), http::HeaderValue::from_static("0"));
    let frames = [Frame::data(data.freeze()), Frame::trailers(trailers)];
    let body = StreamBody::new(stream::iter(frames.map(Ok::<_, Infallible>)));
    let mut response = http::Response::new(Body::new(body));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response
}
