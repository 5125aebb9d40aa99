//! The shard log as the tasks of one reactor use it: shared through an
//! `Rc`, with futures that finish when an operation is durable or a read
//! has completed. The reactor calls [`SharedLog::tick`] every turn.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::log::{Entry, ReadRequest, ReadTicket, ShardLog, SnapshotTicket, Ticket};
use super::snapshot::SnapshotRef;
use super::WalError;

#[derive(Clone)]
pub struct SharedLog {
    log: Rc<RefCell<ShardLog>>,
    /// Called when new work is queued, so a sleeping reactor wakes.
    kick: Rc<dyn Fn()>,
}

impl SharedLog {
    pub fn new(log: ShardLog, kick: Rc<dyn Fn()>) -> SharedLog {
        SharedLog { log: Rc::new(RefCell::new(log)), kick }
    }

    /// Runs `f` with the log borrowed, for state queries.
    pub fn with<R>(&self, f: impl FnOnce(&mut ShardLog) -> R) -> R {
        f(&mut self.log.borrow_mut())
    }

    pub fn tick(&self) -> bool {
        self.log.borrow_mut().tick()
    }

    /// Whether the log would write a seal if it stayed idle.
    pub fn wants_seal(&self) -> bool {
        self.log.borrow().wants_seal()
    }

    /// Writes the seal of an idle log; see [`ShardLog::seal_when_idle`].
    pub fn seal_when_idle(&self) -> bool {
        self.log.borrow_mut().seal_when_idle()
    }

    /// Queues an entry without waiting: it joins this tick's group commit,
    /// and is durable when [`SharedLog::durable`] of the ticket finishes.
    /// For callers that queue a batch and wait only for its last entry.
    pub fn queue_append(
        &self,
        group: u32,
        index: u64,
        term: u64,
        payload: &[u8],
    ) -> Result<Ticket, WalError> {
        let ticket = self.log.borrow_mut().append(group, index, term, payload)?;
        (self.kick)();
        Ok(ticket)
    }

    /// Appends an entry and waits until it is durable.
    pub async fn append(&self, group: u32, index: u64, term: u64, payload: &[u8]) -> Result<(), WalError> {
        let ticket = self.log.borrow_mut().append(group, index, term, payload)?;
        (self.kick)();
        self.durable(ticket).await
    }

    pub async fn save_vote(&self, group: u32, vote: &[u8]) -> Result<(), WalError> {
        let ticket = self.log.borrow_mut().save_vote(group, vote)?;
        (self.kick)();
        self.durable(ticket).await
    }

    pub async fn truncate(&self, group: u32, index: u64) -> Result<(), WalError> {
        let ticket = self.log.borrow_mut().truncate(group, index)?;
        (self.kick)();
        self.durable(ticket).await
    }

    pub async fn purge(&self, group: u32, index: u64, term: u64) -> Result<(), WalError> {
        let ticket = self.log.borrow_mut().purge(group, index, term)?;
        (self.kick)();
        self.durable(ticket).await
    }

    /// Takes `group` off the groups that may have lost acknowledged records
    /// (see [`ShardLog::mark_proven`]); a seal says so at the next idle turn.
    pub fn mark_proven(&self, group: u32) {
        self.log.borrow_mut().mark_proven(group);
        (self.kick)();
    }

    /// Finishes when `ticket` is durable, or with the log's failure.
    pub fn durable(&self, ticket: Ticket) -> Durable {
        Durable { log: self.log.clone(), ticket }
    }

    pub async fn read(&self, group: u32, index: u64) -> Result<Entry, WalError> {
        let request = self.log.borrow_mut().read(group, index)?;
        match request {
            ReadRequest::Ready(entry) => Ok(entry),
            ReadRequest::Pending(ticket) => {
                (self.kick)();
                ReadDone { log: self.log.clone(), ticket }.await
            }
        }
    }
}

impl SharedLog {
    /// Writes a snapshot of `group` up to entry `index` of `term` and waits
    /// until it is durable and current.
    pub async fn write_snapshot(
        &self,
        group: u32,
        index: u64,
        term: u64,
        data: &[u8],
    ) -> Result<(), WalError> {
        let ticket = self.log.borrow_mut().write_snapshot(group, index, term, data)?;
        (self.kick)();
        SnapshotDurable { log: self.log.clone(), ticket }.await
    }

    /// The current snapshot of `group` with its data, if it has one.
    pub async fn read_snapshot(&self, group: u32) -> Result<Option<(SnapshotRef, Vec<u8>)>, WalError> {
        let (reference, ticket) = {
            let mut log = self.log.borrow_mut();
            let Some(reference) = log.snapshot(group) else { return Ok(None) };
            (reference, log.read_snapshot(group)?.expect("the group has a snapshot"))
        };
        (self.kick)();
        let data = SnapshotReadDone { log: self.log.clone(), ticket }.await?;
        Ok(Some((reference, data)))
    }
}

struct SnapshotDurable {
    log: Rc<RefCell<ShardLog>>,
    ticket: SnapshotTicket,
}

impl Future for SnapshotDurable {
    type Output = Result<(), WalError>;
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut log = self.log.borrow_mut();
        match log.is_snapshot_durable(self.ticket) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => {
                log.wake_when_snapshot_durable(self.ticket, context.waker());
                Poll::Pending
            }
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

struct SnapshotReadDone {
    log: Rc<RefCell<ShardLog>>,
    ticket: ReadTicket,
}

impl Future for SnapshotReadDone {
    type Output = Result<Vec<u8>, WalError>;
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut log = self.log.borrow_mut();
        if let Some(result) = log.take_snapshot_read(self.ticket) {
            return Poll::Ready(result);
        }
        if let Some(reason) = log.failure() {
            return Poll::Ready(Err(WalError::Failed { shard: log.shard(), reason: reason.to_string() }));
        }
        log.wake_when_read(self.ticket, context.waker());
        Poll::Pending
    }
}

pub struct Durable {
    log: Rc<RefCell<ShardLog>>,
    ticket: Ticket,
}

impl Future for Durable {
    type Output = Result<(), WalError>;
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut log = self.log.borrow_mut();
        match log.is_durable(self.ticket) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => {
                log.wake_when_durable(self.ticket, context.waker());
                Poll::Pending
            }
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

struct ReadDone {
    log: Rc<RefCell<ShardLog>>,
    ticket: ReadTicket,
}

impl Future for ReadDone {
    type Output = Result<Entry, WalError>;
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut log = self.log.borrow_mut();
        if let Some(result) = log.take_read(self.ticket) {
            return Poll::Ready(result);
        }
        if let Some(reason) = log.failure() {
            return Poll::Ready(Err(WalError::Failed { shard: log.shard(), reason: reason.to_string() }));
        }
        log.wake_when_read(self.ticket, context.waker());
        Poll::Pending
    }
}
