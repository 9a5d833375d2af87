//! The Wasm side of the ABI: the allocator and the pointer plumbing behind [`crate::export!`].
//!
//! The host runs every call in a fresh instance and throws it away afterwards, so memory
//! never needs to be given back: a bump allocator over a static arena serves every
//! allocation without `memory.grow` (and its page faults) until the arena is used up.

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

/// Large enough for any ordinary transition; lives in `.bss`, so it costs nothing
/// until touched.
const ARENA_SIZE: usize = 1 << 20;
const PAGE_SIZE: usize = 65536;

#[repr(C, align(16))]
struct Arena([u8; ARENA_SIZE]);

struct BumpAllocator {
    arena: core::cell::UnsafeCell<Arena>,
    /// Address of the next free byte; 0 until the first allocation.
    next: Cell<usize>,
    /// One past the last usable byte of the current region.
    end: Cell<usize>,
}

// SAFETY: a Switchyard module runs single-threaded: the host's engine is built without
// the threads proposal and instantiates each module once per call, so the cells are
// never shared across threads.
unsafe impl Sync for BumpAllocator {}

#[global_allocator]
static ALLOCATOR: BumpAllocator = BumpAllocator {
    arena: core::cell::UnsafeCell::new(Arena([0; ARENA_SIZE])),
    next: Cell::new(0),
    end: Cell::new(0),
};

impl BumpAllocator {
    fn bump(&self, layout: Layout) -> *mut u8 {
        if self.next.get() == 0 {
            let start = self.arena.get() as usize;
            self.next.set(start);
            self.end.set(start + ARENA_SIZE);
        }
        let start = align_up(self.next.get(), layout.align());
        match start.checked_add(layout.size()) {
            Some(end) if end <= self.end.get() => {
                self.next.set(end);
                start as *mut u8
            }
            _ => self.grow(layout),
        }
    }

    /// Continues in fresh pages from `memory.grow`; the arena's tail is abandoned.
    fn grow(&self, layout: Layout) -> *mut u8 {
        let bytes = layout.size() + layout.align();
        let pages = bytes.div_ceil(PAGE_SIZE);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return core::ptr::null_mut();
        }
        let region = previous * PAGE_SIZE;
        self.next.set(region);
        self.end.set(region + pages * PAGE_SIZE);
        let start = align_up(region, layout.align());
        self.next.set(start + layout.size());
        start as *mut u8
    }
}

unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.bump(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the most recent allocation can be handed back.
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        // The most recent allocation grows in place, which makes building a Vec cheap.
        if start + layout.size() == self.next.get() && start + new_size <= self.end.get() {
            self.next.set(start + new_size);
            return ptr;
        }
        // SAFETY: `layout` is valid (the caller's contract) and keeps its alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new_ptr = self.bump(new_layout);
        if !new_ptr.is_null() {
            // SAFETY: both blocks are live, distinct and at least `min(old, new)` long.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size)) };
        }
        new_ptr
    }
}

fn align_up(addr: usize, align: usize) -> usize {
    (addr + align - 1) & !(align - 1)
}

/// `switchyard_alloc`: a block the host writes a request into. Returns 0 on failure.
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else { return 0 };
    match Layout::from_size_align(len.max(1), 8) {
        Ok(layout) => ALLOCATOR.bump(layout) as i32,
        Err(_) => 0,
    }
}

/// The request the host wrote.
///
/// # Safety
/// `ptr` must come from [`alloc`] with at least `len` bytes written by the host.
pub unsafe fn request<'a>(ptr: i32, len: i32) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
}

/// Leaves `response` in memory (the instance is discarded after the call) and packs
/// its location for the host.
pub fn respond(response: Vec<u8>) -> i64 {
    let response = response.leak();
    crate::abi::pack(response.as_ptr() as u32, response.len() as u32)
}
