//! Aligned I/O buffers and the per-queue-pair arena they come from.
//!
//! The allocator, not the caller, guarantees alignment (glommio's DmaFile
//! rule). A queue pair registers its arena with the device once (io_uring
//! fixed buffers) and hands out buffers from it by size class; a buffer
//! returns to its class when dropped. When the arena is exhausted buffers
//! come from the heap, still aligned, just not registered.
//!
//! A backend with its own DMA allocator (SPDK's `spdk_zmalloc`) hands its
//! memory to the same types as [`Memory::Foreign`], with the function that
//! gives it back, so the layers above never see which allocator a buffer
//! came from.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;

/// An owned, zero-initialised, aligned byte buffer for device I/O.
///
/// Not `Send`: it belongs to the shard that allocated it.
pub struct DmaBuf {
    pointer: NonNull<u8>,
    len: usize,
    capacity: usize,
    /// The bytes from the start that are zeroed or were written since:
    /// `len` never passes it (a buffer grown past it is zeroed first).
    initialised: usize,
    alignment: usize,
    origin: Origin,
}

/// Who owns a block of memory and how it is given back.
#[derive(Clone, Copy)]
pub enum Memory {
    /// Rust's global allocator, with the buffer's size and alignment.
    Heap,
    /// A device's own allocator; `release` frees the pointer it handed out.
    Foreign { release: unsafe fn(*mut u8) },
}

enum Origin {
    Own(Memory),
    Arena { arena: Rc<RefCell<ArenaState>>, class: usize, offset: usize },
}

impl DmaBuf {
    /// A heap buffer of `len` bytes (rounded up to `alignment`), aligned to
    /// `alignment` (a power of two).
    pub fn new_heap(len: usize, alignment: usize) -> DmaBuf {
        assert!(alignment.is_power_of_two(), "buffer alignment {alignment} is not a power of two");
        let capacity = len.max(1).next_multiple_of(alignment);
        let layout = Layout::from_size_align(capacity, alignment).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let pointer = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        DmaBuf::owned(pointer, capacity, alignment, Memory::Heap)
    }

    /// Takes ownership of `capacity` zeroed bytes at `pointer`, aligned to
    /// `alignment`, that `release` frees when the buffer drops.
    ///
    /// # Safety
    /// `pointer` must be valid for reads and writes of `capacity` bytes,
    /// initialised, aligned to `alignment`, used by nothing else, and freed
    /// by nothing but `release`.
    pub unsafe fn from_foreign(
        pointer: NonNull<u8>,
        capacity: usize,
        alignment: usize,
        release: unsafe fn(*mut u8),
    ) -> DmaBuf {
        assert!(alignment.is_power_of_two(), "buffer alignment {alignment} is not a power of two");
        assert_eq!(pointer.as_ptr() as usize % alignment, 0, "foreign buffer is not aligned to {alignment}");
        DmaBuf::owned(pointer, capacity, alignment, Memory::Foreign { release })
    }

    /// A whole buffer of `capacity` initialised bytes that `memory` frees.
    fn owned(pointer: NonNull<u8>, capacity: usize, alignment: usize, memory: Memory) -> DmaBuf {
        DmaBuf {
            pointer,
            len: capacity,
            capacity,
            initialised: capacity,
            alignment,
            origin: Origin::Own(memory),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Sets how many bytes an I/O with this buffer moves. Must stay within
    /// the capacity; the device layer checks block alignment. Bytes it
    /// grows over that were never part of the buffer read as zeroes; bytes
    /// a shorter length left out keep what they held.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "buffer length {len} exceeds its capacity {}", self.capacity);
        if len > self.initialised {
            // SAFETY: initialised < len <= capacity, inside the buffer.
            unsafe {
                std::ptr::write_bytes(self.pointer.as_ptr().add(self.initialised), 0, len - self.initialised)
            };
            self.initialised = len;
        }
        self.len = len;
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.pointer.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.pointer.as_ptr()
    }

    /// Whether this buffer lives in a registered arena.
    pub fn is_registered(&self) -> bool {
        matches!(self.origin, Origin::Arena { .. })
    }
}

impl std::ops::Deref for DmaBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: pointer is valid for capacity >= len bytes, initialised.
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for DmaBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.pointer.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DmaBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("registered", &self.is_registered())
            .finish()
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        match &self.origin {
            // SAFETY: allocated in new_heap or handed over by from_foreign
            // with this size, alignment and memory.
            Origin::Own(memory) => unsafe { memory.release(self.pointer, self.capacity, self.alignment) },
            Origin::Arena { arena, class, offset } => {
                arena.borrow_mut().free[*class].push(*offset);
            }
        }
    }
}

impl Memory {
    /// Frees `bytes` at `pointer`, aligned to `alignment`.
    ///
    /// # Safety
    /// The memory must have come from this allocator with this size and
    /// alignment, and nothing may use it afterwards.
    unsafe fn release(self, pointer: NonNull<u8>, bytes: usize, alignment: usize) {
        match self {
            Memory::Heap => {
                let layout = Layout::from_size_align(bytes, alignment).expect("buffer layout");
                // SAFETY: per this function's contract.
                unsafe { alloc::dealloc(pointer.as_ptr(), layout) };
            }
            // SAFETY: per this function's contract.
            Memory::Foreign { release } => unsafe { release(pointer.as_ptr()) },
        }
    }
}

struct ArenaState {
    base: NonNull<u8>,
    bytes: usize,
    alignment: usize,
    memory: Memory,
    bump: usize,
    /// free[c] holds offsets of free chunks of `alignment << c` bytes.
    free: Vec<Vec<usize>>,
}

impl Drop for ArenaState {
    fn drop(&mut self) {
        // SAFETY: allocated or handed over in BufferArena's constructors with
        // this size and alignment; every buffer holds an Rc to this state, so
        // none outlives it.
        unsafe { self.memory.release(self.base, self.bytes, self.alignment) };
    }
}

/// One contiguous, aligned region that a queue pair registers with its
/// device, carved into power-of-two size classes.
pub struct BufferArena {
    state: Rc<RefCell<ArenaState>>,
}

impl BufferArena {
    /// An arena of `bytes` (rounded up to `alignment`). Zero bytes makes an
    /// arena that hands out heap buffers only.
    pub fn new(bytes: usize, alignment: usize) -> BufferArena {
        assert!(alignment.is_power_of_two(), "arena alignment {alignment} is not a power of two");
        let bytes = bytes.next_multiple_of(alignment).max(alignment);
        let layout = Layout::from_size_align(bytes, alignment).expect("arena layout");
        // SAFETY: non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        // SAFETY: just allocated from the heap with this size and alignment.
        unsafe { BufferArena::from_region(base, bytes, alignment, Memory::Heap) }
    }

    /// An arena over `bytes` zeroed bytes at `base` (a whole number of
    /// `alignment` units), freed through `memory` when the arena and every
    /// buffer from it are gone.
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `bytes` bytes,
    /// initialised, aligned to `alignment`, used by nothing else, and come
    /// from `memory`.
    pub unsafe fn from_region(
        base: NonNull<u8>,
        bytes: usize,
        alignment: usize,
        memory: Memory,
    ) -> BufferArena {
        assert!(alignment.is_power_of_two(), "arena alignment {alignment} is not a power of two");
        assert!(
            bytes >= alignment && bytes % alignment == 0 && base.as_ptr() as usize % alignment == 0,
            "an arena region of {bytes} bytes at {:#x} is not whole, aligned {alignment}-byte units",
            base.as_ptr() as usize
        );
        let classes = (usize::BITS - (bytes / alignment).leading_zeros()) as usize;
        let state =
            ArenaState { base, bytes, alignment, memory, bump: 0, free: vec![Vec::new(); classes.max(1)] };
        BufferArena { state: Rc::new(RefCell::new(state)) }
    }

    /// The registered region, for the device to register once.
    pub fn region(&self) -> (*mut u8, usize) {
        let state = self.state.borrow();
        (state.base.as_ptr(), state.bytes)
    }

    pub fn alignment(&self) -> usize {
        self.state.borrow().alignment
    }

    /// A zeroed buffer of `len` bytes rounded up to whole alignment units;
    /// from the arena when it has room, else from the heap.
    pub fn allocate(&self, len: usize) -> DmaBuf {
        self.try_allocate(len).unwrap_or_else(|| {
            let alignment = self.alignment();
            let units = len.max(1).div_ceil(alignment);
            let mut buffer = DmaBuf::new_heap(units.next_power_of_two() * alignment, alignment);
            buffer.set_len(units * alignment);
            buffer
        })
    }

    /// A zeroed buffer of `len` bytes rounded up to whole alignment units,
    /// from the arena, or `None` when it has no room for one.
    pub fn try_allocate(&self, len: usize) -> Option<DmaBuf> {
        let mut state = self.state.borrow_mut();
        let alignment = state.alignment;
        let units = len.max(1).div_ceil(alignment);
        let class = (usize::BITS - (units - 1).leading_zeros()) as usize;
        let chunk = alignment << class;
        let offset = if class >= state.free.len() {
            None
        } else if let Some(offset) = state.free[class].pop() {
            Some(offset)
        } else if state.bump + chunk <= state.bytes {
            let offset = state.bump;
            state.bump += chunk;
            Some(offset)
        } else {
            None
        };
        let offset = offset?;
        // SAFETY: offset + chunk <= bytes, inside the arena allocation.
        let pointer = unsafe { NonNull::new_unchecked(state.base.as_ptr().add(offset)) };
        // A reused chunk still holds its last I/O; callers rely on zeroes.
        // Only the length asked for is zeroed now (a chunk is up to twice
        // it); `set_len` zeroes the rest if the buffer ever grows into it.
        let len = units * alignment;
        // SAFETY: the chunk is ours alone until this buffer drops; len <= chunk.
        unsafe { std::ptr::write_bytes(pointer.as_ptr(), 0, len) };
        drop(state);
        Some(DmaBuf {
            pointer,
            len,
            capacity: chunk,
            initialised: len,
            alignment,
            origin: Origin::Arena { arena: self.state.clone(), class, offset },
        })
    }
}

impl std::fmt::Debug for BufferArena {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.borrow();
        formatter.debug_struct("BufferArena").field("bytes", &state.bytes).field("used", &state.bump).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_buffers_are_aligned_and_zeroed() {
        let buffer = DmaBuf::new_heap(5000, 4096);
        assert_eq!(buffer.as_ptr() as usize % 4096, 0);
        assert_eq!(buffer.len(), 8192);
        assert!(buffer.iter().all(|byte| *byte == 0));
        assert!(!buffer.is_registered());
    }

    #[test]
    fn arena_reuses_freed_chunks_and_zeroes_them() {
        let arena = BufferArena::new(64 << 10, 4096);
        let mut first = arena.allocate(100);
        assert!(first.is_registered());
        assert_eq!(first.len(), 4096);
        first[0] = 7;
        let address = first.as_ptr() as usize;
        drop(first);
        let second = arena.allocate(4096);
        assert_eq!(second.as_ptr() as usize, address, "the freed chunk is reused");
        assert_eq!(second[0], 0, "a reused chunk is zeroed");
    }

    #[test]
    fn arena_falls_back_to_the_heap_when_full() {
        let arena = BufferArena::new(8192, 4096);
        let a = arena.allocate(8192);
        let b = arena.allocate(4096);
        assert!(a.is_registered());
        assert!(!b.is_registered());
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        let big = arena.allocate(1 << 20);
        assert!(!big.is_registered());
        assert_eq!(big.len(), 1 << 20);
    }

    #[test]
    fn a_reused_chunk_grown_past_its_length_reads_zeroes_and_a_shrink_keeps_the_bytes() {
        let arena = BufferArena::new(64 << 10, 4096);
        let mut dirty = arena.allocate(4 * 4096);
        dirty.fill(0xab);
        let address = dirty.as_ptr() as usize;
        drop(dirty);
        // Three blocks take the four-block chunk just freed.
        let mut reused = arena.allocate(3 * 4096);
        assert_eq!(reused.as_ptr() as usize, address, "the freed chunk is reused");
        assert_eq!(reused.capacity(), 4 * 4096);
        assert!(reused.iter().all(|byte| *byte == 0), "the length asked for is zeroed");
        reused.fill(0x11);
        reused.set_len(4096);
        reused.set_len(3 * 4096);
        assert!(reused.iter().all(|byte| *byte == 0x11), "bytes a shrink left out keep what they held");
        reused.set_len(4 * 4096);
        assert!(
            reused[3 * 4096..].iter().all(|byte| *byte == 0),
            "bytes never part of the buffer read as zeroes"
        );
    }

    #[test]
    fn set_len_shrinks_the_io_size() {
        let mut buffer = DmaBuf::new_heap(16384, 4096);
        buffer.set_len(4096);
        assert_eq!(buffer.len(), 4096);
        assert_eq!(buffer.capacity(), 16384);
    }
}
