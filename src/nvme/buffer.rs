//! Aligned I/O buffers and the per-queue-pair arena they come from.
//!
//! The allocator, not the caller, guarantees alignment (glommio's DmaFile
//! rule). A queue pair registers its arena with the device once (io_uring
//! fixed buffers) and hands out buffers from it by size class; a buffer
//! returns to its class when dropped. When the arena is exhausted buffers
//! come from the heap, still aligned, just not registered.

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
    alignment: usize,
    origin: Origin,
}

enum Origin {
    Heap,
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
        DmaBuf { pointer, len: capacity, capacity, alignment, origin: Origin::Heap }
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
    /// the capacity; the device layer checks block alignment.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "buffer length {len} exceeds its capacity {}", self.capacity);
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
            Origin::Heap => {
                let layout = Layout::from_size_align(self.capacity, self.alignment).expect("buffer layout");
                // SAFETY: allocated in new_heap with this exact layout.
                unsafe { alloc::dealloc(self.pointer.as_ptr(), layout) };
            }
            Origin::Arena { arena, class, offset } => {
                arena.borrow_mut().free[*class].push(*offset);
            }
        }
    }
}

struct ArenaState {
    base: NonNull<u8>,
    bytes: usize,
    alignment: usize,
    bump: usize,
    /// free[c] holds offsets of free chunks of `alignment << c` bytes.
    free: Vec<Vec<usize>>,
}

impl Drop for ArenaState {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.bytes, self.alignment).expect("arena layout");
        // SAFETY: allocated in BufferArena::new with this exact layout; every
        // buffer holds an Rc to this state, so none outlives it.
        unsafe { alloc::dealloc(self.base.as_ptr(), layout) };
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
        let classes = (usize::BITS - (bytes / alignment).leading_zeros()) as usize;
        let state = ArenaState { base, bytes, alignment, bump: 0, free: vec![Vec::new(); classes.max(1)] };
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
        let Some(offset) = offset else {
            drop(state);
            let mut buffer = DmaBuf::new_heap(chunk, alignment);
            buffer.set_len(units * alignment);
            return buffer;
        };
        // SAFETY: offset + chunk <= bytes, inside the arena allocation.
        let pointer = unsafe { NonNull::new_unchecked(state.base.as_ptr().add(offset)) };
        // A reused chunk still holds its last I/O; callers rely on zeroes.
        // SAFETY: the chunk is ours alone until this buffer drops.
        unsafe { std::ptr::write_bytes(pointer.as_ptr(), 0, chunk) };
        drop(state);
        DmaBuf {
            pointer,
            len: units * alignment,
            capacity: chunk,
            alignment,
            origin: Origin::Arena { arena: self.state.clone(), class, offset },
        }
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
    fn set_len_shrinks_the_io_size() {
        let mut buffer = DmaBuf::new_heap(16384, 4096);
        buffer.set_len(4096);
        assert_eq!(buffer.len(), 4096);
        assert_eq!(buffer.capacity(), 16384);
    }
}
