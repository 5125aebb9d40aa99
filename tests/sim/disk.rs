//! A simulated namespace: a device with a volatile write cache, whose
//! commands complete on simulated time, and the storage faults a seed
//! chooses.
//!
//! What it promises, as a real device does: a write with FUA is on the
//! media when it completes; a flush puts on the media every write that
//! completed before the flush was issued. What it keeps of the rest is up
//! to the fault: a process crash keeps everything (the device finishes what
//! it was given, its cache survives); a power cut keeps, for every block,
//! the media or any version still in the cache, and of a write in flight
//! any subset of its blocks (a torn write). On a disk allowed to corrupt (a
//! minority of the members, so a quorum always holds a good copy), it also
//! flips bits at rest, turns blocks unreadable (latent read errors, until
//! they are written again) and sends writes to the wrong LBA.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nvkv::nvme::{
    check_command, BufferArena, Command, CommandKind, Completion, DmaBuf, Namespace, NamespaceInfo,
    NvmeError, NvmeStatus, QueuePair, QueuePairConfig, Rejected,
};
use tokio::time::Instant;

use crate::entropy::Rng;
use crate::world::Counts;

/// The rates of one disk's faults and its latency.
#[derive(Clone, Copy, Debug)]
pub struct DiskFaults {
    /// Latency of a read or write, in microseconds (low, high).
    pub latency_us: (u64, u64),
    /// Chance that a command takes up to `slow_us` instead.
    pub slow_chance: f64,
    pub slow_us: u64,
    /// Chance that a write lands at another LBA (corruptible disks only).
    pub misdirect_chance: f64,
}

/// A simulated namespace; clones share the device.
#[derive(Clone)]
pub struct SimDisk {
    shared: Arc<Mutex<DiskState>>,
    info: NamespaceInfo,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.info.description)
    }
}

struct Cached {
    landed: Instant,
    data: Vec<u8>,
}

enum Operation {
    Write { lba: u64, data: Vec<u8>, fua: bool },
    Read { lba: u64, blocks: u64 },
    Flush { issued: Instant },
}

struct Pending {
    queue: u64,
    tag: u64,
    sequence: u64,
    ready_at: Instant,
    operation: Operation,
}

struct Done {
    tag: u64,
    kind: CommandKind,
    result: Result<(), NvmeError>,
    read: Option<Vec<u8>>,
}

struct DiskState {
    member: u64,
    lba_bytes: usize,
    capacity_blocks: u64,
    media: Vec<u8>,
    /// Versions of a block not on the media yet, oldest first.
    cache: BTreeMap<u64, Vec<Cached>>,
    pending: Vec<Pending>,
    done: BTreeMap<u64, Vec<Done>>,
    /// Bumped by every crash: queue pairs opened before are dead.
    power: u64,
    next_queue: u64,
    next_sequence: u64,
    /// Blocks that fail every read until written again.
    latent: BTreeSet<u64>,
    /// Blocks ever written, where faults at rest are aimed.
    written: BTreeSet<u64>,
    rng: Rng,
    faults: DiskFaults,
    corruptible: bool,
    counts: Counts,
}

impl SimDisk {
    pub fn new(
        member: u64,
        lba_bytes: u32,
        capacity_blocks: u64,
        faults: DiskFaults,
        corruptible: bool,
        rng: Rng,
        counts: Counts,
    ) -> SimDisk {
        let info = NamespaceInfo {
            lba_bytes,
            capacity_blocks,
            backend: "simulated",
            description: format!(
                "simulated disk of member {member} ({capacity_blocks} blocks of {lba_bytes} bytes)"
            ),
            pci_address: None,
        };
        let state = DiskState {
            member,
            lba_bytes: lba_bytes as usize,
            capacity_blocks,
            media: vec![0; (capacity_blocks * u64::from(lba_bytes)) as usize],
            cache: BTreeMap::new(),
            pending: Vec::new(),
            done: BTreeMap::new(),
            power: 0,
            next_queue: 0,
            next_sequence: 0,
            latent: BTreeSet::new(),
            written: BTreeSet::new(),
            rng,
            faults,
            corruptible,
            counts,
        };
        SimDisk { shared: Arc::new(Mutex::new(state)), info }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When the next command of this disk completes, if any is in flight.
    pub fn next_ready(&self) -> Option<Instant> {
        let state = self.lock();
        state.pending.iter().map(|pending| pending.ready_at).min()
    }

    /// Writes submitted and not yet done at `now`: what a power cut now
    /// would tear.
    pub fn writes_in_flight(&self, now: Instant) -> usize {
        let state = self.lock();
        state
            .pending
            .iter()
            .filter(|pending| pending.ready_at > now && matches!(pending.operation, Operation::Write { .. }))
            .count()
    }

    /// The process died: the device finishes every command it was given
    /// and keeps its cache; the queue pairs die with the process.
    pub fn process_crash(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        for pending in &mut state.pending {
            pending.ready_at = pending.ready_at.min(now);
        }
        state.settle(now);
        state.pending.clear();
        state.done.clear();
        state.power += 1;
    }

    /// Power is cut: the device keeps what it promised and any part of the
    /// rest (see the module doc).
    pub fn power_cut(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        state.settle(now);
        let lba_bytes = state.lba_bytes;
        let pending = std::mem::take(&mut state.pending);
        for pending in pending {
            let Operation::Write { lba, data, .. } = pending.operation else { continue };
            let blocks = data.len() / lba_bytes;
            let mut kept = 0;
            for block in 0..blocks {
                if state.rng.chance(0.5) {
                    state.put_media(lba + block as u64, &data[block * lba_bytes..(block + 1) * lba_bytes]);
                    kept += 1;
                }
            }
            state.counts.add(if kept > 0 && kept < blocks {
                "disk.torn_write"
            } else {
                "disk.write_in_flight_cut"
            });
        }
        let cache = std::mem::take(&mut state.cache);
        for (lba, versions) in cache {
            let keep = state.rng.below(versions.len() as u64 + 1) as usize;
            if keep > 0 {
                state.put_media(lba, &versions[keep - 1].data.clone());
            }
            if keep < versions.len() {
                state.counts.add("disk.cached_block_lost");
            }
        }
        state.done.clear();
        state.power += 1;
    }

    /// The disk is replaced by a blank one (a member whose data was lost).
    pub fn wipe(&self) {
        let mut state = self.lock();
        state.media.iter_mut().for_each(|byte| *byte = 0);
        state.cache.clear();
        state.pending.clear();
        state.done.clear();
        state.latent.clear();
        state.written.clear();
        state.power += 1;
        state.counts.add("disk.wiped");
    }

    /// Flips one bit of a written block at rest; false if this disk may not
    /// corrupt or holds nothing.
    pub fn flip_bit(&self) -> Option<u64> {
        let mut state = self.lock();
        let lba = state.written_block()?;
        let bits = (state.lba_bytes * 8) as u64;
        let bit = state.rng.below(bits) as usize;
        let at = lba as usize * state.lba_bytes + bit / 8;
        state.media[at] ^= 1 << (bit % 8);
        state.counts.add("disk.bit_flip");
        Some(lba)
    }

    /// Makes a written block fail every read until it is written again.
    pub fn latent_error(&self) -> Option<u64> {
        let mut state = self.lock();
        let lba = state.written_block()?;
        state.latent.insert(lba);
        state.counts.add("disk.latent_read_error");
        Some(lba)
    }

    /// Stops faults at rest and misdirected writes (the heal phase).
    pub fn heal(&self) {
        let mut state = self.lock();
        state.corruptible = false;
        state.latent.clear();
    }

    /// A digest of the media, for the determinism check.
    pub fn digest(&self) -> u32 {
        crc32c::crc32c(&self.lock().media)
    }
}

impl DiskState {
    /// A written block a fault at rest may hit.
    fn written_block(&mut self) -> Option<u64> {
        if !self.corruptible || self.written.is_empty() {
            return None;
        }
        let index = self.rng.below(self.written.len() as u64) as usize;
        self.written.iter().nth(index).copied()
    }

    fn put_media(&mut self, lba: u64, block: &[u8]) {
        let at = lba as usize * self.lba_bytes;
        self.media[at..at + self.lba_bytes].copy_from_slice(block);
    }

    /// The block as a read sees it: the newest cached version, else the media.
    fn current(&self, lba: u64) -> &[u8] {
        match self.cache.get(&lba).and_then(|versions| versions.last()) {
            Some(cached) => &cached.data,
            None => {
                let at = lba as usize * self.lba_bytes;
                &self.media[at..at + self.lba_bytes]
            }
        }
    }

    fn latency(&mut self, kind: CommandKind) -> Duration {
        let (low, high) = self.faults.latency_us;
        let mut micros = self.rng.between(low, high);
        if kind == CommandKind::Flush {
            micros *= 2;
        }
        if self.rng.chance(self.faults.slow_chance) {
            micros = self.rng.between(high, self.faults.slow_us.max(high));
            self.counts.add("disk.slow_command");
        }
        Duration::from_micros(micros)
    }

    /// Carries out, in completion order, every command due by `now`.
    fn settle(&mut self, now: Instant) {
        loop {
            let due = self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, pending)| pending.ready_at <= now)
                .min_by_key(|(_, pending)| (pending.ready_at, pending.sequence))
                .map(|(index, _)| index);
            let Some(index) = due else { return };
            let pending = self.pending.remove(index);
            let ready_at = pending.ready_at;
            let (kind, result, read) = match pending.operation {
                Operation::Write { lba, data, fua } => {
                    self.land(lba, data, fua, ready_at);
                    (CommandKind::Write, Ok(()), None)
                }
                Operation::Read { lba, blocks } => {
                    match (lba..lba + blocks).find(|block| self.latent.contains(block)) {
                        Some(bad) => {
                            let status = NvmeStatus { status_code_type: 2, status_code: 0x81 };
                            self.counts.add("disk.read_failed");
                            (
                                CommandKind::Read,
                                Err(NvmeError::Status { kind: CommandKind::Read, lba: bad, status }),
                                None,
                            )
                        }
                        None => {
                            let mut data = Vec::with_capacity(blocks as usize * self.lba_bytes);
                            for block in lba..lba + blocks {
                                data.extend_from_slice(self.current(block));
                            }
                            (CommandKind::Read, Ok(()), Some(data))
                        }
                    }
                }
                Operation::Flush { issued } => {
                    let lbas: Vec<u64> = self.cache.keys().copied().collect();
                    for lba in lbas {
                        let versions = self.cache.get_mut(&lba).expect("listed");
                        let Some(newest) = versions.iter().rposition(|cached| cached.landed <= issued) else {
                            continue;
                        };
                        let flushed: Vec<Cached> = versions.drain(..=newest).collect();
                        if versions.is_empty() {
                            self.cache.remove(&lba);
                        }
                        let data = flushed.into_iter().last().expect("at least one").data;
                        self.put_media(lba, &data);
                    }
                    (CommandKind::Flush, Ok(()), None)
                }
            };
            self.done.entry(pending.queue).or_default().push(Done { tag: pending.tag, kind, result, read });
        }
    }

    /// A write reaches the device (maybe at the wrong LBA).
    fn land(&mut self, lba: u64, data: Vec<u8>, fua: bool, at: Instant) {
        let blocks = (data.len() / self.lba_bytes) as u64;
        let mut target = lba;
        if self.corruptible && self.rng.chance(self.faults.misdirect_chance) {
            target = self.rng.below(self.capacity_blocks - blocks + 1);
            self.counts.add("disk.misdirected_write");
            tracing::debug!(member = self.member, lba, target, blocks, "a write lands at the wrong LBA");
        }
        for block in 0..blocks {
            let bytes = &data[block as usize * self.lba_bytes..(block as usize + 1) * self.lba_bytes];
            let lba = target + block;
            if fua {
                self.put_media(lba, bytes);
                self.cache.remove(&lba);
            } else {
                self.cache.entry(lba).or_default().push(Cached { landed: at, data: bytes.to_vec() });
            }
            self.latent.remove(&lba);
            self.written.insert(lba);
        }
    }
}

impl Namespace for SimDisk {
    fn info(&self) -> &NamespaceInfo {
        &self.info
    }

    fn open_queue_pair(&self, config: &QueuePairConfig) -> Result<Box<dyn QueuePair>, NvmeError> {
        let (queue, power) = {
            let mut state = self.lock();
            state.next_queue += 1;
            (state.next_queue, state.power)
        };
        Ok(Box::new(SimQueuePair {
            disk: self.clone(),
            queue,
            power,
            depth: config.depth,
            arena: BufferArena::new(
                config.registered_buffer_bytes.min(1 << 20),
                self.info.lba_bytes as usize,
            ),
            buffers: BTreeMap::new(),
            dead: Vec::new(),
            in_flight: 0,
        }))
    }
}

struct SimQueuePair {
    disk: SimDisk,
    queue: u64,
    /// The power generation it was opened in: after a crash it is dead.
    power: u64,
    depth: u32,
    arena: BufferArena,
    /// The buffers of commands in flight, by tag.
    buffers: BTreeMap<u64, (CommandKind, Option<DmaBuf>)>,
    /// Commands refused by a dead device, completed at the next poll.
    dead: Vec<Completion>,
    in_flight: usize,
}

impl QueuePair for SimQueuePair {
    fn info(&self) -> &NamespaceInfo {
        &self.disk.info
    }

    fn allocate(&mut self, bytes: usize) -> DmaBuf {
        self.arena.allocate(bytes)
    }

    fn submit(&mut self, command: Command, tag: u64) -> Result<(), Box<Rejected>> {
        if let Err(error) = check_command(&self.disk.info, &command) {
            return Err(Box::new(Rejected { error, command }));
        }
        if self.in_flight >= self.depth as usize {
            return Err(Box::new(Rejected { error: NvmeError::QueueFull { depth: self.depth }, command }));
        }
        assert!(!self.buffers.contains_key(&tag), "tag {tag:#x} is in flight twice");
        self.in_flight += 1;
        let kind = command.kind();
        let mut state = self.disk.lock();
        if state.power != self.power {
            let buffer = match command {
                Command::Write { buffer, .. } | Command::Read { buffer, .. } => Some(buffer),
                Command::Flush => None,
            };
            self.dead.push(Completion { tag, kind, buffer, result: Err(NvmeError::Dead) });
            return Ok(());
        }
        let now = Instant::now();
        state.settle(now);
        let lba_bytes = state.lba_bytes as u64;
        let (operation, buffer) = match command {
            Command::Write { lba, buffer, fua } => {
                (Operation::Write { lba, data: buffer.to_vec(), fua }, Some(buffer))
            }
            Command::Read { lba, buffer } => {
                (Operation::Read { lba, blocks: buffer.len() as u64 / lba_bytes }, Some(buffer))
            }
            Command::Flush => (Operation::Flush { issued: now }, None),
        };
        let ready_at = now + state.latency(kind);
        state.next_sequence += 1;
        let sequence = state.next_sequence;
        state.pending.push(Pending { queue: self.queue, tag, sequence, ready_at, operation });
        self.buffers.insert(tag, (kind, buffer));
        Ok(())
    }

    fn process_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
        let before = completions.len();
        completions.append(&mut self.dead);
        let done = {
            let mut state = self.disk.lock();
            if state.power == self.power {
                state.settle(Instant::now());
                state.done.remove(&self.queue).unwrap_or_default()
            } else {
                Vec::new()
            }
        };
        for done in done {
            let (kind, mut buffer) =
                self.buffers.remove(&done.tag).expect("a completion of a command in flight");
            debug_assert_eq!(kind, done.kind);
            if let (Some(data), Some(buffer)) = (done.read, buffer.as_mut()) {
                buffer.copy_from_slice(&data);
            }
            completions.push(Completion { tag: done.tag, kind: done.kind, buffer, result: done.result });
        }
        let moved = completions.len() - before;
        self.in_flight -= moved;
        moved
    }

    /// Blocking I/O (opening, recovery) takes no simulated time: whatever
    /// this queue pair has in flight completes now.
    fn wait(&mut self) -> Result<(), NvmeError> {
        let mut state = self.disk.lock();
        if state.power != self.power {
            return Err(NvmeError::Dead);
        }
        let now = Instant::now();
        let queue = self.queue;
        for pending in state.pending.iter_mut().filter(|pending| pending.queue == queue) {
            pending.ready_at = pending.ready_at.min(now);
        }
        state.settle(now);
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}
