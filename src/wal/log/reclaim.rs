//! Durability and reclaim: writes reported durable in order, snapshots
//! made current once durable, the cache evicted, and ring space taken back
//! behind a durable checkpoint that names the new head; and how full the
//! ring is, for those who must wait for that space.

use super::*;

impl ShardLog {
    /// How full the ring is: bytes used and the ring's bytes (one read of
    /// two numbers, for ring admission on every client write).
    pub fn ring_use(&self) -> (u64, u64) {
        let lba_bytes = self.lba_bytes as u64;
        (self.used_blocks * lba_bytes, self.ring_blocks * lba_bytes)
    }

    /// Ring bytes a group's entries may still take now: the free blocks
    /// beyond the reserve, less those of the records queued and not yet
    /// written. A follower refuses its leader's entries that do not fit
    /// (`shard::peer_requests`): waiting for room inside Raft would hold
    /// up the snapshot and purge that make room.
    pub fn entry_room_bytes(&self) -> u64 {
        let queued: u64 = self
            .pending
            .iter()
            .map(|pending| format::record_blocks(pending.payload.len(), self.lba_bytes) as u64)
            .sum();
        let free = self.ring_blocks.saturating_sub(self.used_blocks).saturating_sub(self.reserve_blocks);
        free.saturating_sub(queued) * self.lba_bytes as u64
    }

    /// Ring bytes the record of an entry with `payload_bytes` takes.
    pub fn entry_record_bytes(&self, payload_bytes: usize) -> u64 {
        (format::record_blocks(payload_bytes, self.lba_bytes) * self.lba_bytes) as u64
    }

    /// How full the ring is, in percent.
    pub fn used_percent(&self) -> u64 {
        self.used_blocks * 100 / self.ring_blocks.max(1)
    }

    /// Ring bytes entries may not take (kept for votes, snapshot references
    /// and purges).
    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_blocks * self.lba_bytes as u64
    }
}

impl ShardLog {
    /// Reports writes durable in order, starts a flush when one is due, and
    /// wakes waiters.
    pub(super) fn advance_durable(&mut self) {
        while self.inflight.front().is_some_and(|write| write.state == WriteState::Durable) {
            let write = self.inflight.pop_front().expect("checked");
            self.stages.device_write.record(write.submitted_at.elapsed());
            self.durable_sequence = write.last_sequence;
            for operation in write.operations {
                if operation == self.durable_operation + 1 {
                    self.durable_operation = operation;
                } else {
                    self.durable_ahead.insert(operation);
                }
            }
            while self.durable_ahead.first() == Some(&(self.durable_operation + 1)) {
                self.durable_operation += 1;
                self.durable_ahead.pop_first();
            }
        }
        if self.options.durability == Durability::Flush
            && self.flush_tag.is_none()
            && self.failed.is_none()
            && self.inflight.iter().any(|write| write.state == WriteState::Written)
        {
            let tag = TAG_FLUSH | self.take_tag();
            match self.submit(Command::Flush, tag) {
                Ok(()) => {
                    self.flush_tag = Some(tag);
                    for write in self.inflight.iter_mut().filter(|write| write.state == WriteState::Written) {
                        write.state = WriteState::Flushing;
                    }
                }
                Err(rejected) => self.fail(format!("the device refused a flush: {}", rejected.error)),
            }
        }
        self.apply_durable_snapshots();
        let mut waiters = std::mem::take(&mut self.waiters);
        waiters.retain(|(operation, waker)| {
            if self.operation_durable(*operation) {
                waker.wake_by_ref();
                false
            } else {
                true
            }
        });
        self.waiters = waiters;
        self.evict_cache();
    }

    /// Makes every snapshot whose reference record is now durable its
    /// group's current one, and frees the space of the one it replaces.
    pub(super) fn apply_durable_snapshots(&mut self) {
        let done: Vec<u64> = self
            .snapshot_writes
            .iter()
            .filter(|(_, write)| {
                write.reference_operation.is_some_and(|operation| self.operation_durable(operation))
            })
            .map(|(tag, _)| *tag)
            .collect();
        for tag in done {
            let write = self.snapshot_writes.remove(&tag).expect("listed");
            let state = self.groups.entry(write.group).or_default();
            if let Some(loser) = state.offer_snapshot(write.reference) {
                self.snapshot_area.release(loser.offset);
            }
            wake_waiting_for(&mut self.snapshot_waiters, tag);
        }
    }

    pub(super) fn evict_cache(&mut self) {
        while self.cache_bytes > self.options.cache_bytes_max {
            let Some(&CachedEntry { group, index, sequence }) = self.cache_order.front() else { break };
            if sequence > self.durable_sequence {
                break;
            }
            self.cache_order.pop_front();
            if let Some(state) = self.groups.get_mut(&group) {
                if let Some(position) = state.position(index) {
                    let entry = &mut state.entries[position];
                    if entry.placed.is_some_and(|placed| placed.sequence == sequence) {
                        if let Some(payload) = entry.cached.take() {
                            self.cache_bytes -= payload.len();
                        }
                    }
                }
            }
        }
    }

    /// Whether a durable record no longer matters for replay: an entry that
    /// was purged or truncated, or a record whose effect the checkpoint keeps.
    pub(super) fn reclaimable(&self, record: &RingRecord) -> bool {
        if record.sequence > self.durable_sequence {
            return false;
        }
        match record.kind {
            RecordKind::Entry => {
                let live = self.groups.get(&record.group).is_some_and(|state| {
                    state.position(record.index).is_some_and(|position| {
                        state.entries[position]
                            .placed
                            .is_some_and(|placed| placed.sequence == record.sequence)
                    })
                });
                !live
            }
            // The last seal is the only record that lists the unproven
            // groups (the checkpoint does not).
            RecordKind::Seal => self.unproven.is_empty() || self.last_seal != Some(record.sequence),
            RecordKind::Vote
            | RecordKind::Truncate
            | RecordKind::Purge
            | RecordKind::Wrap
            | RecordKind::SnapshotRef => true,
            // Its effect on the group's state is in the checkpoint; the
            // refusal it carries then rests on the seal's unproven list.
            RecordKind::Reset => true,
        }
    }

    /// Moves the head past records that no longer matter, through a durable
    /// checkpoint, when that frees enough of the ring to be worth a write.
    pub(super) fn maybe_reclaim(&mut self) -> bool {
        if self.checkpoint_write.is_some() || self.failed.is_some() {
            return false;
        }
        let resets = std::mem::take(&mut self.resets_not_durable);
        self.resets_not_durable =
            resets.into_iter().filter(|operation| !self.operation_durable(*operation)).collect();
        if !self.resets_not_durable.is_empty() {
            return false;
        }
        // A record that became reclaimable stays so (a dead entry never
        // lives again, a durable record stays durable), so the scan goes on
        // from where the last one stopped instead of from the head.
        let ReclaimScan { records: mut passed, blocks: mut freed } = self.reclaim_scan;
        while let Some(record) = self.ring.get(passed) {
            if !self.reclaimable(record) {
                break;
            }
            passed += 1;
            freed += record.blocks;
        }
        self.reclaim_scan = ReclaimScan { records: passed, blocks: freed };
        let worth_it = freed >= (self.ring_blocks / 8).max(1) || (self.blocked_on_space && freed > 0);
        if passed == 0 || !worth_it {
            return false;
        }
        let (head_offset, head_sequence) = match self.ring.get(passed) {
            Some(record) => (record.offset, record.sequence),
            None => (self.tail_offset % self.ring_blocks, self.next_sequence),
        };
        let checkpoint = Checkpoint {
            shard: self.region.shard,
            generation: self.checkpoint_generation + 1,
            head_offset,
            head_sequence,
            head_previous_crc: self.ring[passed - 1].crc,
            groups: self
                .groups
                .iter()
                .filter(|(_, state)| {
                    state.vote.is_some() || state.purged.is_some() || state.snapshot.is_some()
                })
                .map(|(group, state)| GroupCheckpoint {
                    group: *group,
                    vote: state.vote.clone(),
                    purged: state.purged,
                    snapshot: state.snapshot,
                })
                .collect(),
        };
        let slot_blocks = self.region.checkpoint_blocks as usize;
        let mut buffer = self.queue.allocate(slot_blocks * self.lba_bytes);
        if let Err(reason) = checkpoint.encode(&mut buffer) {
            self.fail(reason);
            return false;
        }
        let slot = ((checkpoint.generation + 1) % 2) as usize;
        let lba = self.region.checkpoint_slot_lba(slot);
        let tag = TAG_CHECKPOINT | self.take_tag();
        let fua = self.options.durability != Durability::None;
        match self.submit(Command::Write { lba, buffer, fua }, tag) {
            Ok(()) => {
                self.checkpoint_write =
                    Some(CheckpointWrite { tag, checkpoint, records_passed: passed, blocks_freed: freed });
                true
            }
            Err(rejected) => {
                self.fail(format!("the device refused a checkpoint write: {}", rejected.error));
                false
            }
        }
    }

    pub(super) fn apply_checkpoint(&mut self, write: CheckpointWrite) {
        self.ring.drain(..write.records_passed);
        let ReclaimScan { records, blocks } = self.reclaim_scan;
        self.reclaim_scan =
            ReclaimScan { records: records - write.records_passed, blocks: blocks - write.blocks_freed };
        self.used_blocks -= write.blocks_freed;
        self.head_offset = write.checkpoint.head_offset;
        self.head_sequence = write.checkpoint.head_sequence;
        self.head_previous_crc = write.checkpoint.head_previous_crc;
        self.checkpoint_generation = write.checkpoint.generation;
        self.stats.checkpoints += 1;
    }
}
