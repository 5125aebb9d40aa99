//! The io_uring backend: a namespace on a preallocated file or a raw block
//! device, opened with O_DIRECT and an exclusive lock, with one io_uring
//! instance per queue pair.
//!
//! This module owns the file descriptor of the namespace, the lock on it, and
//! every buffer the kernel may touch while a command is in flight. It must
//! never free, move or hand back a buffer before the kernel has posted the
//! completion of the command that uses it, and never report a failed or short
//! write as done.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path};
use std::sync::{Arc, Once};

use io_uring::{opcode, types, IoUring};
use tracing::{error, info, warn};

use super::{
    check_command, BufferArena, Command, CommandKind, Completion, DmaBuf, Namespace, NamespaceInfo,
    NvmeError, QueuePair, QueuePairConfig, Rejected,
};

/// `BLKSSZGET`, `_IO(0x12, 104)`: the logical block size of a block device,
/// as an `int`. This encoding holds on x86_64, aarch64 and riscv64 Linux
/// (not on powerpc, mips or sparc, which encode ioctl directions differently).
const BLKSSZGET: libc::Ioctl = 0x1268;

/// `BLKGETSIZE64`, `_IOR(0x12, 114, size_t)`: the capacity of a block device
/// in bytes, as a `u64`. Same encoding caveat as [`BLKSSZGET`].
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272;

/// `STATX_DIOALIGN` (Linux 6.1): asks statx for the direct I/O alignment of
/// a file. Not exported by libc for glibc targets.
const STATX_DIOALIGN: u32 = 0x2000;

/// The most entries an io_uring instance may have (`IORING_MAX_ENTRIES`).
const RING_ENTRIES_MAX: u32 = 32768;

/// The buffer index of the arena in the ring's registered buffer table: the
/// whole arena is registered as one iovec.
const ARENA_BUFFER_INDEX: u16 = 0;

/// How to open a namespace on a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringOptions {
    /// Size of a namespace file in bytes: a whole number of `lba_bytes`.
    /// Ignored for a block device, whose capacity is its own.
    pub namespace_bytes: u64,
    /// Block size of a namespace file: a power of two, at least 512 and at
    /// least the direct I/O alignment of the filesystem. A block device uses
    /// its own logical block size.
    pub lba_bytes: u32,
    /// Whether to create (and preallocate) a namespace file that is missing.
    pub create: bool,
}

impl Default for UringOptions {
    fn default() -> Self {
        UringOptions { namespace_bytes: 0, lba_bytes: 4096, create: true }
    }
}

/// A namespace on a file or block device, shared by every shard. Each shard
/// opens its own [`QueuePair`]; the exclusive lock lives as long as the
/// namespace or any of its queue pairs.
#[derive(Debug)]
pub struct UringNamespace {
    info: NamespaceInfo,
    file: Arc<File>,
}

impl UringNamespace {
    /// Opens (and, for a missing file with `options.create`, creates and
    /// preallocates) the namespace at `path`, and takes its exclusive lock.
    pub fn open(path: &Path, options: &UringOptions) -> Result<UringNamespace, NvmeError> {
        let shown = path.display().to_string();
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.file_type().is_block_device() => open_block_device(path, options),
            Ok(metadata) if metadata.is_file() => open_file(path, options, false),
            Ok(_) => Err(NvmeError::Invalid(format!(
                "namespace path {shown} is neither a regular file nor a block device; \
                 point it at a namespace file or a raw block device"
            ))),
            Err(error) if error.kind() == io::ErrorKind::NotFound && options.create => {
                open_file(path, options, true)
            }
            Err(source) => Err(NvmeError::Open { path: shown, source }),
        }
    }
}

impl Namespace for UringNamespace {
    fn info(&self) -> &NamespaceInfo {
        &self.info
    }

    fn open_queue_pair(&self, config: &QueuePairConfig) -> Result<Box<dyn QueuePair>, NvmeError> {
        Ok(Box::new(UringQueuePair::open(self.info.clone(), self.file.clone(), config)?))
    }
}

fn open_file(path: &Path, options: &UringOptions, creating: bool) -> Result<UringNamespace, NvmeError> {
    let shown = path.display().to_string();
    let lba_bytes = options.lba_bytes;
    if !lba_bytes.is_power_of_two() || lba_bytes < 512 {
        return Err(NvmeError::Invalid(format!(
            "LBA size {lba_bytes} for namespace file {shown} is not a power of two of at least 512; \
             set lba_bytes to 4096"
        )));
    }
    let namespace_bytes = options.namespace_bytes;
    if namespace_bytes == 0 || namespace_bytes % u64::from(lba_bytes) != 0 {
        return Err(NvmeError::Invalid(format!(
            "namespace size {namespace_bytes} bytes for {shown} is not a positive whole number of \
             {lba_bytes}-byte blocks; set namespace_bytes to a multiple of {lba_bytes}"
        )));
    }
    // create_new tells us whether this call made the file, and so may
    // remove it again if preparing it fails.
    let (file, created) = if creating {
        match open_direct(path, Creation::New) {
            Ok(file) => (file, true),
            Err(NvmeError::Open { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                (open_direct(path, Creation::Existing)?, false)
            }
            Err(NvmeError::Open { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let directory =
                    path.parent().map_or_else(|| ".".to_string(), |parent| parent.display().to_string());
                return Err(NvmeError::Invalid(format!(
                    "cannot create namespace file {shown}: its directory {directory} does not exist; create \
                     it, or set namespace.path to a file in an existing directory"
                )));
            }
            Err(error) => return Err(error),
        }
    } else {
        (open_direct(path, Creation::Existing)?, false)
    };
    if let Err(error) = prepare_file(&file, path, options) {
        if created {
            // Leave no half-made namespace behind for the next start to trip
            // on; this call made the file, so it is ours to remove.
            drop(file);
            let _ = std::fs::remove_file(path);
        }
        return Err(error);
    }
    let capacity_blocks = namespace_bytes / u64::from(lba_bytes);
    info!(path = %shown, namespace_bytes, lba_bytes, "opened namespace file with O_DIRECT");
    Ok(UringNamespace {
        info: NamespaceInfo {
            lba_bytes,
            capacity_blocks,
            backend: "uring",
            description: shown,
            pci_address: None,
        },
        file: Arc::new(file),
    })
}

/// Locks the file, preallocates it when empty, and checks its size and its
/// direct I/O alignment against the options.
fn prepare_file(file: &File, path: &Path, options: &UringOptions) -> Result<(), NvmeError> {
    let shown = path.display().to_string();
    lock_exclusive(file, path)?;
    let actual = file.metadata().map_err(|source| NvmeError::Open { path: shown.clone(), source })?.len();
    if actual == 0 && options.create {
        // An empty file is one we just created, or one whose creation was
        // interrupted before preallocation: either way nothing is in it yet.
        let length = libc::off_t::try_from(options.namespace_bytes).map_err(|_| {
            NvmeError::Invalid(format!(
                "namespace size {} bytes for {shown} is too large for this platform; lower namespace_bytes",
                options.namespace_bytes
            ))
        })?;
        // SAFETY: fallocate on a descriptor we own; no memory is passed.
        let status = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) };
        if status != 0 {
            let source = io::Error::last_os_error();
            return Err(NvmeError::Invalid(format!(
                "cannot preallocate {} bytes for namespace file {shown}: {source}; \
                 free space on that filesystem or lower namespace_bytes",
                options.namespace_bytes
            )));
        }
        zero_fill(file, &shown, options.namespace_bytes)?;
        info!(path = %shown, namespace_bytes = options.namespace_bytes, "created and preallocated namespace file");
    } else if actual != options.namespace_bytes {
        return Err(NvmeError::SizeMismatch { path: shown, expected: options.namespace_bytes, actual });
    }
    if let Some((memory_alignment, offset_alignment)) = direct_io_alignment(file) {
        if offset_alignment == 0 {
            return Err(NvmeError::Invalid(format!(
                "the filesystem under namespace file {shown} does not support direct I/O (O_DIRECT); \
                 put the namespace on ext4 or xfs"
            )));
        }
        let needed = memory_alignment.max(offset_alignment);
        if options.lba_bytes < needed {
            return Err(NvmeError::Invalid(format!(
                "LBA size {} for namespace file {shown} is smaller than the filesystem's direct I/O \
                 alignment of {needed} bytes; set lba_bytes to {needed} or more",
                options.lba_bytes
            )));
        }
    }
    Ok(())
}

/// Writes zeroes over a freshly preallocated file. fallocate leaves its
/// extents "unwritten" on ext4 and xfs, and the first direct write to each
/// one then commits a metadata change too, which would make every early
/// log write pay a journal commit. Writing once up front, as databases do
/// with their redo logs, makes later writes pure data writes.
fn zero_fill(file: &File, shown: &str, namespace_bytes: u64) -> Result<(), NvmeError> {
    use std::os::unix::fs::FileExt;
    const CHUNK_BYTES: usize = 1 << 20;
    let buffer = DmaBuf::new_heap(CHUNK_BYTES, 4096);
    let started = std::time::Instant::now();
    let mut offset = 0u64;
    while offset < namespace_bytes {
        let len = (namespace_bytes - offset).min(CHUNK_BYTES as u64) as usize;
        file.write_all_at(&buffer[..len], offset).map_err(|source| {
            NvmeError::Invalid(format!(
                "cannot write zeroes at byte {offset} of new namespace file {shown}: {source}; \
                 check the filesystem has room and is writable"
            ))
        })?;
        offset += len as u64;
    }
    file.sync_data().map_err(|source| NvmeError::Open { path: shown.to_string(), source })?;
    info!(path = %shown, namespace_bytes, elapsed_ms = started.elapsed().as_millis() as u64, "wrote zeroes over the new namespace file");
    Ok(())
}

fn open_block_device(path: &Path, options: &UringOptions) -> Result<UringNamespace, NvmeError> {
    let shown = path.display().to_string();
    let file = open_direct(path, Creation::Existing)?;
    lock_exclusive(&file, path)?;
    let mut logical_block_bytes: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one c_int through the pointer we pass.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut logical_block_bytes) } != 0 {
        return Err(NvmeError::Open { path: shown, source: io::Error::last_os_error() });
    }
    let mut device_bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer we pass.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut device_bytes) } != 0 {
        return Err(NvmeError::Open { path: shown, source: io::Error::last_os_error() });
    }
    let lba_bytes = u32::try_from(logical_block_bytes)
        .ok()
        .filter(|bytes| bytes.is_power_of_two() && *bytes >= 512)
        .ok_or_else(|| {
            NvmeError::Invalid(format!(
                "block device {shown} reports a logical block size of {logical_block_bytes} bytes, \
                 not a power of two of at least 512; use another device"
            ))
        })?;
    let capacity_blocks = device_bytes / u64::from(lba_bytes);
    if capacity_blocks == 0 {
        return Err(NvmeError::Invalid(format!(
            "block device {shown} holds {device_bytes} bytes, less than one {lba_bytes}-byte block; use another device"
        )));
    }
    if options.namespace_bytes != 0 && options.namespace_bytes != device_bytes {
        info!(
            path = %shown,
            configured_bytes = options.namespace_bytes,
            device_bytes,
            "namespace_bytes is ignored for a block device: its capacity is the device's own"
        );
    }
    if options.lba_bytes != lba_bytes {
        info!(
            path = %shown,
            configured_lba_bytes = options.lba_bytes,
            lba_bytes,
            "lba_bytes is ignored for a block device: it uses the device's logical block size"
        );
    }
    let metadata = file.metadata().map_err(|source| NvmeError::Open { path: shown.clone(), source })?;
    let pci_address = pci_address_of_block_device(metadata.rdev());
    info!(path = %shown, device_bytes, lba_bytes, pci_address = ?pci_address, "opened block device with O_DIRECT");
    Ok(UringNamespace {
        info: NamespaceInfo { lba_bytes, capacity_blocks, backend: "uring", description: shown, pci_address },
        file: Arc::new(file),
    })
}

#[derive(Clone, Copy)]
enum Creation {
    New,
    Existing,
}

fn open_direct(path: &Path, creation: Creation) -> Result<File, NvmeError> {
    let shown = path.display().to_string();
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(matches!(creation, Creation::New))
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::EINVAL) {
                NvmeError::Invalid(format!(
                    "the filesystem under {shown} refused O_DIRECT ({source}); \
                     put the namespace on a filesystem with direct I/O such as ext4 or xfs"
                ))
            } else {
                NvmeError::Open { path: shown, source }
            }
        })
}

/// Takes the exclusive lock that keeps a second daemon off this namespace.
/// flock belongs to the open file description, so it holds as long as any
/// clone of the descriptor (the namespace, its queue pairs) is open.
/// How long a held lock is retried before the namespace counts as in use.
/// The kernel tears an io_uring instance down asynchronously, so the file
/// of a process (or queue pair) that just closed its ring can stay locked a
/// little while after it is gone; a daemon restarted at once must not fail
/// for that. Another live daemon holds the lock far longer and is refused.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn lock_exclusive(file: &File, path: &Path) -> Result<(), NvmeError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let source = io::Error::last_os_error();
        if source.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(NvmeError::Open { path: path.display().to_string(), source });
        }
        if std::time::Instant::now() >= deadline {
            return Err(NvmeError::Locked { path: path.display().to_string() });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The (memory, offset) alignment direct I/O needs on this file, when the
/// kernel can tell (statx `STATX_DIOALIGN`, Linux 6.1 and later).
fn direct_io_alignment(file: &File) -> Option<(u32, u32)> {
    // SAFETY: statx is plain data; all-zero bytes are a valid value.
    let mut status: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH describes the descriptor
    // itself; statx writes only into `status`.
    let result = unsafe {
        libc::statx(file.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, STATX_DIOALIGN, &mut status)
    };
    if result != 0 || status.stx_mask & STATX_DIOALIGN == 0 {
        return None;
    }
    Some((status.stx_dio_mem_align, status.stx_dio_offset_align))
}

/// The PCI address of the controller behind a block device, found by walking
/// its sysfs path up from the device to the nearest component that looks
/// like a PCI address. None for virtual devices (loop, device mapper).
fn pci_address_of_block_device(device_number: u64) -> Option<String> {
    let (major, minor) = (libc::major(device_number), libc::minor(device_number));
    let device_directory = format!("/sys/dev/block/{major}:{minor}");
    [format!("{device_directory}/device"), device_directory]
        .iter()
        .filter_map(|candidate| std::fs::canonicalize(candidate).ok())
        .find_map(|resolved| pci_address_in_path(&resolved))
}

/// The last component of `path` shaped like a PCI address
/// (`dddd:bb:dd.f`, hexadecimal), e.g. `0000:00:04.0`.
fn pci_address_in_path(path: &Path) -> Option<String> {
    path.components().rev().find_map(|component| match component {
        Component::Normal(name) => {
            name.to_str().filter(|name| looks_like_pci_address(name)).map(str::to_owned)
        }
        _ => None,
    })
}

fn looks_like_pci_address(name: &str) -> bool {
    let bytes = name.as_bytes();
    let hex = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_hexdigit);
    bytes.len() == 12
        && bytes[4] == b':'
        && bytes[7] == b':'
        && bytes[10] == b'.'
        && hex(0..4)
        && hex(5..7)
        && hex(8..10)
        && (b'0'..=b'7').contains(&bytes[11])
}

/// A command the kernel holds: its buffer must stay here, unmoved, until its
/// completion is reaped.
struct InFlight {
    tag: u64,
    kind: CommandKind,
    lba: u64,
    expected_bytes: usize,
    buffer: Option<DmaBuf>,
}

static REGISTRATION_WARNING: Once = Once::new();

struct UringQueuePair {
    // Field order is drop order: the ring (and with it the kernel's pins on
    // the arena) goes first, after `Drop` has waited out every command.
    ring: IoUring,
    file: Arc<File>,
    info: NamespaceInfo,
    arena: BufferArena,
    /// The arena's address range when it is registered as fixed buffer 0.
    registered: Option<std::ops::Range<usize>>,
    completion_event: OwnedFd,
    depth: u32,
    /// Slot i holds the command submitted with user_data i.
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    in_flight: usize,
    /// A failure of `io_uring_enter` seen by `process_completions`, which
    /// cannot return it; the next `wait` does.
    ring_failure: Option<io::Error>,
}

impl UringQueuePair {
    fn open(
        info: NamespaceInfo,
        file: Arc<File>,
        config: &QueuePairConfig,
    ) -> Result<UringQueuePair, NvmeError> {
        let depth = config.depth;
        if depth == 0 || depth > RING_ENTRIES_MAX {
            return Err(NvmeError::Invalid(format!(
                "queue depth {depth} is outside 1..={RING_ENTRIES_MAX}; set the queue depth in that range"
            )));
        }
        let ring = IoUring::new(depth).map_err(|source| NvmeError::Ring {
            action: format!(
                "setup with {depth} entries (check that io_uring is allowed: sysctl kernel.io_uring_disabled=0, \
                 and no seccomp filter blocks it)"
            ),
            source,
        })?;
        // Every pending SQE belongs to a command in flight, and in flight
        // never exceeds depth, so pushing can never find the queue full.
        assert!(
            ring.params().sq_entries() >= depth,
            "io_uring gave fewer SQ entries than the queue depth {depth}"
        );
        assert!(
            ring.params().cq_entries() >= depth,
            "io_uring gave fewer CQ entries than the queue depth {depth}"
        );

        let arena = BufferArena::new(config.registered_buffer_bytes, info.lba_bytes as usize);
        let registered = register_arena(&ring, &arena, config.registered_buffer_bytes);

        // SAFETY: eventfd takes no pointers; we own the returned descriptor.
        let raw_event = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw_event < 0 {
            return Err(NvmeError::Ring {
                action: "completion eventfd creation (check the open file limit, ulimit -n)".to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: raw_event is a fresh descriptor that nothing else owns.
        let completion_event = unsafe { OwnedFd::from_raw_fd(raw_event) };
        ring.submitter()
            .register_eventfd(completion_event.as_raw_fd())
            .map_err(|source| NvmeError::Ring { action: "eventfd registration".to_owned(), source })?;

        Ok(UringQueuePair {
            ring,
            file,
            info,
            arena,
            registered,
            completion_event,
            depth,
            slots: (0..depth).map(|_| None).collect(),
            free_slots: (0..depth as usize).rev().collect(),
            in_flight: 0,
            ring_failure: None,
        })
    }

    fn registered_index(&self, buffer: &DmaBuf) -> Option<u16> {
        let range = self.registered.as_ref()?;
        let start = buffer.as_ptr() as usize;
        // A buffer from another arena is registered too, but not with this
        // ring: only the address range says whether the fixed path applies.
        (range.contains(&start) && start + buffer.len() <= range.end).then_some(ARENA_BUFFER_INDEX)
    }

    /// Hands queued SQEs to the kernel without waiting. A transient refusal
    /// leaves them queued for the next call.
    /// Sends queued submissions; returns whether it entered the kernel.
    fn submit_pending(&mut self) -> bool {
        {
            let submission = self.ring.submission();
            if submission.is_empty() && !submission.cq_overflow() {
                return false;
            }
        }
        self.enter("io_uring submit failed");
        true
    }

    /// One io_uring_enter that submits what is queued, waits for nothing.
    /// A failure is kept for the next `wait` to report.
    fn enter(&mut self, failure: &'static str) {
        match self.ring.submit() {
            Ok(_) => {}
            Err(error) if is_transient(&error) => {}
            Err(error) => {
                error!(namespace = %self.info.description, %error, "{failure}");
                self.ring_failure.get_or_insert(error);
            }
        }
    }

    /// Enters the kernel without submitting or waiting. The kernel posts
    /// many completions (O_DIRECT writes on a file among them) through task
    /// work that runs only when this thread enters the kernel; a reactor
    /// that polls the completion queue from user space alone would see them
    /// late, at the next interrupt (measured here: +50..150 us per write).
    fn enter_for_completions(&mut self) {
        self.enter("io_uring enter failed");
    }

    /// Moves every posted completion into `completions`. Loops while the
    /// kernel reports completions held back by a CQ overflow.
    fn reap(&mut self, completions: &mut Vec<Completion>) -> usize {
        let mut moved = 0;
        loop {
            {
                let UringQueuePair { ring, slots, free_slots, in_flight, .. } = self;
                for entry in ring.completion() {
                    let slot = usize::try_from(entry.user_data()).expect("user_data is a slot index");
                    let command = slots.get_mut(slot).and_then(Option::take).unwrap_or_else(|| {
                        panic!("completion for slot {slot}, which holds no command in flight")
                    });
                    free_slots.push(slot);
                    *in_flight -= 1;
                    completions.push(finish(command, entry.result()));
                    moved += 1;
                }
            }
            if !self.ring.submission().cq_overflow() {
                return moved;
            }
            // Completions the CQ had no room for wait in the kernel; an
            // enter flushes them into the ring.
            if let Err(error) = self.ring.submit() {
                if !is_transient(&error) {
                    error!(namespace = %self.info.description, %error, "io_uring flush of overflowed completions failed");
                    self.ring_failure.get_or_insert(error);
                    return moved;
                }
            }
        }
    }
}

/// Turns a CQE result into the completion of its command.
fn finish(command: InFlight, result: i32) -> Completion {
    let InFlight { tag, kind, lba, expected_bytes, buffer } = command;
    let result = if result < 0 {
        Err(NvmeError::Io { kind, lba, source: io::Error::from_raw_os_error(-result) })
    } else if (result as usize) < expected_bytes {
        Err(NvmeError::Short { kind, lba, done: result as usize, expected: expected_bytes })
    } else {
        Ok(())
    };
    Completion { tag, kind, buffer, result }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY))
}

/// Registers the whole arena as fixed buffer 0. A refusal (most often the
/// memlock limit) is not fatal: unregistered I/O works, a little slower.
fn register_arena(
    ring: &IoUring,
    arena: &BufferArena,
    requested_bytes: usize,
) -> Option<std::ops::Range<usize>> {
    if requested_bytes == 0 {
        return None;
    }
    let (base, bytes) = arena.region();
    let region = [libc::iovec { iov_base: base.cast(), iov_len: bytes }];
    // SAFETY: the arena's memory lives until the queue pair drops, and the
    // ring (declared first) drops and unregisters before the arena does.
    match unsafe { ring.submitter().register_buffers(&region) } {
        Ok(()) => Some(base as usize..base as usize + bytes),
        Err(error) => {
            REGISTRATION_WARNING.call_once(|| {
                warn!(
                    %error,
                    bytes,
                    "cannot register the I/O buffer arena with io_uring; using unregistered buffers \
                     (raise the memlock limit, e.g. LimitMEMLOCK= in the systemd unit, to register them)"
                )
            });
            None
        }
    }
}

impl QueuePair for UringQueuePair {
    fn info(&self) -> &NamespaceInfo {
        &self.info
    }

    fn allocate(&mut self, bytes: usize) -> DmaBuf {
        self.arena.allocate(bytes)
    }

    fn submit(&mut self, command: Command, tag: u64) -> Result<(), Box<Rejected>> {
        if let Err(error) = check_command(&self.info, &command) {
            return Err(Box::new(Rejected { error, command }));
        }
        if self.in_flight >= self.depth as usize {
            return Err(Box::new(Rejected { error: NvmeError::QueueFull { depth: self.depth }, command }));
        }
        let kind = command.kind();
        let fd = types::Fd(self.file.as_raw_fd());
        let lba_bytes = u64::from(self.info.lba_bytes);
        let (lba, buffer, entry) = match command {
            Command::Write { lba, buffer, fua } => {
                let Ok(len) = u32::try_from(buffer.len()) else {
                    return Err(too_large(kind, Command::Write { lba, buffer, fua }));
                };
                let flags = if fua { libc::RWF_DSYNC } else { 0 };
                let offset = lba * lba_bytes;
                let entry = match self.registered_index(&buffer) {
                    Some(index) => opcode::WriteFixed::new(fd, buffer.as_ptr(), len, index)
                        .offset(offset)
                        .rw_flags(flags)
                        .build(),
                    None => {
                        opcode::Write::new(fd, buffer.as_ptr(), len).offset(offset).rw_flags(flags).build()
                    }
                };
                (lba, Some(buffer), entry)
            }
            Command::Read { lba, mut buffer } => {
                let Ok(len) = u32::try_from(buffer.len()) else {
                    return Err(too_large(kind, Command::Read { lba, buffer }));
                };
                let offset = lba * lba_bytes;
                let entry = match self.registered_index(&buffer) {
                    Some(index) => {
                        opcode::ReadFixed::new(fd, buffer.as_mut_ptr(), len, index).offset(offset).build()
                    }
                    None => opcode::Read::new(fd, buffer.as_mut_ptr(), len).offset(offset).build(),
                };
                (lba, Some(buffer), entry)
            }
            Command::Flush => (0, None, opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build()),
        };
        let slot =
            self.free_slots.pop().expect("a free slot exists while fewer than depth commands are in flight");
        let expected_bytes = buffer.as_ref().map_or(0, |buffer| buffer.len());
        // The buffer moves into its slot before the kernel can see the SQE;
        // moving the DmaBuf handle does not move the memory it points to.
        self.slots[slot] = Some(InFlight { tag, kind, lba, expected_bytes, buffer });
        let entry = entry.user_data(slot as u64);
        // SAFETY: the buffer the entry points to is owned by slot `slot`
        // until its CQE is reaped (or, if the queue pair drops first, until
        // `Drop` has waited for it); the descriptor lives in `self.file`.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        assert!(
            pushed.is_ok(),
            "io_uring SQ full with {} of {} commands in flight",
            self.in_flight,
            self.depth
        );
        self.in_flight += 1;
        Ok(())
    }

    fn process_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
        let entered = self.submit_pending();
        if !entered && self.in_flight > 0 && self.ring.completion().is_empty() {
            self.enter_for_completions();
        }
        self.reap(completions)
    }

    fn wait(&mut self) -> Result<(), NvmeError> {
        if let Some(source) = self.ring_failure.take() {
            return Err(NvmeError::Ring {
                action: format!("submission to {}", self.info.description),
                source,
            });
        }
        if self.in_flight == 0 {
            return Ok(());
        }
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => return Ok(()),
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                // The CQ is backed up: there are completions to reap.
                Err(error) if is_transient(&error) => return Ok(()),
                Err(source) => {
                    return Err(NvmeError::Ring {
                        action: format!("wait for completions on {}", self.info.description),
                        source,
                    })
                }
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn completion_fd(&self) -> Option<RawFd> {
        Some(self.completion_event.as_raw_fd())
    }
}

fn too_large(kind: CommandKind, command: Command) -> Box<Rejected> {
    Box::new(Rejected {
        error: NvmeError::Invalid(format!(
            "{kind} buffer is larger than the 4 GiB one io_uring command can move; split it"
        )),
        command,
    })
}

impl Drop for UringQueuePair {
    fn drop(&mut self) {
        // The kernel may still be reading or writing buffers in the slots:
        // wait for every command before anything is freed.
        let mut finished = Vec::new();
        while self.in_flight > 0 {
            finished.clear();
            self.reap(&mut finished);
            if self.in_flight == 0 {
                break;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if is_transient(&error) => {}
                Err(error) => {
                    error!(
                        namespace = %self.info.description,
                        %error,
                        in_flight = self.in_flight,
                        "cannot wait for in-flight commands while closing a queue pair; leaking their buffers"
                    );
                    // Leaking is the only safe choice: the kernel may still
                    // write into these buffers.
                    for command in self.slots.iter_mut().filter_map(Option::take) {
                        std::mem::forget(command.buffer);
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_found_in_sysfs_paths() {
        let nvme = Path::new("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/nvme/nvme0");
        assert_eq!(
            pci_address_in_path(nvme).as_deref(),
            Some("0000:01:00.0"),
            "the nearest PCI component wins"
        );
        assert_eq!(pci_address_in_path(Path::new("/sys/devices/virtual/block/loop0")), None);
        assert_eq!(pci_address_in_path(Path::new("/sys/devices/pci0000:00")), None);
        assert!(!looks_like_pci_address("0000:00:04.8"), "PCI functions are 0..=7");
    }
}
