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
//!
//! Here: SPDK's env, the controller and the namespace; `queue` holds the
//! queue pair (its DMA buffers, slots and completion callback).

use std::ffi::CString;
use std::io;
use std::ptr::NonNull;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use spdk_sys as sys;
use tracing::{error, info, warn};

use super::open::SpdkOptions;
use super::{Namespace, NamespaceInfo, NvmeError, QueuePair, QueuePairConfig};

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

mod queue;
#[cfg(test)]
mod tests;

use queue::SpdkQueuePair;
