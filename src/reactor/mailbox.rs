//! Mailboxes: the only way work crosses from one shard to another.
//!
//! A mailbox is a bounded crossbeam channel of tasks, closures that run on
//! the receiving shard's reactor thread with its [`ReactorContext`], plus a
//! doorbell eventfd that a sender rings only when the receiver sleeps (a
//! spinning reactor finds the task on its next turn, no system call needed).
//! This file never blocks a reactor thread: [`Mailbox::try_send`] refuses a
//! full mailbox and hands the task back; only threads outside the reactors
//! may use [`Mailbox::send_blocking`].

use std::fmt;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::eventfd::EventFd;
use super::ReactorContext;

/// Work for another shard: runs once on that shard's reactor thread.
pub type MailboxTask = Box<dyn FnOnce(&ReactorContext) + Send>;

/// Why a mailbox did not take a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    #[error(
        "the mailbox of shard {shard} is full ({capacity} tasks); the shard is overloaded: \
         retry later or raise reactor.mailbox_capacity"
    )]
    Full { shard: usize, capacity: usize },
    #[error("shard {shard} has stopped and takes no more tasks")]
    Stopped { shard: usize },
}

/// A task the mailbox did not take, handed back with the reason.
pub struct Refused {
    pub error: MailboxError,
    pub task: MailboxTask,
}

impl fmt::Debug for Refused {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Refused").field("error", &self.error).finish_non_exhaustive()
    }
}

/// Wakes a sleeping reactor. Shared by the senders and the receiver.
#[derive(Debug)]
pub(crate) struct Doorbell {
    pub(crate) eventfd: EventFd,
    /// True while the reactor is (about to be) asleep. Senders ring only
    /// then; see `Inbox::prepare_to_sleep` for why no wake-up is lost.
    sleeping: AtomicBool,
}

impl Doorbell {
    pub(crate) fn new() -> std::io::Result<Doorbell> {
        Ok(Doorbell { eventfd: EventFd::new()?, sleeping: AtomicBool::new(false) })
    }

    fn ring_if_sleeping(&self) {
        // Pairs with the fence in `Inbox::prepare_to_sleep`: either this
        // load sees `sleeping`, or the receiver's emptiness check sees the
        // task just sent.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.eventfd.ring();
        }
    }

    pub(crate) fn ring(&self) {
        self.eventfd.ring();
    }
}

/// The sending side of one shard's mailbox. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Mailbox {
    shard: usize,
    capacity: usize,
    sender: Sender<MailboxTask>,
    doorbell: Arc<Doorbell>,
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Mailbox")
            .field("shard", &self.shard)
            .field("queued", &self.sender.len())
            .finish()
    }
}

impl Mailbox {
    /// The shard this mailbox delivers to.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Queues `task` for the shard without blocking; a full or stopped
    /// mailbox hands it back. The only way to send from a reactor thread.
    pub fn try_send(&self, task: impl FnOnce(&ReactorContext) + Send + 'static) -> Result<(), Box<Refused>> {
        self.try_send_boxed(Box::new(task))
    }

    pub fn try_send_boxed(&self, task: MailboxTask) -> Result<(), Box<Refused>> {
        match self.sender.try_send(task) {
            Ok(()) => {
                self.doorbell.ring_if_sleeping();
                Ok(())
            }
            Err(TrySendError::Full(task)) => Err(Box::new(Refused {
                error: MailboxError::Full { shard: self.shard, capacity: self.capacity },
                task,
            })),
            Err(TrySendError::Disconnected(task)) => {
                Err(Box::new(Refused { error: MailboxError::Stopped { shard: self.shard }, task }))
            }
        }
    }

    /// Queues `task`, waiting while the mailbox is full. For threads outside
    /// the reactors only: two reactors blocked on each other's full
    /// mailboxes would never wake.
    pub fn send_blocking(
        &self,
        task: impl FnOnce(&ReactorContext) + Send + 'static,
    ) -> Result<(), MailboxError> {
        self.sender.send(Box::new(task)).map_err(|_| MailboxError::Stopped { shard: self.shard })?;
        self.doorbell.ring_if_sleeping();
        Ok(())
    }
}

/// Every shard's mailbox, indexed by shard. Cheap to clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Mailboxes {
    mailboxes: Arc<[Mailbox]>,
}

impl Mailboxes {
    /// The mailbox of `shard`. Panics on a shard that does not exist: shard
    /// indices come from the partition function, never from outside.
    pub fn get(&self, shard: usize) -> &Mailbox {
        &self.mailboxes[shard]
    }

    pub fn len(&self) -> usize {
        self.mailboxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mailboxes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Mailbox> {
        self.mailboxes.iter()
    }
}

/// The receiving side, owned by the shard's reactor thread.
pub(crate) struct Inbox {
    receiver: Receiver<MailboxTask>,
    pub(crate) doorbell: Arc<Doorbell>,
}

impl Inbox {
    pub(crate) fn try_receive(&self) -> Option<MailboxTask> {
        self.receiver.try_recv().ok()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    /// Marks the reactor asleep and tells whether it may really sleep: false
    /// when a task arrived meanwhile (the mark is then taken back).
    pub(crate) fn prepare_to_sleep(&self) -> bool {
        self.doorbell.sleeping.store(true, Ordering::Relaxed);
        // Pairs with the fence in `Doorbell::ring_if_sleeping`.
        fence(Ordering::SeqCst);
        if self.receiver.is_empty() {
            true
        } else {
            self.woke();
            false
        }
    }

    pub(crate) fn woke(&self) {
        self.doorbell.sleeping.store(false, Ordering::Relaxed);
    }
}

/// Creates one mailbox per shard: the senders for everyone, the inboxes for
/// the reactor threads.
pub(crate) fn create(shards: usize, capacity: usize) -> std::io::Result<(Mailboxes, Vec<Inbox>)> {
    let mut mailboxes = Vec::with_capacity(shards);
    let mut inboxes = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        let doorbell = Arc::new(Doorbell::new()?);
        mailboxes.push(Mailbox { shard, capacity, sender, doorbell: doorbell.clone() });
        inboxes.push(Inbox { receiver, doorbell });
    }
    Ok((Mailboxes { mailboxes: mailboxes.into() }, inboxes))
}
