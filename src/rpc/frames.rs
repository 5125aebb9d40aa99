//! Cap'n Proto messages over a byte stream without the RPC layer, in the
//! standard stream framing (a segment table, then the segments): a read
//! buffer that hands out each message once all of it arrived, read in
//! place, and the encoding of a message into one buffer for one write.
//! The KV stream (`kv_stream`, `kv_stream_client`) uses it on both ends.
//!
//! It owns the bound on one message: a segment table that announces more
//! than `message_words_max` words fails the stream before any of it is
//! buffered. It never blocks (it reads what a poll gives) and never copies
//! a message out of its buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use capnp::message::{Reader, ReaderOptions};
use capnp::serialize::NoAllocSliceSegments;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Segments one message may have (capnp's own limit).
const SEGMENTS_MAX: usize = 512;
/// What one read asks of the stream at least, in bytes.
const READ_BYTES_MIN: usize = 16 << 10;

/// Why a stream of messages cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("a message announces {segments} segments; at most {SEGMENTS_MAX} are read")]
    Segments { segments: usize },
    #[error("a message of {words} words is larger than the {words_max} words read at most")]
    TooLarge { words: usize, words_max: usize },
    #[error("a message does not decode: {0}")]
    Decode(#[from] capnp::Error),
    #[error("the connection closed in the middle of a message")]
    Truncated,
    #[error("the stream's opening was refused: {0}")]
    Refused(super::kv::ServerError),
}

/// Messages as they arrive on one stream. The buffer is kept in words, so
/// every message in it starts 8-byte aligned, as capnp reads in place.
pub struct FrameReader {
    words: Vec<capnp::Word>,
    /// Bytes of `words` already handed out, and bytes filled.
    start: usize,
    end: usize,
    message_words_max: usize,
    options: ReaderOptions,
}

impl FrameReader {
    /// Reads messages of at most `message_words_max` words (segment table
    /// included), each with the reader limits of `options`.
    pub fn new(message_words_max: usize, options: ReaderOptions) -> FrameReader {
        FrameReader {
            words: capnp::Word::allocate_zeroed_vec(READ_BYTES_MIN / 8),
            start: 0,
            end: 0,
            message_words_max,
            options,
        }
    }

    fn bytes(&self) -> &[u8] {
        capnp::Word::words_to_bytes(&self.words)
    }

    /// The length in bytes of the message at the start of the buffer, once
    /// its segment table arrived; an error when the table is out of bounds.
    fn pending_message_bytes(&self) -> Result<Option<usize>, FrameError> {
        let buffered = &self.bytes()[self.start..self.end];
        if buffered.len() < 8 {
            return Ok(None);
        }
        let word = |index: usize| {
            u32::from_le_bytes(buffered[index * 4..index * 4 + 4].try_into().expect("4 bytes")) as usize
        };
        let segments = word(0).wrapping_add(1);
        if segments == 0 || segments > SEGMENTS_MAX {
            return Err(FrameError::Segments { segments });
        }
        // The count and one length per segment, padded to a whole word.
        let table_bytes = (4 * (1 + segments)).div_ceil(8) * 8;
        if buffered.len() < table_bytes {
            return Ok(None);
        }
        let body_words: usize = (1..=segments).map(word).sum();
        let words = table_bytes / 8 + body_words;
        if words > self.message_words_max {
            return Err(FrameError::TooLarge { words, words_max: self.message_words_max });
        }
        Ok(Some(words * 8))
    }

    /// Whether a whole message waits in the buffer.
    pub fn has_message(&self) -> Result<bool, FrameError> {
        Ok(self.pending_message_bytes()?.is_some_and(|bytes| self.end - self.start >= bytes))
    }

    /// The next whole message in the buffer and its size in bytes, if one
    /// arrived; it is read in place and counts as consumed.
    pub fn next_message(&mut self) -> Result<Option<(Reader<NoAllocSliceSegments<'_>>, usize)>, FrameError> {
        let Some(bytes) = self.pending_message_bytes()? else { return Ok(None) };
        if self.end - self.start < bytes {
            return Ok(None);
        }
        let start = self.start;
        self.start += bytes;
        let mut slice = &capnp::Word::words_to_bytes(&self.words)[start..start + bytes];
        let segments = NoAllocSliceSegments::from_slice(&mut slice, self.options)?;
        Ok(Some((Reader::new(segments, self.options), bytes)))
    }

    /// Reads what `stream` has now into the buffer (moving what is left of
    /// a message to its front, and growing it for a large message). Ready
    /// with the bytes read, 0 when the stream ended between messages; an
    /// end inside a message is an error.
    pub fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        context: &mut Context<'_>,
        stream: &mut R,
    ) -> Poll<Result<usize, FrameError>> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        let needed = self.pending_message_bytes()?.unwrap_or(0).max(READ_BYTES_MIN);
        if self.words.len() * 8 - self.start < needed {
            // Move the partial message to the front; grow for what it needs.
            let (start, end) = (self.start, self.end);
            capnp::Word::words_to_bytes_mut(&mut self.words).copy_within(start..end, 0);
            (self.start, self.end) = (0, end - start);
            if self.words.len() * 8 < needed + READ_BYTES_MIN {
                self.words.resize((needed + READ_BYTES_MIN).div_ceil(8), capnp::word(0, 0, 0, 0, 0, 0, 0, 0));
            }
        }
        let end = self.end;
        let spare = &mut capnp::Word::words_to_bytes_mut(&mut self.words)[end..];
        let mut buffer = ReadBuf::new(spare);
        match Pin::new(stream).poll_read(context, &mut buffer) {
            Poll::Ready(Ok(())) => {
                let read = buffer.filled().len();
                self.end += read;
                if read == 0 && self.start != self.end {
                    return Poll::Ready(Err(FrameError::Truncated));
                }
                Poll::Ready(Ok(read))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The write side of a stream of messages: the message being written, how
/// much of it went out, and whether the stream was flushed since (a TLS
/// stream holds what it encrypted until flushed).
pub struct FrameWriter {
    bytes: Vec<u8>,
    at: usize,
    flushed: bool,
}

impl FrameWriter {
    /// A writer that sends `first` (an opening, say) before any message.
    pub fn new(first: Vec<u8>) -> FrameWriter {
        FrameWriter { bytes: first, at: 0, flushed: true }
    }

    /// The buffer for the next message, emptied; call once the last one is
    /// out (`poll_out` was ready).
    pub fn next_message(&mut self) -> &mut Vec<u8> {
        debug_assert!(self.at == self.bytes.len() && self.flushed, "the last message is still going out");
        self.bytes.clear();
        self.at = 0;
        &mut self.bytes
    }

    /// Writes what is pending to `stream` and flushes it. Ready once all of
    /// it is out (true if anything moved in this call); Pending while the
    /// stream is full.
    pub fn poll_out<W: AsyncWrite + Unpin>(
        &mut self,
        context: &mut Context<'_>,
        stream: &mut W,
    ) -> Poll<io::Result<bool>> {
        let mut moved = false;
        while self.at < self.bytes.len() {
            match Pin::new(&mut *stream).poll_write(context, &self.bytes[self.at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => {
                    self.at += written;
                    self.flushed = false;
                    moved = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if !self.flushed {
            match Pin::new(stream).poll_flush(context) {
                Poll::Ready(Ok(())) => self.flushed = true,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(moved))
    }

    /// Whether everything handed to it went out.
    pub fn is_done(&self) -> bool {
        self.at == self.bytes.len() && self.flushed
    }
}

/// Appends `message` to `out` in the stream framing.
pub fn encode<A: capnp::message::Allocator>(message: &capnp::message::Builder<A>, out: &mut Vec<u8>) {
    capnp::serialize::write_message(&mut *out, message).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvkv_capnp::kv_calls;

    fn message_with(calls: u32, key_bytes: usize) -> Vec<u8> {
        let mut message = capnp::message::Builder::new_default();
        let mut list = message.init_root::<kv_calls::Builder<'_>>().init_calls(calls);
        for index in 0..calls {
            let mut call = list.reborrow().get(index);
            call.set_id(u64::from(index));
            call.init_put().set_key(&vec![b'k'; key_bytes]);
        }
        let mut bytes = Vec::new();
        encode(&message, &mut bytes);
        bytes
    }

    /// Hands `bytes` out `step` bytes per read.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buffer: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let take = self.step.min(self.bytes.len() - self.at).min(buffer.remaining());
            let at = self.at;
            buffer.put_slice(&self.bytes[at..at + take]);
            self.at += take;
            Poll::Ready(Ok(()))
        }
    }

    fn read_all(bytes: Vec<u8>, step: usize, words_max: usize) -> Result<Vec<Vec<u64>>, FrameError> {
        let mut reader = FrameReader::new(words_max, ReaderOptions::new());
        let mut stream = Trickle { bytes, at: 0, step };
        let waker = futures::task::noop_waker();
        let mut context = Context::from_waker(&waker);
        let mut messages = Vec::new();
        loop {
            while let Some((message, _)) = reader.next_message()? {
                let calls = message.get_root::<kv_calls::Reader<'_>>()?.get_calls()?;
                messages.push(calls.iter().map(|call| call.get_id()).collect());
            }
            match reader.poll_fill(&mut context, &mut stream) {
                Poll::Ready(Ok(0)) => return Ok(messages),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Err(error),
                Poll::Pending => unreachable!("the trickle is always ready"),
            }
        }
    }

    #[test]
    fn messages_come_whole_however_the_bytes_arrive() {
        let mut bytes = message_with(3, 10);
        bytes.extend(message_with(200, 3000));
        bytes.extend(message_with(1, 1));
        for step in [1, 7, 8, 4096, 1 << 20] {
            let messages = read_all(bytes.clone(), step, 1 << 20).expect("reads");
            assert_eq!(messages.len(), 3, "step {step}");
            assert_eq!(messages[1].len(), 200);
            assert_eq!(messages[2], vec![0]);
        }
    }

    #[test]
    fn a_message_over_the_bound_fails_before_it_is_buffered() {
        let error = read_all(message_with(100, 3000), 64, 1000).expect_err("too large");
        assert!(matches!(error, FrameError::TooLarge { words_max: 1000, .. }), "{error}");
        let mut garbage = vec![0xff; 16];
        garbage.extend(message_with(1, 1));
        assert!(matches!(read_all(garbage, 64, 1000), Err(FrameError::Segments { .. })));
        let mut cut = message_with(2, 100);
        cut.truncate(cut.len() - 8);
        assert!(matches!(read_all(cut, 64, 1000), Err(FrameError::Truncated)));
    }
}
