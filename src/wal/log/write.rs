//! The write side of the shard log: operations queued (entries, votes,
//! truncations, purges), records placed in the ring and gathered into
//! group-commit writes, and the submission of those writes and their flushes.

use super::*;

impl ShardLog {
    /// Queues entry `index` of `group`. The entry is readable at once and
    /// durable when [`ShardLog::is_durable`] says so.
    pub fn append(&mut self, group: u32, index: u64, term: u64, payload: &[u8]) -> Result<Ticket, WalError> {
        self.check_usable()?;
        if payload.len() > self.entry_bytes_max() {
            return Err(WalError::EntryTooLarge { bytes: payload.len(), max: self.entry_bytes_max() });
        }
        let state = self.group_mut(group)?;
        if let Some(expected) = state.next_index() {
            if index != expected {
                return Err(WalError::IndexGap { group, index, expected });
            }
        }
        let payload: Rc<[u8]> = Rc::from(payload);
        let operation = self.next_operation;
        let state = self.groups.get_mut(&group).expect("group exists");
        state.entries.push_back(EntryMeta {
            index,
            term,
            operation,
            placed: None,
            cached: Some(payload.clone()),
        });
        self.cache_bytes += payload.len();
        let ticket = self.queue_operation(RecordKind::Entry, group, index, term, payload);
        Ok(ticket)
    }

    /// Queues the vote of `group`.
    pub fn save_vote(&mut self, group: u32, vote: &[u8]) -> Result<Ticket, WalError> {
        self.check_usable()?;
        if vote.len() > checkpoint::VOTE_BYTES_MAX {
            return Err(WalError::VoteTooLarge { bytes: vote.len(), max: checkpoint::VOTE_BYTES_MAX });
        }
        self.group_mut(group)?.vote = Some(vote.to_vec());
        Ok(self.queue_operation(RecordKind::Vote, group, 0, 0, Rc::from(vote)))
    }

    /// Removes entries of `group` at `index` and above. Readers stop seeing
    /// them at once; the removal is durable with the ticket.
    pub fn truncate(&mut self, group: u32, index: u64) -> Result<Ticket, WalError> {
        self.check_usable()?;
        let state = self.group_mut(group)?;
        if let Some((purged, _)) = state.purged {
            if index <= purged {
                return Err(WalError::TruncatePurged { group, index, purged });
            }
        }
        state.truncate(index);
        Ok(self.queue_operation(RecordKind::Truncate, group, index, 0, Rc::from(&[][..])))
    }

    /// Forgets everything of `group` but its vote (its snapshot, purge point
    /// and entries) and queues the reset record that makes it durable
    /// (`format::RecordKind::Reset`); `lost_after` is the last index the
    /// group held. Only recovery does this, for a group whose snapshot is
    /// damaged, before the group starts: the blob's space is not marked
    /// used then, so there is nothing to release.
    pub(in crate::wal) fn reset_group(&mut self, group: u32, lost_after: u64) -> Result<Ticket, WalError> {
        self.check_usable()?;
        let state = self.group_mut(group)?;
        let vote = state.vote.take();
        *state = GroupState { vote, ..GroupState::default() };
        self.committed.remove(&group);
        let ticket = self.queue_operation(RecordKind::Reset, group, lost_after, 0, Rc::from(&[][..]));
        self.resets_not_durable.push(ticket.0);
        Ok(ticket)
    }

    /// Removes entries of `group` at `index` and below; `term` is the term
    /// of entry `index`. Purging past the last entry empties the group, and
    /// the next append must then be `index + 1`.
    pub fn purge(&mut self, group: u32, index: u64, term: u64) -> Result<Ticket, WalError> {
        self.check_usable()?;
        let state = self.group_mut(group)?;
        if state.purged.is_some_and(|(purged, _)| purged >= index) {
            return Ok(self.queue_operation(RecordKind::Purge, group, index, term, Rc::from(&[][..])));
        }
        state.purge(index, term);
        Ok(self.queue_operation(RecordKind::Purge, group, index, term, Rc::from(&[][..])))
    }

    /// `Ok(true)` once the operation is durable; an error if the log failed
    /// before it was.
    pub fn is_durable(&self, ticket: Ticket) -> Result<bool, WalError> {
        if self.operation_durable(ticket.0) {
            return Ok(true);
        }
        self.check_usable()?;
        Ok(false)
    }

    pub(super) fn operation_durable(&self, operation: u64) -> bool {
        operation <= self.durable_operation || self.durable_ahead.contains(&operation)
    }

    /// Registers a waker for a ticket, woken when it becomes durable or the
    /// log fails.
    pub fn wake_when_durable(&mut self, ticket: Ticket, waker: &Waker) {
        self.waiters.push((ticket.0, waker.clone()));
    }

    /// Whether anything is queued or in flight.
    pub fn is_idle(&self) -> bool {
        (self.pending.is_empty() || self.failed.is_some())
            && self.queue.in_flight() == 0
            && self.checkpoint_write.is_none()
            && self.snapshot_writes.is_empty()
            && self.deferred.is_empty()
    }

    /// The eventfd of the queue pair, readable when a completion arrives.
    pub fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        self.queue.completion_fd()
    }

    /// One turn of the reactor: reaps completions, sends everything queued
    /// since the last turn as one write per ring stretch, and reclaims ring
    /// space. Returns whether anything happened. It never writes the seal:
    /// that is [`ShardLog::seal_when_idle`], once the log has stayed idle.
    pub fn tick(&mut self) -> bool {
        let mut progress = self.reap();
        progress |= self.submit_writes();
        progress |= self.submit_deferred();
        progress |= self.maybe_reclaim();
        // Hand the new commands to the device now, not a tick later.
        progress |= self.reap();
        progress
    }

    #[cfg(any(test, feature = "testing"))]
    /// Blocks until `ticket` is durable. For tests, tools and startup: the
    /// reactor uses [`ShardLog::tick`] and wakers instead.
    pub fn wait_durable(&mut self, ticket: Ticket) -> Result<(), WalError> {
        loop {
            self.tick();
            if self.is_durable(ticket)? {
                return Ok(());
            }
            if self.queue.in_flight() > 0 {
                self.queue
                    .wait()
                    .map_err(|source| WalError::Device { what: "waiting for the log", source })?;
            } else if !self.pending.is_empty() && self.blocked_on_space {
                return Err(WalError::Full { shard: self.region.shard, ring_bytes: self.stats().ring_bytes });
            }
        }
    }

    /// Queue slots kept for the log's own writes: every group-commit write
    /// that may be in flight, a checkpoint and a flush.
    pub(super) fn reserved_slots(&self) -> usize {
        self.options.inflight_writes_max + 2
    }

    /// Submits a read or a snapshot write if the queue has a slot beyond the
    /// reserved ones, else holds it (in order) for a later tick: a side
    /// command must never take the slot a durable write needs.
    pub(super) fn submit_side_command(
        &mut self,
        command: Command,
        tag: u64,
    ) -> Result<(), crate::nvme::NvmeError> {
        if !self.deferred.is_empty()
            || self.queue.in_flight() + self.reserved_slots() >= self.options.queue_depth
        {
            self.deferred.push_back((command, tag));
            return Ok(());
        }
        self.submit(command, tag).map_err(|rejected| rejected.error)
    }

    /// Hands one command to the queue pair, counting a refusal as a device error.
    pub(super) fn submit(&mut self, command: Command, tag: u64) -> Result<(), Box<crate::nvme::Rejected>> {
        let submitted = self.queue.submit(command, tag);
        if submitted.is_err() {
            self.stats.device_errors += 1;
        }
        submitted
    }

    /// Submits held side commands while slots allow.
    pub(super) fn submit_deferred(&mut self) -> bool {
        let mut progress = false;
        while !self.deferred.is_empty()
            && self.queue.in_flight() + self.reserved_slots() < self.options.queue_depth
        {
            let (command, tag) = self.deferred.pop_front().expect("not empty");
            if let Err(rejected) = self.submit(command, tag) {
                self.fail(format!("the device refused a read or snapshot write: {}", rejected.error));
                return progress;
            }
            progress = true;
        }
        progress
    }

    pub(super) fn take_tag(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    pub(super) fn fail(&mut self, reason: String) {
        if self.failed.is_none() {
            tracing::error!(shard = self.region.shard, %reason, "the shard log failed and stops");
            self.failed = Some(reason);
        }
        for (_, waker) in self.waiters.drain(..) {
            waker.wake();
        }
        for (_, waker) in self.read_waiters.drain(..) {
            waker.wake();
        }
        for (_, waker) in self.snapshot_waiters.drain(..) {
            waker.wake();
        }
    }

    /// Free ring blocks, not counting the ones a checkpoint is about to free.
    pub(super) fn free_blocks(&self) -> u64 {
        self.ring_blocks - self.used_blocks
    }

    /// Packs queued records into writes, as long as writes may be in flight
    /// and the ring has room. Records go in the order they were queued;
    /// when the oldest waits for room, records that free space go ahead of
    /// it where that cannot change what a replay finds ([`Self::may_jump`]).
    pub(super) fn submit_writes(&mut self) -> bool {
        let mut progress = false;
        self.blocked_on_space = false;
        while !self.pending.is_empty()
            && self.failed.is_none()
            && self.inflight.len() < self.options.inflight_writes_max
        {
            if self.tail_offset == self.ring_blocks {
                self.tail_offset = 0;
            }
            let contiguous = self.ring_blocks - self.tail_offset;
            let first = &self.pending[0];
            let first_blocks = format::record_blocks(first.payload.len(), self.lba_bytes) as u64;
            let first_reserve = if first.frees_space() { 0 } else { self.reserve_blocks };
            if first_blocks > contiguous {
                // Wrap only when the record then fits: a wrap that leaves
                // it waiting would only have wasted the blocks.
                if self.free_blocks() >= contiguous + first_blocks + first_reserve {
                    self.submit_wrap(contiguous);
                    progress = true;
                    continue;
                }
            } else {
                let batch = self.take_in_order(contiguous);
                if !batch.is_empty() {
                    self.submit_batch(batch);
                    progress = true;
                    continue;
                }
            }
            let jumpers = self.take_jumpers(contiguous);
            if jumpers.is_empty() {
                self.blocked_on_space = true;
                break;
            }
            self.submit_batch(jumpers);
            progress = true;
        }
        progress
    }

    /// The blocks a write starting at the tail may take now.
    pub(super) fn write_room(&self, contiguous: u64) -> u64 {
        contiguous.min(self.free_blocks()).min((self.options.batch_bytes_max / self.lba_bytes) as u64)
    }

    /// The longest run of queued records, oldest first, that fits one write
    /// at the tail: entries leave the reserve free, records that free
    /// space may use it.
    pub(super) fn take_in_order(&mut self, contiguous: u64) -> Vec<Pending> {
        let room = self.write_room(contiguous);
        let free = self.free_blocks();
        let mut count = 0;
        let mut blocks = 0;
        for pending in &self.pending {
            let record = format::record_blocks(pending.payload.len(), self.lba_bytes) as u64;
            let reserve = if pending.frees_space() { 0 } else { self.reserve_blocks };
            if blocks + record > room || blocks + record + reserve > free {
                break;
            }
            blocks += record;
            count += 1;
        }
        self.pending.drain(..count).collect()
    }

    /// Records that free space and may go ahead of older records waiting
    /// for room, as many as one write at the tail takes, in queue order.
    pub(super) fn take_jumpers(&mut self, contiguous: u64) -> Vec<Pending> {
        let room = self.write_room(contiguous);
        let mut chosen = Vec::new();
        let mut blocks = 0;
        let mut ahead: BTreeMap<u32, Waiting> = BTreeMap::new();
        for (position, pending) in self.pending.iter().enumerate() {
            let record = format::record_blocks(pending.payload.len(), self.lba_bytes) as u64;
            let waiting = ahead.entry(pending.group).or_default();
            if pending.frees_space() && blocks + record <= room && waiting.lets_jump(pending) {
                chosen.push(position);
                blocks += record;
                continue;
            }
            waiting.add(pending);
        }
        let mut taken = Vec::with_capacity(chosen.len());
        for position in chosen.into_iter().rev() {
            taken.push(self.pending.remove(position).expect("a chosen position is queued"));
        }
        taken.reverse();
        taken
    }

    pub(super) fn record_header(
        &self,
        kind: RecordKind,
        group: u32,
        index: u64,
        term: u64,
        payload_len: usize,
        blocks: u64,
    ) -> RecordHeader {
        RecordHeader {
            kind,
            sequence: self.next_sequence,
            epoch: self.epoch,
            durable_before: self.durable_sequence + 1,
            group,
            blocks: blocks as u32,
            index,
            term,
            payload_len: payload_len as u32,
            previous_crc: self.last_crc,
            log_id: self.region.log_id,
        }
    }

    pub(super) fn place(&mut self, header: &RecordHeader, crc: u32, offset: u64, ring_blocks: u64) {
        self.ring.push_back(RingRecord {
            sequence: header.sequence,
            offset,
            blocks: ring_blocks,
            kind: header.kind,
            group: header.group,
            index: header.index,
            crc,
        });
        self.last_crc = crc;
        self.unsealed = header.kind != RecordKind::Seal;
        if header.kind == RecordKind::Seal {
            self.last_seal = Some(header.sequence);
        }
        self.next_sequence += 1;
        self.stats.records_written += 1;
    }

    /// Whether the log would write a seal if it stayed idle: a record other
    /// than a seal was placed after the last seal.
    pub fn wants_seal(&self) -> bool {
        self.unsealed && self.failed.is_none()
    }

    /// Writes a seal when the log is idle after records that no later
    /// record proves durable: nothing is queued, no write is in flight (so
    /// every record placed is durable), and the last record placed is not a
    /// seal. Its `durable_before` then covers every record before it, and
    /// recovery treats damage to any of them as corruption, not a torn
    /// tail. Returns whether it wrote one.
    ///
    /// The caller calls it once the log has *stayed* idle a while (the
    /// reactor: [`crate::reactor::IDLE_WORK_AFTER`] without progress), not
    /// in the turn it goes idle. Sealing in that turn put a second device
    /// write beside nearly every put of a lone client, whose next put comes
    /// a network round trip after the answer: measured at 1 client on one
    /// node, two log writes per put and 10-28 us more p50; at three members
    /// every member sealed between every two puts on the shared disk. What
    /// the delay costs: the last records of a burst stay unproven that much
    /// longer. They are durable all the while (the device acknowledged
    /// them); unproven only means that damage to them at rest, found at the
    /// next start, would read as a torn tail. A crash inside the window
    /// leaves them unproven exactly as a crash before the seal's write
    /// landed did before.
    ///
    /// While the log is busy it costs nothing: the next group-commit write
    /// is the proof, and no seal goes out; one seal (one block) goes out per
    /// idle period (its payload lists the groups still unproven, usually
    /// none: one block). A write queued while a seal is in flight takes
    /// another of the `inflight_writes_max` slots beside it (with a single
    /// slot it waits for that one-block write). The seal never takes the
    /// second half of the ring: with the ring that full the log skips it and
    /// the records stay unproven until the next write.
    pub fn seal_when_idle(&mut self) -> bool {
        let sealed = self.write_seal();
        // Hand it to the device now, not a turn later.
        if sealed {
            self.reap();
        }
        sealed
    }

    fn write_seal(&mut self) -> bool {
        if !self.unsealed || self.failed.is_some() || !self.pending.is_empty() || !self.inflight.is_empty() {
            return false;
        }
        if self.tail_offset == self.ring_blocks {
            self.tail_offset = 0;
        }
        // Only groups still listed unproven are known losses a seal carries:
        // a known loss the Raft layer proved repaired is off both.
        let known_loss =
            self.known_loss.iter().filter(|group| self.unproven.contains_key(group)).copied().collect();
        let payload = format::encode_seal(&self.unproven, &self.committed, &known_loss);
        let blocks = format::record_blocks(payload.len(), self.lba_bytes) as u64;
        // A seal that does not fit before the end of the ring waits for the
        // next write to wrap it. Past half the ring (where groups snapshot
        // under ring pressure, and one that cannot purge holds its entries
        // for good) every block is one an entry may need: the log does not
        // seal there, and the next write proves the last records.
        if self.used_blocks + blocks > self.ring_blocks / 2 || self.ring_blocks - self.tail_offset < blocks {
            return false;
        }
        debug_assert_eq!(
            self.durable_sequence + 1,
            self.next_sequence,
            "an idle log has every record durable"
        );
        let header = self.record_header(RecordKind::Seal, 0, 0, 0, payload.len(), blocks);
        let mut buffer = self.queue.allocate(blocks as usize * self.lba_bytes);
        let crc = format::encode_record(&header, &payload, &mut buffer);
        let offset = self.tail_offset;
        self.place(&header, crc, offset, blocks);
        self.used_blocks += blocks;
        self.tail_offset += blocks;
        self.stats.seals += 1;
        self.send_write(offset, buffer, header.sequence, Vec::new());
        true
    }

    /// Marks the rest of the ring unused: the next record goes to its start.
    pub(super) fn submit_wrap(&mut self, contiguous: u64) {
        let header = self.record_header(RecordKind::Wrap, 0, 0, 0, 0, contiguous);
        let mut buffer = self.queue.allocate(self.lba_bytes);
        let crc = format::encode_record(&header, &[], &mut buffer);
        let offset = self.tail_offset;
        self.place(&header, crc, offset, contiguous);
        self.used_blocks += contiguous;
        self.tail_offset = 0;
        self.send_write(offset, buffer, header.sequence, Vec::new());
    }

    /// Writes `batch` as one write at the tail.
    pub(super) fn submit_batch(&mut self, batch: Vec<Pending>) {
        let blocks: u64 = batch
            .iter()
            .map(|pending| format::record_blocks(pending.payload.len(), self.lba_bytes) as u64)
            .sum();
        let mut buffer = self.queue.allocate(blocks as usize * self.lba_bytes);
        let offset = self.tail_offset;
        let mut at = 0usize;
        let mut operations = Vec::with_capacity(batch.len());
        for pending in batch {
            self.stages.queue_wait.record(pending.queued_at.elapsed());
            let record_blocks = format::record_blocks(pending.payload.len(), self.lba_bytes) as u64;
            let header = self.record_header(
                pending.kind,
                pending.group,
                pending.index,
                pending.term,
                pending.payload.len(),
                record_blocks,
            );
            let end = at + record_blocks as usize * self.lba_bytes;
            let crc = format::encode_record(&header, &pending.payload, &mut buffer[at..end]);
            let record_offset = offset + (at / self.lba_bytes) as u64;
            if pending.kind == RecordKind::Entry {
                // The entry may have been truncated since it was queued; then
                // the record is written but nothing points at it.
                if let Some(state) = self.groups.get_mut(&pending.group) {
                    if let Some(position) = state.position(pending.index) {
                        let entry = &mut state.entries[position];
                        if entry.operation == pending.operation {
                            entry.placed = Some(Placement {
                                sequence: header.sequence,
                                offset: record_offset,
                                blocks: record_blocks as u32,
                            });
                            state.entry_blocks += record_blocks;
                            self.cache_order.push_back(CachedEntry {
                                group: pending.group,
                                index: pending.index,
                                sequence: header.sequence,
                            });
                        }
                    }
                }
            }
            self.place(&header, crc, record_offset, record_blocks);
            operations.push(pending.operation);
            at = end;
        }
        self.used_blocks += blocks;
        self.tail_offset += blocks;
        self.send_write(offset, buffer, self.next_sequence - 1, operations);
    }

    pub(super) fn send_write(
        &mut self,
        offset: u64,
        buffer: DmaBuf,
        last_sequence: u64,
        operations: Vec<u64>,
    ) {
        let tag = TAG_WRITE | self.take_tag();
        let bytes = buffer.len() as u64;
        let lba = self.region.ring_first_block() + offset;
        assert!(
            offset + bytes / self.lba_bytes as u64 <= self.ring_blocks,
            "a log write at ring offset {offset} of {bytes} bytes runs past the ring of {} blocks",
            self.ring_blocks
        );
        let fua = self.options.durability == Durability::Fua;
        match self.submit(Command::Write { lba, buffer, fua }, tag) {
            Ok(()) => {
                self.stats.writes += 1;
                self.stats.bytes_written += bytes;
                self.inflight.push_back(InflightWrite {
                    tag,
                    submitted_at: Instant::now(),
                    last_sequence,
                    operations,
                    state: WriteState::Writing,
                });
            }
            Err(rejected) => {
                self.fail(format!("the device refused a log write at LBA {lba}: {}", rejected.error))
            }
        }
    }
}
