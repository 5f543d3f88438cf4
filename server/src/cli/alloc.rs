//! The server's allocator: small blocks from mimalloc, large ones from the
//! C library's malloc.
//!
//! Most of what the API allocates is small and short-lived (rows, JSON,
//! requests), much of it freed on another thread than the one that made it,
//! which glibc serves with locks and consolidation. Large blocks stay with
//! glibc: `tune_allocator` maps each one on its own and gives it back when
//! freed, which bounds what a flood of logins (argon2 takes 19 MiB each) can
//! hold. mimalloc is built without transparent huge pages (`no_thp`): with
//! them its regions grew the server past the login flood's memory bound
//! (docs/benchmarks.md, "REST API under load").

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks of this size or more go to the C library (its mapping threshold).
pub const LARGE_BLOCK: usize = 1 << 20;

/// The binary's global allocator (`#[global_allocator]` in `main.rs`).
pub struct ServerAllocator;

fn is_large(size: usize) -> bool {
    size >= LARGE_BLOCK
}

// SAFETY: every block is freed or resized by the allocator that made it:
// Rust hands `dealloc` and `realloc` the layout the block was allocated with,
// and the choice depends only on its size. A resize across the threshold
// moves the block from one allocator to the other.
unsafe impl GlobalAlloc for ServerAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size()) {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            (false, false) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: the caller guarantees `new_size`, rounded up to the
                // alignment, does not overflow.
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block keeps its bytes across resizes that cross the threshold both ways.
    #[test]
    fn a_block_moves_between_the_allocators_with_its_contents() {
        let allocator = ServerAllocator;
        let small = Layout::from_size_align(64, 16).unwrap();
        unsafe {
            let p = allocator.alloc(small);
            assert!(!p.is_null());
            for i in 0..64 {
                *p.add(i) = i as u8;
            }
            let big = allocator.realloc(p, small, 2 * LARGE_BLOCK);
            assert!(!big.is_null());
            assert!((0..64).all(|i| *big.add(i) == i as u8));
            let big_layout = Layout::from_size_align(2 * LARGE_BLOCK, 16).unwrap();
            let back = allocator.realloc(big, big_layout, 32);
            assert!(!back.is_null());
            assert!((0..32).all(|i| *back.add(i) == i as u8));
            assert_eq!(back as usize % 16, 0);
            allocator.dealloc(back, Layout::from_size_align(32, 16).unwrap());
        }
    }
}
