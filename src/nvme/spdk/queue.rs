//! One SPDK I/O queue pair of a namespace, opened, submitted to and polled
//! on one shard's thread: the DMA memory of its commands, the slots that
//! keep a command's buffer until the driver calls back, and the callback.

use std::cell::RefCell;
use std::ffi::c_void;
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

use spdk_sys as sys;
use tracing::{error, warn};

use super::super::buffer::Memory;
use super::super::{
    check_command, BufferArena, Command, CommandKind, Completion, DmaBuf, NamespaceInfo, NvmeError,
    NvmeStatus, QueuePair, QueuePairConfig, Rejected,
};
use super::{Controller, NamespacePointer, SpdkNamespace, VTOPHYS_ERROR};

/// Frees memory from spdk_zmalloc: the release function of SPDK buffers.
unsafe fn release_dma(pointer: *mut u8) {
    // SAFETY: the pointer came from spdk_zmalloc (DmaBuf's contract).
    unsafe { sys::spdk_free(pointer.cast()) };
}

/// `bytes` zeroed bytes of SPDK's DMA memory aligned to `alignment`, or
/// `None` when SPDK has no room.
fn allocate_dma(bytes: usize, alignment: usize) -> Option<DmaBuf> {
    // SAFETY: plain allocation; a null result is handled.
    let pointer = unsafe {
        sys::spdk_zmalloc(
            bytes,
            alignment,
            std::ptr::null_mut(),
            sys::SPDK_ENV_NUMA_ID_ANY,
            sys::SPDK_MALLOC_DMA,
        )
    };
    let pointer = NonNull::new(pointer.cast::<u8>())?;
    // SAFETY: spdk_zmalloc gave `bytes` zeroed bytes aligned to `alignment`,
    // ours alone, freed by spdk_free.
    Some(unsafe { DmaBuf::from_foreign(pointer, bytes, alignment, release_dma) })
}

/// What the driver's completion callback records: the slot of the command
/// and its completion's status field.
struct Finished {
    slot: usize,
    status_field: u16,
}

/// The callback argument of one slot: where to record its completion. The
/// slots live in a boxed slice, so their addresses stay put.
struct SlotContext {
    finished: *const RefCell<Vec<Finished>>,
    slot: usize,
}

/// A command the driver holds: its buffer stays here until the callback.
struct InFlight {
    tag: u64,
    kind: CommandKind,
    lba: u64,
    buffer: Option<DmaBuf>,
    /// SPDK memory the command actually used when `buffer` is not DMA
    /// memory (a heap buffer): a write copied into it, a read copies out.
    bounce: Option<DmaBuf>,
}

pub(super) struct SpdkQueuePair {
    info: NamespaceInfo,
    namespace: NamespacePointer,
    queue_pair: NonNull<sys::spdk_nvme_qpair>,
    flush_supported: bool,
    arena: BufferArena,
    depth: u32,
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    contexts: Box<[SlotContext]>,
    finished: Box<RefCell<Vec<Finished>>>,
    in_flight: usize,
    /// Why the queue pair failed, once it has: it is disconnected, every
    /// command it held has been completed (those the device did not finish
    /// with [`NvmeError::QueuePairFailed`]), and it refuses new ones.
    failed: Option<String>,
    /// Dropped after the queue pair is freed (field order): the controller
    /// outlives every queue pair of it.
    #[expect(dead_code, reason = "held, never read, so the controller outlives this queue pair")]
    controller: Arc<Controller>,
}

impl SpdkQueuePair {
    pub(super) fn open(
        namespace: &SpdkNamespace,
        config: &QueuePairConfig,
    ) -> Result<SpdkQueuePair, NvmeError> {
        let depth = config.depth;
        if depth == 0 || depth > 4096 {
            return Err(NvmeError::Invalid(format!(
                "queue depth {depth} is outside 1..=4096; set namespace.queue_depth in that range"
            )));
        }
        let controller = namespace.controller.clone();
        // SAFETY: an all-zero options struct is filled in by SPDK.
        let mut options: sys::spdk_nvme_io_qpair_opts = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<sys::spdk_nvme_io_qpair_opts>();
        // SAFETY: options is valid for `size` bytes; the controller is attached.
        unsafe {
            sys::spdk_nvme_ctrlr_get_default_io_qpair_opts(controller.pointer.as_ptr(), &mut options, size)
        };
        // The hardware queue keeps SPDK's default size, already capped to
        // what the controller allows (a fabrics target refuses a larger
        // one); SPDK queues in software the commands it has no room for. A
        // command larger than the controller's transfer size takes several
        // requests, hence more requests than commands.
        options.io_queue_requests = options.io_queue_requests.max(depth * 4);
        // SAFETY: as above; the returned queue pair is ours alone.
        let queue_pair =
            unsafe { sys::spdk_nvme_ctrlr_alloc_io_qpair(controller.pointer.as_ptr(), &options, size) };
        let queue_pair = NonNull::new(queue_pair).ok_or_else(|| NvmeError::Spdk {
            action: format!(
                "allocating an I/O queue pair of depth {depth} on {} (the controller may have no free queues: \
                 lower reactor.shards, or raise namespace.spdk_memory_bytes)",
                controller.transport
            ),
            source: io::Error::other("spdk_nvme_ctrlr_alloc_io_qpair returned no queue pair"),
        })?;
        let lba_bytes = namespace.info.lba_bytes as usize;
        let arena_bytes = config.registered_buffer_bytes.next_multiple_of(lba_bytes).max(lba_bytes);
        let Some(region) = allocate_dma(arena_bytes, lba_bytes) else {
            // SAFETY: allocated above, nothing submitted.
            unsafe { sys::spdk_nvme_ctrlr_free_io_qpair(queue_pair.as_ptr()) };
            return Err(NvmeError::Invalid(format!(
                "SPDK has no room for {arena_bytes} bytes of DMA buffers for a queue pair; raise \
                 namespace.spdk_memory_bytes or lower namespace.registered_buffer_bytes"
            )));
        };
        // The arena owns the region from here; the DmaBuf handle must not
        // free it too.
        let base = NonNull::new(region.as_ptr().cast_mut()).expect("a DMA region is not null");
        std::mem::forget(region);
        // SAFETY: base holds arena_bytes zeroed bytes aligned to lba_bytes,
        // from spdk_zmalloc, ours alone.
        let arena = unsafe {
            BufferArena::from_region(base, arena_bytes, lba_bytes, Memory::Foreign { release: release_dma })
        };
        let finished = Box::new(RefCell::new(Vec::with_capacity(depth as usize)));
        let contexts = (0..depth as usize)
            .map(|slot| SlotContext { finished: &*finished as *const RefCell<Vec<Finished>>, slot })
            .collect();
        Ok(SpdkQueuePair {
            info: namespace.info.clone(),
            namespace: namespace.namespace,
            queue_pair,
            flush_supported: namespace.flush_supported,
            arena,
            depth,
            slots: (0..depth).map(|_| None).collect(),
            free_slots: (0..depth as usize).rev().collect(),
            contexts,
            finished,
            in_flight: 0,
            failed: None,
            controller,
        })
    }

    /// Whether the device can read and write `buffer` directly: memory from
    /// this queue pair's arena or any other SPDK allocation.
    fn is_dma_memory(&self, buffer: &DmaBuf) -> bool {
        let (base, bytes) = self.arena.region();
        let start = buffer.as_ptr() as usize;
        if start >= base as usize && start + buffer.len() <= base as usize + bytes {
            return true;
        }
        // SAFETY: spdk_vtophys only looks the address up in SPDK's map.
        unsafe { sys::spdk_vtophys(buffer.as_ptr().cast(), std::ptr::null_mut()) != VTOPHYS_ERROR }
    }

    /// Hands the driver one command; `Err` carries SPDK's negative errno.
    fn send(&mut self, slot: usize, command: &Command, payload: *mut c_void) -> i32 {
        let namespace = self.namespace.0.as_ptr();
        let queue_pair = self.queue_pair.as_ptr();
        let context = (&self.contexts[slot] as *const SlotContext).cast_mut().cast::<c_void>();
        let lba_bytes = self.info.lba_bytes as usize;
        // check_command bounds every command within the namespace, whose
        // block count came from SPDK as a u64; a buffer of more than u32::MAX
        // blocks is refused before this.
        match command {
            Command::Write { lba, buffer, fua } => {
                let blocks = (buffer.len() / lba_bytes) as u32;
                let flags = if *fua { sys::SPDK_NVME_IO_FLAGS_FORCE_UNIT_ACCESS } else { 0 };
                // SAFETY: the payload stays in this slot until the callback;
                // namespace and queue pair are valid and used on this thread.
                unsafe {
                    sys::spdk_nvme_ns_cmd_write(
                        namespace,
                        queue_pair,
                        payload,
                        *lba,
                        blocks,
                        Some(on_command_complete),
                        context,
                        flags,
                    )
                }
            }
            Command::Read { lba, buffer } => {
                let blocks = (buffer.len() / lba_bytes) as u32;
                // SAFETY: as for writes.
                unsafe {
                    sys::spdk_nvme_ns_cmd_read(
                        namespace,
                        queue_pair,
                        payload,
                        *lba,
                        blocks,
                        Some(on_command_complete),
                        context,
                        0,
                    )
                }
            }
            // SAFETY: no payload; the context lives as long as the queue pair.
            Command::Flush => unsafe {
                sys::spdk_nvme_ns_cmd_flush(namespace, queue_pair, Some(on_command_complete), context)
            },
        }
    }

    /// Moves every recorded completion into `completions`.
    fn reap(&mut self, completions: &mut Vec<Completion>) -> usize {
        let finished = std::mem::take(&mut *self.finished.borrow_mut());
        let mut moved = 0;
        for Finished { slot, status_field } in finished {
            let Some(command) = self.slots[slot].take() else {
                // A failed queue pair completed its commands itself; the
                // driver may still call back for them when it frees its
                // requests. Anything else is a bug that must not pass.
                assert!(
                    self.failed.is_some(),
                    "completion for slot {slot}, which holds no command in flight"
                );
                continue;
            };
            moved += 1;
            if self.failed.is_none() {
                // A failed queue pair's slots are never used again.
                self.free_slots.push(slot);
            }
            self.in_flight -= 1;
            let InFlight { tag, kind, lba, mut buffer, bounce } = command;
            let result = match (NvmeStatus::from_completion_field(status_field), &self.failed) {
                (None, _) => Ok(()),
                (Some(_), Some(reason)) => Err(NvmeError::QueuePairFailed {
                    kind,
                    lba,
                    namespace: self.info.description.clone(),
                    reason: reason.clone(),
                }),
                (Some(status), None) => Err(NvmeError::Status { kind, lba, status }),
            };
            if let (CommandKind::Read, Ok(()), Some(buffer), Some(bounce)) =
                (kind, &result, buffer.as_mut(), bounce.as_ref())
            {
                let len = buffer.len();
                buffer.copy_from_slice(&bounce[..len]);
            }
            completions.push(Completion { tag, kind, buffer, result });
        }
        moved
    }

    /// One pass of the driver over the queue pair: sends what is queued and
    /// runs the callbacks of finished commands. A failure fails the queue
    /// pair ([`SpdkQueuePair::fail`]).
    fn poll(&mut self) {
        if self.failed.is_some() {
            return;
        }
        // SAFETY: the queue pair is ours and used on this thread; 0 takes
        // every completion available.
        let status = unsafe { sys::spdk_nvme_qpair_process_completions(self.queue_pair.as_ptr(), 0) };
        if status < 0 {
            self.fail(io::Error::from_raw_os_error(-status));
        }
    }

    /// The queue pair failed (its connection broke, the controller failed
    /// or is being reset): disconnects it, which aborts what the driver
    /// holds, and completes every command still in a slot with
    /// [`NvmeError::QueuePairFailed`], so nothing waits for a completion
    /// that will never come. Later commands are refused.
    fn fail(&mut self, source: io::Error) {
        // SAFETY: the queue pair is ours.
        let why = unsafe { sys::spdk_nvme_qpair_get_failure_reason(self.queue_pair.as_ptr()) };
        let reason = format!("polling it returned {source}; SPDK's failure reason: {}", failure_reason(why));
        error!(
            namespace = %self.info.description,
            in_flight = self.in_flight,
            %reason,
            "SPDK I/O queue pair failed; failing its commands and refusing new ones"
        );
        self.failed = Some(reason);
        // SAFETY: ours, used on this thread; the callbacks of the aborted
        // commands run inside the call and only record into `finished`.
        unsafe { sys::spdk_nvme_ctrlr_disconnect_io_qpair(self.queue_pair.as_ptr()) };
        let mut finished = self.finished.borrow_mut();
        let mut done = vec![false; self.slots.len()];
        for record in finished.iter() {
            done[record.slot] = true;
        }
        for (slot, command) in self.slots.iter().enumerate() {
            if command.is_some() && !done[slot] {
                finished.push(Finished { slot, status_field: ABORTED_STATUS_FIELD });
            }
        }
    }

    fn failed_error(&self, reason: &str) -> NvmeError {
        NvmeError::Spdk {
            action: format!(
                "polling the I/O queue pair of {} (the connection to the controller failed or it was reset)",
                self.info.description
            ),
            source: io::Error::other(reason.to_owned()),
        }
    }
}

/// The completion status field a command the driver never finished gets
/// when its queue pair fails: generic status 0x08, "command aborted due to
/// SQ deletion", shifted past the phase bit. `reap` reports it as
/// [`NvmeError::QueuePairFailed`].
const ABORTED_STATUS_FIELD: u16 = 0x08 << 1;

/// SPDK's `spdk_nvme_qp_failure_reason`, in words.
fn failure_reason(reason: sys::spdk_nvme_qp_failure_reason) -> &'static str {
    match reason {
        sys::SPDK_NVME_QPAIR_FAILURE_NONE => "none given",
        sys::SPDK_NVME_QPAIR_FAILURE_LOCAL => "local (this host)",
        sys::SPDK_NVME_QPAIR_FAILURE_REMOTE => "remote (the target or device)",
        sys::SPDK_NVME_QPAIR_FAILURE_RESET => "the controller is being reset",
        _ => "unknown",
    }
}

/// The driver's completion callback: records which slot finished and how.
unsafe extern "C" fn on_command_complete(argument: *mut c_void, completion: *const sys::spdk_nvme_cpl) {
    // SAFETY: the argument is the SlotContext given with the command, alive
    // as long as its queue pair; the driver passes a valid completion.
    let (context, status_field) =
        unsafe { (&*argument.cast::<SlotContext>(), (*completion).__bindgen_anon_1.status_raw) };
    // SAFETY: `finished` is the queue pair's boxed list, alive as long as the
    // contexts; callbacks run on the queue pair's own thread, inside a call
    // that holds no borrow of it.
    let finished = unsafe { &*context.finished };
    finished.borrow_mut().push(Finished { slot: context.slot, status_field });
}

impl QueuePair for SpdkQueuePair {
    fn info(&self) -> &NamespaceInfo {
        &self.info
    }

    fn allocate(&mut self, bytes: usize) -> DmaBuf {
        let alignment = self.info.lba_bytes as usize;
        if let Some(buffer) = self.arena.try_allocate(bytes) {
            return buffer;
        }
        let capacity = bytes.max(1).next_multiple_of(alignment);
        allocate_dma(capacity, alignment).unwrap_or_else(|| {
            warn!(
                bytes = capacity,
                "SPDK has no DMA memory left for a buffer; using the heap, which costs a copy per command \
                 (raise namespace.spdk_memory_bytes)"
            );
            DmaBuf::new_heap(capacity, alignment)
        })
    }

    fn submit(&mut self, command: Command, tag: u64) -> Result<(), Box<Rejected>> {
        if let Err(error) = check_command(&self.info, &command) {
            return Err(Box::new(Rejected { error, command }));
        }
        let kind = command.kind();
        if let Some(reason) = &self.failed {
            let lba = match &command {
                Command::Write { lba, .. } | Command::Read { lba, .. } => *lba,
                Command::Flush => 0,
            };
            let error = NvmeError::QueuePairFailed {
                kind,
                lba,
                namespace: self.info.description.clone(),
                reason: reason.clone(),
            };
            return Err(Box::new(Rejected { error, command }));
        }
        if self.in_flight >= self.depth as usize {
            return Err(Box::new(Rejected { error: NvmeError::QueueFull { depth: self.depth }, command }));
        }
        let (lba, buffer) = match &command {
            Command::Write { lba, buffer, .. } | Command::Read { lba, buffer } => (*lba, Some(buffer)),
            Command::Flush => (0, None),
        };
        if let Some(buffer) = buffer {
            if (buffer.len() / self.info.lba_bytes as usize) > u32::MAX as usize {
                return Err(Box::new(Rejected {
                    error: NvmeError::Invalid(format!(
                        "{kind} of {} bytes is more blocks than one NVMe command can move; split it",
                        buffer.len()
                    )),
                    command,
                }));
            }
        }
        let bounce = match buffer {
            Some(buffer) if !self.is_dma_memory(buffer) => {
                let Some(mut bounce) = allocate_dma(buffer.len(), self.info.lba_bytes as usize) else {
                    return Err(Box::new(Rejected {
                        error: NvmeError::Invalid(format!(
                            "SPDK has no DMA memory for a {}-byte copy of a heap buffer; raise \
                             namespace.spdk_memory_bytes",
                            buffer.len()
                        )),
                        command,
                    }));
                };
                if kind == CommandKind::Write {
                    bounce.copy_from_slice(buffer);
                }
                Some(bounce)
            }
            _ => None,
        };
        let slot =
            self.free_slots.pop().expect("a free slot exists while fewer than depth commands are in flight");
        if kind == CommandKind::Flush && !self.flush_supported {
            // No volatile write cache: every completed write is on stable
            // media already, and the namespace has no flush to send.
            self.slots[slot] = Some(InFlight { tag, kind, lba, buffer: None, bounce: None });
            self.in_flight += 1;
            self.finished.borrow_mut().push(Finished { slot, status_field: 0 });
            return Ok(());
        }
        let payload = match (&bounce, buffer) {
            (Some(bounce), _) => bounce.as_ptr().cast_mut().cast::<c_void>(),
            (None, Some(buffer)) => buffer.as_ptr().cast_mut().cast::<c_void>(),
            (None, None) => std::ptr::null_mut(),
        };
        let status = self.send(slot, &command, payload);
        if status != 0 {
            self.free_slots.push(slot);
            let error = if status == -libc::ENOMEM {
                NvmeError::QueueFull { depth: self.depth }
            } else {
                NvmeError::Spdk {
                    action: format!("submitting a {kind} at LBA {lba} to {}", self.info.description),
                    source: io::Error::from_raw_os_error(-status),
                }
            };
            return Err(Box::new(Rejected { error, command }));
        }
        // The driver holds pointers into these buffers until the callback;
        // moving the DmaBuf handles does not move the memory.
        let buffer = match command {
            Command::Write { buffer, .. } | Command::Read { buffer, .. } => Some(buffer),
            Command::Flush => None,
        };
        self.slots[slot] = Some(InFlight { tag, kind, lba, buffer, bounce });
        self.in_flight += 1;
        Ok(())
    }

    fn process_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
        if self.in_flight > 0 {
            self.poll();
        }
        self.reap(completions)
    }

    fn wait(&mut self) -> Result<(), NvmeError> {
        // A polled driver has nothing to sleep on: spin until a callback ran.
        while self.in_flight > 0 && self.finished.borrow().is_empty() {
            if let Some(reason) = &self.failed {
                return Err(self.failed_error(reason));
            }
            self.poll();
            std::hint::spin_loop();
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

impl Drop for SpdkQueuePair {
    fn drop(&mut self) {
        // The driver may still read or write the buffers in the slots: let
        // every command finish first. A failed queue pair stops here;
        // freeing it below aborts what it still holds.
        let mut finished = Vec::new();
        while self.in_flight > 0 {
            finished.clear();
            self.reap(&mut finished);
            if self.in_flight == 0 {
                break;
            }
            // A failure completes every command (fail), so this ends.
            self.poll();
        }
        // SAFETY: ours, used on this thread; after this the driver touches
        // none of its commands' buffers (the callbacks of aborted commands
        // run inside the call and only record into `finished`).
        let status = unsafe { sys::spdk_nvme_ctrlr_free_io_qpair(self.queue_pair.as_ptr()) };
        if status != 0 {
            error!(namespace = %self.info.description, status, "freeing an SPDK I/O queue pair failed");
        }
    }
}
