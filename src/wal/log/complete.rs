//! Completions of the device: each write, flush, checkpoint, read and
//! snapshot write or read, handed to the part of the log that waits for it.

use super::*;

impl ShardLog {
    /// Handles every completion the device has. Returns whether any came.
    pub(super) fn reap(&mut self) -> bool {
        let mut completions = std::mem::take(&mut self.completions);
        self.queue.process_completions(&mut completions);
        let progress = !completions.is_empty();
        for completion in completions.drain(..) {
            self.complete(completion);
        }
        self.completions = completions;
        if progress {
            self.advance_durable();
        }
        progress
    }

    pub(super) fn complete(&mut self, completion: Completion) {
        let tag = completion.tag;
        if completion.result.is_err() {
            self.stats.device_errors += 1;
        }
        match tag & TAG_KIND_MASK {
            TAG_WRITE => {
                let Some(write) = self.inflight.iter_mut().find(|write| write.tag == tag) else {
                    panic!("completion of unknown log write {tag:#x}");
                };
                if let Err(error) = completion.result {
                    self.fail(format!("a log write failed: {error}"));
                    return;
                }
                write.state = match self.options.durability {
                    Durability::Flush => WriteState::Written,
                    Durability::Fua | Durability::None => WriteState::Durable,
                };
            }
            TAG_FLUSH => {
                assert_eq!(self.flush_tag, Some(tag), "completion of an unknown flush");
                self.flush_tag = None;
                if let Err(error) = completion.result {
                    self.fail(format!("a log flush failed: {error}"));
                    return;
                }
                for write in self.inflight.iter_mut().filter(|write| write.state == WriteState::Flushing) {
                    write.state = WriteState::Durable;
                }
                self.stats.flushes += 1;
            }
            TAG_CHECKPOINT => {
                let write = self.checkpoint_write.take().expect("a checkpoint write was in flight");
                assert_eq!(write.tag, tag, "completion of an unknown checkpoint write");
                if let Err(error) = completion.result {
                    self.fail(format!("a checkpoint write failed: {error}"));
                    return;
                }
                self.apply_checkpoint(write);
            }
            TAG_SNAPSHOT_WRITE => {
                if let Err(error) = completion.result {
                    self.fail(format!("a snapshot write failed: {error}"));
                    return;
                }
                let write = self.snapshot_writes.get(&tag).expect("completion of an unknown snapshot write");
                let (group, reference) = (write.group, write.reference);
                let mut payload = [0u8; snapshot_format::REF_BYTES];
                reference.encode(&mut payload);
                let ticket = self.queue_operation(
                    RecordKind::SnapshotRef,
                    group,
                    reference.index,
                    reference.term,
                    Rc::from(&payload[..]),
                );
                self.snapshot_writes.get_mut(&tag).expect("still there").reference_operation = Some(ticket.0);
            }
            TAG_SNAPSHOT_READ => {
                let (group, reference) =
                    self.snapshot_reads.remove(&tag).expect("completion of an unknown snapshot read");
                let result = match completion.result {
                    Err(error) => Err(WalError::Device { what: "reading a snapshot", source: error }),
                    Ok(()) => {
                        let buffer = completion.buffer.expect("a read returns its buffer");
                        match snapshot_format::decode_blob(&buffer, group, self.region.log_id, &reference) {
                            Ok(data) => Ok(data.to_vec()),
                            Err(reason) => {
                                let reason = format!(
                                    "the snapshot of group {group} at LBA {} is damaged: {reason}",
                                    self.region.snapshot_first_block() + reference.offset
                                );
                                self.fail(reason.clone());
                                Err(WalError::Corrupt(reason))
                            }
                        }
                    }
                };
                self.snapshot_reads_done.insert(tag, result);
                self.wake_readers(tag);
            }
            TAG_READ => {
                let read = self.reads.remove(&tag).expect("completion of an unknown read");
                let result = match completion.result {
                    Err(error) => Err(WalError::Device { what: "reading an entry", source: error }),
                    Ok(()) => self.decode_read(&read, completion.buffer.expect("a read returns its buffer")),
                };
                self.reads_done.insert(tag, result);
                self.wake_readers(tag);
            }
            _ => panic!("completion with a tag no log operation uses: {tag:#x}"),
        }
    }
}
