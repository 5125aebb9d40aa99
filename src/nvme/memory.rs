//! An in-memory namespace, for tests of the layers above. Every command
//! completes at once and a write is "durable" the moment it completes; a
//! clone of the namespace shares its bytes, so a test can "restart" by
//! opening a new log on the same memory.

use std::sync::{Arc, Mutex};

use super::{
    check_command, BufferArena, Command, Completion, DmaBuf, Namespace, NamespaceInfo, NvmeError, QueuePair,
    QueuePairConfig, Rejected,
};

#[derive(Clone, Debug)]
pub struct MemoryNamespace {
    info: NamespaceInfo,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl MemoryNamespace {
    pub fn new(lba_bytes: u32, capacity_blocks: u64) -> MemoryNamespace {
        assert!(
            lba_bytes.is_power_of_two() && lba_bytes >= 512,
            "LBA size {lba_bytes} is not a power of two >= 512"
        );
        let info = NamespaceInfo {
            lba_bytes,
            capacity_blocks,
            backend: "memory",
            description: format!("memory ({capacity_blocks} blocks of {lba_bytes} bytes)"),
            pci_address: None,
        };
        let bytes = vec![0u8; (capacity_blocks * u64::from(lba_bytes)) as usize];
        MemoryNamespace { info, bytes: Arc::new(Mutex::new(bytes)) }
    }

    /// A copy of `len` bytes at byte `offset`, for tests that inspect or
    /// corrupt the medium directly.
    pub fn read_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let bytes = self.bytes.lock().expect("memory namespace lock");
        bytes[offset as usize..offset as usize + len].to_vec()
    }

    /// Overwrites bytes at byte `offset`, for tests that corrupt the medium.
    pub fn write_bytes(&self, offset: u64, data: &[u8]) {
        let mut bytes = self.bytes.lock().expect("memory namespace lock");
        bytes[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }
}

impl Namespace for MemoryNamespace {
    fn info(&self) -> &NamespaceInfo {
        &self.info
    }

    fn open_queue_pair(&self, config: &QueuePairConfig) -> Result<Box<dyn QueuePair>, NvmeError> {
        Ok(Box::new(MemoryQueuePair {
            namespace: self.clone(),
            arena: BufferArena::new(config.registered_buffer_bytes, self.info.lba_bytes as usize),
            depth: config.depth,
            in_flight: 0,
            done: Vec::new(),
        }))
    }
}

struct MemoryQueuePair {
    namespace: MemoryNamespace,
    arena: BufferArena,
    depth: u32,
    in_flight: usize,
    done: Vec<Completion>,
}

impl QueuePair for MemoryQueuePair {
    fn info(&self) -> &NamespaceInfo {
        &self.namespace.info
    }

    fn allocate(&mut self, bytes: usize) -> DmaBuf {
        self.arena.allocate(bytes)
    }

    fn submit(&mut self, mut command: Command, tag: u64) -> Result<(), Box<Rejected>> {
        if let Err(error) = check_command(&self.namespace.info, &command) {
            return Err(Box::new(Rejected { error, command }));
        }
        if self.in_flight >= self.depth as usize {
            return Err(Box::new(Rejected { error: NvmeError::QueueFull { depth: self.depth }, command }));
        }
        let kind = command.kind();
        let lba_bytes = u64::from(self.namespace.info.lba_bytes);
        let buffer = {
            let mut bytes = self.namespace.bytes.lock().expect("memory namespace lock");
            match &mut command {
                Command::Write { lba, buffer, .. } => {
                    let start = (*lba * lba_bytes) as usize;
                    bytes[start..start + buffer.len()].copy_from_slice(buffer);
                }
                Command::Read { lba, buffer } => {
                    let start = (*lba * lba_bytes) as usize;
                    let len = buffer.len();
                    buffer.copy_from_slice(&bytes[start..start + len]);
                }
                Command::Flush => {}
            }
            match command {
                Command::Write { buffer, .. } | Command::Read { buffer, .. } => Some(buffer),
                Command::Flush => None,
            }
        };
        self.in_flight += 1;
        self.done.push(Completion { tag, kind, buffer, result: Ok(()) });
        Ok(())
    }

    fn process_completions(&mut self, completions: &mut Vec<Completion>) -> usize {
        let count = self.done.len();
        self.in_flight -= count;
        completions.append(&mut self.done);
        count
    }

    fn wait(&mut self) -> Result<(), NvmeError> {
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}
