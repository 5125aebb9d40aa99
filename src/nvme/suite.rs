//! The namespace suite: one set of properties, checked through the
//! [`Namespace`] and [`QueuePair`] traits only, run against every backend
//! (memory, io_uring on a file, io_uring on a raw block device, the fault
//! wrapper), the way openraft runs one storage suite against every store.
//! Then the fault tests, each named after the fault it injects.
//!
//! The suite owns no backend: each backend hands it a factory of fresh
//! namespaces. It must never reach past the traits into a backend, or a
//! backend could pass by a path the layers above never take.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fault::FaultNamespace;
use super::memory::MemoryNamespace;
use super::uring::{UringNamespace, UringOptions};
use super::{Command, CommandKind, Completion, DmaBuf, Namespace, NvmeError, QueuePair, QueuePairConfig};

/// Opens a namespace for one property: fresh where the backend can make one.
type Factory<'a> = &'a dyn Fn() -> Arc<dyn Namespace>;

/// One property of the suite: its name, and the check.
type Property = (&'static str, fn(Factory<'_>));

/// A backend as the suite sees it.
struct Backend<'a> {
    name: &'a str,
    open: Factory<'a>,
    /// Whether a namespace from `open` has never been written, so its
    /// blocks read as zeroes. False for a reused raw block device.
    fresh: bool,
}

/// Runs every property of the suite against `backend`.
fn run_suite(backend: &Backend<'_>) {
    let open = backend.open;
    let properties: [Property; 11] = [
        ("write then read back across several LBAs", write_then_read_back),
        ("FUA write then read back", fua_write_then_read_back),
        ("flush completes", flush_completes),
        ("misaligned buffers are rejected with the command handed back", misaligned_buffers_are_rejected),
        ("out-of-range LBAs are rejected with the command handed back", out_of_range_lbas_are_rejected),
        ("a full queue refuses at its depth", full_queue_refuses_at_depth),
        ("many commands in flight all complete with their tags and buffers", many_in_flight_complete),
        ("wait blocks until a completion", wait_blocks_until_a_completion),
        ("registered and heap buffers both work", registered_and_heap_buffers_work),
        ("the last block is writable and the one past it is refused", last_block_is_the_end),
        (
            "a queue pair dropped with commands in flight finishes them first",
            dropped_queue_pair_finishes_its_commands,
        ),
    ];
    for (name, property) in properties {
        eprintln!("[{}] {name}", backend.name);
        property(open);
    }
    if backend.fresh {
        eprintln!("[{}] never-written blocks read as zeroes", backend.name);
        never_written_blocks_read_as_zeroes(open);
    } else {
        eprintln!(
            "[{}] never-written blocks read as zeroes: not checked, this backend reuses a device that may hold old data",
            backend.name
        );
    }
}

fn config(depth: u32) -> QueuePairConfig {
    QueuePairConfig { depth, registered_buffer_bytes: 1 << 20 }
}

/// Bytes that differ per block and per `seed`, so a read of the wrong block
/// or a stale write cannot pass for the right one.
fn fill(buffer: &mut DmaBuf, lba_bytes: usize, seed: u8) {
    for (block, chunk) in buffer.chunks_mut(lba_bytes).enumerate() {
        for (index, byte) in chunk.iter_mut().enumerate() {
            *byte = seed.wrapping_mul(31).wrapping_add(block as u8).wrapping_add((index % 251) as u8) | 1;
        }
    }
}

fn filled(queue_pair: &mut dyn QueuePair, blocks: usize, seed: u8) -> DmaBuf {
    let lba_bytes = queue_pair.info().lba_bytes as usize;
    let mut buffer = queue_pair.allocate(blocks * lba_bytes);
    fill(&mut buffer, lba_bytes, seed);
    buffer
}

/// Waits for and returns every completion until `count` have arrived.
fn collect(queue_pair: &mut dyn QueuePair, count: usize) -> Vec<Completion> {
    let mut completions = Vec::new();
    while completions.len() < count {
        queue_pair.wait().expect("wait for completions");
        queue_pair.process_completions(&mut completions);
    }
    assert_eq!(completions.len(), count, "more completions than commands submitted");
    completions
}

/// Submits one command and returns its completion.
fn run(queue_pair: &mut dyn QueuePair, command: Command) -> Completion {
    let kind = command.kind();
    if let Err(rejected) = queue_pair.submit(command, 7) {
        panic!("{kind} refused: {}", rejected.error);
    }
    let completion = collect(queue_pair, 1).remove(0);
    assert_eq!(completion.tag, 7, "the completion carries the tag of its command");
    assert_eq!(completion.kind, kind);
    completion
}

/// Writes `buffer` at `lba` and waits for it; panics naming the LBA when it fails.
pub(super) fn write(queue_pair: &mut dyn QueuePair, lba: u64, buffer: DmaBuf, fua: bool) -> DmaBuf {
    let completion = run(queue_pair, Command::Write { lba, buffer, fua });
    if let Err(error) = completion.result {
        panic!("write at LBA {lba} failed: {error}");
    }
    completion.buffer.expect("a write gives its buffer back")
}

/// Reads `blocks` blocks at `lba` and waits for them; panics naming the LBA
/// when it fails.
pub(super) fn read(queue_pair: &mut dyn QueuePair, lba: u64, blocks: usize) -> DmaBuf {
    let lba_bytes = queue_pair.info().lba_bytes as usize;
    let buffer = queue_pair.allocate(blocks * lba_bytes);
    let completion = run(queue_pair, Command::Read { lba, buffer });
    if let Err(error) = completion.result {
        panic!("read at LBA {lba} failed: {error}");
    }
    completion.buffer.expect("a read gives its buffer back")
}

fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    if let Some(index) = actual.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: byte {index} is {:#x}, expected {:#x}", actual[index], expected[index]);
    }
}

fn write_then_read_back(open: Factory<'_>) {
    let namespace = open();
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    let queue_pair = queue_pair.as_mut();
    let first = filled(queue_pair, 3, 1);
    let expected_first = first.to_vec();
    write(queue_pair, 5, first, false);
    let second = filled(queue_pair, 1, 2);
    let expected_second = second.to_vec();
    write(queue_pair, 9, second, false);
    assert_same(&read(queue_pair, 5, 3), &expected_first, "three blocks at LBA 5");
    assert_same(&read(queue_pair, 9, 1), &expected_second, "one block at LBA 9");
    // A read that spans both writes and the unwritten gap between them.
    let lba_bytes = queue_pair.info().lba_bytes as usize;
    let span = read(queue_pair, 6, 4);
    assert_same(&span[..2 * lba_bytes], &expected_first[lba_bytes..], "LBAs 6..8 within a longer read");
    assert_same(&span[3 * lba_bytes..], &expected_second, "LBA 9 within a longer read");
}

fn fua_write_then_read_back(open: Factory<'_>) {
    let namespace = open();
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    let queue_pair = queue_pair.as_mut();
    let buffer = filled(queue_pair, 2, 3);
    let expected = buffer.to_vec();
    let returned = write(queue_pair, 12, buffer, true);
    assert_same(&returned, &expected, "the buffer a FUA write gives back");
    assert_same(&read(queue_pair, 12, 2), &expected, "two blocks written with FUA");
}

fn flush_completes(open: Factory<'_>) {
    let namespace = open();
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    let queue_pair = queue_pair.as_mut();
    let buffer = filled(queue_pair, 1, 4);
    write(queue_pair, 0, buffer, false);
    let completion = run(queue_pair, Command::Flush);
    assert!(completion.buffer.is_none(), "a flush has no buffer");
    if let Err(error) = completion.result {
        panic!("flush failed: {error}");
    }
    assert_eq!(queue_pair.in_flight(), 0);
}

fn misaligned_buffers_are_rejected(open: Factory<'_>) {
    let namespace = open();
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    let lba_bytes = namespace.info().lba_bytes;
    let half = lba_bytes as usize / 2;
    for len in [half, lba_bytes as usize + half, 0] {
        let mut buffer = queue_pair.allocate(2 * lba_bytes as usize);
        buffer.set_len(len);
        let rejected =
            queue_pair.submit(Command::Write { lba: 0, buffer, fua: false }, 1).expect_err("misaligned");
        assert!(
            matches!(rejected.error, NvmeError::Misaligned { kind: CommandKind::Write, bytes, lba_bytes: l, .. }
                if bytes == len && l == lba_bytes),
            "a {len}-byte write: {:?}",
            rejected.error
        );
        assert!(
            matches!(rejected.command, Command::Write { lba: 0, ref buffer, fua: false } if buffer.len() == len),
            "the refused write is handed back unchanged"
        );
        let mut buffer = queue_pair.allocate(2 * lba_bytes as usize);
        buffer.set_len(len);
        let rejected = queue_pair.submit(Command::Read { lba: 0, buffer }, 2).expect_err("misaligned");
        assert!(
            matches!(rejected.error, NvmeError::Misaligned { kind: CommandKind::Read, bytes, .. } if bytes == len),
            "a {len}-byte read: {:?}",
            rejected.error
        );
        assert!(matches!(rejected.command, Command::Read { lba: 0, ref buffer } if buffer.len() == len));
    }
    assert_eq!(queue_pair.in_flight(), 0, "refused commands are not in flight");
}

fn out_of_range_lbas_are_rejected(open: Factory<'_>) {
    let namespace = open();
    let capacity_blocks = namespace.info().capacity_blocks;
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    for (lba, blocks) in [(capacity_blocks, 1), (capacity_blocks - 1, 2), (u64::MAX, 1), (u64::MAX - 1, 2)] {
        let buffer = filled(queue_pair.as_mut(), blocks as usize, 5);
        let rejected =
            queue_pair.submit(Command::Write { lba, buffer, fua: true }, 1).expect_err("out of range");
        assert!(
            matches!(rejected.error, NvmeError::OutOfRange { kind: CommandKind::Write, lba: l, blocks: b, capacity_blocks: c }
                if l == lba && b == blocks && c == capacity_blocks),
            "a write of {blocks} blocks at LBA {lba}: {:?}",
            rejected.error
        );
        assert!(matches!(rejected.command, Command::Write { lba: l, fua: true, .. } if l == lba));
        let buffer = queue_pair.allocate(blocks as usize * namespace.info().lba_bytes as usize);
        let rejected = queue_pair.submit(Command::Read { lba, buffer }, 2).expect_err("out of range");
        assert!(matches!(rejected.error, NvmeError::OutOfRange { kind: CommandKind::Read, .. }));
        assert!(matches!(rejected.command, Command::Read { lba: l, .. } if l == lba));
    }
    assert_eq!(queue_pair.in_flight(), 0, "refused commands are not in flight");
}

fn full_queue_refuses_at_depth(open: Factory<'_>) {
    let namespace = open();
    let depth = 4;
    let mut queue_pair = namespace.open_queue_pair(&config(depth)).expect("open queue pair");
    for tag in 0..u64::from(depth) {
        let buffer = filled(queue_pair.as_mut(), 1, tag as u8);
        if let Err(rejected) = queue_pair.submit(Command::Write { lba: tag, buffer, fua: false }, tag) {
            panic!("write {tag} of {depth} refused: {}", rejected.error);
        }
    }
    assert_eq!(queue_pair.in_flight(), depth as usize);
    let rejected = queue_pair.submit(Command::Flush, 99).expect_err("a full queue refuses");
    assert!(matches!(rejected.error, NvmeError::QueueFull { depth: 4 }), "{:?}", rejected.error);
    assert!(matches!(rejected.command, Command::Flush), "the refused flush is handed back");
    let completions = collect(queue_pair.as_mut(), depth as usize);
    assert!(completions.iter().all(|completion| completion.result.is_ok()));
    assert_eq!(queue_pair.in_flight(), 0);
    // Room again once completions are taken.
    assert!(run(queue_pair.as_mut(), Command::Flush).result.is_ok());
}

fn many_in_flight_complete(open: Factory<'_>) {
    let namespace = open();
    let depth = 32u32;
    let mut queue_pair = namespace.open_queue_pair(&config(depth)).expect("open queue pair");
    let lba_bytes = namespace.info().lba_bytes as usize;
    let mut expected = Vec::new();
    for index in 0..u64::from(depth) {
        // Mixed sizes, so the arena hands out several size classes at once.
        let blocks = 1 + (index % 3) as usize;
        let buffer = filled(queue_pair.as_mut(), blocks, index as u8);
        expected.push(buffer.to_vec());
        let lba = index * 4;
        if let Err(rejected) =
            queue_pair.submit(Command::Write { lba, buffer, fua: index % 2 == 0 }, 1000 + index)
        {
            panic!("write {index} refused: {}", rejected.error);
        }
    }
    let mut completions = collect(queue_pair.as_mut(), depth as usize);
    completions.sort_by_key(|completion| completion.tag);
    for (index, completion) in completions.iter().enumerate() {
        assert_eq!(completion.tag, 1000 + index as u64, "every tag comes back exactly once");
        if let Err(error) = &completion.result {
            panic!("write {index} failed: {error}");
        }
        let buffer = completion.buffer.as_ref().expect("a write gives its buffer back");
        assert_same(buffer, &expected[index], "the buffer a write gives back is its own");
    }
    for (index, bytes) in expected.iter().enumerate() {
        let back = read(queue_pair.as_mut(), index as u64 * 4, bytes.len() / lba_bytes);
        assert_same(&back, bytes, "a write of many in flight");
    }
}

fn never_written_blocks_read_as_zeroes(open: Factory<'_>) {
    let namespace = open();
    let capacity_blocks = namespace.info().capacity_blocks;
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    let first = read(queue_pair.as_mut(), 0, 8);
    assert!(first.iter().all(|byte| *byte == 0), "LBAs 0..8 of a fresh namespace are zeroes");
    let last = read(queue_pair.as_mut(), capacity_blocks - 1, 1);
    assert!(last.iter().all(|byte| *byte == 0), "the last LBA of a fresh namespace is zeroes");
}

fn wait_blocks_until_a_completion(open: Factory<'_>) {
    let namespace = open();
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    queue_pair.wait().expect("wait with nothing in flight returns at once");
    let buffer = filled(queue_pair.as_mut(), 1, 6);
    if let Err(rejected) = queue_pair.submit(Command::Write { lba: 3, buffer, fua: true }, 41) {
        panic!("write refused: {}", rejected.error);
    }
    queue_pair.wait().expect("wait for the write");
    let mut completions = Vec::new();
    assert_eq!(
        queue_pair.process_completions(&mut completions),
        1,
        "after wait returns, the completion is there without waiting again"
    );
    assert_eq!(completions[0].tag, 41);
    assert!(completions[0].result.is_ok());
    assert_eq!(queue_pair.in_flight(), 0);
}

fn registered_and_heap_buffers_work(open: Factory<'_>) {
    let namespace = open();
    let lba_bytes = namespace.info().lba_bytes as usize;
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    let mut from_arena = queue_pair.allocate(2 * lba_bytes);
    fill(&mut from_arena, lba_bytes, 8);
    let expected_arena = from_arena.to_vec();
    let mut from_heap = DmaBuf::new_heap(2 * lba_bytes, lba_bytes);
    fill(&mut from_heap, lba_bytes, 9);
    let expected_heap = from_heap.to_vec();
    let from_arena = write(queue_pair.as_mut(), 20, from_arena, false);
    let from_heap = write(queue_pair.as_mut(), 22, from_heap, false);
    // Read each write back into the other kind of buffer.
    let completion = run(queue_pair.as_mut(), Command::Read { lba: 22, buffer: from_arena });
    assert!(completion.result.is_ok(), "{:?}", completion.result);
    assert_same(
        &completion.buffer.expect("buffer back"),
        &expected_heap,
        "heap write read into arena buffer",
    );
    let completion = run(queue_pair.as_mut(), Command::Read { lba: 20, buffer: from_heap });
    assert!(completion.result.is_ok(), "{:?}", completion.result);
    let back = completion.buffer.expect("buffer back");
    assert!(!back.is_registered());
    assert_same(&back, &expected_arena, "arena write read into heap buffer");
}

fn last_block_is_the_end(open: Factory<'_>) {
    let namespace = open();
    let capacity_blocks = namespace.info().capacity_blocks;
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    let last = capacity_blocks - 1;
    let buffer = filled(queue_pair.as_mut(), 1, 10);
    let expected = buffer.to_vec();
    write(queue_pair.as_mut(), last, buffer, true);
    assert_same(&read(queue_pair.as_mut(), last, 1), &expected, "the last block");
    let buffer = filled(queue_pair.as_mut(), 1, 11);
    let rejected = queue_pair
        .submit(Command::Write { lba: capacity_blocks, buffer, fua: true }, 1)
        .expect_err("past the end");
    assert!(matches!(rejected.error, NvmeError::OutOfRange { lba, .. } if lba == capacity_blocks));
}

fn dropped_queue_pair_finishes_its_commands(open: Factory<'_>) {
    let namespace = open();
    let lba_bytes = namespace.info().lba_bytes as usize;
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    let mut expected = Vec::new();
    for index in 0..8u64 {
        let buffer = filled(queue_pair.as_mut(), 2, 90 + index as u8);
        expected.push(buffer.to_vec());
        let command = Command::Write { lba: 30 + 2 * index, buffer, fua: false };
        if let Err(rejected) = queue_pair.submit(command, index) {
            panic!("write {index} refused: {}", rejected.error);
        }
    }
    // Neither sent nor reaped: dropping must send them and wait for them
    // before their buffers are freed.
    drop(queue_pair);
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    let back = read(queue_pair.as_mut(), 30, 16);
    for (index, bytes) in expected.iter().enumerate() {
        let start = index * 2 * lba_bytes;
        assert_same(
            &back[start..start + 2 * lba_bytes],
            bytes,
            "a write still in flight when its queue pair was dropped",
        );
    }
}

/// A temporary directory on a disk filesystem (ext4 here), where O_DIRECT
/// works; namespace files in it are removed with it.
fn disk_directory() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::temp_dir())
        .expect("create a temporary directory under the system temp dir")
}

const FILE_BLOCKS: u64 = 256;

fn file_options() -> UringOptions {
    UringOptions { namespace_bytes: FILE_BLOCKS * 4096, lba_bytes: 4096, create: true }
}

fn open_uring_file(path: &Path) -> UringNamespace {
    UringNamespace::open(path, &file_options()).unwrap_or_else(|error| {
        panic!(
            "cannot open an io_uring namespace file at {}: {error}\n\
             (the io_uring backend needs O_DIRECT: run the tests with TMPDIR on ext4 or xfs)",
            path.display()
        )
    })
}

/// A factory of fresh namespace files in `directory`, one per call.
fn uring_file_factory(directory: &Path) -> impl Fn() -> Arc<dyn Namespace> + '_ {
    let count = Cell::new(0u32);
    move || {
        count.set(count.get() + 1);
        let path = directory.join(format!("namespace-{}", count.get()));
        Arc::new(open_uring_file(&path)) as Arc<dyn Namespace>
    }
}

#[test]
fn memory_backend_passes_the_namespace_suite() {
    let open = || Arc::new(MemoryNamespace::new(4096, FILE_BLOCKS)) as Arc<dyn Namespace>;
    run_suite(&Backend { name: "memory", open: &open, fresh: true });
}

#[test]
fn uring_file_backend_passes_the_namespace_suite() {
    let directory = disk_directory();
    let open = uring_file_factory(directory.path());
    run_suite(&Backend { name: "uring file", open: &open, fresh: true });
}

#[test]
fn fault_wrapper_without_faults_passes_the_namespace_suite() {
    let directory = disk_directory();
    let open_inner = uring_file_factory(directory.path());
    let open = || Arc::new(FaultNamespace::new(open_inner())) as Arc<dyn Namespace>;
    run_suite(&Backend { name: "fault over uring file", open: &open, fresh: true });
}

const BLOCK_DEVICE_VARIABLE: &str = "NVKV_TEST_BLOCK_DEVICE";

#[test]
fn uring_block_device_passes_the_namespace_suite() {
    let Some(device) = std::env::var_os(BLOCK_DEVICE_VARIABLE) else {
        eprintln!(
            "NVKV_TEST_BLOCK_DEVICE is not set: the raw block device run of the namespace suite did not run \
             (set it to a loop device, e.g. losetup -f --show /tmp/disk.img, to run it)"
        );
        return;
    };
    let device = PathBuf::from(device);
    eprintln!(
        "running the namespace suite on block device {} (its contents are overwritten)",
        device.display()
    );
    let open = || {
        let options = UringOptions { namespace_bytes: 0, lba_bytes: 4096, create: false };
        let namespace = UringNamespace::open(&device, &options).unwrap_or_else(|error| {
            panic!("{BLOCK_DEVICE_VARIABLE}={}: cannot open it as a namespace: {error}", device.display())
        });
        assert_eq!(namespace.info().backend, "uring");
        Arc::new(namespace) as Arc<dyn Namespace>
    };
    let info = open().info().clone();
    eprintln!(
        "block device: {} blocks of {} bytes, PCI address {:?}",
        info.capacity_blocks, info.lba_bytes, info.pci_address
    );
    run_suite(&Backend { name: "uring block device", open: &open, fresh: false });
}

/// The io_uring backend's own refusals: a file of the wrong size, and a
/// namespace another daemon holds.
mod uring_file {
    use super::*;

    #[test]
    fn of_another_size_is_refused() {
        let directory = disk_directory();
        let path = directory.path().join("namespace");
        std::fs::write(&path, vec![0u8; 8192]).expect("write a small file");
        let error = UringNamespace::open(&path, &file_options()).expect_err("a file of another size");
        let NvmeError::SizeMismatch { path: named, expected, actual } = &error else {
            panic!("expected SizeMismatch, got {error:?}");
        };
        assert_eq!(
            (named.as_str(), *expected, *actual),
            (path.to_str().expect("utf-8 path"), FILE_BLOCKS * 4096, 8192)
        );
        let message = error.to_string();
        assert!(message.contains("8192") && message.contains(&(FILE_BLOCKS * 4096).to_string()), "{message}");
        assert_eq!(
            std::fs::metadata(&path).expect("file still there").len(),
            8192,
            "the file is left as it was"
        );
    }

    #[test]
    fn second_open_is_locked_until_the_first_closes() {
        let directory = disk_directory();
        let path = directory.path().join("namespace");
        let first = open_uring_file(&path);
        let mut queue_pair = first.open_queue_pair(&config(4)).expect("open queue pair");
        let error =
            UringNamespace::open(&path, &file_options()).expect_err("a second open while the first is open");
        assert!(matches!(&error, NvmeError::Locked { path: named } if Path::new(named) == path), "{error:?}");
        assert!(
            error.to_string().contains("another process"),
            "the message tells a person who holds it: {error}"
        );

        eprintln!("the queue pair holds the lock too, so dropping only the namespace is not enough");
        drop(first);
        let error =
            UringNamespace::open(&path, &file_options()).expect_err("the queue pair still holds the lock");
        assert!(matches!(error, NvmeError::Locked { .. }), "{error:?}");
        queue_pair.wait().expect("an idle queue pair waits at once");
        drop(queue_pair);

        eprintln!("with everything of the first open dropped, the namespace opens again");
        let again = open_uring_file(&path);
        assert_eq!(again.info().capacity_blocks, FILE_BLOCKS);
    }

    #[test]
    fn bad_geometry_is_refused_before_a_file_is_made() {
        let directory = disk_directory();
        let path = directory.path().join("namespace");
        for (namespace_bytes, lba_bytes, named) in [
            (1 << 20, 1000, "1000"),
            (1 << 20, 256, "256"),
            ((1 << 20) + 512, 4096, "1049088"),
            (0, 4096, "0"),
        ] {
            let options = UringOptions { namespace_bytes, lba_bytes, create: true };
            let error = UringNamespace::open(&path, &options).expect_err("bad geometry");
            assert!(
                matches!(&error, NvmeError::Invalid(message) if message.contains(named)),
                "{namespace_bytes} bytes of {lba_bytes}-byte blocks: {error}"
            );
            assert!(!path.exists(), "a refused open leaves no file behind");
        }
    }

    /// The CQE result mapping: a file shrunk behind the namespace's back
    /// makes a read past its new end return fewer bytes than asked.
    #[test]
    fn a_read_past_a_shrunken_file_is_short() {
        let directory = disk_directory();
        let path = directory.path().join("namespace");
        let namespace = open_uring_file(&path);
        let mut queue_pair = namespace.open_queue_pair(&config(4)).expect("open queue pair");
        let shrunk_bytes = (FILE_BLOCKS - 1) * 4096 + 1024;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_len(shrunk_bytes))
            .expect("shrink the namespace file");
        let buffer = queue_pair.allocate(4096);
        let completion = run(queue_pair.as_mut(), Command::Read { lba: FILE_BLOCKS - 1, buffer });
        assert!(
            matches!(
                completion.result,
                Err(NvmeError::Short { kind: CommandKind::Read, lba, done: 1024, expected: 4096 })
                    if lba == FILE_BLOCKS - 1
            ),
            "{:?}",
            completion.result
        );
        assert!(completion.buffer.is_some(), "a short read gives its buffer back");
    }

    #[test]
    fn open_without_create_of_a_missing_file_is_refused() {
        let directory = disk_directory();
        let path = directory.path().join("missing");
        let options = UringOptions { create: false, ..file_options() };
        let error = UringNamespace::open(&path, &options).expect_err("a missing file without create");
        assert!(
            matches!(&error, NvmeError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
        assert!(!path.exists(), "nothing was created");
    }
}

/// One uring file namespace behind the fault wrapper, with its directory.
struct Faulty {
    directory: tempfile::TempDir,
    namespace: Arc<FaultNamespace>,
}

fn faulty() -> Faulty {
    let directory = disk_directory();
    let inner = Arc::new(open_uring_file(&directory.path().join("namespace")));
    Faulty { namespace: Arc::new(FaultNamespace::new(inner)), directory }
}

mod write {
    use super::*;

    /// Write 3 of 5 fails as planned and never reaches the device; the
    /// others land.
    #[test]
    fn fail() {
        let Faulty { directory: _directory, namespace } = faulty();
        let plan = namespace.plan();
        plan.fail_write(3);
        let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
        let mut expected = Vec::new();
        for index in 0..5u64 {
            let buffer = filled(queue_pair.as_mut(), 1, index as u8 + 1);
            expected.push(buffer.to_vec());
            if let Err(rejected) =
                queue_pair.submit(Command::Write { lba: index, buffer, fua: true }, index + 1)
            {
                panic!("write {} refused: {}", index + 1, rejected.error);
            }
        }
        let mut completions = collect(queue_pair.as_mut(), 5);
        completions.sort_by_key(|completion| completion.tag);
        for completion in &completions {
            assert!(completion.buffer.is_some(), "a failed write still gives its buffer back");
            match (completion.tag, &completion.result) {
                (3, Err(NvmeError::Injected(reason))) => {
                    assert_eq!(reason, "write 3 failed as planned")
                }
                (3, other) => panic!("write 3 must fail as planned, got {other:?}"),
                (tag, Ok(())) => assert_ne!(tag, 3),
                (tag, Err(error)) => panic!("write {tag} was not planned to fail: {error}"),
            }
        }
        assert!(completions[2].result.as_ref().is_err_and(NvmeError::is_device_failure));
        assert_eq!(plan.writes(), 5);

        eprintln!("the failed write never reached the device: its block is still zeroes");
        let back = read(queue_pair.as_mut(), 0, 5);
        let lba_bytes = namespace.info().lba_bytes as usize;
        for (index, block) in back.chunks(lba_bytes).enumerate() {
            if index == 2 {
                assert!(block.iter().all(|byte| *byte == 0), "LBA 2 (write 3) was never written");
            } else {
                assert_same(block, &expected[index], "a write that was not planned to fail");
            }
        }
        assert_eq!(plan.reads(), 1);
    }

    /// Write 2 (three blocks) is torn after one block: the device dies, and
    /// a reopen of the inner namespace shows the new first block and the
    /// old other two.
    #[test]
    fn torn() {
        let Faulty { directory, namespace } = faulty();
        let path = directory.path().join("namespace");
        let lba_bytes = namespace.info().lba_bytes as usize;
        let plan = namespace.plan();
        plan.tear_write(2, 1);
        let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
        let mut other_queue_pair = namespace.open_queue_pair(&config(8)).expect("open a second queue pair");

        eprintln!("write 1 puts the old contents in place");
        let old = filled(queue_pair.as_mut(), 3, 20);
        let old_bytes = old.to_vec();
        write(queue_pair.as_mut(), 10, old, true);

        eprintln!("write 2 is torn: one block of three reaches the device, then it dies");
        let new = filled(queue_pair.as_mut(), 3, 40);
        let new_bytes = new.to_vec();
        let completion = run(queue_pair.as_mut(), Command::Write { lba: 10, buffer: new, fua: true });
        assert!(matches!(completion.result, Err(NvmeError::Dead)), "{:?}", completion.result);
        let buffer = completion.buffer.expect("a torn write gives its buffer back");
        assert_eq!(buffer.len(), 3 * lba_bytes, "the buffer comes back at its full length");
        assert!(plan.is_dead());

        eprintln!("every later command fails with Dead, on every queue pair");
        let completion = run(queue_pair.as_mut(), Command::Flush);
        assert!(matches!(completion.result, Err(NvmeError::Dead)), "{:?}", completion.result);
        let buffer = other_queue_pair.allocate(lba_bytes);
        let completion = run(other_queue_pair.as_mut(), Command::Read { lba: 10, buffer });
        assert!(matches!(completion.result, Err(NvmeError::Dead)), "{:?}", completion.result);
        let buffer = filled(other_queue_pair.as_mut(), 1, 60);
        let completion = run(other_queue_pair.as_mut(), Command::Write { lba: 20, buffer, fua: true });
        assert!(matches!(completion.result, Err(NvmeError::Dead)), "{:?}", completion.result);
        assert_eq!((plan.writes(), plan.flushes(), plan.reads()), (3, 1, 1));

        eprintln!("after the crash, a reopen of the inner namespace shows only the prefix of write 2");
        drop((queue_pair, other_queue_pair, namespace));
        let reopened = open_uring_file(&path);
        let mut queue_pair = reopened.open_queue_pair(&config(8)).expect("open queue pair");
        let back = read(queue_pair.as_mut(), 10, 3);
        assert_same(&back[..lba_bytes], &new_bytes[..lba_bytes], "block 0 of the torn write is new");
        assert_same(&back[lba_bytes..], &old_bytes[lba_bytes..], "blocks 1..3 of the torn write are old");
        let untouched = read(queue_pair.as_mut(), 20, 1);
        assert!(
            untouched.iter().all(|byte| *byte == 0),
            "the write after the crash never reached the device"
        );
    }
}

mod flush {
    use super::*;

    /// Flush 1 fails as planned; flush 2 goes to the device and succeeds.
    #[test]
    fn fail() {
        let Faulty { directory: _directory, namespace } = faulty();
        let plan = namespace.plan();
        plan.fail_flush(1);
        let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
        let buffer = filled(queue_pair.as_mut(), 1, 70);
        write(queue_pair.as_mut(), 0, buffer, false);
        let completion = run(queue_pair.as_mut(), Command::Flush);
        match &completion.result {
            Err(NvmeError::Injected(reason)) => assert_eq!(reason, "flush 1 failed as planned"),
            other => panic!("flush 1 must fail as planned, got {other:?}"),
        }
        assert!(completion.result.as_ref().is_err_and(NvmeError::is_device_failure), "never to be retried");
        let completion = run(queue_pair.as_mut(), Command::Flush);
        assert!(completion.result.is_ok(), "flush 2 was not planned to fail: {:?}", completion.result);
        assert_eq!((plan.writes(), plan.flushes()), (1, 2));
    }
}

/// Completions are held back for the planned latency; the wrapper then has
/// no completion fd, so a reactor polls it.
#[test]
fn latency() {
    let Faulty { directory: _directory, namespace } = faulty();
    let plan = namespace.plan();
    let planned = Duration::from_millis(50);
    plan.add_latency(planned);
    let mut queue_pair = namespace.open_queue_pair(&config(8)).expect("open queue pair");
    assert_eq!(queue_pair.completion_fd(), None, "with latency planned the reactor must poll");

    let started = Instant::now();
    let buffer = filled(queue_pair.as_mut(), 1, 80);
    if let Err(rejected) = queue_pair.submit(Command::Write { lba: 1, buffer, fua: true }, 5) {
        panic!("write refused: {}", rejected.error);
    }
    let mut completions = Vec::new();
    let mut polls = 0;
    while completions.is_empty() {
        polls += 1;
        queue_pair.process_completions(&mut completions);
        if completions.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let held = started.elapsed();
    assert!(held >= planned, "the completion came after {held:?}, before the planned {planned:?}");
    assert!(polls > 1, "the completion was held back at least one poll");
    assert_eq!(completions[0].tag, 5);
    assert!(completions[0].result.is_ok());

    eprintln!("wait sleeps out the latency too");
    let started = Instant::now();
    let completion = run(queue_pair.as_mut(), Command::Flush);
    assert!(completion.result.is_ok());
    assert!(started.elapsed() >= planned, "wait returned a completion after {:?}", started.elapsed());
}

#[test]
#[cfg(feature = "spdk")]
fn spdk_backend_passes_the_namespace_suite() {
    let Some(options) = super::spdk::test_target(1, "the namespace suite") else { return };
    let namespace: Arc<dyn Namespace> = Arc::new(
        super::spdk::SpdkNamespace::open(&options)
            .unwrap_or_else(|error| panic!("cannot open the spdk namespace {options:?}: {error}")),
    );
    let info = namespace.info().clone();
    eprintln!("spdk namespace: {} blocks of {} bytes", info.capacity_blocks, info.lba_bytes);
    assert_eq!(info.backend, "spdk");
    // One attached controller for every property: each opens and drops its
    // own queue pairs, which is what a namespace does across restarts of
    // shards; the target's namespace is reused, so it is not fresh.
    let open = || namespace.clone();
    run_suite(&Backend { name: "spdk", open: &open, fresh: false });
    let weak = Arc::downgrade(&namespace);
    drop(namespace);
    assert!(weak.upgrade().is_none(), "the namespace (and its controller) is detached when dropped");
    eprintln!("[spdk] a second attach after the detach works");
    let again = super::spdk::SpdkNamespace::open(&options).expect("attach the controller again");
    assert_eq!(again.info(), &info, "the same namespace, seen the same way");
}
