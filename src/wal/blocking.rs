//! Blocking I/O through a queue pair, for opening, formatting and recovery,
//! which run before the shard serves. Never used on the append path.

use crate::nvme::{Command, Completion, DmaBuf, NvmeError, QueuePair};

/// A tag no log operation uses, so blocking I/O cannot be confused with
/// the log's own completions.
const BLOCKING_TAG: u64 = u64::MAX;

fn run(queue: &mut dyn QueuePair, command: Command) -> Result<Option<DmaBuf>, NvmeError> {
    assert_eq!(queue.in_flight(), 0, "blocking I/O while the log has commands in flight");
    queue.submit(command, BLOCKING_TAG).map_err(|rejected| rejected.error)?;
    let mut completions: Vec<Completion> = Vec::with_capacity(1);
    loop {
        queue.process_completions(&mut completions);
        if let Some(completion) = completions.pop() {
            assert_eq!(completion.tag, BLOCKING_TAG, "unexpected completion during blocking I/O");
            completion.result?;
            return Ok(completion.buffer);
        }
        queue.wait()?;
    }
}

/// Reads `blocks` blocks at `lba`.
pub fn read(queue: &mut dyn QueuePair, lba: u64, blocks: usize) -> Result<DmaBuf, NvmeError> {
    let lba_bytes = queue.info().lba_bytes as usize;
    let mut buffer = queue.allocate(blocks * lba_bytes);
    buffer.set_len(blocks * lba_bytes);
    Ok(run(queue, Command::Read { lba, buffer })?.expect("a read returns its buffer"))
}

/// Writes `buffer` at `lba`, durably when `fua`.
pub fn write(queue: &mut dyn QueuePair, lba: u64, buffer: DmaBuf, fua: bool) -> Result<DmaBuf, NvmeError> {
    Ok(run(queue, Command::Write { lba, buffer, fua })?.expect("a write returns its buffer"))
}

/// Makes completed writes durable.
pub fn flush(queue: &mut dyn QueuePair) -> Result<(), NvmeError> {
    run(queue, Command::Flush).map(|_| ())
}
