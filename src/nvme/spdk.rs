//! The SPDK backend: SPDK's user-space NVMe driver, a controller attached by
//! transport id (a PCIe device bound to vfio-pci or uio, or NVMe over TCP or
//! RDMA), one of its namespaces, and one I/O queue pair per shard, submitted
//! to and polled on that shard's thread. No SPDK application framework: nvkv
//! keeps its own reactors and calls the driver directly.
//!
//! This module owns SPDK's env (initialised once per process), the
//! controller (detached when the namespace and every queue pair are gone),
//! and every buffer a command in flight points to. It must never free or
//! hand back a buffer before the driver has called back for its command,
//! never report a failed command as done, and never touch a queue pair from
//! another thread than the one that opened it.

use std::cell::RefCell;
use std::ffi::{c_void, CString};
use std::io;
use std::ptr::NonNull;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use spdk_sys as sys;
use tracing::{error, info, warn};

use super::buffer::Memory;
use super::open::SpdkOptions;
use super::{
    check_command, BufferArena, Command, CommandKind, Completion, DmaBuf, Namespace, NamespaceInfo,
    NvmeError, NvmeStatus, QueuePair, QueuePairConfig, Rejected,
};

/// What spdk_vtophys returns for memory SPDK does not know (all ones; the
/// header's macro reaches Rust as -1).
const VTOPHYS_ERROR: u64 = sys::SPDK_VTOPHYS_ERROR as u64;

/// How often the controller's admin queue is polled: keep-alives of a
/// fabrics controller (10 s timeout by default) and asynchronous events.
const ADMIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The env settings of the first open, kept to refuse a later open that asks
/// for other memory: SPDK's env is set up once per process.
static ENVIRONMENT: OnceLock<Result<(u64, bool), String>> = OnceLock::new();

/// Initialises SPDK's env once per process, with the memory `options` ask
/// for, and gives the calling thread its CPU affinity back (DPDK pins the
/// thread that initialises it to its main core; nvkv places its own
/// reactors).
fn initialise_environment(options: &SpdkOptions) -> Result<(), NvmeError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let affinity = current_affinity();
        let result = start_environment(options);
        if let Some(set) = affinity {
            // SAFETY: sched_setaffinity reads a cpu_set_t we own.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        }
        result.map(|()| (options.memory_bytes, options.hugepages))
    });
    match result {
        Ok((memory_bytes, hugepages)) => {
            if (*memory_bytes, *hugepages) != (options.memory_bytes, options.hugepages) {
                warn!(
                    memory_bytes,
                    hugepages,
                    requested_memory_bytes = options.memory_bytes,
                    requested_hugepages = options.hugepages,
                    "SPDK's env was set up by an earlier open in this process; keeping its memory settings"
                );
            }
            Ok(())
        }
        Err(message) => Err(NvmeError::Invalid(message.clone())),
    }
}

fn current_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes.
    let status = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (status == 0).then_some(set)
}

fn start_environment(options: &SpdkOptions) -> Result<(), String> {
    let megabytes = options.memory_bytes / (1 << 20);
    let memory_size = i32::try_from(megabytes).map_err(|_| {
        format!("spdk_memory_bytes = {} is too large for SPDK; lower it", options.memory_bytes)
    })?;
    let name = CString::new("nvkv").expect("no NUL in the name");
    // SAFETY: an all-zero spdk_env_opts is what spdk_env_opts_init expects
    // before it fills in the defaults for opts_size bytes.
    let mut opts: sys::spdk_env_opts = unsafe { std::mem::zeroed() };
    opts.opts_size = std::mem::size_of::<sys::spdk_env_opts>();
    // SAFETY: opts is a valid spdk_env_opts of opts_size bytes.
    unsafe { sys::spdk_env_opts_init(&mut opts) };
    opts.name = name.as_ptr();
    opts.mem_size = memory_size;
    opts.no_huge = !options.hugepages;
    // Without a PCIe controller DPDK need not scan the PCI bus (it would
    // probe every device it has a driver for, NICs included). The env is
    // set up once: a process that first opens a fabrics controller cannot
    // open a PCIe one later.
    opts.no_pci = pci_address_of(&options.transport).is_none();
    // SAFETY: opts and the strings it points to live across the call; SPDK
    // copies what it keeps.
    let status = unsafe { sys::spdk_env_init(&opts) };
    if status != 0 {
        let source = io::Error::from_raw_os_error(-status);
        return Err(if options.hugepages {
            format!(
                "cannot initialise SPDK's env with {megabytes} MiB of hugepages: {source}; reserve hugepages \
                 (echo 1024 > /proc/sys/vm/nr_hugepages for 2 GiB of 2 MiB pages), lower \
                 namespace.spdk_memory_bytes, or set namespace.spdk_hugepages = false for a TCP or RDMA \
                 transport"
            )
        } else {
            format!(
                "cannot initialise SPDK's env with {megabytes} MiB of ordinary memory (no hugepages): {source}; \
                 lower namespace.spdk_memory_bytes"
            )
        });
    }
    info!(memory_mib = megabytes, hugepages = options.hugepages, "initialised SPDK's env");
    Ok(())
}

/// An attached controller. Detached when the last namespace or queue pair
/// holding it is gone.
struct Controller {
    pointer: NonNull<sys::spdk_nvme_ctrlr>,
    transport: String,
    /// Dropping it stops the admin poller.
    stop_admin_poller: Mutex<Option<mpsc::Sender<()>>>,
    admin_poller: Mutex<Option<std::thread::JoinHandle<()>>>,
}

// SAFETY: the controller functions nvkv calls from several threads
// (allocating and freeing I/O queue pairs, polling the admin queue) take
// the controller's own lock; I/O queue pairs are used by one thread each.
unsafe impl Send for Controller {}
// SAFETY: as above.
unsafe impl Sync for Controller {}

/// The controller pointer, to move into the admin poller thread.
struct ControllerPointer(NonNull<sys::spdk_nvme_ctrlr>);
// SAFETY: spdk_nvme_ctrlr_process_admin_completions takes the controller's
// lock, so one thread may poll while others submit I/O.
unsafe impl Send for ControllerPointer {}

/// The controllers this process has attached, by transport id: every
/// namespace and queue pair on one controller (two shards, a second
/// namespace, a reopen while a queue pair still holds it) shares one
/// attachment, counted by its `Arc`. An entry whose controller is being
/// detached stays here until the detach is done ([`DETACHED`] then wakes
/// the waiting attaches), so an attach never runs beside a detach of the
/// same controller.
static CONTROLLERS: Mutex<Vec<(String, Weak<Controller>)>> = Mutex::new(Vec::new());
/// Signalled when a controller has been detached and left [`CONTROLLERS`].
static DETACHED: Condvar = Condvar::new();

impl Controller {
    /// The controller at `transport`, attached now or shared with an
    /// earlier open that still holds it.
    fn attach(transport: &str) -> Result<Arc<Controller>, NvmeError> {
        let mut controllers = CONTROLLERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some((_, weak)) = controllers.iter().find(|(attached, _)| attached == transport) {
            if let Some(controller) = weak.upgrade() {
                return Ok(controller);
            }
            // Its last holder is detaching it: wait until that is done,
            // then attach anew.
            controllers = DETACHED.wait(controllers).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let controller = Controller::connect(transport)?;
        controllers.push((transport.to_owned(), Arc::downgrade(&controller)));
        Ok(controller)
    }

    /// How many attachments this process holds of `transport` (0 or 1).
    #[cfg(test)]
    fn attached(transport: &str) -> usize {
        let controllers = CONTROLLERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        controllers.iter().filter(|(attached, _)| attached == transport).count()
    }

    fn connect(transport: &str) -> Result<Arc<Controller>, NvmeError> {
        let text = CString::new(transport).map_err(|_| {
            NvmeError::Invalid(format!("namespace.transport {transport:?} contains a NUL byte; remove it"))
        })?;
        // SAFETY: an all-zero transport id is what the parser fills in.
        let mut transport_id: sys::spdk_nvme_transport_id = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid for the call.
        if unsafe { sys::spdk_nvme_transport_id_parse(&mut transport_id, text.as_ptr()) } != 0 {
            return Err(NvmeError::Invalid(format!(
                "namespace.transport {transport:?} is not an SPDK transport id; write it as \
                 \"trtype:PCIe traddr:0000:01:00.0\" or \"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 \
                 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1\""
            )));
        }
        // SAFETY: the transport id lives across the call; null options take
        // SPDK's defaults.
        let pointer = unsafe { sys::spdk_nvme_connect(&transport_id, std::ptr::null(), 0) };
        let pointer = NonNull::new(pointer).ok_or_else(|| {
            NvmeError::Invalid(format!(
                "cannot attach the NVMe controller at {transport:?}; check that it exists and answers: a PCIe \
                 device must be bound to vfio-pci or uio_pci_generic (SPDK's scripts/setup.sh), a TCP target \
                 must listen on that address and export that subsystem NQN (SPDK logs the reason above)"
            ))
        })?;
        let (stop, stopped) = mpsc::channel::<()>();
        let polled = ControllerPointer(pointer);
        let poller = std::thread::Builder::new()
            .name("nvkv-spdk-admin".to_owned())
            .spawn(move || {
                let polled = polled;
                let mut failing = false;
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(ADMIN_POLL_INTERVAL) {
                    // SAFETY: the controller stays attached until this
                    // thread is joined (Controller::drop).
                    let status = unsafe { sys::spdk_nvme_ctrlr_process_admin_completions(polled.0.as_ptr()) };
                    // Said once per failure, not ten times a second.
                    let failed = status < 0;
                    if failed && !failing {
                        error!(
                            error = %io::Error::from_raw_os_error(-status),
                            "polling the NVMe controller's admin queue failed; the controller may be gone"
                        );
                    }
                    failing = failed;
                }
            })
            .map_err(|source| NvmeError::Spdk {
                action: "starting the admin queue poller thread (check the thread limit)".to_owned(),
                source,
            });
        let poller = match poller {
            Ok(poller) => poller,
            Err(error) => {
                // SAFETY: attached above and used by nothing else.
                unsafe { sys::spdk_nvme_detach(pointer.as_ptr()) };
                return Err(error);
            }
        };
        info!(transport, "attached NVMe controller through SPDK");
        Ok(Arc::new(Controller {
            pointer,
            transport: transport.to_owned(),
            stop_admin_poller: Mutex::new(Some(stop)),
            admin_poller: Mutex::new(Some(poller)),
        }))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        drop(self.stop_admin_poller.lock().map(|mut stop| stop.take()));
        if let Some(poller) = self.admin_poller.lock().ok().and_then(|mut poller| poller.take()) {
            if poller.join().is_err() {
                error!(transport = %self.transport, "the admin queue poller panicked");
            }
        }
        // Held across the detach, so no attach of the same controller runs
        // meanwhile; an attach that found this entry dead waits for
        // DETACHED.
        let mut controllers = CONTROLLERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: every queue pair and namespace holding this controller is
        // gone, and the poller has stopped.
        let status = unsafe { sys::spdk_nvme_detach(self.pointer.as_ptr()) };
        if status != 0 {
            error!(transport = %self.transport, status, "detaching the NVMe controller failed");
        } else {
            info!(transport = %self.transport, "detached NVMe controller");
        }
        let this: *const Controller = self;
        controllers.retain(|(_, weak)| !std::ptr::eq(weak.as_ptr(), this));
        drop(controllers);
        DETACHED.notify_all();
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Controller").field("transport", &self.transport).finish()
    }
}

/// A namespace of an SPDK-attached controller, shared by every shard.
#[derive(Debug)]
pub struct SpdkNamespace {
    info: NamespaceInfo,
    controller: Arc<Controller>,
    namespace: NamespacePointer,
    /// Whether the controller has a volatile write cache, so a flush does
    /// something. Without one every completed write is already durable.
    flush_supported: bool,
}

#[derive(Clone, Copy, Debug)]
struct NamespacePointer(NonNull<sys::spdk_nvme_ns>);
// SAFETY: a namespace handle is read-only data of its controller, valid
// while the controller is attached (the holder also holds the controller).
unsafe impl Send for NamespacePointer {}
// SAFETY: as above.
unsafe impl Sync for NamespacePointer {}

impl SpdkNamespace {
    /// Initialises SPDK's env (first call in the process), attaches the
    /// controller `options.transport` names, and opens namespace
    /// `options.nsid` of it.
    pub fn open(options: &SpdkOptions) -> Result<SpdkNamespace, NvmeError> {
        if options.transport.trim().is_empty() {
            return Err(NvmeError::Invalid(
                "backend = \"spdk\" needs the controller's transport id in namespace.transport, e.g. \
                 \"trtype:PCIe traddr:0000:01:00.0\""
                    .to_owned(),
            ));
        }
        initialise_environment(options)?;
        let controller = Controller::attach(&options.transport)?;
        let nsid = options.nsid;
        // SAFETY: the controller is attached.
        let namespace =
            NonNull::new(unsafe { sys::spdk_nvme_ctrlr_get_ns(controller.pointer.as_ptr(), nsid) })
                .filter(|namespace| {
                    // SAFETY: a namespace handle of an attached controller.
                    unsafe { sys::spdk_nvme_ns_is_active(namespace.as_ptr()) }
                })
                .ok_or_else(|| {
                    NvmeError::Invalid(format!(
                    "the controller at {:?} has no active namespace {nsid}; set namespace.nsid to one it has \
                     (SPDK's identify example or `nvme list-ns` lists them)",
                    options.transport
                ))
                })?;
        // SAFETY: an active namespace of an attached controller.
        let (lba_bytes, capacity_blocks, flags, extended) = unsafe {
            (
                sys::spdk_nvme_ns_get_sector_size(namespace.as_ptr()),
                sys::spdk_nvme_ns_get_num_sectors(namespace.as_ptr()),
                sys::spdk_nvme_ns_get_flags(namespace.as_ptr()),
                sys::spdk_nvme_ns_supports_extended_lba(namespace.as_ptr()),
            )
        };
        if extended || !lba_bytes.is_power_of_two() || lba_bytes < 512 {
            return Err(NvmeError::Invalid(format!(
                "namespace {nsid} at {:?} is formatted with {lba_bytes}-byte blocks{}; nvkv needs a power of \
                 two of at least 512 without interleaved metadata: format it (nvme format --lbaf) to a plain \
                 512 or 4096-byte LBA format",
                options.transport,
                if extended { " and metadata interleaved with the data" } else { "" }
            )));
        }
        if capacity_blocks == 0 {
            return Err(NvmeError::Invalid(format!(
                "namespace {nsid} at {:?} has no blocks; use another namespace",
                options.transport
            )));
        }
        let flush_supported = flags & sys::SPDK_NVME_NS_FLUSH_SUPPORTED != 0;
        let pci_address = pci_address_of(&options.transport);
        info!(
            transport = %options.transport,
            nsid,
            lba_bytes,
            capacity_blocks,
            flush_supported,
            "opened NVMe namespace through SPDK"
        );
        Ok(SpdkNamespace {
            info: NamespaceInfo {
                lba_bytes,
                capacity_blocks,
                backend: "spdk",
                description: format!("{} nsid {nsid}", options.transport),
                pci_address,
            },
            controller,
            namespace: NamespacePointer(namespace),
            flush_supported,
        })
    }
}

/// The PCI address in a PCIe transport id (`traddr:0000:01:00.0`), for the
/// topology to prefer cores on the device's NUMA node.
fn pci_address_of(transport: &str) -> Option<String> {
    let lower = transport.to_ascii_lowercase();
    if !lower.contains("trtype:pcie") && !lower.contains("trtype=pcie") {
        return None;
    }
    transport.split_whitespace().find_map(|field| {
        let (key, value) = field.split_once([':', '='])?;
        key.eq_ignore_ascii_case("traddr").then(|| value.to_owned())
    })
}

impl Namespace for SpdkNamespace {
    fn info(&self) -> &NamespaceInfo {
        &self.info
    }

    fn open_queue_pair(&self, config: &QueuePairConfig) -> Result<Box<dyn QueuePair>, NvmeError> {
        Ok(Box::new(SpdkQueuePair::open(self, config)?))
    }
}

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

struct SpdkQueuePair {
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
    fn open(namespace: &SpdkNamespace, config: &QueuePairConfig) -> Result<SpdkQueuePair, NvmeError> {
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

/// The SPDK target the tests run against, from `NVKV_SPDK_TRID` (a
/// transport id), with namespace `nsid` of it; `NVKV_SPDK_HUGEPAGES=0` runs
/// them without hugepages (TCP and RDMA only). `None`, said loudly on
/// stderr, when the variable is not set: `what` did not run.
#[cfg(test)]
pub(crate) fn test_target(nsid: u32, what: &str) -> Option<SpdkOptions> {
    let Ok(transport) = std::env::var("NVKV_SPDK_TRID") else {
        eprintln!(
            "NVKV_SPDK_TRID is not set: {what} on the spdk backend DID NOT RUN. Set it to an SPDK transport id \
             with namespaces 1 and 2 to write over, e.g. start a target with bench/spdk-target.sh --spdk DIR"
        );
        return None;
    };
    let hugepages = std::env::var("NVKV_SPDK_HUGEPAGES").map_or(true, |value| value != "0");
    eprintln!("running {what} on the spdk backend: {transport} nsid {nsid} (hugepages: {hugepages})");
    Some(SpdkOptions { transport, nsid, memory_bytes: 512 << 20, hugepages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_taken_from_pcie_transport_ids_only() {
        assert_eq!(pci_address_of("trtype:PCIe traddr:0000:01:00.0").as_deref(), Some("0000:01:00.0"));
        assert_eq!(pci_address_of("trtype=pcie traddr=0000:5e:00.0").as_deref(), Some("0000:5e:00.0"));
        assert_eq!(pci_address_of("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.x"), None);
    }

    /// The namespace these tests write over: 1 and 2 belong to the
    /// namespace suite and the shard log test, which run meanwhile.
    const NSID: u32 = 3;

    fn write_command(queue: &mut dyn QueuePair, lba: u64, fill: u8) -> Command {
        let mut buffer = queue.allocate(queue.info().lba_bytes as usize);
        buffer.fill(fill);
        Command::Write { lba, buffer, fua: true }
    }

    /// Bug: two shards (or tests) attaching one controller at once, or one
    /// attaching while the last holder detaches it, must share a single
    /// attachment and each drive its own queue pair.
    #[test]
    fn shards_attaching_one_controller_at_once_share_it() {
        let Some(options) = test_target(NSID, "the shared controller test") else { return };
        let rounds = 6;
        let threads = 2;
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|scope| {
            for shard in 0..threads {
                let (options, barrier) = (&options, &barrier);
                scope.spawn(move || {
                    for round in 0..rounds {
                        // Both open at once, both hold a queue pair at once.
                        barrier.wait();
                        let namespace = SpdkNamespace::open(options)
                            .unwrap_or_else(|error| panic!("shard {shard} round {round}: open: {error}"));
                        assert!(
                            Controller::attached(&options.transport) <= 1,
                            "one attachment per transport"
                        );
                        let mut queue =
                            namespace.open_queue_pair(&QueuePairConfig::default()).expect("qpair");
                        barrier.wait();
                        let last = queue.info().capacity_blocks - 1;
                        let lba = last - (shard * rounds + round) as u64;
                        let fill = (shard * 16 + round) as u8 + 1;
                        let command = write_command(queue.as_mut(), lba, fill);
                        let Command::Write { buffer, .. } = command else { unreachable!() };
                        crate::nvme::suite::write(queue.as_mut(), lba, buffer, true);
                        let read = crate::nvme::suite::read(queue.as_mut(), lba, 1);
                        assert!(
                            read.iter().all(|&byte| byte == fill),
                            "shard {shard} round {round} read back"
                        );
                        // Odd rounds drop at different times, so one
                        // shard's detach races the other's next attach.
                        if round % 2 == 1 && shard == 1 {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                });
            }
        });
    }

    /// A TCP proxy between the host and the target that can hold the
    /// target's answers and then cut every connection: a qpair failure
    /// with commands in flight, on demand.
    struct Proxy {
        port: u16,
        hold_answers: Arc<std::sync::atomic::AtomicBool>,
        sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
    }

    impl Proxy {
        fn start(target: std::net::SocketAddr) -> Proxy {
            use std::io::{Read, Write};
            use std::sync::atomic::{AtomicBool, Ordering};
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
            let port = listener.local_addr().expect("proxy address").port();
            let hold_answers = Arc::new(AtomicBool::new(false));
            let sockets: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
            let (hold, kept) = (hold_answers.clone(), sockets.clone());
            std::thread::spawn(move || {
                for host in listener.incoming() {
                    let Ok(host) = host else { return };
                    let Ok(target) = std::net::TcpStream::connect(target) else { return };
                    let _ = (host.set_nodelay(true), target.set_nodelay(true));
                    {
                        let mut kept = kept.lock().expect("proxy sockets");
                        kept.push(host.try_clone().expect("clone"));
                        kept.push(target.try_clone().expect("clone"));
                    }
                    for (mut from, mut to, answers) in [
                        (host.try_clone().expect("clone"), target.try_clone().expect("clone"), false),
                        (target, host, true),
                    ] {
                        let hold = hold.clone();
                        std::thread::spawn(move || {
                            let mut buffer = vec![0u8; 1 << 16];
                            loop {
                                let Ok(read) = from.read(&mut buffer) else { return };
                                if read == 0 {
                                    return;
                                }
                                while answers && hold.load(Ordering::Acquire) {
                                    std::thread::sleep(Duration::from_millis(5));
                                }
                                if to.write_all(&buffer[..read]).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                }
            });
            Proxy { port, hold_answers, sockets }
        }

        fn cut(&self) {
            for socket in self.sockets.lock().expect("proxy sockets").iter() {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// `transport` with its trsvcid (port) replaced by `port`, and the
    /// target's address.
    fn through_proxy(transport: &str, port: u16) -> (String, std::net::SocketAddr) {
        let field = |key: &str| {
            transport.split_whitespace().find_map(|field| {
                let (name, value) = field.split_once([':', '='])?;
                name.eq_ignore_ascii_case(key).then(|| value.to_owned())
            })
        };
        let address = field("traddr").expect("NVKV_SPDK_TRID names a traddr");
        let service = field("trsvcid").expect("NVKV_SPDK_TRID names a trsvcid (a TCP target)");
        let target =
            format!("{address}:{service}").parse().expect("traddr:trsvcid is an IP address and port");
        let proxied = transport
            .split_whitespace()
            .map(|field| match field.split_once([':', '=']) {
                Some((name, _)) if name.eq_ignore_ascii_case("trsvcid") => format!("{name}:{port}"),
                _ => field.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        (proxied, target)
    }

    /// Bug: a queue pair whose connection broke left its commands in flight
    /// for ever, and the shard hung. Now every one of them completes with
    /// QueuePairFailed, later ones are refused, and nothing hangs.
    #[test]
    fn a_failed_queue_pair_fails_its_commands_instead_of_hanging() {
        use std::sync::atomic::Ordering;
        let Some(options) = test_target(NSID, "the failed queue pair test") else { return };
        if !options.transport.to_ascii_lowercase().contains("trtype:tcp") {
            panic!("the failed queue pair test needs a TCP target (it cuts the connection); NVKV_SPDK_TRID is not one");
        }
        let (transport, target) = through_proxy(&options.transport, 0);
        let proxy = Proxy::start(target);
        let (transport, _) = through_proxy(&transport, proxy.port);
        let namespace = SpdkNamespace::open(&SpdkOptions { transport, ..options })
            .expect("open the namespace through the proxy");
        let mut queue = namespace.open_queue_pair(&QueuePairConfig::default()).expect("queue pair");
        let last = queue.info().capacity_blocks - 1;
        let command = write_command(queue.as_mut(), last, 7);
        let Command::Write { buffer, .. } = command else { unreachable!() };
        crate::nvme::suite::write(queue.as_mut(), last, buffer, true);

        proxy.hold_answers.store(true, Ordering::Release);
        let commands = 8;
        for index in 0..commands {
            let command = write_command(queue.as_mut(), last - 1 - index, 9);
            queue.submit(command, index).unwrap_or_else(|rejected| panic!("submit: {}", rejected.error));
        }
        let mut completions = Vec::new();
        let held_until = std::time::Instant::now() + Duration::from_millis(200);
        while std::time::Instant::now() < held_until {
            queue.process_completions(&mut completions);
        }
        assert!(completions.is_empty(), "answers are held, yet {} commands completed", completions.len());
        assert_eq!(queue.in_flight(), commands as usize);

        proxy.cut();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while queue.in_flight() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} commands still hang 20 s after the cut",
                queue.in_flight()
            );
            queue.process_completions(&mut completions);
        }
        assert_eq!(completions.len(), commands as usize);
        for completion in &completions {
            match &completion.result {
                Err(NvmeError::QueuePairFailed { kind: CommandKind::Write, namespace, .. }) => {
                    assert!(namespace.contains(&proxy.port.to_string()), "{namespace}")
                }
                other => panic!("command {} ended with {other:?}, not QueuePairFailed", completion.tag),
            }
            assert!(completion.buffer.is_some(), "the buffer comes back");
        }
        let command = write_command(queue.as_mut(), last, 1);
        let rejected = queue.submit(command, 99).expect_err("a failed queue pair refuses commands");
        assert!(matches!(rejected.error, NvmeError::QueuePairFailed { .. }), "{:?}", rejected.error);
        assert!(rejected.error.is_device_failure());
        eprintln!("[spdk] after the cut: {}", rejected.error);
        // Closing a failed queue pair and detaching its failed controller
        // must not hang either (the test would time out).
        drop(queue);
        drop(namespace);
    }
}
