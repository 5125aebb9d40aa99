//! The namespace layer: a block device that shards write to through queue
//! pairs of their own.
//!
//! A [`Namespace`] is opened once per process and shared by every shard; each
//! shard opens one [`QueuePair`] on its own thread and is the only one to
//! submit to and poll it, so a queue pair needs no lock (SPDK's rule).
//! Buffers are passed by ownership: a [`Command`] takes a [`DmaBuf`] and the
//! [`Completion`] gives it back. This layer knows nothing of logs or keys.
//!
//! Backends: [`uring`] (io_uring, O_DIRECT, on a preallocated file or a raw
//! block device), `spdk` (SPDK's user-space NVMe driver, with the `spdk`
//! cargo feature), and for tests only (cargo feature `testing`) `memory` and
//! `fault` (a fault-injecting wrapper around any other backend).

pub mod buffer;
#[cfg(any(test, feature = "testing"))]
#[forbid(unsafe_code)]
pub mod fault;
#[cfg(any(test, feature = "testing"))]
#[forbid(unsafe_code)]
pub mod memory;
#[forbid(unsafe_code)]
pub mod open;
#[cfg(feature = "spdk")]
pub mod spdk;
#[forbid(unsafe_code)]
pub mod status;
pub mod uring;

#[cfg(test)]
#[forbid(unsafe_code)]
mod suite;

use std::os::fd::RawFd;

pub use buffer::{BufferArena, DmaBuf};
pub use status::NvmeStatus;

/// What a shard needs to know of the device it writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Bytes per logical block; every I/O is a whole number of blocks at a
    /// block-aligned offset, from a buffer aligned to this size.
    pub lba_bytes: u32,
    /// Usable blocks: LBAs `0..capacity_blocks`.
    pub capacity_blocks: u64,
    /// The backend's name: "uring", "memory", "fault", "spdk".
    pub backend: &'static str,
    /// A person-readable name of the device: a path, a transport id.
    pub description: String,
    /// The PCI address of the controller behind the namespace, when known, so
    /// the topology can prefer cores on its NUMA node.
    pub pci_address: Option<String>,
}

impl NamespaceInfo {
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_blocks * u64::from(self.lba_bytes)
    }
}

/// Sizes a shard asks for when it opens its queue pair.
#[derive(Clone, Debug)]
pub struct QueuePairConfig {
    /// Most commands submitted and not yet completed.
    pub depth: u32,
    /// Bytes of buffers registered with the device up front (io_uring fixed
    /// buffers, SPDK DMA memory). Buffers beyond this still work, unregistered.
    pub registered_buffer_bytes: usize,
}

impl Default for QueuePairConfig {
    fn default() -> Self {
        QueuePairConfig { depth: 64, registered_buffer_bytes: 8 << 20 }
    }
}

/// A device opened for the whole process. Shared by every shard.
pub trait Namespace: Send + Sync + std::fmt::Debug {
    fn info(&self) -> &NamespaceInfo;

    /// Opens a queue pair for the calling thread. The queue pair must only be
    /// used from the thread that opened it.
    fn open_queue_pair(&self, config: &QueuePairConfig) -> Result<Box<dyn QueuePair>, NvmeError>;
}

/// One command for the device.
#[derive(Debug)]
pub enum Command {
    /// Writes `buffer` at `lba`. With `fua` the completion means the data is
    /// on stable media (NVMe FUA; RWF_DSYNC through io_uring).
    Write { lba: u64, buffer: DmaBuf, fua: bool },
    /// Reads `buffer.len()` bytes at `lba` into `buffer`.
    Read { lba: u64, buffer: DmaBuf },
    /// Makes every write completed before it durable (NVMe flush; fdatasync).
    Flush,
}

impl Command {
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Write { .. } => CommandKind::Write,
            Command::Read { .. } => CommandKind::Read,
            Command::Flush => CommandKind::Flush,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Write,
    Read,
    Flush,
}

impl std::fmt::Display for CommandKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            CommandKind::Write => "write",
            CommandKind::Read => "read",
            CommandKind::Flush => "flush",
        })
    }
}

/// A finished command. The buffer of a read or write comes back here.
#[derive(Debug)]
pub struct Completion {
    /// The tag given to [`QueuePair::submit`].
    pub tag: u64,
    pub kind: CommandKind,
    pub buffer: Option<DmaBuf>,
    pub result: Result<(), NvmeError>,
}

/// A command the queue pair did not take, handed back with the reason.
#[derive(Debug)]
pub struct Rejected {
    pub error: NvmeError,
    pub command: Command,
}

/// A submission and completion queue owned by one shard's thread.
pub trait QueuePair {
    fn info(&self) -> &NamespaceInfo;

    /// A buffer of at least `bytes` bytes (rounded up to whole blocks),
    /// aligned and zeroed, registered with the device when the arena has
    /// room.
    fn allocate(&mut self, bytes: usize) -> DmaBuf;

    /// Queues a command. It is sent to the device by the next
    /// [`QueuePair::process_completions`] or [`QueuePair::wait`]; its
    /// completion carries `tag`. Bad commands (misaligned, out of range) and
    /// a full queue are refused here, with the command handed back.
    fn submit(&mut self, command: Command, tag: u64) -> Result<(), Box<Rejected>>;

    /// Sends queued commands and moves finished ones into `completions`
    /// without blocking. Returns how many it moved.
    fn process_completions(&mut self, completions: &mut Vec<Completion>) -> usize;

    /// Sends queued commands and blocks until at least one command has
    /// finished (or returns at once when none is in flight).
    fn wait(&mut self) -> Result<(), NvmeError>;

    /// Commands submitted and not yet returned by `process_completions`.
    fn in_flight(&self) -> usize;

    /// An eventfd that becomes readable when a completion arrives, for a
    /// reactor that sleeps when idle. `None` when the backend cannot signal
    /// (the reactor then polls).
    fn completion_fd(&self) -> Option<RawFd>;
}

#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    #[error("cannot open namespace {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error(
        "namespace {path} is in use by another process (its exclusive lock is held); \
         stop the other nvkv daemon or point this one at another data directory"
    )]
    Locked { path: String },
    #[error("namespace {path} is {actual} bytes, but the config asks for {expected} bytes (namespace_bytes); set namespace_bytes = {actual} or use another path")]
    SizeMismatch { path: String, expected: u64, actual: u64 },
    #[error("invalid namespace setup: {0}")]
    Invalid(String),
    #[error("{kind} at LBA {lba} of {blocks} blocks is outside the namespace of {capacity_blocks} blocks")]
    OutOfRange { kind: CommandKind, lba: u64, blocks: u64, capacity_blocks: u64 },
    #[error("{kind} buffer of {bytes} bytes at address {address:#x} is not a whole number of {lba_bytes}-byte blocks aligned to {lba_bytes}")]
    Misaligned { kind: CommandKind, bytes: usize, address: usize, lba_bytes: u32 },
    #[error("queue pair is full ({depth} commands in flight)")]
    QueueFull { depth: u32 },
    #[error("{kind} at LBA {lba} failed: {source}")]
    Io { kind: CommandKind, lba: u64, source: std::io::Error },
    #[error("{kind} at LBA {lba} wrote {done} of {expected} bytes")]
    Short { kind: CommandKind, lba: u64, done: usize, expected: usize },
    #[error("{kind} at LBA {lba} failed with NVMe status {status}")]
    Status { kind: CommandKind, lba: u64, status: NvmeStatus },
    /// A call into SPDK failed (not one command's status): `action` says
    /// what was being done and what to check.
    #[error("SPDK {action} failed: {source}")]
    Spdk { action: String, source: std::io::Error },
    /// The queue pair failed (its connection to the controller broke, or
    /// the controller failed or was reset): the command was not completed
    /// by the device, and whether its data reached the media is unknown.
    /// The queue pair refuses every later command.
    #[error("{kind} at LBA {lba} was not completed: the queue pair to {namespace} failed ({reason})")]
    QueuePairFailed { kind: CommandKind, lba: u64, namespace: String, reason: String },
    /// The io_uring instance itself failed (setup, registration, or
    /// `io_uring_enter`), not one command. `action` says what was being done
    /// and what to check.
    #[error("io_uring {action} failed: {source}")]
    Ring { action: String, source: std::io::Error },
    #[error("injected fault: {0}")]
    Injected(String),
    #[error("the device is gone (injected: the process died after a torn write)")]
    Dead,
}

impl NvmeError {
    #[cfg(any(test, feature = "testing"))]
    /// Whether a completion with this error leaves the data in an unknown
    /// state. Such failures are never retried by the layers above.
    pub fn is_device_failure(&self) -> bool {
        matches!(
            self,
            NvmeError::Io { .. }
                | NvmeError::Short { .. }
                | NvmeError::Status { .. }
                | NvmeError::Ring { .. }
                | NvmeError::Spdk { .. }
                | NvmeError::QueuePairFailed { .. }
                | NvmeError::Injected(_)
                | NvmeError::Dead
        )
    }
}

/// Checks a command against the namespace geometry: the same check for
/// every backend, so they refuse the same things the same way.
pub fn check_command(info: &NamespaceInfo, command: &Command) -> Result<(), NvmeError> {
    let (kind, lba, buffer) = match command {
        Command::Write { lba, buffer, .. } => (CommandKind::Write, *lba, buffer),
        Command::Read { lba, buffer } => (CommandKind::Read, *lba, buffer),
        Command::Flush => return Ok(()),
    };
    let lba_bytes = info.lba_bytes as usize;
    let address = buffer.as_ptr() as usize;
    if buffer.is_empty() || buffer.len() % lba_bytes != 0 || address % lba_bytes != 0 {
        return Err(NvmeError::Misaligned { kind, bytes: buffer.len(), address, lba_bytes: info.lba_bytes });
    }
    let blocks = (buffer.len() / lba_bytes) as u64;
    if lba.checked_add(blocks).is_none_or(|end| end > info.capacity_blocks) {
        return Err(NvmeError::OutOfRange { kind, lba, blocks, capacity_blocks: info.capacity_blocks });
    }
    Ok(())
}
