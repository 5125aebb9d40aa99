//! The receiving end of a snapshot a leader streams to one group of this
//! member: first its metadata and its size, then its bytes in order, then
//! a finish that hands it to openraft whole (`Raft::install_full_snapshot`).
//!
//! It owns the bounds of a reception: a snapshot larger than the shard's
//! snapshot area can take is refused before any byte is buffered, a chunk
//! out of order or past the declared size is refused, and one group
//! receives one snapshot at a time (a newer one from the leader supersedes
//! it and frees its buffer). A [`Reception`] dropped before it finished
//! (the sender went away) frees its buffer too. It must never hand on a
//! snapshot that is missing bytes, and knows nothing of how bytes travel.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::types::{GroupId, SnapshotMeta};

/// Why a streamed snapshot was refused; the sender starts over later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotReceiveError {
    #[error(
        "group {group}: a snapshot of {bytes} bytes does not fit this member's snapshot area ({room} bytes \
         free in one piece); compact the group's history (nvkv compact) or give every member a larger \
         namespace.namespace_bytes"
    )]
    TooLarge { group: GroupId, bytes: u64, room: u64 },
    #[error(
        "group {group}: a snapshot chunk at byte {offset} arrived where byte {expected} was next; chunks \
         must arrive in order, the sender starts over"
    )]
    OutOfOrder { group: GroupId, offset: u64, expected: u64 },
    #[error(
        "group {group}: a snapshot chunk of {bytes} bytes at byte {offset} runs past the {declared} bytes \
         the snapshot declared; the sender starts over"
    )]
    PastDeclaredSize { group: GroupId, offset: u64, bytes: u64, declared: u64 },
    #[error(
        "group {group}: the snapshot finished after {received} of the {declared} bytes it declared; the \
         sender starts over"
    )]
    Incomplete { group: GroupId, received: u64, declared: u64 },
    #[error(
        "group {group}: a newer snapshot superseded this one (a leader started over); only the newest is \
         received"
    )]
    Superseded { group: GroupId },
    #[error("group {group} stopped while installing a received snapshot: {reason}")]
    Stopped { group: GroupId, reason: String },
}

/// The snapshot a group is receiving; clones share it.
#[derive(Clone)]
pub struct SnapshotInbox {
    inbox: Rc<Inbox>,
}

struct Inbox {
    group: GroupId,
    receiving: RefCell<Option<Receiving>>,
    /// Numbers receptions, so a superseded one cannot touch its successor.
    receptions: Cell<u64>,
}

struct Receiving {
    reception: u64,
    meta: SnapshotMeta,
    declared: u64,
    data: Vec<u8>,
}

/// One snapshot being received. Dropping it before
/// [`Reception::finish`] abandons the snapshot and frees its buffer.
pub struct Reception {
    inbox: Rc<Inbox>,
    reception: u64,
}

impl SnapshotInbox {
    pub fn new(group: GroupId) -> SnapshotInbox {
        SnapshotInbox {
            inbox: Rc::new(Inbox { group, receiving: RefCell::new(None), receptions: Cell::new(0) }),
        }
    }

    /// Starts receiving a snapshot of `bytes` bytes described by `meta`,
    /// when it fits in `room` bytes. Supersedes (and frees) the snapshot
    /// being received, if any: a leader that starts over, or a new leader,
    /// sends the one that counts.
    pub fn begin(
        &self,
        meta: SnapshotMeta,
        bytes: u64,
        room: u64,
    ) -> Result<Reception, SnapshotReceiveError> {
        let group = self.inbox.group;
        if bytes > room {
            return Err(SnapshotReceiveError::TooLarge { group, bytes, room });
        }
        let reception = self.inbox.receptions.get() + 1;
        self.inbox.receptions.set(reception);
        // The old buffer goes before the new one is allocated.
        self.inbox.receiving.replace(None);
        // Within `room`, which the snapshot area bounds: allocated once.
        let data = Vec::with_capacity(bytes as usize);
        *self.inbox.receiving.borrow_mut() = Some(Receiving { reception, meta, declared: bytes, data });
        Ok(Reception { inbox: self.inbox.clone(), reception })
    }

    /// Bytes buffered for the snapshot being received, if one is.
    #[cfg(test)]
    fn buffered_bytes(&self) -> Option<usize> {
        self.inbox.receiving.borrow().as_ref().map(|receiving| receiving.data.len())
    }
}

impl Reception {
    pub fn group(&self) -> GroupId {
        self.inbox.group
    }

    /// Takes the chunk of the snapshot that starts at byte `offset`.
    pub fn chunk(&self, offset: u64, data: &[u8]) -> Result<(), SnapshotReceiveError> {
        let group = self.inbox.group;
        let mut receiving = self.inbox.receiving.borrow_mut();
        let receiving = receiving
            .as_mut()
            .filter(|receiving| receiving.reception == self.reception)
            .ok_or(SnapshotReceiveError::Superseded { group })?;
        let expected = receiving.data.len() as u64;
        if offset != expected {
            return Err(SnapshotReceiveError::OutOfOrder { group, offset, expected });
        }
        let bytes = data.len() as u64;
        if expected + bytes > receiving.declared {
            return Err(SnapshotReceiveError::PastDeclaredSize {
                group,
                offset,
                bytes,
                declared: receiving.declared,
            });
        }
        receiving.data.extend_from_slice(data);
        Ok(())
    }

    /// The whole snapshot, once every declared byte arrived; the inbox is
    /// empty afterwards either way.
    pub fn finish(&self) -> Result<(SnapshotMeta, Vec<u8>), SnapshotReceiveError> {
        let group = self.inbox.group;
        let mut slot = self.inbox.receiving.borrow_mut();
        if slot.as_ref().is_none_or(|receiving| receiving.reception != self.reception) {
            return Err(SnapshotReceiveError::Superseded { group });
        }
        let receiving = slot.take().expect("checked above");
        let received = receiving.data.len() as u64;
        if received != receiving.declared {
            return Err(SnapshotReceiveError::Incomplete { group, received, declared: receiving.declared });
        }
        Ok((receiving.meta, receiving.data))
    }
}

impl Drop for Reception {
    fn drop(&mut self) {
        let mut slot = self.inbox.receiving.borrow_mut();
        if slot.as_ref().is_some_and(|receiving| receiving.reception == self.reception) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: GroupId = 7;

    #[test]
    fn a_snapshot_larger_than_the_room_is_refused_before_anything_is_buffered() {
        let inbox = SnapshotInbox::new(GROUP);
        let refused = inbox.begin(SnapshotMeta::default(), 1001, 1000).err().expect("too large");
        assert_eq!(refused, SnapshotReceiveError::TooLarge { group: GROUP, bytes: 1001, room: 1000 });
        assert!(refused.to_string().contains("namespace_bytes"), "{refused}");
        assert_eq!(inbox.buffered_bytes(), None);
        inbox.begin(SnapshotMeta::default(), 1000, 1000).expect("exactly the room fits");
    }

    #[test]
    fn chunks_in_order_make_the_snapshot() {
        let inbox = SnapshotInbox::new(GROUP);
        let meta = SnapshotMeta { snapshot_id: "s1".into(), ..SnapshotMeta::default() };
        let reception = inbox.begin(meta.clone(), 6, 1 << 20).expect("fits");
        reception.chunk(0, b"abc").expect("first");
        reception.chunk(3, b"def").expect("second");
        assert_eq!(inbox.buffered_bytes(), Some(6));
        let (got_meta, data) = reception.finish().expect("complete");
        assert_eq!((got_meta, data.as_slice()), (meta, &b"abcdef"[..]));
        assert_eq!(inbox.buffered_bytes(), None, "finishing empties the inbox");
    }

    #[test]
    fn chunks_out_of_order_or_past_the_declared_size_are_refused() {
        let inbox = SnapshotInbox::new(GROUP);
        let reception = inbox.begin(SnapshotMeta::default(), 6, 1 << 20).expect("fits");
        assert_eq!(
            reception.chunk(3, b"def"),
            Err(SnapshotReceiveError::OutOfOrder { group: GROUP, offset: 3, expected: 0 })
        );
        reception.chunk(0, b"abc").expect("first");
        assert_eq!(
            reception.chunk(0, b"abc"),
            Err(SnapshotReceiveError::OutOfOrder { group: GROUP, offset: 0, expected: 3 }),
            "a repeated chunk is out of order too"
        );
        assert_eq!(
            reception.chunk(3, b"defg"),
            Err(SnapshotReceiveError::PastDeclaredSize { group: GROUP, offset: 3, bytes: 4, declared: 6 })
        );
        assert_eq!(
            reception.finish().map(|_| ()),
            Err(SnapshotReceiveError::Incomplete { group: GROUP, received: 3, declared: 6 })
        );
        assert_eq!(inbox.buffered_bytes(), None, "an incomplete snapshot is dropped, not kept");
    }

    #[test]
    fn a_reception_dropped_before_finishing_frees_its_buffer() {
        let inbox = SnapshotInbox::new(GROUP);
        let reception = inbox.begin(SnapshotMeta::default(), 1 << 20, 1 << 20).expect("fits");
        reception.chunk(0, &[1; 4096]).expect("chunk");
        assert_eq!(inbox.buffered_bytes(), Some(4096));
        drop(reception);
        assert_eq!(inbox.buffered_bytes(), None);
    }

    #[test]
    fn a_newer_snapshot_supersedes_the_one_being_received() {
        let inbox = SnapshotInbox::new(GROUP);
        let old = inbox.begin(SnapshotMeta::default(), 6, 1 << 20).expect("fits");
        old.chunk(0, b"old").expect("chunk");
        let new = inbox.begin(SnapshotMeta::default(), 3, 1 << 20).expect("fits");
        assert_eq!(inbox.buffered_bytes(), Some(0), "the old buffer is gone");
        assert_eq!(old.chunk(3, b"old"), Err(SnapshotReceiveError::Superseded { group: GROUP }));
        assert_eq!(old.finish().map(|_| ()), Err(SnapshotReceiveError::Superseded { group: GROUP }));
        drop(old);
        new.chunk(0, b"new").expect("the newer one goes on after the old one is dropped");
        assert_eq!(new.finish().expect("complete").1, b"new");
    }
}
