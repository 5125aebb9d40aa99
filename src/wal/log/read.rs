//! The read side of the shard log: entries from memory or the device, and
//! snapshots written to and read from the snapshot area.

use super::*;

impl ShardLog {
    /// Reads entry `index` of `group`: from memory when cached, else from
    /// the device (finish with [`ShardLog::take_read`]).
    pub fn read(&mut self, group: u32, index: u64) -> Result<ReadRequest, WalError> {
        self.check_usable()?;
        let not_found = |state: Option<&GroupState>| {
            let (first, last) = state
                .and_then(|state| Some((state.entries.front()?.index, state.entries.back()?.index)))
                .unwrap_or((0, 0));
            WalError::NotFound { group, index, first, last }
        };
        let Some(state) = self.groups.get(&group) else {
            return Err(not_found(None));
        };
        let Some(position) = state.position(index) else {
            return Err(not_found(Some(state)));
        };
        let entry = &state.entries[position];
        if let Some(payload) = &entry.cached {
            return Ok(ReadRequest::Ready(Entry {
                group,
                index,
                term: entry.term,
                payload: payload.clone(),
            }));
        }
        let placement = entry.placed.expect("an entry without a cached payload has been placed in the ring");
        let term = entry.term;
        let tag = TAG_READ | self.take_tag();
        let mut buffer = self.queue.allocate(placement.blocks as usize * self.lba_bytes);
        buffer.set_len(placement.blocks as usize * self.lba_bytes);
        let lba = self.region.ring_first_block() + placement.offset;
        self.submit_side_command(Command::Read { lba, buffer }, tag)
            .map_err(|source| WalError::Device { what: "reading an entry", source })?;
        self.stats.reads_from_device += 1;
        self.reads.insert(tag, PendingRead { group, index, term, sequence: placement.sequence });
        Ok(ReadRequest::Pending(ReadTicket(tag)))
    }

    /// The result of a device read, once it has completed.
    pub fn take_read(&mut self, ticket: ReadTicket) -> Option<Result<Entry, WalError>> {
        self.reads_done.remove(&ticket.0)
    }

    pub fn wake_when_read(&mut self, ticket: ReadTicket, waker: &Waker) {
        self.read_waiters.push((ticket.0, waker.clone()));
    }

    #[cfg(any(test, feature = "testing"))]
    /// Reads an entry, blocking on the device if needed. For tests and tools.
    pub fn read_blocking(&mut self, group: u32, index: u64) -> Result<Entry, WalError> {
        let ticket = match self.read(group, index)? {
            ReadRequest::Ready(entry) => return Ok(entry),
            ReadRequest::Pending(ticket) => ticket,
        };
        loop {
            self.tick();
            if let Some(result) = self.take_read(ticket) {
                return result;
            }
            self.check_usable()?;
            self.queue.wait().map_err(|source| WalError::Device { what: "reading an entry", source })?;
        }
    }

    /// Writes `data` as the snapshot of `group` covering the log up to
    /// entry `index` of `term`. It becomes the group's current snapshot when
    /// [`ShardLog::is_snapshot_durable`] says so; until then the previous
    /// one stays current and its space untouched.
    pub fn write_snapshot(
        &mut self,
        group: u32,
        index: u64,
        term: u64,
        data: &[u8],
    ) -> Result<SnapshotTicket, WalError> {
        self.check_usable()?;
        self.group_mut(group)?;
        let blocks = snapshot_format::blob_blocks(data.len(), self.lba_bytes);
        let area_bytes = self.snapshot_area.blocks() * self.lba_bytes as u64;
        if blocks > self.snapshot_area.blocks() {
            *self.snapshots_refused.entry(group).or_default() += 1;
            return Err(WalError::SnapshotTooLarge { group, bytes: data.len() as u64, area_bytes });
        }
        // Placed for the area as it is once this snapshot is current and
        // the group's present one gone (`SnapshotArea::allocate_replacing`).
        let replacing =
            self.groups.get(&group).and_then(|state| state.snapshot).map(|current| current.offset);
        let Some(offset) = self.snapshot_area.allocate_replacing(blocks, replacing) else {
            *self.snapshots_refused.entry(group).or_default() += 1;
            return Err(WalError::SnapshotAreaFull {
                shard: self.region.shard,
                bytes: data.len() as u64,
                used_bytes: self.snapshot_area.used_blocks() * self.lba_bytes as u64,
                area_bytes,
            });
        };
        let mut buffer = self.queue.allocate(blocks as usize * self.lba_bytes);
        buffer.set_len(blocks as usize * self.lba_bytes);
        let crc = snapshot_format::encode_blob(group, index, term, self.region.log_id, data, &mut buffer);
        let reference = SnapshotRef { offset, bytes: data.len() as u64, index, term, crc };
        let tag = TAG_SNAPSHOT_WRITE | self.take_tag();
        let lba = self.region.snapshot_first_block() + offset;
        // FUA in `flush` mode too: the reference record goes out only once
        // this write completed, but a volatile cache may put the record on
        // the media and lose the blob in a power cut, and recovery would
        // then trust a reference to a torn blob. Snapshots are rare; the
        // ring's writes keep their flush.
        let fua = self.options.durability != Durability::None;
        if let Err(source) = self.submit_side_command(Command::Write { lba, buffer, fua }, tag) {
            self.snapshot_area.release(offset);
            return Err(WalError::Device { what: "writing a snapshot", source });
        }
        self.stats.snapshots_written += 1;
        self.stats.snapshot_bytes_written += data.len() as u64;
        self.snapshot_writes.insert(tag, SnapshotWrite { group, reference, reference_operation: None });
        Ok(SnapshotTicket(tag))
    }

    /// The largest snapshot [`ShardLog::write_snapshot`] can place now, in
    /// bytes of blob (its own header included): the longest extent of the
    /// snapshot area that no current snapshot, nor one being written, holds.
    pub fn snapshot_room_bytes(&self) -> u64 {
        self.snapshot_area.largest_free_blocks() * self.lba_bytes as u64
    }

    /// The snapshot area's bytes that no group's current snapshot holds:
    /// the most room a snapshot could find once the writes in flight are
    /// done (a current snapshot stays until its group's next one is
    /// durable).
    pub fn snapshot_area_uncommitted_bytes(&self) -> u64 {
        let current: u64 = self
            .groups
            .values()
            .filter_map(|state| state.snapshot)
            .map(|snapshot| snapshot.blocks(self.lba_bytes))
            .sum();
        self.snapshot_area.blocks().saturating_sub(current) * self.lba_bytes as u64
    }

    /// How many snapshots of `group` were refused for lack of room.
    pub fn snapshots_refused(&self, group: u32) -> u64 {
        self.snapshots_refused.get(&group).copied().unwrap_or(0)
    }

    /// The whole snapshot area, in bytes.
    pub fn snapshot_area_bytes(&self) -> u64 {
        self.snapshot_area.blocks() * self.lba_bytes as u64
    }

    /// `Ok(true)` once the snapshot is durable and current.
    pub fn is_snapshot_durable(&self, ticket: SnapshotTicket) -> Result<bool, WalError> {
        self.check_usable()?;
        Ok(!self.snapshot_writes.contains_key(&ticket.0))
    }

    /// Registers a waker for a snapshot write, woken when the operation
    /// that finishes it is durable (or the log fails).
    pub fn wake_when_snapshot_durable(&mut self, ticket: SnapshotTicket, waker: &Waker) {
        self.snapshot_waiters.push((ticket.0, waker.clone()));
    }

    /// Blocks until the snapshot is durable. For tests and tools.
    pub fn wait_snapshot_durable(&mut self, ticket: SnapshotTicket) -> Result<(), WalError> {
        loop {
            self.tick();
            if self.is_snapshot_durable(ticket)? {
                return Ok(());
            }
            if self.queue.in_flight() > 0 {
                self.queue
                    .wait()
                    .map_err(|source| WalError::Device { what: "waiting for a snapshot", source })?;
            }
        }
    }

    /// The current snapshot of `group`, if it has one.
    pub fn snapshot(&self, group: u32) -> Option<SnapshotRef> {
        self.groups.get(&group).and_then(|state| state.snapshot)
    }

    /// Starts reading the current snapshot of `group`; `None` if it has none.
    pub fn read_snapshot(&mut self, group: u32) -> Result<Option<ReadTicket>, WalError> {
        self.check_usable()?;
        let Some(reference) = self.snapshot(group) else { return Ok(None) };
        let blocks = reference.blocks(self.lba_bytes) as usize;
        let mut buffer = self.queue.allocate(blocks * self.lba_bytes);
        buffer.set_len(blocks * self.lba_bytes);
        let tag = TAG_SNAPSHOT_READ | self.take_tag();
        let lba = self.region.snapshot_first_block() + reference.offset;
        self.submit_side_command(Command::Read { lba, buffer }, tag)
            .map_err(|source| WalError::Device { what: "reading a snapshot", source })?;
        self.snapshot_reads.insert(tag, (group, reference));
        Ok(Some(ReadTicket(tag)))
    }

    /// The data of a snapshot read, once it has completed.
    pub fn take_snapshot_read(&mut self, ticket: ReadTicket) -> Option<Result<Vec<u8>, WalError>> {
        self.snapshot_reads_done.remove(&ticket.0)
    }

    #[cfg(test)]
    /// Reads the current snapshot of `group`, blocking. For tests and tools.
    pub fn read_snapshot_blocking(&mut self, group: u32) -> Result<Option<(SnapshotRef, Vec<u8>)>, WalError> {
        let Some(reference) = self.snapshot(group) else { return Ok(None) };
        let ticket = self.read_snapshot(group)?.expect("the group has a snapshot");
        loop {
            self.tick();
            if let Some(result) = self.take_snapshot_read(ticket) {
                return result.map(|data| Some((reference, data)));
            }
            self.check_usable()?;
            self.queue.wait().map_err(|source| WalError::Device { what: "reading a snapshot", source })?;
        }
    }

    pub(super) fn wake_readers(&mut self, tag: u64) {
        wake_waiting_for(&mut self.read_waiters, tag);
    }

    pub(super) fn decode_read(&mut self, read: &PendingRead, buffer: DmaBuf) -> Result<Entry, WalError> {
        let decoded = format::decode_record(&buffer, self.lba_bytes);
        match decoded {
            Ok((header, payload, _))
                if header.kind == RecordKind::Entry
                    && header.sequence == read.sequence
                    && header.group == read.group
                    && header.index == read.index =>
            {
                Ok(Entry {
                    group: read.group,
                    index: read.index,
                    term: read.term,
                    payload: Rc::from(payload),
                })
            }
            other => {
                let found = match other {
                    Ok((header, _, _)) => {
                        format!("record {} of group {} index {}", header.sequence, header.group, header.index)
                    }
                    Err(error) => error.to_string(),
                };
                let reason = format!(
                    "entry {} of group {} (record {}) read back as {found}",
                    read.index, read.group, read.sequence
                );
                self.fail(reason.clone());
                Err(WalError::Corrupt(reason))
            }
        }
    }
}
